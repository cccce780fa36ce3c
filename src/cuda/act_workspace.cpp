#include "act_workspace.hpp"

#include <algorithm>

#include "sm90_layout.hpp"

namespace svdquant::cuda {

void ActWorkspace::allocate(int64_t rows, int64_t K, int Rpad, bool fp8) {
  const int64_t Mpad = round_up(std::max<int64_t>(rows, 1), kTileM), G = K / kGroup, Mt = Mpad / kTileM;
  const size_t r1 = size_t(std::max(Rpad, 1));
  codes.resize(size_t(Mt * G * kCodeTileBytes));
  ascale.resize(size_t(Mt * G * kTileM * 4));  // float32 scales (T scales use half of it)
  lact.resize(size_t(Mpad) * r1 * 4);
  lpart.resize(size_t(act_quant_lpart_floats(Mpad, K, Rpad)) * 4);
  tickets.resize(size_t(act_quant_tickets(Mpad)) * 4);
  check(cudaMemset(tickets.get(), 0, tickets.size()), "cudaMemset(tickets)");
  if (fp8) {
    row_amax.resize(size_t(act_quant_amax_words(Mpad)) * 4);
    row_scale.resize(size_t(Mpad) * 4);
  } else {
    row_amax = DeviceBuffer();
    row_scale = DeviceBuffer();
  }
  Mpad_ = Mpad;
}

void ActWorkspace::fill(ActQuantParams& p) const {
  p.codes = codes.as<uint8_t>();
  p.ascale = ascale.as<uint16_t>();
  p.lact = lact.as<float>();
  p.lpart = lpart.as<float>();
  p.tickets = tickets.as<unsigned>();
  p.exp_counters = tickets.get() ? tickets.as<unsigned>() + (tickets.size() / 4 - 2) : nullptr;  // the last 2 words
  p.row_amax = row_amax.as<unsigned>();
  p.row_scale = row_scale.as<float>();
}

std::vector<DeviceBuffer> ActWorkspace::release() {
  std::vector<DeviceBuffer> out;
  for (DeviceBuffer* b : {&codes, &ascale, &lact, &lpart, &tickets, &row_amax, &row_scale})
    if (b->get()) out.push_back(std::move(*b));
  Mpad_ = 0;
  return out;
}

}  // namespace svdquant::cuda

#include "nvfp4_act_pack.hpp"

#include "nvfp4_kernels.hpp"
#include "sm90_pack.hpp"

namespace svdquant::cuda {

std::vector<float> pack_nv_smooth_reciprocal(const Tensor& smooth, int64_t K) {
  const std::vector<float> pairs = pack_smooth_reciprocal(smooth, K);  // [K][2]
  const int64_t Kpad = nv_round_up(K, kNvTileK);
  std::vector<float> out(size_t(2 * Kpad));
  for (int64_t k = 0; k < Kpad; ++k) {
    const int64_t s = k / 64, t = k % 64 / 16, w = k % 16 / 2;
    const size_t at = size_t(((s * 8 + w) * 4 + t) * 4 + 2 * (k % 2));
    out[at] = k < K ? pairs[size_t(2 * k)] : 1.0f;
    out[at + 1] = k < K ? pairs[size_t(2 * k + 1)] : 0.0f;
  }
  return out;
}

std::vector<uint32_t> pack_nv_proj_down(const Tensor& proj_down, int64_t K, int64_t R, int64_t Rpad) {
  const Tensor pd = contiguous_host(proj_down);
  const auto* src = pd.data_as<uint16_t>();
  const int64_t S = nv_round_up(K, kNvTileK) / kNvTileK, U = Rpad / 16;
  std::vector<uint32_t> out(size_t(S * U * 4 * 32 * 4), 0);
  auto at = [&](int64_t k, int64_t r) -> uint32_t { return k < K && r < R ? src[k * R + r] : 0; };
  auto pair = [&](int64_t k, int64_t r) { return at(k, r) | (at(k + 1, r) << 16); };
  for (int64_t s = 0; s < S; ++s)
    for (int64_t u = 0; u < U; ++u)
      for (int j = 0; j < 4; ++j)
        for (int lane = 0; lane < 32; ++lane) {
          const int64_t r = 16 * u + lane / 4, k = 64 * s + 16 * (lane % 4) + 4 * j;
          uint32_t* w = &out[size_t((((s * U + u) * 4 + j) * 32 + lane) * 4)];
          w[0] = pair(k, r);          // A row r, k slots 2 t, 2 t + 1
          w[1] = pair(k, r + 8);      // row r + 8
          w[2] = pair(k + 2, r);      // row r, slots 2 t + 8, 2 t + 9
          w[3] = pair(k + 2, r + 8);
        }
  return out;
}

}  // namespace svdquant::cuda

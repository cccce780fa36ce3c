// Load-time repacking of a canonical nvfp4 layer (FORMAT.md) into the layouts of
// nvfp4_kernels.hpp, and its forward pass: activation kernel (act and lact), GEMM.
#include "nvfp4_layer.hpp"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cuda_check.hpp"
#include "nvfp4_act_pack.hpp"
#include "nvfp4_pack.hpp"
#include "sm90_pack.hpp"
#include "weight_scratch.hpp"
#include "svdquant/error.hpp"
#include "svdquant/float_formats.hpp"

namespace svdquant::cuda {

Nvfp4Layer::Nvfp4Layer(const LayerWeights& w, const ForwardOptions& opt) {
  desc = w.desc;
  options = opt;
  const int64_t N = desc.N, K = desc.K, R = desc.R;
  if (desc.precision != Precision::NVFP4) throw UnsupportedError("cuda-sm90: " + w.prefix + ": not an nvfp4 layer");
  if (opt.accumulate != Accumulate::FP32 || opt.activations != Activations::CHECKPOINT)
    throw UnsupportedError("cuda-sm90: " + w.prefix + ": nvfp4 layers run with fp32 accumulation and checkpoint activations only");
  if (K <= 0 || K % kNvGroup != 0)
    throw FormatError(w.prefix + ".qweight: K = " + std::to_string(K) + " is not a positive multiple of 16");
  if (N <= 0) throw FormatError(w.prefix + ".qweight: N = " + std::to_string(N) + " must be positive");
  Rpad_ = nv_padded_rank(R);
  if (Rpad_ > kNvMaxRank)
    throw UnsupportedError("cuda-sm90: " + w.prefix + ": rank " + std::to_string(R) + " exceeds " + std::to_string(kNvMaxRank));
  check(cudaGetDevice(&device_), "cudaGetDevice");
  alpha_ = w.alpha();
  Kpad_ = nv_round_up(K, kNvTileK);
  Npad_ = nv_round_up(N, kNvTileN);
  const HalfKind T = desc.dtype;
  {  // the GEMM's register-operand layout (nvfp4_pack.hpp)
    const auto packed = pack_nvfp4_weights(w.qweight, w.wscales, N, K);
    wpack_.upload(packed.data(), packed.size());
  }
  sms_ = sm_count(device_);
  {  // split-K tickets, one per split tile: only a last wave of at most half the SMs splits
    const std::vector<uint32_t> zeros(size_t(sms_ > 0 ? sms_ : 1), 0u);
    tickets_.upload(zeros.data(), zeros.size() * 4);
  }
  {  // the activation kernel's tables (nvfp4_act_pack.hpp)
    const Tensor sm = contiguous_host(w.smooth);
    smooth_.upload(sm.data(), size_t(K) * 2);
    const auto rcp = pack_nv_smooth_reciprocal(w.smooth, K);
    smooth_rcp_.upload(rcp.data(), rcp.size() * 4);
  }
  if (Rpad_ > 0) {
    const auto d = pack_nv_proj_down(w.proj_down, K, R, Rpad_);
    const auto u = widen_padded(w.proj_up, T, N, R, Npad_, Rpad_);
    proj_down_.upload(d.data(), d.size() * 4);
    proj_up_.upload(u.data(), u.size() * 4);
  } else {
    proj_down_.resize(16);
    proj_up_.resize(16);
  }
  {
    const EpilogueVectors ev = epilogue_vectors(w, Npad_);
    wcscales_.upload(ev.wcscales.data(), ev.wcscales.size() * 4);
    bias_.upload(ev.bias.data(), ev.bias.size() * 4);
  }
}

void Nvfp4Layer::ensure_workspace(int64_t M, bool capturing) const {
  const int64_t Mpad = nv_round_up(M, kNvTileM);
  if (Mpad <= ws_rows_) return;
  if (order_.before_growth(M, ws_rows_, capturing)) {
    std::vector<DeviceBuffer> old;
    old.push_back(std::move(act_));
    old.push_back(std::move(lact_));
    order_.retire(std::move(old));
  }
  ws_rows_ = 0;
  // Cleared once: the activation columns K..Kpad stay zero (the kernel never writes them).
  act_.resize(size_t(Mpad * Kpad_ * 2));
  check(cudaMemset(act_.get(), 0, act_.size()), "cudaMemset(act)");
  lact_.resize(size_t(Mpad * (Rpad_ > 0 ? Rpad_ : 1) * 4));
  check(cudaMemset(lact_.get(), 0, lact_.size()), "cudaMemset(lact)");
  check(cudaStreamSynchronize(nullptr), "cudaStreamSynchronize(workspace clear)");  // before any stream uses it
  ws_rows_ = Mpad;
}

void Nvfp4Layer::forward(const Tensor& x, Tensor& y, cudaStream_t stream) const {
  const int64_t K = desc.K, N = desc.N;
  const int64_t M = check_layer_io(desc, device_, x, y);
  if (M == 0) return;

  std::lock_guard<std::mutex> lock(order_.mutex());
  const bool capturing = CallOrder::capturing(stream);
  ensure_workspace(M, capturing);
  order_.before_launch(stream, capturing);

  const HalfType ht = desc.dtype == HalfKind::BF16 ? HalfType::BF16 : HalfType::FP16;
  Nvfp4ActParams a;  // act and lact in one kernel
  a.x = x.data_as<uint16_t>();
  a.smooth = smooth_.as<uint16_t>();
  a.smooth_rcp = smooth_rcp_.as<float>();
  a.pdfrag = proj_down_.as<uint32_t>();
  a.act = act_.as<uint16_t>();
  a.lact = lact_.as<float>();
  a.M = M;
  a.K = K;
  a.Kpad = Kpad_;
  a.R = int(desc.R);
  a.Rpad = int(Rpad_);
  a.dtype = ht;
  launch_nvfp4_act(a, stream);

  Nvfp4GemmParams g;
  g.act = act_.as<uint16_t>();
  g.wpack = wpack_.as<uint8_t>();
  g.lact = lact_.as<float>();
  g.proj_up = proj_up_.as<float>();
  g.wcscales = wcscales_.as<float>();
  g.bias = bias_.as<float>();
  g.y = y.data_as<uint16_t>();
  g.M = M;
  g.N = N;
  g.Kpad = Kpad_;
  g.Rpad = int(Rpad_);
  g.alpha = alpha_;
  g.dtype = ht;
  // Split K where the output tiles leave SMs idle; the partial sums live in the device's shared
  // scratch (weight_scratch.hpp), which a CUDA-graph capture cannot lease: captures do not split.
  const Nvfp4Split sp = nvfp4_gemm_splits(M, N, Kpad_, capturing ? 0 : sms_);
  g.splits = sp.splits;
  g.k_steps_per_split = sp.k_steps_per_split;
  g.full_tiles = sp.full_tiles;
  std::optional<WeightScratch::Lease> lease;
  if (sp.splits > 1) {
    lease.emplace(WeightScratch::current(), sp.partial_bytes, stream);
    g.partial = reinterpret_cast<float*>(lease->data());
    g.tickets = tickets_.as<uint32_t>();
  }
  launch_nvfp4_gemm(g, stream);
  order_.after_launch(stream, capturing);
}

}  // namespace svdquant::cuda

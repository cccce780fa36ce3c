// Load-time repacking of a canonical nvfp4 layer (FORMAT.md) into the layouts of
// nvfp4_kernels.hpp, and its forward pass: activation kernel, low-rank down kernel, GEMM.
#include "nvfp4_layer.hpp"

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cuda_check.hpp"
#include "sm90_pack.hpp"
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
  {  // codes [Npad][Kpad/2]: the canonical rows, zero-padded
    const Tensor q = contiguous_host(w.qweight);
    std::vector<uint8_t> out(size_t(Npad_ * Kpad_ / 2), 0);
    for (int64_t n = 0; n < N; ++n) std::memcpy(&out[size_t(n * Kpad_ / 2)], q.data_as<uint8_t>() + n * (K / 2), size_t(K / 2));
    wcodes_.upload(out.data(), out.size());
  }
  {  // scales [Npad][Kpad/16] from the canonical [K/16, N]
    const Tensor s = contiguous_host(w.wscales);
    const int64_t G = K / kNvGroup, Gpad = Kpad_ / kNvGroup;
    std::vector<uint8_t> out(size_t(Npad_ * Gpad), 0);
    for (int64_t g = 0; g < G; ++g)
      for (int64_t n = 0; n < N; ++n) out[size_t(n * Gpad + g)] = s.data_as<uint8_t>()[g * N + n];
    wscales_.upload(out.data(), out.size());
  }
  {
    const Tensor sm = contiguous_host(w.smooth);
    smooth_.upload(sm.data(), size_t(K) * 2);
  }
  if (Rpad_ > 0) {
    const auto d = widen_padded(w.proj_down, T, K, R, K, Rpad_);
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
  Nvfp4ActParams a;
  a.x = x.data_as<uint16_t>();
  a.smooth = smooth_.as<uint16_t>();
  a.act = act_.as<uint16_t>();
  a.M = M;
  a.K = K;
  a.Kpad = Kpad_;
  a.dtype = ht;
  launch_nvfp4_act(a, stream);

  if (Rpad_ > 0) {
    Nvfp4LowrankParams l;
    l.x = x.data_as<uint16_t>();
    l.proj_down = proj_down_.as<float>();
    l.lact = lact_.as<float>();
    l.M = M;
    l.K = K;
    l.Rpad = int(Rpad_);
    l.dtype = ht;
    launch_nvfp4_lowrank(l, stream);
  }

  Nvfp4GemmParams g;
  g.act = act_.as<uint16_t>();
  g.wcodes = wcodes_.as<uint8_t>();
  g.wscales = wscales_.as<uint8_t>();
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
  launch_nvfp4_gemm(g, stream);
  order_.after_launch(stream, capturing);
}

}  // namespace svdquant::cuda

// Load-time repacking of a canonical int4 layer into the cuda-sm90 layouts (sm90_layout.hpp), and
// the forward pass: the activation kernel (4-bit codes, or fp8 codes with row scales), then the
// GEMM with its fused epilogue.
#include "sm90_layer.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "sm90_layout.hpp"
#include "sm90_pack.hpp"
#include "weight_scratch.hpp"
#include "svdquant/error.hpp"
#include "svdquant/float_formats.hpp"

namespace svdquant::cuda {

Sm90Layer::Sm90Layer(const LayerWeights& w, const ForwardOptions& opt) {
  desc = w.desc;
  options = opt;
  const int64_t N = desc.N, K = desc.K, R = desc.R;
  if (desc.precision != Precision::INT4)
    throw UnsupportedError("cuda-sm90: " + w.prefix + ": only int4 layers are implemented");
  if (K <= 0 || K % kGroup != 0)
    throw FormatError(w.prefix + ".qweight: K = " + std::to_string(K) + " is not a positive multiple of 64");
  Rpad_ = padded_rank(R);
  if (Rpad_ > kMaxRank)
    throw UnsupportedError("cuda-sm90: " + w.prefix + ": rank " + std::to_string(R) + " exceeds " + std::to_string(kMaxRank));
  check(cudaGetDevice(&device_), "cudaGetDevice");
  alpha_ = w.alpha();

  const HalfKind T = desc.dtype;
  const int64_t G = K / kGroup, Nt = weight_tiles(N), Npad = Nt * kTileN;

  const auto frag = pack_weight_fragments(w.qweight, N, K);
  wfrag_.upload(frag.data(), frag.size());

  if (opt.activations == Activations::FP8 && opt.accumulate == Accumulate::HALF)
    throw UnsupportedError("cuda-sm90: " + w.prefix + ": fp8 activations are defined with fp32 accumulation only (NUMERICS.md §5)");
  {  // weight scales [Nt][G][128]: T for half accumulation, float32 (the same values) otherwise
    const Tensor ws = contiguous_host(w.wscales);
    const auto* src = ws.data_as<uint16_t>();
    std::vector<uint16_t> out(size_t(Nt * G * kTileN), 0);
    for (int64_t nt = 0; nt < Nt; ++nt)
      for (int64_t g = 0; g < G; ++g)
        for (int r = 0; r < kTileN; ++r) {
          const int64_t n = nt * kTileN + r;
          if (n < N) out[size_t((nt * G + g) * kTileN + r)] = src[g * N + n];
        }
    if (opt.accumulate == Accumulate::HALF) {
      wscale_.upload(out.data(), out.size() * 2);
    } else {
      std::vector<float> f(out.size());
      for (size_t i = 0; i < out.size(); ++i) f[i] = half_to_f32(T, out[i]);
      wscale_.upload(f.data(), f.size() * 4);
    }
  }
  {
    const Tensor sm = contiguous_host(w.smooth);
    smooth_.upload(sm.data(), size_t(K) * 2);
    const auto rcp = pack_smooth_reciprocal(sm, K);
    smooth_rcp_.upload(rcp.data(), rcp.size() * 4);
  }
  if (Rpad_ > 0) {
    const auto pd = pack_proj_down(w.proj_down, K, R, Rpad_);
    pdfrag_.upload(pd.data(), pd.size() * 4);
    const auto up = widen_padded(w.proj_up, T, N, R, Npad, Rpad_);
    proj_up_.upload(up.data(), up.size() * 4);
  } else {
    proj_up_.resize(16);
  }
  {
    const EpilogueVectors ev = epilogue_vectors(w, Npad);
    wcscales_.upload(ev.wcscales.data(), ev.wcscales.size() * 4);
    bias_.upload(ev.bias.data(), ev.bias.size() * 4);
  }
  {  // split-K tickets: gemm_splits splits at most two waves of tiles
    sms_ = sm_count(device_);
    const std::vector<unsigned> zeros(size_t(2 * sms_), 0u);
    split_tickets_.upload(zeros.data(), zeros.size() * sizeof(unsigned));
  }
}

int Sm90Layer::gemm_splits_for(int64_t M) const {
  const bool allowed = cluster_ == 0 && weight_path_ != WeightPath::EXPANDED && options.accumulate != Accumulate::HALF &&
                       !(weight_path_ == WeightPath::AUTO && M >= kExpandMinRows);
  return allowed ? gemm_splits(M, desc.N, desc.K, sms_) : 1;
}

size_t Sm90Layer::split_ws_bytes(int64_t Mpad) const {
  size_t most = 0;  // every M up to Mpad: a capture of fewer rows splits as its eager call does
  for (int64_t m = kTileM; m <= Mpad; m += kTileM)
    most = std::max(most, size_t(gemm_split_ws_floats(m, desc.N, gemm_splits_for(m))) * sizeof(float));
  return most;
}

void Sm90Layer::ensure_workspace(int64_t M, bool capturing) const {
  const int64_t Mpad = round_up(M, kTileM);
  if (Mpad <= ws_.rows()) return;
  if (order_.before_growth(M, ws_.rows(), capturing)) {
    std::vector<DeviceBuffer> old = ws_.release();
    old.push_back(std::move(split_ws_));
    order_.retire(std::move(old));
  }
  ws_.allocate(Mpad, desc.K, int(Rpad_), options.activations == Activations::FP8);
  const size_t split = split_ws_bytes(Mpad);
  if (split > split_ws_.size()) split_ws_.resize(split);
}

void Sm90Layer::forward(const Tensor& x, Tensor& y, cudaStream_t stream) const {
  const int64_t K = desc.K, N = desc.N;
  const int64_t M = check_layer_io(desc, device_, x, y);
  if (M == 0) return;

  std::lock_guard<std::mutex> lock(order_.mutex());
  const bool capturing = CallOrder::capturing(stream);
  ensure_workspace(M, capturing);
  order_.before_launch(stream, capturing);

  const HalfType ht = desc.dtype == HalfKind::BF16 ? HalfType::BF16 : HalfType::FP16;
  ActQuantParams a;
  ws_.fill(a);
  a.x = x.data_as<uint16_t>();
  a.smooth = smooth_.as<uint16_t>();
  a.smooth_rcp = smooth_rcp_.as<float>();
  a.pdfrag = pdfrag_.as<uint32_t>();
  a.scale_f32 = options.accumulate != Accumulate::HALF;
  a.M = M;
  a.K = K;
  a.Rpad = int(Rpad_);
  a.act_unsigned = desc.act_unsigned;
  a.dtype = ht;
  a.fp8 = options.activations == Activations::FP8;
  // The expanded-weight path: the scratch is leased before the activation kernel, which expands
  // the weights with its spare blocks where it has room (act_quant.cu, v12); otherwise the
  // expansion kernel follows it. Either way the GEMM is the next kernel after the activation pass
  // or the expansion in the stream, so programmatic dependent launch chains them.
  const bool expand = !capturing && cluster_ <= 1 &&
                      (weight_path_ == WeightPath::EXPANDED || (weight_path_ == WeightPath::AUTO && M >= kExpandMinRows));
  const int64_t Nt = weight_tiles(N), G = K / kGroup;
  std::optional<WeightScratch::Lease> scratch;  // held from before the expansion through the GEMM
  if (expand) {
    scratch.emplace(WeightScratch::current(), size_t(Nt * G) * kCodeTileBytes, stream);
    a.wfrag = wfrag_.as<uint8_t>();
    a.wexp = scratch->data();
    a.exp_tiles = Nt * G;
  }
  const bool expanded = launch_act_quant(a, stream);
  if (expand && !expanded) launch_expand_weights(wfrag_.as<uint8_t>(), scratch->data(), Nt, G, stream);

  GemmParams g;
  g.codes = a.codes;
  g.ascale = a.ascale;
  g.lact = a.lact;
  g.wfrag = wfrag_.as<uint8_t>();
  g.wscale = wscale_.get();
  g.wcscales = wcscales_.as<float>();
  g.bias = bias_.as<float>();
  g.proj_up = proj_up_.as<float>();
  g.y = y.data_as<uint16_t>();
  g.M = M;
  g.N = N;
  g.K = K;
  g.Rpad = int(Rpad_);
  g.alpha = alpha_;
  g.mode = a.fp8 ? GemmMode::FP8 : options.accumulate == Accumulate::HALF ? GemmMode::HALF : GemmMode::FP32;
  g.row_scale = a.row_scale;
  g.dtype = ht;
  g.cluster = cluster_;
  if (expand) {
    g.wexp = scratch->data();
  } else if (const int splits = gemm_splits_for(M);
             splits > 1 && split_ws_.size() >= size_t(gemm_split_ws_floats(M, N, splits)) * sizeof(float)) {
    // (ensure_workspace sized it; only a cluster or weight path changed since can leave it short)
    g.splits = splits;
    g.split_ws = split_ws_.as<float>();
    g.split_tickets = split_tickets_.as<unsigned>();
  }
  launch_w4a4_gemm(g, stream);
  scratch.reset();  // records the end of the GEMM for the scratch's next user
  order_.after_launch(stream, capturing);
}

}  // namespace svdquant::cuda

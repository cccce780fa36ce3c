// The CPU backend: the reference numerics (cpu_layer.hpp), multi-threaded. Rows are processed in
// chunks: first each row's activations and low-rank projection (parallel over rows), then the
// outputs (parallel over blocks of output channels). Every output element is computed by one thread
// in the spec's order, so the result is bitwise independent of the thread count.
#include <algorithm>

#include "cpu_layer.hpp"
#include "parallel.hpp"
#include "svdquant/backend.hpp"
#include "svdquant/cpu_reference.hpp"
#include "svdquant/error.hpp"

namespace svdquant {
namespace detail {
namespace {

struct CpuPrepared : PreparedLayer {
  CpuLayer L;
};

void run(const CpuLayer& L, const Tensor& x, Tensor& y, int threads) {
  const DType T = L.desc.dtype == HalfKind::BF16 ? DType::BF16 : DType::F16;
  const int64_t K = L.desc.K, N = L.desc.N, R = L.desc.R;
  if (x.dim() != 2 || x.size(1) != K || x.dtype() != T || !x.is_contiguous() || x.device().type != DeviceType::CPU)
    throw FormatError("input x: expected a contiguous host " + std::string(dtype_name(T)) + " tensor [M, " + std::to_string(K) +
                      "], found " + std::string(dtype_name(x.dtype())) + " " + shape_str(x.shape()));
  const int64_t M = x.size(0);
  const bool f32_out = y.dtype() == DType::F32;
  if (y.dim() != 2 || y.size(0) != M || y.size(1) != N || !(y.dtype() == T || f32_out) || !y.is_contiguous() ||
      y.device().type != DeviceType::CPU)
    throw FormatError("output y: expected a contiguous host " + std::string(dtype_name(T)) + " or F32 tensor " + shape_str({M, N}) +
                      ", found " + std::string(dtype_name(y.dtype())) + " " + shape_str(y.shape()));
  const auto* xp = x.data_as<uint16_t>();
  auto* yp = f32_out ? nullptr : y.data_as<uint16_t>();
  auto* yf = f32_out ? y.data_as<float>() : nullptr;
  constexpr int64_t kRows = 32, kCols = 256;
  std::vector<RowActivations> acts(size_t(std::min(M, kRows)));
  std::vector<float> lows(size_t(std::min(M, kRows) * R));
  for (int64_t m0 = 0; m0 < M; m0 += kRows) {
    const int64_t rows = std::min(kRows, M - m0);
    parallel_for(rows, threads, [&](int64_t i) {
      std::vector<float> xs(static_cast<size_t>(K));
      shift_smooth_row(L, xp + (m0 + i) * K, xs.data());
      quantize_row(L, xs.data(), acts[size_t(i)]);
      lowrank_row(L, xp + (m0 + i) * K, &lows[size_t(i * R)]);
    });
    const int64_t col_blocks = (N + kCols - 1) / kCols;
    parallel_for(rows * col_blocks, threads, [&](int64_t item) {
      const int64_t i = item / col_blocks, n0 = (item % col_blocks) * kCols;
      const int64_t row = (m0 + i) * N;
      output_row(L, acts[size_t(i)], &lows[size_t(i * R)], n0, std::min(N, n0 + kCols), yp ? yp + row : nullptr,
                 yf ? yf + row : nullptr);
    });
  }
}

class CpuBackend final : public Backend {
 public:
  std::string_view name() const override { return "cpu"; }
  DeviceType device_type() const override { return DeviceType::CPU; }
  std::optional<std::string> unsupported_reason(const LayerDesc& d, const ForwardOptions& requested) const override {
    const ForwardOptions opt = resolve(d, requested);
    const int64_t G = group_size(d.precision);
    if (d.K <= 0 || d.K % G != 0)
      return "K = " + std::to_string(d.K) + " is not a positive multiple of the group size " + std::to_string(G);
    if (d.N <= 0) return "N = " + std::to_string(d.N) + " must be positive";
    if (d.act_unsigned && d.precision != Precision::INT4) return "unsigned activations are defined for int4 only";
    if (opt.activations == Activations::FP8 && opt.accumulate == Accumulate::HALF)
      return "half accumulation is defined for 4-bit activations only (NUMERICS.md §5); use --accumulate fp32 with fp8";
    return std::nullopt;
  }
  std::unique_ptr<PreparedLayer> prepare(const LayerWeights& w, const ForwardOptions& requested) const override {
    if (auto why = unsupported_reason(w.desc, requested)) throw UnsupportedError("cpu: " + *why);
    const ForwardOptions opt = resolve(w.desc, requested);
    auto p = std::make_unique<CpuPrepared>();
    p->desc = w.desc;
    p->options = opt;
    p->L = make_cpu_layer(w, opt);
    return p;
  }
  void forward(const PreparedLayer& layer, const Tensor& x, Tensor& y, void*) const override {
    const auto* p = dynamic_cast<const CpuPrepared*>(&layer);
    if (!p) throw Error("cpu backend: the layer was prepared by another backend");
    run(p->L, x, y, 0);
  }
};

}  // namespace

void register_cpu_backend(BackendRegistry& r) { r.add(std::make_unique<CpuBackend>()); }

}  // namespace detail

namespace {
Tensor reference_forward(const Tensor& x, const LayerWeights& w, const ForwardOptions& requested, int threads, DType out) {
  const ForwardOptions opt = resolve_activations(requested, Activations::CHECKPOINT);  // the CPU's default
  if (x.dim() != 2) throw FormatError("input x: expected [M, K], found " + shape_str(x.shape()));
  if (opt.activations == Activations::FP8 && opt.accumulate == Accumulate::HALF)
    throw UnsupportedError("half accumulation is defined for 4-bit activations only (NUMERICS.md §5)");
  detail::CpuLayer L = detail::make_cpu_layer(w, opt);
  Tensor y = Tensor::zeros(out, {x.size(0), w.desc.N});
  detail::run(L, x, y, threads);
  return y;
}
}  // namespace

Tensor ref::forward(const Tensor& x, const LayerWeights& w, const ForwardOptions& opt, int threads) {
  return reference_forward(x, w, opt, threads, x.dtype());
}

Tensor ref::forward_f32(const Tensor& x, const LayerWeights& w, const ForwardOptions& opt, int threads) {
  return reference_forward(x, w, opt, threads, DType::F32);
}

}  // namespace svdquant

// The "cuda-sm90" backend: SVDQuant int4 layers on Hopper (compute capability 9.0), fused
// activation kernel + FP8-wgmma W4A4 GEMM (act_quant.cu, w4a4_gemm.cu), with 4-bit (checkpoint)
// or fp8 activations; nvfp4 layers with bf16 wgmma on dequantized values (nvfp4_*.cu). Its hardware gate refuses
// every other device before anything is allocated.
#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "cuda_check.hpp"
#include "device_buffer.hpp"
#include "nvfp4_layer.hpp"
#include "sm90_layer.hpp"
#include "sm90_layout.hpp"
#include "svdquant/backend.hpp"
#include "svdquant/error.hpp"

namespace svdquant {
namespace detail {
namespace {

// nullopt when the current CUDA device is a Hopper GPU; never throws, allocates no device memory.
std::optional<std::string> hardware_gate() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("no usable CUDA device or driver (") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) + ")";
  }
  if (count == 0) return std::string("no CUDA device");
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("cannot query the CUDA device");
  }
  if (major != 9 || minor != 0)
    return "needs sm_90 (Hopper), found sm_" + std::to_string(major) + std::to_string(minor);
  return std::nullopt;
}

class CudaSm90Backend final : public Backend {
 public:
  std::string_view name() const override { return "cuda-sm90"; }
  DeviceType device_type() const override { return DeviceType::CUDA; }

  // Activations::AUTO: fp8 activations (NUMERICS.md §5) for int4 layers with fp32 accumulation,
  // faster here and more accurate than 4-bit activations (docs/perf-notes.md); otherwise 4-bit.
  ForwardOptions resolve(const LayerDesc& d, const ForwardOptions& opt) const override {
    const bool fp8 = d.precision == Precision::INT4 && opt.accumulate == Accumulate::FP32;
    return resolve_activations(opt, fp8 ? Activations::FP8 : Activations::CHECKPOINT);
  }

  std::optional<std::string> unsupported_reason(const LayerDesc& d, const ForwardOptions& requested) const override {
    try {
      const ForwardOptions opt = resolve(d, requested);
      if (auto why = hardware_gate()) return why;
      if (d.precision == Precision::NVFP4) {
        if (opt.accumulate != Accumulate::FP32)
          return std::string("nvfp4 layers run with fp32 accumulation only on cuda-sm90 (half accumulation is not implemented)");
        if (opt.activations != Activations::CHECKPOINT)
          return std::string("nvfp4 layers run with checkpoint (nvfp4) activations only on cuda-sm90");
        if (d.K <= 0 || d.K % cuda::kNvGroup != 0)
          return "K = " + std::to_string(d.K) + " is not a positive multiple of the nvfp4 group size 16";
        if (d.N <= 0) return "N = " + std::to_string(d.N) + " must be positive";
        if (d.R < 0 || cuda::nv_padded_rank(d.R) > cuda::kNvMaxRank)
          return "rank R = " + std::to_string(d.R) + " is outside [0, " + std::to_string(cuda::kNvMaxRank) + "]";
        return std::nullopt;
      }
      if (opt.activations == Activations::FP8 && opt.accumulate == Accumulate::HALF)
        return std::string("fp8 activations are defined with fp32 accumulation only (NUMERICS.md §5)");
      if (d.K <= 0 || d.K % cuda::kGroup != 0)
        return "K = " + std::to_string(d.K) + " is not a positive multiple of the group size 64";
      if (d.N <= 0) return "N = " + std::to_string(d.N) + " must be positive";
      if (d.R < 0 || cuda::padded_rank(d.R) > cuda::kMaxRank)
        return "rank R = " + std::to_string(d.R) + " is outside [0, " + std::to_string(cuda::kMaxRank) + "]";
      return std::nullopt;
    } catch (...) {
      return std::string("cuda-sm90: internal error while checking the request");
    }
  }

  std::unique_ptr<PreparedLayer> prepare(const LayerWeights& w, const ForwardOptions& requested) const override {
    if (auto why = unsupported_reason(w.desc, requested)) throw UnsupportedError("cuda-sm90: " + w.prefix + ": " + *why);
    if (w.desc.precision == Precision::NVFP4) return std::make_unique<cuda::Nvfp4Layer>(w, resolve(w.desc, requested));
    return std::make_unique<cuda::Sm90Layer>(w, resolve(w.desc, requested));
  }

  void forward(const PreparedLayer& layer, const Tensor& x, Tensor& y, void* stream) const override {
    if (const auto* N = dynamic_cast<const cuda::Nvfp4Layer*>(&layer)) return N->forward(x, y, static_cast<cudaStream_t>(stream));
    const auto* L = dynamic_cast<const cuda::Sm90Layer*>(&layer);
    if (!L) throw UnsupportedError("cuda-sm90: the layer was prepared by another backend");
    L->forward(x, y, static_cast<cudaStream_t>(stream));
  }

  Tensor forward_host(const PreparedLayer& layer, const Tensor& x) const override {
    const auto* L = dynamic_cast<const cuda::Sm90Layer*>(&layer);
    const auto* NL = dynamic_cast<const cuda::Nvfp4Layer*>(&layer);
    if (!L && !NL) throw UnsupportedError("cuda-sm90: the layer was prepared by another backend");
    const int layer_device = L ? L->device() : NL->device();
    const DType T = layer.desc.dtype == HalfKind::BF16 ? DType::BF16 : DType::F16;
    if (x.dim() != 2 || x.size(1) != layer.desc.K || x.dtype() != T || x.device().type != DeviceType::CPU)
      throw FormatError("cuda-sm90: input x: expected a host " + std::string(dtype_name(T)) + " tensor [M, " +
                        std::to_string(layer.desc.K) + "], found " + std::string(dtype_name(x.dtype())) + " " +
                        shape_str(x.shape()));
    const Tensor xc = x.is_contiguous() ? x : x.clone();
    const int64_t M = x.size(0), N = layer.desc.N;
    Tensor y = Tensor::zeros(T, {M, N});
    if (M == 0) return y;
    int prev = 0;
    cuda::check(cudaGetDevice(&prev), "cudaGetDevice");
    cuda::check(cudaSetDevice(layer_device), "cudaSetDevice");
    try {
      cuda::DeviceBuffer dx, dy(y.nbytes());
      dx.upload(xc.data(), xc.nbytes());
      const Device dev{DeviceType::CUDA, layer_device};
      const Tensor tx = Tensor::wrap(dx.get(), T, {M, layer.desc.K}, dev);
      Tensor ty = Tensor::wrap(dy.get(), T, {M, N}, dev);
      if (NL) NL->forward(tx, ty, nullptr);
      else L->forward(tx, ty, nullptr);
      cuda::check(cudaMemcpy(y.data(), dy.get(), y.nbytes(), cudaMemcpyDeviceToHost), "cudaMemcpy D2H (forward)");
    } catch (...) {
      cudaSetDevice(prev);
      throw;
    }
    cuda::check(cudaSetDevice(prev), "cudaSetDevice");
    return y;
  }
};

}  // namespace

void register_cuda_backends(BackendRegistry& r) { r.add(std::make_unique<CudaSm90Backend>()); }

}  // namespace detail
}  // namespace svdquant

// The backend interface, the registry and its hardware gate.
// A backend `prepare`s a layer once at load time (repacking the canonical tensors into its own
// layout, on its own device) and then runs `forward` on it. Selection refuses an unsupported
// combination of device, precision and options before anything is allocated, with the reason.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "svdquant/checkpoint.hpp"
#include "svdquant/numerics.hpp"
#include "svdquant/tensor.hpp"

namespace svdquant {

// A layer in a backend's own layout. Backends derive from it.
class PreparedLayer {
 public:
  virtual ~PreparedLayer() = default;
  LayerDesc desc;
  ForwardOptions options;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;  // "cpu", "cuda-sm90", ...
  virtual DeviceType device_type() const = 0;
  // The options this backend runs for `opt`: Activations::AUTO replaced by its default mode
  // (here: CHECKPOINT); everything else unchanged. unsupported_reason and prepare apply it.
  virtual ForwardOptions resolve(const LayerDesc& desc, const ForwardOptions& opt) const;
  // nullopt if this backend can run the layer with these options on this machine; otherwise why not.
  virtual std::optional<std::string> unsupported_reason(const LayerDesc& desc, const ForwardOptions& opt) const = 0;
  // The prepared layer's `options` are the resolved ones.
  virtual std::unique_ptr<PreparedLayer> prepare(const LayerWeights& w, const ForwardOptions& opt) const = 0;
  // x: [M, K] T, y: [M, N] T (or F32 where a backend supports it: the value before the final
  // rounding to T), both contiguous on this backend's device. `stream` is a
  // cudaStream_t for CUDA backends (null = default stream), ignored by the CPU backend.
  virtual void forward(const PreparedLayer& layer, const Tensor& x, Tensor& y, void* stream) const = 0;
  // Host tensors in and out; device backends stage through device memory. x: [M, K] T.
  virtual Tensor forward_host(const PreparedLayer& layer, const Tensor& x) const;
};

class BackendRegistry {
 public:
  // The process-wide registry with every backend built into this library.
  static BackendRegistry& instance();
  void add(std::unique_ptr<Backend> b);
  std::vector<const Backend*> backends() const;
  const Backend* find(std::string_view name) const;
  // `choice`: "auto" (the best backend that supports the request: device backends first), a
  // backend name, or a device type ("cpu", "cuda"). Throws UnsupportedError with every reason.
  const Backend& select(std::string_view choice, const LayerDesc& desc, const ForwardOptions& opt) const;

 private:
  std::vector<std::unique_ptr<Backend>> backends_;
};

namespace detail {
void register_cpu_backend(BackendRegistry& r);
#ifdef SVDQUANT_HAVE_CUDA
void register_cuda_backends(BackendRegistry& r);  // src/cuda/
#endif
}  // namespace detail

}  // namespace svdquant

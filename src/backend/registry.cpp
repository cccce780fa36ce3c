// Backend registry and hardware gate: selection asks every candidate why it cannot run a request
// before anything is prepared, so an unsupported request fails without allocating.
#include <algorithm>
#include <mutex>

#include "svdquant/backend.hpp"
#include "svdquant/error.hpp"

namespace svdquant {

ForwardOptions Backend::resolve(const LayerDesc&, const ForwardOptions& opt) const {
  return resolve_activations(opt, Activations::CHECKPOINT);
}

Tensor Backend::forward_host(const PreparedLayer& layer, const Tensor& x) const {
  if (device_type() != DeviceType::CPU)
    throw UnsupportedError(std::string(name()) + ": forward_host is not implemented for this device backend");
  Tensor y = Tensor::zeros(x.dtype(), {x.size(0), layer.desc.N});
  forward(layer, x, y, nullptr);
  return y;
}

BackendRegistry& BackendRegistry::instance() {
  static BackendRegistry* r = [] {
    auto* reg = new BackendRegistry();
#ifdef SVDQUANT_HAVE_CUDA
    detail::register_cuda_backends(*reg);
#endif
    detail::register_cpu_backend(*reg);
    return reg;
  }();
  return *r;
}

void BackendRegistry::add(std::unique_ptr<Backend> b) {
  if (find(b->name())) throw Error("backend '" + std::string(b->name()) + "' registered twice");
  backends_.push_back(std::move(b));
}

std::vector<const Backend*> BackendRegistry::backends() const {
  std::vector<const Backend*> out;
  for (const auto& b : backends_) out.push_back(b.get());
  return out;
}

const Backend* BackendRegistry::find(std::string_view name) const {
  for (const auto& b : backends_)
    if (b->name() == name) return b.get();
  return nullptr;
}

const Backend& BackendRegistry::select(std::string_view choice, const LayerDesc& desc, const ForwardOptions& opt) const {
  std::vector<const Backend*> candidates;
  if (choice == "auto") {
    // Device backends first (registration order), the CPU reference last.
    for (const auto& b : backends_)
      if (b->device_type() != DeviceType::CPU) candidates.push_back(b.get());
    for (const auto& b : backends_)
      if (b->device_type() == DeviceType::CPU) candidates.push_back(b.get());
  } else if (choice == "cpu" || choice == "cuda") {
    const DeviceType want = choice == "cpu" ? DeviceType::CPU : DeviceType::CUDA;
    for (const auto& b : backends_)
      if (b->device_type() == want) candidates.push_back(b.get());
    if (candidates.empty())
      throw UnsupportedError("backend '" + std::string(choice) + "': this build has no " + std::string(choice) +
                             " backend" + (choice == "cuda" ? " (built without CUDA: nvcc was not found at configure time)" : ""));
  } else {
    const Backend* b = find(choice);
    if (!b) {
      std::string names;
      for (const auto& x : backends_) names += (names.empty() ? "" : ", ") + std::string(x->name());
      throw UnsupportedError("unknown backend '" + std::string(choice) + "' (available: auto, cpu, cuda, " + names + ")");
    }
    candidates.push_back(b);
  }
  std::string reasons;
  for (const Backend* b : candidates) {
    auto why = b->unsupported_reason(desc, opt);
    if (!why) return *b;
    reasons += "\n  " + std::string(b->name()) + ": " + *why;
  }
  throw UnsupportedError("no backend can run this layer (" + std::string(to_string(desc.precision)) + ", N=" + std::to_string(desc.N) +
                         ", K=" + std::to_string(desc.K) + ", accumulate=" + std::string(to_string(opt.accumulate)) +
                         ", activations=" + std::string(to_string(opt.activations)) + "):" + reasons);
}

}  // namespace svdquant

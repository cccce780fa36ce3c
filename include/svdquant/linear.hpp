// SVDQuantLinear: one quantized linear layer, prepared on the selected backend.
#pragma once
#include <memory>
#include <string>

#include "svdquant/backend.hpp"
#include "svdquant/checkpoint.hpp"

namespace svdquant {

struct LinearOptions {
  std::string backend = "auto";  // "auto", "cpu", "cuda" or a backend name
  ForwardOptions forward;
};

class SVDQuantLinear {
 public:
  // Selects the backend (refusing an unsupported request before any allocation) and prepares.
  SVDQuantLinear(const LayerWeights& weights, const LinearOptions& opt = {});
  static SVDQuantLinear from_checkpoint(const Checkpoint& ckpt, const std::string& prefix,
                                        const LinearOptions& opt = {});

  const LayerDesc& desc() const { return layer_->desc; }
  const Backend& backend() const { return *backend_; }
  const ForwardOptions& options() const { return layer_->options; }

  // Host tensor x [..., K] of dtype T -> host tensor [..., N] of dtype T.
  Tensor forward(const Tensor& x) const;
  // Tensors already on the backend's device: x [M, K], y [M, N], both T and contiguous.
  void forward(const Tensor& x, Tensor& y, void* stream) const;

 private:
  const Backend* backend_ = nullptr;
  std::shared_ptr<PreparedLayer> layer_;
};

}  // namespace svdquant

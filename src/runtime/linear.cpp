#include "svdquant/linear.hpp"

#include "svdquant/error.hpp"

namespace svdquant {

SVDQuantLinear::SVDQuantLinear(const LayerWeights& weights, const LinearOptions& opt) {
  backend_ = &BackendRegistry::instance().select(opt.backend, weights.desc, opt.forward);
  layer_ = backend_->prepare(weights, opt.forward);
}

SVDQuantLinear SVDQuantLinear::from_checkpoint(const Checkpoint& ckpt, const std::string& prefix, const LinearOptions& opt) {
  return SVDQuantLinear(ckpt.layer(prefix), opt);
}

Tensor SVDQuantLinear::forward(const Tensor& x) const {
  const auto& d = layer_->desc;
  if (x.dim() < 1 || x.size(-1) != d.K)
    throw FormatError("input x: expected [..., " + std::to_string(d.K) + "], found " + shape_str(x.shape()));
  Shape out_shape = x.shape();
  out_shape.back() = d.N;
  const int64_t M = d.K ? x.numel() / d.K : 0;
  Tensor x2 = (x.is_contiguous() ? x : x.clone()).reshape({M, d.K});
  Tensor y = backend_->forward_host(*layer_, x2);
  return y.reshape(out_shape);
}

void SVDQuantLinear::forward(const Tensor& x, Tensor& y, void* stream) const { backend_->forward(*layer_, x, y, stream); }

}  // namespace svdquant

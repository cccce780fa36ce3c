"""svdquant.SVDQuantLinear: a quantized linear layer as a torch.nn.Module.

forward(x) takes CPU or CUDA tensors of the layer dtype with any leading dims and returns
[..., out_features] of the same dtype and device, computed by the C++ library on torch's current
CUDA stream (CPU tensors on the CPU backend). The layer is prepared once per device, on first use
or by prepare(device); the canonical tensors stay on the host (svdquant.Weights). Inference only:
there is no backward.
"""
import torch

from . import _C, _op

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class SVDQuantLinear(torch.nn.Module):
    def __init__(self, weights, *, backend=None, accumulate="fp32", activations="auto", device=None):
        """weights: a svdquant.Weights (Checkpoint.layer(), quantize_linear()). backend: the backend for
        CUDA tensors ('cuda' by default, or a backend name such as 'cuda-sm90'); CPU tensors always run
        on 'cpu'. accumulate ('fp32' | 'half') / activations ('auto' | 'checkpoint' | 'fp8'; auto: fp8
        for int4 fp32 layers on cuda-sm90, 4-bit elsewhere): docs/NUMERICS.md. device: prepare there now."""
        super().__init__()
        if not isinstance(weights, _C.Weights):
            raise TypeError(f"SVDQuantLinear: expected svdquant.Weights, got {type(weights).__name__}")
        self.weights = weights
        self.prefix = weights.prefix
        self.in_features = weights.in_features
        self.out_features = weights.out_features
        self.rank = weights.rank
        self.precision = weights.precision
        self.act_unsigned = weights.act_unsigned
        self.dtype = _DTYPES[weights.dtype]
        self.backend = backend
        self.accumulate = accumulate
        self.activations = activations
        self._layers = {}  # (device type, index) -> svdquant.Layer
        self._handle = _op.register(self)
        if device is not None:
            self.prepare(device)

    @classmethod
    def from_checkpoint(cls, checkpoint, prefix, **kwargs):
        """checkpoint: a svdquant.Checkpoint or a path (canonical folder or .safetensors file)."""
        if not isinstance(checkpoint, _C.Checkpoint):
            checkpoint = _C.Checkpoint(str(checkpoint))
        return cls(checkpoint.layer(prefix), **kwargs)

    @classmethod
    def from_linear(cls, linear, *, rank=32, precision="int4", dtype=None, act_unsigned=False, alpha=0.5,
                    act_absmax=None, samples=None, prefix="", quantize_options=None, **kwargs):
        """SVDQuant an nn.Linear with the C++ quantizer (svdquant.quantize_linear). dtype: the layer
        dtype ('bfloat16' / 'float16' / a torch dtype; default: float16 for float16 weights, else
        bfloat16). act_absmax [in_features] / samples [S, in_features]: calibration statistics (tensors
        or arrays). quantize_options: more quantize_linear keywords (alpha_grid, refine, svd, ...).
        The quality report is kept in .quality."""
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"from_linear: expected torch.nn.Linear, got {type(linear).__name__}")
        if dtype is None:
            dtype = "float16" if linear.weight.dtype == torch.float16 else "bfloat16"
        elif isinstance(dtype, torch.dtype):
            names = {v: k for k, v in _DTYPES.items()}
            if dtype not in names:
                raise ValueError(f"from_linear: dtype {dtype} is not a layer dtype (torch.bfloat16, torch.float16)")
            dtype = names[dtype]
        weights, quality = _C.quantize_linear(
            _host_f32(linear.weight), None if linear.bias is None else _host_f32(linear.bias), prefix=prefix,
            rank=rank, precision=precision, dtype=dtype, act_unsigned=act_unsigned, alpha=alpha,
            act_absmax=None if act_absmax is None else _host_f32(act_absmax),
            samples=None if samples is None else _host_f32(samples), **(quantize_options or {}))
        module = cls(weights, **kwargs)
        module.quality = quality
        return module

    def prepare(self, device):
        """The C++ layer for `device` (prepared on first call; weights uploaded for CUDA devices)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = (device.type, device.index)
        layer = self._layers.get(key)
        if layer is not None:
            return layer
        opts = dict(accumulate=self.accumulate, activations=self.activations)
        if device.type == "cpu":
            layer = _C.Layer(self.weights, backend="cpu", **opts)
        elif device.type == "cuda":
            with torch.cuda.device(device):  # CUDA backends prepare on the current device
                layer = _C.Layer(self.weights, backend=self.backend or "cuda", **opts)
        else:
            raise _C.UnsupportedError(f"SVDQuantLinear {self.prefix}: tensors on {device} are not supported "
                                      "(cpu or cuda)")
        self._layers[key] = layer
        return layer

    def release(self):
        """Drops every prepared layer (device memory included); the next forward prepares again."""
        self._layers.clear()

    def forward(self, x):
        if x.dtype != self.dtype:
            raise _C.FormatError(f"SVDQuantLinear {self.prefix}: input dtype {x.dtype}, but the layer dtype is {self.dtype} "
                            f"(run the model in that dtype, e.g. model.to({self.dtype}))")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise _C.FormatError(f"SVDQuantLinear {self.prefix}: expected input [..., {self.in_features}], "
                             f"found {list(x.shape)}")
        return _op.linear(x, self._handle, self.out_features)

    def _run(self, x):
        # The op's real implementation (_op.linear): eager, with real tensors.
        layer = self.prepare(x.device)
        x2 = x.detach().reshape(-1, self.in_features).contiguous()
        y = torch.empty((x2.shape[0], self.out_features), dtype=x.dtype, device=x.device)
        if x.device.type == "cuda":
            layer.forward(x2, out=y, stream=torch.cuda.current_stream(x.device).cuda_stream)
        else:
            layer.forward(x2, out=y)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"precision={self.precision}, dtype={self.dtype}" + (", act_unsigned" if self.act_unsigned else ""))


def _host_f32(t):
    """A tensor or array as a contiguous float32 host array for the quantizer."""
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float32).contiguous().numpy()
    import numpy as np
    return np.ascontiguousarray(t, dtype=np.float32)

"""svdquant: SVDQuant W4A4 linear layers from Python.

numpy (CPU) and any DLPack producer work through the compiled extension alone; the PyTorch module
(SVDQuantLinear, load_into, quantize_model) is imported on first use and needs torch >= 2.4.

    import svdquant
    ck = svdquant.Checkpoint("flux-int4/")                       # canonical folder or .safetensors
    layer = svdquant.Layer(ck, "transformer_blocks.0.attn.to_q", backend="cpu")
    y = layer(x_fp16)                                            # numpy float16 [..., K] -> [..., N]

    from svdquant import load_into
    load_into(transformer, "flux-int4/")                         # diffusers model, quantized in place
"""
import pkgutil as _pkgutil

# In a build tree the extension lives in <build>/python/svdquant/ beside these sources on the path.
__path__ = _pkgutil.extend_path(__path__, __name__)

from ._C import (  # noqa: E402
    Calibration,
    Checkpoint,
    ConfigError,
    Error,
    FormatError,
    Layer,
    UnsupportedError,
    Weights,
    backends,
    built_with_cuda,
    family_defaults,
    module_matches,
    quantize_linear,
    write_checkpoint,
)
from .arrays import bfloat16_bits, from_bfloat16_bits  # noqa: E402

__version__ = "0.1.0"

_TORCH_NAMES = {
    "SVDQuantLinear": "nn",
    "load_into": "loading",
    "quantize_model": "quantize",
    "save_quantized": "saving",
}

__all__ = [
    "Calibration", "Checkpoint", "ConfigError", "Error", "FormatError", "Layer", "UnsupportedError", "Weights",
    "backends", "bfloat16_bits", "built_with_cuda", "family_defaults", "from_bfloat16_bits", "module_matches",
    "quantize_linear", "write_checkpoint", *_TORCH_NAMES,
]


def __getattr__(name):
    # The torch parts are imported lazily: `import svdquant` needs no torch.
    if name in _TORCH_NAMES:
        import importlib

        module = importlib.import_module(f".{_TORCH_NAMES[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'svdquant' has no attribute '{name}'")

"""svdquant.load_into(model, folder): a diffusers transformer (or any torch module whose module
names are the checkpoint's tensor prefixes: FLUX, SD3, Qwen-Image, Z-Image naming) gets its
quantized nn.Linear layers replaced by SVDQuantLinear and every other tensor loaded from the
canonical checkpoint.
"""
import torch

from . import _C
from .nn import SVDQuantLinear
from .torch_tensors import to_torch


def _limit(names, n=5):
    names = sorted(names)
    text = ", ".join(names[:n])
    return text + (f", ... ({len(names)} in all)" if len(names) > n else "")


def replace_module(model, name, new):
    """Puts `new` at the dotted module path `name` of `model`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def load_into(model, folder, *, component="transformer", device=None, backend=None, accumulate="fp32",
              activations="auto", strict=True):
    """Replaces the layers quantized in the canonical checkpoint `folder` (every prefix with a
    `<prefix>.qweight`) by SVDQuantLinear and loads the other tensors into the model (16-bit layers,
    e.g. those of modules_to_not_convert, norms, embedders). strict: every tensor of the checkpoint
    must belong to the model and every remaining parameter/buffer of the model must be in the
    checkpoint. device: move the model there and prepare the quantized layers on it. Returns the
    list of replaced module names."""
    ck = folder if isinstance(folder, _C.Checkpoint) else _C.Checkpoint(str(folder), component)
    quantized = ck.quantized_layers()
    if not quantized:
        raise _C.FormatError(f"{ck.path}: no quantized layers (no <prefix>.qweight tensors)")
    modules = dict(model.named_modules())
    absent = [p for p in quantized if p not in modules]
    if absent:
        raise _C.FormatError(f"{ck.path}: quantized layers that are not modules of the "
                             f"{type(model).__name__}: {_limit(absent)}")
    new_modules = {}
    for prefix in quantized:
        old = modules[prefix]
        if not isinstance(old, (torch.nn.Linear, SVDQuantLinear)):
            raise _C.FormatError(f"{prefix}: quantized in the checkpoint, but the model's module is a "
                                 f"{type(old).__name__}, not an nn.Linear")
        w = ck.layer(prefix)
        if (w.in_features, w.out_features) != (old.in_features, old.out_features):
            raise _C.FormatError(f"{prefix}: the checkpoint's layer is [{w.out_features}, {w.in_features}] "
                                 f"(out, in), the model's [{old.out_features}, {old.in_features}]")
        if isinstance(old, torch.nn.Linear) and old.bias is not None and not w.has_bias:
            raise _C.FormatError(f"{prefix}: the model's layer has a bias, the checkpoint's none")
        new_modules[prefix] = SVDQuantLinear(w, backend=backend, accumulate=accumulate, activations=activations)

    qset = set(quantized)
    state = {n: t for n, t in model.state_dict().items() if n.rpartition(".")[0] not in qset}
    loaded, unexpected = {}, []
    for name in ck.tensor_names():
        if name.rpartition(".")[0] in qset:
            continue
        if name not in state:
            unexpected.append(name)
            continue
        t = to_torch(ck.tensor(name), ck.tensor_dtype(name))
        if tuple(t.shape) != tuple(state[name].shape):
            raise _C.FormatError(f"{name}: shape {list(t.shape)} in the checkpoint, {list(state[name].shape)} in the model")
        loaded[name] = t
    missing = [n for n in state if n not in loaded]
    if strict and (unexpected or missing):
        parts = []
        if unexpected:
            parts.append(f"tensors not in the model: {_limit(unexpected)}")
        if missing:
            parts.append(f"model tensors not in the checkpoint: {_limit(missing)}")
        raise _C.FormatError(f"{ck.path}: " + "; ".join(parts) + " (strict=False loads what matches)")

    # Nothing is changed before every check has passed.
    for prefix, new in new_modules.items():
        replace_module(model, prefix, new)
    model.load_state_dict(loaded, strict=False)
    if device is not None:
        model.to(device)
        for m in new_modules.values():
            m.prepare(device)
    return quantized

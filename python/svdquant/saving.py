"""svdquant.save_quantized(model, folder): a model with SVDQuantLinear layers (load_into,
quantize_model) as a canonical checkpoint folder (docs/FORMAT.md §2), which load_into, the CLI and
vLLM-omni read. The other tensors are the model's state_dict, as they are.
"""
import json

from . import _C
from .nn import SVDQuantLinear
from .torch_tensors import to_numpy


def save_quantized(model, folder, *, config=None, modules_to_not_convert=None):
    """config: the model config as a dict (default: a diffusers model's model.config plus
    _class_name). modules_to_not_convert: recorded in quantization_config (default: every nn.Linear
    left in 16 bits whose name matches no quantized layer)."""
    import torch

    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, SVDQuantLinear)]
    if not layers:
        raise _C.ConfigError(f"{type(model).__name__}: no SVDQuantLinear to save")
    ranks = {m.rank for _, m in layers}
    precisions = {m.precision for _, m in layers}
    if len(ranks) != 1 or len(precisions) != 1:
        raise _C.ConfigError(f"save_quantized: one rank and precision per checkpoint, found ranks {sorted(ranks)}, "
                             f"precisions {sorted(precisions)}")
    weights = []
    for name, m in layers:
        if m.weights.prefix != name:
            raise _C.ConfigError(f"{name}: the SVDQuantLinear's weights are named '{m.weights.prefix}'")
        weights.append(m.weights)
    if config is None:
        config = dict(getattr(model, "config", {}) or {})
        config["_class_name"] = type(model).__name__
    if modules_to_not_convert is None:
        quantized = [n for n, _ in layers]
        modules_to_not_convert = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                                  and not any(_C.module_matches(n, q) for q in quantized)]
    tensors = {name: to_numpy(t) for name, t in model.state_dict().items()}
    _C.write_checkpoint(str(folder), weights, tensors, config_json=json.dumps(config, default=str),
                        rank=ranks.pop(), precision=precisions.pop(), modules_to_not_convert=list(modules_to_not_convert))

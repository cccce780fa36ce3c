"""svdquant.quantize_model(model, ...): SVDQuant a torch model's nn.Linear layers in memory with the
C++ quantizer, choosing the layers as `svdquant quantize` does for a checkpoint (docs/QUANTIZER.md
"Which layers": the family skip tables by the diffusers class name, modules_to_not_convert, only),
with the same per-layer seeds, so both give the same quantized tensors for the same weights.
"""
import json

import torch

from . import _C
from .loading import replace_module
from .nn import SVDQuantLinear, _host_f32

_DEFAULT_ALPHA_GRID = [0.25, 0.4, 0.5, 0.6, 0.75]


def _any_match(patterns, module):
    return any(_C.module_matches(p, module) for p in patterns)


def _top_level_match(names, module):
    return any(module == p or module.startswith(p + ".") for p in names)


def plan_layers(model, *, precision="int4", modules_to_not_convert=(), only=(), family_skips=True, family=None):
    """(family defaults, [(module name, nn.Linear, act_unsigned)], [names kept in 16 bits]) for `model`.
    family: a diffusers class name (default: the model's class name)."""
    fam = _C.family_defaults(json.dumps({"_class_name": family or type(model).__name__}))
    if not family_skips:
        fam["skip"], fam["skip_top_level"] = [], []
    group = 64 if precision == "int4" else 16
    plan, kept = [], []
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        if only and not _any_match(only, name):
            kept.append(name)
            continue
        if (_any_match(modules_to_not_convert, name) or _any_match(fam["skip"], name)
                or _top_level_match(fam["skip_top_level"], name)):
            kept.append(name)
            continue
        if mod.in_features % group != 0:
            raise _C.UnsupportedError(f"{name}.weight: K = {mod.in_features} is not a multiple of the {precision} "
                                      f"group size {group}; keep it in 16 bits with modules_to_not_convert=['{name}']")
        plan.append((name, mod, precision == "int4" and _any_match(fam["act_unsigned"], name)))
    return fam, plan, kept


def quantize_model(model, *, rank=32, precision="int4", dtype=None, modules_to_not_convert=(), only=(),
                   family_skips=True, family=None, calib=None, alpha_grid=None, refine=0, eval_rows=128, report=True,
                   backend=None, accumulate="fp32", activations="auto", device=None, progress=None):
    """Replaces the model's quantizable nn.Linear layers by SVDQuantLinear, in place.

    dtype: the layer dtype ('bfloat16' / 'float16'; default: each weight's, bfloat16 for float32).
    calib: a calibration statistics file (path or svdquant.Calibration; python/calib/record_stats.py)
    giving act_absmax and samples per module; every quantized layer needs its statistics.
    progress: called as progress(done, total, module). Returns a report like `svdquant quantize`'s
    quantization_report.json: {"family", "layers": [{"module", "N", "K", "act_unsigned", "error"}],
    "kept_16bit"}."""
    fam, plan, kept = plan_layers(model, precision=precision, modules_to_not_convert=modules_to_not_convert, only=only,
                                  family_skips=family_skips, family=family)
    if not plan:
        raise _C.ConfigError(f"{type(model).__name__}: no nn.Linear left to quantize")
    if calib is not None and not isinstance(calib, _C.Calibration):
        calib = _C.Calibration(str(calib))
    if calib is not None:
        missing = [name for name, _, _ in plan if not calib.has(name)]
        if missing:
            shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise _C.ConfigError(f"calibration statistics: none (<module>.input_absmax) for {shown}; record them "
                                 "for every quantized layer or exclude the layers with modules_to_not_convert")
    layers = []
    for i, (name, mod, act_unsigned) in enumerate(plan):
        K = mod.in_features
        layer_dtype = dtype or ("float16" if mod.weight.dtype == torch.float16 else "bfloat16")
        absmax = samples = None
        if calib is not None:
            absmax = calib.absmax(name, K)
            samples = calib.samples(name, K, eval_rows)
        weights, quality = _C.quantize_linear(
            _host_f32(mod.weight), None if mod.bias is None else _host_f32(mod.bias), prefix=name, rank=rank,
            precision=precision, dtype=layer_dtype, act_unsigned=act_unsigned, act_absmax=absmax, samples=samples,
            eval_rows=eval_rows, alpha_grid=_DEFAULT_ALPHA_GRID if alpha_grid is None else list(alpha_grid),
            refine=refine, report=report)
        new = SVDQuantLinear(weights, backend=backend, accumulate=accumulate, activations=activations, device=device)
        new.quality = quality
        replace_module(model, name, new)
        layers.append({"module": name, "N": mod.out_features, "K": K, "act_unsigned": act_unsigned,
                       "alpha": quality["alpha"],
                       "error": {k: quality[k] for k in ("rtn", "smooth_only", "lowrank_only", "svdquant")}})
        if progress is not None:
            progress(i + 1, len(plan), name)
    return {"family": fam["family"], "layers": layers, "kept_16bit": kept}

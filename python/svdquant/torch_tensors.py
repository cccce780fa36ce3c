"""Between the extension's numpy arrays (BF16 as uint16 bits, F8_E4M3 as uint8 bits) and torch."""
import numpy as np
import torch

_VIEWS = {"BF16": torch.bfloat16, "F8_E4M3": getattr(torch, "float8_e4m3fn", None)}


def to_torch(array, dtype_name):
    """A torch CPU tensor (a copy) of a numpy array the extension gave with its safetensors dtype."""
    t = torch.from_numpy(np.array(array, copy=True))
    view = _VIEWS.get(dtype_name)
    if dtype_name in _VIEWS:
        if view is None:
            raise NotImplementedError(f"{dtype_name}: this torch has no such dtype")
        t = t.view(view)
    return t


def to_numpy(tensor):
    """(safetensors dtype, host numpy array) of a torch tensor, for svdquant.write_checkpoint."""
    t = tensor.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        return "BF16", t.view(torch.int16).numpy().view(np.uint16)
    if t.dtype == getattr(torch, "float8_e4m3fn", object()):
        return "F8_E4M3", t.view(torch.uint8).numpy()
    names = {torch.float16: "F16", torch.float32: "F32", torch.float64: "F64", torch.int8: "I8", torch.uint8: "U8",
             torch.int16: "I16", torch.int32: "I32", torch.int64: "I64", torch.bool: "BOOL"}
    if t.dtype not in names:
        raise NotImplementedError(f"{t.dtype}: no safetensors dtype for it here")
    return names[t.dtype], t.numpy()

"""The torch custom op svdquant::linear(x, handle, out_features) -> y.

The op is opaque to torch: torch.compile traces it through its fake implementation (an empty
[..., out_features] tensor of x's dtype and device) and CUDA graphs capture the kernels it launches
on torch's current stream. `handle` names a live SVDQuantLinear (an int, as custom ops take no
Python objects); the module holds the prepared C++ layers.
"""
import itertools
import weakref

import torch

_modules = weakref.WeakValueDictionary()  # handle -> SVDQuantLinear
_handles = itertools.count(1)


def register(module):
    handle = next(_handles)
    _modules[handle] = module
    return handle


@torch.library.custom_op("svdquant::linear", mutates_args=())
def linear(x: torch.Tensor, handle: int, out_features: int) -> torch.Tensor:
    module = _modules.get(handle)
    if module is None:
        raise RuntimeError(f"svdquant::linear: no live SVDQuantLinear has handle {handle}")
    return module._run(x)


@linear.register_fake
def _linear_fake(x, handle, out_features):
    return x.new_empty((*x.shape[:-1], out_features))

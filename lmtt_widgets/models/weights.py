"""Read projection weights in one layout whatever the module type (Linear, GPT-2's Conv1D)."""

from __future__ import annotations

import torch


def upcast(x: torch.Tensor) -> torch.Tensor:
    """x in the dtype the maths runs in: float32, or float64 for a float64 model (exactness tests)."""
    return x if x.dtype == torch.float64 else x.float()


def linear_weight(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W [out, in], b [out] or None) upcast to at least float32, so that y = x @ W.T + b.

    GPT-2's Conv1D stores its weight as [in, out]; it is told apart by class name rather than shape, since square
    projections would fool a shape test.
    """
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or not weight.dtype.is_floating_point:
        from ..errors import UnsupportedModelError

        raise UnsupportedModelError(
            f"{type(module).__name__} holds no floating-point weight matrix (quantised weights such as bitsandbytes "
            "or GPTQ cannot be decomposed exactly). Load the model unquantised, e.g. in bfloat16."
        )
    weight = weight.detach()
    if type(module).__name__ == "Conv1D":
        weight = weight.t()
    bias = getattr(module, "bias", None)
    bias = upcast(bias.detach()) if isinstance(bias, torch.Tensor) else None
    return upcast(weight), bias

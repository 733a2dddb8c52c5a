"""Identify a norm module's formula by probing it, so every family's norm is handled by one piece of code.

Kinds: ``layer`` (y = (x - mean) * rstd * w + b), ``rms`` (y = x * rstd * w), ``rms_plus_one`` (Gemma: w stored as
w - 1). ``rstd`` is 1 / sqrt(var + eps), var being the variance (layer) or the mean square (rms).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from ..errors import NonFiniteError
from ..models.weights import upcast

_KINDS = ("layer", "rms", "rms_plus_one")


@dataclass(frozen=True)
class NormSpec:
    kind: str
    eps: float
    weight: torch.Tensor  # [d] effective gain (the +1 applied for Gemma), float32
    bias: torch.Tensor | None  # [d] or None

    def rstd(self, x: torch.Tensor) -> torch.Tensor:
        """Per-row 1/sqrt(var + eps) of x [..., d] -> [...]."""
        x = upcast(x)
        var = x.var(-1, unbiased=False) if self.kind == "layer" else x.pow(2).mean(-1)
        return torch.rsqrt(var + self.eps)

    def center(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(-1, keepdim=True) if self.kind == "layer" else x

    def apply(self, x: torch.Tensor, rstd: torch.Tensor | None = None, *, with_bias: bool = True) -> torch.Tensor:
        """The norm of x, with a frozen ``rstd`` [...] if given (a linear map then, but for the bias)."""
        x = upcast(x)
        if rstd is None:
            rstd = self.rstd(x)
        # the gains live on the CPU (probed once); x may be on any device (GPU, a layer of a multi-device model)
        out = self.center(x) * rstd.unsqueeze(-1) * self.weight.to(x.device)
        if with_bias and self.bias is not None:
            out = out + self.bias.to(x.device)
        return out


def _eps_of(module) -> float:
    for name in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(module, name, None)
        if isinstance(value, (float, int)):
            return float(value)
    return 1e-5


# module -> (state of its parameters when probed, spec): probing costs a forward of the module, every trace
_identified: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _param_state(module: torch.nn.Module) -> tuple:
    """Changes whenever a parameter is replaced, moved, cast or modified in place (its version counter)."""
    return tuple((p.data_ptr(), p.dtype, p.device, p._version) for p in module.parameters())


def identify_norm(module: torch.nn.Module, name: str | None = None) -> NormSpec:
    """The formula of a norm module, found by probing it once (again only if its parameters change)."""
    state = _param_state(module)
    hit = _identified.get(module)
    if hit is not None and hit[0] == state:
        return hit[1]
    _check_finite_parameters(module, name)
    spec = _probe(module)
    _identified[module] = (state, spec)
    return spec


def _check_finite_parameters(module: torch.nn.Module, name: str | None) -> None:
    """A NaN or inf gain would defeat the probe (every formula's error is NaN) and poison every score."""
    for pname, p in module.named_parameters():
        bad = (~torch.isfinite(p.detach())).nonzero()
        if bad.numel():
            where = name or type(module).__name__
            raise NonFiniteError(
                f"the norm {where} holds {p.detach()[tuple(bad[0])].item()} in its {pname} (index "
                f"{bad[0].tolist()}). Check the model's weights: no score can be computed through it."
            )


@torch.no_grad()
def _probe(module: torch.nn.Module) -> NormSpec:
    weight = getattr(module, "weight", None)
    if weight is None:
        raise TypeError(f"{type(module).__name__} has no weight; it is not a norm lmtt-widgets knows")
    d = weight.shape[-1]
    w = upcast(weight.detach()).cpu()
    b = getattr(module, "bias", None)
    b = upcast(b.detach()).cpu() if isinstance(b, torch.Tensor) else None
    eps = _eps_of(module)
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn(3, d, generator=gen) * 2 + 0.5
    param = next(module.parameters())
    # forward, not __call__: a user's hook on the norm (an edit of the stream) must not change the formula read here
    # (accelerate's offloading wraps forward itself, so offloaded norms still get their weights)
    got = upcast(module.forward(probe.to(device=param.device, dtype=param.dtype))).cpu()
    probe = probe.to(w.dtype)
    best, best_err = None, float("inf")
    for kind in _KINDS:
        spec = NormSpec(kind, eps, w + 1 if kind == "rms_plus_one" else w, b if kind == "layer" else None)
        err = (spec.apply(probe) - got).abs().max().item()
        if err < best_err:
            best, best_err = spec, err
    tol = 1e-4 if param.dtype in (torch.float32, torch.float64) else 5e-2
    if best_err > tol * (1 + got.abs().max().item()):
        raise TypeError(f"{type(module).__name__} matches no known norm formula (closest error {best_err:.2e})")
    return best

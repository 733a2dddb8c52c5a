"""Edits of the residual stream that the model's own modules do not explain (a user's hook, a steering vector).

Every block's decomposition identity is checked while it is recorded, one reduction per update:
attention update  y = x + attention output (+ MLP output in a parallel block), MLP update  out = mid + MLP output,
and between blocks the next block's input = this block's output (the final norm's input, after the last one).
Anything beyond float rounding was put there by code outside the decomposed modules. Within a block it becomes its
own part of that update ("external edit", scored like any other part); between blocks it cannot be attributed to
an update and is only reported. Either way a warning says how large it is and where.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

# A row's identity holds when |gap|_1 <= this many model-dtype epsilons x the L1 size of what was added: a sum of
# three terms rounds by at most 2 eps per coordinate, and the model may add them in another order than here.
ROUNDING_EPS = 16


@dataclass
class ExternalEdit:
    """Where code outside the decomposed modules changed the residual stream, and by how much."""

    layer: int
    # "attention" / "mlp" (an update of block `layer`) / "before block" / "before the final norm" / "MLP output
    # projection" (a hook on it changed the MLP's output: inside the MLP's part, reported only)
    where: str
    tokens: list[int]  # positions where the identity fails
    size: float  # largest L1 norm of the edit over those positions
    relative: float  # that size over the L1 norm of the residual there
    scored: bool  # True: an "external edit" part of the update (with importance); False: reported only


def unexplained(total: torch.Tensor, *terms: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """total - sum(terms) [T, d] on the rows where it exceeds float rounding (0 on the others), or None.

    Most passes edit nothing, and then the check is nearly free: a block's input is the previous block's output
    tensor itself, and the model adds the very float32 tensors summed here (x + y equals y + x bit for bit, so the
    order of two terms does not matter), so the sum equals ``total`` exactly. Where it does, the gap is 0 (or NaN beside an inf) on
    every row, which the rounding test below never flags, so None is returned without it. The row norms are
    computed only when the sum differs (an edit, low-precision rounding, three terms added in another order).
    """
    if len(terms) == 1 and _same_memory(total, terms[0]):
        return None
    acc = terms[0]
    for t in terms[1:]:
        acc = acc + t
    if torch.equal(total, acc):  # one pass, where the gap and the norms below take about eight
        return None
    gap = total - acc
    scale = total.abs().sum(-1) + sum(t.abs().sum(-1) for t in terms)
    bad = gap.abs().sum(-1) > ROUNDING_EPS * torch.finfo(dtype).eps * scale + torch.finfo(total.dtype).tiny
    if not bool(bad.any()):
        return None
    return gap * bad.unsqueeze(-1)


def projection_gap(out: torch.Tensor, inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *,
                   dtype: torch.dtype) -> torch.Tensor | None:
    """out - (inp W^T + b) [T, d] on the rows beyond rounding, or None: what a hook on the projection added."""
    return unexplained(out, torch.nn.functional.linear(inp, weight.to(inp.device), bias), dtype=dtype)


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether a and b are views of the same numbers (so a - b is 0, or NaN beside an inf, everywhere)."""
    return (a.data_ptr() == b.data_ptr() and a.device == b.device and a.dtype == b.dtype and a.shape == b.shape
            and a.stride() == b.stride())


def describe(gap: torch.Tensor, total: torch.Tensor, layer: int, where: str, scored: bool) -> ExternalEdit:
    size = gap.abs().sum(-1)
    tokens = size.nonzero().flatten().tolist()
    worst = int(size.argmax())
    rel = float(size[worst] / total[worst].abs().sum().clamp_min(torch.finfo(total.dtype).tiny))
    return ExternalEdit(layer, where, tokens, float(size[worst]), rel, scored)


def _place(e: ExternalEdit) -> str:
    if e.scored:
        return f"layer {e.layer} {e.where} update"
    if e.where.startswith("before block"):
        return f"before block {e.layer}" + e.where[len("before block"):]
    if e.where == "MLP output projection":
        return f"layer {e.layer} {e.where}"
    return e.where


# What an edit in place of a tensor the trace already stored shows as (its size is a lower bound: see in_place_edit)
IN_PLACE = " (edited in place: the stored output before it shows the edited values; size at least)"


def fingerprint(x: torch.Tensor) -> torch.Tensor:
    """[2, T] float64 sums and L1 norms of the rows of x [T, d]: equal again only if the rows were not changed
    (in practice); two reductions, so every block's output gets one."""
    return torch.stack([x.sum(-1, dtype=torch.float64), x.abs().sum(-1, dtype=torch.float64)])


def in_place_edit(x: torch.Tensor, before: torch.Tensor, layer: int, where: str) -> ExternalEdit | None:
    """The edit a hook made in place of ``x`` since its :func:`fingerprint` ``before`` was taken, or None.

    The stream then reaches the next module as the very tensor the trace stored, so the identity checks compare it
    with itself; only the fingerprint shows the change. The old values are gone: the size is the change of the
    row's sum or L1 norm, a lower bound of the L1 size of the edit."""
    change = (fingerprint(x) - before).abs().amax(0)  # [T]
    rows = change.nonzero().flatten()
    if not rows.numel():
        return None
    worst = int(change.argmax())
    size = float(change[worst])
    rel = size / max(float(x[worst].abs().sum()), torch.finfo(x.dtype).tiny)
    return ExternalEdit(layer, where + IN_PLACE, rows.tolist(), size, rel, False)


def warn(edits: list[ExternalEdit]) -> None:
    if not edits:
        return
    lines = []
    for e in edits[:6]:
        place = _place(e)
        toks = ", ".join(map(str, e.tokens[:8])) + (" ..." if len(e.tokens) > 8 else "")
        lines.append(f"{place}: L1 size up to {e.size:.4g} ({e.relative:.1%} of the residual) at tokens {toks}")
    if len(edits) > 6:
        lines.append(f"... and {len(edits) - 6} more (Explanation.external_edits() lists them all)")
    scored = any(e.scored for e in edits)
    unscored = any(not e.scored for e in edits)
    warnings.warn(
        "The residual stream was edited by code outside the model's decomposed modules (a hook, e.g. a steering "
        "vector), so its decomposition has an unexplained part:\n  " + "\n  ".join(lines) + "\n"
        + ("Edits inside a block are scored as an 'external edit' part of that update (LayerScores.external_attn / "
           "external_mlp; their nodes are marked in the graph). " if scored else "")
        + ("Edits between blocks belong to no update: routes do not follow them; an edit of the MLP output "
           "projection stays inside the MLP's part, and its neuron scores do not cover it. " if unscored else "")
        + "Remove the hook to explain the unedited model.",
        stacklevel=3,
    )

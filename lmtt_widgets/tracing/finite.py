"""Refuse a forward pass that produced NaN or infinity, naming the first layer and module where it appeared.

Importance scores of non-finite numbers would be NaN or silently wrong. A block costs one sum of its output (NaN
and inf survive a sum); only when that sum is not finite are its tensors searched, in the order the block computes
them, for the first bad one and its first bad token.
"""

from __future__ import annotations

import torch

from ..errors import NonFiniteError

# What the recorder captures in one block, in the order the block computes it:
# (key, description, verb, adapter field naming the module (None: the block itself), token axis)
_BLOCK_ORDER = (
    ("resid_pre", "the block input", "holds", None, 0),
    ("values", "the value states", "hold", "attention", 1),
    ("attention", "the attention probabilities", "hold", "attention", 1),
    ("head_signal", "the input of the attention output projection", "holds", "attn_out_proj", 0),
    ("attn_out", "the attention output", "holds", "attn_out_proj", 0),
    ("attn_update", "the attention post-norm output", "holds", "attn_post_norm", 0),
    ("resid_mid", "the residual after attention (input of the MLP norm)", "holds", "mlp_norm", 0),
    ("neurons", "the MLP activations (input of the MLP output projection)", "hold", "mlp_out_proj", 0),
    ("mlp_out", "the MLP output", "holds", "mlp_out_proj", 0),
    ("mlp_update", "the MLP post-norm output", "holds", "mlp_post_norm", 0),
    ("resid_post", "the block output", "holds", None, 0),
)
_HINT = (
    "The scores would be NaN or wrong. Check the weights (any(not p.isfinite().all() for p in model.parameters())) "
    "and the dtype: float16 overflows above 65504, so load such a model in float32 or bfloat16."
)


def check_block(index: int, captured: dict, adapter) -> None:
    """Raise NonFiniteError for the first captured tensor of block ``index`` that holds NaN or inf.

    NaN and inf in any recorded tensor reach the block output (sums, products and norms keep them non-finite, and
    our hooks run after any other hook, so they record what flowed on), so one sum of the block output screens the
    block. Only another pre-hook on the attention output projection (e.g. a head ablation) can replace the head
    signal and hide a NaN in the attention or values, which the scores still read: then every tensor is checked.
    """
    hooked = captured.get("signal_hooked", True)
    post = captured.get("resid_post")
    if not hooked and isinstance(post, torch.Tensor) and _finite_sum(post):
        return
    for key, what, verb, field, axis in _BLOCK_ORDER:
        x = captured.get(key)
        if not isinstance(x, torch.Tensor) or _finite_sum(x):
            continue
        found = _first_bad(x, axis)
        if found is None:  # the sum overflowed on large finite values
            continue
        token, kind = found
        if key == "resid_pre" and index == 0:
            what, module = "the embeddings", f"input of {adapter.blocks}.0"
        else:
            module = getattr(adapter, field) if field else f"{adapter.blocks}.{index}"
        raise NonFiniteError(f"layer {index}: {what} ({module}) {verb} {kind} at token {token}. {_HINT}")


def check_logits(logits: torch.Tensor, adapter) -> None:
    """The last blocks' outputs were finite; raise if the final norm or the unembedding made NaN or inf."""
    if _finite_sum(logits):
        return
    found = _first_bad(logits, 0)
    if found is not None:
        token, kind = found
        raise NonFiniteError(
            f"the logits hold {kind} at token {token} although every block's output is finite: the final norm "
            f"({adapter.final_norm}) or the output embedding (lm_head) made it. {_HINT}"
        )


def _finite_sum(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x.sum()))


def _first_bad(x: torch.Tensor, axis: int) -> tuple[int, str] | None:
    """(first token holding a non-finite value, 'NaN' / 'inf' / '-inf'), or None when all are finite."""
    rows = x.movedim(axis, 0).reshape(x.shape[axis], -1)
    bad = ~torch.isfinite(rows)
    hit = bad.any(1).nonzero()
    if hit.numel() == 0:
        return None
    token = int(hit[0, 0])
    values = rows[token][bad[token]]
    if bool(values.isnan().any()):
        return token, "NaN"
    return token, "inf" if bool((values > 0).any()) else "-inf"

"""Vocabulary projections (the logit-lens family) of residual states and component outputs.

Normalisation modes for a vector v before the unembedding W_U:
- "own":   the final norm applied with v's own statistics (LM-TT's choice; the natural logit lens for residuals).
- "final": the final norm's scale frozen at the final residual's value at that position, and no norm bias. This is
           linear, so the projections of components add up to the model's logits minus the norm bias and
           unembedding bias terms: it is direct logit attribution. The default for heads, MLPs and neurons.
- "raw":   W_U v, no norm at all.
Final-logit softcapping (Gemma 2) is applied in "own" mode only, as the model applies it to the whole residual.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..errors import InputError
from ..models.offload import OffloadMap
from ..models.weights import upcast
from ..tracing.tracer import Trace

Norm = Literal["own", "final", "raw"]


# Rows of a low-precision or offloaded unembedding upcast at a time (a float32 copy of a 128k x 8192 W_U is 4 GB).
UNEMBED_CHUNK_ROWS = 8192


def unembedding(trace: Trace) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W_U [V, d], b [V] or None) in float32 (a copy for other dtypes and offloaded heads; prefer :func:`unembed`)."""
    trace.check_head()
    head = trace.lm.model.get_output_embeddings()
    with OffloadMap(trace.lm.model).materialized(head):
        bias = getattr(head, "bias", None)
        return upcast(head.weight.detach()), (upcast(bias.detach()) if isinstance(bias, torch.Tensor) else None)


def unembed(trace: Trace, h: torch.Tensor, *, with_bias: bool = True) -> torch.Tensor:
    """h [..., d] @ W_U.T (+ b): logits [..., V] in float32, on the device of h.

    The head is read where accelerate materialises it when it is offloaded, and it is upcast a block of rows at a
    time, so no float32 copy of the whole unembedding is ever made."""
    trace.check_head()
    head = trace.lm.model.get_output_embeddings()
    with OffloadMap(trace.lm.model).materialized(head):
        W = head.weight.detach()
        x = h.to(W.device, upcast(W[:0]).dtype)
        if W.dtype == x.dtype:
            logits = x @ W.t()
        else:
            logits = torch.cat([x @ upcast(W[r : r + UNEMBED_CHUNK_ROWS]).t()
                                for r in range(0, W.shape[0], UNEMBED_CHUNK_ROWS)], -1)
        bias = getattr(head, "bias", None)
        if with_bias and isinstance(bias, torch.Tensor):
            logits = logits + upcast(bias.detach())
    return logits.to(h.device)


def project(trace: Trace, vec: torch.Tensor, position, norm: Norm = "own") -> torch.Tensor:
    """Logits [V] (or [..., V]) of vector(s) ``vec`` [..., d] read at token ``position`` (an int, or a tensor of
    positions shaped like ``vec.shape[:-1]``: one unembedding product for vectors read at many tokens)."""
    if not isinstance(norm, str) or norm not in ("own", "final", "raw"):
        raise InputError(f"norm must be 'own', 'final' or 'raw', not {norm!r}")
    fn = trace.final_norm
    vec = upcast(vec)
    if norm == "own":
        logits = unembed(trace, fn.apply(vec))
        cap = getattr(trace.lm.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits
    if norm == "final":
        rstd = trace.final_rstd[position].to(vec.device, vec.dtype).expand(vec.shape[:-1])
        return unembed(trace, fn.apply(vec, rstd, with_bias=False), with_bias=False)
    if norm == "raw":
        return unembed(trace, vec, with_bias=False)
    raise AssertionError(norm)  # checked above


def top_tokens(trace: Trace, scores: torch.Tensor, k: int, *, largest: bool = True) -> list[tuple[str, float, int]]:
    """[(token text, score, token id)] of the k highest (or lowest) scores."""
    vals, ids = scores.topk(min(k, scores.shape[-1]), largest=largest)
    texts = [trace.lm.tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids.tolist()]
    return list(zip(texts, vals.tolist(), ids.tolist()))


def rank_of(scores: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """0-based rank of each token id in a score vector (0 = top)."""
    return (scores.unsqueeze(0) > scores[token_ids].unsqueeze(1)).sum(1)


def ranks_of(scores: torch.Tensor, token_ids: torch.Tensor, budget: int = 1 << 21) -> torch.Tensor:
    """:func:`rank_of` of many rows at once: scores [R, V], token_ids [R, k] -> ranks [R, k] (how many scores of
    the row beat each token's). One pass over the vocabulary per row instead of k: only the scores above the row's
    lowest listed one can beat a listed token, and those are usually few (the listed tokens are near the top);
    rows are compared in groups of at most ``budget`` such scores, so a row where they are many stays bounded."""
    vals = scores.gather(-1, token_ids)
    above = scores > vals.min(-1, keepdim=True).values
    count = above.sum(-1).tolist()
    out = torch.zeros(vals.shape, dtype=torch.long)
    start = 0
    while start < len(count):
        stop, total = start + 1, count[start]
        while stop < len(count) and total + count[stop] <= budget:
            total, stop = total + count[stop], stop + 1
        rows, cols = above[start:stop].nonzero(as_tuple=True)
        beats = (scores[start:stop][rows, cols].unsqueeze(-1) > vals[start:stop][rows]).long()
        out[start:stop].index_add_(0, rows, beats)
        start = stop
    return out


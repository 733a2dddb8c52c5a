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

from ..models.weights import upcast
from ..tracing.tracer import Trace

Norm = Literal["own", "final", "raw"]


def unembedding(trace: Trace) -> tuple[torch.Tensor, torch.Tensor | None]:
    head = trace.lm.model.get_output_embeddings()
    bias = getattr(head, "bias", None)
    return upcast(head.weight.detach()), (upcast(bias.detach()) if isinstance(bias, torch.Tensor) else None)


def project(trace: Trace, vec: torch.Tensor, position: int, norm: Norm = "own") -> torch.Tensor:
    """Logits [V] (or [..., V]) of vector(s) ``vec`` [..., d] read at token ``position``."""
    W, b = unembedding(trace)
    fn = trace.final_norm
    vec = upcast(vec)
    if norm == "own":
        h = fn.apply(vec)
        logits = h @ W.t()
        if b is not None:
            logits = logits + b
        cap = getattr(trace.lm.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits
    if norm == "final":
        h = fn.apply(vec, trace.final_rstd[position].expand(vec.shape[:-1]), with_bias=False)
        return h @ W.t()
    if norm == "raw":
        return vec @ W.t()
    raise ValueError(f"norm must be 'own', 'final' or 'raw', not {norm!r}")


def top_tokens(trace: Trace, scores: torch.Tensor, k: int, *, largest: bool = True) -> list[tuple[str, float, int]]:
    """[(token text, score, token id)] of the k highest (or lowest) scores."""
    vals, ids = scores.topk(k, largest=largest)
    texts = [trace.lm.tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids.tolist()]
    return list(zip(texts, vals.tolist(), ids.tolist()))


def rank_of(scores: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """0-based rank of each token id in a score vector (0 = top)."""
    return (scores.unsqueeze(0) > scores[token_ids].unsqueeze(1)).sum(1)

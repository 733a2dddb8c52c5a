"""Signed direct logit attribution (DLA) of every additive component of the final residual.

With the final norm's scale frozen at the metric's position p (s = rstd_p * gamma; LayerNorm also subtracts the
mean, which is linear), the final norm is affine, so

    logit(target) - logit(foil) = sum_c c . w  +  beta . r  +  (b_U[target] - b_U[foil]),
    r = W_U[target] - W_U[foil],   w = centre(s * r)

over every component c written into the residual at p: the embeddings, each head's output, each attention output
bias, each MLP's output (or each neuron's write and the MLP output bias), post-norms (Gemma 2/3) linearised with
their frozen scale. Without a foil, r = W_U[target] and the sum is logit(target). The two constant terms are
reported in ``extra``, with the model's own value and the error of the sum against it. Gemma 2's final-logit
softcap is a non-linearity after the sum: the attribution explains the logits before it (``extra["softcap"]``).
An edit the decomposition does not account for (a user's hook on a block) appears as an ``L{l}.EXT`` row.
"""

from __future__ import annotations

import torch

from .. import checks
from ..models.offload import OffloadMap
from ..tracing.rebuild import layer_rows
from ..projections.vocab import unembedding
from .base import Component, ScoreTable, register_method
from .targets import make_metric

QUANTITY = "direct logit attribution (final norm's scale frozen)"


def _directions(ex, metrics) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w [P, d] (float64) with DLA(c) = c . w at each metric's position, the norm-bias constants [P] and the
    unembedding-bias constants [P]."""
    W, b = unembedding(ex.trace)
    r = W[[m.target for m in metrics]].double()
    foils = [m.foil is not None for m in metrics]
    if any(foils):
        r = r - torch.stack([W[m.foil] if m.foil is not None else torch.zeros_like(W[0]) for m in metrics]).double()
    fn = ex.trace.final_norm
    w = _frozen_scale(ex, [m.position for m in metrics]).to(r.device) * r
    if fn.kind == "layer":
        w = w - w.mean(-1, keepdim=True)
    norm_bias = torch.zeros(len(metrics), dtype=torch.float64) if fn.bias is None else (
        r @ fn.bias.double().to(r.device)).cpu()
    unembed_bias = torch.zeros(len(metrics), dtype=torch.float64)
    if b is not None:
        unembed_bias = torch.tensor([float(b[m.target]) - (0.0 if m.foil is None else float(b[m.foil]))
                                     for m in metrics], dtype=torch.float64)
    return w, norm_bias, unembed_bias


@torch.no_grad()
def _frozen_scale(ex, positions: list[int]) -> torch.Tensor:
    """The final norm's per-coordinate scale at each position, as the model applied it: (y - beta) / centre(x)
    [P, d].

    In exact arithmetic this is rstd_p * gamma. Reading it off the norm's own output also keeps the rounding the
    model did (Hugging Face computes RMSNorm in float32 even in float64 models), so the parts add up to the
    model's logits to the last bits instead of to float32's precision.
    """
    tr = ex.trace
    fn, x = tr.final_norm, tr.final_resid[positions]
    y = _final_norm_output(ex, positions)
    if fn.bias is not None:
        y = y - fn.bias.double().cpu()
    centred = fn.center(x.double().cpu())
    default = tr.final_rstd[positions].double().cpu().unsqueeze(-1) * fn.weight.double().cpu()
    return torch.where(centred != 0, y / torch.where(centred != 0, centred, 1), default)


@torch.no_grad()
def _final_norm_output(ex, positions) -> torch.Tensor:
    """The model's own final norm applied to the final residual at ``positions`` (an int or a list: rows), in the
    model's dtype -> float64 [d] or [P, d]."""
    tr = ex.trace
    x = tr.final_resid[positions]
    module = tr.lm.model.get_submodule(tr.lm.adapter.final_norm)
    with OffloadMap(tr.lm.model).materialized(module):  # an offloaded norm's weight is on meta outside its pass
        param = next(module.parameters(), None)
        like = x if param is None else param
        return module(x.to(dtype=tr.layers[0].model_dtype, device=like.device)[None])[0].double().cpu()


def _post(norm, out, update, w):
    """w [P, d] seen through a frozen post-norm at each position (identity without one), from the norm's input and
    output rows [P, d]. The scale is read off what the norm really did (update / out, per coordinate), for the same
    reason as :func:`_frozen_scale`."""
    if norm is None:
        return w
    o, u = out.double().to(w.device), update.double().to(w.device)
    default = norm.weight.double().to(w.device) * norm.rstd(out).double().to(w.device).unsqueeze(-1)
    return w * torch.where(o != 0, u / torch.where(o != 0, o, 1), default)


def _dot(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Row-wise x . w of [P, d] and [P, d] -> [P] (float64)."""
    return (x.double().to(w.device) * w).sum(-1)


def logit_attribution_parts(ex, metric, *, neurons: bool = False) -> tuple[list[Component], torch.Tensor, dict]:
    """Components, their DLA [N] (float64) and the checks, at the metric's position."""
    return logit_attribution_batch(ex, [metric], neurons=neurons)[0]


def logit_attribution_batch(ex, metrics, *, neurons: bool = False) -> list[tuple[list[Component], torch.Tensor, dict]]:
    """:func:`logit_attribution_parts` of many metrics (one per position, as the offline report needs) computed
    together: every layer's weights are read once for all positions."""
    tr, P = ex.trace, [m.position for m in metrics]
    w, norm_bias, unembed_bias = _directions(ex, metrics)
    parts: list[tuple[Component, torch.Tensor, torch.Tensor | None]] = []  # component, values [P], shown [P] or all
    parts.append((Component("embed"), _dot(tr.layers[0].resid_pre[P], w), None))
    H, dh = tr.n_heads, tr.head_dim
    prev = tr.layers[0].resid_pre[P].double()
    for rec, lw in zip(tr.layers, tr.weights):
        l = rec.index
        rows = layer_rows(rec, lw, P)  # a long trace's slim layer computes its rows without running the block
        wa = _post(lw.attn_post_norm, rows.attn_out, rows.attn_update, w)
        through = torch.einsum("dhk,pd->phk", lw.w_o.double().view(-1, H, dh), wa)  # [P, H, dh]: W_O,h^T w per head
        heads = (rows.head_signal.double() * through).sum(-1)  # [P, H]
        parts += [(Component("head", l, h), heads[:, h], None) for h in range(H)]
        written = heads.sum(-1)
        if lw.b_o is not None:
            bias = wa @ lw.b_o.double()
            parts.append((Component("attn_bias", l), bias, None))
            written = written + bias
        wm = _post(lw.mlp_post_norm, rows.mlp_out, rows.mlp_update, w)
        if neurons:  # (a slim layer's neuron activations need its block run again: rebuild.py)
            per = rec.neurons[P].double() * (wm @ lw.w_out.double())  # [P, F]
            parts += [(Component("neuron", l, n), per[:, n], None) for n in range(per.shape[1])]
            mlp = per.sum(-1)
            if lw.b_out is not None:
                out_bias = wm @ lw.b_out.double()
                parts.append((Component("mlp_bias", l), out_bias, None))
                mlp = mlp + out_bias
        else:
            mlp = _dot(rows.mlp_update, w)
            parts.append((Component("mlp", l), mlp, None))
        written = written + mlp
        # what the block really changed, against what its parts wrote: the gap is someone else's edit
        post = rows.resid_post.double()
        gap = _dot(post - prev, w) - written
        parts.append((Component("external", l), gap, gap.abs() > _tolerance(rec, prev, w)))
        prev = post
    results = []
    for n, metric in enumerate(metrics):
        p = metric.position
        final_gap = _dot(tr.final_resid[[p]].double() - prev[n:n + 1], w[n:n + 1])[0]
        comps = [c for c, _, shown in parts if shown is None or bool(shown[n])]
        vals = [v[n] for _, v, shown in parts if shown is None or bool(shown[n])]
        if abs(float(final_gap)) > float(_tolerance(tr.layers[-1], prev[n:n + 1], w[n:n + 1])[0]):
            comps.append(Component("external", tr.n_layers - 1, position=p))
            vals.append(final_gap)
        scores = torch.stack(vals)
        model_value = _model_value(ex, metric)
        total = float(scores.sum()) + float(norm_bias[n]) + float(unembed_bias[n])
        cap = getattr(tr.lm.model.config, "final_logit_softcapping", None)
        extra = {"norm_bias_term": float(norm_bias[n]), "unembed_bias_term": float(unembed_bias[n]), "sum": total,
                 "model_value": model_value, "error": total - model_value, "position": p,
                 "explains": "logit difference" if metric.foil is not None else "target logit",
                 "softcap": float(cap) if cap else 0.0}
        results.append((comps, scores, extra))
    return results


def _tolerance(rec, resid, w) -> torch.Tensor:
    """Per position [P] (resid, w: [P, d]): how large a gap is rounding, not an edit."""
    # Hugging Face norms compute in float32 even in float64 models, so float32's rounding is the floor for both
    eps = 2e-2 if rec.model_dtype in (torch.float16, torch.bfloat16) else 1e-4
    return eps * (resid.abs().amax(-1).to(w.device) * w.abs().sum(-1) + 1)


def _model_value(ex, metric) -> float:
    """The model's own logit (difference) at the position, before any final-logit softcap."""
    tr = ex.trace
    if not getattr(tr.lm.model.config, "final_logit_softcapping", None):
        logits = tr.logits[metric.position].double()
        return float(logits[metric.target] - (0 if metric.foil is None else logits[metric.foil]))
    W, b = unembedding(tr)
    h = _final_norm_output(ex, metric.position)  # [d]
    logits = h @ W.double().t().cpu() + (0 if b is None else b.double().cpu())
    value = logits[metric.target]
    return float(value - (0 if metric.foil is None else logits[metric.foil]))


@register_method("logit_attribution", quantity=QUANTITY, family="logit", cost="free from the trace")
def logit_attribution(ex, target=None, foil=None, position=None, *, neurons: bool = False) -> ScoreTable:
    """Signed DLA of every head, attention bias, MLP (or neuron), the embeddings, toward the metric."""
    neurons = checks.flag(neurons, "neurons")
    metric = make_metric(ex, target, foil, position)
    comps, scores, extra = logit_attribution_parts(ex, metric, neurons=neurons)
    return ScoreTable("logit_attribution", QUANTITY, metric, comps, scores, True, extra)


def logit_attribution_tables(ex, metrics) -> list[ScoreTable]:
    """:func:`logit_attribution` tables of many metrics (one per position) from one batched pass."""
    return [ScoreTable("logit_attribution", QUANTITY, metric, comps, scores, True, extra)
            for metric, (comps, scores, extra) in zip(metrics, logit_attribution_batch(ex, metrics))]

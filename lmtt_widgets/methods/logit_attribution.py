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

from ..models.offload import OffloadMap
from ..projections.vocab import unembedding
from .base import Component, ScoreTable, register_method
from .targets import make_metric

QUANTITY = "direct logit attribution (final norm's scale frozen)"


def _direction(ex, metric) -> tuple[torch.Tensor, float, float]:
    """w [d] (float64) with DLA(c) = c . w, the norm-bias constant and the unembedding-bias constant."""
    W, b = unembedding(ex.trace)
    r = W[metric.target].double()
    if metric.foil is not None:
        r = r - W[metric.foil].double()
    fn = ex.trace.final_norm
    w = _frozen_scale(ex, metric.position).to(r.device) * r
    if fn.kind == "layer":
        w = w - w.mean()
    norm_bias = 0.0 if fn.bias is None else float(fn.bias.double().to(r.device) @ r)
    unembed_bias = 0.0
    if b is not None:
        unembed_bias = float(b[metric.target]) - (0.0 if metric.foil is None else float(b[metric.foil]))
    return w, norm_bias, unembed_bias


@torch.no_grad()
def _frozen_scale(ex, p: int) -> torch.Tensor:
    """The final norm's per-coordinate scale at position p, as the model applied it: (y - beta) / centre(x) [d].

    In exact arithmetic this is rstd_p * gamma. Reading it off the norm's own output also keeps the rounding the
    model did (Hugging Face computes RMSNorm in float32 even in float64 models), so the parts add up to the
    model's logits to the last bits instead of to float32's precision.
    """
    tr = ex.trace
    fn, x = tr.final_norm, tr.final_resid[p]
    y = _final_norm_output(ex, p)
    if fn.bias is not None:
        y = y - fn.bias.double().cpu()
    centred = fn.center(x.double().cpu())
    default = tr.final_rstd[p].double().cpu() * fn.weight.double().cpu()
    return torch.where(centred != 0, y / torch.where(centred != 0, centred, 1), default)


@torch.no_grad()
def _final_norm_output(ex, p: int) -> torch.Tensor:
    """The model's own final norm applied to the final residual at p, in the model's dtype -> float64 [d]."""
    tr = ex.trace
    x = tr.final_resid[p]
    module = tr.lm.model.get_submodule(tr.lm.adapter.final_norm)
    with OffloadMap(tr.lm.model).materialized(module):  # an offloaded norm's weight is on meta outside its pass
        param = next(module.parameters(), None)
        like = x if param is None else param
        return module(x.to(dtype=tr.layers[0].model_dtype, device=like.device)[None])[0].double().cpu()


def _post(norm, out, update, p, w):
    """w seen through a frozen post-norm at position p (identity without one). The scale is read off what the
    norm really did (update / out, per coordinate), for the same reason as :func:`_frozen_scale`."""
    if norm is None:
        return w
    o, u = out[p].double().to(w.device), update[p].double().to(w.device)
    default = norm.weight.double().to(w.device) * norm.rstd(out[p]).double().to(w.device)
    return w * torch.where(o != 0, u / torch.where(o != 0, o, 1), default)


def logit_attribution_parts(ex, metric, *, neurons: bool = False) -> tuple[list[Component], torch.Tensor, dict]:
    """Components, their DLA [N] (float64) and the checks, at the metric's position."""
    tr, p = ex.trace, metric.position
    w, norm_bias, unembed_bias = _direction(ex, metric)
    comps, vals = [Component("embed")], [tr.layers[0].resid_pre[p].double() @ w]
    H, dh = tr.n_heads, tr.head_dim
    prev = tr.layers[0].resid_pre[p].double()
    for rec, lw in zip(tr.layers, tr.weights):
        l = rec.index
        wa = _post(lw.attn_post_norm, rec.attn_out, rec.attn_update, p, w)
        through = (lw.w_o.double().view(-1, H, dh) * wa.view(-1, 1, 1)).sum(0)  # [H, dh]: W_O,h^T w per head
        heads = (rec.head_signal[p].double() * through).sum(-1)
        comps += [Component("head", l, h) for h in range(H)]
        vals += list(heads)
        written = heads.sum()
        if lw.b_o is not None:
            comps.append(Component("attn_bias", l))
            vals.append(lw.b_o.double() @ wa)
            written = written + vals[-1]
        wm = _post(lw.mlp_post_norm, rec.mlp_out, rec.mlp_update, p, w)
        if neurons:
            per = rec.neurons[p].double() * (wm @ lw.w_out.double())
            comps += [Component("neuron", l, n) for n in range(per.numel())]
            vals += list(per)
            mlp = per.sum()
            if lw.b_out is not None:
                comps.append(Component("mlp_bias", l))
                vals.append(lw.b_out.double() @ wm)
                mlp = mlp + vals[-1]
        else:
            comps.append(Component("mlp", l))
            mlp = rec.mlp_update[p].double() @ w
            vals.append(mlp)
        written = written + mlp
        # what the block really changed, against what its parts wrote: the gap is someone else's edit
        gap = (rec.resid_post[p].double() - prev) @ w - written
        if abs(float(gap)) > _tolerance(rec, prev, w):
            comps.append(Component("external", l))
            vals.append(gap)
        prev = rec.resid_post[p].double()
    final_gap = (tr.final_resid[p].double() - prev) @ w
    if abs(float(final_gap)) > _tolerance(tr.layers[-1], prev, w):
        comps.append(Component("external", tr.n_layers - 1, position=p))
        vals.append(final_gap)
    scores = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in vals])
    model_value = _model_value(ex, metric)
    total = float(scores.sum()) + norm_bias + unembed_bias
    cap = getattr(tr.lm.model.config, "final_logit_softcapping", None)
    extra = {"norm_bias_term": norm_bias, "unembed_bias_term": unembed_bias, "sum": total,
             "model_value": model_value, "error": total - model_value, "position": p,
             "explains": "logit difference" if metric.foil is not None else "target logit",
             "softcap": float(cap) if cap else 0.0}
    return comps, scores, extra


def _tolerance(rec, resid, w) -> float:
    # Hugging Face norms compute in float32 even in float64 models, so float32's rounding is the floor for both
    eps = 2e-2 if rec.model_dtype in (torch.float16, torch.bfloat16) else 1e-4
    return eps * float(resid.abs().max() * w.abs().sum() + 1)


def _model_value(ex, metric) -> float:
    """The model's own logit (difference) at the position, before any final-logit softcap."""
    tr = ex.trace
    if not getattr(tr.lm.model.config, "final_logit_softcapping", None):
        logits = tr.logits[metric.position].double()
        return float(logits[metric.target] - (0 if metric.foil is None else logits[metric.foil]))
    W, b = unembedding(tr)
    h = _final_norm_output(ex, metric.position)
    logits = h @ W.double().t().cpu() + (0 if b is None else b.double().cpu())
    value = logits[metric.target]
    return float(value - (0 if metric.foil is None else logits[metric.foil]))


@register_method("logit_attribution", quantity=QUANTITY, family="logit", cost="free from the trace")
def logit_attribution(ex, target=None, foil=None, position=None, *, neurons: bool = False) -> ScoreTable:
    """Signed DLA of every head, attention bias, MLP (or neuron), the embeddings, toward the metric."""
    metric = make_metric(ex, target, foil, position)
    comps, scores, extra = logit_attribution_parts(ex, metric, neurons=neurons)
    return ScoreTable("logit_attribution", QUANTITY, metric, comps, scores, True, extra)

"""Importance of every part of every residual update, layer by layer (pure tensor maths, no UI).

Parts, per target position i of layer l:
- attention update (y = residual after attention; parallel blocks: y = block output):
  the residual x_i; one part per (source j <= i, head h): A_h[i, j] * v_j W_O,h; the output bias b_O as its own
  part (it belongs to no source, so it gets importance but no edge); parallel blocks add the MLP output.
- MLP update (sequential and post-norm blocks; y = block output): the residual after attention and the MLP output.
- neurons (y = the MLP's change to the residual): a_n * W_out[:, n] per neuron, and the MLP output bias.
  Neuron scores are computed per node on demand (:func:`neuron_importance`), not for every node in the pass.
Post-norms (Gemma 2/3) are linearised with their scale frozen at the value the forward pass used.
Importances are proximities over their sum; a row whose proximities are all 0 (y = 0) gives all its weight to
the residual. Everything runs in float32 whatever the model's dtype (float64 for a float64 model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..tracing.tracer import LayerRecord, LayerWeights
from .proximity import CHUNK_BUDGET, l1_proximity, scaled_part_proximity

# Per-head scores below this are not stored (the head sums and head-summed edges are kept exactly);
# thresholds below it are refused in per-head granularity.
HEAD_FLOOR = 1e-3
ROW_BLOCK = 256
# Rows, and layers (every CHECK_EVERY-th), on which an unhooked layer's attention identity is checked.
CHECK_ROWS = 16
CHECK_EVERY = 8


def packed_offset(i: int | torch.Tensor):
    """Start of row i in a packed lower triangle (row i holds sources 0..i)."""
    return i * (i + 1) // 2


@dataclass
class LayerScores:
    """Importances of one layer. T tokens, H heads."""

    edge: torch.Tensor  # [T(T+1)/2] packed: head-summed importance of source j for target i
    head_total: torch.Tensor  # [T, H] importance of each head at each target (summed over sources)
    head_ptr: torch.Tensor  # [T+1] CSR row pointers over targets
    head_col: torch.Tensor  # [nnz] int32: j * H + h, for per-head scores >= HEAD_FLOOR
    head_val: torch.Tensor  # [nnz] float32
    resid_attn: torch.Tensor  # [T] residual's importance in the attention update (the only update if parallel)
    bias_attn: torch.Tensor  # [T] output bias's importance (0 without bias)
    mlp: torch.Tensor  # [T] MLP output's importance in its update
    resid_mlp: torch.Tensor | None  # [T] residual's importance in the MLP update (None for parallel blocks)

    def edge_row(self, i: int) -> torch.Tensor:
        return self.edge[packed_offset(i) : packed_offset(i) + i + 1]

    def head_row(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = int(self.head_ptr[i]), int(self.head_ptr[i + 1])
        return self.head_col[a:b], self.head_val[a:b]


@dataclass
class ContributionScores:
    topology: str
    n_heads: int
    layers: list[LayerScores] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_tokens(self) -> int:
        return self.layers[0].resid_attn.shape[0]


def head_directions(values: torch.Tensor, w_o: torch.Tensor, n_heads: int) -> torch.Tensor:
    """u[j, h] = v_j^{kv(h)} W_O,h: what head h writes per unit attention to source j. [T, H, d]."""
    n_kv, T, dh = values.shape
    v = values.repeat_interleave(n_heads // n_kv, dim=0)  # GQA: query head h reads kv head h // (H / n_kv)
    w_heads = w_o.view(w_o.shape[0], n_heads, dh).permute(1, 2, 0)  # [H, dh, d]
    return torch.bmm(v, w_heads).transpose(0, 1).contiguous()  # a batched product: ~2x einsum's speed on CPU


def head_signal_scale(rec: LayerRecord, n_heads: int) -> torch.Tensor:
    """[T, H] factor between what the output projection read and attention x values (1 in a plain forward pass).

    A user's hook may scale or zero a head's slice of the output projection's input (an ablation); the parts
    are rescaled to what the model really used. Anything else that breaks the identity is an adapter mismatch.
    Without such hooks the identity is checked on a sample of rows of every CHECK_EVERY-th layer (an adapter
    mismatch breaks it everywhere).
    """
    T = rec.head_signal.shape[0]
    if not rec.signal_hooked and rec.index % CHECK_EVERY:
        # a wrong adapter breaks the identity in every layer: checking every CHECK_EVERY-th one finds it
        return torch.ones(T, n_heads, dtype=rec.head_signal.dtype, device=rec.head_signal.device)
    rows = None if rec.signal_hooked or T <= CHECK_ROWS else torch.linspace(0, T - 1, CHECK_ROWS).round().long()
    alpha = _signal_ratio(rec, n_heads, rows)
    if rows is None:
        return alpha
    return torch.ones(T, n_heads, dtype=alpha.dtype, device=alpha.device)


def _signal_ratio(rec: LayerRecord, n_heads: int, rows: torch.Tensor | None) -> torch.Tensor:
    n_kv = rec.values.shape[0]
    v = rec.values.repeat_interleave(n_heads // n_kv, dim=0)
    A = rec.attention if rows is None else rec.attention[:, rows]
    z = rec.head_signal if rows is None else rec.head_signal[rows]
    recon = torch.einsum("hij,hjk->ihk", A, v)  # [rows, H, dh]
    denom = (recon * recon).sum(-1)
    alpha = torch.where(denom > 0, (z * recon).sum(-1) / denom.clamp_min(torch.finfo(z.dtype).tiny), 1.0)
    err = (z - alpha.unsqueeze(-1) * recon).norm(dim=-1)
    rel = max(1e-3, 8 * torch.finfo(rec.model_dtype).eps)  # bf16 rounds A and v before their product
    tol = rel * (z.norm(dim=-1) + recon.norm(dim=-1)) + 1e-6
    unhooked_but_scaled = rows is not None and bool(((alpha - 1).abs() > rel).any())
    if bool((err > tol).any()) or unhooked_but_scaled:
        from ..errors import UnsupportedModelError

        raise UnsupportedModelError(
            f"layer {rec.index}: the attention output projection's input is not attention x values per head; "
            "the model's attention differs from what its adapter describes."
        )
    return alpha


def post_norm_scale(norm, rstd: torch.Tensor | None) -> torch.Tensor | None:
    """Per-row coordinate scale [T, d] of a frozen RMS post-norm, or None without one."""
    if norm is None:
        return None
    if norm.kind == "layer":
        raise NotImplementedError("post-norms of LayerNorm kind are not linearised")
    return rstd.unsqueeze(-1) * norm.weight.to(rstd.device)


def normalise(*blocks: torch.Tensor, residual_col: int = 0) -> list[torch.Tensor]:
    """Proximities of one update's parts, as column blocks [N, parts_b], -> importances summing to 1 per row across
    the blocks (divided in place, no concatenation); a row with no proximity at all gives all its weight to the
    residual, column ``residual_col`` of the first block."""
    total = sum(block.sum(-1) for block in blocks)
    inv = 1 / total.clamp_min(torch.finfo(total.dtype).tiny)
    out = [block.mul_(inv.unsqueeze(-1)) for block in blocks]
    empty = total <= 0
    if empty.any():
        for block in out:
            block[empty] = 0
        out[0][empty, residual_col] = 1
    return out


def layer_scores(rec: LayerRecord, w: LayerWeights, n_heads: int, topology: str, *,
                 budget: int = CHUNK_BUDGET) -> LayerScores:
    x = rec.resid_pre
    T, d = x.shape
    H = n_heads
    parallel = topology == "parallel"
    y = rec.resid_post if parallel else rec.resid_mid
    scale = post_norm_scale(w.attn_post_norm, rec.attn_post_rstd)
    u = head_directions(rec.values, w.w_o, H)  # [T, H, d]
    alpha = head_signal_scale(rec, H)
    A = rec.attention if bool((alpha == 1).all()) else rec.attention * alpha.t().unsqueeze(-1)  # [H, T, T]

    # Extra parts besides the heads, columns: residual, bias, (mlp).
    extras = [x, None]  # no output bias: its column stays 0
    if w.b_o is not None:
        extras[1] = w.b_o.expand(T, d) if scale is None else w.b_o * scale
    if parallel:
        extras.append(rec.mlp_update)
    zero = torch.zeros(T, dtype=y.dtype, device=y.device)
    extra_prox = torch.stack([zero if e is None else l1_proximity(y, e) for e in extras], dim=1)  # [T, E]

    # Head parts, chunked over targets; only sources j <= last target of the chunk enter.
    # Row blocks keep the non-causal half of each block small; the budget caps its temporaries.
    rows_per_chunk = max(1, min(ROW_BLOCK, budget // max(1, T * H * 8)))
    edge = torch.empty(T * (T + 1) // 2, dtype=torch.float32, device=x.device)
    head_total = torch.empty(T, H, dtype=torch.float32, device=x.device)
    cols, vals, counts = [], [], []
    resid_attn = torch.empty(T, dtype=torch.float32, device=x.device)
    bias_attn = torch.empty_like(resid_attn)
    mlp_par = torch.empty_like(resid_attn)
    reach = u.abs().amax(-1).reshape(-1)  # [T * H] largest coordinate of each head-source direction
    dh = rec.values.shape[-1]
    w_o_heads = w.w_o.view(d, H, dh)
    v_heads = rec.values.repeat_interleave(H // rec.values.shape[0], dim=0)  # [H, T, dh]
    for i0 in range(0, T, rows_per_chunk):
        i1 = min(T, i0 + rows_per_chunk)
        coef = A[:, i0:i1, :i1].permute(1, 2, 0).reshape(i1 - i0, i1 * H)  # [rows, (source, head)]
        basis = u[:i1].reshape(i1 * H, d)
        prox = scaled_part_proximity(y[i0:i1], coef, basis, None if scale is None else scale[i0:i1], budget=budget,
                                     reach=reach[: i1 * H], signed_dot=lambda rows, a, b, j=i1: _through_heads(rows, w_o_heads, v_heads[:, :j]))
        ext, heads = normalise(extra_prox[i0:i1], prox)
        heads = heads.float().view(i1 - i0, i1, H)
        resid_attn[i0:i1] = ext[:, 0]
        bias_attn[i0:i1] = ext[:, 1]
        if parallel:
            mlp_par[i0:i1] = ext[:, 2]
        causal = torch.arange(i1, device=x.device)[None, :] <= torch.arange(i0, i1, device=x.device)[:, None]
        edge[packed_offset(i0) : packed_offset(i1)] = heads.sum(2)[causal]  # row-major = packed order
        head_total[i0:i1] = heads.sum(1)
        # future sources have coefficient 0, hence importance exactly 0: the floor alone keeps only causal pairs
        flat = heads.view(-1)
        kept = (flat >= HEAD_FLOOR).nonzero().squeeze(1)
        r = kept.div(i1 * H, rounding_mode="floor")
        cols.append((kept - r * (i1 * H)).to(torch.int32))
        vals.append(flat.index_select(0, kept))
        counts.append(torch.bincount(r, minlength=i1 - i0))

    if parallel:
        mlp, resid_mlp = mlp_par, None
    else:
        two = torch.stack([l1_proximity(rec.resid_post, rec.resid_mid), l1_proximity(rec.resid_post, rec.mlp_update)], 1)
        imp = normalise(two)[0].float()
        resid_mlp, mlp = imp[:, 0], imp[:, 1]

    return LayerScores(
        edge=edge, head_total=head_total, head_ptr=torch.cat([torch.zeros(1, dtype=torch.int64), torch.cat(counts).cumsum(0)]),
        head_col=torch.cat(cols), head_val=torch.cat(vals), resid_attn=resid_attn, bias_attn=bias_attn,
        mlp=mlp, resid_mlp=resid_mlp,
    )


def _through_heads(rows: torch.Tensor, w_o_heads: torch.Tensor, v_heads: torch.Tensor) -> torch.Tensor:
    """rows @ u.T for u[j, h] = v_j^h W_O,h, without forming u: (rows W_O,h) . v_j^h. [n, J*H], order (j, h)."""
    through = torch.einsum("nd,dhk->hnk", rows, w_o_heads)  # [H, n, dh]
    return torch.bmm(through, v_heads.transpose(1, 2)).permute(1, 2, 0).reshape(rows.shape[0], -1)


def neuron_importance(rec: LayerRecord, w: LayerWeights, *, budget: int = CHUNK_BUDGET) -> torch.Tensor:
    """[T, F] importance of each neuron within the MLP's change to the residual (bias excluded from the columns)."""
    scale = post_norm_scale(w.mlp_post_norm, rec.mlp_post_rstd)
    y = rec.mlp_update
    T, d = y.shape
    prox = scaled_part_proximity(y, rec.neurons, w.w_out.t(), scale, budget=budget)
    if w.b_out is not None:
        b = w.b_out.expand(T, d) if scale is None else w.b_out * scale
        bias = l1_proximity(y, b)
    else:
        bias = torch.zeros(T, dtype=y.dtype, device=y.device)
    _, neurons = normalise(bias[:, None], prox)  # a row with nothing goes to the bias column, as to a residual
    return neurons.float()

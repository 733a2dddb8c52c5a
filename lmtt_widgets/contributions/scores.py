"""Importance of every part of every residual update, layer by layer (pure tensor maths, no UI).

Parts, per target position i of layer l:
- attention update (y = residual after attention; parallel blocks: y = block output):
  the residual x_i; one part per (source j <= i, head h): A_h[i, j] * v_j W_O,h; the output bias b_O as its own
  part (it belongs to no source, so it gets importance but no edge); parallel blocks add the MLP output.
- MLP update (sequential and post-norm blocks; y = block output): the residual after attention and the MLP output.
- either update: an "external edit", what y holds beyond the parts above when code outside the model's modules (a
  user's hook, a steering vector) changed the stream inside the block (tracing/edits.py); importance, no edge.
- neurons (y = the MLP's change to the residual): a_n * W_out[:, n] per neuron, and the MLP output bias.
  Neuron scores are computed per node on demand (:func:`neuron_importance`), not for every node in the pass.
Post-norms (Gemma 2/3) are linearised with their scale frozen at the value the forward pass used.
Importances are proximities over their sum. A cancelling update, whose parts are all farther from y than 0 is (every
proximity 0, e.g. an MLP that cancels the residual), is split evenly over its parts: the limit of LM-TT's 1e-5
floor. "Its parts" are the non-zero ones: the residual, each causal (source j <= i, head h) pair with A_h[i, j] != 0,
the output bias if the layer has one, the MLP output of a parallel block (neurons: each non-zero activation and the
bias). LM-TT's floor also weights future and masked positions; a part that is exactly zero carries nothing, so here
it keeps 0. Such updates are flagged (LayerScores.cancel_attn / cancel_mlp).
Everything runs in float32 whatever the model's dtype (float64 for a float64 model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..tracing.tracer import LayerRecord, LayerWeights
from . import fused
from .proximity import CHUNK_BUDGET, grouped_part_proximity, l1_proximity, scaled_part_proximity

# Per-head scores below this are not stored (the head sums and head-summed edges are kept exactly);
# thresholds below it are refused in per-head granularity.
HEAD_FLOOR = 1e-3
# Long prompts store head-summed edges (each the exact sum over all heads) only from this importance on; thresholds
# below it are refused in edge granularity. It must not exceed HEAD_FLOOR: an edge is at least each of its heads,
# so every stored per-head score has its edge stored.
EDGE_FLOOR = 1e-3
# Every causal edge is stored while L*T(T+1)/2 is at most this many (64 MB with their columns; ~730 tokens on
# SmolLM2's 30 layers); longer prompts store those >= EDGE_FLOOR (a row sums to at most 1: <= 1000 per row, ~40 in
# practice), so their edges grow like T, not T^2 (4 GB dense at 8,192 tokens).
DENSE_EDGE_LIMIT = 8 * 2**20
# convention="lmtt": LM-TT's floor (routes/contributions.py, get_contributions' EPS). Every part of an update,
# including the zero parts LM-TT enumerates (future source positions of every head), scores max(proximity, floor)
# before normalising; the attention output bias is no part (it stays in the update, as in LM-TT).
LMTT_FLOOR = 1e-5
CONVENTIONS = ("paper", "lmtt")


def convention_said(convention: str) -> str:
    """A sentence saying which scores an explanation holds, for what shows them outside Python (the summary, the
    report's note); empty for the default."""
    if convention == "lmtt":
        return (f"Scores follow LM-TT's convention (convention=\"lmtt\": every part's proximity floored at "
                f"{LMTT_FLOOR:g}, future source positions included; the attention output bias no part).")
    return ""
ROW_BLOCK = 256
# Rows, and layers (every CHECK_EVERY-th), on which an unhooked layer's attention identity is checked.
CHECK_ROWS = 16
CHECK_EVERY = 8
# Floats of head directions and coefficients that layers scored together should keep within (~16 MB).
GROUP_WORKING_SET = 4 * 2**20


def packed_offset(i: int | torch.Tensor):
    """Start of row i in a packed lower triangle (row i holds sources 0..i)."""
    return i * (i + 1) // 2


def edge_floor(n_tokens: int, n_layers: int) -> float:
    """The smallest head-summed edge :func:`score_layers` stores for a prompt of this length (0: every one)."""
    return 0.0 if n_layers * n_tokens * (n_tokens + 1) // 2 <= DENSE_EDGE_LIMIT else EDGE_FLOOR


@dataclass
class LayerScores:
    """Importances of one layer. T tokens, H heads."""

    # CSR over targets of the head-summed importance of source j for target i (the exact sum over every head, stored
    # sparse or not): every causal pair when edge_floor is 0, else those >= edge_floor
    edge_ptr: torch.Tensor  # [T+1] row pointers
    edge_col: torch.Tensor  # [nnz] int32: source j, ascending within a row
    edge_val: torch.Tensor  # [nnz] float32
    head_total: torch.Tensor  # [T, H] importance of each head at each target (summed over sources)
    head_ptr: torch.Tensor  # [T+1] CSR row pointers over targets
    head_col: torch.Tensor  # [nnz] int32: j * H + h, for per-head scores >= HEAD_FLOOR
    head_val: torch.Tensor  # [nnz] float32
    resid_attn: torch.Tensor  # [T] residual's importance in the attention update (the only update if parallel)
    bias_attn: torch.Tensor  # [T] output bias's importance (0 without bias)
    mlp: torch.Tensor  # [T] MLP output's importance in its update
    resid_mlp: torch.Tensor | None  # [T] residual's importance in the MLP update (None for parallel blocks)
    # [T] bool: the update was cancelling (no part closer to y than 0), so its importances are an even split
    cancel_attn: torch.Tensor | None = None
    cancel_mlp: torch.Tensor | None = None  # None for parallel blocks (their one update is cancel_attn)
    # [T] importance of an edit of the stream by code outside the model's modules (a hook; 0 without one): a part
    # of the update like the bias, with importance but no edge (tracing/edits.py)
    external_attn: torch.Tensor | None = None
    external_mlp: torch.Tensor | None = None  # None for parallel blocks
    edited_attn: torch.Tensor | None = None  # [T] bool: the update holds an external edit (whatever its importance)
    edited_mlp: torch.Tensor | None = None
    edge_floor: float = 0.0  # edges below it are not stored (0: every causal edge is)

    def edge_row(self, i: int) -> torch.Tensor:
        """[i+1] head-summed importance of every source of target i (0 where below the floor)."""
        cols, vals = self.edge_sparse_row(i)
        row = torch.zeros(i + 1, dtype=self.edge_val.dtype, device=self.edge_val.device)
        row[cols.long()] = vals
        return row

    def edge_sparse_row(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sources, importances) of the stored edges into target i."""
        a, b = int(self.edge_ptr[i]), int(self.edge_ptr[i + 1])
        return self.edge_col[a:b], self.edge_val[a:b]

    @property
    def edge(self) -> torch.Tensor:
        """[T(T+1)/2] every causal edge packed row by row (0 where below the floor), built on each call."""
        T = self.edge_ptr.shape[0] - 1
        rows = torch.repeat_interleave(torch.arange(T, device=self.edge_ptr.device), self.edge_ptr.diff())
        out = torch.zeros(T * (T + 1) // 2, dtype=self.edge_val.dtype, device=self.edge_val.device)
        out[packed_offset(rows) + self.edge_col.long()] = self.edge_val
        return out

    def head_row(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = int(self.head_ptr[i]), int(self.head_ptr[i + 1])
        return self.head_col[a:b], self.head_val[a:b]


@dataclass
class ContributionScores:
    topology: str
    n_heads: int
    layers: list[LayerScores] = field(default_factory=list)
    convention: str = "paper"  # "paper" or "lmtt" (score_layers)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_tokens(self) -> int:
        return self.layers[0].resid_attn.shape[0]

    @property
    def edge_floor(self) -> float:
        return max((ls.edge_floor for ls in self.layers), default=0.0)


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


def normalise(*blocks: torch.Tensor, present=None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Proximities of one update's parts, as column blocks [..., N, parts_b], -> (importances summing to 1 per row
    across the blocks (divided in place, no concatenation), cancelling [..., N] bool).

    A cancelling row (no proximity at all) is split evenly over its parts. ``present(rows)`` says which columns are
    parts: given the cancelling rows as a bool mask over the leading dims, it returns one bool tensor
    [n_rows, parts_b] per block (None: every column). It is only called when some row cancels (rarely).
    """
    total = sum(block.sum(-1) for block in blocks)
    inv = 1 / total.clamp_min(torch.finfo(total.dtype).tiny)
    out = [block.mul_(inv.unsqueeze(-1)) for block in blocks]
    empty = total <= 0
    if empty.any():
        masks = present(empty) if present is not None else None
        if masks is None:
            masks = [torch.ones(int(empty.sum()), b.shape[-1], dtype=torch.bool, device=b.device) for b in out]
        count = sum(mask.sum(-1) for mask in masks).clamp_min(1).unsqueeze(-1)
        for block, mask in zip(out, masks):
            block[empty] = mask.to(block.dtype) / count
    return out, empty


def _nonzero_rows(x: torch.Tensor) -> torch.Tensor:
    """[..., 1] bool: the row (last axis) has a non-zero coordinate."""
    return (x != 0).any(-1, keepdim=True)


def layers_per_group(n_tokens: int, n_heads: int, d_model: int, n_layers: int, budget: int = CHUNK_BUDGET) -> int:
    """How many layers :func:`score_layers` takes at once (the fewest groups that fit, of equal size but the last).

    Layers scored together share one pass of tensor operations (on short prompts a layer's cost is mostly their
    number), but the gathers want the group's head directions and coefficients cache-resident: about
    GROUP_WORKING_SET floats, and a chunk's [T, T*H] temporaries within the budget. Measured on SmolLM2 (2-core
    CPU): 5 layers per group at 128 tokens beat 1 by ~7% and 30 by ~35%; long prompts score layers one by one."""
    per_layer = n_tokens * n_heads * (d_model + n_tokens)
    fit = max(1, min(GROUP_WORKING_SET // per_layer, budget // max(1, 8 * n_tokens * n_tokens * n_heads)))
    groups = -(-n_layers // fit)
    return -(-n_layers // groups)


def score_layers(records: list[LayerRecord], weights: list[LayerWeights], n_heads: int, topology: str, *,
                 budget: int = CHUNK_BUDGET, edge_floor: float = 0.0, convention: str = "paper") -> list[LayerScores]:
    """Importances of every update of a group of layers of one trace.

    Head-summed edges are stored from ``edge_floor`` on (0: every causal one); each is the exact sum over all heads.
    ``convention``: "paper" (proximity clipped at 0 over the parts, the output bias a part, a cancelling update split
    evenly; see the module docstring) or "lmtt" (LM-TT's get_contributions: every part, including each head's
    future source positions, scores max(proximity, LMTT_FLOOR); the output bias is no part). Either way the
    cancelling flags say which updates had no part closer to y than 0.

    The layers are scored together (a leading block axis through the proximity kernel): on short prompts the cost
    of a layer is mostly the number of tensor operations, not their size.
    """
    B, H = len(records), n_heads
    parallel = topology == "parallel"
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")
    floor = LMTT_FLOOR if convention == "lmtt" else 0.0
    dev = records[0].resid_pre.device
    x = _stack([rec.resid_pre for rec in records])  # [B, T, d]
    _, T, d = x.shape
    y = _stack([rec.resid_post if parallel else rec.resid_mid for rec in records])
    scales = [post_norm_scale(w.attn_post_norm, rec.attn_post_rstd) for rec, w in zip(records, weights)]
    # a layer without a post-norm among layers with one (hybrid stacks) takes scale 1, which changes nothing
    scale = None if all(sc is None for sc in scales) else _stack([torch.ones_like(x[0]) if sc is None else sc
                                                                    for sc in scales])  # [B, T, d]
    attention = []
    for rec in records:
        alpha = head_signal_scale(rec, H)
        attention.append(rec.attention if bool((alpha == 1).all()) else rec.attention * alpha.t().unsqueeze(-1))
    attention = _stack(attention)  # [B, H, T, T]
    # one decision for the whole group: its parts are scored in chunks of rows
    compiled = fused.worth(B * H * T * T, x, attention)
    u, reach, w_heads, v_heads = _head_factors(records, weights, H, compiled)

    # Extra parts besides the heads, columns: residual, bias, (mlp), external edit (last; see tracing/edits.py).
    extra_prox = torch.zeros(B, T, 4 if parallel else 3, dtype=y.dtype, device=dev)
    extra_prox[..., 0] = l1_proximity(y, x)
    if not floor and any(w.b_o is not None for w in weights):  # without an output bias its column stays 0
        # (a layer without one among layers with one gets a zero bias, whose proximity is exactly 0)
        b_o = _stack([torch.zeros_like(x[0, 0]) if w.b_o is None else w.b_o for w in weights]).unsqueeze(1)
        extra_prox[..., 1] = l1_proximity(y, b_o if scale is None else b_o * scale)
    if parallel:
        extra_prox[..., 2] = l1_proximity(y, _stack([rec.mlp_update for rec in records]))
    for b, rec in enumerate(records):
        if rec.edit_attn is not None:
            extra_prox[b, :, -1] = l1_proximity(y[b], rec.edit_attn)
    if floor:  # LM-TT's parts besides the heads: the residual, (the MLP output), an external edit where there is one
        floored = [0, 2] if parallel else [0]
        extra_floor = torch.zeros_like(extra_prox)
        extra_floor[..., floored] = floor
        for b, rec in enumerate(records):
            extra_floor[b, :, -1] = _edited_rows(rec.edit_attn, T, dev).to(y.dtype) * floor

    # Head parts, chunked over targets; only sources j <= last target of the chunk enter.
    # Row blocks keep the non-causal half of each block small; the budget caps its temporaries.
    rows_per_chunk = max(1, min(ROW_BLOCK, budget // max(1, B * T * H * 8)))
    if not 0 <= edge_floor <= HEAD_FLOOR:
        raise ValueError(f"edge_floor must lie in [0, {HEAD_FLOOR}] (HEAD_FLOOR), not {edge_floor}")
    head_total = torch.empty(B, T, H, dtype=torch.float32, device=dev)
    heads_csr, edges_csr = _SparseRows(B), _SparseRows(B)
    ext_imp = torch.empty(B, T, extra_prox.shape[-1], dtype=torch.float32, device=dev)
    cancel_attn = torch.zeros(B, T, dtype=torch.bool, device=dev)
    for i0 in range(0, T, rows_per_chunk):
        i1 = min(T, i0 + rows_per_chunk)
        m = i1 - i0
        coef = attention[:, :, i0:i1, :i1]  # [B, H, rows, sources]: a view, the kernel reads it in this layout
        # [B, H, rows, sources], its sums over sources [B, H, rows] and over heads [B, rows, sources]
        prox, by_head, by_source = grouped_part_proximity(
            y[:, i0:i1], coef, u, None if scale is None else scale[:, i0:i1], budget=budget, reach=reach,
            signed_dot=lambda rows, b0, b1, j=i1: _through_heads(rows, w_heads[b0:b1], v_heads[b0:b1, :, :j]),
            sums=True, compiled=compiled,
        )
        extra = extra_prox[:, i0:i1]
        total = extra.sum(-1) + by_head.sum(1)
        cancel = total <= 0
        causal = torch.arange(i1, device=dev)[None, :] <= torch.arange(i0, i1, device=dev)[:, None]  # [rows, sources]
        if floor:
            # LM-TT: every (source, head) pair is a part, future ones zero vectors at the floor; sources past this
            # chunk's last target (i1..T-1) are all future ones: floor * (T - i1) per head
            extra = torch.maximum(extra, extra_floor[:, i0:i1])
            prox.clamp_min_(floor)
            by_head, by_source = prox.sum(-1) + floor * (T - i1), prox.sum(1)
            total = extra.sum(-1) + by_head.sum(1)
        elif bool(cancel.any()):  # no part is closer to y than 0: an even split over the parts (see normalise)
            _present_parts(cancel, i0, coef, x, reach, records, weights, parallel, extra, prox)
            by_head, by_source = prox.sum(-1), prox.sum(1)
            total = extra.sum(-1) + by_head.sum(1)
        cancel_attn[:, i0:i1] = cancel
        inv = 1 / total.clamp_min(torch.finfo(total.dtype).tiny)
        ext_imp[:, i0:i1] = extra * inv.unsqueeze(-1)
        head_total[:, i0:i1] = (by_head * inv.unsqueeze(1)).transpose(1, 2)
        # [B, rows, sources] the head-summed edges, exact whatever is stored; each is >= every one of its heads
        # (a float sum of non-negative terms is at least each term), so candidates for the per-head floor are the
        # edges that reach it
        edges = by_source.mul_(inv.unsqueeze(-1)).float()
        # only causal pairs are stored (convention "lmtt" gives future ones the floor: never an edge)
        stored = edges if not floor else edges * causal
        if edge_floor > 0:  # ("paper": future sources have importance exactly 0 < floor, only causal pairs pass)
            kept = _flat_nonzero(stored >= edge_floor)
        else:
            kept = _flat_nonzero(causal.expand(B, m, i1))
        edges_csr.add_at(edges, kept)
        _add_head_scores(heads_csr, prox, inv, kept if edge_floor == HEAD_FLOOR else _flat_nonzero(stored >= HEAD_FLOOR))

    if parallel:
        mlp, resid_mlp, cancel_mlp, external_mlp = ext_imp[..., 2], None, None, None
    else:
        post = _stack([rec.resid_post for rec in records])
        mlp_update = _stack([rec.mlp_update for rec in records])
        # parts: the residual after attention (y here), the MLP output, an external edit (0 without one)
        three = torch.zeros(B, T, 3, dtype=y.dtype, device=dev)
        three[..., 0], three[..., 1] = l1_proximity(post, y), l1_proximity(post, mlp_update)
        for b, rec in enumerate(records):
            if rec.edit_mlp is not None:
                three[b, :, 2] = l1_proximity(post[b], rec.edit_mlp)
        if floor:  # LM-TT: both parts (and an edit where there is one) score at least the floor
            cancel_mlp_raw = three.sum(-1) <= 0
            three[..., :2].clamp_min_(floor)
            for b, rec in enumerate(records):
                three[b, :, 2] = torch.maximum(three[b, :, 2], _edited_rows(rec.edit_mlp, T, dev).to(y.dtype) * floor)
        (imp,), cancel_mlp = normalise(three, present=lambda rows: [torch.cat([
            _nonzero_rows(y[rows]), _nonzero_rows(mlp_update[rows]),
            _edited_rows_at(rows, [rec.edit_mlp for rec in records])], -1)])
        imp = imp.float()
        resid_mlp, mlp, external_mlp = imp[..., 0], imp[..., 1], imp[..., 2]
        if floor:
            cancel_mlp = cancel_mlp_raw

    return [
        LayerScores(
            *edges_csr.layer(b), head_total=head_total[b], head_ptr=heads_csr.ptr(b), head_col=heads_csr.cols(b),
            head_val=heads_csr.vals(b), resid_attn=ext_imp[b, :, 0],
            bias_attn=ext_imp[b, :, 1], mlp=mlp[b], resid_mlp=None if resid_mlp is None else resid_mlp[b],
            cancel_attn=cancel_attn[b], cancel_mlp=None if cancel_mlp is None else cancel_mlp[b],
            external_attn=ext_imp[b, :, -1], external_mlp=None if external_mlp is None else external_mlp[b],
            edited_attn=_edited_rows(records[b].edit_attn, T, dev),
            edited_mlp=None if parallel else _edited_rows(records[b].edit_mlp, T, dev), edge_floor=float(edge_floor),
        )
        for b in range(B)
    ]


class _SparseRows:
    """CSR rows (targets) of B layers, filled chunk of targets by chunk of targets."""

    def __init__(self, n_layers: int):
        self.counts: list[torch.Tensor] = []
        self._cols: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
        self._vals: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]

    def add_at(self, values: torch.Tensor, kept: torch.Tensor) -> None:
        """values [B, m, n] of m targets; kept: the flat positions in values of the entries to store, ascending
        (column = index in n)."""
        B, m, n = values.shape
        r = kept.div(n, rounding_mode="floor")  # row over all layers of the chunk: b * m + target
        self.add_entries(r, (kept - r * n).to(torch.int32), values.reshape(-1).index_select(0, kept), B, m)

    def add_entries(self, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, B: int, m: int) -> None:
        """Entries of a chunk of m targets: rows (b * m + target, ascending), their columns and values."""
        per_row = torch.bincount(rows, minlength=B * m).view(B, m)
        self.counts.append(per_row)
        sizes = per_row.sum(1).tolist()
        for b, (c, v) in enumerate(zip(cols.split(sizes), vals.split(sizes))):
            self._cols[b].append(c)
            self._vals[b].append(v)

    def ptr(self, b: int) -> torch.Tensor:
        counts = torch.cat([c[b] for c in self.counts])
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def cols(self, b: int) -> torch.Tensor:
        return torch.cat(self._cols[b])

    def vals(self, b: int) -> torch.Tensor:
        return torch.cat(self._vals[b])

    def layer(self, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.ptr(b), self.cols(b), self.vals(b)


def _present_parts(rows, i0, coef, x, reach, records, weights, parallel, extra, prox) -> None:
    """Write 1 for every part (0 for an absent one) of the attention updates at the cancelling ``rows`` ([B, m] bool
    over a chunk of targets from i0) into their proximities: extra [B, m, residual | bias | (mlp) | edit] and
    prox [B, H, m, sources], so that normalising splits those updates evenly (see :func:`normalise`)."""
    b_idx, r_idx = rows.nonzero(as_tuple=True)
    i = r_idx + i0
    cols = [_nonzero_rows(x[b_idx, i])]
    has_bias = torch.tensor([w.b_o is not None and bool((w.b_o != 0).any()) for w in weights], device=x.device)
    cols.append(has_bias[b_idx].unsqueeze(-1))
    pairs = list(zip(b_idx.tolist(), i.tolist()))
    if parallel:
        cols.append(torch.cat([_nonzero_rows(records[b].mlp_update[t]) for b, t in pairs]).view(-1, 1))
    cols.append(_edited_rows_at((b_idx, i), [rec.edit_attn for rec in records]))
    extra[b_idx, r_idx] = torch.cat(cols, -1).to(extra.dtype)
    n_src = coef.shape[-1]
    causal = torch.arange(n_src, device=x.device)[None, :] <= i[:, None]  # [n, sources]
    heads = (coef[b_idx, :, r_idx] != 0) & causal.unsqueeze(1) & (reach[b_idx, :, :n_src] > 0)  # [n, H, sources]
    prox[b_idx, :, r_idx] = heads.to(prox.dtype)


def _flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    return mask.reshape(-1).nonzero().squeeze(1)


def _add_head_scores(csr: "_SparseRows", prox: torch.Tensor, inv: torch.Tensor, pairs: torch.Tensor) -> None:
    """Store the per-head scores prox * inv >= HEAD_FLOOR of a chunk (prox [B, H, m, sources], inv [B, m]), looking
    only at the (target, source) pairs ``pairs`` (flat positions in [B, m, sources], ascending): every pair whose
    edge reaches the floor."""
    B, H, m, n = prox.shape
    b, rest = pairs.div(m * n, rounding_mode="floor"), pairs % (m * n)
    r, j = rest.div(n, rounding_mode="floor"), rest % n
    # prox[b, h, r, j] for every h, by flat position (a 1-D index_select: several times advanced indexing's speed)
    at = (b * (H * m * n) + rest).unsqueeze(1) + torch.arange(H, device=prox.device) * (m * n)
    picked = prox.reshape(-1).index_select(0, at.view(-1)).view(-1, H)
    vals = (picked * inv[b, r].unsqueeze(1)).float()  # [k, H], the same product as a dense pass
    kept = (vals >= HEAD_FLOOR).view(-1).nonzero().squeeze(1)
    pair, h = kept.div(H, rounding_mode="floor"), kept % H
    csr.add_entries((b * m + r).index_select(0, pair), (j.index_select(0, pair) * H + h).to(torch.int32),
                    vals.view(-1).index_select(0, kept), B, m)


def _edited_rows_at(rows, edits: list[torch.Tensor | None]) -> torch.Tensor:
    """[n, 1] bool: an external edit is non-zero at each of ``rows`` ([B, T] bool mask, or (layer, token) indices)."""
    b_idx, t_idx = rows.nonzero(as_tuple=True) if isinstance(rows, torch.Tensor) else rows
    flags = [edits[b] is not None and bool((edits[b][t] != 0).any()) for b, t in zip(b_idx.tolist(), t_idx.tolist())]
    return torch.tensor(flags, dtype=torch.bool, device=b_idx.device).view(-1, 1)


def _edited_rows(edit: torch.Tensor | None, T: int, dev) -> torch.Tensor:
    return torch.zeros(T, dtype=torch.bool, device=dev) if edit is None else (edit != 0).any(-1)


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack, without the copy for a single tensor (long prompts score one layer at a time)."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _head_factors(records, weights, n_heads, transposed: bool):
    """The parts' factors, head-major: directions u [B, H, T, d] (u[b, h, j] = v_j^{kv(h)} W_O,h), their largest
    coordinate [B, H, T], W_O per head [B, d, H, dh] and the values repeated per query head [B, H, T, dh] (GQA).

    ``transposed`` (where the compiled sweep runs, fused.py): u is a transposed view of a [B, H, d, T] product, the
    layout that sweep reads, made by the product itself rather than by a copy."""
    _, T, dh = records[0].values.shape
    d = weights[0].w_o.shape[0]
    v = _stack([rec.values.repeat_interleave(n_heads // rec.values.shape[0], dim=0) for rec in records])
    w = _stack([wt.w_o.view(d, n_heads, dh) for wt in weights])
    u = torch.empty(len(records), n_heads, *((d, T) if transposed else (T, d)), dtype=v.dtype, device=v.device)
    for b in range(len(records)):
        if transposed:
            torch.bmm(w[b].permute(1, 0, 2), v[b].transpose(1, 2), out=u[b])  # [H, d, dh] x [H, dh, T]
        else:
            torch.bmm(v[b], w[b].permute(1, 2, 0), out=u[b])  # [H, T, dh] x [H, dh, d]
    axis = -2 if transposed else -1
    # max |u| without an |u| copy of u (two plain reductions: ~3x faster than aminmax or abs().amax() on CPU)
    reach = torch.maximum(u.amax(axis), u.amin(axis).neg_())
    return (u.transpose(-1, -2) if transposed else u), reach, w, v


def _through_heads(rows: torch.Tensor, w_heads: torch.Tensor, v_heads: torch.Tensor) -> torch.Tensor:
    """rows @ u.T for u[j, h] = v_j^h W_O,h, without forming u: (rows W_O,h) . v_j^h. rows [b, n, d],
    w_heads [b, d, H, dh], v_heads [b, H, J, dh] -> [b, H, n, J]."""
    through = torch.einsum("bnd,bdhk->bhnk", rows, w_heads)  # [b, H, n, dh]
    return torch.matmul(through, v_heads.transpose(-1, -2))


def neuron_importance(rec: LayerRecord, w: LayerWeights, *, budget: int = CHUNK_BUDGET,
                      convention: str = "paper") -> torch.Tensor:
    """[T, F] importance of each neuron within the MLP's change to the residual (bias excluded from the columns).

    ``convention="lmtt"``: LM-TT's get_decomposed_mlp_contributions instead: y is the residual after the MLP, the
    parts every neuron's write and the residual before it (one more part), each max(proximity, LMTT_FLOOR); the
    output bias is no part. ``rec`` then needs ``resid_post``."""
    scale = post_norm_scale(w.mlp_post_norm, rec.mlp_post_rstd)
    if convention == "lmtt":
        y = rec.resid_post
        prox = scaled_part_proximity(y, rec.neurons, w.w_out.t(), scale, budget=budget).clamp_min_(LMTT_FLOOR)
        resid = l1_proximity(y, y - rec.mlp_update).clamp_min(LMTT_FLOOR)
        return (prox / (prox.sum(-1) + resid).unsqueeze(-1)).float()
    y = rec.mlp_update
    T, d = y.shape
    prox = scaled_part_proximity(y, rec.neurons, w.w_out.t(), scale, budget=budget)
    if w.b_out is not None:
        b = w.b_out.expand(T, d) if scale is None else w.b_out * scale
        bias = l1_proximity(y, b)
    else:
        bias = torch.zeros(T, dtype=y.dtype, device=y.device)
    has_bias = w.b_out is not None and bool((w.b_out != 0).any())
    (_, neurons), _ = normalise(bias[:, None], prox, present=lambda rows: [
        torch.full((int(rows.sum()), 1), has_bias, device=y.device), rec.neurons[rows] != 0])
    return neurons.float()

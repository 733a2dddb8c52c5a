"""Proximity of the parts of a residual update (Ferrando & Voita, 2024), computed exactly and fast.

For an update y = sum of parts z, proximity(z, y) = max(|y|_1 - |y - z|_1, 0), and a part's importance is its
proximity over the sum of proximities of all parts of that update.

The expensive case is attention: one part per (source j <= target i, head h), z = a * b with a = A_h[i, j] a scalar
and b = v_j W_O,h a vector, so a direct computation costs T^2 * H * d. We use an exact identity instead. Per
coordinate k, with s_k = sign(y_k) (either sign where y_k = 0: both sides are then -|z_k|):

    |y_k| - |y_k - z_k| = s_k z_k - 2 * relu(s_k z_k - |y_k|)

The first term summed over k is a matrix product (cheap). The correction only lowers a proximity, which is clamped
at 0, so parts whose linear term is <= 0 are done. Elsewhere it is non-zero only where |z_k| > |y_k|, which needs
|a| * max|b| > |y_k|. Sorting a row's |y| ascending, a part whose bound |a| * max|b| does not exceed the (c+1)-th
smallest |y_k| can only need the correction on the c smallest coordinates. Parts are grouped by that count
(0, 1, 2, 4, ... 128, more) with one stable sort, and each group computes its correction on exactly those
coordinates; the last group is computed directly. Residual updates are large against single head-source parts, so
most parts need nothing. Every proximity is exact; only the cost depends on the data. Nothing of shape
[T, T, H, d] is ever allocated: work is chunked over target rows and over selected parts.

Several independent blocks of rows (the layers of a short prompt), each with its own parts, go through one pass:
on short prompts a layer's cost is mostly the number of tensor operations, not their size. Parts may come in groups
(attention: heads x sources), kept in the layout [blocks, groups, rows, parts of a group] in which attention and its
product come, so that nothing of the size of all parts is transposed or copied; the coefficients are read through
any strided view.
"""

from __future__ import annotations

import torch

from . import fused

# Floats allowed in one chunk's temporary tensors (about 64 MB in float32).
CHUNK_BUDGET = 16 * 2**20
BUDGET_MEANS = f"floats in one chunk's temporary tensors, default {CHUNK_BUDGET}"  # what budget= says in errors
# How many of a row's smallest coordinates each bucket corrects; parts needing more are computed directly.
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Flat positions in the basis are int32 below this (half the memory traffic of int64 in the gathers).
INT32_POSITIONS = 2**31
# PyTorch sorts 1-D integer keys with a radix sort from this many elements on (at::internal::GRAIN_SIZE).
RADIX_SORT_MIN = 32768


def l1_proximity(y: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """max(|y|_1 - |y - part|_1, 0) along the last axis, computed directly."""
    return (y.abs().sum(-1) - (y - part).abs().sum(-1)).clamp_min(0)


def scaled_part_proximity(
    y: torch.Tensor,
    coef: torch.Tensor,
    basis: torch.Tensor,
    scale: torch.Tensor | None = None,
    *,
    buckets: tuple[int, ...] = BUCKETS,
    budget: int = CHUNK_BUDGET,
    reach: torch.Tensor | None = None,
) -> torch.Tensor:
    """Proximities of parts z[b, n, p] = coef[b, n, p] * scale[b, n] * basis[b, p] to y[b, n].

    B independent blocks (e.g. the layers of a model) are scored in one pass, each block's rows against its own
    parts. The leading block axis is optional (2-D inputs give a 2-D result).

    Args:
        y: [B, N, d] the updates.
        coef: [B, N, P] scalar coefficient of each part (0 for absent parts, e.g. future positions).
        basis: [B, P, d] the direction of each part.
        scale: [B, N, d] optional per-row coordinate scale (a frozen post-norm), or None.
        buckets: increasing counts of smallest coordinates corrected per bucket (tuning only; results are exact).
        reach: optional [B, P] = basis.abs().amax(-1), when the caller already has it.
    Returns:
        [B, N, P] exact proximities (>= 0).
    """
    if y.dim() == 2:
        return scaled_part_proximity(
            y[None], coef[None], basis[None], None if scale is None else scale[None], buckets=buckets,
            budget=budget, reach=None if reach is None else reach[None],
        )[0]
    return grouped_part_proximity(
        y, coef.unsqueeze(1), basis.unsqueeze(1), scale, buckets=buckets, budget=budget,
        reach=None if reach is None else reach.unsqueeze(1),
    ).squeeze(1)


def grouped_part_proximity(
    y: torch.Tensor,
    coef: torch.Tensor,
    basis: torch.Tensor,
    scale: torch.Tensor | None = None,
    *,
    buckets: tuple[int, ...] = BUCKETS,
    budget: int = CHUNK_BUDGET,
    signed_dot=None,
    reach: torch.Tensor | None = None,
    sums: bool = False,
    compiled: bool | None = None,
):
    """Proximities of parts z[b, g, n, j] = coef[b, g, n, j] * scale[b, n] * basis[b, g, j] to y[b, n].

    The parts of a row come in G groups of J (attention: heads x sources), and the result keeps that layout
    [B, G, N, J]: attention's product and its coefficients come in it without a transposing copy, and the caller's
    sums over either axis read contiguous memory.

    Args:
        y: [B, N, d] the updates.
        coef: [B, G, N, J] scalar coefficient of each part, any strides (e.g. a block of the attention matrices).
        basis: [B, G, J', d] the directions, J' >= J (parts j < J are scored).
        scale: [B, N, d] optional per-row coordinate scale (a frozen post-norm), or None.
        buckets, budget: tuning only (results are exact); ``budget`` floats per chunk of temporaries.
        signed_dot: optional fast product: given signed rows [b, n, d] of the blocks b0:b1, returns
            rows @ basis[b0:b1, :, :J].T as [b, G, n, J] (attention passes one that goes through W_O and the values,
            1/H of the work).
        reach: optional [B, G, J'] = basis.abs().amax(-1), when the caller already has it.
        sums: also return the sums over parts of a group and over groups (in the same sweep where compiled).
        compiled: use the compiled sweep (fused.py) where it can run; None: where this call's parts are enough
            (fused.worth). A caller that splits one job into calls decides once for all of them.
    Returns:
        [B, G, N, J] exact proximities (>= 0); with ``sums``, (proximities, [B, G, N] their sums over j,
        [B, N, J] their sums over g).
    """
    B, N, d = y.shape
    G, J = coef.shape[1], coef.shape[3]
    levels = [c for c in buckets if c < d]
    if reach is None:
        reach = basis.abs().amax(-1)  # [B, G, J'] the largest coordinate of each direction
    tensors = (y, coef, basis, scale, reach)
    compiled = fused.worth(B * G * N * J, *tensors) if compiled is None else compiled and fused.usable(*tensors)
    # the compiled sweep reads a coordinate of consecutive parts (free where basis is a transposed weight or
    # product); the tensor path reads parts by flat index (a transposed weight would be copied per bucket)
    basis = basis.transpose(-1, -2).contiguous() if compiled else basis.contiguous()
    if signed_dot is None:
        signed_dot = lambda r, b0, b1: torch.matmul(  # noqa: E731
            r.unsqueeze(1), basis[b0:b1, :, :, :J] if compiled else basis[b0:b1, :, :J].transpose(-1, -2))
    rows = max(1, budget // max(1, 4 * G * J))  # rows of [*, G * J] temporaries one chunk may hold
    if rows >= N:  # whole blocks per chunk
        spans = [(b0, min(B, b0 + rows // N), 0, N) for b0 in range(0, B, rows // N)]
    else:
        spans = [(b, b + 1, r0, min(N, r0 + rows)) for b in range(B) for r0 in range(0, N, rows)]
    out = None
    for b0, b1, r0, r1 in spans:
        parts = _chunk(
            y[b0:b1, r0:r1], coef[b0:b1, :, r0:r1], basis[b0:b1], reach[b0:b1],
            None if scale is None else scale[b0:b1, r0:r1], levels, budget,
            lambda r, b0=b0, b1=b1: signed_dot(r, b0, b1), sums, compiled,
        )
        if len(spans) == 1:
            return parts if sums else parts[0]
        if out is None:
            out = (torch.empty(B, G, N, J, dtype=y.dtype, device=y.device),
                   torch.empty(B, G, N, dtype=y.dtype, device=y.device),
                   torch.empty(B, N, J, dtype=y.dtype, device=y.device))
        out[0][b0:b1, :, r0:r1] = parts[0]
        if sums:
            out[1][b0:b1, :, r0:r1], out[2][b0:b1, r0:r1] = parts[1], parts[2]
    return out if sums else out[0]


def _chunk(y, coef, basis, reach, scale, levels, budget, dot, sums, compiled):
    """Proximities of one chunk: y [b, m, d], coef [b, G, m, J], basis [b, G, J', d] (contiguous; compiled: [b, G,
    d, J'] transposed), reach [b, G, J'], as (prox, its sums over j, its sums over g) with ``sums``, else (prox,).

    Rows are addressed flat below (row R = block * m + r), parts by their row in the basis [b * G * J', d] and
    their position in the result, read as a flat [b * G * m * J]."""
    b, m, d = y.shape
    G, J = coef.shape[1], coef.shape[3]
    # any sign with |s| = 1 works where y_k = 0 (both sides are -|z_k| there), so copysign's sign of -0.0 is fine
    sign = torch.copysign(torch.ones((), dtype=y.dtype, device=y.device), y)
    signed_scale = sign if scale is None else sign * scale
    prox = dot(signed_scale).contiguous()  # [b, G, m, J] the linear term before each part's coefficient
    absy = y.abs()
    # A coordinate can need the correction only where |z_k| > |y_k|, i.e. |a| |b_k| > |y_k| / |scale_k|.
    # (where scale_k = 0 no part reaches coordinate k: 0/0 is read as inf, which also keeps the bit order below)
    y_eff = absy if scale is None else (absy / scale.abs()).nan_to_num_(nan=float("inf"))
    width = min(d, levels[-1] + 1) if levels else 1
    edges, order = _smallest(y_eff.reshape(b * m, d), width)  # [M, width] ascending
    if compiled:  # one compiled sweep instead of the steps below
        return fused.proximity_in_place(prox, coef, reach, basis, edges.view(b, m, width), order.view(b, m, width),
                                        signed_scale, absy, sums)
    prox.mul_(coef)  # the linear term, in place
    _correct_chunk(prox, y, coef, basis, reach, scale, absy, signed_scale, edges, order, levels, budget)
    prox.clamp_min_(0)
    return (prox, prox.sum(-1), prox.sum(1)) if sums else (prox,)


def _correct_chunk(prox, y, coef, basis, reach, scale, absy, signed_scale, edges, order, levels, budget):
    """Subtract the corrections from the linear terms prox [b, G, m, J] of one chunk (see :func:`_chunk`)."""
    b, m, d = y.shape
    G, J, Jb = coef.shape[1], coef.shape[3], basis.shape[2]
    M = b * m
    y, signed_scale, absy = y.reshape(M, d), signed_scale.reshape(M, d), absy.reshape(M, d)
    scale = None if scale is None else scale.reshape(M, d)
    # |a| max|b|: the largest |z_k| a part can reach (laid out like prox, whatever coef's strides)
    bound = torch.mul(coef, reach[:, :, None, :J]).abs_().contiguous()
    # Parts below the smallest |y_k| need no correction; nor do those whose linear term is <= 0: the correction
    # only lowers a proximity, which is clamped at 0 (about half of the parts).
    at = (bound > edges[:, 0].view(b, 1, m, 1)).view(-1).nonzero().squeeze(1)
    if at.numel():
        at = at[prox.view(-1).index_select(0, at) > 0]
    if at.numel():
        bound_at = bound.view(-1).index_select(0, at)
        del bound
        j = at % J
        g = at.div(J, rounding_mode="floor")  # block * G + group, then row within the chunk
        r = g % m
        g = g.div_(m, rounding_mode="floor")
        row = r if b == 1 else g.div(G, rounding_mode="floor").mul_(m).add_(r)
        part = g * Jb + j  # the part's direction: a row of basis [b * G * J', d]
        a_coef = coef.reshape(b * G, m, J)[g, r, j]
        _correct_parts(prox.view(-1), at, row, part, a_coef, bound_at, basis.view(-1, d), y, absy, scale,
                       signed_scale, edges, order, levels, budget)


def _correct_parts(flat_prox, at, row, part, a_coef, bound, basis_rows, y, absy, scale, signed_scale, edges, order,
                   levels, budget):
    """Subtract the exact correction from the linear terms flat_prox[at] of the parts at (row, part, coefficient,
    bound |a| max|b|), each on the coordinates it can reach (see the module docstring)."""
    d = y.shape[1]
    # level l: the part stays below the (levels[l]+1)-th smallest |y_k|, so only the levels[l] smallest
    # coordinates can need the correction; level len(levels): computed directly.
    steps = edges[:, list(levels)].index_select(0, row)  # [k, levels] the |y| each level must stay below
    level = (bound.unsqueeze(1) > steps).sum(1, dtype=torch.uint8)
    by_level = _group_order(level)
    at, row, part, a_coef = (t.index_select(0, by_level) for t in (at, row, part, a_coef))
    # flat positions in the basis, in int32 where they fit (half the memory traffic of the gathers)
    pos = torch.int32 if basis_rows.numel() < INT32_POSITIONS else torch.int64
    offset = (part * d).to(pos)  # where each part's direction starts
    coords = order.to(pos)
    s_sorted = signed_scale.gather(1, order)  # [M, width] sign x scale, in order of |y_eff| ascending
    y_sorted = edges if scale is None else absy.gather(1, order)  # without a scale, |y_eff| is |y|
    flat_basis = basis_rows.view(-1)
    first = 0
    for lv, count in enumerate(torch.bincount(level, minlength=len(levels) + 1).tolist()):
        group = slice(first, first + count)
        first += count
        if not count:
            continue
        if lv < len(levels):
            c = levels[lv]
            _correct(flat_prox, at[group], row[group], offset[group], a_coef[group], flat_basis,
                     s_sorted[:, :c], y_sorted[:, :c], coords[:, :c], budget)
        else:
            _direct(flat_prox, at[group], row[group], part[group], a_coef[group], basis_rows, y, absy, scale, budget)


_SAME_WIDTH_INT = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
                   torch.bfloat16: torch.int16}


def _smallest(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest values of each row of x >= 0, ascending, and their indices.

    Non-negative floats order exactly as their bit patterns read as integers, and PyTorch's integer topk is
    about 40% faster than its float one."""
    values, order = x.view(_SAME_WIDTH_INT[x.dtype]).topk(k, dim=1, largest=False, sorted=True)
    return values.view(x.dtype), order


def _group_order(level: torch.Tensor) -> torch.Tensor:
    """A stable order that groups small integer keys, each group left in its original (row-major) order.

    Below RADIX_SORT_MIN keys PyTorch falls back from its radix sort to a comparison sort up to 8x slower;
    padding with keys that sort last keeps it on the fast path."""
    n = level.numel()
    if n < RADIX_SORT_MIN:
        level = torch.cat([level, level.new_full((RADIX_SORT_MIN - n,), torch.iinfo(level.dtype).max)])
    return torch.argsort(level, stable=True)[:n]


def _correct(flat_prox, at, row, offset, a_coef, flat_basis, s_small, y_small, idx, budget):
    """prox[r, p] -= 2 * sum over the coordinates idx[r] of relu(s_k z_k - |y_k|), for the parts at = r * P + p.

    offset: where each part's direction starts in the flat basis; a_coef: coef[r, p];
    s_small, y_small: [M, c] sign x scale and |y| at those coordinates."""
    c = idx.shape[1]
    step = max(1, budget // (4 * c))
    for s in range(0, at.numel(), step):
        part = slice(s, s + step)
        r = row[part]
        where = idx.index_select(0, r).add_(offset[part].unsqueeze(1))  # [k, c] flat positions in basis
        z = flat_basis.index_select(0, where.view(-1)).view(where.shape)  # 1-D index_select: 2x take's speed
        z.mul_(a_coef[part].unsqueeze(1)).mul_(s_small.index_select(0, r)).sub_(y_small.index_select(0, r))
        z.relu_()
        flat_prox.index_add_(0, at[part], z.sum(1), alpha=-2)


def _direct(flat, at, row, part, a_coef, basis_rows, y, absy, scale, budget):
    """Proximity of the parts at (flat positions in the result) from their full vectors, basis_rows[part] [k, d]."""
    d = basis_rows.shape[1]
    y_l1 = absy.sum(-1)
    step = max(1, budget // (4 * d))
    for s in range(0, at.numel(), step):
        sl = slice(s, s + step)
        r = row[sl]
        z = basis_rows.index_select(0, part[sl]).mul_(a_coef[sl].unsqueeze(-1))
        if scale is not None:
            z.mul_(scale.index_select(0, r))
        flat.index_copy_(0, at[sl], y_l1.index_select(0, r) - (y.index_select(0, r) - z).abs().sum(-1))

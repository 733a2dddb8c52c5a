"""Proximity of the parts of a residual update (Ferrando & Voita, 2024), computed exactly and fast.

For an update y = sum of parts z, proximity(z, y) = max(|y|_1 - |y - z|_1, 0), and a part's importance is its
proximity over the sum of proximities of all parts of that update.

The expensive case is attention: one part per (source j <= target i, head h), z = a * b with a = A_h[i, j] a scalar
and b = v_j W_O,h a vector, so a direct computation costs T^2 * H * d. We use an exact identity instead. Per
coordinate k, with s_k = sign(y_k) (sign(0) taken as +1):

    |y_k| - |y_k - z_k| = s_k z_k - 2 * relu(s_k z_k - |y_k|)

The first term summed over k is a matrix product (cheap). The correction is non-zero only where |z_k| > |y_k|,
which needs |a| * max|b| > |y_k|. Sorting a row's |y| ascending, a part whose bound |a| * max|b| does not exceed
the (c+1)-th smallest |y_k| can only need the correction on the c smallest coordinates. Parts are grouped by that
count (0, 1, 2, 4, ... 128, more) with one stable sort, and each group computes its correction on exactly those
coordinates; the last group is computed directly. Residual updates are large against single head-source parts, so
most parts need nothing. Every proximity is exact; only the cost depends on the data. Nothing of shape
[T, T, H, d] is ever allocated: work is chunked over target rows and over selected parts.
"""

from __future__ import annotations

import torch

# Floats allowed in one chunk's temporary tensors (about 64 MB in float32).
CHUNK_BUDGET = 16 * 2**20
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
    signed_dot=None,
    reach: torch.Tensor | None = None,
) -> torch.Tensor:
    """Proximities of parts z[n, p] = coef[n, p] * scale[n] * basis[p] to y[n].

    Args:
        y: [N, d] the updates.
        coef: [N, P] scalar coefficient of each part (0 for absent parts, e.g. future positions).
        basis: [P, d] the direction of each part.
        scale: [N, d] optional per-row coordinate scale (a frozen post-norm), or None.
        buckets: increasing counts of smallest coordinates corrected per bucket (tuning only; results are exact).
        signed_dot: optional fast product: given rows [n, d] and the row slice, returns rows @ basis.T [n, P]
            (attention passes one that goes through W_O and the values, 1/H of the work).
        reach: optional [P] = basis.abs().amax(1), when the caller already has it.
    Returns:
        [N, P] exact proximities (>= 0).
    """
    N, d = y.shape
    P = basis.shape[0]
    basis = basis.contiguous()  # parts are read by flat index (a transposed weight would be copied per bucket)
    out = torch.empty(N, P, dtype=y.dtype, device=y.device)
    levels = [c for c in buckets if c < d]
    rows = max(1, min(N, budget // max(1, 4 * P)))
    basis_t = basis.t().contiguous() if signed_dot is None else None  # [d, P]
    if reach is None:
        reach = basis.abs().amax(1)  # [P] the largest coordinate of each direction
    for start in range(0, N, rows):
        stop = min(N, start + rows)
        if signed_dot is None:
            dot = lambda r: r @ basis_t  # noqa: E731
        else:
            dot = lambda r, a=start, b=stop: signed_dot(r, a, b)  # noqa: E731
        out[start:stop] = _chunk(y[start:stop], coef[start:stop], basis, reach,
                                 None if scale is None else scale[start:stop], levels, budget, dot)
    return out


def _chunk(y, coef, basis, reach, scale, levels, budget, dot):
    n, d = y.shape
    P = basis.shape[0]
    coef = coef.contiguous()  # parts are addressed by flat index (row * P + part) below
    # any sign with |s| = 1 works where y_k = 0 (both sides are -|z_k| there), so copysign's sign of -0.0 is fine
    sign = torch.copysign(torch.ones((), dtype=y.dtype, device=y.device), y)
    signed_scale = sign if scale is None else sign * scale
    prox = coef * dot(signed_scale)  # [n, P] the linear term

    absy = y.abs()
    # A coordinate can need the correction only where |z_k| > |y_k|, i.e. |a| |b_k| > |y_k| / |scale_k|.
    # (where scale_k = 0 no part reaches coordinate k: 0/0 is read as inf, which also keeps the bit order below)
    y_eff = absy if scale is None else (absy / scale.abs()).nan_to_num_(nan=float("inf"))
    width = min(d, levels[-1] + 1) if levels else 1
    edges, order = _smallest(y_eff, width)  # [n, width] ascending
    bound = coef.abs().mul_(reach)  # [n, P] the largest |z_k| a part can reach
    # The correction only lowers a proximity, which is clamped at 0: parts with a linear term <= 0 end at 0
    # whatever it is (about half of them). Parts below the smallest |y_k| need no correction either.
    at = ((bound > edges[:, :1]) & (prox > 0)).view(-1).nonzero().squeeze(1)
    if at.numel():
        row = at.div(P, rounding_mode="floor")
        # level l: the part stays below the (levels[l]+1)-th smallest |y_k|, so only the levels[l] smallest
        # coordinates can need the correction; level len(levels): computed directly.
        steps = edges[:, list(levels)].index_select(0, row)  # [k, levels] the |y| each level must stay below
        level = (bound.view(-1).index_select(0, at).unsqueeze(1) > steps).sum(1, dtype=torch.uint8)
        by_level = _group_order(level)
        at, row = at.index_select(0, by_level), row.index_select(0, by_level)
        # flat positions in the basis, in int32 where they fit (half the memory traffic of the gathers)
        pos = torch.int32 if P * d < INT32_POSITIONS else torch.int64
        offset = (at - row * P).mul_(d).to(pos)  # where each part's direction starts
        coords = order.to(pos)
        a_coef = coef.view(-1).index_select(0, at)
        s_sorted = signed_scale.gather(1, order)  # [n, width] sign x scale, in order of |y_eff| ascending
        y_sorted = edges if scale is None else absy.gather(1, order)  # without a scale, |y_eff| is |y|
        first = 0
        for lv, count in enumerate(torch.bincount(level, minlength=len(levels) + 1).tolist()):
            group = slice(first, first + count)
            first += count
            if not count:
                continue
            if lv < len(levels):
                c = levels[lv]
                _correct(prox, at[group], row[group], offset[group], a_coef[group], basis,
                         s_sorted[:, :c], y_sorted[:, :c], coords[:, :c], budget)
            else:
                _direct(prox, at[group], row[group], coef, basis, y, absy, scale, budget)
    return prox.clamp_min_(0)


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


def _correct(prox, at, row, offset, a_coef, basis, s_small, y_small, idx, budget):
    """prox[r, p] -= 2 * sum over the coordinates idx[r] of relu(s_k z_k - |y_k|), for the parts at = r * P + p.

    offset: p * d, where each part starts in the flat basis; a_coef: coef[r, p];
    s_small, y_small: [n, c] sign x scale and |y| at those coordinates."""
    c = idx.shape[1]
    flat_basis, flat_prox = basis.reshape(-1), prox.view(-1)
    step = max(1, budget // (4 * c))
    for s in range(0, at.numel(), step):
        part = slice(s, s + step)
        r = row[part]
        where = idx.index_select(0, r).add_(offset[part].unsqueeze(1))  # [k, c] flat positions in basis
        z = flat_basis.index_select(0, where.view(-1)).view(where.shape)  # 1-D index_select: 2x take's speed
        z.mul_(a_coef[part].unsqueeze(1)).mul_(s_small.index_select(0, r)).sub_(y_small.index_select(0, r))
        z.relu_()
        flat_prox.index_add_(0, at[part], z.sum(1), alpha=-2)


def _direct(prox, at, row, coef, basis, y, absy, scale, budget):
    """Proximity of the parts at = r * P + p from their full vectors."""
    P, d = basis.shape
    y_l1 = absy.sum(-1)
    flat, flat_coef = prox.view(-1), coef.view(-1)
    step = max(1, budget // (4 * d))
    for s in range(0, at.numel(), step):
        a, r = at[s : s + step], row[s : s + step]
        part = basis.index_select(0, a - r * P) * flat_coef.index_select(0, a).unsqueeze(-1)
        if scale is not None:
            part.mul_(scale.index_select(0, r))
        flat.index_copy_(0, a, y_l1.index_select(0, r) - (y.index_select(0, r) - part).abs().sum(-1))

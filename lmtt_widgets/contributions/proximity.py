"""Proximity of the parts of a residual update (Ferrando & Voita, 2024), computed exactly and fast.

For an update y = sum of parts z, proximity(z, y) = max(|y|_1 - |y - z|_1, 0), and a part's importance is its
proximity over the sum of proximities of all parts of that update.

The expensive case is attention: one part per (source j <= target i, head h), z = a * b with a = A_h[i, j] a scalar
and b = v_j W_O,h a vector, so a direct computation costs T^2 * H * d. We use an exact identity instead. Per
coordinate k, with s_k = sign(y_k) (sign(0) taken as +1):

    |y_k| - |y_k - z_k| = s_k z_k - 2 * relu(s_k z_k - |y_k|)

The first term summed over k is a matrix product (cheap). The correction is non-zero only where |z_k| > |y_k|.
For each row we take the m coordinates of y smallest in magnitude and compute the correction there for every
part; for every other coordinate |y_k| >= theta (the (m+1)-th smallest), so the correction there vanishes unless
|a| * max|b| > theta. Parts that fail that test are computed directly. Every proximity is exact; only the cost
depends on the data. Nothing of shape [T, T, H, d] is ever allocated: work is chunked over target rows.
"""

from __future__ import annotations

import torch

# Floats allowed in one chunk's temporary tensors (about 64 MB in float32).
CHUNK_BUDGET = 16 * 2**20
SMALL_COORDS = 16
GROUPS = 16


def l1_proximity(y: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """max(|y|_1 - |y - part|_1, 0) along the last axis, computed directly."""
    return (y.abs().sum(-1) - (y - part).abs().sum(-1)).clamp_min(0)


def scaled_part_proximity(
    y: torch.Tensor,
    coef: torch.Tensor,
    basis: torch.Tensor,
    scale: torch.Tensor | None = None,
    *,
    n_small: int = SMALL_COORDS,
    budget: int = CHUNK_BUDGET,
    signed_dot=None,
) -> torch.Tensor:
    """Proximities of parts z[n, p] = coef[n, p] * scale[n] * basis[p] to y[n].

    Args:
        y: [N, d] the updates.
        coef: [N, P] scalar coefficient of each part (0 for absent parts, e.g. future positions).
        basis: [P, d] the direction of each part.
        scale: [N, d] optional per-row coordinate scale (a frozen post-norm), or None.
        signed_dot: optional fast product: given rows [n, d] and the row slice, returns rows @ basis.T [n, P]
            (attention passes one that goes through W_O and the values, 1/H of the work).
    Returns:
        [N, P] exact proximities (>= 0).
    """
    N, d = y.shape
    P = basis.shape[0]
    out = torch.empty(N, P, dtype=y.dtype, device=y.device)
    m = min(n_small, d - 1)
    rows = max(1, min(N, budget // max(1, (m + 2) * P)))
    basis_t = basis.t().contiguous()  # [d, P]
    for start in range(0, N, rows):
        stop = min(N, start + rows)
        out[start:stop] = _chunk(
            y[start:stop], coef[start:stop], basis, basis_t,
            None if scale is None else scale[start:stop], m,
            None if signed_dot is None else (lambda rows, a=start, b=stop: signed_dot(rows, a, b)),
        )
    return out


def _chunk(y, coef, basis, basis_t, scale, m, signed_dot=None):
    n, d = y.shape
    sign = torch.where(y >= 0, 1.0, -1.0).to(y.dtype)
    signed_scale = sign if scale is None else sign * scale
    linear = coef * (signed_scale @ basis_t if signed_dot is None else signed_dot(signed_scale))  # [n, P]

    absy = y.abs()
    small, idx = absy.topk(m + 1, dim=1, largest=False, sorted=True)  # [n, m+1]
    small, idx = small[:, :m], idx[:, :m]
    s_small = signed_scale.gather(1, idx)  # [n, m]
    # s_k * z_k - |y_k| on the small coordinates, for every part, built in place: [n, m, P]
    z_small = basis_t.index_select(0, idx.flatten()).view(n, m, -1)
    z_small.mul_(s_small.unsqueeze(-1)).mul_(coef.unsqueeze(1)).sub_(small.unsqueeze(-1)).relu_()
    linear -= 2 * z_small.sum(1)
    del z_small

    # The other coordinates, in groups of similar typical |y| (LLM residuals have a few huge "outlier"
    # dimensions). A part can exceed |y_k| somewhere in group g only if |a| * max_g |b| > min_g |y_k| / |scale_k|;
    # parts passing that test for some group are recomputed directly.
    y_eff = absy.scatter(1, idx, float("inf"))  # small coordinates are done
    if scale is not None:
        y_eff = y_eff / scale.abs()
    order = y_eff.median(0).values.argsort()
    size = -(-d // GROUPS)
    pad = size * GROUPS - d  # pad to equal groups with a dummy coordinate (index d): |b| = 0, |y| = inf
    groups = torch.cat([order, order.new_full((pad,), d)]).view(GROUPS, size)
    basis_abs = torch.cat([basis_t.abs(), basis_t.new_zeros(1, basis_t.shape[1])])  # [d+1, P]
    b_group = basis_abs[groups].amax(1).t()  # [P, G]
    y_pad = torch.cat([y_eff, y_eff.new_full((n, 1), float("inf"))], 1)
    y_group = y_pad[:, groups].amin(2).clamp_min(torch.finfo(y.dtype).tiny)  # [n, G]
    risky = coef.abs() * (b_group.unsqueeze(0) / y_group.unsqueeze(1)).amax(-1) > 1
    rows, cols = risky.nonzero(as_tuple=True)
    if rows.numel():
        P = basis.shape[0]
        y_l1 = absy.sum(-1)
        flat = linear.view(-1)
        step = max(1, CHUNK_BUDGET // (4 * d))
        for s in range(0, rows.numel(), step):
            r, c = rows[s : s + step], cols[s : s + step]
            at = r * P + c
            part = basis.index_select(0, c) * coef.view(-1).index_select(0, at).unsqueeze(-1)
            if scale is not None:
                part.mul_(scale.index_select(0, r))
            flat.index_copy_(0, at, y_l1.index_select(0, r) - (y.index_select(0, r) - part).abs().sum(-1))
    return linear.clamp_min_(0)

"""Issue 10, point 8 (speed): the fast scoring paths stay exact.

The attention parts are scored in head-major layout ([heads, targets, sources], as attention and its product come)
and normalised from their sums; the per-head scores above the floor are looked up only where their head-summed edge
reaches it. Each shortcut is checked here against the direct computation."""

import pytest
import torch

from lmtt_widgets import explain
from lmtt_widgets.contributions import scores as scores_module
from lmtt_widgets.contributions.proximity import grouped_part_proximity, l1_proximity
from lmtt_widgets.contributions.scores import score_layers
from test_contributions import brute_force_attention
from tiny_models import loaded

LONG = "the cat sat on the mat, the dog ate the hat; then the cat"


def direct(y, coef, basis, scale):
    """[B, G, N, J] proximities of every part built explicitly."""
    J = coef.shape[-1]
    parts = coef[..., None] * basis[:, :, None, :J] * (1 if scale is None else scale[:, None, :, None])
    return l1_proximity(y[:, None, :, None], parts)


@pytest.mark.parametrize("budget", [10**6, 900, 50])  # one chunk; chunks of rows; a row per chunk
@pytest.mark.parametrize("with_scale", [False, True])
def test_grouped_parts_read_through_a_strided_view_equal_direct(budget, with_scale):
    """Parts in G groups of J whose coefficients are a block of larger matrices (a strided view, as a chunk of the
    attention is), directions with unused rows (J < J'), several blocks, causal zeros, negative coefficients,
    outlier and zero coordinates, and parts large enough to need the correction on every bucket and directly."""
    g = torch.Generator().manual_seed(5)
    B, G, T, N, J, d = 3, 4, 30, 11, 19, 40
    y = torch.randn(B, N, d, generator=g, dtype=torch.float64)
    y[..., 5] *= 40  # an outlier dimension
    y[1, 3, 7] = 0.0
    y[2, 4] = 0.0  # a row that is all zero: every part is farther from it than 0 is
    full = torch.rand(B, G, T, T, generator=g, dtype=torch.float64) ** 3 * 4
    full[:, 1] *= -1  # a group of negative coefficients (a head scaled by -1)
    coef = full[:, :, 8:8 + N, :J]  # a view: rows 8.., sources :J
    coef.masked_fill_(torch.arange(J)[None, :] > torch.arange(8, 8 + N)[:, None], 0.0)  # causal zeros
    basis = torch.randn(B, G, T, d, generator=g, dtype=torch.float64)
    basis[:, :, 2] *= 30  # a source with a very large direction: computed directly
    scale = torch.rand(B, N, d, generator=g, dtype=torch.float64) + 0.2 if with_scale else None
    if scale is not None:
        scale[0, 1, 3] = scale[1, 3, 7] = 0.0  # a zeroed norm weight, where y is not 0 and where it is
    assert not coef.is_contiguous()
    fast = grouped_part_proximity(y, coef, basis, scale, budget=budget)
    assert torch.allclose(fast, direct(y, coef, basis, scale), atol=1e-9)
    signed = torch.where(y >= 0, 1.0, -1.0).to(y.dtype) * (1 if scale is None else scale)
    linear = coef * torch.einsum("bnd,bgjd->bgnj", signed, basis[:, :, :J])
    corrected = (fast - linear.clamp_min(0)).abs() > 1e-9
    assert int(corrected.sum()) > 100 and bool(corrected[:, 1].any())  # the correction really ran, negatives too


def test_grouped_parts_with_a_given_product_and_reach():
    """The caller's fast product (attention's goes through W_O and the values) and reach are used as given."""
    g = torch.Generator().manual_seed(6)
    B, G, N, J, d = 2, 3, 9, 9, 16
    y = torch.randn(B, N, d, generator=g, dtype=torch.float64)
    coef = torch.rand(B, G, N, J, generator=g, dtype=torch.float64)
    basis = torch.randn(B, G, J, d, generator=g, dtype=torch.float64) * 2
    calls = []

    def dot(rows, b0, b1):
        calls.append((b0, b1))
        return torch.einsum("bnd,bgjd->bgnj", rows, basis[b0:b1])

    fast = grouped_part_proximity(y, coef, basis, signed_dot=dot, reach=basis.abs().amax(-1), budget=G * J * 4 * 5)
    assert torch.allclose(fast, direct(y, coef, basis, None), atol=1e-10)
    assert calls == [(0, 1), (0, 1), (1, 2), (1, 2)]  # 5 rows per chunk: two chunks per block


def dense_heads(ls, T, H):
    """[T, T*H] per-head scores from the layer's CSR (0 where not stored)."""
    out = torch.zeros(T, T * H)
    for i in range(T):
        cols, vals = ls.head_row(i)
        out[i, cols.long()] = vals
    return out


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
@pytest.mark.parametrize("edge_floor", [0.0, 0.02])
def test_head_and_edge_scores_equal_brute_force_over_many_chunks(family, edge_floor, monkeypatch):
    """Every layer scored a few targets at a time: head totals, every stored edge and every stored per-head score
    equal the brute-force importances, and exactly those at or above the floors are stored (the per-head floor is
    raised so that it splits edges: some heads of a stored edge are below it)."""
    monkeypatch.setattr(scores_module, "HEAD_FLOOR", 0.02)
    tr = explain(loaded(family), LONG).trace
    T, H = tr.layers[0].resid_pre.shape[0], tr.n_heads
    budget = 3 * T * H * 8  # 3 targets per chunk
    split = 0
    for layer in range(len(tr.layers)):
        (ls,) = score_layers([tr.layers[layer]], [tr.weights[layer]], H, tr.topology, budget=budget,
                             edge_floor=edge_floor)
        heads, extras = brute_force_attention(tr, layer)  # [T, T, H]
        heads = heads.float()
        assert torch.allclose(ls.head_total, heads.sum(1), atol=1e-5)
        assert torch.allclose(ls.resid_attn, extras[:, 0].float(), atol=1e-5)
        edges = heads.sum(2)
        kept = torch.zeros(T, T, dtype=torch.bool)
        for i in range(T):
            cols, vals = ls.edge_sparse_row(i)
            kept[i, cols.long()] = True
            assert torch.allclose(vals, edges[i, cols.long()], atol=1e-6)
        if edge_floor == 0:  # every causal edge
            assert torch.equal(kept, torch.ones(T, T).tril().bool())
        else:
            clear = (edges - edge_floor).abs() > 1e-6  # away from the floor, where rounding could decide
            assert torch.equal(kept[clear], (edges >= edge_floor)[clear])
        per_head = heads.reshape(T, T * H)
        got = dense_heads(ls, T, H)
        clear = (per_head - 0.02).abs() > 1e-6
        assert torch.equal((got > 0)[clear], (per_head >= 0.02)[clear])
        assert torch.allclose(got, torch.where(got > 0, per_head, 0), atol=1e-6)
        split += int(((heads < 0.02) & (heads > 0) & (edges >= 0.02).unsqueeze(-1)).sum())
    assert split > 0  # some stored edges really had heads below the per-head floor


def test_coefficients_in_any_layout_even_transposed():
    """A transposed block of coefficients (no flat view exists) gives the proximities of its contiguous copy."""
    g = torch.Generator().manual_seed(11)
    B, G, N, d = 2, 3, 9, 16
    y = torch.randn(B, N, d, generator=g, dtype=torch.float64)
    coef = (torch.rand(B, G, N, N, generator=g, dtype=torch.float64) * 3).transpose(-1, -2)
    basis = torch.randn(B, G, N, d, generator=g, dtype=torch.float64) * 2
    assert not coef.is_contiguous()
    got = grouped_part_proximity(y, coef, basis)
    assert torch.allclose(got, direct(y, coef, basis, None), atol=1e-9)

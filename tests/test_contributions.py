"""Issue 3: importances are exact, normalised, chunk-independent, and the routes follow them."""

import importlib
import math

import numpy as np
import pytest
import torch

from lmtt_widgets import explain, load_model
from lmtt_widgets.contributions.graph import (
    AFTER_ATTENTION, AFTER_MLP, EMBEDDING, MLP, full_graph, node_id, route,
)
from lmtt_widgets.contributions.proximity import l1_proximity, scaled_part_proximity
from lmtt_widgets.contributions.scores import post_norm_scale
from tiny_models import FAMILIES, ToyTokenizer, build, loaded

PROMPT = "the cat sat on the mat, the cat"


def test_hand_computed_proximities():
    y = torch.tensor([[1.0, 2.0]])
    parts = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    prox = scaled_part_proximity(y, torch.ones(1, 2), parts)
    assert prox.tolist() == [[1.0, 2.0]]  # |y|=3; |y-z1|=2 -> 1; |y-z2|=1 -> 2
    # a part pointing away from y has proximity 0, never negative
    assert scaled_part_proximity(y, torch.ones(1, 1), torch.tensor([[-5.0, 0.0]])).item() == 0.0


@pytest.mark.parametrize("buckets", [(), (1,), (2, 8, 32, 96), (3, 5)])
@pytest.mark.parametrize("with_scale", [False, True])
def test_fast_proximity_equals_direct(buckets, with_scale):
    g = torch.Generator().manual_seed(1)
    y = torch.randn(40, 48, generator=g, dtype=torch.float64)
    y[:, 3] *= 50  # an outlier dimension, as LLM residuals have
    y[5, 7] = 0.0
    coef = torch.rand(40, 200, generator=g, dtype=torch.float64) ** 3
    coef[:, ::7] = 0
    coef[:, 1::5] *= -1
    basis = torch.randn(200, 48, generator=g, dtype=torch.float64)
    scale = torch.rand(40, 48, generator=g, dtype=torch.float64) + 0.2 if with_scale else None
    if scale is not None:
        scale[5, 7] = scale[6, 2] = 0.0  # a zeroed norm weight, where y is 0 (0/0) and where it is not
    fast = scaled_part_proximity(y, coef, basis, scale, buckets=buckets, budget=3000)
    parts = coef[:, :, None] * basis[None] * (1 if scale is None else scale[:, None])
    assert torch.allclose(fast, l1_proximity(y[:, None], parts), atol=1e-10)


@pytest.mark.parametrize("int64_positions", [False, True])
def test_fast_proximity_equals_direct_with_many_active_parts(int64_positions, monkeypatch):
    """Enough parts needing a correction that their grouping takes the radix-sort path; both index widths."""
    from lmtt_widgets.contributions import proximity

    if int64_positions:
        monkeypatch.setattr(proximity, "INT32_POSITIONS", 0)
    g = torch.Generator().manual_seed(2)
    y = torch.randn(120, 64, generator=g, dtype=torch.float64)
    coef = torch.rand(120, 800, generator=g, dtype=torch.float64)
    basis = torch.randn(800, 64, generator=g, dtype=torch.float64)
    fast = scaled_part_proximity(y, coef, basis)
    parts = coef[:, :, None] * basis[None]
    assert torch.allclose(fast, l1_proximity(y[:, None], parts), atol=1e-10)
    linear = coef * (torch.where(y >= 0, 1.0, -1.0).to(y.dtype) @ basis.T)
    assert int((linear > 0).sum()) > proximity.RADIX_SORT_MIN  # the grouped path really ran on that many parts


@pytest.mark.parametrize("budget", [200_000, 3000, 300])  # several blocks per chunk, one, part of one
def test_blocks_are_scored_against_their_own_parts(budget):
    """A batch of blocks (layers) equals each block scored alone, whatever the chunking."""
    g = torch.Generator().manual_seed(4)
    B, N, P, d = 5, 12, 30, 24
    y = torch.randn(B, N, d, generator=g, dtype=torch.float64)
    coef = torch.rand(B, N, P, generator=g, dtype=torch.float64) ** 2
    basis = torch.randn(B, P, d, generator=g, dtype=torch.float64) * 2
    scale = torch.rand(B, N, d, generator=g, dtype=torch.float64) + 0.5
    for sc in (None, scale):
        batch = scaled_part_proximity(y, coef, basis, sc, budget=budget)
        for blk in range(B):
            alone = scaled_part_proximity(y[blk], coef[blk], basis[blk], None if sc is None else sc[blk])
            parts = coef[blk, :, :, None] * basis[blk][None] * (1 if sc is None else sc[blk][:, None])
            assert torch.allclose(alone, l1_proximity(y[blk][:, None], parts), atol=1e-10)
            assert torch.allclose(batch[blk], alone, atol=1e-10)


@pytest.mark.parametrize("family, unlike", [("gpt2", "b_o"), ("gemma2", "attn_post_norm")])
def test_a_group_of_unlike_layers_scores_as_each_alone(family, unlike):
    """Hybrid stacks: a layer without an output bias (or a post-norm) grouped with layers that have one."""
    import dataclasses

    from lmtt_widgets.contributions.scores import score_layers

    tr = explain(loaded(family), PROMPT).trace
    weights = [dataclasses.replace(tr.weights[0], **{unlike: None})] + tr.weights[1:]
    together = score_layers(tr.layers, weights, tr.n_heads, tr.topology)
    for rec, w, ls in zip(tr.layers, weights, together):
        alone = score_layers([rec], [w], tr.n_heads, tr.topology)[0]
        for name in ("edge", "head_total", "head_ptr", "head_col", "head_val", "resid_attn", "bias_attn", "mlp"):
            assert torch.allclose(getattr(ls, name).double(), getattr(alone, name).double(), atol=1e-6), name
    assert getattr(weights[0], unlike) is None and getattr(weights[1], unlike) is not None
    if unlike == "b_o":
        assert float(together[0].bias_attn.abs().sum()) == 0 and float(together[1].bias_attn.sum()) > 0


def test_group_order_is_stable_and_grouped():
    from lmtt_widgets.contributions.proximity import RADIX_SORT_MIN, _group_order

    g = torch.Generator().manual_seed(3)
    for n in (0, 1, 1000, RADIX_SORT_MIN + 5):
        level = torch.randint(0, 9, (n,), generator=g).to(torch.uint8)
        expected = sorted(range(n), key=lambda i: (int(level[i]), i))
        assert _group_order(level).tolist() == expected


def even_split_where_cancelling(prox_parts, present):
    """Proximities [T, parts] -> importances; a row with no proximity at all is split evenly over its present
    parts (the limit of LM-TT's 1e-5 floor). Returns (importances, cancelling [T])."""
    norm = prox_parts.sum(1, keepdim=True)
    cancelling = norm[:, 0] <= 0
    even = present.to(prox_parts.dtype) / present.sum(1, keepdim=True)
    return torch.where(cancelling[:, None], even, prox_parts / norm.clamp_min(1e-300)), cancelling


def head_directions(values, w_o, n_heads):
    """u[j, h] = v_j^{kv(h)} W_O,h: what head h writes per unit attention to source j, [T, H, d] (the reference's
    own product, independent of the engine's)."""
    n_kv, T, dh = values.shape
    v = values.repeat_interleave(n_heads // n_kv, dim=0)  # GQA: query head h reads kv head h // (H / n_kv)
    return torch.einsum("hjk,dhk->jhd", v, w_o.view(w_o.shape[0], n_heads, dh))


def brute_force_attention(tr, layer, check_identity=True):
    """Importances of the attention update from explicitly built parts, T x T x H x d (tiny models only)."""
    rec, w = tr.layers[layer], tr.weights[layer]
    u = head_directions(rec.values, w.w_o, tr.n_heads)  # [T, H, d]
    scale = post_norm_scale(w.attn_post_norm, rec.attn_post_rstd)
    parts = rec.attention.permute(1, 2, 0)[..., None] * u[None]  # [T_i, T_j, H, d]
    if scale is not None:
        parts = parts * scale[:, None, None]
    bias = torch.zeros_like(rec.resid_pre) if w.b_o is None else w.b_o.expand_as(rec.resid_pre)
    if scale is not None:
        bias = bias * scale
    y = rec.resid_post if tr.topology == "parallel" else rec.resid_mid
    extras = [rec.resid_pre, bias] + ([rec.mlp_update] if tr.topology == "parallel" else [])
    if check_identity:  # exactness of the decomposition itself: the parts add up to what the model computed
        total = parts.sum((1, 2)) + sum(extras)
        assert torch.allclose(total, y, atol=1e-6)
    T, H = parts.shape[0], parts.shape[2]
    prox_heads = l1_proximity(y[:, None, None], parts)  # [T, T, H]
    prox_extra = torch.stack([l1_proximity(y, e) for e in extras], 1)
    # the parts of an update: every non-zero one (future positions have A = 0; a model without bias has none)
    present = torch.cat([torch.stack([(e != 0).any(-1) for e in extras], 1),
                         (parts != 0).any(-1).reshape(T, -1)], 1)
    imp, _ = even_split_where_cancelling(torch.cat([prox_extra, prox_heads.reshape(T, -1)], 1), present)
    return imp[:, len(extras):].reshape(T, T, H), imp[:, : len(extras)]


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_matches_brute_force_and_sums_to_one(family):
    ex = explain(loaded(family), PROMPT)
    T = ex.n_tokens
    for layer in range(ex.n_layers):
        heads, extras = brute_force_attention(ex.trace, layer)
        ls = ex.scores.layers[layer]
        assert torch.allclose(ls.head_total, heads.sum(1).float(), atol=1e-5)
        for i in range(T):
            assert torch.allclose(ls.edge_row(i), heads[i, : i + 1].sum(-1).float(), atol=1e-5)
        assert torch.allclose(ls.resid_attn, extras[:, 0].float(), atol=1e-5)
        total = ls.resid_attn + ls.bias_attn + ls.head_total.sum(1)
        if ex.trace.topology == "parallel":
            total = total + ls.mlp
        else:
            assert torch.allclose(ls.resid_mlp + ls.mlp, torch.ones(T), atol=1e-5)
            assert (ls.mlp >= 0).all() and (ls.resid_mlp >= 0).all()
        assert torch.allclose(total, torch.ones(T), atol=1e-5)
        assert (ls.edge >= 0).all() and (ls.head_val >= 0).all()


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_cancelling_attention_update_is_split_evenly_and_flagged(family):
    """An attention update whose every part is farther from y than 0 is (here: y shrunk to a tiny vector) is split
    evenly over its parts (residual, each causal source x head, the bias if any, the MLP if parallel) and flagged;
    the other rows keep their proximities. The old rule gave the residual 100 %."""
    import dataclasses

    from lmtt_widgets.contributions.scores import score_layers

    tr = explain(loaded(family), PROMPT).trace
    layer, rows = 1, [2, 5]
    rec = tr.layers[layer]
    key = "resid_post" if tr.topology == "parallel" else "resid_mid"
    y = getattr(rec, key).clone()
    y[rows] = 1e-4 * torch.randn(len(rows), y.shape[1], dtype=y.dtype, generator=torch.Generator().manual_seed(1))
    tr.layers[layer] = rec = dataclasses.replace(rec, **{key: y})
    (ls,) = score_layers([rec], [tr.weights[layer]], tr.n_heads, tr.topology)
    heads, extras = brute_force_attention(tr, layer, check_identity=False)
    assert ls.cancel_attn.nonzero().flatten().tolist() == rows
    for i in rows:
        n = 1 + (i + 1) * tr.n_heads + (tr.weights[layer].b_o is not None) + (tr.topology == "parallel")
        assert torch.allclose(ls.resid_attn[i], torch.tensor(1 / n), atol=1e-7)
        assert torch.allclose(ls.head_total[i], torch.full((tr.n_heads,), (i + 1) / n), atol=1e-6)
        assert torch.allclose(ls.edge_row(i), torch.full((i + 1,), tr.n_heads / n), atol=1e-6)
    assert torch.allclose(ls.head_total, heads.sum(1).float(), atol=1e-5)
    assert torch.allclose(ls.resid_attn, extras[:, 0].float(), atol=1e-5)
    assert torch.allclose(ls.bias_attn, extras[:, 1].float(), atol=1e-5)
    total = ls.resid_attn + ls.bias_attn + ls.head_total.sum(1) + (ls.mlp if tr.topology == "parallel" else 0)
    assert torch.allclose(total, torch.ones(len(total)), atol=1e-5)


def test_cancelling_mlp_update_is_split_evenly_and_flagged_in_api_and_graph():
    """An MLP output that cancels the residual (mlp = -1.1 x mid, so out = -0.1 x mid): both parts are farther from
    out than 0 is; the update is split 50/50, flagged on the scores, the Explanation and the graph payload."""
    import dataclasses

    from lmtt_widgets.contributions.graph import cancelling_nodes
    from lmtt_widgets.contributions.scores import score_layers
    from lmtt_widgets.explain import Explanation
    from lmtt_widgets.widgets.codec import decode_array
    from lmtt_widgets.widgets.payload import graph_arrays

    ex = explain(loaded("llama"), PROMPT)
    tr, layer, tok = ex.trace, 1, 4
    rec = tr.layers[layer]
    mlp_update, post = rec.mlp_update.clone(), rec.resid_post.clone()
    mlp_update[tok] = -1.1 * rec.resid_mid[tok]
    post[tok] = rec.resid_mid[tok] + mlp_update[tok]
    tr.layers[layer] = dataclasses.replace(rec, mlp_update=mlp_update, mlp_out=mlp_update, resid_post=post)
    (ls,) = score_layers([tr.layers[layer]], [tr.weights[layer]], tr.n_heads, tr.topology)
    assert ls.cancel_mlp.nonzero().flatten().tolist() == [tok]
    assert float(ls.resid_mlp[tok]) == 0.5 and float(ls.mlp[tok]) == 0.5
    others = torch.arange(len(ls.mlp)) != tok
    assert torch.allclose(ls.mlp[others], ex.scores.layers[layer].mlp[others])
    ex.scores.layers[layer] = ls
    ex = Explanation(tr, ex.scores)
    assert ex.cancelling_updates() == [(layer, tok, "mlp")]
    nid = node_id(AFTER_MLP, layer, tok, ex.n_tokens)
    assert cancelling_nodes(ex.scores).tolist() == [nid]
    g = ex.route(tok, 0.04)
    assert nid in g.nodes.tolist()
    flags = decode_array(graph_arrays(g)["node_cancelling"])
    assert flags.tolist() == [int(n == nid) for n in g.nodes.tolist()]
    assert g.describe_node(nid)["cancelling"] and not g.describe_node(g.nodes[0])["cancelling"]


def test_neurons_of_a_cancelling_mlp_split_evenly_over_non_zero_activations():
    import dataclasses

    from lmtt_widgets.contributions.scores import neuron_importance

    tr = explain(loaded("llama"), PROMPT).trace
    rec, w = tr.layers[0], tr.weights[0]
    neurons = torch.zeros_like(rec.neurons[:1])
    neurons[0, 1::2] = 1.0
    tiny = 1e-9 * torch.randn(1, rec.mlp_update.shape[1], dtype=rec.mlp_update.dtype)  # every neuron overshoots
    one = dataclasses.replace(rec, neurons=neurons, mlp_update=tiny, mlp_post_rstd=None)
    imp = neuron_importance(one, w)[0]
    alive = neurons[0] != 0
    assert torch.allclose(imp[alive], torch.full((int(alive.sum()),), 1 / int(alive.sum())))
    assert (imp[~alive] == 0).all()


def test_chunk_size_does_not_change_results():
    lm = loaded("llama")
    a, b = explain(lm, PROMPT), explain(lm, PROMPT, budget=2000)
    for la, lb in zip(a.scores.layers, b.scores.layers):
        assert torch.allclose(la.edge, lb.edge, atol=1e-6)
        assert torch.allclose(la.head_total, lb.head_total, atol=1e-6)
        assert torch.equal(la.head_ptr, lb.head_ptr)


def test_zeroing_a_head_drives_its_importance_to_zero():
    lm = loaded("llama")
    layer, head, dh = 1, 2, 16
    o_proj = lm.model.model.layers[layer].self_attn.o_proj

    def ablate(module, args):
        x = args[0].clone()
        x[..., head * dh : (head + 1) * dh] = 0
        return (x,)

    before = explain(lm, PROMPT).scores.layers[layer].head_total[:, head]
    handle = o_proj.register_forward_pre_hook(ablate)
    try:
        after = explain(lm, PROMPT).scores.layers[layer].head_total[:, head]
    finally:
        handle.remove()
    assert before.max() > 0.01
    assert after.abs().max() < 1e-6


def test_attention_identity_is_checked_with_or_without_hooks():
    """A head signal that is not attention x values is refused: checked on every row when the output projection
    was hooked, on a sample of rows of every CHECK_EVERY-th layer otherwise; a hooked rescaling of one row is
    followed exactly."""
    import dataclasses

    from lmtt_widgets.contributions.scores import head_signal_scale
    from lmtt_widgets.errors import UnsupportedModelError

    tr = explain(loaded("llama"), PROMPT * 2).trace
    rec = tr.layers[0]  # unhooked layers are checked every CHECK_EVERY-th layer, from layer 0
    T = rec.head_signal.shape[0]
    assert not rec.signal_hooked and T > 16
    ones = torch.ones(T, tr.n_heads, dtype=rec.head_signal.dtype)
    assert torch.equal(head_signal_scale(rec, tr.n_heads), ones)
    broken = rec.head_signal.clone()
    broken[-1, 0] = torch.randn(broken.shape[-1], generator=torch.Generator().manual_seed(0), dtype=broken.dtype)  # last row: sampled
    with pytest.raises(UnsupportedModelError, match="adapter"):
        head_signal_scale(dataclasses.replace(rec, head_signal=broken), tr.n_heads)
    scaled = rec.head_signal.clone()
    scaled[5, 3] *= 0.25
    hooked = dataclasses.replace(rec, index=1, head_signal=scaled, signal_hooked=True)  # hooked: checked whatever the layer
    alpha = head_signal_scale(hooked, tr.n_heads)
    expected = ones.clone()
    expected[5, 3] = 0.25
    assert torch.allclose(alpha, expected, atol=1e-5)


def reference_route(ex, target, tau):
    """Plain depth-first search over the full graph, thresholding each update by hand ('edge' granularity)."""
    g = full_graph(ex.scores)
    T = ex.n_tokens
    incoming = {}
    for s, d, w, k in zip(g.src, g.dst, g.weight, g.kind):
        incoming.setdefault(int(d), []).append((int(s), float(w), int(k)))
    kept = set()
    stack, seen = [node_id(AFTER_MLP, ex.n_layers - 1, target, T)], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        edges = incoming.get(n, [])
        kind = (n // T - 1) % 3 + 1 if n >= T else EMBEDDING
        if kind == MLP:  # the MLP block reads its input whole
            for s, w, k in edges:
                kept.add((s, n))
                stack.append(s)
            continue
        for s, w, k in edges:
            if w > tau and not (kind == AFTER_MLP and k == 2 and s // T and (s // T - 1) % 3 + 1 == AFTER_ATTENTION):
                kept.add((s, n))
                stack.append(s)
    return kept


def test_route_equals_reference_search():
    ex = explain(loaded("llama"), PROMPT)
    for target in (ex.n_tokens - 1, 3):
        for tau in (0.02, 0.05):
            got = ex.route(target, tau, "edge")
            assert {(int(s), int(d)) for s, d in zip(got.src, got.dst)} == reference_route(ex, target, tau)


@pytest.mark.parametrize("granularity", ["head", "edge"])
def test_thresholding_renormalises_and_never_nans(granularity):
    ex = explain(loaded("gpt2"), PROMPT)
    g = ex.route(threshold=0.04, granularity=granularity)
    assert len(g.src) > 0 and np.isfinite(g.weight).all()
    # kept parts of each update (edges into one node, MLP-input edges aside) sum to 1 after renormalisation
    sums = {}
    for s, d, w in zip(g.src, g.dst, g.weight):
        if (int(d) // ex.n_tokens - 1) % 3 + 1 != MLP or int(d) < ex.n_tokens:
            sums[int(d)] = sums.get(int(d), 0) + float(w)
    assert all(math.isclose(v, 1.0, abs_tol=1e-5) or v < 1 for v in sums.values())
    everything_below = ex.route(threshold=0.999, granularity=granularity)
    assert np.isfinite(everything_below.weight).all()
    assert len(everything_below.src) == 0


def test_changing_target_or_threshold_does_not_recompute(monkeypatch):
    ex = explain(loaded("llama"), PROMPT)
    explain_module = importlib.import_module("lmtt_widgets.explain")  # the package exports a function of that name

    # the bindings explain() really calls: scoring the layers again, or tracing again
    monkeypatch.setattr(explain_module, "score_layers", lambda *a, **k: pytest.fail("recomputed"))
    monkeypatch.setattr(explain_module, "trace", lambda *a, **k: pytest.fail("re-traced"))
    for tau in (0.01, 0.1):
        ex.route(2, tau)
        ex.route(None, tau, "edge")


def test_bf16_agrees_with_fp32_twin():
    fp32 = build("llama", dtype=torch.float32)
    bf16 = build("llama", dtype=torch.float32).to(torch.bfloat16)
    a = explain(load_model(fp32, ToyTokenizer()), PROMPT)
    b = explain(load_model(bf16, ToyTokenizer()), PROMPT)
    for la, lb in zip(a.scores.layers, b.scores.layers):
        assert (la.edge - lb.edge).abs().max() < 1e-2
        assert (la.head_total - lb.head_total).abs().max() < 1e-2
        assert (la.mlp - lb.mlp).abs().max() < 1e-2


def test_heads_and_neurons_ranked():
    ex = explain(loaded("qwen2"), PROMPT)
    heads = ex.heads(1)
    assert [h.importance for h in heads] == sorted((h.importance for h in heads), reverse=True)
    assert torch.allclose(heads[0].attention.sum(), torch.tensor(1.0, dtype=heads[0].attention.dtype), atol=1e-6)
    neurons = ex.neurons(1, k=5)
    assert len(neurons) == 5 and neurons[0].importance >= neurons[-1].importance > 0
    rec = ex.trace.layers[1]
    assert all(math.isclose(n.activation, float(rec.neurons[-1, n.neuron]), rel_tol=1e-6) for n in neurons)


@pytest.mark.parametrize("family", FAMILIES)
def test_final_norm_projection_reproduces_logits(family):
    ex = explain(loaded(family), PROMPT)
    last = ex.n_tokens - 1
    from lmtt_widgets.projections.vocab import project

    own = project(ex.trace, ex.residual(2 * ex.n_layers, last), last, "own")
    assert torch.allclose(own, ex.trace.logits[last].to(own.dtype), atol=1e-8)
    assert ex.project(ex.residual(2 * ex.n_layers, last), last, norm="own", k=1).promoted[0].token_id == int(own.argmax())


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_direct_logit_attribution_adds_up(family):
    """In 'final' mode the projections of embeddings + every update add up to the logits minus bias terms."""
    from lmtt_widgets.projections.vocab import project, unembedding

    ex = explain(loaded(family), PROMPT)
    i = ex.n_tokens - 1
    pieces = [ex.trace.layers[0].resid_pre[i]]
    for rec in ex.trace.layers:
        pieces += [rec.attn_update[i], rec.mlp_update[i]]
    total = sum(project(ex.trace, p, i, "final") for p in pieces)
    W, b = unembedding(ex.trace)
    expected = ex.trace.final_norm.apply(ex.trace.final_resid[i], with_bias=False) @ W.t()
    assert torch.allclose(total, expected, atol=1e-8)
    if family != "gemma2":  # gemma2 softcaps its logits: a non-linearity after the unembedding
        norm_bias = 0 if ex.trace.final_norm.bias is None else ex.trace.final_norm.bias @ W.t()
        assert torch.allclose(total + norm_bias + (0 if b is None else b), ex.trace.logits[i], atol=1e-8)


def test_component_projections_and_lens():
    ex = explain(loaded("gpt2"), PROMPT)
    p = ex.head_tokens(1, 0, k=3)
    assert len(p.promoted) == 3 and p.promoted[0].score >= p.promoted[-1].score
    assert p.suppressed[0].score <= p.suppressed[-1].score
    n = ex.neurons(1, k=1)[0]
    up = ex.neuron_tokens(1, n.neuron, k=1).promoted[0]
    raw = ex.trace.weights[1].w_out[:, n.neuron]
    flipped = ex.project(-raw * abs(n.activation), k=1).promoted[0]
    assert (up.token_id == flipped.token_id) == (n.activation < 0)
    lens = ex.lens(3, k=4)
    assert [e.rank for e in lens] == [0, 1, 2, 3] and all(e.previous_rank is not None for e in lens)
    assert ex.lens(0, k=2)[0].previous_rank is None
    assert len(ex.logit_lens(k=1)) == 2 * ex.n_layers + 1


def test_exports():
    ex = explain(loaded("llama"), PROMPT)
    g = ex.route()
    nodes, edges = g.to_dataframes(ex.tokens)
    assert len(edges) == len(g.src) and {"source", "target", "weight", "kind", "head_0"} <= set(edges.columns)
    assert set(nodes["id"]) == set(g.nodes.tolist())
    nxg = g.to_networkx(ex.tokens)
    assert nxg.number_of_edges() == len(g.src)
    js = g.to_json(ex.tokens)
    assert len(js["edges"]) == len(g.src) and js["tokens"] == ex.tokens
    import json

    json.dumps(js)
    fg = ex.full_graph()
    T, L = ex.n_tokens, ex.n_layers
    assert (fg.kind == 1).sum() == L * T * (T + 1) // 2


def test_explain_many():
    from lmtt_widgets import explain_many

    out = explain_many(loaded("gpt2"), ["ab", "abc"])
    assert [e.n_tokens for e in out] == [2, 3]


@pytest.mark.smollm2
def test_smollm2_route_for_paris(smollm2_paris):
    ex = smollm2_paris
    assert ex.predictions(k=1)[0].text == " Paris"
    g = ex.route()
    assert len(g.src) > 10
    # the route reaches the embeddings of the prompt's tokens
    assert any(int(s) < ex.n_tokens for s in g.src)
    assert ex.top_heads(5)[0].importance > 0


@pytest.mark.smollm2
def test_smollm2_ioi_cancelling_mlp_is_split_evenly(smollm2):
    """Issue 10's case: with BOS, the MLP of layer 10 at token 7 (" the") cancels its residual (both parts are
    farther from the sum than 0 is). It was given 100 % residual; now an even split, flagged."""
    tok = smollm2.tokenizer
    ids = [tok.bos_token_id] + tok("When Mary and John went to the store, John gave a drink to").input_ids
    ex = explain(smollm2, ids)
    assert ex.tokens[7] == " the"
    assert (10, 7, "mlp") in ex.cancelling_updates()
    ls = ex.scores.layers[10]
    assert float(ls.resid_mlp[7]) == 0.5 and float(ls.mlp[7]) == 0.5
    rec = ex.trace.layers[10]
    out, mid, mlp = rec.resid_post[7], rec.resid_mid[7], rec.mlp_update[7]
    assert l1_proximity(out, mid) == 0 and l1_proximity(out, mlp) == 0  # a real cancelling update
    g = ex.route(7, 0.04)
    assert node_id(AFTER_MLP, 10, 7, ex.n_tokens) in g.cancelling.tolist()
    assert ex.external_edits() == []  # every block's identity holds within float32 rounding on the real model


# ---- issue 10, point 5: edits of the residual stream by outside code are explained, not hidden


@pytest.mark.parametrize("family", FAMILIES)
def test_no_external_edit_is_reported_on_an_unhooked_model(family):
    import warnings

    for dtype in (torch.float32, torch.float64):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ex = explain(loaded(family, dtype=dtype), PROMPT)
        assert ex.external_edits() == []
        assert all(not ls.edited_attn.any() and float(ls.external_attn.abs().max()) == 0 for ls in ex.scores.layers)


def test_steering_vector_on_a_block_output_becomes_an_external_edit_part():
    """A forward hook adding a steering vector to block 1's output left an unexplained gap with no warning; now the
    MLP update of that block has a third part, the edit, scored like the others and marked in the graph."""
    from lmtt_widgets.widgets.codec import decode_array
    from lmtt_widgets.widgets.payload import graph_arrays

    lm = loaded("llama")
    block = lm.model.model.layers[1]
    steer = 0.5 * torch.randn(block.mlp.down_proj.out_features, dtype=torch.float64,
                              generator=torch.Generator().manual_seed(2))
    handle = block.register_forward_hook(lambda m, a, out: (out[0] + steer,) + tuple(out[1:])
                                         if isinstance(out, tuple) else out + steer)
    try:
        with pytest.warns(UserWarning, match=r"layer 1 mlp update: L1 size up to [0-9.]+") as caught:
            ex = explain(lm, PROMPT)
    finally:
        handle.remove()
    assert "external edit" in str(caught[0].message)
    (edit,) = ex.external_edits()
    T = ex.n_tokens
    assert (edit.layer, edit.where, edit.tokens, edit.scored) == (1, "mlp", list(range(T)), True)
    assert edit.size == pytest.approx(float(steer.abs().sum()), rel=1e-9)
    rec, ls = ex.trace.layers[1], ex.scores.layers[1]
    parts = [rec.resid_mid, rec.mlp_update, steer.expand_as(rec.resid_mid)]
    assert torch.allclose(sum(parts), rec.resid_post, atol=1e-9)  # the three parts add up exactly
    prox = torch.stack([l1_proximity(rec.resid_post, p) for p in parts], 1)
    expected = prox / prox.sum(1, keepdim=True)
    got = torch.stack([ls.resid_mlp, ls.mlp, ls.external_mlp], 1)
    assert torch.allclose(got, expected.float(), atol=1e-6)
    assert float(ls.external_mlp.max()) > 0.01
    g = ex.route()
    out_node = node_id(AFTER_MLP, 1, T - 1, T)
    assert set(g.external.tolist()) == {node_id(AFTER_MLP, 1, t, T) for t in range(T)}
    flags = decode_array(graph_arrays(g)["node_external"])
    assert flags[g.nodes.tolist().index(out_node)] == 1 and flags.sum() == np.isin(g.nodes, g.external).sum()


def test_edits_of_attention_output_and_between_blocks_are_located():
    """A hook on the attention module's output lands in that block's attention update (scored); a pre-hook on a
    block's input is between blocks (reported, not scored). Ablation hooks on the output projection's input are no
    edit (the parts are rescaled instead)."""
    import warnings

    lm = loaded("llama")
    layers = lm.model.model.layers
    shift = torch.full((64,), 0.3, dtype=torch.float64)
    hooks = [
        layers[0].self_attn.register_forward_hook(lambda m, a, out: (out[0] + shift,) + tuple(out[1:])),
        layers[1].register_forward_pre_hook(lambda m, args, kw: ((args[0] + shift,) + args[1:], kw) if args
                                            else (args, {**kw, "hidden_states": kw["hidden_states"] + shift}),
                                            with_kwargs=True),
    ]
    try:
        with pytest.warns(UserWarning, match="before block 1") as caught:
            ex = explain(lm, PROMPT)
    finally:
        for h in hooks:
            h.remove()
    assert "routes do not follow them" in str(caught[0].message)
    edits = {(e.layer, e.where, e.scored) for e in ex.external_edits()}
    assert edits == {(0, "attention", True), (1, "before block", False)}
    ls = ex.scores.layers[0]
    total = ls.resid_attn + ls.bias_attn + ls.head_total.sum(1) + ls.external_attn
    assert torch.allclose(total, torch.ones(ex.n_tokens), atol=1e-5) and float(ls.external_attn.max()) > 0

    o_proj = layers[1].self_attn.o_proj
    handle = o_proj.register_forward_pre_hook(lambda m, args: (args[0] * 0.5,))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert explain(lm, PROMPT).external_edits() == []
    finally:
        handle.remove()

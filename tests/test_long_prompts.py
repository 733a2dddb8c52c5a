"""Issue 10, point 8: long prompts keep sparse edges (each the exact head-summed value, totals exact), the logits of
the positions asked for (others computed from the final residual), and the full graph is built with array operations."""


import numpy as np
import pytest
import torch

from lmtt_widgets import estimate_memory, explain
from lmtt_widgets.contributions import scores as scores_module
from lmtt_widgets.contributions.graph import (
    AFTER_ATTENTION, AFTER_MLP, ATTENTION, MLP, MLP_EDGE, RESIDUAL, full_graph, node_id,
)
from lmtt_widgets.contributions.scores import EDGE_FLOOR, packed_offset
from lmtt_widgets.errors import InputError
from lmtt_widgets.projections import logits as logits_module
from lmtt_widgets.projections.logits import LogitRows
from lmtt_widgets.tracing.tracer import trace
from tiny_models import FAMILIES, loaded

LONG = "the cat sat on the mat, the dog ate the hat; then the cat" # 58 tokens: many edges under the floor


def dense_and_sparse(family, monkeypatch):
    lm = loaded(family)
    dense = explain(lm, LONG)
    monkeypatch.setattr(scores_module, "DENSE_EDGE_LIMIT", 0)  # any length counts as long
    return dense, explain(lm, LONG)


def route_arrays(g):
    return g.src, g.dst, g.weight, g.kind, g.heads


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_sparse_edges_are_the_dense_values_above_the_floor_and_totals_stay_exact(family, monkeypatch):
    dense, sparse = dense_and_sparse(family, monkeypatch)
    assert dense.scores.edge_floor == 0 and sparse.scores.edge_floor == EDGE_FLOOR
    T = dense.n_tokens
    dropped = 0
    for d, s in zip(dense.scores.layers, sparse.scores.layers):
        full = d.edge  # every causal edge
        assert d.edge_col.numel() == T * (T + 1) // 2
        rows = torch.repeat_interleave(torch.arange(T), s.edge_ptr.diff())
        at = packed_offset(rows) + s.edge_col.long()
        assert torch.equal(s.edge_val, full[at])  # stored edges: bit for bit the head-summed values
        kept = torch.zeros_like(full, dtype=torch.bool)
        kept[at] = True
        assert bool((full[kept] >= EDGE_FLOOR).all()) and bool((full[~kept] < EDGE_FLOOR).all())
        dropped += int(((full > 0) & ~kept).sum())
        # totals: per head over every source (dropped ones included), and so per target
        assert torch.equal(s.head_total, d.head_total)
        row_sums = torch.stack([d.edge_row(i).double().sum() for i in range(T)])
        assert torch.allclose(s.head_total.double().sum(1), row_sums, atol=1e-6)
        assert torch.equal(s.head_val, d.head_val) and torch.equal(s.head_col, d.head_col)
    assert dropped > 0  # the floor really dropped edges here


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_routes_from_sparse_edges_equal_dense_and_low_thresholds_are_refused(family, monkeypatch):
    dense, sparse = dense_and_sparse(family, monkeypatch)
    for target in (None, 7):
        for tau in (EDGE_FLOOR, 0.01, 0.05):
            for granularity in ("edge", "head"):
                a, b = dense.route(target, tau, granularity), sparse.route(target, tau, granularity)
                for x, y in zip(route_arrays(a), route_arrays(b)):
                    assert np.array_equal(x, y)
    with pytest.raises(InputError, match="must be >= 0.001"):
        sparse.route(threshold=EDGE_FLOOR / 2, granularity="edge")
    assert len(dense.route(threshold=EDGE_FLOOR / 2, granularity="edge").src) > 0
    # the full graph of a long prompt: every edge from the floor on, the same values as the dense one
    fd, fs = dense.full_graph(), sparse.full_graph()
    keep = (fd.kind != ATTENTION) | (fd.weight >= EDGE_FLOOR)
    order_d = np.lexsort((fd.src[keep], fd.dst[keep], fd.kind[keep]))
    order_s = np.lexsort((fs.src, fs.dst, fs.kind))
    for x, y in zip(route_arrays(fd), route_arrays(fs)):
        assert np.array_equal(x[keep][order_d], y[order_s])


def reference_full_graph(scores):
    """Edge by edge, as the graph defines them: (src, dst, kind, layer) -> (weight, per-head)."""
    T, H = scores.n_tokens, scores.n_heads
    parallel = scores.topology == "parallel"
    out = {}
    for layer, ls in enumerate(scores.layers):
        def src(j):
            return j if layer == 0 else node_id(AFTER_MLP, layer - 1, j, T)

        for i in range(T):
            dst = node_id(AFTER_MLP if parallel else AFTER_ATTENTION, layer, i, T)
            mlp, top = node_id(MLP, layer, i, T), node_id(AFTER_MLP, layer, i, T)
            zero = np.zeros(H, np.float32)
            out[(src(i), dst, RESIDUAL, layer)] = (float(ls.resid_attn[i]), zero)
            cols, vals = ls.head_row(i)
            for j in range(i + 1):
                heads = np.zeros(H, np.float32)
                mine = (cols // H) == j
                heads[(cols[mine] % H).numpy()] = vals[mine].numpy()
                out[(src(j), dst, ATTENTION, layer)] = (float(ls.edge_row(i)[j]), heads)
            out[(src(i) if parallel else dst, mlp, MLP_EDGE, layer)] = (float(ls.mlp[i]), zero)
            out[(mlp, top, MLP_EDGE, layer)] = (float(ls.mlp[i]), zero)
            if not parallel:
                out[(dst, top, RESIDUAL, layer)] = (float(ls.resid_mlp[i]), zero)
    return out


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_full_graph_equals_edge_by_edge_reference(family):
    ex = explain(loaded(family), "the cat sat on the mat, the cat")
    g = full_graph(ex.scores)
    want = reference_full_graph(ex.scores)
    got = {(int(s), int(d), int(k), int(layer)): (float(w), h)
           for s, d, k, layer, w, h in zip(g.src, g.dst, g.kind, g.layer, g.weight, g.heads)}
    assert len(got) == len(g.src) == len(want)
    assert got.keys() == want.keys()
    for key, (w, h) in want.items():
        assert got[key][0] == pytest.approx(w, abs=1e-7) and np.array_equal(got[key][1], h), key


@pytest.mark.smollm2
def test_full_graph_holds_every_causal_attention_edge(smollm2):
    """Every (layer, source <= target) pair once (its cost is timed in benchmarks/bench_engine.py, not here)."""
    ex = explain(smollm2, list(range(1000, 1128)))
    g = ex.full_graph()
    assert (g.kind == ATTENTION).sum() == ex.n_layers * ex.n_tokens * (ex.n_tokens + 1) // 2


@pytest.mark.parametrize("family", FAMILIES)
def test_long_prompts_keep_the_last_logits_and_compute_the_others(family, monkeypatch):
    lm = loaded(family)
    want = trace(lm, LONG).logits
    monkeypatch.setattr(logits_module, "KEEP_ALL_BYTES", 0)  # any length counts as long
    head = lm.model.get_output_embeddings()
    rows_seen = []
    handle = head.register_forward_hook(lambda mod, args, out: rows_seen.append(out.shape[-2]))
    try:
        ex = explain(lm, LONG)
    finally:
        handle.remove()
    T = ex.n_tokens
    assert rows_seen == [1]  # the pass unembedded one position, not T
    got = ex.trace.logits
    assert isinstance(got, LogitRows) and got.kept == (T - 1,) and got.shape == want.shape
    assert torch.allclose(got[T - 1].double(), want[-1].double(), atol=1e-5)
    assert torch.allclose(got.double(), want.double(), atol=1e-5)  # every other row from the final residual
    assert torch.allclose(got[..., 3, :].double(), want[3].double(), atol=1e-5)
    assert torch.allclose(got[2:5].double(), want[2:5].double(), atol=1e-5)
    assert [p.token_id for p in ex.predictions(3, k=3)] == want[3].topk(3).indices.tolist()
    assert ex.metric(position=3).target == int(want[3].argmax())


def test_logit_attribution_reads_a_computed_row(monkeypatch):
    lm = loaded("llama")
    monkeypatch.setattr(logits_module, "KEEP_ALL_BYTES", 0)
    ex = explain(lm, LONG)
    table = ex.logit_attribution(position=4)  # checks itself against the row of ex.trace.logits
    want = trace(lm, LONG).logits[4]
    assert table.metric.position == 4 and table.metric.target == int(want.argmax())


def test_memory_estimate_grows_linearly_in_edges_and_keeps_one_logit_row(monkeypatch):
    lm = loaded("llama")
    monkeypatch.setattr(logits_module, "KEEP_ALL_BYTES", 2**20)  # the tiny vocabulary: 1 MB is ~1,000 tokens
    n_layers = len(lm.model.model.layers)
    short, long, longer = (estimate_memory(lm, T) for T in (200, 4000, 8000))
    key = next(k for k in long.parts if k.startswith("logits"))
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    itemsize = next(lm.model.parameters()).element_size()
    assert short.parts[key] == 200 * vocab * itemsize
    assert long.parts[key] == longer.parts[key] == vocab * itemsize
    assert scores_module.edge_floor(4000, n_layers) == EDGE_FLOOR
    edges = "scores (edges, heads)"
    assert longer.parts[edges] < 2.2 * long.parts[edges]  # dense edges would grow 4x


def test_flow_attribution_says_how_much_flowed_below_the_edge_floor(monkeypatch):
    dense, sparse = dense_and_sparse("llama", monkeypatch)
    a, b = dense.score("flow_attribution").extra, sparse.score("flow_attribution").extra
    assert a["edge_floor"] == 0 and a["below_edge_floor"] == 0
    assert b["edge_floor"] == EDGE_FLOOR and b["below_edge_floor"] > 0
    assert b["sum"] + b["lost_to_bias"] + b["below_edge_floor"] == pytest.approx(a["sum"] + a["lost_to_bias"], abs=1e-6)


@pytest.mark.parametrize("method", ["attribution_patching", "faithfulness"])
def test_causal_methods_read_only_the_metrics_logit_row(method, monkeypatch):
    """A long prompt keeps one logit row; a causal method's clean value must not unembed every position ([T, V]:
    0.4 GB at 2,048 tokens on SmolLM2) to read one."""
    lm = loaded("llama")
    monkeypatch.setattr(logits_module, "KEEP_ALL_BYTES", 0)
    ex = explain(lm, LONG)
    computed = []
    real = LogitRows._compute
    monkeypatch.setattr(LogitRows, "_compute", lambda self, p: computed.append(p) or real(self, p))
    getattr(ex, method)(ablation="zero", foil=5)
    assert computed == []  # the metric's row (the last, kept) was enough

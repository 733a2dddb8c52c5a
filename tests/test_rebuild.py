"""Long traces: attention computed in blocks of query rows, and per-layer tensors dropped after scoring and computed
again from that layer alone when read (tracing/capture.py eager_in_row_blocks, tracing/rebuild.py)."""

from __future__ import annotations

import pytest
import torch

from lmtt_widgets import explain
from lmtt_widgets.contributions.scores import neuron_importance
from lmtt_widgets.tracing import capture, rebuild
from lmtt_widgets.tracing.rebuild import StaleTraceError
from lmtt_widgets.tracing.tracer import DROPPABLE, trace
from tiny_models import FAMILIES, loaded

PROMPT = "The quick brown fox jumps over the lazy dog, again and again."  # 62 tokens of the toy tokenizer


@pytest.fixture
def slim_always(monkeypatch):
    monkeypatch.setattr(rebuild, "REBUILD_LIMIT", 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_slim_record_gives_back_exactly_what_a_full_trace_holds(family, monkeypatch):
    lm = loaded(family)
    full = trace(lm, PROMPT, keep_attention=False)
    monkeypatch.setattr(rebuild, "REBUILD_LIMIT", 0)
    slim = trace(lm, PROMPT, keep_attention=False)
    assert not any(rec.slim for rec in full.layers)
    for a, b in zip(full.layers, slim.layers):
        assert b.slim and not DROPPABLE & set(vars(b))  # dropped from the record itself
        for name in sorted(DROPPABLE):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None), name
            if x is not None:
                assert torch.equal(x, y), (family, a.index, name)


def test_rebuilt_layers_are_cached_a_few_at_a_time(slim_always):
    lm = loaded("llama")
    tr = trace(lm, PROMPT, keep_attention=False)
    rec = tr.layers[1]
    assert rec.neurons is rec.neurons  # the second read is the kept rebuild, not another run
    cache = rec.rebuilder.cache
    tr.layers[0].neurons
    assert cache.get(0) is not None and cache.get(1) is not None
    assert len(cache._layers) <= rebuild.KEEP_REBUILT


def test_a_model_changed_since_the_trace_is_refused(slim_always):
    lm = loaded("llama")
    tr = trace(lm, PROMPT, keep_attention=False)
    with torch.no_grad():
        lm.model.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    with pytest.raises(StaleTraceError, match="layer 1.*Explain the prompt again"):
        tr.layers[1].mlp_out


def test_a_layer_edited_by_a_users_hook_is_kept_whole(slim_always):
    lm = loaded("llama")
    block = lm.model.model.layers[0]
    handle = block.mlp.register_forward_hook(lambda m, a, out: out + 0.5)
    try:
        with pytest.warns(UserWarning):
            tr = trace(lm, PROMPT, keep_attention=False)
    finally:
        handle.remove()
    assert not tr.layers[0].slim and tr.layers[1].slim


def test_neuron_scores_of_a_slim_explanation_equal_the_full_ones(monkeypatch):
    lm = loaded("llama", dtype=torch.float32)
    full = explain(lm, PROMPT, keep_attention=False)
    monkeypatch.setattr(rebuild, "REBUILD_LIMIT", 0)
    slim = explain(lm, PROMPT, keep_attention=False)
    assert slim.trace.layers[1].slim
    a = neuron_importance(full.trace.layers[1], full.trace.weights[1])
    b = neuron_importance(slim.trace.layers[1], slim.trace.weights[1])
    assert torch.equal(a, b)
    assert torch.equal(full.scores.layers[1].head_total, slim.scores.layers[1].head_total)


@pytest.mark.parametrize("family", ["llama", "gemma2", "mistral", "gpt_neox"])
def test_attention_in_row_blocks_equals_the_full_call(family, monkeypatch):
    lm = loaded(family)
    full = trace(lm, PROMPT, keep_attention=True)
    monkeypatch.setattr(capture, "ATTENTION_ROW_BLOCK", 8)  # 62 tokens: 8 blocks of rows
    calls = []
    eager = capture.eager_in_row_blocks

    def counted(*args, **kwargs):
        calls.append(1)
        return eager(*args, **kwargs)

    monkeypatch.setattr(capture, "eager_in_row_blocks", counted)
    blocks = trace(lm, PROMPT, keep_attention=True)
    assert calls
    for a, b in zip(full.layers, blocks.layers):
        T = a.attention.shape[-1]
        # the modeling files' softmax runs in float32 whatever the model's dtype: equal to its rounding
        assert torch.allclose(a.attention, b.attention, rtol=0, atol=1e-6)
        assert torch.equal(b.attention.triu(1), torch.zeros_like(b.attention))  # zero above the diagonal
        assert torch.allclose(a.head_signal, b.head_signal, rtol=0, atol=1e-6)
        assert b.attention.shape[-2:] == (T, T)


def test_a_mask_that_lets_rows_see_later_keys_is_called_whole():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 4)
    mask = torch.zeros(1, 1, 10, 10)  # bidirectional: every row sees every key
    seen = []

    def fn(module, q_, k_, v_, m_, **kw):
        seen.append(q_.shape[-2])
        w = torch.softmax(q_ @ k_.transpose(-1, -2) + m_, -1)
        return (w @ v_).transpose(1, 2), w

    out, w = capture.eager_in_row_blocks(fn, None, q, k, v, mask, {}, block=4)
    assert seen[-1] == 10  # the one full call
    ref_out, ref_w = fn(None, q, k, v, mask)
    assert torch.equal(w, ref_w) and torch.equal(out, ref_out)
    causal = torch.full((10, 10), torch.finfo(torch.float32).min).triu(1)[None, None]
    seen.clear()
    out, w = capture.eager_in_row_blocks(fn, None, q, k, v, causal, {}, block=4)
    assert seen == [4, 4, 2]
    ref_out, ref_w = fn(None, q, k, v, causal)
    assert torch.allclose(w, ref_w, atol=1e-6) and torch.allclose(out, ref_out, atol=1e-6)


@pytest.fixture
def block_runs(monkeypatch):
    """The layers whose whole block ran again (LayerRebuilder), in order."""
    runs = []
    real = rebuild.LayerRebuilder._run

    def counted(self, slim):
        runs.append(self.index)
        return real(self, slim)

    monkeypatch.setattr(rebuild.LayerRebuilder, "_run", counted)
    return runs


def _close(a, b, what):
    scale = float(b.abs().max()) + 1
    assert torch.allclose(a, b, rtol=0, atol=1e-5 * scale), (what, float((a - b).abs().max()))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_few_rows_of_a_slim_layer_need_no_block_run(family, monkeypatch, block_runs):
    """What a target's logit attribution, lens and neuron view read (a few positions of every layer) comes from the
    slim record itself: rows equal to a full trace's, and no block runs again, except where the MLP is no module
    that runs alone (then the block runs, and the rows are still right)."""
    lm = loaded(family, dtype=torch.float32)
    full = trace(lm, PROMPT, keep_attention=False)
    monkeypatch.setattr(rebuild, "REBUILD_LIMIT", 0)
    slim = trace(lm, PROMPT, keep_attention=False)
    T = full.n_tokens
    at = [0, 7, T - 1]
    for a, b, w in zip(full.layers, slim.layers, slim.weights):
        assert b.slim
        got, want = rebuild.layer_rows(b, w, at), rebuild.layer_rows(a, w, at)
        for name in ("resid_pre", "resid_mid", "resid_post", "head_signal", "attn_out", "attn_update", "mlp_out",
                     "mlp_update"):
            _close(getattr(got, name), getattr(want, name), (family, a.index, name))
    assert block_runs == []
    mlp_is_a_module = "." in lm.adapter.mlp_out_proj
    for a, b, w in zip(full.layers, slim.layers, slim.weights):
        acts, rows = rebuild.neuron_rows(b, w, at)
        _close(acts, a.neurons[at], (family, a.index, "neurons"))
        _close(rows.mlp_update, a.mlp_update[at], (family, a.index, "mlp_update"))
        _close(rows.mlp_out, a.mlp_out[at], (family, a.index, "mlp_out"))
    assert (block_runs == []) == mlp_is_a_module


def test_a_slim_layer_whose_mlp_changed_since_the_trace_is_refused(slim_always, block_runs):
    """A model changed since the trace is refused (StaleTraceError) before anything runs, never read as the traced
    MLP."""
    lm = loaded("llama", dtype=torch.float32)
    tr = trace(lm, PROMPT, keep_attention=False)
    with torch.no_grad():
        lm.model.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    try:
        with pytest.raises(StaleTraceError, match="layer 1"):
            rebuild.neuron_rows(tr.layers[1], tr.weights[1], [3])
    finally:
        with torch.no_grad():
            lm.model.model.layers[1].mlp.down_proj.weight.div_(1.5)
    assert block_runs == []


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt_neox", "opt"])
def test_logit_attribution_and_neurons_of_a_slim_explanation_equal_the_full_ones(family, monkeypatch, block_runs):
    lm = loaded(family, dtype=torch.float32)
    full = explain(lm, PROMPT, keep_attention=False)
    monkeypatch.setattr(rebuild, "REBUILD_LIMIT", 0)
    slim = explain(lm, PROMPT, keep_attention=False)
    for position in (5, slim.n_tokens - 1):
        a, b = full.logit_attribution(position=position), slim.logit_attribution(position=position)
        assert [c.id for c in a.components] == [c.id for c in b.components]
        _close(b.scores, a.scores, (family, position, "dla"))
        assert abs(b.extra["error"]) < 1e-4 * (1 + abs(b.extra["model_value"]))
        _close(slim.residual(3, position), full.residual(3, position), "residual after attention")
        _close(slim.head_output(1, 0, position), full.head_output(1, 0, position), "head output")
        got, want = slim.neurons(1, position, k=5), full.neurons(1, position, k=5)
        assert [n.neuron for n in got] == [n.neuron for n in want]
        assert all(abs(g.importance - h.importance) < 1e-5 and abs(g.activation - h.activation) < 1e-5
                   for g, h in zip(got, want))
    assert block_runs == ([] if "." in lm.adapter.mlp_out_proj else [1])


def test_a_target_change_in_the_widget_runs_no_block_again(slim_always, block_runs):
    from lmtt_widgets import Explorer

    ex = explain(loaded("llama"), PROMPT, keep_attention=False)
    assert ex.trace.layers[0].slim
    w = Explorer(ex)
    for target in (5, 20, ex.n_tokens - 1):
        w.target = target
    assert not w.error
    assert block_runs == []


def test_rows_of_a_slim_layer_refuse_a_model_changed_since_the_trace(slim_always, block_runs):
    """The rows are computed from the live weights: a weight changed in place (or replaced) since the trace is
    refused, not read as the traced model's."""
    lm = loaded("llama", dtype=torch.float32)
    tr = trace(lm, PROMPT, keep_attention=False)
    o_proj = lm.model.model.layers[1].self_attn.o_proj
    with torch.no_grad():
        o_proj.weight.mul_(1.0 + 1e-6)  # even a tiny change
    try:
        with pytest.raises(StaleTraceError, match="layer 1.*o_proj.*Explain the prompt again"):
            rebuild.layer_rows(tr.layers[1], tr.weights[1], [3])
        rebuild.layer_rows(tr.layers[0], tr.weights[0], [3])  # the untouched layer still reads
    finally:
        with torch.no_grad():
            o_proj.weight.div_(1.0 + 1e-6)
    assert block_runs == []


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_bf16_slim_rows_follow_the_models_rounding(family, monkeypatch, block_runs):
    """A bf16 model rounds every step to bf16: the slim rows do the same and run the MLP for its update, so the
    logit attribution of a slim explanation stays within bf16's rounding of the full one's (before: up to 6% of
    the largest MLP update, from a float32 residual add)."""
    lm = loaded(family, dtype=torch.bfloat16)
    full = explain(lm, PROMPT, keep_attention=False)
    monkeypatch.setattr(rebuild, "REBUILD_LIMIT", 0)
    slim = explain(lm, PROMPT, keep_attention=False)
    at = [5, slim.n_tokens - 1]
    for a, b, w in zip(full.trace.layers, slim.trace.layers, slim.trace.weights):
        got = rebuild.layer_rows(b, w, at)
        want = a.mlp_update[at].float()
        # measured: equal to the bit here; a float32 residual add was off by 0.5-3.8% of the largest update
        assert float((got.mlp_update - want).abs().max()) <= 1e-3 * float(want.abs().max()), (family, a.index)
    for position in at:
        x, y = full.logit_attribution(position=position), slim.logit_attribution(position=position)
        scale = float(x.scores.abs().max())
        assert float((x.scores - y.scores).abs().max()) <= 5e-4 * scale, (family, position)  # before: 1.3e-3 to 6e-3
    assert block_runs == []


def test_a_slim_record_read_after_its_trace_is_gone_is_still_checked(slim_always):
    """A record kept without its trace (``rec = tr.layers[1]; del tr``) still refuses rows computed from weights
    changed since the pass: it checked through a weak reference to the trace, which then skipped the check and
    described the changed model silently. The record holds the trace's versions, not the trace: reference counting
    alone frees the trace (no cycle through its records)."""
    import gc
    import weakref

    lm = loaded("llama", dtype=torch.float32)
    tr = trace(lm, PROMPT, keep_attention=False)
    rec, w = tr.layers[1], tr.weights[1]
    gone = weakref.ref(tr)
    gc.disable()
    try:
        del tr
        assert gone() is None  # freed at once, not by the cycle collector
    finally:
        gc.enable()
    o_proj = lm.model.model.layers[1].self_attn.o_proj.weight
    with torch.no_grad():
        o_proj.mul_(1.5)
    try:
        with pytest.raises(StaleTraceError, match="layer 1"):
            rebuild.layer_rows(rec, w, [3])
    finally:
        with torch.no_grad():
            o_proj.div_(1.5)

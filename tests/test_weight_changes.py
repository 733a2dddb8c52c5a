"""A model whose weights change after explain(): what the explanation reads of it live is refused, never mixed in.

An Explanation reads some weights long after its pass (the unembedding, each layer's output projections) and runs
the model again for causal and input attribution methods. Each refuses with StaleTraceError once what it reads
changed since the pass (tracing/versions.py); what it does not read still works.
"""

from __future__ import annotations

import pytest
import torch

from lmtt_widgets import Explorer, StaleTraceError, explain
from tiny_models import loaded

PROMPT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture
def ex():
    return explain(loaded("llama", dtype=torch.float32), PROMPT)


def _layer(ex, i):
    return ex.trace.lm.model.model.layers[i]


def test_an_in_place_change_of_a_layers_weight_refuses_what_reads_it(ex):
    before = ex.logit_attribution()
    with torch.no_grad():
        _layer(ex, 1).self_attn.o_proj.weight.mul_(1 + 1e-6)  # even a tiny change
    with pytest.raises(StaleTraceError, match=r"layer 1: model\.layers\.1\.self_attn\.o_proj\.weight changed.*"
                                              r"Explain the prompt again"):
        ex.logit_attribution()
    with pytest.raises(StaleTraceError, match="layer 1"):
        ex.head_output(1, 0)
    # what the change does not reach still reads: layer 0's weights, the recorded scores and graph
    assert torch.isfinite(ex.head_output(0, 0)).all()
    assert len(ex.route().nodes) > 0
    # the answer computed before the change was the traced model's, and a new explanation reads the new model
    fresh = explain(ex.trace.lm, PROMPT).logit_attribution()
    assert not torch.equal(torch.as_tensor(fresh.scores), torch.as_tensor(before.scores))


def test_a_replaced_unembedding_or_new_storage_behind_the_final_norm_refuses_projections(ex):
    net = ex.trace.lm.model
    old = net.lm_head.weight
    net.lm_head.weight = torch.nn.Parameter(old.detach().clone())  # equal values, but another tensor
    with pytest.raises(StaleTraceError, match=r"the output head: lm_head\.weight changed"):
        ex.head_tokens(0, 0)
    with pytest.raises(StaleTraceError, match="the output head"):
        ex.lens(2, k=3)
    net.lm_head.weight = old  # the very tensor the trace saw: readable again
    assert ex.head_tokens(0, 0)
    norm = net.model.norm.weight
    norm.data = norm.data.clone()  # new storage behind the same Parameter
    with pytest.raises(StaleTraceError, match=r"the output head: model\.norm\.weight"):
        ex.project(torch.ones(net.config.hidden_size))
    assert ex.predictions(3)  # a short prompt keeps every logit row the model returned: nothing live is read


def test_causal_and_input_attribution_runs_refuse_a_changed_model(ex):
    with torch.no_grad():
        _layer(ex, 0).mlp.down_proj.weight[:, 3] += 1e-6  # one neuron's output, barely
    with pytest.raises(StaleTraceError, match=r"the model: model\.layers\.0\.mlp\.down_proj\.weight"):
        ex.patch(["L1.H0"], ablation="zero")
    with pytest.raises(StaleTraceError, match="the model"):
        ex.attribution_patching(ablation="zero")
    with pytest.raises(StaleTraceError, match="the model"):
        ex.score("saliency")


def test_the_widget_shows_the_refusal_and_stays_usable(ex):
    w = Explorer(ex)
    with torch.no_grad():
        _layer(ex, 1).self_attn.o_proj.weight.mul_(2)
    w.target = 3  # logit attribution at a new target reads layer 1's W_O
    assert "changed since the trace" in w.error and "Explain the prompt again" in w.error
    w.show(explain(ex.trace.lm, PROMPT))
    w.target = 4
    assert not w.error


def test_a_long_prompts_logit_rows_computed_on_demand_refuse_a_changed_unembedding(monkeypatch):
    from lmtt_widgets.projections import logits

    monkeypatch.setattr(logits, "KEEP_ALL_BYTES", 0)  # as past ~256 tokens on SmolLM2: only the last row is kept
    ex = explain(loaded("llama", dtype=torch.float32), PROMPT)
    with torch.no_grad():
        ex.trace.lm.model.lm_head.weight[5] += 1.0  # one token's row
    with pytest.raises(StaleTraceError, match="the output head: lm_head.weight"):
        ex.predictions(3)  # computed from the final residual through the unembedding
    assert ex.predictions()  # the kept row is the model's own output of the traced pass

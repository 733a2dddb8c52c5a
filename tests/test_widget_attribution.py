"""Issue 13 point 4 (widget side): the attribution pane's traits, tables and on-demand source x generated matrix."""

import json

import numpy as np
import pytest
import traitlets

from lmtt_widgets import Explorer, explain
from lmtt_widgets.methods.agreement import spearman, top_k_overlap
from lmtt_widgets.widgets.codec import decode_array, to_message
from tiny_models import loaded

PROMPT = "the cat sat"


@pytest.fixture(scope="module")
def ex():
    return explain(loaded("llama", seed=3), PROMPT, generate=3)


def scores_of(w):
    return decode_array(w.attribution["scores"]).astype(np.float64)


def matrix_of(w):
    return decode_array(w.attribution["matrix"]).astype(np.float64)


def test_flow_attribution_by_default_with_its_matrix(ex):
    w = Explorer(ex)
    a = w.attribution
    assert w.error == "" and a["method"] == "flow_attribution" and not a["signed"]
    assert a["position"] == ex.n_tokens - 1 and a["generated"] == ex.generated_positions
    want = ex.score("flow_attribution", position=ex.n_tokens - 1)
    np.testing.assert_allclose(scores_of(w), want.scores.numpy(), rtol=1e-5, atol=1e-7)
    assert w.tables["flow_attribution"].scores.tolist() == want.scores.tolist()  # the Python value of the pane
    # the flow matrix is free, so it comes without being asked; NaN where the prediction cannot read the source
    assert a["matrix_state"] == "ready" and a["matrix_rows"] == ex.generated_positions
    df = ex.attribution_matrix("flow_attribution")
    np.testing.assert_allclose(matrix_of(w), df.values, rtol=1e-5, atol=1e-7, equal_nan=True)
    assert w.matrices["flow_attribution"].shape == (3, ex.n_tokens)
    json.dumps(to_message(a)[0], allow_nan=False)  # strict JSON for the kernel (arrays go as buffers)


def test_target_change_follows_and_a_signed_method_is_on_demand(ex):
    w = Explorer(ex)
    w.attribution_method = "input_x_gradient"
    assert w.error == ""
    a = w.attribution
    assert a["signed"] and a["matrix_state"] == "on_demand" and a["matrix"] is None  # gradients: only when asked
    w.target = 5
    want = ex.score("input_x_gradient", position=5)
    got = scores_of(w)
    np.testing.assert_allclose(got[:6], want.scores.numpy(), rtol=1e-4, atol=1e-6)
    assert np.isnan(got[6:]).all()  # tokens after the target are not read by its prediction
    assert w.attribution["position"] == 5 and w.attribution["metric"]["position"] == 5
    assert w.tables["input_x_gradient"].metric.position == 5


def test_the_browser_asks_for_the_matrix_with_progress(ex):
    w = Explorer(ex)
    w.attribution_options = {"integrated_gradients": {"steps": 4, "baseline": 0}}
    w.attribution_method = "integrated_gradients"
    seen = []
    w.observe(lambda c: seen.append(dict(c["new"])), "status")
    with pytest.warns(RuntimeWarning):  # 4 steps: the completeness warning fires (and is in the table's extra)
        w._on_message(w, {"type": "attribution_matrix"}, [])
    assert w.error == "" and w.attribution["matrix_state"] == "ready"
    assert [s["message"] for s in seen if s["state"] == "running"][-1] == "integrated_gradients: generated token 3/3"
    with pytest.warns(RuntimeWarning):
        df = ex.attribution_matrix("integrated_gradients", steps=4, baseline=0)
    np.testing.assert_allclose(matrix_of(w), df.values, rtol=1e-4, atol=1e-6, equal_nan=True)
    assert w.matrices["integrated_gradients"] is w.attribution_matrix()  # computed once, kept
    assert w.attribution["extra"]["steps"] == 4 and "completeness_relative" in w.attribution["extra"]


def test_unknown_method_is_refused_and_a_bad_option_goes_to_the_error_bar(ex):
    w = Explorer(ex)
    with pytest.raises(traitlets.TraitError, match="not an input-attribution method"):
        w.attribution_method = "logit_attribution"
    assert w.attribution_method == "flow_attribution"
    # an option the method does not take is refused up front (a browser's is put back); a bad value of a real
    # option is the method's to refuse when it runs, in the error bar
    with pytest.raises(traitlets.TraitError, match="takes no option 'bogus'"):
        w.attribution_options = {"occlusion": {"bogus": 1}}
    assert w.attribution_options == {}
    w.attribution_options = {"occlusion": {"mode": "shuffle"}}
    w.attribution_method = "occlusion"
    assert "occlusion" in w.error and "mode must be 'replace'" in w.error and w.attribution == {}


def test_a_plain_prompt_has_no_matrix():
    w = Explorer(explain(loaded("gpt2", seed=1), PROMPT))
    assert w.attribution["matrix_state"] == "none" and w.attribution["generated"] == []
    w._on_message(w, {"type": "attribution_matrix"}, [])
    assert "generate=N" in w.error


@pytest.mark.smollm2
def test_smollm2_generated_continuation(smollm2):
    ex = explain(smollm2, "The capital of France is", generate=3)
    w = Explorer(ex)
    assert w.error == "" and w.attribution["matrix_state"] == "ready"
    assert decode_array(w.attribution["matrix"]).shape == (3, ex.n_tokens)
    # the first generated token's prediction: flow shares of the prompt tokens sum to 1 minus the bias loss
    row = w.matrices["flow_attribution"].iloc[0]
    extra = ex.score("flow_attribution", position=ex.n_prompt_tokens - 1).extra
    assert row.sum() == pytest.approx(1 - extra["lost_to_bias"], abs=1e-4)
    w.target = ex.n_prompt_tokens - 1  # what clicking the first generated token's column does
    assert w.meta["prediction"]["token"] == ex.tokens[ex.n_prompt_tokens]  # greedy: that token is the prediction
    w.attribution_options = {"integrated_gradients": {"steps": 8}}
    w.attribution_method = "integrated_gradients"
    t = w.tables["integrated_gradients"]
    assert w.error == "" and t.metric.position == ex.n_prompt_tokens - 1
    assert scores_of(w)[: t.metric.position + 1].sum() == pytest.approx(t.extra["sum"], rel=1e-4)


# ---- agreement beside the pane, and words (issue 13 points 5 and 3, widget side)
def agreement_rows(w):
    return {r["method"]: r for r in w.attribution["agreement"]["rows"]}


def test_agreement_cheap_methods_at_once_expensive_ones_on_a_click(ex):
    w = Explorer(ex)
    w.attribution_options = {"occlusion": {"baseline": "t"}, "integrated_gradients": {"baseline": 0, "steps": 4}}
    w.attribution_method = "input_x_gradient"
    w.target = 5
    rows = agreement_rows(w)
    assert "importance" not in rows and "importance" not in w.attribution["methods"]  # heads, not tokens
    assert set(rows) == {"flow_attribution", "attention_rollout", "saliency", "integrated_gradients", "occlusion"}
    shown = ex.score("input_x_gradient", position=5).scores
    # flow shares are unsigned: ranked by |score|; both signed (occlusion below): ranked signed
    flow = ex.score("flow_attribution", position=5).scores
    assert rows["flow_attribution"]["state"] == "ready" and rows["flow_attribution"]["compared"] == "|score|"
    assert rows["flow_attribution"]["spearman"] == pytest.approx(spearman(shown.abs(), flow.abs()), abs=1e-9)
    assert rows["flow_attribution"]["top_k"] == top_k_overlap(shown.abs(), flow.abs(), 3)
    assert rows["occlusion"]["state"] == "on_demand" and rows["occlusion"]["spearman"] is None  # expensive
    assert rows["integrated_gradients"]["state"] == "on_demand"
    assert w.attribution["agreement"]["k"] == 3 and w.attribution["agreement"]["n"] == 6
    assert "Spearman" in w.attribution["agreement"]["measures"]
    with pytest.warns(RuntimeWarning):  # 4 steps of integrated gradients: the completeness warning
        w._on_message(w, {"type": "attribution_agreement"}, [])
    rows = agreement_rows(w)
    assert w.error == "" and rows["occlusion"]["state"] == rows["integrated_gradients"]["state"] == "ready"
    occ = ex.score("occlusion", position=5, baseline="t").scores
    assert rows["occlusion"]["compared"] == "signed"
    assert rows["occlusion"]["spearman"] == pytest.approx(spearman(shown, occ), abs=1e-9)
    json.dumps(to_message(w.attribution)[0], allow_nan=False)


def test_agreement_reports_a_method_that_cannot_run(ex):
    w = Explorer(ex)  # the tiny tokenizer has no pad / unk / eos: occlusion needs a baseline token
    w._on_message(w, {"type": "attribution_agreement"}, [])
    row = agreement_rows(w)["occlusion"]
    assert row["state"] == "error" and "baseline" in row["error"] and w.error == ""
    assert agreement_rows(w)["saliency"]["state"] == "ready"  # the others are still shown


def test_words_merged_by_granularity_and_a_word_selects_its_tokens(ex):
    from lmtt_widgets.granularity import merge, word_spans

    w = Explorer(ex)
    words = w.attribution["words"]
    spans = word_spans(list(ex.tokens), ex.token_roles)
    assert words["spans"] == [[a, b - 1] for a, b in spans] and len(spans) == 4  # "the", " cat", " sat", generated
    tokens = scores_of(w)
    for how in ("sum", "mean", "max"):
        np.testing.assert_allclose(decode_array(words["merged"][how]), merge(tokens, spans, how).numpy(), rtol=1e-6)
    a, b = words["spans"][1]
    w.selection = {"kind": "node", "node_kind": "embedding", "layer": -1, "token": a, "last": b}
    assert w.selection == {"kind": "node", "node_kind": "embedding", "layer": -1, "token": a, "last": b}
    with pytest.raises(traitlets.TraitError, match="last"):
        w.selection = {"kind": "node", "node_kind": "embedding", "layer": -1, "token": a, "last": a - 1}


def test_meta_says_which_position_its_prediction_is_read_at(ex):
    # the browser sets `target` at once and gets `meta` later: the prediction carries its position, so a pane never
    # labels the previous target's prediction with the new target (the stale `meta['prediction']` seen in e2e)
    w = Explorer(ex)
    assert w.meta["position"] == w.target == ex.n_tokens - 1
    for g in ex.generated_positions:  # what clicking generated token g's column sends: target g - 1
        w.set_state({"target": g - 1})
        assert w.error == "" and w.meta["position"] == w.target == g - 1
        # greedy generation: the prediction at g - 1 is the generated token g
        assert w.meta["prediction"]["token"] == ex.tokens[g]
        assert w.lens["token"] == g - 1 and w.attribution["position"] == g - 1


def test_a_widget_without_the_attribution_pane_runs_no_gradients(ex, monkeypatch):
    """A FlowGraph changing target must not pay for the attribution pane's backward passes; showing the pane
    computes them."""
    from lmtt_widgets import FlowGraph
    from lmtt_widgets.widgets import scoring

    runs = []
    real = scoring.run_attribution
    monkeypatch.setattr(scoring, "run_attribution", lambda *a, **k: (runs.append(a[1]), real(*a, **k))[1])
    w = FlowGraph(ex)
    w.target = ex.n_tokens - 2
    assert runs == [] and w.attribution == {}
    w.panes = ["graph", "attribution"]
    assert runs and w.attribution["position"] == ex.n_tokens - 2

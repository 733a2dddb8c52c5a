"""Issue 13 point 4 (widget side): the attribution pane's traits, tables and on-demand source x generated matrix."""

import json

import numpy as np
import pytest
import traitlets

from lmtt_widgets import Explorer, explain
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
    w.attribution_options = {"occlusion": {"bogus": 1}}
    w.attribution_method = "occlusion"
    assert "occlusion" in w.error and "bogus" in w.error and w.attribution == {}


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

"""Issue 12 (widget side): foil / corrupted prompt / ablation traits, heatmap modes, the Check action, agreement."""

import importlib
import json

import pytest
import torch
import traitlets

from lmtt_widgets import Explorer, explain
from lmtt_widgets.methods import ScoreTable, get_method
from lmtt_widgets.methods import base as methods_base
from lmtt_widgets.methods.agreement import spearman, top_k_overlap
from lmtt_widgets.widgets.codec import decode_array, to_message
from tiny_models import loaded

PROMPT = "the cat sat on the mat"
CORRUPTED = "the dog sat on the rug"  # same number of tokens (the tiny tokenizer is one token a character)
IOI = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When Alice and Bob went to the store, Carl gave a drink to"


@pytest.fixture(scope="module")
def ex():
    return explain(loaded("llama", seed=3), PROMPT)


def messages(widget):
    sent = []
    widget.send = lambda content, buffers=None: sent.append((content, buffers or []))
    return sent


def heads_of(w, mode):
    return torch.from_numpy(decode_array(w.method_scores[mode]["heads"]).copy()).double()


def check(w, key):
    sent = messages(w)
    w._on_message(w, {"type": "details", "id": "c", "key": key}, [])
    (reply, _), = sent
    assert reply["id"] == "c" and reply["key"] == key
    json.dumps(reply, allow_nan=False)  # the kernel's packer refuses NaN / inf
    return reply


def test_traits_are_strict_json_and_non_finite_numbers_go_as_null(ex):
    from lmtt_widgets.widgets.payload import number, scalars

    w = Explorer(ex)
    w.ablation = "zero"
    w.head_mode = "attribution_patching"
    for name in ("metric", "method_scores", "agreement"):
        json.dumps(to_message(getattr(w, name))[0], allow_nan=False)
    assert number(float("nan")) is None and number(float("inf")) is None and number(2) == 2.0
    assert scalars({"a": float("nan"), "b": "x", "c": [1], "d": 3}) == {"a": None, "b": "x", "d": 3.0}


def test_foil_text_becomes_its_id_and_a_bad_foil_goes_to_the_error_bar(ex):
    w = Explorer(ex)
    (pred, _, _), (other, other_text, _) = w.metric["candidates"][:2]
    assert w.metric["target"] == pred and w.metric["foil"] is None and "log p" in w.metric["name"]
    w.set_state({"foil": other_text})  # the browser's free text box sends the text
    assert w.foil == other and w.error == ""
    assert w.metric["foil"] == other and "logit(" in w.metric["name"] and w.metric["units"] == "logits"
    w.set_state({"foil": "xyz"})
    assert "is 3 tokens" in w.error and w.foil == other  # refused, previous foil kept
    w.set_state({"foil": pred})
    assert "foil is the target itself" in w.error and w.foil == other
    w.set_state({"foil": None})
    assert w.error == "" and w.foil is None and w.metric["foil"] is None
    with pytest.raises(traitlets.TraitError, match="not one"):
        w.foil = "xyz"


def test_foil_recomputes_the_logit_attribution_only(ex, monkeypatch):
    w = Explorer(ex)
    explain_module = importlib.import_module("lmtt_widgets.explain")
    monkeypatch.setattr(explain_module, "score_layers", lambda *a, **k: pytest.fail("recomputed"))
    monkeypatch.setattr(explain_module, "trace", lambda *a, **k: pytest.fail("re-traced"))
    graph, lens = w.graph, w.lens
    L, H = ex.n_layers, ex.n_heads
    no_foil = heads_of(w, "logit_attribution")
    foil = w.metric["candidates"][1][0]
    w.foil = foil
    want = get_method("logit_attribution").fn(ex, foil=foil).head_matrix(L, H).double()
    got = heads_of(w, "logit_attribution")
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(got, no_foil, atol=1e-4)
    assert w.tables["logit_attribution"].metric.foil == foil  # the Python value behind the heatmap
    assert w.graph is graph and w.lens is lens  # the route and the lens were not recomputed
    # the metric follows the target position too
    w.target = 3
    assert w.metric["position"] == 3 and w.tables["logit_attribution"].metric.position == 3


def test_causal_mode_needs_a_corruption_and_computes_on_demand(ex, monkeypatch):
    info = get_method("attribution_patching")
    calls = []

    def counting(*a, **k):
        calls.append(k)
        return info.fn(*a, **k)

    monkeypatch.setitem(methods_base._METHODS, "attribution_patching", methods_base.MethodInfo(
        info.name, counting, info.quantity, info.family, info.cost))
    w = Explorer(ex)
    w.set_state({"head_mode": "attribution_patching"})
    assert "corrupted prompt" in w.error and w.head_mode == "importance" and calls == []
    assert not w.metric["causal_ready"]
    w.corrupted = CORRUPTED
    assert calls == [] and "attribution_patching" not in w.method_scores  # nothing until the mode is shown
    states = []
    w.observe(lambda ch: states.append(ch["new"]["state"]), names=["status"])
    w.set_state({"head_mode": "attribution_patching"})
    assert w.error == "" and len(calls) == 1 and calls[0]["corrupted"] == CORRUPTED
    assert states == ["running", "idle"]
    want = info.fn(ex, corrupted=CORRUPTED)  # the real method, not the counting one
    assert torch.allclose(heads_of(w, "attribution_patching"), want.head_matrix(ex.n_layers, ex.n_heads).double(), atol=1e-6)
    assert isinstance(w.tables["attribution_patching"], ScoreTable)
    # switching modes back and forth reuses it; a new foil recomputes it
    w.head_mode = "logit_attribution"
    w.head_mode = "attribution_patching"
    assert len(calls) == 1
    w.foil = w.metric["candidates"][1][0]
    assert len(calls) == 2 and calls[1]["foil"] == w.foil
    # mean ablation needs no prompt; clearing the corruption leaves the causal mode with a message
    w.ablation = "mean"
    assert calls[-1]["ablation"] == "mean" and calls[-1]["corrupted"] is None
    w.set_state({"ablation": "corrupted", "corrupted": ""})
    assert w.head_mode == "logit_attribution" and "needs a corrupted prompt" in w.error
    assert "shows logit attribution" in w.error


def test_a_corrupted_prompt_of_another_length_is_reported_when_pasted(ex):
    w = Explorer(ex)
    w.set_state({"corrupted": "the dog sat"})
    assert "has 11 tokens but the prompt has 22" in w.error
    assert w.corrupted == "the dog sat" and w.metric["causal_ready"] is False  # kept, to be fixed in place
    w.set_state({"head_mode": "attribution_patching"})
    assert "has 11 tokens" in w.error and w.head_mode == "importance"
    w.set_state({"corrupted": CORRUPTED})
    assert w.error == "" and w.metric["causal_ready"] is True


def test_agreement_is_spearman_of_the_head_magnitudes(ex):
    w = Explorer(ex)
    assert w.agreement == {}  # only beside causal scores
    w.ablation = "zero"
    w.head_mode = "attribution_patching"
    L, H = ex.n_layers, ex.n_heads
    pairs = {(a, b): rho for a, b, rho, _ in w.agreement["pairs"]}
    overlaps = {(a, b): n for a, b, _, n in w.agreement["pairs"]}
    assert set(pairs) == {("importance", "logit_attribution"), ("importance", "attribution_patching"),
                          ("logit_attribution", "attribution_patching")}
    imp = get_method("importance").fn(ex).head_matrix(L, H).abs()
    ap = get_method("attribution_patching").fn(ex, ablation="zero").head_matrix(L, H).abs()
    assert pairs[("importance", "attribution_patching")] == pytest.approx(spearman(imp, ap), abs=1e-9)
    assert overlaps[("importance", "attribution_patching")] == top_k_overlap(imp, ap, 10)
    assert w.agreement["n"] == L * H


def test_check_runs_exact_patching_beside_the_approximations(ex):
    w = Explorer(ex)
    reply = check(w, "check:L1.H2")
    assert not reply["ok"] and "corrupted prompt" in reply["error"]
    w.corrupted = CORRUPTED
    w.head_mode = "attribution_patching"
    foil = w.metric["candidates"][1][0]
    w.foil = foil
    reply = check(w, "check:L1.H2")
    assert reply["ok"], reply
    r = reply["result"]
    exact = get_method("activation_patching").fn(ex, components=["L1.H2"], corrupted=CORRUPTED, foil=foil)
    assert r["exact"] == pytest.approx(exact["L1.H2"], abs=1e-6)
    assert r["clean"] - r["patched"] == pytest.approx(r["exact"], abs=1e-5)
    assert r["approx"]["logit_attribution"] == pytest.approx(w.tables["logit_attribution"]["L1.H2"])
    assert r["approx"]["attribution_patching"] == pytest.approx(w.tables["attribution_patching"]["L1.H2"])
    assert r["units"] == "logits" and r["metric"]["foil"] == foil and CORRUPTED in r["setting"]
    # every result is a Python value too
    assert isinstance(w.last_check, ScoreTable) and w.last_check["L1.H2"] == pytest.approx(r["exact"])
    assert w.check(["L0.MLP", "L1.N3"])["L0.MLP"] == w.last_check["L0.MLP"]
    # MLPs, neurons and edges of the graph are checkable too; bad ids answer with a clear error
    for key in ("check:L0.MLP", "check:L1.N3", "check:L1 2>5", "check:L1.H0 2>5"):
        assert check(w, key)["ok"], key
    assert "layer 9 is out of range" in check(w, "check:L9.H0")["error"]
    assert "names no component" in check(w, "check:<img src=x>")["error"]
    assert "source at or before its target" in check(w, "check:L1 5>2")["error"]
    assert "cannot be patched" in check(w, "check:L1.BO")["error"]


def test_check_route_reports_the_fraction_of_the_metric_kept(ex):
    from lmtt_widgets.methods.causal import faithfulness

    w = Explorer(ex)
    w.ablation = "mean"
    r = check(w, "check:route:0.04")
    assert r["ok"], r
    want = faithfulness(ex, [0.04], ablation="mean")
    assert r["result"]["fraction_kept"] == pytest.approx(want.fraction[0], abs=1e-6)
    assert r["result"]["clean"] == pytest.approx(want.clean) and r["result"]["route"] is True
    assert w.last_check.fraction == pytest.approx(want.fraction)
    assert "malformed" in check(w, "check:route:abc")["error"]


@pytest.mark.smollm2
def test_smollm2_ioi_causal_heatmap_and_check(smollm2):
    """The issue's "done when", from Python: foil ' John', the ABC corruption, L23.H3 near the top of the causal
    heatmap, L29.H0 negative, and the exact effect of L23.H3 from a Check."""
    w = Explorer(explain(smollm2, IOI))
    w.set_state({"foil": " John"})
    w.set_state({"corrupted": IOI_CORRUPTED})
    w.set_state({"head_mode": "attribution_patching"})
    assert w.error == "" and w.metric["target_text"] == " Mary"
    ap = w.tables["attribution_patching"].of_kind("head")
    top = [c.id for c, _ in ap.top(5, by="value")]
    assert "L23.H3" in top[:3], top
    assert ap["L29.H0"] < -0.5
    heat = heads_of(w, "attribution_patching")
    assert heat[29, 0] < 0 and heat[23, 3] == pytest.approx(ap["L23.H3"], abs=1e-5)
    r = check(w, "check:L23.H3")["result"]
    assert r["exact"] > 2.0 and r["approx"]["attribution_patching"] > 2.0, r

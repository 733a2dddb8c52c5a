"""Hostile inputs, round 4 (issues 10 point 9 and 11 point 2): what benchmarks/hostile_round4.py found.

Every case here got a raw error from torch / numpy / transformers, a bare Python error, or silent garbage before
its fix; each now gets an error of ours that says what is wrong and how to fix it. The last part loads reports of
hostile prompts on the real SmolLM2 in headless Chromium (prompts the tiny-model tests of test_hostile.py cannot
make: SmolLM2's byte-level tokens of emoji, right-to-left text, controls and long runs).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from lmtt_widgets import Explorer, LmttError, estimate_memory, explain, load_model
from lmtt_widgets.report import read_report, write_report
from test_robustness import char_tokenizer
from tiny_models import build

nan, inf = float("nan"), float("inf")


@pytest.fixture(scope="module")
def lm():
    return load_model(build("llama", attn="sdpa"), char_tokenizer())


@pytest.fixture(scope="module")
def ex(lm):
    return explain(lm, "abcdef")


def refused(kind, fn, match):
    """fn() raises an LmttError that is also ``kind`` (ValueError or TypeError), with ``match`` in its message."""
    with pytest.raises(LmttError, match=match) as info:
        fn()
    assert isinstance(info.value, kind), (type(info.value).__mro__, str(info.value))


# ---- the Python API: each of these was a raw error (torch, numpy, pathlib, a bare TypeError) or silent garbage

API = [
    # explain's generation options: floats and strings were truncated or parsed, NaN failed in int(), 10**9 ran
    # a billion greedy steps before the context check
    ("generate=1.5", lambda lm, ex: explain(lm, "abc", generate=1.5), TypeError, "generate must be a non-negative"),
    ("generate='3'", lambda lm, ex: explain(lm, "abc", generate="3"), TypeError, "generate must be a non-negative"),
    ("generate=True", lambda lm, ex: explain(lm, "abc", generate=True), TypeError, "generate must be"),
    ("generate=nan", lambda lm, ex: explain(lm, "abc", generate=nan), TypeError, "generate must be"),
    ("generate=a billion", lambda lm, ex: explain(lm, "abc", generate=10**9), ValueError,
     r"generate=1000000000 after 3 prompt tokens exceeds the 64 tokens .* at most 61"),
    ("continuation=5", lambda lm, ex: explain(lm, "abc", continuation=5), TypeError, "continuation: .*got int"),
    ("continuation=[1.5]", lambda lm, ex: explain(lm, "abc", continuation=[1.5]), TypeError,
     r"continuation: .*1.5 \(float\)"),
    ("continuation=b'x'", lambda lm, ex: explain(lm, "abc", continuation=b"x"), TypeError, "continuation: .*bytes"),
    ("continuation=surrogate", lambda lm, ex: explain(lm, "abc", continuation="x\ud800"), ValueError,
     "The continuation holds a lone surrogate"),
    ("chat='yes'", lambda lm, ex: explain(lm, "abc", chat="yes"), TypeError, "chat must be True or False"),
    ("check_memory='no'", lambda lm, ex: explain(lm, "abc", check_memory="no"), TypeError,
     "check_memory must be True or False"),
    # Explanation methods
    ("heads(meta tensor)", lambda lm, ex: ex.heads(torch.tensor(0, device="meta")), TypeError,
     "layer must be an integer index"),
    ("project(int64 vec)", lambda lm, ex: ex.project(torch.ones(64, dtype=torch.int64)), TypeError,
     r"vec must be a tensor of width 64 \(shape \[64\], floating point"),
    ("project(bool vec)", lambda lm, ex: ex.project(torch.ones(64, dtype=torch.bool)), TypeError, "dtype torch.bool"),
    ("project(complex vec)", lambda lm, ex: ex.project(torch.ones(64, dtype=torch.complex64)), TypeError,
     "floating point"),
    ("project(3x64)", lambda lm, ex: ex.project(torch.zeros(3, 64)), TypeError, "for several vectors call once per row"),
    ("project(meta vec)", lambda lm, ex: ex.project(torch.zeros(64, device="meta")), TypeError, "on meta"),
    ("project(nan vec)", lambda lm, ex: ex.project(torch.full((64,), nan)), ValueError, "vec holds NaN or infinite"),
    ("project(inf vec)", lambda lm, ex: ex.project(torch.full((64,), inf)), ValueError, "vec holds NaN or infinite"),
    ("metric(target=tensor(3.7))", lambda lm, ex: ex.metric(target=torch.tensor(3.7)), ValueError,
     "target must be a token id .*dtype torch.float32"),
    ("metric(target=tensor([1, 2]))", lambda lm, ex: ex.metric(target=torch.tensor([1, 2])), ValueError,
     r"shape \[2\]"),
    ("metric(target=np.array([5]))", lambda lm, ex: ex.metric(target=np.array([5])), ValueError, r"shape \[1\]"),
    ("metric(foil=surrogate)", lambda lm, ex: ex.metric(foil="\ud800"), ValueError,
     r"The foil holds a lone surrogate '\\ud800' at character 0"),
    ("score(['importance'])", lambda lm, ex: ex.score(["importance"]), ValueError, "No method"),
    ("score('importance', bogus=1)", lambda lm, ex: ex.score("importance", bogus=1), TypeError,
     "The method 'importance' takes no option 'bogus'; its options are target, foil, position"),
    ("score(logit_attribution, neurons='yes')", lambda lm, ex: ex.score("logit_attribution", neurons="yes"),
     TypeError, "neurons must be True or False"),
    ("integrated_gradients steps=2.7", lambda lm, ex: ex.score("integrated_gradients", steps=2.7), TypeError,
     "steps must be a positive integer"),
    ("integrated_gradients steps='8'", lambda lm, ex: ex.score("integrated_gradients", steps="8"), TypeError,
     "steps must be a positive integer"),
    ("integrated_gradients steps=None", lambda lm, ex: ex.score("integrated_gradients", steps=None), TypeError,
     "steps must be a positive integer"),
    ("integrated_gradients steps=a trillion", lambda lm, ex: ex.score("integrated_gradients", steps=10**12), ValueError,
     "steps must be at most 1024"),
    ("integrated_gradients batch_size='x'", lambda lm, ex: ex.score("integrated_gradients", batch_size="x"),
     TypeError, "batch_size must be a positive integer"),
    ("integrated_gradients baseline=[1]", lambda lm, ex: ex.score("integrated_gradients", baseline=[1]), ValueError,
     "The baseline must be a token id or a token's text, not list"),
    ("occlusion batch_size=nan", lambda lm, ex: ex.score("occlusion", batch_size=nan), TypeError,
     "batch_size must be a positive integer"),
    ("occlusion batch_size=-5", lambda lm, ex: ex.score("occlusion", batch_size=-5), ValueError,
     "batch_size must be at least 1"),
    ("patch(123)", lambda lm, ex: ex.patch(123, ablation="mean"), TypeError, "components must be a list of ids"),
    ("patch(dict)", lambda lm, ex: ex.patch({"L0.H0": 1}, ablation="mean"), TypeError, "components must be a list"),
    ("patch(together='yes')", lambda lm, ex: ex.patch("L0.H0", ablation="mean", together="yes"), TypeError,
     "together must be True or False"),
    ("faithfulness(thresholds=[])", lambda lm, ex: ex.faithfulness(thresholds=[], ablation="mean"), ValueError,
     "thresholds is empty"),
    ("faithfulness(thresholds=[nan])", lambda lm, ex: ex.faithfulness(thresholds=[nan], ablation="mean"),
     ValueError, r"each threshold must lie in \(0, 1\); got nan"),
    ("faithfulness(thresholds='0.1')", lambda lm, ex: ex.faithfulness(thresholds="0.1", ablation="mean"),
     TypeError, "thresholds must be a list of numbers"),
    ("agreement(k=0)", lambda lm, ex: ex.agreement(ablation="mean", k=0), ValueError, "k must be at least 1"),
    ("agreement(k='3')", lambda lm, ex: ex.agreement(ablation="mean", k="3"), TypeError, "k must be a positive"),
    # load_model and estimate_memory
    ("load_model(dtype=torch.int8)", lambda lm, ex: load_model(lm.model, lm.tokenizer, dtype=torch.int8),
     Exception, "dtype torch.int8 is not a floating-point type"),
    ("load_model(nn.Linear)", lambda lm, ex: load_model(torch.nn.Linear(2, 2), lm.tokenizer), TypeError,
     "not a bare Linear module"),
    ("estimate_memory(-5)", lambda lm, ex: estimate_memory(lm, -5), ValueError,
     "the number of tokens must be at least 1"),
    ("estimate_memory(0)", lambda lm, ex: estimate_memory(lm, 0), ValueError, "the number of tokens must be at least 1"),
    ("estimate_memory(True)", lambda lm, ex: estimate_memory(lm, True), TypeError, "not True"),
    ("estimate_memory(budget=0)", lambda lm, ex: estimate_memory(lm, 5, budget=0), ValueError,
     "budget must be at least 1"),
    ("estimate_memory(keep_attention='x')", lambda lm, ex: estimate_memory(lm, 5, keep_attention="x"), TypeError,
     "keep_attention must be True, False or None"),
]


@pytest.mark.parametrize("name,call,kind,match", API, ids=[a[0] for a in API])
def test_bad_api_arguments_get_clear_errors(lm, ex, name, call, kind, match):
    refused(kind, lambda: call(lm, ex), match)


def test_good_arguments_beside_the_refused_ones_still_work(lm, ex):
    assert explain(lm, "abc", generate=np.int64(2), check_memory=np.bool_(True)).n_tokens == 5
    assert explain(lm, "abc", continuation=[100, 101]).tokens[-2:] == ["d", "e"]
    assert explain(lm, "abc", generate=None, continuation="de").tokens[-2:] == ["d", "e"]
    assert ex.metric(target=np.int64(100)).target == ex.metric(target=torch.tensor(100)).target == 100
    assert ex.project(torch.zeros(64, dtype=torch.float16)).promoted  # any float dtype is read
    assert len(ex.faithfulness(thresholds=0.1, ablation="mean").kept) == 1  # one number: a list of one
    assert ex.score("integrated_gradients", steps=np.int32(4), baseline=" ").extra["steps"] == 4
    assert estimate_memory(lm, np.int64(5)).n_tokens == 5


# ---- write_report and the CLI: a bad path is refused before any work, and never destroys a file


@pytest.mark.parametrize("path,kind,match", [
    (None, TypeError, "path must be a file name such as 'report.html', not NoneType"),
    (123, TypeError, "not int"),
    ("", ValueError, "not a usable file name"),
    ("a\x00b.html", ValueError, "not a usable file name"),
    ("{tmp}", ValueError, "is a directory; give a file name inside it"),
    ("{tmp}/no/dir/r.html", ValueError, r"the directory .*/no/dir does not exist \(create it first\)"),
])
def test_write_report_refuses_bad_paths(ex, tmp_path, path, kind, match):
    path = path.format(tmp=tmp_path) if isinstance(path, str) else path
    refused(kind, lambda: write_report(ex, path), match)


@pytest.mark.parametrize("bad,kind,match", [
    (None, TypeError, "write_report takes an Explanation .* not NoneType"),
    ("abc", TypeError, "not str"),
])
def test_write_report_refuses_what_is_not_an_explanation_and_keeps_the_file(tmp_path, bad, kind, match):
    path = tmp_path / "r.html"
    path.write_text("previous report")
    refused(kind, lambda: write_report(bad, path), match)
    assert path.read_text() == "previous report"


def test_write_report_refuses_a_non_integer_budget(ex, tmp_path):
    refused(TypeError, lambda: write_report(ex, tmp_path / "r.html", max_bytes="big"), "max_bytes must be")


def test_a_report_whose_route_has_no_mlp_node_is_written(ex, tmp_path):
    """The empty MLP projection table had keys of shape (0, ?) that numpy cannot reshape: every report of such
    a route failed."""
    page = write_report(ex, tmp_path / "r.html").read_text()
    vocab = read_report(page)["vocab"]
    assert vocab["mlp"]["keys"].shape == (0, 2)  # the case: no MLP node on the route
    assert vocab["head"]["keys"].shape[1] == 3 and len(vocab["head"]["keys"])


@pytest.mark.browser
def test_a_report_whose_route_has_no_mlp_node_renders(ex, tmp_path, chromium):
    from test_hostile import _check_clean, _render_in_chromium

    seen = _render_in_chromium(chromium, write_report(ex, tmp_path / "r.html"), ex.n_tokens)
    _check_clean(seen)
    assert seen["labels"] == list("abcdef")


def test_cli_says_what_is_wrong_with_the_report_path(lm, tmp_path, monkeypatch, capsys):
    import lmtt_widgets
    from lmtt_widgets.__main__ import main

    monkeypatch.setattr(lmtt_widgets, "load_model", lambda name, *a, **k: lm)
    assert main(["abc", "--html", str(tmp_path / "missing" / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and "does not exist" in err and "Traceback" not in err


# ---- the widget: what a hostile browser sends


def strict_sent(w):
    """What the widget sends, packed as the kernel does (strict JSON: NaN and infinity refused)."""
    from lmtt_widgets.widgets.codec import wire_safe

    sent = []

    def send(content, buffers=None):
        json.dumps(wire_safe(content), allow_nan=False)
        sent.append(content)

    w.send = send
    return sent


@pytest.mark.parametrize("msg_id", [nan, inf, -inf])
def test_a_details_reply_to_a_non_finite_id_still_goes_out(ex, msg_id):
    w = Explorer(ex)
    sent = strict_sent(w)
    w._on_message(w, {"type": "details", "key": "head:0:0:0", "id": msg_id}, [])
    (reply,) = sent
    assert reply["ok"] is True and reply["id"] == repr(msg_id) and not w.error


@pytest.mark.parametrize("state,match", [
    ({"target": True}, "target must be a token position"),
    ({"foil": "\ud800"}, "The foil holds a lone surrogate"),
    ({"attribution_options": {"integrated_gradients": {"evil": 1}}},
     "The method 'integrated_gradients' takes no option 'evil'"),
    ({"attribution_options": {"integrated_gradients": "steps=8"}}, "attribution options must be a dict"),
    ({"attribution_options": {"integrated_gradients": {"position": 0}}}, "may not set target, foil, position"),
    ({"attribution_options": {"integrated_gradients": {"steps": -1}}}, "steps must be at least 1"),
    ({"attribution_options": {"integrated_gradients": {"steps": 2.5}}}, "steps must be a positive integer"),
    ({"attribution_options": {"integrated_gradients": {"keep_first": "no"}}}, "keep_first must be True or False"),
    ({"attribution_options": {"occlusion": {"batch_size": -1}}}, "batch_size must be at least 1"),
    ({"attribution_options": {"<img src=x>": {}}}, "is not an input-attribution method"),
])
def test_hostile_widget_values_are_refused_and_put_back(ex, state, match):
    w = Explorer(ex)
    strict_sent(w)
    names = ("target", "foil", "attribution_options", "attribution_method")
    before = {k: getattr(w, k) for k in names}
    w.set_state(state)
    assert re.search(match, w.error) and "internal error" not in w.error, w.error
    assert {k: getattr(w, k) for k in names} == before


@pytest.mark.parametrize("call,kind,match", [
    (lambda w: w.check_route("abc"), TypeError, "threshold must be a number between 0 and 1"),
    (lambda w: w.show("text"), TypeError, "show takes an Explanation .* not str"),
])
def test_widget_python_methods_refuse_bad_arguments(ex, call, kind, match):
    w = Explorer(ex)
    w.ablation = "mean"
    refused(kind, lambda: call(w), match)
    assert w.explanation is ex


def test_widget_check_reads_one_id_as_one_component(ex):
    """A single id used to be read character by character ("'L' names no component")."""
    w = Explorer(ex)
    w.ablation = "mean"
    assert [c.id for c in w.check("L0.H1").components] == ["L0.H1"]


def test_good_attribution_options_are_kept(ex):
    w = Explorer(ex)
    strict_sent(w)
    w.set_state({"attribution_options": {"occlusion": {"batch_size": 2, "mode": "remove"}}})
    assert w.attribution_options == {"occlusion": {"batch_size": 2, "mode": "remove"}} and not w.error


# ---- reports of hostile prompts on SmolLM2, in headless Chromium

SMOLLM2_PROMPTS = [
    "Family: 👨‍👩‍👧‍👦 flag: 🏳️‍🌈 skin: 👍🏽",  # ZWJ sequences and modifiers split over byte-level tokens
    "مرحبا بالعالم hello עולם",  # right-to-left scripts mixed with left-to-right
    "a\u202eevil\u202c.exe \u2066x\u2069",  # bidi overrides and isolates inside tokens
    "tab\tnul\x00bell\x07 esc\x1b[31m",  # control characters, an ANSI escape
    "line\u2028sep\u2029para\r\nwin",  # JavaScript's line terminators inside a token
    "Z̷̢͎a̸l̵g̶o̴ t̷e̸x̵t̶",  # stacked combining marks
    "x" * 120,  # long runs: tokens of many characters
    "[click](javascript:window.__pwned=1) <img src=x onerror=window.__pwned=1>",
    "{{constructor.constructor('window.__pwned=1')()}} <%= 1 %> ${1}",
    "</textarea><script>window.__pwned=1</script><textarea>",
    "\ufeffBOM and \u200b zero\u200dwidth \u2060 joiners",
    "<![CDATA[</script>]]><!--",
]


@pytest.mark.smollm2
@pytest.mark.browser
@pytest.mark.parametrize("prompt", SMOLLM2_PROMPTS, ids=range(len(SMOLLM2_PROMPTS)))
def test_smollm2_reports_of_hostile_prompts_render_as_text(prompt, smollm2, tmp_path, chromium):
    from test_hostile import _check_clean, _render_in_chromium

    ex = explain(smollm2, prompt)
    path = write_report(ex, tmp_path / "r.html")
    seen = _render_in_chromium(chromium, path, ex.n_tokens)
    _check_clean(seen)
    assert len(seen["labels"]) == ex.n_tokens and all(seen["labels"]), "every token has a visible label"
    # the prompt box holds the prompt itself, as a textarea normalises it (line breaks to \n, NUL shown as U+FFFD)
    shown = prompt.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "\ufffd")
    assert seen["prompt"].replace("\x00", "\ufffd") == shown
    # a raw bidi control never reaches the page's visible text (shown as ⟨U+202E⟩ instead)
    assert not any(c in seen["text"] for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@pytest.mark.parametrize("prompt, kind, match", [
    (torch.tensor([97, 98], device="meta"), TypeError, "meta device"),
    ({"input_ids": "abc"}, TypeError, "input_ids must be token ids"),
    (np.array(["a", "b"]), TypeError, "numpy array of dtype <U1.*explain_many"),
    (np.array([97, None], dtype=object), TypeError, "numpy array of dtype object"),
    (np.array([97.0, 98.0], dtype=">f8"), TypeError, "dtype torch.float64. Floats are not rounded"),
])
def test_prompt_arrays_the_reader_cannot_use_are_refused(lm, prompt, kind, match):
    refused(kind, lambda: explain(lm, prompt), match)


@pytest.mark.parametrize("export", ["to_dataframes", "to_json", "to_networkx"])
@pytest.mark.parametrize("tokens, kind, match", [
    (["a"], ValueError, "1 texts for a route over 6 tokens"),
    (5, TypeError, "list of texts"),
    ("abcdef", TypeError, "list of texts"),
    ([1, 2, 3, 4, 5, 6], TypeError, "list of texts"),
])
def test_route_exports_check_the_token_texts(ex, export, tokens, kind, match):
    refused(kind, lambda: getattr(ex.route(), export)(tokens=tokens), match)
    assert getattr(ex.route(), export)(tokens=list(ex.tokens)) is not None  # the right ones still work


@pytest.mark.parametrize("ids", [np.arange(97, 103)[::-1], np.array([97, 98, 99], dtype=">i8"),
                                 np.array([97, 98, 99], dtype=np.uint16)])
def test_integer_arrays_of_any_strides_and_byte_order_are_read(lm, ids):
    assert explain(lm, ids).trace.input_ids.tolist() == [int(i) for i in ids]

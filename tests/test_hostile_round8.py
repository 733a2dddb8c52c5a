"""Hostile round 8: inputs that gave raw Python errors, NaN or silently wrong answers (issues 10 pt 9, 11 pt 2).

Each test failed on the code before its fix (checked against main's lmtt_widgets)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lmtt_widgets import explain
from lmtt_widgets.errors import InputError
from tiny_models import loaded

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def lm():
    return loaded("llama", dtype=torch.float32)


@pytest.fixture(scope="module")
def ex(lm):
    return explain(lm, PROMPT)


# ---- 1. the source x generated matrix takes only methods that score input tokens (the registry's flag)
@pytest.mark.parametrize("method", ["importance", "logit_attribution", "attribution_patching", "activation_patching"])
def test_attribution_matrix_refuses_methods_that_do_not_score_tokens(ex, method):
    # before: a matrix of NaN (or of head scores written into token columns), no error
    with pytest.raises(InputError, match=rf"{method!r} does not score input tokens.*use one of .*flow_attribution"):
        ex.attribution_matrix(method, positions=[2])


def test_the_registry_says_which_methods_score_tokens():
    from lmtt_widgets.methods import get_method, token_methods
    from lmtt_widgets.widgets.scoring import attribution_methods

    assert set(token_methods()) == {"flow_attribution", "attention_rollout", "saliency", "input_x_gradient",
                                    "integrated_gradients", "occlusion"}
    assert not get_method("importance").scores_tokens
    assert set(attribution_methods()) == set(token_methods())


# ---- 2. read_report: a path or the page; clear errors for what is not a readable report
@pytest.fixture(scope="module")
def report_path(ex, tmp_path_factory):
    from lmtt_widgets.report import write_report

    return write_report(ex, tmp_path_factory.mktemp("report") / "r.html")


def test_read_report_takes_a_path(report_path):
    from lmtt_widgets.report import read_report

    page = report_path.read_text(encoding="utf-8")
    assert read_report(report_path)["state"]["tokens"] == read_report(page)["state"]["tokens"]
    assert read_report(str(report_path))["state"]["prompt"] == PROMPT  # a file name as text too


def test_read_report_says_what_is_wrong(report_path, tmp_path):
    # before: AttributeError ('PosixPath' has no 'split'), IndexError, or zlib / json errors from deep inside
    from lmtt_widgets.report import read_report

    page = report_path.read_text(encoding="utf-8")
    cases = {
        tmp_path / "missing.html": "there is no report at",
        tmp_path: "is a directory",
    }
    (tmp_path / "other.html").write_text("<html><body>hello</body></html>", encoding="utf-8")
    cases[tmp_path / "other.html"] = "is not an lmtt-widgets report"
    (tmp_path / "binary.html").write_bytes(b"\xff\xfe\x00<")
    cases[tmp_path / "binary.html"] = "not UTF-8"
    for path, message in cases.items():
        with pytest.raises(InputError, match=message):
            read_report(path)
    start = page.index('id="lmtt-state">') + 20
    with pytest.raises(InputError, match="truncated"):
        read_report(page[: start + 100])  # the download stopped inside the state
    end = page.index("</script>", start)
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_report(page[: start + 50] + page[end:])  # the state cut short, the page closed
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_report(page[:start] + "x" * 40 + page[end:])
    with pytest.raises(TypeError, match="decode bytes first"):
        read_report(page.encode("utf-8"))


# ---- 3. write_report: a FIFO, a read-only file, a name too long are refused up front; the old file survives
def test_write_report_refuses_a_read_only_file_and_a_fifo(ex, tmp_path):
    import os
    import stat

    from lmtt_widgets.report import write_report

    kept = tmp_path / "kept.html"
    kept.write_text("the user's own page", encoding="utf-8")
    kept.chmod(stat.S_IRUSR | stat.S_IRGRP)
    with pytest.raises(InputError, match="read-only"):  # before: silently replaced
        write_report(ex, kept)
    assert kept.read_text(encoding="utf-8") == "the user's own page"
    fifo = tmp_path / "pipe.html"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):  # before: the FIFO replaced by a file
        write_report(ex, fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_write_report_names_too_long_for_the_filesystem(ex, tmp_path):
    from lmtt_widgets.report import read_report, write_report

    with pytest.raises(InputError, match="shorter"):  # before: a raw OSError (File name too long)
        write_report(ex, tmp_path / ("a" * 300 + ".html"))
    near = tmp_path / ("b" * 245 + ".html")  # fits, but its temporary name did not: OSError before
    assert read_report(write_report(ex, near))["state"]["prompt"] == PROMPT
    assert [p.name for p in tmp_path.iterdir()] == [near.name]  # no temporary file left behind


# ---- 4. and 7. Explorer(...) takes its traits as keywords, checked as the setters check them, with clear messages
def test_explorer_takes_its_traits_as_constructor_keywords(ex):
    from lmtt_widgets import Explorer

    w = Explorer(ex, target=2, foil=" ", ablation="mean", head_mode="attribution_patching", threshold=0.1)
    # before: AttributeError ('Explorer' object has no attribute 'explanation')
    assert (w.target, w.foil, w.head_mode, w.threshold) == (2, ord(" "), "attribution_patching", 0.1)
    assert w.metric["position"] == 2 and w.route.target == ex.route(2, 0.1).target


@pytest.mark.parametrize("kwargs, message", [
    (dict(target=99), r"target token 99 is out of range 0\.\.18"),
    (dict(target="x"), r"target must be a token position, an integer 0\.\.18"),
    (dict(foil=500), "foil id 500 is out of range: the vocabulary has 128 tokens"),
    (dict(threshold="x"), r"threshold must be a number between 0 and 1 such as 0\.04, not 'x'"),
    (dict(graph={}), "'graph': Python computes it"),
    (dict(trget=3), "takes no keyword 'trget'; its keywords are model, prompt, threshold, granularity, target"),
])
def test_explorer_refuses_bad_constructor_keywords_clearly(ex, kwargs, message):
    # before: AttributeError, traitlets' "expected a float, not the str 'x'", or a keyword silently dropped
    from lmtt_widgets import Explorer

    with pytest.raises(InputError, match=message):
        Explorer(ex, **kwargs)


def test_a_threshold_or_target_that_is_not_a_number_says_its_range(ex):
    from lmtt_widgets import Explorer

    w = Explorer(ex)
    with pytest.raises(InputError, match=r"threshold must be a number between 0 and 1"):
        w.threshold = "x"
    w.set_state({"threshold": "0.04"})  # from the browser: refused, reported with the range
    assert w.threshold == 0.04 and "between 0 and 1" in w.error
    w.set_state({"target": "3"})
    assert w.target == ex.n_tokens - 1 and "an integer 0..18" in w.error


# ---- 5. one function reads a component list: check(5) refused clearly, check(None) = every head and MLP
def test_explorer_check_reads_components_like_patch(ex):
    from lmtt_widgets import Explorer
    from lmtt_widgets.methods import Component

    w = Explorer(ex)
    w.ablation = "mean"
    for bad in (5, [5], b"L0.H1", {"L0.H1": 1}):
        with pytest.raises(TypeError, match="components? .*(id such as 'L0.H1')"):  # before: 'int' not iterable
            w.check(bad)
        with pytest.raises(TypeError, match="(id such as 'L0.H1')"):
            ex.patch(bad, ablation="mean")
    with pytest.raises(TypeError, match=r"for a table's top 5, pass \[c for c, _ in table.top\(5\)\]"):
        w.check(5)
    every = w.check(None)  # before: TypeError ('NoneType' object is not iterable)
    assert every.components == ex.patch(None, ablation="mean").components
    assert len(every) == ex.n_layers * (ex.n_heads + 1)
    assert w.check(Component.parse("L1.MLP")).components == [Component.parse("L1.MLP")]
    assert ex.score("activation_patching", components="L0.H1", ablation="mean").top(1)[0][0].id == "L0.H1"


# ---- 6. and 8. token ids: integers of any kind accepted alike, floats of any kind refused, the vocabulary checked
@pytest.mark.parametrize("token", [3.0, np.float64(3.0), np.float32(3.0), torch.tensor(3.0)])
def test_float_token_ids_are_refused_whatever_their_type(ex, token):
    # before: 3.0 was read as id 3, np.float64(3.0) refused: one number, two answers
    with pytest.raises(InputError, match="must be a(n integer)? token id.*(not the float|dtype torch.float32)"):
        ex.metric(target=token)
    with pytest.raises(InputError, match="(not the float|floats are not truncated)"):
        ex.logit_attribution(foil=token)
    for integer in (3, np.int64(3), np.uint16(3), torch.tensor(3)):  # integers of every kind: one id
        assert ex.metric(target=integer).target == 3 and ex.metric(foil=integer).foil == 3


def test_a_named_baseline_outside_the_vocabulary_is_refused(ex, monkeypatch):
    # the tokenizer's pad token is an added token past the model's vocabulary: before, a raw IndexError
    monkeypatch.setattr(ex.trace.lm.tokenizer, "pad_token_id", 1000, raising=False)
    for method in ("occlusion", "integrated_gradients"):
        with pytest.raises(InputError, match=r"baseline \(pad token\) id 1000 is out of range: the vocabulary has 128"):
            ex.score(method)


# ---- 9. occlusion by removal at the first token: refused, never NaN
def test_occlusion_by_removal_of_the_only_token_is_refused(lm, ex):
    with pytest.raises(InputError, match="mode='remove' at token 0.*Use mode='replace'"):
        explain(lm, "T").score("occlusion", mode="remove")  # before: a NaN score
    with pytest.raises(InputError, match="mode='remove' at token 0"):
        ex.score("occlusion", mode="remove", position=0)
    later = ex.score("occlusion", mode="remove", position=1)
    assert torch.isfinite(later.scores).all() and len(later) == 2


# ---- 10. the CLI checks --threshold and --html before it loads (and runs) the model
@pytest.mark.parametrize("argv, message", [
    (["--threshold", "5"], r"threshold must lie in \(0, 1\)"),
    (["--threshold", "nan"], r"threshold must lie in \(0, 1\)"),
    (["--threshold", "0.0001"], "threshold must be >="),
    (["--html", "{tmp}/missing/r.html"], "does not exist"),
    (["--html", "{tmp}"], "is a directory"),
    (["--html", "{tmp}/" + "a" * 300 + ".html"], "shorter"),
])
def test_cli_checks_its_options_before_loading_the_model(argv, message, tmp_path, monkeypatch, capsys):
    import lmtt_widgets
    from lmtt_widgets.__main__ import main

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(lmtt_widgets, "load_model", never)
    assert main(["abc", *[a.format(tmp=tmp_path) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err) and "Traceback" not in err


# ---- 11. details keys are parsed strictly: one result answers one key
def _details_reply(w, key):
    sent = []
    w.send = lambda content, buffers=None: sent.append(content)
    w._on_message(w, {"type": "details", "id": 1, "key": key}, [])
    (reply,) = sent
    return reply


@pytest.mark.parametrize("key", ["lens:0_1:3", "lens: 1:3", "lens:+1:3", "lens:\u0661:3", "head:0:1:\uff13",
                                 "check:L\u0661.H1", "check:route:0.0_4", "check:route: 0.04", "check:route:nan"])
def test_details_keys_with_loose_numbers_are_refused(ex, key):
    # before: int() / float() read "0_1" as 1, " 1" as 1, "+1" as 1, Arabic-Indic "١" as 1, "nan" as NaN
    from lmtt_widgets import Explorer

    w = Explorer(ex)
    w.ablation = "mean"
    reply = _details_reply(w, key)
    assert reply["ok"] is False and reply["key"] == key
    assert re.search(r"malformed|names no component", reply["error"]), reply["error"]
    assert _details_reply(w, "lens:1:3")["ok"] is True  # the plain key still answers


# ---- 12. a norm's epsilon or the rotary frequencies changed after explain(): refused like a changed weight
@pytest.mark.parametrize("change, where", [
    (lambda net: setattr(net.model.norm, "variance_epsilon", 10.0), "model.norm.variance_epsilon"),
    (lambda net: net.model.rotary_emb.inv_freq.mul_(1.5), "model.rotary_emb.inv_freq"),
    (lambda net: setattr(net.model.layers[1].input_layernorm, "variance_epsilon", 10.0),
     "model.layers.1.input_layernorm.variance_epsilon"),
])
def test_a_changed_norm_epsilon_or_rotary_frequency_is_refused(change, where):
    from lmtt_widgets import StaleTraceError

    lm = loaded("llama", dtype=torch.float32)
    ex = explain(lm, PROMPT)
    change(lm.model)
    # before: logit attribution silently read the new final epsilon (scores moved by 0.39), patching and
    # gradients reran a model with other rotary frequencies within the rerun tolerance
    with pytest.raises(StaleTraceError, match=rf"{re.escape(where)} changed since the trace"):
        ex.patch(["L0.H1"], ablation="mean")
    with pytest.raises(StaleTraceError, match=re.escape(where)):
        ex.score("saliency")
    if "norm.variance" in where and "layers" not in where:
        with pytest.raises(StaleTraceError, match="the output head"):
            ex.logit_attribution()


# ---- hostile browser: the widget's own code and identity are not the page's to write
def test_the_browser_cannot_replace_the_widgets_code(ex):
    from lmtt_widgets import Explorer

    w = Explorer(ex)
    w.send_state = lambda *a, **k: None  # (no comm here)
    code, css, name = w._esm, w._css, w._model_name
    w.set_state({"_esm": "alert(1)", "_css": "body{display:none}", "_model_name": "Other", "target": 3})
    # before: every later view (and a saved notebook) loaded alert(1) as the widget's code
    assert (w._esm, w._css, w._model_name) == (code, css, name)
    assert w.target == 3 and "may not change _esm" in w.error


# ---- hostile API arguments found in this round
def test_more_bad_report_and_matrix_arguments_get_clear_errors(ex, tmp_path):
    from lmtt_widgets.report import read_report, write_report

    loop = tmp_path / "loop.html"
    loop.symlink_to(loop)
    with pytest.raises(InputError, match="cannot write the report at .*loop"):  # before: RuntimeError from pathlib
        write_report(ex, loop)
    with pytest.raises(InputError, match="empty text"):  # before: IndexError
        read_report("")
    with pytest.raises(TypeError, match=r"progress must be a function progress\(done, total\)"):
        ex.attribution_matrix("saliency", positions=[1], progress=5)  # before: 'int' not callable, after a row ran


def test_a_bad_budget_says_what_the_budget_is(lm):
    from lmtt_widgets import estimate_memory

    for call in (lambda: explain(lm, "ab", budget=True), lambda: estimate_memory(lm, "ab", budget=0)):
        with pytest.raises(InputError, match="budget must be .*floats in one chunk's temporary tensors"):
            call()  # before: "(how many to list)", a phrase of the k= checks


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_model_name_is_not_the_current_directory(name):
    from lmtt_widgets import load_model
    from lmtt_widgets.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="model name is empty"):  # before: ". exists but holds no config"
        load_model(name)


def test_run_after_show_uses_the_model_shown(ex):
    from lmtt_widgets import Explorer

    other = explain(loaded("gpt2", dtype=torch.float32), "abc")
    w = Explorer(ex)
    w.show(other)
    w.run("abcd")  # before: the next prompt was explained with the llama the widget was built with
    assert w.explanation.trace.lm is other.trace.lm and w.meta["n_heads"] == other.n_heads


def test_explain_many_says_which_prompt_failed(lm):
    from lmtt_widgets import explain_many
    from lmtt_widgets.errors import PromptError

    with pytest.raises(PromptError, match=r"prompt 2 of 3: .*lone surrogate"):  # before: no word of which one
        explain_many(lm, ["ab", "cd", "e\ud800"])


def test_route_tables_and_summary_refuse_what_would_be_silently_wrong(ex):
    from lmtt_widgets.errors import SelectionError
    from lmtt_widgets.granularity import word_table
    from lmtt_widgets.summary import text_summary

    g, dla = ex.route(), ex.logit_attribution()
    for nid in (-1, 10**9, 1.5):  # before: a made-up node (layer -1 'mlp', layer 17543859, id 1.5 read as 1)
        with pytest.raises(InputError, match="node id"):
            g.describe_node(nid)
    assert g.describe_node(int(g.nodes[-1]))["token"] == ex.n_tokens - 1
    with pytest.raises(InputError, match="kind must be one of"):  # before: an empty table
        dla.of_kind("heads")
    with pytest.raises(SelectionError, match="outside 1 layers x 1 heads"):  # before: IndexError
        dla.head_matrix(1, 1)
    with pytest.raises(InputError, match="not a token. Use a method that scores tokens"):  # before: bare ValueError
        word_table(ex, dla)
    with pytest.raises(TypeError, match="takes a ScoreTable"):  # before: AttributeError
        word_table(ex, 5)
    with pytest.raises(TypeError, match="check must be True or False"):  # before: 'no' ran the check
        text_summary(ex, check="no")
    with pytest.raises(TypeError, match="takes an Explanation"):  # before: AttributeError
        text_summary(5)


def test_the_widgets_foil_reads_numbers_as_the_api_does(ex):
    from lmtt_widgets import Explorer

    w = Explorer(ex)
    for integer in (np.int64(5), torch.tensor(5)):  # before: tensor(5) got traitlets' "expected an int or ..."
        w.foil = integer
        assert w.foil == 5 and type(w.foil) is int
    for number in (5.0, np.float64(5.0)):  # before: read as id 5, where ex.metric(foil=5.0) now refuses it
        with pytest.raises(InputError, match="foil must be a token id .* a float is not truncated"):
            w.foil = number
    assert w.foil == 5


def test_attribution_options_with_numpy_numbers_still_reach_the_browser(ex):
    import json

    from lmtt_widgets import Explorer

    w = Explorer(ex)
    w.attribution_options = {"integrated_gradients": {"steps": np.int64(4), "keep_first": np.bool_(True)},
                             "occlusion": {"baseline": torch.tensor(5)}}
    # before: kept as given, and the kernel's JSON packer refused them (TypeError: int64 is not JSON serializable)
    json.dumps(w._trait_to_json(w.attribution_options, w), allow_nan=False)
    assert w.attribution_options["integrated_gradients"] == {"steps": 4, "keep_first": True}
    with pytest.raises(InputError, match="occlusion's baseline must be a number, a text"):
        w.attribution_options = {"occlusion": {"baseline": [5]}}


def test_load_model_says_what_is_wrong_with_a_device_or_an_overlong_name():
    from lmtt_widgets import load_model
    from lmtt_widgets.errors import ModelLoadError, ModelNotFoundError
    from tiny_models import ToyTokenizer, build

    model = build("llama", dtype=torch.float32)
    with pytest.raises(ModelLoadError, match="device='meta' holds no data"):  # before: the weights dropped, no error
        load_model(model, ToyTokenizer(), device="meta")
    assert not model.lm_head.weight.is_meta
    bad = "cuda:99" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ModelLoadError, match=f"Cannot move the model to {bad}"):  # before: AssertionError
        load_model(model, ToyTokenizer(), device=bad)
    with pytest.raises(ModelNotFoundError, match="5000 characters"):  # before: OSError File name too long
        load_model("x" * 5000)


def test_one_threshold_of_any_number_type_is_a_list_of_one(ex):
    expected = ex.faithfulness(0.04, ablation="mean").kept
    for tau in (np.float32(0.04), np.float64(0.04), torch.tensor(0.04, dtype=torch.float64)):
        # before: np.float32 refused as "not a list", a 0-d tensor raised TypeError (iteration over a 0-d tensor)
        got = ex.faithfulness(tau, ablation="mean")
        assert got.kept == pytest.approx(expected) and len(got.labels) == 1

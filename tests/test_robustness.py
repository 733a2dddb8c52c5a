"""Issue 10: threads and re-entrancy, non-finite values, bad inputs, interrupted runs."""

import re
import threading
import time

import numpy as np
import pytest
import torch

from lmtt_widgets import LmttError, explain, load_model, trace
from lmtt_widgets.tracing.capture import _configs
from tiny_models import ToyTokenizer, build

PROMPTS = ["the cat sat on the mat", "hello world, again!", "a b c d e f g", "once upon a time"]


def model_state(model):
    """Everything a trace may touch and must put back: attention implementations, modes, hooks."""
    return {
        "attn": [cfg._attn_implementation_internal for cfg in _configs(model)],
        "modes": {name: m.training for name, m in model.named_modules()},
        "hooks": {name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks)) for name, m in model.named_modules()},
    }


def same_explanation(a, b):
    assert torch.equal(a.trace.logits, b.trace.logits)
    for la, lb in zip(a.scores.layers, b.scores.layers):
        assert torch.equal(la.head_total, lb.head_total) and torch.equal(la.mlp, lb.mlp)
        assert torch.equal(la.resid_attn, lb.resid_attn) and torch.equal(la.head_val, lb.head_val)


# ---- 3. threads and re-entrancy


def sdpa_llama_in_mixed_mode():
    lm = load_model(build("llama", attn="sdpa"), ToyTokenizer())
    lm.model.model.layers[1].train()  # a mixed state that must come back exactly

    def slow(mod, args, output):  # a user's harmless hook that makes threads interleave mid-forward
        time.sleep(0.005)

    lm.model.model.layers[0].register_forward_hook(slow)
    return lm


def test_threads_tracing_one_model_get_single_threaded_results():
    lm = sdpa_llama_in_mixed_mode()
    before = model_state(lm.model)
    alone = {p: explain(lm, p) for p in PROMPTS}
    assert model_state(lm.model) == before
    results, errors = [], []

    def work(offset):
        try:
            for n in range(4):
                p = PROMPTS[(offset + n) % len(PROMPTS)]
                results.append((p, explain(lm, p)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert len(results) == 12
    for p, ex in results:
        same_explanation(ex, alone[p])
    assert model_state(lm.model) == before


def test_tracing_from_inside_the_models_own_forward_is_refused_and_restores_it():
    lm = sdpa_llama_in_mixed_mode()
    before = model_state(lm.model)
    inner = []

    def reenter(mod, args, output):
        inner.append(1)
        trace(lm, "abc")

    handle = lm.model.model.layers[1].register_forward_hook(reenter)
    before["hooks"] = model_state(lm.model)["hooks"]
    with pytest.raises(LmttError, match="already being traced") as info:
        explain(lm, PROMPTS[0])
    assert isinstance(info.value, RuntimeError) and inner == [1]
    assert model_state(lm.model) == before
    handle.remove()
    same_explanation(explain(lm, PROMPTS[0]), explain(lm, PROMPTS[0]))  # usable again, no lock left held


def test_a_failure_while_hooks_are_being_added_leaves_none_behind():
    import dataclasses

    from lmtt_widgets.models.loading import LoadedModel

    lm = load_model(build("llama", attn="sdpa"), ToyTokenizer())
    broken = LoadedModel(lm.model, lm.tokenizer, dataclasses.replace(lm.adapter, mlp_norm="no_such_norm"), "broken")
    before = model_state(lm.model)
    with pytest.raises(AttributeError):  # raised after block 0's hooks went on, before the pass
        trace(broken, "abc")
    assert model_state(lm.model) == before


# ---- 4. non-finite values


def poisoned(edit, dtype=torch.float32):
    lm = load_model(build("llama", dtype=dtype, attn="sdpa"), ToyTokenizer())
    with torch.no_grad():
        edit(lm.model)
    return lm


@pytest.mark.parametrize("edit,dtype,message", [
    (lambda m: m.model.layers[1].self_attn.o_proj.weight[3, 5].fill_(float("nan")), torch.float32,
     r"layer 1: the attention output \(self_attn.o_proj\) holds NaN at token 0"),
    (lambda m: m.model.layers[0].mlp.down_proj.weight[7, 2].fill_(float("inf")), torch.float32,
     r"layer 0: the MLP output \(mlp.down_proj\) holds -?inf at token 0"),
    (lambda m: m.model.embed_tokens.weight[ord("c")].fill_(float("nan")), torch.float32,
     r"layer 0: the embeddings \(input of model.layers.0\) holds NaN at token 2"),
    (lambda m: m.model.layers[1].self_attn.k_proj.weight[0].fill_(float("-inf")), torch.float32,
     r"layer 1: the attention probabilities \(self_attn\) hold NaN at token 0"),
    # finite weights, too large: the gated MLP's product overflows float32 / bfloat16
    (lambda m: (m.model.layers[1].mlp.up_proj.weight.mul_(1e20), m.model.layers[1].mlp.gate_proj.weight.mul_(1e20)),
     torch.float32, r"layer 1: the MLP activations \(input of the MLP output projection\) \(mlp.down_proj\) hold -?inf"),
    (lambda m: (m.model.layers[1].mlp.up_proj.weight.mul_(1e20), m.model.layers[1].mlp.gate_proj.weight.mul_(1e20)),
     torch.bfloat16, r"layer 1: the MLP activations .* hold -?inf"),
    # a head ablation (a pre-hook on o_proj) hides NaN values from the block output; the scores would still read them
    (lambda m: (m.model.layers[1].self_attn.v_proj.weight[0].fill_(float("nan")),
                m.model.layers[1].self_attn.o_proj.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))),
     torch.float32, r"layer 1: the value states \(self_attn\) hold NaN at token 0"),
    (lambda m: m.model.norm.weight[4].fill_(float("nan")), torch.float32,
     r"the norm model.norm holds nan in its weight \(index \[4\]\)"),
    (lambda m: m.lm_head.weight[5].fill_(3e38), torch.float32,  # finite weights, logits beyond float32
     r"the logits hold -?inf at token 0 although every block's output is finite: the final norm \(model.norm\)"),
])
def test_non_finite_values_name_the_first_layer_and_module(edit, dtype, message):
    lm = poisoned(edit, dtype)
    before = model_state(lm.model)
    with pytest.raises(LmttError, match=message) as info:
        explain(lm, "abcdef")
    assert isinstance(info.value, FloatingPointError)
    assert model_state(lm.model) == before


def test_finite_values_of_any_size_are_accepted():
    # large but finite residuals (their sum overflows, no value does) are not mistaken for infinity
    from lmtt_widgets.tracing.finite import check_block

    big = torch.full((4, 8), 3e38)
    check_block(0, {"resid_pre": big, "values": big[None]}, load_model(build("llama"), ToyTokenizer()).adapter)


# ---- 9. bad inputs: clear errors that are LmttErrors and ValueError / TypeError


def refused(kind, fn, *args, match=None, **kwargs):
    """fn(...) raises an LmttError that is also ``kind`` (ValueError or TypeError); returns its message."""
    with pytest.raises(LmttError, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, kind), (type(info.value).__mro__, str(info.value))
    return str(info.value)


@pytest.fixture(scope="module")
def lm():
    return load_model(build("llama", attn="sdpa"), ToyTokenizer())


@pytest.fixture(scope="module")
def ex(lm):
    return explain(lm, "abcdef")


@pytest.mark.parametrize("prompt,kind,match", [
    (b"hello", TypeError, "bytes. Decode it"),
    (bytearray(b"hi"), TypeError, "bytes"),
    ([97.0, 98.0], TypeError, r"item 0 is 97.0 \(float\)"),
    ([97, 98.5], TypeError, "item 1 is 98.5"),
    ([True, False], TypeError, "bool"),
    (torch.tensor([[97.0, 98.0]]), TypeError, "dtype torch.float32"),
    (np.array([97.0, 98.0]), TypeError, "dtype torch.float64"),
    (torch.tensor([True]), TypeError, "dtype torch.bool"),
    ([[97, 98], [99, 100]], TypeError, "nested list.*explain_many"),
    ([[97, 98]], TypeError, "nested list"),
    (["abc", "def"], TypeError, "list of 2 texts.*explain_many"),
    ({"input_ids": [[97, 98], [99, 100]]}, ValueError, "batch of 2 sequences.*explain_many"),
    ({"input_ids": [[97, 98, 0]], "attention_mask": [[1, 1, 0]]}, ValueError, "padded"),
    ({"text": "abc"}, TypeError, "keys: text"),
    ("ab\ud800c", ValueError, r"lone surrogate '\\ud800' at character 2"),
    ([10**30], ValueError, "outside any vocabulary"),
    ([97, 500], ValueError, "Token id 500 at position 1 is outside the vocabulary"),
    ([-3], ValueError, "Token id -3 at position 0"),
    (torch.ones(1, 2, 3, dtype=torch.long), ValueError, r"shape \[T\] or \[1, T\]"),
    (None, TypeError, "got NoneType"),
    (97, TypeError, "got int"),
    ({97, 98}, TypeError, "got set"),
])
def test_bad_prompts_are_refused_with_a_clear_error(lm, prompt, kind, match):
    before = model_state(lm.model)
    refused(kind, trace, lm, prompt, match=match)
    assert model_state(lm.model) == before


def test_a_tokenizer_output_of_one_sequence_is_accepted(lm):
    from transformers import BatchEncoding

    want = trace(lm, [97, 98, 99]).logits
    for enc in (BatchEncoding({"input_ids": [[97, 98, 99]], "attention_mask": [[1, 1, 1]]}),
                BatchEncoding({"input_ids": torch.tensor([[97, 98, 99]])}, tensor_type="pt"),
                {"input_ids": [97, 98, 99]}, (97, 98, 99), np.array([[97, 98, 99]]), range(97, 100)):
        assert torch.equal(trace(lm, enc).logits, want)


def test_explain_refuses_a_number_for_a_prompt(lm):
    for p in (97, 10**30, -5, True, 2.5):  # not a token count (10**30 used to be estimated as one)
        refused(TypeError, explain, lm, p, match="not the number")


def test_explain_many_refuses_a_single_text(lm):
    from lmtt_widgets import explain_many

    refused(TypeError, explain_many, lm, "abc", match="takes a list of prompts")
    refused(TypeError, explain_many, lm, 3, match="takes a list of prompts")
    assert [e.tokens for e in explain_many(lm, ["ab", [99]])] == [["a", "b"], ["c"]]


@pytest.mark.parametrize("call,kind,match", [
    (lambda e: e.heads(float("nan")), TypeError, "layer must be an integer index, not nan"),
    (lambda e: e.heads(1.0), TypeError, r"use int\(1.0\)"),
    (lambda e: e.heads(True), TypeError, "layer must be an integer"),
    (lambda e: e.heads(-1), ValueError, r"layer -1 is out of range: the model has 2 layers \(0..1\)"),
    (lambda e: e.heads(0, token=2.5), TypeError, "token must be an integer"),
    (lambda e: e.heads(0, token=-1), ValueError, "token -1 is out of range"),
    (lambda e: e.heads(0, token="3"), TypeError, "token must be an integer"),
    (lambda e: e.head_output(0, 4), ValueError, "head 4 is out of range"),
    (lambda e: e.head_output(0, float("inf")), TypeError, "head must be an integer"),
    (lambda e: e.neuron_output(0, 10**12), ValueError, "neuron 1000000000000 is out of range"),
    (lambda e: e.neuron_output(0, float("nan")), TypeError, "neuron must be an integer"),
    (lambda e: e.residual(float("nan"), 0), TypeError, "row must be an integer"),
    (lambda e: e.lens(5), ValueError, "row 5 is out of range"),
    (lambda e: e.head_contributions(0, -2), ValueError, "head -2"),
    (lambda e: e.predictions(k=0), ValueError, "k must be at least 1"),
    (lambda e: e.predictions(k=-1), ValueError, "k must be at least 1"),
    (lambda e: e.predictions(k=2.5), TypeError, "k must be a positive integer"),
    (lambda e: e.top_heads(k="3"), TypeError, "k must be a positive integer"),
    (lambda e: e.neurons(0, k=0), ValueError, "k must be at least 1"),
    (lambda e: e.route(threshold="0.04"), TypeError, "threshold must be a number between 0 and 1 such as 0.04"),
    (lambda e: e.route(threshold=float("nan")), ValueError, r"threshold must lie in \(0, 1\); got nan"),
    (lambda e: e.route(threshold=0), ValueError, r"threshold must lie in \(0, 1\)"),
    (lambda e: e.route(threshold=1.5), ValueError, r"threshold must lie in \(0, 1\)"),
    (lambda e: e.route(threshold=-0.1), ValueError, r"threshold must lie in \(0, 1\)"),
    (lambda e: e.route(threshold=True), TypeError, "threshold must be a number"),
    (lambda e: e.route(granularity="heads"), ValueError, "granularity must be one of 'head', 'edge', not 'heads'"),
    (lambda e: e.route(granularity=None), ValueError, "granularity must be one of"),
    (lambda e: e.route(target=2.0), TypeError, "target token must be an integer"),
    (lambda e: e.route(target=99), ValueError, "target token 99 is out of range"),
    (lambda e: e.lens(1, norm="finall"), ValueError, "norm must be 'own', 'final' or 'raw', not 'finall'"),
    (lambda e: e.head_tokens(0, 1, norm=None), ValueError, "norm must be"),
    (lambda e: e.project([1.0, 2.0]), TypeError, "vec must be a tensor of width 64"),
])
def test_bad_arguments_get_clear_errors(ex, call, kind, match):
    refused(kind, call, ex, match=match)


def test_good_arguments_of_other_integer_types_still_work(ex):
    assert ex.heads(np.int64(1), torch.tensor(2))[0].layer == 1
    assert len(ex.predictions(k=10**6)) == 128  # more than the vocabulary: all of it
    assert ex.route(threshold=np.float32(0.05)).threshold == pytest.approx(0.05)


def test_bad_explain_options(lm):
    refused(ValueError, explain, lm, "abc", budget=0, match="budget must be at least 1")
    refused(TypeError, explain, lm, "abc", keep_attention="yes", match="keep_attention must be")
    refused(TypeError, explain, lm, "abc", on_layer=3, match="on_layer must be a function")


# ---- 9. load errors: missing directory, missing weights, missing tokenizer, unreachable hub


def char_tokenizer():
    """A real (fast) tokenizer, one token per printable ASCII character, built offline."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0} | {chr(i): i for i in range(32, 127)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab, [], unk_token="<unk>")),
                                   unk_token="<unk>")


@pytest.fixture
def saved(tmp_path):
    """A directory as save_pretrained writes it: config, weights, tokenizer."""
    path = tmp_path / "model"
    build("llama", dtype=torch.float32).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


def test_a_complete_directory_loads(saved):
    lm = load_model(str(saved))
    assert lm.tokenizer("abc").input_ids == [97, 98, 99]
    assert explain(lm, "abc").tokens == ["a", "b", "c"]


def test_load_errors_say_what_is_missing(saved, tmp_path):
    from lmtt_widgets.errors import ModelNotFoundError, TokenizerMissingError, WeightsMissingError

    with pytest.raises(ModelNotFoundError, match="No model directory at"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="is a file; point at the directory"):
        load_model(str(saved / "config.json"))
    # the tokenizer's vocabulary gone, its config kept: transformers alone would build an empty tokenizer
    (saved / "tokenizer.json").unlink()
    msg = str(pytest.raises(TokenizerMissingError, load_model, str(saved)).value)
    assert "holds the weights but no tokenizer" in msg and "tokenizer=AutoTokenizer.from_pretrained" in msg
    assert "load_model(model, tokenizer)" in msg
    assert load_model(str(saved), tokenizer=char_tokenizer()).tokenizer("ab").input_ids == [97, 98]
    (saved / "tokenizer_config.json").unlink()
    pytest.raises(TokenizerMissingError, load_model, str(saved))
    (saved / "model.safetensors").unlink()
    msg = str(pytest.raises(WeightsMissingError, load_model, str(saved)).value)
    assert "holds config.json but no weights" in msg and "save_pretrained" in msg


def test_hub_names_not_cached_say_whether_the_hub_is_offline_or_unreachable(monkeypatch):
    import huggingface_hub.constants as hub
    import huggingface_hub.utils._http as http

    from lmtt_widgets.errors import HubUnreachableError

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    msg = str(pytest.raises(HubUnreachableError, load_model, "no-such-org/no-such-model").value)
    assert "not in your Hugging Face cache and offline mode (HF_HUB_OFFLINE=1)" in msg
    # online, but nothing answers: a refused connection (retries made instant)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(http.time, "sleep", lambda s: None)
    msg = str(pytest.raises(HubUnreachableError, load_model, "no-such-org/no-such-model").value)
    assert "the hub cannot be reached" in msg


def test_load_model_refuses_what_is_not_a_model(lm):
    refused(TypeError, load_model, 123, match="not int")
    refused(TypeError, load_model, lm.model, 5, match="tokenizer must be a transformers tokenizer")
    with pytest.raises(LmttError, match="Unknown dtype 'nn'"):
        load_model(lm.model, lm.tokenizer, dtype="nn")


# ---- 9. the widget's message handlers: a hostile browser gets an error reply, the kernel never an exception


def sent_messages(widget):
    sent = []
    widget.send = lambda content, buffers=None: sent.append(content)
    return sent


@pytest.mark.parametrize("content,match", [
    (None, "must be an object"),
    ([1, 2], "must be an object"),
    ({"type": "launch_missiles"}, "unknown message type 'launch_missiles'"),
    ({}, "unknown message type None"),
    ({"type": {"nested": 1}}, "unknown message type"),
    ({"type": "run", "prompt": 12}, "prompt must be text"),
    ({"type": "run", "prompt": None}, "prompt must be text"),
])
def test_hostile_custom_messages_get_an_error_reply(ex, content, match):
    from lmtt_widgets import Explorer

    w = Explorer(ex)
    sent = sent_messages(w)
    w._on_message(w, content, [])
    assert sent and sent[-1]["ok"] is False and re.search(match, sent[-1]["error"])
    assert re.search(match, w.error) and w.status["state"] != "running" and w.explanation is ex


@pytest.mark.parametrize("key,match", [
    ("head:99999999999999999999999:0:1", "layer 99999999999999999999999 is out of range"),
    ("head:-1:0:1", "layer -1 is out of range"),
    ("lens:nan:0", "malformed details key"),
    ("neuron:0:1:" + "9" * 5000, "malformed details key"),
    ("mlp:0", "unknown details key"),
    (None, "unknown details key"),
    (17, "unknown details key"),
    ("x" * 100_000, r"unknown details key 'x{57}'\.\.\.$"),
])
def test_hostile_details_keys_get_an_error_reply(ex, key, match):
    from lmtt_widgets import Explorer

    w = Explorer(ex)
    sent = sent_messages(w)
    w._on_message(w, {"type": "details", "id": [1, {"a": 2}], "key": key}, [])
    (reply,) = sent
    assert reply["type"] == "details" and reply["ok"] is False and re.search(match, reply["error"])


@pytest.mark.parametrize("state,match", [
    ({"target": "abc"}, "target"),
    ({"target": float("nan")}, "target"),
    ({"target": 10**40}, "out of range"),
    ({"threshold": float("nan")}, "threshold must lie in"),
    ({"threshold": "0.04"}, "threshold"),
    ({"granularity": "heads"}, "granularity"),
    ({"selection": {"kind": "head", "layer": float("nan"), "head": 0, "token": 0}}, "layer must be an integer, got nan"),
    ({"selection": {"kind": "head", "layer": float("inf"), "head": 0, "token": 0}}, "layer must be an integer, got inf"),
    ({"selection": {"kind": "mlp", "layer": 10**40, "token": 0}}, "layer 10000000000000000000000000000000000000000 is out"),
    ({"selection": {"kind": {"x": 1}}}, "selection kind .* is unknown"),
    ({"selection": {"kind": "node", "layer": 0, "token": 0, "node_kind": ["x"]}}, "node_kind"),
    ({"selection": [1, 2]}, "selection"),
    ({"selection": {"kind": "mlp", "token": 0}}, "missing layer"),
    ({"foil": 10**40}, f"foil id {10**40} is out of range"),
    ({"foil": float("nan")}, "foil must be a token id .* not nan"),
    ({"head_mode": ["importance"]}, "'head_mode' trait"),
    ({"ablation": None}, "'ablation' trait"),
])
def test_hostile_state_updates_are_refused_and_reverted(ex, state, match):
    from lmtt_widgets import Explorer

    w = Explorer(ex)
    w.selection = {"kind": "mlp", "layer": 0, "token": 1}
    good = {k: getattr(w, k) for k in ("target", "threshold", "granularity", "selection", "foil", "head_mode",
                                       "ablation")}
    w.set_state(state)
    assert re.search(match, w.error), w.error
    assert {k: getattr(w, k) for k in good} == good


def test_hostile_comm_messages_never_raise_into_the_kernel(ex, caplog):
    """Through ipywidgets' own entry point: its catch-all (a traceback in the notebook) must never fire."""
    from lmtt_widgets import Explorer

    w = Explorer(ex)
    sent = sent_messages(w)
    for data in ({"method": "custom", "content": {"type": "run", "prompt": 5}},
                 {"method": "custom", "content": "run"},
                 {"method": "custom", "content": {"type": "details", "key": {"k": 1}}},
                 {"method": "update", "state": {"target": "x", "threshold": float("nan")}},
                 {"method": "update", "state": {"selection": {"kind": "head", "layer": [], "head": 0, "token": 0}}},
                 {"method": "update", "state": {"no_such_trait": 1, "target": -5}}):
        n = len(sent)
        w._handle_msg({"content": {"data": data}, "buffers": []})
        assert w.error or (len(sent) == n + 1 and sent[-1]["type"] == "details" and not sent[-1]["ok"])
        w.error = ""
    assert not [r for r in caplog.records if "Exception in widget method" in r.getMessage()]
    assert w.explanation is ex and w.status["state"] != "running"
    assert len(sent) == 3 and all(m["ok"] is False for m in sent)


# ---- 10. interrupted runs


def test_an_interrupted_run_leaves_the_widget_usable_and_reraises(lm):
    from lmtt_widgets import Explorer

    first = explain(lm, "abcdef")
    w = Explorer(first)
    before = model_state(lm.model)
    graph = w.graph

    def interrupt(mod, args, output):
        raise KeyboardInterrupt

    handle = lm.model.model.layers[1].register_forward_hook(interrupt)
    before["hooks"] = model_state(lm.model)["hooks"]
    with pytest.raises(KeyboardInterrupt):
        w._on_message(w, {"type": "run", "prompt": "a new prompt"}, [])
    assert w.status["state"] == "idle" and "interrupted" in w.status["message"]
    assert w.explanation is first and w.tokens == first.tokens and w.graph == graph
    assert model_state(lm.model) == before
    handle.remove()
    w._on_message(w, {"type": "run", "prompt": "again"}, [])  # Run works again
    assert w.status == {"state": "idle", "message": "", "progress": 1.0} and w.tokens == list("again")


def test_widget_values_refused_from_python_are_lmtt_value_errors(ex):
    import traitlets

    from lmtt_widgets import Explorer

    w = Explorer(ex)
    for name, value, match in (("threshold", 1.5, "threshold must lie in"), ("target", 99, "out of range"),
                               ("selection", {"kind": "mlp", "layer": 9, "token": 0}, "layer 9 is out of range")):
        with pytest.raises(LmttError, match=match) as info:
            setattr(w, name, value)
        assert isinstance(info.value, ValueError) and isinstance(info.value, traitlets.TraitError)
    assert w.threshold == 0.04 and w.target == ex.n_tokens - 1 and w.selection is None

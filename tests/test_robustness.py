"""Issue 10: threads and re-entrancy, non-finite values, bad inputs, interrupted runs."""

import threading
import time

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

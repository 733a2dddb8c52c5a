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

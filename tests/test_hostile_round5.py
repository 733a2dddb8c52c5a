"""Hostile round 5: model state and grad modes around an explanation (benchmarks/hostile_round5.py has the rest).

Each test failed on the code before its fix (checked with ``git stash``)."""

from __future__ import annotations

import pytest
import torch

from lmtt_widgets import explain
from tiny_models import loaded

PROMPT = "The quick brown fox jumps over the lazy dog."
CORRUPT = "The quick brown cat jumps over the lazy dog."


@pytest.fixture(scope="module")
def ex():
    return explain(loaded("llama", dtype=torch.float32), PROMPT)


@pytest.mark.parametrize("method", ["integrated_gradients"])  # (saliency and input x gradient already passed)
def test_gradient_methods_give_the_same_scores_inside_torch_inference_mode(ex, method):
    # inference_mode records no graph: before the fix a raw "does not require grad" RuntimeError
    expected = ex.score(method, steps=4, baseline="zero") if method == "integrated_gradients" else ex.score(method)
    with torch.inference_mode():
        got = ex.score(method, steps=4, baseline="zero") if method == "integrated_gradients" else ex.score(method)
    assert torch.equal(got.scores, expected.scores)


def test_attribution_patching_inside_inference_mode_and_of_a_trace_made_there(ex):
    expected = ex.attribution_patching(ablation="zero").scores
    with torch.inference_mode():
        assert torch.equal(ex.attribution_patching(ablation="zero").scores, expected)
        inside = explain(ex.trace.lm, PROMPT)  # its token ids are inference tensors
        assert torch.equal(inside.attribution_patching(ablation="zero").scores, expected)


BAD_CHATS = [
    (["Hello"], "Chat message 0 is a str"),
    ({"role": "user", "content": "Hi"}, "not dict"),
    ([], "no messages"),
    ([{"role": "user"}], "needs a text 'content'"),
    ([{"role": "user", "content": 5}], "needs a text 'content', not 5"),
    ([1, 2, 3], "Chat message 0 is a int"),
    (b"hi", "not bytes"),
    (torch.tensor([1, 2]), "not Tensor"),
    ([{"role": "user", "content": "a\ud800b"}], "lone surrogate"),
]


@pytest.mark.smollm2
@pytest.mark.parametrize("messages, message", BAD_CHATS)
def test_chat_messages_that_are_not_messages_get_a_prompt_error(smollm2, messages, message):
    # before: raw TypeError / ValueError from transformers, Jinja's UndefinedError, the tokenizer's TypeError
    from lmtt_widgets.errors import PromptError

    with pytest.raises(PromptError, match=message):
        explain(smollm2, messages, chat=True)


@pytest.mark.smollm2
def test_a_chat_template_that_fails_is_named_as_such(smollm2):
    from lmtt_widgets.errors import PromptError

    # SmolLM2's template accepts any role: a template that raises (as some refuse a role order) is set here
    tok = smollm2.tokenizer
    saved = tok.chat_template
    tok.chat_template = "{{ raise_exception('only user and assistant roles') }}"
    try:
        with pytest.raises(PromptError, match="chat template of .* failed.*only user and assistant roles"):
            explain(smollm2, [{"role": "user", "content": "Hi"}], chat=True)
    finally:
        tok.chat_template = saved


@pytest.mark.smollm2
def test_a_message_equal_to_the_templates_own_text_is_marked_where_the_template_put_it(smollm2):
    # before: the user's content "user" was searched for after the system message and found in the role label
    # "<|im_start|>user": the label was marked "user" and the user's actual text "template"
    ex = explain(smollm2, [{"role": "system", "content": "user"}, {"role": "user", "content": "user"}], chat=True)
    marked = [(n, t, r) for n, (t, r) in enumerate(zip(ex.tokens, ex.token_roles)) if r != "template"]
    assert [(t, r) for _, t, r in marked] == [("user", "system"), ("user", "user")]
    n_user = marked[1][0]
    assert ex.tokens[n_user - 2 : n_user] == ["user", "\n"] and ex.token_roles[n_user - 2] == "template"


def test_attribution_matrix_takes_one_position_as_a_number(ex):
    # before: a raw "'int' object is not iterable"
    one = ex.attribution_matrix("saliency", positions=3)
    assert one.equals(ex.attribution_matrix("saliency", positions=[3]))
    from lmtt_widgets.errors import SelectionTypeError

    with pytest.raises(SelectionTypeError, match="positions must be a list"):
        ex.attribution_matrix("saliency", positions=3.0)


def test_attribution_patching_edges_of_another_prompts_route_are_refused(ex):
    # before: node ids decoded with this prompt's length: edges at the wrong tokens, or none, without a word
    from lmtt_widgets.errors import InputTypeError, SelectionError

    other = explain(ex.trace.lm, "A short one")
    with pytest.raises(SelectionError, match="route is of a graph of 11 tokens"):
        ex.attribution_patching(CORRUPT, edges=other.route())
    with pytest.raises(SelectionError, match="not this explanation's \\(11"):
        other.attribution_patching(ablation="zero", edges=ex.route())
    with pytest.raises(InputTypeError, match="edges must be True"):  # before: raw AttributeError
        ex.attribution_patching(CORRUPT, edges="yes")
    assert len(ex.attribution_patching(CORRUPT, edges=ex.full_graph()).of_kind("edge")) > 0


@pytest.mark.parametrize("ablation", [0, "", False])
def test_a_falsy_ablation_is_refused_not_taken_for_mean(ex, ablation):
    # before: `ablation or "mean"` ran mean ablation for ablation=0 (zero ablation was meant) without a word
    from lmtt_widgets.errors import SelectionError

    with pytest.raises(SelectionError, match="ablation must be one of"):
        ex.patch(["L1.H0"], ablation=ablation)


def test_a_reference_of_another_prompt_is_refused(ex):
    from lmtt_widgets.errors import PromptError
    from lmtt_widgets.methods.causal import reference

    other = explain(ex.trace.lm, "A short one")
    with pytest.raises(PromptError, match="reference was made for a prompt of 44 tokens"):  # before: raw RuntimeError
        other.patch(["L1.H0"], reference(ex, CORRUPT))


def test_score_table_lookups_and_rankings_say_what_is_wrong(ex):
    from lmtt_widgets.errors import ComponentKeyError, InputError

    table = ex.logit_attribution()
    with pytest.raises(ComponentKeyError, match="L99.H0 is not scored") as info:  # before: a bare KeyError
        table["L99.H0"]
    assert isinstance(info.value, KeyError) and str(info.value).startswith("L99.H0")
    with pytest.raises(InputError, match="by must be"):  # before: KeyError 'x'
        table.top(3, by="x")
    with pytest.raises(InputError, match="k must be at least 0"):  # before: [] for k=-1
        table.top(-1)
    assert table.top(0) == [] and len(table.top(3)) == 3


def test_faithfulness_of_top_checks_its_counts_and_table(ex):
    from lmtt_widgets.errors import InputError, SelectionError
    from lmtt_widgets.methods.causal import faithfulness_of_top

    table = ex.logit_attribution()
    assert faithfulness_of_top(ex, table, ks=2).fraction == faithfulness_of_top(ex, table, ks=[2]).fraction
    with pytest.raises(InputError, match="each k must be at least 0"):  # before: accepted as "keep no head"
        faithfulness_of_top(ex, table, ks=[-1])
    with pytest.raises(SelectionError, match="scores no heads"):  # before: fraction 0 "of the top 2"
        faithfulness_of_top(ex, ex.score("saliency"), ks=[2])


def test_a_steering_hook_added_or_removed_after_explain_is_refused_by_reruns_not_hidden():
    # before: a hook too small for the 1e-3 rerun check shifted every effect without a word
    from lmtt_widgets.errors import SelectionError

    lm = loaded("llama", dtype=torch.float32)
    ex = explain(lm, PROMPT)
    before = ex.patch(["L1.H0"], CORRUPT)["L1.H0"]
    block = lm.model.model.layers[0]
    v = 1e-4 * torch.ones(lm.model.config.hidden_size)
    handle = block.register_forward_hook(lambda m, a, o: o + v)
    try:
        now = explain(lm, PROMPT)
        shift = float(now.metric()(now.trace.logits) - ex.metric()(ex.trace.logits))
        assert 0 < abs(shift) < 1e-3  # small enough to hide in the usual slack of a rerun
        for run in (lambda: ex.patch(["L1.H0"], CORRUPT), lambda: ex.attribution_patching(CORRUPT),
                    lambda: ex.score("saliency"), lambda: ex.faithfulness([0.1], CORRUPT)):
            with pytest.raises(SelectionError, match=r"forward hooks changed since explain\(\) \(added or removed "
                                                     r"on model\.layers\.0\)"):
                run()
        steered = explain(lm, PROMPT)  # explained with the hook on: its reruns have it too
        assert steered.patch(["L1.H0"], CORRUPT)["L1.H0"] != before
    finally:
        handle.remove()
    assert ex.patch(["L1.H0"], CORRUPT)["L1.H0"] == before  # the hooks as they were: reruns work again
    with pytest.raises(SelectionError, match="forward hooks changed"):  # the hook of the pass removed
        steered.patch(["L1.H0"], CORRUPT)


def test_a_hook_that_changes_nothing_added_after_explain_is_accepted():
    lm = loaded("llama", dtype=torch.float32)
    ex = explain(lm, PROMPT)
    before = ex.patch(["L1.H0"], CORRUPT)["L1.H0"]
    seen = []
    handle = lm.model.model.layers[0].register_forward_hook(lambda m, a, o: seen.append(1))
    try:
        assert ex.patch(["L1.H0"], CORRUPT)["L1.H0"] == before and seen
        assert len(ex.score("saliency")) == ex.n_tokens
    finally:
        handle.remove()

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

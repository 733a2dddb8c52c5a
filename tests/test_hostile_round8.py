"""Hostile round 8: inputs that gave raw Python errors, NaN or silently wrong answers (issues 10 pt 9, 11 pt 2).

Each test failed on the code before its fix (checked against main's lmtt_widgets)."""

from __future__ import annotations

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

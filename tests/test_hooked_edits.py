"""Hooks on the decomposed modules themselves, and edits in place of tensors the trace already stored: never a
silent gap in a decomposition (tracing/recorder.py _check_projections / _check_in_place, tracing/edits.py)."""

from __future__ import annotations

import pytest
import torch

from lmtt_widgets import explain
from lmtt_widgets.tracing.edits import IN_PLACE
from tiny_models import loaded

PROMPT = "The quick brown fox jumps over"


def _explain_with(lm, module, kind, fn):
    register = module.register_forward_hook if kind == "post" else module.register_forward_pre_hook
    handle = register(fn)
    try:
        with pytest.warns(UserWarning, match="edited by code outside"):
            return explain(lm, PROMPT)
    finally:
        handle.remove()


def _add_in_place(module, args, output=None):
    (args[0] if output is None else output).add_(0.5)


@pytest.mark.parametrize("family", ["llama", "gemma2"])  # gemma2: through the attention post-norm
@pytest.mark.parametrize("in_place", [False, True])
def test_a_hook_on_the_attention_output_projection_becomes_the_updates_external_edit(family, in_place):
    lm = loaded(family)
    o_proj = lm.model.model.layers[0].self_attn.o_proj
    hook = _add_in_place if in_place else (lambda m, a, out: out + 0.5)
    ex = _explain_with(lm, o_proj, "post", hook)
    rec, w = ex.trace.layers[0], ex.trace.weights[0]
    assert [(e.layer, e.where, e.scored) for e in ex.trace.external_edits] == [(0, "attention", True)]
    # the parts add up again: residual + heads and bias (through the frozen post-norm) + the edit = the update
    heads = torch.nn.functional.linear(rec.head_signal.flatten(1), w.w_o, w.b_o)
    if w.attn_post_norm is not None:
        heads = w.attn_post_norm.apply(heads, rec.attn_post_rstd, with_bias=False)
    assert torch.allclose(rec.resid_pre + heads + rec.edit_attn, rec.resid_mid, atol=1e-9)
    assert float(ex.scores.layers[0].external_attn.max()) > 0


def test_a_hook_on_the_mlp_output_projection_is_reported():
    lm = loaded("llama")
    ex = _explain_with(lm, lm.model.model.layers[1].mlp.down_proj, "post", lambda m, a, out: out * 2)
    (edit,) = ex.trace.external_edits
    assert (edit.layer, edit.where, edit.scored) == (1, "MLP output projection", False)
    assert edit.size > 0


@pytest.mark.parametrize("where", ["block", "final norm"])
def test_an_edit_in_place_between_blocks_is_reported_with_a_lower_bound(where):
    lm = loaded("llama")
    module = lm.model.model.layers[1] if where == "block" else lm.model.model.norm
    ex = _explain_with(lm, module, "pre", _add_in_place)
    (edit,) = ex.trace.external_edits
    assert edit.where.endswith(IN_PLACE) and not edit.scored
    assert edit.tokens == list(range(len(PROMPT)))
    d = lm.model.config.hidden_size
    assert 0 < edit.size <= 0.5 * d + 1e-9  # the L1 size of the edit is 0.5 x d on every row


def test_hooks_that_change_nothing_report_nothing(recwarn):
    lm = loaded("llama")
    layer = lm.model.model.layers[0]
    handles = [layer.self_attn.o_proj.register_forward_hook(lambda m, a, out: out),
               layer.mlp.down_proj.register_forward_hook(lambda m, a, out: None),
               lm.model.model.layers[1].register_forward_pre_hook(lambda m, a: None)]
    try:
        ex = explain(lm, PROMPT)
    finally:
        for h in handles:
            h.remove()
    assert ex.trace.external_edits == []
    assert not [w for w in recwarn if "edited by code outside" in str(w.message)]

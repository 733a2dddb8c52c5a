"""Issue 10: how attention weights are recorded is decided per attention module from what the installed transformers
does, not by family, so a release that moves a family between the two routes keeps working."""

import re

import pytest
import torch
import transformers as tf

from lmtt_widgets import UnsupportedModelError, load_model, trace
from lmtt_widgets.tracing.capture import attention_capture, capture_route
from tiny_models import FAMILIES, ToyTokenizer, build, loaded


def _attention_modules(lm):
    blocks = lm.model.get_submodule(lm.adapter.blocks)
    return [b.get_submodule(lm.adapter.attention) for b in blocks]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gets_a_route_at_load_time_and_it_records_every_layer(family):
    lm = loaded(family)
    assert len(lm.capture_routes) == len(_attention_modules(lm))
    seen = []
    routes = list(lm.capture_routes)
    with attention_capture(lm.model, _attention_modules(lm), routes, lambda m, v, w, *_: seen.append(m)), torch.no_grad():
        lm.model(input_ids=torch.tensor([[5, 6, 7, 8]]), use_cache=False)
    assert [id(m) for m in seen] == [id(m) for m in _attention_modules(lm)]


def test_gptj_follows_what_the_installed_release_does():
    """GPT-J moved from its own _attn to the AttentionInterface in transformers 5.24: either way it traces."""
    lm = loaded("gptj")
    expected = "_attn" if hasattr(lm.model.transformer.h[0].attn, "_attn") else "interface"
    assert lm.capture_routes[0] == ("module_attn" if expected == "_attn" else "interface")
    tr = trace(lm, "hello there")
    with torch.no_grad():
        assert torch.equal(tr.logits, lm.model(input_ids=lm.tokenizer("hello there").input_ids).logits[0])


class _OwnAttn(torch.nn.Module):
    def forward(self, x):
        return self._attn(x)

    def _attn(self, x):
        return x


class _Opaque(torch.nn.Module):
    def forward(self, x):
        return torch.softmax(x, -1)


def test_routes_are_read_off_the_class():
    assert capture_route(_OwnAttn()) == "module_attn"
    with pytest.raises(UnsupportedModelError, match="neither looks its attention function up"):
        capture_route(_Opaque())


def test_a_model_whose_attention_cannot_be_recorded_is_refused_at_load_time():
    model = build("llama")
    for block in model.model.layers:
        block.self_attn.__class__ = type("OpaqueAttention", (_Opaque,), {})
    with pytest.raises(UnsupportedModelError, match=r"OpaqueAttention .*transformers \d"):
        load_model(model, ToyTokenizer())


def _declared_transformers():
    """The transformers range the installed lmtt-widgets declares (pyproject.toml)."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    return next(Requirement(r).specifier for r in requires("lmtt-widgets") if r.startswith("transformers"))


def test_transformers_version_is_within_the_declared_range():
    assert tf.__version__ in _declared_transformers()


def test_a_transformers_release_outside_the_range_is_named(monkeypatch):
    from lmtt_widgets.models import loading

    monkeypatch.setattr(loading, "_version_checked", False)
    monkeypatch.setattr(loading, "_installed_transformers", lambda: "9.0.0")
    upper = next(s.version for s in _declared_transformers() if s.operator == "<")
    with pytest.warns(RuntimeWarning, match=rf"transformers 9.0.0 is outside the range .*<{re.escape(upper)}"):
        loaded("llama")

"""Record attention probabilities and value states while running the model's OWN eager attention.

Families with transformers' AttentionInterface get a registered attention function ("lmtt_capture") that calls the
modeling file's ``eager_attention_forward`` (so softcapping, sliding windows and scaling stay exactly the model's)
and registers the eager mask function under the same name, so the causal mask is kept (without it attention
silently becomes bidirectional). GPT-J has no interface: its attention module's ``_attn`` is wrapped on the instance.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from typing import Callable

import torch

CAPTURE_NAME = "lmtt_capture"
Recorder = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], None]
_recorder: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("lmtt_recorder", default=None)
_registered = False


def _capture_attention(module, query, key, value, attention_mask, **kwargs):
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise RuntimeError(f"{type(module).__module__} defines no eager_attention_forward to trace through")
    out, weights = eager(module, query, key, value, attention_mask, **kwargs)
    record = _recorder.get()
    if record is not None:
        record(module, value, weights)
    return out, weights


def _ensure_registered() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(CAPTURE_NAME, _capture_attention)
    AttentionMaskInterface.register(CAPTURE_NAME, eager_mask)
    _registered = True


def _configs(model):
    seen, stack = [], [model.config]
    while stack:
        cfg = stack.pop()
        if any(cfg is s for s in seen):
            continue
        seen.append(cfg)
        for key in getattr(cfg, "sub_configs", {}) or {}:
            sub = getattr(cfg, key, None)
            if sub is not None:
                stack.append(sub)
    return seen


@contextlib.contextmanager
def interface_capture(model, record: Recorder):
    """Route attention through the capturing function; restore every config's implementation afterwards."""
    _ensure_registered()
    configs = _configs(model)
    saved = [cfg._attn_implementation_internal for cfg in configs]
    token = _recorder.set(record)
    try:
        for cfg in configs:
            cfg._attn_implementation_internal = CAPTURE_NAME
        yield
    finally:
        for cfg, impl in zip(configs, saved):
            cfg._attn_implementation_internal = impl
        _recorder.reset(token)


@contextlib.contextmanager
def module_attn_capture(attention_modules, record: Recorder):
    """Wrap each attention module's ``_attn(query, key, value, mask)`` on the instance, removed afterwards."""
    wrapped = []
    try:
        for module in attention_modules:
            original = getattr(module, "_attn", None)
            if original is None:
                from ..errors import UnsupportedModelError

                raise UnsupportedModelError(
                    f"{type(module).__name__} exposes no attention weights. Load the model with "
                    "attn_implementation='eager', e.g. AutoModelForCausalLM.from_pretrained(name, attn_implementation='eager')."
                )

            def _attn(query, key, value, attention_mask=None, *args, __orig=original, __module=module, **kwargs):
                out, weights = __orig(query, key, value, attention_mask, *args, **kwargs)
                record(__module, value, weights)
                return out, weights

            module._attn = _attn
            wrapped.append(module)
        yield
    finally:
        for module in wrapped:
            del module._attn  # the class method shows through again

"""One trace of a model at a time, and the model handed back exactly as it was found.

A trace adds hooks to the user's modules, switches every config's attention implementation and puts modules in
eval mode for the pass. Two traces of one model at once would each see the other's hooks fire (wrong scores) and
could restore each other's saved state; so traces of one model are serialised by a per-model lock. A trace started
from inside a trace of the same model on the same thread (a forward hook, an ``on_layer`` callback) would wait on
itself for ever: it is refused with :class:`TraceInUseError` instead.

The guard also snapshots what a trace may change and puts back whatever is still changed when the trace ends, so
even an interrupt that lands between two hook registrations leaves no hook of ours and no switched attention.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref

import torch
from torch.utils.hooks import RemovableHandle

from ..errors import TraceInUseError
from .capture import _configs

_guards: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_guards_lock = threading.Lock()
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs")


class _Guard:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner: int | None = None  # ident of the thread tracing the model now


def _guard_of(model: torch.nn.Module) -> _Guard:
    with _guards_lock:
        guard = _guards.get(model)
        if guard is None:
            guard = _guards[model] = _Guard()
        return guard


@contextlib.contextmanager
def exclusive(model: torch.nn.Module):
    """Hold ``model`` for one trace: wait for another thread's trace, refuse a nested one, restore on exit."""
    guard = _guard_of(model)
    me = threading.get_ident()
    if guard.owner == me:  # only this thread ever sets owner to its own ident, so this read needs no lock
        raise TraceInUseError(
            "This model is already being traced by this thread: trace() or explain() was called from inside a "
            "trace of the same model (from a forward hook or an on_layer callback). Explain the prompt after "
            "the first call has returned, or trace a separate copy of the model (copy.deepcopy(model))."
        )
    with guard.lock:
        guard.owner = me
        saved = _snapshot(model)
        try:
            yield
        finally:
            try:
                _restore(model, saved)
            finally:
                guard.owner = None


def serialised(trace_fn):
    """Decorate ``trace(model, ...)`` so that it runs under :func:`exclusive` of the loaded model."""
    from ..models.loading import load_model

    @functools.wraps(trace_fn)
    def wrapper(model, *args, **kwargs):
        lm = load_model(model)
        with exclusive(lm.model):
            return trace_fn(lm, *args, **kwargs)

    return wrapper


def _snapshot(model):
    configs = [(cfg, getattr(cfg, "_attn_implementation_internal", None)) for cfg in _configs(model)]
    modes = [(m, m.training) for m in model.modules()]
    # hook ids grow monotonically across torch: any hook added from now on has an id >= this watermark
    return configs, model.training, modes, RemovableHandle.next_id


def _restore(model, saved) -> None:
    """Put back what a trace may have left changed; a no-op (one comparison per module) when it cleaned up."""
    configs, was_training, modes, watermark = saved
    for cfg, impl in configs:
        if getattr(cfg, "_attn_implementation_internal", None) != impl:
            cfg._attn_implementation_internal = impl
    if model.training != was_training:
        model.train(was_training)
    for m, training in modes:
        if m.training != training:
            m.training = training
        for hooks in (m._forward_hooks, m._forward_pre_hooks):
            if hooks:
                for key in [k for k, fn in hooks.items() if k >= watermark and _ours(fn)]:
                    _remove_hook(m, key)


def _ours(fn) -> bool:
    """A hook the tracer adds (not the user's, nor another lmtt_widgets feature's)."""
    return str(getattr(fn, "__module__", None) or "").startswith("lmtt_widgets.tracing.")


def _remove_hook(module, key) -> None:
    for name in _HOOK_DICTS:
        getattr(module, name, {}).pop(key, None)

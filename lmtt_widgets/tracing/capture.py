"""Record attention probabilities and value states while running the model's OWN eager attention.

Two routes, chosen per attention module by what its class does in the installed transformers (a release may move a
family from one to the other: GPT-J moved to the AttentionInterface in 5.24):
- "interface": the module's forward looks its attention function up in transformers' AttentionInterface. A
  registered function ("lmtt_capture") calls the modeling file's ``eager_attention_forward`` (so softcapping,
  sliding windows and scaling stay exactly the model's); the eager mask function is registered under the same name,
  so the causal mask is kept (without it attention silently becomes bidirectional).
- "module_attn": the module computes attention in its own ``_attn(query, key, value, mask)`` method, which is
  wrapped on the instance for the pass.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import sys
import weakref
from typing import Callable, Literal

import torch

from ..errors import UnsupportedModelError

CAPTURE_NAME = "lmtt_capture"
# Query rows per call of the model's eager attention on prompts longer than this (see eager_in_row_blocks).
ATTENTION_ROW_BLOCK = 512


class AttentionReplay:
    """The exact call that produced one layer's attention probabilities, kept to compute them again later.

    Holds the query and key states the attention function was given (post-rotary, [1, H, T, dh] and [1, K, T, dh],
    the very tensors, not copies), the values, the mask and the other arguments; calling it runs the same function
    on them again, so the result is bit-identical to the traced probabilities. Nothing else of the model runs.
    """

    __slots__ = ("fn", "module", "args", "mask", "kwargs", "by_row")

    def __init__(self, fn, module, args: tuple, mask, kwargs: dict, by_row: bool = False):
        self.fn, self.module, self.args, self.mask, self.kwargs = fn, module, args, mask, kwargs
        # the function reads the causal structure from the mask alone, so one query row can go through it alone,
        # and blocks of rows as the pass ran them (eager_in_row_blocks)
        self.by_row = by_row and isinstance(mask, torch.Tensor) and mask.shape[-2] == args[0].shape[-2]

    def __call__(self) -> torch.Tensor:
        """[1, H, T, T] attention probabilities, in the model's dtype."""
        return self._run(self.args[0], self.mask)

    def row(self, i: int) -> torch.Tensor:
        """[1, H, T] the probabilities of query position i. Computed from that query alone when the function
        allows it (T times less work): the same function, but a one-row product may round differently from the
        full one in the last bit (float32: ~1e-7 relative); otherwise the row of the full replay."""
        if not self.by_row:
            return self()[:, :, i]
        return self._run(self.args[0][:, :, i : i + 1], self.mask[:, :, i : i + 1])[:, :, 0]

    def head(self, h: int) -> torch.Tensor:
        """[T, T] the probabilities of head h alone, from its query and its key/value head (GQA: h // (H / K)):
        1/H of the work and memory, and the same products as the full replay, batch entry by batch entry."""
        query, key, value = self.args[:3]
        kv = h // (query.shape[1] // key.shape[1])
        return self._run(query[:, h : h + 1], self.mask, key[:, kv : kv + 1], value[:, kv : kv + 1])[0, 0]

    def _run(self, query, mask, key=None, value=None):
        key = self.args[1] if key is None else key
        value = self.args[2] if value is None else value
        with eval_mode(self.module), torch.no_grad():  # a dropout switched on since the trace must not apply
            if self.by_row and query.shape[-2] == mask.shape[-2]:  # every row: in the blocks the pass used
                return eager_in_row_blocks(self.fn, self.module, query.detach(), key.detach(), value.detach(),
                                           mask, self.kwargs)[1]
            return self.fn(self.module, query.detach(), key.detach(), value.detach(), mask, *self.args[3:],
                           **self.kwargs)[1]


def eager_in_row_blocks(eager, module, query, key, value, mask, kwargs: dict, block: int | None = None):
    """The model's own eager attention, called on blocks of ``block`` (default ATTENTION_ROW_BLOCK) query rows, each
    with only the keys it can see.

    On a causal mask, rows r0..r1-1 see no key past r1-1: giving them keys :r1 and the mask's [r0:r1, :r1] computes
    the same probabilities (the keys left out had exp(mask) = 0) with about half the products of the full call, and
    temporaries of [H, block, r1] instead of [H, T, T] (2.4 GB per tensor at 8,192 tokens on SmolLM2). Rounding may
    differ from the full call in the last bit (shorter sums). Returns (output, [B, H, T, T] probabilities, zero above
    the diagonal); falls back to one full call where the mask is not a causal [.., T, T] tensor or the function's
    output is not laid out [B, T, H, dh].
    """
    T, block = query.shape[-2], block or ATTENTION_ROW_BLOCK
    if T <= block or not _causal_shape(mask, T, key.shape[-2]) or not _blocks_see_no_later_key(mask, block):
        return eager(module, query, key, value, mask, **kwargs)  # not causal: the function as it is
    outputs, weights = [], None
    for r0 in range(0, T, block):
        r1 = min(T, r0 + block)
        out, w = eager(module, query[:, :, r0:r1], key[:, :, :r1], value[:, :, :r1], mask[:, :, r0:r1, :r1], **kwargs)
        if out.dim() != 4 or out.shape[1] != r1 - r0 or w.shape[-2:] != (r1 - r0, r1):
            return eager(module, query, key, value, mask, **kwargs)  # another layout: the function as it is
        if weights is None:  # every entry is written below: no zero-fill of the whole [.., T, T] first
            weights = w.new_empty(*w.shape[:-2], T, T)
        weights[..., r0:r1, :r1] = w
        weights[..., r0:r1, r1:] = 0  # keys these rows cannot see
        outputs.append(out)
    return torch.cat(outputs, dim=1), weights


def _causal_shape(mask, T: int, S: int) -> bool:
    return isinstance(mask, torch.Tensor) and mask.dim() == 4 and mask.shape[-2:] == (T, T) and S == T


# masks already read (by id, while the mask lives), per block size: the layers of a pass and every later replay share
# one mask. (A WeakKeyDictionary would compare tensors with ==, which is elementwise.)
_causal_masks: dict[int, tuple[weakref.ref, dict[int, bool]]] = {}


def _blocks_see_no_later_key(mask: torch.Tensor, block: int) -> bool:
    """No row of any block of ``block`` rows sees a key after the block's last row (read once per mask)."""
    ref, seen = _causal_masks.get(id(mask), (None, None))
    if ref is None or ref() is not mask:
        key = id(mask)
        seen = {}
        _causal_masks[key] = (weakref.ref(mask, lambda _r, key=key: _causal_masks.pop(key, None)), seen)
    if block not in seen:
        T = mask.shape[-2]
        seen[block] = all(_hidden(mask[:, :, r0 : r0 + block, r0 + block :]) for r0 in range(0, T, block))
    return seen[block]


def _hidden(mask_part: torch.Tensor) -> bool:
    """Every entry of this part of an attention mask hides its key (an additive mask's minimum, or False)."""
    if not mask_part.numel():
        return True
    if mask_part.dtype == torch.bool:  # True: may attend
        return not bool(mask_part.any())
    return bool(mask_part.max() <= torch.finfo(mask_part.dtype).min / 2)


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """Dropout off inside the block (``.training`` flags only); every module put back exactly as it was."""
    training = [m for m in module.modules() if m.training]
    for m in training:
        m.training = False
    try:
        yield
    finally:
        for m in training:
            m.training = True


# record(attention module, value states, attention probabilities, replay of the call that computed them)
Recorder = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, AttentionReplay], None]
_recorder: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("lmtt_recorder", default=None)
_registered = False


Route = Literal["interface", "module_attn"]


def capture_route(module: torch.nn.Module) -> Route:
    """How the attention weights of ``module`` can be recorded, read off its class (no forward pass needed).

    The names a function's code refers to (``co_names``) say whether its forward looks the attention function up
    in ``ALL_ATTENTION_FUNCTIONS`` or calls ``self._attn``; this holds without the source files being installed.
    Decorators (transformers wraps some forwards to rename keyword arguments) are looked through.
    """
    cls = type(module)
    forward = inspect.unwrap(cls.forward)
    names = set(getattr(getattr(forward, "__code__", None), "co_names", ()))
    file_globals = vars(sys.modules.get(cls.__module__, object()))
    if "ALL_ATTENTION_FUNCTIONS" in names and callable(file_globals.get("eager_attention_forward")):
        return "interface"
    if "_attn" in names and callable(getattr(module, "_attn", None)):
        return "module_attn"
    import transformers

    raise UnsupportedModelError(
        f"{cls.__module__}.{cls.__name__} (transformers {transformers.__version__}) neither looks its attention "
        "function up in transformers' AttentionInterface (with an eager_attention_forward in its modeling file) nor "
        "computes attention in an _attn method, so its attention weights cannot be recorded. Use a transformers "
        "release within the range lmtt-widgets declares, or report the model class."
    )


def _capture_attention(module, query, key, value, attention_mask, **kwargs):
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise RuntimeError(f"{type(module).__module__} defines no eager_attention_forward to trace through")
    out, weights = eager_in_row_blocks(eager, module, query, key, value, attention_mask, kwargs)
    record = _recorder.get()
    if record is not None:
        record(module, value, weights, AttentionReplay(eager, module, (query, key, value), attention_mask, kwargs,
                                                         by_row=True))
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
            original = module._attn  # capture_route checked it exists

            def _attn(query, key, value, attention_mask=None, *args, __orig=original, __module=module, **kwargs):
                out, weights = __orig(query, key, value, attention_mask, *args, **kwargs)
                replay = AttentionReplay(lambda _m, *a, __o=__orig, **k: __o(*a, **k), __module,
                                         (query, key, value, *args), attention_mask, kwargs)
                record(__module, value, weights, replay)
                return out, weights

            module._attn = _attn
            wrapped.append(module)
        yield
    finally:
        for module in wrapped:
            del module._attn  # the class method shows through again


@contextlib.contextmanager
def attention_capture(model, attention_modules, routes: list[Route], record: Recorder):
    """Record every attention module through its own route (both routes may mix in one model)."""
    wrapped = [m for m, r in zip(attention_modules, routes) if r == "module_attn"]
    with contextlib.ExitStack() as stack:
        if len(wrapped) < len(attention_modules):
            stack.enter_context(interface_capture(model, record))
        if wrapped:
            stack.enter_context(module_attn_capture(wrapped, record))
        yield

"""Per-layer tensors of a long trace, dropped after scoring and computed again from that layer alone when read.

At 4,096 tokens a SmolLM2 trace would hold ~2 GB of per-layer tensors (residual after attention, head signals,
projection outputs, neuron activations) that the scores no longer need and a user reads one layer at a time (a
neuron view, a head's logit attribution). Past REBUILD_LIMIT bytes, each record keeps only its block's input and
output (shared with its neighbours along the stream) and its attention call, and the rest is computed again on
first read by running that one block on its stored input, with the arguments the pass gave it (rotary embeddings,
mask), under the same hooks: the same operations on the same inputs, so the same numbers. Nothing else of the model
runs. The rebuilt block's output is compared with the traced one: a model changed since the trace (weights, a new
hook) is refused with an error instead of describing another computation.

Records whose update an outside hook edited, or whose attention output projection had another pre-hook, are kept
whole (running such hooks again need not give the same result).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import torch

from ..errors import LmttError
from .tracer import DROPPABLE

if TYPE_CHECKING:
    from .facts import ModelFacts
    from .tracer import LayerRecord

# Bytes of droppable per-layer tensors (all layers) from which a trace drops them after scoring (~1.9 GB at 4,096
# tokens on SmolLM2; 0.9 GB at 2,048, which keeps them: head details and neuron views stay instant there).
REBUILD_LIMIT = 2**30
# Rebuilt layers kept at once per trace (a view reads several tensors of one layer, sometimes of its neighbour).
KEEP_REBUILT = 2


class StaleTraceError(LmttError, RuntimeError):
    """A layer of a long trace cannot be computed again: the model changed since the trace."""


def droppable_bytes(n_layers: int, n_tokens: int, d: int, hd: int, F: int, *, parallel: bool = False,
                    post_norms: bool = False) -> int:
    """What :data:`~.tracer.DROPPABLE` costs over all layers of a float32 trace of ``n_tokens``: the residual after
    attention (sequential blocks), the two projections' outputs (and their post-norm outputs), the head signals
    (``hd`` = heads x head width) and the neuron activations (``F``)."""
    per_token = (0 if parallel else d) + (4 if post_norms else 2) * d + hd + F
    return n_layers * n_tokens * per_token * 4


class LayerRebuilder:
    """Everything needed to run one block of a trace again: the model's facts and the block's call arguments."""

    __slots__ = ("facts", "index", "args", "kwargs", "positional", "cache")

    def __init__(self, facts: ModelFacts, index: int, args: tuple, kwargs: dict, cache: RebuildCache):
        self.facts, self.index, self.cache = facts, index, cache
        # the hidden states are the record's resid_pre: kept once, not here
        self.positional = bool(args)
        self.args = tuple(args[1:])
        self.kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}

    def record(self, slim: LayerRecord) -> LayerRecord:
        """The whole record of this layer (computed again, or the one computed last time if still kept)."""
        found = self.cache.get(self.index)
        if found is None:
            found = self._run(slim)
            self.cache.put(self.index, found)
        return found

    def _run(self, slim: LayerRecord) -> LayerRecord:
        from .guard import exclusive
        from .instrument import instrumented
        from .recorder import LayerRecorder
        from .tracer import Trace

        facts, i = self.facts, self.index
        block = facts.blocks[i]
        hidden = slim.resid_pre.to(facts.dtype)[None]  # float32 copies of a bf16 pass convert back exactly
        scratch = Trace(lm=facts.lm, prompt=None, input_ids=torch.empty(0, dtype=torch.long), tokens=[],
                        topology=facts.topology, n_heads=facts.n_heads, n_kv_heads=facts.n_kv_heads,
                        head_dim=facts.head_dim)
        recorder = LayerRecorder(facts, scratch, keep_attention=False, on_layer=None, after_layer=None, only=i)
        with exclusive(facts.net), instrumented(facts.net, recorder.hooks(),
                                                facts.capture(recorder.record_attention)):
            if self.positional:
                block(hidden, *self.args, **self.kwargs)
            else:
                block(hidden_states=hidden, **self.kwargs)
        if not scratch.layers:
            raise StaleTraceError(f"layer {i}: running the block again recorded nothing; explain the prompt again.")
        fresh = scratch.layers[0]
        _check_same(fresh.resid_post, slim.resid_post, i, facts.dtype)
        return fresh


def _check_same(now: torch.Tensor, then: torch.Tensor, layer: int, dtype: torch.dtype) -> None:
    scale = float(then.abs().max()) or 1.0
    gap = float((now - then).abs().max())
    if gap > 8 * torch.finfo(dtype).eps * scale:
        raise StaleTraceError(
            f"layer {layer}: running this block again on its traced input gives an output {gap:.3g} away from the "
            "traced one (its weights, hooks or attention changed since the trace), so its tensors cannot be "
            "recomputed. Explain the prompt again with the model as it is now."
        )


class RebuildCache:
    """The last KEEP_REBUILT rebuilt layers of one trace (least recently read dropped first)."""

    def __init__(self, size: int = KEEP_REBUILT):
        self.size, self._layers = size, OrderedDict()

    def get(self, index: int):
        rec = self._layers.get(index)
        if rec is not None:
            self._layers.move_to_end(index)
        return rec

    def put(self, index: int, rec) -> None:
        self._layers[index] = rec
        self._layers.move_to_end(index)
        while len(self._layers) > self.size:
            self._layers.popitem(last=False)


def slim(rec: LayerRecord, rebuilder: LayerRebuilder) -> None:
    """Drop the record's :data:`~.tracer.DROPPABLE` tensors; reading one later runs its block again (LayerRecord.__getattr__)."""
    rec.rebuilder = rebuilder
    for name in DROPPABLE:
        rec.__dict__.pop(name, None)

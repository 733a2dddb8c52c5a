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

What a target's logit attribution or a node's lens reads, a few positions of every layer, is computed from the
slim record itself by :func:`layer_rows` without running any block: a target change in the widget would otherwise
run every block again (a whole forward pass at 4,096 tokens).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..models.weights import upcast
from .tracer import DROPPABLE
from .versions import StaleTraceError, check_block  # noqa: F401 - StaleTraceError is imported from here too

if TYPE_CHECKING:
    from .facts import ModelFacts
    from .tracer import LayerRecord, LayerWeights

# Bytes of droppable per-layer tensors (all layers) from which a trace drops them after scoring (~1.9 GB at 4,096
# tokens on SmolLM2; 0.9 GB at 2,048, which keeps them: head details and neuron views stay instant there).
REBUILD_LIMIT = 2**30
# Rebuilt layers kept at once per trace (a view reads several tensors of one layer, sometimes of its neighbour).
KEEP_REBUILT = 2


def droppable_bytes(n_layers: int, n_tokens: int, d: int, hd: int, F: int, *, parallel: bool = False,
                    post_norms: bool = False) -> int:
    """What :data:`~.tracer.DROPPABLE` costs over all layers of a float32 trace of ``n_tokens``: the residual after
    attention (sequential blocks), the two projections' outputs (and their post-norm outputs), the head signals
    (``hd`` = heads x head width) and the neuron activations (``F``)."""
    per_token = (0 if parallel else d) + (4 if post_norms else 2) * d + hd + F
    return n_layers * n_tokens * per_token * 4


class LayerRebuilder:
    """Everything needed to run one block of a trace again: the model's facts and the block's call arguments."""

    __slots__ = ("facts", "index", "args", "kwargs", "positional", "cache", "versions", "blocks_path")

    def __init__(self, facts: ModelFacts, index: int, args: tuple, kwargs: dict, cache: RebuildCache):
        self.facts, self.index, self.cache = facts, index, cache
        # the hidden states are the record's resid_pre: kept once, not here
        self.positional = bool(args)
        self.args = tuple(args[1:])
        self.kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        # the trace's own record of the parameters the pass saw (Trace.versions, handed over by trace() once the
        # pass ends: see :meth:`follow`); held here, not reached through the trace, so that a record read after its
        # trace is gone is still checked, and without a reference to the trace (no cycle keeping its tensors)
        self.versions, self.blocks_path = None, ""

    def follow(self, versions, blocks_path: str) -> None:
        """Check this block against ``versions`` (the trace's, taken when its pass ended) from now on."""
        self.versions, self.blocks_path = versions, blocks_path

    def check_unchanged(self) -> None:
        """Refuse (StaleTraceError) when the block's weights changed since the trace: the rows computed from the
        slim record (:func:`layer_rows`) read the live weights, so a changed model would be described silently."""
        if self.versions is not None:
            check_block(self.versions, self.blocks_path, self.index)

    def record(self, slim: LayerRecord) -> LayerRecord:
        """The whole record of this layer (computed again, or the one computed last time if still kept)."""
        found = self.cache.get(self.index)
        if found is None:
            found = self._run(slim)
            self.cache.put(self.index, found)
        return found

    def mlp_alone(self, rows: LayerRows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(neurons [P, F], MLP output [P, d], MLP update [P, d]) of running this block's MLP alone on ``rows``, or
        None where that is not possible or disagrees with the traced block (see :func:`neuron_rows`)."""
        from .guard import exclusive

        facts, adapter = self.facts, self.facts.lm.adapter
        parent, _, _ = adapter.mlp_out_proj.rpartition(".")
        if not parent:
            return None
        block = facts.blocks[self.index]
        mlp, out_proj = block.get_submodule(parent), block.get_submodule(adapter.mlp_out_proj)
        norm = block.get_submodule(adapter.mlp_norm or adapter.attn_norm)
        post = block.get_submodule(adapter.mlp_post_norm) if adapter.mlp_post_norm else None
        stream = rows.resid_pre if facts.topology == "parallel" else rows.resid_mid
        seen = {}
        param = next(norm.parameters(), None)
        device = facts.device if param is None or param.is_meta else param.device
        with exclusive(facts.net), torch.no_grad():  # (our hooks must not fire in another thread's trace)
            pre = out_proj.register_forward_pre_hook(lambda m, args: seen.__setitem__("in", args[0]))
            after = out_proj.register_forward_hook(lambda m, args, out: seen.__setitem__("out", out))
            try:
                output = mlp(norm(stream.to(device=device, dtype=facts.dtype)[None]))
                update = output if post is None else post(output)
            except Exception:  # noqa: BLE001 - an MLP that does not run alone (BLOOM's also takes the residual,
                return None  # an offloaded one's weights load with its block): the exact rebuild runs instead
            finally:
                pre.remove()
                after.remove()
        if "in" not in seen or not isinstance(update, torch.Tensor) or update.shape[-2:] != rows.mlp_update.shape:
            return None
        update = upcast(update.detach()[0])
        if not _close(update, rows.mlp_update, rows.resid_post, facts.dtype):
            return None
        return upcast(seen["in"].detach()[0]), upcast(seen["out"].detach()[0]), update

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


def _close(computed: torch.Tensor, derived: torch.Tensor, stream: torch.Tensor, dtype: torch.dtype) -> bool:
    """The MLP update run alone agrees with the one derived from the traced output, to the model's rounding."""
    rel = 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4
    return bool(((computed - derived).abs() <= rel * (stream.abs().amax(-1, keepdim=True) + 1)).all())


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


@dataclass
class LayerRows:
    """One layer's per-position tensors at positions P (rows in the order asked); shapes as in LayerRecord."""

    resid_pre: torch.Tensor  # [P, d]
    resid_mid: torch.Tensor  # [P, d] (parallel blocks: block input + attention update)
    resid_post: torch.Tensor  # [P, d]
    head_signal: torch.Tensor  # [P, H, dh]
    attn_out: torch.Tensor  # [P, d]
    attn_update: torch.Tensor  # [P, d]
    mlp_out: torch.Tensor  # [P, d]
    mlp_update: torch.Tensor  # [P, d]
    neurons: torch.Tensor | None = None  # [P, F] where the MLP already ran for these rows (bf16/fp16 slim records)


def layer_rows(rec: LayerRecord, weights: LayerWeights, positions: list[int]) -> LayerRows:
    """The layer's tensors at ``positions``: the record's rows, or for a slim record (long prompts) the same
    computed from what it kept, without running the block: O(P x T) instead of a block over all T positions.

    A slim record holds no external edit and no other hook on its attention output projection (those are kept
    whole), so its decomposition identities hold and give every row: head signals = attention rows x values (the
    stored call computes the rows), the attention output = signals through W_O (+ bias), its post-norm with the
    traced statistics, and the MLP's update = what the block added beyond the attention's. Equal to the traced
    tensors up to rounding (float32: ~1e-6 relative; the model's own rounding where it computes in bf16).
    """
    P = list(positions)
    if rec.slim:
        rec.rebuilder.check_unchanged()
    else:
        parallel = rec.resid_mid is None
        mid = rec.resid_pre[P] + rec.attn_update[P] if parallel else rec.resid_mid[P]
        return LayerRows(rec.resid_pre[P], mid, rec.resid_post[P], rec.head_signal[P], rec.attn_out[P],
                         rec.attn_update[P], rec.mlp_out[P], rec.mlp_update[P])
    low = rec.model_dtype in (torch.float16, torch.bfloat16)
    # a bf16/fp16 model rounds each of these to its dtype: so do we, to follow its numbers (not float32's)
    as_model = (lambda t: t.to(rec.model_dtype).to(t.dtype)) if low else (lambda t: t)
    values = upcast(rec.values)  # [K, T, dh]
    A = torch.stack([rec.attention_row(p) for p in P]).to(values.dtype)  # [P, H, T]
    H = A.shape[1]
    v = values.repeat_interleave(H // values.shape[0], dim=0)  # GQA: query head h reads kv head h // (H / K)
    signal = as_model(torch.einsum("phj,hjk->phk", A, v))  # [P, H, dh]
    w_o = weights.w_o.to(signal.device)
    attn_out = signal.reshape(len(P), -1) @ w_o.t()
    if weights.b_o is not None:
        attn_out = attn_out + weights.b_o.to(signal.device)
    attn_out = as_model(attn_out)
    pre, post = upcast(rec.resid_pre[P]), upcast(rec.resid_post[P])
    norm = weights.attn_post_norm
    attn_update = attn_out if norm is None else as_model(norm.apply(attn_out, upcast(rec.attn_post_rstd[P])))
    mid = as_model(pre + attn_update)  # the residual add, rounded as the model's
    mlp_update = post - mid
    mlp_out = mlp_update if weights.mlp_post_norm is None else _before_post_norm(
        weights.mlp_post_norm, mlp_update, upcast(rec.mlp_post_rstd[P]))
    rows = LayerRows(pre, mid, post, signal, attn_out, attn_update, mlp_out, mlp_update)
    if low:  # post - mid also holds the stream's rounding (up to half a bf16 step of post): run the MLP instead
        ran = rec.rebuilder.mlp_alone(rows)
        if ran is not None:
            rows = dataclasses.replace(rows, neurons=ran[0], mlp_out=ran[1], mlp_update=ran[2])
    return rows


def _before_post_norm(norm, update: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    """The input of an RMS post-norm whose output is ``update``, given its traced statistics (0 where its gain is 0)."""
    if norm.kind == "layer":
        raise NotImplementedError("post-norms of LayerNorm kind are not linearised")
    scale = rstd.unsqueeze(-1) * norm.weight.to(update.device)
    if norm.bias is not None:
        update = update - norm.bias.to(update.device)
    return torch.where(scale != 0, update / torch.where(scale != 0, scale, 1), 0)


def neuron_rows(rec: LayerRecord, weights: LayerWeights, positions: list[int]) -> tuple[torch.Tensor, LayerRows]:
    """The layer's neuron activations [P, F] at ``positions`` and its rows (:func:`layer_rows`), the MLP's update
    among them being the one these activations wrote.

    A slim record runs its MLP alone on those rows (its input is the stream at the MLP, known from the rows), under
    the model's own modules and hooks. What that wrote must be what the block added beyond its attention (the
    traced output says so): if it is not, or the MLP is no module that runs alone (OPT's projections sit in the
    block; BLOOM's MLP also takes the residual), the whole block runs again instead (:class:`LayerRebuilder`).
    """
    rows = layer_rows(rec, weights, positions)
    if not rec.slim:
        return rec.neurons[list(positions)], rows
    if rows.neurons is not None:  # layer_rows already ran the MLP alone (a bf16/fp16 model)
        return rows.neurons, rows
    ran = rec.rebuilder.mlp_alone(rows)
    if ran is None:
        return rec.neurons[list(positions)], layer_rows(rec.rebuilder.record(rec), weights, positions)
    neurons, mlp_out, mlp_update = ran
    return neurons, dataclasses.replace(rows, mlp_out=mlp_out, mlp_update=mlp_update)

"""One forward pass with hooks on the user's own model, recording everything the decomposition needs.

Nothing is converted and no weight is touched: hooks are added for the pass and removed after it, and the
attention implementation is restored. Captured tensors are upcast to float32 for the maths that follows.

This module holds what a trace produces (:class:`Trace`, :class:`LayerRecord`) and :func:`trace`, which puts three
pieces together: the model's facts, read once per trace (facts.py); the per-layer recorder, whose hooks store each
block's tensors and turn them into a checked record as the block returns (recorder.py); and the pass itself, with
the model set up and restored exactly however it ends (instrument.py), under a per-model lock (guard.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import PromptError, UnsupportedModelError
from ..models.loading import LoadedModel, load_model
from ..models.weights import upcast
from . import edits
from .capture import AttentionReplay
from .edits import ExternalEdit
from .guard import serialised
from .memory import reusing_heap
from .norms import NormSpec
from .prompts import read_prompt
from .versions import ParameterVersions, check_block, hook_state

# Attention matrices of all layers are kept on the trace when L*H*T*T is at most this many numbers (256 MB);
# longer prompts keep them only while their layer's contributions are computed, and keep instead each layer's
# attention call (query and key states, the mask shared by the layers): LayerRecord.attention_probs() recomputes
# that layer's probabilities from it, bit-identically, without running the model (~200 MB at 2,048 tokens on SmolLM2).
KEEP_ATTENTION_LIMIT = 64 * 2**20
# From this many attention numbers per layer (64 MB) on, freed memory is handed back to the system after each
# layer (see memory.py); below it the ~10 ms per layer would cost more than the fragmentation.
TRIM_ATTENTION_LIMIT = 16 * 2**20


# LayerRecord fields a long trace may drop after scoring and compute again on demand (rebuild.py). None has a
# default: reading a dropped one goes through LayerRecord.__getattr__.
DROPPABLE = frozenset({"resid_mid", "head_signal", "attn_out", "attn_update", "mlp_out", "mlp_update", "neurons"})


@dataclass
class LayerRecord:
    """What one block did at every position. Shapes: T tokens, d width, H heads, K kv heads, dh head width, F neurons."""

    index: int
    resid_pre: torch.Tensor  # [T, d] block input
    resid_mid: torch.Tensor | None  # [T, d] after the attention update (None for parallel blocks)
    resid_post: torch.Tensor  # [T, d] block output
    attention: torch.Tensor  # [H, T, T] probabilities
    values: torch.Tensor  # [K, T, dh] value states before GQA repetition
    head_signal: torch.Tensor  # [T, H, dh] input of the attention output projection, split into heads
    attn_out: torch.Tensor  # [T, d] output of the attention output projection
    attn_update: torch.Tensor  # [T, d] what attention adds to the residual (after a post-norm, if any)
    mlp_out: torch.Tensor  # [T, d] output of the MLP output projection
    mlp_update: torch.Tensor  # [T, d] what the MLP adds to the residual
    neurons: torch.Tensor  # [T, F] input of the MLP output projection (post-activation, post-gate)
    attn_post_rstd: torch.Tensor | None = None  # [T] post-norm statistics (Gemma 2/3)
    mlp_post_rstd: torch.Tensor | None = None
    model_dtype: torch.dtype = torch.float32  # what the model computed in (tolerances depend on it)
    # Other forward pre-hooks sat on the attention output projection (e.g. a head ablation), so head_signal may
    # differ from attention x values on any row.
    signal_hooked: bool = True
    # When the trace does not keep ``attention``: the layer's attention call (its query and key states, mask and
    # arguments), which computes the same probabilities again in milliseconds without re-running the model.
    attention_replay: AttentionReplay | None = None
    # What the update's result holds beyond its parts (code outside the decomposed modules edited the stream: see
    # edits.py), [T, d] with 0 on rows within rounding, or None when the identity holds everywhere.
    edit_attn: torch.Tensor | None = None  # in the attention update (the block's one update if parallel)
    edit_mlp: torch.Tensor | None = None
    # On long prompts: what runs this block again to compute the tensors dropped after scoring (rebuild.py).
    rebuilder: object | None = None

    def __getattr__(self, name: str):
        # Only reached for an attribute not found the usual way: a tensor a long trace dropped (rebuild.py).
        rebuilder = self.__dict__.get("rebuilder")
        if rebuilder is not None and name in DROPPABLE:
            return getattr(rebuilder.record(self), name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def slim(self) -> bool:
        """The record dropped its per-position tensors after scoring; reading one runs this block again."""
        return self.__dict__.get("rebuilder") is not None

    def attention_probs(self) -> torch.Tensor:
        """[H, T, T] attention probabilities: the kept ones, or the same computed again from the stored call."""
        if self.attention is not None:
            return self.attention
        if self.attention_replay is None:
            raise RuntimeError(f"layer {self.index}: this record kept neither its attention nor its attention call")
        return upcast(self.attention_replay().detach()[0])

    def head_attention(self, h: int) -> torch.Tensor:
        """[T, T] attention probabilities of head h: the kept ones, or that head's alone computed again."""
        if self.attention is not None:
            return self.attention[h]
        if self.attention_replay is None:
            raise RuntimeError(f"layer {self.index}: this record kept neither its attention nor its attention call")
        return upcast(self.attention_replay.head(h).detach())

    def attention_row(self, i: int) -> torch.Tensor:
        """[H, T] attention probabilities of target i: the kept row, or that row alone computed again (see
        :meth:`AttentionReplay.row`: equal to the kept row up to the last bit in float32)."""
        if self.attention is not None:
            return self.attention[:, i]
        if self.attention_replay is None:
            raise RuntimeError(f"layer {self.index}: this record kept neither its attention nor its attention call")
        return upcast(self.attention_replay.row(i).detach()[0])


@dataclass
class LayerWeights:
    """Float32 views of one block's projections, W in [out, in] layout."""

    w_o: torch.Tensor  # [d, H*dh]
    b_o: torch.Tensor | None
    w_out: torch.Tensor  # [d, F]
    b_out: torch.Tensor | None
    attn_post_norm: NormSpec | None = None
    mlp_post_norm: NormSpec | None = None


@dataclass
class Trace:
    """The exact record of one forward pass (batch size 1)."""

    lm: LoadedModel
    prompt: str | None
    input_ids: torch.Tensor  # [T]
    tokens: list[str]  # decoded text of each token
    topology: str
    n_heads: int
    n_kv_heads: int
    head_dim: int
    layers: list[LayerRecord] = field(default_factory=list)
    layer_weights: list[LayerWeights] = field(default_factory=list)  # read through ``weights`` (checked)
    final_norm: NormSpec | None = None
    final_rstd: torch.Tensor | None = None  # [T]
    final_resid: torch.Tensor | None = None  # [T, d] input of the final norm
    logits: torch.Tensor | None = None  # [T, V] exactly what the model returned (model dtype)
    external_edits: list[ExternalEdit] = field(default_factory=list)  # edits of the stream by outside code
    # the model's parameters as the pass saw them (versions.py), with the paths of its blocks and output head;
    # None: not followed
    versions: ParameterVersions | None = None
    blocks_path: str = ""
    head_paths: tuple[str, ...] = ()
    hooks_seen: tuple | None = None  # the user's forward hooks on the model during the pass (versions.hook_state)

    @property
    def weights(self) -> "CheckedWeights":
        """Each layer's weights the decomposition reads, refused (StaleTraceError) once changed since the pass."""
        return CheckedWeights(self)

    def check_layer(self, layer: int) -> None:
        """Refuse (StaleTraceError) when a parameter of block ``layer`` changed since the pass."""
        if self.versions is not None:
            check_block(self.versions, self.blocks_path, range(len(self.layers))[layer])  # (a negative index too)

    def check_head(self) -> None:
        """Refuse (StaleTraceError) when the final norm or the unembedding changed since the pass."""
        if self.versions is not None and self.head_paths:
            self.versions.check("the output head", tuple(f"{p}." for p in self.head_paths))

    def check_model(self) -> None:
        """Refuse (StaleTraceError) when any parameter of the model changed since the pass (before running it
        again to compare with the trace: patching, gradients)."""
        if self.versions is not None:
            self.versions.check("the model")

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def attention_kept(self) -> bool:
        return all(rec.attention is not None for rec in self.layers)


def tokenize(lm: LoadedModel, prompt) -> tuple[torch.Tensor, str | None]:
    """Token ids [T] of a prompt (see prompts.read_prompt for the forms accepted), checked for length and vocabulary."""
    ids, text = read_prompt(lm.tokenizer, prompt)
    limit = context_length(lm.model.config)
    if limit is not None and ids.numel() > limit:
        raise PromptError(
            f"The prompt has {ids.numel()} tokens but {lm.name} reads at most {limit}. Shorten the prompt "
            f"(e.g. keep its last {limit} tokens)."
        )
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    outside = ((ids < 0) | (ids >= vocab)).nonzero()
    if outside.numel():
        pos = int(outside[0, 0])
        raise PromptError(
            f"Token id {int(ids[pos])} at position {pos} is outside the vocabulary of {lm.name} (0..{vocab - 1}). "
            "Were the ids made by another model's tokenizer? Pass the text instead."
        )
    return ids, text


def context_length(config) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def token_texts(tokenizer, ids) -> list[str]:
    """The text each token contributes, spaces and newlines kept (the widgets make them visible)."""
    out = []
    for i in ids.tolist():
        text = tokenizer.decode([i], clean_up_tokenization_spaces=False)
        if "\ufffd" in text:  # a byte-fallback piece of a multi-byte character: show the raw token instead
            text = tokenizer.convert_ids_to_tokens(i)
        out.append(text)
    return out


def _n_kv_heads(config, n_heads: int) -> int:
    value = getattr(config, "num_key_value_heads", None)
    return int(value) if value else n_heads


def _n_heads(config) -> int:
    for name in ("num_attention_heads", "n_head", "num_heads"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise UnsupportedModelError("cannot find the number of attention heads in the model config")


@serialised  # one trace of a model at a time; the model is restored exactly whatever happens
@torch.no_grad()
def trace(
    model,
    prompt,
    *,
    on_layer: Callable[[LayerRecord, LayerWeights], None] | None = None,
    keep_attention: bool | None = None,
    logits_at: list[int] | None = None,
) -> Trace:
    """Run ``prompt`` through ``model`` once and record every block.

    Args:
        model: a :class:`LoadedModel` or anything :func:`load_model` accepts.
        prompt: text, a list of token ids, or a [1, T] id tensor.
        on_layer: called with each block's record as soon as the block has run (streaming consumers such as the
            contribution engine use it so long prompts never hold every layer's attention at once).
        keep_attention: keep [H, T, T] attention of every layer on the trace; default: when it fits in 256 MB.
        logits_at: unembed only these positions in the pass; ``Trace.logits`` is then a
            :class:`~lmtt_widgets.projections.logits.LogitRows` that computes the other rows from the final residual.
    """
    # these modules build this module's records, so they are imported here rather than at the top
    from .facts import read_facts
    from .instrument import instrumented
    from .rebuild import REBUILD_LIMIT, droppable_bytes
    from .recorder import LayerRecorder
    from ..projections.logits import LogitRows, keep_rows

    lm = load_model(model)
    ids, text = tokenize(lm, prompt)
    facts = read_facts(lm)
    T = ids.numel()
    if keep_attention is None:
        keep_attention = facts.n_layers * facts.n_heads * T * T <= KEEP_ATTENTION_LIMIT
    result = Trace(
        lm=lm,
        prompt=text,
        input_ids=ids,
        tokens=token_texts(lm.tokenizer, ids),
        topology=facts.topology,
        n_heads=facts.n_heads,
        n_kv_heads=facts.n_kv_heads,
        head_dim=facts.head_dim,
        layer_weights=list(facts.weights),
        final_norm=facts.final_norm,
    )
    # a long streamed trace frees a large attention after every layer: malloc reuses it for the next layer and hands
    # it back when much lies free (memory.py)
    trim = not keep_attention and facts.device.type == "cpu" and facts.n_heads * T * T >= TRIM_ATTENTION_LIMIT
    # past REBUILD_LIMIT, per-position tensors are dropped once scored and computed again when read (rebuild.py)
    d, F = facts.weights[0].w_out.shape
    slim = not keep_attention and droppable_bytes(
        facts.n_layers, T, d, facts.weights[0].w_o.shape[1], F, parallel=facts.topology == "parallel",
        post_norms=facts.lm.adapter.attn_post_norm is not None) > REBUILD_LIMIT
    attention_bytes = facts.n_heads * T * T * (8 if facts.dtype == torch.float64 else 4)  # as recorded
    with reusing_heap(attention_bytes) if trim else contextlib.nullcontext() as after_layer:
        recorder = LayerRecorder(facts, result, keep_attention=keep_attention, on_layer=on_layer,
                                 after_layer=after_layer, slim=slim)
        with instrumented(facts.net, recorder.hooks(), facts.capture(recorder.record_attention)), \
                keep_rows(facts.net, logits_at):
            out = facts.net(input_ids=ids[None].to(facts.device), use_cache=False)
    recorder.finish(out.logits.detach()[0])
    if logits_at is not None:
        result.logits = LogitRows(result, logits_at, result.logits)
    edits.warn(result.external_edits)  # from here, so that the warning points where it always has
    if len(result.layers) != facts.n_layers:
        raise UnsupportedModelError(
            f"only {len(result.layers)} of {facts.n_layers} blocks ran; the adapter does not fit this model")
    # (still under the model's lock: another thread's trace hooks are not on it; ours are removed)
    result.versions, result.hooks_seen = ParameterVersions(facts.net), hook_state(facts.net)
    result.blocks_path, result.head_paths = facts.adapter.blocks, _head_paths(facts.net, facts.adapter.final_norm)
    for rec in result.layers:  # slim records check their block against these versions when computed again
        if rec.slim:
            rec.rebuilder.follow(result.versions, result.blocks_path)
    return result


def _head_paths(net, final_norm: str) -> tuple[str, ...]:
    """Module paths of the final norm and the output embedding (what vocabulary projections read)."""
    head = net.get_output_embeddings()
    names = {id(m): name for name, m in net.named_modules()}
    return (final_norm,) + ((names[id(head)],) if head is not None and id(head) in names else ())


class CheckedWeights:
    """A trace's per-layer weights, each layer's checked against the model's parameters when read."""

    __slots__ = ("_trace",)

    def __init__(self, trace: Trace):
        self._trace = trace

    def __len__(self) -> int:
        return len(self._trace.layer_weights)

    def __getitem__(self, layer):
        if isinstance(layer, slice):
            return [self[i] for i in range(len(self))[layer]]
        self._trace.check_layer(layer)
        return self._trace.layer_weights[layer]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

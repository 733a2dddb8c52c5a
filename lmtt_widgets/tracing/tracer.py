"""One forward pass with hooks on the user's own model, recording everything the decomposition needs.

Nothing is converted and no weight is touched: hooks are added for the pass and removed after it, and the
attention implementation is restored. Captured tensors are upcast to float32 for the maths that follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import PromptError, UnsupportedModelError
from ..models.loading import LoadedModel, _capture_routes, load_model
from ..models.offload import input_device
from ..models.weights import upcast
from . import edits
from .capture import AttentionReplay, attention_capture
from .edits import ExternalEdit
from .finite import check_block, check_logits
from .guard import serialised
from .memory import release_freed_memory
from .norms import NormSpec
from .prompts import read_prompt

# Attention matrices of all layers are kept on the trace when L*H*T*T is at most this many numbers (256 MB);
# longer prompts keep them only while their layer's contributions are computed, and keep instead each layer's
# attention call (query and key states, the mask shared by the layers): LayerRecord.attention_probs() recomputes
# that layer's probabilities from it, bit-identically, without running the model (~200 MB at 2,048 tokens on SmolLM2).
KEEP_ATTENTION_LIMIT = 64 * 2**20
# From this many attention numbers per layer (64 MB) on, freed memory is handed back to the system after each
# layer (see memory.py); below it the ~10 ms per layer would cost more than the fragmentation.
TRIM_ATTENTION_LIMIT = 16 * 2**20


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
    weights: list[LayerWeights] = field(default_factory=list)
    final_norm: NormSpec | None = None
    final_rstd: torch.Tensor | None = None  # [T]
    final_resid: torch.Tensor | None = None  # [T, d] input of the final norm
    logits: torch.Tensor | None = None  # [T, V] exactly what the model returned (model dtype)
    external_edits: list[ExternalEdit] = field(default_factory=list)  # edits of the stream by outside code

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


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    if hasattr(x, "last_hidden_state"):
        return x.last_hidden_state
    raise TypeError(f"cannot find a tensor in {type(x).__name__}")


def _shared(mask, masks: list[torch.Tensor]):
    """``mask``, or an equal one already kept (the same values: replays stay bit-identical)."""
    if not isinstance(mask, torch.Tensor):
        return mask
    for kept in masks:
        if kept is mask or (kept.shape == mask.shape and kept.dtype == mask.dtype and kept.device == mask.device
                            and torch.equal(kept, mask)):
            return kept
    masks.append(mask.detach())
    return masks[-1]


def _hidden_arg(args, kwargs):
    if args:
        return args[0]
    return kwargs["hidden_states"]


@serialised  # one trace of a model at a time; the model is restored exactly whatever happens
@torch.no_grad()
def trace(
    model,
    prompt,
    *,
    on_layer: Callable[[LayerRecord, LayerWeights], None] | None = None,
    keep_attention: bool | None = None,
) -> Trace:
    """Run ``prompt`` through ``model`` once and record every block.

    Args:
        model: a :class:`LoadedModel` or anything :func:`load_model` accepts.
        prompt: text, a list of token ids, or a [1, T] id tensor.
        on_layer: called with each block's record as soon as the block has run (streaming consumers such as the
            contribution engine use it so long prompts never hold every layer's attention at once).
        keep_attention: keep [H, T, T] attention of every layer on the trace; default: when it fits in 256 MB.
    """
    from .layer_weights import read_weights  # it builds this module's LayerWeights

    lm = load_model(model)
    net, adapter, config = lm.model, lm.adapter, lm.model.config
    ids, text = tokenize(lm, prompt)
    T = ids.numel()
    n_heads = _n_heads(config)
    blocks = list(net.get_submodule(adapter.blocks))
    L = len(blocks)
    if keep_attention is None:
        keep_attention = L * n_heads * T * T <= KEEP_ATTENTION_LIMIT
    topology = adapter.resolve_topology(config)

    final_norm_module = net.get_submodule(adapter.final_norm)
    # weights are read where accelerate materialises them (offloaded models), on each layer's device
    final_norm, post, weights = read_weights(net, adapter, blocks)
    head_dim = weights[0].w_o.shape[1] // n_heads

    result = Trace(
        lm=lm,
        prompt=text,
        input_ids=ids,
        tokens=token_texts(lm.tokenizer, ids),
        topology=topology,
        n_heads=n_heads,
        n_kv_heads=_n_kv_heads(config, n_heads),
        head_dim=head_dim,
        weights=weights,
        final_norm=final_norm,
    )

    layer_of = {id(b.get_submodule(adapter.attention)): i for i, b in enumerate(blocks)}
    scratch: list[dict] = [dict() for _ in blocks]

    def f32(x):
        x = x.detach()
        return upcast(x[0] if x.dim() == 3 else x)  # OPT flattens [1, T, d] to [T, d] around its MLP

    masks: list[torch.Tensor] = []  # distinct masks of the pass: layers share them (one [T, T] each, not one per layer)

    def record_attention(module, value, weights_, replay):
        i = layer_of.get(id(module))
        if i is not None:
            scratch[i]["attention"] = upcast(weights_.detach()[0])
            scratch[i]["values"] = upcast(value.detach()[0])
            if not keep_attention:
                replay.mask = _shared(replay.mask, masks)
                scratch[i]["attention_replay"] = replay

    hooks = []

    def add(module, kind, fn):
        register = module.register_forward_pre_hook if kind == "pre" else module.register_forward_hook
        hooks.append(register(fn, with_kwargs=True))

    for i, block in enumerate(blocks):
        s = scratch[i]

        def block_pre(mod, args, kwargs, s=s):
            s["resid_pre"] = f32(_hidden_arg(args, kwargs))

        def block_post(mod, args, kwargs, output, s=s, i=i):
            s["resid_post"] = f32(_first_tensor(output))
            emit(i)

        def o_pre(mod, args, kwargs, s=s):
            s["head_signal"] = f32(_hidden_arg(args, kwargs))

        def o_post(mod, args, kwargs, output, s=s):
            s["attn_out"] = f32(_first_tensor(output))

        def mlp_pre(mod, args, kwargs, s=s):
            s["neurons"] = f32(_hidden_arg(args, kwargs))

        def mlp_post(mod, args, kwargs, output, s=s):
            s["mlp_out"] = f32(_first_tensor(output))

        def mid_pre(mod, args, kwargs, s=s):
            s["resid_mid"] = f32(_hidden_arg(args, kwargs))

        def post_norm_out(key):
            def hook(mod, args, kwargs, output, s=s):
                s[key] = f32(_first_tensor(output))

            return hook

        add(block, "pre", block_pre)
        add(block, "post", block_post)
        o_proj = block.get_submodule(adapter.attn_out_proj)
        s["signal_hooked"] = bool(o_proj._forward_pre_hooks) or bool(torch.nn.modules.module._global_forward_pre_hooks)
        add(o_proj, "pre", o_pre)
        add(o_proj, "post", o_post)
        mlp_out_proj = block.get_submodule(adapter.mlp_out_proj)
        add(mlp_out_proj, "pre", mlp_pre)
        add(mlp_out_proj, "post", mlp_post)
        if topology != "parallel":
            add(block.get_submodule(adapter.mlp_norm), "pre", mid_pre)
        if adapter.attn_post_norm:
            add(block.get_submodule(adapter.attn_post_norm), "post", post_norm_out("attn_update"))
        if adapter.mlp_post_norm:
            add(block.get_submodule(adapter.mlp_post_norm), "post", post_norm_out("mlp_update"))

    def final_pre(mod, args, kwargs):
        result.final_resid = f32(_hidden_arg(args, kwargs))
        result.final_rstd = final_norm.rstd(result.final_resid)

    add(final_norm_module, "pre", final_pre)

    def check_identities(rec: LayerRecord) -> None:
        """Sets the record's edits and notes every edit of the stream (one reduction per update)."""
        parallel = rec.resid_mid is None
        y = rec.resid_post if parallel else rec.resid_mid
        terms = (rec.resid_pre, rec.attn_update) + ((rec.mlp_update,) if parallel else ())
        rec.edit_attn = edits.unexplained(y, *terms, dtype=model_dtype)
        if not parallel:
            rec.edit_mlp = edits.unexplained(rec.resid_post, rec.resid_mid, rec.mlp_update, dtype=model_dtype)
        for gap, total, where in ((rec.edit_attn, y, "attention"), (rec.edit_mlp, rec.resid_post, "mlp")):
            if gap is not None:
                result.external_edits.append(edits.describe(gap, total, rec.index, where, scored=True))
        if result.layers:  # the input of this block is the output of the one before
            before = result.layers[-1].resid_post
            gap = edits.unexplained(rec.resid_pre, before, dtype=model_dtype)
            if gap is not None:
                result.external_edits.append(edits.describe(gap, rec.resid_pre, rec.index, "before block",
                                                            scored=False))

    def emit(i: int) -> None:
        s = scratch[i]
        missing = {"resid_pre", "attention", "values", "head_signal", "attn_out", "mlp_out", "neurons"} - set(s)
        if missing & {"attention", "values"} and not missing - {"attention", "values"}:
            attn = blocks[i].get_submodule(adapter.attention)
            raise UnsupportedModelError(
                f"layer {i}: {type(attn).__name__} ran but its attention weights never reached the "
                f"{routes[i]!r} capture route; this transformers release computes attention in a way lmtt-widgets "
                "does not recognise for this class."
            )
        if missing:
            raise UnsupportedModelError(
                f"layer {i}: the hooks saw no {', '.join(sorted(missing))}; the adapter for "
                f"{config.model_type!r} does not match this model's modules."
            )
        check_block(i, s, adapter)  # NaN or inf: stop at the first block that made it, naming the module
        T_ = s["resid_pre"].shape[0]
        a_post, m_post = post[i]
        attn_update = s.get("attn_update", s["attn_out"])
        mlp_update = s.get("mlp_update", s["mlp_out"])
        rec = LayerRecord(
            index=i,
            resid_pre=s["resid_pre"],
            resid_mid=s.get("resid_mid"),
            resid_post=s["resid_post"],
            attention=s["attention"],
            values=s["values"],
            head_signal=s["head_signal"].reshape(T_, n_heads, -1),
            attn_out=s["attn_out"],
            attn_update=attn_update,
            mlp_out=s["mlp_out"],
            mlp_update=mlp_update,
            neurons=s["neurons"],
            attn_post_rstd=a_post.rstd(s["attn_out"]) if a_post else None,
            mlp_post_rstd=m_post.rstd(s["mlp_out"]) if m_post else None,
            model_dtype=model_dtype,
            signal_hooked=s["signal_hooked"],
            attention_replay=s.get("attention_replay"),
        )
        check_identities(rec)
        if on_layer is not None:
            on_layer(rec, weights[i])
        if not keep_attention:
            rec.attention = None
        result.layers.append(rec)
        scratch[i].clear()  # the hooks hold this very dict: clearing it is what frees the attention
        if not keep_attention and device.type == "cpu" and n_heads * T_ * T_ >= TRIM_ATTENTION_LIMIT:
            release_freed_memory()

    routes = lm.capture_routes or _capture_routes(net, adapter)
    capture = attention_capture(net, [b.get_submodule(adapter.attention) for b in blocks], routes, record_attention)

    # Modules in training mode (dropout) run in eval mode for the pass, through the model's own train() (Hugging
    # Face models re-select their kernels there), and are put back exactly as they were, a mixed state included.
    # A model already in eval mode is left alone (net.eval()/net.train() cost ~5 ms per pass on 30 blocks).
    training = {m for m in net.modules() if m.training}
    was_training = net.training
    device = input_device(net)  # an offloaded model's parameters may be on meta
    model_dtype = next(net.parameters()).dtype
    try:
        if training:
            net.eval()
        # no autograd graph: it would hold every layer's attention until the pass ends (GBs on long prompts)
        with capture, torch.no_grad():
            out = net(input_ids=ids[None].to(device), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
        if training:
            net.train(was_training)
            for m in net.modules():
                m.training = m in training
    result.logits = out.logits.detach()[0]
    check_logits(result.logits, adapter)
    if result.final_resid is not None and result.layers:
        gap = edits.unexplained(result.final_resid, result.layers[-1].resid_post, dtype=model_dtype)
        if gap is not None:
            result.external_edits.append(edits.describe(gap, result.final_resid, L - 1, "before the final norm",
                                                        scored=False))
    edits.warn(result.external_edits)
    if len(result.layers) != L:
        raise UnsupportedModelError(f"only {len(result.layers)} of {L} blocks ran; the adapter does not fit this model")
    return result

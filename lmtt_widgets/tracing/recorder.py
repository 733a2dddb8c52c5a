"""The per-layer recorder of a trace: what the hooks store while a block runs, and the checked record it becomes.

Hooks on each block's modules copy what the decomposition reads (upcast to float32) into that block's scratch
dict. When the block returns, the scratch becomes a :class:`LayerRecord`, after three checks that keep a wrong
number from ever leaving the tracer: every expected tensor was seen (else the adapter does not fit the model), all
of them are finite (finite.py), and each update's identity holds (else code outside the model's modules edited
the stream: edits.py). The record is then handed to ``on_layer`` at once, so long prompts can be scored layer by
layer and drop each attention before the next block runs.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import UnsupportedModelError
from ..models.weights import upcast
from . import edits
from .capture import AttentionReplay
from .rebuild import LayerRebuilder, RebuildCache, slim
from .facts import ModelFacts
from .finite import check_block, check_logits
from .tracer import LayerRecord, LayerWeights, Trace

# What every block must have stored when it returns (attention and values come through the capture route)
_EXPECTED = frozenset({"resid_pre", "attention", "values", "head_signal", "attn_out", "mlp_out", "neurons"})
_CAPTURED = frozenset({"attention", "values"})

# (module, "pre" | "post", hook): a forward pre-hook or forward hook, both registered with_kwargs=True
HookPlan = list[tuple[torch.nn.Module, str, Callable]]


class LayerRecorder:
    """Records one pass into ``result``: its layers, the final norm's input, its logits and any external edit."""

    def __init__(self, facts: ModelFacts, result: Trace, *, keep_attention: bool,
                 on_layer: Callable[[LayerRecord, LayerWeights], None] | None,
                 after_layer: Callable[[], object] | None, slim: bool = False, only: int | None = None):
        """``slim``: drop each record's per-position tensors once ``on_layer`` has returned (rebuild.py);
        ``only``: hook that one block alone (a layer run again by rebuild.py), not the final norm."""
        self.facts, self.result = facts, result
        self.keep_attention, self.on_layer, self.after_layer = keep_attention, on_layer, after_layer
        self.only = only
        self.last_output: tuple[torch.Tensor, torch.Tensor] | None = None  # (last block's output, its fingerprint)
        self.rebuild_cache = RebuildCache() if slim else None
        self.scratch: list[dict] = [dict() for _ in facts.blocks]
        self.layer_of = {id(m): i for i, m in enumerate(facts.attention_modules)}
        self.masks: list[torch.Tensor] = []  # distinct masks of the pass: layers share them (one [T, T] each)

    # ---- the hooks

    def hooks(self) -> HookPlan:
        """Every hook of the pass, in registration order."""
        adapter, plan = self.facts.adapter, []
        for i, block in enumerate(self.facts.blocks):
            if self.only is not None and i != self.only:
                continue
            s = self.scratch[i]
            store = _store_call(s) if self.rebuild_cache is not None else _store_input(s, "resid_pre")
            plan += [(block, "pre", store), (block, "post", self._block_end(i))]
            o_proj = block.get_submodule(adapter.attn_out_proj)
            # another pre-hook there (a head ablation) may make the head signal differ from attention x values:
            # the finiteness and contribution checks then read every tensor (finite.py, contributions/scores.py)
            s["signal_hooked"] = bool(o_proj._forward_pre_hooks) or bool(
                torch.nn.modules.module._global_forward_pre_hooks)
            plan += [(o_proj, "pre", _store_input(s, "head_signal")), (o_proj, "post", _store_output(s, "attn_out"))]
            mlp_out_proj = block.get_submodule(adapter.mlp_out_proj)
            # another forward hook there may change a projection's output after it was computed from its input:
            # then the output is checked against input x weight (_check_projections)
            s["outputs_hooked"] = (_post_hooked(o_proj), _post_hooked(mlp_out_proj))
            plan += [(mlp_out_proj, "pre", _store_input(s, "neurons")),
                     (mlp_out_proj, "post", _store_output(s, "mlp_out"))]
            if self.facts.topology != "parallel":
                plan.append((block.get_submodule(adapter.mlp_norm), "pre", _store_input(s, "resid_mid")))
            # with a post-norm, what an update adds to the stream is that norm's output, not the projection's
            if adapter.attn_post_norm:
                plan.append((block.get_submodule(adapter.attn_post_norm), "post", _store_output(s, "attn_update")))
            if adapter.mlp_post_norm:
                plan.append((block.get_submodule(adapter.mlp_post_norm), "post", _store_output(s, "mlp_update")))
        if self.only is None:
            plan.append((self.facts.net.get_submodule(adapter.final_norm), "pre", self._final_norm_input))
        return plan

    def record_attention(self, module, value, weights, replay: AttentionReplay) -> None:
        """The capture route's callback (capture.py): one layer's probabilities and value states."""
        i = self.layer_of.get(id(module))
        if i is None:  # an attention module outside the blocks (none in the supported families)
            return
        s = self.scratch[i]
        s["attention"] = upcast(weights.detach()[0])
        s["values"] = upcast(value.detach()[0])
        if not self.keep_attention:
            replay.mask = _shared(replay.mask, self.masks)
            s["attention_replay"] = replay

    def _block_end(self, i: int):
        s = self.scratch[i]

        def hook(mod, args, kwargs, output):
            s["resid_post"] = _f32(_first_tensor(output))
            self._emit(i)
            # the next module may get this very tensor and a hook may edit it in place: its fingerprint tells
            out = self.result.layers[-1].resid_post
            self.last_output = (out, edits.fingerprint(out))

        return hook

    def _final_norm_input(self, mod, args, kwargs) -> None:
        x = _f32(_hidden_arg(args, kwargs))
        self._check_in_place(x, self.facts.n_layers - 1, "before the final norm")
        self.result.final_resid = x
        self.result.final_rstd = self.facts.final_norm.rstd(x)

    # ---- a block's record

    def _emit(self, i: int) -> None:
        """Turn block i's scratch into its checked record, hand it on, and free what the trace does not keep."""
        s = self.scratch[i]
        self._check_seen(i, s)
        check_block(i, s, self.facts.adapter)  # NaN or inf: stop at the first block that made it, naming the module
        rec = self._record(i, s)
        self._check_identities(rec)
        self._check_projections(rec, *s["outputs_hooked"])
        if self.on_layer is not None:
            self.on_layer(rec, self.facts.weights[i])
        if not self.keep_attention:
            rec.attention = None
        if self.rebuild_cache is not None and _rebuildable(rec):
            slim(rec, LayerRebuilder(self.facts, i, *s["call"], cache=self.rebuild_cache))
        self.result.layers.append(rec)
        s.clear()  # the hooks hold this very dict: clearing it is what frees the attention
        if self.after_layer is not None:
            self.after_layer()

    def _check_seen(self, i: int, s: dict) -> None:
        missing = _EXPECTED - set(s)
        if missing & _CAPTURED and not missing - _CAPTURED:
            attn = self.facts.attention_modules[i]
            raise UnsupportedModelError(
                f"layer {i}: {type(attn).__name__} ran but its attention weights never reached the "
                f"{self.facts.routes[i]!r} capture route; this transformers release computes attention in a way "
                "lmtt-widgets does not recognise for this class."
            )
        if missing:
            raise UnsupportedModelError(
                f"layer {i}: the hooks saw no {', '.join(sorted(missing))}; the adapter for "
                f"{self.facts.net.config.model_type!r} does not match this model's modules."
            )

    def _record(self, i: int, s: dict) -> LayerRecord:
        a_post, m_post = self.facts.post_norms[i]
        return LayerRecord(
            index=i,
            resid_pre=s["resid_pre"],
            resid_mid=s.get("resid_mid"),
            resid_post=s["resid_post"],
            attention=s["attention"],
            values=s["values"],
            head_signal=s["head_signal"].reshape(s["resid_pre"].shape[0], self.facts.n_heads, -1),
            attn_out=s["attn_out"],
            attn_update=s.get("attn_update", s["attn_out"]),  # no post-norm: the projection's output is the update
            mlp_out=s["mlp_out"],
            mlp_update=s.get("mlp_update", s["mlp_out"]),
            neurons=s["neurons"],
            attn_post_rstd=a_post.rstd(s["attn_out"]) if a_post else None,
            mlp_post_rstd=m_post.rstd(s["mlp_out"]) if m_post else None,
            model_dtype=self.facts.dtype,
            signal_hooked=s["signal_hooked"],
            attention_replay=s.get("attention_replay"),
        )

    def _check_identities(self, rec: LayerRecord) -> None:
        """Set the record's edits and note every edit of the stream (one reduction per update, edits.py)."""
        dtype, found = self.facts.dtype, self.result.external_edits
        parallel = rec.resid_mid is None
        y = rec.resid_post if parallel else rec.resid_mid
        terms = (rec.resid_pre, rec.attn_update) + ((rec.mlp_update,) if parallel else ())
        rec.edit_attn = edits.unexplained(y, *terms, dtype=dtype)
        if not parallel:
            rec.edit_mlp = edits.unexplained(rec.resid_post, rec.resid_mid, rec.mlp_update, dtype=dtype)
        for gap, total, where in ((rec.edit_attn, y, "attention"), (rec.edit_mlp, rec.resid_post, "mlp")):
            if gap is not None:
                found.append(edits.describe(gap, total, rec.index, where, scored=True))
        if self.result.layers:  # the input of this block is the output of the one before
            self._check_between(rec.resid_pre, self.result.layers[-1].resid_post, rec.index, "before block")
            self._check_in_place(rec.resid_pre, rec.index, "before block")

    def _check_in_place(self, x: torch.Tensor, layer: int, where: str) -> None:
        """The previous block's output reached this point as the same tensor, edited in place (edits.in_place_edit)."""
        if self.last_output is None or not edits._same_memory(x, self.last_output[0]):
            return
        edit = edits.in_place_edit(x, self.last_output[1], layer, where)
        if edit is not None:
            self.result.external_edits.append(edit)

    def _check_projections(self, rec: LayerRecord, attn_hooked: bool, mlp_hooked: bool) -> None:
        """A hook on an output projection itself (not on the block) changes the update the parts must add up to.

        Attention: the heads are parts of the block's update, so what the hook added beyond input x weight becomes
        the update's external edit (scored; through the frozen post-norm, if any). MLP: the MLP output is one part
        of its update and neurons are read inside it, so the change is reported (neuron scores do not cover it).
        """
        dtype, w = self.facts.dtype, self.facts.weights[rec.index]
        if attn_hooked:
            gap = edits.projection_gap(rec.attn_out, rec.head_signal.flatten(1), w.w_o, w.b_o, dtype=dtype)
            if gap is not None:
                if w.attn_post_norm is not None:
                    gap = w.attn_post_norm.apply(gap, rec.attn_post_rstd, with_bias=False)
                rec.edit_attn = gap if rec.edit_attn is None else rec.edit_attn + gap
                total = rec.resid_post if rec.resid_mid is None else rec.resid_mid
                self.result.external_edits.append(edits.describe(gap, total, rec.index, "attention", scored=True))
        if mlp_hooked:
            gap = edits.projection_gap(rec.mlp_out, rec.neurons, w.w_out, w.b_out, dtype=dtype)
            if gap is not None:
                self.result.external_edits.append(
                    edits.describe(gap, rec.resid_post, rec.index, "MLP output projection", scored=False))

    def _check_between(self, now, before, layer: int, where: str) -> None:
        """Between blocks nothing of the model runs: a difference is an edit, reported (it belongs to no update)."""
        gap = edits.unexplained(now, before, dtype=self.facts.dtype)
        if gap is not None:
            self.result.external_edits.append(edits.describe(gap, now, layer, where, scored=False))

    # ---- after the pass

    def finish(self, logits: torch.Tensor) -> None:
        """Store the logits, refuse non-finite ones, and check the stream between the last block and the final norm."""
        result = self.result
        result.logits = logits
        check_logits(logits, self.facts.adapter)
        if result.final_resid is not None and result.layers:
            self._check_between(result.final_resid, result.layers[-1].resid_post, self.facts.n_layers - 1,
                                "before the final norm")


def _f32(x: torch.Tensor) -> torch.Tensor:
    x = x.detach()
    return upcast(x[0] if x.dim() == 3 else x)  # OPT flattens [1, T, d] to [T, d] around its MLP


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    if hasattr(x, "last_hidden_state"):
        return x.last_hidden_state
    raise TypeError(f"cannot find a tensor in {type(x).__name__}")


def _hidden_arg(args, kwargs):
    if args:
        return args[0]
    return kwargs["hidden_states"]


def _store_input(s: dict, key: str):
    """A forward pre-hook that stores the module's input (its hidden states) under ``key``."""

    def hook(mod, args, kwargs):
        s[key] = _f32(_hidden_arg(args, kwargs))

    return hook


def _store_call(s: dict):
    """A block's forward pre-hook that stores its input and its call's arguments (to run it again: rebuild.py)."""

    def hook(mod, args, kwargs):
        s["resid_pre"] = _f32(_hidden_arg(args, kwargs))
        s["call"] = (args, kwargs)

    return hook


def _post_hooked(module: torch.nn.Module) -> bool:
    """Someone else's forward hook runs on ``module`` (ours are registered after this is read)."""
    return bool(module._forward_hooks) or bool(torch.nn.modules.module._global_forward_hooks)


def _rebuildable(rec: LayerRecord) -> bool:
    """Running the block again gives the same tensors: no outside code edited its stream or its head signals."""
    return rec.edit_attn is None and rec.edit_mlp is None and not rec.signal_hooked


def _store_output(s: dict, key: str):
    """A forward hook that stores the module's output under ``key``."""

    def hook(mod, args, kwargs, output):
        s[key] = _f32(_first_tensor(output))

    return hook


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

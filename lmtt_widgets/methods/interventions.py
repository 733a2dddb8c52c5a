"""Run the model with components replaced: what exact patching, faithfulness and attribution patching share.

An intervention replaces a component's clean value by a *reference*: its value on a corrupted prompt of the same
length, zero, or its mean over the prompt's positions. Where each component lives in the forward pass:
- head h of layer l: its slice of the attention output projection's input (A_h v_h, before W_O);
- MLP of layer l: the output of its output projection (before a post-norm, which then runs on the new value);
- neuron n: its activation, the input of the MLP output projection;
- residual node after layer l: the block's output;
- edge j -> i through head h of layer l: the message A_h[i, j] v_j^h inside head h's signal at target i. It is an
  additive part of the update, so removing it (``zero``) subtracts it exactly; ``corrupted`` puts the corrupted
  prompt's message in its place. Messages are taken from the clean and corrupted traces.
Hooks are added for the run and removed after it; no weight is touched, so the model is left bit-identical.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import PromptError, SelectionError
from ..models.offload import input_device
from ..tracing.capture import eval_mode
from ..tracing.guard import exclusive
from ..tracing.versions import hook_state
from .base import Component

Ablation = Literal["corrupted", "zero", "mean"]
ABLATIONS = ("corrupted", "zero", "mean")
# Copies of the prompt run at once: at most this many numbers of attention per batch (~64 MB in float32).
BATCH_NUMBERS = 16 * 2**20
MAX_BATCH = 16


@dataclass
class Reference:
    """What patched components take instead of their clean values (per layer, float32, T positions)."""

    ablation: str
    head_signal: list[torch.Tensor]  # [T, H, dh]
    mlp_out: list[torch.Tensor]  # [T, d]
    neurons: list[torch.Tensor]  # [T, F]
    resid_post: list[torch.Tensor]  # [T, d]
    lm: object | None = None  # the model and token ids of a corrupted prompt (edges trace it when they need to)
    ids: torch.Tensor | None = None
    prompt: str | None = None
    _trace: object | None = None

    @property
    def trace(self):
        """The corrupted prompt's full Trace, made on first use: only edges need its attention and values."""
        if self._trace is None and self.ids is not None:
            from ..tracing.tracer import trace

            self._trace = trace(self.lm, self.ids)
        return self._trace


def reference(ex, corrupted=None, ablation: str | None = None) -> Reference:
    """The reference values: a corrupted prompt's (same number of tokens), zero, or the mean over positions."""
    if ablation is None:  # (not `ablation or ...`: ablation=0 or "" must not quietly mean "mean")
        ablation = "corrupted" if corrupted is not None else "mean"
    if not isinstance(ablation, str) or ablation not in ABLATIONS:
        raise SelectionError(f"ablation must be one of {ABLATIONS}, not {ablation!r}.")
    if ablation == "corrupted":
        return _corrupted_reference(ex, corrupted)
    if corrupted is not None:
        raise SelectionError(f"A corrupted prompt was given with ablation={ablation!r}; drop one of them.")
    tr = ex.trace

    def ref(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x) if ablation == "zero" else x.mean(0, keepdim=True).expand_as(x)

    return Reference(ablation, [ref(r.head_signal) for r in tr.layers], [ref(r.mlp_out) for r in tr.layers],
                     [ref(r.neurons) for r in tr.layers], [ref(r.resid_post) for r in tr.layers])


def _corrupted_reference(ex, corrupted) -> Reference:
    from ..tracing.tracer import tokenize

    if corrupted is None:
        raise SelectionError("ablation='corrupted' needs a corrupted prompt (same number of tokens as the clean one).")
    if isinstance(corrupted, Reference):
        T = corrupted.head_signal[0].shape[0] if corrupted.head_signal else None
        if T != ex.n_tokens or len(corrupted.head_signal) != ex.n_layers:
            raise PromptError(f"This reference was made for a prompt of {T} tokens and {len(corrupted.head_signal)} "
                              f"layers, not this one's {ex.n_tokens} tokens and {ex.n_layers} layers; pass the "
                              "corrupted prompt itself.")
        return corrupted
    lm = ex.trace.lm
    ids, text = tokenize(lm, corrupted)
    if ids.numel() != ex.n_tokens:
        raise PromptError(
            f"The corrupted prompt has {ids.numel()} tokens but the clean one has {ex.n_tokens}; patching pairs "
            "positions one to one, so they must be equally long. Change names or words for ones of the same token "
            "count (check with ex.tokens), or use ablation='mean'."
        )
    acts = capture_activations(ex, ids)
    return Reference("corrupted", *acts, lm=lm, ids=ids, prompt=text)


@torch.no_grad()
def capture_activations(ex, ids: torch.Tensor) -> tuple[list, list, list, list]:
    """Head signals, MLP outputs, neuron activations and block outputs of a plain forward pass of ``ids``
    (no attention capture: a patching reference needs nothing else). Float32 (float64 for a float64 model)."""
    tr, adapter = ex.trace, ex.trace.lm.adapter
    tr.check_model()  # activations of a changed model would be patched into the traced one
    net = tr.lm.model
    blocks = list(net.get_submodule(adapter.blocks))
    L, T, H = len(blocks), ids.numel(), tr.n_heads
    dtype = tr.layers[0].resid_pre.dtype
    got: dict[tuple[str, int], torch.Tensor] = {}
    handles = []

    def keep(key, x):
        got[key] = _as_batch(x.detach(), 1)[0].to(dtype).cpu()

    with exclusive(net):  # hooks go on only while no other thread traces or patches this model
        for l, block in enumerate(blocks):
            o_proj, out_proj = block.get_submodule(adapter.attn_out_proj), block.get_submodule(adapter.mlp_out_proj)
            handles += [
                o_proj.register_forward_pre_hook(
                    lambda m, a, k, l=l: keep(("head", l), a[0] if a else k["hidden_states"]), with_kwargs=True),
                out_proj.register_forward_pre_hook(lambda m, a, l=l: keep(("neuron", l), a[0])),
                out_proj.register_forward_hook(lambda m, a, o, l=l: keep(("mlp", l), o)),
                block.register_forward_hook(
                    lambda m, a, o, l=l: keep(("resid", l), o[0] if isinstance(o, tuple) else o)),
            ]
        device = input_device(net)  # (an offloaded model's parameters may be on meta)
        try:
            with eval_mode(net):
                net(input_ids=ids[None].to(device), use_cache=False)
        finally:
            for h in handles:
                h.remove()
    return ([got[("head", l)].view(T, H, -1) for l in range(L)], [got[("mlp", l)] for l in range(L)],
            [got[("neuron", l)] for l in range(L)], [got[("resid", l)] for l in range(L)])


def hooks_changed(ex) -> str | None:
    """Where the model's forward hooks differ from those of the traced pass ("model.layers.0, ..."), or None."""
    import threading

    from ..tracing.guard import _guard_of

    seen = ex.trace.hooks_seen
    if seen is None:  # (not followed)
        return None
    net = ex.trace.lm.model
    # another thread's trace has its own hooks on while it runs: wait for it (unless this thread holds the model)
    held = _guard_of(net).owner == threading.get_ident()
    with contextlib.nullcontext() if held else exclusive(net):
        now = hook_state(net)
    if now == seen:
        return None
    was = dict((n, h) for n, *h in seen[0])
    names = sorted({n for n, *h in now[0] if was.pop(n, None) != h} | set(was))
    return ", ".join(n or "the model itself" for n in names[:3]) or "the global module hooks"


def rerun_tolerance(ex, usual: float) -> tuple[float, str]:
    """How far a rerun's metric may be from the traced one, and what to say when it is farther.

    Reruns round differently from the traced pass (a batch, a shorter prefix), so they are compared loosely
    (``usual``). A forward hook added or removed since the trace (a small steering vector) could hide in that slack
    and shift every effect without a word: then a float32/float64 model must reproduce the traced metric to 1e-5.
    A hook that changes nothing (logging, timing) still passes."""
    where = hooks_changed(ex)
    if where is None:
        return usual, "the model changed since explain() (weights, hooks or mode)"
    half = ex.trace.layers[0].model_dtype in (torch.float16, torch.bfloat16)
    return (usual if half else min(usual, 1e-5),
            f"the model's forward hooks changed since explain() (added or removed on {where}), so it is not the "
            "traced model any more; put the hooks back as they were, or explain the prompt again with them")


def check_component(ex, c: Component) -> Component:
    """The component, or a clear error when it does not exist in this model or prompt."""
    if c.kind in ("token", "external", "attn_bias", "mlp_bias"):
        raise SelectionError(f"{c.id}: components of kind {c.kind!r} cannot be patched here.")
    if c.kind == "embed":
        raise SelectionError("EMB: patch the residual after a layer (e.g. 'L0.R') or input tokens instead.")
    ex._layer(c.layer)
    if c.position is not None:
        ex._token(c.position)
    if c.kind in ("head", "edge") and c.index is not None:
        ex._head(c.index)
    if c.kind == "neuron":
        F = ex.trace.layer_weights[c.layer].w_out.shape[1]  # (not the activations: a long trace rebuilds those)
        if not 0 <= c.index < F:
            raise SelectionError(f"{c.id}: layer {c.layer} has {F} neurons (0..{F - 1}).")
    if c.kind == "edge" and not 0 <= c.source <= c.position:
        raise SelectionError(f"{c.id}: an edge goes from a source at or before its target (causal attention).")
    return c


class Plan:
    """The interventions of one batch: B runs, each a set of components, as masks per layer."""

    def __init__(self, ex, runs: list[list[Component]]):
        tr = ex.trace
        B, T, H, L = len(runs), tr.n_tokens, tr.n_heads, tr.n_layers
        self.heads = torch.zeros(L, B, T, H, dtype=torch.bool)
        self.mlp = torch.zeros(L, B, T, dtype=torch.bool)
        self.resid = torch.zeros(L, B, T, dtype=torch.bool)
        self.neurons: list[list[tuple[int, slice, int]]] = [[] for _ in range(L)]
        self.edges: list[list[tuple[int, int | None, int, int]]] = [[] for _ in range(L)]
        for b, run in enumerate(runs):
            for c in run:
                pos = slice(None) if c.position is None else slice(c.position, c.position + 1)
                if c.kind == "head":
                    self.heads[c.layer, b, pos, c.index] = True
                elif c.kind == "mlp":
                    self.mlp[c.layer, b, pos] = True
                elif c.kind == "resid":
                    self.resid[c.layer, b, pos] = True
                elif c.kind == "neuron":
                    self.neurons[c.layer].append((b, pos, c.index))
                elif c.kind == "edge":
                    self.edges[c.layer].append((b, c.index, c.source, c.position))
        self.size = B

    @classmethod
    def from_masks(cls, ex, heads: torch.Tensor, mlp: torch.Tensor) -> "Plan":
        """A plan from boolean ablation masks: heads [B, L, T, H], mlp [B, L, T]."""
        plan = cls(ex, [[] for _ in range(heads.shape[0])])
        plan.heads, plan.mlp = heads.transpose(0, 1).clone(), mlp.transpose(0, 1).clone()
        return plan


def _as_batch(x: torch.Tensor, B: int) -> torch.Tensor:
    """[B, T, ...] view of a tensor some modules flatten to [B*T, ...] (OPT around its MLP)."""
    return x if x.dim() == 3 else x.view(B, -1, x.shape[-1])


def edge_messages(tr, layer: int, src: list[int], dst: list[int]) -> torch.Tensor:
    """A_h[dst, src] * v_src^h of a trace for n edges of one layer: [n, H, dh] (the layer's attention fetched once:
    kept on the trace, or recomputed for that layer)."""
    rec = tr.layers[layer]
    A = rec.attention_probs()
    src_t, dst_t = torch.as_tensor(src, dtype=torch.long), torch.as_tensor(dst, dtype=torch.long)
    v = rec.values.repeat_interleave(tr.n_heads // rec.values.shape[0], dim=0)  # [H, T, dh] (GQA)
    return (A[:, dst_t, src_t].unsqueeze(-1) * v[:, src_t]).transpose(0, 1)  # [n, H, dh]


@contextlib.contextmanager
def patched(ex, plan: Plan, ref: Reference):
    """Hooks that apply ``plan`` to a batch of copies of the clean prompt, removed afterwards."""
    tr, adapter = ex.trace, ex.trace.lm.adapter
    net = tr.lm.model
    blocks = list(net.get_submodule(adapter.blocks))
    H, dh, B = tr.n_heads, tr.head_dim, plan.size
    handles = []

    def cast(x, like):
        return x.to(dtype=like.dtype, device=like.device)

    for l, block in enumerate(blocks):
        heads, mlp, resid = plan.heads[l], plan.mlp[l], plan.resid[l]
        neurons, edges = plan.neurons[l], plan.edges[l]
        if heads.any() or edges:
            deltas = _edge_deltas(tr, ref, l, edges) if edges else []

            def o_pre(mod, args, kwargs, l=l, heads=heads, deltas=deltas):
                x = args[0] if args else kwargs["hidden_states"]
                z = x.view(B, x.shape[1], H, dh)
                if heads.any():
                    z = torch.where(heads.to(x.device)[..., None], cast(ref.head_signal[l], x), z)
                if deltas:
                    z = z.clone()
                    for b, h, i, d in deltas:
                        z[b, i, h] += cast(d, x)
                x = z.reshape(x.shape)
                return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

            o_proj = block.get_submodule(adapter.attn_out_proj)
            handles.append(o_proj.register_forward_pre_hook(o_pre, with_kwargs=True))
        out_proj = block.get_submodule(adapter.mlp_out_proj)
        if neurons:
            def n_pre(mod, args, l=l, neurons=neurons):
                x = args[0]
                xb = _as_batch(x, B).clone()
                for b, pos, n in neurons:
                    xb[b, pos, n] = cast(ref.neurons[l][pos, n], x)
                return (xb.view(x.shape), *args[1:])

            handles.append(out_proj.register_forward_pre_hook(n_pre))
        if mlp.any():
            def m_post(mod, args, out, l=l, mlp=mlp):
                ob = _as_batch(out, B)
                return torch.where(mlp.to(out.device)[..., None], cast(ref.mlp_out[l], out), ob).view(out.shape)

            handles.append(out_proj.register_forward_hook(m_post))
        if resid.any():
            def r_post(mod, args, out, l=l, resid=resid):
                h = out[0] if isinstance(out, tuple) else out
                h = torch.where(resid.to(h.device)[..., None], cast(ref.resid_post[l], h), h)
                return (h, *out[1:]) if isinstance(out, tuple) else h

            handles.append(block.register_forward_hook(r_post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _edge_deltas(tr, ref: Reference, layer: int, edges) -> list[tuple[int, int, int, torch.Tensor]]:
    """(batch, head, target, change of that head's signal at the target) for each edge run."""
    if edges and ref.ablation == "mean":
        raise SelectionError("Edges are removed (ablation='zero') or replaced by a corrupted prompt's message; "
                             "mean ablation applies to heads, MLPs, neurons and residual nodes.")
    msgs = edge_messages(tr, layer, [e[2] for e in edges], [e[3] for e in edges])
    if ref.trace is not None:
        msgs = msgs - edge_messages(ref.trace, layer, [e[2] for e in edges], [e[3] for e in edges])
    out = []
    for (b, head, src, dst), msg in zip(edges, msgs):
        for h in range(tr.n_heads) if head is None else [head]:
            out.append((b, h, dst, -msg[h]))
    return out


def batch_size(ex) -> int:
    tr = ex.trace
    per_copy = tr.n_heads * tr.n_tokens * tr.n_tokens + 8 * tr.n_tokens * tr.layers[0].resid_pre.shape[1]
    return max(1, min(MAX_BATCH, BATCH_NUMBERS // per_copy))


@torch.no_grad()
def run_plans(ex, metric, plans: list[Plan], ref: Reference) -> torch.Tensor:
    """The metric of each run of each plan (float64 [sum of plan sizes])."""
    ex.trace.check_model()  # effects are differences from the traced pass: they need the same model
    net = ex.trace.lm.model
    ids = ex.trace.input_ids
    device = input_device(net)  # (an offloaded model's parameters may be on meta)
    if any(any(e) for plan in plans for e in plan.edges):
        ref.trace  # noqa: B018  (a corrupted prompt's trace is made before the model is held: it holds it itself)
    out = []
    with exclusive(net), eval_mode(net):
        for plan in plans:
            with patched(ex, plan, ref):
                logits = net(input_ids=ids[None].expand(plan.size, -1).to(device), use_cache=False).logits
            out.append(metric(logits).double().cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def run_components(ex, metric, runs: list[list[Component]], ref: Reference) -> tuple[float, torch.Tensor]:
    """The metric of the unpatched prompt and with each set of components patched, in batches.

    The unpatched run goes through the same batched forward as the patched ones, so an effect is not polluted by
    the rounding differences between a batch and the traced pass (~1e-8 here even in float64).
    """
    B = batch_size(ex)
    runs = [[]] + list(runs)
    values = run_plans(ex, metric, [Plan(ex, runs[i : i + B]) for i in range(0, len(runs), B)], ref)
    clean = float(values[0])
    check_rerun(ex, metric, clean)
    return clean, values[1:]


def check_rerun(ex, metric, clean: float) -> None:
    """Refuse when the unpatched rerun's metric is not the traced pass's: effects would be of another model."""
    traced = float(metric(ex.trace.logits))
    tol, why = rerun_tolerance(ex, 1e-3)
    if abs(clean - traced) > tol * (1 + abs(traced)):
        raise SelectionError(
            f"The unpatched rerun gave metric {clean:.6g}, the traced run {traced:.6g}: {why}. Explain the prompt "
            "again."
        )

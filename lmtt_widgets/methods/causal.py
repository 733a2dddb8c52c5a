"""Causal effects of components on the metric: exact activation patching and attribution patching.

effect(c) = metric(clean) - metric(clean run with c replaced by its reference value), in the metric's units
(a logit difference, or log p without a foil). Positive: the component's clean value pushes the metric up compared
with its reference (corrupted prompt, zero or mean).

Attribution patching (Nanda 2023; Syed et al. 2023) approximates every effect at once to first order:
effect(c) ~ (a_clean - a_ref) . d metric / d a at the clean run: one forward and one backward pass for all heads,
MLPs, neurons, residual nodes and route edges. Exact patching reruns the model per component (batched).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from ..contributions.graph import ATTENTION, MLP_EDGE, node_of
from .. import checks
from ..errors import InputError, InputTypeError, SelectionError
from ..models.offload import input_device
from ..tracing.capture import eval_mode
from ..tracing.guard import exclusive
from .base import Component, ScoreTable, component_list, register_method
from .interventions import (Plan, Reference, _as_batch, batch_size, check_component, check_rerun, reference,
                            rerun_tolerance, run_components, run_plans)
from .targets import make_metric

EXACT = "causal effect (exact activation patching)"
APPROX = "causal effect, first-order estimate (attribution patching)"


@dataclass
class Gradients:
    """d metric / d activation at the clean run, per layer (float32, T positions)."""

    head_signal: list[torch.Tensor]  # [T, H, dh]
    mlp_out: list[torch.Tensor]  # [T, d]
    neurons: list[torch.Tensor]  # [T, F]
    resid_post: list[torch.Tensor]  # [T, d]
    metric_value: float


def gradients(ex, metric) -> Gradients:
    """One forward and one backward pass of the clean prompt. Gradients flow into zero-valued probes added at each
    hooked activation, never into the model's parameters (no ``.grad`` is written)."""
    tr, adapter = ex.trace, ex.trace.lm.adapter
    tr.check_model()  # the gradients are taken at the traced pass: they need the same model
    net = tr.lm.model
    blocks = list(net.get_submodule(adapter.blocks))
    probes: dict[tuple[str, int], torch.Tensor] = {}

    def probe(key, x):
        p = torch.zeros_like(x, requires_grad=True)
        probes[key] = p
        return x + p

    with exclusive(net):  # hooks go on only while no other thread traces or patches this model
        handles = _add_probes(blocks, adapter, probe)
        device = input_device(net)  # (an offloaded model's parameters may be on meta)
        try:
            # (inference_mode(False): under a caller's torch.inference_mode no autograd graph would be recorded)
            with eval_mode(net), torch.inference_mode(False), torch.enable_grad():
                ids = tr.input_ids[None].clone().to(device)  # (a normal tensor, even if traced in inference mode)
                logits = net(input_ids=ids, use_cache=False).logits
                value = metric(logits)[0]
                keys = list(probes)
                grads = torch.autograd.grad(value, [probes[k] for k in keys], allow_unused=True)
        finally:
            for h in handles:
                h.remove()
        dtype = tr.layers[0].resid_pre.dtype  # the trace's maths dtype (float32, or float64 for a float64 model)
    g = {k: (torch.zeros_like(probes[k]) if d is None else d).detach().to(dtype) for k, d in zip(keys, grads)}
    L, T, H = tr.n_layers, tr.n_tokens, tr.n_heads

    def per_layer(kind):
        return [_as_batch(g[(kind, l)], 1)[0] for l in range(L)]

    return Gradients([x.reshape(T, H, -1) for x in per_layer("head")], per_layer("mlp"), per_layer("neuron"),
                     per_layer("resid"), float(value.detach()))


def _add_probes(blocks, adapter, probe) -> list:
    """Hooks that pass each head signal, neuron activation, MLP output and block output through ``probe``."""
    handles = []
    for l, block in enumerate(blocks):
        def o_pre(mod, args, kwargs, l=l):
            x = probe(("head", l), args[0] if args else kwargs["hidden_states"])
            return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

        def n_pre(mod, args, l=l):
            return (probe(("neuron", l), args[0]), *args[1:])

        def m_post(mod, args, out, l=l):
            return probe(("mlp", l), out)

        def r_post(mod, args, out, l=l):
            if isinstance(out, tuple):
                return (probe(("resid", l), out[0]), *out[1:])
            return probe(("resid", l), out)

        o_proj, out_proj = block.get_submodule(adapter.attn_out_proj), block.get_submodule(adapter.mlp_out_proj)
        handles += [o_proj.register_forward_pre_hook(o_pre, with_kwargs=True),
                    out_proj.register_forward_pre_hook(n_pre), out_proj.register_forward_hook(m_post),
                    block.register_forward_hook(r_post)]
    return handles


def _clean_value(ex, metric) -> float:
    # one row: on long prompts ex.trace.logits keeps only the last one, and reading all would unembed every position
    return float(metric(ex.trace.logits[metric.position]))


def _check_gradient_run(ex, metric, grads: Gradients) -> None:
    clean = _clean_value(ex, metric)
    tol, why = rerun_tolerance(ex, 1e-3)
    if abs(grads.metric_value - clean) > tol * (1 + abs(clean)):
        raise SelectionError(
            f"The gradient run gave metric {grads.metric_value:.6g}, the traced run {clean:.6g}: {why}. Explain the "
            "prompt again."
        )


@register_method("attribution_patching", quantity=APPROX, family="causal",
                 cost="~1 forward + 1 backward (+1 corrupted forward)")
def attribution_patching(ex, target=None, foil=None, position=None, *, corrupted=None, ablation=None,
                         neurons: bool = False, edges=None) -> ScoreTable:
    """First-order estimate of every head's, MLP's (and neuron's, route edge's) patching effect at once.

    ``edges``: a :class:`~lmtt_widgets.contributions.graph.Route` whose attention edges are scored too (per-head
    and head-summed ``L{l} j>i`` rows), or True for the default route at the metric's position.
    """
    neurons = checks.flag(neurons, "neurons")
    metric = make_metric(ex, target, foil, position)
    ref = reference(ex, corrupted, ablation)
    grads = gradients(ex, metric)
    _check_gradient_run(ex, metric, grads)
    tr = ex.trace
    comps, vals = [], []
    for l, rec in enumerate(tr.layers):
        heads = ((rec.head_signal - ref.head_signal[l]) * grads.head_signal[l]).sum((0, 2))
        comps += [Component("head", l, h) for h in range(tr.n_heads)]
        vals.append(heads.double())
        comps.append(Component("mlp", l))
        vals.append(((rec.mlp_out - ref.mlp_out[l]) * grads.mlp_out[l]).sum().double()[None])
        if neurons:
            per = ((rec.neurons - ref.neurons[l]) * grads.neurons[l]).sum(0)
            comps += [Component("neuron", l, n) for n in range(per.numel())]
            vals.append(per.double())
    if edges is not None and edges is not False:
        route = ex.route(metric.position) if edges is True else _own_route(ex, edges)
        ecomps, evals = _edge_estimates(ex, route, ref, grads)
        comps += ecomps
        vals.append(evals)
    extra = {"clean": _clean_value(ex, metric), "ablation": ref.ablation}
    return ScoreTable("attribution_patching", APPROX, metric, comps, torch.cat(vals), True, extra)


def _own_route(ex, route):
    """A Route of this explanation's graph: node ids only mean a (layer, token) for the prompt they were made for."""
    from ..contributions.graph import Route

    if not isinstance(route, Route):
        raise InputTypeError(f"edges must be True (the route at the metric's position), False, None or a Route from "
                             f"ex.route(...), not {type(route).__name__}.")
    if (route.n_tokens, route.n_layers, route.n_heads) != (ex.n_tokens, ex.n_layers, ex.n_heads):
        raise SelectionError(f"This route is of a graph of {route.n_tokens} tokens, {route.n_layers} layers and "
                             f"{route.n_heads} heads, not this explanation's ({ex.n_tokens}, {ex.n_layers}, "
                             f"{ex.n_heads}); take it from this explanation's ex.route(...).")
    return route


def _edge_estimates(ex, route, ref: Reference, grads: Gradients) -> tuple[list[Component], torch.Tensor]:
    """Attribution patching of each attention edge of a route: (m_clean - m_ref) . g at the target's head signal."""
    from .interventions import edge_messages

    if ref.ablation == "mean":
        raise SelectionError("Route edges are scored against a corrupted prompt or removal (ablation='zero').")
    T = ex.n_tokens
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for e in range(len(route.src)):
        if route.kind[e] == ATTENTION:
            _, _, j = node_of(int(route.src[e]), T)
            _, _, i = node_of(int(route.dst[e]), T)
            by_layer.setdefault(int(route.layer[e]), []).append((j, i))
    comps, vals = [], []
    for l, pairs in sorted(by_layer.items()):
        src, dst = [j for j, _ in pairs], [i for _, i in pairs]
        msg = edge_messages(ex.trace, l, src, dst)  # [n, H, dh]
        if ref.trace is not None:
            msg = msg - edge_messages(ref.trace, l, src, dst)
        est = (msg * grads.head_signal[l][dst]).sum((1, 2))  # summed over heads: the head-summed edge
        comps += [Component("edge", l, None, i, j) for j, i in pairs]
        vals.append(est.double())
    return comps, torch.cat(vals) if vals else torch.zeros(0, dtype=torch.float64)


@register_method("activation_patching", quantity=EXACT, family="causal", cost="one forward per component (batched)")
def activation_patching(ex, target=None, foil=None, position=None, *, components=None, corrupted=None,
                        ablation=None) -> ScoreTable:
    """The exact effect of patching each component separately (default: every head and MLP, all positions)."""
    components = component_list(components)
    metric = make_metric(ex, target, foil, position)
    ref = reference(ex, corrupted, ablation)
    if components is None:
        components = [Component(k, l, h) for l in range(ex.n_layers)
                      for k, h in [("head", h) for h in range(ex.n_heads)] + [("mlp", None)]]
    comps = [check_component(ex, c) for c in components]
    clean, patched = run_components(ex, metric, [[c] for c in comps], ref)
    extra = {"clean": clean, "ablation": ref.ablation, "patched": patched.tolist()}
    return ScoreTable("activation_patching", EXACT, metric, comps, clean - patched, True, extra)


def patch_together(ex, components, *, target=None, foil=None, position=None, corrupted=None, ablation=None) -> dict:
    """The exact effect of patching a set of components at once: ``{"clean", "patched", "effect", ...}``."""
    components = component_list(components)
    if not components:
        raise InputError("patch_together needs at least one component, such as ['L0.H1'].")
    metric = make_metric(ex, target, foil, position)
    ref = reference(ex, corrupted, ablation)
    comps = [check_component(ex, c) for c in components]
    clean, patched = run_components(ex, metric, [comps], ref)
    patched = float(patched[0])
    return {"clean": clean, "patched": patched, "effect": clean - patched, "metric": metric.name,
            "components": [c.id for c in comps], "ablation": ref.ablation}


def route_masks(ex, route) -> tuple[torch.Tensor, torch.Tensor]:
    """Which (layer, token, head) head outputs and (layer, token) MLPs a route uses: keep masks [L, T, H], [L, T].

    A head is kept at a target position when the route has an attention edge into that position through it; an MLP
    block when the route has its edge. Everything else is ablated in :func:`faithfulness`.
    """
    T, L, H = ex.n_tokens, ex.n_layers, ex.n_heads
    heads = torch.zeros(L, T, H, dtype=torch.bool)
    mlp = torch.zeros(L, T, dtype=torch.bool)
    for e in range(len(route.src)):
        layer = int(route.layer[e])
        _, _, token = node_of(int(route.dst[e]), T)  # attention and MLP edges end at their target's token
        if route.kind[e] == ATTENTION:
            heads[layer, token] |= torch.as_tensor(route.heads[e] > 0)
        elif route.kind[e] == MLP_EDGE:
            mlp[layer, token] = True
    return heads, mlp


@dataclass
class Faithfulness:
    """How much of the metric a subgraph keeps when everything outside it is ablated."""

    metric: str
    ablation: str
    clean: float
    ablated: float  # every head and MLP ablated
    labels: list  # tau, or k
    kept: list[float]  # metric with only the subgraph left clean
    fraction: list[float]  # (kept - ablated) / (clean - ablated)
    sizes: list[int]  # components kept (head-positions + MLP-positions, or heads)

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame({"subgraph": self.labels, "components": self.sizes, "metric": self.kept,
                             "fraction_kept": self.fraction})


def faithfulness(ex, thresholds=(0.01, 0.02, 0.04, 0.08, 0.16), *, target=None, foil=None, position=None,
                 corrupted=None, ablation=None) -> Faithfulness:
    """The route at each tau, kept clean while every other head output and MLP output is ablated."""
    thresholds = _thresholds(thresholds)
    metric = make_metric(ex, target, foil, position)
    ref = reference(ex, corrupted, ablation)
    keeps = [route_masks(ex, ex.route(metric.position, tau)) for tau in thresholds]
    heads = torch.stack([~h for h, _ in keeps])
    mlps = torch.stack([~m for _, m in keeps])
    sizes = [int(h.sum() + m.sum()) for h, m in keeps]
    return _faithfulness(ex, metric, ref, heads, mlps, list(thresholds), sizes)


def _thresholds(thresholds) -> list[float]:
    """A non-empty list of thresholds in (0, 1) (one number alone is taken as a list of one)."""
    one = (isinstance(thresholds, numbers.Real) and not isinstance(thresholds, bool)) or \
        (isinstance(thresholds, torch.Tensor) and thresholds.dim() == 0)  # (NumPy floats and 0-d tensors too)
    if one:
        thresholds = [thresholds]
    if isinstance(thresholds, (str, bytes, dict)) or not hasattr(thresholds, "__iter__"):
        raise InputTypeError(f"thresholds must be a list of numbers in (0, 1) such as [0.02, 0.04], not "
                             f"{type(thresholds).__name__}.")
    out = [checks.fraction(tau, "each threshold") for tau in thresholds]
    if not out:
        raise InputError("thresholds is empty; give at least one, such as [0.04].")
    return out


def faithfulness_of_top(ex, table: ScoreTable, ks=(5, 10, 20, 50), *, by: str = "abs", corrupted=None,
                        ablation=None) -> Faithfulness:
    """Keep the top-k heads of a score table (all positions) clean, ablate every other head (MLPs stay clean)."""
    metric = table.metric or make_metric(ex)
    if metric.position >= ex.n_tokens:
        raise SelectionError(f"The table's metric is read at token {metric.position}, but this prompt has "
                             f"{ex.n_tokens} tokens: the table was made for another prompt.")
    if not len(table.of_kind("head")):
        raise SelectionError(f"The {table.method} table scores no heads; faithfulness_of_top keeps a table's top "
                             "heads (use logit_attribution, attribution_patching or activation_patching).")
    ks = [ks] if checks.is_integer(ks) else ks
    if isinstance(ks, (str, bytes, dict)) or not hasattr(ks, "__iter__"):
        raise InputTypeError(f"ks must be a list of head counts such as [5, 10], not {type(ks).__name__}.")
    ks = [checks.count(k, "each k", low=0, what="how many top heads are kept") for k in ks]
    ref = reference(ex, corrupted, ablation)
    L, T, H = ex.n_layers, ex.n_tokens, ex.n_heads
    heads, mlps = [], []
    for k in ks:
        ablate = torch.ones(L, T, H, dtype=torch.bool)
        for c, _ in table.of_kind("head").top(k, by=by):
            ablate[c.layer, :, c.index] = False
        heads.append(ablate)
        mlps.append(torch.zeros(L, T, dtype=torch.bool))
    return _faithfulness(ex, metric, ref, torch.stack(heads), torch.stack(mlps), list(ks), list(ks),
                         ablate_mlps=False)


def _faithfulness(ex, metric, ref, heads, mlps, labels, sizes, *, ablate_mlps=True) -> Faithfulness:
    L, T, H = ex.n_layers, ex.n_tokens, ex.n_heads
    # runs: unpatched, everything ablated, then each subgraph (the same batched forward for all)
    nothing_h, nothing_m = torch.zeros(1, L, T, H, dtype=torch.bool), torch.zeros(1, L, T, dtype=torch.bool)
    everything_h = torch.ones(1, L, T, H, dtype=torch.bool)
    everything_m = torch.full((1, L, T), ablate_mlps, dtype=torch.bool)
    all_h, all_m = torch.cat([nothing_h, everything_h, heads]), torch.cat([nothing_m, everything_m, mlps])
    B = batch_size(ex)
    plans = [Plan.from_masks(ex, all_h[i : i + B], all_m[i : i + B]) for i in range(0, len(all_h), B)]
    values = run_plans(ex, metric, plans, ref)
    clean, ablated = float(values[0]), float(values[1])
    check_rerun(ex, metric, clean)  # (a fraction of another model's metric would read as this one's)
    denom = clean - ablated
    kept = values[2:].tolist()
    fraction = [(v - ablated) / denom if abs(denom) > 1e-12 else float("nan") for v in kept]
    return Faithfulness(metric.name, ref.ablation, clean, ablated, labels, kept, fraction, sizes)

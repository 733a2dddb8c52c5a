"""A plain-text summary of an explanation (the CLI prints it; notebooks show the same numbers)."""

from __future__ import annotations

from .explain import Explanation
from .contributions.scores import convention_said
from . import checks
from .errors import InputTypeError, LmttError

PATCHED = ("head", "mlp")  # the kinds the causal check ablates (embeddings and biases are constants: "n/a")


def text_summary(ex: Explanation, k: int = 5, *, check: bool = True) -> str:
    """Predictions, flow shares, the route's size, signed logit attribution and (``check``) the causal check: exact
    activation patching of the components named above and the route's faithfulness, under mean ablation (a few
    reruns of the model, batched)."""
    if not isinstance(ex, Explanation):
        raise InputTypeError(f"text_summary takes an Explanation (from explain(model, prompt)), not "
                             f"{type(ex).__name__}.")
    check = checks.flag(check, "check")
    route = ex.route()
    lines = [f"Prompt ({ex.n_tokens} tokens): {''.join(ex.tokens)!r}"]
    lines += [said] if (said := convention_said(ex.scores.convention)) else []
    lines.append("Top next-token predictions: " + ", ".join(f"{p.text!r} {p.score:.1%}" for p in ex.predictions(k=k)))
    heads = ex.top_heads(k)
    lines.append("Most important heads at the last token (flow share of their layer's update):")
    lines.append("  " + ", ".join(f"L{h.layer}.H{h.head} {h.importance:.3f}" for h in heads))
    mlp = [(float(ls.mlp[-1]), layer) for layer, ls in enumerate(ex.scores.layers)]
    mlp.sort(reverse=True)
    lines.append("Most important MLP blocks at the last token (flow share of their update):")
    lines.append("  " + ", ".join(f"L{layer} {v:.3f}" for v, layer in mlp[:k]))
    lines.append(f"Important subgraph (tau={route.threshold}, {route.granularity} granularity): "
                 f"{len(route.nodes)} nodes, {len(route.src)} edges")
    table = _logit_attribution(ex)
    lines += _logit_attribution_lines(table, k)
    if check:
        try:
            lines += _causal_lines(ex, table, [f"L{h.layer}.H{h.head}" for h in heads], route.threshold, k)
        except LmttError as exc:  # e.g. the model changed since the trace: the rest of the summary still holds
            lines.append(f"Causal check: not run ({exc})")
    return "\n".join(lines)


def _logit_attribution(ex: Explanation):
    """Signed direct logit attribution against the runner-up (the metric every line below reads)."""
    return ex.logit_attribution(foil=ex.predictions(k=2)[1].token_id)


def _logit_attribution_lines(table, k: int) -> list[str]:
    """What writes the prediction, unlike flow shares."""
    parts = ", ".join(f"{c.id} {v:+.2f}" for c, v in table.top(k))
    return [f"Direct logit attribution to {table.metric.name} = {table.extra['model_value']:.2f} "
            "(signed, in logits: each component's direct write; the importances above are flow shares, not effects):",
            f"  {parts}"]


def _causal_lines(ex: Explanation, table, head_ids: list[str], tau: float, k: int) -> list[str]:
    """Flow and logit attribution checked against the model itself: the exact effect of ablating each named
    component alone, and how much of the metric the route keeps with everything off it ablated."""
    metric = table.metric
    # the embeddings and biases are constants of the pass, nothing to ablate: only heads and MLPs are patched
    top = [c.id if c.kind in PATCHED else None for c, _ in table.top(k)]
    named = list(dict.fromkeys(head_ids + [c for c in top if c]))  # each once, in the order shown above
    effect = ex.patch(named, ablation="mean", target=metric.target, foil=metric.foil, position=metric.position)
    kept = ex.faithfulness((tau,), ablation="mean", target=metric.target, foil=metric.foil, position=metric.position)
    return [f"Causal check (exact activation patching, mean ablation; effect = {metric.name} clean minus ablated, "
            "in logits):",
            "  flow's top heads: " + ", ".join(f"{c} {effect[c]:+.2f}" for c in head_ids),
            "  logit attribution's top: " + ", ".join(f"{c.id} {effect[c.id]:+.2f}" if c.kind in PATCHED
                                                      else f"{c.id} n/a" for c, _ in table.top(k)),
            f"  the route at tau={tau} alone (every head and MLP output off it ablated) gives {kept.kept[0]:.2f}: "
            f"fraction kept {kept.fraction[0]:+.2f} of the way from all ablated ({kept.ablated:.2f}) to clean "
            f"({kept.clean:.2f})"]

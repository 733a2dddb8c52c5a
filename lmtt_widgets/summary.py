"""A plain-text summary of an explanation (the CLI prints it; notebooks show the same numbers)."""

from __future__ import annotations

from .explain import Explanation
from .contributions.scores import convention_said


def text_summary(ex: Explanation, k: int = 5) -> str:
    route = ex.route()
    lines = [f"Prompt ({ex.n_tokens} tokens): {''.join(ex.tokens)!r}"]
    lines += [said] if (said := convention_said(ex.scores.convention)) else []
    lines.append("Top next-token predictions: " + ", ".join(f"{p.text!r} {p.score:.1%}" for p in ex.predictions(k=k)))
    lines.append(f"Most important heads at the last token (layer.head importance):")
    lines.append("  " + ", ".join(f"L{h.layer}.H{h.head} {h.importance:.3f}" for h in ex.top_heads(k)))
    mlp = [(float(ls.mlp[-1]), layer) for layer, ls in enumerate(ex.scores.layers)]
    mlp.sort(reverse=True)
    lines.append("Most important MLP blocks at the last token (importance in their update):")
    lines.append("  " + ", ".join(f"L{layer} {v:.3f}" for v, layer in mlp[:k]))
    lines.append(f"Important subgraph (tau={route.threshold}, {route.granularity} granularity): "
                 f"{len(route.nodes)} nodes, {len(route.src)} edges")
    lines += _logit_attribution_lines(ex, k)
    return "\n".join(lines)


def _logit_attribution_lines(ex: Explanation, k: int) -> list[str]:
    """Signed direct logit attribution against the runner-up: what writes the prediction, unlike flow shares."""
    first, second = ex.predictions(k=2)
    table = ex.logit_attribution(foil=second.token_id)
    parts = ", ".join(f"{c.id} {v:+.2f}" for c, v in table.top(k))
    return [f"Direct logit attribution to {table.metric.name} = {table.extra['model_value']:.2f} "
            "(signed, in logits: each component's direct write; the importances above are flow shares, not effects):",
            f"  {parts}"]

"""The widget's scoring settings (foil, corruption) turned into calls of the registered methods.

Every method is reached by name through :func:`lmtt_widgets.methods.get_method`, so a heatmap mode is a method's
name and the next registered method plugs in the same way. The widget keeps the
returned :class:`ScoreTable` objects as Python values and sends their head / MLP matrices to the browser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import LmttError, SelectionError
# words beside tokens: the pane's "subword / word" control shows these merges (granularity.py's rule)
from ..granularity import MERGES as WORD_MERGES
from ..methods import Component, ScoreTable, available_methods, get_method, token_methods
from ..methods.agreement import pair_agreement, spearman, top_k_overlap

# Heatmap modes: the flow share every explanation has, then the logit-based and causal methods.
HEAD_MODES = ("importance", "logit_attribution", "attribution_patching")
CAUSAL = "attribution_patching"
EXACT = "activation_patching"  # the Check action's method
ABLATIONS = ("corrupted", "mean", "zero")
TOP_K = 10  # the agreement's top-k overlap (the table reports top-10)


@dataclass(frozen=True)
class Settings:
    """What the metric and the causal methods are computed for (the widget's synced traits)."""

    position: int
    foil: int | None = None
    corrupted: str = ""
    ablation: str = "corrupted"

    @property
    def causal_ready(self) -> bool:
        """A causal method needs something to patch in: a corrupted prompt, or a built-in mean / zero ablation."""
        return self.ablation != "corrupted" or bool(self.corrupted.strip())

    METRIC_OPTIONS = ("target", "foil", "position")  # set from the widget's traits, never by a method's options

    def metric_options(self) -> dict:
        return {"target": None, "foil": self.foil, "position": self.position}

    def causal_options(self) -> dict:
        if not self.causal_ready:
            raise SelectionError(
                "A causal effect needs a corrupted prompt to patch in: paste one of the same length as the prompt "
                "(e.g. other names) in the 'corrupted prompt' box, or choose mean or zero ablation."
            )
        corrupted = self.corrupted if self.ablation == "corrupted" else None
        return {"corrupted": corrupted, "ablation": self.ablation, **self.metric_options()}

    def describe(self) -> str:
        if self.ablation == "corrupted":
            return f"patched from the corrupted prompt {self.corrupted!r}"
        return f"{self.ablation} ablation"


def causal_problem(ex, settings: Settings) -> str:
    """Why no causal method can run for these settings ("" when one can): no corruption, or a corrupted prompt
    whose token count differs from the prompt's (found with the tracer's own tokenizer call, before any run)."""
    from ..tracing.tracer import tokenize

    try:
        settings.causal_options()
    except SelectionError as exc:
        return str(exc)
    if settings.ablation != "corrupted":
        return ""
    try:
        ids, _ = tokenize(ex.trace.lm, settings.corrupted)
    except LmttError as exc:
        return f"The corrupted prompt cannot be traced: {exc}"
    if ids.numel() != ex.n_tokens:
        return (f"The corrupted prompt has {ids.numel()} tokens but the prompt has {ex.n_tokens}; patching pairs "
                "positions one to one, so they must be equally long (swap names or words for ones of the same "
                "token count), or choose mean / zero ablation.")
    return ""


def has_method(name: str) -> bool:
    return name in available_methods()


def run_method(ex, name: str, settings: Settings) -> ScoreTable:
    """One registered method's table for these settings; a clear error when it is not available."""
    if not has_method(name):
        raise LmttError(f"The method {name!r} is not available in this version of lmtt-widgets "
                        f"(available: {', '.join(sorted(available_methods()))}).")
    opts = settings.causal_options() if get_method(name).family == "causal" else settings.metric_options()
    return get_method(name).fn(ex, **opts)


def exact_patch(ex, components: list | None, settings: Settings) -> ScoreTable:
    """Exact activation patching of each component separately (metric(clean) - metric(patched)); None: every head
    and MLP."""
    return get_method(EXACT).fn(ex, components=components, **settings.causal_options())


def route_check(ex, threshold: float, settings: Settings):
    """Faithfulness of the route at τ: the fraction of the metric kept when everything off it is ablated."""
    return ex.faithfulness(thresholds=[threshold], **settings.causal_options())


def check_component(ex, text: "str | Component") -> Component:
    """The component a browser `check:` key names (an id such as 'L23.H3', or a Component), checked against the
    model and prompt before any work starts (the patching methods' own check, so the messages are theirs)."""
    from ..methods.interventions import check_component as exists

    return exists(ex, Component.parse(text))


def head_agreement(tables: dict[str, ScoreTable], n_layers: int, n_heads: int) -> dict:
    """Spearman agreement of |score| over the heads between every pair of head tables (importance, DLA, causal).

    Magnitudes, because importance has no sign: the question each pair answers is "do they rank the same heads
    as mattering". Empty until a causal table exists (the agreement is about the causal signal).
    """
    if CAUSAL not in tables:
        return {}
    names = [m for m in HEAD_MODES if m in tables]
    mats = {m: tables[m].head_matrix(n_layers, n_heads).flatten().abs() for m in names}
    def rho(a, b):  # NaN (a constant vector) is sent as None: the kernel's JSON refuses NaN
        r = spearman(mats[a], mats[b])
        return r if math.isfinite(r) else None

    pairs = [[a, b, rho(a, b), top_k_overlap(mats[a], mats[b], TOP_K)]
             for i, a in enumerate(names) for b in names[i + 1:]]
    return {"pairs": pairs, "n": n_layers * n_heads, "of": "|score| per head", "k": TOP_K,
            "position": tables[CAUSAL].metric.position if tables[CAUSAL].metric else None}


# ---- input attribution: the attribution pane's methods (registry family "flow" or "input"), by registry name
ATTRIBUTION_FAMILIES = ("flow", "input")
DEFAULT_ATTRIBUTION = "flow_attribution"  # free: read off the trace's scores, no forward pass


def attribution_methods() -> list[str]:
    """Registered input-attribution methods: the flow-based ones (free) first, then gradients / perturbation."""
    # "importance" is flow-family too, but it scores heads, not input tokens: the registry's flag tells them apart
    names = [n for n in token_methods() if get_method(n).family in ATTRIBUTION_FAMILIES]
    return sorted(names, key=lambda n: (get_method(n).family != "flow", n))


# Agreement beside the pane: the shown method against every other one on the same target. Cheap methods (read off
# the trace, or one forward and backward pass) are computed for it; the others only once computed or when asked.
CHEAP_INPUT = ("saliency", "input_x_gradient")
ATTRIBUTION_TOP_K = 3  # prompts are short: the top 3 tokens (of every token the prediction reads)
AGREEMENT_MEASURES = (
    "Spearman rank correlation over the tokens the prediction reads (of the signed scores when both methods are "
    "signed, else of |score|), and how many of the {k} tokens of largest |score| both methods share. It measures "
    "whether two methods rank the tokens alike, not whether either is right.")


def is_cheap(name: str) -> bool:
    """Computed for the agreement without being asked: flow methods and single-gradient methods."""
    return is_free(name) or name in CHEAP_INPUT


def attribution_agreement(shown: ScoreTable, others: dict) -> dict:
    """The ``agreement`` of the ``attribution`` trait: one row per other method, its Spearman (``compared`` says
    signed or |score|) and top-k overlap with ``shown`` when its table exists (``others[name]``: a ScoreTable, None
    for not computed yet, or the text of its error). NaN (a constant side) is sent as None."""
    n = len(shown.components)
    k = min(ATTRIBUTION_TOP_K, n)
    rows = []
    for name, other in others.items():
        row = {"method": name, "cost": get_method(name).cost}
        if isinstance(other, ScoreTable):
            b = [other[c] if c in other else math.nan for c in shown.components]
            pair = pair_agreement(shown.scores, b, a_signed=bool(shown.signed), b_signed=bool(other.signed), k=k)
            rho = pair["spearman"]
            row.update(state="ready", signed=bool(other.signed), spearman=rho if math.isfinite(rho) else None,
                       compared=pair["compared"], top_k=pair["top_k_overlap_abs"])
        else:
            row.update(state="error" if isinstance(other, str) else "on_demand", error=other or "", signed=None,
                       spearman=None, compared="", top_k=None)
        rows.append(row)
    return {"method": shown.method, "k": k, "n": n, "rows": rows, "measures": AGREEMENT_MEASURES.format(k=k),
            "position": shown.metric.position if shown.metric else int(shown.extra.get("position", n - 1))}


def attribution_words(ex, table: ScoreTable) -> dict:
    """The ``words`` of the ``attribution`` trait: every token's word as [first, last] token, and the shown scores
    merged per word by each of sum / mean / max (granularity.merge: NaN tokens skipped; a word with none is NaN)."""
    import torch

    from ..granularity import merge, word_spans

    values = torch.full((ex.n_tokens,), float("nan"), dtype=torch.float64)
    for c, v in zip(table.components, table.scores.tolist()):
        values[c.position] = v
    spans = word_spans(list(ex.tokens), ex.token_roles)
    merged = {how: merge(values, spans, how).numpy() for how in WORD_MERGES}  # float32 on the wire (the protocol)
    return {"spans": [[a, b - 1] for a, b in spans], "merged": merged, "merges": list(WORD_MERGES)}


def check_attribution(name: str, options: dict) -> None:
    if name not in attribution_methods():
        raise LmttError(f"{name!r} is not an input-attribution method (available: {', '.join(attribution_methods())}).")
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise LmttError(f"attribution options must be a dict of keyword arguments for {name!r}, not {options!r}.")


def is_free(name: str) -> bool:
    """Flow methods are read off the trace (no forward pass): their matrix is computed without being asked."""
    return get_method(name).family == "flow"


def run_attribution(ex, name: str, options: dict, settings: Settings) -> ScoreTable:
    """The chosen method's scores of every source token for the prediction at the target position (and foil)."""
    check_attribution(name, options)
    return get_method(name).fn(ex, **settings.metric_options(), **options)


def run_attribution_matrix(ex, name: str, options: dict, progress=None):
    """Source x generated DataFrame [generated, source] (see generation.attribution_matrix); row g explains the
    prediction of generated token g, made at position g - 1."""
    check_attribution(name, options)
    return ex.attribution_matrix(name, progress=progress, **options)

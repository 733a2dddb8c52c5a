"""The widget's scoring settings (foil, corruption) turned into calls of the registered methods.

Every method is reached by name through :func:`lmtt_widgets.methods.get_method`, so a method registered later
(attribution patching, exact patching, faithfulness) plugs in without a change here. The widget keeps the
returned :class:`ScoreTable` objects as Python values and sends their head / MLP matrices to the browser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import LmttError, SelectionError
from ..methods import Component, ScoreTable, available_methods, get_method

# Heatmap modes: the flow share every explanation has, then the logit-based and causal methods.
HEAD_MODES = ("importance", "logit_attribution", "attribution_patching")
CAUSAL = "attribution_patching"
# Exact patching: the registry name(s) it may be filed under; Explanation.patch is the fallback.
PATCH_NAMES = ("activation_patching", "patch", "exact_patching")
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


def has_method(name: str) -> bool:
    return name in available_methods()


def run_method(ex, name: str, settings: Settings) -> ScoreTable:
    """One registered method's table for these settings; a clear error when it is not available."""
    if not has_method(name):
        raise LmttError(f"The method {name!r} is not available in this version of lmtt-widgets "
                        f"(available: {', '.join(sorted(available_methods()))}).")
    opts = settings.causal_options() if get_method(name).family == "causal" else settings.metric_options()
    return get_method(name).fn(ex, **opts)


def exact_patch(ex, components: list, settings: Settings) -> ScoreTable:
    """Exact activation patching of each component separately (metric(clean) - metric(patched))."""
    opts = settings.causal_options()
    for name in PATCH_NAMES:
        if has_method(name):
            return get_method(name).fn(ex, components=list(components), **opts)
    if hasattr(ex, "patch"):
        return ex.patch(list(components), **opts)
    raise LmttError("Exact patching is not available in this version of lmtt-widgets (no 'activation_patching').")


def route_check(ex, threshold: float, settings: Settings):
    """Faithfulness of the route at τ: the fraction of the metric kept when everything off it is ablated."""
    fn = getattr(ex, "faithfulness", None)
    if fn is None:
        try:
            from ..methods import causal
        except ImportError:
            causal = None
        fn = getattr(causal, "faithfulness", None)
        fn = None if fn is None else (lambda *a, _f=fn, **k: _f(ex, *a, **k))
    if fn is None:
        raise LmttError("Checking the whole route needs faithfulness(), which this version of lmtt-widgets does "
                        "not have yet; check single heads, MLPs, neurons or edges instead.")
    return fn(thresholds=[threshold], **settings.causal_options())


def check_component(ex, text: str) -> Component:
    """The component a browser `check:` key names (an id such as 'L23.H3'), within the model's ranges."""
    c = Component.parse(text)
    if c.layer is not None:
        ex._layer(c.layer)
    if c.kind == "head" or (c.kind == "edge" and c.index is not None):
        ex._head(c.index)
    for p in (c.position, c.source):
        if p is not None:
            ex._token(p)
    if c.kind == "edge" and c.source > c.position:
        raise SelectionError(f"attention flows from earlier tokens only: source {c.source} > token {c.position}")
    return c


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks of a 1-D tensor (ties share their mean rank)."""
    order = x.argsort(stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(x.numel(), dtype=x.dtype)
    for v in x.unique():  # few ties in practice (importance's zeros); a loop over unique values is enough
        tie = x == v
        if int(tie.sum()) > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation; methods/agreement.py's when present (one definition for the whole package)."""
    try:
        from ..methods.agreement import spearman as shared
    except ImportError:
        shared = None
    if shared is not None:
        return float(shared(a, b))
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    keep = a.isfinite() & b.isfinite()
    ra, rb = _ranks(a[keep]), _ranks(b[keep])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float(ra @ rb) / denom if denom > 0 else math.nan


def top_overlap(a, b, k: int = 10) -> int:
    """How many of the k largest of ``a`` are among the k largest of ``b`` (methods/agreement.py's when present)."""
    try:
        from ..methods.agreement import top_k_overlap as shared
    except ImportError:
        shared = None
    if shared is not None:
        return int(shared(a, b, k))
    a = torch.as_tensor(a, dtype=torch.float64).flatten().nan_to_num(float("-inf"))
    b = torch.as_tensor(b, dtype=torch.float64).flatten().nan_to_num(float("-inf"))
    k = min(int(k), a.numel())
    return len(set(a.topk(k).indices.tolist()) & set(b.topk(k).indices.tolist()))


def head_agreement(tables: dict[str, ScoreTable], n_layers: int, n_heads: int) -> dict:
    """Spearman agreement of |score| over the heads between every pair of head tables (importance, DLA, causal).

    Magnitudes, because importance has no sign: the question each pair answers is "do they rank the same heads
    as mattering". Empty until a causal table exists (the agreement is about the causal signal).
    """
    if CAUSAL not in tables:
        return {}
    names = [m for m in HEAD_MODES if m in tables]
    mats = {m: tables[m].head_matrix(n_layers, n_heads).flatten().abs() for m in names}
    pairs = [[a, b, spearman(mats[a], mats[b]), top_overlap(mats[a], mats[b], TOP_K)]
             for i, a in enumerate(names) for b in names[i + 1:]]
    return {"pairs": pairs, "n": n_layers * n_heads, "of": "|score| per head", "k": TOP_K,
            "position": tables[CAUSAL].metric.position if tables[CAUSAL].metric else None}

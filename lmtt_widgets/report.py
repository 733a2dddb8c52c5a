"""A single self-contained HTML file in which the Explorer still works with no kernel and no network.

The file holds the widget bundle, its CSS and a precomputed state (arrays as base64): routes for every target
token and a ladder of thresholds, lens columns, head and MLP details. A Content-Security-Policy forbids every
network request, so what renders is provably offline.
"""

from __future__ import annotations

import html
import json
import pathlib

from .contributions.graph import DEFAULT_THRESHOLD
from .explain import Explanation
from .widgets import payload
from .widgets.codec import to_base64
from .widgets.explorer import STATIC

THRESHOLDS = (0.01, 0.02, 0.04, 0.06, 0.08, 0.1)
# Precompute per-target variants and lens grids only while the report stays a few MB.
MAX_TARGETS_WITH_VARIANTS = 48
MAX_LENS_ENTRIES = 4000
MAX_HEAD_DETAIL_FLOATS = 2_000_000

_CSP = ("default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:; connect-src 'none'")


def report_state(ex: Explanation, threshold: float = DEFAULT_THRESHOLD, granularity: str = "head") -> dict:
    """Every trait the static Explorer needs, arrays still as bytes."""
    T, L = ex.n_tokens, ex.n_layers
    target = T - 1
    targets = range(T) if T <= MAX_TARGETS_WITH_VARIANTS else [target]
    thresholds = sorted(set(THRESHOLDS) | {threshold})
    variants, mlp_nodes = {}, set()
    for tgt in targets:
        for tau in thresholds:
            for gran in ("head", "edge"):
                g = ex.route(tgt, tau, gran)
                variants[f"{tgt}|{tau!r}|{gran}"] = payload.graph_arrays(g)
                if tgt == target and tau == threshold:
                    mlp_nodes |= payload.mlp_nodes(g)
    mlp_nodes |= {(layer, target) for layer in range(L)}

    details = {}
    rows = 2 * L + 1
    lens_tokens = range(T) if rows * T <= MAX_LENS_ENTRIES else [target]
    for tok in lens_tokens:
        details.update(payload.lens_details(payload.lens_column(ex, tok)))
    heads = [(layer, h) for layer in range(L) for h in range(ex.n_heads)]
    if len(heads) * 2 * T * T > MAX_HEAD_DETAIL_FLOATS:
        top = ex.top_heads(max(1, MAX_HEAD_DETAIL_FLOATS // (2 * T * T)), target)
        heads = [(h.layer, h.head) for h in top]
    for (layer, h), result in zip(heads, payload.head_details(ex, heads, target)):
        details[f"head:{layer}:{h}:{target}"] = result
    details.update(payload.mlp_details(ex, sorted(mlp_nodes)))

    default = ex.route(target, threshold, granularity)
    return {
        "panes": ["prompt", "graph", "heads", "neurons", "vocab"],
        "tokens": list(ex.tokens),
        "meta": payload.meta(ex, target),
        "target": target,
        "threshold": threshold,
        "granularity": granularity,
        "graph": payload.graph_arrays(default),
        "graph_variants": variants,
        "head_importance": payload.head_importance(ex),
        "block_importance": payload.block_importance(ex),
        "neurons": payload.neuron_rows(ex, mlp_nodes),
        "lens": payload.lens_column(ex, target),
        "selection": None,
        "details": details,
        "status": {"state": "idle", "message": "", "progress": 1.0},
        "error": "",
        "prompt": ex.trace.prompt or "".join(ex.tokens),
        "static": True,
    }


def _script_safe(text: str) -> str:
    # Inside <script> only "</" can end the element early; "<\/" means the same to JS and JSON.
    return text.replace("</", "<\\/")


def render_html(ex: Explanation, threshold: float = DEFAULT_THRESHOLD, granularity: str = "head") -> str:
    state = json.dumps(to_base64(report_state(ex, threshold, granularity)), ensure_ascii=False, separators=(",", ":"))
    bundle = (STATIC / "widget.js").read_text(encoding="utf-8")
    css = (STATIC / "widget.css").read_text(encoding="utf-8")
    title = html.escape(f"lmtt-widgets · {ex.trace.lm.name} · {''.join(ex.tokens)[:80]}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_script_safe(css)}
body {{ margin: 16px; font-family: system-ui, sans-serif; }}</style>
</head><body>
<div id="lmtt-report"></div>
<script type="application/json" id="lmtt-state">{_script_safe(state)}</script>
<script type="text/plain" id="lmtt-bundle">{_script_safe(bundle)}</script>
<script type="module">
const code = document.getElementById("lmtt-bundle").textContent;
const url = URL.createObjectURL(new Blob([code], {{ type: "text/javascript" }}));
const mod = await import(url);
const state = JSON.parse(document.getElementById("lmtt-state").textContent);
mod.renderStatic(document.getElementById("lmtt-report"), state);
</script>
</body></html>
"""


def write_report(ex: Explanation, path="lmtt-report.html", threshold: float = DEFAULT_THRESHOLD,
                 granularity: str = "head") -> pathlib.Path:
    """Write the self-contained report; returns its absolute path."""
    path = pathlib.Path(path).expanduser().resolve()
    path.write_text(render_html(ex, threshold, granularity), encoding="utf-8")
    return path

"""A single self-contained HTML file in which the Explorer still works with no kernel and no network.

The file holds the widget bundle, its CSS and a precomputed state (arrays as base64): routes for every target
token and a ladder of thresholds, lens columns, head and MLP details. A Content-Security-Policy forbids every
network request, so what renders is provably offline.

Prompts and tokens are hostile text: nothing of theirs may look like markup inside a ``<script>`` block (an
``<!--`` followed by ``<script`` would make the parser swallow the rest of the page), so the state's JSON escapes
every ``<`` and the bundle travels as base64. The file is replaced atomically: a failed write keeps the old one.
"""

from __future__ import annotations

import base64
import html
import json
import os
import pathlib
import re
import secrets
import stat

from .contributions.graph import DEFAULT_THRESHOLD
from .explain import Explanation
from .widgets import payload
from .widgets.codec import to_base64, wire_text
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


# Characters that reorder or break the text around them (bidi controls, line separators): the browser tab's title
# shows them as visible escapes, like the widget does (js/text.ts displayToken).
_LAYOUT = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _title(ex: Explanation) -> str:
    text = wire_text(f"lmtt-widgets · {ex.trace.lm.name} · {''.join(ex.tokens)[:80]}")
    return html.escape(_LAYOUT.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text))


def _json_in_script(obj) -> str:
    """JSON that the HTML parser reads as plain script data whatever its strings hold.

    Every ``<`` is written as ``\\u003c`` (the same string to JSON.parse), so no ``</script``, ``<!--`` or
    ``<script`` can appear; U+2028/U+2029 are escaped too, as they end lines in older JavaScript parsers.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _style_safe(css: str) -> str:
    # A <style> element ends only at "</style"; our own CSS never means one, and "<\/" is inert in CSS.
    return css.replace("</", "<\\/")


def render_html(ex: Explanation, threshold: float = DEFAULT_THRESHOLD, granularity: str = "head") -> str:
    state = _json_in_script(to_base64(report_state(ex, threshold, granularity)))
    # base64 holds no "<" at all, so the bundle cannot end or re-open its block whatever esbuild emits.
    bundle = base64.b64encode((STATIC / "widget.js").read_bytes()).decode("ascii")
    css = (STATIC / "widget.css").read_text(encoding="utf-8")
    title = _title(ex)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_style_safe(css)}
body {{ margin: 16px; font-family: system-ui, sans-serif; }}</style>
</head><body>
<div id="lmtt-report"></div>
<script type="application/json" id="lmtt-state">{state}</script>
<script type="text/plain" id="lmtt-bundle">{bundle}</script>
<script type="module">
const b64 = document.getElementById("lmtt-bundle").textContent;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const url = URL.createObjectURL(new Blob([bytes], {{ type: "text/javascript;charset=utf-8" }}));
const mod = await import(url);
const state = JSON.parse(document.getElementById("lmtt-state").textContent);
mod.renderStatic(document.getElementById("lmtt-report"), state);
</script>
</body></html>
"""


def write_report(ex: Explanation, path="lmtt-report.html", threshold: float = DEFAULT_THRESHOLD,
                 granularity: str = "head") -> pathlib.Path:
    """Write the self-contained report; returns its absolute path. An existing file is replaced only once the
    new one is complete: any failure leaves it as it was."""
    path = pathlib.Path(path).expanduser().resolve()
    data = render_html(ex, threshold, granularity).encode("utf-8")
    _replace_atomically(path, data)
    return path


def _replace_atomically(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to a fresh file next to ``path``, then rename it over ``path`` (atomic on POSIX and Windows)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never write through a file or link someone else put there; mode 0o666 goes through the umask like a
    # plain open(), and a file being replaced keeps its permissions.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

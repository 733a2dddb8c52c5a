"""A single self-contained HTML file in which the Explorer still works with no kernel and no network.

The page's state is the Explorer's own: the synced traits of an ``Explorer(ex)`` (whatever traits it has), one
snapshot per target of the traits that follow the target (lens, predictions, metric, method tables, input
attribution), and what a kernel would answer to clicks: every head's detail, every MLP block's and neuron's
vocabulary projection the report can afford, and the route scores (every part of every update above τ = 0.005),
from which the page traces the route of any target at any τ and granularity itself (js/staticroute.ts), exactly as
``Explanation.route`` does. Arrays travel binary, some at reduced precision where the eye cannot tell
(report_pack.py says which and how), gzip-compressed and base64-encoded; the browser decompresses them with its own
``DecompressionStream``. What a report leaves out (causal methods, long prompts past the size budget) is listed in a
note at its top.

A Content-Security-Policy forbids every network request, so what renders is provably offline. Prompts and tokens
are hostile text: the state travels as base64 (no ``<`` at all) inside its ``<script>`` block, the bundle too, and
the note and title are HTML-escaped. The file is replaced atomically: a failed write keeps the old one.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import os
import pathlib
import re
import secrets
import stat

import anywidget
import numpy as np
import torch

from .contributions.graph import DEFAULT_THRESHOLD, node_id, AFTER_ATTENTION, AFTER_MLP
from .explain import Explanation
from .methods.targets import make_metric
from .projections.vocab import project
from .report_pack import pack_base64, reduced, unpack
from .widgets import payload, protocol, scoring
from .widgets.codec import encode_array, wire_text
from .widgets.explorer import STATIC, Explorer

# A report stays under this many bytes when it can: past it, the least needed parts go first, each said up front.
MAX_BYTES = 3_000_000
# Every part of the route scores above this τ is carried, so the page traces routes for any τ its slider offers
# (js/tau.ts TAU_MIN) exactly as the kernel would.
TAU_FLOOR = 0.005
# Levels of the square-root colour scale the head matrices are stored with (report_pack "sqrt"): contribution maps
# (sparse, small) keep 255, what the pane's colour ramp can show; attention patterns (dense, most of a report) keep
# 15 (4 bits: 16 steps of the ramp on 1-pixel cells of a 130-pixel thumbnail), 7 past the budget.
MAP_LEVELS = (255, 15, 7)
FLOW_METHODS = ("flow_attribution",)  # read off the trace: every target
CHEAP_INPUT_METHODS = ("input_x_gradient",)  # one backward pass: the default target only

_CSP = ("default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:; connect-src 'none'")


def widget_traits(w) -> list[str]:
    """The Explorer's own synced traits (ipywidgets' and anywidget's bookkeeping left out): the report's state."""
    base = set(anywidget.AnyWidget.class_trait_names(sync=True))
    return sorted(n for n in w.trait_names(sync=True) if n not in base and not n.startswith("_"))


def widget_state(w, names=None) -> dict:
    """Trait values as the widget sends them (its serialisers applied), arrays still as bytes."""
    return w.get_state(list(names or widget_traits(w)))


def report_state(ex: Explanation, threshold: float = DEFAULT_THRESHOLD, granularity: str = "head") -> dict:
    """The report's widget state: the Explorer's synced traits at the last token (what the page starts from; the
    rest of the report, per-target snapshots, route scores and details, is in ``report_content``)."""
    return _Content(ex, threshold, granularity).state


def report_content(ex: Explanation, threshold: float = DEFAULT_THRESHOLD, granularity: str = "head", *,
                   max_bytes: int = MAX_BYTES) -> dict:
    """Everything the page holds: the state, each target's snapshot of the traits that follow the target, the
    route scores, and the details a click asks for (arrays as bytes, marked for their reduced storage)."""
    return _Content(ex, threshold, granularity).build(max_bytes)[0]


def lens_columns(ex: Explanation, tokens, chunk: int = 8) -> dict[int, dict]:
    """``payload.lens_column`` of many tokens, batched: the "own" projection does not depend on the position."""
    tokens, rows, k = list(tokens), 2 * ex.n_layers + 1, payload.TOP_K
    tok, out = ex.trace.lm.tokenizer, {}
    for start in range(0, len(tokens), chunk):
        part = tokens[start:start + chunk]
        vecs = torch.stack([ex.residual(r, t) for t in part for r in range(rows)])
        logits = project(ex.trace, vecs, part[0], "own").reshape(len(part), rows, -1)
        top = logits.softmax(-1).topk(k, dim=-1)
        above = logits[:, :-1].gather(-1, top.indices[:, 1:])  # a listed token's logit at the previous row
        # its rank there: how many logits beat it (payload.lens_column's rank_of, one token at a time)
        greater = torch.stack([(logits[n, :-1].unsqueeze(1) > above[n].unsqueeze(-1)).sum(-1)
                               for n in range(len(part))])
        for n, t in enumerate(part):
            ids = top.indices[n].numpy().astype(np.uint32)
            rank_prev = np.full((rows, k), -1, np.int32)
            rank_prev[1:] = greater[n].numpy()
            strings = {str(i): tok.decode([int(i)], clean_up_tokenization_spaces=False) for i in np.unique(ids)}
            out[t] = protocol.check(protocol.LENS, {"rows": rows, "token": t, "ids": ids, "probs": top.values[n],
                                                    "rank_prev": rank_prev, "strings": strings}, "lens")
    return out


class _Content:
    """The report's parts, computed once; ``build`` fits them under a size with the fewest omissions."""

    def __init__(self, ex: Explanation, threshold: float, granularity: str):
        self.ex, T = ex, ex.n_tokens
        self.target = T - 1
        self.threshold, self.granularity = threshold, granularity
        self.route_mlp: set[tuple[int, int]] = set()
        for t in range(T):
            self.route_mlp |= payload.mlp_nodes(ex.route(t, threshold, granularity))
        # the neuron lists a page can show: every route's MLP blocks and each target's column (the widget's own)
        self.neuron_nodes = self.route_mlp | {(layer, t) for layer in range(ex.n_layers) for t in range(T)}
        warm_neurons(ex, self.neuron_nodes)
        w = Explorer(ex, threshold=threshold, granularity=granularity)
        self.state = widget_state(w)
        self.state.update(static=True, details={}, selection=None, error="",
                          status={"state": "idle", "message": "", "progress": 1.0})
        self.attributions = self._attributions(w)
        w.close()
        self.per_target = self._targets()
        self.state["neurons"] = payload.neuron_rows(ex, self.neuron_nodes)
        self.flow = flow_scores(ex, min(TAU_FLOOR, threshold))
        self.heads = dict(zip(*self._head_details()))
        self.mlp = payload.mlp_details(ex, sorted(self.route_mlp))
        self.neurons = neuron_details(ex, payload.mlp_nodes(ex.route(self.target, threshold, granularity)))

    def _attributions(self, w) -> dict:
        """The attribution pane's trait per method and target: the free flow methods at every target (computed
        like the widget does, see ``_target_attribution``), the cheap input methods at the last one (by the widget)."""
        out: dict[str, dict[str, dict]] = {}
        shown = w.attribution_method
        for name in (shown,) + CHEAP_INPUT_METHODS:
            if name in scoring.attribution_methods():
                w.attribution_method = name
                out.setdefault(name, {})[str(self.target)] = widget_state(w, ["attribution"])["attribution"]
        w.attribution_method = shown
        for name in FLOW_METHODS:
            if name not in scoring.attribution_methods():
                continue
            matrix = (scoring.run_attribution_matrix(self.ex, name, {}) if self.ex.generated_positions else None)
            for t in range(self.ex.n_tokens):
                if str(t) not in out.get(name, {}):
                    table = scoring.run_attribution(self.ex, name, {}, scoring.Settings(t))
                    out.setdefault(name, {})[str(t)] = payload.attribution(
                        self.ex, table, matrix, scoring.attribution_methods(), options={})
        return out

    def _targets(self) -> dict:
        """Per target, what the widget recomputes when its target changes (Explorer._refilter and _rescore):
        predictions, logit lens, metric and the importance table; direct logit attribution stays the last
        token's (computing it at every position would take minutes), so the page offers it there only."""
        ex, snaps = self.ex, {}
        lens = lens_columns(ex, range(ex.n_tokens - 1))
        for t in range(ex.n_tokens - 1):
            st = scoring.Settings(t)
            tables = {"importance": scoring.run_method(ex, "importance", st)}
            snaps[str(t)] = {
                "meta": payload.meta(ex, t), "lens": lens[t],
                "metric": payload.metric_info(ex, make_metric(ex, None, None, t), st,
                                              ready=not scoring.causal_problem(ex, st)),
                "method_scores": payload.method_scores(tables, ex.n_layers, ex.n_heads), "agreement": {},
            }
        return snaps

    def _head_details(self):
        ex, H = self.ex, self.ex.n_heads
        heads = [(layer, h) for layer in range(ex.n_layers) for h in range(H)]
        keys = [f"head:{layer}:{h}:{self.target}" for layer, h in heads]
        return keys, payload.head_details(ex, heads, self.target)

    def build(self, max_bytes: int) -> tuple[dict, list[str], str]:
        """The report dict, the omissions it needed for its base64 container to stay under ``max_bytes``, and
        that container."""
        for step in range(len(_STEPS)):
            omitted = [note for _, note in _STEPS[1:step + 1]]
            report = self._report(_STEPS[step][0], omitted)
            packed = pack_base64(report)
            if len(packed) <= max_bytes:
                break
        else:
            omitted = omitted + [f"Even so this report's state is {len(packed) / 1e6:.1f} MB, over its budget of "
                                 f"{max_bytes / 1e6:.1f} MB."]
        return report, omitted, packed

    def _report(self, level: dict, omitted: list[str]) -> dict:
        details = {}
        for key, d in self.heads.items():
            if level["maps"] is None:
                d = {k: v for k, v in d.items() if k not in ("pattern", "contribution")}
            else:
                d = {**d, "pattern": reduced(d["pattern"], "sqrt", level["maps"]),
                     "contribution": reduced(d["contribution"], "sqrt", MAP_LEVELS[0])}
            details[key] = d
        # the report's neurons trait lists every block's neurons: the copy inside each mlp: result is not needed
        details.update({k: {n: v for n, v in d.items() if n != "neurons"} for k, d in self.mlp.items()})
        details.update(self.neurons)
        texts: dict[str, int] = {}
        details = _compact_pairs(details, texts)
        per_target = {t: _reduced_snapshot(snap, level["lens"]) for t, snap in self.per_target.items()}
        state = {**self.state, "neurons": _neurons_reduced(self.state["neurons"]), "lens": _lens_reduced(self.state["lens"]),
                 "head_importance": reduced(self.state["head_importance"], "f16")}
        return {"version": 1, "state": state, "per_target": per_target, "attributions": self.attributions,
                "flow": self.flow, "details": details, "texts": list(texts), "omitted": _ALWAYS_OMITTED + omitted,
                "default_target": self.target}


def _compact_pairs(obj, texts: dict[str, int]):
    """Every list of [text, number] pairs (vocabulary projections) as two arrays, an index into the report's one
    table of token texts and the numbers (float32): a token text is written once, not once per list it is in."""
    if isinstance(obj, dict):
        return {k: _compact_pairs(v, texts) for k, v in obj.items()}
    if isinstance(obj, list) and obj and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                             and isinstance(p[1], (int, float)) for p in obj):
        ids = [texts.setdefault(p[0], len(texts)) for p in obj]
        # values are logits shown with 2 decimals: float16 keeps 3 significant digits
        return {"pair_texts": reduced(encode_array(ids, "uint32"), "u16"),
                "pair_values": reduced(encode_array([p[1] for p in obj]), "f16")}
    return obj


def _lens_reduced(lens: dict) -> dict:
    """A lens column with ids in 16 bits and probabilities in float16 (shown as percentages)."""
    if not lens:
        return lens
    return {**lens, "ids": reduced(lens["ids"], "u16"), "probs": reduced(lens["probs"], "f16"),
            "rank_prev": reduced(lens["rank_prev"], "i16")}


def _reduced_snapshot(snap: dict, lens: bool) -> dict:
    out = {k: v for k, v in snap.items() if k != "lens" or lens}
    if "lens" in out:
        out["lens"] = _lens_reduced(out["lens"])
    out["method_scores"] = {name: {**t, "heads": reduced(t["heads"], "f16")}
                            for name, t in snap.get("method_scores", {}).items()}
    return out


# Steps taken, in order, while a report is over its size: lower precision first, then whole parts.
_STEPS = [
    ({"maps": MAP_LEVELS[1], "lens": True}, ""),
    ({"maps": MAP_LEVELS[2], "lens": True},
     "Attention patterns are drawn with 8 colour levels instead of 16 (the report's size budget)."),
    ({"maps": MAP_LEVELS[2], "lens": False},
     "The logit lens is included for the last token only (the report's size budget)."),
    ({"maps": None, "lens": False},
     "Head attention patterns and contribution maps are left out (the report's size budget); head importances, "
     "routes and vocabulary projections are all here."),
]
_ALWAYS_OMITTED = [
    "Causal methods (attribution patching, exact patching checks) and input-attribution methods that run the "
    "model more than once (integrated gradients, occlusion, saliency) need a kernel.",
    "Vocabulary projections of single neurons: only for the MLP blocks on the last token's route. Heads' "
    "vocabulary projections: only at the last token (their attention and contribution maps serve every target). "
    "Direct logit attribution and input × gradient: only at the last token.",
]


def _neurons_reduced(rows: dict) -> dict:
    """The neuron lists with ids in 16 bits and scores in float16 (shown with 2-3 digits)."""
    return {**rows, "ids": reduced(rows["ids"], "u16"), "importance": reduced(rows["importance"], "f16"),
            "activation": reduced(rows["activation"], "f16")}


def warm_neurons(ex: Explanation, nodes) -> None:
    """Score the neurons of many MLP blocks one layer at a time (one batched pass per layer instead of one per
    block) into the explanation's own cache, which ``ex.neurons`` then reads."""
    from .contributions.scores import neuron_importance

    by_layer: dict[int, list[int]] = {}
    for layer, token in nodes:
        if (layer, token) not in ex._neuron_rows:
            by_layer.setdefault(layer, []).append(token)
    for layer, tokens in by_layer.items():
        tokens = sorted(tokens)
        rec = ex.trace.layers[layer]
        idx = torch.tensor(tokens)
        rows = dataclasses.replace(rec, neurons=rec.neurons[idx], mlp_update=rec.mlp_update[idx],
                                   mlp_post_rstd=None if rec.mlp_post_rstd is None else rec.mlp_post_rstd[idx])
        imp = neuron_importance(rows, ex.trace.weights[layer])
        for n, token in enumerate(tokens):
            ex._neuron_rows[(layer, token)] = imp[n]


def neuron_details(ex: Explanation, blocks) -> dict:
    """``neuron:<layer>:<neuron>:<token>`` results (``payload.details``) of the top neurons of ``blocks``, their
    vocabulary projections batched per token (one product instead of one per neuron)."""
    by_token: dict[int, list[tuple[int, int]]] = {}
    for layer, token in sorted(blocks):
        by_token.setdefault(token, []).extend((layer, n.neuron) for n in ex.neurons(layer, token, payload.TOP_K))
    out = {}
    for token, pairs in by_token.items():
        vecs = torch.stack([ex.neuron_output(layer, n, token) for layer, n in pairs])
        promoted, suppressed = payload._named_top(ex, project(ex.trace, vecs, token, "final"), payload.TOP_K)
        for i, (layer, n) in enumerate(pairs):
            out[f"neuron:{layer}:{n}:{token}"] = {"promoted": promoted[i], "suppressed": suppressed[i]}
    return out


def flow_scores(ex: Explanation, floor: float) -> dict:
    """The route scores of every update, sparse: each part above ``floor`` (and, for the per-head breakdown of an
    edge above it, every stored head score of that edge), enough to trace any route with τ >= ``floor`` exactly.
    Rows are updates (layer, token) at ``layer * T + token``; see js/staticroute.ts."""
    sc, T, H = ex.scores, ex.n_tokens, ex.n_heads
    zeros = torch.zeros(T)

    def per_update(name):
        return encode_array(torch.stack([zeros if getattr(ls, name) is None else getattr(ls, name).float()
                                         for ls in sc.layers]).reshape(-1))

    rows_i = torch.repeat_interleave(torch.arange(T), torch.arange(1, T + 1))  # packed edge -> its target row
    cols_j = torch.cat([torch.arange(i + 1) for i in range(T)])
    offset = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(1, T + 1).cumsum(0)])[:-1]
    head_ptr, head_col, head_val, edge_ptr, edge_src, edge_val = [0], [], [], [0], [], []
    for ls in sc.layers:
        rows = torch.repeat_interleave(torch.arange(T), ls.head_ptr.diff().long())
        cols, vals = ls.head_col.long(), ls.head_val.float()
        edge_of = ls.edge.float()[offset[rows] + cols // H]
        keep = (vals > floor) | (edge_of > floor)
        head_ptr += (torch.bincount(rows[keep], minlength=T).cumsum(0) + head_ptr[-1]).tolist()
        head_col.append(cols[keep])
        head_val.append(vals[keep])
        ek = ls.edge.float() > floor
        edge_ptr += (torch.bincount(rows_i[ek], minlength=T).cumsum(0) + edge_ptr[-1]).tolist()
        edge_src.append(cols_j[ek])
        edge_val.append(ls.edge.float()[ek])
    route = ex.route(T - 1, DEFAULT_THRESHOLD)  # its node flags cover the whole graph, on the route or not
    return {
        "L": ex.n_layers, "T": T, "H": H, "parallel": sc.topology == "parallel", "floor": floor,
        **{name: per_update(name) for name in ("resid_attn", "bias_attn", "external_attn", "mlp", "resid_mlp",
                                                "external_mlp")},
        # scores stay float32 (τ compares them exactly); indices fit 16 bits up to 65,536 sources
        "head_ptr": encode_array(head_ptr, "uint32"),
        "head_col": reduced(encode_array(torch.cat(head_col), "uint32"), "u16"),
        "head_val": encode_array(torch.cat(head_val)),
        "edge_ptr": encode_array(edge_ptr, "uint32"),
        "edge_src": reduced(encode_array(torch.cat(edge_src), "uint32"), "u16"),
        "edge_val": encode_array(torch.cat(edge_val)),
        "cancelling": encode_array(route.cancelling, "int32"), "external": encode_array(route.external, "int32"),
    }


# Characters that reorder or break the text around them (bidi controls, line separators): the browser tab's title
# shows them as visible escapes, like the widget does (js/text.ts displayToken).
_LAYOUT = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _title(ex: Explanation) -> str:
    text = wire_text(f"lmtt-widgets · {ex.trace.lm.name} · {''.join(ex.tokens)[:80]}")
    return html.escape(_LAYOUT.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text))


def _style_safe(css: str) -> str:
    # A <style> element ends only at "</style"; our own CSS never means one, and "<\\/" is inert in CSS.
    return css.replace("</", "<\\/")


def _note(ex: Explanation, omitted: list[str]) -> str:
    """The visible note at the top: what the report holds and what it leaves out (HTML-escaped)."""
    T, L, H = ex.n_tokens, ex.n_layers, ex.n_heads
    holds = (f"Offline report: routes for all {T} target tokens at any threshold and both granularities; all "
             f"{L * H} heads' details; the neurons of every MLP block on a route and of each target's column; the "
             "logit lens at every token; head importance and flow-based input attribution at every target; direct "
             "logit attribution and input × gradient at the last token.")
    items = "".join(f"<li>{html.escape(wire_text(x))}</li>" for x in omitted)
    return (f'<div class="lmtt-report-note" role="note"><p>{html.escape(holds)}</p>'
            f"<p>Not in this report (open the notebook with a kernel for these):</p><ul>{items}</ul></div>")


def render_html(ex: Explanation, threshold: float = DEFAULT_THRESHOLD, granularity: str = "head", *,
                max_bytes: int = MAX_BYTES) -> str:
    _, omitted, packed = _Content(ex, threshold, granularity).build(max_bytes - _page_bytes() - 4096)  # 4 kB: the title and note
    return _page(ex, packed, _ALWAYS_OMITTED + omitted)


def _page_bytes() -> int:
    """Bytes of the page around the state (bundle, CSS, loader): what the state's budget leaves."""
    return len(_page_shell("", "", "", ""))


def _bundle() -> str:
    # base64 holds no "<" at all, so the bundle cannot end or re-open its block whatever esbuild emits.
    return base64.b64encode((STATIC / "widget.js").read_bytes()).decode("ascii")


def _page(ex: Explanation, state: str, omitted: list[str]) -> str:
    return _page_shell(_title(ex), _note(ex, omitted), state, _bundle())


def _page_shell(title: str, note: str, state: str, bundle: str = "") -> str:
    css = (STATIC / "widget.css").read_text(encoding="utf-8")
    bundle = bundle or _bundle()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_style_safe(css)}
body {{ margin: 16px; font-family: system-ui, sans-serif; }}
.lmtt-report-note {{ font-size: 13px; margin: 0 0 12px; padding: 8px 12px; border-left: 3px solid #888; }}
.lmtt-report-note p, .lmtt-report-note ul {{ margin: 2px 0; }}</style>
</head><body>
{note}
<div id="lmtt-report"></div>
<script type="text/plain" id="lmtt-state">{state}</script>
<script type="text/plain" id="lmtt-bundle">{bundle}</script>
<script type="module">
const b64 = document.getElementById("lmtt-bundle").textContent;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const url = URL.createObjectURL(new Blob([bytes], {{ type: "text/javascript;charset=utf-8" }}));
const mod = await import(url);
await mod.renderReport(document.getElementById("lmtt-report"), document.getElementById("lmtt-state").textContent);
</script>
</body></html>
"""


def read_report(page: str) -> dict:
    """The report dict inside a written page (tests, tools): its state block unpacked, arrays as numpy arrays,
    vocabulary projections back as [text, value] lists."""
    report = unpack(page.split('id="lmtt-state">', 1)[1].split("</script>", 1)[0])
    texts = report.get("texts", [])

    def expand(o):
        if isinstance(o, dict) and "pair_texts" in o:
            return [[texts[int(i)], float(v)] for i, v in zip(o["pair_texts"], o["pair_values"])]
        if isinstance(o, dict):
            return {k: expand(v) for k, v in o.items()}
        return o

    return {**report, "details": expand(report["details"])}


def write_report(ex: Explanation, path="lmtt-report.html", threshold: float = DEFAULT_THRESHOLD,
                 granularity: str = "head", *, max_bytes: int = MAX_BYTES) -> pathlib.Path:
    """Write the self-contained report; returns its absolute path. An existing file is replaced only once the
    new one is complete: any failure leaves it as it was."""
    path = pathlib.Path(path).expanduser().resolve()
    data = render_html(ex, threshold, granularity, max_bytes=max_bytes).encode("utf-8")
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

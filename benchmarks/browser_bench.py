"""Browser benchmarks of the lmtt-widgets front end in headless Chromium (offline), on the real SmolLM2.

    .venv/bin/python benchmarks/browser_bench.py [--clicks 20] [--reloads 7] [--tokens 128] [--no-lab] [--json out.json]

1. First paint of the 30-layer x 128-token flow graph, in a static page that mounts the built bundle
   (`lmtt_widgets/static/widget.js`, its `renderStatic` export) with traits computed in Python by the real Explorer
   (arrays as base64, as in the HTML report). Timed in the page from the `renderStatic()` call (which includes
   decoding the base64 arrays) to the first animation frame after the graph canvas was drawn, i.e. once the drawn
   frame has been presented. Median over page reloads. Target 150 ms.
2. In JupyterLab 4 with a live kernel (same 128-token prompt):
   - first paint: `.lmtt-root` inserted by the widget view -> graph painted (same definition as above);
   - click -> Python: a click on a head cell of the heatmap (a real `click` event on the canvas) until the kernel's
     `selection` observer runs (kernel `time.time()` vs browser `Date.now()`, same host clock);
   - round trip: the same click until that observer's echo (an ipywidgets Label it sets) shows in the page.
     Target 100 ms;
   - Python -> browser: `w.selection = ...` in a cell until the vocabulary pane's title shows it.
   Median over --clicks.

3. Redraw time by τ (`--redraw`, at `--redraw-tokens`, default 128 and 512): the graph pane alone in the static page,
   its graph variants holding the route at every rung of the τ slider. For each rung, in a shuffled order, the
   slider's `change` event (as a user's release: the host swaps in that τ's graph), then the pane's `draw()` timed
   synchronously up to a 1-pixel `getImageData`, which forces the canvas to rasterise (without it Chromium defers
   the work past the timer). "τ change" is the change event and the new graph's first frame; "same graph" is a
   redraw with nothing new (hover, selection, focus). Median over --redraw-reps passes. Each rung's graph is decoded
   and laid out in a warm-up pass, and the timed changes come back to it (as in the HTML report, whose graphs are
   decoded once): a live widget's τ change gets a new graph from Python and decodes and lays it out too (see the
   README for what that costs). "CPU" is the CPU time
   Chromium's processes spend per τ change (from /proc, pairs of changes to the rung and back to the top one, the top
   one's cost subtracted): wall time on a loaded machine includes waiting for a core, CPU time does not. Target 16 ms
   at 128 tokens, 33 ms at 512. With `--redraw-against DIR` (another build's widget.js and widget.css), the two
   bundles are measured in one browser taking turns rung by rung, as an A/B that the machine's changing load
   affects alike.
   A dense graph's edges are drawn progressively (js/panes/graph-progress.ts): `draw()` after a change draws its
   first frame only, so "τ change" and "CPU" above are the first frame, what blocks the page. The second table puts
   it against the complete picture: CPU of all its frames (each forced to rasterise), wall time in real animation
   frames and their number, and CPU of the same change drawn in one go (`draw({ complete: true })`, the one-shot
   painter). With --keep, the work directory holds screenshots at the lowest τ after two frames (the first frame's
   preview, which the picture shows until the edges are complete: `redraw-{T}-min-tau-progress.png`) and complete
   (`redraw-{T}-min-tau.png`).

Every non-loopback request is aborted and counted (must be 0), as in the e2e tests. Prints a table; --json writes
the raw numbers.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "e2e"), str(REPO / "tests")]

from browser import serve  # noqa: E402
from nbdriver import (  # noqa: E402
    CHROMIUM, CHROMIUM_ARGS, is_loopback, open_notebook, py_eval, run_all, run_code, start_server, stop_server,
    write_notebook,
)

STATIC = REPO / "lmtt_widgets" / "static"
TRAITS = ["panes", "tokens", "meta", "target", "threshold", "granularity", "graph", "head_importance",
          "block_importance", "neurons", "lens", "selection", "details", "status", "error", "prompt"]
TEXT = (
    "The history of the city begins in the third century before the common era, when a small fishing village grew "
    "around the mouth of the river. Merchants from the south brought wine, olive oil and pottery, and in return they "
    "took salt, timber and furs back to their own ports. Over the following centuries the village became a town with "
    "walls, a market square and a temple dedicated to the god of the sea. When the empire expanded to the north, the "
    "town was chosen as the seat of a provincial governor, and roads were built to connect it with the capital. The "
    "population grew quickly, and new quarters were laid out on the hills above the harbour, where wealthy families "
    "built villas with gardens and fountains. In the late period the town suffered from raids and plague, and much "
    "of it was abandoned. "
) * 4

PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="widget.css">
<style>body { margin: 16px; font-family: system-ui, sans-serif; } #app { width: 1300px; }</style></head>
<body><div id="app"></div><script type="module">
const q = new URLSearchParams(location.search);
const mod = await import("./widget.js");
const state = await (await fetch(q.get("state"))).json();
if (q.get("panes")) state.panes = q.get("panes").split(",");
const frame = () => new Promise((r) => requestAnimationFrame(() => r(performance.now())));
await frame(); await frame();  // let the page settle
const el = document.getElementById("app");
const t0 = performance.now();
mod.renderStatic(el, state);
const tMount = performance.now();
const g = el.querySelector(".lmtt-graph");
let tDrawn = 0;
while (!tDrawn) { const t = await frame(); if (g.dataset.drawMs) tDrawn = t; }
const tPainted = await frame();  // the frame with the drawn canvas has been presented
window.__bench = { mount: tMount - t0, drawn: tDrawn - t0, painted: tPainted - t0, drawMs: Number(g.dataset.drawMs) };
</script></body></html>"""

# The graph pane alone; each rung of the τ slider in turn: the slider's change event, then draw() + a forced raster.
REDRAW_JS = """async ([order, reps]) => {
  const g = document.querySelector('.lmtt-graph');
  const api = g.__lmtt;
  const slider = g.querySelector('input.lmtt-slider');
  const canvas = g.querySelector('canvas');
  const c = canvas.getContext('2d');
  const frame = () => new Promise((r) => requestAnimationFrame(() => r(performance.now())));
  const out = {};
  for (let rep = 0; rep < reps; rep++) {
    for (const i of order) {
      slider.value = String(i);
      slider.dispatchEvent(new Event('change', { bubbles: true }));
      const tau = g.querySelector('.lmtt-num').textContent;
      let t0 = performance.now();
      api.draw();
      c.getImageData(0, 0, 1, 1);
      const change = performance.now() - t0;
      t0 = performance.now();
      api.draw();
      c.getImageData(0, 0, 1, 1);
      const same = performance.now() - t0;
      (out[i] ??= { tau, change: [], same: [], edges: g.querySelector('.lmtt-info').textContent }).change.push(change);
      out[i].same.push(same);
      await frame();
    }
  }
  return out;
}"""

# Progressive drawing (js/panes/graph-progress.ts): for each rung, a τ change drawn as a user sees it: the first
# frame (draw() + forced raster: what blocks the page), then real animation frames until the picture is complete.
PROGRESS_JS = """async ([order, reps]) => {
  const g = document.querySelector('.lmtt-graph');
  const api = g.__lmtt;
  const slider = g.querySelector('input.lmtt-slider');
  const c = g.querySelector('canvas').getContext('2d');
  const frame = () => new Promise((r) => requestAnimationFrame(() => r(performance.now())));
  const out = {};
  for (let rep = 0; rep < reps; rep++) {
    for (const i of order) {
      await frame();
      slider.value = String(i);
      slider.dispatchEvent(new Event('change', { bubbles: true }));
      const t0 = performance.now();
      api.draw();
      c.getImageData(0, 0, 1, 1);
      const first = performance.now() - t0;
      let frames = 1, slowest = first;
      while (api.pending()) {
        const t = await frame();  // the pane's own frame has drawn its slice by now
        c.getImageData(0, 0, 1, 1);
        slowest = Math.max(slowest, performance.now() - t);
        frames++;
      }
      const o = (out[i] ??= { first: [], complete: [], frames: [], slowest: [] });
      o.first.push(first);
      o.complete.push(performance.now() - t0);
      o.frames.push(frames);
      o.slowest.push(slowest);
    }
  }
  return out;
}"""

# K pairs of τ changes (to rung r, back to the highest rung), each drawn and rasterised at once; timed from outside by
# the CPU time Chromium's processes spend, which a loaded machine does not inflate the way it does wall time. Each
# change's first frame only ("first": what blocks the page), or drawn to the complete picture: all of its frames one
# after another ("complete"), or in one go by the one-shot painter ("oneshot", as the PNG export and the graphs that
# fit a frame are drawn).
PAIRS_JS = """([r, k, mode]) => {
  const g = document.querySelector('.lmtt-graph');
  const slider = g.querySelector('input.lmtt-slider');
  const c = g.querySelector('canvas').getContext('2d');
  const top = Number(slider.max);
  for (let j = 0; j < k; j++) for (const i of [r, top]) {
    slider.value = String(i);
    slider.dispatchEvent(new Event('change', { bubbles: true }));
    g.__lmtt.draw({ complete: mode === 'oneshot' });
    c.getImageData(0, 0, 1, 1);
    if (mode === 'complete') while (g.__lmtt.pending()) { g.__lmtt.draw(); c.getImageData(0, 0, 1, 1); }
  }
}"""


def tree_cpu_ms() -> float:
    """CPU time (user + system, ms) of this process's descendants (Chromium's), from /proc (Linux)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            st = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(st[1]), []).append((int(p), int(st[11]) + int(st[12])))
    total, stack = 0, [os.getpid()]
    while stack:
        for pid, ticks in children.get(stack.pop(), []):
            total += ticks
            stack.append(pid)
    return total * 1000 / os.sysconf("SC_CLK_TCK")


def cpu_per_change(page, rungs: list[int], pairs: int, mode: str = "first") -> dict[int, float]:
    """CPU ms of one τ change to each rung (the clock ticks in 10 ms, hence `pairs` changes per reading): its first
    frame ("first"), all its frames ("complete") or drawn in one go ("oneshot")."""
    def cost(r):
        page.wait_for_timeout(50)  # let the frame scheduled by the last change pass
        t0 = tree_cpu_ms()
        page.evaluate(PAIRS_JS, [r, pairs, mode])
        return (tree_cpu_ms() - t0) / pairs
    top = len(tau_ladder()) - 1
    one_top = statistics.median([cost(top) for _ in range(3)]) / 2
    return {r: cost(r) - one_top for r in rungs} | {top: one_top}


# In a JupyterLab page, before the notebook runs: time from the widget's root element appearing to the graph painted.
LAB_FIRST_PAINT_JS = """(n) => {
  window.__fp = null;
  const frame = () => new Promise((r) => requestAnimationFrame(() => r(performance.now())));
  const mo = new MutationObserver(async () => {
    const root = document.querySelectorAll('.lmtt-root')[n];
    if (!root || window.__fp) return;
    mo.disconnect();
    const t0 = performance.now();
    window.__fp = { pending: true };
    let tDrawn = 0;
    while (!tDrawn) {
      const t = await frame();
      const g = root.querySelector('.lmtt-graph');
      if (g && g.dataset.drawMs) tDrawn = t;
    }
    const tPainted = await frame();
    const g = root.querySelector('.lmtt-graph');
    window.__fp = { drawn: tDrawn - t0, painted: tPainted - t0, drawMs: Number(g.dataset.drawMs) };
  });
  mo.observe(document.body, { childList: true, subtree: true });
}"""


# Click a heatmap cell with a real click event; resolve when the kernel's echo label shows it.
CLICK_JS = """async ([layer, head, L, H, echo]) => {
  const c = document.querySelector('.lmtt-root .lmtt-heads canvas.lmtt-heat');
  const r = c.getBoundingClientRect();
  const cw = (r.width - 34) / H, ch = (r.height - 18) / L;
  const x = r.left + 30 + (head + 0.5) * cw, y = r.top + 16 + (layer + 0.5) * ch;
  const label = document.querySelector('.lmtt-echo');
  const seen = new Promise((resolve) => {
    const done = () => { if (label.textContent.trim() === echo) { mo.disconnect(); resolve(Date.now()); } };
    const mo = new MutationObserver(done);
    mo.observe(label, { childList: true, subtree: true, characterData: true });
  });
  const tClick = Date.now();
  c.dispatchEvent(new MouseEvent('click', { bubbles: true, cancelable: true, clientX: x, clientY: y, view: window }));
  const tLocal = Date.now();  // the browser's own panes have redrawn synchronously by now
  const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 10000));
  const tEcho = await Promise.race([seen, timeout]);
  return { tClick, tLocal, tEcho };
}"""

VOCAB_LOG_JS = """() => {
  window.__vocab = [];
  const t = document.querySelector('.lmtt-root .lmtt-vocab .lmtt-pane-title');
  new MutationObserver(() => window.__vocab.push([Date.now(), t.textContent]))
    .observe(t, { childList: true, subtree: true, characterData: true });
}"""

SETUP_CELL = """import json, time
import ipywidgets
from lmtt_widgets import Explorer
w = Explorer('smollm2', {prompt!r})
_log, _sets, _base = [], [], []
echo = ipywidgets.Label(value='')
echo.add_class('lmtt-echo')
def _observe(change):
    s = change['new'] or {{}}
    _log.append((time.time(), s))
    echo.value = f"echo {{s.get('kind')}} {{s.get('layer')}} {{s.get('head')}}"
w.observe(_observe, 'selection')
display(echo)
w"""


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def make_prompt(lm, n_tokens: int, text: str = TEXT) -> str:
    tok = lm.tokenizer
    ids = tok(text)["input_ids"][:n_tokens]
    prompt = tok.decode(ids)
    for _ in range(5):  # decoding and re-encoding may shift by a token
        n = len(tok(prompt)["input_ids"])
        if n == n_tokens:
            return prompt
        ids = ids[: len(ids) - (n - n_tokens)] if n > n_tokens else tok(text)["input_ids"][: len(ids) + 1]
        prompt = tok.decode(ids)
    return prompt


def static_states(lm, prompt: str) -> dict[str, dict]:
    from lmtt_widgets import Explorer
    from lmtt_widgets.widgets.codec import to_base64

    w = Explorer(model=lm, prompt=prompt)
    out = {"0.04": to_base64({k: getattr(w, k) for k in TRAITS})}
    w.threshold = 0.005  # the densest graph the slider allows
    out["0.005"] = to_base64({k: getattr(w, k) for k in TRAITS})
    return out


def tau_ladder() -> list[float]:
    """The τ slider's rungs (js/tau.ts TAU_LADDER: 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 per decade, 0.005 to 0.5)."""
    rungs = [float(f"{m * 10 ** e:.3g}") for e in range(-3, 1) for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8)]
    return [v for v in rungs if 0.005 - 1e-12 <= v <= 0.5 + 1e-12]


def redraw_state(lm, prompt: str) -> dict:
    """The graph pane's state with the route at every rung of the τ slider as graph variants."""
    from lmtt_widgets.widgets import payload
    from lmtt_widgets import Explorer
    from lmtt_widgets.widgets.codec import to_base64

    w = Explorer(model=lm, prompt=prompt)
    ex, target = w.explanation, w.target
    variants = {f"{target}|{tau!r}|head": payload.graph_arrays(ex.route(target, tau, "head")) for tau in tau_ladder()}
    state = {k: getattr(w, k) for k in TRAITS}
    state.update(panes=["graph"], graph_variants=variants, threshold=0.04,
                 graph=variants[f"{target}|0.04|head"])
    return to_base64(state)


def bench_redraw(browser, states: dict[int, dict], reps: int, blocked: list, work: Path, bundle: Path = STATIC) -> dict:
    shutil.copy(bundle / "widget.js", work / "widget.js")
    shutil.copy(bundle / "widget.css", work / "widget.css")
    (work / "index.html").write_text(PAGE)
    srv, url = serve(work)
    results = {}
    try:
        ctx, page = new_page(browser, blocked)
        for T, st in states.items():
            (work / f"redraw-{T}.json").write_text(json.dumps(st))
            page.goto(f"{url}/index.html?state=redraw-{T}.json&panes=graph")
            page.wait_for_function("() => window.__bench", timeout=60_000)
            n = len(tau_ladder())
            order = [*range(0, n, 2), *range(1, n, 2)]  # every rung, neighbours apart (each one a real change)
            page.evaluate(REDRAW_JS, [order, 1])  # warm-up pass
            results[T] = page.evaluate(REDRAW_JS, [order, reps])
            prog = page.evaluate(PROGRESS_JS, [order, reps])
            for r, d in prog.items():
                results[T][str(r)]["progress"] = d
            if Path("/proc/self/stat").exists():
                for mode, name in (("first", "cpu"), ("complete", "cpu_complete"), ("oneshot", "cpu_oneshot")):
                    for r, ms in cpu_per_change(page, list(range(n - 1)), max(3, reps), mode).items():
                        results[T][str(r)][name] = ms
            # a mid-progress frame at the lowest τ, then the complete picture (to look at)
            png = page.evaluate("""() => { const g = document.querySelector('.lmtt-graph');
                const s = g.querySelector('input.lmtt-slider'); s.value = '0';
                s.dispatchEvent(new Event('change', { bubbles: true })); g.__lmtt.draw(); g.__lmtt.draw();
                return g.querySelector('canvas.lmtt-canvas').toDataURL('image/png'); }""")
            (work / f"redraw-{T}-min-tau-progress.png").write_bytes(base64.b64decode(png.split(",", 1)[1]))
            page.evaluate("() => document.querySelector('.lmtt-graph input.lmtt-slider').value = 0")
            page.evaluate("() => document.querySelector('.lmtt-graph input.lmtt-slider')"
                          ".dispatchEvent(new Event('change', { bubbles: true }))")
            page.wait_for_function("() => !document.querySelector('.lmtt-graph').__lmtt.pending()")
            page.wait_for_timeout(200)
            page.screenshot(path=str(work / f"redraw-{T}-min-tau.png"))
            assert not page.errors, page.errors
        ctx.close()
    finally:
        srv.shutdown()
    return results


# τ changes to rung r and back to the top one, k times; the wall time of each change to r.
WALL_PAIRS_JS = """([r, k]) => {
  const g = document.querySelector('.lmtt-graph');
  const slider = g.querySelector('input.lmtt-slider');
  const c = g.querySelector('canvas').getContext('2d');
  const top = Number(slider.max);
  const out = [];
  for (let j = 0; j < k; j++) for (const i of [r, top]) {
    const t0 = performance.now();
    slider.value = String(i);
    slider.dispatchEvent(new Event('change', { bubbles: true }));
    g.__lmtt.draw();
    c.getImageData(0, 0, 1, 1);
    if (i === r) out.push(performance.now() - t0);
  }
  return out;
}"""


# The graph's info line ("… N edges …") at rung r.
EDGES_AT_JS = """(r) => {
  const g = document.querySelector('.lmtt-graph');
  const slider = g.querySelector('input.lmtt-slider');
  slider.value = String(r);
  slider.dispatchEvent(new Event('change', { bubbles: true }));
  g.__lmtt.draw();
  return g.querySelector('.lmtt-info').textContent;
}"""


def bench_redraw_ab(browser, state: dict, bundles: list[Path], blocked: list, work: Path, rounds: int = 3) -> dict:
    """Two bundles, one page each in one browser, taking turns rung by rung: load on the machine changes from one
    minute to the next, so two runs one after the other can differ more than the bundles do. Per rung and bundle:
    CPU per τ change (median of `rounds` readings of 6 pairs) and the wall time of each change."""
    pages, servers = [], []
    n = len(tau_ladder())
    for b, bundle in enumerate(bundles):
        d = work / str(b)
        d.mkdir(parents=True)
        shutil.copy(bundle / "widget.js", d / "widget.js")
        shutil.copy(bundle / "widget.css", d / "widget.css")
        (d / "index.html").write_text(PAGE)
        (d / "redraw.json").write_text(json.dumps(state))
        srv, url = serve(d)
        servers.append(srv)
        ctx, page = new_page(browser, blocked)
        page.goto(f"{url}/index.html?state=redraw.json&panes=graph")
        page.wait_for_function("() => window.__bench", timeout=60_000)
        for r in range(n):
            page.evaluate(WALL_PAIRS_JS, [r, 1])  # warm-up: every graph decoded and laid out once
        pages.append(page)
    out = {str(b): {str(r): {"cpu": [], "wall": []} for r in range(n)} for b in range(len(bundles))}
    try:
        for _ in range(rounds):
            for r in range(n):
                for b, page in enumerate(pages):
                    out[str(b)][str(r)]["cpu"].append(cpu_per_change(page, [r], 6)[r])
                    out[str(b)][str(r)]["wall"] += page.evaluate(WALL_PAIRS_JS, [r, 3])
        for b, page in enumerate(pages):
            assert not page.errors, page.errors
        out["edges"] = {str(r): pages[0].evaluate(EDGES_AT_JS, r) for r in range(n)}
    finally:
        for srv in servers:
            srv.shutdown()
    return out


def print_redraw_ab(ab: dict, bundles: list[Path]) -> None:
    import re

    print()
    print("A/B, taking turns rung by rung: CPU ms per τ change (median), wall ms (median, fastest)")
    for b, bundle in enumerate(bundles):
        print(f"[{b}] {bundle}")
    for T, res in ab.items():
        print(f"{T} tokens")
        print(f"{'τ':>7} {'edges':>7} " + " ".join(f"{f'[{b}] CPU':>8} {'wall':>6} {'min':>6}" for b in range(len(bundles))))
        for r, tau in enumerate(tau_ladder()):
            m = re.search(r"(\d+) edges", res["edges"][str(r)])
            cells = []
            for b in range(len(bundles)):
                d = res[str(b)][str(r)]
                cells.append(f"{statistics.median(d['cpu']):>8.1f} {statistics.median(d['wall']):>6.1f} {min(d['wall']):>6.1f}")
            print(f"{tau:>7g} {m.group(1) if m else '?':>7} " + " ".join(cells))


def print_redraw(results: dict) -> None:
    import re

    print()
    print("redraw of the graph pane by τ (median ms over passes; τ change = new graph decoded, laid out and drawn;")
    print("CPU = Chromium's CPU time per τ change, which load on the machine does not inflate; same = nothing new)")
    Ts = sorted(results)
    head = f"{'τ':>7} " + " ".join(f"{f'{T} tok: edges':>14} {'τ change':>9} {'CPU':>6} {'same':>6}" for T in Ts)
    print(head)
    rungs = sorted({int(i) for T in Ts for i in results[T]})
    for i in rungs:
        cells = []
        tau = ""
        for T in Ts:
            d = results[T][str(i)] if str(i) in results[T] else results[T][i]
            tau = d["tau"]
            m = re.search(r"(\d+) edges", d["edges"])
            cells.append(f"{m.group(1) if m else '?':>14} {statistics.median(d['change']):>8.1f} "
                         f"{d.get('cpu', float('nan')):>6.1f} {statistics.median(d['same']):>6.1f}")
        print(f"{tau:>7} " + " ".join(cells))
    print()
    print("progressive drawing, per τ change: the first frame (what blocks the page: CPU, wall median) against the")
    print("complete picture (CPU of all its frames; wall in real animation frames, median; frames) and the one-shot")
    print("drawing of the same picture (CPU)")
    head = f"{'τ':>7} " + " ".join(f"{f'{T}: 1st CPU':>11} {'wall':>5} {'done CPU':>8} {'wall':>5} {'frames':>6} {'1-shot':>6}" for T in Ts)
    print(head)
    for i in rungs:
        cells = []
        for T in Ts:
            d = results[T][str(i)]
            tau = d["tau"]
            pr = d.get("progress", {})
            med = lambda k: statistics.median(pr[k]) if pr.get(k) else float("nan")  # noqa: E731
            cells.append(f"{d.get('cpu', float('nan')):>11.1f} {med('first'):>5.1f} {d.get('cpu_complete', float('nan')):>8.1f} "
                         f"{med('complete'):>5.0f} {med('frames'):>6.0f} {d.get('cpu_oneshot', float('nan')):>6.1f}")
        print(f"{tau:>7} " + " ".join(cells))
    for T in Ts:
        worst = max(statistics.median(d["change"]) for d in results[T].values())
        cpu = max((d.get("cpu", float("nan")) for d in results[T].values()), default=float("nan"))
        target = 16 if T <= 128 else 33
        print(f"{T} tokens: slowest first frame of a τ change {worst:.1f} ms wall, {cpu:.1f} ms CPU (target {target} ms): "
              f"{'yes' if max(worst, cpu) <= target else 'NO'}")
        done = max((d.get("cpu_complete", float("nan")) for d in results[T].values()), default=float("nan"))
        print(f"{T} tokens: slowest complete picture {done:.1f} ms CPU over its frames "
              f"({'within' if done <= target else 'over'} one frame's {target} ms)")


def new_page(browser, blocked: list):
    ctx = browser.new_context(viewport={"width": 1400, "height": 2200}, device_scale_factor=1)

    def route(r):
        if is_loopback(r.request.url):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    ctx.route("**/*", route)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    return ctx, page


def bench_static(browser, states: dict, reloads: int, blocked: list, work: Path) -> dict:
    shutil.copy(STATIC / "widget.js", work / "widget.js")
    shutil.copy(STATIC / "widget.css", work / "widget.css")
    (work / "index.html").write_text(PAGE)
    info = {}
    for tau, st in states.items():
        (work / f"state-{tau}.json").write_text(json.dumps(st))
        info[tau] = {"edges": st["graph"]["edge_src"]["shape"][0], "nodes": st["graph"]["node_kind"]["shape"][0]}
    srv, url = serve(work)
    results = {}
    try:
        ctx, page = new_page(browser, blocked)
        cases = [("explorer", "0.04", ""), ("graph", "0.04", "graph"), ("graph", "0.005", "graph")]
        for name, tau, panes in cases:
            runs = []
            for i in range(reloads + 1):  # the first load warms the caches and is dropped
                page.goto(f"{url}/index.html?state=state-{tau}.json&panes={panes}")
                page.wait_for_function("() => window.__bench", timeout=60_000)
                if i:
                    runs.append(page.evaluate("() => window.__bench"))
            assert not page.errors, page.errors
            results[f"{name}|{tau}"] = {"runs": runs, **info[tau]}
        page.screenshot(path=str(work / "static-graph-0.005.png"))
        ctx.close()
    finally:
        srv.shutdown()
    return results


def bench_lab(browser, prompt: str, clicks: int, blocked: list, work: Path, L: int, H: int, redisplays: int) -> dict:
    server = start_server("lab", work / "lab")
    try:
        ctx, page = new_page(browser, blocked)
        name = write_notebook(server.root, [SETUP_CELL.format(prompt=prompt)], stem="bench")
        open_notebook(page, server, name)
        page.evaluate(LAB_FIRST_PAINT_JS, 0)
        t0 = time.monotonic()
        run_all(page)
        page.wait_for_function("() => window.__fp && !window.__fp.pending", timeout=300_000, polling=100)
        first_paint = page.evaluate("() => window.__fp")
        cell_to_paint = time.monotonic() - t0
        T = py_eval(page, "len(w.tokens)")
        page.evaluate(VOCAB_LOG_JS)

        # browser -> Python and back
        cells = [((7 * i) % L, (5 * i + 1) % H) for i in range(clicks + 1)]
        rounds = []
        for layer, head in cells:
            r = page.evaluate(CLICK_JS, [layer, head, L, H, f"echo head {layer} {head}"])
            rounds.append({"layer": layer, "head": head, **r})
            page.wait_for_timeout(50)
        log = py_eval(page, "_log")
        for r in rounds:
            hits = [t for t, s in log if s and s.get("kind") == "head" and s.get("layer") == r["layer"]
                    and s.get("head") == r["head"] and t * 1000 >= r["tClick"] - 5]
            r["tPython"] = hits[0] * 1000 if hits else None
        rounds = rounds[1:]  # the first click warms things up

        # Python -> browser
        sets = []
        last = (rounds[-1]["layer"], rounds[-1]["head"]) if rounds else None
        for i in range(clicks + 1):
            layer, head = (3 * i + 2) % L, (2 * i) % H
            if (layer, head) == last:  # setting the current selection again changes nothing
                head = (head + 1) % H
            last = (layer, head)
            n_before = len(page.evaluate("() => window.__vocab"))
            run_code(page, f"_sets.append(time.time()); w.selection = {{'kind': 'head', 'layer': {layer}, "
                           f"'head': {head}, 'token': {T - 1}}}")
            want = f"head L{layer}.H{head}"
            page.wait_for_function("([n, want]) => window.__vocab.slice(n).some(([t, s]) => s.includes(want))",
                                   arg=[n_before, want], timeout=30_000, polling=20)
            seen = [t for t, s in page.evaluate("() => window.__vocab")[n_before:] if want in s][0]
            sets.append({"layer": layer, "head": head, "tBrowser": seen})
        t_sets = py_eval(page, "_sets")
        for s, t in zip(sets, t_sets):
            s["tSet"] = t * 1000
        sets = sets[1:]

        # baseline of the same path without lmtt-widgets: Python sets a plain ipywidgets Label -> shown
        page.evaluate("""() => {
          window.__echo = [];
          const l = document.querySelector('.lmtt-echo');
          new MutationObserver(() => window.__echo.push([Date.now(), l.textContent.trim()]))
            .observe(l, { childList: true, subtree: true, characterData: true });
        }""")
        base = []
        for i in range(clicks + 1):
            want = f"base {i}"
            run_code(page, f"_base.append(time.time()); echo.value = {want!r}")
            page.wait_for_function("(want) => window.__echo.some(([t, s]) => s === want)", arg=want,
                                   timeout=30_000, polling=20)
            base.append([t for t, s in page.evaluate("() => window.__echo") if s == want][0])
        t_base = py_eval(page, "_base")
        baseline = [b - t * 1000 for b, t in zip(base, t_base)][1:]
        # more views of the same model (display(w) again): mount -> graph painted with the state already in the page
        views = []
        for i in range(1, redisplays + 1):
            page.evaluate(LAB_FIRST_PAINT_JS, i)
            run_code(page, "display(w)")
            page.wait_for_function("() => window.__fp && !window.__fp.pending", timeout=60_000, polling=50)
            views.append(page.evaluate("() => window.__fp"))
        page.screenshot(path=str(work / "lab-bench.png"))
        assert not [e for e in page.errors if "reading 'schema'" not in e], page.errors
        ctx.close()
        return {"first_paint": first_paint, "cell_to_paint_s": cell_to_paint, "rounds": rounds, "sets": sets, "T": T,
                "baseline": baseline, "views": views}
    finally:
        stop_server(server.proc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--reloads", type=int, default=7, help="static page reloads / extra views in JupyterLab")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--no-lab", action="store_true", help="only the static first-paint benchmark")
    ap.add_argument("--no-static", action="store_true", help="only the JupyterLab benchmark")
    ap.add_argument("--redraw", action="store_true", help="redraw time by τ (see 3.) instead of the other benchmarks")
    ap.add_argument("--redraw-tokens", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--redraw-reps", type=int, default=5)
    ap.add_argument("--bundle", type=Path, default=STATIC, help="folder of the built widget.js / widget.css")
    ap.add_argument("--redraw-states", type=Path, help="reuse (or save) the redraw states in this folder")
    ap.add_argument("--redraw-against", type=Path, metavar="DIR",
                    help="A/B: also this folder's widget.js/widget.css, in the same browser, the two taking turns "
                         "rung by rung (3 rounds); prints CPU and wall for both")
    ap.add_argument("--json", type=Path, help="write the raw numbers here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (pages, screenshots)")
    args = ap.parse_args(argv)

    if args.redraw and args.redraw_states and all((args.redraw_states / f"redraw-{T}.json").exists()
                                                  for T in args.redraw_tokens):
        return main_redraw(None, args)  # saved states: no model needed

    from playwright.sync_api import sync_playwright

    from lmtt_widgets import load_model

    lm = load_model("smollm2")
    if args.redraw:
        return main_redraw(lm, args)
    prompt = make_prompt(lm, args.tokens)
    t = time.monotonic()
    states = static_states(lm, prompt)
    explain_s = time.monotonic() - t
    meta = states["0.04"]["meta"]
    L, H, T = meta["n_layers"], meta["n_heads"], meta["n_tokens"]
    print(f"SmolLM2: {L} layers x {H} heads, prompt of {T} tokens (explained in {explain_s:.1f} s for two thresholds)")

    work = Path(tempfile.mkdtemp(prefix="lmtt-bench-"))
    blocked: list[str] = []
    rows = []
    raw: dict = {"L": L, "H": H, "T": T}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, chromium_sandbox=False, args=CHROMIUM_ARGS)
        st = {} if args.no_static else bench_static(browser, states, args.reloads, blocked, work)
        raw["static"] = st
        for key, label in [("explorer|0.04", "Explorer (5 panes)"), ("graph|0.04", "FlowGraph"),
                           ("graph|0.005", "FlowGraph")]:
            if key not in st:
                continue
            d = st[key]
            tau = key.split("|")[1]
            painted = [r["painted"] for r in d["runs"]]
            draw = [r["drawMs"] for r in d["runs"]]
            rows.append((f"first paint, static {label}, τ={tau} ({d['edges']} edges)", painted, 150))
            rows.append((f"  of which graph canvas draw", draw, None))
        if not args.no_lab:
            lab = bench_lab(browser, prompt, args.clicks, blocked, work, L, H, args.reloads)
            raw["lab"] = lab
            fp = lab["first_paint"]
            rows.append(("first paint in JupyterLab (view mounted -> graph painted)", [fp["painted"]], 150))
            rows.append(("  of which graph canvas draw", [fp["drawMs"]], None))
            rows.append(("another view in JupyterLab (mounted -> graph painted)", [v["painted"] for v in lab["views"]], 150))
            rows.append(("  of which graph canvas draw", [v["drawMs"] for v in lab["views"]], None))
            rs = lab["rounds"]
            missing = sum(1 for r in rs if r["tEcho"] is None or r["tPython"] is None)
            rows.append(("click -> browser panes redrawn (local)", [r["tLocal"] - r["tClick"] for r in rs], None))
            rows.append(("click -> Python observes selection", [r["tPython"] - r["tClick"] for r in rs if r["tPython"]], None))
            rows.append(("click -> Python echo shown (round trip)", [r["tEcho"] - r["tClick"] for r in rs if r["tEcho"]], 100))
            rows.append(("  of which Python observer -> echo shown", [r["tEcho"] - r["tPython"] for r in rs
                                                                    if r["tEcho"] and r["tPython"]], None))
            rows.append(("Python sets selection -> browser redrawn", [s["tBrowser"] - s["tSet"] for s in lab["sets"]], None))
            rows.append(("  baseline: Python sets an ipywidgets Label -> shown", lab["baseline"], None))
            if missing:
                print(f"WARNING: {missing} of {len(rs)} clicks got no echo / no Python observation within 10 s")
            print(f"(JupyterLab: run-all -> graph painted {lab['cell_to_paint_s']:.1f} s, incl. model load + explain)")
        browser.close()

    print()
    print(f"{'metric':<66} {'median':>8} {'p90':>8} {'n':>4} {'target':>8}  ok")
    print("-" * 102)
    for name, xs, target in rows:
        med = statistics.median(xs) if xs else float("nan")
        ok = "" if target is None else ("yes" if med <= target else "NO")
        tgt = "" if target is None else f"{target} ms"
        print(f"{name:<66} {med:>6.1f}ms {percentile(xs, 0.9):>6.1f}ms {len(xs):>4} {tgt:>8}  {ok}")
    print("-" * 102)
    print(f"non-loopback requests aborted: {len(blocked)}" + (f" {blocked[:5]}" if blocked else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": [(n, xs, t) for n, xs, t in rows], "raw": raw}, indent=1, default=str))
    if args.keep:
        print(f"work directory: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if blocked else 0


def main_redraw(lm, args) -> int:
    from playwright.sync_api import sync_playwright

    text = TEXT * (1 + max(args.redraw_tokens) // 400)
    states = {}
    for T in args.redraw_tokens:
        t = time.monotonic()
        saved = args.redraw_states / f"redraw-{T}.json" if args.redraw_states else None
        if saved and saved.exists():
            states[T] = json.loads(saved.read_text())
            continue
        states[T] = redraw_state(lm, make_prompt(lm, T, text))
        if saved:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(states[T]))
        print(f"{T} tokens: {len(tau_ladder())} routes in {time.monotonic() - t:.1f} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="lmtt-bench-"))
    blocked: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, chromium_sandbox=False, args=CHROMIUM_ARGS)
        if args.redraw_against:
            ab = {T: bench_redraw_ab(browser, st, [args.bundle, args.redraw_against], blocked, work / f"ab{T}")
                  for T, st in states.items()}
            browser.close()
            print_redraw_ab(ab, [args.bundle, args.redraw_against])
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({"redraw_ab": ab}, indent=1))
            return 1 if blocked else 0
        results = bench_redraw(browser, states, args.redraw_reps, blocked, work, args.bundle)
        browser.close()
    print_redraw(results)
    print(f"non-loopback requests aborted: {len(blocked)}" + (f" {blocked[:5]}" if blocked else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"redraw": results}, indent=1))
    if args.keep:
        print(f"work directory: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if blocked else 0


if __name__ == "__main__":
    raise SystemExit(main())

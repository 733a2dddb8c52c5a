"""Issue 5: the main job writes a self-contained report that renders offline and reacts to clicks."""

import gzip
import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import pytest

from lmtt_widgets import explain
from lmtt_widgets.report import read_report, render_html, write_report
from tiny_models import loaded

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def test_report_html_is_self_contained():
    ex = explain(loaded("gpt2"), "a </script><img src=x onerror=alert(1)> b")
    page = render_html(ex)
    assert "default-src 'none'" in page and "connect-src 'none'" in page
    assert not re.search(r"""(src|href)=["']https?://""", page)
    assert "import(\"http" not in page and "from\"http" not in page
    # the hostile prompt cannot close the state's <script> element early: the state is text with no "<" (nor CR or
    # NUL, which the HTML parser would change; report_pack.to_text; test_hostile.py goes further), and it holds
    # the prompt intact
    state = page.split('id="lmtt-state">', 1)[1].split("</script>", 1)[0]
    assert not re.search("[<\r\0]", state) and max(map(ord, state)) < 0x283
    bundle = page.split('id="lmtt-bundle">', 1)[1].split("</script>", 1)[0]  # the bundle's text too (CSS inside)
    assert not re.search("[<\r\0]", bundle) and max(map(ord, bundle)) < 0x283 and "<style>" in page
    assert read_report(page)["state"]["prompt"] == "a </script><img src=x onerror=alert(1)> b"


@pytest.mark.smollm2
def test_main_job_cli_prints_summary_and_writes_report(tmp_path):
    out = tmp_path / "report.html"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "lmtt_widgets", "The capital of France is", "--html", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "' Paris'" in proc.stdout and "Most important heads" in proc.stdout
    # the signed logit attribution against the runner-up, with its components and signs
    line = next(l for l in proc.stdout.splitlines() if l.startswith("Direct logit attribution to"))
    assert "logit(' Paris') - logit(' the') at token 4" in line
    parts = proc.stdout.splitlines()[proc.stdout.splitlines().index(line) + 1].split(", ")
    assert len(parts) == 5 and all(p.strip().split()[1][0] in "+-" for p in parts)
    assert f"Report written to {out}" in proc.stdout
    assert out.stat().st_size > 10_000


def test_cli_reports_bad_input_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lmtt_widgets", "hi", "--model", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: No model directory" in proc.stderr and "Traceback" not in proc.stderr


def _offline_page(chromium, outside: list, errors: list, console_errors: bool = False):
    """A page that aborts (and lists) every request leaving the machine and lists page errors (and, with
    ``console_errors``, what the page logs as an error)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = chromium.new_page(viewport={"width": 1400, "height": 1100})
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "blob:", "data:"))
               else (outside.append(route.request.url), route.abort()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    if console_errors:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return page


@pytest.mark.browser
@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "text/html"])
def test_report_served_by_a_web_server_decodes_as_utf8_and_renders(content_type, tmp_path, chromium):
    """The page is UTF-8 and says so first in its head (<meta charset="utf-8"> within the 1024 bytes a browser
    prescans): served with an HTTP charset of UTF-8, or with none, it decodes as UTF-8 and renders. (A server that
    declares another charset overrides the meta tag, as for any UTF-8 page.)"""
    ex = explain(loaded("gpt2"), "a <b>bold</b> prompt, \u05d0 and \u00e9")
    data = write_report(ex, tmp_path / "r.html").read_bytes()
    data.decode("utf-8")  # strict
    # the charset is the head's first element, well within the prescan
    assert data.startswith(b"<!doctype html>") and data.index(b"<head>") + 6 == data.index(b'<meta charset="utf-8">') < 1024
    outside, errors = [], []
    page = chromium.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    url = "http://report.test/r.html"
    page.route("**/*", lambda route: route.fulfill(status=200, body=data, headers={"content-type": content_type})
               if route.request.url == url else (outside.append(route.request.url), route.abort()))
    try:
        page.goto(url)
        page.wait_for_selector(".lmtt-graph canvas", timeout=20_000)
        assert page.locator("textarea.lmtt-prompt").input_value() == "a <b>bold</b> prompt, \u05d0 and \u00e9"
        assert page.evaluate("document.characterSet") == "UTF-8"
    finally:
        page.close()
    assert outside == [] and errors == []


@pytest.mark.smollm2
@pytest.mark.browser
def test_report_renders_offline_and_reacts_to_clicks(smollm2_paris, tmp_path, chromium):
    path = write_report(smollm2_paris, tmp_path / "report.html")
    outside, errors, dialogs = [], [], []
    page = _offline_page(chromium, outside, errors)
    try:
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(path.as_uri())
        page.wait_for_selector(".lmtt-graph canvas")
        page.wait_for_function("() => { const c = document.querySelector('.lmtt-graph canvas');"
                               " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                               " for (let i = 0; i < d.length; i += 4) if (d[i] < 120 && d[i+3] > 0) return true;"
                               " return false; }")
        labels = page.locator(".lmtt-root").inner_text()
        assert "Paris" in labels and "capital" in labels
        vocab_title = page.locator(".lmtt-vocab-body").locator("xpath=..").locator(".lmtt-pane-title")
        before = vocab_title.inner_text()
        heat = page.locator("canvas.lmtt-heat")
        box = heat.bounding_box()
        heat.click(position={"x": box["width"] * 0.6, "y": box["height"] * 0.5})
        page.wait_for_function("t => document.querySelector('.lmtt-vocab-body').parentElement"
                               ".querySelector('.lmtt-pane-title').textContent !== t", arg=before)
        assert "head" in vocab_title.inner_text().lower()
        page.screenshot(path=str(ARTIFACTS / "report-after-click.png"), full_page=True)
    finally:
        page.close()
    assert outside == [] and errors == [] and dialogs == []


# ---- issue 11 point 3: a complete report within a size budget

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "lmtt_widgets" / "static" / "widget.js"
TAUS = (0.005, 0.01, 0.04, 0.1, 0.3)


def _page_routes(page_path: Path, queries: list) -> list[dict]:
    """Routes the page itself traces (js/staticroute.ts, through the built bundle's exports, run by Node)."""
    script = """
import { readFileSync } from "node:fs";
const [bundle, html, queries] = process.argv.slice(1);
const mod = await import(bundle);
const text = readFileSync(html, "utf8").split('id="lmtt-state">')[1].split("</script>")[0];
const { body, bytes } = await mod.readContainer(text);
const { report } = mod.reportParts(body, bytes);
const CTOR = { float32: Float32Array, uint32: Uint32Array, int32: Int32Array, uint8: Uint8Array };
const out = JSON.parse(queries).map(([t, tau, gran]) => Object.fromEntries(
  Object.entries(mod.traceRoute(report.flow, t, tau, gran)).map(([k, v]) => {
    const C = CTOR[v.dtype];
    return [k, Array.from(new C(v.data.buffer, v.data.byteOffset, v.data.byteLength / C.BYTES_PER_ELEMENT))];
  })));
console.log(JSON.stringify(out));
"""
    proc = subprocess.run(["node", "--input-type=module", "-e", script, BUNDLE.as_uri(), str(page_path),
                           json.dumps(queries)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])  # sequential and parallel blocks
def test_routes_traced_in_the_page_equal_the_kernels(family, tmp_path):
    from lmtt_widgets.widgets import payload
    from lmtt_widgets.widgets.codec import decode_array

    ex = explain(loaded(family), "The capital of France is Paris.")
    path = write_report(ex, tmp_path / "r.html")
    queries = [[t, tau, gran] for t in range(ex.n_tokens) for tau in TAUS for gran in ("head", "edge")]
    sizes = []
    for (t, tau, gran), got in zip(queries, _page_routes(path, queries)):
        want = {k: decode_array(v) for k, v in payload.graph_arrays(ex.route(t, tau, gran)).items()}
        for k, v in want.items():
            # an edge's breakdown by head (edge granularity) holds head parts under the report's floor, which it
            # stores as float16 (report.py flow_scores): within 2**-10 of theirs; everything else exact
            rtol = 2 ** -10 if (gran, k) == ("edge", "edge_heads") else 1e-6
            assert np.allclose(np.asarray(got[k]).reshape(v.shape), v, rtol=rtol, atol=1e-7), (t, tau, gran, k)
        sizes.append(len(want["edge_src"]))
    assert max(sizes) > 10 and len(set(sizes)) > 5  # real routes, different ones


def _assert_map_precision(got: np.ndarray, want: np.ndarray, levels: int) -> None:
    """A stored map against the real one on the pane's square-root colour scale: off by at most half a step, exact
    zeros kept, the max exact, and values below the first step's half drawn on that step (off by under a step)."""
    s_got, s_want = np.sqrt(got / want.max()), np.sqrt(want / want.max())
    lifted = (want > 0) & (s_want < 0.5 / levels)
    err = np.abs(s_got - s_want)
    assert err[~lifted].max() <= 0.5 / levels + 1e-6 and err[lifted].max(initial=0) < 1 / levels + 1e-6
    assert ((got == 0) == (want == 0)).all() and got.max() == want.max()


def test_report_holds_every_head_target_and_route_neuron(tmp_path):
    from lmtt_widgets.report import CHEAP_INPUT_METHODS, FLOW_METHODS, read_report, widget_traits
    from lmtt_widgets.widgets import Explorer, payload

    ex = explain(loaded("gpt2"), "The capital of France is Paris.")
    T, L, H, last = ex.n_tokens, ex.n_layers, ex.n_heads, ex.n_tokens - 1
    rep = read_report(write_report(ex, tmp_path / "r.html").read_text(encoding="utf-8"))
    state, details = rep["state"], rep["details"]
    # the state is the widget's own: every synced trait of an Explorer, at the last token
    assert set(widget_traits(Explorer())) <= set(state) and state["target"] == last and state["static"] is True
    for layer in range(L):
        for h in range(H):
            d = details[f"head:{layer}:{h}:{last}"]
            assert d["pattern"].shape == (T, T) and d["contribution"].shape == (T, T) and d["promoted"]
            # the stored maps are the real ones, to the colour step the pane can draw (sqrt scale, 255 levels: one
            # byte), exact zeros kept and no other value drawn as the background
            want = ex.head_attention(layer, h).numpy()
            _assert_map_precision(d["pattern"], want, 255)
    # every target: its own lens column, predictions, metric and flow attribution; input x gradient at the last
    assert set(rep["per_target"]) == {str(t) for t in range(T - 1)}
    for t in range(T - 1):
        snap = rep["per_target"][str(t)]
        assert snap["lens"]["token"] == t and snap["meta"]["prediction"] == payload.meta(ex, t)["prediction"]
        # the heatmap's tables there: importance and direct logit attribution, as the widget computes them there
        assert set(snap["method_scores"]) == {"importance", "logit_attribution"}
        assert snap["method_scores"]["logit_attribution"]["heads"].shape == (L, H)
        # the flow share table there is the state's head importance at t (held once, read_report rebuilds it)
        want = torch.stack([ls.head_total[t] for ls in ex.scores.layers]).numpy()
        np.testing.assert_allclose(snap["method_scores"]["importance"]["heads"], want, rtol=1e-3, atol=1e-7)
        assert snap["metric"]["position"] == t
    assert state["method_scores"]["logit_attribution"]["metric"]["position"] == last
    # causal effect beside flow without a kernel: attribution patching against mean ablation at the last target
    causal = ex.attribution_patching(ablation="mean")
    assert state["ablation"] == "mean" and state["metric"]["causal_ready"] is True
    np.testing.assert_allclose(state["method_scores"]["attribution_patching"]["heads"],
                               causal.head_matrix(L, H).numpy(), rtol=1e-4, atol=1e-6)
    for name in FLOW_METHODS:
        assert set(rep["attributions"][name]) == {str(t) for t in range(T)}
    assert set(rep["attributions"][CHEAP_INPUT_METHODS[0]]) == {str(last)}
    # every MLP block on any target's route has its neurons, and the last token's route its neurons' projections
    available = state["neurons"]["available"]
    for t in range(T):
        for layer, token in payload.mlp_nodes(ex.route(t, 0.04, "head")):
            assert available[layer, token] == 1
    # every route's blocks (any target) have their projection and their neurons' (read back: the next tests)
    route_blocks = set().union(*(payload.mlp_nodes(ex.route(t, 0.04, "head")) for t in range(T)))
    mlp_rows = {tuple(k) for k in rep["vocab"]["mlp"]["keys"].tolist()}
    index = rep["vocab"]["neuron"]["index"]
    assert route_blocks and route_blocks <= mlp_rows
    for layer, token in route_blocks:
        assert (index[layer, token] >= 0).all()
    # a neuron's logits are its direction's times a scale of magnitude at most 1 (report_vocab): the logits' steps
    # of 1/256 stay within 0.002 once scaled
    assert 0 < np.abs(rep["vocab"]["neuron"]["scale"]).max() <= 1
    assert rep["flow"]["floor"] == 0.005


@pytest.mark.smollm2
def test_smollm2_128_token_report_is_complete_within_3mb(smollm2, tmp_path):
    """Within 3 MB at 128 tokens, nothing left out (issue 11): every head's maps, every target's snapshot with its
    direct logit attribution, every block's neuron list, the vocabulary projections of the neurons of every MLP
    block on any target's route, and the extras too: the logit lens at every target and every held head's
    projection at the other targets. Only the patterns' precision is cut, to 127 steps of the colour scale (no
    visible difference), and the page's note says so. (Without the optional ``deflate`` package zlib's streams are
    larger: the extras may then be cut, each said in the note.)"""
    from lmtt_widgets import report_pack
    from lmtt_widgets.report import DEFAULT_THRESHOLD, PATTERN_LEVELS, TAU_FLOOR, UNSEEN_LEVELS, _maps_note
    from lmtt_widgets.widgets import payload

    sys.path.insert(0, str(REPO / "benchmarks"))
    from browser_bench import make_prompt

    ex = explain(smollm2, make_prompt(smollm2, 128))
    assert ex.n_tokens == 128
    path = write_report(ex, tmp_path / "r.html")
    size = path.stat().st_size
    print(f"128-token SmolLM2 report: {size} bytes")
    assert size <= 3_000_000
    page = path.read_text(encoding="utf-8")
    rep = read_report(page)
    heads = [k for k, v in rep["details"].items() if k.startswith("head:") and v["pattern"].shape == (128, 128)]
    assert len(heads) == 30 * 9
    levels = rep["pattern_levels"]
    # 127 levels on this prompt with every extra (a 2.98 MB page; 2.77 MB without the extras before the lens table
    # and the rANS contexts of the byte left; 2.94 before libdeflate) since the flow share tables are held once (90
    # before that; 45 before the patterns were rANS-coded, logits in 16-bit fixed point and small route scores in
    # float16; 15 before that)
    assert levels in PATTERN_LEVELS and levels >= UNSEEN_LEVELS
    for key in heads[::29]:  # the maps are the real ones to the precision said
        _, layer, h, _ = key.split(":")
        want = ex.head_attention(int(layer), int(h)).numpy()
        got = rep["details"][key]["pattern"]
        _assert_map_precision(got, want, levels)
    assert len(rep["per_target"]) == 127
    assert all("logit_attribution" in s["method_scores"] for s in rep["per_target"].values())
    assert rep["state"]["neurons"]["available"].all()
    # every route block's neurons have their projections (the ladder never reaches the neurons' step here)
    route_blocks = set().union(*(payload.mlp_nodes(ex.route(t, DEFAULT_THRESHOLD, "head")) for t in range(128)))
    index = rep["vocab"]["neuron"]["index"]
    assert len(route_blocks) > 1000 and all((index[layer, t] >= 0).all() for layer, t in route_blocks)
    if getattr(report_pack, "_libdeflate", None) is not None:
        # nothing cut but the patterns' precision, to steps no eye tells apart: the lens at every target, every
        # held head's projection at every target
        assert rep["budget_omitted"] == [_maps_note(UNSEEN_LEVELS)], rep["budget_omitted"]
        assert all("lens" in s and s["lens"]["token"] == int(t) for t, s in rep["per_target"].items())
        head_rows = {tuple(k) for k in rep["vocab"]["head"]["keys"].tolist()}
        assert all(len({(layer, h) for layer, h, tt in head_rows if tt == t}) >= 27 for t in range(127))
    else:  # zlib: only extras and the patterns' precision may be cut
        allowed = {_maps_note(n) for n in PATTERN_LEVELS[1:]} | {
            "Heads' vocabulary projections at targets other than the last: only the heads on each target's route "
            "(the report's size budget).", "The logit lens is included for the last token only (the report's size "
            "budget)."}
        assert set(rep["budget_omitted"]) <= allowed, rep["budget_omitted"]
    assert rep["flow"]["floor"] == TAU_FLOOR
    note = page.split('class="lmtt-report-note"', 1)[1].split("</div>", 1)[0]
    for item in rep["omitted"]:
        assert html.escape(item) in note
    assert html.escape("The report's size budget cut some of this") in note
    # one statement per part: the budget's note on heads' projections replaces the design's, never both
    subjects = [item.split(":", 1)[0] for item in rep["omitted"]]
    assert len(subjects) == len(set(subjects)), rep["omitted"]


@pytest.mark.smollm2
def test_smollm2_128_token_report_with_every_extra_is_smaller(smollm2):
    """The complete 128-token report, the extras included (every held head's projection and the logit lens at every
    target) with patterns at 127 steps (no visible difference), as the page's text: 3.40 MB before the container's
    gzip members, libdeflate, the route scores held as state tables, the word merges left to the page and 16-bit
    ranks; 3.21 MB with them; 2.98 MB since the lens is one table (its tokens as references to the row before),
    the patterns' rANS contexts hold the byte left and the arrays are laid out field by field: within the issue's
    3 MB (README, "Offline report size"; about 3.1 MB where the optional ``deflate`` package is missing: zlib)."""
    from lmtt_widgets import report, report_pack
    from lmtt_widgets.report import UNSEEN_LEVELS, _FULL, _Content, _page_bytes

    sys.path.insert(0, str(REPO / "benchmarks"))
    from browser_bench import make_prompt

    ex = explain(smollm2, make_prompt(smollm2, 128))
    content = _Content(ex, report.DEFAULT_THRESHOLD, "head")
    content._packer = report_pack.Packer()
    content._add_extras()
    rep, packed = content._packed({**_FULL, "maps": UNSEEN_LEVELS}, [])
    size = len(packed) + _page_bytes() + 4096  # the page around the state, its note and title at most
    print(f"128-token SmolLM2 report with every extra at {UNSEEN_LEVELS} steps: {size} bytes")
    assert len(rep["per_target"]) == 127 and rep["lens"]["tokens"] == list(range(127))  # the lens: every target
    # every held head's projection at the other targets, not the routes' only
    assert rep["vocab"]["head"]["ids"]["shape"][0] == len(content.head_on_route) > int(content.head_on_route.sum())
    assert size <= (3_000_000 if getattr(report_pack, "_libdeflate", None) is not None else 3_150_000)


@pytest.mark.smollm2
@pytest.mark.browser
def test_report_answers_clicks_on_heads_neurons_and_other_targets_offline(smollm2_paris, tmp_path, chromium):
    path = write_report(smollm2_paris, tmp_path / "report.html")
    outside, errors = [], []
    page = _offline_page(chromium, outside, errors, console_errors=True)
    try:
        page.goto(path.as_uri())
        page.wait_for_selector(".lmtt-graph canvas")
        note = page.locator(".lmtt-report-note").inner_text()
        assert "routes for all 5 target tokens" in note and "Not in this report" in note
        vocab = page.locator(".lmtt-vocab")
        detail = page.locator(".lmtt-head-detail")

        def click_head(x: float, y: float, token: int):
            heat = page.locator("canvas.lmtt-heat")
            box = heat.bounding_box()
            heat.click(position={"x": box["width"] * x, "y": box["height"] * y})
            page.wait_for_function("t => { const d = document.querySelector('.lmtt-head-detail');"
                                   " return d.querySelectorAll('canvas.lmtt-matrix').length === 2"
                                   " && d.textContent.includes('at #' + t); }", arg=token, timeout=10_000)

        # the heatmap's ≈ causal effect is shipped at the last target (mean ablation), beside flow share
        causal_btn = page.locator("button[data-mode='attribution_patching']")
        causal_btn.click()
        legend = page.locator(".lmtt-heads .lmtt-heat-legend")
        page.wait_for_function("() => document.querySelector('.lmtt-heads').innerText.includes('Causal effect at')")
        top = float(smollm2_paris.attribution_patching(ablation="mean").of_kind("head").scores.abs().max())
        assert legend.locator(".lmtt-num").last.inner_text() == f"+{top:.2f}"
        page.locator("button[data-mode='importance']").click()
        click_head(0.6, 0.5, 4)  # a head at the last token: its maps and its vocabulary projection
        assert vocab.locator(".lmtt-tokrow").count() >= 10
        neuron = page.locator("li.lmtt-neuron").first  # the top neuron of an MLP block on the route
        neuron.click()
        page.wait_for_function("() => document.querySelector('.lmtt-vocab .lmtt-pane-title').textContent"
                               ".includes('neuron')")
        page.wait_for_function("() => document.querySelectorAll('.lmtt-vocab .lmtt-tokrow').length >= 10")
        edges_before = page.locator(".lmtt-graph").inner_text()
        page.locator("select[aria-label='Target token']").select_option("1")  # " capital": not the last token
        page.wait_for_function("t => document.querySelector('.lmtt-graph').innerText !== t", arg=edges_before)
        page.locator("canvas.lmtt-heat").press("Escape")  # clear the selection: the focus is the target again
        click_head(0.3, 0.3, 1)  # a head at the new target: maps and importance there
        assert page.locator("li.lmtt-neuron").count() == 10  # the new target's route blocks have their neurons
        # the logit lens there, rebuilt by the page from the report's lens table: a row per residual stream
        page.wait_for_function("() => document.querySelector('.lmtt-lens-wrap .lmtt-subtitle').textContent"
                               ".includes('#1 (')")
        assert page.locator(".lmtt-lens .lmtt-lensrow").count() == 2 * smollm2_paris.n_layers + 1
        page.screenshot(path=str(ARTIFACTS / "report-other-target.png"), full_page=True)
        assert "(#1)" in page.locator(".lmtt-heads .lmtt-pane-title").inner_text()
        assert causal_btn.is_disabled() and "last target" in causal_btn.get_attribute("title")
        # the heatmap shows the flow shares there (a table the page rebuilds from the state's head importance)
        at_1 = max(float(ls.head_total[1].max()) for ls in smollm2_paris.scores.layers)
        assert page.locator(".lmtt-heads .lmtt-heat-legend .lmtt-num").last.inner_text() == f"{at_1:.2f}"
        # the panes of a selection hold it all (the attribution pane's agreement names the gradient methods that
        # are at the last target only)
        text = " ".join(page.locator(f".lmtt-{pane}").inner_text() for pane in ("vocab", "heads", "neurons", "graph"))
        assert "not in this report" not in text and "left out of this report" not in text
        assert page.locator(".lmtt-errorbar").is_hidden()
    finally:
        page.close()
    assert outside == [] and errors == []


# ---- issue 11 point 3, the last gaps: what a click shows in the page equals what the kernel answers

def _page_details(page_path: Path, keys: list[str], target: int | None = None) -> dict:
    """Details replies the page's own model gives (js/static.ts StaticModel, through the built bundle, run by
    Node), after moving to ``target`` like a target click; plus the trait values it then shows."""
    script = """
import { readFileSync } from "node:fs";
const [bundle, html, keys, target] = process.argv.slice(1);
const mod = await import(bundle);
const text = readFileSync(html, "utf8").split('id="lmtt-state">')[1].split("</script>")[0];
const { body, bytes } = await mod.readContainer(text);
const { state, report } = mod.reportParts(body, bytes);
const model = new mod.StaticModel(state, report);
if (target !== "none") { model.set("target", Number(target)); model.save_changes(); }
const replies = {};
model.on("msg:custom", (m) => { replies[m.key] = m; });
for (const key of JSON.parse(keys)) model.send({ type: "details", id: key, key });
await new Promise((r) => setTimeout(r, 0));
const ms = model.get("method_scores");
const CTOR = { float32: Float32Array, uint32: Uint32Array, int32: Int32Array, uint8: Uint8Array };
const arr = (a) => { const C = CTOR[a.dtype]; return Array.from(new C(a.data.buffer, a.data.byteOffset, a.data.byteLength / C.BYTES_PER_ELEMENT)); };
const scores = Object.fromEntries(Object.entries(ms).map(([k, t]) => [k, { heads: arr(t.heads), mlp: arr(t.mlp), extra: t.extra, metric: t.metric }]));
const att = model.get("attribution");
console.log(JSON.stringify({ replies, method_scores: scores, attribution: { method: att.method, position: att.position,
  scores: arr(att.scores), agreement: att.agreement ?? null, words: att.words ? att.words.spans : null }, error: model.get("error") }));
"""
    proc = subprocess.run(["node", "--input-type=module", "-e", script, BUNDLE.as_uri(), str(page_path),
                           json.dumps(keys), "none" if target is None else str(target)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _same_pairs(got: list, want: list, rtol: float = 2e-3) -> None:
    """Token texts equal, logits equal to float16's precision (the report stores them so)."""
    assert [g[0] for g in got] == [w[0] for w in want]
    assert np.allclose([g[1] for g in got], [w[1] for w in want], rtol=rtol, atol=2e-3)


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])  # gemma2: post-norms around the MLP (a neuron's scale)
def test_page_answers_neuron_mlp_and_head_clicks_as_the_kernel(family, tmp_path):
    from lmtt_widgets.report import HEADS_PER_TARGET
    from lmtt_widgets.widgets import payload

    ex = explain(loaded(family), "The capital of France is Paris. It is")
    T, L, H = ex.n_tokens, ex.n_layers, ex.n_heads
    path = write_report(ex, tmp_path / "r.html")
    # every neuron of every MLP block on any target's route (and of the last column), every such block
    blocks = set()
    for t in range(T):
        blocks |= payload.mlp_nodes(ex.route(t, 0.04, "head"))
    assert len({t for _, t in blocks}) > 3  # blocks at many targets, not only the last
    keys = [f"mlp:{layer}:{t}" for layer, t in sorted(blocks)]
    keys += [f"neuron:{layer}:{n.neuron}:{t}" for layer, t in sorted(blocks) for n in ex.neurons(layer, t, 10)]
    # heads at a target other than the last: the most important there
    t = T // 2
    imp = np.stack([ls.head_total[t].numpy() for ls in ex.scores.layers])
    top = np.argsort(-imp.reshape(-1))[:min(HEADS_PER_TARGET, L * H)]
    keys += [f"head:{i // H}:{i % H}:{t}" for i in top]
    got = _page_details(path, keys)["replies"]
    for key in keys:
        assert got[key]["ok"], (key, got[key])
        want = payload.details(ex, key)
        _same_pairs(got[key]["result"]["promoted"], want["promoted"])
        _same_pairs(got[key]["result"]["suppressed"], want["suppressed"])


def test_page_holds_dla_and_agreements_at_other_targets(tmp_path):
    from lmtt_widgets.widgets import Explorer
    from lmtt_widgets.widgets.codec import decode_array

    ex = explain(loaded("gpt2"), "The capital of France is Paris. It is")
    path = write_report(ex, tmp_path / "r.html")
    w = Explorer(ex)
    for t in (2, ex.n_tokens // 2):
        w.target = t  # the live widget at that target
        page = _page_details(path, [], target=t)
        assert page["error"] == ""
        live = w.method_scores["logit_attribution"]
        shown = page["method_scores"]["logit_attribution"]
        assert np.allclose(shown["heads"], decode_array(live["heads"]).reshape(-1), rtol=2e-3, atol=1e-5)
        assert np.allclose(shown["mlp"], decode_array(live["mlp"]), rtol=2e-3, atol=1e-5)
        assert shown["metric"] == live["metric"] and shown["extra"] == pytest.approx(live["extra"])
        # the attribution pane there: flow attribution with its word view and its agreement with the free methods
        att, live_att = page["attribution"], w.attribution
        # float16 in the report: 3 significant digits
        assert att["position"] == t and np.allclose(att["scores"][:t + 1], decode_array(live_att["scores"])[:t + 1],
                                                    rtol=1e-3, atol=1e-6)
        assert att["words"] == live_att["words"]["spans"]
        rows = {r["method"]: r for r in att["agreement"]["rows"]}
        live_rows = {r["method"]: r for r in live_att["agreement"]["rows"]}
        assert rows["attention_rollout"]["spearman"] == pytest.approx(live_rows["attention_rollout"]["spearman"])
        assert rows["input_x_gradient"]["state"] == "error" and "not in this report" in rows["input_x_gradient"]["error"]
    w.close()


@pytest.mark.smollm2
@pytest.mark.browser
def test_report_shows_neuron_and_head_projections_at_another_target(smollm2_paris, tmp_path, chromium):
    """At a target other than the last, a neuron of the shown MLP block and the most important head there show their
    vocabulary projections offline (before: "not in this report" / empty lists)."""
    ex = smollm2_paris
    path = write_report(ex, tmp_path / "report.html")
    imp = np.stack([ls.head_total[1].numpy() for ls in ex.scores.layers])  # [L, H] at target #1
    layer, head = divmod(int(imp.argmax()), ex.n_heads)
    outside, errors = [], []
    page = _offline_page(chromium, outside, errors, console_errors=True)
    try:
        page.goto(path.as_uri())
        page.wait_for_selector(".lmtt-graph canvas")
        edges_before = page.locator(".lmtt-graph").inner_text()
        page.locator("select[aria-label='Target token']").select_option("1")
        page.wait_for_function("t => document.querySelector('.lmtt-graph').innerText !== t", arg=edges_before)
        page.locator("li.lmtt-neuron").first.click()
        page.wait_for_function("() => document.querySelector('.lmtt-vocab .lmtt-pane-title').textContent"
                               ".includes('neuron') && document.querySelectorAll('.lmtt-vocab .lmtt-tokrow').length >= 20")
        title = page.locator(".lmtt-vocab .lmtt-pane-title").inner_text()
        assert "(#1)" in title, title
        page.screenshot(path=str(ARTIFACTS / "report-neuron-other-target.png"), full_page=True)
        page.locator("canvas.lmtt-heat").press("Escape")
        heat = page.locator("canvas.lmtt-heat")
        box = heat.bounding_box()
        cw, ch = (box["width"] - 34) / ex.n_heads, (box["height"] - 18) / ex.n_layers
        heat.click(position={"x": 30 + (head + 0.5) * cw, "y": 16 + (layer + 0.5) * ch})
        page.wait_for_function("t => document.querySelector('.lmtt-vocab .lmtt-pane-title').textContent.includes(t)",
                               arg=f"head L{layer}.H{head}")
        page.wait_for_function("() => document.querySelectorAll('.lmtt-vocab .lmtt-tokrow').length >= 20")
        assert "(#1)" in page.locator(".lmtt-vocab .lmtt-pane-title").inner_text()
        page.screenshot(path=str(ARTIFACTS / "report-head-other-target.png"), full_page=True)
        text = " ".join(page.locator(f".lmtt-{pane}").inner_text() for pane in ("vocab", "heads", "neurons"))
        assert "not in this report" not in text and "left out of this report" not in text
        assert page.locator(".lmtt-errorbar").is_hidden()
    finally:
        page.close()
    assert outside == [] and errors == []



def test_lens_columns_ranks_equal_one_token_at_a_time():
    """The report's batched lens (ranks in one vocabulary pass per row) equals Explanation.lens, row by row."""
    from lmtt_widgets.widgets import payload
    from lmtt_widgets.widgets.codec import decode_array

    ex = explain(loaded("llama"), "The capital of France is Paris. It is")
    cols = payload.lens_columns(ex, range(ex.n_tokens), chunk=3)
    for t in (0, 4, ex.n_tokens - 1):
        ids, prev = decode_array(cols[t]["ids"]), decode_array(cols[t]["rank_prev"])
        for row in range(1, 2 * ex.n_layers + 1):
            entries = ex.lens(row, t, 10)
            assert [e.token_id for e in entries] == ids[row].tolist()
            assert [e.previous_rank for e in entries] == prev[row].tolist()


def test_page_decodes_entropy_coded_patterns_exactly_as_stored(tmp_path, monkeypatch):
    """The page's rANS decoder (js/reportrans.ts, in the built bundle, run by Node) gives every head's attention
    pattern exactly as Python reads it back, and that is the 255-step map (report_rans.py codes the maps of
    every report whose maps are large; here forced on a small one)."""
    from lmtt_widgets import report_pack

    monkeypatch.setattr(report_pack, "RANS_ALWAYS", 0)
    ex = explain(loaded("gpt2"), "The capital of France is Paris. It is")
    path = write_report(ex, tmp_path / "r.html")
    page = path.read_text(encoding="utf-8")
    rep = read_report(page)
    head = report_pack.unframe(report_pack.from_text(page.split('id="lmtt-state">', 1)[1].split("</script>", 1)[0]))[0]
    assert '"rans":{"table":' in gzip.decompress(head).decode("utf-8", "replace")
    keys = [k for k in rep["details"] if k.startswith("head:")]
    assert len(keys) == ex.n_layers * ex.n_heads
    script = """
import { readFileSync } from "node:fs";
const [bundle, html, keys] = process.argv.slice(1);
const mod = await import(bundle);
const text = readFileSync(html, "utf8").split('id="lmtt-state">')[1].split("</script>")[0];
const { body, bytes } = await mod.readContainer(text);
const { state, report } = mod.reportParts(body, bytes);
const model = new mod.StaticModel(state, report);
const out = {};
model.on("msg:custom", (m) => { const p = m.result.pattern; out[m.key] = Array.from(new Float32Array(p.data.buffer, p.data.byteOffset, p.data.byteLength / 4)); });
for (const key of JSON.parse(keys)) model.send({ type: "details", id: key, key });
await new Promise((r) => setTimeout(r, 0));
console.log(JSON.stringify(out));
"""
    proc = subprocess.run(["node", "--input-type=module", "-e", script, BUNDLE.as_uri(), str(path), json.dumps(keys)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    for key in keys:
        # the same colour levels (Python's float32 formula and the page's float64 one differ in the last bit)
        assert np.allclose(got[key], rep["details"][key]["pattern"].reshape(-1), rtol=1e-6, atol=0), key
        layer, h = map(int, key.split(":")[1:3])
        _assert_map_precision(rep["details"][key]["pattern"], ex.head_attention(layer, h).numpy(), 255)


@pytest.mark.parametrize("vocab", [None, 70_000])
def test_page_gives_back_the_kernels_lens_column_at_every_target(tmp_path, vocab):
    """The page (the built bundle, run by Node) rebuilds every target's logit lens column from the report's one lens
    table exactly as the kernel sends it (ids, ranks in the row before and strings exact, probabilities at
    float16), ``read_report`` gives the same columns, and the page's lens rows are the kernel's. A vocabulary past
    16 bits (ids and ranks that ``prev`` and ``u16`` cannot hold: stored as they are) gives them back as well."""
    from lmtt_widgets.widgets import payload
    from lmtt_widgets.widgets.codec import decode_array

    from lmtt_widgets import report_pack
    from lmtt_widgets.widgets.codec import encode_array

    lm = loaded("llama", config_overrides={"vocab_size": vocab} if vocab else None)
    ex = explain(lm, "The capital of France is Paris. It is the capital")
    path = write_report(ex, tmp_path / "r.html")
    rep = read_report(path)
    assert rep["budget_omitted"] == []
    # held as one table, its tokens as references to the row before, not as a column in each target's snapshot
    state = path.read_text(encoding="utf-8").split('id="lmtt-state">', 1)[1].split("</script>", 1)[0]
    head = gzip.decompress(report_pack.unframe(report_pack.from_text(state))[0])
    body = json.loads(head[4:4 + int.from_bytes(head[:4], "little")])
    assert body["lens"]["tokens"][:3] == [0, 1, 2]
    assert body["lens"]["ids"]["data"]["enc"] == ("raw" if vocab else "prev")
    want = payload.lens_columns(ex, range(ex.n_tokens - 1))
    if vocab:  # the lens lists ids past 16 bits: the table keeps them raw
        assert max(int(decode_array(c["ids"]).max()) for c in want.values()) >= 2**16
    script = """
import { readFileSync } from "node:fs";
const [bundle, html] = process.argv.slice(1);
const mod = await import(bundle);
const text = readFileSync(html, "utf8").split('id="lmtt-state">')[1].split("</script>")[0];
const { body, bytes } = await mod.readContainer(text);
const { report } = mod.reportParts(body, bytes);
const out = {};
const Ctor = { uint32: Uint32Array, int32: Int32Array, float32: Float32Array };
const list = (a) => Array.from(new Ctor[a.dtype](a.data.buffer, a.data.byteOffset, a.data.byteLength / 4));
for (const [t, snap] of Object.entries(report.perTarget)) {
  const c = snap.lens;
  out[t] = { rows: c.rows, token: c.token, dtypes: [c.ids.dtype, c.probs.dtype, c.rank_prev.dtype], shape: c.ids.shape,
             ids: list(c.ids), probs: list(c.probs), rank_prev: list(c.rank_prev), strings: c.strings };
}
console.log(JSON.stringify(out));
"""
    proc = subprocess.run(["node", "--input-type=module", "-e", script, BUNDLE.as_uri(), str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert set(got) == {str(t) for t in want} == set(rep["per_target"])
    for t, column in want.items():
        page, py = got[str(t)], rep["per_target"][str(t)]["lens"]
        ids, ranks = decode_array(column["ids"]), decode_array(column["rank_prev"])
        probs = decode_array(column["probs"]).astype(np.float16).astype(np.float32)
        assert page["dtypes"] == ["uint32", "float32", "int32"] and page["shape"] == list(ids.shape)
        assert (page["rows"], page["token"]) == (column["rows"], t) == (py["rows"], py["token"])
        assert page["ids"] == ids.reshape(-1).tolist() and np.array_equal(py["ids"], ids)
        assert page["rank_prev"] == ranks.reshape(-1).tolist() and np.array_equal(py["rank_prev"], ranks)
        assert page["probs"] == probs.reshape(-1).tolist() and np.array_equal(py["probs"], probs)
        assert page["strings"] == column["strings"] == py["strings"]
    # what a click on a lens cell shows there: the page's `lens:<row>:<token>` replies are the kernel's rows
    # (payload.lens_details), every row of three targets, probabilities at float16
    targets = (0, ex.n_tokens // 2, ex.n_tokens - 2)
    keys = [f"lens:{row}:{t}" for t in targets for row in range(want[t]["rows"])]
    replies = _page_details(path, keys)["replies"]
    for t in targets:
        column = want[t]
        f16 = decode_array(column["probs"]).astype(np.float16).astype(np.float32)
        rows = payload.lens_details({**column, "probs": encode_array(f16)})
        for key, row in rows.items():
            assert replies[key]["ok"] and replies[key]["result"]["top"] == row["top"], key


def test_page_loader_is_the_bundled_textbytes_reader(tmp_path):
    """The page's loader is js/reportloader.ts as built (its bundle read by the state's own textBytes, one decoder
    in one language), and a loader that would end its script block is refused rather than written."""
    from lmtt_widgets import report
    from lmtt_widgets.widgets.explorer import STATIC

    page = write_report(explain(loaded("gpt2"), "Hi"), tmp_path / "r.html").read_text(encoding="utf-8")
    module = page.split('<script type="module">', 1)[1].split("</script>", 1)[0]
    assert module == (STATIC / "report-loader.js").read_text(encoding="utf-8").strip()
    assert "outside its alphabet" in module  # reportcodec's textBytes, with its check of the alphabet
    assert report._NOT_IN_SCRIPT.search("x</SCRIPT>") and report._NOT_IN_SCRIPT.search("a<!--b")


def test_a_one_token_prompt_gets_a_report(tmp_path):
    """A prompt of one token (no target but the last, no lens at other targets) writes a report: it raised an
    IndexError in flow_shares (an empty position list made a float index tensor), then a ZeroDivisionError in the
    lens estimate (no column to sample)."""
    ex = explain(loaded("llama"), [5])
    report = read_report(write_report(ex, tmp_path / "r.html").read_text(encoding="utf-8"))
    assert ex.n_tokens == 1 and len(report["state"]["tokens"]) == 1
    assert report["budget_omitted"] == []


def test_the_summary_and_the_reports_note_say_which_convention_scored():
    """convention="lmtt" numbers differ from the default's (the floor's mass, the bias): the CLI's summary and the
    report's note say so, where before nothing told a reader of either which definition the numbers follow."""
    from lmtt_widgets.summary import text_summary

    lm = loaded("gpt2")
    for convention in ("paper", "lmtt"):
        ex = explain(lm, "The capital of France is", convention=convention)
        note = render_html(ex).split('class="lmtt-report-note"', 1)[1].split("</div>", 1)[0]
        said = 'convention="lmtt"' in html.unescape(note)
        assert said == (convention == "lmtt") == ('convention="lmtt"' in text_summary(ex)), convention


def test_the_summary_checks_flow_and_logit_attribution_causally(monkeypatch, capsys):
    """Flow shares and logit attribution are not effects: the summary prints, for each component it names, the
    exact effect of ablating it alone (mean ablation, ex.patch) and how much of the metric the route alone keeps
    (ex.faithfulness), with the metric and its units; --no-check leaves both out. Before, the summary named the
    flow's top heads with no causal number at all."""
    import lmtt_widgets
    from lmtt_widgets.__main__ import main
    from lmtt_widgets.summary import text_summary

    lm = loaded("llama")
    ex = explain(lm, "When Mary and John went to the store, John gave a drink to")
    lines = text_summary(ex).splitlines()
    at = next(i for i, l in enumerate(lines) if l.startswith("Causal check (exact activation patching, mean ablation"))
    dla = ex.logit_attribution(foil=ex.predictions(k=2)[1].token_id)
    assert dla.metric.name in lines[at]
    heads = [f"L{h.layer}.H{h.head}" for h in ex.top_heads(5)]
    top = [c.id for c, _ in dla.top(5)]
    # heads and MLPs; EMB and biases are constants
    patched = heads + [c.id for c, _ in dla.top(5) if c.kind in ("head", "mlp")]
    assert any(c not in patched for c in top)  # this prompt's top holds a constant (EMB, L0.BO), shown as n/a
    effect = ex.patch(patched, ablation="mean", foil=dla.metric.foil)
    shown = [p.rsplit(" ", 1) for l in lines[at + 1 : at + 3] for p in l.split(": ", 1)[1].split(", ")]
    assert [c for c, _ in shown] == heads + top
    for c, v in shown:
        assert v == "n/a" if c not in patched else (float(v) == pytest.approx(effect[c], abs=0.006) and v[0] in "+-")
    kept = ex.faithfulness((ex.route().threshold,), ablation="mean", foil=dla.metric.foil)
    assert f"gives {kept.kept[0]:.2f}: fraction kept {kept.fraction[0]:+.2f}" in lines[at + 3]
    # a hook added since the trace: the reruns refuse, and the summary says so in place of the numbers
    handle = lm.model.model.layers[0].register_forward_hook(lambda m, i, o: o + 0.5 if torch.is_tensor(o) else o)
    try:
        last = text_summary(ex).splitlines()[-1]
    finally:
        handle.remove()
    assert last.startswith("Causal check: not run (") and "hooks changed since explain()" in last
    monkeypatch.setattr(lmtt_widgets, "load_model", lambda name, *a, **k: lm)
    assert main(["When Mary and John went", "--html", "", "--no-check"]) == 0
    out = capsys.readouterr().out
    assert "Direct logit attribution" in out and "Causal check" not in out


def test_a_report_whose_causal_table_cannot_be_computed_says_why(tmp_path):
    """A hook added after explain() makes attribution patching refuse (the rerun is not the traced model): the
    report is still written, without the table, and its note says why instead of claiming a table it lacks."""
    lm = loaded("llama")
    ex = explain(lm, "abc abd ab")
    fine = read_report(write_report(ex, tmp_path / "fine.html").read_text(encoding="utf-8"))
    assert "attribution_patching" in fine["state"]["method_scores"]
    assert not any("could not be computed" in n for n in fine["omitted"])
    handle = lm.model.model.layers[0].register_forward_hook(lambda m, i, o: o + 0.5 if torch.is_tensor(o) else o)
    try:
        rep = read_report(write_report(ex, tmp_path / "r.html").read_text(encoding="utf-8"))
    finally:
        handle.remove()
    assert "attribution_patching" not in rep["state"]["method_scores"]
    said = [n for n in rep["omitted"] if "causal effect, even at the last target" in n]
    assert len(said) == 1 and "hooks changed since explain()" in said[0]


@pytest.mark.browser
def test_a_report_that_cannot_be_read_says_so_in_the_page(tmp_path, chromium):
    """A damaged report (its state cut short, as a truncated download would be) shows why it cannot be shown, as
    text in the page, instead of a blank page with the reason only in the console."""
    page_text = write_report(explain(loaded("gpt2"), "Hi <b>x</b>"), tmp_path / "r.html").read_text(encoding="utf-8")
    head, rest = page_text.split('id="lmtt-state">', 1)
    state, tail = rest.split("</script>", 1)
    damaged = tmp_path / "damaged.html"
    damaged.write_text(f'{head}id="lmtt-state">{state[: len(state) // 2]}</script>{tail}', encoding="utf-8")
    errors = []
    page = chromium.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(damaged.as_uri())
        page.wait_for_selector("#lmtt-report:not(:empty)", timeout=20_000)
        shown = page.locator("#lmtt-report").inner_text()
        assert shown.startswith("This report could not be shown: ") and page.locator("#lmtt-report *").count() == 0
    finally:
        page.close()
    assert errors  # the error still reaches the console


def test_route_scores_and_word_merges_are_held_once_and_read_back(tmp_path):
    """The route scores' per-update arrays that equal the state's block importance tables are references to them,
    and other targets' word merges are computed from their scores (by the page, and by read_report alike): what
    the page rebuilds is the kernel's, to float16's rounding for the merges and exactly for the route scores."""
    from lmtt_widgets import report_pack
    from lmtt_widgets.report import flow_scores
    from lmtt_widgets.widgets import scoring
    from lmtt_widgets.widgets.codec import decode_array
    from lmtt_widgets.methods.flow_attribution import flow_attribution_tables

    ex = explain(loaded("gpt2"), "The capital of France is Paris. It is")
    page = write_report(ex, tmp_path / "r.html").read_text(encoding="utf-8")
    state = report_pack.from_text(page.split('id="lmtt-state">', 1)[1].split("</script>", 1)[0])
    raw = gzip.decompress(report_pack.unframe(state)[0])
    body = json.loads(raw[4:4 + int.from_bytes(raw[:4], "little")])
    assert body["flow"]["mlp"] == {"state_of": "block_importance", "key": "mlp"}
    assert body["flow"]["resid_attn"] == {"state_of": "block_importance", "key": "residual_attention"}
    assert body["attributions"]["flow_attribution"]["0"]["words"]["merged"] == "from_scores"
    rep = read_report(page)
    want = flow_scores(ex, rep["flow"]["floor"])
    for name in ("mlp", "resid_attn", "resid_mlp", "bias_attn"):
        assert np.array_equal(rep["flow"][name], decode_array(want[name])), name
    tables = flow_attribution_tables(ex, list(range(ex.n_tokens - 1)))
    for t in range(ex.n_tokens - 1):
        words = scoring.attribution_words(ex, tables[t])
        got = rep["attributions"]["flow_attribution"][str(t)]["words"]["merged"]
        for how, values in words["merged"].items():
            np.testing.assert_allclose(got[how], values, rtol=2e-3, atol=1e-6, err_msg=f"{how} at {t}")

"""The flow graph in headless Chromium (the built bundle's renderStatic on a static page, offline): stretching the
tokens keeps every layer in view, and the PNG export holds the token labels and the legend, not the canvas alone."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from browser import serve
from tiny_models import loaded

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "lmtt_widgets" / "static"
ARTIFACTS = REPO / "test-artifacts"
TRAITS = ["panes", "tokens", "meta", "target", "threshold", "granularity", "graph", "block_importance", "selection"]
PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="widget.css"></head>
<body style="margin:16px"><div id="app" style="width:900px"></div><script type="module">
const mod = await import("./widget.js");
const state = await (await fetch("state.json")).json();
mod.renderStatic(document.getElementById("app"), state);
</script></body></html>"""


@pytest.fixture(scope="module")
def graph_page(tmp_path_factory):
    from lmtt_widgets import Explorer
    from lmtt_widgets.widgets.codec import to_base64

    w = Explorer(model=loaded("gpt2"), prompt="The quick brown fox jumps over the lazy dog, twice, then sleeps.",
                 threshold=0.01)
    state = to_base64({k: getattr(w, k) for k in TRAITS})
    state["panes"] = ["graph"]
    srv, url = _serve_page(tmp_path_factory.mktemp("graph-page"), state)
    yield url, state["meta"]["n_layers"], len(state["tokens"])
    srv.shutdown()


def _serve_page(work, state):
    """Serve the graph page with this state from the folder ``work``: (server, url)."""
    for name in ("widget.js", "widget.css"):
        shutil.copy(STATIC / name, work / name)
    (work / "state.json").write_text(json.dumps(state))
    (work / "index.html").write_text(PAGE)
    return serve(work)


@contextlib.contextmanager
def open_graph(chromium, url):
    """The graph page, drawn; closed afterwards, failing on any page error or request off the page's server."""
    page = chromium.new_page(viewport={"width": 1000, "height": 900}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(url) else (errors.append(r.request.url), r.abort()))
    try:
        page.goto(f"{url}/index.html")
        page.wait_for_function("() => document.querySelector('.lmtt-graph')?.dataset.drawMs")
        yield page
    finally:
        page.close()
    assert errors == []


VIEW_JS = """() => {
  const g = document.querySelector('.lmtt-graph');
  const c = g.querySelector('canvas');
  const v = g.__lmtt.getView();
  return { ...v, h: c.clientHeight, w: c.clientWidth,
           labels: [...g.querySelectorAll('.lmtt-tok')].filter((s) => !s.hidden).map((s) => parseFloat(s.style.left)) };
}"""


def rows_in_view(v, L):
    """Screen y of the embedding row (row 0) and of the last layer's row (2L) both inside the canvas."""
    return 0 <= v["ty"] <= v["h"] and 0 <= v["ty"] - 2 * L * v["sy"] <= v["h"]


def test_wheel_stretches_tokens_and_keeps_every_layer(chromium, graph_page):
    url, L, T = graph_page
    with open_graph(chromium, url) as page:
        before = page.evaluate(VIEW_JS)
        assert rows_in_view(before, L)
        box = page.locator(".lmtt-graph canvas.lmtt-canvas").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        for _ in range(6):
            page.mouse.wheel(0, -300)
            page.wait_for_timeout(30)
        page.wait_for_timeout(100)
        after = page.evaluate(VIEW_JS)
        assert after["sx"] > 3 * before["sx"], (before, after)
        assert after["sy"] == pytest.approx(before["sy"]), "stretching the tokens changed the rows"
        assert rows_in_view(after, L), "a layer left the view"
        # the tokens still cover the canvas (no blank side) and the labels shown do not collide
        assert after["tx"] <= before["tx"] + 1e-6
        assert after["tx"] + (T - 1) * after["sx"] >= before["tx"] + (T - 1) * before["sx"] - 1e-6
        gaps = [b - a for a, b in zip(after["labels"], after["labels"][1:])]
        assert gaps and min(gaps) >= 13.9
        page.locator(".lmtt-graph").screenshot(path=str(ARTIFACTS / "graph-stretched.png"))


def test_stretch_buttons_keep_the_target_in_view(chromium, graph_page):
    url, L, T = graph_page
    with open_graph(chromium, url) as page:
        for _ in range(4):
            page.get_by_role("button", name="Stretch tokens").click()
        v = page.evaluate(VIEW_JS)
        assert rows_in_view(v, L)
        x_target = v["tx"] + (T - 1) * v["sx"]  # the default target is the last token
        assert 0 <= x_target <= v["w"], v
        assert v["sx"] >= 14  # every label fits
        assert len(v["labels"]) >= sum(1 for x in v["labels"] if 0 <= x <= v["w"]) > 5
        page.get_by_role("button", name="Shrink tokens").click()
        assert page.evaluate(VIEW_JS)["sx"] < v["sx"]


def test_png_export_holds_labels_and_legend(chromium, graph_page):
    import numpy as np
    from PIL import Image

    url, L, T = graph_page
    with open_graph(chromium, url) as page:
        canvas = page.evaluate("() => { const c = document.querySelector('.lmtt-graph canvas');"
                               " return { w: c.width, h: c.height, cssH: c.clientHeight }; }")
        with page.expect_download() as dl:
            page.locator(".lmtt-graph button", has_text="PNG").click()
        data = Path(dl.value.path()).read_bytes()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "graph-export.png").write_bytes(data)
    img = Image.open(io.BytesIO(data)).convert("RGB")
    assert img.width == canvas["w"]
    assert img.height > canvas["h"] + 60, "the PNG is the bare canvas: no label band, no legend"
    bg = img.getpixel((2, 2))

    def inked(top, bottom):
        """Pixels clearly unlike the background in the band [top, bottom)."""
        band = np.asarray(img.crop((0, top, img.width, bottom)), dtype=int)
        return int((np.abs(band - np.array(bg)).sum(axis=2) > 120).sum())

    scale = canvas["h"] / canvas["cssH"]
    labels = inked(canvas["h"], int(img.height - 24 * scale))
    legend = inked(int(img.height - 24 * scale), img.height)
    assert labels > 200, f"no token labels under the graph ({labels} inked pixels)"
    assert legend > 200, f"no legend ({legend} inked pixels)"


def test_minimap_shows_the_window_and_moves_it(chromium, graph_page):
    url, L, T = graph_page
    with open_graph(chromium, url) as page:
        strip = page.locator(".lmtt-graph canvas.lmtt-minimap")
        fitted = page.evaluate(VIEW_JS)
        assert strip.is_hidden(), "the overview shows although every token is in view"
        for _ in range(4):
            page.get_by_role("button", name="Stretch tokens").click()
        page.wait_for_timeout(100)
        assert strip.is_visible()
        zoomed = page.evaluate(VIEW_JS)
        assert zoomed["tx"] < fitted["tx"] - 50, "the default target (last token) should have panned the view right"
        box = strip.bounding_box()
        # a click at the strip's left end brings the first tokens into view, at the same zoom
        page.mouse.click(box["x"] + 2, box["y"] + box["height"] / 2)
        page.wait_for_timeout(100)
        left = page.evaluate(VIEW_JS)
        assert left["sx"] == pytest.approx(zoomed["sx"]) and left["sy"] == pytest.approx(zoomed["sy"])
        assert left["tx"] == pytest.approx(fitted["tx"]), "the first token is not at the left edge"
        assert rows_in_view(left, L)
        # a drag to the middle pans on: the middle token ends up in the middle of the canvas
        page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2, steps=4)
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2, steps=4)
        page.mouse.up()
        page.wait_for_timeout(100)
        mid = page.evaluate(VIEW_JS)
        col = (mid["w"] / 2 + (44 - 14) / 2 - mid["tx"]) / mid["sx"]  # the token at the middle of PAD.left .. w - PAD.right
        assert col == pytest.approx((T - 1) / 2, abs=0.6), mid
        page.locator(".lmtt-graph").screenshot(path=str(ARTIFACTS / "graph-minimap.png"))


# ---- progressive drawing (js/panes/graph-progress.ts): a dense graph's edges a frame's share at a time

@pytest.fixture(scope="module")
def dense_page(tmp_path_factory):
    """The graph pane with routes at two τ (0.005: dense; 0.2: sparse) as variants, as the report holds them."""
    from lmtt_widgets import Explorer
    from lmtt_widgets.widgets import payload
    from lmtt_widgets.widgets.codec import to_base64

    w = Explorer(model=loaded("gpt2"), prompt="the quick brown fox jumps over the lazy dog, twice, then sleeps",
                 threshold=0.005)
    ex, target = w.explanation, w.target
    variants = {f"{target}|{tau!r}|head": payload.graph_arrays(ex.route(target, tau, "head")) for tau in (0.005, 0.2)}
    state = {k: getattr(w, k) for k in TRAITS}
    state.update(panes=["graph"], graph_variants=variants, threshold=0.2, graph=variants[f"{target}|0.2|head"])
    srv, url = _serve_page(tmp_path_factory.mktemp("dense-page"), to_base64(state))
    yield url
    srv.shutdown()


# Move the τ slider to its lowest (dense) or highest (sparse) rung and draw the first frame of the change.
SET_TAU_JS = """(where) => {
  const g = document.querySelector('.lmtt-graph');
  const s = g.querySelector('input.lmtt-slider');
  s.value = where === 'low' ? s.min : s.max;
  s.dispatchEvent(new Event('change', { bubbles: true }));
  g.__lmtt.draw();
  return g.__lmtt.pending();
}"""

# The canvas's pixels, kept on the page as window[name].
GRAB_JS = """(name) => {
  const c = document.querySelector('.lmtt-graph canvas.lmtt-canvas');
  window[name] = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  return window[name].length;
}"""

# Differences between two grabbed pictures: largest per channel, pixels off by more than 16 and 2 in any channel.
DIFF_JS = """([a, b]) => {
  const x = window[a], y = window[b];
  let max = 0, over16 = 0, over2 = 0;
  for (let i = 0; i < x.length; i += 4) {
    let d = 0;
    for (let k = 0; k < 4; k++) d = Math.max(d, Math.abs(x[i + k] - y[i + k]));
    max = Math.max(max, d);
    if (d > 16) over16++;
    if (d > 2) over2++;
  }
  return { max, over16, over2, pixels: x.length / 4 };
}"""

# Hover, press and release on the second token's layer-0 residual node (a selection), synchronously; whether the
# picture is still incomplete afterwards.
CLICK_NODE_JS = """() => {
  const g = document.querySelector('.lmtt-graph');
  const c = g.querySelector('canvas.lmtt-canvas');
  const v = g.__lmtt.getView();
  const r = c.getBoundingClientRect();
  const at = { clientX: r.left + v.tx + 1 * v.sx, clientY: r.top + v.ty - 2 * v.sy, button: 0, pointerId: 1, bubbles: true };
  for (const type of ['pointermove', 'pointerdown', 'pointerup']) c.dispatchEvent(new PointerEvent(type, at));
  g.__lmtt.draw();
  return g.__lmtt.pending();
}"""

# Wait n animation frames; whether the picture is still incomplete.
FRAMES_JS = """async (n) => {
  for (let i = 0; i < n; i++) await new Promise((r) => requestAnimationFrame(r));
  return document.querySelector('.lmtt-graph').__lmtt.pending();
}"""

# Draw the current graph again in one go (the one-shot painter, as the PNG export and graphs that fit a frame are).
ONE_SHOT_JS = "() => document.querySelector('.lmtt-graph').__lmtt.draw({ fresh: true, complete: true })"

# Pixel tolerance of a progressively drawn picture against the one-shot drawing: where a bucket's edges are cut
# into chunks, their overlaps are blended twice (see WIDE_BATCH), and the layers are composited separately (8-bit
# rounding): a few pixels by a few levels, none by more than OVER_16_MAX pixels off by more than 16.
OVER_16_MAX = 0.001


def finish(page):
    page.wait_for_function("() => !document.querySelector('.lmtt-graph').__lmtt.pending()", timeout=10_000)


def same_picture(page, a, b):
    d = page.evaluate(DIFF_JS, [a, b])
    assert d["over16"] <= OVER_16_MAX * d["pixels"], d
    return d


def test_progressive_picture_completes_to_the_one_shot_drawing(chromium, dense_page):
    with open_graph(chromium, dense_page) as page:
        # a budget of one chunk a frame, so that this small graph takes many frames
        page.evaluate("() => document.querySelector('.lmtt-graph').__lmtt.setBudget(1, 1)")
        # the first frame, its pixels and the pane's mark, in one go (this small graph completes in a few frames)
        first = page.evaluate(f"() => [({SET_TAU_JS})('low'), ({GRAB_JS})('first'),"
                              " document.querySelector('.lmtt-graph').dataset.edgesPending]")
        assert first[0], "a dense graph on a one-chunk budget should not be complete at once"
        assert first[2] == "1"
        finish(page)
        assert page.evaluate("() => document.querySelector('.lmtt-graph').dataset.edgesPending") is None
        page.evaluate(GRAB_JS, "final")
        page.evaluate(ONE_SHOT_JS)
        page.evaluate(GRAB_JS, "oneshot")
        d = same_picture(page, "final", "oneshot")
        print("progressive vs one-shot:", d)
        partial = page.evaluate(DIFF_JS, ["first", "oneshot"])
        assert partial["over16"] > 100, f"the first frame already held every edge: {partial}"


def test_a_change_mid_progress_leaves_no_stale_edges(chromium, dense_page):
    with open_graph(chromium, dense_page) as page:
        page.evaluate("() => document.querySelector('.lmtt-graph').__lmtt.setBudget(1, 1)")
        # a few frames of the dense graph (some of its edges in the edges bitmap by now), then the sparse graph and a
        # hover while the dense one was still drawing (one call: this small graph completes in a few frames)
        started = page.evaluate(f"async () => [({SET_TAU_JS})('low'), await ({FRAMES_JS})(2)]")
        assert started[0]
        assert started[1], "the dense graph completed too soon to test a change in its middle"
        page.evaluate(SET_TAU_JS, "high")
        box = page.locator(".lmtt-graph canvas.lmtt-canvas").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
        finish(page)
        page.evaluate(GRAB_JS, "final")
        page.evaluate(ONE_SHOT_JS)
        page.evaluate(GRAB_JS, "oneshot")
        same_picture(page, "final", "oneshot")
        # and back to the dense graph, with a hover and a click that selects a node in its first frame
        clicked = page.evaluate(f"() => [({SET_TAU_JS})('low'), ({CLICK_NODE_JS})()]")
        assert clicked[0]
        assert clicked[1], "the selection redraw should not complete the picture at once"
        assert "nothing selected" not in page.locator(".lmtt-graph .lmtt-info").text_content()
        finish(page)
        page.evaluate(GRAB_JS, "final2")
        page.evaluate(ONE_SHOT_JS)
        page.evaluate(GRAB_JS, "oneshot2")
        same_picture(page, "final2", "oneshot2")


def test_png_export_mid_progress_holds_every_edge(chromium, dense_page):
    from PIL import Image

    with open_graph(chromium, dense_page) as page:
        page.evaluate("() => document.querySelector('.lmtt-graph').__lmtt.setBudget(1, 1)")
        assert page.evaluate(f"() => [({SET_TAU_JS})('low'), ({GRAB_JS})('first')]")[0]
        with page.expect_download() as dl:
            page.locator(".lmtt-graph button", has_text="PNG").click()
        png = Image.open(io.BytesIO(Path(dl.value.path()).read_bytes())).convert("RGBA")
        finish(page)
        page.evaluate(ONE_SHOT_JS)
        size = page.evaluate("() => { const c = document.querySelector('.lmtt-graph canvas.lmtt-canvas');"
                             " return [c.width, c.height]; }")
        page.evaluate(GRAB_JS, "oneshot")
        import numpy as np

        got = np.asarray(png.crop((0, 0, size[0], size[1])), dtype=np.uint8).ravel().tolist()
        page.evaluate("(px) => { window.png = new Uint8ClampedArray(px); }", got)
        same_picture(page, "png", "oneshot")
        assert page.evaluate(DIFF_JS, ["first", "oneshot"])["over16"] > 100, "the export was not drawn mid-progress"

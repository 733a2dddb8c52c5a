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
    work = tmp_path_factory.mktemp("graph-page")
    for name in ("widget.js", "widget.css"):
        shutil.copy(STATIC / name, work / name)
    (work / "state.json").write_text(json.dumps(state))
    (work / "index.html").write_text(PAGE)
    srv, url = serve(work)
    yield url, state["meta"]["n_layers"], len(state["tokens"])
    srv.shutdown()


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

"""End-to-end: the Explorer on the embedded SmolLM2 in a real JupyterLab 4 and Notebook 7, in headless Chromium.

Each test writes a fresh notebook, opens it, waits for an idle kernel, runs it, and checks:
render (graph canvas pixels, token labels), browser -> Python (a click reaches the `selection` trait, read back
by running a cell), Python -> browser (a selection set in a cell redraws the panes), a hostile token staying text,
and no request leaving the machine (the `watched_page` fixture fails the test on any of that at teardown).
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import pytest

from nbdriver import canvas_stats, open_notebook, py_eval, run_all, run_code, wait_py, write_notebook

pytestmark = pytest.mark.browser

PARIS = "The capital of France is"
HOSTILE = "x <img src=x onerror=alert(1)> y"
RENDER_TIMEOUT_MS = 120_000  # first load of the model in a fresh kernel (~3 s cached, much more if converting)


def explorer_cells(prompt: str) -> list[str]:
    return [
        "import json\n"
        "from lmtt_widgets import Explorer\n"
        f"w = Explorer('smollm2', {prompt!r})\n"
        "w",
    ]


def open_and_render(page, server, prompt: str):
    """Write + open + run the notebook; wait until the graph pane has painted. Returns (L, H, T)."""
    name = write_notebook(server.root, explorer_cells(prompt))
    open_notebook(page, server, name)
    run_all(page)
    root = page.locator(".lmtt-root")
    try:
        page.locator(".lmtt-root .lmtt-graph[data-draw-ms]").wait_for(state="attached", timeout=RENDER_TIMEOUT_MS)
    except Exception:
        outs = page.locator(".jp-OutputArea-output").all_inner_texts()
        raise AssertionError(f"the Explorer did not paint; notebook outputs: {[o[-1500:] for o in outs]}") from None
    assert root.count() == 1, f"expected one .lmtt-root, found {root.count()}"
    L, H, T = py_eval(page, "[w.meta['n_layers'], w.meta['n_heads'], len(w.tokens)]")
    return L, H, T


def token_labels(page) -> list[str]:
    """Full display text of each token label on the graph axis (from its title `#i <token>`), in order."""
    titles = page.locator(".lmtt-root .lmtt-graph .lmtt-axis .lmtt-tok").evaluate_all(
        "els => els.map(e => [Number(e.dataset.token), e.getAttribute('title'), e.textContent])"
    )
    titles.sort()
    out = []
    for i, title, _text in titles:
        prefix = f"#{i} "
        assert title.startswith(prefix), title
        out.append(title[len(prefix):])
    return out


def undisplay(s: str) -> str:
    return s.replace("␣", " ")


def assert_graph_painted(page):
    stats = canvas_stats(page.locator(".lmtt-root .lmtt-graph canvas.lmtt-canvas"))
    assert stats["w"] > 200 and stats["h"] > 200, stats
    # nodes, edges, grid: thousands of non-background pixels, some of them coloured (importance scale, edge kinds)
    assert stats["nonBg"] > 2000, stats
    assert stats["colorful"] > 200, stats
    return stats


def heat_cell_position(page, L: int, H: int, layer: int, head: int) -> dict:
    """Centre of heatmap cell (layer, head) relative to the canvas, from the canvas's CSS box.

    The heatmap is `left` = 30 px of layer labels, `top` = 16 px of head labels, then L x H cells of cw x ch,
    4 px right and 2 px bottom margin (js/panes/heads.ts heatGeom).
    """
    box = page.locator(".lmtt-root .lmtt-heads canvas.lmtt-heat").bounding_box()
    cw = (box["width"] - 30 - 4) / H
    ch = (box["height"] - 16 - 2) / L
    assert cw >= 7.9 and ch >= 5.9, (box, cw, ch)
    return {"x": 30 + (head + 0.5) * cw, "y": 16 + (layer + 0.5) * ch}


def graph_node_position(page, token: int, row: int) -> dict:
    """Centre of residual node (token, row) relative to the graph canvas, from the pane's current view."""
    v = page.locator(".lmtt-root .lmtt-graph").evaluate("el => el.__lmtt && el.__lmtt.getView()")
    assert v, "graph view not available (el.__lmtt.getView())"
    return {"x": v["tx"] + token * v["sx"], "y": v["ty"] - row * v["sy"]}


def heat_pixel(page, L: int, H: int, layer: int, head: int):
    """Colour of the 1-px gap just left of cell (layer, head): background, or the accent when the cell is selected."""
    return page.locator(".lmtt-root .lmtt-heads canvas.lmtt-heat").evaluate(
        """(c, [L, H, layer, head]) => {
          const dpr = c.width / c.getBoundingClientRect().width;
          const cw = (c.width / dpr - 34) / H, ch = (c.height / dpr - 18) / L;
          const x = Math.round((30 + head * cw - 1) * dpr), y = Math.round((16 + (layer + 0.5) * ch) * dpr);
          return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3));
        }""",
        [L, H, layer, head],
    )


def check_render(page, prompt: str, artifacts, tag: str):
    labels = token_labels(page)
    assert undisplay("".join(labels)) == prompt, labels
    stats = assert_graph_painted(page)
    pred = page.locator(".lmtt-root .lmtt-pred").inner_text()
    page.screenshot(path=str(artifacts / f"{tag}-page.png"))
    page.locator(".lmtt-root").screenshot(path=str(artifacts / f"{tag}-widget.png"))
    return labels, stats, pred


def click_head_and_check_python(page, L, H, T, layer, head):
    pos = heat_cell_position(page, L, H, layer, head)
    page.locator(".lmtt-root .lmtt-heads canvas.lmtt-heat").click(position=pos)
    want = {"kind": "head", "layer": layer, "head": head, "token": T - 1}
    got = wait_py(page, "w.selection", lambda v: v == want)
    assert got == want, f"Python saw {got!r} after clicking head cell L{layer}.H{head}"
    assert py_eval(page, "w.error") == ""
    # the browser's own panes followed the click too
    vocab_title = page.locator(".lmtt-root .lmtt-vocab .lmtt-pane-title")
    assert f"head L{layer}.H{head}" in vocab_title.inner_text()


def set_in_python_and_check_browser(page, L, H, T, layer, head):
    info = page.locator(".lmtt-root .lmtt-graph .lmtt-info")
    before_pixel = heat_pixel(page, L, H, layer, head)
    run_code(page, f"w.selection = {{'kind': 'head', 'layer': {layer}, 'head': {head}, 'token': {T - 1}}}")
    page.wait_for_function(
        "([sel, txt]) => (document.querySelector(sel) || {}).textContent?.includes(txt)",
        arg=[".lmtt-root .lmtt-vocab .lmtt-pane-title", f"head L{layer}.H{head}"],
        timeout=20_000,
    )
    assert f"selected: head L{layer}.H{head}" in info.inner_text()
    after_pixel = heat_pixel(page, L, H, layer, head)
    assert after_pixel != before_pixel, f"heatmap cell L{layer}.H{head} not outlined: {before_pixel} -> {after_pixel}"
    # the head's detail (attention pattern + contribution map) is fetched from the kernel by a `details` message
    detail = page.locator(".lmtt-root .lmtt-heads .lmtt-head-detail")
    detail.locator("canvas.lmtt-matrix").nth(1).wait_for(state="visible", timeout=30_000)
    assert f"head L{layer}.H{head} at #{T - 1}" in detail.inner_text()
    assert page.locator(".lmtt-root .lmtt-errorbar").is_hidden()


def test_jupyterlab_explorer(lab_server, watched_page, artifacts):
    page = watched_page
    L, H, T = open_and_render(page, lab_server, PARIS)
    assert (L, H, T) == (30, 9, 5)
    labels, stats, pred = check_render(page, PARIS, artifacts, "lab-1-render")
    assert labels == ["The", "␣capital", "␣of", "␣France", "␣is"]
    assert "Paris" in pred, pred

    # browser -> Python: a head cell of the heatmap
    click_head_and_check_python(page, L, H, T, layer=17, head=5)
    page.locator(".lmtt-root").screenshot(path=str(artifacts / "lab-2-after-head-click.png"))

    # browser -> Python: the top residual node of the target column in the graph canvas
    canvas = page.locator(".lmtt-root .lmtt-graph canvas.lmtt-canvas")
    canvas.click(position=graph_node_position(page, token=T - 1, row=2 * L))
    want = {"kind": "node", "layer": L - 1, "token": T - 1, "node_kind": "after_mlp"}
    got = wait_py(page, "w.selection", lambda v: v == want)
    assert got == want, f"Python saw {got!r} after clicking the top node of the target column"
    page.locator(".lmtt-root").screenshot(path=str(artifacts / "lab-3-after-node-click.png"))

    # Python -> browser: the head that carries " France" into the last position (the README's screenshot)
    set_in_python_and_check_browser(page, L, H, T, layer=23, head=4)
    page.locator(".lmtt-root").screenshot(path=str(artifacts / "lab-4-after-python-set.png"))
    page.screenshot(path=str(artifacts / "lab-4-page.png"), full_page=True)

    # the head's layer's MLP block lists its top neurons; a neuron click -> Python, and its vocabulary projection
    # is fetched from the kernel
    first = page.locator(".lmtt-root .lmtt-neurons .lmtt-neuron").first
    first.wait_for(state="visible", timeout=20_000)
    assert "MLP L23" in page.locator(".lmtt-root .lmtt-neurons-pane .lmtt-pane-title").inner_text()
    neuron = int(first.get_attribute("data-neuron"))
    first.click()
    want = {"kind": "neuron", "layer": 23, "neuron": neuron, "token": T - 1}
    got = wait_py(page, "w.selection", lambda v: v == want)
    assert got == want, f"Python saw {got!r} after clicking neuron {neuron}"
    page.wait_for_function(
        "([sel, txt]) => (document.querySelector(sel) || {}).textContent?.includes(txt)",
        arg=[".lmtt-root .lmtt-vocab .lmtt-pane-title", f"neuron L23.N{neuron}"], timeout=20_000,
    )
    promoted = page.locator(".lmtt-root .lmtt-vocab .lmtt-vocab-body .lmtt-tokrow")
    promoted.first.wait_for(state="visible", timeout=30_000)
    assert promoted.count() >= 10 and page.locator(".lmtt-root .lmtt-errorbar").is_hidden()
    page.locator(".lmtt-root").screenshot(path=str(artifacts / "lab-5-after-neuron-click.png"))


def test_notebook7_explorer(nb_server, watched_page, artifacts):
    page = watched_page
    L, H, T = open_and_render(page, nb_server, PARIS)
    labels, stats, pred = check_render(page, PARIS, artifacts, "nb7-1-render")
    assert labels == ["The", "␣capital", "␣of", "␣France", "␣is"]
    # one round trip: browser click -> Python, then Python -> browser
    click_head_and_check_python(page, L, H, T, layer=4, head=7)
    set_in_python_and_check_browser(page, L, H, T, layer=20, head=3)
    page.locator(".lmtt-root").screenshot(path=str(artifacts / "nb7-2-after-roundtrip.png"))
    page.screenshot(path=str(artifacts / "nb7-2-page.png"))
    # Notebook 7 puts a cell's output in a scroll box once it is taller than 1820 px (1.3 x 14 px x 100, its
    # scroll-output plugin): the Explorer, head detail open, stays below that, so the whole widget is visible.
    height = page.locator(".lmtt-root").evaluate("el => el.getBoundingClientRect().height")
    assert height < 1800, f"the Explorer is {height:.0f} px tall; Notebook 7 scrolls outputs over 1820 px"
    page.wait_for_timeout(300)  # the plugin re-checks after the output changes
    assert page.locator(".jp-Cell.jp-mod-outputsScrolled .lmtt-root").count() == 0, "Notebook 7 scrolled the Explorer"


def test_hostile_token_stays_text(lab_server, watched_page, artifacts):
    page = watched_page
    open_and_render(page, lab_server, HOSTILE)
    labels = token_labels(page)
    assert undisplay("".join(labels)) == HOSTILE, labels
    # the characters are on screen as text...
    axis_text = page.locator(".lmtt-root .lmtt-graph .lmtt-axis").text_content()
    assert "<" in axis_text and ">" in axis_text and "img" in axis_text and "onerror" in undisplay("".join(labels))
    assert page.locator(".lmtt-root textarea.lmtt-prompt").input_value() == HOSTILE
    # ... and never markup: no <img> (the widget draws none at all), and no dialog (watched_page fails on one)
    assert page.locator(".lmtt-root img").count() == 0
    assert page.locator('img[src="x"]').count() == 0
    # give a would-be onerror handler time to run, then look again
    page.wait_for_timeout(500)
    assert page.watch.dialogs == []
    page.locator(".lmtt-root").screenshot(path=str(artifacts / "hostile-widget.png"))


def test_offline(lab_server, watched_page, artifacts):
    page = watched_page
    open_and_render(page, lab_server, PARIS)
    py_eval(page, "w.error")
    watch = page.watch
    assert watch.blocked == [], watch.blocked
    # websockets: the kernel channel (and the event bus), all on loopback
    assert any("/api/kernels/" in u and "/channels" in u for u in watch.websockets), watch.websockets
    assert all(u.startswith("ws://127.0.0.1:") for u in watch.websockets), watch.websockets
    # the blocker has teeth: an external fetch from the page is aborted and counted
    probe = "https://cdn.jsdelivr.net/npm/anywidget/+esm"
    ok = page.evaluate("async (u) => { try { await fetch(u); return true; } catch (e) { return false; } }", probe)
    assert ok is False
    assert watch.blocked == [probe], watch.blocked
    watch.blocked.clear()  # the probe was ours; teardown re-checks that nothing else left

"""End-to-end: the Explorer's widget state, saved into the notebook by JupyterLab, reopened after its kernel is gone.

A separate JupyterLab (`lab_server_save_state`) has the widget manager's `saveState` setting on. The test runs the
Explorer, saves, checks the .ipynb on disk holds the complete widget state (the anywidget `_esm`, our traits, every
binary array as a base64 buffer of the right size), shuts the kernel down and reopens the notebook; JupyterLab
starts a new kernel that never ran the cell. The views are drawn from the saved state alone, a click still goes
pane to pane in the browser, and a detail that needs the old kernel shows the widget's "No answer" error state.

Reopening with "No Kernel" at all does not draw saved widgets in JupyterLab 4.6 (jupyterlab_widgets 3.0 creates a
notebook's widget manager only once a kernel session is ready: jupyterlab/jupyterlab#15361,
jupyter-widgets/ipywidgets#3773). Kernel-less sharing is the HTML report's job (tests/test_report.py).
"""
from __future__ import annotations

import base64
import math
import time

import pytest

from nbdriver import (WIDGET_STATE_MIME, WIDGET_VIEW_MIME, notebook_sessions, open_notebook, py_eval, run_all,
                      running_kernels, save_notebook, shutdown_kernel, write_notebook)
from test_explorer import (PARIS, RENDER_TIMEOUT_MS, assert_graph_painted, explorer_cells, heat_cell_position,
                           token_labels)

pytestmark = pytest.mark.browser

TOKENS = ["The", " capital", " of", " France", " is"]
LABELS = ["The", "␣capital", "␣of", "␣France", "␣is"]
L, H, T = 30, 9, 5
ITEMSIZE = {"float32": 4, "uint32": 4, "int32": 4, "uint8": 1}
# traits the views draw from without asking the kernel (all array dicts but `tokens`, `meta`, `panes`)
DRAWN_TRAITS = ("tokens", "meta", "panes", "graph", "head_importance", "block_importance", "lens", "neurons")


def explorer_model(nb: dict) -> tuple[str, dict]:
    """(model id, saved model) of the Explorer's anywidget model in a saved notebook; checks the state is complete."""
    widgets = nb["metadata"].get("widgets")
    assert widgets and WIDGET_STATE_MIME in widgets, f"no widget state saved; metadata keys: {list(nb['metadata'])}"
    saved = widgets[WIDGET_STATE_MIME]
    assert saved["version_major"] == 2, saved.get("version_major")
    models = {mid: m for mid, m in saved["state"].items() if m["model_module"] == "anywidget" and "tokens" in m["state"]}
    assert len(models) == 1, f"expected one anywidget model with `tokens`, got {[(k, m['model_name']) for k, m in saved['state'].items()]}"
    mid, model = next(iter(models.items()))
    assert model["model_name"] == "AnyModel", model["model_name"]
    state = model["state"]
    # the front-end module itself travels in the state: nothing needs the kernel (or a CDN) to load it
    assert len(state["_esm"]) > 10_000 and "lmtt-root" in state["_esm"], len(state["_esm"])
    assert "lmtt-root" in state["_css"], len(state["_css"])
    assert state["tokens"] == TOKENS, state["tokens"]
    assert state["prompt"] == PARIS and state["error"] == "" and state["static"] is False
    assert (state["meta"]["n_layers"], state["meta"]["n_heads"], state["meta"]["n_tokens"]) == (L, H, T), state["meta"]
    missing = [k for k in DRAWN_TRAITS if k not in state]
    assert not missing, f"traits missing from the saved state: {missing}"
    # every binary array as a buffer: base64 bytes == dtype size x product of the shape saved beside it
    buffers = {tuple(b["path"]): b for b in model.get("buffers", [])}
    for path in [("graph", "edge_src", "data"), ("graph", "edge_weight", "data"), ("graph", "node_token", "data"),
                 ("head_importance", "data"), ("lens", "ids", "data"), ("neurons", "importance", "data")]:
        assert path in buffers, f"no buffer for {path}; buffers: {sorted(buffers)}"
    for path, b in buffers.items():
        assert b["encoding"] == "base64", (path, b["encoding"])
        node = state
        for p in path[:-1]:
            node = node[p]
        assert path[-1] not in node, f"{path}: data both inline and as a buffer"
        n = len(base64.b64decode(b["data"]))
        assert n == ITEMSIZE[node["dtype"]] * math.prod(node["shape"]), (path, node, n)
    assert state["head_importance"]["shape"] == [L, H, T], state["head_importance"]
    return mid, model


def run_save_and_shutdown(page, server) -> tuple[str, str]:
    """Run the Explorer, wait for the graph to paint, save, check the file, shut the kernel down.

    Returns (notebook name, the Explorer's model id)."""
    name = write_notebook(server.root, explorer_cells(PARIS))
    open_notebook(page, server, name)
    run_all(page)
    page.locator(".lmtt-root .lmtt-graph[data-draw-ms]").wait_for(state="attached", timeout=RENDER_TIMEOUT_MS)
    nb = save_notebook(page, server, name)
    mid, _ = explorer_model(nb)
    views = [o["data"][WIDGET_VIEW_MIME]["model_id"] for c in nb["cells"] for o in c.get("outputs", [])
             if WIDGET_VIEW_MIME in o.get("data", {})]
    assert mid in views, f"the Explorer's output does not reference model {mid}: {views}"
    kernel = shutdown_kernel(page)
    deadline = time.monotonic() + 20
    while kernel in running_kernels(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kernel not in running_kernels(server), f"kernel {kernel} still running"
    assert notebook_sessions(server, name) == [], notebook_sessions(server, name)
    page.goto("about:blank")  # leave the old Lab page (nothing unsaved) before the file is touched or reopened
    return name, mid


def check_restored_views(page, layer: int = 17, head: int = 5) -> None:
    """The restored Explorer draws its graph and labels, and a heatmap click reaches the other panes."""
    assert page.locator(".lmtt-root").count() == 1
    assert token_labels(page) == LABELS
    assert_graph_painted(page)
    assert "Paris" in page.locator(".lmtt-root .lmtt-pred").inner_text()
    page.locator(".lmtt-root .lmtt-heads canvas.lmtt-heat").click(position=heat_cell_position(page, L, H, layer, head))
    page.wait_for_function(
        "([sel, txt]) => (document.querySelector(sel) || {}).textContent?.includes(txt)",
        arg=[".lmtt-root .lmtt-vocab .lmtt-pane-title", f"head L{layer}.H{head}"],
        timeout=10_000,
    )
    assert f"selected: head L{layer}.H{head}" in page.locator(".lmtt-root .lmtt-graph .lmtt-info").inner_text()


def wait_details_outcome(page, layer: int, head: int, timeout_ms: int = 35_000) -> str:
    """The head detail needs the kernel (a `details` message): wait until it shows a result or an error; return its text."""
    detail = page.locator(".lmtt-root .lmtt-heads .lmtt-head-detail")
    page.wait_for_function(
        """(el) => { const t = el && el.textContent || '';
                     return t.includes('Could not load') || !!el.querySelector('canvas.lmtt-matrix'); }""",
        arg=detail.element_handle(), timeout=timeout_ms,
    )
    return detail.inner_text()


def test_saved_state_draws_with_fresh_kernel(lab_server_save_state, watched_page, artifacts):
    page, server = watched_page, lab_server_save_state
    name, _ = run_save_and_shutdown(page, server)
    # reopened as saved: JupyterLab starts a new python3 kernel, which never runs the cell
    open_notebook(page, server, name)
    page.locator(".lmtt-root .lmtt-graph[data-draw-ms]").wait_for(state="attached", timeout=30_000)
    assert py_eval(page, "'w' in globals()") is False  # what is drawn came from the saved state alone
    check_restored_views(page, 17, 5)
    # no Python object answers: the detail shows the widget's own "no answer" error (with Retry), nothing hangs
    text = wait_details_outcome(page, 17, 5)
    assert "Could not load head L17.H5" in text and "No answer from the kernel" in text, text
    vocab = page.locator(".lmtt-root .lmtt-vocab .lmtt-vocab-body").inner_text()
    assert "No answer from the kernel" in vocab, vocab
    page.screenshot(path=str(artifacts / "saved-state-fresh-kernel.png"))
    shutdown_kernel(page)  # the server is shared by the session: leave no kernel behind

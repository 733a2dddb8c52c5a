"""End-to-end (issue 12's "done when"): on SmolLM2 and the IOI prompt in a real JupyterLab, pick " John" as the
foil, paste a corrupted prompt, switch the head heatmap to the causal mode (L23.H3 red near the top, L29.H0 blue),
click Check on L23.H3 and see its exact effect, the same number Python holds. Screenshots of the three heatmap
modes go to test-artifacts/causal-*.png.
"""

from __future__ import annotations

import re

import pytest

from nbdriver import py_eval, wait_py
from test_explorer import heat_cell_position, open_and_render

pytestmark = pytest.mark.browser

IOI = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Alice and Bob went to the store, Carl gave a drink to"
COMPUTE_TIMEOUT_MS = 180_000  # attribution patching / exact patching on a shared 2-core machine

CELL_RGB_JS = """(c, [L, H, layer, head]) => {
  const dpr = c.width / c.getBoundingClientRect().width;
  const cw = (c.width / dpr - 34) / H, ch = (c.height / dpr - 18) / L;
  const x = Math.round((30 + (head + 0.5) * cw) * dpr), y = Math.round((16 + (layer + 0.5) * ch) * dpr);
  return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3));
}"""


def cell_rgb(page, L, H, layer, head):
    return page.locator(".lmtt-root .lmtt-heads canvas.lmtt-heat").evaluate(CELL_RGB_JS, [L, H, layer, head])


def legend(page) -> str:
    return page.locator(".lmtt-root .lmtt-heads .lmtt-legend-text").inner_text()


def switch_mode(page, mode: str, want_in_legend: str):
    page.locator(f'.lmtt-root .lmtt-head-modes [data-mode="{mode}"]:not([disabled])').click()
    page.wait_for_function(
        "([sel, txt]) => (document.querySelector(sel) || {}).textContent?.includes(txt)",
        arg=[".lmtt-root .lmtt-heads .lmtt-legend-text", want_in_legend], timeout=COMPUTE_TIMEOUT_MS,
    )


def test_jupyterlab_foil_corrupted_causal_heatmap_and_check(lab_server, watched_page, artifacts):
    page = watched_page
    L, H, T = open_and_render(page, lab_server, IOI)
    assert (L, H) == (30, 9)
    heads_pane = page.locator(".lmtt-root .lmtt-heads")
    heads_pane.screenshot(path=str(artifacts / "causal-1-flow-share.png"))
    assert legend(page).startswith("flow share (importance)")
    causal = page.locator('.lmtt-root .lmtt-head-modes [data-mode="attribution_patching"]')
    assert causal.is_disabled()  # no corruption yet

    # the foil: " John" from the top predictions at the target position
    foil = page.locator(".lmtt-root select.lmtt-foil")
    labels = foil.locator("option").all_inner_texts()
    john = [i for i, text in enumerate(labels) if re.match(r"^␣John \d", text)]
    assert john, labels
    foil.select_option(index=john[0])
    got = wait_py(page, "[w.foil, w.metric.get('foil_text'), w.error]", lambda v: v[1] == " John")
    assert got[1] == " John" and got[2] == "", got
    page.wait_for_function(
        "(sel) => (document.querySelector(sel) || {}).textContent === \"metric: logit(' Mary') − logit(' John')\"",
        arg=".lmtt-root .lmtt-metric-name", timeout=20_000,
    )
    # a foil that is not one token is refused into the error bar, and the foil stays " John"
    text = page.locator(".lmtt-root input.lmtt-foil-text")
    text.fill(" Johnathan Smith")
    text.press("Enter")
    page.locator(".lmtt-root .lmtt-errorbar:not([hidden])").wait_for(state="visible", timeout=20_000)
    assert "not one" in page.locator(".lmtt-root .lmtt-error-text").inner_text()
    assert py_eval(page, "w.metric['foil_text']") == " John"

    # the flow-share heatmap knows nothing of the foil; logit attribution does, signed
    switch_mode(page, "logit_attribution", "logit(' Mary') − logit(' John') at #13, direct logit attribution")
    heads_pane.screenshot(path=str(artifacts / "causal-2-logit-attribution.png"))

    # the corrupted prompt enables the causal mode, computed on demand
    box = page.locator(".lmtt-root input.lmtt-corrupted")
    box.fill(CORRUPTED)
    box.press("Enter")
    assert wait_py(page, "w.corrupted", lambda v: v == CORRUPTED) == CORRUPTED
    switch_mode(page, "attribution_patching", "logit(' Mary') − logit(' John') at #13, ≈ causal effect (attribution patching)")
    assert page.locator(".lmtt-root .lmtt-errorbar").is_hidden()
    assert "≈ Causal effect" in heads_pane.locator(".lmtt-pane-title").inner_text()
    # L23.H3 near the top (red), L29.H0 negative (blue), in the browser and in Python
    top = py_eval(page, "[c.id for c, _ in w.tables['attribution_patching'].of_kind('head').top(3, by='value')]")
    assert "L23.H3" in top, top
    assert py_eval(page, "w.tables['attribution_patching']['L29.H0']") < 0
    r, g, b = cell_rgb(page, L, H, 23, 3)
    assert r > b + 80, (r, g, b)
    r, g, b = cell_rgb(page, L, H, 29, 0)
    assert b > r + 40, (r, g, b)
    agreement = heads_pane.locator(".lmtt-agreement").inner_text()
    assert "Rank agreement over 270 heads" in agreement and "flow share vs ≈ causal effect" in agreement
    heads_pane.screenshot(path=str(artifacts / "causal-3-causal-effect.png"))

    # click L23.H3, then Check: the exact effect appears next to the approximations, and in Python
    page.locator(".lmtt-root .lmtt-heads canvas.lmtt-heat").click(position=heat_cell_position(page, L, H, 23, 3))
    assert wait_py(page, "w.selection", lambda v: v and v.get("head") == 3)["layer"] == 23
    page.locator(".lmtt-root .lmtt-check-btn:not([disabled])").click()
    exact_row = page.locator(".lmtt-root .lmtt-check .lmtt-check-exact")
    exact_row.wait_for(state="visible", timeout=COMPUTE_TIMEOUT_MS)
    shown = exact_row.inner_text()
    m = re.search(r"([+−])(\d+\.\d+) logits", shown)
    assert m, shown
    value = float(m.group(2)) * (-1 if m.group(1) == "−" else 1)
    exact = py_eval(page, "w.last_check['L23.H3']")
    assert value == pytest.approx(exact, abs=1e-3) and exact > 2.0, (shown, exact)
    check_text = page.locator(".lmtt-root .lmtt-check").inner_text()
    assert "≈ attribution patching" in check_text and "direct logit attribution" in check_text
    assert "Alice and Bob" in check_text  # the setting the number holds for
    page.locator(".lmtt-root").screenshot(path=str(artifacts / "causal-4-check.png"))
    heads_pane.screenshot(path=str(artifacts / "causal-4-check-heads.png"))

"""End-to-end (issue 13 point 4): on SmolLM2 in a real JupyterLab, explain "The capital of France is" with 10
generated tokens; the attribution pane shows the source x generated matrix for the flow method, then for integrated
gradients (8 steps, computed when asked); clicking " France" selects its embedding node in the graph, clicking a
generated token makes the position that predicted it the target in Python. Screenshots: test-artifacts/attribution-*.
"""

from __future__ import annotations

import pytest

from nbdriver import open_notebook, py_eval, run_all, wait_py, write_notebook

pytestmark = pytest.mark.browser

PROMPT = "The capital of France is"
COMPUTE_TIMEOUT_MS = 240_000  # integrated gradients, 10 rows x 8 steps, on a shared 2-core machine
CELLS = [
    "from lmtt_widgets import Explorer, explain, load_model\n"
    f"ex = explain(load_model('smollm2'), {PROMPT!r}, generate=10)\n"
    "w = Explorer(ex)\n"
    "w.attribution_options = {'integrated_gradients': {'steps': 8}}\n"
    "w",
]


def legend(pane) -> str:
    return pane.locator(".lmtt-legend-text").inner_text()


def test_jupyterlab_attribution_matrix_method_switch_and_clicks(lab_server, watched_page, artifacts):
    page = watched_page
    open_notebook(page, lab_server, write_notebook(lab_server.root, CELLS, stem="attribution"))
    run_all(page)
    pane = page.locator(".lmtt-root .lmtt-attribution")
    page.locator(".lmtt-root .lmtt-graph[data-draw-ms]").wait_for(state="attached", timeout=180_000)
    cols = pane.locator(".lmtt-attr-col")
    page.wait_for_function("() => document.querySelectorAll('.lmtt-attribution .lmtt-attr-col').length === 10",
                           timeout=60_000)
    n_prompt, tokens = py_eval(page, "[ex.n_prompt_tokens, list(ex.tokens)]")
    assert legend(pane).startswith("flow_attribution: flow share")
    assert py_eval(page, "w.matrices['flow_attribution'].shape") == [10, len(tokens)]
    pane.screenshot(path=str(artifacts / "attribution-1-flow.png"))

    # integrated gradients: the token scores at once, the matrix when asked
    pane.locator("select.lmtt-attr-method").select_option("integrated_gradients")
    page.wait_for_function(
        "() => (document.querySelector('.lmtt-attribution .lmtt-legend-text') || {}).textContent?.startsWith('integrated_gradients')",
        timeout=COMPUTE_TIMEOUT_MS)
    assert cols.count() == 0
    pane.locator(".lmtt-attr-compute:not([disabled])").click()
    page.wait_for_function("() => document.querySelectorAll('.lmtt-attribution .lmtt-attr-col').length === 10",
                           timeout=COMPUTE_TIMEOUT_MS)
    assert page.locator(".lmtt-root .lmtt-errorbar").is_hidden()
    assert py_eval(page, "[w.matrices['integrated_gradients'].shape, w.tables['integrated_gradients'].extra['steps']]") \
        == [[10, len(tokens)], 8]
    assert "completeness error" in pane.locator(".lmtt-attr-note").inner_text()
    pane.screenshot(path=str(artifacts / "attribution-2-integrated-gradients.png"))

    # click " France": the graph's selection is its embedding node (the graph highlights the routes from it)
    france = tokens.index(" France")
    pane.locator(f'.lmtt-attr-tok[data-position="{france}"]').click()
    sel = wait_py(page, "w.selection", lambda v: bool(v))
    assert sel == {"kind": "node", "node_kind": "embedding", "layer": -1, "token": france}, sel

    # click the third generated token: its prediction (made one position earlier) becomes the target everywhere
    g = n_prompt + 2
    pane.locator(f'.lmtt-attr-col[data-generated="{g}"] rect').first.click()
    assert wait_py(page, "w.target", lambda v: v == g - 1, timeout_s=60) == g - 1
    page.wait_for_function(
        f"() => (document.querySelector('.lmtt-attribution .lmtt-legend-text') || {{}}).textContent?.includes('at token {g - 1}')",
        timeout=COMPUTE_TIMEOUT_MS)
    assert py_eval(page, "w.tables['integrated_gradients'].metric.target") == py_eval(page, f"int(ex.trace.input_ids[{g}])")
    # diagnostics for the report (the prediction and lens the kernel holds for the new target)
    diag = py_eval(page, "[w.target, w.meta['prediction']['token'], w.meta['position'], w.lens.get('token'), w.error]")
    (artifacts / "attribution-target.txt").write_text(repr(diag))
    assert diag == [g - 1, tokens[g], g - 1, g - 1, ""], diag  # greedy: the prediction at g - 1 is token g
    assert pane.locator(".lmtt-attr-col.is-target").get_attribute("data-generated") == str(g)
    page.locator(".lmtt-root").screenshot(path=str(artifacts / "attribution-3-explorer.png"))


AGREE_CELLS = [
    "from lmtt_widgets import Explorer, explain, load_model\n"
    "ex = explain(load_model('smollm2'), 'The capital of Kyrgyzstan is')\n"
    "w = Explorer(ex)\n"
    "w.attribution_options = {'integrated_gradients': {'steps': 16}}\n"
    "w",
]


def agreement_dom(pane) -> dict:
    rows = pane.locator(".lmtt-attr-agree")
    return {rows.nth(i).get_attribute("data-method"): rows.nth(i).inner_text() for i in range(rows.count())}


def test_jupyterlab_agreement_beside_the_pane_and_the_word_toggle(lab_server, watched_page, artifacts):
    """Issue 13 points 5 and 3: the agreement table beside the tokens (cheap methods at once, integrated gradients
    and occlusion after a click), and the subword/word control: ' Kyrgyz' + 'stan' is one word whose click selects
    both tokens' embedding nodes."""
    page = watched_page
    open_notebook(page, lab_server, write_notebook(lab_server.root, AGREE_CELLS, stem="attribution-agreement"))
    run_all(page)
    pane = page.locator(".lmtt-root .lmtt-attribution")
    page.wait_for_function("() => document.querySelectorAll('.lmtt-attribution .lmtt-attr-agree').length === 5",
                           timeout=180_000)
    shown = agreement_dom(pane)
    rows = {r["method"]: r for r in py_eval(page, "w.attribution['agreement']['rows']")}
    assert set(shown) == set(rows) == {"attention_rollout", "input_x_gradient", "saliency", "integrated_gradients",
                                       "occlusion"}
    for m in ("attention_rollout", "input_x_gradient", "saliency"):  # cheap: computed at once, against flow shares
        assert rows[m]["state"] == "ready" and rows[m]["compared"] == "|score|"
        assert f"{abs(rows[m]['spearman']):.2f}" in shown[m] and "of |score|" in shown[m], shown[m]
    assert "not computed" in shown["integrated_gradients"] and "not computed" in shown["occlusion"]
    assert "Spearman" in pane.locator(".lmtt-attr-measures").inner_text()
    pane.locator(".lmtt-attr-agree-all:not([disabled])").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.lmtt-attribution .lmtt-attr-agree')].every(r => r.textContent.includes('ρ'))",
        timeout=COMPUTE_TIMEOUT_MS)
    assert py_eval(page, "sorted(r['state'] for r in w.attribution['agreement']['rows'])") == ["ready"] * 5
    assert pane.locator(".lmtt-attr-agree-all").is_hidden()
    pane.screenshot(path=str(artifacts / "attribution-4-agreement.png"))

    # words: the strip merges ' Kyrgyz' + 'stan'; clicking it selects both tokens (the graph's routes from both)
    tokens = py_eval(page, "list(ex.tokens)")
    first = tokens.index(" Kyrgyz")
    assert pane.locator(".lmtt-attr-tok").count() == len(tokens)
    pane.locator("select.lmtt-attr-granularity").select_option("sum")
    words = py_eval(page, "w.attribution['words']['spans']")
    assert pane.locator(".lmtt-attr-tok").count() == len(words) == len(tokens) - 1
    word = pane.locator(f'.lmtt-attr-tok[data-position="{first}"]')
    assert word.get_attribute("data-last") == str(first + 1) and "Kyrgyzstan" in word.inner_text()
    word.click()
    sel = wait_py(page, "w.selection", lambda v: bool(v))
    assert sel == {"kind": "node", "node_kind": "embedding", "layer": -1, "token": first, "last": first + 1}, sel
    assert page.locator(".lmtt-root .lmtt-errorbar").is_hidden()
    page.locator(".lmtt-root").screenshot(path=str(artifacts / "attribution-5-words.png"))

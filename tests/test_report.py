"""Issue 5: the main job writes a self-contained report that renders offline and reacts to clicks."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmtt_widgets import explain
from lmtt_widgets.report import render_html, write_report
from tiny_models import loaded

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def test_report_html_is_self_contained():
    ex = explain(loaded("gpt2"), "a </script><img src=x onerror=alert(1)> b")
    page = render_html(ex)
    assert "default-src 'none'" in page and "connect-src 'none'" in page
    assert not re.search(r"""(src|href)=["']https?://""", page)
    assert "import(\"http" not in page and "from\"http" not in page
    # the hostile prompt cannot close the state's <script> element early (tests/test_hostile.py goes further)
    state = page.split('id="lmtt-state">', 1)[1].split("</script>", 1)[0]
    assert "<" not in state and "\\u003c/script>" in state


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


@pytest.mark.smollm2
@pytest.mark.browser
def test_report_renders_offline_and_reacts_to_clicks(smollm2_paris, tmp_path, chromium):
    path = write_report(smollm2_paris, tmp_path / "report.html")
    ARTIFACTS.mkdir(exist_ok=True)
    page = chromium.new_page(viewport={"width": 1400, "height": 1100})
    try:
        outside, errors, dialogs = [], [], []
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "blob:", "data:"))
                   else (outside.append(route.request.url), route.abort()))
        page.on("pageerror", lambda e: errors.append(str(e)))
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

"""Drive a notebook in JupyterLab 4 / Notebook 7 through `window.jupyterapp` (exposed by the server fixture).

Used by tests/e2e/test_explorer.py and benchmarks/browser_bench.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import nbformat

from browser import ARGS as CHROMIUM_ARGS, CHROMIUM  # noqa: F401 (one definition for all browser tests)

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Notebook 7.6.5 logs this on every load (see the reference doc); any other page error fails the test.
ALLOWED_PAGE_ERRORS = ("Cannot read properties of undefined (reading 'schema')",)


def is_loopback(url: str) -> bool:
    p = urlparse(url)
    if p.scheme in ("data", "blob", "about", "chrome", "chrome-extension"):
        return True
    return (p.hostname or "") in LOOPBACK


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JupyterServer:
    app: str  # "lab" or "notebook"
    url: str
    root: Path
    proc: subprocess.Popen
    log: Path

    def notebook_url(self, name: str) -> str:
        if self.app == "lab":
            return f"{self.url}/lab/workspaces/e2e-{uuid.uuid4().hex[:10]}/tree/{name}"
        return f"{self.url}/notebooks/{name}"


def start_server(app: str, base: Path, user_settings: dict[str, dict] | None = None) -> JupyterServer:
    """Start `app` ("lab" or "notebook") with its own config/data/runtime dirs under `base`.

    `user_settings` maps a settings id such as "@jupyter-widgets/jupyterlab-manager/plugin" to the JSON written to
    `<config>/lab/user-settings/<id>.jupyterlab-settings` (only this server reads it).
    """
    root = base / "root"
    cfg = base / "config"
    for d in (root, cfg, base / "data", base / "runtime", base / "ipython"):
        d.mkdir(parents=True, exist_ok=True)
    settings = cfg / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    for sid, value in (user_settings or {}).items():
        f = cfg / "lab" / "user-settings" / f"{sid}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    port = _free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(cfg),
        "JUPYTER_DATA_DIR": str(base / "data"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "IPYTHONDIR": str(base / "ipython"),
        # the kernel inherits this: the venv's python first ("python" in the kernelspec), the repo importable,
        # the model from its local cache only
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    common = [
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.allow_root=True",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        f"--ServerApp.root_dir={root}",
    ]
    if app == "lab":
        cmd = [sys.executable, "-m", "jupyterlab", *common, "--LabApp.expose_app_in_browser=True",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=",
               "--LabApp.extension_manager=readonly"]
    else:
        cmd = [sys.executable, "-m", "notebook", *common, "--JupyterNotebookApp.expose_app_in_browser=True"]
    log = base / "server.log"
    proc = subprocess.Popen(cmd, env=env, cwd=str(root), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{app} server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"{app} server not ready after 60 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return JupyterServer(app, url, root, proc, log)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # shuts its kernels down; POST /api/shutdown needs xsrf
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


KERNEL_IDLE_JS = """(name) => {
  const app = window.jupyterapp;
  const w = app && app.shell && app.shell.currentWidget;
  if (!w || !w.sessionContext || !w.context || !w.context.path.endsWith(name)) return false;
  const s = w.sessionContext.session;
  const k = s && s.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""

KERNEL_BUSY_OR_DONE_JS = """() => {
  const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  return k.status;
}"""

RUN_CODE_JS = """async (code) => {
  const app = window.jupyterapp;
  const nb = app.shell.currentWidget.content;
  nb.activeCellIndex = nb.widgets.length - 1;
  await app.commands.execute('notebook:insert-cell-below');
  nb.activeCell.model.sharedModel.setSource(code);
  app.commands.execute('notebook:run-cell');  // not awaited (see the reference doc)
  return nb.activeCellIndex;
}"""

# Pixel statistics of a canvas: how many pixels differ from the most common colour (the background).
CANVAS_STATS_JS = """(c) => {
  const g = c.getContext('2d');
  const { width: w, height: h } = c;
  if (!w || !h) return { w, h, nonBg: 0, colors: 0 };
  const d = g.getImageData(0, 0, w, h).data;
  const counts = new Map();
  for (let i = 0; i < d.length; i += 4) {
    const k = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
    counts.set(k, (counts.get(k) || 0) + 1);
  }
  let bg = 0, best = -1;
  for (const [k, n] of counts) if (n > best) { best = n; bg = k; }
  const br = bg >> 16, bgG = (bg >> 8) & 255, bb = bg & 255;
  let nonBg = 0, colorful = 0;
  for (let i = 0; i < d.length; i += 4) {
    const diff = Math.abs(d[i] - br) + Math.abs(d[i + 1] - bgG) + Math.abs(d[i + 2] - bb);
    if (diff > 30) nonBg++;
    const mx = Math.max(d[i], d[i + 1], d[i + 2]), mn = Math.min(d[i], d[i + 1], d[i + 2]);
    if (mx - mn > 60) colorful++;
  }
  return { w, h, nonBg, colorful, colors: counts.size, bg: [br, bgG, bb] };
}"""


def write_notebook(root: Path, cells: list[str], stem: str = "e2e") -> str:
    """Write a fresh notebook (never reopen one with saved widget output); returns its file name."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    name = f"{stem}-{uuid.uuid4().hex[:8]}.ipynb"
    nbformat.write(nb, str(Path(root) / name))
    return name


def open_notebook(page, server, name: str, timeout_ms: int = 60_000) -> None:
    page.goto(server.notebook_url(name), wait_until="domcontentloaded", timeout=timeout_ms)
    page.wait_for_function("() => !!(window.jupyterapp && window.jupyterapp.shell)", timeout=timeout_ms)
    page.locator(".jp-NotebookPanel").first.wait_for(state="visible", timeout=timeout_ms)
    page.wait_for_function(KERNEL_IDLE_JS, arg=name, timeout=timeout_ms, polling=100)
    n = page.locator(".jp-NotebookPanel").count()
    assert n == 1, f"expected exactly one .jp-NotebookPanel, found {n}"


WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"


def save_notebook(page, server, name: str, timeout_s: float = 20.0) -> dict:
    """Save the current notebook (docmanager:save, what Ctrl+S runs); return the .ipynb as written to disk."""
    page.evaluate("async () => { await window.jupyterapp.commands.execute('docmanager:save'); }")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=timeout_s * 1000)
    return json.loads((Path(server.root) / name).read_text())


def shutdown_kernel(page) -> str:
    """Shut the current notebook's kernel down (ISessionContext.shutdown: Kernel > Shut Down Kernel, no dialog).

    Returns the id of the kernel shut down."""
    return page.evaluate(
        """async () => { const sc = window.jupyterapp.shell.currentWidget.sessionContext;
                         const id = sc.session.kernel.id; await sc.shutdown(); return id; }"""
    )


def _get(server, path: str):
    with urllib.request.urlopen(f"{server.url}{path}", timeout=10) as r:
        return json.loads(r.read())


def running_kernels(server) -> list[str]:
    """Ids of the kernels the server runs (GET /api/kernels)."""
    return [k["id"] for k in _get(server, "/api/kernels")]


def notebook_sessions(server, name: str) -> list[dict]:
    """The server's sessions (GET /api/sessions) for notebook `name`."""
    return [s for s in _get(server, "/api/sessions") if s.get("path") == name]


def run_all(page) -> None:
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def run_code(page, code: str) -> int:
    """Append a cell with `code` at the end of the notebook and run it; returns its index."""
    return page.evaluate(RUN_CODE_JS, code)


_counter = 0


def py_eval(page, expr: str, timeout_ms: int = 30_000):
    """Run a new cell printing json.dumps(expr) between unique markers; return the decoded value.

    The marker is assembled at run time so that a traceback quoting the source cannot match it; a cell that
    raises is reported with its traceback.
    """
    global _counter
    _counter += 1
    tag = f"OUT{_counter}x{uuid.uuid4().hex[:6]}"
    a, b = tag[:3], tag[3:]
    idx = run_code(page, f"import json as _j\n_t = {a!r} + {b!r}\nprint('<' + _t + '>' + _j.dumps({expr}, default=str) + '</' + _t + '>')")
    out = page.locator(".jp-OutputArea-output", has_text=f"<{tag}>").first
    cell = page.locator(".jp-Notebook .jp-Cell").nth(idx)
    err = cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']", has_text="Error")
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        if out.count():
            break
        if err.count():
            raise AssertionError(f"kernel error evaluating {expr!r}:\n{err.first.inner_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no output for {expr!r} after {timeout_ms} ms")
        time.sleep(0.05)
    text = out.inner_text()
    body = text.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]
    return json.loads(body)


def wait_py(page, expr: str, pred, timeout_s: float = 20.0):
    """Re-evaluate `expr` in the kernel until pred(value) holds; returns the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = py_eval(page, expr)
        if pred(v) or time.monotonic() > deadline:
            return v
        time.sleep(0.2)


def canvas_stats(locator) -> dict:
    return locator.evaluate(CANVAS_STATS_JS)


def error_outputs(page) -> list[str]:
    """Text of error outputs (tracebacks) in the notebook."""
    loc = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], .jp-OutputArea-output.jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
    return [loc.nth(i).inner_text()[:2000] for i in range(loc.count())]

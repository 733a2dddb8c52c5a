"""Fixtures for the end-to-end browser tests: real JupyterLab 4 / Notebook 7 servers, offline headless Chromium.

Follows shared/reference/browser-tests.md: Debian's real chromium binary (never `playwright install`), one server
of each kind per session (SIGTERM to stop), a unique Lab workspace per test, kernel-idle wait before running,
every non-loopback request aborted and counted, websockets recorded, page errors and dialogs fail the test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

from nbdriver import ALLOWED_PAGE_ERRORS, LOOPBACK, REPO, JupyterServer, is_loopback, start_server, stop_server

ARTIFACTS = REPO / "test-artifacts"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


# ---------------------------------------------------------------- browser
# The browser is the session-wide `chromium` fixture of tests/conftest.py (one sync Playwright per thread):
# Debian's Chromium with the flags of the reference doc, no pytest-playwright needed.

VIEWPORT = {"width": 1400, "height": 2200}  # tall enough for the whole Explorer, so screenshots need no scrolling


# ---------------------------------------------------------------- Jupyter servers


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    srv = start_server("lab", tmp_path_factory.mktemp("jlab"))
    yield srv
    stop_server(srv.proc)


# @jupyter-widgets/jupyterlab-manager's "Save Jupyter widget state in notebooks" (off by default)
WIDGET_SAVE_STATE = {"@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True}}


@pytest.fixture(scope="session")
def lab_server_save_state(tmp_path_factory):
    """A separate JupyterLab that writes the live widget state into the notebook on every save (saveState: true)."""
    srv = start_server("lab", tmp_path_factory.mktemp("jlab-save"), user_settings=WIDGET_SAVE_STATE)
    yield srv
    stop_server(srv.proc)


@pytest.fixture(scope="session")
def nb_server(tmp_path_factory):
    srv = start_server("notebook", tmp_path_factory.mktemp("nb7"))
    yield srv
    stop_server(srv.proc)


# ---------------------------------------------------------------- an offline, watched page


@dataclass
class Watch:
    blocked: list = field(default_factory=list)  # non-loopback URLs aborted
    websockets: list = field(default_factory=list)
    page_errors: list = field(default_factory=list)
    dialogs: list = field(default_factory=list)
    console_errors: list = field(default_factory=list)

    def unexpected_page_errors(self) -> list:
        return [e for e in self.page_errors if not any(a in e for a in ALLOWED_PAGE_ERRORS)]

    def widget_console_errors(self) -> list:
        """Errors the widget caught and logged (its listeners log 'lmtt-widgets: ...' instead of throwing)."""
        return [m for m in self.console_errors if "lmtt-widgets" in m]

    def check(self) -> None:
        assert not self.dialogs, f"dialogs fired: {self.dialogs}"
        assert not self.unexpected_page_errors(), f"page errors: {self.unexpected_page_errors()}"
        assert not self.widget_console_errors(), f"widget errors in the console: {self.widget_console_errors()}"
        assert self.blocked == [], f"{len(self.blocked)} non-loopback requests: {self.blocked[:10]}"
        bad_ws = [u for u in self.websockets if urlparse(u).hostname not in LOOPBACK]
        assert not bad_ws, f"websockets off loopback: {bad_ws}"


@pytest.fixture
def watched_page(chromium, request):
    """A fresh context + page: non-loopback requests aborted and counted; websockets, page errors, dialogs recorded.

    The test fails at teardown on any dialog, unexpected page error, blocked request or off-loopback websocket.
    """
    ctx = chromium.new_context(viewport=VIEWPORT, device_scale_factor=1)
    watch = Watch()

    def route(r):
        if is_loopback(r.request.url):
            r.continue_()
        else:
            watch.blocked.append(r.request.url)
            r.abort()

    ctx.route("**/*", route)
    page = ctx.new_page()
    page.on("websocket", lambda ws: watch.websockets.append(ws.url))
    page.on("pageerror", lambda e: watch.page_errors.append(str(e)))

    def on_dialog(d):
        watch.dialogs.append(f"{d.type}: {d.message}")
        d.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda m: watch.console_errors.append(m.text) if m.type == "error" else None)
    page.watch = watch
    yield page
    try:
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"FAILED-{_slug(request.node.name)}.png"), full_page=False)
    except Exception:
        pass
    ctx.close()
    watch.check()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)[:80]


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


__all__ = ["JupyterServer", "Watch"]

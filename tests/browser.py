"""Headless Debian Chromium for the tests, launched as ../shared/reference/browser-tests.md prescribes (offline).

Playwright's sync API allows one instance per thread, so the whole session shares one browser (the `chromium`
fixture in tests/conftest.py); report and notebook tests open their own pages in it.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

CHROMIUM = os.environ.get("LMTT_CHROMIUM", "/usr/lib/chromium/chromium")
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]


def launch(playwright):
    """Debian's Chromium, headless; a clear error (never a skip) when it is missing."""
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (scripts/test.sh does it); "
                           "never `playwright install`")
    return playwright.chromium.launch(executable_path=CHROMIUM, chromium_sandbox=False, args=ARGS, headless=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def serve(directory: Path):
    """Serve `directory` on a free loopback port (module scripts do not load from file:// URLs)."""
    handler = functools.partial(_Quiet, directory=str(directory))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"

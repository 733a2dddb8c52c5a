"""Headless Debian Chromium for tests, launched as ../shared/reference/browser-tests.md prescribes (offline)."""

from __future__ import annotations

import contextlib
import shutil

CHROMIUM = "/usr/lib/chromium/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]


@contextlib.contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    if not shutil.os.path.exists(CHROMIUM):
        raise RuntimeError("Debian's chromium is missing: apt-get install -y chromium (scripts/test.sh does it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, chromium_sandbox=False, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()

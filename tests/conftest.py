import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded SmolLM2-135M-Instruct (converted once, then cached)."""
    from lmtt_widgets import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def smollm2_paris(smollm2):
    from lmtt_widgets import explain

    return explain(smollm2, "The capital of France is")


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the whole session (Playwright's sync API runs one instance per thread)."""
    from playwright.sync_api import sync_playwright

    from browser import launch

    with sync_playwright() as pw:
        browser = launch(pw)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)

"""examples/voice_agent.py in headless Chromium (Playwright, Debian's chromium): the page shows the avatar at
rest before anything is said, and a typed sentence makes the pictures change while its sound plays."""
from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import pytest

from tests.serving import serving

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "voice_agent.py"
CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_page_shows_the_avatar_at_rest_then_speaks_a_typed_sentence(white_backend, white_options):
    """(On the engine drawing white faces at no cost, so speech shows on a loaded machine.)"""
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    spec = importlib.util.spec_from_file_location("voice_agent", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    args = example.parse_args(["--avatar", "photo", "--models", white_options["models"], "--avatars",
                               white_options["avatars"], "--device", "cpu", "--batch-size",
                               str(white_options["batch_size"]), "--latency-budget-ms",
                               str(white_options["latency_budget_ms"]), "--max-sessions",
                               str(white_options["max_sessions"])])
    with serving(example.create_app(args)) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("window.agent.error || (window.agent.connected && window.agent.videoFrames >= 50)",
                                   timeout=90_000)
            at_rest = page.evaluate("({...window.agent})")
            assert at_rest["error"] is None
            assert at_rest["change"] < 2 and at_rest["changedWhileSounding"] == 0, at_rest
            assert white_backend.engine.sessions == 1
            page.click("#say")
            page.wait_for_function("window.agent.error || window.agent.changedWhileSounding >= 5", timeout=120_000)
            spoken = page.evaluate("({...window.agent})")
            assert spoken["error"] is None and spoken["changedWhileSounding"] >= 5, spoken
        finally:
            browser.close()
    deadline = time.monotonic() + 30
    while white_backend.engine.sessions:  # the bot's pipeline ends with the connection
        assert time.monotonic() < deadline, "the bot's session is still open after the page left"
        time.sleep(0.1)

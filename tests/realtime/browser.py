"""Headless Chromium for the page tests, driven by Playwright: the system package (no browser download), a
fake microphone fed from a WAV file, one fresh browser context (profile) and page per test.

The fixtures ``chromium`` (one browser per test session, its microphone playing ``speech``'s first 4 s)
and ``browser`` (a :class:`Page` of a fresh context, closed after the test) are registered in conftest.py.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = os.environ.get("MUSETALK_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
POLL_MS = 200


class Page:
    """One page of the browser: JavaScript evaluation, waits on conditions, screenshots, file inputs."""

    def __init__(self, page) -> None:
        self.page = page

    def goto(self, url: str) -> None:
        self.page.goto(url, wait_until="load")

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression (a promise is awaited)."""
        return self.page.evaluate(expression)

    def wait_for(self, expression: str, timeout: float):
        """Poll ``expression`` every 200 ms until it is truthy, up to ``timeout`` seconds; returns its value."""
        handle = self.page.wait_for_function(expression, timeout=timeout * 1000, polling=POLL_MS)
        return handle.json_value()

    def screenshot(self, clip: dict | None = None) -> bytes:
        """PNG bytes of the page (or of ``clip``: x, y, width, height in CSS pixels)."""
        return self.page.screenshot(clip=clip, type="png")

    def set_files(self, selector: str, paths: list[Path]) -> None:
        """Choose ``paths`` in the file input ``selector`` (its change event fires)."""
        self.page.set_input_files(selector, [str(p) for p in paths])


@contextlib.contextmanager
def launch(fake_audio: Path) -> Iterator[object]:
    """Headless system Chromium whose fake microphone plays ``fake_audio`` (a WAV file) in a loop."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*ARGS, f"--use-file-for-fake-audio-capture={fake_audio}"])
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def new_page(browser) -> Iterator[Page]:
    """A page in a fresh context (its own storage and permissions); closing it ends the page's sessions."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield Page(context.new_page())
    finally:
        context.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """``app`` served by uvicorn on a free port (in a thread) while inside; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

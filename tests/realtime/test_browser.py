"""The page in a real browser: headless Chromium (system package) with a fake microphone fed from a WAV
file, driven over the DevTools protocol; frames must arrive, be drawn, and show on a screenshot."""
from __future__ import annotations

import socket
import threading
import time

import cv2
import numpy as np
import pytest
import soundfile

from musetalk.realtime.server import create_app

from .cdp import Browser, chromium_binary


@pytest.fixture
def server_url(store, engine):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store, engine), host="127.0.0.1", port=port,
                                          log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path, speech):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    wav = tmp_path / "mic.wav"
    soundfile.write(wav, speech[: 16000 * 4], 16000, subtype="PCM_16")
    browser = Browser(binary, tmp_path / "profile", wav)
    yield browser
    browser.close()


CANVAS_RECT = ("(() => { const r = document.getElementById('view').getBoundingClientRect();"
               " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")


@pytest.mark.timeout(180)
def test_microphone_to_canvas(browser, server_url, tmp_path):
    browser.call("Page.enable")
    browser.call("Page.navigate", url=server_url + "/")
    assert browser.wait_for("document.querySelectorAll('#avatar option').length", 30) == 2
    browser.evaluate("document.getElementById('avatar').value = 'photo'")
    browser.evaluate("document.getElementById('mic-start').click()")
    stats = browser.wait_for("window.musetalk.error || (window.musetalk.drawn >= 5 && window.musetalk)", 90)
    assert isinstance(stats, dict), f"page error: {stats}"
    assert stats["sentBytes"] > 0 and stats["received"] >= stats["drawn"] >= 5
    browser.evaluate("document.getElementById('mic-stop').click()")
    final = browser.wait_for("window.musetalk.done && window.musetalk", 90)
    assert final["error"] is None and final["frames"] == final["received"] >= 5
    # all audio sent becomes frames: floor(seconds x 25) for sentBytes / 2 samples at 16 kHz
    assert final["frames"] == int(final["sentBytes"] / 2 / 16000 * 25)

    shot = cv2.imdecode(np.frombuffer(browser.screenshot(), np.uint8), cv2.IMREAD_COLOR)
    cv2.imwrite(str(tmp_path / "page.png"), shot)
    rect = browser.evaluate(CANVAS_RECT)
    assert (round(rect["width"]), round(rect["height"])) == (474, 266)  # resized to the avatar's frames
    canvas = cv2.imdecode(np.frombuffer(browser.screenshot(rect), np.uint8), cv2.IMREAD_COLOR)
    assert canvas.shape[:2] == (266, 474)
    assert canvas.std() > 20 and len(np.unique(canvas.reshape(-1, 3), axis=0)) > 1000, "canvas looks blank"
    status = browser.evaluate("document.getElementById('status').textContent")
    assert status.startswith("Done:"), status


@pytest.mark.timeout(120)
def test_wav_file_to_canvas(browser, server_url, tmp_path, speech):
    """A WAV file (44.1 kHz stereo here) chosen on the page is resampled, streamed and played with its frames."""
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, np.repeat(speech[: 16000][:, None], 2, axis=1), 16000, subtype="PCM_16")
    browser.call("Page.enable")
    browser.call("Page.navigate", url=server_url + "/")
    browser.wait_for("document.querySelectorAll('#avatar option').length", 30)
    browser.evaluate("document.getElementById('avatar').value = 'video'")
    browser.call("DOM.enable")
    node = browser.call("DOM.querySelector", nodeId=browser.call("DOM.getDocument")["root"]["nodeId"],
                        selector="#wav")["nodeId"]
    browser.call("DOM.setFileInputFiles", files=[str(clip)], nodeId=node)
    final = browser.wait_for("window.musetalk.error || (window.musetalk.done && window.musetalk.drawn > 0 && "
                             "window.musetalk)", 90)
    assert isinstance(final, dict), f"page error: {final}"
    assert final["frames"] == final["received"] == 25 and final["sentBytes"] == 32000
    size = browser.evaluate("(() => { const c = document.getElementById('view'); return [c.width, c.height]; })()")
    assert size == [576, 768]  # the canvas takes the avatar's frame size

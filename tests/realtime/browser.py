"""Headless Chromium for the page tests, driven by Playwright: the system package (no browser download), a
fake microphone fed from a WAV file, one fresh browser context (profile) and page per test.

The fixtures ``chromium`` (one browser per test session, its microphone playing ``speech``'s first 4 s)
and ``browser`` (a :class:`Page` of a fresh context, closed after the test) are registered in conftest.py.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.serving import free_port, serving  # noqa: F401 - serving: the page tests take it from here

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


@contextlib.contextmanager
def turn_server(folder: Path, user: str = "u", password: str = "p") -> Iterator[str]:
    """coturn on 127.0.0.1 (a free port, long-term credentials ``user``/``password``, relaying to loopback
    peers) while inside; yields its ``turn:`` URL (UDP). Stopped by its pid."""
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.skip("coturn is not installed (apt-get install coturn; .ci/run installs it)")
    port = free_port()
    log = open(folder / "turnserver.out", "wb")
    proc = subprocess.Popen(
        [binary, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
         "--allow-loopback-peers", "--no-tls", "--no-dtls", "--lt-cred-mech", f"--user={user}:{password}",
         "--realm=test", "--no-cli", f"--log-file={folder / 'turn.log'}", f"--pidfile={folder / 'turn.pid'}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:  # it listens on TCP and UDP at once: a TCP connection means it is up
            assert proc.poll() is None, f"turnserver exited: {(folder / 'turnserver.out').read_text()[-2000:]}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, "turnserver did not start listening in 30 s"
            time.sleep(0.1)
        yield f"turn:127.0.0.1:{port}?transport=udp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# Installed on a page (``Page.evaluate(video_probe())``): for every frame the <video id="video"> presents
# (requestVideoFrameCallback), the mean grey level of each 16x16 block of the picture, the frame's RTP
# timestamp, capture (sender's clock mapped by RTCP), receive and expected display times (performance
# clock, ms), the page's state, and the RMS of the audio playing then (a WebAudio analyser on the remote
# audio). ``window.probe.frames`` holds them; ``window.probe.take()`` returns and forgets them.
_VIDEO_PROBE = """(() => {
  const withBlocks = WITH_BLOCKS;
  const video = document.getElementById("video");
  const canvas = document.createElement("canvas");
  const block = 16;
  const frames = [];
  let analyser = null;
  const listen = () => {
    if (analyser || !video.srcObject || !video.srcObject.getAudioTracks().length) return;
    const ctx = new AudioContext();
    ctx.resume();
    analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    ctx.createMediaStreamSource(video.srcObject).connect(analyser);
  };
  const samples = new Float32Array(1024);
  const step = (now, meta) => {
    listen();
    let means = [], bw = 0, bh = 0;
    if (withBlocks) [means, bw, bh] = blockMeans();
    let rms = null;
    if (analyser) {
      analyser.getFloatTimeDomainData(samples);
      rms = Math.sqrt(samples.reduce((a, v) => a + v * v, 0) / samples.length);
    }
    frames.push({ blocks: means, bw, bh, rtp: meta.rtpTimestamp ?? null, capture: meta.captureTime ?? null,
                  receive: meta.receiveTime ?? null, display: meta.expectedDisplayTime,
                  presented: meta.presentedFrames, state: window.musetalk.state, rms });
    video.requestVideoFrameCallback(step);
  };
  const blockMeans = () => {
    const w = video.videoWidth, h = video.videoHeight;
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const g = canvas.getContext("2d", { willReadFrequently: true });
    g.drawImage(video, 0, 0, w, h);
    const px = g.getImageData(0, 0, w, h).data;
    const bw = Math.floor(w / block), bh = Math.floor(h / block);
    const means = new Array(bw * bh).fill(0);
    for (let y = 0; y < bh * block; y++) {
      const row = Math.floor(y / block) * bw;
      for (let x = 0; x < bw * block; x++) {
        const i = (y * w + x) * 4;
        means[row + Math.floor(x / block)] += (px[i] + px[i + 1] + px[i + 2]) / 3;
      }
    }
    return [means.map((m) => Math.round(m / (block * block))), bw, bh];
  };
  video.requestVideoFrameCallback(step);
  window.probe = { frames, take: () => frames.splice(0, frames.length) };
  return true;
})()"""


def video_probe(blocks: bool = True) -> str:
    """The probe's JavaScript (``blocks``: also the picture's 16x16 block means, costly at 720p)."""
    return _VIDEO_PROBE.replace("WITH_BLOCKS", "true" if blocks else "false")

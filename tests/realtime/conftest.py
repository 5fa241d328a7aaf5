"""Fixtures of the real-time tests: prepared tiny-model avatars, speech, a running engine."""
from __future__ import annotations

import numpy as np
import pytest

VIDEO_FRAMES = 4
MIC_SECONDS = 4


@pytest.fixture(scope="module")
def chromium(tmp_path_factory, speech):
    """Headless system Chromium (Playwright) whose fake microphone loops sun.wav's first 4 s; one per test
    module (Playwright's sync API stays out of the other modules' event loops)."""
    import soundfile

    from .browser import launch

    wav = tmp_path_factory.mktemp("browser") / "mic.wav"
    soundfile.write(wav, speech[: 16000 * MIC_SECONDS], 16000, subtype="PCM_16")
    with launch(wav) as browser:
        yield browser


@pytest.fixture
def browser(chromium):
    """A page of ``chromium`` in a fresh context (:class:`tests.realtime.browser.Page`), closed after the test."""
    from .browser import new_page

    with new_page(chromium) as page:
        yield page


@pytest.fixture(scope="session")
def speech(media) -> np.ndarray:
    """sun.wav as float32 mono 16 kHz (22.49 s)."""
    from musetalk.audio import load_audio

    return load_audio(media / "sun.wav")


@pytest.fixture(scope="session")
def store(tmp_path_factory, tiny_musetalk, media):
    """An avatars folder with "photo" (musk.png) and "video" (the first 4 frames of sun.mp4)."""
    from musetalk.realtime.avatars.store import AvatarStore, PrepareSettings

    store = AvatarStore(tmp_path_factory.mktemp("avatars"), tiny_musetalk)
    store.prepare(media / "musk.png", "photo")
    store.prepare(media / "sun.mp4", "video", PrepareSettings(max_frames=VIDEO_FRAMES))
    return store


@pytest.fixture(scope="module")
def engine(tiny_musetalk):
    from musetalk.realtime.engine.engine import Engine

    with Engine(tiny_musetalk, batch_size=8, capacity=4) as engine:
        yield engine


def uneven_chunks(samples: np.ndarray, seed: int = 0, largest: int = 7000):
    """``samples`` cut at random places into pieces of 1..largest samples."""
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(samples):
        n = int(rng.integers(1, largest + 1))
        yield samples[i : i + n]
        i += n


def fake_models(engine, generate_s: float = 0.0, fault=None, frame_s: float = 0.0, encode_s: float = 0.0):
    """Make ``engine`` skip the real models (so timing tests measure the scheduler, not a loaded CPU):
    zero whisper states after ``encode_s`` seconds per pass, and zero faces after ``generate_s`` seconds
    per call plus ``frame_s`` per frame. ``fault(stage, sessions)`` may raise to inject a fault into stage
    "encode" or "generate"."""
    import time

    def encode(planned):
        time.sleep(encode_s)
        if fault:
            fault("encode", [s for s, _ in planned])
        return [np.zeros((sum(p.num_states), 5, 384), np.float32) for _, (_, p) in planned]

    def generate(pairs):
        time.sleep(generate_s + frame_s * len(pairs))
        if fault:
            fault("generate", [s for s, _ in pairs])
        return [np.zeros((256, 256, 3), np.uint8) for _ in pairs]

    engine._encode_batch = encode
    engine._generate_batch = generate
    return engine


def feed_realtime(sessions, samples: np.ndarray, chunk_ms: int = 20) -> None:
    """Feed ``samples`` to every session in ``chunk_ms`` chunks at real-time pace, then end them."""
    import time

    chunk = 16 * chunk_ms
    start = time.perf_counter()
    for k, offset in enumerate(range(0, len(samples), chunk)):
        time.sleep(max(0.0, start + k * chunk_ms / 1000 - time.perf_counter()))
        for s in sessions:
            s.feed(samples[offset : offset + chunk])
    for s in sessions:
        s.end()


def wait_until(condition, timeout: float = 30.0) -> None:
    """Poll ``condition()`` until true; fail after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)

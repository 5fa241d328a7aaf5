"""Fixtures of the real-time tests: prepared tiny-model avatars, speech, a running engine."""
from __future__ import annotations

import numpy as np
import pytest

VIDEO_FRAMES = 4


@pytest.fixture(scope="session")
def speech(media) -> np.ndarray:
    """sun.wav as float32 mono 16 kHz (22.49 s)."""
    from musetalk.audio import load_audio

    return load_audio(media / "sun.wav")


@pytest.fixture(scope="session")
def store(tmp_path_factory, tiny_musetalk, media):
    """An avatars folder with "photo" (musk.png) and "video" (the first 4 frames of sun.mp4)."""
    from musetalk.realtime.avatar import AvatarStore, PrepareSettings

    store = AvatarStore(tmp_path_factory.mktemp("avatars"), tiny_musetalk)
    store.prepare(media / "musk.png", "photo")
    store.prepare(media / "sun.mp4", "video", PrepareSettings(max_frames=VIDEO_FRAMES))
    return store


@pytest.fixture(scope="module")
def engine(tiny_musetalk):
    from musetalk.realtime.engine import Engine

    with Engine(tiny_musetalk, batch_size=8) as engine:
        yield engine


def uneven_chunks(samples: np.ndarray, seed: int = 0, largest: int = 7000):
    """``samples`` cut at random places into pieces of 1..largest samples."""
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(samples):
        n = int(rng.integers(1, largest + 1))
        yield samples[i : i + n]
        i += n

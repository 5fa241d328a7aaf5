"""Short real clips for dubbing tests (tiny models keep them fast)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musetalk.video import VideoWriter, read_frames


def first_frames(path: Path, count: int) -> list[np.ndarray]:
    frames = []
    for frame in read_frames(path):
        frames.append(frame)
        if len(frames) == count:
            break
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fps: Fraction | float = 25) -> Path:
    with VideoWriter(path, frames[0].shape[1], frames[0].shape[0], fps, crf=12) as writer:
        for frame in frames:
            writer.write(frame)
    return path


@pytest.fixture(scope="session")
def sun_frames(media) -> list[np.ndarray]:
    """The first 40 frames of sun.mp4, uint8 (768, 576, 3) RGB."""
    return first_frames(media / "sun.mp4", 40)


@pytest.fixture(scope="session")
def clip40(tmp_path_factory, sun_frames) -> Path:
    """A 40-frame (1.6 s) 25 fps clip of sun.mp4."""
    return write_clip(tmp_path_factory.mktemp("clips") / "sun40.mp4", sun_frames)


@pytest.fixture(scope="session")
def clip10(tmp_path_factory, sun_frames) -> Path:
    """A 10-frame (0.4 s) 25 fps clip of sun.mp4."""
    return write_clip(tmp_path_factory.mktemp("clips") / "sun10.mp4", sun_frames[:10])


@pytest.fixture(scope="session")
def speech1s(tmp_path_factory, media) -> Path:
    """The first second of sun.wav (44.1 kHz mono)."""
    samples, rate = sf.read(media / "sun.wav", dtype="float32")
    path = tmp_path_factory.mktemp("audio") / "speech1s.wav"
    sf.write(path, samples[:rate], rate)
    return path


@pytest.fixture
def captured(monkeypatch):
    """Frames handed to the video encoder, in order (to check pixels before lossy compression)."""
    from musetalk.video.io import VideoWriter as Writer

    frames: list[np.ndarray] = []
    original = Writer.write

    def write(self, frame):
        frames.append(frame.copy())
        original(self, frame)

    monkeypatch.setattr(Writer, "write", write)
    return frames

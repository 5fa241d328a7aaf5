"""Shared clips for the evaluation tests: the first 100 frames (4 s) of sun.mp4, re-encoded, with sun.wav."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

FRAMES = 100


@pytest.fixture(scope="session")
def sun_frames(media: Path) -> list[np.ndarray]:
    from musetalk.video.io import read_frames

    return list(itertools.islice(read_frames(media / "sun.mp4"), FRAMES))


@pytest.fixture(scope="session")
def sun_audio(media: Path) -> np.ndarray:
    """float32 16 kHz, the first FRAMES / 25 s of sun.wav."""
    from musetalk.audio.load import load_audio

    return load_audio(media / "sun.wav")[:FRAMES * 640]


@pytest.fixture(scope="session")
def sun_records(sun_frames):
    from musetalk.face import FaceAnalyzer

    return FaceAnalyzer(backend="dlib", smooth=False).analyze_all(sun_frames)


def write_clip(path: Path, frames: list[np.ndarray], audio: np.ndarray | None = None) -> Path:
    from musetalk.video.io import VideoWriter

    height, width = frames[0].shape[:2]
    writer = VideoWriter(path, width, height, 25, audio=audio)
    for frame in frames:
        writer.write(frame)
    writer.close()
    return path


@pytest.fixture(scope="session")
def clip_writer():
    """``write_clip(path, frames, audio=None) -> path``: encode frames at 25 fps (audio 16 kHz)."""
    return write_clip


@pytest.fixture(scope="session")
def sun_clips(tmp_path_factory, sun_frames, sun_audio) -> tuple[Path, Path]:
    """(generated, source): the same 40 frames encoded twice; the generated one carries the audio."""
    folder = tmp_path_factory.mktemp("clips")
    frames = sun_frames[:40]
    source = write_clip(folder / "source.mp4", frames)
    generated = write_clip(folder / "generated.mp4", frames, sun_audio[:len(frames) * 640])
    return generated, source

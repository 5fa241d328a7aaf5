"""One local Ray instance (2 CPUs, no dashboard) for every distributed test, and short clips to dub."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.dub.conftest import first_frames, write_clip

CLIP_FRAMES = 3
DUB_SECONDS = 0.24  # 6 output frames at 25 fps: each 3-frame clip plays forward and backward


@pytest.fixture(scope="package")
def ray_local():
    """The local Ray instance of this folder's tests: started once, shut down after its last test."""
    from musetalk.distributed.cluster import connect

    ray = connect(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def sun18(media) -> list[np.ndarray]:
    """The first 18 frames of sun.mp4, uint8 (768, 576, 3) RGB."""
    return first_frames(media / "sun.mp4", 6 * CLIP_FRAMES)


@pytest.fixture(scope="session")
def clips(tmp_path_factory, sun18) -> list[Path]:
    """Six 3-frame clips cut one after another from sun.mp4."""
    folder = tmp_path_factory.mktemp("clips")
    return [write_clip(folder / f"clip{k}.mp4", sun18[k * CLIP_FRAMES : (k + 1) * CLIP_FRAMES]) for k in range(6)]


@pytest.fixture(scope="session")
def speech_short(tmp_path_factory, media) -> Path:
    """The first 0.24 s of sun.wav (44.1 kHz mono)."""
    samples, rate = sf.read(media / "sun.wav", dtype="float32")
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    sf.write(path, samples[: int(rate * DUB_SECONDS)], rate)
    return path

"""Fixtures of the face tests: the first frames of sun.mp4 and their analysis."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

NUM_FRAMES = 100


@pytest.fixture(scope="session")
def sun_frames(media) -> list[np.ndarray]:
    """The first 100 frames of sun.mp4, uint8 (768, 576, 3) RGB."""
    from musetalk.video.io import read_frames

    return list(itertools.islice(read_frames(media / "sun.mp4"), NUM_FRAMES))


@pytest.fixture(scope="session")
def sun_raw(sun_frames):
    """Records of ``sun_frames`` without smoothing (v1.5 defaults)."""
    from musetalk.face import FaceAnalyzer

    return FaceAnalyzer(smooth=False).analyze_all(sun_frames)


@pytest.fixture(scope="session")
def sun_smooth(sun_frames):
    """Records of ``sun_frames`` with the default smoothing."""
    from musetalk.face import FaceAnalyzer

    return FaceAnalyzer().analyze_all(sun_frames)

"""Cutting a dub into chunks: the spans, and the face-tracking warm-up of the default overlap."""
from __future__ import annotations

import numpy as np
import pytest

from musetalk.distributed.chunks import DEFAULT_OVERLAP, plan_chunks
from musetalk.errors import MuseTalkError
from musetalk.face import FaceAnalyzer
from musetalk.pipeline.dub import FrameSpan

from tests.dub.conftest import first_frames


def test_chunks_cover_every_frame_once_with_warm_up_before_each():
    assert plan_chunks(12, 5, overlap=4) == [FrameSpan(0, 5, 0), FrameSpan(5, 10, 4), FrameSpan(10, 12, 4)]
    assert plan_chunks(10, 5, overlap=50) == [FrameSpan(0, 5, 0), FrameSpan(5, 10, 5)]
    assert plan_chunks(3, 5) == [FrameSpan(0, 3, 0)]
    with pytest.raises(MuseTalkError, match="^chunks need at least 1 frame, got 0$"):
        plan_chunks(3, 0)


def test_default_warm_up_tracks_the_face_as_the_whole_video_does(media):
    """The tracker searches a window around its last box, so landmarks after the warm-up match the whole
    video's to within a pixel (not exactly), and crop boxes to within a few pixels."""
    start = DEFAULT_OVERLAP + 10
    frames = first_frames(media / "sun.mp4", start + 15)
    whole, chunk = FaceAnalyzer(fps=25), FaceAnalyzer(fps=25)
    expected = [whole.analyze(frame) for frame in frames][start:]
    warmed = [chunk.analyze(frame) for frame in frames[start - DEFAULT_OVERLAP :]][DEFAULT_OVERLAP:]
    landmarks = np.abs(np.stack([r.landmarks for r in warmed]) - np.stack([r.landmarks for r in expected]))
    boxes = np.abs(np.stack([r.crop_box for r in warmed]) - np.stack([r.crop_box for r in expected]))
    assert all(r.found for r in warmed)
    assert landmarks.max() < 1.5 and boxes.max() <= 4, (landmarks.max(), boxes.max())

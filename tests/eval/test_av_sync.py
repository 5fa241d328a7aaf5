"""The A/V offset on a clip that is in sync by construction: the first frame of sun.mp4 with its mouth opened
in proportion to the loudness of sun.wav (tests/eval/talking.py), with the audio shifted or not."""
from __future__ import annotations

import numpy as np
import pytest

from musetalk.eval import EvalPair, evaluate
from musetalk.eval.av_offset import estimate_offset, speech_envelope
from musetalk.face import FaceAnalyzer, mouth_opening

from .conftest import FRAMES
from .talking import loudness, talking_frames


@pytest.fixture(scope="module")
def talking(sun_frames, sun_audio) -> list[np.ndarray]:
    """FRAMES frames of a real face whose mouth opening follows sun.wav's speech envelope, frame by frame."""
    face = sun_frames[0]
    landmarks = FaceAnalyzer(backend="dlib", smooth=False).analyze_all([face])[0].landmarks
    return talking_frames(face, landmarks, loudness(sun_audio, 25.0, FRAMES))


@pytest.fixture(scope="module")
def mouth(talking) -> np.ndarray:
    """Mouth opening float (FRAMES,) measured by dlib on the talking frames."""
    records = FaceAnalyzer(backend="dlib", smooth=False).analyze_all(talking)
    assert all(r.found for r in records)
    return np.array([mouth_opening(r.landmarks) for r in records])


def delayed(audio: np.ndarray, frames: int) -> np.ndarray:
    """The audio played ``frames`` video frames (of 640 samples) later (earlier when negative), same length."""
    shifted = np.concatenate([np.zeros(max(frames, 0) * 640, np.float32), audio[max(-frames, 0) * 640:]])
    return np.pad(shifted, (0, max(len(audio) - len(shifted), 0)))[: len(audio)]


def test_in_sync_clip_has_offset_zero(mouth, sun_audio):
    av = estimate_offset(mouth, speech_envelope(sun_audio, 25.0, FRAMES))
    assert av.measurable and av.correlation > 0.7
    assert av.offset == pytest.approx(0.0, abs=0.5)


@pytest.mark.parametrize("shift", [-6, 3, 9])
def test_delaying_the_audio_lowers_the_offset_by_as_much(mouth, sun_audio, shift):
    """Audio k frames late -> offset -k (SyncNet's sign: positive when the audio leads the video)."""
    av = estimate_offset(mouth, speech_envelope(delayed(sun_audio, shift), 25.0, FRAMES))
    assert av.measurable and av.correlation > 0.6
    assert av.offset == pytest.approx(-shift, abs=0.5)


def test_evaluate_reads_the_offset_from_the_written_clip(talking, sun_audio, media, clip_writer, tmp_path):
    """End to end: the clip muxed with its audio 4 frames late, scored against the photo it could come from."""
    clip = clip_writer(tmp_path / "late.mp4", talking, delayed(sun_audio, 4))
    result = evaluate([EvalPair(clip, media / "musk.png", protocol="cross-audio")], identity=False,
                      models_dir=tmp_path)
    row = result.clips[0].row
    assert row["av_offset"] == pytest.approx(-4.0, abs=0.5) and row["av_corr"] > 0.6 and row["note"] is None
    assert result.mean["av_offset"] == row["av_offset"]
    assert result.mean["note"] == "AV offset measurable in 1 of 1 clips"

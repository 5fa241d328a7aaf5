"""Detection, tracking, landmarks, smoothing and no-face handling on the sample media."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from musetalk.face import FaceAnalyzer, FaceRecord, OneEuroFilter, jitter, paste_face, register_backend
from musetalk.face.landmarks import JAW, MOUTH
from musetalk.video.io import read_image


def test_face_on_every_sun_frame(sun_raw, sun_smooth):
    assert len(sun_raw) == len(sun_smooth) == 100
    assert all(r.found for r in sun_raw) and all(r.found for r in sun_smooth)


@pytest.mark.parametrize("name", ["musk.png", "monalisa.png", "sit.jpeg"])
def test_face_on_every_photo(media, name):
    image = read_image(media / name)
    rec = FaceAnalyzer().analyze(image)
    assert rec.found and rec.score > 0
    h, w = image.shape[:2]
    assert (rec.landmarks >= 0).all() and (rec.landmarks[:, 0] < w).all() and (rec.landmarks[:, 1] < h).all()
    assert 0 <= rec.crop_box[0] < rec.crop_box[2] <= w and 0 <= rec.crop_box[1] < rec.crop_box[3] <= h


def test_landmarks_inside_boxes(sun_raw):
    for rec in sun_raw:
        x1, y1, x2, y2 = rec.box
        pad = 0.25 * (x2 - x1)
        lm = rec.landmarks
        assert (lm[:, 0] > x1 - pad).all() and (lm[:, 0] < x2 + pad).all()
        assert (lm[:, 1] > y1 - pad).all() and (lm[:, 1] < y2 + pad).all()
        cx1, cy1, cx2, cy2 = rec.crop_box
        assert (lm[:, 0] >= cx1).all() and (lm[:, 0] < cx2 + 1).all()


@pytest.mark.parametrize("smoothed", [False, True])
def test_crop_box_contains_mouth_and_jaw(sun_raw, sun_smooth, smoothed):
    for rec in sun_smooth if smoothed else sun_raw:
        pts = rec.landmarks[np.concatenate([MOUTH, JAW])]
        x1, y1, x2, y2 = rec.crop_box
        assert (pts[:, 0] >= x1).all() and (pts[:, 0] < x2 + 1).all()
        assert (pts[:, 1] >= y1).all() and (pts[:, 1] < y2 - 10 + 1).all()  # v1.5: 10 px margin below the chin


def test_tracking_matches_full_detection(sun_frames, sun_raw):
    """Window tracking finds the same face as a fresh full-frame detection."""
    for i in (0, 50, 99):
        fresh = FaceAnalyzer(smooth=False).analyze(sun_frames[i])
        assert np.abs(fresh.landmarks - sun_raw[i].landmarks).mean() < 3.0


def test_smoothing_reduces_jitter(sun_raw, sun_smooth):
    raw = jitter(np.stack([r.crop_box for r in sun_raw]))
    smooth = jitter(np.stack([r.crop_box for r in sun_smooth]))
    assert smooth < 0.5 * raw
    lag = np.abs(np.stack([r.landmarks for r in sun_smooth]) - np.stack([r.landmarks for r in sun_raw]))
    assert lag.mean() < 1.5


def test_one_euro_follows_fast_motion_without_lag():
    still, fast = OneEuroFilter(min_cutoff_hz=0.5, beta=8.0), OneEuroFilter(min_cutoff_hz=0.5, beta=8.0)
    rng = np.random.default_rng(0)
    noisy = [still(np.array([100.0]) + rng.normal(0, 1.0), scale=150.0) for _ in range(100)]
    assert np.std(noisy[20:]) < 0.5
    track = [fast(np.array([20.0 * t]), scale=150.0) for t in range(30)]
    assert abs(track[-1][0] - 20.0 * 29) < 10.0  # < half a frame of motion behind at 20 px/frame


def test_face_painted_over_is_flagged_and_passed_through(sun_frames):
    """Painted over for 6 frames (longer than the 5 that are interpolated): flagged and passed through."""
    frames = [f.copy() for f in sun_frames[:16]]
    rec5 = FaceAnalyzer().analyze(frames[5])
    x1, y1, x2, y2 = rec5.crop_box
    for frame in frames[5:11]:
        frame[max(0, y1 - 60):y2 + 40, max(0, x1 - 40):x2 + 40] = (200, 60, 60)
    recs = FaceAnalyzer().analyze_all(frames)
    assert len(recs) == 16
    assert [r.found for r in recs] == [True] * 5 + [False] * 6 + [True] * 5
    assert not recs[5].crop_box.any()
    out = paste_face(frames[5], np.zeros((256, 256, 3), np.uint8), recs[5], None)
    assert np.array_equal(out, frames[5])
    later = FaceAnalyzer(smooth=False).analyze(frames[11])
    assert np.abs(recs[11].landmarks - later.landmarks).mean() < 3.0  # alignment after the gap unchanged


def _two_faces(frame: np.ndarray) -> np.ndarray:
    """A 600x1000 canvas with the sun face at full size (left) and at 70% (right)."""
    head = frame[120:420, 130:430]
    canvas = np.full((600, 1000, 3), 90, np.uint8)
    canvas[50:350, 50:350] = head
    small = cv2.resize(head, (210, 210), interpolation=cv2.INTER_AREA)
    canvas[100:310, 700:910] = small
    return canvas


@pytest.mark.parametrize("face_index,side", [(0, "left"), (1, "right")])
def test_multiple_faces_follow_the_chosen_one(sun_frames, face_index, side):
    frames = [_two_faces(f) for f in sun_frames[:5]]
    recs = FaceAnalyzer(face_index=face_index).analyze_all(frames)
    centres = [(r.box[0] + r.box[2]) / 2 for r in recs]
    assert all(r.found for r in recs)
    assert all((c < 500) == (side == "left") for c in centres)


def test_face_index_beyond_faces_gives_no_face(sun_frames):
    assert not FaceAnalyzer(face_index=3).analyze(sun_frames[0]).found


class _FixedBackend:
    """A plug-in backend: always the same box and a grid of points."""

    name = "fixed"

    def detect(self, image, upsample=0):
        return np.array([[100, 100, 200, 200]], np.float32), np.array([1.0], np.float32)

    def landmarks(self, image, box):
        return np.stack(np.meshgrid(np.linspace(110, 190, 17), np.linspace(110, 190, 4)), -1).reshape(-1, 2)[:68]


def test_backend_plugs_in(sun_frames):
    register_backend("fixed", _FixedBackend)
    rec = FaceAnalyzer(backend="fixed").analyze(sun_frames[0])
    assert rec.found and rec.crop_box.tolist()[0] == 110
    assert isinstance(rec, FaceRecord)


def test_rejects_non_rgb_frames():
    from musetalk.errors import FaceError

    with pytest.raises(FaceError):
        FaceAnalyzer().analyze(np.zeros((10, 10), np.uint8))

"""The official crop rule, bbox_shift, extra_margin and the crop stack."""
from __future__ import annotations

import numpy as np
import pytest

from musetalk.errors import FaceError
from musetalk.face import (FaceAnalyzer, FaceRecord, bbox_shift_range, crop_box_from_landmarks, crop_face,
                           crop_faces, mouth_opening)


def _official(lm: np.ndarray, shift: int) -> tuple[int, int, int, int]:
    lm = lm.astype(np.int32)
    mid = lm[29, 1] + shift
    y2 = lm[:, 1].max()
    return int(lm[:, 0].min()), int(max(0, mid - (y2 - mid))), int(lm[:, 0].max()), int(y2)


def test_crop_box_is_the_official_rule(sun_raw):
    for rec in sun_raw[:20]:
        x1, y1, x2, y2 = _official(rec.landmarks, 0)
        assert rec.crop_box.tolist() == [x1, y1, x2, y2 + 10]  # v1.5 adds extra_margin below
        v10 = crop_box_from_landmarks(rec.landmarks, rec.box, (768, 576), "v1.0", bbox_shift=7)
        assert v10.tolist() == list(_official(rec.landmarks, 7))


def test_bbox_shift_moves_the_boundary_down_when_positive(sun_raw):
    rec = sun_raw[0]
    boxes = {s: crop_box_from_landmarks(rec.landmarks, rec.box, (768, 576), "v1.0", bbox_shift=s)
             for s in (-5, 0, 5)}
    middle = {s: (b[1] + b[3]) / 2 for s, b in boxes.items()}
    assert middle[-5] == middle[0] - 5 and middle[5] == middle[0] + 5
    assert all(b[3] == boxes[0][3] for b in boxes.values())  # the chin edge stays
    v15 = crop_box_from_landmarks(rec.landmarks, rec.box, (768, 576), "v1.5", bbox_shift=5)
    assert v15.tolist() == crop_box_from_landmarks(rec.landmarks, rec.box, (768, 576), "v1.5").tolist()


def test_extra_margin_and_clipping(sun_raw):
    rec = sun_raw[0]
    a = crop_box_from_landmarks(rec.landmarks, rec.box, (768, 576), "v1.5", extra_margin=0)
    b = crop_box_from_landmarks(rec.landmarks, rec.box, (768, 576), "v1.5", extra_margin=25)
    assert b[3] - a[3] == 25 and b[:3].tolist() == a[:3].tolist()
    tight = crop_box_from_landmarks(rec.landmarks, rec.box, (int(a[3]) + 3, 576), "v1.5", extra_margin=25)
    assert tight[3] == a[3] + 3


def test_degenerate_landmarks_fall_back_to_the_detector_box():
    lm = np.zeros((68, 2), np.float32)
    lm[:, 0] = -5.0
    box = crop_box_from_landmarks(lm, np.array([10, 20, 110, 140], np.float32), (400, 400), "v1.0")
    assert box.tolist() == [10, 20, 110, 140]


def test_bbox_shift_range_sign(sun_raw):
    lo, hi = bbox_shift_range(sun_raw)
    assert lo < 0 < hi
    assert bbox_shift_range([FaceRecord.missing()]) == (0, 0)


def test_crop_stack(sun_frames, sun_raw):
    crop = crop_face(sun_frames[0], sun_raw[0])
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    records = [sun_raw[0], FaceRecord.missing(), sun_raw[2]]
    stack = crop_faces(sun_frames[:3], records)
    assert stack.shape == (2, 256, 256, 3)
    assert np.array_equal(stack[0], crop)
    with pytest.raises(FaceError):
        crop_face(sun_frames[1], FaceRecord.missing())


def test_unknown_version_is_a_user_error():
    with pytest.raises(FaceError):
        FaceAnalyzer(version="v2")


def test_mouth_opening(sun_raw):
    values = [mouth_opening(r.landmarks) for r in sun_raw]
    assert all(0.0 <= v < 0.3 for v in values)
    assert max(values) > min(values)  # she talks
    lm = sun_raw[0].landmarks.copy()
    lm[[65, 66, 67], 1] += 20
    assert mouth_opening(lm) > mouth_opening(sun_raw[0].landmarks)

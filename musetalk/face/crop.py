"""The official crop rule (landmark box, ``bbox_shift``, v1.5 ``extra_margin``) and the 256x256 crops."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..errors import FaceError
from .landmarks import BRIDGE_MID, BRIDGE_UPPER, NOSE_TIP
from .types import FaceRecord

CROP_SIZE = 256
VERSIONS = ("v1.5", "v1.0")


def crop_box_from_landmarks(landmarks: np.ndarray, detector_box: np.ndarray, frame_shape: Sequence[int],
                            version: str = "v1.5", bbox_shift: int = 0, extra_margin: int = 10) -> np.ndarray:
    """int32 (4,) x1, y1, x2, y2 of the crop, as the official preprocessing builds it.

    Landmarks are truncated to integer pixels; y_mid = y(point 29) + bbox_shift (v1.0 only; v1.5 uses 0);
    y2 = lowest point, y1 = max(0, 2 * y_mid - y2), x1/x2 = leftmost/rightmost point. A degenerate box falls
    back to the detector box. v1.5 then adds ``extra_margin`` pixels below. The box is clipped to the frame.
    """
    if version not in VERSIONS:
        raise FaceError(f"unknown MuseTalk version {version!r}: use one of {VERSIONS}")
    lm = np.floor(np.asarray(landmarks, np.float64)).astype(np.int64)
    shift = 0 if version == "v1.5" else int(bbox_shift)
    y_mid = lm[BRIDGE_MID, 1] + shift
    y2 = lm[:, 1].max()
    y1 = max(0, y_mid - (y2 - y_mid))
    x1, x2 = lm[:, 0].min(), lm[:, 0].max()
    if y2 <= y1 or x2 <= x1 or x1 < 0:
        x1, y1, x2, y2 = (int(v) for v in np.floor(np.asarray(detector_box, np.float64)))
    if version == "v1.5":
        y2 += int(extra_margin)
    height, width = int(frame_shape[0]), int(frame_shape[1])
    box = np.array([np.clip(x1, 0, width), np.clip(y1, 0, height), np.clip(x2, 0, width), np.clip(y2, 0, height)])
    return box.astype(np.int32)


def bbox_shift_range(records: Sequence[FaceRecord]) -> tuple[int, int]:
    """The useful ``bbox_shift`` range the official code prints: (-mean(y30 - y29), mean(y29 - y28)),
    over the frames with a face, truncated to int. (0, 0) without any face."""
    lms = [np.floor(r.landmarks).astype(np.int64) for r in records if r.found]
    if not lms:
        return 0, 0
    minus = np.mean([lm[NOSE_TIP, 1] - lm[BRIDGE_MID, 1] for lm in lms])
    plus = np.mean([lm[BRIDGE_MID, 1] - lm[BRIDGE_UPPER, 1] for lm in lms])
    return -int(minus), int(plus)


def crop_face(frame: np.ndarray, rec: FaceRecord, size: int = CROP_SIZE) -> np.ndarray:
    """uint8 (size, size, 3) RGB: ``frame[y1:y2, x1:x2]`` of ``rec.crop_box`` resized with Lanczos-4."""
    if not rec.found:
        raise FaceError("no face in this frame to crop: skip frames whose FaceRecord has found=False")
    x1, y1, x2, y2 = (int(v) for v in rec.crop_box)
    if x2 <= x1 or y2 <= y1:
        raise FaceError(f"empty crop box {rec.crop_box.tolist()}: the face lies outside the frame")
    return cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_LANCZOS4)


def crop_faces(frames: Sequence[np.ndarray], records: Sequence[FaceRecord], size: int = CROP_SIZE) -> np.ndarray:
    """The crop stack: uint8 (M, size, size, 3) RGB of the frames with a face (found=True), in order."""
    crops = [crop_face(f, r, size) for f, r in zip(frames, records) if r.found]
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)

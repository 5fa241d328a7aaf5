"""Blend masks: which part of the expanded face box the generated face replaces, feathered as the official
blend does (limited to the crop box, lower half of the expanded box only, Gaussian feather ~5% of its size).
The default region comes from the landmarks (no extra weights); a :class:`FaceParser` gives the official one."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..errors import FaceError
from .landmarks import BROWS, JAW, NOSE
from .modes import DEFAULT_BLEND_MODE, MODES
from .parsing import FaceParser
from .types import BlendMask, FaceRecord

EXPAND = 1.5
UPPER_BOUNDARY_RATIO = 0.5
BLUR_RATIO = 0.05
# Downward growth of the landmark jaw line, as a fraction of the expanded box side, per mode.
_GROW = {"raw": 0.0, "jaw": 0.03, "neck": 0.15}
_NOSE_PAD = 0.015


def expanded_box(crop_box: np.ndarray, expand: float = EXPAND) -> np.ndarray:
    """int64 (4,) square box around the crop box's centre, half side int(max(w, h) // 2 * expand),
    as the official blend builds it (may reach outside the frame)."""
    x1, y1, x2, y2 = (int(v) for v in crop_box)
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    half = int(max(x2 - x1, y2 - y1) // 2 * expand)
    return np.array([cx - half, cy - half, cx + half, cy + half], np.int64)


def landmark_region(landmarks: np.ndarray, box: np.ndarray, mode: str = DEFAULT_BLEND_MODE) -> np.ndarray:
    """uint8 (h, w) 0/255 over ``box`` (x1, y1, x2, y2): the face outline (jaw and brows), the jaw line
    grown downwards by the mode's amount, without the nose (which the official parsing masks also keep)."""
    if mode not in _GROW:
        raise FaceError(f"unknown blend mask mode {mode!r}: use one of {MODES}")
    side = int(box[2] - box[0])
    pts = np.asarray(landmarks, np.float64) - box[:2]
    grown = pts[JAW] + [0.0, _GROW[mode] * side]
    region = np.zeros((int(box[3] - box[1]), side), np.uint8)
    face = cv2.convexHull(np.concatenate([pts[JAW], pts[BROWS], grown]).astype(np.int32))
    cv2.fillConvexPoly(region, face, 255)
    nose = cv2.convexHull(pts[NOSE].astype(np.int32))
    nose_region = np.zeros_like(region)
    cv2.fillConvexPoly(nose_region, nose, 255)
    pad = max(1, int(_NOSE_PAD * side))
    nose_region = cv2.dilate(nose_region, np.ones((2 * pad + 1, 2 * pad + 1), np.uint8))
    return np.where(nose_region > 0, 0, region).astype(np.uint8)


def _padded_crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """frame[box] with black outside the frame (like PIL's crop), uint8 (h, w, 3)."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box)
    pads = ((max(0, -y1), max(0, y2 - h)), (max(0, -x1), max(0, x2 - w)), (0, 0))
    inner = frame[max(0, y1):min(h, y2), max(0, x1):min(w, x2)]
    return np.pad(inner, pads)


def _feather(region: np.ndarray, crop_box: np.ndarray, box: np.ndarray, upper_boundary_ratio: float,
             blur_ratio: float) -> np.ndarray:
    """float32 [0, 1]: region kept inside the crop box and below the upper boundary, Gaussian-blurred."""
    kept = np.zeros(region.shape, np.float32)
    cx1, cy1, cx2, cy2 = (int(v) for v in (crop_box - np.tile(box[:2], 2)))
    top = max(cy1, int(region.shape[0] * upper_boundary_ratio))
    kept[top:cy2, cx1:cx2] = region[top:cy2, cx1:cx2] / 255.0
    k = int(blur_ratio * region.shape[0] // 2 * 2) + 1
    return cv2.GaussianBlur(kept, (k, k), 0) if k > 1 else kept


def make_blend_mask(frame_shape: Sequence[int], rec: FaceRecord, mode: str = DEFAULT_BLEND_MODE, *,
                    parser: FaceParser | None = None, frame: np.ndarray | None = None,
                    expand: float = EXPAND, upper_boundary_ratio: float = UPPER_BOUNDARY_RATIO,
                    blur_ratio: float = BLUR_RATIO) -> BlendMask:
    """Blend mask of one frame. ``mode``: "jaw" (v1.5 default), "raw" (v1.0) or "neck".

    From the landmarks by default; with ``parser`` (and the RGB ``frame``) from BiSeNet parsing of the
    expanded box. ``blur_ratio``: feather kernel as a fraction of the expanded box side (0.05 offline,
    0.1 for the official real-time preparation).
    """
    if not rec.found:
        raise FaceError("no face in this frame to blend: pass frames with found=False through unchanged")
    box = expanded_box(rec.crop_box, expand)
    if parser is not None:
        if frame is None:
            raise FaceError("a parsing blend mask needs the frame: call make_blend_mask(..., frame=frame)")
        region = parser.region(_padded_crop(frame, box), mode)
    else:
        region = landmark_region(rec.landmarks, box, mode)
    weights = _feather(region, rec.crop_box, box, upper_boundary_ratio, blur_ratio)
    h, w = int(frame_shape[0]), int(frame_shape[1])
    clipped = np.array([max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])], np.int64)
    sub = weights[clipped[1] - box[1]:clipped[3] - box[1], clipped[0] - box[0]:clipped[2] - box[0]]
    return BlendMask(box=clipped.astype(np.int32), mask=sub)

"""A picture of what the face analysis decided, for a person to check by eye."""
from __future__ import annotations

import cv2
import numpy as np

from .types import BlendMask, FaceRecord

DETECTOR_COLOUR = (60, 120, 255)  # blue: detector box
CROP_COLOUR = (40, 220, 40)  # green: crop box (the 256x256 crop)
MASK_BOX_COLOUR = (255, 220, 0)  # yellow: expanded blend box
MASK_TINT = np.array([255, 40, 40], np.float32)  # red: blend weights
POINT_COLOUR = (255, 255, 255)


def draw_debug_overlay(frame: np.ndarray, rec: FaceRecord, mask: BlendMask | None = None) -> np.ndarray:
    """uint8 (H, W, 3) RGB copy of ``frame`` with the blend mask tinted red, the expanded box (yellow),
    the crop box (green), the detector box (blue) and the 68 landmarks (white); "no face" when not found."""
    out = frame.copy()
    thick = max(1, round(max(frame.shape[:2]) / 400))
    if not rec.found:
        cv2.putText(out, "no face", (10, 30 * thick), cv2.FONT_HERSHEY_SIMPLEX, thick, (255, 0, 0), 2 * thick)
        return out
    if mask is not None:
        x1, y1, x2, y2 = (int(v) for v in mask.box)
        alpha = 0.5 * mask.mask[..., None]
        region = out[y1:y2, x1:x2].astype(np.float32)
        out[y1:y2, x1:x2] = np.rint(region + alpha * (MASK_TINT - region)).astype(np.uint8)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), MASK_BOX_COLOUR, thick)
    bx = np.rint(rec.box).astype(int)
    cv2.rectangle(out, (int(bx[0]), int(bx[1])), (int(bx[2]) - 1, int(bx[3]) - 1), DETECTOR_COLOUR, thick)
    cx = rec.crop_box.astype(int)
    cv2.rectangle(out, (int(cx[0]), int(cx[1])), (int(cx[2]) - 1, int(cx[3]) - 1), CROP_COLOUR, thick)
    for x, y in np.rint(rec.landmarks).astype(int):
        cv2.circle(out, (int(x), int(y)), thick + 1, POINT_COLOUR, -1)
    return out

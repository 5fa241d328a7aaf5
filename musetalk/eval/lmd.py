"""LMD: mean distance between the mouth landmarks (points 48..67) of generated and source frames.

Both point sets are mapped into the source frame's 256 x 256 face crop, so LMD is in crop pixels and does
not depend on the video resolution."""
from __future__ import annotations

import numpy as np

from ..face.landmarks import MOUTH

CROP_SIZE = 256


def to_crop(landmarks: np.ndarray, crop_box: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """float (..., 2) x, y frame pixels -> pixels of the ``size`` x ``size`` crop of int (4,) ``crop_box``."""
    x1, y1, x2, y2 = np.asarray(crop_box, dtype=np.float64)
    scale = np.array([size / max(x2 - x1, 1.0), size / max(y2 - y1, 1.0)])
    return (np.asarray(landmarks, dtype=np.float64) - [x1, y1]) * scale


def frame_lmd(source: np.ndarray, generated: np.ndarray, crop_box: np.ndarray) -> float:
    """LMD of one frame: float (68, 2) source and generated landmarks, the source's crop box."""
    a = to_crop(source[MOUTH], crop_box)
    b = to_crop(generated[MOUTH], crop_box)
    return float(np.linalg.norm(a - b, axis=1).mean())

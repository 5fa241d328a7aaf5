"""iBUG-68 landmark layout (the one dlib, FAN and DWPose's face part use) and measures on it."""
from __future__ import annotations

import numpy as np

JAW = np.arange(0, 17)
BROWS = np.arange(17, 27)
NOSE = np.arange(27, 36)
MOUTH = np.arange(48, 68)
# Points of the crop rule: 28 upper and 29 lower nose bridge, 30 nose tip.
BRIDGE_UPPER, BRIDGE_MID, NOSE_TIP = 28, 29, 30
CHIN = 8


def mouth_opening(landmarks: np.ndarray) -> float:
    """Inner-lip opening (mean gap of points 61-67, 62-66, 63-65) divided by face height
    (brow top to chin). 0 for a closed mouth, about 0.1-0.2 wide open."""
    lm = np.asarray(landmarks, dtype=np.float64)
    gap = np.mean(lm[[67, 66, 65], 1] - lm[[61, 62, 63], 1])
    height = lm[CHIN, 1] - lm[BROWS, 1].min()
    if height <= 0:
        return 0.0
    return float(max(gap, 0.0) / height)


def landmarks_box(landmarks: np.ndarray) -> np.ndarray:
    """float32 (4,) x1, y1, x2, y2 bounding box of the points."""
    lm = np.asarray(landmarks, dtype=np.float32)
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()], np.float32)

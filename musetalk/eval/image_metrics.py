"""PSNR and SSIM between aligned source and generated frames, on the face region and the mouth region
(reconstruction protocol). Regions come from the source frame's landmarks and are used on both frames."""
from __future__ import annotations

import cv2
import numpy as np

from ..face.landmarks import MOUTH

PSNR_CAP_DB = 100.0
MOUTH_MARGIN = 0.2


def psnr(a: np.ndarray, b: np.ndarray, cap: float = PSNR_CAP_DB) -> float:
    """PSNR in dB of two uint8 images of one shape (peak 255), capped at ``cap`` (identical images)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    if mse == 0:
        return cap
    return float(min(cap, 10 * np.log10(255.0 ** 2 / mse)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004: Gaussian window sigma 1.5 over 11 x 11, K1 0.01, K2 0.03, peak 255) of two
    uint8 (H, W) or (H, W, C) images, averaged over pixels and channels; 1 for identical images."""
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    value = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(value.mean())


def mouth_box(landmarks: np.ndarray, shape: tuple[int, ...], margin: float = MOUTH_MARGIN) -> np.ndarray:
    """int (4,) x1, y1, x2, y2 (exclusive) around points 48..67 of float (68, 2) landmarks, grown by
    ``margin`` x the mouth width on every side, clipped to a frame of ``shape`` (H, W, ...)."""
    pts = landmarks[MOUTH]
    (x1, y1), (x2, y2) = pts.min(axis=0), pts.max(axis=0)
    pad = margin * (x2 - x1)
    box = np.array([x1 - pad, y1 - pad, x2 + pad + 1, y2 + pad + 1])
    return np.clip(np.round(box), 0, [shape[1], shape[0], shape[1], shape[0]]).astype(int)


def region(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The pixels of ``frame`` inside int box x1, y1, x2, y2 (exclusive)."""
    return frame[box[1]:box[3], box[0]:box[2]]


def region_scores(source: np.ndarray, generated: np.ndarray, box: np.ndarray) -> tuple[float, float]:
    """(PSNR dB, SSIM) of two frames inside ``box``."""
    a, b = region(source, box), region(generated, box)
    return psnr(a, b), ssim(a, b)

"""Paste a generated 256x256 face back into its frame through a :class:`BlendMask`."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import FaceError
from .types import BlendMask, FaceRecord

# Limits of the per-channel contrast change of colour matching.
_STD_RATIO = (0.5, 2.0)


def match_colour(face: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``face`` (uint8 (h, w, 3) RGB) with the weighted Lab mean/std of ``target`` (same shape) under
    ``weights`` (float (h, w), >= 0): removes colour casts of the generated face."""
    w = weights.astype(np.float64)[..., None]
    if w.sum() < 1.0:
        return face
    src = cv2.cvtColor(face.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).astype(np.float64)
    dst = cv2.cvtColor(target.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).astype(np.float64)
    total = w.sum()
    mu_s, mu_d = (src * w).sum((0, 1)) / total, (dst * w).sum((0, 1)) / total
    sd_s = np.sqrt(((src - mu_s) ** 2 * w).sum((0, 1)) / total) + 1e-6
    sd_d = np.sqrt(((dst - mu_d) ** 2 * w).sum((0, 1)) / total)
    ratio = np.clip(sd_d / sd_s, *_STD_RATIO)
    out = ((src - mu_s) * ratio + mu_d).astype(np.float32)
    rgb = cv2.cvtColor(out, cv2.COLOR_LAB2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def paste_face(frame: np.ndarray, face: np.ndarray, rec: FaceRecord, mask: BlendMask | None,
               colour_match: bool = False) -> np.ndarray:
    """New frame (uint8 (H, W, 3) RGB) with ``face`` (uint8 (S, S, 3) RGB, usually 256x256) resized
    (bilinear) into ``rec.crop_box`` and alpha-blended with ``mask``. Pixels outside ``mask.box``, and
    wherever the mask is 0, are bit-identical to ``frame``. Frames without a face (``rec.found`` False,
    ``mask`` may be None) come back unchanged. ``colour_match`` applies :func:`match_colour` first."""
    out = frame.copy()
    if not rec.found:
        return out
    if mask is None:
        raise FaceError("paste_face needs the BlendMask of this frame: build it with make_blend_mask")
    mx1, my1, mx2, my2 = (int(v) for v in mask.box)
    x1, y1, x2, y2 = (int(v) for v in rec.crop_box)
    if x2 <= x1 or y2 <= y1 or mask.mask.shape != (my2 - my1, mx2 - mx1):
        raise FaceError(f"crop box {rec.crop_box.tolist()} / mask box {mask.box.tolist()} do not fit the frame")
    resized = cv2.resize(face, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    background = frame[my1:my2, mx1:mx2]
    weights = mask.mask
    ix1, iy1, ix2, iy2 = max(x1, mx1), max(y1, my1), min(x2, mx2), min(y2, my2)
    face_large = background.copy()
    part = resized[iy1 - y1:iy2 - y1, ix1 - x1:ix2 - x1]
    if colour_match:
        region = (slice(iy1 - my1, iy2 - my1), slice(ix1 - mx1, ix2 - mx1))
        part = match_colour(part, background[region], weights[region])
    face_large[iy1 - my1:iy2 - my1, ix1 - mx1:ix2 - mx1] = part
    # face x w + background x (1 - w), rounded: one OpenCV pass that releases the GIL (12x the float32
    # NumPy expression it replaces on a 618x618 box at 720p, the same pixels; bench/realtime.py --cpu-frame)
    out[my1:my2, mx1:mx2] = cv2.blendLinear(face_large, background, weights, 1 - weights)
    return out

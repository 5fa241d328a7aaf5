"""A frame's last stage: the generated face pasted into its avatar source frame (and mixed with rest)."""
from __future__ import annotations

import numpy as np


def composite(avatar, source: int, face: np.ndarray | None) -> np.ndarray:
    """Source frame ``source`` of ``avatar`` with ``face`` (uint8 (256, 256, 3) RGB, None: none) pasted in:
    uint8 (H, W, 3) RGB (a copy of the source frame without a face)."""
    from ...face import paste_face

    frame = np.asarray(avatar.frames[source])
    if face is None:
        return frame.copy()
    return paste_face(frame, face, avatar.records[source], avatar.mask(source))


def blend_with_rest(avatar, source: int, image: np.ndarray, speech: float) -> np.ndarray:
    """``image`` (uint8 (H, W, 3) RGB, a composite of source frame ``source``) mixed with the unaltered
    source frame: ``speech`` of the image, the rest of the source, rounded to uint8."""
    rest = np.asarray(avatar.frames[source], dtype=np.float32)
    return np.rint(rest + speech * (image.astype(np.float32) - rest)).astype(np.uint8)

"""JPEG in memory: uint8 (H, W, 3) RGB images to and from JPEG bytes (OpenCV)."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import VideoError


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """uint8 (H, W, 3) RGB -> JPEG bytes at ``quality`` (1..100)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise VideoError(f"JPEG encoding of a {image.shape} image failed: give uint8 (H, W, 3) RGB")
    return buf.tobytes()


def decode_jpeg(data: bytes | memoryview | np.ndarray) -> np.ndarray:
    """JPEG bytes -> uint8 (H, W, 3) RGB (the same pixels on every call)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise VideoError("cannot decode a stored JPEG image: the file is damaged; prepare the avatar again")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

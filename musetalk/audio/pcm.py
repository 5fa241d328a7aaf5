"""PCM s16 and float samples: the one conversion of every wire format (WebSocket, WebRTC, Pipecat, RTMP)."""
from __future__ import annotations

import numpy as np


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 (N,) in [-1, 1] -> int16 (N,) little-endian: x 32768, rounded, clipped to [-32768, 32767]."""
    return np.clip(np.round(np.asarray(samples, np.float32) * 32768.0), -32768, 32767).astype("<i2")


def from_pcm16(data: bytes) -> np.ndarray:
    """s16le bytes (an even count) -> float32 (N,) in [-1, 1): / 32768."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0

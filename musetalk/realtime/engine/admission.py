"""Admission control: how many speaking sessions the engine sustains, and who gets in.

Capacity counts speaking sessions at 25 fps within the latency budget. An idle live session (issue 15)
sends the avatar's cached source frames and costs no model call, so it counts as ``IDLE_SHARE`` of a
speaking one. Without ``--max-sessions``, :func:`calibrate` measures the capacity at start-up from the
cost of one batched generation and one whisper pass.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from ...errors import MuseTalkError

log = logging.getLogger(__name__)

IDLE_SHARE = 0.05
TARGET_FPS = 25.0


class ServerFull(MuseTalkError):
    """No capacity left for a new session."""


@dataclass(frozen=True)
class Admission:
    """``capacity``: speaking sessions the engine sustains (None: no limit)."""

    capacity: int | None

    def units(self, speaking: int, idle: int) -> float:
        """Capacity in use by ``speaking`` sessions and ``idle`` live ones."""
        return speaking + IDLE_SHARE * idle

    def load(self, speaking: int, idle: int) -> float:
        """Share of the capacity in use, 0..1."""
        if not self.capacity:
            return 0.0
        return min(1.0, self.units(speaking, idle) / self.capacity)

    def admits(self, speaking: int, idle: int, live: bool) -> bool:
        """Whether a new session fits (a live one starts idle; a plain one speaks from the start)."""
        if self.capacity is None:
            return True
        return self.units(speaking, idle) + (IDLE_SHARE if live else 1) <= self.capacity + 1e-9

    def check(self, speaking: int, idle: int, live: bool) -> None:
        """Raise :class:`ServerFull` when a new session does not fit."""
        if not self.admits(speaking, idle, live):
            raise ServerFull(f"server full: {self.capacity} of {self.capacity} sessions in use; try again later")


def calibrate(mt, batch_size: int, budget_s: float, fps: float = TARGET_FPS) -> int:
    """Speaking sessions ``mt`` sustains at ``fps`` with a step (one whisper pass over every session, then
    their frames) within half the latency budget; measured on random inputs. At least 1."""
    frame_s = _generate_seconds(mt, batch_size) / batch_size + _jpeg_seconds()
    window_s = _whisper_seconds(mt, windows=2) / 2
    sessions = 0
    while True:
        n = sessions + 1
        busy = n * fps * frame_s  # share of each second spent rendering frames
        if busy >= 0.9 or n * window_s / (1 - busy) > budget_s / 2:
            break
        sessions = n
    capacity = max(1, sessions)
    log.info("calibrated capacity: %d speaking sessions at %g fps within %.0f ms (%.1f ms per frame, "
             "%.1f ms per whisper window)", capacity, fps, budget_s * 1e3, frame_s * 1e3, window_s * 1e3)
    return capacity


def _timed(call, repeats: int = 1) -> float:
    """Best wall time of ``call()`` after one warm-up."""
    call()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def _generate_seconds(mt, batch_size: int) -> float:
    import torch

    latents = torch.randn(batch_size, 8, 32, 32, device=mt.device, dtype=mt.dtype)
    prompts = np.random.default_rng(0).standard_normal((batch_size, 50, 384)).astype(np.float32)
    with torch.inference_mode():
        return _timed(lambda: mt.generate_latents(latents, prompts))


def _whisper_seconds(mt, windows: int) -> float:
    from .streaming import FeatureStream, encode_plans

    stream = FeatureStream(TARGET_FPS, 0.0)
    stream.push(np.random.default_rng(0).uniform(-0.1, 0.1, 16000).astype(np.float32))
    plan = stream.plan()
    return _timed(lambda: encode_plans(mt.whisper, mt.feature_extractor, [plan] * windows, mt.device, mt.dtype))


def _jpeg_seconds() -> float:
    """Compositing proxy: JPEG-encoding a 640x480 frame."""
    from ...video.jpeg import encode_jpeg

    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    return _timed(lambda: encode_jpeg(image, 85))

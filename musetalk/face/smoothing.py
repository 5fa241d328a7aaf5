"""One-Euro filter (Casiez et al. 2012) for landmark tracks: strong smoothing when the face is still,
almost none when it moves fast, so jitter goes without lag on quick head motion."""
from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff_hz: np.ndarray | float, rate_hz: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz))
    return 1.0 / (1.0 + tau * rate_hz)


class OneEuroFilter:
    """Element-wise One-Euro filter over arrays of any fixed shape.

    rate_hz: samples per second (video fps). min_cutoff_hz: cutoff at rest (lower = smoother).
    beta: how fast the cutoff rises with speed, per (scale units / s). Speeds are divided by ``scale``
    (e.g. the face height in pixels) so the parameters do not depend on resolution.
    """

    def __init__(self, rate_hz: float = 25.0, min_cutoff_hz: float = 1.0, beta: float = 1.0,
                 d_cutoff_hz: float = 1.0) -> None:
        self.rate_hz = float(rate_hz)
        self.min_cutoff_hz = float(min_cutoff_hz)
        self.beta = float(beta)
        self.d_cutoff_hz = float(d_cutoff_hz)
        self.reset()

    def reset(self) -> None:
        """Forget the history: the next sample passes through unchanged."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def __call__(self, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Filtered copy of ``x`` (float64 internally, returned as float32)."""
        x = np.asarray(x, np.float64)
        if self._x is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.astype(np.float32)
        dx = (x - self._x) * self.rate_hz / max(scale, 1e-6)
        a_d = _alpha(self.d_cutoff_hz, self.rate_hz)
        self._dx = a_d * dx + (1.0 - a_d) * self._dx
        a = _alpha(self.min_cutoff_hz + self.beta * np.abs(self._dx), self.rate_hz)
        self._x = a * x + (1.0 - a) * self._x
        return self._x.astype(np.float32)


def jitter(tracks: np.ndarray) -> float:
    """Mean absolute second difference (pixels/frame^2) of (N, ...) tracks: high-frequency shake,
    ~0 for still or steadily moving boxes."""
    t = np.asarray(tracks, np.float64)
    if len(t) < 3:
        return 0.0
    return float(np.abs(t[2:] - 2.0 * t[1:-1] + t[:-2]).mean())

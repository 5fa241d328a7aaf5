"""Audio-visual offset without any network: the mouth-opening curve (from landmarks) against the speech
loudness envelope, cross-correlated over shifts of up to +-15 frames.

Sign as in SyncNet's offset: positive when the audio leads the video, so delaying the audio by k frames
lowers the estimate by k.

The estimate is only trusted when the peak correlation reaches ``MIN_CORRELATION`` and the peak lies inside
the search range: a still or unrelated mouth gives a flat, low curve whose maximum is noise, often at the edge.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfiltfilt

from ..errors import MuseTalkError

SAMPLE_RATE = 16000
MAX_SHIFT = 15
FLOOR_DB = -60.0
SPEECH_BAND_HZ = (300.0, 3000.0)
MIN_CORRELATION = 0.5  # a still mouth plus landmark jitter reaches 0.27 against 4 s of speech


@dataclass(frozen=True)
class AvOffset:
    """``offset`` in frames (sub-frame, parabolic peak), ``correlation`` at the peak (Pearson, -1..1),
    ``confidence``: peak minus median of the curve, ``curve``: correlation per audio delay
    -max_shift..max_shift, float (2 max_shift + 1,). ``problem``: why the offset is not measurable, or None."""

    offset: float
    correlation: float
    confidence: float
    curve: np.ndarray
    problem: str | None = None

    @property
    def measurable(self) -> bool:
        return self.problem is None


def speech_envelope(samples_16k: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """Loudness per video frame, float (num_frames,) in dB re full scale (floor -60): RMS of the speech band
    (300-3000 Hz) during each frame (frame i covers i / fps .. (i + 1) / fps); silent past the audio's end."""
    edges = np.round(np.arange(num_frames + 1) * SAMPLE_RATE / fps).astype(int)
    samples = np.asarray(samples_16k, dtype=np.float64)
    if len(samples) > 1000:
        samples = sosfiltfilt(butter(4, SPEECH_BAND_HZ, btype="band", fs=SAMPLE_RATE, output="sos"), samples)
    energy = np.square(samples)
    cumulative = np.concatenate([[0.0], np.cumsum(energy)])
    stop = np.minimum(edges, len(energy))
    sums = cumulative[stop[1:]] - cumulative[stop[:-1]]
    rms = np.sqrt(sums / np.maximum(edges[1:] - edges[:-1], 1))
    return np.maximum(20 * np.log10(np.maximum(rms, 1e-12)), FLOOR_DB)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def correlation_curve(mouth: np.ndarray, envelope: np.ndarray, max_shift: int = MAX_SHIFT) -> np.ndarray:
    """Pearson correlation of mouth[t] with envelope[t + d] over their overlap, for d = -max_shift..max_shift."""
    n = len(mouth)
    curve = []
    for delay in range(-max_shift, max_shift + 1):
        lo, hi = max(0, -delay), min(n, n - delay)
        curve.append(_pearson(mouth[lo:hi], envelope[lo + delay:hi + delay]))
    return np.array(curve)


def estimate_offset(mouth: np.ndarray, envelope: np.ndarray, max_shift: int = MAX_SHIFT) -> AvOffset:
    """Mouth opening float (T,) and speech envelope float (T,), one value per video frame -> the offset."""
    if len(mouth) != len(envelope):
        raise MuseTalkError(f"mouth curve ({len(mouth)} frames) and audio envelope ({len(envelope)} frames) differ")
    if len(mouth) < 4 * max_shift:
        raise MuseTalkError(f"AV offset needs at least {4 * max_shift} frames, got {len(mouth)}; give a longer clip")
    curve = correlation_curve(mouth, envelope, max_shift)
    best = int(np.argmax(curve))
    delay = float(best - max_shift)
    if 0 < best < len(curve) - 1:
        left, mid, right = curve[best - 1:best + 2]
        denom = left - 2 * mid + right
        delay += 0.5 * (left - right) / denom if denom < 0 else 0.0
    peak = float(curve[best])
    return AvOffset(offset=-delay, correlation=peak, confidence=peak - float(np.median(curve)), curve=curve,
                    problem=unmeasurable_reason(peak, best, len(curve)))


def unmeasurable_reason(peak: float, index: int, size: int) -> str | None:
    """Why a correlation peak of value ``peak`` at position ``index`` of a curve of ``size`` shifts gives no
    offset (None when it does): too low a correlation, or the peak at the edge of the search."""
    if peak < MIN_CORRELATION:
        return f"peak correlation {peak:.2f} < {MIN_CORRELATION}"
    if index in (0, size - 1):
        return f"peak at the edge of the +-{(size - 1) // 2} frame search"
    return None

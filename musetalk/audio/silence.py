"""Silent stretches of speech audio, per video frame, for keeping the mouth still in pauses."""
from __future__ import annotations

import numpy as np

from .load import SAMPLE_RATE


def frame_rms_db(samples: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """16 kHz mono (N,) -> float32 (num_frames,): RMS level in dB (re full scale) of each frame's
    1/fps-second slice of audio; -120 dB for digital silence."""
    edges = (np.arange(num_frames + 1) * SAMPLE_RATE / fps).astype(np.int64)
    levels = np.empty(num_frames, np.float32)
    for i in range(num_frames):
        chunk = samples[edges[i] : edges[i + 1]]
        power = float(np.mean(chunk.astype(np.float64) ** 2)) if len(chunk) else 0.0
        levels[i] = 10 * np.log10(max(power, 1e-12))
    return levels


def silent_frames(samples: np.ndarray, fps: float, num_frames: int, threshold_db: float = -40.0,
                  min_seconds: float = 0.3) -> np.ndarray:
    """bool (num_frames,): True for frames inside a pause, i.e. a run of at least ``min_seconds`` whose
    level is ``threshold_db`` below the loudest frame (or digitally silent)."""
    levels = frame_rms_db(samples, fps, num_frames)
    quiet = levels < (levels.max(initial=-120.0) + threshold_db)
    silent = np.zeros(num_frames, bool)
    min_frames = max(1, round(min_seconds * fps))
    start = None
    for i, flag in enumerate(np.append(quiet, False)):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start >= min_frames:
                silent[start:i] = True
            start = None
    return silent


def still_weights(silent: np.ndarray, fade_frames: int = 3) -> np.ndarray:
    """float32 (T,) in [0, 1]: 1 inside pauses, ramping linearly to 0 over ``fade_frames`` at each edge
    (the ramps lie inside the pause), 0 in speech. Used to cross-fade prompts towards silence."""
    weights = silent.astype(np.float32)
    if fade_frames <= 0 or not silent.any():
        return weights
    distance = np.full(len(silent), np.inf)
    boundary = np.flatnonzero(np.diff(silent.astype(np.int8)) != 0)
    index = np.arange(len(silent))
    for b in boundary:
        inside = b + 1 if silent[b + 1] else b
        distance = np.minimum(distance, np.abs(index - inside))
    ramp = np.clip((distance + 1) / (fade_frames + 1), 0, 1)
    return np.where(silent, ramp, 0.0).astype(np.float32)

"""Incremental audio prompts: the offline features of ``musetalk.audio.features``, computed while audio arrives.

Offline, whisper encodes the audio in consecutive 30 s segments (each zero-padded to 30 s) and is
bidirectional, so a feature frame depends on audio on both sides, and also on its *position* inside the
segment (absolute positional embeddings): the same sound encoded at another offset gives different
features (a sliding window that keeps only the last few seconds differs from offline by 30-50 % of the
feature magnitude on sun.wav). A :class:`FeatureStream` therefore keeps the offline segment grid and,
whenever video frames become complete, plans one encoder pass over the current segment from its start
to the newest audio. A frame is complete when ``lookahead_s`` seconds of audio exist after the last
feature frame it uses (or its segment is complete, or the stream ended). Frame i uses the same 10
feature frames as offline (start floor(i x 50 / fps) in the zero-padded sequence), and the stream ends
with exactly ``frame_count(total_samples, fps)`` frames. Only the unseen future differs from offline (it
is silence in the window, and whisper's log-mel range is set per window); an encoder pass costs the same
whatever the window length, since whisper always pads to 30 s. ``bench/realtime.py`` measures the
difference from offline prompts.

Audio everywhere here is float32 mono at 16 kHz; time in samples unless a name ends in ``_s``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...audio.features import (FEATURE_RATE, SEGMENT_SAMPLES, WINDOW, first_feature_frame, frame_count, gather_windows,
                              window_index)
from ...audio.load import SAMPLE_RATE

STATE_SAMPLES = SAMPLE_RATE // FEATURE_RATE  # 320 samples (20 ms) per whisper feature frame
SEGMENT_STATES = SEGMENT_SAMPLES // STATE_SAMPLES  # 1500 feature frames per 30 s segment
# The knee of the measured curve (bench/realtime.py --feature-diff, sun.wav in 20 ms chunks, real tiny.en):
# mean relative prompt error 0.235 / 0.155 / 0.118 / 0.085 / 0.064 at 0 / 0.1 / 0.2 / 0.4 / 0.8 s.
DEFAULT_LOOKAHEAD_S = 0.4


def states_in(num_samples: int) -> int:
    """Whisper feature frames in ``num_samples`` of audio, rounded exactly as the offline code does."""
    return math.floor((num_samples / SAMPLE_RATE) * FEATURE_RATE)


@dataclass(frozen=True)
class Plan:
    """One planned encoding: ``windows`` are the audio (float32, each <= 30 s) of consecutive offline
    segments, the first starting at feature frame ``first_state``; ``num_states`` are the valid feature
    frames of each. It yields the prompts of video frames ``start .. stop - 1``."""

    windows: list[np.ndarray]
    num_states: list[int]
    first_state: int
    start: int
    stop: int


@torch.inference_mode()
def encode_plans(whisper, extractor, plans: list[Plan], device, dtype: torch.dtype) -> list[np.ndarray]:
    """Encode the windows of several plans (of any sessions) in one batched whisper pass.

    Returns per plan float32 (sum(num_states), 5, 384): every hidden state per feature frame from
    ``first_state`` on, as :func:`musetalk.audio.whisper_hidden_states` gives for the same segments.
    """
    windows = [w for p in plans for w in p.windows]
    if not windows:
        return []
    mel = extractor(windows, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    hidden = whisper(mel.to(device=device, dtype=dtype), output_hidden_states=True).hidden_states
    states = torch.stack(hidden, dim=2).float().cpu().numpy()
    out, b = [], 0
    for plan in plans:
        parts = [states[b + k, :n] for k, n in enumerate(plan.num_states)]
        b += len(plan.windows)
        out.append(np.concatenate(parts))
    return out


class FeatureStream:
    """Audio in (any chunk sizes), per-video-frame prompts (50, 384) out, in order. Not thread-safe."""

    def __init__(self, fps: float, lookahead_s: float = DEFAULT_LOOKAHEAD_S):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not 0 <= lookahead_s <= 10:
            raise ValueError(f"lookahead_s must be in [0, 10] seconds, got {lookahead_s}")
        self.fps = fps
        self.lookahead = round(lookahead_s * SAMPLE_RATE)
        self.total = 0  # samples received
        self.emitted = 0  # video frames planned so far
        self.finished = False
        self._base = 0  # absolute sample index of self._buffer[0], a segment start
        self._buffer = np.zeros(0, np.float32)
        self._chunks: list[np.ndarray] = []

    def push(self, samples: np.ndarray) -> None:
        """Append float32 (N,) samples at 16 kHz."""
        if self.finished:
            raise ValueError("audio pushed after the end of the stream")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._chunks.append(samples)
        self.total += len(samples)

    def finish(self) -> None:
        """No more audio: the frames still waiting for look-ahead become ready, right-padded with silence."""
        self.finished = True

    @property
    def frame_total(self) -> int | None:
        """floor(seconds x fps) once finished, else None."""
        return frame_count(self.total, self.fps) if self.finished else None

    @property
    def done(self) -> bool:
        return self.finished and self.emitted >= frame_count(self.total, self.fps)

    def first_state(self, frame: int) -> int:
        """Global index of the first (possibly negative: left padding) feature frame of video frame ``frame``."""
        return first_feature_frame(frame, self.fps)

    def final_states(self, end: int) -> int:
        """Feature frames that audio ``[0, end)`` fixes for good: those followed by the look-ahead, and all
        of complete segments (after the end of the stream: all, the rest being zero padding)."""
        if self.finished and end >= self.total:
            return math.inf
        complete = end // SEGMENT_SAMPLES * SEGMENT_STATES
        return max(states_in(max(end - self.lookahead, 0)), complete)

    def ready(self, end: int, start: int = 0) -> int:
        """Number of video frames whose prompts are computable from audio ``[0, end)`` (counting from
        ``max(start, emitted)``, for callers that know earlier frames are ready)."""
        final = self.final_states(end)
        limit = frame_count(self.total if self.finished else end, self.fps)
        n = max(start, self.emitted)
        while n < limit and self.first_state(n) + WINDOW <= final:
            n += 1
        return n

    def pending(self) -> bool:
        """Whether :meth:`plan` would return a plan now."""
        return self.ready(self.total) > self.emitted

    def plan(self) -> Plan | None:
        """The next encoding, covering every frame that became ready (within two segments); None if none did."""
        if not self.pending():
            return None
        segment = max(self.first_state(self.emitted), 0) // SEGMENT_STATES
        end = min(self.total, (segment + 2) * SEGMENT_SAMPLES)
        stop = self.ready(end)
        last_state = self.first_state(stop - 1) + WINDOW - 1
        windows, counts = [], []
        for k in range(segment, segment + 2):
            lo, hi = k * SEGMENT_SAMPLES, min(end, (k + 1) * SEGMENT_SAMPLES)
            if k > segment and (hi <= lo or last_state < k * SEGMENT_STATES):
                break
            windows.append(self._samples(lo, hi))
            counts.append(states_in(hi) - k * SEGMENT_STATES)
        plan = Plan(windows, counts, segment * SEGMENT_STATES, self.emitted, stop)
        self.emitted = stop
        self._trim()
        return plan

    def prompts(self, plan: Plan, states: np.ndarray) -> np.ndarray:
        """Prompts float32 (stop - start, 50, 384) of ``plan``'s frames from its encoded ``states``
        (sum(num_states), 5, 384). Row t * 5 + s is hidden state s of the frame's t-th feature frame."""
        return gather_windows(states, window_index(plan.start, plan.stop, self.fps) - plan.first_state)

    def _samples(self, start: int, end: int) -> np.ndarray:
        if self._chunks:
            self._buffer = np.concatenate([self._buffer, *self._chunks])
            self._chunks = []
        return self._buffer[start - self._base : end - self._base].copy()

    def _trim(self) -> None:
        """Drop audio before the segment of the next frame's first feature frame."""
        keep = max(self.first_state(self.emitted), 0) // SEGMENT_STATES * SEGMENT_SAMPLES
        if keep > self._base:
            self._buffer = self._buffer[keep - self._base :]
            self._base = keep

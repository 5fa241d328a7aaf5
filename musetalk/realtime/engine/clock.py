"""A session's media clock and the speech timeline on it.

Frame ``i`` and audio sample ``n`` (at any rate) are timed from one origin: frame ``i`` is at media time
``i / fps``, sample ``n`` at ``n / rate``; ``origin`` is the ``time.perf_counter()`` second of media time 0.
Every output stamps (frame index -> video pts, sample count -> audio pts) and paces from it, so audio and
video cannot drift apart however long a session runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_EPS = 1e-9  # guards floor() against float round-off at exact frame boundaries (e.g. 29.97 fps)


def frame_sample(index: int, fps: float, rate: int) -> int:
    """First sample (at ``rate`` Hz) of frame ``index``'s slot: floor(index x rate / fps)."""
    return math.floor(index * rate / fps + _EPS)


def frame_span(index: int, fps: float, rate: int) -> tuple[int, int]:
    """(start, stop) samples at ``rate`` Hz of frame ``index``'s slot."""
    return frame_sample(index, fps, rate), frame_sample(index + 1, fps, rate)


@dataclass(frozen=True)
class MediaClock:
    """origin: perf_counter seconds of media time 0 (frame 0's due time); fps: frames per second."""

    origin: float
    fps: float

    def frame_time(self, index: int) -> float:
        """Media seconds of frame ``index``."""
        return index / self.fps

    def wall(self, media_s: float) -> float:
        """perf_counter seconds of media time ``media_s``."""
        return self.origin + media_s

    def frame_wall(self, index: int) -> float:
        """perf_counter seconds at which frame ``index`` is due."""
        return self.origin + index / self.fps

    def sample_start(self, index: int, rate: int) -> int:
        """First sample (at ``rate`` Hz) of frame ``index``'s slot: floor(index x rate / fps)."""
        return frame_sample(index, self.fps, rate)

    def sample_span(self, index: int, rate: int) -> tuple[int, int]:
        """(start, stop) samples at ``rate`` Hz of frame ``index``'s slot."""
        return frame_span(index, self.fps, rate)

    def frame_at(self, wall: float) -> int:
        """The frame whose slot holds perf_counter time ``wall`` (negative before the origin)."""
        return math.floor((wall - self.origin) * self.fps + _EPS)


class AudioTimeline:
    """The speech of a session, float32 mono samples placed at their sample position on its clock; read
    frame slot by frame slot (:meth:`take`), which also forgets everything before the slot's end."""

    def __init__(self) -> None:
        self._chunks: list[tuple[int, np.ndarray]] = []  # (first sample, samples), in order, not overlapping

    @property
    def samples(self) -> int:
        """Samples held (what waits ahead of the clock)."""
        return sum(len(c) for _, c in self._chunks)

    def add(self, position: int, samples: np.ndarray) -> None:
        """Place float32 (N,) ``samples`` from sample ``position`` on (after what is already there)."""
        if len(samples):
            self._chunks.append((position, np.asarray(samples, dtype=np.float32)))

    def take(self, start: int, stop: int) -> np.ndarray | None:
        """Samples [start, stop) as float32 (stop - start,), zeros where nothing was placed; None if nothing
        was placed there at all. Everything before ``stop`` is forgotten."""
        out: np.ndarray | None = None
        kept: list[tuple[int, np.ndarray]] = []
        for first, chunk in self._chunks:
            last = first + len(chunk)
            lo, hi = max(first, start), min(last, stop)
            if lo < hi:
                if out is None:
                    out = np.zeros(stop - start, dtype=np.float32)
                out[lo - start: hi - start] = chunk[lo - first: hi - first]
            if last > stop:
                kept.append((max(first, stop), chunk[max(0, stop - first):]))
        self._chunks = kept
        return out

    def drop_from(self, position: int) -> None:
        """Forget every sample from ``position`` on (an interrupted utterance)."""
        self._chunks = [(f, c[: position - f]) for f, c in self._chunks if f < position]

    def clear(self) -> None:
        self._chunks = []

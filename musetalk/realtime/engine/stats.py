"""Running counts of an engine (frames sent and skipped, latencies, batch sizes) that ``/metrics`` exports.

Plain Python, thread-safe; the Prometheus side is :mod:`musetalk.realtime.web.metrics`.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class Histogram:
    """Counts per upper bound (cumulative counts are made on export) and the sum of the observations."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count <= le), ..., ("+Inf", all)]`` as Prometheus buckets want them."""
        out, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts):
            running += count
            out.append((bound, running))
        return out


class EngineStats:
    """Counters shared by an engine's sessions and scheduler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames_sent = 0
        self.frames_skipped = 0
        self.latency = Histogram(LATENCY_BUCKETS_S)
        self.batch_sizes = Histogram(BATCH_BUCKETS)

    def sent(self, latency_s: float) -> None:
        with self._lock:
            self.frames_sent += 1
            self.latency.observe(latency_s)

    def skipped(self) -> None:
        with self._lock:
            self.frames_skipped += 1

    def batch(self, size: int) -> None:
        with self._lock:
            self.batch_sizes.observe(size)

    def snapshot(self) -> dict:
        """A consistent copy: counts and cumulative histogram buckets with their sums."""
        with self._lock:
            return {"frames_sent": self.frames_sent, "frames_skipped": self.frames_skipped,
                    "latency": (self.latency.cumulative(), self.latency.total),
                    "batch_sizes": (self.batch_sizes.cumulative(), self.batch_sizes.total)}

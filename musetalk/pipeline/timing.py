"""Wall-clock time per pipeline stage, summed over a run (threads add to their own stages), and the busy
time of the model device."""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict, deque
from typing import Iterator

import torch


class StageTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}


class DeviceBusy:
    """Time the model device spends working, summed over marked spans of work.

    On CUDA each span records a pair of events on the current stream (no synchronisation while running);
    on CPU the work is synchronous and a span is its wall time. ``first``/``last`` bound the spans in
    wall-clock time, so ``idle_fraction`` is the share of that window the device was not working.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.reset()

    def reset(self) -> None:
        """Forget the spans measured so far (a new run starts)."""
        self.seconds = 0.0
        self.events: deque[tuple[torch.cuda.Event, torch.cuda.Event]] = deque()
        self.first: float | None = None
        self.last: float | None = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        now = time.perf_counter()
        self.first = now if self.first is None else self.first
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._fold_finished()
                self.events.append((start, end))
        else:
            try:
                yield
            finally:
                self.seconds += time.perf_counter() - now

    def _fold_finished(self) -> None:
        """Add the spans the device has finished to ``seconds``: a long-lived server keeps few events."""
        while self.events and self.events[0][1].query():
            start, end = self.events.popleft()
            self.seconds += start.elapsed_time(end) / 1000.0

    def mark_done(self) -> None:
        """Note the wall-clock time results of the last span arrived (end of the measured window)."""
        self.last = time.perf_counter()

    def busy_seconds(self) -> float:
        """Seconds of device work so far (waits for the recorded CUDA work to finish)."""
        if self.events:
            self.events[-1][1].synchronize()
            self._fold_finished()
        return self.seconds

    def window_seconds(self) -> float:
        return 0.0 if self.first is None or self.last is None else self.last - self.first

    def idle_fraction(self) -> float:
        """1 - busy / window, in [0, 1]; 0 before any work."""
        window = self.window_seconds()
        return min(1.0, max(0.0, 1.0 - self.busy_seconds() / window)) if window > 0 else 0.0

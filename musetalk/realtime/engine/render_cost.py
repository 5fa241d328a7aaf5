"""What a batch of frames costs the engine, learnt from what it measured: the basis of batch sizing.

A batch of ``n`` frames picked now is delivered after one model call over ``n`` frames plus ``finish_s``
of paste-back and JPEG on the compositor threads. The call's seconds are kept per batch size (a GPU call
costs about the same for 1 or 16 frames, a CPU call grows with them); a size not measured yet is
interpolated between its measured neighbours, or beyond the largest one scaled up in proportion. Each figure is a running average that follows a slower measurement at once (weight 0.5: an
optimistic estimate costs a whole batch its deadline) and a faster one gently (``weight``); the first
measurement sets it. Until a call was measured the engine sends probes of one frame (a first call may be
slow). Estimates carry a ``MARGIN`` since a deadline needs more than an average.
"""
from __future__ import annotations

RETRY_FRACTION = 0.9  # an estimate above the whole budget decays to this share of it
RISE_WEIGHT = 0.5  # weight of a measurement above the estimate
MARGIN = 1.2  # estimates are this much above the running averages


class RenderCost:
    """Running estimate of the seconds from picking ``n`` frames to their delivery."""

    def __init__(self, weight: float = 0.2) -> None:
        self.weight = weight
        self.call_s: dict[int, float] = {}  # batch size -> seconds of one model call
        self.finish_s: float | None = None  # seconds from the end of generation to a frame's delivery

    @property
    def known(self) -> bool:
        """Whether a model call was measured yet."""
        return bool(self.call_s)

    def estimate(self, frames: int) -> float:
        """Seconds until a batch of ``frames`` frames picked now is delivered (with the margin)."""
        return MARGIN * (self._call(frames) + (self.finish_s or 0.0))

    def _call(self, frames: int) -> float:
        if not self.call_s:
            return 0.0
        below = [size for size in self.call_s if size <= frames]
        above = [size for size in self.call_s if size >= frames]
        if not below:
            return self.call_s[min(above)]
        low = max(below)
        if not above:
            return self.call_s[low] * frames / low
        high = min(above)
        if high == low:
            return self.call_s[low]
        return self.call_s[low] + (self.call_s[high] - self.call_s[low]) * (frames - low) / (high - low)

    def generated(self, seconds: float, frames: int) -> None:
        """One model call over ``frames`` frames took ``seconds``."""
        if frames > 0:
            self.call_s[frames] = self._follow(self.call_s.get(frames), seconds)

    def finished(self, seconds: float) -> None:
        """One frame was delivered ``seconds`` after its batch's generation ended."""
        self.finish_s = self._follow(self.finish_s, seconds)

    def _follow(self, estimate: float | None, measured: float) -> float:
        if estimate is None:
            return measured
        return estimate + (RISE_WEIGHT if measured > estimate else self.weight) * (measured - estimate)

    def relax(self, budget_s: float) -> None:
        """Nothing could be picked: if even one frame is estimated above the whole budget (a one-off stall
        such as a first CUDA call, or a slower moment), decay the estimate towards ``RETRY_FRACTION`` of the
        budget so frames are tried and measured again instead of every later frame being skipped."""
        single = self.estimate(1)
        if single > budget_s:
            scale = max(budget_s * RETRY_FRACTION / single, 1 - self.weight)
            self.call_s = {size: seconds * scale for size, seconds in self.call_s.items()}
            self.finish_s = None if self.finish_s is None else self.finish_s * scale

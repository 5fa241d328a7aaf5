"""One media clock for every output, and the encoders' frames: what WebRTC, live-stream publishing and
the voice-agent integration share.

A live session's frame ``i`` is due at ``clock.frame_wall(i)``; an output plays it out at that time plus
the latency budget (its *playout point*), with the speech of the same slot, so generation running late
within the budget delays picture and sound together, and a frame that misses the budget repeats the
previous picture while its sound still plays on time. Video pts come from the frame index and audio pts
from the sample count, both on the session's one clock: nothing drifts however long it runs.

:func:`paced_frames` is that playout loop; :func:`video_frame` and :class:`AudioOut` turn its
:class:`MediaFrame` into PyAV frames with their pts. PyAV is imported only by those two.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import AsyncIterator, Callable

import numpy as np

from ..audio.load import SAMPLE_RATE
from .engine.clock import MediaClock, frame_sample
from .engine.outbox import Event, Frame, Skip

__all__ = ["MediaClock", "MediaFrame", "paced_frames", "video_frame", "AudioOut", "VIDEO_TIME_BASE"]

VIDEO_TIME_BASE = Fraction(1, 90000)  # RTP's video clock; FLV/MPEG-TS muxers rescale from it


@dataclass(frozen=True)
class MediaFrame:
    """Frame ``index`` at its playout point. image: uint8 (H, W, 3) RGB (the previous picture when this one
    was skipped or late: ``repeated``); audio: float32 (n,) mono 16 kHz, the speech of the frame's slot
    (zeros at rest); speech: an utterance covers the frame; playout_at: perf_counter seconds it is due out."""

    index: int
    image: np.ndarray
    audio: np.ndarray
    speech: bool
    repeated: bool
    playout_at: float


def _slot_samples(index: int, fps: float) -> int:
    return frame_sample(index + 1, fps, SAMPLE_RATE) - frame_sample(index, fps, SAMPLE_RATE)


async def paced_frames(session, budget_s: float, now: Callable[[], float] = time.perf_counter,
                       sleep: Callable[[float], "asyncio.Future"] = asyncio.sleep
                       ) -> AsyncIterator[MediaFrame | Event]:
    """A live session (opened with ``images=True``) played out: frame ``i`` at ``clock.frame_wall(i) +
    budget_s`` (absolute times: no drift), with its slot's speech; its control events in order before it.
    Ends when the session ends; raises :class:`~.engine.session.SessionError` if it fails. ``now`` and
    ``sleep`` are the clock and the wait (tests pass simulated ones)."""
    clock: MediaClock = session.clock
    avatar = session.avatar
    picture = np.asarray(avatar.frames[avatar.source_index(0)])
    waiting: dict[int, Frame | Skip] = {}
    index = 0
    reader: asyncio.Task | None = None
    try:
        while True:
            playout = clock.frame_wall(index) + budget_s
            while index not in waiting:
                reader = reader or asyncio.ensure_future(session.next_item())
                done, _ = await asyncio.wait({reader}, timeout=max(0.0, playout - now()))
                if not done:
                    break  # not there by its playout point: the picture repeats
                item, reader = reader.result(), None
                if item is None:
                    return
                if isinstance(item, Event):
                    yield item
                elif item.index >= index:
                    waiting[item.index] = item  # (an index already played out came too late: dropped)
            if (wait := playout - now()) > 0:
                await sleep(wait)
            item = waiting.pop(index, None)
            fresh = isinstance(item, Frame) and item.image is not None
            if fresh:
                picture = item.image
            speech = session.speaks(index)
            audio = session.take_audio(index)
            yield MediaFrame(index, picture,
                             audio if audio is not None else np.zeros(_slot_samples(index, clock.fps), np.float32),
                             speech=speech, repeated=not fresh, playout_at=playout)
            index += 1
    finally:
        if reader is not None:
            reader.cancel()


def video_frame(image: np.ndarray, index: int, clock: MediaClock, time_base: Fraction = VIDEO_TIME_BASE):
    """``image`` (uint8 (H, W, 3) RGB) as an ``av.VideoFrame`` whose pts is frame ``index``'s media time in
    ``time_base`` units."""
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    frame.pts = round(clock.frame_time(index) / time_base)
    frame.time_base = time_base
    return frame


class AudioOut:
    """A session's speech (float32 16 kHz slots, in order from frame ``first_index``) as ``av.AudioFrame``s
    of s16 mono at ``rate`` Hz, pts = the sample count on the session's clock (resampled as one stream)."""

    def __init__(self, clock: MediaClock, rate: int = 48000, first_index: int = 0) -> None:
        import soxr

        self.rate = rate
        self._next = frame_sample(first_index, clock.fps, rate)
        self._resampler = soxr.ResampleStream(SAMPLE_RATE, rate, 1, dtype="float32") if rate != SAMPLE_RATE else None

    def frame(self, samples: np.ndarray):
        """The next slot's ``samples`` (float32 (n,) 16 kHz) as one ``av.AudioFrame`` (None while the
        resampler still holds them back)."""
        import av

        out = samples if self._resampler is None else self._resampler.resample_chunk(samples)
        if not len(out):
            return None
        pcm = (np.clip(out, -1, 1) * 32767).astype("<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._next
        frame.time_base = Fraction(1, self.rate)
        self._next += pcm.shape[1]
        return frame

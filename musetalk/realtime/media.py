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
import functools
import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import AsyncIterator, Callable

import numpy as np

from ..audio.load import SAMPLE_RATE
from ..audio.pcm import to_pcm16
from .engine.clock import MediaClock, frame_sample
from .engine.outbox import Event, Frame, Skip

__all__ = ["MediaClock", "MediaFrame", "paced_frames", "video_frame", "AudioOut", "AudioChunks", "resampler_delay", "VIDEO_TIME_BASE", "OPUS_FRAME"]

VIDEO_TIME_BASE = Fraction(1, 90000)  # RTP's video clock; FLV/MPEG-TS muxers rescale from it
OPUS_FRAME = 960  # samples of one 20 ms Opus packet at 48 kHz (aiortc sends each frame given as one packet)


@dataclass(frozen=True)
class MediaFrame:
    """Frame ``index`` at its playout point. image: uint8 (H, W, 3) RGB (the previous picture when this one
    was skipped or late: ``repeated``); audio: float32 (n,) mono 16 kHz, the speech of the frame's slot
    (zeros at rest); speech: an utterance covers the frame; playout_at: perf_counter seconds it is due out;
    rest: the image is the avatar's source frame for this index, unaltered (a rest frame made in time)."""

    index: int
    image: np.ndarray
    audio: np.ndarray
    speech: bool
    repeated: bool
    playout_at: float
    rest: bool = False


async def paced_frames(session, budget_s: float, now: Callable[[], float] = time.perf_counter,
                       sleep: Callable[[float], "asyncio.Future"] = asyncio.sleep
                       ) -> AsyncIterator[MediaFrame | Event]:
    """A live session (opened with ``images=True``) played out: frame ``i`` at ``clock.frame_wall(i) +
    budget_s`` (absolute times: no drift), with its slot's speech; the control events that precede a frame
    in the session's stream (``state``, ``utterance_done``, ...) at that frame's playout, just before it.
    It reads ahead until each playout point (the session's outbox stays short whatever the budget). Ends when the session ends; raises :class:`~.engine.session.SessionError` if it fails. ``now`` and
    ``sleep`` are the clock and the wait (tests pass simulated ones)."""
    clock: MediaClock = session.clock
    avatar = session.avatar
    picture = np.asarray(avatar.frames[avatar.source_index(0)])
    waiting: dict[int, Frame | Skip] = {}
    events: dict[int, list[Event]] = {}  # control events, held for the playout of the frame they precede
    held: list[Event] = []  # events read since the last frame
    index = 0

    def place(items: list) -> tuple[list[Event], bool]:
        """Buffer what was read; returns (the events due now, whether the session ended)."""
        nonlocal held
        now_due: list[Event] = []
        for item in items:
            if item is None:
                return now_due + held, True
            if isinstance(item, Event):
                held.append(item)
            elif item.index >= index:
                waiting[item.index] = item
                events.setdefault(item.index, []).extend(held)
                held = []
            else:  # played out already: its picture came too late and is dropped, its events go now
                now_due += held
                held = []
        return now_due, False

    reader: asyncio.Task | None = None
    ended = False  # the session's last item was read (what is buffered still plays out)
    ahead = math.ceil((budget_s + 2.0) * clock.fps)  # frames buffered at most (a live session has ~budget x fps)
    try:
        while True:
            playout = clock.frame_wall(index) + budget_s
            # read until the playout point (the session's outbox stays short however long the budget)
            while not ended and len(waiting) <= ahead and (remaining := playout - now()) > 0:
                reader = reader or asyncio.ensure_future(session.next_item())
                done, _ = await asyncio.wait({reader}, timeout=remaining)
                if not done:
                    break
                item, reader = reader.result(), None
                due, ended = place([item] + ([] if item is None else session.ready_items()))
                for event in due:
                    yield event
            if ended and not waiting:
                return
            if (wait := playout - now()) > 0:
                await sleep(wait)
            for event in events.pop(index, ()):
                yield event
            item = waiting.pop(index, None)
            fresh = isinstance(item, Frame) and item.image is not None
            if fresh:
                picture = item.image
            speech = session.speaks(index)
            audio = session.take_audio(index)
            if audio is None:  # nothing fed for this slot: silence
                start, stop = clock.sample_span(index, SAMPLE_RATE)
                audio = np.zeros(stop - start, np.float32)
            yield MediaFrame(index, picture, audio, speech=speech, repeated=not fresh, playout_at=playout,
                             rest=fresh and not item.speech and not speech)
            index += 1
    finally:
        if reader is not None:
            reader.cancel()


def frame_pts(index: int, clock: MediaClock, time_base: Fraction = VIDEO_TIME_BASE) -> int:
    """Frame ``index``'s media time in ``time_base`` units."""
    return round(clock.frame_time(index) / time_base)


def video_frame(image: np.ndarray, index: int, clock: MediaClock, time_base: Fraction = VIDEO_TIME_BASE):
    """``image`` (uint8 (H, W, 3) RGB) as an ``av.VideoFrame`` whose pts is :func:`frame_pts`."""
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    frame.pts = frame_pts(index, clock, time_base)
    frame.time_base = time_base
    return frame


class AudioOut:
    """A session's speech (float32 16 kHz slots, in order from frame ``first_index``) as ``av.AudioFrame``s
    of s16 mono at ``rate`` Hz, pts = the sample count on the session's clock (resampled as one stream).

    Each slot gives exactly its own share of samples, so a frame's sound is complete at its playout point:
    the resampler (FFmpeg's, which holds back a constant few samples for its filter) runs that many
    samples behind the clock (1 ms at 16 -> 48 kHz), with silence in front. A resampler that held back the
    end of each slot would leave the last 20 ms packet of every frame for the next frame's playout, and a
    receiver would see its sound arrive in pairs of packets 40 ms apart (and buffer for that jitter)."""

    def __init__(self, clock: MediaClock, rate: int = 48000, first_index: int = 0) -> None:
        import av

        self.rate = rate
        self._next = frame_sample(first_index, clock.fps, rate)
        self._fed = 0  # 16 kHz samples given to the resampler
        self._resampler = None
        lead = 0
        if rate != SAMPLE_RATE:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            lead = resampler_delay(rate)
        self._lead = np.zeros(lead, np.float32)  # the silence in front (once)

    def frame(self, samples: np.ndarray):
        """The next slot's ``samples`` (float32 (n,) 16 kHz) as one ``av.AudioFrame`` (None for no samples)."""
        import av

        out = samples if self._resampler is None else self._resample(samples)
        if self._lead.size:
            out, self._lead = np.concatenate([self._lead, out]), self._lead[:0]
        if not len(out):
            return None
        pcm = to_pcm16(out).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._next
        frame.time_base = Fraction(1, self.rate)
        self._next += pcm.shape[1]
        return frame

    def _resample(self, samples: np.ndarray) -> np.ndarray:
        if not len(samples):
            return samples
        frame = _speech_frame(samples, self._fed)
        self._fed += len(samples)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)] or [samples[:0]])


def _speech_frame(samples: np.ndarray, pts: int):
    """``samples`` (float32 (n,) 16 kHz mono) as an ``av.AudioFrame`` (flt) at sample ``pts``."""
    import av

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32).reshape(1, -1), format="flt",
                                       layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, pts, Fraction(1, SAMPLE_RATE)
    return frame


@functools.lru_cache(maxsize=None)
def resampler_delay(rate: int) -> int:
    """Samples (at ``rate``) FFmpeg's resampler from 16 kHz holds back: what 0.1 s of input falls short by."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    frame = _speech_frame(np.zeros(SAMPLE_RATE // 10, np.float32), 0)
    return rate // 10 - sum(f.samples for f in resampler.resample(frame))


class AudioChunks:
    """s16 mono ``av.AudioFrame``s of any length (pts counting samples on one clock) re-cut into frames of
    exactly ``samples`` samples, pts continuing the sample count: aiortc sends each frame it is given as
    one RTP packet and stamps all of its samples alike (20 ms Opus packets: 960 samples at 48 kHz)."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self._carry = np.zeros(0, np.int16)
        self._next: int | None = None  # pts of the next frame out

    def cut(self, frame) -> list:
        """The whole frames ``frame`` (None: nothing) completes, in order; the rest waits for the next."""
        import av

        if frame is None:
            return []
        if self._next is None:
            self._next = frame.pts
        self._carry = np.concatenate([self._carry, frame.to_ndarray().reshape(-1)])
        out = []
        while len(self._carry) >= self.samples:
            piece, self._carry = self._carry[:self.samples], self._carry[self.samples:]
            chunk = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="s16", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = frame.sample_rate, self._next, frame.time_base
            self._next += self.samples
            out.append(chunk)
        return out

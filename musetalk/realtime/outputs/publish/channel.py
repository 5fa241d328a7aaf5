"""A channel: one live session of a prepared avatar, driven by a queue of things to say, pushed to a target.

    channel = Channel(name, session, link, settings, voice)   # session: a live engine session with a clock
    task = asyncio.create_task(channel.run(frames))            # frames: musetalk.realtime.media.paced_frames(...)
    channel.say("Hello"); channel.play(samples, "jingle.wav"); channel.interrupt(); channel.status()

Items are spoken in order, each after ``gap_s`` seconds of rest (``loop``: the list repeats); the avatar is
at rest in between (its source frames), speech blends in and out as in any live session. Every frame the
session gives becomes one unit for the link: its picture (the previous one repeated when the engine
skipped it) and its audio slot, upsampled to 48 kHz as one continuous stream (``musetalk.realtime.media``),
so video pts (the frame's media time) and audio pts (the sample count) come from the session's one clock
and never drift apart. The
channel never waits for the link (:mod:`.link` drops what it cannot send). A speech item that cannot be
synthesised fails alone (logged); the channel goes on.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

import numpy as np

from ....errors import MuseTalkError
from ...media import AudioOut, video_frame
from .encode import AUDIO_RATE, AVUnit
from .link import Link

log = logging.getLogger(__name__)
FEED_SAMPLES = 16000  # one second of 16 kHz speech per feed

MAX_QUEUE = 100  # items waiting in a channel's inbox


class InboxError(MuseTalkError):
    """An inbox request the channel cannot take (text over the limit, a full queue, a stopped channel)."""


@dataclass(frozen=True)
class Item:
    """One thing to say: ``text`` for the voice, or ``samples`` (float32 (N,) mono 16 kHz); ``label``: how
    logs and the status name it."""

    label: str
    text: str | None = None
    samples: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ChannelSettings:
    """gap_s: rest before each item; loop: repeat the items given at the start; duration_s: stop after this
    much media time (None: until stopped); budget_s: the playout delay of the paced frames (their lateness
    is measured against ``frame_wall(i) + budget_s``)."""

    gap_s: float = 1.0
    loop: bool = False
    duration_s: float | None = None
    budget_s: float = 0.2


@dataclass
class ChannelStats:
    """frames: slots the session gave; skipped: of them, pictures repeated because the engine skipped the
    frame; drift_s: how late the last frame was handed to the link against its due time on the clock
    (wall minus stream; stays near 0 however long the channel runs); items_done / items_failed."""

    frames: int = 0
    skipped: int = 0
    drift_s: float = 0.0
    max_drift_s: float = 0.0
    items_done: int = 0
    items_failed: int = 0


class Channel:
    """See the module docstring. ``session``: a live engine session (``clock``, ``feed``, ``end``,
    ``interrupt``, ``finish``, ``avatar``); ``voice``: an awaitable giving a
    :class:`musetalk.speech.Synthesizer`; ``now``: the wall clock the pacing is measured with."""

    def __init__(self, name: str, session, link: Link, settings: ChannelSettings,
                 voice: Callable[[], Awaitable[object]] | None = None, items: list[Item] = (),
                 now: Callable[[], float] = time.perf_counter) -> None:
        self.name, self.session, self.link, self.settings = name, session, link, settings
        self.voice, self.now = voice, now
        self.stats = ChannelStats()
        self.started_at = now()
        self.state = "rest"
        self.error: str | None = None
        self._program = list(items)
        self._queue: deque[Item] = deque(items)
        self._wake: asyncio.Event | None = None
        self._rest: asyncio.Event | None = None
        self._speaking: Item | None = None
        self._speaker: asyncio.Task | None = None
        self._current: asyncio.Task | None = None  # the item being said
        self._audio: AudioOut | None = None
        fps = session.clock.fps
        self.total_frames = None if settings.duration_s is None else math.floor(settings.duration_s * fps + 1e-9)

    # -- inbox (the event loop's thread) -----------------------------------------------------------
    def say(self, text: str) -> int:
        """Queue ``text`` for the voice; its place in the queue (1: next). Raises ``SpeechError``/InboxError."""
        from ....speech import check_text

        text = check_text(text)
        return self._enqueue(Item(_label(text), text=text))

    def play(self, samples: np.ndarray, label: str) -> int:
        """Queue float32 (N,) mono 16 kHz ``samples``; their place in the queue."""
        if len(samples) == 0:
            raise InboxError(f"{label} holds no audio samples: give a file with sound")
        return self._enqueue(Item(label, samples=np.asarray(samples, dtype=np.float32)))

    def interrupt(self) -> None:
        """Drop the item being spoken (the ones queued stay)."""
        if self._current is not None:
            self._current.cancel()
        self.session.interrupt()

    def status(self) -> dict:
        """The channel as ``GET /channels/{name}`` shows it."""
        link = self.link.stats
        return {"name": self.name, "avatar": self.session.avatar.name, "url": self.link.target.url,
                "state": self.state, "speaking": self._speaking.label if self._speaking else None,
                "queue": [item.label for item in self._queue], "uptime_s": round(self.now() - self.started_at, 3),
                "frames": self.stats.frames, "skipped": self.stats.skipped, "pushed": link.frames_pushed,
                "dropped": link.frames_dropped, "reconnects": link.reconnects, "bytes_out": link.bytes_out,
                "connected": link.connected, "drift_ms": round(self.stats.drift_s * 1000, 1),
                "items_done": self.stats.items_done, "items_failed": self.stats.items_failed,
                "error": self.error or self.link.error}

    def _enqueue(self, item: Item) -> int:
        if self.error is not None or self._wake is None:
            raise InboxError(f"channel {self.name} is not running: {self.error or 'not started'}")
        if len(self._queue) >= MAX_QUEUE:
            raise InboxError(f"channel {self.name} has {MAX_QUEUE} items waiting: wait for some to be spoken")
        self._queue.append(item)
        self._wake.set()
        return len(self._queue)

    # -- running -----------------------------------------------------------------------------------
    async def run(self, frames: AsyncIterator) -> None:
        """Push ``frames`` (the session's paced :class:`MediaFrame`s and events) until the duration is
        reached, the session ends, or the task is cancelled; then finish the session and close the link
        (raises :class:`~.targets.PublishError` when the link failed for good)."""
        self._wake, self._rest = asyncio.Event(), asyncio.Event()
        self._rest.set()
        self._speaker = asyncio.create_task(self._speak_items())
        try:
            await self._push(frames)
        finally:
            self._speaker.cancel()
            self.session.finish()
            await asyncio.to_thread(self.link.close)

    async def _push(self, frames: AsyncIterator) -> None:
        async for item in frames:
            if not hasattr(item, "image"):
                self._event(item.payload)
                continue
            self._frame(item)
            if self.link.error is not None:
                self.error = self.link.error
                return
            if self.total_frames is not None and item.index + 1 >= self.total_frames:
                return

    def _frame(self, frame) -> None:
        """Hand one paced frame (``MediaFrame``) to the link, stamped from the clock."""
        clock = self.session.clock
        if self._audio is None:
            self._audio = AudioOut(clock, AUDIO_RATE, first_index=frame.index)
        picture = video_frame(frame.image, frame.index, clock)
        self.link.push(AVUnit(frame.index, picture, self._audio.frame(frame.audio)))
        self.stats.frames += 1
        self.stats.skipped += bool(frame.repeated)
        self.stats.drift_s = self.now() - (clock.frame_wall(frame.index) + self.settings.budget_s)
        self.stats.max_drift_s = max(self.stats.max_drift_s, abs(self.stats.drift_s))

    def _event(self, payload: dict) -> None:
        if payload.get("type") == "state":
            self.state = payload["state"]
            if self.state == "rest":
                self._rest.set()

    async def _speak_items(self) -> None:
        """Say the queued items one after the other, each after its gap of rest."""
        while True:
            while not self._queue:
                if self.settings.loop and self._program:
                    self._queue.extend(self._program)
                    continue
                self._wake.clear()
                await self._wake.wait()
            await self._rest.wait()
            await asyncio.sleep(self.settings.gap_s)
            item = self._queue.popleft()
            self._speaking, self.state = item, "speaking"
            self._rest.clear()
            self._current = asyncio.create_task(self._say(item))
            try:
                await self._current
                self.stats.items_done += 1
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():
                    raise  # the channel stops
                log.info("channel %s: %s interrupted", self.name, item.label)
                self._end_utterance()
            except Exception as exc:  # noqa: BLE001 - one bad item fails alone, the channel goes on
                self.stats.items_failed += 1
                log.error("channel %s: %s failed: %s", self.name, item.label, exc)
                self._end_utterance()
            finally:
                self._speaking = self._current = None

    async def _say(self, item: Item) -> None:
        """Feed one item's speech into the session and end its utterance. A text is synthesised whole
        first: a voice slower than real time (a busy CPU) then delays the item, never cuts gaps into it."""
        if item.samples is not None:
            samples = item.samples
        else:
            synth = await self.voice()
            samples = await asyncio.to_thread(synth.synthesize, item.text)
        for start in range(0, len(samples), FEED_SAMPLES):  # under the session's cap on audio ahead of its clock
            chunk = samples[start:start + FEED_SAMPLES]
            while (wait := self.session.audio_wait_s(len(chunk))) > 0:
                await asyncio.sleep(wait)
            self.session.feed(chunk)  # (not known_ahead: a broadcast gains nothing from starting sooner, and its
            # first frames keep the look-ahead's head start, so a slow engine skips fewer of them)
        self.session.end()

    def _end_utterance(self) -> None:
        """After a failed item: end what it fed (if anything), so the avatar returns to rest."""
        if self.session.utterance_open:
            self.session.end()
        elif not self.session.speaking:
            self.state = "rest"
            self._rest.set()


def _label(text: str) -> str:
    short = " ".join(text.split())
    return f"text {short[:40]!r}" if len(short) <= 40 else f"text {short[:37] + '...'!r}"

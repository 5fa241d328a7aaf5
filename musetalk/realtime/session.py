"""One client's stream on one avatar: audio in, frames (or skips) out in index order, on a media clock.

Client side (any thread): :meth:`Session.feed` / ``feed_pcm16`` / ``end`` / ``close``; read with
:meth:`Session.frames` (thread) or :meth:`Session.next_item` (asyncio). Engine side, the small interface
the scheduler uses: ``wants_plan``/``plan``/``add_prompts`` (audio to prompts), ``head_deadline``/``take``
(earliest-deadline-first picking), ``skip``/``deliver``/``fail`` (outcomes), ``finished``.

Media clock: frame i is due at ``origin + i / fps`` (``origin``: when frame 0's audio was complete), or
when its audio was complete if that is later, plus the latency budget. A frame that cannot be delivered
by then is skipped: the client gets :class:`~.outbox.Skip` in its place, so indices stay exact.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..errors import MuseTalkError
from .outbox import END, Frame, Outbox, OutboxFull, Skip
from .stats import EngineStats
from .streaming import FeatureStream, Plan

log = logging.getLogger(__name__)


class SessionError(MuseTalkError):
    """A session failed or was used wrongly (audio after the end, a closed session)."""


@dataclass(frozen=True)
class SessionSettings:
    """lookahead_s: audio needed after a frame's window; budget_s: latency budget (None: never skip);
    outbox_frames: frames waiting for a slow client before further ones become skips; keep_images: keep
    the RGB image in each Frame (only when the engine does not encode JPEG)."""

    lookahead_s: float
    budget_s: float | None
    outbox_frames: int = 50
    keep_images: bool = False


@dataclass
class Job:
    """One frame to render: its global ``index``, avatar ``source`` frame, prompt float32 (50, 384); its
    audio was complete at ``ready_at``, it is due at ``due_at`` and must be out by ``deadline``."""

    session: "Session"
    index: int
    source: int
    prompt: np.ndarray
    ready_at: float
    due_at: float
    deadline: float


class Session:
    """See the module docstring. ``wake`` is called whenever the scheduler may have new work."""

    def __init__(self, avatar, sid: int, settings: SessionSettings, wake: Callable[[], None],
                 stats: EngineStats, loop: asyncio.AbstractEventLoop | None) -> None:
        self.avatar = avatar
        self.id = sid
        self.settings = settings
        self.stream = FeatureStream(avatar.fps, settings.lookahead_s)
        self.closed = False
        self.error: str | None = None
        self.skipped = 0
        self.sent = 0
        self._wake = wake
        self._stats = stats
        self._lock = threading.Lock()
        self._ready_times: deque[float] = deque()  # audio-complete time of frames ready but not yet planned
        self._known_ready = 0
        self._origin: float | None = None
        self._jobs: deque[Job] = deque()
        self._in_flight = 0
        self._next_out = 0
        self._reorder: dict[int, Frame | Skip] = {}
        self._end_sent = False
        self._outbox = Outbox(loop, settings.outbox_frames, max_items=8 * settings.outbox_frames)

    # -- client side -------------------------------------------------------------------------------
    def feed(self, samples: np.ndarray) -> None:
        """Append float32 (N,) mono samples at 16 kHz (values in [-1, 1])."""
        with self._lock:
            self._check_open()
            self.stream.push(samples)
            self._note_ready()
        self._wake()

    def feed_pcm16(self, data: bytes) -> None:
        """Append PCM s16le mono 16 kHz bytes (an even count)."""
        self.feed(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0)

    def end(self) -> None:
        """No more audio; the remaining frames (floor(seconds x fps) in all) follow."""
        with self._lock:
            self._check_open()
            self.stream.finish()
            self._note_ready()
            self._finish_if_complete()
        self._wake()

    def close(self) -> None:
        """Stop now and free everything (a vanished client); pending frames are dropped."""
        with self._lock:
            self.closed = True
            self._jobs.clear()
            self._reorder.clear()
            self._outbox.clear()
        self._wake()

    @property
    def frame_total(self) -> int | None:
        """floor(seconds x fps) after :meth:`end`, else None."""
        return self.stream.frame_total

    @property
    def queue_depth(self) -> int:
        """Frames waiting to be rendered plus messages waiting for the client."""
        return len(self._jobs) + self._outbox.depth

    def frames(self, timeout: float | None = None) -> Iterator[Frame | Skip]:
        """Blocking iterator over frames and skips in index order (thread reader); raises
        :class:`SessionError` on failure."""
        while (item := self._outbox.get(timeout)) is not END:
            if isinstance(item, Exception):
                raise item
            yield item

    async def next_item(self):
        """The next :class:`Frame`, :class:`Skip` or :class:`~.outbox.Event` in order, or None after the last
        (asyncio reader); raises :class:`SessionError` on failure."""
        item = await self._outbox.get_async()
        if isinstance(item, Exception):
            raise item
        return None if item is END else item

    def _check_open(self) -> None:
        if self.closed:
            raise SessionError(f"session {self.id} is closed")
        if self.error:
            raise SessionError(self.error)
        if self.stream.finished:
            raise SessionError("audio sent after the end of the stream")

    def _note_ready(self) -> None:
        """Stamp the frames the audio so far completed (for deadlines and latency). Holds ``_lock``."""
        ready = self.stream.ready(self.stream.total, self._known_ready)
        now = time.perf_counter()
        self._ready_times.extend(itertools.repeat(now, ready - self._known_ready))
        self._known_ready = ready

    # -- engine side -------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return not (self.closed or self.error)

    def wants_plan(self, most: int) -> bool:
        """Whether new audio makes frames computable while fewer than ``most`` wait."""
        with self._lock:
            return self.active and len(self._jobs) < most and self.stream.pending()

    def plan(self) -> Plan | None:
        """The next whisper encoding of this session's audio (None if nothing new)."""
        with self._lock:
            return self.stream.plan() if self.active else None

    def add_prompts(self, plan: Plan, states: np.ndarray) -> None:
        """Turn ``plan``'s encoded ``states`` into jobs with their deadlines."""
        prompts = self.stream.prompts(plan, states)
        with self._lock:
            if not self.active:
                return
            for index, prompt in zip(range(plan.start, plan.stop), prompts):
                ready_at = self._ready_times.popleft()
                due_at = self._due(index, ready_at)
                self._jobs.append(Job(self, index, self.avatar.source_index(index), prompt, ready_at, due_at,
                                      due_at + (self.settings.budget_s or 0.0)))

    def _due(self, index: int, ready_at: float) -> float:
        """Frame ``index``'s time on the media clock (``origin + index / fps``), not before its audio."""
        if self._origin is None:
            self._origin = ready_at - index / self.avatar.fps
        return max(self._origin + index / self.avatar.fps, ready_at)

    def head_deadline(self) -> float | None:
        """Deadline of the next job (None if none)."""
        with self._lock:
            return self._jobs[0].deadline if self._jobs else None

    def take(self) -> Job | None:
        """The next job, now in flight (it must end in :meth:`deliver`, :meth:`skip` or :meth:`fail`)."""
        with self._lock:
            if not self._jobs:
                return None
            self._in_flight += 1
            return self._jobs.popleft()

    def can_skip(self) -> bool:
        return self.settings.budget_s is not None

    def skip(self, job: Job) -> None:
        """``job`` missed its deadline: the client gets a skip in its place."""
        with self._lock:
            self._in_flight -= 1
            self._place(job.index, None)
        self._wake()

    def deliver(self, job: Job, jpeg: bytes | None, image: np.ndarray | None) -> None:
        """``job``'s frame is ready (compositors call this in any order); late frames become skips."""
        done_at = time.perf_counter()
        late = self.settings.budget_s is not None and done_at > job.deadline
        frame = None if late else Frame(job.index, jpeg, image if self.settings.keep_images else None,
                                        job.ready_at, job.due_at, done_at)
        with self._lock:
            self._in_flight -= 1
            self._place(job.index, frame)
        self._wake()

    def release(self, job: Job) -> None:
        """``job`` will never be delivered (its session failed)."""
        with self._lock:
            self._in_flight -= 1
        self._wake()

    def fail(self, message: str, job: Job | None = None) -> None:
        """The engine could not serve this session (``job``: the one in flight that failed)."""
        with self._lock:
            if job is not None:
                self._in_flight -= 1
            if not self.active:
                return
            self.error = message
            self._jobs.clear()
            self._reorder.clear()
        log.error("session %d failed: %s", self.id, message)
        self._outbox.put(SessionError(message))
        self._wake()

    @property
    def finished(self) -> bool:
        """Nothing left to do: closed, failed, or every frame out (and no job in flight)."""
        with self._lock:
            if not self.active:
                return self._in_flight == 0
            return self._end_sent

    def _place(self, index: int, frame: Frame | None) -> None:
        """Put frame ``index`` (None: a skip) in order; forward what is complete. Holds ``_lock``."""
        if not self.active:
            return
        self._reorder[index] = frame
        try:
            while self._next_out in self._reorder:
                self._forward(self._next_out, self._reorder.pop(self._next_out))
                self._next_out += 1
        except OutboxFull as exc:
            self.error = str(exc)
            self._jobs.clear()
            self._reorder.clear()
            self._outbox.clear()
            self._outbox.put(SessionError(str(exc)))
            return
        self._finish_if_complete()

    def _forward(self, index: int, frame: Frame | None) -> None:
        if frame is not None and self._outbox.has_room_for_frame():
            self.sent += 1
            self._stats.sent(frame.latency)
            self._outbox.put(frame)
        else:
            self.skipped += 1
            self._stats.skipped()
            self._outbox.put(Skip(index, self.skipped))

    def _finish_if_complete(self) -> None:
        """After the last frame, tell the reader (once). Holds ``_lock``."""
        if not self._end_sent and self.stream.done and self._next_out == self.stream.frame_total:
            self._end_sent = True
            self._outbox.put(END)

"""One client's stream on one avatar: audio in, frames (or skips) out in index order, on a media clock.

Client side (any thread): :meth:`Session.feed` / ``feed_pcm16`` / ``end`` / ``interrupt`` / ``finish`` /
``close``; read with :meth:`Session.frames` (thread) or :meth:`Session.next_item` (asyncio). Engine side,
the small interface the scheduler uses: ``wants_plan``/``plan``/``add_prompts`` (audio to prompts),
``head_deadline``/``waiting_deadlines``/``take`` (earliest-deadline-first picking), ``tick`` (rest frames
of live sessions), ``skip``/``deliver``/``release``/``fail`` (outcomes), ``finished``.

The audio arrives as utterances (:class:`Utterance`): a plain session is one utterance from frame 0 and
ends with it. A live session (issue 15) runs from its opening until :meth:`finish`: frame j is due at
``opened + delay + j / fps`` (``delay``: the audio a frame needs after its time, see :func:`audio_delay`);
frames no utterance covers show the avatar at rest (its source frames, unaltered, made by ``tick`` at
their due time); an utterance starts on the frame of the clock when its first audio arrived, blends in
and out of rest over ``BLEND_FRAMES`` frames, and is announced by ``state`` / ``utterance_done`` events in
order with the frames. A plain session's clock starts when frame 0's audio is complete: frame i is due
at ``origin + i / fps``, or when its audio is complete if that is later.

A frame that cannot be out by its due time plus the latency budget is skipped: the client gets a
:class:`~.outbox.Skip` in its place, so indices stay exact.

Audio is accepted only ``max_audio_ahead_s`` ahead of the clock (the end of the audio fed, on the media
timeline, minus the media time now; live audio sent in real time is :func:`audio_delay` ahead): a chunk
beyond is refused whole with a :class:`SessionError` and counted, so memory stays bounded per session.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ...audio.features import WINDOW
from ...audio.load import SAMPLE_RATE
from ...audio.pcm import from_pcm16
from ...errors import MuseTalkError
from .clock import AudioTimeline, MediaClock, frame_sample, frame_span
from .outbox import END, Event, Frame, Outbox, OutboxFull, Skip
from .stats import EngineStats
from .streaming import STATE_SAMPLES, FeatureStream, Plan

log = logging.getLogger(__name__)

BLEND_FRAMES = 3
DEFAULT_MAX_AUDIO_AHEAD_S = 30.0
RestRenderer = Callable[[object, int], "tuple[bytes | None, np.ndarray | None] | None"]


class SessionError(MuseTalkError):
    """A session failed or was used wrongly (audio after the end, a closed session)."""


def audio_delay(fps: float, lookahead_s: float) -> float:
    """Seconds after a frame's time until the audio it needs (its whisper window, the look-ahead and one
    frame of arrival granularity) is complete: a live session's playout delay before its budget."""
    return (WINDOW // 2 + 1) * STATE_SAMPLES / SAMPLE_RATE + lookahead_s + 1 / fps


@dataclass(frozen=True)
class SessionSettings:
    """lookahead_s: audio needed after a frame's window; budget_s: latency budget (None: never skip);
    outbox_frames: frames waiting for a slow client before further ones become skips; keep_images: keep
    the RGB image in each Frame; live: a live session; encode_jpeg: frames carry their JPEG (False: for an
    output that encodes video itself); max_audio_ahead_s: audio accepted ahead of the clock."""

    lookahead_s: float
    budget_s: float | None
    outbox_frames: int = 50
    keep_images: bool = False
    live: bool = False
    encode_jpeg: bool = True
    max_audio_ahead_s: float = DEFAULT_MAX_AUDIO_AHEAD_S


@dataclass
class Job:
    """One frame to render: frame ``index`` of ``utterance`` (its global index), avatar ``source`` frame,
    prompt float32 (50, 384), and ``blend`` (1: all speech, less: mixed with the rest frame); its audio was
    complete at ``ready_at``, it is due at ``due_at`` and must be out by ``deadline``."""

    session: "Session"
    utterance: "Utterance"
    index: int
    source: int
    prompt: np.ndarray
    ready_at: float
    due_at: float
    deadline: float
    blend: float = 1.0


@dataclass
class Utterance:
    """The audio of one utterance; its frame k is the session's frame ``start + k``. ``stop``: the index
    after its last frame, once known (its end, or an interruption)."""

    stream: FeatureStream
    start: int
    ready_times: deque = field(default_factory=deque)  # audio-complete times of ready, unplanned frames
    known_ready: int = 0
    stop: int | None = None

    def covers(self, index: int) -> bool:
        return self.start <= index and (self.stop is None or index < self.stop)


class Session:
    """See the module docstring. ``wake`` is called whenever the scheduler may have new work."""

    def __init__(self, avatar, sid: int, settings: SessionSettings, wake: Callable[[], None],
                 stats: EngineStats, loop: asyncio.AbstractEventLoop | None) -> None:
        self.avatar = avatar
        self.id = sid
        self.settings = settings
        self.live = settings.live
        self.closed = False
        self.error: str | None = None
        self.skipped = 0
        self.sent = 0
        self.opened_at = time.perf_counter()
        self.speaking_since: float | None = None if self.live else self.opened_at
        self._wake = wake
        self._stats = stats
        self._lock = threading.Lock()
        self._utterances: deque[Utterance] = deque()
        self._origin: float | None = None  # plain sessions: the media clock's frame 0
        self._clock = 0  # live sessions: the next frame the clock has not reached
        self._jobs: deque[Job] = deque()
        self._in_flight = 0
        self._next_out = 0
        self._reorder: dict[int, Frame | None] = {}
        self._events: dict[int, list[Event]] = {}
        self._end_sent = False
        self._frame_total: int | None = None
        self._outbox = Outbox(loop, settings.outbox_frames, max_items=8 * settings.outbox_frames)
        self._audio = AudioTimeline()  # the speech on the media clock, until its frame slots are played
        self._spoken: deque[tuple[int, int]] = deque()  # frames [start, stop) of ended utterances, not yet played
        if not self.live:
            self._utterances.append(Utterance(FeatureStream(avatar.fps, settings.lookahead_s), 0))

    # -- client side -------------------------------------------------------------------------------
    def feed(self, samples: np.ndarray, known_ahead: bool = False) -> int:
        """Append float32 (N,) mono samples at 16 kHz (values in [-1, 1]); in a live session, audio after
        an utterance's end starts the next utterance. ``known_ahead``: the audio exists before it plays (a
        synthesised ``say``, not a live microphone), so a new utterance starts on the clock's next frame
        instead of waiting for the look-ahead a real-time stream needs. Returns the frame whose time these
        samples start at.
        Raises :class:`SessionError` when they would end more than ``max_audio_ahead_s`` ahead of the clock."""
        with self._lock:
            self._check_open()
            if (ahead := self._ahead_s(len(samples))) > self.settings.max_audio_ahead_s:
                self._stats.audio_refused()
                raise SessionError(f"audio refused: {ahead:.1f} s ahead of the session's clock, over its "
                                   f"{self.settings.max_audio_ahead_s:g} s cap (--max-audio-ahead-s): "
                                   f"send it in real time")
            utterance = self._open_utterance(known_ahead)
            frame = utterance.start + utterance.stream.total * utterance.stream.fps // SAMPLE_RATE
            self._audio.add(frame_sample(utterance.start, self.avatar.fps, SAMPLE_RATE) + utterance.stream.total,
                            samples)
            utterance.stream.push(samples)
            self._note_ready(utterance)
        self._wake()
        return int(frame)

    def audio_wait_s(self, samples: int) -> float:
        """Seconds until ``samples`` more samples fit under ``max_audio_ahead_s`` (0: now)."""
        with self._lock:
            return max(0.0, self._ahead_s(samples) - self.settings.max_audio_ahead_s)

    def _ahead_s(self, samples: int) -> float:
        """Seconds between the media time now and the end of the audio fed so far plus ``samples`` more.
        Holds ``_lock``."""
        now = time.perf_counter()
        current = self._current()
        if current is not None and not current.stream.finished:
            start_s = current.start / self.avatar.fps + current.stream.total / SAMPLE_RATE
        elif self.live:
            start_s = self._next_start(now) / self.avatar.fps
        else:
            start_s = current.stream.total / SAMPLE_RATE if current else 0.0
        if self.live:
            media_now = now - self.due(0)
        else:
            media_now = 0.0 if self._origin is None else now - self._origin
        return start_s + samples / SAMPLE_RATE - media_now

    def pad_to_clock(self, known_ahead: bool = False) -> int:
        """Live: before more audio of the open utterance, silence up to the clock's present frame when the
        utterance's next sample would start behind it (audio that arrives late shifts its frames and
        itself together instead of starting cut); ``known_ahead`` as for :meth:`feed` (the present frame is
        then the clock's next one). Returns the samples of silence fed (0: none needed)."""
        with self._lock:
            self._check_open()
            current = self._current()
            if not self.live or current is None or current.stream.finished:
                return 0
            fps = self.avatar.fps
            present = self._clock if known_ahead else self._present_frame(time.perf_counter())
            behind = frame_sample(present, fps, SAMPLE_RATE) - frame_sample(current.start, fps, SAMPLE_RATE) \
                - current.stream.total
            if behind <= 0:
                return 0
            current.stream.push(np.zeros(behind, np.float32))
            self._note_ready(current)
        self._wake()
        return behind

    def notify(self, message: dict) -> None:
        """Send ``message`` to the client now, ahead of the frames waiting (e.g. speech to play)."""
        with self._lock:
            if self.active and not self._end_sent:
                self._outbox.put(Event(message))

    def feed_pcm16(self, data: bytes) -> int:
        """Append PCM s16le mono 16 kHz bytes (an even count)."""
        return self.feed(from_pcm16(data))

    def end(self) -> None:
        """The current utterance is complete: its remaining frames (floor(seconds x fps) in all) follow."""
        with self._lock:
            self._check_open()
            utterance = self._current()
            if utterance is None or utterance.stream.finished:
                raise SessionError("no utterance to end: send audio first" if self.live else
                                   "{\"type\": \"end\"} sent twice")
            utterance.stream.finish()
            utterance.stop = utterance.start + utterance.stream.frame_total
            self._frame_total = None if self.live else utterance.stream.frame_total
            self._clock = min(self._clock, utterance.stop)  # rest frames the open utterance held back
            self._note_ready(utterance)
            self._blend_out(utterance)
            self._after_placing()
        self._wake()

    def interrupt(self) -> int | None:
        """Live: drop the rest of the speech (the frames not yet sent) and return to rest. Returns the
        frame from which on the session is at rest (an output holding frames before it may drop their
        speech too); None when it was not speaking."""
        with self._lock:
            self._check_open()
            if not self._utterances:
                return None
            cut = max(self._next_out, self._utterances[0].start)
            first = self._utterances[0]
            self._utterances.clear()
            self._jobs = deque(j for j in self._jobs if j.index < cut)
            self._reorder = {i: f for i, f in self._reorder.items() if i < cut}
            self._events = {i: e for i, e in self._events.items() if i < cut}
            self._clock = min(self._clock, cut)
            self._audio.drop_from(frame_sample(cut, self.avatar.fps, SAMPLE_RATE))
            if cut > first.start:
                first.stop = cut
                self._end_utterance(first, interrupted=True)
            self.speaking_since = None
        self._wake()
        return cut

    def finish(self) -> None:
        """Live: end the session now (the client said ``close``)."""
        with self._lock:
            if self.active and not self._end_sent:
                self._end_sent = True
                self._outbox.put(END)
        self._wake()

    def close(self) -> None:
        """Stop now and free everything (a vanished client); pending frames are dropped."""
        with self._lock:
            self.closed = True
            self._jobs.clear()
            self._reorder.clear()
            self._utterances.clear()
            self._outbox.clear()
            self._audio.clear()
        self._wake()

    @property
    def clock(self) -> MediaClock:
        """Live: the session's media clock (frame 0 due at its origin; outputs add their playout delay)."""
        if not self.live:
            raise SessionError("only a live session plays on a clock from its opening")
        return MediaClock(self.due(0), self.avatar.fps)

    def take_audio(self, index: int) -> np.ndarray | None:
        """The speech of frame ``index``'s slot: float32 (n,) mono 16 kHz samples [floor(i x 16000 / fps),
        floor((i + 1) x 16000 / fps)) of the session's timeline, zeros where none was fed; None if nothing
        was fed there (silence). Taken at the slot's playout, it forgets everything before; a skipped frame's
        audio is still there (the picture repeats, the speech plays on time)."""
        span = frame_span(index, self.avatar.fps, SAMPLE_RATE)
        with self._lock:
            while self._spoken and self._spoken[0][1] <= index:
                self._spoken.popleft()
            return self._audio.take(*span)

    def speaks(self, index: int) -> bool:
        """Whether an utterance covers frame ``index`` (asked at its playout, before :meth:`take_audio`)."""
        with self._lock:
            return (any(u.covers(index) for u in self._utterances)
                    or any(start <= index < stop for start, stop in self._spoken))

    @property
    def frame_total(self) -> int | None:
        """Plain sessions: floor(seconds x fps) after :meth:`end`, else None."""
        return self._frame_total

    @property
    def utterance_open(self) -> bool:
        """Whether audio arrived for the current utterance and it has not ended."""
        current = self._current()
        return current is not None and current.stream.total > 0 and not current.stream.finished

    @property
    def speaking(self) -> bool:
        """Whether it renders speech (a plain session always, until it ends)."""
        return not self.live or bool(self._utterances)

    @property
    def queue_depth(self) -> int:
        """Frames waiting to be rendered plus messages waiting for the client."""
        return len(self._jobs) + self._outbox.depth

    def frames(self, timeout: float | None = None) -> Iterator[Frame | Skip | Event]:
        """Blocking iterator over frames, skips and events in index order (thread reader); raises
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

    def ready_items(self) -> list:
        """Every :class:`Frame`, :class:`Skip` and :class:`~.outbox.Event` waiting now, in order, with None
        after the last (without blocking: a reader that buffers ahead of its own playout); raises
        :class:`SessionError` on failure."""
        items = []
        for item in self._outbox.pop_ready():
            if isinstance(item, Exception):
                raise item
            items.append(None if item is END else item)
        return items

    def _check_open(self) -> None:
        if self.closed:
            raise SessionError(f"session {self.id} is closed")
        if self.error:
            raise SessionError(self.error)
        if self._end_sent and self.live:
            raise SessionError("the session has ended")

    def _current(self) -> Utterance | None:
        return self._utterances[-1] if self._utterances else None

    def _open_utterance(self, known_ahead: bool = False) -> Utterance:
        """The utterance new audio belongs to (live: a new one after an end, see :meth:`feed` for
        ``known_ahead``). Holds ``_lock``."""
        current = self._current()
        if current is not None and not current.stream.finished:
            return current
        if not self.live:
            raise SessionError("audio sent after the end of the stream")
        now = time.perf_counter()
        start = self._next_start(now, known_ahead)
        utterance = Utterance(FeatureStream(self.avatar.fps, self.settings.lookahead_s), start)
        self._utterances.append(utterance)
        if self.speaking_since is None:
            self.speaking_since = now
        self._events.setdefault(start, []).append(Event({"type": "state", "state": "speaking"}))
        return utterance

    def _next_start(self, now: float, known_ahead: bool = False) -> int:
        """Live: the frame a new utterance starting at ``now`` begins on (audio ``known_ahead``: the clock's
        next frame). Holds ``_lock``."""
        current = self._current()
        present = self._clock if known_ahead else self._present_frame(now)
        return max(self._clock, present, current.stop if current else 0)

    def _present_frame(self, now: float) -> int:
        """Live: the first frame whose audio has not all arrived by ``now`` if it plays in real time (a new
        utterance starts there; its due time is :func:`audio_delay` later)."""
        return math.ceil((now - self.opened_at) * self.avatar.fps)

    def _note_ready(self, utterance: Utterance) -> None:
        """Stamp the frames the audio so far completed (for deadlines and latency). Holds ``_lock``."""
        stream = utterance.stream
        ready = stream.ready(stream.total, utterance.known_ready)
        now = time.perf_counter()
        utterance.ready_times.extend(itertools.repeat(now, ready - utterance.known_ready))
        utterance.known_ready = ready

    def _blend_out(self, utterance: Utterance) -> None:
        """Fade the last frames of a finished utterance back to rest (those not taken yet). Holds ``_lock``."""
        if not self.live:
            return
        for job in self._jobs:
            if utterance.covers(job.index):
                job.blend = min(job.blend, _blend(job.index - utterance.start, utterance.stop - utterance.start))

    # -- engine side -------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return not (self.closed or self.error)

    def wants_plan(self, most: int) -> bool:
        """Whether new audio makes frames computable while fewer than ``most`` wait."""
        with self._lock:
            return self.active and len(self._jobs) < most and self._planable() is not None

    def _planable(self) -> Utterance | None:
        return next((u for u in self._utterances if u.stream.pending()), None)

    def plan(self) -> tuple[Utterance, Plan] | None:
        """The next whisper encoding of this session's audio (None if nothing new)."""
        with self._lock:
            if not self.active or (utterance := self._planable()) is None:
                return None
            return utterance, utterance.stream.plan()

    def add_prompts(self, planned: tuple[Utterance, Plan], states: np.ndarray) -> None:
        """Turn the encoded ``states`` of a :meth:`plan` into jobs with their deadlines."""
        utterance, plan = planned
        prompts = utterance.stream.prompts(plan, states)
        with self._lock:
            if not self.active or not self._playing(utterance):
                return  # failed, or interrupted while its audio was encoded
            total = utterance.stream.frame_total
            for k, prompt in zip(range(plan.start, plan.stop), prompts):
                ready_at = utterance.ready_times.popleft()
                index = utterance.start + k
                if not utterance.covers(index):
                    continue  # interrupted meanwhile
                due_at = self._due(index, ready_at)
                blend = _blend(k, total) if self.live else 1.0
                self._jobs.append(Job(self, utterance, index, self.avatar.source_index(index), prompt, ready_at,
                                      due_at, due_at + (self.settings.budget_s or 0.0), blend))

    def _due(self, index: int, ready_at: float) -> float:
        """Frame ``index``'s time on the media clock, not before its audio (plain sessions)."""
        if self.live:
            return self.due(index)
        if self._origin is None:
            self._origin = ready_at - index / self.avatar.fps
        return max(self._origin + index / self.avatar.fps, ready_at)

    def due(self, index: int) -> float:
        """Live: when frame ``index`` is due."""
        return self.opened_at + audio_delay(self.avatar.fps, self.settings.lookahead_s) + index / self.avatar.fps

    def head_deadline(self) -> float | None:
        """Deadline of the next job (None if none)."""
        with self._lock:
            return self._jobs[0].deadline if self._jobs else None

    def waiting_deadlines(self) -> list[float]:
        """Deadlines of the jobs waiting, in the order :meth:`take` gives them (non-decreasing)."""
        with self._lock:
            return [job.deadline for job in self._jobs]

    def take(self) -> Job | None:
        """The next job, now in flight (it must end in :meth:`deliver`, :meth:`skip`, :meth:`release` or
        :meth:`fail`)."""
        with self._lock:
            if not self._jobs:
                return None
            self._in_flight += 1
            return self._jobs.popleft()

    def next_tick(self) -> float | None:
        """Live: when the clock reaches its next frame (None: not live or over)."""
        return self.due(self._clock) if self.live and self.active and not self._end_sent else None

    def sources_ahead(self, count: int) -> list[int]:
        """Live: the avatar source frames of the next ``count`` frames of the clock."""
        with self._lock:
            first = self._clock
        return [self.avatar.source_index(i) for i in range(first, first + count)]

    def tick(self, now: float, render_rest: RestRenderer) -> list[tuple[int, int]]:
        """Live: place the rest frames due by ``now`` (``render_rest(avatar, source)`` -> (jpeg, image), or
        None when it is not ready) and send the frames due by then. Returns the (index, source) of the rest
        frames that were not ready: the caller makes them and places each with :meth:`place_rest`."""
        pending = []
        with self._lock:
            while self.active and not self._end_sent and self.due(self._clock) <= now:
                index = self._clock
                self._clock += 1
                if any(u.covers(index) for u in self._utterances):
                    continue
                source = self.avatar.source_index(index)
                if (rest := render_rest(self.avatar, source)) is None:
                    pending.append((index, source))
                else:
                    self._reorder[index] = self._rest_frame(index, *rest, now)
            if self.active and not self._end_sent:
                self._drain()
        return pending

    def place_rest(self, index: int, jpeg: bytes | None, image: np.ndarray | None, ready_at: float) -> None:
        """Live: rest frame ``index``, made after the clock reached it (see :meth:`tick`)."""
        with self._lock:
            if self.active and not self._end_sent and index >= self._next_out and index not in self._reorder:
                self._reorder[index] = self._rest_frame(index, jpeg, image, ready_at)
                self._drain()

    def _rest_frame(self, index: int, jpeg: bytes | None, image: np.ndarray | None, ready_at: float) -> Frame:
        return Frame(index, jpeg if self.settings.encode_jpeg else None, image if self.settings.keep_images else None,
                     ready_at, self.due(index), time.perf_counter())

    def skip(self, job: Job) -> None:
        """``job`` missed its deadline: the client gets a skip in its place."""
        with self._lock:
            self._in_flight -= 1
            self._place_job(job, None)
        self._wake()

    def deliver(self, job: Job, jpeg: bytes | None, image: np.ndarray | None) -> None:
        """``job``'s frame is ready (compositors call this in any order); late frames become skips."""
        done_at = time.perf_counter()
        late = self.settings.budget_s is not None and done_at > job.deadline
        frame = None if late else Frame(job.index, jpeg, image if self.settings.keep_images else None,
                                        job.ready_at, job.due_at, done_at, speech=True)
        with self._lock:
            self._in_flight -= 1
            self._place_job(job, frame)
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
            self._set_error(message)
        log.error("session %d failed: %s", self.id, message)
        self._wake()

    @property
    def finished(self) -> bool:
        """Nothing left to do: closed, failed, or ended (and no job in flight)."""
        with self._lock:
            if not self.active:
                return self._in_flight == 0
            return self._end_sent

    def _set_error(self, message: str) -> None:
        """Fail: drop what waits, tell the reader. Holds ``_lock``."""
        self.error = message
        self._jobs.clear()
        self._reorder.clear()
        self._utterances.clear()
        self._outbox.clear()
        self._audio.clear()
        self._outbox.put(SessionError(message))

    def _place_job(self, job: Job, frame: Frame | None) -> None:
        """Place a rendered (or skipped) job unless an interruption dropped its utterance (a frame still
        rendering for it must not land in the slot of the utterance that barged in). Holds ``_lock``."""
        if not self.live or (job.utterance.covers(job.index) and self._playing(job.utterance)):
            self._place(job.index, frame)

    def _playing(self, utterance: Utterance) -> bool:
        """Whether ``utterance`` is still one of this session's (not interrupted). Holds ``_lock``."""
        return any(u is utterance for u in self._utterances)

    def _place(self, index: int, frame: Frame | None) -> None:
        """Put frame ``index`` (None: a skip) in order; forward what is complete. Holds ``_lock``."""
        if not self.active or self._end_sent:
            return
        self._reorder[index] = frame
        self._drain()

    def _drain(self) -> None:
        """Forward the frames complete in order (live: those due by now). Holds ``_lock``."""
        now = time.perf_counter()
        try:
            while self._next_out in self._reorder and (not self.live or self.due(self._next_out) <= now):
                self._forward(self._next_out, self._reorder.pop(self._next_out))
                self._next_out += 1
                self._after_placing()
        except OutboxFull as exc:
            self._set_error(str(exc))
            return
        self._after_placing()

    def _forward(self, index: int, frame: Frame | None) -> None:
        for event in self._events.pop(index, ()):
            self._outbox.put(event)
        if frame is not None and self._outbox.has_room_for_frame():
            self.sent += 1
            self._stats.sent(frame.render_s if frame.speech else None)
            self._outbox.put(frame)
        else:
            self.skipped += 1
            self._stats.skipped()
            self._outbox.put(Skip(index, self.skipped, speech=any(u.covers(index) for u in self._utterances)))

    def _after_placing(self) -> None:
        """Close the utterances whose frames are all out; a plain session ends with its one. Holds ``_lock``."""
        while self._utterances and (u := self._utterances[0]).stop is not None and self._next_out >= u.stop:
            self._utterances.popleft()
            self._end_utterance(u, interrupted=False)
        if not self.live and not self._utterances and not self._end_sent:
            self._end_sent = True
            self._outbox.put(END)

    def _end_utterance(self, utterance: Utterance, interrupted: bool) -> None:
        """Announce an utterance's end (in order, before frame ``stop``). Holds ``_lock``."""
        if not self.live:
            return
        self._spoken.append((utterance.start, utterance.stop))
        done = {"type": "utterance_done", "frames": utterance.stop - utterance.start}
        if interrupted:
            done["interrupted"] = True
        events = [Event(done)]
        if not self._utterances:
            events.append(Event({"type": "state", "state": "rest"}))
            self.speaking_since = None
        if interrupted:
            for event in events:
                self._outbox.put(event)
        else:
            self._events.setdefault(utterance.stop, []).extend(events)


def _blend(k: int, total: int | None) -> float:
    """Share of speech in frame ``k`` of an utterance of ``total`` frames (None: not known yet)."""
    ramp_in = (k + 1) / (BLEND_FRAMES + 1)
    ramp_out = (total - k) / (BLEND_FRAMES + 1) if total is not None else 1.0
    return min(1.0, ramp_in, ramp_out)

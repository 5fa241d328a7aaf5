"""One model, many live sessions: audio chunks in, composited frames out, in order, at the avatar's fps.

    engine = Engine(mt)                       # starts its scheduler thread
    session = engine.open(avatar)             # avatar: musetalk.realtime.avatar.Avatar
    session.feed(samples_16k)                 # float32 (N,) or feed_pcm16(bytes); any sizes, any thread
    session.end()
    for frame in session.frames(): ...        # Frame(index, image uint8 (H, W, 3) RGB, jpeg bytes, times)

The scheduler thread loops: (1) one batched whisper pass over the new audio windows of every session
(:mod:`.streaming`), (2) one ``generate_latents`` call over up to ``batch_size`` ready frames taken
round-robin from all sessions (the cached UNet inputs of the avatars' source frames), (3) hands the faces
to a small compositor pool (``paste_face`` with the cached blend masks, JPEG encoding), whose results
each session puts back in order.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
import torch

from ..errors import MuseTalkError
from .streaming import DEFAULT_LOOKAHEAD_S, FeatureStream, Plan, encode_plans

log = logging.getLogger(__name__)

_END = object()


class SessionError(MuseTalkError):
    """A session failed or was used wrongly (audio after the end, a closed session)."""


@dataclass
class Frame:
    """One output frame. ``image``: uint8 (H, W, 3) RGB; ``jpeg``: its JPEG bytes (None when the engine
    does not encode); ``ready_at``: ``time.perf_counter()`` when the audio its prompt needs (look-ahead
    included) had arrived; ``done_at``: when it was composited and queued for the client."""

    index: int
    image: np.ndarray
    jpeg: bytes | None
    ready_at: float
    done_at: float


@dataclass
class _Job:
    session: "Session"
    index: int
    source: int
    prompt: np.ndarray
    ready_at: float


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """uint8 (H, W, 3) RGB -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SessionError("JPEG encoding failed")
    return buf.tobytes()


class _Outbox:
    """Where finished frames go: a thread queue, or an asyncio queue on ``loop`` (filled thread-safely)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.queue: queue.Queue | asyncio.Queue = asyncio.Queue() if loop is not None else queue.Queue()

    def put(self, item) -> None:
        if self.loop is None:
            self.queue.put(item)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class Session:
    """One client's stream on one avatar. ``feed``/``end``/``close`` may be called from any thread;
    read frames with :meth:`frames` (thread outbox) or :meth:`next_frame` (asyncio outbox)."""

    def __init__(self, engine: "Engine", avatar, sid: int, lookahead_s: float,
                 loop: asyncio.AbstractEventLoop | None) -> None:
        self.engine = engine
        self.avatar = avatar
        self.id = sid
        self.stream = FeatureStream(avatar.fps, lookahead_s)
        self.closed = False
        self.error: str | None = None
        self._lock = threading.Lock()
        self._ready_times: deque[float] = deque()  # arrival time of frames ready but not yet planned
        self._known_ready = 0
        self._prompts: deque[_Job] = deque()
        self._in_flight = 0
        self._next_out = 0
        self._reorder: dict[int, Frame] = {}
        self._end_sent = False
        self._outbox = _Outbox(loop)

    # -- client side -------------------------------------------------------------------------------
    def feed(self, samples: np.ndarray) -> None:
        """Append float32 (N,) mono samples at 16 kHz (values in [-1, 1])."""
        with self._lock:
            self._check_open()
            self.stream.push(samples)
            self._note_ready()
        self.engine.wake()

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
        self.engine.wake()

    def close(self) -> None:
        """Stop now and free everything (a vanished client); pending frames are dropped."""
        with self._lock:
            self.closed = True
            self._prompts.clear()
        self.engine.wake()

    @property
    def frame_total(self) -> int | None:
        """floor(seconds x fps) after :meth:`end`, else None."""
        return self.stream.frame_total

    def frames(self, timeout: float | None = None) -> Iterator[Frame]:
        """Blocking iterator over the frames in order (thread outbox); raises :class:`SessionError` on failure."""
        while True:
            item = self._outbox.queue.get(timeout=timeout)
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    async def next_frame(self) -> Frame | None:
        """The next frame in order, or None after the last (asyncio outbox)."""
        item = await self._outbox.queue.get()
        if isinstance(item, Exception):
            raise item
        return None if item is _END else item

    def _check_open(self) -> None:
        if self.closed:
            raise SessionError(f"session {self.id} is closed")
        if self.error:
            raise SessionError(self.error)
        if self.stream.finished:
            raise SessionError("audio sent after the end of the stream")

    def _note_ready(self) -> None:
        """Stamp the frames the audio so far completed (for latency)."""
        ready = self.stream.ready(self.stream.total, self._known_ready)
        now = time.perf_counter()
        self._ready_times.extend(itertools.repeat(now, ready - self._known_ready))
        self._known_ready = ready

    # -- engine side -------------------------------------------------------------------------------
    def _plan(self) -> Plan | None:
        with self._lock:
            return None if self.closed or self.error else self.stream.plan()

    def _add_prompts(self, plan: Plan, states: np.ndarray) -> None:
        prompts = self.stream.prompts(plan, states)
        with self._lock:
            if self.closed:
                return
            for index, prompt in zip(range(plan.start, plan.stop), prompts):
                self._prompts.append(_Job(self, index, self.avatar.source_index(index), prompt,
                                          self._ready_times.popleft()))

    def _take(self) -> _Job | None:
        with self._lock:
            if not self._prompts:
                return None
            self._in_flight += 1
            return self._prompts.popleft()

    def _wants_plan(self, batch_size: int) -> bool:
        with self._lock:
            return not self.closed and not self.error and len(self._prompts) < batch_size and self.stream.pending()

    def _has_prompts(self) -> bool:
        return bool(self._prompts)

    def _deliver(self, frame: Frame) -> None:
        """Called by compositors in any order; forwards frames to the outbox in index order."""
        with self._lock:
            self._in_flight -= 1
            if self.closed:
                return
            self._reorder[frame.index] = frame
            while self._next_out in self._reorder:
                self._outbox.put(self._reorder.pop(self._next_out))
                self._next_out += 1
            finished = self._finish_if_complete()
        if finished:
            self.engine.wake()  # outside the session lock: the scheduler takes its own lock first

    def _finish_if_complete(self) -> bool:
        """After the last frame, tell the reader (once); whether it did. Holds ``_lock``."""
        if self._end_sent or not (self.stream.done and self._next_out == self.stream.frame_total):
            return False
        self._end_sent = True
        self._outbox.put(_END)
        return True

    def _abandon(self) -> None:
        """A taken frame that will never be delivered (its batch failed)."""
        with self._lock:
            self._in_flight -= 1
        self.engine.wake()

    def _fail(self, message: str) -> None:
        with self._lock:
            if self.error or self.closed:
                return
            self.error = message
            self._prompts.clear()
        self._outbox.put(SessionError(message))

    @property
    def _finished(self) -> bool:
        """Nothing left to do: closed, failed, or every frame delivered."""
        with self._lock:
            if self.closed or self.error:
                return self._in_flight == 0
            return self.stream.done and self._next_out == self.stream.frame_total


class Engine:
    """The scheduler: one :class:`~musetalk.MuseTalk` serving every open :class:`Session`.

    batch_size: most frames per ``generate_latents`` call; compositors: threads pasting and encoding;
    jpeg_quality: None to skip JPEG encoding; lookahead_s: audio needed after a frame's last feature frame.
    """

    def __init__(self, mt, batch_size: int = 16, compositors: int = 2, jpeg_quality: int | None = 85,
                 lookahead_s: float = DEFAULT_LOOKAHEAD_S) -> None:
        if batch_size < 1:
            raise MuseTalkError(f"batch_size must be at least 1, got {batch_size}")
        self.mt = mt
        self.batch_size = batch_size
        self.jpeg_quality = jpeg_quality
        self.lookahead_s = lookahead_s
        self._sessions: list[Session] = []
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._stopping = False
        self._pool = ThreadPoolExecutor(compositors, thread_name_prefix="musetalk-composite")
        self._slots = threading.Semaphore(2 * compositors * batch_size)  # bounds frames waiting to be composited
        self._thread = threading.Thread(target=self._run, name="musetalk-engine", daemon=True)
        self._thread.start()

    def open(self, avatar, loop: asyncio.AbstractEventLoop | None = None) -> Session:
        """A new session on ``avatar``; pass the running ``loop`` to read frames with ``await next_frame()``."""
        with self._cond:
            if self._stopping:
                raise SessionError("the engine is shut down")
            session = Session(self, avatar, next(self._ids), self.lookahead_s, loop)
            self._sessions.append(session)
        log.debug("session %d opened on avatar %s", session.id, avatar.name)
        return session

    @property
    def sessions(self) -> int:
        """Live sessions."""
        with self._cond:
            return len(self._sessions)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        """Stop the scheduler and the compositors (sessions still open get nothing more)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- scheduler thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._work():
                    self._cond.wait(timeout=1.0)
                if self._stopping:
                    return
                sessions = list(self._sessions)
            self._step(sessions)

    def _work(self) -> bool:
        """Drop finished sessions; whether any live one has something to compute. Holds ``_cond``."""
        self._sessions = [s for s in self._sessions if not s._finished]
        return any(s._has_prompts() or s._wants_plan(self.batch_size) for s in self._sessions)

    def _step(self, sessions: list[Session]) -> None:
        self._encode_audio([s for s in sessions if s._wants_plan(self.batch_size)])
        jobs = self._pick(sessions)
        if jobs:
            self._generate(jobs)

    def _encode_audio(self, sessions: list[Session]) -> None:
        """One batched whisper pass over the new windows of ``sessions``."""
        planned = [(s, p) for s in sessions if (p := s._plan()) is not None]
        if not planned:
            return
        try:
            states = encode_plans(self.mt.whisper, self.mt.feature_extractor, [p for _, p in planned],
                                  self.mt.device, self.mt.dtype)
        except Exception as exc:  # noqa: BLE001 - a failed batch fails its sessions, the engine goes on
            log.exception("audio encoding failed")
            for s, _ in planned:
                s._fail(f"audio encoding failed: {exc}")
            return
        for (s, plan), st in zip(planned, states):
            s._add_prompts(plan, st)

    def _pick(self, sessions: list[Session]) -> list[_Job]:
        """Up to ``batch_size`` ready frames, round-robin over the sessions (oldest frames first in each)."""
        jobs: list[_Job] = []
        live = list(sessions)
        while live and len(jobs) < self.batch_size:
            for s in list(live):
                if len(jobs) == self.batch_size:
                    break
                job = s._take()
                if job is None:
                    live.remove(s)
                else:
                    jobs.append(job)
        return jobs

    def _generate(self, jobs: list[_Job]) -> None:
        """One ``generate_latents`` call for the frames with a face; then composite every job."""
        with_face = [j for j in jobs if j.session.avatar.has_face(j.source)]
        faces: dict[int, np.ndarray] = {}
        if with_face:
            try:
                latents = torch.stack([
                    j.session.avatar.device_latents(self.mt.device, self.mt.dtype)[j.source] for j in with_face
                ])
                out = self.mt.generate_latents(latents, np.stack([j.prompt for j in with_face]))
            except Exception as exc:  # noqa: BLE001 - a failed batch fails its sessions, the engine goes on
                log.exception("generation failed")
                for j in jobs:
                    j.session._fail(f"generation failed: {exc}")
                    j.session._abandon()
                return
            faces = {id(j): face for j, face in zip(with_face, out)}
        for j in jobs:
            self._slots.acquire()
            self._pool.submit(self._composite, j, faces.get(id(j)))

    def _composite(self, job: _Job, face: np.ndarray | None) -> None:
        from ..face import paste_face

        avatar = job.session.avatar
        self._slots.release()
        try:
            frame = np.asarray(avatar.frames[job.source])
            image = paste_face(frame, face, avatar.records[job.source], avatar.mask(job.source)) if face is not None \
                else frame.copy()
            jpeg = encode_jpeg(image, self.jpeg_quality) if self.jpeg_quality else None
        except Exception as exc:  # noqa: BLE001 - reported to the session
            log.exception("compositing failed")
            job.session._fail(f"compositing failed: {exc}")
            job.session._abandon()
            return
        job.session._deliver(Frame(job.index, image, jpeg, job.ready_at, time.perf_counter()))

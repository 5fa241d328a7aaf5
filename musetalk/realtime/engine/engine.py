"""One model, many sessions: audio chunks in, composited frames out, in order, each on its media clock.

    engine = Engine(mt, latency_budget_s=0.5, capacity=8)     # starts its scheduler thread
    session = engine.open(avatar)             # avatar: musetalk.realtime.avatars.store.Avatar; ServerFull when full
    session.feed(samples_16k)                 # float32 (N,) or feed_pcm16(bytes); any sizes, any thread
    session.end()
    for item in session.frames(): ...         # Frame(index, jpeg, image, times) or Skip(index, skipped)

A clock thread sends live sessions' frames at their due times (rest frames, made from the avatar's
cached source frames, and speech frames rendered ahead). The scheduler thread loops: (1) plans and runs
one batched whisper pass over the new audio windows of every session (:mod:`.streaming`); (2) picks up to ``batch_size`` frames earliest-deadline-first across
sessions, skipping those that can no longer make their deadline (:mod:`.session`) and sizing the batch
to the time left before them (the measured cost of :mod:`.render_cost`); (3) one
``generate_latents`` call over them; (4) hands the faces to a small compositor pool (paste, JPEG). A fault
in any stage fails only the sessions it involves (a failed batch is retried per session to find them);
an unexpected fault of the loop itself fails every session it was serving, loudly, and the loop goes on.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
import torch

from ...errors import MuseTalkError
from .admission import Admission
from ...video.jpeg import encode_jpeg
from .render import blend_with_rest, composite
from .render_cost import RenderCost
from .session import Job, Session, SessionError, SessionSettings
from .stats import EngineStats
from .streaming import DEFAULT_LOOKAHEAD_S, Plan, encode_plans

log = logging.getLogger(__name__)

REST_CACHE_FRAMES = 2048  # JPEGs of avatar source frames kept for live sessions at rest


class Engine:
    """The scheduler: one :class:`~musetalk.MuseTalk` serving every open :class:`Session`.

    batch_size: most frames per ``generate_latents`` call; compositors: threads pasting and encoding;
    jpeg_quality: None to skip JPEG encoding (frames then carry their RGB image); lookahead_s: default
    audio needed after a frame's window; latency_budget_s: a frame later than this after its due time is
    skipped (None: never skip); capacity: speaking sessions admitted (None: no limit); outbox_frames:
    frames a slow client may have waiting before further ones are skipped.
    """

    def __init__(self, mt, batch_size: int = 16, compositors: int = 2, jpeg_quality: int | None = 85,
                 lookahead_s: float = DEFAULT_LOOKAHEAD_S, latency_budget_s: float | None = None,
                 capacity: int | None = None, outbox_frames: int = 50) -> None:
        if batch_size < 1:
            raise MuseTalkError(f"batch_size must be at least 1, got {batch_size}")
        if latency_budget_s is not None and latency_budget_s <= 0:
            raise MuseTalkError(f"the latency budget must be positive, got {latency_budget_s} s")
        self.mt = mt
        self.batch_size = batch_size
        self.jpeg_quality = jpeg_quality
        self.lookahead_s = lookahead_s
        self.latency_budget_s = latency_budget_s
        self.admission = Admission(capacity)
        self.outbox_frames = outbox_frames
        self.stats = EngineStats()
        self._sessions: list[Session] = []
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._stopping = False
        self.cost = RenderCost()
        self._rest: dict[tuple[int, int], tuple[object, bytes | None]] = {}  # (id(avatar), source) -> (avatar, jpeg)
        self._pool = ThreadPoolExecutor(compositors, thread_name_prefix="musetalk-composite")
        self._slots = threading.Semaphore(2 * compositors * batch_size)  # bounds frames waiting to be composited
        self._thread = threading.Thread(target=self._run, name="musetalk-engine", daemon=True)
        self._clock = threading.Thread(target=self._run_clock, name="musetalk-clock", daemon=True)
        self._thread.start()
        self._clock.start()

    def open(self, avatar, loop: asyncio.AbstractEventLoop | None = None, lookahead_s: float | None = None,
             live: bool = False, images: bool = False) -> Session:
        """A new session on ``avatar`` (``live``: a live session, see :mod:`.session`); pass the running
        ``loop`` to read with ``await next_item()``; ``images``: its frames carry their RGB image and no JPEG
        (an output that encodes video itself). Raises :class:`~.admission.ServerFull` when full."""
        jpeg = bool(self.jpeg_quality) and not images
        settings = SessionSettings(self.lookahead_s if lookahead_s is None else lookahead_s, self.latency_budget_s,
                                   self.outbox_frames, keep_images=not jpeg, live=live, encode_jpeg=jpeg)
        with self._cond:
            if self._stopping:
                raise SessionError("the engine is shut down")
            self.admission.check(self.speaking, self.idle, live=live)
            session = Session(avatar, next(self._ids), settings, self.wake, self.stats, loop)
            self._sessions.append(session)
        log.debug("session %d opened on avatar %s", session.id, avatar.name)
        return session

    @property
    def sessions(self) -> int:
        """Open sessions."""
        with self._cond:
            return len(self._open())

    @property
    def speaking(self) -> int:
        """Sessions rendering speech."""
        with self._cond:
            return sum(s.speaking for s in self._open())

    @property
    def idle(self) -> int:
        """Live sessions at rest."""
        with self._cond:
            return sum(not s.speaking for s in self._open())

    def _open(self) -> list[Session]:
        """Sessions not finished yet (the scheduler drops the others at its next look). Holds ``_cond``."""
        return [s for s in self._sessions if not s.finished]

    @property
    def queue_depth(self) -> int:
        """Frames and messages waiting, over all sessions."""
        with self._cond:
            return sum(s.queue_depth for s in self._sessions)

    def health(self) -> dict:
        """The engine's part of ``GET /health``."""
        with self._cond:
            speaking, idle = self.speaking, self.idle
            return {"sessions": speaking + idle, "speaking": speaking, "capacity": self.admission.capacity,
                    "load": self.admission.load(speaking, idle), "free": self.admission.admits(speaking, idle, False)}

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the scheduler and the compositors (sessions still open get nothing more)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        self._clock.join()
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
            try:
                self._step(sessions)
            except Exception as exc:  # noqa: BLE001 - a bug in the loop fails its sessions, loudly, not silently
                log.exception("the scheduler failed")
                for s in sessions:
                    s.fail(f"internal error of the engine: {exc}")

    def _work(self) -> bool:
        """Drop finished sessions; whether any open one has something to compute. Holds ``_cond``."""
        self._sessions = self._open()
        return any(s.head_deadline() is not None or s.wants_plan(self.batch_size) for s in self._sessions)

    def _run_clock(self) -> None:
        """The clock thread: live sessions' frames go out at their due time, whatever the scheduler does."""
        while True:
            with self._cond:
                while not self._stopping and (wait := self._until_tick()) > 0:
                    self._cond.wait(timeout=wait)
                if self._stopping:
                    return
                live = [s for s in self._sessions if s.live]
            now = time.perf_counter()
            for s in live:
                _guarded(s, "rest frames", lambda: s.tick(now, self._rest_frame if s.settings.encode_jpeg
                                                          else _rest_image))

    def _until_tick(self) -> float:
        """Seconds until a live session's clock reaches its next frame (at most 1). Holds ``_cond``."""
        ticks = [t for s in self._sessions if (t := s.next_tick()) is not None]
        return min([1.0, *(t - time.perf_counter() for t in ticks)])

    def _step(self, sessions: list[Session]) -> None:
        self._encode_audio([s for s in sessions if s.wants_plan(self.batch_size)])
        jobs = self._pick(sessions)
        if jobs:
            self._render(jobs)

    def _encode_audio(self, sessions: list[Session]) -> None:
        """One batched whisper pass over the new windows of ``sessions``."""
        planned = [(s, p) for s in sessions if (p := _guarded(s, "planning", s.plan)) is not None]
        for (s, plan), states in _per_session(planned, self._encode_batch, "audio encoding"):
            _guarded(s, "audio encoding", lambda: s.add_prompts(plan, states))

    def _encode_batch(self, planned: list[tuple[Session, Plan]]) -> list[np.ndarray]:
        return encode_plans(self.mt.whisper, self.mt.feature_extractor, [plan for _, (_, plan) in planned],
                            self.mt.device, self.mt.dtype)

    def _rest_frame(self, avatar, source: int) -> tuple[bytes | None, np.ndarray]:
        """Source frame ``source`` of ``avatar`` unaltered: (its JPEG, cached; None without encoding), image."""
        image = np.asarray(avatar.frames[source])
        if not self.jpeg_quality:
            return None, image
        key = (id(avatar), source)
        if key not in self._rest:
            if len(self._rest) >= REST_CACHE_FRAMES:
                self._rest.pop(next(iter(self._rest)))
            self._rest[key] = (avatar, encode_jpeg(image, self.jpeg_quality))  # the avatar keeps its id unique
        return self._rest[key][1], image

    def _pick(self, sessions: list[Session]) -> list[Job]:
        """Up to ``batch_size`` jobs, earliest deadline first across sessions, the speaking sessions beyond the
        capacity (the last to start speaking) after all others.

        With a budget, a job that would be late even alone is skipped, and when the engine is behind, the
        batch is the longest run of waiting jobs (in that order) that one call delivers in time: the older
        jobs of the sessions it serves are skipped for it, so an overloaded engine still draws as many
        frames as it can instead of rendering one nearly-late frame at a time."""
        overflow = self._overflow(sessions)
        queue = sorted((s in overflow, d, s.id, k, s) for s in sessions for k, d in enumerate(s.waiting_deadlines()))
        skipping = self.latency_budget_s is not None
        if skipping:
            now, most = time.perf_counter(), self.batch_size if self.cost.known else 1
            done_by = [now + self.cost.estimate(n) for n in range(1, most + 1)]  # delivery of a batch of n
            start, count = _window([d for _, d, *_ in queue], done_by)
        else:
            start, count = 0, min(self.batch_size, len(queue))
        chosen = {s for *_, s in queue[start : start + count]}
        jobs: list[Job] = []
        for position, (_, deadline, _, _, s) in enumerate(queue):
            picked = start <= position < start + count
            late = skipping and (done_by[0] > deadline or (position < start and s in chosen))
            if not (picked or late):
                continue  # it waits (a session's late jobs come first: its deadlines never decrease)
            if (job := s.take()) is None:
                continue  # the session failed or was interrupted meanwhile
            if picked:
                jobs.append(job)
            else:
                s.skip(job)
        if not jobs and skipping:
            self.cost.relax(self.latency_budget_s)
        return jobs

    def _overflow(self, sessions: list[Session]) -> set[Session]:
        """Speaking sessions beyond the capacity, by the time they started speaking."""
        capacity = self.admission.capacity
        if capacity is None:
            return set()
        speaking = sorted((s for s in sessions if s.speaking_since is not None), key=lambda s: s.speaking_since)
        return set(speaking[capacity:])

    def _render(self, jobs: list[Job]) -> None:
        """Generate the faces of ``jobs`` (one model call), then composite each in the pool."""
        start = time.perf_counter()
        with_face = [(j.session, j) for j in jobs if j.session.avatar.has_face(j.source)]
        faces = {id(job): face for (_, job), face in _per_session(with_face, self._generate_batch, "generation")}
        generated_at = time.perf_counter()
        self.cost.generated(generated_at - start, len(with_face))
        self.stats.batch(len(jobs))
        for j in jobs:
            if j.session.avatar.has_face(j.source) and id(j) not in faces:
                j.session.release(j)  # its session failed in generation
            else:
                self._slots.acquire()
                self._pool.submit(self._composite, j, faces.get(id(j)), generated_at)

    def _generate_batch(self, pairs: list[tuple[Session, Job]]) -> list[np.ndarray]:
        latents = torch.stack([j.session.avatar.device_latents(self.mt.device, self.mt.dtype)[j.source]
                               for _, j in pairs])
        return list(self.mt.generate_latents(latents, np.stack([j.prompt for _, j in pairs])))

    def _composite(self, job: Job, face: np.ndarray | None, generated_at: float) -> None:
        self._slots.release()
        try:
            image = composite(job.session.avatar, job.source, face)
            if job.blend < 1:
                image = blend_with_rest(job.session.avatar, job.source, image, job.blend)
            jpeg = encode_jpeg(image, self.jpeg_quality) if job.session.settings.encode_jpeg else None
        except Exception as exc:  # noqa: BLE001 - reported to the session, the engine goes on
            log.exception("compositing failed")
            job.session.fail(f"compositing failed: {exc}", job)
            return
        job.session.deliver(job, jpeg, image)
        self.cost.finished(time.perf_counter() - generated_at)


def _rest_image(avatar, source: int) -> tuple[None, np.ndarray]:
    """Source frame ``source`` of ``avatar`` unaltered, without JPEG: (None, uint8 (H, W, 3) RGB)."""
    return None, np.asarray(avatar.frames[source])


def _window(deadlines: list[float], done_by: list[float]) -> tuple[int, int]:
    """(start, count): the longest run of consecutive ``deadlines`` (the earliest such run; at most
    ``len(done_by)``) that a batch delivered by ``done_by[count - 1]`` meets; ``done_by[n - 1]``: when a batch
    of n frames picked now would be out (one entry while the cost is unknown: a probe of one frame)."""
    best, most = (0, 0), len(done_by)
    for start in range(len(deadlines)):
        count, earliest = 0, float("inf")
        for deadline in deadlines[start : start + most]:
            earliest = min(earliest, deadline)
            if done_by[count] > earliest:
                break
            count += 1
        if count > best[1]:
            best = (start, count)
        if best[1] == most or start + best[1] >= len(deadlines):
            break
    return best


def _guarded(session: Session, stage: str, call: Callable):
    """``call()``, or None after failing ``session`` with the stage's fault."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - a fault fails its session only
        log.exception("%s failed for session %d", stage, session.id)
        session.fail(f"{stage} failed: {exc}")
        return None


def _per_session(items: Sequence[tuple[Session, object]], batch: Callable[[list], list],
                 stage: str) -> list[tuple[tuple[Session, object], object]]:
    """``batch(items)`` paired with its items; when the batch fails, each session's items are retried
    alone and only the sessions whose own batch fails are failed (their items left out)."""
    if not items:
        return []
    try:
        return list(zip(items, batch(list(items))))
    except Exception as exc:  # noqa: BLE001 - isolate the faulty sessions below
        sessions = list(dict.fromkeys(s for s, _ in items))
        if len(sessions) == 1:
            log.exception("%s failed for session %d", stage, sessions[0].id)
            sessions[0].fail(f"{stage} failed: {exc}")
            return []
    return [pair for session in sessions
            for pair in _per_session([item for item in items if item[0] is session], batch, stage)]

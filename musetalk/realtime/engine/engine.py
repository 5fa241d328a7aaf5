"""One model, many sessions: audio chunks in, composited frames out, in order, each on its media clock.

    engine = Engine(mt, latency_budget_s=0.5, capacity=8)     # starts its scheduler thread
    session = engine.open(avatar)             # avatar: musetalk.realtime.avatars.store.Avatar; ServerFull when full
    session.feed(samples_16k)                 # float32 (N,) or feed_pcm16(bytes); any sizes, any thread
    session.end()
    for item in session.frames(): ...         # Frame(index, jpeg, image, times) or Skip(index, skipped)

A clock thread sends live sessions' frames at their due times (rest frames, and speech frames rendered
ahead); it does no codec work: a rest frame is the avatar's stored JPEG, or (image sessions) its decoded
frame from the store's cache (under the store's memory cap), decoded ahead in the compositor pool. The scheduler thread loops: (1) plans and runs
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
import math
import threading
import time
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
import torch

from ...errors import MuseTalkError
from .admission import Admission
from .priority import BackgroundLane
from ...video.jpeg import encode_jpeg
from .render import blend_with_rest, composite
from .render_cost import RenderCost
from .session import DEFAULT_MAX_AUDIO_AHEAD_S, Job, Session, SessionError, SessionSettings
from .stats import EngineStats
from .streaming import DEFAULT_LOOKAHEAD_S, Plan, encode_plans

log = logging.getLogger(__name__)

REST_AHEAD_S = 1.0  # image sessions: rest frames decoded (into the store's cache) this far ahead of the clock


class Engine:
    """The scheduler: one :class:`~musetalk.MuseTalk` serving every open :class:`Session`.

    batch_size: most frames per ``generate_latents`` call; compositors: threads pasting and encoding;
    jpeg_quality: None to skip JPEG encoding (frames then carry their RGB image); lookahead_s: default
    audio needed after a frame's window; latency_budget_s: a frame later than this after its due time is
    skipped (None: never skip); capacity: speaking sessions admitted (None: no limit); outbox_frames:
    frames a slow client may have waiting before further ones are skipped; max_audio_ahead_s: audio a
    session accepts ahead of its clock (more is refused, see :mod:`.session`); pipeline: batch k+1
    generates while batch k is composited and encoded in the pool (False: one after the other, the baseline
    ``bench/realtime.py --overlap`` measures against).
    """

    def __init__(self, mt, batch_size: int = 16, compositors: int = 2, jpeg_quality: int | None = 85,
                 lookahead_s: float = DEFAULT_LOOKAHEAD_S, latency_budget_s: float | None = None,
                 capacity: int | None = None, outbox_frames: int = 50,
                 max_audio_ahead_s: float = DEFAULT_MAX_AUDIO_AHEAD_S, pipeline: bool = True) -> None:
        if batch_size < 1:
            raise MuseTalkError(f"batch_size must be at least 1, got {batch_size}")
        if latency_budget_s is not None and latency_budget_s <= 0:
            raise MuseTalkError(f"the latency budget must be positive, got {latency_budget_s} s")
        if not max_audio_ahead_s > 0:
            raise MuseTalkError(f"the audio cap must be positive, got {max_audio_ahead_s:g} s")
        self.mt = mt
        self.batch_size = batch_size
        self.jpeg_quality = jpeg_quality
        self.lookahead_s = lookahead_s
        self.latency_budget_s = latency_budget_s
        self.admission = Admission(capacity)
        self.outbox_frames = outbox_frames
        self.max_audio_ahead_s = max_audio_ahead_s
        self.pipeline = pipeline
        self.stats = EngineStats()
        self.background = BackgroundLane()  # avatar preparations wait their turn here (live sessions first)
        self._sessions: list[Session] = []
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._stopping = False
        self.cost = RenderCost()
        self._warming: set[tuple[int, int]] = set()  # (id(avatar), source) being decoded in the pool
        self._warming_lock = threading.Lock()
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
                                   self.outbox_frames, keep_images=not jpeg, live=live, encode_jpeg=jpeg,
                                   max_audio_ahead_s=self.max_audio_ahead_s)
        with self._cond:
            if self._stopping:
                raise SessionError("the engine is shut down")
            self.admission.check(self.speaking, self.idle, live=live)
            session = Session(avatar, next(self._ids), settings, self.wake, self.stats, loop)
            self._sessions.append(session)
        if live and not settings.encode_jpeg:
            self._warm_rest(session)
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
        """Stop the scheduler and the compositors; sessions still open fail ("the engine is shut down"), so
        their readers end at once instead of waiting out their timeout."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.background.close()
        self._thread.join()
        self._clock.join()
        self._pool.shutdown(wait=True)
        with self._cond:
            still_open = self._open()
        for session in still_open:
            session.fail("the engine is shut down")

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- scheduler thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._work():
                    self.background.set_busy(any(s.speaking for s in self._sessions))
                    self._cond.wait(timeout=1.0)
                if self._stopping:
                    return
                self.background.set_busy(True)
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
        """The clock thread: live sessions' frames go out at their due time, whatever the scheduler does. It
        only places frames that are ready (no codec work here): rest frames are the stored JPEGs, or images
        decoded ahead in the compositor pool (:meth:`_warm_rest`); one not decoded in time is decoded there
        and placed late."""
        while self._wait_for_tick():
            self._tick(self._live_sessions(), time.perf_counter())

    def _wait_for_tick(self) -> bool:
        """Wait until a live session's clock reaches its next frame; False when the engine stops."""
        with self._cond:
            while not self._stopping and (wait := self._until_tick()) > 0:
                self._cond.wait(timeout=wait)
            return not self._stopping

    def _live_sessions(self) -> list[Session]:
        with self._cond:
            return [s for s in self._sessions if s.live]

    def _tick(self, sessions: list[Session], now: float) -> None:
        """Place the frames of ``sessions`` due by ``now``; image sessions warm their next rest frames."""
        for s in sessions:
            if s.settings.encode_jpeg:
                _guarded(s, "rest frames", lambda: s.tick(now, _stored_jpeg))
            else:
                if pending := _guarded(s, "rest frames", lambda: s.tick(now, _cached_image)):
                    self._pool.submit(self._place_rest, s, pending, now)
                self._warm_rest(s)

    def _place_rest(self, session: Session, pending: list[tuple[int, int]], due_by: float) -> None:
        """Decode the rest frames the clock reached before they were ready, and place them."""
        def place() -> None:
            for index, src in pending:
                session.place_rest(index, None, np.asarray(session.avatar.frames[src]), due_by)

        _guarded(session, "rest frames", place)

    def _warm_rest(self, session: Session) -> None:
        """Decode, in the compositor pool, the source frames of ``session``'s next ``REST_AHEAD_S`` of clock
        that the store's cache lacks (so its rest frames are ready when due)."""
        avatar = session.avatar
        sources = dict.fromkeys(session.sources_ahead(math.ceil(REST_AHEAD_S * avatar.fps)))
        with self._warming_lock:
            missing = [src for src in sources if (id(avatar), src) not in self._warming
                       and avatar.cached_frame(src) is None]
            self._warming.update((id(avatar), src) for src in missing)
        if missing:
            self._pool.submit(self._decode_rest, avatar, missing)

    def _decode_rest(self, avatar, sources: list[int]) -> None:
        try:
            for src in sources:
                avatar.frames[src]  # decoded into the store's cache, under its cap
        except Exception:  # noqa: BLE001 - the clock then skips those frames; the engine goes on
            log.exception("decoding rest frames of avatar %s failed", avatar.name)
        finally:
            with self._warming_lock:
                self._warming.difference_update((id(avatar), src) for src in sources)

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
        composites = []
        for j in jobs:
            if j.session.avatar.has_face(j.source) and id(j) not in faces:
                j.session.release(j)  # its session failed in generation
            else:
                self._slots.acquire()
                composites.append(self._pool.submit(self._composite, j, faces.get(id(j)), generated_at))
        if not self.pipeline:
            futures.wait(composites)  # the next batch generates only after this one is composited

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


def _stored_jpeg(avatar, source: int) -> tuple[bytes, None]:
    """Source frame ``source`` of ``avatar`` unaltered, as stored: (its JPEG bytes, no image). No codec work:
    the stored JPEG decodes to the avatar's frame exactly."""
    return avatar.frame_jpeg(source), None


def _cached_image(avatar, source: int) -> tuple[None, np.ndarray] | None:
    """Source frame ``source`` of ``avatar`` unaltered: (no JPEG, uint8 (H, W, 3) RGB) when the store's cache
    holds it decoded, else None (not ready: it is decoded in the pool, not on the clock thread)."""
    image = avatar.cached_frame(source)
    return None if image is None else (None, image)


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

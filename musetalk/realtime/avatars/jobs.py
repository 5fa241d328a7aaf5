"""Avatar preparations running in the background of the server, one per name, with their progress.

A job runs :meth:`AvatarStore.prepare` in a worker thread (the store's lock makes preparations take turns)
and records its events: ``{"type": "progress", "stage", "done", "total"}`` while it runs, then
``{"type": "done", "avatar": {...}}`` or ``{"type": "error", "message"}``. Any number of followers read
the events from the start (the NDJSON reply of the upload, ``GET /avatars/{name}/status``); the
preparation goes on when they leave.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import AsyncIterator

from ...errors import MuseTalkError
from .prepare import Turn, no_wait
from .store import AvatarStore, PrepareSettings

log = logging.getLogger(__name__)


class PreparationJob:
    """The events of one preparation; written from any thread, read on the event loop ``loop``."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.events: list[dict] = []
        self.finished = False
        self._loop = loop
        self._changed = asyncio.Event()

    def progress(self, stage: str, done: int, total: int) -> None:
        """The store's progress callback (called from the preparing thread)."""
        event = {"type": "progress", "stage": stage, "done": done, "total": total}
        self._loop.call_soon_threadsafe(self._add, event)

    def finish(self, event: dict) -> None:
        """Record the outcome (on the event loop)."""
        self.finished = True
        self._add(event)

    def status(self) -> dict:
        """``{"name", "state": "preparing" | "ready" | "failed"}`` plus the last progress or the outcome."""
        last = self.events[-1] if self.events else {"type": "progress", "stage": "upload", "done": 0, "total": 0}
        state = {"progress": "preparing", "done": "ready", "error": "failed"}[last["type"]]
        return {"name": self.name, "state": state, **{k: v for k, v in last.items() if k != "type"}}

    async def follow(self) -> AsyncIterator[dict]:
        """Every event from the first, waiting for new ones, until the outcome."""
        seen = 0
        while True:
            while seen < len(self.events):
                seen += 1
                yield self.events[seen - 1]
            if self.finished:
                return
            self._changed.clear()
            await self._changed.wait()

    def _add(self, event: dict) -> None:
        self.events.append(event)
        self._changed.set()


class PreparationJobs:
    """The preparations of one server (by avatar name); the latest job of a name is kept for its status.
    ``turn``: called before each step of a preparation (the engine's ``background.wait_turn``: live
    sessions first)."""

    def __init__(self, store: AvatarStore, turn: Turn = no_wait) -> None:
        self.store = store
        self.turn = turn
        self._jobs: dict[str, PreparationJob] = {}
        self._tasks: set[asyncio.Task] = set()

    def busy(self, name: str) -> bool:
        """Whether avatar ``name`` is being uploaded or prepared now."""
        job = self._jobs.get(name)
        return job is not None and not job.finished

    def get(self, name: str) -> PreparationJob | None:
        return self._jobs.get(name)

    def reserve(self, name: str) -> PreparationJob:
        """A new job for ``name`` (not :meth:`busy`), waiting for its source (:meth:`start`)."""
        job = self._jobs[name] = PreparationJob(name, asyncio.get_running_loop())
        return job

    def start(self, job: PreparationJob, source: Path, settings: PrepareSettings) -> None:
        """Prepare ``source`` as ``job.name`` in the background (replacing an existing avatar)."""
        task = asyncio.create_task(self._run(job, source, settings))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: PreparationJob, source: Path, settings: PrepareSettings) -> None:
        try:
            avatar = await asyncio.to_thread(self.store.prepare, source, job.name, settings, job.progress, True,
                                              self.turn)
        except MuseTalkError as exc:
            source.unlink()
            job.finish({"type": "error", "message": str(exc)})
            return
        except Exception as exc:
            log.exception("preparing avatar %s failed", job.name)
            source.unlink()
            job.finish({"type": "error", "message": f"preparing {job.name!r} failed: {exc.__class__.__name__}: {exc}"})
            return
        self.store.keep_only_source(job.name, source)
        job.finish({"type": "done", "avatar": avatar.info()})

"""What one Ray actor runs: it loads the models once (on its GPU, or CPU cores) and serves many jobs.

Each job runs the in-process threaded dub (:func:`musetalk.pipeline.dub.dub`): video decoding and face
analysis in one thread, paste-back and encoding in another, beside the model calls in the actor's
thread, so the model does not wait for them. Inputs that are URLs are copied to a local folder first;
an output is checked writable (its missing local folders made) before the work, then made locally and
committed atomically (:mod:`.storage`).
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..pipeline.dub import DubOptions, dub, dub_length, dub_span, load_model
from . import storage
from .chunks import join_chunks
from .tasks import DONE, SKIPPED, Chunk, Job, JobResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    pid: int
    device: str


class DubWorker:
    """One model, many dubs. ``options.progress`` is ignored: the driver shows one bar for the run."""

    def __init__(self, options: DubOptions) -> None:
        self.options = replace(options, progress=False)
        self.model = None
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def ready(self) -> WorkerInfo:
        """Load the models (once per process) and say who this worker is."""
        self._model()
        return WorkerInfo(self.name, os.getpid(), self.options.device)

    def _model(self):
        if self.model is None:
            self.model = load_model(self.options)
        return self.model

    def dub(self, job: Job) -> JobResult:
        """Dub ``job`` unless its output exists (a finished earlier attempt)."""
        started = time.perf_counter()
        if storage.exists(job.output):
            return JobResult(job.row, job.output, SKIPPED, worker=self.name)
        storage.make_writable(job.output, job.key)
        with tempfile.TemporaryDirectory(prefix="musetalk-job-") as folder:
            work = Path(folder)
            source = storage.local_input(job.source, work, "source")
            audio = storage.local_input(job.audio, work, "audio")
            local = work / ("out-" + Path(job.output).name)
            result = dub(source, audio, local, self.options, model=self._model())
            storage.commit(local, job.output, job.key)
        return JobResult(job.row, job.output, DONE, result.frames, time.perf_counter() - started, worker=self.name)

    def dub_length(self, job: Job) -> tuple[int, float]:
        """Frames and frame rate of ``job``'s dub (to cut it into chunks), once its output is known to be
        writable (its chunks are kept beside it)."""
        storage.make_writable(job.output, job.key)
        with tempfile.TemporaryDirectory(prefix="musetalk-plan-") as folder:
            work = Path(folder)
            return dub_length(storage.local_input(job.source, work, "source"),
                              storage.local_input(job.audio, work, "audio"), self.options)

    def dub_chunk(self, chunk: Chunk) -> JobResult:
        """Render ``chunk`` into its part file, unless an earlier attempt or run already did."""
        started = time.perf_counter()
        if storage.exists(chunk.part):
            return JobResult(chunk.job.row, chunk.part, SKIPPED, chunk.span.frames, worker=self.name)
        with tempfile.TemporaryDirectory(prefix="musetalk-chunk-") as folder:
            work = Path(folder)
            local = work / f"chunk{chunk.index}.mp4"
            dub_span(storage.local_input(chunk.job.source, work, "source"),
                     storage.local_input(chunk.job.audio, work, "audio"), local, chunk.span, self.options,
                     model=self._model())
            storage.commit(local, chunk.part, chunk.job.key)
        return JobResult(chunk.job.row, chunk.part, DONE, chunk.span.frames, time.perf_counter() - started,
                         worker=self.name)

    def join(self, job: Job, parts: list[str], frames: int) -> JobResult:
        """Join ``parts`` (in order) with ``job``'s audio into its output, then delete the parts."""
        started = time.perf_counter()
        if storage.exists(job.output):
            return JobResult(job.row, job.output, SKIPPED, worker=self.name)
        with tempfile.TemporaryDirectory(prefix="musetalk-join-") as folder:
            work = Path(folder)
            local_parts = [storage.local_input(part, work, f"part{i}") for i, part in enumerate(parts)]
            local = work / ("out-" + Path(job.output).name)
            join_chunks(local_parts, storage.local_input(job.source, work, "source"),
                        storage.local_input(job.audio, work, "audio"), local, frames, self.options)
            storage.commit(local, job.output, job.key)
        for part in parts:
            storage.remove(part)
        return JobResult(job.row, job.output, DONE, frames, time.perf_counter() - started, worker=self.name)

"""``musetalk dub --jobs jobs.csv --ray [ADDRESS]``: a CSV of dubs on a Ray cluster.

One :class:`~.worker.DubWorker` actor per GPU (or per ``cpus_per_worker`` cores on a CPU cluster) loads
the models once; the driver hands each idle worker the next task (a whole job, the frame count of a job
to chunk, one chunk, or the join of a job's chunks), so long and short jobs share the workers. A worker
that dies mid-task is restarted by Ray and the task goes back to the front of the queue for whichever
worker is free (at most ``MAX_ATTEMPTS`` times); outputs are committed atomically and every task first
checks whether its output already exists, so nothing is lost and nothing is written twice. A row that
fails (missing or unreadable input, no face, unreachable storage) fails alone, with its reason in the
summary CSV; when one chunk of a job fails, the job's chunks still running end unused (their parts stay
for a re-run) and the job keeps the first reason.
"""
from __future__ import annotations

import csv
import logging
import math
import time
from collections import deque
from dataclasses import astuple, dataclass, fields, replace
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import MuseTalkError
from ..pipeline.dub import DubOptions
from ..video import atomic_output
from . import storage
from .chunks import DEFAULT_OVERLAP, plan_chunks
from .cluster import ClusterError, connect
from .tasks import FAILED, SKIPPED, Chunk, Job, JobResult
from .worker import DubWorker, WorkerInfo

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


@dataclass
class ClusterOptions:
    """Where and how wide to run. ``workers``: None = one per GPU, or one per ``cpus_per_worker`` CPUs
    when the cluster has no GPU. ``chunk_seconds``: cut jobs longer than this into chunks (None: never).
    ``local_cpus``: CPUs of a local instance (None: all)."""

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: int = 4
    chunk_seconds: float | None = None
    overlap_frames: int = DEFAULT_OVERLAP
    local_cpus: int | None = None


@dataclass
class _Task:
    """One call on a worker: ``method`` of :class:`DubWorker` with ``args``, for ``job``."""

    job: Job
    method: str
    args: tuple
    attempts: int = 0


def jobs_from_rows(rows: list[dict[str, str]], base: Path) -> list[Job]:
    """CSV rows (source, audio, output) as jobs; plain paths are relative to ``base``."""
    return [Job(n, *(storage.resolve(row[k], base) for k in ("source", "audio", "output")))
            for n, row in enumerate(rows, start=1)]


def part_url(job: Job, index: int) -> str:
    """Where chunk ``index`` of ``job`` is kept until the join: beside the output, hidden."""
    parent, _, name = job.output.rpartition("/")
    return storage.join(parent, f".{name}.chunk{index:04d}.mp4")


class BatchRun:
    """One run of ``jobs`` on the cluster. ``running`` maps each busy worker's pid to its task's row
    (updated as the run goes; it shows which process works on what); ``first_ready_at`` is the
    ``time.perf_counter()`` when the first worker had loaded its models."""

    def __init__(self, jobs: list[Job], options: DubOptions, cluster: ClusterOptions) -> None:
        self.jobs = jobs
        self.options = options
        self.cluster = cluster
        self.results: dict[int, JobResult] = {}
        self.running: dict[int, int] = {}
        self._chunked: dict[int, _Chunked] = {}
        self._attempts: dict[int, int] = {}
        self._bar: tqdm | None = None
        self.first_ready_at: float | None = None

    def run(self) -> list[JobResult]:
        """Run every job; returns one result per job, in row order."""
        ray = connect(self.cluster.address, num_cpus=self.cluster.local_cpus)
        queue: deque[_Task] = deque()
        self._bar = tqdm(total=len(self.jobs), unit="job", desc="dub", disable=not self.options.progress)
        try:
            for job in self.jobs:
                self._enqueue_first(job, queue)
            if queue:
                self._drain(ray, queue)
        finally:
            self._bar.close()
        return [self.results[job.row] for job in self.jobs]

    def _enqueue_first(self, job: Job, queue: deque) -> None:
        try:
            finished = storage.exists(job.output)
        except MuseTalkError as exc:
            self._finish(JobResult(job.row, job.output, FAILED, error=str(exc)))
            return
        if finished:
            self._finish(JobResult(job.row, job.output, SKIPPED))
        elif self.cluster.chunk_seconds:
            queue.append(_Task(job, "dub_length", (job,)))
        else:
            queue.append(_Task(job, "dub", (job,)))

    def _finish(self, result: JobResult) -> None:
        result.attempts = self._attempts.get(result.row, 0)
        self.results[result.row] = result
        if result.status == FAILED:
            log.warning("row %d failed: %s", result.row, result.error)
        self._bar.update(1)
        self._bar.set_postfix(frames=sum(r.frames for r in self.results.values()))

    def _start_workers(self, ray) -> list:
        """The actors (loading their models); their count follows ``ClusterOptions.workers``."""
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            count, ask = self.cluster.workers or gpus, {"num_gpus": 1, "num_cpus": 1}
            options = self.options if self.options.device != "cpu" else replace(self.options, device="cuda")
        else:
            cpus = int(resources.get("CPU", 1))
            count = self.cluster.workers or max(1, cpus // self.cluster.cpus_per_worker)
            ask, options = {"num_cpus": min(self.cluster.cpus_per_worker, cpus)}, self.options
        log.info("starting %d workers (%s each)", count, ask)
        actor = ray.remote(max_restarts=-1, max_task_retries=0, **ask)(DubWorker)
        return [actor.remote(options) for _ in range(count)]

    def _drain(self, ray, queue: deque) -> None:
        """Hand out tasks until none is left: each worker gets one once ready, the next when it is done."""
        inflight = {worker.ready.remote(): (worker, None) for worker in self._start_workers(ray)}
        idle: deque = deque()
        pids: dict = {}
        while queue or any(task is not None for _, task in inflight.values()):
            while queue and idle:
                worker, task = idle.popleft(), queue.popleft()
                if task.job.row in self.results:
                    idle.appendleft(worker)  # the job already failed in another of its tasks
                    continue
                task.attempts += 1
                self._attempts[task.job.row] = self._attempts.get(task.job.row, 0) + 1
                inflight[getattr(worker, task.method).remote(*task.args)] = (worker, task)
                self.running[pids[worker]] = task.job.row
            if not inflight:
                raise ClusterError("every Ray worker died while loading the models; see the Ray logs")
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            worker, task = inflight.pop(ref)
            if task is None:
                self._welcome(ray, ref, worker, idle, pids)
                continue
            self.running.pop(pids[worker], None)
            if self._settle(ray, ref, task, queue):
                idle.append(worker)
            else:
                inflight[worker.ready.remote()] = (worker, None)

    def _welcome(self, ray, ref, worker, idle: deque, pids: dict) -> None:
        """A worker finished loading its models (or died doing so: then it is dropped)."""
        try:
            info: WorkerInfo = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            log.warning("a worker died while loading the models (%s); going on without it", exc.__class__.__name__)
            return
        except ray.exceptions.RayTaskError as exc:
            raise exc.cause from None
        log.info("worker %s ready (%s)", info.name, info.device)
        self.first_ready_at = self.first_ready_at or time.perf_counter()
        pids[worker] = info.pid
        idle.append(worker)

    def _settle(self, ray, ref, task: _Task, queue: deque) -> bool:
        """Take a finished task's outcome (the next tasks of its job, its result, a retry or a failure);
        False when its worker died (Ray restarts it)."""
        try:
            value = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            if task.attempts >= MAX_ATTEMPTS:
                self._fail(task.job, f"its worker died {task.attempts} times ({exc.__class__.__name__})")
            else:
                log.warning("row %d: worker died during %s; retrying", task.job.row, task.method)
                queue.appendleft(task)
            return False
        except ray.exceptions.RayTaskError as exc:
            self._fail_with(task, exc.cause)
            return True
        self._advance(task, value, queue)
        return True

    def _advance(self, task: _Task, value, queue: deque) -> None:
        job = task.job
        if task.method == "dub_length":
            self._split(job, *value, queue)
        elif task.method == "dub_chunk":
            if job.row in self.results:
                return  # the job failed in another chunk; this chunk's part stays for a re-run to reuse
            chunked = self._chunked[job.row]
            chunked.left -= 1
            chunked.seconds += value.seconds
            if chunked.left == 0:
                queue.appendleft(_Task(job, "join", (job, chunked.parts, chunked.frames)))
        else:
            chunked = self._chunked.pop(job.row, None)
            if chunked is not None:
                value.seconds += chunked.seconds
            self._finish(value)

    def _split(self, job: Job, frames: int, fps: float, queue: deque) -> None:
        """Queue ``job`` whole, or its chunks when it is longer than ``chunk_seconds``."""
        size = max(1, math.floor(self.cluster.chunk_seconds * fps))
        if frames <= size:
            queue.appendleft(_Task(job, "dub", (job,)))
            return
        spans = plan_chunks(frames, size, self.cluster.overlap_frames)
        parts = [part_url(job, i) for i in range(len(spans))]
        self._chunked[job.row] = _Chunked(frames, parts, len(spans))
        log.info("row %d: %d frames in %d chunks", job.row, frames, len(spans))
        queue.extendleft(_Task(job, "dub_chunk", (Chunk(job, i, span, part),))
                         for i, span, part in reversed(list(zip(range(len(spans)), spans, parts))))

    def _fail_with(self, task: _Task, error: BaseException) -> None:
        """The job of ``task`` failed with ``error`` raised on its worker (a bug's traceback is logged)."""
        if isinstance(error, MuseTalkError):
            self._fail(task.job, str(error))
            return
        log.error("row %d: internal error in %s", task.job.row, task.method, exc_info=error)
        self._fail(task.job, f"internal error: {error.__class__.__name__}: {error}")

    def _fail(self, job: Job, error: str) -> None:
        """``job`` failed with ``error``: its result, unless another of its tasks failed first (that reason stays)."""
        if job.row in self.results:
            log.warning("row %d: another of its chunks failed too: %s", job.row, error)
            return
        self._chunked.pop(job.row, None)
        self._finish(JobResult(job.row, job.output, FAILED, error=error))


@dataclass
class _Chunked:
    """A job cut into chunks: its frame count, part URLs, chunks still to come, seconds spent so far."""

    frames: int
    parts: list[str]
    left: int
    seconds: float = 0.0


SUMMARY_FIELDS = [f.name for f in fields(JobResult)]


def write_summary(results: list[JobResult], path: Path) -> None:
    """One CSV row per job (row, output, status, frames, seconds, error, attempts, worker), atomically."""
    with atomic_output(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SUMMARY_FIELDS)
        for result in results:
            writer.writerow(astuple(result))


def run_jobs_on_ray(rows: list[dict[str, str]], base: Path, options: DubOptions, cluster: ClusterOptions,
                    summary: Path) -> list[JobResult]:
    """Run the CSV ``rows`` (paths relative to ``base``) on Ray and write the ``summary`` CSV."""
    results = BatchRun(jobs_from_rows(rows, base), options, cluster).run()
    write_summary(results, summary)
    return results

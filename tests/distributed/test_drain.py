"""The driver's drain loop with a scripted stand-in for Ray (tasks finish in the order they were handed
out): a chunk failing while other chunks of its job still run fails that job alone, with its reason."""
from __future__ import annotations

import csv
import os
from types import SimpleNamespace

import pytest

from musetalk.distributed import batch
from musetalk.distributed.batch import ClusterOptions, run_jobs_on_ray
from musetalk.distributed.tasks import DONE, JobResult
from musetalk.distributed.worker import WorkerInfo
from musetalk.errors import MuseTalkError
from musetalk.pipeline.dub import DubOptions

FRAMES = {"long.mp4": 20, "short.mp4": 3}  # chunks of 5 frames: the long job is cut in 4


class RayTaskError(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class ScriptedRay:
    """What :class:`~musetalk.distributed.batch.BatchRun` uses of ``ray``: calls run at once and finish
    first-handed-out, first-done; ``calls`` records (method, row, chunk index)."""

    exceptions = SimpleNamespace(RayActorError=type("RayActorError", (Exception,), {}), RayTaskError=RayTaskError)

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def cluster_resources(self) -> dict:
        return {"CPU": 2}

    def remote(self, **_):
        return lambda cls: SimpleNamespace(remote=lambda options: Actor(cls(options), self))

    def wait(self, refs: list, num_returns: int):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if isinstance(ref.outcome, BaseException):
            raise RayTaskError(ref.outcome)
        return ref.outcome


class Ref:
    """An object ref: the call's return value or the error it raised."""

    def __init__(self, outcome) -> None:
        self.outcome = outcome


class Actor:
    def __init__(self, worker, ray: ScriptedRay) -> None:
        self.worker, self.ray = worker, ray

    def __getattr__(self, method: str):
        def call(*args):
            first = args[0] if args else None
            row = getattr(first, "row", getattr(getattr(first, "job", None), "row", None))
            self.ray.calls.append((method, row, getattr(first, "index", None)))
            try:
                outcome = getattr(self.worker, method)(*args)
            except MuseTalkError as exc:
                outcome = exc
            return Ref(outcome)

        return SimpleNamespace(remote=call)


class FakeWorker:
    """Frame counts from the source's name; the chunks of the long job in ``failing`` fail."""

    failing: tuple[int, ...] = ()

    def __init__(self, options) -> None:
        pass

    def ready(self) -> WorkerInfo:
        return WorkerInfo("fake", os.getpid(), "cpu")

    def dub_length(self, job) -> tuple[int, float]:
        return FRAMES[os.path.basename(job.source)], 25.0

    def dub(self, job) -> JobResult:
        return JobResult(job.row, job.output, DONE, FRAMES[os.path.basename(job.source)], 1.0)

    def dub_chunk(self, chunk) -> JobResult:
        if chunk.index in self.failing:
            raise MuseTalkError(f"chunk {chunk.index} could not be written")
        return JobResult(chunk.job.row, chunk.part, DONE, chunk.span.frames, 1.0)

    def join(self, job, parts, frames) -> JobResult:
        return JobResult(job.row, job.output, DONE, frames, 1.0)


@pytest.mark.parametrize("failing", [(1,), (1, 2)], ids=["then-one-finishes", "then-one-fails-too"])
def test_a_failed_chunk_fails_its_job_alone_while_its_other_chunks_finish(tmp_path, monkeypatch, failing):
    """Chunk 2 was handed out before chunk 1 failed and ends after it: its end (done or failed too) changes
    nothing; the job keeps its first reason and the other row completes."""
    ray = ScriptedRay()
    monkeypatch.setattr(batch, "connect", lambda *args, **kwargs: ray)
    monkeypatch.setattr(batch, "DubWorker", FakeWorker)
    monkeypatch.setattr(FakeWorker, "failing", failing)
    rows = [{"source": "long.mp4", "audio": "a.wav", "output": "long-out.mp4"},
            {"source": "short.mp4", "audio": "a.wav", "output": "short-out.mp4"}]
    cluster = ClusterOptions(workers=2, chunk_seconds=0.2)
    summary = tmp_path / "summary.csv"
    results = run_jobs_on_ray(rows, tmp_path, DubOptions(progress=False), cluster, summary)

    assert [(r.row, r.status, r.frames, r.error) for r in results] == [
        (1, "failed", 0, "chunk 1 could not be written"), (2, "done", 3, "")]
    # chunk 3 never started; no join
    assert [c for c in ray.calls if c[0] != "ready"] == [
        ("dub_length", 1, None), ("dub_length", 2, None), ("dub_chunk", 1, 0), ("dub", 2, None),
        ("dub_chunk", 1, 1), ("dub_chunk", 1, 2)]
    with summary.open() as f:
        table = list(csv.DictReader(f))
    assert [(t["row"], t["status"], t["error"]) for t in table] == [
        ("1", "failed", "chunk 1 could not be written"), ("2", "done", "")]

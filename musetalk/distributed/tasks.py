"""The units of a batch run: a job (one CSV row), a chunk of a long job, and what each gives back."""
from __future__ import annotations

from dataclasses import dataclass

from ..pipeline.dub import FrameSpan

DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass(frozen=True)
class Job:
    """One CSV row: ``row`` counts data rows from 1; paths are absolute or fsspec URLs."""

    row: int
    source: str
    audio: str
    output: str

    @property
    def key(self) -> str:
        """A name for this job's temporary files."""
        return f"row{self.row}"


@dataclass(frozen=True)
class Chunk:
    """Frames ``span`` of ``job``'s dub, committed to ``part`` (a path or URL)."""

    job: Job
    index: int
    span: FrameSpan
    part: str


@dataclass
class JobResult:
    """A job's outcome, one row of the summary CSV. ``seconds``: wall time of its work on the workers."""

    row: int
    output: str
    status: str
    frames: int = 0
    seconds: float = 0.0
    error: str = ""
    attempts: int = 0
    worker: str = ""

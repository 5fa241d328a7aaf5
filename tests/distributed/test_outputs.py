"""What a Ray worker does with a job's output before dubbing it (the worker class called in-process, as a
Ray actor runs it): missing local folders are made; an output that cannot be written is refused before any
dubbing, for a whole job and for the first task of a chunked one."""
from __future__ import annotations

import pytest

from musetalk.distributed import worker as worker_module
from musetalk.distributed.storage import StorageError
from musetalk.distributed.tasks import DONE, Job
from musetalk.distributed.worker import DubWorker
from musetalk.pipeline.dub import DubOptions


@pytest.fixture
def worker(tiny_models, monkeypatch):
    """A worker whose dubs are recorded (``worker.started``: the outputs whose work began)."""
    w = DubWorker(DubOptions(models=str(tiny_models), progress=False))
    w.started = []
    real_dub, real_length = worker_module.dub, worker_module.dub_length
    monkeypatch.setattr(worker_module, "dub", lambda s, a, out, *args, **kw: (w.started.append(out),
                                                                              real_dub(s, a, out, *args, **kw))[1])
    monkeypatch.setattr(worker_module, "dub_length", lambda s, a, *args: (w.started.append(s),
                                                                          real_length(s, a, *args))[1])
    return w


def test_missing_output_folders_are_made(worker, tmp_path, clips, speech_short):
    output = tmp_path / "new" / "deeper" / "a.mp4"
    result = worker.dub(Job(1, str(clips[0]), str(speech_short), str(output)))
    assert (result.status, result.frames) == (DONE, 6)
    assert sorted(p.name for p in output.parent.iterdir()) == ["a.mp4"]


@pytest.mark.parametrize("method", ["dub", "dub_length"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(worker, tmp_path, clips, speech_short, method):
    (tmp_path / "afile").write_text("not a folder")
    output = tmp_path / "afile" / "sub" / "b.mp4"
    with pytest.raises(StorageError) as info:
        getattr(worker, method)(Job(2, str(clips[0]), str(speech_short), str(output)))
    assert str(info.value) == f"cannot write {output}: Not a directory; choose a writable output folder"
    assert worker.started == []


def test_a_remote_output_is_probed_and_the_probe_removed(worker, clips, speech_short):
    import fsspec

    fs = fsspec.filesystem("memory")
    job = Job(3, str(clips[0]), str(speech_short), "memory://bucket/probed/c.mp4")
    assert worker.dub_length(job) == (6, 25.0)
    assert fs.find("/bucket") == []

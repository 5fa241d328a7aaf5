"""``dub --jobs --ray`` on a local Ray instance with tiny models: every job once, a killed worker's job
retried, re-runs skip, bad rows fail alone, a long dub in chunks equals the one-process dub."""
from __future__ import annotations

import csv
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from musetalk.audio import decode_audio
from musetalk.distributed.batch import BatchRun, ClusterOptions, jobs_from_rows, run_jobs_on_ray
from musetalk.pipeline.dub import DubOptions
from musetalk.video import probe, read_frames

import soundfile as sf

from tests.dub.conftest import write_clip

from .conftest import DUB_SECONDS

pytestmark = pytest.mark.slow

FRAMES = 6
CLUSTER = ClusterOptions(workers=2, cpus_per_worker=1)


def kill_a_busy_worker(run: BatchRun, timeout_s: float = 300) -> int:
    """SIGKILL the process of the first worker seen working on a job; returns that job's row."""
    deadline = time.monotonic() + timeout_s
    while not run.running:
        assert time.monotonic() < deadline, "no worker started a job"
        time.sleep(0.05)
    pid, row = next(iter(dict(run.running).items()))
    os.kill(pid, signal.SIGKILL)
    return row


def bad_rows(folder: Path, clip: Path, speech: Path) -> tuple[list[dict[str, str]], list[str]]:
    """Rows that must fail (missing file, unreadable video, no face, unreachable input and output URLs, an
    output under a file, refused before its dub) and the start of each reason."""
    (folder / "broken.mp4").write_bytes(b"not a video")
    (folder / "afile").write_text("not a folder")
    cv2.imwrite(str(folder / "wall.png"), np.full((240, 320, 3), 128, np.uint8))
    rows = [{"source": "gone.mp4", "audio": str(speech), "output": "a.mp4"},
            {"source": "broken.mp4", "audio": str(speech), "output": "b.mp4"},
            {"source": "wall.png", "audio": str(speech), "output": "c.mp4"},
            {"source": "nosuch://host/x.mp4", "audio": str(speech), "output": "d.mp4"},
            {"source": str(clip), "audio": str(speech), "output": "nosuch://host/e.mp4"},
            {"source": str(clip), "audio": str(speech), "output": "afile/sub/f.mp4"}]
    reasons = [f"video file not found: {folder / 'gone.mp4'}",
               f"cannot read {folder / 'broken.mp4'}: not a video file PyAV can open",
               f"no face found in {folder / 'wall.png'}: use a video or photo",
               "cannot open nosuch://host/x.mp4: Protocol not known: nosuch",
               "cannot open nosuch://host/e.mp4: Protocol not known: nosuch",
               f"cannot write {folder / 'afile' / 'sub' / 'f.mp4'}: Not a directory; choose a writable output folder"]
    return rows, reasons


def test_six_jobs_once_each_despite_a_killed_worker_bad_rows_alone_rerun_skips(ray_local, tmp_path, tiny_models,
                                                                               clips, speech_short):
    rows = [{"source": str(clip), "audio": str(speech_short), "output": f"out/dub{k}.mp4"}
            for k, clip in enumerate(clips)]
    broken, reasons = bad_rows(tmp_path, clips[0], speech_short)  # out/ does not exist yet: the workers make it
    options = DubOptions(models=str(tiny_models), progress=False)
    run = BatchRun(jobs_from_rows(rows + broken, tmp_path), options, CLUSTER)
    results: list = []
    runner = threading.Thread(target=lambda: results.extend(run.run()))
    runner.start()
    killed = kill_a_busy_worker(run)
    runner.join()

    good, bad = results[:6], results[6:]
    assert [(r.row, r.status, r.frames, r.error) for r in good] == [(k, "done", FRAMES, "") for k in range(1, 7)]
    assert [r.attempts for r in good] == [2 if r.row == killed else 1 for r in good]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"dub{k}.mp4" for k in range(6)]
    for k in range(6):
        output = tmp_path / "out" / f"dub{k}.mp4"
        assert probe(output).has_audio
        assert sum(1 for _ in read_frames(output)) == FRAMES
        samples, rate = decode_audio(output)
        assert abs(len(samples) / rate - DUB_SECONDS) < 0.03
    assert [r.status for r in bad] == ["failed"] * 6
    for result, reason in zip(bad, reasons):
        assert result.error.startswith(reason) and "\n" not in result.error

    summary = tmp_path / "summary.csv"
    again = run_jobs_on_ray(rows, tmp_path, options, CLUSTER, summary)
    assert [r.status for r in again] == ["skipped"] * 6
    with summary.open() as f:
        table = list(csv.DictReader(f))
    assert [(t["row"], t["status"], t["output"], t["error"]) for t in table] == [
        (str(k + 1), "skipped", str(tmp_path / "out" / f"dub{k}.mp4"), "") for k in range(6)]


def test_long_dub_in_chunks_equals_the_one_process_dub(ray_local, tmp_path, tiny_models, sun18, media):
    from musetalk.face import FaceAnalyzer
    from musetalk.pipeline.dub import dub

    source = write_clip(tmp_path / "long.mp4", sun18[:12])
    audio = tmp_path / "speech.wav"
    samples, rate = sf.read(media / "sun.wav", dtype="float32")
    sf.write(audio, samples[: int(rate * 0.48)], rate)  # 12 frames: chunks of 5, 5 and 2
    options = DubOptions(models=str(tiny_models), progress=False, crf=0)
    dub(source, audio, tmp_path / "whole.mp4", options)
    # tracking warms up from frame 0 here (the default overlap's convergence: test_chunks.py)
    cluster = ClusterOptions(workers=2, cpus_per_worker=1, chunk_seconds=0.2, overlap_frames=10)
    rows = [{"source": str(source), "audio": str(audio), "output": "chunked.mp4"}]
    (result,) = run_jobs_on_ray(rows, tmp_path, options, cluster, tmp_path / "summary.csv")

    assert (result.status, result.frames, result.attempts) == ("done", 12, 5)  # length, 3 chunks, join
    whole, chunked = tmp_path / "whole.mp4", tmp_path / "chunked.mp4"
    assert probe(chunked).fps == probe(whole).fps
    a, b = (np.stack(list(read_frames(p))).astype(np.int16) for p in (whole, chunked))
    assert a.shape == b.shape == (12, 768, 576, 3)
    x1, y1, x2, y2 = FaceAnalyzer().analyze(sun18[0]).crop_box
    face_diff = np.abs(a - b)[:, y1:y2, x1:x2].mean(axis=(1, 2, 3))
    assert face_diff.max() < 2, face_diff
    (wa, ra), (ca, rc) = decode_audio(whole), decode_audio(chunked)
    assert ra == rc and wa.shape == ca.shape and np.abs(wa - ca).max() < 1e-4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

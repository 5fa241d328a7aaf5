"""`musetalk dub` from the command line: bad inputs, atomic output, batch jobs, silence."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from musetalk.cli.main import main
from musetalk.pipeline import lipsync
from musetalk.video import probe, read_frames

from .conftest import write_clip


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main(["dub", *map(str, args), "--quiet"])
    return code, capsys.readouterr().err


def assert_one_line_error(err: str, *parts: str) -> None:
    assert err.startswith("musetalk: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for part in parts:
        assert part in err, err


def no_outputs(folder, out=None) -> bool:
    """No output video, no sidecar and no temporary file in ``folder``."""
    out = out or folder / "o.mp4"
    leftovers = [p for p in folder.rglob("*") if ".part" in p.name]
    return not out.exists() and not out.with_name(out.name + ".json").exists() and not leftovers


@pytest.fixture
def blank_png(tmp_path):
    import cv2

    path = tmp_path / "wall.png"
    cv2.imwrite(str(path), np.full((300, 400, 3), 200, np.uint8))
    return path


def test_success_prints_summary(tmp_path, capsys, tiny_models, clip10, speech1s):
    out = tmp_path / "out" / "dubbed.mp4"
    out.parent.mkdir()
    assert main(["dub", str(clip10), str(speech1s), "-o", str(out), "--models", str(tiny_models), "--quiet"]) == 0
    assert f"{out}: 25 frames at 25 fps, 1.00 s of audio" in capsys.readouterr().out
    assert probe(out).num_frames == 25
    assert list(out.parent.iterdir()) == [out]  # no timings file unless asked for
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_stats_file_only_when_asked(tmp_path, capsys, tiny_models, clip10, speech1s):
    out, stats = tmp_path / "dubbed.mp4", tmp_path / "timings" / "run.json"
    stats.parent.mkdir()
    assert main(["dub", str(clip10), str(speech1s), "-o", str(out), "--models", str(tiny_models), "--quiet",
                 "--stats", str(stats)]) == 0
    record = json.loads(stats.read_text())
    assert record["result"]["frames"] == 25 and record["options"]["stats"] == str(stats)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["dubbed.mp4", "run.json", "timings"]
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("source,audio,output\n")
    assert main(["dub", "--jobs", str(jobs), "--stats", str(stats)]) == 1
    assert_one_line_error(capsys.readouterr().err, "--stats writes the timings of a single dub")


def test_sigterm_leaves_no_partial_output(tmp_path, tiny_models, clip40, media):
    out = tmp_path / "o.mp4"
    command = [sys.executable, "-m", "musetalk.cli.main", "dub", str(clip40), str(media / "sun.wav"), "-o", str(out),
               "--models", str(tiny_models), "--quiet"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".o.*.part.mp4")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    assert "musetalk: interrupted" in process.stderr.read()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["missing video", "missing audio", "text as audio", "text as video",
                                  "video as audio", "no models", "unwritable output"])
def test_bad_inputs_one_line_and_nothing_written(tmp_path, capsys, tiny_models, clip10, speech1s, case):
    text = tmp_path / "notes.txt"
    text.write_text("not media")
    source, audio, out, models = clip10, speech1s, tmp_path / "out.mp4", tiny_models
    expected: tuple[str, ...]
    if case == "missing video":
        source, expected = tmp_path / "gone.mp4", (f"video file not found: {tmp_path / 'gone.mp4'}",)
    elif case == "missing audio":
        audio, expected = tmp_path / "gone.wav", (f"audio file not found: {tmp_path / 'gone.wav'}",)
    elif case == "text as audio":
        audio, expected = text, (f"cannot read audio from {text}", "not an audio or video file")
    elif case == "text as video":
        bad = tmp_path / "bad.mp4"
        bad.write_text("not a video")
        source, expected = bad, (f"cannot read {bad}", "not a video file")
    elif case == "video as audio":
        audio, expected = clip10, (f"{clip10} has no audio track",)
    elif case == "no models":
        models, expected = tmp_path / "nomodels", ("model files missing in", "musetalk download --models")
    else:
        out, expected = tmp_path / "nowhere" / "out.mp4", ("cannot write", "does not exist")
    code, err = run_cli(capsys, source, audio, "-o", out, "--models", models)
    assert code == 1
    assert_one_line_error(err, *expected)
    assert no_outputs(tmp_path, out)


def test_parsing_blend_without_weights(tmp_path, capsys, tiny_models, clip10, speech1s):
    import shutil

    models = shutil.copytree(tiny_models, tmp_path / "models", ignore=shutil.ignore_patterns("face-parse-bisent"))
    code, err = run_cli(capsys, clip10, speech1s, "-o", tmp_path / "o.mp4", "--models", models, "--blend", "parsing")
    assert code == 1
    assert_one_line_error(err, "--blend parsing needs the BiSeNet weights", "face-parse-bisent/79999_iter.pth",
                          "musetalk download")
    assert no_outputs(tmp_path)


def test_wrong_version_is_refused(capsys, clip10, speech1s, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["dub", str(clip10), str(speech1s), "-o", str(tmp_path / "o.mp4"), "--version", "v2"])
    assert exit_info.value.code == 2
    assert "argument --version: invalid choice: 'v2' (choose from 'v1.5', 'v1.0')" in capsys.readouterr().err


def test_photo_without_face(tmp_path, capsys, tiny_models, blank_png, speech1s):
    code, err = run_cli(capsys, blank_png, speech1s, "-o", tmp_path / "o.mp4", "--models", tiny_models)
    assert code == 1
    assert_one_line_error(err, f"no face found in {blank_png}")
    assert no_outputs(tmp_path)


def test_video_without_face(tmp_path, capsys, tiny_models, speech1s):
    clip = write_clip(tmp_path / "grey.mp4", [np.full((240, 320, 3), 90, np.uint8)] * 5)
    out = tmp_path / "o.mp4"
    code, err = run_cli(capsys, clip, speech1s, "-o", out, "--models", tiny_models)
    assert code == 1
    assert_one_line_error(err, f"no face found in {clip}")
    assert not out.exists() and not list(tmp_path.glob("*.part*"))


def test_verbose_shows_the_traceback(tmp_path, capsys, speech1s):
    with pytest.raises(Exception, match="video file not found"):
        main(["dub", str(tmp_path / "gone.mp4"), str(speech1s), "-o", str(tmp_path / "o.mp4"), "--verbose"])


def test_truncated_mp4_is_refused_clearly(tmp_path, capsys, tiny_models, clip40, speech1s):
    """An mp4 cut in half has lost its index (moov atom at the end): nothing can be decoded."""
    data = clip40.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    code, err = run_cli(capsys, cut, speech1s, "-o", tmp_path / "o.mp4", "--models", tiny_models)
    assert code == 1
    assert_one_line_error(err, f"cannot read {cut}", "truncated/damaged", "re-encode")
    assert no_outputs(tmp_path)


def test_truncated_mkv_is_dubbed_from_its_readable_frames(tmp_path, capsys, tiny_models, sun_frames, speech1s):
    import av

    full = tmp_path / "full.mkv"
    with av.open(str(full), "w") as container:
        stream = container.add_stream("h264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 576, 768, "yuv420p"
        for frame in sun_frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    readable = sum(1 for _ in read_frames(cut))
    assert 5 < readable < 40
    out = tmp_path / "o.mp4"
    code, err = run_cli(capsys, cut, speech1s, "-o", out, "--models", tiny_models)
    assert code == 0, err
    assert probe(out).num_frames == 25


@pytest.mark.parametrize("failure", [RuntimeError("CUDA out of memory"), KeyboardInterrupt()])
def test_no_partial_output_after_a_failure(tmp_path, monkeypatch, tiny_musetalk, clip40, speech1s, failure):
    from musetalk.pipeline.dub import DubOptions, dub

    calls = []
    original = lipsync.MuseTalk.launch

    def flaky(self, latents, prompts):
        calls.append(1)
        if len(calls) == 2:
            raise failure
        return original(self, latents, prompts)

    monkeypatch.setattr(lipsync.MuseTalk, "launch", flaky)
    out = tmp_path / "o.mp4"
    with pytest.raises(type(failure)):
        dub(clip40, speech1s, out, DubOptions(progress=False), model=tiny_musetalk)
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []


def test_jobs_csv(tmp_path, capsys, tiny_models, clip10, speech1s):
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"old")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"source,audio,output\n{clip10},{speech1s},a.mp4\n{clip10},{tmp_path / 'gone.wav'},b.mp4\n"
                    f"{clip10},{speech1s},exists.mp4\n")
    code = main(["dub", "--jobs", str(jobs), "--models", str(tiny_models), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert "3 jobs: 1 done, 1 skipped (output exists), 1 failed (rows 2)" in captured.out
    assert "row 2 failed: audio file not found" in captured.err
    assert probe(tmp_path / "a.mp4").num_frames == 25
    assert existing.read_bytes() == b"old" and not (tmp_path / "b.mp4").exists()


def test_jobs_create_missing_output_folders_and_refuse_unwritable_outputs_before_dubbing(
        tmp_path, capsys, monkeypatch, tiny_models, clip10, speech1s):
    """Row 1 writes under folders that do not exist yet (made); row 2 under a file (refused before its dub:
    the dub is never called for it)."""
    from musetalk.pipeline import dub as pipeline

    dubbed = []
    real_dub = pipeline.dub
    monkeypatch.setattr(pipeline, "dub", lambda source, audio, output, *a, **k: (
        dubbed.append(output), real_dub(source, audio, output, *a, **k))[1])
    (tmp_path / "afile").write_text("not a folder")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"source,audio,output\n{clip10},{speech1s},new/deeper/a.mp4\n{clip10},{speech1s},afile/sub/b.mp4\n")
    code = main(["dub", "--jobs", str(jobs), "--models", str(tiny_models), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert "2 jobs: 1 done, 0 skipped (output exists), 1 failed (rows 2)" in captured.out
    assert captured.err == (f"musetalk: row 2 failed: cannot write {tmp_path / 'afile' / 'sub' / 'b.mp4'}: "
                            "Not a directory; choose a writable output folder\n")
    assert dubbed == [tmp_path / "new" / "deeper" / "a.mp4"]
    assert probe(tmp_path / "new" / "deeper" / "a.mp4").num_frames == 25
    assert sorted(p.name for p in (tmp_path / "new" / "deeper").iterdir()) == ["a.mp4"]


def test_jobs_csv_needs_its_columns(tmp_path, capsys):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("video,speech\nx,y\n")
    assert main(["dub", "--jobs", str(jobs)]) == 1
    assert_one_line_error(capsys.readouterr().err, "needs the columns source,audio,output (missing: audio, output, source)")


def test_silence_still_keeps_the_mouth_still_in_a_pause(tmp_path, tiny_musetalk, media, captured):
    """Speech, then a planted 1 s pause, then speech: with --silence-still the pause frames are identical."""
    from musetalk.face import FaceAnalyzer, mouth_opening
    from musetalk.pipeline.dub import DubOptions, dub

    samples, rate = sf.read(media / "sun.wav", dtype="float32")
    speech = np.concatenate([samples[rate : 2 * rate], np.zeros(rate, np.float32), samples[3 * rate : 4 * rate]])
    audio = tmp_path / "pause.wav"
    sf.write(audio, speech, rate)
    pause = slice(30, 45)  # frames well inside the pause (25..50)
    runs = {}
    for still in (False, True):
        captured.clear()
        dub(media / "musk.png", audio, tmp_path / f"o{still}.mp4", DubOptions(silence_still=still, progress=False),
            model=tiny_musetalk)
        frames = captured[pause]
        analyzer = FaceAnalyzer(smooth=False)
        openings = []
        for frame in frames:  # each frame on its own, as a photo
            analyzer.reset()
            openings.append(mouth_opening(analyzer.analyze(frame).landmarks))
        runs[still] = (np.stack(frames).astype(np.float32), np.array(openings))
    moving, still = runs[False][0], runs[True][0]
    assert np.abs(np.diff(still, axis=0)).max() == 0  # every pause frame is the same picture
    assert (np.diff(moving, axis=0) != 0).any(axis=(1, 2, 3)).all()  # without: every frame differs
    assert np.ptp(runs[True][1]) == 0.0  # the same picture gives the same landmarks
    assert np.var(runs[False][1]) > 1e-6

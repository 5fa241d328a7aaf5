"""Dubbing on the fast path, on CPU: face records instead of analysis, the tiny decoder from the command
line, the device's idle share, the video encoder choice."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from musetalk.cli.main import main
from musetalk.errors import FaceError, VideoError
from musetalk.face import FaceAnalyzer, RecordedFaces, save_records
from musetalk.pipeline import dub as dub_module
from musetalk.pipeline.dub import DubOptions, dub, load_model
from musetalk.video import probe, read_frames
from musetalk.video import io as video_io

FAST = dict(progress=False, batch_size=4)


@pytest.fixture(scope="module")
def clip10_records(tmp_path_factory, clip10):
    """Face records of every frame of clip10, analysed as dub would."""
    path = tmp_path_factory.mktemp("records") / "clip10.npz"
    save_records(path, FaceAnalyzer(fps=25).analyze_all(read_frames(clip10)))
    return path


def test_face_records_replace_the_analysis(tmp_path, tiny_musetalk, clip10, speech1s, clip10_records, captured,
                                           monkeypatch):
    dub(clip10, speech1s, tmp_path / "analysed.mp4", DubOptions(end=0.4, **FAST), model=tiny_musetalk)
    analysed = [f.copy() for f in captured]
    captured.clear()

    def no_analysis(*args, **kwargs):
        raise AssertionError("face analysis ran although records were given")

    monkeypatch.setattr(dub_module, "FaceAnalyzer", no_analysis)
    result = dub(clip10, speech1s, tmp_path / "recorded.mp4",
                 DubOptions(face_records=str(clip10_records), end=0.4, **FAST), model=tiny_musetalk)
    assert result.frames == len(captured) == 10
    for a, b in zip(analysed, captured):
        np.testing.assert_array_equal(a, b)


def test_face_records_of_another_clip_are_refused(tmp_path, tiny_musetalk, clip10, clip40, speech1s, clip10_records):
    with pytest.raises(FaceError) as err:
        dub(clip40, speech1s, tmp_path / "o.mp4", DubOptions(face_records=str(clip10_records), **FAST),
            model=tiny_musetalk)
    assert str(err.value) == (f"{clip10_records} holds the faces of 10 frames but the source has more: "
                              f"write the records of every frame of this source")
    assert not (tmp_path / "o.mp4").exists()


def test_slow_source_leaves_the_device_idle(tmp_path, tiny_musetalk, clip10, speech1s, clip10_records, monkeypatch):
    """The model step is made nearly free and the source slow: the device waits most of the window."""
    recorded = RecordedFaces.__call__

    def slow_source(self, frame):
        time.sleep(0.4)
        return recorded(self, frame)

    def free_step(latents, prompts):
        return torch.zeros((len(latents), 256, 256, 3), dtype=torch.uint8)

    monkeypatch.setattr(RecordedFaces, "__call__", slow_source)
    monkeypatch.setattr(tiny_musetalk, "_forward", free_step)
    monkeypatch.setattr(tiny_musetalk, "unet_input", lambda crops, refs: torch.zeros((len(crops), 8, 32, 32)))
    result = dub(clip10, speech1s, tmp_path / "o.mp4", DubOptions(face_records=str(clip10_records), **FAST),
                 model=tiny_musetalk)
    assert 0 < result.device_busy_seconds < 1.0
    assert result.device_idle_fraction > 0.6  # 10 source frames x 0.4 s against a nearly free model step
    assert result.video_encoder == "libx264"


def test_tiny_decoder_from_the_command_line(tmp_path, capsys, tiny_models, clip10, speech1s):
    out = tmp_path / "tiny.mp4"
    code = main(["dub", str(clip10), str(speech1s), "-o", str(out), "--models", str(tiny_models),
                 "--decoder", "tiny", "--batch-size", "4", "--end", "0.4", "--quiet", "--stats",
                 str(tmp_path / "stats.json")])
    assert code == 0 and probe(out).num_frames == 10
    options = json.loads((tmp_path / "stats.json").read_text())["options"]
    assert (options["decoder"], options["dtype"], options["compile"]) == ("tiny", "auto", "off")


def test_missing_taesd_from_the_command_line(tmp_path, capsys, tiny_models, clip10, speech1s):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, ignore=shutil.ignore_patterns("taesd"))
    code = main(["dub", str(clip10), str(speech1s), "-o", str(tmp_path / "o.mp4"), "--models", str(models),
                 "--decoder", "tiny", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert f"tiny decoder files missing in {models}/taesd/" in err and "musetalk download" in err


def test_compiled_dub_pads_to_the_batch_size(tiny_models, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, mode, dynamic: fn)
    model = load_model(DubOptions(models=str(tiny_models), compile="cudagraphs", batch_size=6))
    assert (model.accel.static_batch, model.accel.compile, model.dtype) == (6, "cudagraphs", torch.float32)
    assert load_model(DubOptions(models=str(tiny_models))).accel.static_batch is None


def test_video_encoder_choice(monkeypatch):
    assert video_io.choose_h264_encoder("auto", 576, 768) == "libx264"  # no NVIDIA GPU here
    monkeypatch.setattr(video_io, "nvenc_available", lambda: True)
    assert video_io.choose_h264_encoder("auto", 576, 768) == "h264_nvenc"
    assert video_io.choose_h264_encoder("auto", 577, 768) == "libx264"  # odd sizes stay with libx264 4:4:4
    assert video_io.choose_h264_encoder("libx264", 576, 768) == "libx264"
    with pytest.raises(VideoError, match="unknown video encoder 'x265': choose one of auto, libx264, h264_nvenc"):
        video_io.choose_h264_encoder("x265", 576, 768)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nvenc_writes_a_playable_mp4(tmp_path):
    if not video_io.nvenc_available():
        pytest.skip("this PyAV build or driver has no working h264_nvenc")
    frames = np.random.default_rng(0).integers(0, 256, (10, 144, 256, 3), dtype=np.uint8)
    with video_io.VideoWriter(tmp_path / "n.mp4", 256, 144, 25, encoder="auto") as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.encoder == "h264_nvenc" and probe(tmp_path / "n.mp4").num_frames == 10

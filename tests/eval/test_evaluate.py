"""End to end: ``evaluate`` and ``musetalk eval`` on a re-encoded copy of sun.mp4, bad inputs, the report."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from musetalk.cli.main import main
from musetalk.errors import FaceError, MuseTalkError
from musetalk.eval import EvalPair, evaluate, pairs_from_csv
from musetalk.models.syncnet_v2 import SyncNetV2


class PooledPixels(torch.nn.Module):
    """Cheap stand-in for the Inception in tests: 8 x 8 average-pooled pixels as 192-d features."""

    def features(self, images: np.ndarray, device: str = "cpu") -> np.ndarray:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).double()
        return torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1).numpy()


@pytest.fixture(scope="module")
def self_result(sun_clips, tmp_path_factory):
    generated, source = sun_clips
    out = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    result = evaluate([EvalPair(generated, source, name="sun")], out_dir=out / "tables", report_dir=out / "report",
                      syncnet=SyncNetV2(), inception=PooledPixels(), csim_stride=8)
    return result, out


def test_clip_against_itself(self_result):
    row = self_result[0].clips[0].row
    assert row["frames"] == 40 and row["protocol"] == "reconstruction"
    assert row["psnr_face"] == 100.0 and row["psnr_mouth"] == 100.0  # identical decoded frames: capped
    assert row["ssim_face"] == pytest.approx(1.0) and row["lmd"] == 0.0
    assert row["csim"] == pytest.approx(1.0, abs=1e-6)
    assert row["id_distance"] == pytest.approx(0.0, abs=1e-4) and row["same_person"] is True
    assert row["fid"] == pytest.approx(0.0, abs=1e-2)  # sqrtm round-off on covariances of ~1e4
    assert row["lse_d"] > 0 and row["lse_c"] >= 0 and isinstance(row["sync_offset"], int)
    assert row["av_offset"] is None and row["av_corr"] is None  # under 60 frames: no AV offset estimate
    assert self_result[0].notes == ["CSIM: cosine of dlib-resnet-v1 face descriptors (128-d); same_person: mean "
                                    "descriptor distance id_distance < 0.6 (dlib's calibrated threshold)"]


def test_tables_are_written(self_result):
    result, out = self_result
    with open(out / "tables" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["clip"] for r in rows] == ["sun", "mean"] and float(rows[0]["psnr_face"]) == 100.0
    data = json.loads((out / "tables" / "metrics.json").read_text())
    assert data["mean"]["csim"] == pytest.approx(1.0, abs=1e-6)
    assert "| sun | reconstruction | 40 |" in result.to_markdown()


def test_report_renders_in_chromium(self_result, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not on PATH (CI's .ci/run installs it)")
    page = self_result[1] / "report" / "index.html"
    assert "<table id='metrics'>" in page.read_text()
    shot = tmp_path / "shot.png"
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=90).stdout
    assert "psnr_face" in dom and "worst PSNR" in dom
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900", f"--screenshot={shot}",
                    page.as_uri()], capture_output=True, timeout=90)
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (900, 1200)
    assert image.std() > 20  # the table, strips and plot drew something, not a blank page


def test_missing_weights_skip_with_a_note_and_other_metrics_run(sun_clips, tmp_path, capsys):
    generated, source = sun_clips
    code = main(["eval", str(generated), "--source", str(source), "--out", str(tmp_path / "o"), "--models",
                 str(tmp_path / "no_models"), "--no-csim", "--max-frames", "10"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "FID skipped: weights not found" in printed and "LSE-C/LSE-D skipped" in printed
    row = json.loads((tmp_path / "o" / "metrics.json").read_text())["clips"][0]
    assert row["psnr_face"] == 100.0 and row["fid"] is None and row["lse_c"] is None


def test_bad_inputs_give_clear_errors(sun_clips, sun_frames, sun_audio, clip_writer, tmp_path, capsys):
    generated, source = sun_clips
    with pytest.raises(MuseTalkError, match="generated video file not found"):
        EvalPair(tmp_path / "nope.mp4", source)
    short = clip_writer(tmp_path / "short.mp4", sun_frames[:20], sun_audio[:20 * 640])
    with pytest.raises(MuseTalkError, match="lengths differ.*cross-audio"):
        evaluate([EvalPair(short, source)], identity=False, models_dir=tmp_path)
    blank = clip_writer(tmp_path / "blank.mp4", [np.full((96, 96, 3), 128, np.uint8)] * 8, sun_audio[:8 * 640])
    with pytest.raises(FaceError, match="no face found in .*blank.mp4"):
        evaluate([EvalPair(blank, source, protocol="cross-audio")], identity=False, models_dir=tmp_path)
    mute = clip_writer(tmp_path / "mute.mp4", sun_frames[:8])
    with pytest.raises(MuseTalkError, match="no audio track.*--audio"):
        evaluate([EvalPair(mute, source, protocol="cross-audio")], identity=False, models_dir=tmp_path)
    (tmp_path / "pairs.csv").write_text("video,reference\na.mp4,b.mp4\n")
    with pytest.raises(MuseTalkError, match="columns generated,source"):
        pairs_from_csv(tmp_path / "pairs.csv")
    assert main(["eval", str(tmp_path / "nope.mp4"), "--source", str(source)]) == 1
    assert "generated video file not found" in capsys.readouterr().err


def test_cross_audio_pairs_from_csv_use_reference_free_metrics(sun_clips, media, tmp_path):
    generated, _ = sun_clips
    (tmp_path / "pairs.csv").write_text(f"generated,source,audio,protocol\n{generated},{media / 'sun.mp4'},"
                                        f"{media / 'sun.wav'},cross-audio\n")
    result = evaluate(pairs_from_csv(tmp_path / "pairs.csv"), models_dir=tmp_path, max_frames=40, csim_stride=10)
    row = result.clips[0].row
    assert row["protocol"] == "cross-audio" and row["psnr_face"] is None and row["lmd"] is None
    assert row["csim"] > 0.95


def test_one_bad_pair_in_a_csv_is_reported_in_its_row(sun_clips, tmp_path, capsys):
    """Row 3 names a missing file, row 4 a clip without audio: both reported, rows 2 and 5 still scored."""
    generated, source = sun_clips
    mute = tmp_path / "mute.mp4"
    from musetalk.video.io import read_frames

    from .conftest import write_clip

    write_clip(mute, list(read_frames(source)))
    (tmp_path / "pairs.csv").write_text(f"generated,source,name\n{generated},{source},first\nmissing.mp4,{source},gone\n"
                                        f"{mute},{source},mute\n{generated},{source},last\n")
    code = main(["eval", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "o"), "--models",
                 str(tmp_path / "no_models"), "--no-csim", "--max-frames", "10"])
    captured = capsys.readouterr()
    rows = json.loads((tmp_path / "o" / "metrics.json").read_text())["clips"]
    assert [r["clip"] for r in rows] == ["first", "gone", "mute", "last"]
    assert rows[0]["psnr_face"] == 100.0 and rows[3]["psnr_face"] == 100.0
    assert rows[1]["note"] == f"failed: {tmp_path / 'pairs.csv'} line 3: generated video file not found: {tmp_path / 'missing.mp4'}"
    assert rows[2]["note"].startswith("failed: ") and "no audio track" in rows[2]["note"] and rows[2]["psnr_face"] is None
    assert code == 1
    assert captured.err.strip().splitlines()[-1].startswith("musetalk: error: 2 of 4 pairs not scored (gone: ")


def test_report_has_no_difference_panel_against_a_photo(sun_clips, media, tmp_path):
    from musetalk.eval.report import strip

    generated, _ = sun_clips
    result = evaluate([EvalPair(generated, media / "musk.png", protocol="cross-audio")], report_dir=tmp_path,
                      identity=False, models_dir=tmp_path, max_frames=10)
    assert strip(result.clips[0], 0).shape == (256, 512, 3)
    page = (tmp_path / "index.html").read_text()
    assert page.count("(source | generated)</figcaption>") == 2 and "difference x" not in page


def test_a_pair_failing_with_any_error_fails_alone_with_its_reason(sun_clips, tmp_path, monkeypatch):
    """A bug in one pair's scoring (here: an error that is no MuseTalkError) is reported in its row; the
    other pairs are still scored."""
    from musetalk.eval import run as eval_run

    generated, source = sun_clips
    score = eval_run.evaluate_pair

    def failing_on_the_second(pair, *args, **kwargs):
        if pair.name == "broken":
            raise ValueError("need at least one array to stack")
        return score(pair, *args, **kwargs)

    monkeypatch.setattr(eval_run, "evaluate_pair", failing_on_the_second)
    pairs = [EvalPair(generated, source, name=name) for name in ("first", "broken", "last")]
    result = evaluate(pairs, identity=False, models_dir=tmp_path, max_frames=6)
    rows = [o.row for o in result.outcomes]
    assert [r["clip"] for r in rows] == ["first", "broken", "last"]
    assert rows[1]["note"] == "failed: internal error: ValueError: need at least one array to stack"
    assert rows[0]["psnr_face"] == rows[2]["psnr_face"] == 100.0


def peak_traced_bytes(run) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_flat_in_clip_length(sun_frames, sun_audio, clip_writer, tmp_path):
    """Peak traced allocation while scoring a 30-frame and a 90-frame pair (every metric but CSIM; each
    decoded frame is 1.3 MB): the frames are streamed, not kept. Measured: 29.6 and 90.6 MiB when both
    clips were held, 11.4 and 11.7 MiB streamed."""
    from musetalk.eval.run import evaluate_pair
    from musetalk.face import FaceAnalyzer

    peaks = {}
    for frames in (30, 90):
        source = clip_writer(tmp_path / f"s{frames}.mp4", sun_frames[:frames])
        generated = clip_writer(tmp_path / f"g{frames}.mp4", sun_frames[:frames], sun_audio[:frames * 640])
        pair = EvalPair(generated, source)
        torch.manual_seed(0)
        net = SyncNetV2()
        peaks[frames] = peak_traced_bytes(lambda: evaluate_pair(pair, FaceAnalyzer(backend="dlib", smooth=False),
                                                                None, net, PooledPixels()))
    print(f"peak traced allocation: 30 frames {peaks[30] / 2**20:.1f} MiB, 90 frames {peaks[90] / 2**20:.1f} MiB")
    assert peaks[90] < 1.2 * peaks[30], peaks

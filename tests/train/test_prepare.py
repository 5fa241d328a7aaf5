"""`musetalk train prepare`: re-timing to 25 fps, skipped no-face stretches with reasons, resume."""
import json

import numpy as np

from musetalk.audio import load_audio
from musetalk.cli.main import main
from musetalk.train.prepare import Preparer
from musetalk.train.shards import open_shards
from musetalk.video.io import VideoWriter, read_frames


def write_clip(path, media, fps, frames, audio_seconds):
    audio = None if audio_seconds is None else load_audio(media / "sun.wav")[: int(16000 * audio_seconds)]
    with VideoWriter(path, 576, 768, fps, audio=audio, audio_rate=16000) as writer:
        for frame in frames:
            writer.write(frame)


def test_prepare_retimes_skips_and_resumes(media, tiny_models, tmp_path):
    sun = [f for _, f in zip(range(60), read_frames(media / "sun.mp4"))]
    black = [np.zeros_like(sun[0])] * 15
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    # 30 fps, 3 s: 36 face frames, 15 black, 39 face frames -> 75 frames at 25 fps.
    write_clip(videos / "sub" / "talk.mp4", media, 30, sun[:36] + black + sun[21:60], 3.0)
    write_clip(videos / "silent.mp4", media, 25, sun[:10], None)
    out = tmp_path / "data"

    summary = Preparer(tiny_models, progress=False).prepare_all(videos, out)
    assert summary["prepared"] == ["sub_talk"]
    (shard,) = open_shards(out)
    meta = shard.meta
    assert meta["num_frames"] == 75 and meta["fps"] == 25
    gap = [s for s in meta["skipped"] if s["reason"] == "no face detected"]
    assert len(gap) == 1 and 29 <= gap[0]["start"] <= 31 and 41 <= gap[0]["stop"] <= 44
    assert len(meta["segments"]) == 2 and meta["kept"] == 75 - sum(s["stop"] - s["start"] for s in meta["skipped"])
    assert np.all(np.diff(shard.frame_index) >= 1)
    listed = json.loads((out / "skipped.json").read_text())
    assert {s["clip"] for s in listed} == {"sub_talk", "silent"}
    assert any("no audio track" in s["reason"] for s in listed if s["clip"] == "silent")

    stamp = (out / "clips" / "sub_talk" / "meta.json").stat().st_mtime_ns
    assert main(["-q", "train", "prepare", str(videos), "--out", str(out), "--models", str(tiny_models)]) == 0
    assert (out / "clips" / "sub_talk" / "meta.json").stat().st_mtime_ns == stamp
    assert not list((out / "clips").glob("*.partial"))

"""Every command's ``--device`` defaults to CUDA when torch sees a GPU (cpu otherwise): each command is run
up to the point where it hands its device on, with ``torch.cuda.is_available`` patched."""
from __future__ import annotations

import pytest
import torch

from musetalk.cli.main import main


class Reached(Exception):
    """Raised where a command hands its device on (nothing is loaded)."""


@pytest.fixture
def seen(monkeypatch):
    """The device each command hands on: MuseTalk.from_pretrained, dub, evaluate, the training Preparer."""
    import musetalk.eval
    from musetalk.pipeline import dub as pipeline
    from musetalk.pipeline.lipsync import MuseTalk
    from musetalk.train import prepare

    devices: list[str] = []

    def record(device):
        devices.append(str(device))
        raise Reached

    monkeypatch.setattr(MuseTalk, "from_pretrained", classmethod(lambda cls, *a, device="cpu", **k: record(device)))
    monkeypatch.setattr(pipeline, "dub", lambda source, audio, output, options, **k: record(options.device))
    monkeypatch.setattr(musetalk.eval, "evaluate", lambda pairs, device="cpu", **k: record(device))
    monkeypatch.setattr(prepare.Preparer, "__init__", lambda self, models, device, *a, **k: record(device))
    return devices


def commands(tmp_path, media) -> dict[str, list[str]]:
    clip = str(media / "sun.mp4")
    return {
        "dub": ["dub", clip, str(media / "sun.wav"), "-o", str(tmp_path / "o.mp4")],
        "avatar prepare": ["avatar", "prepare", str(media / "musk.png"), "--name", "musk"],
        "say": ["say", "Hi.", "--avatar", "musk", "-o", str(tmp_path / "s.mp4")],
        "serve": ["serve", "--max-sessions", "1"],
        "eval": ["eval", clip, "--source", clip],
        "train prepare": ["train", "prepare", str(tmp_path), "--out", str(tmp_path / "data")],
    }


@pytest.mark.parametrize("cuda", [True, False], ids=["with-cuda", "without"])
def test_every_command_defaults_to_cuda_when_it_is_there(tmp_path, media, monkeypatch, seen, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    for name, argv in commands(tmp_path, media).items():
        with pytest.raises(Reached):
            main(["-v", *argv])
        assert seen[-1] == ("cuda" if cuda else "cpu"), name
    assert len(seen) == 6


def test_a_given_device_is_kept(tmp_path, media, monkeypatch, seen):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name, argv in commands(tmp_path, media).items():
        with pytest.raises(Reached):
            main(["-v", *argv, "--device", "cpu"])
        assert seen[-1] == "cpu", name

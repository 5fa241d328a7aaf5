"""``musetalk download`` names the real cause of a failed file (hub errors monkeypatched in), and fetches the
training and evaluation networks with --train / --eval."""
from __future__ import annotations

import errno
from pathlib import Path

import httpx
import pytest
from huggingface_hub import errors

from musetalk.cli.main import main
from musetalk.models import download as download_module


def _response(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/x"))


CAUSES = {
    "gated": (errors.GatedRepoError("gated", response=_response(403)),
              "access to TMElyralab/MuseTalk is gated: accept its terms at https://huggingface.co/TMElyralab/MuseTalk"),
    "private": (errors.RepositoryNotFoundError("nf", response=_response(401)),
                "repository TMElyralab/MuseTalk not found on the hub, or it is private and needs authentication"),
    "missing file": (errors.RemoteEntryNotFoundError("nf", response=_response(404)),
                     "file musetalkV15/unet.pth not found in TMElyralab/MuseTalk on the hub"),
    "forbidden": (errors.HfHubHTTPError("no", response=_response(403)),
                  "authentication refused by the hub (HTTP 403): log in with `hf auth login` or set HF_TOKEN"),
    "disk full": (OSError(errno.ENOSPC, "No space left on device"),
                  "disk full: free space in the models folder and the hub cache (HF_HOME)"),
    "offline": (errors.LocalEntryNotFoundError("cannot reach"), "no network or hub unreachable"),
}


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A reachable hub that serves a small file for every request, except those the test makes fail."""
    import huggingface_hub

    monkeypatch.setattr(download_module, "hub_reachable", lambda timeout=5.0: True)
    failures: dict[str, BaseException] = {}
    served: list[tuple[str, str]] = []

    def hf_hub_download(repo: str, filename: str) -> str:
        if filename in failures:
            raise failures[filename]
        served.append((repo, filename))
        path = tmp_path / "cache" / repo / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return failures, served


@pytest.mark.parametrize("kind", CAUSES)
def test_download_names_the_real_cause(fake_hub, tmp_path, capsys, kind):
    failures, _ = fake_hub
    failures["musetalkV15/unet.pth"], expected = CAUSES[kind]
    assert main(["download", "--models", str(tmp_path / "m"), "--version", "v1.5", "--no-face-parsing"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"musetalk: error: cannot download 1 model files into {tmp_path / 'm'}/: "
                          f"musetalkV15/unet.pth ({expected}")
    assert (tmp_path / "m" / "sd-vae" / "config.json").read_bytes() == b"weights"  # the others were fetched
    assert not list((tmp_path / "m").rglob("*.part"))


def test_disk_full_while_copying_leaves_no_partial_file(fake_hub, tmp_path, capsys, monkeypatch):
    real_copy = download_module.shutil.copyfile

    def copy_then_fail(src, dst):
        real_copy(src, dst)
        if Path(dst).name == "unet.pth.part":
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download_module.shutil, "copyfile", copy_then_fail)
    assert main(["download", "--models", str(tmp_path / "m"), "--version", "v1.5", "--no-face-parsing"]) == 1
    assert "musetalkV15/unet.pth (disk full: free space" in capsys.readouterr().err
    assert not (tmp_path / "m" / "musetalkV15" / "unet.pth").exists()
    assert not list((tmp_path / "m").rglob("*.part"))


def test_train_and_eval_networks_land_in_the_models_folder(fake_hub, tmp_path, capsys):
    _, served = fake_hub
    root = tmp_path / "m"
    code = main(["download", "--models", str(root), "--version", "v1.5", "--no-face-parsing", "--train", "--eval"])
    assert ("timm/vgg19.tv_in1k", "model.safetensors") in served
    assert ("ByteDance/LatentSync", "latentsync_syncnet.pt") in served
    assert ("ByteDance/LatentSync", "auxiliary/syncnet_v2.model") in served
    for target in ("vgg/vgg19.tv_in1k.safetensors", "syncnet/latentsync_syncnet.pt", "syncnet/syncnet_v2.model"):
        assert (root / target).read_bytes() == b"weights"
    assert code == 1  # the FID Inception is on no hub: the message says where to get it
    fid = root / "fid" / "pt_inception-2015-12-05-6726825d.pth"
    assert capsys.readouterr().err.strip() == (
        "musetalk: error: the FID Inception weights are on no model hub: download https://github.com/mseitzer/"
        f"pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth and save it as {fid} "
        "(everything else is in place)")
    fid.parent.mkdir()
    fid.write_bytes(b"weights")
    assert main(["download", "--models", str(root), "--version", "v1.5", "--no-face-parsing", "--eval"]) == 0

"""Fetch the official model files from the Hugging Face Hub into the official folder layout."""
from __future__ import annotations

import logging
import shutil
import socket
from urllib.parse import urlparse
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFilesError
from .hub_errors import download_cause
from .layout import ENV_VAR, LATENTSYNC_SYNCNET_FILE, SYNCNET_V2_FILE, VGG19_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubFile:
    repo: str
    filename: str
    target: str
    required: bool = True


MUSETALK_FILES = {
    "v1.5": [HubFile("TMElyralab/MuseTalk", f"musetalkV15/{n}", f"musetalkV15/{n}") for n in ("musetalk.json", "unet.pth")],
    "v1.0": [HubFile("TMElyralab/MuseTalk", f"musetalk/{n}", f"musetalk/{n}") for n in ("musetalk.json", "pytorch_model.bin")],
}
SHARED_FILES = [
    *(HubFile("stabilityai/sd-vae-ft-mse", n, f"sd-vae/{n}") for n in ("config.json", "diffusion_pytorch_model.bin")),
    *(HubFile("openai/whisper-tiny", n, f"whisper/{n}") for n in ("config.json", "pytorch_model.bin", "preprocessor_config.json")),
]
FACE_PARSING_FILES = [
    HubFile("ManyOtherFunctions/face-parse-bisent", n, f"face-parse-bisent/{n}", required=False)
    for n in ("79999_iter.pth", "resnet18-5c106cde.pth")
]

TAESD_FILES = [  # the optional tiny decoder (--decoder tiny)
    HubFile("madebyollin/taesd", n, f"taesd/{n}", required=False)
    for n in ("config.json", "diffusion_pytorch_model.safetensors")
]


# Networks of training and evaluation, by option of ``musetalk download``: ``--train`` the torchvision ImageNet
# VGG19 (perceptual loss) and LatentSync's SyncNet (sync loss), ``--eval`` SyncNet v2 (LSE-C/LSE-D).
EXTRA_FILES = {
    "train": [HubFile("timm/vgg19.tv_in1k", "model.safetensors", VGG19_FILE),
              HubFile("ByteDance/LatentSync", "latentsync_syncnet.pt", LATENTSYNC_SYNCNET_FILE)],
    "eval": [HubFile("ByteDance/LatentSync", "auxiliary/syncnet_v2.model", SYNCNET_V2_FILE)],
}


def files_for(versions: tuple[str, ...], face_parsing: bool, extras: tuple[str, ...] = ()) -> list[HubFile]:
    files = [f for v in versions for f in MUSETALK_FILES[v]] + SHARED_FILES
    return (files + (FACE_PARSING_FILES if face_parsing else []) + TAESD_FILES
            + [f for e in extras for f in EXTRA_FILES[e]])


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether a TCP connection to the hub endpoint (``HF_ENDPOINT`` respected) opens within ``timeout`` s."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _fail(models_dir: Path, failed: list[str]) -> ModelFilesError:
    """``failed``: "target (cause)" per file."""
    return ModelFilesError(
        f"cannot download {len(failed)} model files into {models_dir}/: "
        f"{', '.join(failed)}; fix that and run `musetalk download --models {models_dir}` again, or copy the "
        f"official layout (musetalkV15/, musetalk/, sd-vae/, whisper/) there by hand and point --models or {ENV_VAR} at it"
    )


def download(models_dir: Path, versions: tuple[str, ...] = ("v1.5", "v1.0"), face_parsing: bool = True,
             force: bool = False, extras: tuple[str, ...] = ()) -> list[Path]:
    """Download what is missing (everything with ``force``); ``extras``: keys of :data:`EXTRA_FILES`.
    Returns the paths written.

    Raises a one-line :class:`ModelFilesError` naming the files that could not be fetched and why.
    """
    from huggingface_hub import hf_hub_download

    todo = [f for f in files_for(versions, face_parsing, extras) if force or not (models_dir / f.target).is_file()]
    if todo and not hub_reachable():
        raise _fail(models_dir, [f"{f.target} (no network or hub unreachable)" for f in todo if f.required])
    written, failed = [], []
    for item in todo:
        target = models_dir / item.target
        log.info("downloading %s/%s -> %s", item.repo, item.filename, target)
        try:
            _fetch(item, target, hf_hub_download)
        except Exception as exc:  # offline, DNS, HTTP, hub and disk errors: named per file, then raised together
            log.debug("download of %s/%s failed: %r", item.repo, item.filename, exc)
            cause = download_cause(exc, item.repo, item.filename)
            if item.required:
                failed.append(f"{item.target} ({cause})")
            else:
                log.warning("optional file %s not downloaded (%s)", item.target, cause)
            continue
        written.append(target)
    if failed:
        raise _fail(models_dir, failed)
    return written


def _fetch(item: HubFile, target: Path, hf_hub_download) -> None:
    """Download ``item`` into the hub cache and copy it to ``target`` through a temporary file."""
    cached = hf_hub_download(item.repo, item.filename)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    try:
        shutil.copyfile(cached, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)

"""The official models folder layout, and where to find it.

```
models/
  musetalkV15/musetalk.json, unet.pth            (v1.5 UNet)
  musetalk/musetalk.json, pytorch_model.bin      (v1.0 UNet)
  sd-vae/config.json, diffusion_pytorch_model.bin
  whisper/config.json, pytorch_model.bin, preprocessor_config.json
  face-parse-bisent/79999_iter.pth, resnet18-5c106cde.pth   (optional)
  taesd/config.json, diffusion_pytorch_model.safetensors     (optional tiny decoder)
```
UNet and VAE weights may also be ``.safetensors`` files with the same stem.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFilesError

ENV_VAR = "MUSETALK_MODELS"
VERSIONS = ("v1.5", "v1.0")
_UNET_FOLDERS = {"v1.5": ("musetalkV15", "unet"), "v1.0": ("musetalk", "pytorch_model")}
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin")
# Networks of training and evaluation inside the models folder (``musetalk download --train`` / ``--eval``).
VGG19_FILE = "vgg/vgg19.tv_in1k.safetensors"
LATENTSYNC_SYNCNET_FILE = "syncnet/latentsync_syncnet.pt"
SYNCNET_V2_FILE = "syncnet/syncnet_v2.model"


def resolve_models_dir(models_dir: str | os.PathLike | None = None) -> Path:
    """``models_dir`` if given, else ``$MUSETALK_MODELS``, else ``./models``."""
    if models_dir is not None:
        return Path(models_dir)
    return Path(os.environ.get(ENV_VAR) or "models")


def check_version(version: str) -> str:
    if version not in VERSIONS:
        raise ModelFilesError(f"unknown model version {version!r}: choose one of {', '.join(VERSIONS)}")
    return version


def find_weights(folder: Path, stems: tuple[str, ...]) -> Path | None:
    """First existing ``folder/stem.suffix`` for the given stems and the accepted suffixes."""
    for stem in stems:
        for suffix in _WEIGHT_SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


@dataclass(frozen=True)
class ModelPaths:
    """Resolved files of one model version inside a models folder."""

    root: Path
    version: str

    @property
    def unet_dir(self) -> Path:
        return self.root / _UNET_FOLDERS[self.version][0]

    @property
    def unet_config(self) -> Path:
        return self.unet_dir / "musetalk.json"

    @property
    def unet_weights(self) -> Path | None:
        stem = _UNET_FOLDERS[self.version][1]
        return find_weights(self.unet_dir, (stem, "unet", "pytorch_model", "diffusion_pytorch_model"))

    @property
    def vae_dir(self) -> Path:
        return self.root / "sd-vae"

    @property
    def whisper_dir(self) -> Path:
        return self.root / "whisper"

    @property
    def face_parsing_weights(self) -> Path:
        return self.root / "face-parse-bisent" / "79999_iter.pth"

    @property
    def taesd_dir(self) -> Path:
        return self.root / "taesd"

    def require_taesd(self) -> Path:
        """The tiny decoder's folder, or a one-line :class:`ModelFilesError` naming the missing files."""
        missing = [name for name in ("config.json", "diffusion_pytorch_model.safetensors")
                   if not (self.taesd_dir / name).is_file()]
        if missing:
            raise ModelFilesError(
                f"tiny decoder files missing in {self.taesd_dir}/: {', '.join(missing)}; run "
                f"`musetalk download --models {self.root}` (fetches taesd/) or use --decoder vae"
            )
        return self.taesd_dir

    def missing(self) -> list[str]:
        """Required files that are absent, as paths relative to the models folder."""
        rel = lambda p: str(p.relative_to(self.root))  # noqa: E731
        missing = []
        if not self.unet_config.is_file():
            missing.append(rel(self.unet_config))
        if self.unet_weights is None:
            missing.append(rel(self.unet_dir / f"{_UNET_FOLDERS[self.version][1]}.pth"))
        if not (self.vae_dir / "config.json").is_file():
            missing.append(rel(self.vae_dir / "config.json"))
        if find_weights(self.vae_dir, ("diffusion_pytorch_model",)) is None:
            missing.append(rel(self.vae_dir / "diffusion_pytorch_model.bin"))
        for name in ("config.json", "preprocessor_config.json"):
            if not (self.whisper_dir / name).is_file():
                missing.append(rel(self.whisper_dir / name))
        if find_weights(self.whisper_dir, ("model", "pytorch_model")) is None:
            missing.append(rel(self.whisper_dir / "pytorch_model.bin"))
        return missing

    def require(self) -> "ModelPaths":
        """Raise a one-line :class:`ModelFilesError` naming every missing file and the fix."""
        missing = self.missing()
        if missing:
            raise ModelFilesError(
                f"model files missing in {self.root}/ for {self.version}: {', '.join(missing)} "
                f"(expected the official layout musetalkV15/, musetalk/, sd-vae/, whisper/); "
                f"run `musetalk download --models {self.root}` or pass --models / set {ENV_VAR}"
            )
        return self


def model_paths(models_dir: str | os.PathLike | None, version: str) -> ModelPaths:
    return ModelPaths(resolve_models_dir(models_dir), check_version(version))

"""Prepared avatars: everything per source frame that does not depend on audio, computed once and saved.

An avatar folder ``AVATARS/NAME/`` holds (N = source frames, all images RGB uint8):

- ``avatar.json``: name, fps, sizes, the fingerprint and what it was made from (source file, model, settings);
- ``frames.npy`` (N, H, W, 3) and ``crops.npy`` (N, 256, 256, 3) (zeros where no face), memory-mapped on load;
- ``records.npz``: the :class:`~musetalk.face.FaceRecord` of every frame;
- ``latents.npy`` float32 (N, 8, 32, 32): ``MuseTalk.unet_input(crops, crops)``, masked ++ reference latents;
- ``mask_box.npy`` int32 (N, 4) and ``mask_data.npy`` uint8: the blend masks (weights x 255), packed row-major
  one after another (frames without a face have an empty box);
- ``order.npy`` int64 (2N,): the ping-pong cycle (frames, then the same frames reversed).

The fingerprint covers the source file's content, the model version and VAE weights, and the crop/mask
settings; a prepared avatar whose fingerprint no longer matches is prepared again, never mixed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import FaceError, MuseTalkError

log = logging.getLogger(__name__)

ENV_VAR = "MUSETALK_AVATARS"
FORMAT = 1
PHOTO_FPS = 25.0
LATENT_BATCH = 16
PUBLIC_KEYS = ("name", "fps", "width", "height", "num_frames", "faces", "source_name", "created")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stages "read", "faces", "latents", "masks", "save"."""


class AvatarError(MuseTalkError):
    """An avatar is missing, misnamed, stale without its source, or cannot be prepared."""


@dataclass(frozen=True)
class PrepareSettings:
    """Face and blend settings of a preparation (part of the fingerprint).

    blend_mode: "jaw" / "raw" / "neck"; None = the version's default (``musetalk.face.default_blend_mode``).
    blur_ratio: mask feather as a fraction of the expanded box (0.1, the official real-time value).
    max_frames: use only the first frames of a long video (None = all).
    """

    bbox_shift: int = 0
    extra_margin: int = 10
    face_index: int = 0
    smooth: bool = True
    blend_mode: str | None = None
    blur_ratio: float = 0.1
    max_frames: int | None = None

    def resolved(self, version: str) -> "PrepareSettings":
        from ..face import default_blend_mode

        mode = self.blend_mode or default_blend_mode(version)
        return dataclasses.replace(self, blend_mode=mode)


def avatars_dir(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$MUSETALK_AVATARS``, else ``./avatars``."""
    return Path(root) if root is not None else Path(os.environ.get(ENV_VAR) or "avatars")


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise AvatarError(f"invalid avatar name {name!r}: use 1-64 letters, digits, '_', '-' or '.', starting alnum")
    return name


def file_digest(path: Path) -> str:
    """sha256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_identity(mt) -> dict:
    """What the cached latents depend on: the UNet version and a digest of the VAE encoder weights."""
    h = hashlib.sha256()
    state = mt.vae.state_dict()
    for key in ("encoder.conv_in.weight", "encoder.conv_out.weight", "quant_conv.weight"):
        h.update(state[key].detach().float().cpu().numpy().tobytes())
    return {"version": mt.version, "vae": h.hexdigest()[:16]}


def fingerprint(source_digest: str, model: dict, settings: PrepareSettings, mask_source: str) -> str:
    blob = json.dumps({"format": FORMAT, "source": source_digest, "model": model,
                       "settings": dataclasses.asdict(settings), "mask": mask_source}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Avatar:
    """A loaded avatar; arrays are as stored (see the module docstring). Output frame i shows source frame
    ``order[i % len(order)]``."""

    name: str
    path: Path
    meta: dict
    frames: np.ndarray
    crops: np.ndarray
    records: list
    latents: np.ndarray
    mask_box: np.ndarray
    mask_data: np.ndarray
    order: np.ndarray

    def __post_init__(self) -> None:
        sizes = (self.mask_box[:, 2] - self.mask_box[:, 0]).astype(np.int64) * (self.mask_box[:, 3] - self.mask_box[:, 1])
        self._mask_offsets = np.concatenate([[0], np.cumsum(sizes)])
        self._device_latents: dict[tuple, torch.Tensor] = {}

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def source_index(self, frame: int) -> int:
        """Source frame shown as output frame ``frame``."""
        return int(self.order[frame % len(self.order)])

    def has_face(self, src: int) -> bool:
        return self.records[src].found

    def mask(self, src: int):
        """The :class:`~musetalk.face.BlendMask` of source frame ``src`` (None without a face)."""
        from ..face import BlendMask

        if not self.records[src].found:
            return None
        box = self.mask_box[src]
        flat = self.mask_data[self._mask_offsets[src] : self._mask_offsets[src + 1]]
        return BlendMask.from_dict({"box": box, "mask": flat.reshape(int(box[3] - box[1]), int(box[2] - box[0]))})

    def device_latents(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """All latents (N, 8, 32, 32) on ``device`` in ``dtype``, uploaded once."""
        key = (str(device), dtype)
        if key not in self._device_latents:
            self._device_latents[key] = torch.from_numpy(np.asarray(self.latents)).to(device=device, dtype=dtype)
        return self._device_latents[key]

    def info(self) -> dict:
        """The public description served by ``GET /avatars``."""
        return public_info(self.meta)


def read_meta(root: Path, name: str) -> dict | None:
    """``avatar.json`` of avatar ``name`` under ``root``, or None."""
    try:
        return json.loads((root / name / "avatar.json").read_text())
    except (OSError, ValueError):
        return None


def public_info(meta: dict) -> dict:
    return {k: meta.get(k) for k in PUBLIC_KEYS}


def avatar_names(root: Path) -> list[str]:
    """Names of the prepared avatars under ``root``, sorted."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if _NAME.match(p.name) and (p / "avatar.json").is_file())


def list_avatars(root: Path) -> list[dict]:
    """:func:`public_info` of every prepared avatar under ``root`` (reads metadata only)."""
    return [public_info(meta) for name in avatar_names(root) if (meta := read_meta(root, name)) is not None]


def remove_avatar(root: Path, name: str) -> None:
    """Delete avatar ``name`` and its uploaded source, if any."""
    folder = root / check_name(name)
    if not (folder / "avatar.json").is_file():
        raise AvatarError(f"no avatar named {name!r} in {root}/")
    shutil.rmtree(folder)
    for upload in (root / ".sources").glob(f"{name}.*"):
        upload.unlink()


def _read_source(source: Path, max_frames: int | None) -> tuple[list[np.ndarray], float]:
    """uint8 RGB frames of a video or photo and their fps (25 for a photo)."""
    from ..video.io import is_image, probe, read_frames, read_image

    if is_image(source):
        return [read_image(source)], PHOTO_FPS
    fps = float(probe(source).fps)
    frames = []
    for frame in read_frames(source):
        frames.append(frame)
        if max_frames and len(frames) >= max_frames:
            break
    return frames, fps


def _analyze(frames: list[np.ndarray], settings: PrepareSettings, version: str, fps: float,
             progress: Progress) -> list:
    from ..face import FaceAnalyzer

    analyzer = FaceAnalyzer(version=version, bbox_shift=settings.bbox_shift, extra_margin=settings.extra_margin,
                            smooth=settings.smooth, face_index=settings.face_index, fps=fps)
    records = []
    for i, frame in enumerate(frames):
        records.append(analyzer.analyze(frame))
        progress("faces", i + 1, len(frames))
    return records


def _latents(mt, crops: np.ndarray, found: np.ndarray, progress: Progress) -> np.ndarray:
    """float32 (N, 8, 32, 32); zeros for frames without a face."""
    out = np.zeros((len(crops), 8, 32, 32), np.float32)
    index = np.flatnonzero(found)
    for start in range(0, len(index), LATENT_BATCH):
        part = index[start : start + LATENT_BATCH]
        out[part] = mt.unet_input(crops[part], crops[part]).float().cpu().numpy()
        progress("latents", min(start + LATENT_BATCH, len(index)), len(index))
    return out


def _masks(frames: list[np.ndarray], records: list, settings: PrepareSettings, parser,
           progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """Packed masks: box int32 (N, 4) and the uint8 weights of every frame, flattened and concatenated."""
    from ..face import make_blend_mask

    boxes = np.zeros((len(frames), 4), np.int32)
    parts = []
    for i, (frame, rec) in enumerate(zip(frames, records)):
        if rec.found:
            mask = make_blend_mask(frame.shape, rec, settings.blend_mode, parser=parser, frame=frame,
                                   blur_ratio=settings.blur_ratio).to_dict()
            boxes[i] = mask["box"]
            parts.append(mask["mask"].reshape(-1))
        progress("masks", i + 1, len(frames))
    return boxes, np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def _load(folder: Path, meta: dict) -> Avatar:
    from ..face import load_records

    return Avatar(
        name=meta["name"], path=folder, meta=meta,
        frames=np.load(folder / "frames.npy", mmap_mode="r"),
        crops=np.load(folder / "crops.npy", mmap_mode="r"),
        records=load_records(folder / "records.npz"),
        latents=np.load(folder / "latents.npy"),
        mask_box=np.load(folder / "mask_box.npy"),
        mask_data=np.load(folder / "mask_data.npy", mmap_mode="r"),
        order=np.load(folder / "order.npy"),
    )


def _silent(stage: str, done: int, total: int) -> None:
    """A progress callback that does nothing."""


class AvatarStore:
    """The avatars folder for one loaded model: prepare, list, load (re-preparing stale ones), remove.

    ``parser``: an optional :class:`~musetalk.face.FaceParser` for the official parsing blend masks
    (the landmark masks otherwise). Loaded avatars are cached while their fingerprint holds.
    """

    def __init__(self, root: str | os.PathLike | None, mt, parser=None) -> None:
        self.root = avatars_dir(root)
        self.mt = mt
        self.parser = parser
        self._model = model_identity(mt)
        self._cache: dict[str, Avatar] = {}
        self._lock = threading.Lock()

    @property
    def mask_source(self) -> str:
        return "parsing" if self.parser is not None else "landmarks"

    def names(self) -> list[str]:
        return avatar_names(self.root)

    def list(self) -> list[dict]:
        """The public description of every prepared avatar (metadata only, nothing is loaded)."""
        return list_avatars(self.root)

    def prepare(self, source: str | os.PathLike, name: str, settings: PrepareSettings = PrepareSettings(),
                progress: Progress | None = None, force: bool = False) -> Avatar:
        """Prepare ``source`` (video or photo) as avatar ``name``; an up-to-date one is just loaded."""
        check_name(name)
        source = Path(source).resolve()
        if not source.is_file():
            raise AvatarError(f"avatar source not found: {source}")
        resolved = settings.resolved(self.mt.version)
        digest = file_digest(source)
        stamp = fingerprint(digest, self._model, resolved, self.mask_source)
        meta = self._meta(name)
        if not force and meta is not None and meta.get("fingerprint") == stamp:
            log.info("avatar %s is up to date", name)
            return self._load_cached(name, meta)
        return self._prepare(source, digest, stamp, name, settings, progress or _silent)

    def load(self, name: str) -> Avatar:
        """The avatar ``name``; prepared again first when its source file, the model or the format changed."""
        meta = self._meta(check_name(name))
        if meta is None:
            raise AvatarError(f"no avatar named {name!r} in {self.root}/: prepare it with `musetalk avatar prepare`")
        stale = self._stale_reason(meta)
        if stale is None:
            return self._load_cached(name, meta)
        source = Path(meta["source"]["path"])
        if not source.is_file():
            raise AvatarError(f"avatar {name!r} is stale ({stale}) and its source {source} is gone: prepare it again")
        log.warning("avatar %s is stale (%s): preparing it again", name, stale)
        settings = PrepareSettings(**meta["settings"])
        return self.prepare(source, name, settings, force=True)

    def remove(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)
        remove_avatar(self.root, name)

    def upload_path(self, name: str, filename: str) -> Path:
        """Where an uploaded source for avatar ``name`` is kept (so the avatar can be re-prepared later)."""
        suffix = Path(filename).suffix.lower()
        if not re.fullmatch(r"\.[a-z0-9]{1,5}", suffix):
            raise AvatarError(f"upload {filename!r} needs a video or image file extension (.mp4, .png, ...)")
        folder = self.root / ".sources"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{check_name(name)}{suffix}"

    def _meta(self, name: str) -> dict | None:
        return read_meta(self.root, name)

    def _stale_reason(self, meta: dict) -> str | None:
        if meta.get("format") != FORMAT:
            return f"format {meta.get('format')} != {FORMAT}"
        if meta.get("model") != self._model:
            return f"prepared for model {meta.get('model')}, loaded {self._model}"
        if meta.get("mask") != self.mask_source:
            return f"{meta.get('mask')} blend masks, this server makes {self.mask_source} ones"
        src = meta["source"]
        path = Path(src["path"])
        try:
            stat = path.stat()
        except OSError:
            return None  # the prepared data stays self-consistent without its source
        if (stat.st_size, stat.st_mtime_ns) != (src["size"], src["mtime_ns"]) and file_digest(path) != src["sha256"]:
            return f"source {path} changed"
        return None

    def _load_cached(self, name: str, meta: dict) -> Avatar:
        with self._lock:
            cached = self._cache.get(name)
            if cached is None or cached.meta.get("fingerprint") != meta["fingerprint"]:
                cached = self._cache[name] = _load(self.root / name, meta)
            return cached

    def _prepare(self, source: Path, digest: str, stamp: str, name: str, settings: PrepareSettings,
                 progress: Progress) -> Avatar:
        from ..face import crop_face, save_records

        start = time.perf_counter()
        resolved = settings.resolved(self.mt.version)
        frames, fps = _read_source(source, settings.max_frames)
        progress("read", len(frames), len(frames))
        records = _analyze(frames, resolved, self.mt.version, fps, progress)
        found = np.array([r.found for r in records])
        if not found.any():
            raise FaceError(f"no face found in any of the {len(frames)} frames of {source}: use a clear frontal face")
        crops = np.zeros((len(frames), 256, 256, 3), np.uint8)
        for i in np.flatnonzero(found):
            crops[i] = crop_face(frames[i], records[i])
        latents = _latents(self.mt, crops, found, progress)
        mask_box, mask_data = _masks(frames, records, resolved, self.parser, progress)
        order = np.concatenate([np.arange(len(frames)), np.arange(len(frames))[::-1]]).astype(np.int64)
        stat = source.stat()
        height, width = frames[0].shape[:2]
        meta = {
            "format": FORMAT, "name": name, "fingerprint": stamp, "fps": fps, "width": int(width),
            "height": int(height), "num_frames": len(frames), "faces": int(found.sum()),
            "source_name": source.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "source": {"path": str(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest},
            "model": self._model, "settings": dataclasses.asdict(settings), "blend_mode": resolved.blend_mode,
            "mask": self.mask_source,
        }
        with _Staging(self.root, name) as folder:
            np.save(folder / "frames.npy", np.stack(frames))
            np.save(folder / "crops.npy", crops)
            np.save(folder / "latents.npy", latents)
            np.save(folder / "mask_box.npy", mask_box)
            np.save(folder / "mask_data.npy", mask_data)
            np.save(folder / "order.npy", order)
            save_records(folder / "records.npz", records)
            (folder / "avatar.json").write_text(json.dumps(meta, indent=1))
        progress("save", 1, 1)
        log.info("prepared avatar %s: %d frames (%d with a face) in %.1f s", name, len(frames), found.sum(),
                 time.perf_counter() - start)
        return self._load_cached(name, meta)


class _Staging:
    """Write an avatar into a hidden folder, then swap it in place of the old one (readers holding
    memory maps of the old files keep them)."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.tmp = root / f".{name}.tmp-{os.getpid()}-{time.monotonic_ns()}"

    def __enter__(self) -> Path:
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        final = self.root / self.name
        trash = self.root / f".{self.name}.old-{time.monotonic_ns()}"
        if final.exists():
            final.rename(trash)
        self.tmp.rename(final)
        shutil.rmtree(trash, ignore_errors=True)


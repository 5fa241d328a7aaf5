"""The on-disk format of prepared avatars: what each file holds, writing it, reading it back, listing.

An avatar folder ``AVATARS/NAME/`` holds (N = source frames, all images RGB uint8):

- ``avatar.json``: name, fps, sizes, the fingerprint and what it was made from (source file, model, settings);
- ``frames.bin`` + ``frames.idx.npy``: every source frame as one JPEG, concatenated; the index is int64 (N+1,)
  byte offsets. These decoded JPEGs *are* the avatar's frames: faces, crops, latents and masks were all
  computed from them, and the engine pastes onto them;
- ``records.npz``: the :class:`~musetalk.face.FaceRecord` of every frame;
- ``latents.npy`` float32 (N, 8, 32, 32): ``MuseTalk.unet_input(crops, crops)``, masked ++ reference latents
  (zeros where no face);
- ``mask_box.npy`` int32 (N, 4) and ``masks.bin`` + ``masks.idx.npy``: the blend masks (weights x 255,
  uint8 (y2-y1, x2-x1) row-major), each zlib-compressed (frames without a face have an empty box and entry);
- ``order.npy`` int64 (2N,): the ping-pong cycle (frames, then the same frames reversed).

Uploaded sources are kept in ``AVATARS/.sources/NAME/`` so an avatar can be prepared again.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import MuseTalkError

ENV_VAR = "MUSETALK_AVATARS"
FORMAT = 2
SOURCES = ".sources"
PUBLIC_KEYS = ("name", "fps", "width", "height", "num_frames", "faces", "source_name", "created")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class AvatarError(MuseTalkError):
    """An avatar is missing, misnamed, stale, or cannot be prepared."""


def avatars_dir(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$MUSETALK_AVATARS``, else ``./avatars``."""
    return Path(root) if root is not None else Path(os.environ.get(ENV_VAR) or "avatars")


def check_name(name: str) -> str:
    """``name`` when it is a valid avatar name, else :class:`AvatarError`."""
    if not _NAME.match(name or ""):
        raise AvatarError(f"invalid avatar name {name!r}: use 1-64 letters, digits, '_', '-' or '.', starting alnum")
    return name


@dataclass(frozen=True)
class Packed:
    """Variable-size byte strings stored back to back: ``data`` uint8 (total,) (memory-mapped when read)
    and ``offsets`` int64 (N+1,); item i is ``data[offsets[i]:offsets[i+1]]``."""

    data: np.ndarray
    offsets: np.ndarray

    @classmethod
    def of(cls, items: list[bytes]) -> "Packed":
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in items], dtype=np.int64)]).astype(np.int64)
        return cls(np.frombuffer(b"".join(items), np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> memoryview:
        return memoryview(self.data[self.offsets[i] : self.offsets[i + 1]])

    def save(self, folder: Path, stem: str) -> None:
        self.data.tofile(folder / f"{stem}.bin")
        np.save(folder / f"{stem}.idx.npy", self.offsets)

    @classmethod
    def open(cls, folder: Path, stem: str) -> "Packed":
        """Memory-mapped: a reader keeps the data even when the folder is replaced meanwhile."""
        offsets = np.load(folder / f"{stem}.idx.npy")
        if offsets[-1] == 0:
            return cls(np.zeros(0, np.uint8), offsets)
        return cls(np.memmap(folder / f"{stem}.bin", np.uint8, mode="r"), offsets)


@dataclass(frozen=True)
class AvatarData:
    """Everything an avatar folder stores besides ``avatar.json`` (see the module docstring for shapes)."""

    frames: Packed
    records: list
    latents: np.ndarray
    mask_box: np.ndarray
    masks: Packed
    order: np.ndarray


def pack_mask(weights: np.ndarray) -> bytes:
    """uint8 (h, w) mask weights x 255 -> compressed bytes."""
    return zlib.compress(np.ascontiguousarray(weights, np.uint8).tobytes(), 6)


def unpack_mask(data: memoryview, box: np.ndarray) -> np.ndarray:
    """The uint8 (y2-y1, x2-x1) weights of a mask packed by :func:`pack_mask` with ``box`` (x1, y1, x2, y2)."""
    flat = np.frombuffer(zlib.decompress(data), np.uint8)
    return flat.reshape(int(box[3] - box[1]), int(box[2] - box[0]))


def write_avatar(folder: Path, data: AvatarData, meta: dict) -> None:
    """Write every file of an avatar into ``folder`` (``avatar.json`` last)."""
    from ...face import save_records

    data.frames.save(folder, "frames")
    data.masks.save(folder, "masks")
    np.save(folder / "latents.npy", data.latents)
    np.save(folder / "mask_box.npy", data.mask_box)
    np.save(folder / "order.npy", data.order)
    save_records(folder / "records.npz", data.records)
    (folder / "avatar.json").write_text(json.dumps(meta, indent=1))


def read_avatar(folder: Path) -> AvatarData:
    """The data of the avatar in ``folder``: frames and masks memory-mapped, the rest in memory."""
    from ...face import load_records

    return AvatarData(
        frames=Packed.open(folder, "frames"),
        records=load_records(folder / "records.npz"),
        latents=np.load(folder / "latents.npy"),
        mask_box=np.load(folder / "mask_box.npy"),
        masks=Packed.open(folder, "masks"),
        order=np.load(folder / "order.npy"),
    )


def read_meta(root: Path, name: str) -> dict | None:
    """``avatar.json`` of avatar ``name`` under ``root``, or None."""
    try:
        return json.loads((root / name / "avatar.json").read_text())
    except (OSError, ValueError):
        return None


def read_poster(root: Path, name: str) -> bytes:
    """The JPEG of avatar ``name``'s first source frame, read without loading the avatar."""
    folder = root / check_name(name)
    meta = read_meta(root, name)
    if meta is None:
        raise AvatarError(f"no avatar named {name!r} in {root}/: prepare it with `musetalk avatar prepare`")
    if meta.get("format") != FORMAT:
        raise AvatarError(f"avatar {name!r} has format {meta.get('format')}, not {FORMAT}: prepare it again")
    offsets = np.load(folder / "frames.idx.npy")
    with open(folder / "frames.bin", "rb") as f:
        return f.read(int(offsets[1]))


def public_info(meta: dict) -> dict:
    """The public description served by ``GET /avatars``."""
    return {k: meta.get(k) for k in PUBLIC_KEYS}


def avatar_names(root: Path) -> list[str]:
    """Names of the prepared avatars under ``root``, sorted."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if _NAME.match(p.name) and (p / "avatar.json").is_file())


def list_avatars(root: Path) -> list[dict]:
    """:func:`public_info` of every prepared avatar under ``root`` (reads metadata only)."""
    return [public_info(meta) for name in avatar_names(root) if (meta := read_meta(root, name)) is not None]


def sources_dir(root: Path, name: str) -> Path:
    """The folder keeping avatar ``name``'s uploaded sources."""
    return root / SOURCES / check_name(name)


def remove_avatar(root: Path, name: str) -> None:
    """Delete avatar ``name`` and its uploaded sources, if any."""
    folder = root / check_name(name)
    if not (folder / "avatar.json").is_file():
        raise AvatarError(f"no avatar named {name!r} in {root}/")
    shutil.rmtree(folder)
    sources = sources_dir(root, name)
    if sources.is_dir():
        shutil.rmtree(sources)

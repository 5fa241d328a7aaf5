"""Prepared avatars: everything per source frame that does not depend on audio, computed once and saved.

:class:`AvatarStore` is the avatars folder for one loaded model: prepare (explicitly, one preparation at a
time under the store's lock), list, load, remove. :class:`Avatar` is a loaded avatar as the engine uses it:
frames decoded on demand from the stored JPEGs, blend masks unpacked on demand, both kept in the store's
:class:`~musetalk.realtime.avatars.cache.MemoryCache` (least recently used out first, under a byte cap).

The pieces live beside this module: the on-disk format (``avatar_format``), fingerprints
(``avatar_fingerprint``), preparation (``avatar_prepare``), the memory cache (``avatar_cache``) and
staging (``avatar_staging``).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .cache import DEFAULT_CACHE_MB, MemoryCache
from .fingerprint import file_digest, fingerprint, model_identity, stale_reason
from .format import (FORMAT, AvatarData, AvatarError, AvatarWriter, avatar_names, avatars_dir, check_name,
                     list_avatars, public_info, read_avatar, read_meta, read_poster, remove_avatar, sources_dir,
                     unpack_mask)
from .prepare import PrepareSettings, Progress, Turn, no_wait, prepare_into, silent
from .staging import Staging

__all__ = ["Avatar", "AvatarError", "AvatarStore", "PrepareSettings", "Progress", "check_name", "avatars_dir",
           "list_avatars", "remove_avatar"]

log = logging.getLogger(__name__)

CROP = 256
_serials = itertools.count()


class LazyImages:
    """A read-only sequence of ``count`` uint8 images of ``shape`` (H, W, 3) RGB, made by ``get(i)`` on
    demand; ``np.asarray`` stacks them all (small avatars and tests only)."""

    dtype = np.dtype(np.uint8)

    def __init__(self, count: int, shape: tuple[int, int, int], get: Callable[[int], np.ndarray]) -> None:
        self._count, self._shape, self._get = count, shape, get

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._count, *self._shape)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if not -self._count <= i < self._count:
            raise IndexError(f"image {i} of {self._count}")
        return self._get(i % self._count)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self._get(i) for i in range(self._count))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.stack(list(self)).astype(dtype or self.dtype, copy=False)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class Avatar:
    """A loaded avatar. Output frame i shows source frame ``order[i % len(order)]``.

    ``frames[i]``: uint8 (H, W, 3) RGB, read-only, the stored frame exactly; ``crops[i]`` uint8 (256, 256, 3)
    (zeros without a face); ``records``: FaceRecord per frame; ``latents`` float32 (N, 8, 32, 32);
    ``order`` int64 (2N,).
    """

    def __init__(self, name: str, path: Path, meta: dict, data: AvatarData, cache: MemoryCache) -> None:
        self.name, self.path, self.meta = name, path, meta
        self.records = data.records
        self.latents = data.latents
        self.order = data.order
        self._data = data
        self._cache = cache
        self._serial = next(_serials)
        self._device_latents: dict[tuple, torch.Tensor] = {}
        count = len(data.frames)
        self.frames = LazyImages(count, (int(meta["height"]), int(meta["width"]), 3), self._frame)
        self.crops = LazyImages(count, (CROP, CROP, 3), self._crop)

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def nbytes(self) -> int:
        """Bytes this object holds in memory besides the cached frames and masks."""
        return self.latents.nbytes + self.order.nbytes + self._data.mask_box.nbytes + self._data.frames.offsets.nbytes

    def source_index(self, frame: int) -> int:
        """Source frame shown as output frame ``frame``."""
        return int(self.order[frame % len(self.order)])

    def has_face(self, src: int) -> bool:
        return self.records[src].found

    def cached_frame(self, src: int) -> np.ndarray | None:
        """``frames[src]`` when the cache holds it decoded, else None (no decoding)."""
        return self._cache.peek((self._serial, "frame", src))

    def frame_jpeg(self, src: int) -> bytes:
        """Source frame ``src`` as stored: JPEG bytes."""
        return bytes(self._data.frames[src])

    def mask(self, src: int):
        """The :class:`~musetalk.face.BlendMask` of source frame ``src`` (None without a face)."""
        if not self.records[src].found:
            return None
        return self._cache.get((self._serial, "mask", src), lambda: self._unpack_mask(src), lambda m: m.mask.nbytes)

    def device_latents(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """All latents (N, 8, 32, 32) on ``device`` in ``dtype``, uploaded once."""
        key = (str(device), dtype)
        if key not in self._device_latents:
            self._device_latents[key] = torch.from_numpy(np.asarray(self.latents)).to(device=device, dtype=dtype)
        return self._device_latents[key]

    def info(self) -> dict:
        """The public description served by ``GET /avatars``."""
        return public_info(self.meta)

    def _frame(self, src: int) -> np.ndarray:
        from ...video.jpeg import decode_jpeg

        return self._cache.get((self._serial, "frame", src), lambda: _read_only(decode_jpeg(self._data.frames[src])),
                               lambda a: a.nbytes)

    def _crop(self, src: int) -> np.ndarray:
        from ...face import crop_face

        if not self.records[src].found:
            return np.zeros((CROP, CROP, 3), np.uint8)
        return crop_face(self._frame(src), self.records[src], CROP)

    def _unpack_mask(self, src: int):
        from ...face import BlendMask

        box = self._data.mask_box[src]
        return BlendMask.from_dict({"box": box, "mask": unpack_mask(self._data.masks[src], box)})


class AvatarStore:
    """The avatars folder for one loaded model.

    ``parser``: an optional :class:`~musetalk.face.FaceParser` for the official parsing blend masks (the
    landmark masks otherwise). ``cache_mb``: the memory cap of loaded avatar data (all avatars together).
    Preparations run one at a time (the store's lock); loading never prepares: a stale avatar is refused.
    """

    def __init__(self, root: str | os.PathLike | None, mt, parser=None, cache_mb: float = DEFAULT_CACHE_MB) -> None:
        self.root = avatars_dir(root)
        self.mt = mt
        self.parser = parser
        self.cache = MemoryCache.of_megabytes(cache_mb)
        self._model = model_identity(mt)
        self._lock = threading.Lock()

    @property
    def mask_source(self) -> str:
        return "parsing" if self.parser is not None else "landmarks"

    def names(self) -> list[str]:
        return avatar_names(self.root)

    def exists(self, name: str) -> bool:
        return read_meta(self.root, check_name(name)) is not None

    def list(self) -> list[dict]:
        """The public description of every prepared avatar (metadata only, nothing is loaded)."""
        return list_avatars(self.root)

    def poster(self, name: str) -> bytes:
        """The first source frame of avatar ``name`` as JPEG bytes."""
        return read_poster(self.root, name)

    def prepare(self, source: str | os.PathLike, name: str, settings: PrepareSettings = PrepareSettings(),
                progress: Progress | None = None, force: bool = False, turn: Turn = no_wait) -> Avatar:
        """Prepare ``source`` (video or photo) as avatar ``name``; an up-to-date one is just loaded.
        Waits for any preparation in progress (one at a time). ``turn()`` is called before each step of the
        preparation and may block (a server's preparations wait while live sessions speak)."""
        check_name(name)
        source = Path(source).resolve()
        if not source.is_file():
            raise AvatarError(f"avatar source not found: {source}")
        with self._lock:
            resolved = settings.resolved(self.mt.version)
            digest = file_digest(source)
            stamp = fingerprint(digest, self._model, resolved, self.mask_source)
            meta = read_meta(self.root, name)
            if not force and meta is not None and meta.get("fingerprint") == stamp:
                log.info("avatar %s is up to date", name)
            else:
                self._prepare(source, digest, stamp, name, settings, progress or silent, turn)
        return self.load(name)

    def load(self, name: str) -> Avatar:
        """The avatar ``name`` (from the memory cache when there); a stale one raises :class:`AvatarError`."""
        meta = read_meta(self.root, check_name(name))
        if meta is None:
            raise AvatarError(f"no avatar named {name!r} in {self.root}/: prepare it with `musetalk avatar prepare`")
        stale = stale_reason(meta, self._model, self.mask_source)
        if stale is not None:
            source = meta.get("source", {}).get("path", "SOURCE")
            raise AvatarError(f"avatar {name!r} is stale ({stale}): prepare it again with "
                              f"`musetalk avatar prepare {source} --name {name}`")
        folder = self.root / name
        return self.cache.get(("avatar", name, meta["fingerprint"]),
                              lambda: Avatar(name, folder, meta, read_avatar(folder), self.cache), lambda a: a.nbytes)

    def remove(self, name: str) -> None:
        with self._lock:
            self._forget(name)
            remove_avatar(self.root, name)

    def new_upload_path(self, name: str, filename: str) -> Path:
        """A fresh path for an uploaded source of avatar ``name`` (kept so it can be prepared again); the
        avatar's other sources go when :meth:`keep_only_source` is called after a successful preparation."""
        suffix = Path(filename).suffix.lower()
        if not re.fullmatch(r"\.[a-z0-9]{1,5}", suffix):
            raise AvatarError(f"upload {filename!r} needs a video or image file extension (.mp4, .png, ...)")
        folder = sources_dir(self.root, name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"upload-{time.time_ns()}{suffix}"

    def keep_only_source(self, name: str, source: Path) -> None:
        """Delete avatar ``name``'s kept uploads other than ``source``."""
        for old in sources_dir(self.root, name).iterdir():
            if old != source:
                old.unlink()

    def _forget(self, name: str) -> None:
        self.cache.drop(lambda key: key[:2] == ("avatar", name))

    def _prepare(self, source: Path, digest: str, stamp: str, name: str, settings: PrepareSettings,
                 progress: Progress, turn: Turn) -> None:
        """Prepare straight into a staging folder (frame by frame, see :func:`.prepare.prepare_into`)."""
        start = time.perf_counter()
        resolved = settings.resolved(self.mt.version)
        with Staging(self.root, name) as folder, AvatarWriter(folder) as writer:
            prepared = prepare_into(writer, source, resolved, self.mt, self.parser, progress, turn)
            stat = source.stat()
            meta = {
                "format": FORMAT, "name": name, "fingerprint": stamp, "fps": prepared.fps, "width": prepared.width,
                "height": prepared.height, "num_frames": prepared.frames, "faces": prepared.faces,
                "source_name": source.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "source": {"path": str(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest},
                "model": self._model, "settings": dataclasses.asdict(settings), "blend_mode": resolved.blend_mode,
                "mask": self.mask_source,
            }
            writer.finish(meta)
        self._forget(name)
        progress("save", 1, 1)
        log.info("prepared avatar %s: %d frames (%d with a face) in %.1f s", name, meta["num_frames"],
                 prepared.faces, time.perf_counter() - start)

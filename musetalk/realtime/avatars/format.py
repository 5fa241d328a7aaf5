"""The on-disk format of prepared avatars: what each file holds, writing it (frame by frame, :class:`AvatarWriter`),
reading it back, listing.

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

import io
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

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> memoryview:
        return memoryview(self.data[self.offsets[i] : self.offsets[i + 1]])

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


class PackedWriter:
    """Writes a :class:`Packed` pair (``STEM.bin``, ``STEM.idx.npy``) item by item: the items go to disk as
    they come, only their offsets (8 bytes each) stay in memory."""

    def __init__(self, folder: Path, stem: str) -> None:
        self._index = folder / f"{stem}.idx.npy"
        self._file = open(folder / f"{stem}.bin", "wb")
        self._offsets = [0]

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def append(self, item: bytes | memoryview) -> None:
        self._file.write(item)
        self._offsets.append(self._offsets[-1] + len(item))

    def close(self) -> None:
        """Flush the data and write the index, int64 (N+1,) byte offsets (once)."""
        if self._file.closed:
            return
        self._file.close()
        np.save(self._index, np.asarray(self._offsets, np.int64))


class RowsWriter:
    """A ``.npy`` file of rows of ``row_shape`` and ``dtype`` written block by block, byte for byte what
    ``np.save`` writes for the whole array: the header is rewritten with the row count on :meth:`close`
    (numpy pads the header for a growing first axis, so its length does not change)."""

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.row_shape, self.dtype, self.rows = tuple(row_shape), np.dtype(dtype), 0
        self._file = open(path, "wb")
        self._header = self._header_for(0)
        self._file.write(self._header)

    def _header_for(self, rows: int) -> bytes:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": (rows, *self.row_shape)})
        return header.getvalue()

    def append(self, block: np.ndarray) -> None:
        """Rows ``block`` of shape (n, *row_shape), written as ``dtype``."""
        if tuple(block.shape[1:]) != self.row_shape:
            raise ValueError(f"rows of shape {self.row_shape} expected, got {block.shape[1:]}")
        self._file.write(np.ascontiguousarray(block, self.dtype).tobytes())
        self.rows += len(block)

    def close(self) -> None:
        """Write the header with the row count (once)."""
        if self._file.closed:
            return
        header = self._header_for(self.rows)
        if len(header) != len(self._header):
            raise AvatarError(f"{self._file.name}: the .npy header grew with {self.rows} rows; numpy >= 1.26 pads it")
        self._file.seek(0)
        self._file.write(header)
        self._file.close()


class AvatarWriter:
    """Writes an avatar folder while its frames are prepared, in frame order: :meth:`add_frame` as soon as a
    frame is encoded, :meth:`add_face` once its analysis (latents, mask) is done, :meth:`finish` last.

    Memory holds only the per-frame bookkeeping: offsets, mask boxes and face records (about 1 KB a
    frame); frames, latents and masks are on disk once added. Use it as a context manager: the files are
    closed on leaving (the caller writes into a staging folder and deletes it on failure)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._frames = PackedWriter(folder, "frames")
        self._masks = PackedWriter(folder, "masks")
        self._latents = RowsWriter(folder / "latents.npy", (8, 32, 32), np.float32)
        self._boxes: list[np.ndarray] = []
        self.records: list = []

    @property
    def frames(self) -> int:
        return len(self._frames)

    def add_frame(self, jpeg: bytes) -> None:
        """The next source frame as stored (JPEG bytes)."""
        self._frames.append(jpeg)

    def add_faces(self, records: list, latents: np.ndarray, boxes: np.ndarray, masks: list[bytes]) -> None:
        """The analysis of the next ``len(records)`` frames: FaceRecords, latents float32 (n, 8, 32, 32)
        (zeros without a face), mask boxes int32 (n, 4) and masks packed by :func:`pack_mask` (b"" without
        a face); their frames were added before."""
        if len(self.records) + len(records) > len(self._frames):
            raise AvatarError(f"faces of {len(self.records) + len(records)} frames added for {len(self._frames)} frames")
        self._latents.append(latents)
        self._boxes.extend(np.asarray(boxes, np.int32).reshape(-1, 4))
        for mask in masks:
            self._masks.append(mask)
        self.records.extend(records)

    def finish(self, meta: dict) -> None:
        """Write the remaining files, ``avatar.json`` last."""
        from ...face import save_records

        n = len(self._frames)
        if len(self.records) != n:
            raise AvatarError(f"faces of {len(self.records)} frames added for {n} frames")
        self.close()
        np.save(self.folder / "mask_box.npy", np.asarray(self._boxes, np.int32).reshape(n, 4))
        np.save(self.folder / "order.npy", np.concatenate([np.arange(n), np.arange(n)[::-1]]).astype(np.int64))
        save_records(self.folder / "records.npz", self.records)
        (self.folder / "avatar.json").write_text(json.dumps(meta, indent=1))

    def close(self) -> None:
        """Close the files being written (:meth:`finish` does it too)."""
        for writer in (self._frames, self._masks, self._latents):
            writer.close()

    def __enter__(self) -> "AvatarWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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

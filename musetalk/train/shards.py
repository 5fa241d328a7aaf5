"""On-disk training data: one folder ("shard") per clip, arrays a data loader memory-maps.

```
DATA_DIR/
  skipped.json                 every skipped clip / stretch with its reason
  clips/<clip>/meta.json       written last: the clip is complete (resume skips it)
               crops.u8        uint8 (M, 256, 256, 3) RGB face crops of the kept frames (raw, shape in meta)
               frame_index.npy int32 (M,)  frame number on the clip's 25 fps timeline
               landmarks.npy   float32 (M, 68, 2) iBUG-68, frame pixels
               crop_boxes.npy  int32 (M, 4) x1,y1,x2,y2 region resized to the crop
               pose.npy        float32 (M, 3) yaw, pitch, roll estimate in degrees
               audio.npy       float32 (S,) 16 kHz mono
               whisper.npy     float16 (F, 5, 384) whisper-tiny encoder hidden states, 50 per second
               mel.npy         float32 (80, S // 200 + 1) SyncNet log-mel
```
``meta.json``: source, fps (25), num_frames (25 fps timeline), kept (M), segments ([start, stop) runs of
consecutive kept frames, indices into the arrays), skipped (stretches without a usable face).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import MuseTalkError

FPS = 25
CROP_SHAPE = (256, 256, 3)


class DataError(MuseTalkError):
    """Training data is missing, empty or inconsistent."""


@dataclass
class ClipShard:
    """Read-only view of one prepared clip; arrays are memory-mapped on first use."""

    folder: Path

    @cached_property
    def meta(self) -> dict:
        return json.loads((self.folder / "meta.json").read_text())

    @property
    def name(self) -> str:
        return self.folder.name

    def _npy(self, name: str) -> np.ndarray:
        return np.load(self.folder / f"{name}.npy", mmap_mode="r")

    @cached_property
    def crops(self) -> np.ndarray:
        return np.memmap(self.folder / "crops.u8", np.uint8, "r", shape=(self.meta["kept"], *CROP_SHAPE))

    @cached_property
    def frame_index(self) -> np.ndarray:
        return np.asarray(self._npy("frame_index"))

    @cached_property
    def landmarks(self) -> np.ndarray:
        return np.asarray(self._npy("landmarks"))

    @cached_property
    def crop_boxes(self) -> np.ndarray:
        return np.asarray(self._npy("crop_boxes"))

    @cached_property
    def whisper(self) -> np.ndarray:
        return self._npy("whisper")

    @cached_property
    def mel(self) -> np.ndarray:
        return self._npy("mel")

    @cached_property
    def audio(self) -> np.ndarray:
        return self._npy("audio")

    @property
    def segments(self) -> list[tuple[int, int]]:
        return [tuple(s) for s in self.meta["segments"]]


def clips_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "clips"


def open_shards(data_dir: str | Path) -> list[ClipShard]:
    """Every complete clip of a prepared data folder, sorted by name."""
    folder = clips_dir(Path(data_dir))
    shards = sorted((ClipShard(p.parent) for p in folder.glob("*/meta.json")), key=lambda s: s.name)
    if not shards:
        raise DataError(f"no prepared clips in {data_dir}/: run `musetalk train prepare VIDEOS_DIR --out {data_dir}` first")
    return shards


def write_shard(folder: Path, meta: dict, crops: np.ndarray | None = None, **arrays: np.ndarray) -> None:
    """Write arrays then ``meta.json`` (last, atomically) into ``folder``. ``crops`` may already be on disk."""
    folder.mkdir(parents=True, exist_ok=True)
    if crops is not None:
        np.ascontiguousarray(crops, np.uint8).tofile(folder / "crops.u8")
    for name, value in arrays.items():
        np.save(folder / f"{name}.npy", value)
    tmp = folder / "meta.json.part"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(folder / "meta.json")

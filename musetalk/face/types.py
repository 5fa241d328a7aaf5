"""Typed, serialisable results of face analysis and blending.

Coordinates are pixels of the full frame, x to the right, y down. Boxes are ``x1, y1, x2, y2`` with
``x2``/``y2`` exclusive for the integer boxes (numpy slice ``frame[y1:y2, x1:x2]``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

NUM_LANDMARKS = 68


def _array(value: Any, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    if arr.shape != shape:
        raise ValueError(f"expected shape {shape}, got {arr.shape}")
    return arr


@dataclass
class FaceRecord:
    """The face of one frame.

    found: False on frames without a usable face; the arrays are then all zeros.
    box: float32 (4,) detector box x1, y1, x2, y2 (pixels, full frame).
    landmarks: float32 (68, 2) x, y of the iBUG-68 points (smoothed when the analyzer smooths).
    crop_box: int32 (4,) x1, y1, x2, y2 of the region resized to the 256x256 crop, inside the frame.
    score: detector confidence (dlib HOG margin; 0 when not found).
    """

    found: bool
    box: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((NUM_LANDMARKS, 2), np.float32))
    crop_box: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int32))
    score: float = 0.0

    def __post_init__(self) -> None:
        self.found = bool(self.found)
        self.box = _array(self.box, np.float32, (4,))
        self.landmarks = _array(self.landmarks, np.float32, (NUM_LANDMARKS, 2))
        self.crop_box = _array(self.crop_box, np.int32, (4,))
        self.score = float(self.score)

    @classmethod
    def missing(cls) -> "FaceRecord":
        """The record of a frame without a face (found=False, zero arrays)."""
        return cls(found=False)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Numpy arrays only (``np.savez``-friendly): found bool (), box, landmarks, crop_box, score float32 ()."""
        return {"found": np.array(self.found), "box": self.box.copy(), "landmarks": self.landmarks.copy(),
                "crop_box": self.crop_box.copy(), "score": np.float32(self.score)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FaceRecord":
        """Inverse of :meth:`to_dict`; also accepts plain lists (e.g. from JSON)."""
        return cls(found=bool(np.asarray(data["found"])), box=data["box"], landmarks=data["landmarks"],
                   crop_box=data["crop_box"], score=float(np.asarray(data.get("score", 0.0))))


@dataclass
class BlendMask:
    """Where and how strongly the generated face replaces the frame.

    box: int32 (4,) x1, y1, x2, y2 of the expanded face box, clipped to the frame.
    mask: float32 (y2-y1, x2-x1) weights in [0, 1] of the generated face (0 keeps the frame pixel).
    """

    box: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        self.box = _array(self.box, np.int32, (4,))
        mask = np.asarray(self.mask)
        if mask.dtype == np.uint8:
            mask = mask.astype(np.float32) / 255.0
        self.mask = _array(mask, np.float32, (int(self.box[3] - self.box[1]), int(self.box[2] - self.box[0])))

    def to_dict(self) -> dict[str, np.ndarray]:
        """box int32 (4,) and mask uint8 (h, w) (weights x 255, rounded: compact to cache)."""
        return {"box": self.box.copy(), "mask": np.rint(self.mask * 255.0).astype(np.uint8)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BlendMask":
        """Inverse of :meth:`to_dict` (uint8 masks are scaled back to [0, 1]; float masks kept)."""
        return cls(box=data["box"], mask=np.asarray(data["mask"]))


def stack_records(records: Sequence[FaceRecord]) -> dict[str, np.ndarray]:
    """Per-video arrays: found bool (N,), box float32 (N,4), landmarks float32 (N,68,2),
    crop_box int32 (N,4), score float32 (N,)."""
    return {
        "found": np.array([r.found for r in records], dtype=bool),
        "box": np.stack([r.box for r in records]) if records else np.zeros((0, 4), np.float32),
        "landmarks": (np.stack([r.landmarks for r in records]) if records
                      else np.zeros((0, NUM_LANDMARKS, 2), np.float32)),
        "crop_box": np.stack([r.crop_box for r in records]) if records else np.zeros((0, 4), np.int32),
        "score": np.array([r.score for r in records], dtype=np.float32),
    }


def unstack_records(arrays: Mapping[str, np.ndarray]) -> list[FaceRecord]:
    """Inverse of :func:`stack_records`."""
    return [FaceRecord(found=bool(f), box=b, landmarks=lm, crop_box=c, score=float(s))
            for f, b, lm, c, s in zip(arrays["found"], arrays["box"], arrays["landmarks"],
                                       arrays["crop_box"], arrays["score"])]


def save_records(path: str | Path, records: Sequence[FaceRecord]) -> None:
    """Write the records of a video to an ``.npz`` file."""
    np.savez_compressed(path, **stack_records(records))


def load_records(path: str | Path) -> list[FaceRecord]:
    """Read records written by :func:`save_records`."""
    with np.load(path) as data:
        return unstack_records({k: data[k] for k in data.files})

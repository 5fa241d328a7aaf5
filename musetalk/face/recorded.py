"""Face analysis replaced by records made beforehand (a machine without the landmark model, a re-run)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import FaceError
from .types import FaceRecord, load_records


class RecordedFaces:
    """Face analysis replaced by records made beforehand (:func:`musetalk.face.save_records` of the source's
    frames, in order): called once per source frame, it returns that frame's record."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FaceError(f"face records not found: {self.path}; write them with musetalk.face.save_records "
                            f"or leave them out to analyse the faces")
        self.records = load_records(self.path)
        self.used = 0

    def __call__(self, frame: np.ndarray) -> FaceRecord:
        if self.used == len(self.records):
            raise FaceError(f"{self.path} holds the faces of {len(self.records)} frames but the source has more: "
                            f"write the records of every frame of this source")
        self.used += 1
        return self.records[self.used - 1]

"""Short detection gaps filled by interpolation: a face missed for a few frames between two detections gets
landmarks and box interpolated linearly, so the mouth does not flicker between synced and passed-through
frames. Longer gaps, and gaps at the start or end of a clip, stay missing (passed through)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .types import FaceRecord

DEFAULT_MAX_GAP = 5


def missing_runs(found: list[bool]) -> list[tuple[int, int]]:
    """(start, stop) of every run of False in ``found`` that has a True on both sides."""
    runs, start = [], None
    for i, ok in enumerate(found):
        if not ok and start is None:
            start = i
        elif ok and start is not None:
            if start > 0:
                runs.append((start, i))
            start = None
    return runs


def interpolate_gaps(records: list[FaceRecord], crop_box: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     max_gap: int = DEFAULT_MAX_GAP) -> list[FaceRecord]:
    """Records with every gap of 1..``max_gap`` missing frames between two found ones filled: landmarks and
    box linear between its neighbours, ``crop_box(landmarks, box)`` recomputed, score 0 (not detected)."""
    out = list(records)
    for start, stop in missing_runs([r.found for r in records]):
        if stop - start > max_gap:
            continue
        before, after = records[start - 1], records[stop]
        for i in range(start, stop):
            t = (i - start + 1) / (stop - start + 1)
            landmarks = (1 - t) * before.landmarks + t * after.landmarks
            box = (1 - t) * before.box + t * after.box
            out[i] = FaceRecord(found=True, box=box, landmarks=landmarks, crop_box=crop_box(landmarks, box), score=0.0)
    return out

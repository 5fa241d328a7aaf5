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


class GapFiller:
    """:func:`interpolate_gaps` for a stream: ``(item, record)`` pairs go in, come out in order, held back only
    while a gap is open (at most ``max_gap`` of them, e.g. frames). ``item`` travels with its record."""

    def __init__(self, crop_box: Callable[[np.ndarray, np.ndarray], np.ndarray], max_gap: int = DEFAULT_MAX_GAP) -> None:
        self.crop_box = crop_box
        self.max_gap = int(max_gap)
        self._held: list[tuple[object, FaceRecord]] = []
        self._last: FaceRecord | None = None

    def push(self, item: object, record: FaceRecord) -> list[tuple[object, FaceRecord]]:
        """The pairs that are final now (this one, earlier held ones, or none)."""
        if not record.found:
            if self._last is None:  # no face before it: nothing to interpolate from
                return [(item, record)]
            self._held.append((item, record))
            if len(self._held) <= self.max_gap:
                return []
            released, self._held, self._last = self._held, [], None  # too long: passed through
            return released
        records = [self._last, *(r for _, r in self._held), record] if self._held else []
        filled = interpolate_gaps(records, self.crop_box, self.max_gap)[1:-1]
        released = [(held, rec) for (held, _), rec in zip(self._held, filled)]
        self._held, self._last = [], record
        return released + [(item, record)]

    def finish(self) -> list[tuple[object, FaceRecord]]:
        """The pairs still held at the end of the stream (a gap with no face after it: passed through)."""
        released, self._held = self._held, []
        return released

"""The source side of dubbing: which source frame each output frame shows, and the frames themselves.

Output frame i shows source frame ``pingpong_index(i, n)``: the video plays forward, then backward, and
so on (both ends shown twice, as the official tool does). Each source frame is analysed once.
"""
from __future__ import annotations

import itertools
import logging
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..errors import VideoError
from ..face import FaceRecord
from ..face.gaps import GapFiller
from ..video import is_image, probe, read_frames, read_image

log = logging.getLogger(__name__)

RAM_STORE_LIMIT = 1 << 30  # frames kept in memory for ping-pong up to 1 GiB, on disk beyond


def pingpong_index(i: int, n: int) -> int:
    """Source frame shown at output frame ``i`` for a clip of ``n`` frames: 0..n-1, n-1..0, 0..n-1, ..."""
    k = i % (2 * n)
    return k if k < n else 2 * n - 1 - k


@dataclass(frozen=True)
class SourceInfo:
    path: Path
    width: int
    height: int
    fps: Fraction
    is_photo: bool


def describe_source(path: str | os.PathLike, photo_fps: float) -> SourceInfo:
    """Size and true frame rate of a video, or of a photo shown at ``photo_fps``."""
    path = Path(path)
    if is_image(path):
        image = read_image(path)
        return SourceInfo(path, image.shape[1], image.shape[0], Fraction(photo_fps).limit_denominator(1001), True)
    info = probe(path)
    return SourceInfo(path, info.width, info.height, info.fps, False)


class FrameStore:
    """Decoded source frames by index for the backward half of ping-pong: in RAM when small, else in a
    memory-mapped temporary file (resident memory stays bounded whatever the video length)."""

    def __init__(self, path: Path, count: int, shape: tuple[int, int, int]) -> None:
        self._file = None
        if np.prod(shape) * count <= RAM_STORE_LIMIT:
            self._data = np.empty((count, *shape), np.uint8)
        else:
            self._file = tempfile.NamedTemporaryFile(prefix="musetalk-frames-", suffix=".u8")
            self._data = np.memmap(self._file.name, np.uint8, "w+", shape=(count, *shape))
        self.count = 0
        for frame in read_frames(path):
            if self.count == count:
                break
            self._data[self.count] = frame
            self.count += 1

    def __getitem__(self, k: int) -> np.ndarray:
        return np.asarray(self._data[k])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def analysed_frames(frames: Iterable[np.ndarray], total: int, analyze: Callable[[np.ndarray], FaceRecord],
                    gaps: GapFiller | None) -> Iterator[tuple[int, np.ndarray, FaceRecord]]:
    """(index, frame, record) of the first ``total`` frames in order, short gaps filled by ``gaps`` if given."""
    for k, frame in enumerate(itertools.islice(frames, total)):
        record = analyze(frame)
        ready = gaps.push((k, frame), record) if gaps is not None else [((k, frame), record)]
        for (index, held), filled in ready:
            yield index, held, filled
    for (index, held), filled in gaps.finish() if gaps is not None else []:
        yield index, held, filled


def source_frames(info: SourceInfo, total: int, analyze: Callable[[np.ndarray], FaceRecord],
                  gaps: GapFiller | None = None) -> Iterator[tuple[int, np.ndarray, FaceRecord]]:
    """(source index, frame uint8 (H, W, 3) RGB, face record) for output frames 0..total-1, in order.
    ``gaps``: fills short detection gaps of a video (frames held back while a gap is open).

    Frames are decoded and analysed in one forward pass; only when the audio outlasts the video are the
    frames decoded once more into a :class:`FrameStore` for the ping-pong (records are reused)."""
    if info.is_photo:
        frame = read_image(info.path)
        record = analyze(frame)
        for _ in range(total):
            yield 0, frame, record
        return
    records: list[FaceRecord] = []
    for k, frame, record in analysed_frames(read_frames(info.path), total, analyze, gaps):
        records.append(record)
        yield k, frame, record
    n = len(records)
    if n == 0:
        raise VideoError(f"{info.path} contains no readable video frames")
    if n >= total:
        return
    log.info("audio outlasts the %d-frame video: playing it forward and backward", n)
    store = FrameStore(info.path, n, (info.height, info.width, 3))
    try:
        if store.count < n:
            raise VideoError(f"{info.path} gave {store.count} frames on the second read, {n} on the first")
        for i in range(n, total):
            k = pingpong_index(i, n)
            yield k, store[k], records[k]
    finally:
        store.close()

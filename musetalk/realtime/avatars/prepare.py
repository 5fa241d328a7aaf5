"""Preparation: a video or photo turned into an avatar's data (faces, stored frames, latents, blend masks).

Frames stream through: each source frame is decoded, JPEG-encoded once and written, and everything else
(faces, crops, latents, masks) is computed from the *decoded* JPEG, so the stored frames are exactly the
frames the engine pastes onto. Memory stays at one batch of decoded frames plus about 1 KB a frame of
bookkeeping (offsets, mask boxes, face records), whatever the video's length.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ...errors import FaceError
from .format import AvatarWriter, pack_mask

PHOTO_FPS = 25.0
LATENT_BATCH = 16

Turn = Callable[[], None]
"""turn(): called before each step of a preparation; returns when the preparation may go on."""
Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): frames done of ``total`` source frames (0 when unknown) in stages "faces"
(read, store and detect, per frame), "latents" and "masks" (per batch of faces); then "save" 1 of 1."""


@dataclass(frozen=True)
class PrepareSettings:
    """Face, blend and storage settings of a preparation (part of the fingerprint).

    blend_mode: "jaw" / "raw" / "neck"; None = the version's default (``musetalk.face.default_blend_mode``).
    blur_ratio: mask feather as a fraction of the expanded box (0.1, the official real-time value).
    max_frames: use only the first frames of a long video (None = all).
    jpeg_quality: quality of the stored frames (1..100).
    face_records: an ``.npz`` of :func:`musetalk.face.save_records` with the record of every source frame
    used, in order: no face analysis (a machine without the landmark model); read at preparation time.
    """

    bbox_shift: int = 0
    extra_margin: int = 10
    face_index: int = 0
    smooth: bool = True
    blend_mode: str | None = None
    blur_ratio: float = 0.1
    max_frames: int | None = None
    jpeg_quality: int = 90
    face_records: str | None = None

    def resolved(self, version: str) -> "PrepareSettings":
        from ...face import default_blend_mode

        mode = self.blend_mode or default_blend_mode(version)
        return dataclasses.replace(self, blend_mode=mode)


@dataclass(frozen=True)
class Prepared:
    """What a preparation wrote: ``frames`` source frames, ``faces`` of them with a face, the source's fps
    and frame size in pixels."""

    frames: int
    faces: int
    fps: float
    width: int
    height: int


def silent(stage: str, done: int, total: int) -> None:
    """A progress callback that does nothing."""


def no_wait() -> None:
    """A ``turn`` callback for preparations that yield to nobody."""


def prepare_into(writer: AvatarWriter, source: Path, settings: PrepareSettings, mt, parser, progress: Progress,
                 turn: Turn = no_wait) -> Prepared:
    """Prepare ``source`` with resolved ``settings`` for model ``mt`` (``parser``: optional FaceParser) into
    ``writer``, frame by frame: each frame is decoded, JPEG-encoded and written, its face analysed on the
    decoded JPEG; every ``LATENT_BATCH`` faces, their latents (one model call) and masks are written.

    ``turn()`` is called before each step (a frame, a model call, a mask) and may block: how a preparation
    yields to live sessions (:class:`musetalk.realtime.engine.priority.BackgroundLane`). Memory: at most
    ``LATENT_BATCH`` decoded frames plus the writer's bookkeeping, whatever the video's length."""
    from ...video.jpeg import decode_jpeg, encode_jpeg

    frames, fps, total = _source_frames(source, settings.max_frames)
    analyze = _face_analysis(settings, mt.version, fps)
    pending: list[tuple[np.ndarray | None, object]] = []  # (decoded frame, or None without a face; record)
    faces, height, width = 0, 0, 0
    for frame in frames:
        turn()
        jpeg = encode_jpeg(frame, settings.jpeg_quality)
        writer.add_frame(jpeg)
        image = decode_jpeg(jpeg)
        height, width = image.shape[:2]
        record = analyze(image)
        pending.append((image if record.found else None, record))
        faces += record.found
        progress("faces", writer.frames, total)
        if sum(r.found for _, r in pending) == LATENT_BATCH:
            _write_faces(writer, pending, settings, mt, parser, progress, total, turn)
    if pending:
        _write_faces(writer, pending, settings, mt, parser, progress, total, turn)
    if not faces:
        raise FaceError(f"no face found in any of the {writer.frames} frames of {source}: use a clear frontal face")
    return Prepared(writer.frames, faces, fps, int(width), int(height))


def _source_frames(source: Path, max_frames: int | None) -> tuple[Iterator[np.ndarray], float, int]:
    """uint8 RGB frames of a video or photo, their fps (25 for a photo) and their count (0 if unknown)."""
    from itertools import islice

    from ...video.io import is_image, probe, read_frames, read_image

    if is_image(source):
        return iter([read_image(source)]), PHOTO_FPS, 1
    info = probe(source)
    total = min(info.num_frames, max_frames) if max_frames and info.num_frames else (max_frames or info.num_frames)
    return islice(read_frames(source), max_frames), float(info.fps), total


def _face_analysis(settings: PrepareSettings, version: str, fps: float) -> Callable[[np.ndarray], object]:
    """The FaceRecord of each frame in turn: recorded ones (``settings.face_records``) or analysed."""
    from ...face import FaceAnalyzer, RecordedFaces

    if settings.face_records:
        return RecordedFaces(settings.face_records)
    return FaceAnalyzer(version=version, bbox_shift=settings.bbox_shift, extra_margin=settings.extra_margin,
                        smooth=settings.smooth, face_index=settings.face_index, fps=fps).analyze


def _write_faces(writer: AvatarWriter, pending: list, settings: PrepareSettings, mt, parser, progress: Progress,
                 total: int, turn: Turn) -> None:
    """Latents (one model call over the faces) and blend masks of the ``pending`` (frame, record) pairs,
    written in frame order (zeros and empty masks without a face); empties ``pending``."""
    from ...face import crop_face, make_blend_mask

    found = [k for k, (_, record) in enumerate(pending) if record.found]
    latents = np.zeros((len(pending), 8, 32, 32), np.float32)
    boxes = np.zeros((len(pending), 4), np.int32)
    masks = [b""] * len(pending)
    done = len(writer.records) + len(pending)
    if found:
        turn()
        crops = np.stack([crop_face(pending[k][0], pending[k][1]) for k in found])
        latents[found] = mt.unet_input(crops, crops).float().cpu().numpy()
    progress("latents", done, total)
    for k in found:
        turn()
        image, record = pending[k]
        mask = make_blend_mask(image.shape, record, settings.blend_mode, parser=parser, frame=image,
                               blur_ratio=settings.blur_ratio).to_dict()
        boxes[k] = mask["box"]
        masks[k] = pack_mask(mask["mask"])
    writer.add_faces([record for _, record in pending], latents, boxes, masks)
    pending.clear()
    progress("masks", done, total)

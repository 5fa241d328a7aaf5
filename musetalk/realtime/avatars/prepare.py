"""Preparation: a video or photo turned into an avatar's data (faces, stored frames, latents, blend masks).

Frames stream through: each source frame is JPEG-encoded once, and everything else (faces, crops, latents,
masks) is computed from the *decoded* JPEG, so the stored frames are exactly the frames the engine pastes
onto. Memory stays at one batch of decoded frames plus the JPEGs, whatever the video's length.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ...errors import FaceError
from .format import AvatarData, Packed, pack_mask

PHOTO_FPS = 25.0
LATENT_BATCH = 16

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stages "faces" (read and detect; total 0 when unknown), "latents", "masks",
"save"."""


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
    """The data of a prepared avatar and the facts about its source (fps, size in pixels)."""

    data: AvatarData
    fps: float
    width: int
    height: int

    @property
    def faces(self) -> int:
        return sum(r.found for r in self.data.records)


def silent(stage: str, done: int, total: int) -> None:
    """A progress callback that does nothing."""


def prepare_data(source: Path, settings: PrepareSettings, mt, parser, progress: Progress) -> Prepared:
    """Prepare ``source`` with resolved ``settings`` for model ``mt`` (``parser``: optional FaceParser)."""
    from ...video.jpeg import decode_jpeg

    jpegs, records, fps = _store_and_analyze(source, settings, mt.version, progress)
    if not any(r.found for r in records):
        raise FaceError(f"no face found in any of the {len(jpegs)} frames of {source}: use a clear frontal face")
    frames = Packed.of(jpegs)
    latents, mask_box, masks = _latents_and_masks(frames, records, settings, mt, parser, progress)
    n = len(jpegs)
    order = np.concatenate([np.arange(n), np.arange(n)[::-1]]).astype(np.int64)
    height, width = decode_jpeg(frames[0]).shape[:2]
    data = AvatarData(frames=frames, records=records, latents=latents, mask_box=mask_box, masks=masks, order=order)
    return Prepared(data, fps, int(width), int(height))


def _source_frames(source: Path, max_frames: int | None) -> tuple[Iterator[np.ndarray], float, int]:
    """uint8 RGB frames of a video or photo, their fps (25 for a photo) and their count (0 if unknown)."""
    from itertools import islice

    from ...video.io import is_image, probe, read_frames, read_image

    if is_image(source):
        return iter([read_image(source)]), PHOTO_FPS, 1
    info = probe(source)
    total = min(info.num_frames, max_frames) if max_frames and info.num_frames else (max_frames or info.num_frames)
    return islice(read_frames(source), max_frames), float(info.fps), total


def _store_and_analyze(source: Path, settings: PrepareSettings, version: str,
                       progress: Progress) -> tuple[list[bytes], list, float]:
    """The JPEG of every frame and the FaceRecord of its decoded pixels, and the fps."""
    from ...face import FaceAnalyzer, RecordedFaces
    from ...video.jpeg import decode_jpeg, encode_jpeg

    frames, fps, total = _source_frames(source, settings.max_frames)
    if settings.face_records:
        analyze = RecordedFaces(settings.face_records)
    else:
        analyze = FaceAnalyzer(version=version, bbox_shift=settings.bbox_shift, extra_margin=settings.extra_margin,
                               smooth=settings.smooth, face_index=settings.face_index, fps=fps).analyze
    jpegs, records = [], []
    for frame in frames:
        jpegs.append(encode_jpeg(frame, settings.jpeg_quality))
        records.append(analyze(decode_jpeg(jpegs[-1])))
        progress("faces", len(jpegs), total)
    return jpegs, records, fps


def _latents_and_masks(frames: Packed, records: list, settings: PrepareSettings, mt, parser,
                       progress: Progress) -> tuple[np.ndarray, np.ndarray, Packed]:
    """Latents float32 (N, 8, 32, 32) (zeros without a face), mask boxes int32 (N, 4) and packed masks."""
    from ...face import crop_face, make_blend_mask
    from ...video.jpeg import decode_jpeg

    n = len(frames)
    latents = np.zeros((n, 8, 32, 32), np.float32)
    boxes = np.zeros((n, 4), np.int32)
    masks = [b""] * n
    found = [i for i in range(n) if records[i].found]
    for start in range(0, len(found), LATENT_BATCH):
        part = found[start : start + LATENT_BATCH]
        images = [decode_jpeg(frames[i]) for i in part]
        crops = np.stack([crop_face(image, records[i]) for i, image in zip(part, images)])
        latents[part] = mt.unet_input(crops, crops).float().cpu().numpy()
        progress("latents", start + len(part), len(found))
        for i, image in zip(part, images):
            mask = make_blend_mask(image.shape, records[i], settings.blend_mode, parser=parser, frame=image,
                                   blur_ratio=settings.blur_ratio).to_dict()
            boxes[i] = mask["box"]
            masks[i] = pack_mask(mask["mask"])
        progress("masks", start + len(part), len(found))
    return latents, boxes, Packed.of(masks)

"""Frames in, one :class:`FaceRecord` per frame out: detection/tracking, full-resolution landmarks,
temporal smoothing and the official crop box. The followed person keeps their identity: after a loss, a face
is taken again only when dlib's face descriptor says it is the same person (else the frames pass through).
A whole clip (:meth:`FaceAnalyzer.analyze_all`) also gets its short detection gaps interpolated."""
from __future__ import annotations

import logging
from typing import Iterable

import cv2
import numpy as np

from ..errors import FaceError
from .crop import VERSIONS, bbox_shift_range, crop_box_from_landmarks
from .detect import LandmarkBackend, create_backend
from .gaps import DEFAULT_MAX_GAP, GapFiller, interpolate_gaps
from .identity import same_person, shared_embedder
from .smoothing import OneEuroFilter
from .tracking import FaceTracker
from .types import FaceRecord

log = logging.getLogger(__name__)

# A jump of the landmarks by more than this fraction of the face height in one frame is a cut: no smoothing.
CUT_JUMP = 0.5


class FaceAnalyzer:
    """Stateful face analysis of a video (or independent photos after :meth:`reset`).

    backend: registered backend name ("dlib") or a :class:`LandmarkBackend` instance.
    version: "v1.5" (bbox_shift ignored, ``extra_margin`` px added below the chin) or "v1.0".
    smooth: One-Euro filter on the landmarks (and so on the crop boxes); ``min_cutoff_hz``/``beta`` tune it.
    face_index: which face to follow at the start, by decreasing size (0 = largest).
    fps: frame rate of the video (the filter's sample rate).
    detect_size: longest side (px) of the downscaled frame used for full-frame detection.
    keep_identity: after losing the face, accept only the same person (dlib face descriptor).
    max_gap: in :meth:`analyze_all`, gaps of up to this many frames are interpolated (0: none).
    """

    def __init__(self, backend: str | LandmarkBackend = "dlib", version: str = "v1.5", bbox_shift: int = 0,
                 extra_margin: int = 10, smooth: bool = True, face_index: int = 0, fps: float = 25.0,
                 detect_size: int = 640, min_cutoff_hz: float = 0.5, beta: float = 8.0, keep_identity: bool = True,
                 max_gap: int = DEFAULT_MAX_GAP) -> None:
        if version not in VERSIONS:
            raise FaceError(f"unknown MuseTalk version {version!r}: use one of {VERSIONS}")
        if version == "v1.5" and bbox_shift:
            log.warning("bbox_shift=%d is ignored by v1.5 (use extra_margin)", bbox_shift)
        self.backend = create_backend(backend)
        self.version = version
        self.bbox_shift = int(bbox_shift)
        self.extra_margin = int(extra_margin)
        self.smooth = bool(smooth)
        self.tracker = FaceTracker(self.backend, face_index=face_index, detect_size=detect_size)
        self.filter = OneEuroFilter(rate_hz=fps, min_cutoff_hz=min_cutoff_hz, beta=beta)
        self.keep_identity = bool(keep_identity)
        self.max_gap = int(max_gap)
        self._last_landmarks: np.ndarray | None = None
        self._first_seen: tuple[np.ndarray, np.ndarray] | None = None
        self._identity: np.ndarray | None = None

    def reset(self) -> None:
        """Start a new clip: forget the followed face, its identity and the smoothing history."""
        self.tracker.reset()
        self.filter.reset()
        self._last_landmarks = None
        self._first_seen = None
        self._identity = None

    def analyze(self, frame: np.ndarray) -> FaceRecord:
        """Record of the next frame (uint8 (H, W, 3) RGB) of the current clip."""
        gray = _to_gray(frame)
        accept = (lambda box: self._is_followed_person(frame, gray, box)) if self.keep_identity else None
        det = self.tracker(gray, accept)
        if det is None:
            self.filter.reset()
            self._last_landmarks = None
            return FaceRecord.missing()
        landmarks = self.backend.landmarks(gray, det.box)
        if self._first_seen is None and self._identity is None:
            self._first_seen = (frame.copy(), landmarks)  # the reference identity, computed on the first loss
        if self.smooth:
            landmarks = self._smoothed(landmarks, float(det.box[3] - det.box[1]))
        return FaceRecord(found=True, box=det.box, landmarks=landmarks,
                          crop_box=self._crop_box(landmarks, det.box, frame.shape), score=det.score)

    def analyze_all(self, frames: Iterable[np.ndarray]) -> list[FaceRecord]:
        """One record per frame, in order, for a whole clip (resets first). Frames without a face get
        ``found=False`` and keep their place."""
        self.reset()
        records, shape = [], None
        for frame in frames:
            records.append(self.analyze(frame))
            shape = frame.shape
        if self.max_gap > 0 and shape is not None:
            records = interpolate_gaps(records, lambda lm, box: self._crop_box(lm, box, shape), self.max_gap)
        missing = sum(not r.found for r in records)
        if missing:
            log.info("%d of %d frames have no face and will be passed through", missing, len(records))
        lo, hi = bbox_shift_range(records)
        log.debug("useful bbox_shift range [%d, %d], current %d", lo, hi, self.bbox_shift)
        return records

    def gap_filler(self, frame_shape: tuple[int, ...]) -> GapFiller:
        """A :class:`GapFiller` for this analyzer's records of frames of ``frame_shape`` (H, W, 3): the short
        gaps of a stream interpolated as :meth:`analyze_all` does for a whole clip."""
        return GapFiller(lambda lm, box: self._crop_box(lm, box, frame_shape), self.max_gap)

    def _crop_box(self, landmarks: np.ndarray, box: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
        return crop_box_from_landmarks(landmarks, box, frame_shape, self.version, self.bbox_shift, self.extra_margin)

    def _is_followed_person(self, frame: np.ndarray, gray: np.ndarray, box: np.ndarray) -> bool:
        """Whether the face in ``box`` is the person followed since the start of the clip."""
        embed = shared_embedder()
        if self._identity is None:
            if self._first_seen is None:
                return True
            self._identity = embed(*self._first_seen)
            self._first_seen = None
        candidate = embed(frame, self.backend.landmarks(gray, box))
        accepted = same_person(self._identity, candidate)
        if not accepted:
            log.debug("face at %s is another person: not followed", np.round(box).astype(int).tolist())
        return accepted

    def _smoothed(self, landmarks: np.ndarray, face_height: float) -> np.ndarray:
        if self._last_landmarks is not None:
            jump = np.linalg.norm(landmarks - self._last_landmarks, axis=1).mean()
            if jump > CUT_JUMP * face_height:
                self.filter.reset()
        self._last_landmarks = landmarks
        return self.filter(landmarks, scale=face_height)


def _to_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise FaceError(f"expected a uint8 (H, W, 3) RGB frame, got {frame.dtype} {frame.shape}")
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)

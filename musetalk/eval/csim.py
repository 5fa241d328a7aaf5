"""CSIM: cosine similarity of identity embeddings of source and generated faces, per frame, then averaged,
beside the descriptor distance and dlib's same-person verdict (distance < 0.6). The cosine alone misleads with
this embedding: different people score 0.80-0.84, the same person 0.99.

The embedding is dlib's ResNet face descriptor (:mod:`musetalk.face.identity`): a real pretrained identity
model that works offline.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..face.identity import SAME_PERSON_DISTANCE, DlibFaceEmbedder

__all__ = ["SAME_PERSON_DISTANCE", "DlibFaceEmbedder", "IdentityScore", "cosine_similarity", "identity_scores"]


@dataclass(frozen=True)
class IdentityScore:
    """Mean cosine similarity and mean Euclidean distance of paired descriptors, and the verdict."""

    cosine: float
    distance: float

    @property
    def same_person(self) -> bool:
        return self.distance < SAME_PERSON_DISTANCE


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

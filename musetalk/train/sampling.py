"""Reference-frame selection for training.

Selective Information Sampling (SIS, MuseTalk paper / official ``sample_method.py``): for a target frame d
of a clip of N frames and K = int(top_k_ratio x N),

* pose set  = the K frames (d excluded) whose jaw contour (iBUG points 0..15) is closest to d's,
* mouth set = the K frames whose inner lip (points 60..66) differs most from d's,

with landmarks expressed relative to each frame's own crop box and rescaled to 256x256, distances the
mean Euclidean point distance. The reference is a random frame of (pose set intersect mouth set),
excluding frames closer than ``min_gap`` to d. So the reference shows the same head pose (the UNet
learns where the face is) but a different mouth (it cannot copy the mouth: the audio must drive it).

Fallback (documented choice, as the official code): when that set is empty, a random frame within
+-5 x n_sample_frames of d that is at least ``min_gap`` away; if the clip is too short for that, any
other frame. ``random_reference`` is the ablation baseline (any frame at least ``min_gap`` away).
"""
from __future__ import annotations

import numpy as np

JAW = slice(0, 16)
INNER_LIP = slice(60, 67)
CROP = 256.0


def normalize_landmarks(landmarks: np.ndarray, crop_boxes: np.ndarray) -> np.ndarray:
    """Landmarks (N, 68, 2) in frame pixels and crop boxes (N, 4) x1,y1,x2,y2 -> (N, 68, 2) float32
    in the 256x256 crop's pixels."""
    boxes = crop_boxes.astype(np.float32)
    origin = boxes[:, None, :2]
    size = np.maximum(boxes[:, None, 2:] - boxes[:, None, :2], 1.0)
    return ((landmarks.astype(np.float32) - origin) / size * CROP).astype(np.float32)


def _mean_point_distance(points: np.ndarray, target: int) -> np.ndarray:
    """(N, P, 2) -> (N,) mean Euclidean distance of each frame's points to frame ``target``'s."""
    return np.linalg.norm(points - points[target], axis=-1).mean(axis=-1)


def sis_candidates(normalized: np.ndarray, target: int, top_k_ratio: float = 0.51) -> np.ndarray:
    """Sorted frame indices in (K closest jaw poses) intersect (K most different inner lips), d excluded."""
    n = len(normalized)
    k = int(top_k_ratio * n)
    others = np.array([i for i in range(n) if i != target])
    if k <= 0 or len(others) == 0:
        return np.zeros(0, np.int64)
    pose = _mean_point_distance(normalized[:, JAW], target)[others]
    mouth = _mean_point_distance(normalized[:, INNER_LIP], target)[others]
    pose_set = others[np.argsort(pose, kind="stable")[:k]]
    mouth_set = others[np.argsort(-mouth, kind="stable")[:k]]
    return np.intersect1d(pose_set, mouth_set)


def _far_enough(candidates: np.ndarray, target: int, min_gap: int) -> np.ndarray:
    return candidates[np.abs(candidates - target) >= min_gap]


def fallback_reference(n: int, target: int, rng: np.random.Generator, n_sample_frames: int = 1, min_gap: int = 5) -> int:
    """A random frame within +-5 x n_sample_frames of ``target`` at least ``min_gap`` away (any other
    frame when none qualifies; ``target`` itself only for a one-frame clip)."""
    radius = 5 * n_sample_frames
    window = np.arange(max(0, target - radius), min(n, target + radius + 1))
    pool = _far_enough(window, target, min_gap)
    if len(pool) == 0:
        pool = np.array([i for i in range(n) if i != target]) if n > 1 else np.array([target])
    return int(rng.choice(pool))


def sis_reference(normalized: np.ndarray, target: int, rng: np.random.Generator, top_k_ratio: float = 0.51,
                  n_sample_frames: int = 1, min_gap: int = 5) -> int:
    """SIS reference frame index for ``target`` (see module docstring)."""
    pool = _far_enough(sis_candidates(normalized, target, top_k_ratio), target, min_gap)
    if len(pool):
        return int(rng.choice(pool))
    return fallback_reference(len(normalized), target, rng, n_sample_frames, min_gap)


def random_reference(n: int, target: int, rng: np.random.Generator, min_gap: int = 5) -> int:
    """Ablation baseline: a uniformly random frame at least ``min_gap`` from ``target``."""
    pool = _far_enough(np.arange(n), target, min_gap)
    if len(pool) == 0:
        return fallback_reference(n, target, rng, 1, min_gap)
    return int(rng.choice(pool))

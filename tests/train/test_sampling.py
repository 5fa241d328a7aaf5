"""Selective Information Sampling on landmarks where the right answer is known."""
import numpy as np
import pytest

from musetalk.train.sampling import (fallback_reference, normalize_landmarks, random_reference, sis_candidates,
                                     sis_reference)
from musetalk.train.synthetic import template_landmarks


def two_poses_two_mouths() -> np.ndarray:
    """20 frames: 0..9 pose A, 10..19 pose B (jaw shifted 40 px, more for later frames); even frames
    mouth open (20 px), odd closed."""
    frames = []
    for i in range(20):
        yaw = 0.0 if i < 10 else 40.0 + (i - 10)
        frames.append(template_landmarks(opening=20.0 if i % 2 == 0 else 0.0, yaw=yaw))
    return np.stack(frames)


def test_candidates_are_same_pose_different_mouth():
    lm = two_poses_two_mouths()
    # K = int(0.51 * 20) = 10: pose set = 9 other pose-A frames + frame 10; mouth set = the 10 closed frames.
    assert sis_candidates(lm, 0).tolist() == [1, 3, 5, 7, 9]
    # Target 13 (pose B, closed): pose set = 9 other pose-B frames + the first pose-A frame (ties keep index
    # order), mouth set = the 10 open frames; frame 0 is in both.
    assert sis_candidates(lm, 13).tolist() == [0, 10, 12, 14, 16, 18]


def test_reference_respects_min_gap_and_is_deterministic_per_seed():
    lm = two_poses_two_mouths()
    picks = {sis_reference(lm, 0, np.random.default_rng(s)) for s in range(50)}
    assert picks == {5, 7, 9}  # 1 and 3 are closer than 5 frames
    a = [sis_reference(lm, 4, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(a)) == 1


def test_fallback_when_intersection_empty():
    # K = int(0.01 * 20) = 0: both sets are empty, so the fallback must answer.
    lm = two_poses_two_mouths()
    assert sis_candidates(lm, 0, top_k_ratio=0.01).size == 0
    rng = np.random.default_rng(0)
    picks = {sis_reference(lm, 10, rng, top_k_ratio=0.01, n_sample_frames=1) for _ in range(100)}
    assert picks <= {5, 15} and picks  # within +-5 of 10, at least 5 away
    assert fallback_reference(1, 0, rng) == 0


def test_random_baseline_and_normalisation():
    rng = np.random.default_rng(0)
    picks = {random_reference(20, 10, rng) for _ in range(300)}
    assert picks == set(range(0, 6)) | set(range(15, 20))
    lm = np.array([[[110.0, 60.0]] * 68])
    norm = normalize_landmarks(lm, np.array([[100, 50, 150, 150]]))
    np.testing.assert_allclose(norm[0, 0], [51.2, 25.6])


@pytest.mark.parametrize("target", [0, 7, 19])
def test_reference_never_target(target):
    lm = two_poses_two_mouths()
    rng = np.random.default_rng(1)
    assert all(sis_reference(lm, target, rng) != target for _ in range(20))

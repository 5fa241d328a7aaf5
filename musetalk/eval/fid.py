"""FID (Heusel et al. 2017): Frechet distance of Gaussians fitted to Inception features of two image sets,
computed as pytorch-fid does (float64, scipy ``sqrtm``, a small diagonal offset when the product is singular)."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from ..errors import MuseTalkError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GaussianStats:
    """Mean float64 (D,) and covariance float64 (D, D) of a feature set."""

    mu: np.ndarray
    sigma: np.ndarray


def feature_stats(features: np.ndarray) -> GaussianStats:
    """float (N, D) features, N >= 2 -> their mean and unbiased covariance."""
    if len(features) < 2:
        raise MuseTalkError(f"FID needs at least 2 face crops per set, got {len(features)}")
    features = np.asarray(features, dtype=np.float64)
    return GaussianStats(features.mean(axis=0), np.cov(features, rowvar=False))


def frechet_distance(a: GaussianStats, b: GaussianStats, eps: float = 1e-6) -> float:
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    diff = a.mu - b.mu
    with warnings.catch_warnings():  # fewer samples than dimensions: singular covariances are expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(a.sigma @ b.sigma)
        if not np.isfinite(covmean).all():
            log.debug("FID: singular covariance product, adding %g to the diagonals", eps)
            offset = np.eye(len(a.mu)) * eps
            covmean = linalg.sqrtm((a.sigma + offset) @ (b.sigma + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean))


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets float (N, D) and (M, D)."""
    return frechet_distance(feature_stats(a), feature_stats(b))

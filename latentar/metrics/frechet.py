"""Frechet distance between two Gaussians, the statistic behind FID (Heusel et al. 2017).

    FD = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

computed in float64 with ``scipy.linalg.sqrtm``, following pytorch-fid's ``calculate_frechet_
distance``: if the matrix square root is not finite (singular product), both covariances get
``eps * I`` added; a small imaginary residue of ``sqrtm`` is dropped, a large one is an error.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg



def _as_f64(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; check the features it was computed from")
    return arr


def _sqrtm(a: np.ndarray) -> np.ndarray:
    # scipy warns on singular input; the caller checks finiteness and the imaginary part itself.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return linalg.sqrtm(a)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, imag_tol: float = 1e-3) -> float:
    """FD between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Args:
        mu1, mu2: means ``(D,)`` (a scalar is read as ``D = 1``).
        sigma1, sigma2: covariances ``(D, D)`` (a scalar is read as a 1x1 variance).
        eps: ridge added to both covariances when ``sqrtm(S1 S2)`` is not finite.
        imag_tol: largest tolerated |imaginary part| on the diagonal of the square root.
    """
    mu1, mu2 = np.atleast_1d(_as_f64(mu1, "mu1")), np.atleast_1d(_as_f64(mu2, "mu2"))
    s1, s2 = np.atleast_2d(_as_f64(sigma1, "sigma1")), np.atleast_2d(_as_f64(sigma2, "sigma2"))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be vectors of the same length, got shapes {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must be a ({d}, {d}) covariance to match the means, got shape {s.shape}")
        if not np.allclose(s, s.T, rtol=1e-5, atol=1e-8 * max(1.0, float(np.abs(s).max()))):
            raise ValueError(f"{name} is not symmetric; pass a covariance matrix (e.g. from gaussian_stats)")

    diff = mu1 - mu2
    covmean = _sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = _sqrtm((s1 + offset) @ (s2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError(f"sqrtm(sigma1 @ sigma2) is not finite even with eps = {eps:g} added; "
                             "the covariances are degenerate: use more samples or fewer feature dimensions")
    if np.iscomplexobj(covmean):
        imag = float(np.abs(np.diagonal(covmean).imag).max())
        if imag > imag_tol:
            raise ValueError(f"sqrtm(sigma1 @ sigma2) has an imaginary component of {imag:.3g} (> {imag_tol:g}): "
                             "the covariances are not positive semi-definite or are badly conditioned")
        covmean = covmean.real
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    # Round-off can leave a tiny negative number for (near-)identical Gaussians.
    scale = float(np.trace(s1) + np.trace(s2) + diff @ diff) + 1e-12
    if fd < 0:
        if fd < -1e-6 * scale:
            raise ValueError(f"Frechet distance came out negative ({fd:.3g}); are the covariances positive semi-definite?")
        fd = 0.0
    return fd


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(F,)`` and unbiased covariance ``(F, F)`` (float64) of ``features (N, F)``, N >= 2."""
    x = _as_f64(features, "features")
    if x.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {x.shape}; flatten per-sample features first")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 samples to estimate a covariance, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance_from_features(a, b, eps: float = 1e-6) -> float:
    """FD between Gaussians fitted to ``a (N, F)`` and ``b (M, F)``.

    FD is biased upwards for small N: compare numbers computed with the same sample sizes.
    """
    mu1, s1 = gaussian_stats(a)
    mu2, s2 = gaussian_stats(b)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    return frechet_distance(mu1, s1, mu2, s2, eps=eps)

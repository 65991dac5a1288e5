"""Toy distributions with exact densities, for checks that need the true answer.

* ``ring_of_gaussians``: K equal-weight isotropic Gaussians at angles ``2 pi k / K`` on a circle of
  radius ``r``; ``log p(x) = logsumexp_k [log N(x; mu_k, std^2 I)] - log K``.
* ``correlated_gaussian_2d``: zero-mean 2-D Gaussian with unit variances and correlation ``rho``.
* ``length2_joint``: a joint table ``P(x1, x2)`` over K symbols for the Huszar (2015) argument:
  teacher forcing recovers ``P(x1, x2)``, while fully annealed scheduled sampling (x2 predicted
  from the model's own x1 sample, target still the data's x2) is minimized by the product of the
  marginals ``P(x1) P(x2)``. With ``P(x1) = first`` (uniform by default) and
  ``P(x2 = x1 | x1) = p_equal``, the other K-1 symbols sharing ``1 - p_equal`` equally.
All functions return torch tensors (float32 samples, float64 tables and densities).
"""
from __future__ import annotations

import math

import torch


# ---- ring of Gaussians ------------------------------------------------------------------------
def ring_means(num_modes: int = 8, radius: float = 2.0) -> torch.Tensor:
    """The K mode centres ``(K, 2)``: ``radius * (cos 2 pi k / K, sin 2 pi k / K)``."""
    if num_modes < 1:
        raise ValueError(f"num_modes must be >= 1, got {num_modes}")
    angles = 2 * math.pi * torch.arange(num_modes, dtype=torch.float64) / num_modes
    return radius * torch.stack([angles.cos(), angles.sin()], dim=-1)


def ring_of_gaussians(n: int, num_modes: int = 8, radius: float = 2.0, std: float = 0.2,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples ``(n, 2)`` float32 from the ring mixture (mode drawn uniformly, then Gaussian)."""
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}")
    modes = torch.randint(0, num_modes, (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (ring_means(num_modes, radius)[modes] + std * noise).float()


def ring_of_gaussians_log_prob(x: torch.Tensor, num_modes: int = 8, radius: float = 2.0,
                               std: float = 0.2) -> torch.Tensor:
    """Exact log-density (nats) of points ``x (..., 2)`` under the ring; returns ``(...)`` float64."""
    if x.shape[-1] != 2:
        raise ValueError(f"expected points of shape (..., 2), got {tuple(x.shape)}")
    x = x.to(torch.float64)
    d2 = ((x.unsqueeze(-2) - ring_means(num_modes, radius).to(x.device)) ** 2).sum(-1)  # (..., K)
    log_comp = -d2 / (2 * std**2) - math.log(2 * math.pi * std**2)
    return torch.logsumexp(log_comp, dim=-1) - math.log(num_modes)


def ring_of_gaussians_density(x: torch.Tensor, num_modes: int = 8, radius: float = 2.0,
                              std: float = 0.2) -> torch.Tensor:
    """Exact density ``p(x)`` of the ring, ``(...)`` float64."""
    return ring_of_gaussians_log_prob(x, num_modes, radius, std).exp()


# ---- correlated Gaussian ----------------------------------------------------------------------
def correlated_gaussian_cov(rho: float) -> torch.Tensor:
    """``[[1, rho], [rho, 1]]`` float64."""
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must lie in (-1, 1) for a proper density, got {rho}")
    return torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)


def correlated_gaussian_2d(n: int, rho: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples ``(n, 2)`` float32 of ``N(0, [[1, rho], [rho, 1]])``: ``x2 = rho x1 + sqrt(1 - rho^2) e``."""
    correlated_gaussian_cov(rho)  # validates rho
    z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    x2 = rho * z[:, 0] + math.sqrt(1 - rho**2) * z[:, 1]
    return torch.stack([z[:, 0], x2], dim=-1).float()


def correlated_gaussian_2d_log_prob(x: torch.Tensor, rho: float) -> torch.Tensor:
    """Exact log-density of ``x (..., 2)``: ``-(x1^2 - 2 rho x1 x2 + x2^2) / (2 (1 - rho^2)) - log(2 pi sqrt(1 - rho^2))``."""
    correlated_gaussian_cov(rho)
    x = x.to(torch.float64)
    x1, x2 = x[..., 0], x[..., 1]
    q = (x1**2 - 2 * rho * x1 * x2 + x2**2) / (1 - rho**2)
    return -0.5 * q - math.log(2 * math.pi * math.sqrt(1 - rho**2))


# ---- length-2 discrete sequences (Huszar 2015) ------------------------------------------------
def length2_joint(num_symbols: int = 4, p_equal: float = 0.9, first: torch.Tensor | None = None) -> torch.Tensor:
    """Joint table ``P[a, b] = P(x1 = a, x2 = b)``, ``(K, K)`` float64, summing to 1.

    ``P(x1) = first`` (uniform if None); ``P(x2 = x1 | x1) = p_equal``; each other symbol gets
    ``(1 - p_equal) / (K - 1)``.
    """
    k = int(num_symbols)
    if k < 2:
        raise ValueError(f"num_symbols must be >= 2, got {num_symbols}")
    if not 0.0 <= p_equal <= 1.0:
        raise ValueError(f"p_equal is a probability, got {p_equal}")
    if first is None:
        p1 = torch.full((k,), 1.0 / k, dtype=torch.float64)
    else:
        p1 = torch.as_tensor(first, dtype=torch.float64)
        if p1.shape != (k,) or (p1 < 0).any() or abs(float(p1.sum()) - 1.0) > 1e-9:
            raise ValueError(f"first must be a probability vector of shape ({k},), got {p1.tolist()}")
    cond = torch.full((k, k), (1.0 - p_equal) / (k - 1), dtype=torch.float64)
    cond.fill_diagonal_(p_equal)
    return p1[:, None] * cond


def _check_joint(joint: torch.Tensor) -> torch.Tensor:
    joint = torch.as_tensor(joint, dtype=torch.float64)
    if joint.ndim != 2 or joint.shape[0] != joint.shape[1]:
        raise ValueError(f"expected a square (K, K) joint table, got shape {tuple(joint.shape)}")
    if (joint < 0).any() or abs(float(joint.sum()) - 1.0) > 1e-6:
        raise ValueError(f"joint table must be non-negative and sum to 1 (sums to {float(joint.sum()):.6g})")
    return joint


def joint_marginals(joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P(x1), P(x2))``: row sums and column sums of the table."""
    joint = _check_joint(joint)
    return joint.sum(1), joint.sum(0)


def product_of_marginals(joint: torch.Tensor) -> torch.Tensor:
    """``Q[a, b] = P(x1 = a) P(x2 = b)``: the optimum of fully annealed scheduled sampling."""
    p1, p2 = joint_marginals(joint)
    return p1[:, None] * p2[None, :]


def sample_length2(joint: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` sequences ``(n, 2)`` int64 drawn from the joint table."""
    joint = _check_joint(joint)
    k = joint.shape[0]
    flat = torch.multinomial(joint.flatten(), n, replacement=True, generator=generator)
    return torch.stack([flat // k, flat % k], dim=-1)

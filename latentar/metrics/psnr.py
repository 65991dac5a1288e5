"""Peak signal-to-noise ratio for image reconstructions: ``PSNR = 10 log10(R^2 / MSE)`` dB, where
``R`` is the data range (2 for images scaled to [-1, 1]); MSE is taken per example, and
``reduction="mean"`` averages the per-example PSNRs.
"""
from __future__ import annotations

import torch


def psnr(x: torch.Tensor, x_hat: torch.Tensor, data_range: float = 2.0, reduction: str = "mean",
         eps: float = 1e-12) -> float | torch.Tensor:
    """PSNR (dB) of ``x_hat`` against ``x``, both ``(B, ...)``; ``reduction="none"`` -> ``(B,)``."""
    if x.shape != x_hat.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} must have the same shape")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    mse = ((x.double() - x_hat.double()) ** 2).reshape(x.shape[0], -1).mean(-1)
    per = 10 * torch.log10(data_range**2 / (mse + eps))
    if reduction == "mean":
        return float(per.mean())
    if reduction == "none":
        return per.float()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")

"""MSEHead: regression to the conditional mean, the baseline that oversmooths.

    mu(c) = W c + b (or a one-hidden-layer MLP),   loss = ||x - mu(c)||^2 (summed over dim)

The minimiser of the expected squared error is E[x | c]. When p(x | c) is multimodal, E[x | c]
lies between the modes, often where the data has no mass (for a ring of Gaussians: the origin),
and ``sample`` can only return that mean: there is no noise to inject, so ``temperature`` is
accepted for interface compatibility and ignored. Repeated sampling gives zero variance.

Classifier-free guidance, ``cfg_scale = s``: mu_u + s (mu_c - mu_u), the extrapolation of the
mean (the mean of the density-guided pair of unit Gaussians N(mu_c, I)^s N(mu_u, I)^(1-s)).
"""
from __future__ import annotations

import torch
from torch import nn

from latentar.heads.base import Head
from latentar.pretrained import register_to_config


class MSEHead(Head):
    """Deterministic head predicting E[x | c]. See the module docstring.

    Args:
        dim: token dimension.
        cond_dim: backbone state dimension.
        hidden: width of one SiLU hidden layer; None for a linear map.
    """

    @register_to_config
    def __init__(self, dim: int, cond_dim: int, hidden: int | None = None):
        super().__init__(dim, cond_dim)
        if hidden is not None and (not isinstance(hidden, int) or hidden < 1):
            raise ValueError(f"MSEHead: hidden must be None or a positive int, got {hidden!r}")
        if hidden is None:
            self.net = nn.Linear(cond_dim, dim)
        else:
            self.net = nn.Sequential(nn.Linear(cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def mean(self, cond: torch.Tensor) -> torch.Tensor:
        """Predicted conditional mean: cond (B, T, cond_dim) -> (B, T, dim)."""
        c, lead = self._flatten_cond(cond)
        return self.net(c).reshape(*lead, self.dim)

    def loss(self, cond: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-token squared error ||x - mu(c)||^2 summed over dim: -> (B, T) (or (N,))."""
        c, lead = self._flatten_cond(cond)
        x = self._flatten_target(target, lead)
        err = (self.net(c).float() - x.float()).pow(2).sum(-1)
        return err.reshape(lead)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None,
               cond_uncond: torch.Tensor | None = None, cfg_scale: float = 1.0) -> torch.Tensor:
        """The conditional mean (or its guided extrapolation): -> (B, T, dim).

        ``temperature`` and ``generator`` are ignored (no randomness); they exist so every head
        can be called the same way.
        """
        self._check_temperature("temperature", temperature)
        c, lead = self._flatten_cond(cond)
        u = self._flatten_uncond(cond, cond_uncond, cfg_scale)
        mu = self.net(c)
        if u is not None:
            mu_u = self.net(u)
            mu = mu_u + cfg_scale * (mu - mu_u)
        return mu.reshape(*lead, self.dim)

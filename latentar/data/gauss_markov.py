"""A known continuous generating process, and an exact (or deliberately biased) model of it.

What: a stationary Gauss-Markov sequence of latents ``z (T, D)``:

    z_0 ~ N(0, I),     z_t = a R z_{t-1} + sqrt(1 - a^2) eps_t,   eps_t ~ N(0, I)

with R a rotation by ``theta`` in each coordinate pair (R R^T = I), so every z_t is N(0, I) and the
true conditional is p(z_t | z_{<t}) = N(a R z_{t-1}, (1 - a^2) I).

Why: it calibrates the exposure meter. :class:`GaussMarkovModel` implements the sequence-model
protocol with the true conditional (``bias = 0``, ``gain = 1``): its samples under its own prefixes
have the data's distribution at every position, so its exposure curve is flat. With a bias b the
one-step error is the same under any prefix, but under its own prefixes the mean drifts,
m_t = gain a R m_{t-1} + b, i.e. ``|m_t|`` grows towards ``|b| / (1 - gain a)`` (for theta = 0):
the compounding that teacher forcing never sees. It is also the toy dataset of
``recipes/exposure_compare.py`` when no tokenizer is given.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class GaussMarkov:
    """The process above. ``sample(n) -> (n, length, dim)`` float32."""

    def __init__(self, dim: int = 4, length: int = 16, a: float = 0.9, theta: float = 0.5):
        if dim < 1 or length < 1:
            raise ValueError(f"dim and length must be >= 1, got {dim}, {length}")
        if not 0.0 <= a < 1.0:
            raise ValueError(f"a must lie in [0, 1) for a stationary process, got {a}")
        self.dim, self.length, self.a, self.theta = int(dim), int(length), float(a), float(theta)

    def transition(self) -> torch.Tensor:
        """``A = a R`` (D, D) float64: R rotates coordinate pairs (0, 1), (2, 3), ... by theta."""
        R = torch.eye(self.dim, dtype=torch.float64)
        c, s = math.cos(self.theta), math.sin(self.theta)
        for i in range(0, self.dim - 1, 2):
            R[i:i + 2, i:i + 2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        return self.a * R

    @property
    def noise_std(self) -> float:
        return math.sqrt(1.0 - self.a ** 2)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        A = self.transition()
        eps = torch.randn(n, self.length, self.dim, generator=generator, dtype=torch.float64)
        z = torch.empty_like(eps)
        z[:, 0] = eps[:, 0]
        for t in range(1, self.length):
            z[:, t] = z[:, t - 1] @ A.T + self.noise_std * eps[:, t]
        return z.float()


class GaussMarkovModel(nn.Module):
    """The true conditional of a :class:`GaussMarkov` process (``bias=0, gain=1``) or a biased copy,
    behind the sequence-model protocol (``loss``, ``predict_parallel``, ``generate``).

    p(z_0) = N(b, I),   p(z_t | z_{<t}) = N(gain * A z_{t-1} + b, (1 - a^2) I)

    Args:
        process: the process it models.
        bias: b, added to every predicted mean (a float: the same on every channel).
        gain: multiplies the transition (gain != 1: a wrong memory).
    """

    def __init__(self, process: GaussMarkov, bias: float = 0.0, gain: float = 1.0):
        super().__init__()
        self.process = process
        self.latent_dim, self.max_len = process.dim, process.length
        self.register_buffer("A", (gain * process.transition()).float())
        self.bias, self.gain = float(bias), float(gain)
        self.num_backbone_calls = 0

    def _mean_std(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, T, D) and std (1, T, 1) of every position given ``context[:, :t]``."""
        self.num_backbone_calls += 1
        B, T, D = context.shape
        prev = torch.cat([torch.zeros_like(context[:, :1]), context[:, :-1]], dim=1)  # (B, T, D)
        mean = prev @ self.A.T + self.bias
        std = torch.full((1, T, 1), self.process.noise_std, device=context.device, dtype=context.dtype)
        std[:, 0] = 1.0
        return mean, std

    def loss(self, z: torch.Tensor, labels=None, context: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
        """Exact Gaussian NLL (nats) of targets z (B, T, D) given ``context`` (default z)."""
        mean, std = self._mean_std(z if context is None else context)
        nll = (0.5 * ((z - mean) / std) ** 2 + std.log() + 0.5 * math.log(2 * math.pi)).sum(-1)  # (B, T)
        return {"mean": nll.mean, "sum": nll.sum, "none": lambda: nll}[reduction]()

    @torch.no_grad()
    def predict_parallel(self, z: torch.Tensor, labels=None, temperature: float = 1.0,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        mean, std = self._mean_std(z)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + temperature * std * eps

    @torch.no_grad()
    def generate(self, batch_size: int, length: int, labels=None, temperature: float = 1.0,
                 reference: torch.Tensor | None = None, use_reference: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sequential sampling (one step per position); ``reference`` is fed where ``use_reference``."""
        device = self.A.device
        out = torch.empty(batch_size, length, self.latent_dim, device=device)
        prev = torch.zeros(batch_size, self.latent_dim, device=device)
        for t in range(length):
            self.num_backbone_calls += 1
            std = 1.0 if t == 0 else self.process.noise_std
            mean = (prev @ self.A.T if t > 0 else torch.zeros_like(prev)) + self.bias
            eps = torch.randn(mean.shape, generator=generator, device=device)
            token = mean + temperature * std * eps
            if reference is not None:
                use = torch.ones(batch_size, dtype=torch.bool, device=device) if use_reference is None \
                    else use_reference[:, t].to(device)
                token = torch.where(use[:, None], reference[:, t].to(device, token.dtype), token)
            out[:, t] = token
            prev = token
        return out

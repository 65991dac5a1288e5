"""SigmaVAE: a VAE whose posterior variance is fixed noise, not learned (LatentLM sec. 2.3).

The encoder predicts only the mean mu (exactly ``latent_dim`` output channels; no parameter of
the model produces a variance, so variance collapse cannot happen and C_sigma is the knob).
During training each example b draws one scalar

    s_b ~ N(0, (C_sigma / 0.8)^2),      z_b = mu_b + s_b * eps_b,   eps_b ~ N(0, I) on every channel

(0.8 ~ sqrt(2 / pi), so E|s_b| ~ C_sigma: the convention of LatentLM's ``modeling_sigma_vae.py``
and VibeVoice's acoustic tokenizer, which samples ``randn(B) * fix_std / 0.8``), and

    loss = reconstruction(decode(z), x) + beta * mean(mu^2)

(LatentLM's "kl" term is ``mse(mu, 0)``; defaults there: latent dim 16, C_sigma 0.75, weight 1e-2;
VibeVoice: 64 dims, fix_std 0.5). The decoder thus learns to tolerate isotropic perturbations of
its input of about C_sigma, which is what an AR model's sampling errors look like.

Convention: s is drawn on the *unscaled* mu (the encoder output, whose size beta * mean(mu^2)
pins down), as in LatentLM; ``sample_posterior`` on scaled latents ``mu / latent_std`` adds
``s * eps / latent_std``, the same perturbation seen through the scale factor.

With ``c_sigma = 0`` nothing is drawn (no random numbers are consumed), so training is exactly
that of ``AE(beta=beta)``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from latentar.pretrained import register_to_config
from latentar.tokenizers.base import LatentTokenizer

SIGMA_TO_STD = 1.0 / 0.8  # s ~ N(0, (C_sigma * SIGMA_TO_STD)^2)


class SigmaVAE(LatentTokenizer):
    """Fixed-noise VAE tokenizer; see the module docstring. Arguments as ``LatentTokenizer`` plus:

    Args:
        c_sigma: C_sigma >= 0; the per-example noise scale has std ``c_sigma / 0.8``.
        beta: weight of ``mean(mu^2)`` (default 1e-2, LatentLM's).
    """

    @register_to_config
    def __init__(self, modality: str = "image", in_channels: int = 1, latent_dim: int = 4, c_sigma: float = 0.5,
                 beta: float = 1e-2, sample_for_training: bool = True, *,
                 channels: Sequence[int] | None = None, strides: Sequence[int] | None = None,
                 res_blocks: int = 1, causal: bool = False, sample_rate: int = 24000,
                 recon_loss: str | None = None, mel_weight: float = 1.0,
                 mel_n_ffts: Sequence[int] = (256, 512, 1024)):
        super().__init__(modality, in_channels, latent_dim, channels=channels, strides=strides,
                         res_blocks=res_blocks, causal=causal, sample_rate=sample_rate, recon_loss=recon_loss,
                         mel_weight=mel_weight, mel_n_ffts=mel_n_ffts, beta=beta,
                         sample_for_training=sample_for_training)
        if not (math.isfinite(c_sigma) and c_sigma >= 0):
            raise ValueError(f"c_sigma must be a finite number >= 0, got {c_sigma}")
        self.c_sigma = float(c_sigma)
        self.register_to_config(c_sigma=self.c_sigma)

    @property
    def noise_std(self) -> float:
        """Std of the per-example scale s, in raw latent units: C_sigma / 0.8."""
        return self.c_sigma * SIGMA_TO_STD

    def _noise_raw(self, mu: torch.Tensor, logvar: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor | None:
        """s * eps with s: (B,) ~ N(0, (C_sigma / 0.8)^2) broadcast over every channel and position."""
        if self.c_sigma == 0:
            return None
        B = mu.shape[0]
        s = torch.randn(B, generator=generator, device=mu.device, dtype=torch.float32) * self.noise_std
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=torch.float32)
        return (s.view(B, *([1] * (mu.dim() - 1))) * eps).to(mu.dtype)

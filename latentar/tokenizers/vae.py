"""VAE baseline: learned diagonal Gaussian posterior, KL weight beta (GIVT's knob).

Same networks as ``SigmaVAE`` except that the encoder emits ``2 * latent_dim`` channels: the mean
and the log-variance (clamped to [-30, 20], as Stable Diffusion's ``DiagonalGaussianDistribution``).
Training uses the reparameterised sample z = mu + exp(logvar / 2) * eps and

    loss = reconstruction(decode(z), x) + beta * KL,   KL = mean over latent elements of
           0.5 * (mu^2 + exp(logvar) - 1 - logvar)      (nats per latent element, against N(0, I))

(Kingma & Welling 2014). Averaging per element (as the reconstruction is) makes beta independent
of the latent grid size. GIVT sweeps beta (higher: worse reconstruction, better AR sampling); a
learned variance can collapse towards the prior on channels the decoder ignores, which
``latent_report`` measures (per-channel KL).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from latentar.pretrained import register_to_config
from latentar.tokenizers.base import LatentTokenizer


class VAE(LatentTokenizer):
    """Gaussian VAE tokenizer; arguments as ``LatentTokenizer`` (``beta`` = KL weight, default 1e-3)."""

    stats_per_latent = 2

    @register_to_config
    def __init__(self, modality: str = "image", in_channels: int = 1, latent_dim: int = 4, beta: float = 1e-3,
                 sample_for_training: bool = True, *, channels: Sequence[int] | None = None,
                 strides: Sequence[int] | None = None, res_blocks: int = 1, causal: bool = False,
                 sample_rate: int = 24000, recon_loss: str | None = None, mel_weight: float = 1.0,
                 mel_n_ffts: Sequence[int] = (256, 512, 1024)):
        super().__init__(modality, in_channels, latent_dim, channels=channels, strides=strides,
                         res_blocks=res_blocks, causal=causal, sample_rate=sample_rate, recon_loss=recon_loss,
                         mel_weight=mel_weight, mel_n_ffts=mel_n_ffts, beta=beta,
                         sample_for_training=sample_for_training)

    def _noise_raw(self, mu: torch.Tensor, logvar: torch.Tensor | None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=torch.float32)
        return (torch.exp(0.5 * logvar.float()) * eps).to(mu.dtype)

    def _regularizer(self, mu: torch.Tensor, logvar: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        kl = kl_per_element(mu, logvar).mean()
        return self.beta * kl, {"kl": kl.detach()}


def kl_per_element(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per element, float32: 0.5 (mu^2 + e^logvar - 1 - logvar)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)

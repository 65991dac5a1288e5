"""AE baseline: a deterministic autoencoder with the SigmaVAE's networks and training code.

The posterior is a point mass at mu: ``sample_posterior(mu) == mu``, training decodes mu itself,

    loss = reconstruction(decode(mu), x) + beta * mean(mu^2)

with ``beta = 0`` by default (a plain AE; a positive beta keeps the latent scale bounded as the
SigmaVAE's penalty does). ``SigmaVAE(c_sigma=0, beta=b)`` trains exactly like ``AE(beta=b)``: the
decoder then never sees a perturbed latent, which is why an AE's decoder tolerates AR sampling
errors worst (see ``latent_report``'s decoder-tolerance curve).
"""
from __future__ import annotations

from collections.abc import Sequence

from latentar.pretrained import register_to_config
from latentar.tokenizers.base import LatentTokenizer


class AE(LatentTokenizer):
    """Deterministic autoencoder; arguments as ``LatentTokenizer`` (``beta`` weights mean(mu^2), default 0)."""

    ignore_for_config = ["sample_for_training"]  # fixed False here, not an argument of AE

    @register_to_config
    def __init__(self, modality: str = "image", in_channels: int = 1, latent_dim: int = 4, beta: float = 0.0, *,
                 channels: Sequence[int] | None = None, strides: Sequence[int] | None = None,
                 res_blocks: int = 1, causal: bool = False, sample_rate: int = 24000,
                 recon_loss: str | None = None, mel_weight: float = 1.0,
                 mel_n_ffts: Sequence[int] = (256, 512, 1024)):
        super().__init__(modality, in_channels, latent_dim, channels=channels, strides=strides,
                         res_blocks=res_blocks, causal=causal, sample_rate=sample_rate, recon_loss=recon_loss,
                         mel_weight=mel_weight, mel_n_ffts=mel_n_ffts, beta=beta, sample_for_training=False)

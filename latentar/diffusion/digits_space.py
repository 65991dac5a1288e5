"""Where a digits diffusion model lives: pixel space, or the latent space of a saved tokenizer.

* ``"pixel"``: the 8x8 images in [-1, 1], ``(N, 1, 8, 8)``; samples are clamped to [-1, 1].
* ``"latent"``: the posterior means ``tokenizer.encode(x)`` of a tokenizer saved with
  ``save_pretrained`` (SigmaVAE, VAE or AE; ``(N, latent_dim, 4, 4)`` with the default image
  network), already divided by the tokenizer's ``latent_std``; samples are decoded with
  ``tokenizer.decode`` and clamped to [-1, 1]. The means, not posterior draws: a diffusion model
  is a generator of whole latents, and one fixed draw per image would only add label noise.

Either way FD is computed on images (``latentar.metrics.digits_classifier.digits_fd``), so pixel
and latent runs are scored on the same scale.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from latentar.data.digits import load_digits

SPACES = ("pixel", "latent")


@dataclass
class DigitsSpace:
    """Training data and the way back to images for one space."""
    name: str
    train: Dataset                              # items: (x (C, H, W),)
    sample_shape: tuple[int, int, int]          # (C, H, W) of one sample
    clip_sample: bool                           # clip predicted x0 to [-1, 1] while sampling
    to_images: Callable[[torch.Tensor], torch.Tensor]   # (N, C, H, W) samples -> (N, 1, 8, 8) in [-1, 1]
    tokenizer: str | None = None


def load_image_tokenizer(path: str | Path, device: str | torch.device = "cpu"):
    """``latentar.tokenizers.load_tokenizer``, rejecting tokenizers that are not for images (digits are 8x8 images)."""
    from latentar.tokenizers import load_tokenizer  # here: pixel-space runs need not import torchaudio

    tok = load_tokenizer(path, device)
    if getattr(tok, "modality", "image") != "image":
        raise ValueError(f"--tokenizer {path} is an {tok.modality} tokenizer; digits need modality='image'")
    return tok


@torch.no_grad()
def digits_space(space: str = "pixel", tokenizer: str | Path | None = None,
                 device: str | torch.device = "cpu") -> DigitsSpace:
    """The digits train split in ``space``; ``tokenizer`` (a saved tokenizer's directory) for "latent"."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    images, _ = load_digits("train")
    if space == "pixel":
        if tokenizer is not None:
            raise ValueError("a tokenizer was given but space='pixel'; use space='latent' to train on its latents")
        return DigitsSpace("pixel", TensorDataset(images), (1, 8, 8), True, lambda x: x.clamp(-1.0, 1.0))
    if tokenizer is None:
        raise ValueError("space='latent' needs a saved tokenizer: pass --tokenizer DIR (a SigmaVAE.save_pretrained directory)")
    tok = load_image_tokenizer(tokenizer, device)
    z = torch.cat([tok.encode(images[i:i + 512].to(device)).float().cpu() for i in range(0, len(images), 512)])
    std = float(z.std())
    if not 0.2 < std < 5.0:
        warnings.warn(f"the tokenizer's latents have std {std:.3g}, far from 1: the diffusion schedule assumes "
                      "unit-scale data; call tokenizer.estimate_latent_scale(data) before save_pretrained")
    if z.shape[-1] % 2 or z.shape[-2] % 2:
        raise ValueError(f"the latent grid {tuple(z.shape[-2:])} must have even sides for the UNet's 2x downsampling")

    def to_images(samples: torch.Tensor) -> torch.Tensor:
        out = [tok.decode(samples[i:i + 512].to(device)).float().cpu() for i in range(0, len(samples), 512)]
        return torch.cat(out).clamp(-1.0, 1.0)

    return DigitsSpace("latent", TensorDataset(z), tuple(z.shape[1:]), False, to_images, str(Path(tokenizer)))

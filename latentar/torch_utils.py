"""Small torch helpers shared across the package."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def eval_mode(module: nn.Module):
    """Run a block with ``module.eval()`` and restore the previous train/eval mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def latent_batch(batch, who: str, latent_dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A latent model's Trainer batch -> ``(latents (B, T, D), labels or None)``: latents, ``(latents,)``
    (an unlabelled TensorDataset's batch) or ``(latents, labels)``; else a ValueError naming ``who``."""
    if torch.is_tensor(batch):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2) and all(torch.is_tensor(b) for b in batch):
        return batch[0], (batch[1] if len(batch) == 2 else None)
    raise ValueError(f"{who}.training_step expects a latent tensor (B, T, {latent_dim}), (latents,) or a "
                     f"(latents, labels) pair, got {type(batch).__name__}")


def draw_device(generator: torch.Generator | None, device: torch.device | str) -> torch.device:
    """Where to draw random numbers: the generator's own device, else ``device``. The one convention
    of every sampler and head: a CPU generator may drive a CUDA model (draw there, then move, as
    diffusers' ``randn_tensor``), so a seed gives the same samples on every device."""
    return torch.device(device) if generator is None else generator.device

"""Context noise: Gaussian noise on the context, clean targets.

    continuous latents:  c_t = x_t + sigma_ctx * eps_t,  eps_t ~ N(0, I)       L = - sum_t log p(x_t | c_{<t})
    tokens:              the context embeddings get  E c_t + sigma_ctx * std(E) * eps_t   (the model's
                         ``loss(x, context_noise=sigma_ctx)``; in units of the embedding table's std)

The training distribution of contexts is widened around the data, so an inference-time error
smaller than the noise lands inside what the model was trained on: the variance-shaping family
(LatentLM's sigma-VAE widens the latents themselves; input perturbation, Ning et al. 2023, perturbs
a diffusion model's inputs with gamma = 0.1 and keeps the eps target; NEFTune adds noise to
embeddings). Only trainable positions are noised (a prompt stays clean; it is given at inference).

Why the targets stay valid (``targets_valid = True``): isotropic noise carries no alternative
content, so x_t is still what should follow a noisy version of x_{<t}; the optimum is the data
conditional smoothed by the noise, which tends to the data conditional as sigma_ctx -> 0, never the
product of the marginals that scheduled sampling converges to (Huszar 2015). The noise level is a
budget: too large and the context stops carrying information (see ``latentar demo huszar``).
"""
from __future__ import annotations

import torch
from torch import nn

from latentar.exposure.base import Strategy, check_finite, make_batch, trainable_mask


class ContextNoise(Strategy):
    """Noisy context, clean targets; see the module docstring.

    Args:
        sigma_ctx: noise std (latents: absolute, in latent units; tokens: relative to the std of the
            embedding table, as ``CharLM.loss(context_noise=...)`` defines it).
    """

    name = "context_noise"
    targets_valid = True

    def __init__(self, sigma_ctx: float = 0.1):
        self.sigma_ctx = check_finite("sigma_ctx", sigma_ctx)

    def loss(self, model: nn.Module, x: torch.Tensor, progress: float = 0.0, labels: torch.Tensor | None = None,
             loss_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        b = make_batch(x, labels, loss_mask)
        kw = b.model_kwargs()
        if self.sigma_ctx == 0.0:
            return model.loss(b.x, **kw), {}
        if b.discrete:
            # per-position scale (B, T): sigma on trainable positions, 0 on the prompt / padding
            scale = self.sigma_ctx if b.loss_mask is None else self.sigma_ctx * b.loss_mask.to(torch.float32)
            return model.loss(b.x, context_noise=scale, **kw), {}
        noise = torch.randn_like(b.x) * self.sigma_ctx  # (B, T, D)
        if b.loss_mask is not None:
            noise = noise * trainable_mask(b.x, b.loss_mask).unsqueeze(-1).to(noise.dtype)
        return model.loss(b.x, context=b.x + noise, **kw), {}

"""Teacher forcing: every position is predicted from the ground-truth prefix.

    L_TF = - sum_t log p_theta(x_t | x_{<t})          (Williams & Zipser 1989)

This *is* autoregressive maximum likelihood: each conditional is fit under data prefixes, every
position is an independent supervised problem, and a Transformer scores all of them in one pass.
Its targets are valid by construction (the context is the data). The catch, exposure bias, is at
inference, where the conditionals are queried under the model's own prefixes; the exposure meter
(``latentar.exposure.meter``) measures it.
"""
from __future__ import annotations

import torch
from torch import nn

from latentar.exposure.base import Strategy, make_batch


class TeacherForcing(Strategy):
    """``model.loss(x)``: ground-truth context, ground-truth targets. The baseline of every comparison."""

    name = "teacher_forcing"
    targets_valid = True

    def loss(self, model: nn.Module, x: torch.Tensor, progress: float = 0.0, labels: torch.Tensor | None = None,
             loss_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        b = make_batch(x, labels, loss_mask)
        return model.loss(b.x, **b.model_kwargs()), {}

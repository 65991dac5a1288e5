"""Scheduled sampling, two-pass and parallel (Bengio et al. 2015; Transformers: Mihaylova & Martins 2019).

What: with probability p (a schedule over training progress, ``latentar.exposure.schedules``) each
context position is the model's own prediction instead of the ground truth; the targets stay the
ground truth:

    pass 1 (no grad):  s_t ~ p_theta(. | x_{<t})  for every t at once     (``predict_parallel``)
    mix:               c_t = s_t with probability p, else x_t              (one coin per position)
    pass 2:            L_SS = - sum_t log p_theta(x_t | c_{<t})            (``loss(x, context=c)``)

Continuous latents use head samples (GMM, diffusion); tokens use sampled (``mode="sample"``) or
argmax (``mode="argmax"``) tokens. With ``passes = n > 2`` pass 1 is iterated on its own mixed
output with the same coins (s^k_t ~ p(. | c^{k-1}_{<t}), c^k = mix(s^k, x)), so later positions see
model samples that were themselves conditioned on model samples, as at inference; after
``passes = T + 1`` the context is distributed exactly as the sequential, token-by-token
scheduled-sampling context. Pass 1 runs in eval mode (samples as at inference). Positions outside
the loss mask (a prompt) are never replaced. At p = 0 pass 1 is skipped: the loss and its gradients
are exactly teacher forcing's.

Why it is *not* target-valid (``targets_valid = False``): the target x_t was correct for the prefix
x_{<t}, not for the sampled prefix c_{<t}. Huszar (2015, "How (not) to train your generative
model", arXiv 1511.05101) shows the objective is improper: for length-2 sequences the fully
annealed optimum (p = 1) is the product of the marginals P(x1) P(x2), and the optimal model ignores
its prefix. ``latentar demo huszar`` shows it. Bengio et al. also found always-sampling to
perform very poorly; the schedules keep p below 1 for most of training.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from latentar.exposure.base import SeqBatch, Strategy, bernoulli_mask, check_finite, make_batch, mix, trainable_mask
from latentar.exposure.schedules import make_schedule
from latentar.torch_utils import eval_mode

MODES = ("sample", "argmax")


def predict_parallel(model: nn.Module, context: torch.Tensor, b: SeqBatch, mode: str = "sample",
                     temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """One protocol call: a prediction for every position of ``context`` from its prefix, no grad.

    Tokens: ``mode`` is passed on (sampled or argmax tokens). Latents: head samples; ``mode`` must
    be "sample" (a continuous head has no argmax; lower ``temperature`` instead).
    """
    kw: dict[str, Any] = {"temperature": temperature}
    if b.labels is not None:
        kw["labels"] = b.labels
    if generator is not None:
        kw["generator"] = generator
    if b.discrete:
        kw["mode"] = mode
    elif mode != "sample":
        raise ValueError(f"mode={mode!r} applies to tokens only; continuous latents use head samples "
                         f"(mode='sample', with a lower temperature for less noisy predictions)")
    with torch.no_grad(), eval_mode(model):
        return model.predict_parallel(context, **kw)


class ScheduledSampling(Strategy):
    """Two-pass scheduled sampling; see the module docstring for the formula and its caveat.

    Args:
        schedule: p over training progress: a name in ``schedules.SCHEDULES`` ("linear",
            "exponential", "inverse_sigmoid", "constant"), a probability (constant p), or a callable
            ``progress -> p``.
        schedule_kwargs: keyword arguments of the named schedule (e.g. ``{"end": 0.5}``, ``{"k": 0.01}``,
            ``{"c": 0.5, "b": 0.1}``, ``{"p": 1.0}``).
        mode: "sample" or "argmax" (tokens only) for the model's predictions.
        passes: total forward passes (>= 2): ``passes - 1`` prediction passes, then the training pass.
        temperature: sampling temperature of the predictions.
    """

    name = "scheduled_sampling"
    targets_valid = False

    def __init__(self, schedule: str | float | Callable[[float], float] = "linear",
                 schedule_kwargs: Mapping[str, Any] | None = None, mode: str = "sample", passes: int = 2,
                 temperature: float = 1.0):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if not isinstance(passes, int) or isinstance(passes, bool) or passes < 2:
            raise ValueError(f"passes must be an int >= 2 (one prediction pass + the training pass), got {passes!r}")
        temperature = check_finite("temperature", temperature)
        self.schedule = schedule
        self.schedule_kwargs = dict(schedule_kwargs or {})
        self._p = make_schedule(schedule, self.schedule_kwargs)
        self.mode, self.passes, self.temperature = mode, passes, temperature
        for progress in (0.0, 0.5, 1.0):  # a NaN or out-of-range schedule fails now, not mid-training
            self.probability(progress)

    def probability(self, progress: float) -> float:
        """p: the probability that a context position is the model's prediction."""
        p = float(self._p(progress))
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"the schedule {self.schedule!r} {self.schedule_kwargs or ''} returned p={p} at "
                             f"progress {progress}; a probability in [0, 1] is needed")
        return p

    def mixed_context(self, model: nn.Module, b: SeqBatch, p: float,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(context, replaced)``: the mixed context (x's shape) and the ``(B, T)`` bool coins that
        chose the model's prediction (only ever True at trainable positions)."""
        replaced = bernoulli_mask(tuple(b.x.shape[:2]), p, b.x.device, generator) & trainable_mask(b.x, b.loss_mask)
        context = b.x
        for _ in range(self.passes - 1):
            pred = predict_parallel(model, context, b, self.mode, self.temperature, generator)
            context = mix(replaced, pred, b.x)
        return context, replaced

    def loss(self, model: nn.Module, x: torch.Tensor, progress: float = 0.0, labels: torch.Tensor | None = None,
             loss_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        b = make_batch(x, labels, loss_mask)
        p = self.probability(progress)
        if p == 0.0:  # teacher forcing exactly: no prediction pass, no RNG drawn
            return model.loss(b.x, **b.model_kwargs()), {"ss_p": 0.0, "ss_share": 0.0}
        context, replaced = self.mixed_context(model, b, p)
        trainable = trainable_mask(b.x, b.loss_mask)
        share = replaced.sum() / trainable.sum().clamp(min=1)  # a device tensor: no host read per step
        return model.loss(b.x, context=context, **b.model_kwargs()), {"ss_p": p, "ss_share": share}

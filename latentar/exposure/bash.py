"""BASH, batch-scheduled sampling (Cen et al., TMLR 2025, arXiv 2410.14655, Algorithm 1): offline,
batched scheduled sampling.

What: between training iterations the current model rebuilds a pool D_s of mixed contexts from the
training data, sequentially with the KV cache (``generate(reference=y, use_reference=...)``):

    z^j ~ p_theta(. | x, g^{<j}),     g^j = z^j with probability beta, else y^j          (Eq. 4)

and every step after the SFT warm-up trains on

    J = J_SFT + J_BASH,   J_SFT = - sum_j log p(y^j | x, y^{<j})   (the batch),
                          J_BASH = - sum_j log p(y^j | x, g^{<j})  (a batch drawn from D_s).   (Eq. 5)

For latents y is ``(B, T, D)`` and z a head sample; for tokens ``(B, T)``; ``x`` is the prompt (the
positions outside the loss mask, always fed from the reference) or the class label. Warm-up:
``warmup_steps`` steps of J_SFT alone (a fresh model generates noise). Then the pool is regenerated
at the warm-up's end and every ``regen_every`` steps after it; the pool is part of the strategy's
state (``OfflinePoolStrategy.state_dict``), so a run resumed from a checkpoint keeps it and
regenerates on the same schedule. beta = 0.2 (the paper's value; its Remark 2: keep beta small).

Why offline: online scheduled sampling switches between training and token-by-token inference at
every step (20.8 s per global batch for pythia-1B in the paper's Table 8, against 0.9 s of
generation + 4.4 s of training for BASH). Here generation costs ``T`` cached backbone passes per
pool chunk, amortised over ``regen_every`` steps (``bench/exposure_cost.py``).

``targets_valid = False``: J_BASH keeps the target y^j under a context g^{<j} that may say
something else, scheduled sampling's improper objective (Huszar 2015); the paper notes the biased
estimator. J_SFT and a small beta dilute it, they do not remove it.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from torch import nn

from latentar.exposure.base import (OfflinePoolStrategy, SeqBatch, bernoulli_mask, check_finite, make_batch,
                                    model_device, rollout, trainable_mask)


class BASH(OfflinePoolStrategy):
    """Offline batch-scheduled sampling; see the module docstring for the objective and the schedule.

    Args:
        beta: probability that a trainable position of the pool holds the model's sample.
        warmup_steps: optimizer steps of SFT only before the first pool.
        regen_every: steps between two regenerations of the pool (one BASH "iteration").
        pool_size: training sequences per pool (drawn without replacement; all if the data is smaller).
        gen_batch_size: sequences generated at once (one KV cache each).
        temperature: sampling temperature of the generated tokens.
        bash_weight: weight of J_BASH (the paper adds the two terms: 1.0).

    Use inside :class:`ExposureTask` with the training data: ``ExposureTask(model, BASH(), data=train)``.
    After a regeneration, ``last_regen`` holds its statistics (sample share, seconds, backbone calls).
    """

    name = "bash"
    targets_valid = False

    def __init__(self, beta: float = 0.2, warmup_steps: int = 100, regen_every: int = 100, pool_size: int = 1024,
                 gen_batch_size: int = 256, temperature: float = 1.0, bash_weight: float = 1.0):
        beta = check_finite("beta (the share of model samples in the pool)", beta, 0.0, 1.0)
        bash_weight = check_finite("bash_weight", bash_weight)
        self._init_pool(warmup_steps, regen_every, pool_size, gen_batch_size, temperature)
        self.beta, self.bash_weight = beta, bash_weight

    # ------------------------------------------------------------------ the pool
    @torch.no_grad()
    def regenerate(self, model: nn.Module, data: Any, generator: torch.Generator | None = None,
                   autocast: Any = None) -> dict[str, float]:
        """Build the pool D_s from ``data`` with the current model (Eq. 4); returns its statistics.

        ``data``: a map-style dataset (items collated as the Trainer does), a tensor of sequences, or a
        :class:`SeqBatch`. ``generator`` seeds the draw, the coins and the samples (else the global
        RNG); ``autocast``: a context manager for generation (the Trainer's). The pool lives on the
        model's device.
        """
        device = model_device(model)
        source = self._draw(data, generator).to(device)
        n, T = source.x.shape[:2]
        trainable = trainable_mask(source.x, source.loss_mask)
        sampled = bernoulli_mask((n, T), self.beta, device, generator) & trainable  # True: the model's z^j
        calls0 = getattr(model, "num_backbone_calls", 0)
        t0 = time.perf_counter()
        with autocast if autocast is not None else contextlib.nullcontext():
            g = rollout(model, source, ~sampled, self.temperature, self.gen_batch_size, generator)  # Eq. 4, cached
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        self.pool = {"y": source.x, "g": g, "labels": source.labels, "loss_mask": source.loss_mask}
        n_trainable = int(trainable.sum())
        self.last_regen = {
            "sample_share": float(sampled.sum()) / max(1, n_trainable),
            "sequences": float(n), "generated_tokens": float(n * T), "trainable_tokens": float(n_trainable),
            "seconds": seconds, "backbone_calls": float(getattr(model, "num_backbone_calls", 0) - calls0),
        }
        return self.last_regen

    # ------------------------------------------------------------------ training
    def loss(self, model: nn.Module, x: torch.Tensor, progress: float = 0.0, labels: torch.Tensor | None = None,
             loss_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        b = make_batch(x, labels, loss_mask)
        sft = model.loss(b.x, **b.model_kwargs())
        if self.pool is None:  # warm-up: J_SFT alone
            return sft, {"sft": sft.detach(), "bash_active": 0.0}
        pool = self.pool
        idx = torch.randint(0, pool["y"].shape[0], (b.x.shape[0],), device=pool["y"].device)
        p = SeqBatch(pool["y"][idx], None if pool["labels"] is None else pool["labels"][idx],
                     None if pool["loss_mask"] is None else pool["loss_mask"][idx])
        j_bash = model.loss(p.x, context=pool["g"][idx], **p.model_kwargs())
        metrics = {"sft": sft.detach(), "bash": j_bash.detach(), "bash_active": 1.0,
                   "bash_share": self.last_regen.get("sample_share", float("nan"))}
        return sft + self.bash_weight * j_bash, metrics

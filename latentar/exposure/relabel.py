"""Relabel: train on the model's own prefixes with the expert's target for each of them (DAgger,
Ross et al. 2011; Optimal Completion Distillation, Sabour et al. 2019).

What: between training iterations the current model free-runs on training prompts (KV cache),

    z^j ~ p_theta(. | x, z^{<j}),          zbar^j = expert(x, z^{<j})

where the expert returns the correct next token *for that prefix* (for the compounding tasks of
``latentar.data.compounding``: the step computed from the previous step as written). Every step
after the SFT warm-up trains on

    J = J_SFT + J_RE,   J_SFT  = - sum_j log p(y^j | x, y^{<j})         (the batch)
                        J_RE   = - sum_j log p(zbar^j | x, z^{<j})       (a pool batch)

both divided by their trained-token counts. Positions after the free run's first special token
(an early EOS) carry no loss: the expert has nothing to continue there.

Why ``targets_valid = True``: the target is chosen for the context the model is trained on, so the
optimum of J_RE is the expert's policy on the model's own state distribution (the DAgger
argument), not the product of marginals that scheduled sampling's reused targets converge to
(Huszar 2015). It is the discrete counterpart of keeping the target correct for a corrupted
context. It needs a computable expert; the seq tasks provide one as ``SeqTask.expert_targets``.

Schedule and state: BASH's (``OfflinePoolStrategy``): SFT alone for ``warmup_steps``, a new pool
every ``regen_every`` steps, the pool in the checkpoint.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from latentar.exposure.base import OfflinePoolStrategy, check_finite, make_batch, rollout, trainable_mask
from latentar.exposure.rac import split_example

Expert = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Relabel(OfflinePoolStrategy):
    """DAgger-style relabelling of the model's own prefixes by an expert; see the module docstring.

    Args:
        expert: ``expert(prompt_ids (P,), answer_ids (A,)) -> targets (A,)``, ``targets[j]`` the
            correct id after ``prompt answer[:j]`` (PAD where nothing can follow), e.g.
            ``SeqTask.expert_targets``.
        warmup_steps, regen_every, pool_size, gen_batch_size, temperature: the offline pool (as BASH).
        relabel_weight: weight of J_RE.
        pad_id: the id the expert returns where a position carries no loss.
    """

    name = "relabel"
    targets_valid = True

    def __init__(self, expert: Expert, warmup_steps: int = 100, regen_every: int = 100, pool_size: int = 1024,
                 gen_batch_size: int = 256, temperature: float = 1.0, relabel_weight: float = 1.0,
                 pad_id: int = 256):
        if not callable(expert):
            raise TypeError(f"expert must be a callable (prompt_ids, answer_ids) -> targets, got {type(expert).__name__}")
        self._init_pool(warmup_steps, regen_every, pool_size, gen_batch_size, temperature)
        self.expert, self.pad_id = expert, int(pad_id)
        self.relabel_weight = check_finite("relabel_weight", relabel_weight)

    def targets(self, tokens: torch.Tensor, z: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
        """``zbar (n, T)``: at answer positions the expert's target for the prefix z before it; PAD elsewhere."""
        zbar = torch.full_like(tokens, self.pad_id)
        for i in range(tokens.shape[0]):
            prompt, _, start = split_example(tokens[i], answer[i], None)
            span = answer[i].nonzero().flatten()
            t = self.expert(prompt.cpu(), z[i, span].cpu())
            if t.shape != span.shape:
                raise ValueError(f"the expert returned {tuple(t.shape)} targets for an answer of {span.numel()} ids")
            zbar[i, span] = t.to(zbar.device, zbar.dtype)
        return zbar

    @torch.no_grad()
    def regenerate(self, model: nn.Module, data: Any, generator: torch.Generator | None = None,
                   autocast: Any = None) -> dict[str, float]:
        """Build the pool {(z, zbar)} from ``data`` with the current model; returns its statistics."""
        source = self._draw(data, generator).to(next(model.parameters()).device)
        if not source.discrete or source.loss_mask is None:
            raise ValueError("Relabel works on token sequences with a loss mask over the answer (SeqTask batches)")
        answer = trainable_mask(source.x, source.loss_mask)
        calls0 = getattr(model, "num_backbone_calls", 0)
        t0 = time.perf_counter()
        with autocast if autocast is not None else contextlib.nullcontext():
            z = rollout(model, source, ~answer, self.temperature, self.gen_batch_size, generator)
        zbar = self.targets(source.x, z, answer)
        trained = answer & (zbar != self.pad_id)
        self.pool = {"context": z, "labels": torch.where(trained, zbar, source.x), "loss_mask": trained}
        n_answer = max(1, int(answer.sum()))
        self.last_regen = {
            "free_run_token_acc": float((answer & (z == source.x)).sum()) / n_answer,
            "free_run_exact": float(((z == source.x) | ~answer).all(1).float().mean()),
            "relabelled_share": float((trained & (zbar != source.x)).sum()) / n_answer,
            "trained_share": float(trained.sum()) / n_answer, "sequences": float(source.x.shape[0]),
            "seconds": time.perf_counter() - t0,
            "backbone_calls": float(getattr(model, "num_backbone_calls", 0) - calls0),
        }
        return self.last_regen

    def loss(self, model: nn.Module, x: torch.Tensor, progress: float = 0.0, labels: torch.Tensor | None = None,
             loss_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        b = make_batch(x, labels, loss_mask)
        sft = model.loss(b.x, **b.model_kwargs())
        if self.pool is None:
            return sft, {"sft": sft.detach(), "relabel_active": 0.0}
        pool = self.pool
        idx = torch.randint(0, pool["context"].shape[0], (b.x.shape[0],), device=pool["context"].device)
        j = model.loss(pool["labels"][idx], context=pool["context"][idx], loss_mask=pool["loss_mask"][idx])
        return sft + self.relabel_weight * j, {"sft": sft.detach(), "relabel": j.detach(),
                                               "relabel_active": 1.0}


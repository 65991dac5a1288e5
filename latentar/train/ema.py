"""Exponential moving average of weights: theta_ema <- d * theta_ema + (1 - d) * theta.

The update is one fused ``torch._foreach_lerp_`` per (device, dtype) group of parameters (one
kernel launch per group on CUDA, not one per parameter), so it costs the same handful of launches
for any model size. Only trainable parameters are averaged; buffers (BatchNorm statistics, a
tokenizer's ``latent_std``) stay the live model's, in and out of ``swapped_in``.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """EMA of ``model``'s trainable parameters with decay ``d`` in (0, 1).

    ``update(model)`` after every optimizer step; ``swapped_in(model)`` to evaluate with the
    averaged weights; ``state_dict`` / ``load_state_dict`` (CPU tensors) resume it exactly.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        groups: dict[tuple[torch.device, torch.dtype], list[str]] = {}
        for n, v in self.shadow.items():
            groups.setdefault((v.device, v.dtype), []).append(n)
        self._groups = list(groups.values())           # parameter names per (device, dtype)
        self._shadows = [[self.shadow[n] for n in names] for names in self._groups]  # updated in place
        self._bound: tuple[weakref.ref, list[list[torch.Tensor]]] | None = None

    def _params(self, model: nn.Module) -> list[list[torch.Tensor]]:
        """``model``'s parameters in the order of ``_groups``, looked up once per model object
        (optimizers, ``.to()`` and ``load_state_dict`` all update parameters in place)."""
        if self._bound is not None and self._bound[0]() is model:
            return self._bound[1]
        params = dict(model.named_parameters())
        missing = [n for n in self.shadow if n not in params]
        if missing:
            raise ValueError(f"EMA: the model has no parameter(s) {missing[:5]} of the model it was built on")
        lists = [[params[n] for n in names] for names in self._groups]
        self._bound = (weakref.ref(model), lists)
        return lists

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow <- lerp(shadow, theta, 1 - d) = d * shadow + (1 - d) * theta, fused per group."""
        weight = 1.0 - self.decay
        for shadows, params in zip(self._shadows, self._params(model)):
            torch._foreach_lerp_(shadows, params, weight)

    @contextmanager
    def swapped_in(self, model: nn.Module):
        """Temporarily load the EMA weights into ``model`` (for sampling or evaluation)."""
        groups = self._params(model)
        with torch.no_grad():
            backup = [[p.detach().clone() for p in params] for params in groups]
            for params, shadows in zip(groups, self._shadows):
                torch._foreach_copy_(params, shadows)
        try:
            yield model
        finally:
            with torch.no_grad():
                for params, saved in zip(groups, backup):
                    torch._foreach_copy_(params, saved)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not match the model: differing keys {sorted(missing)[:5]}")
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)

"""The one interface every per-token head shares (MAR's DiffLoss habit: ``loss`` and ``sample``).

A head maps a backbone state ``cond`` to a distribution over the next continuous token:

* ``loss(cond, target) -> (B, T)``: per-token training loss (not reduced), so the caller can mask
  and weight positions.
* ``sample(cond, temperature=1.0, *, generator=None, cond_uncond=None, cfg_scale=1.0, ...)
  -> (B, T, dim)``.

Shapes
------
``cond`` is ``(B, T, cond_dim)`` and ``target`` is ``(B, T, dim)``. A 2-D ``cond`` of shape
``(N, cond_dim)`` is also accepted and read as N independent tokens: the leading shape is kept, so
``loss`` then returns ``(N,)`` and ``sample`` returns ``(N, dim)`` (``target`` must be
``(N, dim)``). This is the shape a cached decoder produces one step at a time. Internally every
head flattens to ``(N, ...)`` tokens; there is no interaction between tokens.

Classifier-free guidance
------------------------
``sample(cond, cond_uncond=u, cfg_scale=s)`` with ``s != 1`` mixes the conditional and the
unconditional prediction; each head documents at which level it mixes. ``cond_uncond`` has the
shape of ``cond``. With ``cfg_scale == 1`` the unconditional branch is never evaluated, so the
result is bit-identical to plain conditional sampling with the same generator.
"""
from __future__ import annotations

import math

import torch

from latentar.pretrained import PretrainedMixin


class Head(PretrainedMixin):
    """Base class of GMMHead, DiffusionHead and MSEHead: shape checks and the guidance switch.

    Subclasses decorate ``__init__`` with ``@register_to_config`` (``self.config`` = the constructor
    arguments, diffusers' convention) and implement ``loss`` and
    ``sample`` with the signatures documented in this module's docstring.
    """

    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        for name, value in (("dim", dim), ("cond_dim", cond_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {value!r}")
        self.dim = dim
        self.cond_dim = cond_dim

    # ---------------------------------------------------------------- shape handling
    def _flatten_cond(self, cond: torch.Tensor, name: str = "cond") -> tuple[torch.Tensor, tuple[int, ...]]:
        """``(B, T, cond_dim)`` or ``(N, cond_dim)`` -> ``((B*T or N, cond_dim), leading shape)``."""
        if not torch.is_tensor(cond):
            raise TypeError(f"{type(self).__name__}: {name} must be a tensor, got {type(cond).__name__}")
        if cond.dim() not in (2, 3) or cond.shape[-1] != self.cond_dim:
            raise ValueError(
                f"{type(self).__name__}: expected {name} of shape (B, T, {self.cond_dim}) or "
                f"(N, {self.cond_dim}), got {tuple(cond.shape)}"
            )
        if not cond.is_floating_point():
            raise ValueError(f"{type(self).__name__}: {name} must be a floating-point tensor, got {cond.dtype}")
        lead = tuple(cond.shape[:-1])
        return cond.reshape(-1, self.cond_dim), lead

    def _flatten_target(self, target: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
        """``target`` must be ``(*lead, dim)``; returns ``(N, dim)``."""
        expected = (*lead, self.dim)
        if not torch.is_tensor(target) or tuple(target.shape) != expected:
            got = tuple(target.shape) if torch.is_tensor(target) else type(target).__name__
            names = "(B, T, dim)" if len(lead) == 2 else "(N, dim)"
            raise ValueError(
                f"{type(self).__name__}: expected target of shape {names} = {expected} to match cond "
                f"{(*lead, self.cond_dim)}, got {got}"
            )
        return target.reshape(-1, self.dim)

    def _flatten_uncond(self, cond: torch.Tensor, cond_uncond: torch.Tensor | None, cfg_scale: float) -> torch.Tensor | None:
        """Return the flattened unconditional input when guidance is active, else None.

        Guidance is active iff ``cfg_scale != 1``; it then needs ``cond_uncond`` of cond's shape.
        """
        if cfg_scale == 1.0:
            return None
        if cond_uncond is None:
            raise ValueError(
                f"{type(self).__name__}.sample: cfg_scale={cfg_scale} needs cond_uncond (the backbone state "
                f"for the null condition, same shape as cond {tuple(cond.shape)}); pass it or use cfg_scale=1.0"
            )
        if not torch.is_tensor(cond_uncond) or cond_uncond.shape != cond.shape:
            got = tuple(cond_uncond.shape) if torch.is_tensor(cond_uncond) else type(cond_uncond).__name__
            raise ValueError(
                f"{type(self).__name__}.sample: expected cond_uncond of the same shape as cond "
                f"{tuple(cond.shape)}, got {got}"
            )
        return cond_uncond.reshape(-1, self.cond_dim)

    @staticmethod
    def _check_temperature(name: str, value: float) -> None:
        if not value >= 0.0:  # also rejects NaN
            raise ValueError(f"{name} must be >= 0, got {value}")


def check_guidance(who: str, cfg_scale: float, temperature: float, labels, num_classes: int) -> bool:
    """Validate the sampling settings a class-conditional generator takes; returns whether CFG is on.

    ``cfg_scale`` and ``temperature`` are finite and >= 0; guidance (``cfg_scale != 1``) needs a
    class-conditional model *and* labels to guide towards: without labels the conditional branch
    is the null class itself and ``cfg_scale`` would silently act as 1.
    """
    if not (math.isfinite(cfg_scale) and cfg_scale >= 0):
        raise ValueError(f"{who}: cfg_scale must be a finite number >= 0 (1 = no guidance), got {cfg_scale}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"{who}: temperature must be a finite number >= 0, got {temperature}")
    guided = cfg_scale != 1.0
    if guided and num_classes == 0:
        raise ValueError(f"{who}: cfg_scale={cfg_scale} needs a class-conditional model (num_classes > 0) "
                         "with a null class; use cfg_scale=1.0")
    if guided and labels is None:
        raise ValueError(f"{who}: cfg_scale={cfg_scale} without labels guides the null class towards itself (the "
                         "same as cfg_scale=1); pass labels (B,) to guide towards, or use cfg_scale=1.0")
    return guided


"""Per-token heads with one interface: ``loss(cond, target) -> (B, T)``, ``sample(cond, ...) -> (B, T, dim)``.

See ``latentar.heads.base`` for shapes and the guidance contract.
"""
from __future__ import annotations

from latentar.heads.base import Head
from latentar.heads.diffusion import DiffusionHead
from latentar.heads.gmm import GMMHead
from latentar.heads.mse import MSEHead

HEADS: dict[str, type[Head]] = {"gmm": GMMHead, "diffusion": DiffusionHead, "mse": MSEHead}


def build_head(name: str, dim: int, cond_dim: int, **kw) -> Head:
    """``HEADS[name](dim=dim, cond_dim=cond_dim, **kw)`` with a clear error for an unknown name."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose one of {sorted(HEADS)}")
    return HEADS[name](dim=dim, cond_dim=cond_dim, **kw)


__all__ = ["Head", "GMMHead", "DiffusionHead", "MSEHead", "HEADS", "build_head"]

"""Sequence models: the CausalTransformer backbone (with KV cache), LatentAR (backbone + head) and
JointDiffusion (the bidirectional, non-autoregressive control), CharLM and the HF adapter.

Names are imported on first use (PEP 562), so ``import latentar.models.char_lm`` (the discrete
tasks, their worker processes) does not pay for diffusers, which the diffusion models import.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "CausalTransformer": "latentar.models.transformer", "KVCache": "latentar.models.transformer",
    "LatentAR": "latentar.models.latent_ar", "JointDiffusion": "latentar.models.joint_diffusion",
    "CharLM": "latentar.models.char_lm", "TokenLMProtocol": "latentar.models.char_lm",
    "HFCausalLM": "latentar.models.hf_adapter", "HFSeqTask": "latentar.models.hf_adapter",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latentar.models' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

"""latentar: continuous-latent autoregressive generation, and tools to measure and fix exposure bias.

    import latentar as la
    tok = la.SigmaVAE(modality="image", in_channels=1, latent_dim=4, c_sigma=0.5)
    ar = la.LatentAR(latent_dim=4, head="gmm", num_classes=10)
    la.Trainer(max_steps=2000, out_dir="runs/ar").fit(ar, latents)

Strategies and the exposure meter live in ``latentar.exposure``; metrics in ``latentar.metrics``;
data in ``latentar.data``. This module only re-exports the stable public names, imported on first
use (PEP 562) so that ``latentar --help`` does not pay for torch, diffusers and transformers.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (an explicit table, no module-dict lookups)
_EXPORTS = {
    "Trainer": "latentar.train",
    "SigmaVAE": "latentar.tokenizers", "VAE": "latentar.tokenizers", "AE": "latentar.tokenizers",
    "latent_report": "latentar.tokenizers", "load_tokenizer": "latentar.tokenizers",
    "GMMHead": "latentar.heads", "DiffusionHead": "latentar.heads", "MSEHead": "latentar.heads",
    "CausalTransformer": "latentar.models", "LatentAR": "latentar.models", "JointDiffusion": "latentar.models",
    "CharLM": "latentar.models", "HFCausalLM": "latentar.models",
    "IPDiffusionTrainer": "latentar.diffusion",
    "SoftPrompt": "latentar.softprompt", "fit_soft_prompt": "latentar.softprompt",
    "fit_soft_prompts": "latentar.softprompt", "load_frozen_lm": "latentar.softprompt",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latentar' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

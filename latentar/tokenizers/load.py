"""load_tokenizer: rebuild a saved tokenizer without knowing its class.

``save_pretrained`` (``latentar.pretrained.PretrainedMixin``, diffusers' layout) writes ``config.json``
(the constructor arguments and ``_class_name``) beside ``diffusion_pytorch_model.safetensors``.
``load_tokenizer`` reads that class name (``saved_class_name``, which also reads the earlier
``{"class", "config"}`` layout), finds it among ``TOKENIZERS`` (SigmaVAE, VAE, AE) and
calls the class's own ``from_pretrained``, so a recipe or sweep takes "a tokenizer directory"
rather than one option per tokenizer kind.

    tok = load_tokenizer("runs/tok")          # SigmaVAE, VAE or AE, eval mode, no gradients
    z = tok.encode(x)
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from latentar.pretrained import CONFIG_NAME, saved_class_name
from latentar.tokenizers.ae import AE
from latentar.tokenizers.sigma_vae import SigmaVAE
from latentar.tokenizers.vae import VAE

TOKENIZERS = {"sigma_vae": SigmaVAE, "vae": VAE, "ae": AE}


def load_tokenizer(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """The tokenizer saved with ``save_pretrained`` in ``path``, on ``device``, in eval mode without gradients.

    Raises FileNotFoundError when ``path`` has no config.json, and ValueError when the config names
    a class that is not a tokenizer (a LatentAR, a JointDiffusion, ...).
    """
    path = Path(path)
    config = path / CONFIG_NAME
    if not config.is_file():
        raise FileNotFoundError(f"load_tokenizer: no {CONFIG_NAME} in {path}; pass a directory written by a "
                                "tokenizer's save_pretrained (SigmaVAE, VAE or AE)")
    name = saved_class_name(path)
    classes = {cls.__name__: cls for cls in TOKENIZERS.values()}
    if name not in classes:
        raise ValueError(f"load_tokenizer: {path} holds a {name!r}, not a tokenizer (one of {sorted(classes)}); "
                         "load other models with their own class's from_pretrained")
    tok = classes[name].from_pretrained(path)
    return tok.to(device).eval().requires_grad_(False)

"""Save and load any latentar model as a directory: ``config.json`` + ``model.safetensors``.

The shape follows diffusers' ``register_to_config``: a model records its constructor arguments
once (``self.config``), so every saved artifact rebuilds itself; numbers that matter (latent scale,
C_sigma, beta) live in the config or in registered buffers, never as constants in a loop.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class PretrainedMixin:
    """Mixin for ``nn.Module`` subclasses whose ``__init__`` stores its arguments in ``self.config``."""

    config: dict[str, Any]

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"class": type(self).__name__, "config": self.config}
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        # Atomic: write beside, then rename, so an interrupted save never leaves half a model.
        tmp_w = path / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp_w))
        os.replace(tmp_w, path / WEIGHTS_NAME)
        tmp_c = path / (CONFIG_NAME + ".tmp")
        tmp_c.write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(tmp_c, path / CONFIG_NAME)
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu", **overrides):
        path = Path(path)
        cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        for f in (cfg_file, w_file):
            if not f.is_file():
                raise FileNotFoundError(f"{cls.__name__}.from_pretrained: missing {f} (expected a directory written by save_pretrained)")
        meta = json.loads(cfg_file.read_text())
        if meta.get("class") != cls.__name__:
            raise ValueError(
                f"{path} holds a {meta.get('class')!r} checkpoint, not a {cls.__name__}; "
                f"load it with latentar.{meta.get('class')}.from_pretrained"
            )
        config = {**meta["config"], **overrides}
        model = cls(**config)
        load_state_checked(model, load_file(str(w_file), device=str(map_location)), source=str(path))
        return model


def load_state_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with an error that names every missing, unexpected or misshapen key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        lines = [f"incompatible {source} for {type(module).__name__}:"]
        if shapes:
            lines.append("  shape mismatch (different architecture or latent size?): " + "; ".join(shapes[:8]))
        if missing:
            lines.append(f"  missing keys: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            lines.append(f"  unexpected keys: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        raise ValueError("\n".join(lines))
    module.load_state_dict(state, strict=True)

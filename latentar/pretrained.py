"""Save and load any latentar model as a directory: ``config.json`` + ``model.safetensors``.

The shape follows diffusers' ``register_to_config``: a model records its constructor arguments
once (``self.config``), so every saved artifact rebuilds itself; numbers that matter (latent scale,
C_sigma, beta) live in the config or in registered buffers, never as constants in a loop.
"""
from __future__ import annotations

import inspect
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
        """Rebuild the model saved in ``path``. Every failure names the file: a missing, truncated or
        foreign ``config.json``; a saved config that lacks a constructor argument (a saved C_sigma is
        never replaced by a default); a corrupt ``model.safetensors``; weights holding NaN or inf.
        Loading does not consume the caller's random numbers (a warm cache and a cold one give the
        same results downstream)."""
        path = Path(path)
        meta = read_config(path, cls.__name__)
        if meta["class"] != cls.__name__:
            raise ValueError(
                f"{path} holds a {meta['class']!r} checkpoint, not a {cls.__name__}; "
                f"load it with latentar.{meta['class']}.from_pretrained"
            )
        config = {**meta["config"], **overrides}
        check_config_complete(cls, config, path / CONFIG_NAME)
        try:
            with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the caller's RNG alone
                model = cls(**config)
        except TypeError as e:
            raise ValueError(f"{path / CONFIG_NAME} does not fit {cls.__name__}: {e}") from e
        load_state_checked(model, read_weights(path, map_location), source=str(path))
        return model


def read_config(path: Path, who: str = "from_pretrained") -> dict[str, Any]:
    """``{"class": str, "config": dict}`` from ``path/config.json``, or an error naming the file."""
    cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not path.is_dir():
        raise FileNotFoundError(f"{who}.from_pretrained: {path} is not a directory (expected one written by save_pretrained)")
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise FileNotFoundError(f"{who}.from_pretrained: missing {f} (expected a directory written by save_pretrained)")
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_file} is not valid JSON ({e}); the file is truncated or corrupt: "
                         "save the model again") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or not isinstance(meta.get("class"), str):
        raise ValueError(f"{cfg_file} lacks its 'class' name or its 'config' section (a dict of constructor "
                         "arguments); it was not written by latentar's save_pretrained")
    return meta


def check_config_complete(cls: type, config: dict[str, Any], source: Path) -> None:
    """Every named constructor argument of ``cls`` must be in the saved ``config``: a value that the
    model was trained with is never silently replaced by today's default."""
    params = inspect.signature(cls.__init__).parameters.values()
    named = [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    missing = [n for n in named if n not in config]
    if missing:
        raise ValueError(f"{source} has no value for {', '.join(missing)} (arguments of {cls.__name__}); a saved "
                         "setting is never replaced by a default: restore the file or save the model again")


def read_weights(path: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of ``path/model.safetensors``; a corrupt file or non-finite weights are errors naming it."""
    w_file = path / WEIGHTS_NAME
    try:
        state = load_file(str(w_file), device=str(map_location))
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError on short reads)
        raise ValueError(f"{w_file} is corrupt or truncated ({type(e).__name__}: {e}); save the model again") from e
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{w_file} holds NaN or inf in {len(bad)} tensor(s) ({', '.join(bad[:4])}"
                         f"{' ...' if len(bad) > 4 else ''}); the model diverged before it was saved")
    return state


def load_state_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with an error that names every missing, unexpected or misshapen key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state))
              if torch.is_tensor(own[k]) and torch.is_tensor(state[k]) and own[k].shape != state[k].shape]
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

"""``latentar sweep ip``'s command line and config, without torch (the sweep itself:
:mod:`latentar.sweeps.ip`).

The resolved config holds the grid (``gamma``, ``steps``, ``seeds``, ``sampler``, ``eps_scale``), the
budget of the preset (``latentar/configs/presets/sweep_ip/<preset>.yaml``: ``unet``, ``train_steps``,
``batch_size``, ``lr``, ``warmup_steps``, ``ema_decay``, ``num_samples``), the space, the tokenizer,
the training schedule, ``out``, ``device`` and ``launch``; each option sets the key of its name
(``--samples``: ``num_samples``).
"""
from __future__ import annotations

import argparse
import math
import textwrap
from typing import Any

from latentar.cliargs import (FROM_PRESET, ArgumentParser, UsageError, add_common_args, add_config_args,
                              check_device, existing_dir, finite, out_dir, parse_list, positive_int, unique)
from latentar.commands import apply_options, launch_config, run_command_line, start_config
from latentar.configs import Presets
from latentar.sweeps.runner import add_launch_args

PRESET_DIR = "sweep_ip"
PRESETS = Presets(PRESET_DIR)   # name -> the preset's settings, read from its YAML file
# Names the command line accepts (the library's, kept here so that parsing imports no torch; a test
# checks them against latentar.diffusion.sampling.SAMPLERS and latentar.diffusion.digits_space.SPACES).
SAMPLERS = ("ddpm", "ddim", "dpmsolver")
SPACES = ("pixel", "latent")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PRESET_KEYS = ("gamma", "steps", "seeds", "unet", "train_steps", "batch_size", "lr", "warmup_steps", "ema_decay",
               "num_samples")
# Every key of the config in its order; None where the preset sets it (and "out": runs/ip-<preset>-<space>).
DEFAULTS: dict[str, Any] = {"gamma": None, "steps": None, "seeds": None, "sampler": "ddim", "eps_scale": [1.0],
                            "space": "pixel", "tokenizer": None, "out": None, "device": "auto",
                            **{k: None for k in PRESET_KEYS[3:]}, "num_train_timesteps": 1000,
                            "beta_schedule": "linear", "launch": None}
OPTIONS = {"gamma": ("gamma", lambda t: parse_list(t, float, "--gamma")),
           "steps": ("steps", lambda t: parse_list(t, int, "--steps")),
           "eps_scale": ("eps_scale", lambda t: parse_list(t, float, "--eps-scale")),
           "samples": ("num_samples", lambda v: v),
           **{k: (k, lambda v: v) for k in ("seeds", "sampler", "space", "tokenizer", "out", "device", "train_steps",
                                             "num_train_timesteps", "beta_schedule")}}


def check_gamma(gamma: Any, where: str = "gamma") -> float:
    """gamma as a float, or a UsageError unless it is a finite number >= 0
    (``latentar.diffusion.input_perturbation.check_gamma``'s rule and words)."""
    try:
        value = float(gamma)
    except (TypeError, ValueError):
        raise UsageError(f"{where} must be a number >= 0 (0.1 in Ning et al.), got {gamma!r}") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{where} must be a finite number >= 0 (0 = plain DDPM training, 0.1 is Ning et al.'s "
                         f"default, > 0.2 is reported to hurt), got {gamma!r}")
    return value


def build_parser(command: str = "sweep ip") -> argparse.ArgumentParser:
    presets = "; ".join(f"{k}: {p['unet']} UNet, {p['train_steps']} training steps, {p['num_samples']} samples, "
                        f"gamma {','.join(f'{g:g}' for g in p['gamma'])}, steps {','.join(map(str, p['steps']))}, "
                        f"{p['seeds']} seed(s)" for k, p in ((k, PRESETS[k]) for k in PRESETS))
    p = ArgumentParser(
        prog=f"latentar {command}",
        description=textwrap.fill(width=100, text=(
            "Train diffusers UNets on digits with input perturbation gamma (Ning et al. 2023, DDPM-IP) and measure "
            "digits FD against the number of sampling steps, one line per gamma. Writes results.csv, results.md and "
            "fd_vs_steps.png to --out; rerunning with the same settings resumes, with other settings adds new cells "
            "beside the old ones.")))
    p.add_argument("--gamma", default=None,
                   help=f"comma-separated input-perturbation strengths >= 0 (0 = plain DDPM) {FROM_PRESET}")
    p.add_argument("--steps", default=None,
                   help=f"comma-separated numbers of sampling steps, each <= --num-train-timesteps {FROM_PRESET}")
    p.add_argument("--sampler", default=DEFAULTS["sampler"], choices=SAMPLERS,
                   help="diffusers sampler used at every step count")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"number of training seeds (0..N-1) per gamma {FROM_PRESET}")
    p.add_argument("--eps-scale", default=",".join(f"{e!r}" for e in DEFAULTS["eps_scale"]),
                   help="comma-separated ADM-ES epsilon-scaling constants lambda (predicted eps / lambda at "
                        "sampling, 1 = off, ~1.005 typical): the training-free comparison")
    p.add_argument("--preset", default="quick", choices=list(PRESETS),
                   help=f"budget (latentar/configs/presets/sweep_ip/<preset>.yaml): {presets}")
    p.add_argument("--space", default=DEFAULTS["space"], choices=SPACES,
                   help="pixel: 8x8 images; latent: the latents of --tokenizer, decoded before scoring")
    p.add_argument("--tokenizer", default=None,
                   help="directory of a tokenizer saved with SigmaVAE.save_pretrained (needed for --space latent)")
    p.add_argument("--out", default=None,
                   help="output directory (default: runs/ip-<preset>-<space>). A rerun with the same settings "
                        "resumes it; one with other settings (--train-steps, --samples, ...) trains and scores new "
                        "cells beside the old ones, and results.* show only the current settings' cells")
    p.add_argument("--device", default=DEFAULTS["device"], help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--train-steps", type=int, default=None, help=f"optimizer steps per model {FROM_PRESET}")
    p.add_argument("--samples", type=int, default=None,
                   help=f"number of samples scored per cell (key num_samples) {FROM_PRESET}")
    p.add_argument("--num-train-timesteps", type=int, default=DEFAULTS["num_train_timesteps"],
                   help="length T of the DDPM training schedule")
    p.add_argument("--beta-schedule", default=DEFAULTS["beta_schedule"], choices=BETA_SCHEDULES,
                   help="diffusers beta schedule of the training scheduler")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_common_args(p)
    add_config_args(p, command)
    return add_launch_args(p)


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved config of parsed ``args`` (see the module docstring), checked: a UsageError names
    the first bad setting before anything trains."""
    cfg = start_config(args, DEFAULTS, PRESET_DIR)
    apply_options(cfg, args, OPTIONS)
    cfg["gamma"] = unique([check_gamma(g, "--gamma") for g in parse_list(cfg["gamma"], float, "--gamma")], "--gamma")
    T = cfg["num_train_timesteps"] = positive_int(cfg["num_train_timesteps"], "--num-train-timesteps", minimum=2)
    steps = cfg["steps"] = unique(parse_list(cfg["steps"], int, "--steps"), "--steps")
    bad = [s for s in steps if not 1 <= s <= T]
    if bad:
        raise UsageError(f"--steps {bad} outside [1, {T}]: a sampler cannot take more steps than the "
                         f"num_train_timesteps={T} the model is trained with; lower them or raise --num-train-timesteps")
    cfg["eps_scale"] = unique([finite(e, "--eps-scale", minimum=0.0, strict=True)
                               for e in parse_list(cfg["eps_scale"], float, "--eps-scale")], "--eps-scale")
    cfg["seeds"] = positive_int(cfg["seeds"], "--seeds")
    for key, name in (("train_steps", "--train-steps"), ("num_samples", "--samples")):
        cfg[key] = positive_int(cfg[key], name, minimum=2)
    for key, choices in (("sampler", SAMPLERS), ("space", SPACES), ("beta_schedule", BETA_SCHEDULES)):
        if cfg[key] not in choices:
            raise UsageError(f"--{key.replace('_', '-')} must be one of {', '.join(choices)}, got {cfg[key]!r}")
    if cfg["space"] == "latent" and not cfg["tokenizer"]:
        raise UsageError("--space latent needs --tokenizer DIR (a SigmaVAE saved with save_pretrained)")
    if cfg["space"] == "pixel" and cfg["tokenizer"]:
        raise UsageError("--tokenizer is only used with --space latent")
    if cfg["tokenizer"]:
        existing_dir(cfg["tokenizer"], "--tokenizer", must_contain="config.json")
    check_device(cfg["device"])
    if cfg["out"] is None:
        cfg["out"] = f"runs/ip-{cfg['preset']}-{cfg['space']}"
    out_dir(cfg["out"])
    saved_launch = cfg.pop("launch")
    cfg["launch"] = launch_config(args, saved_launch if args.config is not None else None)
    return cfg


def main(argv: list[str] | None = None, command: str = "sweep ip") -> int:
    return run_command_line(argv, command, build_parser, "latentar.sweeps.ip:run_cli", resolve)

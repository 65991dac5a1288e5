"""``latentar sweep variance``'s command line and config, without torch (the sweep itself:
:mod:`latentar.sweeps.variance`, whose docstring ``--help`` prints).

The resolved config is flat, the preset's keys (``latentar/configs/presets/sweep_variance/<preset>.yaml``,
its ``per_data`` entry for the data laid over the rest) beside ``preset``, ``data``, ``out``, ``device``,
``strategy_c_sigma`` and ``launch``; each option sets one key (``--steps``: ``gen_steps``,
``--tokenizer``: ``tokenizers``, the others the key of their name). :class:`SweepConfig` is that config
as the sweep reads it: the grid's lists at the top, the rest under ``budget``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentar.cliargs import (FROM_PRESET, ArgumentParser, UsageError, add_common_args, add_config_args,
                              check_device, finite, given, out_dir, parse_list, positive_int, unique)
from latentar.commands import (apply_options, launch_config, module_docstring, run_command_line, runner_options,
                               start_config)
from latentar.configs import Presets, load_preset
from latentar.sweeps.runner import add_launch_args

PRESET_DIR = "sweep_variance"
PRESETS = Presets(PRESET_DIR)   # name -> the preset's settings, read from its YAML file
GENERATORS = ("gmm", "diffusion", "joint")  # the sweep's; latentar.generation also has mse
STRATEGIES = ("tf", "ss", "noise", "bash")
# Tokenizer families and the knob each is swept along: SigmaVAE's fixed noise C_sigma (LatentLM),
# the VAE's KL weight beta (GIVT's trade: higher beta, worse reconstruction, easier AR modelling),
# and the deterministic AE (no knob: one point, the C_sigma = 0 end of both).
TOKENIZERS = ("sigma_vae", "vae", "ae")
SAMPLERS = ("ddpm", "ddim", "dpmsolver")   # latentar.diffusion.sampling.SAMPLERS (a test keeps them equal)
DATA = ("digits", "mnist", "speech")       # or wavfolder:PATH
# The keys of the resolved config that are the sweep's grid; the others (but preset, data, out, device,
# strategy_c_sigma, launch) are its budget.
GRID_KEYS = ("c_sigma", "beta", "tokenizers", "generators", "strategies", "seeds", "cfg")
DEFAULTS: dict[str, Any] = {"data": "digits", "out": "runs/sweep", "device": "auto", "strategy_c_sigma": 0.5,
                            "launch": None}


@dataclass
class SweepConfig:
    preset: str = "quick"
    data: str = "digits"
    out: Path = Path("runs/sweep")
    device: str = "auto"
    c_sigma: list[float] = field(default_factory=list)
    generators: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)
    strategy_c_sigma: float = 0.5
    tokenizers: list[str] = field(default_factory=lambda: ["sigma_vae"])
    beta: list[float] = field(default_factory=list)
    seeds: int = 1
    cfg: list[float] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)
    launch: dict[str, Any] = field(default_factory=dict)   # SweepRunner: workers, launcher, submitit


def preset_for(name: str, data: str) -> dict[str, Any]:
    """Preset ``name``'s settings for ``data``: its ``per_data`` entry for the data's kind (digits,
    mnist, speech; a wav folder counts as speech) laid over the rest."""
    preset = load_preset(PRESET_DIR, name)
    per_data = preset.pop("per_data", {})
    return {**preset, **per_data.get("speech" if data.startswith("wavfolder:") else data, {})}


def _names(names: list[str], choices, option: str, what: str) -> list[str]:
    """A list of names from ``choices``, each once."""
    names = unique(parse_list(names, str, option), option)
    for n in names:
        if n not in choices:
            raise UsageError(f"{option}: unknown {what} {n!r}; choose from {', '.join(choices)}")
    return names


def _scales(values: list[float], option: str) -> list[float]:
    """A list of finite numbers >= 0, each once."""
    return unique([finite(v, option, minimum=0.0) for v in parse_list(values, float, option)], option)


def _text_list(cast, option):
    return lambda text: parse_list(text, cast, option)


# option destination -> (config key, how its text is read); checked afterwards, whatever set the key
OPTIONS = {"tokenizer": ("tokenizers", _text_list(str, "--tokenizer")), "c_sigma": ("c_sigma", _text_list(float, "--c-sigma")),
           "beta": ("beta", _text_list(float, "--beta")), "generators": ("generators", _text_list(str, "--generators")),
           "strategies": ("strategies", _text_list(str, "--strategies")), "cfg": ("cfg", _text_list(float, "--cfg")),
           "strategy_generators": ("strategy_generators", _text_list(str, "--strategy-generators")),
           "steps": ("gen_steps", lambda v: v), "tok_steps": ("tok_steps", lambda v: v),
           **{k: (k, lambda v: v) for k in ("sampler", "sampling_steps", "temperature", "strategy_c_sigma", "seeds",
                                             "data", "out", "device")}}


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def build_parser(command: str = "sweep variance") -> argparse.ArgumentParser:
    p = ArgumentParser(prog=f"latentar {command}", description=module_docstring(
        "latentar.sweeps.variance", "the tokenizer-variance sweep (FD against C_sigma); see latentar.sweeps.variance"))
    p.add_argument("--preset", choices=list(PRESETS), default="quick",
                   help="budget (latentar/configs/presets/sweep_variance/<preset>.yaml): smoke (~2 min, tests), quick "
                        "(make demo: digits, <= 15 min on 2 CPU cores, 3 seeds), standard (the README's run: --data "
                        "mnist then --data speech, <= 60 min on 2 cores in all; make standard), full (GPU)")
    p.add_argument("--tokenizer", help=f"comma-separated tokenizer families, a subset of {','.join(TOKENIZERS)}: "
                                       f"SigmaVAE swept along --c-sigma, VAE along --beta, AE one point {FROM_PRESET}")
    p.add_argument("--c-sigma", help=f"comma-separated SigmaVAE noise scales, e.g. 0,0.1,0.25,0.5,1.0 {FROM_PRESET}")
    p.add_argument("--beta", help=f"comma-separated VAE KL weights (GIVT's knob), e.g. 1e-4,1e-3,1e-2 {FROM_PRESET}")
    p.add_argument("--sampler", choices=SAMPLERS, help=f"reverse-diffusion sampler of every diffusion arm {FROM_PRESET}")
    p.add_argument("--sampling-steps", type=int, help=f"sampling steps of every diffusion arm {FROM_PRESET}")
    p.add_argument("--temperature", type=float,
                   help="sampling temperature of every arm: GMM component scales, diffusion per-step noise (MAR's "
                        f"convention); values other than 1 need --sampler ddpm {FROM_PRESET}")
    p.add_argument("--generators", help=f"comma-separated subset of {','.join(GENERATORS)} {FROM_PRESET}")
    p.add_argument("--strategies", help=f"comma-separated subset of {','.join(STRATEGIES)}, run at --strategy-c-sigma "
                                        f"on the AR generators {FROM_PRESET}")
    p.add_argument("--strategy-generators", help="comma-separated AR generators (gmm, diffusion) the strategies run on: "
                                                 f"gmm for smoke/quick/standard, gmm,diffusion for full {FROM_PRESET}")
    p.add_argument("--strategy-c-sigma", type=float, default=DEFAULTS["strategy_c_sigma"],
                   help="C_sigma at which strategies are compared")
    p.add_argument("--seeds", type=int, help=f"number of seeds per cell {FROM_PRESET}")
    p.add_argument("--cfg", help=f"comma-separated CFG scales >= 0; 1 means no guidance {FROM_PRESET}")
    p.add_argument("--data", default=DEFAULTS["data"],
                   help="digits (8x8, 16 tokens) | mnist (28x28, 49 tokens) | speech | wavfolder:PATH")
    p.add_argument("--out", default=DEFAULTS["out"],
                   help="output directory. A rerun with the same settings resumes it; one with other settings "
                        "(steps, CFG scales, data, ...) trains new cells and tokenizers beside the old ones, and "
                        "results.csv / results.md / the plots show only the current settings' cells")
    p.add_argument("--device", default=DEFAULTS["device"], help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--steps", type=int, help=f"the generators' training steps, >= 1 (key gen_steps) {FROM_PRESET}")
    p.add_argument("--tok-steps", type=int, help=f"the tokenizers' training steps, >= 1 {FROM_PRESET}")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_common_args(p)
    add_config_args(p, command)
    add_launch_args(p)
    return p


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved config of parsed ``args`` (see the module docstring), checked: a UsageError names
    the first bad setting before anything runs."""
    data_given = "data" in given(args)
    cfg = start_config(args, DEFAULTS, lambda name, so_far: preset_for(name, args.data if data_given else so_far["data"]),
                       preset_keys={k for name in PRESETS for k in PRESETS[name] if k != "per_data"})
    apply_options(cfg, args, OPTIONS)
    cfg["tokenizers"] = _names(cfg["tokenizers"], TOKENIZERS, "--tokenizer", "tokenizer")
    cfg["c_sigma"] = _scales(cfg["c_sigma"], "--c-sigma")
    cfg["beta"] = _scales(cfg["beta"], "--beta")
    cfg["strategy_c_sigma"] = finite(cfg["strategy_c_sigma"], "--strategy-c-sigma", minimum=0.0)
    cfg["generators"] = _names(cfg["generators"], GENERATORS, "--generators", "generator")
    cfg["strategies"] = _names(cfg["strategies"], STRATEGIES, "--strategies", "strategy")
    cfg["cfg"] = _scales(cfg["cfg"], "--cfg")
    cfg["seeds"] = positive_int(cfg["seeds"], "--seeds")
    data = cfg["data"]
    if not isinstance(data, str):
        raise UsageError(f"--data must be digits, mnist, speech or wavfolder:PATH, got {data!r}")
    if data.startswith("wavfolder:"):
        folder = data.split(":", 1)[1]
        if not Path(folder).expanduser().is_dir():
            raise UsageError(f"--data {data}: wav folder {folder!r} does not exist")
    elif data not in DATA:
        raise UsageError(f"--data must be digits, mnist, speech or wavfolder:PATH, got {data!r}")
    if cfg["sampler"] not in SAMPLERS:
        raise UsageError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {cfg['sampler']!r}")
    cfg["sampling_steps"] = positive_int(cfg["sampling_steps"], "--sampling-steps")
    cfg["temperature"] = finite(cfg["temperature"], "--temperature", minimum=0.0)
    if cfg["temperature"] != 1 and cfg["sampler"] != "ddpm":   # latentar.diffusion.sampling.check_temperature
        raise UsageError(f"--sampler/--sampling-steps/--temperature: temperature={cfg['temperature']} has no effect "
                         f"with sampler={cfg['sampler']!r} (tau scales only the per-step noise, which this sampler does "
                         "not add); use --sampler ddpm")
    cfg["strategy_generators"] = _names(cfg["strategy_generators"], ("gmm", "diffusion"), "--strategy-generators",
                                        "AR generator")
    cfg["gen_steps"] = positive_int(cfg["gen_steps"], "--steps")
    cfg["tok_steps"] = positive_int(cfg["tok_steps"], "--tok-steps")
    out_dir(cfg["out"])
    check_device(cfg["device"])
    saved_launch = cfg.pop("launch")
    cfg["launch"] = launch_config(args, saved_launch if args.config is not None else None)
    return cfg


def sweep_config(config: dict[str, Any], launch: dict[str, Any] | None = None) -> SweepConfig:
    """The :class:`SweepConfig` of a resolved config (``launch``: the runner's options, default the
    config's), with the sampler setting checked by the library's own ``SamplingConfig``."""
    from latentar.generation import SamplingConfig

    rest = ("preset", "data", "out", "device", "strategy_c_sigma", "launch", *GRID_KEYS)
    budget = {k: v for k, v in config.items() if k not in rest}
    try:
        SamplingConfig(budget["sampler"], budget["sampling_steps"], float(budget["temperature"]))
    except ValueError as e:
        raise UsageError(f"--sampler/--sampling-steps/--temperature: {e}") from None
    return SweepConfig(preset=config["preset"], data=config["data"], out=out_dir(config["out"]), device=config["device"],
                       tokenizers=list(config["tokenizers"]), beta=list(config["beta"]), c_sigma=list(config["c_sigma"]),
                       generators=list(config["generators"]), strategies=list(config["strategies"]),
                       strategy_c_sigma=config["strategy_c_sigma"], seeds=config["seeds"], cfg=list(config["cfg"]),
                       budget=budget, launch=dict(config["launch"] if launch is None else launch))


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """The resolved sweep configuration, or a UsageError naming the first bad option (nothing runs before)."""
    config = resolve(args)
    return sweep_config(config, runner_options(args, config))


def main(argv: list[str] | None = None, command: str = "sweep variance") -> int:
    return run_command_line(argv, command, build_parser, "latentar.sweeps.variance:run_cli", resolve)

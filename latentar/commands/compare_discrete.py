"""``latentar compare discrete``'s command line and config, without torch (the comparison itself:
:mod:`latentar.sweeps.discrete`).

The resolved config is :class:`CompareConfig`'s fields (less ``progress``) and ``launch``: its
dataclass defaults, then the preset (``latentar/configs/presets/compare_discrete/<preset>.yaml``) or
a saved ``--config``, then the options given; every option sets the key of its name (``--len``:
``lengths``, ``--task``: ``tasks``).
"""
from __future__ import annotations

import argparse
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from latentar.cliargs import (FROM_PRESET, ArgumentParser, UsageError, add_common_args, add_config_args,
                              check_device, finite, out_dir, parse_list, positive_int, unique)
from latentar.commands import PresetConfig, preset_option_adder, presets_epilog, run_command_line
from latentar.configs import Presets
from latentar.sweeps.runner import add_launch_args

PRESET_DIR = "compare_discrete"
PRESETS = Presets(PRESET_DIR)

# Names the command line accepts (the library's, kept here so that parsing imports no torch; a test
# checks them against latentar.data.seq_tasks.TASKS, latentar.data.compounding.COMPOUNDING,
# latentar.sweeps.discrete.STRATEGIES and latentar.exposure.sequence_level.REWARDS).
COMPOUNDING_TASKS = ("running_sum", "chain", "add_lsd")
TASKS = ("copy", "reverse", "sort", "add", *COMPOUNDING_TASKS)
STRATEGY_NAMES = ("sft", "ss", "ss_exp", "ss_invsig", "ss_anneal", "bash", "rac", "relabel", "unlikelihood",
                  "reinforce", "mixer")
EXPERT_STRATEGIES = ("relabel",)  # need the task's expert: compounding tasks only
REWARDS = ("prefix", "bleu")


@dataclass
class CompareConfig(PresetConfig):
    """Everything one comparison depends on (the command line and the Hydra config map onto it)."""

    tasks: list[str] = field(default_factory=lambda: ["running_sum"])
    lengths: list[int] = field(default_factory=lambda: [8, 16])
    strategies: list[str] = field(default_factory=lambda: list(STRATEGY_NAMES))
    seeds: int = 3
    preset: str = "quick"
    out: str = "runs/discrete"
    device: str = "auto"
    steps: int = 500
    batch_size: int = 64
    lr: float = 2e-3
    num_train: int = 20_000
    num_test: int = 200
    d_model: int = 128
    depth: int = 2
    num_heads: int = 4
    pos: str = "learned"            # CharLM positions: learned absolute (reverse needs absolute offsets) | rope
    pool_size: int = 256
    ckpt_every: int = 100
    warmup_frac: float = 0.5        # BASH / RAC / Relabel / REINFORCE: share of the steps with SFT alone
    regen_frac: float = 0.25        # BASH / RAC / Relabel: share of the steps between two pool rebuilds
    beta: float = 0.2               # BASH (the paper's value)
    ss_max: float = 0.25            # scheduled sampling: p rises 0 -> ss_max over training (ss, ss_exp, ss_invsig)
    rac_fraction: float = 0.25      # RAC: share of SFT items formatted as f(x, y) -> y
    ul_alpha: float = 1.0           # unlikelihood weight (Welleck et al.'s token-level alpha)
    rl_rows: int = 8                # REINFORCE / MIXER: rows rolled out per step
    rl_start_share: float = 0.25    # MIXER: sampled share of the answer at the end of the warm-up
    rl_exact_bonus: float = 0.5     # REINFORCE / MIXER: reward weight of an exact match (vs prefix credit)
    rl_reward: str = "prefix"       # REINFORCE / MIXER: "prefix" (one right answer) | "bleu" (free text)
    test_seed: int = 1000           # the held-out split is the same for every cell of one (task, length)
    progress: bool = True
    preset_dir: ClassVar[str] = PRESET_DIR

    def validate(self) -> None:
        """Raise a UsageError naming the first setting that cannot run (nothing has started yet)."""
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise UsageError(f"--task: unknown tasks {bad}; expected names from {', '.join(TASKS)}")
        unique(self.tasks, "--task")
        bad = [s for s in self.strategies if s not in STRATEGY_NAMES]
        if bad or not self.strategies:
            raise UsageError(f"--strategies: unknown strategies {bad}; expected names from {', '.join(STRATEGY_NAMES)}")
        unique(self.strategies, "--strategies")
        no_expert = [t for t in self.tasks if t not in COMPOUNDING_TASKS]
        for s in (s for s in self.strategies if s in EXPERT_STRATEGIES):
            if no_expert:
                raise UsageError(f"--strategies {s} needs the task's expert, which only the compounding tasks "
                                 f"({', '.join(COMPOUNDING_TASKS)}) have; --task {','.join(no_expert)} has none")
        unique([positive_int(n, "--len") for n in self.lengths], "--len")
        for name, minimum in (("seeds", 1), ("steps", 1), ("batch_size", 1), ("num_train", 1), ("num_test", 2),
                              ("d_model", 1), ("depth", 1), ("num_heads", 1), ("pool_size", 1), ("ckpt_every", 0),
                              ("rl_rows", 2)):
            positive_int(getattr(self, name), _option(name), minimum=minimum)
        if self.d_model % self.num_heads:
            raise UsageError(f"--d-model {self.d_model} is not divisible by --num-heads {self.num_heads}")
        finite(self.lr, "--lr", minimum=0.0, strict=True)
        finite(self.ul_alpha, "--ul-alpha", minimum=0.0)
        for name in ("warmup_frac", "regen_frac", "beta", "ss_max", "rac_fraction", "rl_start_share",
                     "rl_exact_bonus"):
            v = finite(getattr(self, name), _option(name), minimum=0.0)
            if v > 1.0:
                raise UsageError(f"{_option(name)} must lie in [0, 1], got {v}")
        if self.rl_reward not in REWARDS:
            raise UsageError(f"--rl-reward must be one of {', '.join(REWARDS)}, got {self.rl_reward!r}")
        if self.regen_frac == 0.0:
            raise UsageError("--regen-frac must be > 0 (the pool is rebuilt every regen_frac * steps steps)")
        if not 0.0 < self.ss_max < 1.0 and any(s in self.strategies for s in ("ss_exp", "ss_invsig")):
            raise UsageError(f"--ss-max must lie in (0, 1) for ss_exp / ss_invsig, got {self.ss_max}")
        check_device(self.device)
        out_dir(self.out)


def _option(field_name: str) -> str:
    """The command-line spelling of a CompareConfig field (``num_test`` -> ``--num-test``)."""
    return {"lengths": "--len", "tasks": "--task"}.get(field_name, "--" + field_name.replace("_", "-"))


# The config's keys besides the preset name, with their values when neither the preset nor an option sets them.
DEFAULTS: dict[str, Any] = {**{k: v for k, v in asdict(CompareConfig()).items() if k not in ("preset", "progress")},
                            "launch": None}


def _preset_keys() -> set[str]:
    return {k for name in PRESETS for k in PRESETS[name]}


def _lists(cast, option):
    return lambda text: parse_list(text, cast, option)


# option destination -> (config key, how its text is read); every other config key comes from the
# preset, the dataclass default or --config
OPTIONS = {"tasks": ("tasks", _lists(str, "--task")), "lengths": ("lengths", _lists(int, "--len")),
           "strategies": ("strategies", _lists(str, "--strategies")),
           **{k: (k, lambda v: v) for k in ("seeds", "out", "device", "steps", "batch_size", "lr", "num_train",
                                             "num_test", "d_model", "depth", "num_heads", "pos", "pool_size",
                                             "warmup_frac", "regen_frac", "beta", "ss_max", "rac_fraction",
                                             "ul_alpha", "rl_rows", "rl_start_share", "rl_exact_bonus",
                                             "rl_reward")}}


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def build_parser(prog: str = "latentar compare discrete") -> argparse.ArgumentParser:
    if not prog.startswith("latentar"):
        prog = f"latentar {prog}"
    p = ArgumentParser(
        prog=prog,
        description=textwrap.fill(width=100, text="SFT vs scheduled sampling (linear, exponential, inverse sigmoid, fully annealed) vs BASH vs "
                    "RAC vs relabelling vs unlikelihood vs REINFORCE / MIXER on synthetic byte seq2seq tasks: greedy "
                    "exact match, the task checker and the exposure gap of a CharLM trained from scratch, per task, "
                    "strategy, answer length and seed, with 95% intervals and a verdict per published claim. "
                    "Resumable: rerun the same command to finish an interrupted comparison; a rerun with other "
                    "settings trains new cells beside the old ones."),
        epilog=presets_epilog("compare_discrete", PRESETS))
    add = preset_option_adder(p, _preset_keys(), DEFAULTS)
    p.add_argument("--task", dest="tasks", default=None,
                   help=f"comma-separated tasks from {','.join(TASKS)}; {','.join(COMPOUNDING_TASKS)} compound "
                        f"{FROM_PRESET}")
    p.add_argument("--len", dest="lengths", default=None,
                   help=f"comma-separated answer lengths, bytes or steps (compounding tasks), e.g. 4,12 {FROM_PRESET}")
    p.add_argument("--strategies", default=None,
                   help=f"comma-separated strategies from {','.join(STRATEGY_NAMES)}; relabel needs a compounding "
                        f"task; a preset that names none runs every strategy {FROM_PRESET}")
    add("--seeds", "seeds", "number of seeds 0..n-1 per cell", type=int)
    p.add_argument("--preset", default="quick", choices=list(PRESETS),
                   help="budget: smoke (<= 2 min on CPU), quick (<= 15 min on 2 cores), standard (the README's "
                        "table: chain and add_lsd at 6 and 10 steps, 7 arms, 84 cells, about 2 h on 2 cores), full "
                        "(GPU)")
    add("--out", "out", "output folder. A rerun with the same settings resumes it; one with other settings "
                        "(--steps, --lr, ...) trains new cells beside the old ones, and results.* show only the "
                        "current settings' cells")
    add("--device", "device", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, ...")
    add("--steps", "steps", "optimizer steps per cell", type=int)
    add("--batch-size", "batch_size", "sequences per step", type=int)
    add("--lr", "lr", "peak AdamW learning rate", type=float)
    add("--num-train", "num_train", "training examples per cell", type=int)
    add("--num-test", "num_test", "held-out examples per length", type=int)
    add("--d-model", "d_model", "CharLM width", type=int)
    add("--depth", "depth", "CharLM blocks", type=int)
    add("--num-heads", "num_heads", "CharLM attention heads", type=int)
    add("--pos", "pos", "CharLM positions: learned absolute table or rotary", choices=["learned", "rope"])
    add("--pool-size", "pool_size", "BASH / RAC / relabel: sequences regenerated per pool", type=int)
    add("--warmup-frac", "warmup_frac", "BASH / RAC / relabel / reinforce / mixer: share of the steps trained "
                                        "with SFT alone", type=float)
    add("--regen-frac", "regen_frac", "BASH / RAC / relabel: share of the steps between pool rebuilds", type=float)
    add("--beta", "beta", "BASH: share of model samples in the pool", type=float)
    add("--ss-max", "ss_max", "ss, ss_exp, ss_invsig: p at the end of training (ss_anneal goes to 1)", type=float)
    add("--rac-fraction", "rac_fraction", "RAC: share of SFT items formatted as f(x, y) -> y", type=float)
    add("--ul-alpha", "ul_alpha", "unlikelihood: weight alpha", type=float)
    add("--rl-rows", "rl_rows", "reinforce / mixer: batch rows rolled out per step, >= 2", type=int)
    add("--rl-start-share", "rl_start_share", "mixer: sampled share of the answer after the warm-up, annealed to 1",
        type=float)
    add("--rl-exact-bonus", "rl_exact_bonus", "reinforce / mixer: reward weight of an exact match vs "
                                              "correct-prefix credit", type=float)
    add("--rl-reward", "rl_reward", "reinforce / mixer: correct-prefix credit ('prefix') or smoothed BLEU-4 ('bleu')",
        choices=REWARDS)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_common_args(p)
    add_config_args(p, "compare discrete")
    return add_launch_args(p)


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved config of parsed ``args`` (see the module docstring), checked: a UsageError names
    the first bad setting before anything runs."""
    return CompareConfig.resolve(args, DEFAULTS, OPTIONS)


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    """The :class:`CompareConfig` of parsed ``args`` (checked)."""
    return CompareConfig.from_config(resolve(args), progress=not args.no_progress)


def main(argv: list[str] | None = None, command: str = "compare discrete") -> int:
    return run_command_line(argv, command, lambda c: build_parser(f"latentar {c}"), "latentar.sweeps.discrete:run_cli",
                            resolve)

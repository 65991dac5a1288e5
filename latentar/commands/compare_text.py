"""``latentar compare text``'s command line and config, without torch (the comparison itself:
:mod:`latentar.sweeps.text_compare`).

The resolved config is :class:`TextCompareConfig`'s fields (less ``progress``) and ``launch``: the
dataclass defaults, then the preset (``latentar/configs/presets/compare_text/<preset>.yaml``) or a
saved ``--config``, then the options given (``--gen-len`` sets ``gen_lens``, every other option the
key of its name).
"""
from __future__ import annotations

import argparse
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from latentar.cliargs import (FROM_PRESET, ArgumentParser, UsageError, add_common_args, add_config_args,
                              check_device, finite, out_dir, parse_list, positive_int, unique)
from latentar.commands import PresetConfig, preset_option_adder, presets_epilog, run_command_line
from latentar.commands.compare_discrete import EXPERT_STRATEGIES, REWARDS, STRATEGY_NAMES
from latentar.configs import Presets
from latentar.sweeps.runner import add_launch_args

PRESET_DIR = "compare_text"
PRESETS = Presets(PRESET_DIR)
# compare discrete's strategies that need no task expert (RAC needs a prompt / answer split)
TEXT_STRATEGIES = tuple(s for s in STRATEGY_NAMES if s not in EXPERT_STRATEGIES and s != "rac")


@dataclass
class TextCompareConfig(PresetConfig):
    """Everything one text comparison depends on (fields shared with ``CompareConfig`` carry the
    same meaning, so ``build_strategy`` reads either)."""

    strategies: list[str] = field(default_factory=lambda: ["sft", "ss", "bash", "unlikelihood", "mixer"])
    seeds: int = 3
    preset: str = "quick"
    out: str = "runs/text"
    device: str = "auto"
    steps: int = 400
    batch_size: int = 32
    lr: float = 2e-3
    block_size: int = 96
    max_bytes: int = 1_000_000
    d_model: int = 128
    depth: int = 2
    num_heads: int = 4
    pos: str = "learned"
    prompt_len: int = 32
    gen_lens: list[int] = field(default_factory=lambda: [16, 32, 64])
    num_prompts: int = 64
    pool_size: int = 128
    ckpt_every: int = 100
    warmup_frac: float = 0.5
    regen_frac: float = 0.25
    beta: float = 0.2
    ss_max: float = 0.25
    rac_fraction: float = 0.25       # unused (RAC needs a prompt / answer split); kept for build_strategy
    ul_alpha: float = 1.0
    rl_rows: int = 8
    rl_start_share: float = 0.25
    rl_exact_bonus: float = 0.5
    rl_reward: str = "bleu"          # on text a sampled continuation almost never shares a prefix with the block
    test_seed: int = 1000
    progress: bool = True
    preset_dir: ClassVar[str] = PRESET_DIR

    def validate(self) -> None:
        bad = [s for s in self.strategies if s not in TEXT_STRATEGIES]
        if bad or not self.strategies:
            raise UsageError(f"--strategies: {bad} cannot run on text; expected names from {', '.join(TEXT_STRATEGIES)}")
        unique(self.strategies, "--strategies")
        unique([positive_int(n, "--gen-len") for n in self.gen_lens], "--gen-len")
        for name, minimum in (("seeds", 1), ("steps", 1), ("batch_size", 1), ("block_size", 2), ("max_bytes", 1),
                              ("d_model", 1), ("depth", 1), ("num_heads", 1), ("prompt_len", 1), ("num_prompts", 2),
                              ("pool_size", 1), ("ckpt_every", 0), ("rl_rows", 2)):
            positive_int(getattr(self, name), "--" + name.replace("_", "-"), minimum=minimum)
        if self.d_model % self.num_heads:
            raise UsageError(f"--d-model {self.d_model} is not divisible by --num-heads {self.num_heads}")
        if self.prompt_len + max(self.gen_lens) > self.block_size + 1:
            raise UsageError(f"--prompt-len {self.prompt_len} + the longest --gen-len {max(self.gen_lens)} exceeds "
                             f"--block-size {self.block_size} + 1: the continuation would reach positions the model "
                             "never trained on")
        finite(self.lr, "--lr", minimum=0.0, strict=True)
        if self.rl_reward not in REWARDS:
            raise UsageError(f"--rl-reward must be one of {', '.join(REWARDS)}, got {self.rl_reward!r}")
        check_device(self.device)
        out_dir(self.out)


DEFAULTS: dict[str, Any] = {**{k: v for k, v in asdict(TextCompareConfig()).items() if k not in ("preset", "progress")},
                            "launch": None}
OPTIONS = {"strategies": ("strategies", lambda t: parse_list(t, str, "--strategies")),
           "gen_lens": ("gen_lens", lambda t: parse_list(t, int, "--gen-len")),
           **{k: (k, lambda v: v) for k in ("seeds", "out", "device", "steps", "batch_size", "lr", "block_size",
                                             "prompt_len", "num_prompts", "d_model", "depth", "num_heads", "rl_reward")}}


def build_parser(prog: str = "latentar compare text") -> argparse.ArgumentParser:
    if not prog.startswith("latentar"):
        prog = f"latentar {prog}"
    p = ArgumentParser(
        prog=prog,
        description=textwrap.fill(width=100, text="Long-form text: a CharLM per exposure strategy and seed on the standard library's sources; "
                    "greedy continuations of held-out prompts scored by seq-rep-4, distinct-4, loop rate and the "
                    "reference continuation's NLL under own versus reference prefixes, against generation length. "
                    "Resumable: rerun the same command to finish an interrupted comparison."),
        epilog=presets_epilog("compare_text", PRESETS))
    add = preset_option_adder(p, {k for name in PRESETS for k in PRESETS[name]}, DEFAULTS)
    p.add_argument("--strategies", default=None,
                   help=f"comma-separated strategies from {','.join(TEXT_STRATEGIES)} {FROM_PRESET}")
    add("--seeds", "seeds", "seeds 0..n-1 per strategy", type=int)
    p.add_argument("--preset", default="quick", choices=list(PRESETS),
                   help="budget: smoke (seconds), quick (minutes on 2 cores), full (GPU)")
    add("--out", "out", "output folder; a rerun resumes it")
    add("--device", "device", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, ...")
    p.add_argument("--gen-len", dest="gen_lens", default=None,
                   help=f"comma-separated generation lengths L in bytes, e.g. 16,32,64 {FROM_PRESET}")
    add("--steps", "steps", "optimizer steps per cell", type=int)
    add("--batch-size", "batch_size", "blocks per step", type=int)
    add("--lr", "lr", "peak AdamW learning rate", type=float)
    add("--block-size", "block_size", "training block in bytes", type=int)
    add("--prompt-len", "prompt_len", "held-out prompt bytes", type=int)
    add("--num-prompts", "num_prompts", "held-out prompts", type=int)
    add("--d-model", "d_model", "CharLM width", type=int)
    add("--depth", "depth", "CharLM blocks", type=int)
    add("--num-heads", "num_heads", "CharLM attention heads", type=int)
    add("--rl-reward", "rl_reward", "reinforce / mixer: smoothed BLEU-4 of the sampled suffix ('bleu') or "
                                    "correct-prefix credit ('prefix', ~0 on free text)", choices=REWARDS)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_common_args(p)
    add_config_args(p, "compare text")
    return add_launch_args(p)


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved config of parsed ``args`` (see the module docstring), checked."""
    return TextCompareConfig.resolve(args, DEFAULTS, OPTIONS)


def config_from_args(args: argparse.Namespace) -> TextCompareConfig:
    """The :class:`TextCompareConfig` of parsed ``args`` (checked)."""
    return TextCompareConfig.from_config(resolve(args), progress=not args.no_progress)


def main(argv: list[str] | None = None, command: str = "compare text") -> int:
    return run_command_line(argv, command, lambda c: build_parser(f"latentar {c}"),
                            "latentar.sweeps.text_compare:run_cli", resolve)

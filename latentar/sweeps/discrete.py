"""`latentar compare discrete`: SFT vs scheduled sampling vs BASH vs RAC on byte seq2seq tasks.

    latentar compare discrete --task reverse --len 8,16,32,64 --strategies sft,ss,bash,rac \\
        --seeds 3 --preset quick --out runs/discrete

For every (strategy, answer length, seed) cell: build the task's train split (``SeqTask``, seeded
by the cell's seed) and a fixed held-out split, train a ``CharLM`` from scratch with the shared
Trainer and ``ExposureTask(model, strategy)``, then evaluate

* greedy exact match of the answer (prompt fed, answer decoded up to EOS) on the held-out split;
* the exposure meter (``latentar.exposure.exposure_curve``, greedy): per-position token error
  under the model's own prefix against under the ground-truth prefix, kept at the answer positions
  (answer index 0..len, the last one being EOS).

Every strategy gets the same model, data, steps and batch size; the strategies are the library's
(``latentar.exposure``): TeacherForcing ("sft"), ScheduledSampling ("ss", two-pass, sampled tokens,
p ramped linearly from 0 to ``--ss-max``), BASH ("bash", beta = 0.2, Cen et al. Alg. 1) and RAC
("rac", Cen et al. Alg. 2). BASH and RAC train SFT alone for the first ``warmup_frac`` of the
steps, then rebuild their pool every ``regen_frac`` of the steps (offline iterations). RAC's SFT
data has ``--rac-fraction`` of its items formatted as f(x, y) -> y so the model can read a
reference (see ``latentar.exposure.rac``).

Outputs in ``--out``: ``results.csv`` (one row per cell), ``results.md`` (mean ± std over seeds,
and exact match as a strategy x length table), ``exact_match_vs_length.png``,
``error_vs_position_len<L>.png``, and per cell ``cells/<id>/`` (Trainer checkpoint, metrics,
``curve.json``, the trained model, ``settings.json``).

Reruns: a cell's folder ``cells/<id>-<hash>`` is keyed by a hash of every setting that changes its
result (:func:`cell_settings`: the task, steps, batch, learning rate, data sizes, model and
strategy hyper-parameters; not the lists of lengths / strategies / seeds, the device or the
checkpoint interval). Rerunning with the same settings skips finished cells and resumes an
interrupted one from its checkpoint; with other settings it trains new cells beside the old ones,
and results.csv, results.md and the plots show only the current settings' cells.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from latentar.cliargs import (ArgumentParser, UsageError, check_device, finite, out_dir, positive_int,
                              unique)
from latentar.data.seq_tasks import EOS, PAD, TASKS, SeqTask
from latentar.exposure import BASH, ExposureTask, ScheduledSampling, TeacherForcing, exposure_curve
from latentar.exposure.base import Strategy
from latentar.exposure.rac import RAC, ReferenceTemplate
from latentar.metrics.plots import save_lines
from latentar.models.char_lm import CharLM, complete, left_align
from latentar.sweeps.runner import SweepRunner, add_launch_args, aggregate, launch_options, markdown_table, parse_list
from latentar.train import Trainer

# The strategy classes, by command-line name: the library's own, never re-implemented here.
STRATEGIES: dict[str, type[Strategy]] = {"sft": TeacherForcing, "ss": ScheduledSampling, "bash": BASH, "rac": RAC}
METRICS = ("exact_match", "token_acc", "first_error_mean", "err_own_mean", "err_gt_mean", "err_own_last")

# Budgets per preset; options given on the command line override them.
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(lengths=[4, 8], seeds=1, steps=40, batch_size=32, lr=1e-3, num_train=2000, num_test=64,
                  d_model=32, depth=1, num_heads=2, pool_size=64, ckpt_every=0),
    "quick": dict(lengths=[8, 16, 32, 64], seeds=3, steps=800, batch_size=32, lr=2e-3, num_train=50_000,
                  num_test=256, d_model=64, depth=2, num_heads=4, pool_size=512, ckpt_every=100),
    "full": dict(lengths=[8, 16, 32, 64], seeds=3, steps=4000, batch_size=128, lr=1e-3, num_train=200_000,
                 num_test=1000, d_model=128, depth=4, num_heads=4, pool_size=2048, ckpt_every=250),
}


@dataclass
class CompareConfig:
    """Everything one comparison depends on (the command line and the Hydra config map onto it)."""

    task: str = "reverse"
    lengths: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    strategies: list[str] = field(default_factory=lambda: ["sft", "ss", "bash", "rac"])
    seeds: int = 3
    preset: str = "quick"
    out: str = "runs/discrete"
    device: str = "auto"
    steps: int = 800
    batch_size: int = 32
    lr: float = 2e-3
    num_train: int = 50_000
    num_test: int = 256
    d_model: int = 64
    depth: int = 2
    num_heads: int = 4
    pos: str = "learned"            # CharLM positions: learned absolute (reverse needs absolute offsets) | rope
    pool_size: int = 512
    ckpt_every: int = 100
    warmup_frac: float = 0.5        # BASH / RAC: share of the steps trained with SFT alone
    regen_frac: float = 0.25        # BASH / RAC: share of the steps between two pool rebuilds
    beta: float = 0.2               # BASH (the paper's value)
    ss_max: float = 0.25            # scheduled sampling: p ramps linearly 0 -> ss_max over training
    rac_fraction: float = 0.25      # RAC: share of SFT items formatted as f(x, y) -> y
    test_seed: int = 1000           # the held-out split is the same for every cell of one length
    progress: bool = True

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "CompareConfig":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
        return cls(preset=preset, **{**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}})

    def validate(self) -> None:
        """Raise a UsageError naming the first setting that cannot run (nothing has started yet)."""
        if self.task not in TASKS:
            raise UsageError(f"--task: unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad:
            raise UsageError(f"--strategies: unknown strategies {bad}; expected names from {', '.join(STRATEGIES)}")
        unique(self.strategies, "--strategies")
        unique([positive_int(n, "--len") for n in self.lengths], "--len")
        for name, minimum in (("seeds", 1), ("steps", 1), ("batch_size", 1), ("num_train", 1), ("num_test", 2),
                              ("d_model", 1), ("depth", 1), ("num_heads", 1), ("pool_size", 1), ("ckpt_every", 0)):
            positive_int(getattr(self, name), _option(name), minimum=minimum)
        if self.d_model % self.num_heads:
            raise UsageError(f"--d-model {self.d_model} is not divisible by --num-heads {self.num_heads}")
        finite(self.lr, "--lr", minimum=0.0, strict=True)
        for name in ("warmup_frac", "regen_frac", "beta", "ss_max", "rac_fraction"):
            v = finite(getattr(self, name), _option(name), minimum=0.0)
            if v > 1.0:
                raise UsageError(f"{_option(name)} must lie in [0, 1], got {v}")
        if self.regen_frac == 0.0:
            raise UsageError("--regen-frac must be > 0 (the pool is rebuilt every regen_frac * steps steps)")
        check_device(self.device)
        out_dir(self.out)


def _option(field_name: str) -> str:
    """The command-line spelling of a CompareConfig field (``num_test`` -> ``--num-test``)."""
    return "--len" if field_name == "lengths" else "--" + field_name.replace("_", "-")


# Fields that only select which cells exist or how they run; every other field keys the cells.
NOT_SETTINGS = ("lengths", "strategies", "seeds", "preset", "out", "device", "progress", "ckpt_every")


def cell_settings(cfg: CompareConfig) -> dict[str, Any]:
    """What changes a cell's result besides its (strategy, len, seed): the rest of the config."""
    return {k: v for k, v in asdict(cfg).items() if k not in NOT_SETTINGS}


def ss_ramp(progress: float, p_max: float) -> float:
    """Scheduled-sampling probability ``p = p_max * e`` at training progress e in [0, 1]."""
    return p_max * min(1.0, max(0.0, progress))


def build_strategy(name: str, cfg: CompareConfig) -> Strategy:
    """The library strategy for a command-line name, with the comparison's budget-relative schedule."""
    warmup = int(round(cfg.warmup_frac * cfg.steps))
    regen = max(1, int(round(cfg.regen_frac * cfg.steps)))
    gen_batch = min(cfg.pool_size, 256)
    if name == "sft":
        return TeacherForcing()
    if name == "ss":
        return ScheduledSampling(schedule=partial(ss_ramp, p_max=cfg.ss_max), mode="sample")
    if name == "bash":
        return BASH(beta=cfg.beta, warmup_steps=warmup, regen_every=regen, pool_size=cfg.pool_size,
                    gen_batch_size=gen_batch)
    if name == "rac":
        return RAC(warmup_steps=warmup, regen_every=regen, pool_size=cfg.pool_size, gen_batch_size=gen_batch,
                   reference_fraction=cfg.rac_fraction, template=ReferenceTemplate())
    raise ValueError(f"unknown strategy {name!r}; expected one of {sorted(STRATEGIES)}")


def model_max_len(train: SeqTask) -> int:
    """Positions every strategy's model needs: the packed sequence plus RAC's reference (same for all)."""
    return train.seq_len + ReferenceTemplate().extra_len(train.length)


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def greedy_answers(model: CharLM, batch: dict, batch_size: int = 256) -> torch.Tensor:
    """Greedy answers ``(N, A+1)`` (answer bytes then EOS; PAD after an early EOS) for a collated
    SeqTask batch: the prompt is fed through the cache, the answer decoded token by token."""
    device = next(model.parameters()).device
    prompts = [p.to(device) for p in left_align(batch["prompt_ids"], batch["prompt_len"])]
    A = int(max(batch["answer_len"])) + 1
    out = []
    for s in range(0, len(prompts), batch_size):
        out.append(complete(model, prompts[s:s + batch_size], A, greedy=True, eos_id=EOS, pad_id=PAD).cpu())
    return torch.cat(out)


def answer_targets(batch: dict) -> torch.Tensor:
    """The reference answers ``(N, A+1)``: answer bytes, EOS, then PAD."""
    A = int(max(batch["answer_len"])) + 1
    out = torch.full((len(batch["answer"]), A), PAD, dtype=torch.long)
    for i, a in enumerate(batch["answer"]):
        out[i, : len(a)] = torch.tensor(list(a), dtype=torch.long)
        out[i, len(a)] = EOS
    return out


def answer_curve(curve_values: np.ndarray, batch: dict) -> list[float | None]:
    """An exposure-meter curve over packed positions -> over answer positions 0..A (A = EOS).

    Exact when every prompt has the same length (copy, reverse, sort); for ``add`` the answer
    start varies and the curve is taken from the shortest prompt's answer start.
    """
    start = int(min(batch["prompt_len"]))
    A = int(max(batch["answer_len"])) + 1
    vals = np.asarray(curve_values, dtype=float)[start: start + A]
    return [None if not np.isfinite(v) else float(v) for v in vals]


def evaluate(model: CharLM, test: SeqTask, seed: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Greedy exact match and the exposure meter on the held-out split: (scalars, curves)."""
    batch = default_collate([test[i] for i in range(len(test))])
    pred, ref = greedy_answers(model, batch), answer_targets(batch)
    valid = ref != PAD
    exact = ((pred == ref) | ~valid).all(1).float().mean().item()
    token_acc = ((pred == ref) & valid).sum().item() / valid.sum().item()
    gen = torch.Generator().manual_seed(seed)
    curve = exposure_curve(model, batch, num_samples=len(test), temperature=0.0, generator=gen)
    own, gt = answer_curve(curve.err_own, batch), answer_curve(curve.err_gt, batch)
    fin = [v for v in own if v is not None]
    q = max(1, len(fin) // 4)
    scalars = {"exact_match": exact, "token_acc": token_acc,
               "err_own_mean": float(np.mean(fin)) if fin else float("nan"),
               "err_gt_mean": float(np.nanmean([np.nan if v is None else v for v in gt])),
               "err_own_last": float(np.mean(fin[-q:])) if fin else float("nan"),
               "first_error_mean": first_error_position(pred, ref)}
    return scalars, {"err_own": own, "err_gt": gt, "meter": curve.to_dict()}


def first_error_position(pred: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean index of the first wrong answer token (the answer length + 1 for an exact match)."""
    wrong = (pred != ref) & (ref != PAD)
    length = (ref != PAD).sum(1)
    first = torch.where(wrong.any(1), wrong.float().argmax(1), length)
    return float(first.float().mean())


# --------------------------------------------------------------------------------------------------
# One cell
# --------------------------------------------------------------------------------------------------
def run_cell(cell: dict[str, Any], cell_dir: Path, cfg: CompareConfig) -> dict[str, Any]:
    """Train one CharLM with one strategy at one answer length and seed; evaluate; return scalars."""
    name, length, seed = cell["strategy"], int(cell["len"]), int(cell["seed"])
    torch.manual_seed(seed)
    train = SeqTask(cfg.task, length, cfg.num_train, seed=seed, split="train")
    test = SeqTask(cfg.task, length, cfg.num_test, seed=cfg.test_seed, split="test")
    model = CharLM(d_model=cfg.d_model, depth=cfg.depth, num_heads=cfg.num_heads, max_len=model_max_len(train),
                   pos=cfg.pos)
    strategy = build_strategy(name, cfg)
    task = ExposureTask(model, strategy, data=train)
    fit_data = strategy.sft_dataset(train, seed=seed) if isinstance(strategy, RAC) else train
    trainer = Trainer(max_steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=min(50, cfg.steps // 10),
                      device=cfg.device, out_dir=str(cell_dir), ckpt_every=cfg.ckpt_every, seed=seed,
                      progress=False, log_every=max(1, min(50, cfg.steps // 4)), desc=f"{name} len={length}")
    t0 = time.perf_counter()
    fit = trainer.fit(task, fit_data)
    train_s = time.perf_counter() - t0
    model.save_pretrained(cell_dir / "model")
    scalars, curves = evaluate(model, test, seed)
    (cell_dir / "curve.json").write_text(json.dumps(curves))
    out = {**scalars, "train_loss": fit["loss"], "train_seconds": train_s,
           "backbone_calls": float(model.num_backbone_calls)}
    regen = getattr(strategy, "last_regen", None) or {}
    for k in ("sample_share", "corrected_share", "label_acc", "free_run_exact"):
        if k in regen:
            out[f"pool_{k}"] = regen[k]
    return out


# --------------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------------
def cells_of(cfg: CompareConfig) -> list[dict[str, Any]]:
    return [{"strategy": s, "len": int(n), "seed": k} for n in cfg.lengths for s in cfg.strategies
            for k in range(cfg.seeds)]


def run(cfg: CompareConfig, launch: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) every cell, then write results.csv, results.md and the plots in ``cfg.out``.
    ``launch``: how the cells run (``SweepRunner``'s workers / launcher, see ``launch_options``;
    default: one by one in this process); it never changes the results."""
    cfg.validate()
    out = Path(cfg.out)
    runner = SweepRunner(out, progress=cfg.progress, settings=cell_settings(cfg), **(launch or {}))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    rows = runner.run(cells_of(cfg), partial(run_cell, cfg=cfg), desc=f"compare discrete ({cfg.task})")
    write_report(rows, cfg, out)
    return rows


def _pivot(agg: list[dict[str, Any]], cfg: CompareConfig, metric: str) -> str:
    header = "| strategy | " + " | ".join(f"len {n}" for n in cfg.lengths) + " |"
    lines = [header, "|" + "---|" * (len(cfg.lengths) + 1)]
    for s in cfg.strategies:
        cells = []
        for n in cfg.lengths:
            r = next((a for a in agg if a["strategy"] == s and a["len"] == n), None)
            cells.append("" if r is None else f"{r[metric + '_mean']:.3f} ± {r[metric + '_std']:.3f}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(rows: list[dict[str, Any]], cfg: CompareConfig, out: Path) -> None:
    """results.md (tables) and the PNG plots from the finished rows and the cells' curve files."""
    agg = aggregate(rows, by=["strategy", "len"], metrics=list(METRICS))
    cols = ["strategy", "len", "n"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    text = [f"# compare discrete: task={cfg.task}, preset={cfg.preset}, seeds={cfg.seeds}, steps={cfg.steps}, "
            f"batch={cfg.batch_size}, CharLM d={cfg.d_model} depth={cfg.depth} pos={cfg.pos}\n",
            "## Greedy exact match on held-out prompts (mean ± std over seeds)\n", _pivot(agg, cfg, "exact_match"),
            "\n## Per-position token error under own prefixes, mean over answer positions\n",
            _pivot(agg, cfg, "err_own_mean"), "\n## All metrics\n", markdown_table(agg, columns=cols)]
    (out / "results.md").write_text("\n".join(text))

    series = {}
    for s in cfg.strategies:
        rs = [next((a for a in agg if a["strategy"] == s and a["len"] == n), None) for n in cfg.lengths]
        if all(r is not None for r in rs):
            series[s] = ([r["exact_match_mean"] for r in rs], [r["exact_match_std"] for r in rs])
    save_lines(out / "exact_match_vs_length.png", cfg.lengths, series, xlabel="answer length",
               ylabel="greedy exact match", title=f"{cfg.task}: exact match vs answer length", logx=True)

    runner = SweepRunner(out, progress=False, settings=cell_settings(cfg))
    for n in cfg.lengths:
        curves: dict[str, tuple] = {}
        for s in cfg.strategies:
            own = []
            for cell in (c for c in cells_of(cfg) if c["strategy"] == s and c["len"] == n):
                f = runner.cell_dir(cell) / "curve.json"
                if f.exists():
                    own.append([np.nan if v is None else v for v in json.loads(f.read_text())["err_own"]])
            if own:
                arr = np.asarray(own, dtype=float)
                curves[s] = (np.nanmean(arr, 0), np.nanstd(arr, 0) if len(own) > 1 else None)
        if curves:
            A = len(next(iter(curves.values()))[0])
            save_lines(out / f"error_vs_position_len{n}.png", list(range(A)), curves,
                       xlabel="answer position (last = EOS)", ylabel="token error, own prefix (greedy)",
                       title=f"{cfg.task}, answer length {n}")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def build_parser(prog: str = "latentar compare discrete") -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="SFT vs scheduled sampling vs BASH vs RAC on synthetic byte seq2seq tasks: greedy exact "
                    "match and per-position error of a CharLM trained from scratch, per strategy, answer length "
                    "and seed. Resumable: rerun the same command to finish an interrupted comparison; a rerun "
                    "with other settings trains new cells beside the old ones.",
        epilog="presets (values used unless an option overrides them):\n" + "\n".join(
            f"  {k}: " + ", ".join(f"{a}={b}" for a, b in v.items()) for k, v in PRESETS.items()))
    p.add_argument("--task", default="reverse", choices=TASKS, help="seq2seq task (default: reverse)")
    p.add_argument("--len", dest="lengths", default=None,
                   help="comma-separated answer lengths in bytes, e.g. 8,16,32,64 (default: the preset's)")
    p.add_argument("--strategies", default="sft,ss,bash,rac",
                   help=f"comma-separated strategies from {','.join(STRATEGIES)} (default: all)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds 0..n-1 per cell (default: the preset's)")
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS),
                   help="budget: smoke (<= 2 min on CPU), quick (the note's table), full (default: quick)")
    p.add_argument("--out", default="runs/discrete",
                   help="output folder (default: runs/discrete). A rerun with the same settings resumes it; one with "
                        "other settings (--steps, --lr, ...) trains new cells beside the old ones, and results.* "
                        "show only the current settings' cells")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, ...")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per cell (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (default: the preset's)")
    p.add_argument("--num-train", type=int, default=None, help="training examples per cell (default: the preset's)")
    p.add_argument("--num-test", type=int, default=None, help="held-out examples per length (default: the preset's)")
    p.add_argument("--d-model", type=int, default=None, help="CharLM width (default: the preset's)")
    p.add_argument("--depth", type=int, default=None, help="CharLM blocks (default: the preset's)")
    p.add_argument("--num-heads", type=int, default=None, help="CharLM attention heads (default: the preset's)")
    p.add_argument("--pos", default=None, choices=["learned", "rope"],
                   help="CharLM positions: learned absolute table or rotary (default: learned)")
    p.add_argument("--pool-size", type=int, default=None,
                   help="BASH / RAC: sequences regenerated per pool (default: the preset's)")
    p.add_argument("--warmup-frac", type=float, default=None,
                   help="BASH / RAC: share of the steps trained with SFT alone before the first pool (default: 0.5)")
    p.add_argument("--regen-frac", type=float, default=None,
                   help="BASH / RAC: share of the steps between pool rebuilds (default: 0.25)")
    p.add_argument("--beta", type=float, default=None, help="BASH: share of model samples in the pool (default: 0.2)")
    p.add_argument("--ss-max", type=float, default=None,
                   help="scheduled sampling: p ramps linearly from 0 to this at the end of training (default: 0.25)")
    p.add_argument("--rac-fraction", type=float, default=None,
                   help="RAC: share of SFT items formatted as f(x, y) -> y (default: 0.25)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return add_launch_args(p)


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    overrides = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "num_train", "num_test", "d_model",
                                               "depth", "num_heads", "pos", "pool_size", "warmup_frac", "regen_frac",
                                               "beta", "ss_max", "rac_fraction", "seeds")}
    if args.lengths is not None:
        overrides["lengths"] = parse_list(args.lengths, int, "--len")
    overrides["strategies"] = parse_list(args.strategies, str, "--strategies")
    return CompareConfig.from_preset(args.preset, task=args.task, out=args.out, device=args.device,
                                     progress=not args.no_progress, **overrides)


def main(argv: list[str] | None = None, command: str = "compare discrete") -> int:
    args = build_parser(f"latentar {command}").parse_args(argv)
    cfg = config_from_args(args)
    cfg.validate()   # every option checked before anything trains
    rows = run(cfg, launch_options(args))
    print((Path(cfg.out) / "results.md").read_text())
    print(f"{len(rows)} cells; results in {cfg.out}/results.csv, results.md, *.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

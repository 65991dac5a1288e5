"""`latentar compare discrete`: SFT, scheduled sampling, BASH, RAC, relabelling, unlikelihood and a
sequence-level objective on byte seq2seq tasks, where exposure bias can (compounding tasks) or
cannot (copy, reverse, sort) exist.

    latentar compare discrete --task running_sum,chain,add_lsd --len 8,16 --seeds 3 --preset quick \\
        --out runs/discrete

For every (task, strategy, length, seed) cell: build the task's train split (``SeqTask``, seeded by
the cell's seed) and a fixed held-out split, train a ``CharLM`` from scratch with the shared
Trainer and ``ExposureTask(model, strategy)``, then evaluate on the held-out split

* greedy exact match of the answer (prompt fed, answer decoded up to EOS), and for the
  compounding tasks (``latentar.data.compounding``) the checker's ``final_exact`` (the final
  answer), ``step_exact`` (steps equal to the reference's) and ``step_valid`` (steps correct given
  the previous step as written);
* the exposure meter (``latentar.exposure.exposure_curve``, greedy): per-position token error
  under the model's own prefix (``err_own``) against under the ground-truth prefix (``err_gt``)
  at the answer positions; ``exposure_gap = err_own_mean - err_gt_mean``. A task *compounds*
  when SFT's gap has a 95% interval over seeds above 0 at the longest length (copy / reverse /
  sort: every answer token depends on the prompt alone, so the gap stays near 0).

Budget rule: every strategy gets the same backbone, data, optimizer steps, batch size and learning
rate (equal optimizer steps); the extra passes a strategy spends (SS's prediction pass, BASH / RAC /
Relabel pool generation, REINFORCE rollouts) are its cost, reported as ``train_seconds``.

Strategies (the library's, ``latentar.exposure``; schedules relative to ``--steps``):
* ``sft``: TeacherForcing.
* ``ss``, ``ss_exp``, ``ss_invsig``: two-pass ScheduledSampling (sampled tokens) with p rising to
  ``--ss-max`` at the end of training, linearly, exponentially (p = 1 - k^e, k = 1 - ss_max) and as
  an inverse sigmoid (b = 0.1, midpoint c = 1 + b ln(1/ss_max - 1) so that p(1) = ss_max), the three
  schedules of Bengio et al. (2015); ``ss_anneal``: linear to p = 1, the fully annealed limit.
* ``bash``: BASH (beta = 0.2, Cen et al. Alg. 1); ``rac``: RAC (Alg. 2, reference template); both
  SFT alone for ``--warmup-frac`` of the steps, then a new pool every ``--regen-frac``.
* ``relabel``: DAgger / optimal-completion relabelling of the model's own prefixes by the task's
  expert (``SeqTask.expert_targets``; compounding tasks only), with BASH's pool schedule.
* ``unlikelihood``: token-level unlikelihood of previous-context candidates (Welleck et al. 2020,
  alpha = ``--ul-alpha``).
* ``reinforce``, ``mixer``: REINFORCE with a leave-one-out baseline on ``--rl-rows`` rows per step
  after the warm-up, on the whole answer (``reinforce``) or MIXER's annealed suffix (``mixer``).

Outputs in ``--out``: ``results.csv`` (one row per cell), ``results.md`` (per task: exact match as
a strategy x length table with 95% intervals; the compounding table; one verdict row per published
claim, ``latentar.sweeps.discrete_verdicts``), per task ``<task>_exact_vs_length.png``,
``<task>_exposure_len<L>.png`` (SFT's own vs teacher-forced error per position) and
``<task>_error_len<L>.png`` (own-prefix error per strategy), and per cell ``cells/<id>/``
(Trainer checkpoint, metrics, ``curve.json``, the trained model, ``settings.json``).

Reruns: a cell's folder ``cells/<id>-<hash>`` is keyed by its (task, strategy, len, seed) and a
hash of every other setting that changes its result (:func:`cell_settings`: steps, batch, learning
rate, data sizes, model and strategy hyper-parameters; not the lists of tasks / lengths /
strategies / seeds, the device, the workers or the checkpoint interval). Rerunning with the same
settings skips finished cells and resumes an interrupted one from its checkpoint; with other
settings it trains new cells beside the old ones, and results.csv, results.md and the plots show
only the current settings' cells.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

# The command line and the config (torch-free, so `--help` is instant) live in latentar.commands.compare_discrete.
from latentar.commands.compare_discrete import (PRESETS, CompareConfig, EXPERT_STRATEGIES, _option,  # noqa: F401
                                                build_parser, config_from_args, main)
from latentar.commands import runner_options
from latentar.configs import save_run
from latentar.data.compounding import COMPOUNDING
from latentar.data.seq_tasks import EOS, PAD, TASKS, SeqTask
from latentar.exposure import (BASH, RAC, ExposureTask, Relabel, ScheduledSampling, SequenceLevel, TeacherForcing,
                               TokenUnlikelihood, exposure_curve)
from latentar.exposure.base import Strategy
from latentar.exposure.rac import ReferenceTemplate
from latentar.exposure.sequence_level import REWARDS
from latentar.metrics.plots import save_lines
from latentar.models.char_lm import CharLM, complete, left_align
from latentar.sweeps.discrete_verdicts import COMPETENT_ERR, PENDING, compounding_rows, discrete_verdicts
from latentar.sweeps.runner import SweepRunner, aggregate, markdown_table
from latentar.sweeps.stats import mean_ci
from latentar.train import Trainer

# The strategy classes, by command-line name: the library's own, never re-implemented here.
STRATEGIES: dict[str, type[Strategy]] = {
    "sft": TeacherForcing, "ss": ScheduledSampling, "ss_exp": ScheduledSampling, "ss_invsig": ScheduledSampling,
    "ss_anneal": ScheduledSampling, "bash": BASH, "rac": RAC, "relabel": Relabel, "unlikelihood": TokenUnlikelihood,
    "reinforce": SequenceLevel, "mixer": SequenceLevel,
}
COMPOUNDING_TASKS = tuple(COMPOUNDING)
CHECKER_METRICS = ("final_exact", "step_exact", "step_valid")
METRICS = ("exact_match", *CHECKER_METRICS, "token_acc", "first_error_mean", "err_own_mean", "err_gt_mean",
           "exposure_gap", "err_own_last", "train_seconds")
INVSIG_WIDTH = 0.1  # b of the inverse-sigmoid schedule (progress units)

# Presets: latentar/configs/presets/compare_discrete/<preset>.yaml (PRESETS: a read-only view of them);
# CompareConfig, its checks and the command line: latentar.commands.compare_discrete.


# Fields that only select which cells exist or how they run; every other field keys the cells.
NOT_SETTINGS = ("tasks", "lengths", "strategies", "seeds", "preset", "out", "device", "progress", "ckpt_every")


# Settings added after cells were first cached, with the default that reproduces what those cells
# ran: at that default they are left out of the key, so the cached cells stay valid (any other value
# keys new cells). Only a default that changes no result may be listed here.
ADDED_WITH_OLD_BEHAVIOUR = {"rl_reward": "prefix"}


def cell_settings(cfg: CompareConfig) -> dict[str, Any]:
    """What changes a cell's result besides its (task, strategy, len, seed): the rest of the config."""
    return {k: v for k, v in asdict(cfg).items()
            if k not in NOT_SETTINGS and not (k in ADDED_WITH_OLD_BEHAVIOUR and ADDED_WITH_OLD_BEHAVIOUR[k] == v)}


def ss_ramp(progress: float, p_max: float) -> float:
    """Scheduled-sampling probability ``p = p_max * e`` at training progress e in [0, 1]."""
    return p_max * min(1.0, max(0.0, progress))


def build_strategy(name: str, cfg: CompareConfig, train: SeqTask | None = None) -> Strategy:
    """The library strategy for a command-line name, with the comparison's budget-relative schedule.
    ``train``: the cell's training split (its expert for ``relabel``)."""
    warmup = int(round(cfg.warmup_frac * cfg.steps))
    regen = max(1, int(round(cfg.regen_frac * cfg.steps)))
    gen_batch = min(cfg.pool_size, 256)
    pool = dict(warmup_steps=warmup, regen_every=regen, pool_size=cfg.pool_size, gen_batch_size=gen_batch)
    if name == "sft":
        return TeacherForcing()
    if name == "ss":
        return ScheduledSampling(schedule=partial(ss_ramp, p_max=cfg.ss_max), mode="sample")
    if name == "ss_exp":  # p = 1 - k^e reaches ss_max at e = 1
        return ScheduledSampling(schedule="exponential", schedule_kwargs={"k": 1.0 - cfg.ss_max}, mode="sample")
    if name == "ss_invsig":  # p = 1 / (1 + exp((c - e) / b)) reaches ss_max at e = 1
        c = 1.0 + INVSIG_WIDTH * math.log(1.0 / cfg.ss_max - 1.0)
        return ScheduledSampling(schedule="inverse_sigmoid", schedule_kwargs={"c": c, "b": INVSIG_WIDTH},
                                 mode="sample")
    if name == "ss_anneal":  # linear to p = 1: the fully annealed limit
        return ScheduledSampling(schedule="linear", mode="sample")
    if name == "bash":
        return BASH(beta=cfg.beta, **pool)
    if name == "rac":
        return RAC(reference_fraction=cfg.rac_fraction, template=ReferenceTemplate(), **pool)
    if name == "relabel":
        if train is None or train.compounding is None:
            raise ValueError("relabel needs the training split of a compounding task (its expert)")
        return Relabel(expert=train.expert_targets, pad_id=PAD, **pool)
    if name == "unlikelihood":
        return TokenUnlikelihood(alpha=cfg.ul_alpha)
    if name in ("reinforce", "mixer"):
        return SequenceLevel(warmup=cfg.warmup_frac, mixer=name == "mixer", start_share=cfg.rl_start_share,
                             rollout_rows=cfg.rl_rows, exact_bonus=cfg.rl_exact_bonus, reward=cfg.rl_reward)
    raise ValueError(f"unknown strategy {name!r}; expected one of {sorted(STRATEGIES)}")


def model_max_len(train: SeqTask) -> int:
    """Positions every strategy's model needs: the packed sequence plus RAC's reference (same for all)."""
    return train.seq_len + ReferenceTemplate().extra_len(train.max_answer_len)


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

    Exact when every prompt has the same length (every task but ``add``); for ``add`` the answer
    start varies and the curve is taken from the shortest prompt's answer start.
    """
    start = int(min(batch["prompt_len"]))
    A = int(max(batch["answer_len"])) + 1
    vals = np.asarray(curve_values, dtype=float)[start: start + A]
    return [None if not np.isfinite(v) else float(v) for v in vals]


def checker_scores(test: SeqTask, prompts: list[bytes], pred: torch.Tensor) -> dict[str, float]:
    """Mean of the task checker's final_exact / step_exact / step_valid over the greedy answers to
    ``prompts`` (compounding tasks; NaN for the others, which have no steps)."""
    if test.compounding is None:
        return {m: float("nan") for m in CHECKER_METRICS}
    scores = [test.check(p, a) for p, a in zip(prompts, pred)]
    return {m: float(np.mean([s[m] for s in scores])) for m in CHECKER_METRICS}


def evaluate(model: CharLM, test: SeqTask, seed: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Greedy exact match, the checker and the exposure meter on the held-out split: (scalars, curves)."""
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
    err_own = float(np.mean(fin)) if fin else float("nan")
    err_gt = float(np.nanmean([np.nan if v is None else v for v in gt]))
    scalars = {"exact_match": exact, **checker_scores(test, batch["prompt"], pred), "token_acc": token_acc,
               "err_own_mean": err_own, "err_gt_mean": err_gt, "exposure_gap": err_own - err_gt,
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
    """Train one CharLM with one strategy on one task, answer length and seed; evaluate; return scalars."""
    task_name, name, length, seed = cell["task"], cell["strategy"], int(cell["len"]), int(cell["seed"])
    torch.manual_seed(seed)
    train = SeqTask(task_name, length, cfg.num_train, seed=seed, split="train")
    test = SeqTask(task_name, length, cfg.num_test, seed=cfg.test_seed, split="test")
    model = CharLM(d_model=cfg.d_model, depth=cfg.depth, num_heads=cfg.num_heads, max_len=model_max_len(train),
                   pos=cfg.pos)
    strategy = build_strategy(name, cfg, train)
    task = ExposureTask(model, strategy, data=train)
    fit_data = strategy.sft_dataset(train, seed=seed) if isinstance(strategy, RAC) else train
    trainer = Trainer(max_steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=min(50, cfg.steps // 10),
                      device=cfg.device, out_dir=str(cell_dir), ckpt_every=cfg.ckpt_every, seed=seed,
                      progress=False, log_every=max(1, min(50, cfg.steps // 4)),
                      desc=f"{task_name} {name} len={length}")
    t0 = time.perf_counter()
    fit = trainer.fit(task, fit_data)
    train_s = time.perf_counter() - t0
    model.save_pretrained(cell_dir / "model")
    scalars, curves = evaluate(model, test, seed)
    (cell_dir / "curve.json").write_text(json.dumps(curves))
    out = {**scalars, "train_loss": fit["loss"], "train_seconds": train_s,
           "backbone_calls": float(model.num_backbone_calls)}
    regen = getattr(strategy, "last_regen", None) or {}
    for k in ("sample_share", "corrected_share", "label_acc", "free_run_exact", "relabelled_share"):
        if k in regen:
            out[f"pool_{k}"] = regen[k]
    return out


# --------------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------------
def cells_of(cfg: CompareConfig) -> list[dict[str, Any]]:
    return [{"task": t, "strategy": s, "len": int(n), "seed": k} for t in cfg.tasks for n in cfg.lengths
            for s in cfg.strategies for k in range(cfg.seeds)]


def run(cfg: CompareConfig, launch: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) every cell, then write results.csv, results.md and the plots in ``cfg.out``.
    ``launch``: how the cells run (``SweepRunner``'s workers / launcher, see ``launch_options``;
    default: one by one in this process); it never changes the results."""
    cfg.validate()
    out = Path(cfg.out)
    runner = SweepRunner(out, progress=cfg.progress, settings=cell_settings(cfg), **(launch or {}))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    rows = runner.run(cells_of(cfg), partial(run_cell, cfg=cfg), desc=f"compare discrete ({','.join(cfg.tasks)})")
    write_report(rows, cfg, out)
    return rows


def _pivot(rows: list[dict[str, Any]], cfg: CompareConfig, task: str, metric: str) -> str:
    """strategy x length table of ``metric``: mean [95% t interval] over seeds."""
    lines = ["| strategy | " + " | ".join(f"len {n}" for n in cfg.lengths) + " |",
             "|" + "---|" * (len(cfg.lengths) + 1)]
    for s in cfg.strategies:
        cis = [mean_ci([float(r[metric]) for r in rows if r["task"] == task and r["strategy"] == s
                        and int(r["len"]) == n and r.get(metric) is not None]) for n in cfg.lengths]
        cells = ["" if ci.n == 0 else ci.text() for ci in cis]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def exact_metric(task: str) -> str:
    """The exact-match metric a task is judged by: the checker's final answer where it has one."""
    return "final_exact" if task in COMPOUNDING else "exact_match"


def write_report(rows: list[dict[str, Any]], cfg: CompareConfig, out: Path) -> None:
    """results.md (tables with 95% intervals, the compounding table, the verdicts) and the PNG plots."""
    agg = aggregate(rows, by=["task", "strategy", "len"], metrics=list(METRICS))
    cols = ["task", "strategy", "len", "n"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    text = [f"# compare discrete: tasks={','.join(cfg.tasks)}, preset={cfg.preset}, seeds={cfg.seeds}, "
            f"steps={cfg.steps}, batch={cfg.batch_size}, lr={cfg.lr:g}, CharLM d={cfg.d_model} depth={cfg.depth} "
            f"pos={cfg.pos}\n",
            "Budget rule: equal optimizer steps (same backbone, data, batch and learning rate for every strategy); "
            "the passes a strategy adds are its cost (train_seconds). Every interval is a 95% Student-t interval "
            "over seeds; lengths are answer bytes, or steps for the compounding tasks.\n",
            "## Does each task compound? SFT's own-prefix minus teacher-forced token error\n",
            markdown_table(compounding_rows(rows, cfg.tasks, cfg.lengths))]
    for task in cfg.tasks:
        m = exact_metric(task)
        text += [f"\n## {task}: greedy {m} on held-out prompts\n", _pivot(rows, cfg, task, m)]
        if task in COMPOUNDING:
            text += [f"\n### {task}: step_valid (steps correct given the previous step as written)\n",
                     _pivot(rows, cfg, task, "step_valid")]
        text += [f"\n### {task}: exposure gap (err_own - err_gt)\n", _pivot(rows, cfg, task, "exposure_gap"),
                 f"\n### {task}: training seconds per cell\n", _pivot(rows, cfg, task, "train_seconds")]
    verdicts = discrete_verdicts(rows, cfg.tasks, cfg.lengths, metric_of=exact_metric)
    text += ["\n## Verdicts (paired over seeds, per task and length)\n",
             f"A length at which SFT is not competent (teacher-forced token error > {COMPETENT_ERR:g}) is not "
             "judged. `pending`: the comparison's arms did not run.\n",
             markdown_table([v for v in verdicts if v["verdict"] != PENDING],
                            columns=["task", "len", "claim", "source", "evidence", "verdict"]),
             "\n## All metrics (mean, std over seeds)\n", markdown_table(agg, columns=cols)]
    (out / "results.md").write_text("\n".join(text))
    (out / "verdicts.json").write_text(json.dumps(verdicts, indent=2))
    _plots(rows, cfg, out)


def _ci_half(values: np.ndarray) -> np.ndarray | None:
    """Half-width of the 95% t interval per column of ``values (seeds, X)`` (None for one seed)."""
    if len(values) < 2:
        return None
    cis = [mean_ci(values[:, j]) for j in range(values.shape[1])]
    return np.asarray([c.hi - c.mean if c.n >= 2 else np.nan for c in cis])


def _plots(rows: list[dict[str, Any]], cfg: CompareConfig, out: Path) -> None:
    runner = SweepRunner(out, progress=False, settings=cell_settings(cfg))
    for task in cfg.tasks:
        m = exact_metric(task)
        series = {}
        for s in cfg.strategies:
            vals = [[float(r[m]) for r in rows if r["task"] == task and r["strategy"] == s and int(r["len"]) == n]
                    for n in cfg.lengths]
            if all(vals) and len({len(v) for v in vals}) == 1:
                arr = np.asarray(vals, dtype=float).T  # (seeds, lengths)
                series[s] = (arr.mean(0), _ci_half(arr))
        if series:
            save_lines(out / f"{task}_exact_vs_length.png", cfg.lengths, series, xlabel="answer length",
                       ylabel=f"greedy {m} (95% CI)", title=f"{task}: {m} vs answer length", logx=True,
                       band=f"95% Student-t CI over {cfg.seeds} seeds")
        for n in cfg.lengths:
            own_by: dict[str, list] = {}
            gt_sft = []
            for s in cfg.strategies:
                for cell in (c for c in cells_of(cfg) if c["task"] == task and c["strategy"] == s and c["len"] == n):
                    f = runner.cell_dir(cell) / "curve.json"
                    if f.exists():
                        c = json.loads(f.read_text())
                        own_by.setdefault(s, []).append([np.nan if v is None else v for v in c["err_own"]])
                        if s == "sft":
                            gt_sft.append([np.nan if v is None else v for v in c["err_gt"]])
            if not own_by:
                continue
            curves = {s: (np.nanmean(np.asarray(v, float), 0), _ci_half(np.asarray(v, float)))
                      for s, v in own_by.items()}
            A = len(next(iter(curves.values()))[0])
            ci = f"95% Student-t CI over {max(len(v) for v in own_by.values())} seeds"
            save_lines(out / f"{task}_error_len{n}.png", list(range(A)), curves,
                       xlabel="answer position (last = EOS)", ylabel="token error, own prefix (greedy, 95% CI)",
                       title=f"{task}, answer length {n}", band=ci)
            if gt_sft:
                own, gt = np.asarray(own_by["sft"], float), np.asarray(gt_sft, float)
                save_lines(out / f"{task}_exposure_len{n}.png", list(range(A)),
                           {"SFT, own prefix": (np.nanmean(own, 0), _ci_half(own)),
                            "SFT, ground-truth prefix": (np.nanmean(gt, 0), _ci_half(gt))},
                           xlabel="answer position (last = EOS)", ylabel="token error (greedy, 95% CI)",
                           title=f"{task}, length {n}: does the error compound?", band=ci)


# --------------------------------------------------------------------------------------------------
# Command line (the parser and the config: latentar.commands.compare_discrete)
# --------------------------------------------------------------------------------------------------
def run_cli(args: argparse.Namespace, config: dict[str, Any], command: str = "compare discrete") -> int:
    """Run the resolved ``config`` of ``latentar compare discrete`` (checked before: nothing has run)."""
    cfg = CompareConfig.from_config(config, progress=not args.no_progress)
    save_run(cfg.out, command, config, getattr(args, "argv", None))
    rows = run(cfg, runner_options(args, config))
    print((Path(cfg.out) / "results.md").read_text())
    print(f"{len(rows)} cells; results in {cfg.out}/results.csv, results.md, verdicts.json, *.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

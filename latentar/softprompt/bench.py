"""Exact-reconstruction rate against target length, per objective: ``latentar softprompt bench``.

What: for every target length L and objective, fit one fresh soft prompt to each of ``targets``
held-out snippets of L characters (``latentar.data.text_snippets(num, L, split="val")``, the same
snippets for every objective, prompt seed = snippet index) and record the reconstruction report.
Cells (objective, length, target) run through :class:`latentar.sweeps.runner.SweepRunner`, keyed
by a hash of the settings that change a fit (the model, prompt size, init, steps, lr, the batch
size, the snippet split and seed; not the number of targets: snippet i is the same for any count).

Batches: targets ``c*B .. c*B + B - 1`` of one objective and length are fitted together by
:func:`latentar.softprompt.fit.fit_soft_prompts` (B = ``batch_size``; one LM forward and backward
per step for the B prompts, each row its own fit), always as a full batch (snippets past
``targets`` are fitted and dropped), so a target's batch, and with it its result, does not depend on
how many targets a run asks for. The first cell of a batch fits it; the batch's other cells read
the result (they run in the same process: the batch is the runner's group). Every built-in
objective batches; one that does not (``Objective.batchable`` False), or ``batch_size`` 1, is
fitted one target at a time (``batch`` 1 in ``results.csv``). A killed run
resumes where it stopped; a rerun into the same folder with other settings fits new cells beside
the old ones, and every output shows only the current settings' cells. ``bench.json`` records the
latest run's settings, each cell's ``settings.json`` its own.

Outputs in ``out``: ``results.csv`` (one row per fit), ``summary.csv`` and ``results.md`` (per
objective and length: exact rate, teacher-forced loss (all, exact and failed fits) and accuracy, first
divergence, loop rate, steps), ``exact_rate.png`` (the curve) and ``gap.png`` (exact rate beside the
teacher-forced loss: the gap between a low teacher-forced loss and greedy success).
"""
from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentar.cliargs import finite, positive_int, unique
from latentar.configs import Presets
from latentar.metrics.plots import save_lines, write_markdown_table, write_table
from latentar.softprompt.fit import fit_soft_prompt, fit_soft_prompts
from latentar.softprompt.objectives import make_objective
from latentar.softprompt.prompt import SoftPrompt
from latentar.softprompt.report import report_fit
from latentar.sweeps.runner import SweepRunner

# preset -> held-out targets per length, fit steps per target, prompts per batch, default frozen LM:
# latentar/configs/presets/softprompt_bench/<preset>.yaml (a read-only view of them)
BENCH_PRESETS = Presets("softprompt_bench")
DEFAULT_LENGTHS = (16, 32, 64, 128)
DEFAULT_OBJECTIVES = ("ce", "ce+ul", "ce+ss", "ce+rl", "ce+pf*0.1")
SETTINGS_NAME = "bench.json"


def _write_settings(out: Path, settings: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (SETTINGS_NAME + ".tmp")
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True))
    os.replace(tmp, out / SETTINGS_NAME)


def summarize(rows: list[dict[str, Any]], objectives: Sequence[str], lengths: Sequence[int]) -> list[dict[str, Any]]:
    """Per (objective, length): n, exact rate, teacher-forced loss / accuracy (all, exact, failed fits),
    first divergence as a fraction of the target, loop rate, mean steps and seconds."""
    out = []
    for obj in objectives:
        for L in lengths:
            rs = [r for r in rows if r["objective"] == obj and int(r["length"]) == int(L)]
            if not rs:
                continue
            mean = lambda key, sel=rs: statistics.fmean(float(r[key]) for r in sel) if sel else float("nan")  # noqa: E731
            ok = [r for r in rs if int(r["exact"])]
            bad = [r for r in rs if not int(r["exact"])]
            out.append({
                "objective": obj, "length": int(L), "n": len(rs), "tokens": mean("target_tokens"),
                "exact_rate": len(ok) / len(rs), "tf_loss": mean("tf_loss"), "tf_loss_exact": mean("tf_loss", ok),
                "tf_loss_failed": mean("tf_loss", bad), "tf_accuracy": mean("tf_accuracy"),
                "first_div_frac": statistics.fmean(float(r["first_divergence"]) / float(r["target_tokens"]) for r in rs),
                "loop_rate": mean("loop"), "steps": mean("steps"), "seconds": mean("seconds"),
            })
    return out


def plot_gap(summary: list[dict[str, Any]], objectives: Sequence[str], lengths: Sequence[int], path: Path,
             title: str = "") -> Path:
    """Two panels against target length: exact-reconstruction rate, and the teacher-forced loss of the
    fits that reconstruct exactly (solid) and of those that fail (dashed), one colour per objective."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax_rate, ax_loss = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, obj in enumerate(objectives):
        rs = sorted((r for r in summary if r["objective"] == obj), key=lambda r: r["length"])
        if not rs:
            continue
        xs = [r["length"] for r in rs]
        color = f"C{i}"
        ax_rate.plot(xs, [r["exact_rate"] for r in rs], marker="o", color=color, label=obj)
        for key, style, marker, what in (("tf_loss_exact", "-", "o", "exact"), ("tf_loss_failed", "--", "x", "failed")):
            pts = [(x, r[key]) for x, r in zip(xs, rs) if not math.isnan(r[key])]
            if pts:
                ax_loss.plot(*zip(*pts), marker=marker, linestyle=style, color=color, label=f"{obj} ({what})")
    ax_rate.set(xlabel="target length (characters)", ylabel="exact greedy reconstruction rate", ylim=(-0.05, 1.05),
                xscale="log", title="greedy success")
    ax_loss.set(xlabel="target length (characters)", ylabel="teacher-forced loss (nats/token)", xscale="log",
                title="teacher-forced loss at the end of the fit")
    for ax in (ax_rate, ax_loss):
        ax.minorticks_off()
        ax.set_xticks(list(lengths), [str(L) for L in lengths])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def batch_of(cell: dict[str, Any], batch_size: int) -> tuple:
    """The batch a cell's fit belongs to: (objective, length, first target) for objectives that batch,
    the cell itself for those fitted alone (the runner's ``group``: a batch's cells share a process)."""
    if batch_size > 1 and make_objective(cell["objective"]).batchable:
        return cell["objective"], cell["length"], cell["target"] - cell["target"] % batch_size
    return cell["objective"], cell["length"], cell["target"], "alone"


class BenchCell:
    """One fit: soft prompt ``target`` (seeded by its index) on a held-out snippet of ``length``
    characters with one objective, fitted in its batch of ``batch_size`` targets (see the module
    docstring; the batch's results are kept for its other cells). Picklable (the frozen LM travels
    with it) for worker processes."""

    def __init__(self, lm: Any, targets: int, n_virtual: int, init: str, max_steps: int, lr: float,
                 batch_size: int = 1):
        self.lm, self.targets, self.n_virtual, self.init, self.max_steps, self.lr = lm, targets, n_virtual, init, max_steps, lr
        self.batch_size = batch_size
        self._snippets: dict[int, list[bytes]] = {}
        self._fitted: dict[tuple, dict[str, Any]] = {}  # (objective, length, target) -> row

    def __getstate__(self):
        return {**self.__dict__, "_snippets": {}, "_fitted": {}}

    def snippets(self, L: int, num: int) -> list[bytes]:
        """The first ``num`` held-out snippets of L characters (a prefix of any longer list)."""
        from latentar.data.text import text_snippets

        if len(self._snippets.get(L, ())) < num:
            self._snippets[L] = text_snippets(max(num, self.targets), L, split="val", seed=0)
        return self._snippets[L][:num]

    def _row(self, result, text: bytes, L: int) -> dict[str, Any]:
        rep = report_fit(result, decode=self.lm.decode, target_chars=L)
        return {"target_tokens": rep.target_tokens, "exact": int(rep.exact), "first_divergence": rep.first_divergence,
                "tf_loss": rep.tf_loss, "tf_accuracy": rep.tf_accuracy, "seq_rep_4": rep.seq_rep_4,
                "target_seq_rep_4": rep.target_seq_rep_4, "loop": int(rep.loop), "steps": rep.steps,
                "seconds": rep.seconds, "batch": result.batch, "target_text": text.decode("utf-8", errors="replace"),
                "output": rep.output}

    def __call__(self, cell: dict[str, Any], cell_dir: Path) -> dict[str, Any]:
        obj, L, i = cell["objective"], cell["length"], cell["target"]
        key = batch_of(cell, self.batch_size)
        if key[-1] == "alone":
            text = self.snippets(L, i + 1)[i]
            prompt = SoftPrompt(self.n_virtual, self.lm, init=self.init, seed=i)
            result = fit_soft_prompt(prompt, text, obj, max_steps=self.max_steps, lr=self.lr, seed=i)
            return self._row(result, text, L)
        if (obj, L, i) not in self._fitted:
            first = key[2]
            idx = list(range(first, first + self.batch_size))
            texts = self.snippets(L, idx[-1] + 1)[first:]
            prompts = [SoftPrompt(self.n_virtual, self.lm, init=self.init, seed=j) for j in idx]
            results = fit_soft_prompts(prompts, texts, obj, max_steps=self.max_steps, lr=self.lr, seeds=idx)
            self._fitted.update({(obj, L, j): self._row(r, t, L) for j, r, t in zip(idx, results, texts)})
        return self._fitted.pop((obj, L, i))


def run_bench(out: str | Path, lm: Any, model_name: str, lengths: Sequence[int] = DEFAULT_LENGTHS,
              objectives: Sequence[str] = DEFAULT_OBJECTIVES, preset: str = "quick", n_virtual: int = 8,
              targets: int | None = None, max_steps: int | None = None, lr: float = 1e-2, init: str = "random",
              progress: bool = True, launch: dict[str, Any] | None = None,
              batch_size: int | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark into ``out`` with the frozen ``lm`` (a :class:`FrozenLM` or anything
    :class:`SoftPrompt` accepts); returns the summary rows. ``targets`` / ``max_steps`` / ``batch_size``
    (prompts fitted together; 1: one at a time) override the preset (its ``model`` is the CLI's default).
    ``model_name`` must identify the LM's weights (it keys the cells): two different models, one name,
    would share results. ``launch``: how the fits run (``SweepRunner``'s workers / launcher, from
    ``latentar.sweeps.runner.launch_options``; default one by one); it never changes the results."""
    from latentar.softprompt.backend import as_frozen_lm

    if preset not in BENCH_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(BENCH_PRESETS)}")
    lengths = unique([positive_int(L, "--lengths") for L in lengths], "--lengths")
    objectives = unique([make_objective(o).name for o in objectives], "--objectives")  # validated, normalised
    cfg = BENCH_PRESETS[preset]
    targets = positive_int(cfg["targets"] if targets is None else targets, "--targets")
    max_steps = positive_int(cfg["max_steps"] if max_steps is None else max_steps, "--max-steps")
    batch_size = positive_int(cfg["batch_size"] if batch_size is None else batch_size, "--batch-size")
    n_virtual = positive_int(n_virtual, "--n-virtual")
    lr = finite(lr, "--lr", minimum=0.0, strict=True)
    out = Path(out)
    settings = {"model": str(model_name), "n_virtual": n_virtual, "max_steps": max_steps, "lr": lr, "init": init,
                "split": "val", "snippet_seed": 0, "batch_size": batch_size}
    _write_settings(out, {**settings, "targets": targets})
    fn = BenchCell(as_frozen_lm(lm), targets, n_virtual, init, max_steps, lr, batch_size)
    cells = [{"objective": o, "length": L, "target": i} for L in lengths for i in range(targets) for o in objectives]
    runner = SweepRunner(out, progress=progress, settings=settings, **(launch or {}))
    rows = runner.run(cells, fn, desc="softprompt bench", group=lambda c: batch_of(c, batch_size))
    summary = summarize(rows, objectives, lengths)
    write_table(out / "summary.csv", summary)
    title = f"soft prompt ({n_virtual} vectors) on frozen {model_name}: {targets} held-out targets per length, " \
            f"<= {max_steps} steps"
    write_markdown_table(out / "results.md", summary, digits=3, title=title)
    rate = {o: ([r["exact_rate"] for r in summary if r["objective"] == o],
                [math.sqrt(r["exact_rate"] * (1 - r["exact_rate"]) / r["n"]) for r in summary if r["objective"] == o])
            for o in objectives}
    save_lines(out / "exact_rate.png", lengths, {o: (np.array(m), np.array(s)) for o, (m, s) in rate.items()},
               xlabel="target length (characters)", ylabel="exact greedy reconstruction rate (± s.e.)",
               title=f"frozen {model_name}, {n_virtual} prompt vectors")
    plot_gap(summary, objectives, lengths, out / "gap.png", title=title)
    return summary

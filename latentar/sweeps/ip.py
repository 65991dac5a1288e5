"""``latentar sweep ip``: input-perturbation diffusion on digits, FD against the number of sampling steps.

    latentar sweep ip --gamma 0,0.1 --steps 5,10,20,50,100 --sampler ddim --seeds 3 --preset quick --out runs/ip

For every (gamma, seed) a diffusers UNet2DModel is trained with ``IPDiffusionTrainer`` (Ning et
al. 2023: x_t = sqrt(abar) x0 + sqrt(1 - abar)(eps + gamma xi), target eps) through the shared
Trainer, in ``DIR/models/gamma=G_seed=S-<hash>/`` (checkpoints there, so an interrupted training
resumes exactly; the EMA UNet and its scheduler are saved beside them with diffusers'
``save_pretrained``).
It is then sampled at every step count from the same seeded x_T (seed 1000 + seed: models that
share a seed start from the same noise) and scored by digits FD against the test split (latents
are decoded with the tokenizer first).

The grid handed to ``SweepRunner`` has one cell per (gamma, seed, sampler, eps_scale, steps), so
``DIR/results.csv`` has one row per (gamma, seed, steps) in grid order; a cell's model is trained
by its first cell and reused by the others, and adding a step count or an ``--eps-scale`` to a
finished run only samples. ``DIR/results.md`` holds FD mean ± std over seeds (rows gamma, columns
steps) with the noise and real-data reference FDs, and ``DIR/fd_vs_steps.png`` one line per gamma
(log x axis).

Reruns: a model folder is keyed by a hash of everything its training depends on (preset budget,
``--train-steps``, the schedule, the space and the tokenizer's files), a cell by that plus the
number of samples scored (``latentar.sweeps.runner``); each records them in ``settings.json`` and
``DIR/sweep.json`` holds the latest run's. A rerun into the same DIR with the same settings skips
finished cells; with other settings it trains and scores new ones beside the old, and results.csv,
results.md and the plot show only the current settings' cells.

Parallel: ``--workers N`` trains and scores N (gamma, seed) models at once, one process and one
thread each, with the same results (``latentar.sweeps.runner``); ``--launcher submitit`` submits
them as SLURM jobs.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

# The command line and the presets (torch-free, so `--help` is instant): latentar.commands.sweep_ip.
from latentar.commands import runner_options
from latentar.commands.sweep_ip import PRESETS, build_parser, main, resolve  # noqa: F401
from latentar.configs import save_run
from latentar.diffusion.digits_space import DigitsSpace, digits_space
from latentar.diffusion.evaluate import fd_at_steps, reference_fds
from latentar.diffusion.input_perturbation import IPDiffusionTrainer
from latentar.diffusion.unet import build_unet, ddpm_scheduler
from latentar.sweeps.runner import SweepRunner, aggregate, cell_id, settings_key

SAMPLE_SEED_OFFSET = 1000   # sampling noise seed = SAMPLE_SEED_OFFSET + training seed
SETTINGS_NAME = "sweep.json"


# Presets: latentar/configs/presets/sweep_ip/<preset>.yaml (PRESETS: a read-only view of them).


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """Everything a trained model or a score depends on, besides the grid values (of a resolved config)."""
    tok = config["tokenizer"]
    return {
        "preset": config["preset"], "space": config["space"],
        "tokenizer": str(Path(tok).resolve()) if tok else None,
        "tokenizer_files": _folder_digest(Path(tok)) if tok else None,
        "unet": config["unet"], "train_steps": config["train_steps"],
        "batch_size": config["batch_size"], "lr": config["lr"], "warmup_steps": config["warmup_steps"],
        "ema_decay": config["ema_decay"], "num_samples": config["num_samples"],
        "num_train_timesteps": config["num_train_timesteps"], "beta_schedule": config["beta_schedule"],
        "prediction_type": "epsilon",
    }


def model_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a trained model depends on: all but the number of samples scored."""
    return {k: v for k, v in settings.items() if k != "num_samples"}


def _folder_digest(folder: Path) -> str:
    """A hash of the files in ``folder`` (names and bytes): a tokenizer retrained in place keys new cells."""
    h = hashlib.sha256()
    for f in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _write_settings(out: Path, settings: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (SETTINGS_NAME + ".tmp")
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True))
    os.replace(tmp, out / SETTINGS_NAME)


class _Models:
    """Trains (or resumes, or reloads) the model of one (gamma, seed); keeps the last one in memory."""

    def __init__(self, out: Path, settings: dict[str, Any], space: DigitsSpace, device: str, progress: bool):
        self.out, self.settings, self.space = out, model_settings(settings), space
        self.device, self.progress = device, progress
        self.key: tuple | None = None
        self.value: dict[str, Any] | None = None

    def model_dir(self, gamma: float, seed: int) -> Path:
        key = {"gamma": gamma, "seed": seed}
        return self.out / "models" / f"{cell_id(key)}-{settings_key(key, self.settings)}"

    def get(self, gamma: float, seed: int) -> dict[str, Any]:
        if self.key == (gamma, seed):
            return self.value
        from latentar.train import Trainer

        s = self.settings
        model_dir = self.model_dir(gamma, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)     # the same initial weights for every gamma at a given seed
            unet = build_unet(s["unet"], in_channels=self.space.sample_shape[0], sample_size=self.space.sample_shape[1])
        scheduler = ddpm_scheduler(s["num_train_timesteps"], s["beta_schedule"], s["prediction_type"],
                                   clip_sample=self.space.clip_sample)
        task = IPDiffusionTrainer(unet, scheduler, gamma=gamma, sample_shape=self.space.sample_shape)
        trainer = Trainer(max_steps=s["train_steps"], batch_size=s["batch_size"], lr=s["lr"],
                          warmup_steps=s["warmup_steps"], ema_decay=s["ema_decay"], device=self.device,
                          out_dir=str(model_dir), ckpt_every=max(50, s["train_steps"] // 10), log_every=50,
                          seed=seed, progress=self.progress, desc=f"train gamma={gamma} seed={seed}")
        info_path = model_dir / "train.json"
        t0 = time.perf_counter()
        result = trainer.fit(task, self.space.train)
        if info_path.is_file():
            info = json.loads(info_path.read_text())
        else:
            loss = result["loss"]
            if loss is None and (model_dir / "metrics.jsonl").is_file():  # finished before, summary not written
                loss = json.loads((model_dir / "metrics.jsonl").read_text().splitlines()[-1]).get("loss")
            info = {"train_loss": loss, "train_seconds": time.perf_counter() - t0}
        with trainer.ema_model() as ema_task:
            unet_ema = copy.deepcopy(ema_task.model).eval().requires_grad_(False)
        if not info_path.is_file():
            (model_dir / "settings.json").write_text(json.dumps({"gamma": gamma, "seed": seed, **s}, indent=2))
            unet_ema.save_pretrained(model_dir / "unet_ema")
            task.scheduler.save_pretrained(model_dir / "scheduler")
            info_path.write_text(json.dumps(info, indent=2))
        self.key, self.value = (gamma, seed), {"unet": unet_ema, "scheduler": task.scheduler, **info}
        return self.value


class IPCell:
    """One cell: sample the (gamma, seed) model (trained by the first cell that needs it, kept for the
    next ones) at one step count and score it. Picklable for worker processes: the digits space, the
    classifier and the model cache are rebuilt in each worker, which runs without progress bars."""

    def __init__(self, out: Path, settings: dict[str, Any], space_name: str, tokenizer: str | None, device: str,
                 progress: bool, space: DigitsSpace | None = None, classifier: Any = None):
        self.out, self.settings, self.space_name, self.tokenizer = out, settings, space_name, tokenizer
        self.device, self.progress = device, progress
        self._state = None if space is None else (space, classifier, _Models(out, settings, space, device, progress))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_state": None, "progress": False}

    def _built(self) -> tuple:
        if self._state is None:
            from latentar.metrics.digits_classifier import load_digits_classifier
            from latentar.train import select_device
            device = select_device(self.device)
            space = digits_space(self.space_name, self.tokenizer, device=device)
            self._state = (space, load_digits_classifier(device),
                           _Models(self.out, self.settings, space, str(device), self.progress))
        return self._state

    def __call__(self, cell: dict[str, Any], cell_dir: Path) -> dict[str, Any]:
        space, classifier, models = self._built()
        t0 = time.perf_counter()
        m = models.get(cell["gamma"], cell["seed"])
        r = fd_at_steps(m["unet"], m["scheduler"], space, [cell["steps"]], self.settings["num_samples"],
                        sampler=cell["sampler"], seed=SAMPLE_SEED_OFFSET + cell["seed"],
                        eps_scale=cell["eps_scale"], classifier=classifier)[cell["steps"]]
        # Keys in sorted order: result.json is saved with sorted keys, so cells read back on a rerun
        # then give results.csv the same column order as freshly computed ones.
        return {"fd": r["fd"], "sample_seconds": r["sample_seconds"], "seconds": time.perf_counter() - t0,
                "train_loss": m["train_loss"], "train_seconds": m["train_seconds"]}


def run_sweep(config: dict[str, Any], command: str = "sweep ip", argv: list[str] | None = None,
              progress: bool = True, launch: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the sweep of a resolved ``config`` (``latentar.commands.sweep_ip.resolve``);
    return the rows of results.csv. ``launch``: ``SweepRunner``'s options (default the config's)."""
    from latentar.metrics.digits_classifier import load_digits_classifier
    from latentar.train import select_device

    out = Path(config["out"])
    settings = _settings(config)
    _write_settings(out, settings)
    device = select_device(config["device"])
    space = digits_space(config["space"], config["tokenizer"], device=device)
    classifier = load_digits_classifier(device)
    run_cell = IPCell(out, settings, config["space"], config["tokenizer"], str(device), progress, space, classifier)

    cells = [{"gamma": g, "seed": s, "sampler": config["sampler"], "eps_scale": e, "steps": n}
             for g in config["gamma"] for s in range(config["seeds"]) for e in config["eps_scale"]
             for n in config["steps"]]
    # the cells of one (gamma, seed) share its model: one worker trains it, then samples them in turn
    runner = SweepRunner(out, progress=progress, settings=settings, **(config["launch"] if launch is None else launch))
    rows = runner.run(cells, run_cell, desc="ip cells", group=lambda c: (c["gamma"], c["seed"]))
    refs = reference_fds(settings["num_samples"], classifier=classifier)
    write_report(out, rows, refs, settings, f"latentar {command} " + " ".join(argv or []))
    return rows


def write_report(out: Path, rows: list[dict[str, Any]], refs: dict[str, float], settings: dict[str, Any],
                 command: str) -> None:
    """results.md (FD mean ± std over seeds, rows gamma, columns steps) and fd_vs_steps.png."""
    from latentar.metrics.plots import save_lines, write_json

    agg = aggregate(rows, by=["sampler", "eps_scale", "gamma", "steps"], metrics=["fd"])
    steps = sorted({r["steps"] for r in agg})
    lines_by: dict[tuple, dict[int, dict]] = {}
    for r in agg:
        lines_by.setdefault((r["sampler"], r["eps_scale"], r["gamma"]), {})[r["steps"]] = r
    n_seeds = max(r["n"] for r in agg)
    text = [f"# Input-perturbation diffusion on digits ({settings['space']} space): FD against sampling steps", "",
            f"`{command.strip()}`", "",
            f"Digits FD of {settings['num_samples']} samples vs the test split, mean ± std over {n_seeds} seed(s) "
            f"(lower is better). References at the same sample count: N(0, I) noise images {refs['noise']:.1f}; "
            f"real train images {refs['data']:.2f} (the floor).", "",
            "| sampler | eps_scale | gamma | " + " | ".join(f"{s} steps" for s in steps) + " |",
            "|" + "---|" * (3 + len(steps))]
    for (sampler, eps, gamma), by_steps in lines_by.items():
        cells = [f"{by_steps[s]['fd_mean']:.2f} ± {by_steps[s]['fd_std']:.2f}" if s in by_steps else "" for s in steps]
        text.append(f"| {sampler} | {eps:g} | {gamma:g} | " + " | ".join(cells) + " |")
    text += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), ""]
    tmp = out / "results.md.tmp"
    tmp.write_text("\n".join(text))
    os.replace(tmp, out / "results.md")
    write_json(out / "references.json", refs)

    for sampler in sorted({k[0] for k in lines_by}):
        series = {}
        for (s_, eps, gamma), by_steps in lines_by.items():
            if s_ != sampler or set(by_steps) != set(steps):
                continue
            name = f"gamma={gamma:g}" + ("" if eps == 1.0 else f", eps_scale={eps:g}")
            series[name] = ([by_steps[s]["fd_mean"] for s in steps], [by_steps[s]["fd_std"] for s in steps])
        name = "fd_vs_steps.png" if len({k[0] for k in lines_by}) == 1 else f"fd_vs_steps_{sampler}.png"
        save_lines(out / name, steps, series, xlabel="sampling steps (log scale)",
                   ylabel=f"digits FD of {settings['num_samples']} samples (lower is better)",
                   title=f"FD vs sampling steps: {sampler}, {settings['space']} space (real-data floor "
                         f"{refs['data']:.1f})", logx=True, band=f"mean ± std over {n_seeds} seeds")


def run_cli(args: argparse.Namespace, config: dict[str, Any], command: str = "sweep ip") -> int:
    """Run the resolved ``config`` of ``latentar sweep ip`` (checked before: nothing has trained)."""
    out = Path(config["out"])
    save_run(out, command, config, getattr(args, "argv", None))
    rows = run_sweep(config, command, getattr(args, "argv", None), progress=not args.quiet,
                     launch=runner_options(args, config))
    print((out / "results.md").read_text())
    print(f"{len(rows)} rows: {out / 'results.csv'}; plot: {out / 'fd_vs_steps.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentar.cliargs import (ArgumentParser, UsageError, check_device, existing_dir, finite, out_dir, positive_int,
                              unique)
from latentar.diffusion.digits_space import SPACES, DigitsSpace, digits_space
from latentar.diffusion.evaluate import fd_at_steps, reference_fds
from latentar.diffusion.input_perturbation import IPDiffusionTrainer, check_gamma
from latentar.diffusion.sampling import SAMPLERS
from latentar.diffusion.unet import build_unet, ddpm_scheduler
from latentar.sweeps.runner import (SweepRunner, add_launch_args, aggregate, cell_id, launch_options, parse_list,
                                    settings_key)

SAMPLE_SEED_OFFSET = 1000   # sampling noise seed = SAMPLE_SEED_OFFSET + training seed
SETTINGS_NAME = "sweep.json"


@dataclass(frozen=True)
class Preset:
    """Training / evaluation budget of one preset, and its default grid."""
    unet: str
    train_steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    ema_decay: float | None
    num_samples: int
    gammas: str
    steps: str
    seeds: int


PRESETS: dict[str, Preset] = {
    # Wiring check: a barely trained tiny UNet (its FD is still above noise); ~15 s of CPU time.
    "smoke": Preset(unet="tiny", train_steps=40, batch_size=64, lr=2e-3, warmup_steps=0, ema_decay=None,
                    num_samples=128, gammas="0,0.1", steps="5,10", seeds=1),
    # The measurement: ~80 s of training and ~15 s of sampling per model on one CPU core
    # (~10 min for the default 2 gammas x 3 seeds); FD ~15 at 20 steps against ~320 for noise.
    "quick": Preset(unet="tiny", train_steps=1000, batch_size=128, lr=2e-3, warmup_steps=50, ema_decay=0.995,
                    num_samples=512, gammas="0,0.1", steps="5,10,20,50,100", seeds=3),
    # Closer to convergence, the four gammas of Ning et al.'s ablation: ~15 min per model on CPU.
    "full": Preset(unet="small", train_steps=5000, batch_size=128, lr=1e-3, warmup_steps=100, ema_decay=0.999,
                   num_samples=1438, gammas="0,0.05,0.1,0.2", steps="5,10,20,50,100", seeds=3),
}


def build_parser(command: str = "sweep ip") -> argparse.ArgumentParser:
    presets = "; ".join(f"{k}: {p.unet} UNet, {p.train_steps} training steps, {p.num_samples} samples, "
                        f"gamma {p.gammas}, steps {p.steps}, {p.seeds} seed(s)" for k, p in PRESETS.items())
    p = ArgumentParser(
        prog=f"latentar {command}",
        description="Train diffusers UNets on digits with input perturbation gamma (Ning et al. 2023, DDPM-IP) "
                    "and measure digits FD against the number of sampling steps, one line per gamma. "
                    "Writes results.csv, results.md and fd_vs_steps.png to --out; rerunning with the same "
                    "settings resumes, with other settings adds new cells beside the old ones.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--gamma", default=None,
                   help="comma-separated input-perturbation strengths >= 0 (0 = plain DDPM); default: the preset's")
    p.add_argument("--steps", default=None,
                   help="comma-separated numbers of sampling steps, each <= --num-train-timesteps; default: the preset's")
    p.add_argument("--sampler", default="ddim", choices=SAMPLERS, help="diffusers sampler used at every step count")
    p.add_argument("--seeds", type=int, default=None,
                   help="number of training seeds (0..N-1) per gamma; default: the preset's")
    p.add_argument("--eps-scale", default="1.0",
                   help="comma-separated ADM-ES epsilon-scaling constants lambda (predicted eps / lambda at "
                        "sampling, 1 = off, ~1.005 typical): the training-free comparison")
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS), help=f"budget: {presets}")
    p.add_argument("--space", default="pixel", choices=SPACES,
                   help="pixel: 8x8 images; latent: the latents of --tokenizer, decoded before scoring")
    p.add_argument("--tokenizer", default=None,
                   help="directory of a tokenizer saved with SigmaVAE.save_pretrained (needed for --space latent)")
    p.add_argument("--out", default=None,
                   help="output directory; default runs/ip-<preset>-<space>. A rerun with the same settings resumes "
                        "it; one with other settings (--train-steps, --samples, ...) trains and scores new cells "
                        "beside the old ones, and results.* show only the current settings' cells")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--train-steps", type=int, default=None, help="override the preset's optimizer steps per model")
    p.add_argument("--samples", type=int, default=None, help="override the preset's number of samples scored per cell")
    p.add_argument("--num-train-timesteps", type=int, default=1000, help="length T of the DDPM training schedule")
    p.add_argument("--beta-schedule", default="linear", choices=("linear", "scaled_linear", "squaredcos_cap_v2"),
                   help="diffusers beta schedule of the training scheduler")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return add_launch_args(p)


def _settings(args: argparse.Namespace, preset: Preset) -> dict[str, Any]:
    """Everything a trained model or a score depends on, besides the grid values."""
    return {
        "preset": args.preset, "space": args.space,
        "tokenizer": str(Path(args.tokenizer).resolve()) if args.tokenizer else None,
        "tokenizer_files": _folder_digest(Path(args.tokenizer)) if args.tokenizer else None,
        "unet": preset.unet, "train_steps": args.train_steps or preset.train_steps,
        "batch_size": preset.batch_size, "lr": preset.lr, "warmup_steps": preset.warmup_steps,
        "ema_decay": preset.ema_decay, "num_samples": args.samples or preset.num_samples,
        "num_train_timesteps": args.num_train_timesteps, "beta_schedule": args.beta_schedule,
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


def output_dir(args: argparse.Namespace) -> Path:
    return out_dir(args.out or f"runs/ip-{args.preset}-{args.space}")


def parse_grid(args: argparse.Namespace) -> dict[str, Any]:
    """Check every option; return gammas, steps, eps_scales and seeds, or raise a UsageError naming the option."""
    preset = PRESETS[args.preset]
    gammas = unique([check_gamma(g, "--gamma") for g in parse_list(preset.gammas if args.gamma is None else args.gamma,
                                                                    float, "--gamma")], "--gamma")
    T = positive_int(args.num_train_timesteps, "--num-train-timesteps", minimum=2)
    steps = unique(parse_list(preset.steps if args.steps is None else args.steps, int, "--steps"), "--steps")
    bad = [s for s in steps if not 1 <= s <= T]
    if bad:
        raise UsageError(f"--steps {bad} outside [1, {T}]: a sampler cannot take more steps than the "
                         f"num_train_timesteps={T} the model is trained with; lower them or raise --num-train-timesteps")
    eps_scales = unique([finite(e, "--eps-scale", minimum=0.0, strict=True)
                         for e in parse_list(args.eps_scale, float, "--eps-scale")], "--eps-scale")
    seeds = preset.seeds if args.seeds is None else positive_int(args.seeds, "--seeds")
    for name, v in (("--train-steps", args.train_steps), ("--samples", args.samples)):
        if v is not None:
            positive_int(v, name, minimum=2)
    if args.space == "latent" and not args.tokenizer:
        raise UsageError("--space latent needs --tokenizer DIR (a SigmaVAE saved with save_pretrained)")
    if args.space == "pixel" and args.tokenizer:
        raise UsageError("--tokenizer is only used with --space latent")
    if args.tokenizer:
        existing_dir(args.tokenizer, "--tokenizer", must_contain="config.json")
    check_device(args.device)
    output_dir(args)
    launch_options(args)
    return {"gammas": gammas, "steps": steps, "eps_scales": eps_scales, "seeds": seeds}


def run_sweep(args: argparse.Namespace, command: str = "sweep ip") -> list[dict[str, Any]]:
    """Run (or resume) the sweep described by parsed ``args``; return the rows of results.csv."""
    from latentar.metrics.digits_classifier import load_digits_classifier
    from latentar.train import select_device

    preset = PRESETS[args.preset]
    grid = parse_grid(args)
    gammas, steps, eps_scales, seeds = grid["gammas"], grid["steps"], grid["eps_scales"], grid["seeds"]
    out = output_dir(args)
    settings = _settings(args, preset)
    _write_settings(out, settings)
    device = select_device(args.device)
    space = digits_space(args.space, args.tokenizer, device=device)
    classifier = load_digits_classifier(device)
    progress = not args.quiet
    run_cell = IPCell(out, settings, args.space, args.tokenizer, str(device), progress, space, classifier)

    cells = [{"gamma": g, "seed": s, "sampler": args.sampler, "eps_scale": e, "steps": n}
             for g in gammas for s in range(seeds) for e in eps_scales for n in steps]
    # the cells of one (gamma, seed) share its model: one worker trains it, then samples them in turn
    runner = SweepRunner(out, progress=progress, settings=settings, **launch_options(args))
    rows = runner.run(cells, run_cell, desc="ip cells", group=lambda c: (c["gamma"], c["seed"]))
    refs = reference_fds(settings["num_samples"], classifier=classifier)
    write_report(out, rows, refs, settings, f"latentar {command} " + " ".join(getattr(args, "argv", [])))
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
        save_lines(out / name, steps, series, xlabel="sampling steps",
                   ylabel=f"digits FD ({settings['num_samples']} samples)",
                   title=f"{sampler}, {settings['space']} space (real-data floor {refs['data']:.1f})", logx=True)


def main(argv: list[str] | None = None, command: str = "sweep ip") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(command).parse_args(argv)
    args.argv = argv
    parse_grid(args)   # every option checked before anything trains
    rows = run_sweep(args, command)
    out = output_dir(args)
    print((out / "results.md").read_text())
    print(f"{len(rows)} rows: {out / 'results.csv'}; plot: {out / 'fd_vs_steps.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

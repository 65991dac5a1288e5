"""`latentar sweep variance`: the flagship experiment, LatentLM's tokenizer-variance sweep (Fig. 6).

    latentar sweep variance --preset quick --data digits --out runs/sweep

For each C_sigma: train a SigmaVAE (cached under ``out/tokenizers``, shared by every generator
and strategy), record its reconstruction ceiling and decoder tolerance, encode the training data
into posterior samples, then for each generator (LatentAR with a GMM or a diffusion head, and the
non-AR JointDiffusion control) and seed: train with the shared Trainer on the same latents and
budget, sample with and without classifier-free guidance, decode, and score the Frechet distance
(digits: classifier features; audio: log-mel statistics). At ``--strategy-c-sigma`` the exposure
strategies (teacher forcing, scheduled sampling, context noise, BASH) are added on the AR
generators.

Reruns: every cell (``out/cells/<id>-<hash>``) and tokenizer (``out/tokenizers/c_sigma=C-<hash>``)
is keyed by a hash of everything that changes it (the data, the budget: steps, sizes, sample
counts, the CFG scales; see ``latentar.sweeps.runner``), and records it in its ``settings.json``.
Rerunning into the same ``--out`` with the same settings skips finished cells and resumes an
interrupted one; with other settings (say ``--steps 30``) it computes new cells beside the old
ones, and results.csv, results.md and the plots show only the cells of the current settings.

The published expectation tested here (LatentLM, Fig. 6): without CFG, AR quality improves with
tokenizer variance while the non-AR control stays flat; with CFG, the curves become U-shaped.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from latentar.cliargs import ArgumentParser, UsageError, check_device, finite, out_dir, positive_int, unique
from latentar.data.cache import build_once
from latentar.diffusion.sampling import SAMPLERS
from latentar.generation import (LatentSequences, SamplingConfig, build_generator, encode_for_ar,
                                 held_out_exposure, sample_and_score)
from latentar.metrics.domains import make_domain
from latentar.sweeps.runner import (SweepRunner, add_launch_args, aggregate, launch_options, markdown_table, parse_list,
                                   settings_key)
from latentar.sweeps.verdicts import COMPETENT_ACC, claim_verdicts, comparison_rows

GENERATORS = ("gmm", "diffusion", "joint")  # the sweep's; latentar.generation also has mse
STRATEGIES = ("tf", "ss", "noise", "bash")

# Budgets per preset. Options given on the command line override the list-valued ones. Every arm gets
# the same optimizer steps, batch and learning rate (the budget rule results.md states). The diffusion
# head repeats each token `diffusion_batch_mul` times per step (4, as MAR and LatentLM; measured on
# the quick budget: FD 30.9 with 4 copies vs 83.4 with 1 at 400 steps). `diffusion_process` sets the
# diffusion parameterisation per diffusion arm: both predict v with "trailing" spacing. Measured at
# 400 steps, lr 5e-3, C_sigma 0, one seed: JointDiffusion's class accuracy at CFG 3 is 0.99 (0.52
# predicting eps; 0.10 at lr 2e-3), the competent control LatentLM's comparison needs; the diffusion
# head's FD without CFG is 16.0 (30.9 predicting eps). The strategies run on `strategy_generators`.
_V = {"prediction_type": "v_prediction", "timestep_spacing": "trailing"}
DIFFUSION_V = {"joint": _V, "diffusion": _V}
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(c_sigma=[0.0, 0.5], generators=["gmm", "joint"], strategies=["tf", "ss"], seeds=1,
                  cfg=[1.0, 3.0], tok_steps=150, gen_steps=120, d_model=64, depth=2, num_heads=4,
                  posterior_draws=2, num_samples=200, sampling_steps=10, batch_size=64, audio_seconds=0.512, lr=5e-3,
                  diffusion_batch_mul=1, strategy_generators=["gmm"], tokenizers=["sigma_vae"], beta=[1e-3],
                  sampler="ddpm", temperature=1.0, diffusion_process=DIFFUSION_V),
    # quick: what `make demo` runs, <= 15 min on 2 cores. Three C_sigma points are the fewest that show a
    # U shape; measured 9.1 min on 2 workers from an empty cache (33 cells; 4 points took 22.9 min).
    "quick": dict(c_sigma=[0.0, 0.5, 1.0], generators=["gmm", "diffusion", "joint"],
                  strategies=["tf", "ss", "noise"], seeds=3, cfg=[1.0, 3.0], tok_steps=400, gen_steps=400,
                  d_model=64, depth=2, num_heads=4, posterior_draws=2, num_samples=200, sampling_steps=10,
                  batch_size=128, audio_seconds=1.024, lr=5e-3, diffusion_batch_mul=4, strategy_generators=["gmm"],
                  tokenizers=["sigma_vae"], beta=[1e-4, 1e-3, 1e-2], sampler="ddpm", temperature=1.0,
                  diffusion_process=DIFFUSION_V),
    # standard: the README's run, MNIST (49 tokens of 8 dims) then speech (64 frames of 16 dims), sized for
    # <= 60 min on 2 cores in all. On MNIST the diffusion head (4 noised copies of 49 tokens per step, ~3x
    # a GMM step) does not fit that budget beside 3 seeds: it runs on speech here and on MNIST in `full`.
    # `per_data` adjusts the budget to the data (speech has no classes, so no CFG and no class accuracy).
    "standard": dict(c_sigma=[0.0, 0.5, 1.0], generators=["gmm", "joint"], strategies=["tf", "ss"], seeds=3,
                     cfg=[1.0, 3.0], tok_steps=600, gen_steps=1200, d_model=64, depth=2, num_heads=4,
                     posterior_draws=2, num_samples=200, sampling_steps=10, batch_size=128, audio_seconds=1.024,
                     lr=5e-3, diffusion_batch_mul=4, strategy_generators=["gmm"], tokenizers=["sigma_vae"],
                     beta=[1e-4, 1e-3, 1e-2], sampler="ddpm", temperature=1.0, diffusion_process=DIFFUSION_V,
                     per_data={"speech": dict(generators=["gmm", "diffusion", "joint"], cfg=[1.0], tok_steps=250,
                                              gen_steps=300, batch_size=32, num_samples=128)}),
    "full": dict(c_sigma=[0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5], generators=["gmm", "diffusion", "joint"],
                 strategies=["tf", "ss", "noise", "bash"], seeds=3, cfg=[1.0, 2.0, 3.0, 4.0], tok_steps=4000,
                 gen_steps=6000, d_model=256, depth=6, num_heads=8, posterior_draws=8, num_samples=1000,
                 sampling_steps=50, batch_size=256, audio_seconds=2.048, lr=1e-3, diffusion_batch_mul=4,
                 strategy_generators=["gmm", "diffusion"], tokenizers=["sigma_vae"], beta=[1e-5, 1e-4, 1e-3, 1e-2],
                 sampler="ddpm", temperature=1.0, diffusion_process=DIFFUSION_V),
}
# Tokenizer families and the knob each is swept along: SigmaVAE's fixed noise C_sigma (LatentLM),
# the VAE's KL weight beta (GIVT's trade: higher beta, worse reconstruction, easier AR modelling),
# and the deterministic AE (no knob: one point, the C_sigma = 0 end of both).
TOKENIZERS = ("sigma_vae", "vae", "ae")
# Image tokenizers other than the 8x8 preset: MNIST 28x28 -> a 7x7 grid (49 tokens of 8 dims); narrow
# channels keep a step at ~0.25 s on one core (800 steps: PSNR 27.7 dB, reconstruction FD 7.6).
IMAGE_NETWORKS = {"mnist": {"latent_dim": 8, "channels": [8, 16], "strides": [2, 2]}}
# Audio: 16 kHz, the default tokenizer's hop 256 gives 62.5 frames/s (audio_seconds 1.024 -> 64
# frames); tokenizers train on 0.512 s random windows (latentar.tokenizers.crops), AR models on whole clips.
AUDIO_RATE = 16000
AUDIO_TRAIN_CROP, AUDIO_TRAIN_BATCH = 8192, 16  # ~0.5 s per tokenizer step on one core (bench/audio_tokenizer.py)


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


# --------------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------------
class VarianceSweep:
    def __init__(self, cfg: SweepConfig):
        self.cfg, self.b = cfg, cfg.budget
        self.out = Path(cfg.out)
        self.task = make_domain(cfg.data, seconds=float(self.b["audio_seconds"]), sample_rate=AUDIO_RATE)
        self._tokenizers: dict[float, Any] = {}
        self._latents: dict[float, LatentSequences] = {}
        self.progress = True
        self.runner = SweepRunner(self.out, progress=False, settings=self.cell_settings(), **cfg.launch)

    def cell_settings(self) -> dict[str, Any]:
        """What changes a cell's result besides its parameters: the data, the budget and the CFG
        scales (not which generators the strategies run on: that only selects cells)."""
        budget = {k: v for k, v in self.b.items() if k != "strategy_generators"}
        return {"data": _data_key(self.cfg.data), "cfg": list(self.cfg.cfg), "budget": budget}

    # -- cells ------------------------------------------------------------------------------------
    def points(self) -> list[dict[str, Any]]:
        """The tokenizers of the sweep: ``{"tokenizer", "c_sigma", "beta"}``, the knob not swept for a
        family left None (SigmaVAE along C_sigma, VAE along beta, AE a single point)."""
        pts = []
        for fam in self.cfg.tokenizers:
            if fam == "sigma_vae":
                pts += [{"tokenizer": fam, "c_sigma": c, "beta": None} for c in self.cfg.c_sigma]
            elif fam == "vae":
                pts += [{"tokenizer": fam, "c_sigma": None, "beta": b} for b in self.cfg.beta]
            else:
                pts.append({"tokenizer": fam, "c_sigma": None, "beta": None})
        return pts

    def cells(self) -> list[dict[str, Any]]:
        cells = []
        for p in self.points():
            for g in self.cfg.generators:
                for s in range(self.cfg.seeds):
                    cells.append({**p, "generator": g, "strategy": "tf", "seed": s})
        if "sigma_vae" not in self.cfg.tokenizers:
            return cells  # the strategies are compared on the SigmaVAE at --strategy-c-sigma
        at = {"tokenizer": "sigma_vae", "c_sigma": self.cfg.strategy_c_sigma, "beta": None}
        strategy_gens = [g for g in self.cfg.generators if g in self.b["strategy_generators"]]
        for g in strategy_gens:
            for st in [st for st in self.cfg.strategies if st != "tf"]:
                for s in range(self.cfg.seeds):
                    cells.append({**at, "generator": g, "strategy": st, "seed": s})
        if any(st != "tf" for st in self.cfg.strategies) and self.cfg.strategy_c_sigma not in self.cfg.c_sigma:
            for g in strategy_gens:
                for s in range(self.cfg.seeds):
                    cells.append({**at, "generator": g, "strategy": "tf", "seed": s})
        return cells

    def sampling(self):
        """The one sampler setting of every arm (``SamplingConfig``): sampler, steps, temperature."""
        return SamplingConfig(self.b["sampler"], self.b["sampling_steps"], float(self.b["temperature"]))

    # -- tokenizer (one per point and tokenizer settings, cached on disk) -------------------------
    @staticmethod
    def point(cell: dict[str, Any]) -> tuple:
        return (cell["tokenizer"], cell["c_sigma"], cell["beta"])

    def tokenizer_settings(self, point: tuple) -> dict[str, Any]:
        """Everything the tokenizer of ``point`` is built from: its class and constructor, its training, its data."""
        fam, c_sigma, beta = point
        if self.task.modality == "audio":
            kw = dict(latent_dim=16, mel_weight=1.0, sample_rate=AUDIO_RATE)
        else:
            kw = {"latent_dim": 4, **IMAGE_NETWORKS.get(self.task.name, {})}
        if fam == "sigma_vae":
            kw["c_sigma"] = float(c_sigma)
        elif fam == "vae":
            kw["beta"] = float(beta)
        return {"data": _data_key(self.cfg.data), "audio_seconds": float(self.b["audio_seconds"]), "init_seed": 1000,
                "tokenizer": fam, "model": dict(modality=self.task.modality, in_channels=self.task.in_channels, **kw),
                "train": dict(max_steps=self.b["tok_steps"], lr=2e-3,
                              batch_size=self.b["batch_size"] if self.task.modality == "image" else AUDIO_TRAIN_BATCH,
                              warmup_steps=20, seed=0),
                "crop": AUDIO_TRAIN_CROP if self.task.modality == "audio" else None}

    def tokenizer_dir(self, point: tuple) -> Path:
        return self.out / "tokenizers" / f"{_point_name(point)}-{settings_key(self.tokenizer_settings(point))}"

    def tokenizer(self, point: tuple):
        """The tokenizer of ``point``, trained once into ``tokenizer_dir`` (atomically, under a lock,
        with its report beside it) and loaded from there; the Trainer checkpoint of an interrupted
        build waits beside the folder, so the next build resumes it."""
        if point in self._tokenizers:
            return self._tokenizers[point]
        from latentar.tokenizers import TOKENIZERS, CropTraining
        from latentar.train import Trainer
        d, ts = self.tokenizer_dir(point), self.tokenizer_settings(point)
        cls = TOKENIZERS[ts["tokenizer"]]
        train_dir = d.parent / f".{d.name}.train"

        def build(tmp: Path) -> None:
            torch.manual_seed(ts["init_seed"])
            tok = cls(**ts["model"])
            data = (TensorDataset(self.task.train_x, self.task.train_y) if self.task.train_y is not None
                    else TensorDataset(self.task.train_x))
            task = tok if ts["crop"] is None else CropTraining(tok, ts["crop"])  # audio: short random windows
            Trainer(**ts["train"], device=self.cfg.device, out_dir=train_dir, log_every=50,
                    progress=self.progress and self.runner.workers == 1,
                    desc=f"tokenizer {_point_name(point)}").fit(task, data)
            tok.estimate_latent_scale(self.task.train_x.to(next(tok.parameters()).device))
            tok = tok.cpu().eval()
            tok.save_pretrained(tmp / "model")
            (tmp / "report.json").write_text(json.dumps(self.tokenizer_report(tok), indent=2))
            (tmp / "settings.json").write_text(json.dumps(ts, indent=2))
            shutil.move(train_dir, tmp / "train")

        build_once(d, build, ready=lambda p: (p / "model" / "config.json").is_file() and (p / "report.json").is_file())
        self._tokenizers[point] = cls.from_pretrained(d / "model").cpu().eval()
        return self._tokenizers[point]

    def tokenizer_cell(self, cell: dict[str, Any], cell_dir: Path) -> dict[str, Any]:
        """A runner cell that trains (or finds) the tokenizer of ``cell``: the sweep's first stage."""
        point = self.point(cell)
        self.tokenizer(point)
        return {"tokenizer_dir": str(self.tokenizer_dir(point))}

    @torch.no_grad()
    def tokenizer_report(self, tok) -> dict[str, Any]:
        """Reconstruction ceiling (FD of test reconstructions) and decoder tolerance of ``tok``."""
        from latentar.tokenizers import latent_report
        rep = latent_report(tok, self.task.test_x)
        recon = tok.decode(tok.encode(self.task.test_x), length=self.task.test_x.shape[-1])
        rep["recon_fd"] = self.task.score(recon, None)["fd"]
        return json.loads(json.dumps(rep, default=lambda o: o.tolist() if hasattr(o, "tolist") else float(o)))

    def latents(self, point: tuple) -> LatentSequences:
        """Training sequences: ``posterior_draws`` seeded draws of ``ar_latents`` of the train split."""
        if point not in self._latents:
            self._latents[point] = encode_for_ar(self.tokenizer(point), self.task.train_x, self.task.train_y,
                                                 draws=self.b["posterior_draws"], seed=7)
        return self._latents[point]

    # -- one cell ---------------------------------------------------------------------------------
    def strategy(self, name: str):
        from latentar.exposure import BASH, ContextNoise, ScheduledSampling, TeacherForcing
        if name == "tf":
            return TeacherForcing()
        if name == "ss":
            return ScheduledSampling("linear", {"end": 2.0})  # p = progress / 2: up to half the context sampled
        if name == "noise":
            return ContextNoise(sigma_ctx=0.3)
        if name == "bash":
            steps = self.b["gen_steps"]
            return BASH(beta=0.2, warmup_steps=steps // 3, regen_every=max(1, steps // 6), pool_size=512)
        raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")

    def run_cell(self, cell: dict[str, Any], cell_dir: Path) -> dict[str, Any]:
        from latentar.exposure import ExposureTask
        from latentar.train import Trainer
        point = self.point(cell)
        lat, tok, sampling = self.latents(point), self.tokenizer(point), self.sampling()
        torch.manual_seed(cell["seed"])
        model = build_generator(cell["generator"], lat.dim, lat.length, self.task.num_classes, d_model=self.b["d_model"],
                                depth=self.b["depth"], num_heads=self.b["num_heads"],
                                diffusion_batch_mul=self.b["diffusion_batch_mul"],
                                diffusion_kwargs=self.b["diffusion_process"].get(cell["generator"]))
        data = lat.dataset()
        task = model if cell["generator"] == "joint" else ExposureTask(model, self.strategy(cell["strategy"]), data=data)
        trainer = Trainer(max_steps=self.b["gen_steps"], batch_size=self.b["batch_size"], lr=self.b["lr"],
                          warmup_steps=min(50, self.b["gen_steps"] // 10), device=self.cfg.device,
                          out_dir=cell_dir / "train", ckpt_every=max(50, self.b["gen_steps"] // 4),
                          seed=cell["seed"], log_every=25, desc=_short(cell),
                          progress=self.progress and self.runner.workers == 1)  # no bars inside worker processes
        result = trainer.fit(task, data)
        model.eval()
        tok_report = json.loads((self.tokenizer_dir(point) / "report.json").read_text())
        row: dict[str, Any] = {"train_loss": result["loss"], "recon_psnr": tok_report.get("psnr", float("nan")),
                               "recon_fd": tok_report["recon_fd"], **sampling.row()}
        for cfg_scale in self.cfg.cfg:
            if cfg_scale != 1.0 and not self.task.num_classes:
                continue  # guidance needs classes
            png = cell_dir / "samples.png" if cfg_scale == self.cfg.cfg[0] else None
            scores = sample_and_score(model, tok, self.task, lat, self.b["num_samples"], cfg_scale,
                                      seed=10_000 + cell["seed"], sampling=sampling,
                                      samples_png=png, title=f"{_short(cell)} cfg={cfg_scale:g}")
            row.update({f"{k}_cfg{cfg_scale:g}": v for k, v in scores.items()})
        if cell["generator"] != "joint":
            row.update(held_out_exposure(model, tok, self.task, cell["seed"], num_samples=self.b["num_samples"],
                                         json_path=cell_dir / "exposure.json", sampling=sampling))
        model.cpu()
        return row

    # -- outputs ----------------------------------------------------------------------------------
    def write_outputs(self, rows: list[dict[str, Any]]) -> None:
        metrics = sorted({k for r in rows for k in r if k.startswith(("fd_", "class_acc_", "exposure_"))}
                         | {"recon_psnr", "recon_fd", "train_loss"})
        metrics = [m for m in metrics if any(m in r for r in rows)]
        by = ["tokenizer", "c_sigma", "beta", "generator", "strategy"]
        agg = aggregate(rows, by=by, metrics=metrics)
        shown = by + ["n"] + [f"{m}_{s}" for m in metrics if not m.startswith("exposure")
                              and m != "train_loss" for s in ("mean", "std")]
        sm = self.sampling()
        md = [f"# Variance sweep ({self.cfg.preset} preset, data={self.cfg.data})\n",
              "FD: lower is better; `cfgX` = classifier-free guidance scale X; mean ± std over seeds. Every arm is "
              f"sampled alike: sampler {sm.sampler}, {sm.num_steps} steps (diffusion arms), temperature "
              f"{sm.temperature:g}.\n", markdown_table(agg, columns=shown)]
        strat = [r for r in agg if r["tokenizer"] == "sigma_vae" and r["c_sigma"] == self.cfg.strategy_c_sigma
                 and r["generator"] != "joint"]
        if len({r["strategy"] for r in strat}) > 1:
            cols = ["generator", "strategy", "n"] + [f"{m}_{s}" for m in metrics
                                                     if m.startswith(("fd_", "exposure")) for s in ("mean", "std")]
            md += [f"\n## Exposure strategies at C_sigma = {self.cfg.strategy_c_sigma:g}\n", markdown_table(strat, columns=cols)]
        fds = [m for m in metrics if m.startswith("fd_")] + [m for m in ("exposure_fd_own_slope",) if m in metrics]
        comps = comparison_rows(rows, fds, self.cfg.strategy_c_sigma)
        if comps:
            md += ["\n## Comparisons (paired over seeds)\n",
                   "Difference of the second arm minus the first, mean and 95% Student-t interval over the seeds both "
                   "share, with the paired t-test's p-value; `significant` when the interval excludes 0. A difference "
                   "that is not significant is not a finding.\n", markdown_table(comps)]
        verdicts = claim_verdicts(rows, self.cfg.cfg, self.cfg.strategy_c_sigma)
        md += ["\n## Verdicts on the published claims\n",
               f"Budget rule: every arm gets the same optimizer steps ({self.b['gen_steps']}) at the same batch size "
               f"({self.b['batch_size']}) and learning rate, on the same latents; an arm whose class accuracy at the "
               f"largest CFG scale is below {COMPETENT_ACC:g} is not trained to competence and its claims are not "
               "judged. Verdicts come from 95% intervals over seeds (latentar.sweeps.verdicts).\n",
               markdown_table(verdicts, columns=["claim", "verdict", "evidence", "source"])]
        (self.out / "results.md").write_text("\n".join(md))
        self.plot(agg)

    def plot(self, agg: list[dict[str, Any]]) -> None:
        """fd_vs_c_sigma.png: FD against C_sigma (SigmaVAE, solid, bottom axis) and against the KL
        weight beta (VAE, dashed, top log axis), the AE as a dotted level; one panel per CFG scale."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        tf = [r for r in agg if r["strategy"] == "tf"]
        cfgs = [c for c in self.cfg.cfg if any(f"fd_cfg{c:g}_mean" in r for r in tf)]
        fig, axes = plt.subplots(1, len(cfgs), figsize=(4.6 * len(cfgs), 3.8), squeeze=False)
        colors = {g: f"C{i}" for i, g in enumerate(self.cfg.generators)}
        for ax, c in zip(axes[0], cfgs):
            key = f"fd_cfg{c:g}"
            top = ax.twiny() if "vae" in self.cfg.tokenizers else None
            for gen in self.cfg.generators:
                mine = [r for r in tf if r["generator"] == gen]
                sig = sorted((r["c_sigma"], r[f"{key}_mean"], r[f"{key}_std"]) for r in mine if r["tokenizer"] == "sigma_vae")
                if sig:
                    xs, ys, es = zip(*sig)
                    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=colors[gen],
                                label=f"{GEN_LABELS.get(gen, gen)}, SigmaVAE")
                vae = sorted((r["beta"], r[f"{key}_mean"], r[f"{key}_std"]) for r in mine if r["tokenizer"] == "vae")
                if vae and top is not None:
                    xs, ys, es = zip(*vae)
                    top.errorbar(xs, ys, yerr=es, marker="s", capsize=3, linestyle="--", color=colors[gen],
                                 label=f"{gen}, VAE (top axis: beta)")
                for r in mine:
                    if r["tokenizer"] == "ae":
                        ax.axhline(r[f"{key}_mean"], linestyle=":", color=colors[gen], label=f"{gen}, AE")
            if top is not None:
                top.set_xscale("log")
                top.set_xlabel("VAE KL weight beta (dashed)")
                top.legend(fontsize=7, loc="upper right")
            ax.set_xlabel("SigmaVAE C_sigma (solid)")
            ax.set_ylabel("FD (lower is better)")
            ax.set_title("without CFG" if c == 1.0 else f"with CFG (scale {c:g})", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        fig.savefig(self.out / "fd_vs_c_sigma.png", dpi=120)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        points = []
        for r in tf:
            pt = (r["tokenizer"], r["c_sigma"], r["beta"])
            if pt not in [q[0] for q in points]:
                points.append((pt, r["recon_fd_mean"], r["recon_psnr_mean"]))
        names = [_point_name(pt) for pt, _, _ in points]
        ax.bar(range(len(points)), [fd for _, fd, _ in points], color="tab:blue", alpha=0.7, label="reconstruction FD")
        ax.set_xticks(range(len(points)), names, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("FD of reconstructions (ceiling)")
        ax2 = ax.twinx()
        ax2.plot(range(len(points)), [ps for _, _, ps in points], "s", color="tab:orange", label="PSNR")
        ax2.set_ylabel("PSNR (dB)")
        ax.set_title("tokenizer reconstruction ceiling")
        fig.tight_layout()
        fig.savefig(self.out / "reconstruction_ceiling.png", dpi=120)
        plt.close(fig)
        self.plot_tolerance([pt for pt, _, _ in points])

    def plot_tolerance(self, points) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        for pt in points:
            rep = json.loads((self.tokenizer_dir(pt) / "report.json").read_text())
            tol = rep.get("tolerance") or {}
            if tol:
                ax.plot(tol["radii"], tol[tol["metric"]], marker="o", label=_point_name(pt))
                ax.set_ylabel(f"{tol['metric']} of decode(mu + delta * eps)")
        ax.set_xlabel("latent perturbation radius delta (x latent std)")
        ax.set_title("decoder tolerance")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.out / "decoder_tolerance.png", dpi=120)
        plt.close(fig)

    def plot_exposure(self, rows: list[dict[str, Any]]) -> None:
        """Per-position FD under own (solid) and ground-truth (dashed) prefixes, seed 0, per strategy."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        picked = [r for r in rows if r["tokenizer"] == "sigma_vae" and r["c_sigma"] == self.cfg.strategy_c_sigma
                  and r["seed"] == 0 and r["generator"] != "joint"]
        files = [(r, self.runner.cell_dir({k: r[k] for k in CELL_KEYS}) / "exposure.json") for r in picked]
        files = [(r, f) for r, f in files if f.exists()]
        if not files:
            return
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for r, f in files:
            d = json.loads(f.read_text())
            arr = {k: np.array(d[k], dtype=float) for k in ("positions", "fd_own", "fd_gt")}  # None -> nan
            line, = ax.plot(arr["positions"], arr["fd_own"], label=f"{r['generator']}/{r['strategy']}")
            ax.plot(arr["positions"], arr["fd_gt"], linestyle="--", color=line.get_color(), alpha=0.6)
        ax.set_xlabel("position")
        ax.set_ylabel("per-position FD of latents")
        ax.set_title(f"exposure at C_sigma={self.cfg.strategy_c_sigma:g} (solid: own prefix, dashed: ground truth)",
                     fontsize=8)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(self.out / "exposure_curves.png", dpi=120)
        plt.close(fig)

    def run(self, progress: bool = True) -> list[dict[str, Any]]:
        self.progress = progress
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "sweep.json").write_text(json.dumps(
            {k: (str(v) if isinstance(v, Path) else v) for k, v in self.cfg.__dict__.items()}, indent=2))
        self.runner.progress = progress
        cells = self.cells()
        points = list(dict.fromkeys(self.point(c) for c in cells))
        if self.runner.workers != 1 and len(points) > 1:
            # the tokenizers first, in parallel (each is cached by build_once, so this only warms the cache)
            stage = SweepRunner(self.out / "tokenizers" / ".stage", progress=progress, **self.cfg.launch,
                                settings={"tokenizers": [self.tokenizer_settings(p) for p in points]})
            stage.run([dict(zip(("tokenizer", "c_sigma", "beta"), p)) for p in points], self.tokenizer_cell,
                      desc="tokenizers")
        rows = self.runner.run(cells, self.run_cell, desc="variance sweep")
        self.write_outputs(rows)
        self.plot_exposure(rows)
        return rows


CELL_KEYS = ("tokenizer", "c_sigma", "beta", "generator", "strategy", "seed")
GEN_LABELS = {"gmm": "LatentAR + GMM head", "diffusion": "LatentAR + diffusion head", "joint": "JointDiffusion (non-AR)"}


def _data_key(data: str) -> str:
    """``--data`` with a wav folder's path made absolute, so the same folder keys the same cells."""
    return f"wavfolder:{Path(data.split(':', 1)[1]).resolve()}" if data.startswith("wavfolder:") else data


def _point_name(point: tuple) -> str:
    """``c_sigma=0.5`` (SigmaVAE), ``vae_beta=0.001``, ``ae``: the readable part of a tokenizer's folder."""
    fam, c_sigma, beta = point
    return f"c_sigma={c_sigma:g}" if fam == "sigma_vae" else f"vae_beta={beta:g}" if fam == "vae" else "ae"


def _short(cell: dict[str, Any]) -> str:
    return f"{_point_name(VarianceSweep.point(cell))} {cell['generator']}/{cell['strategy']} s{cell['seed']}"


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def build_parser(command: str = "sweep variance") -> argparse.ArgumentParser:
    p = ArgumentParser(prog=f"latentar {command}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                   help="budget: smoke (~2 min, tests), quick (make demo: digits, <= 15 min on 2 CPU cores, 3 seeds), "
                        "standard (the README's run: --data mnist then --data speech, <= 60 min on 2 cores in all; "
                        "make standard), full (GPU)")
    p.add_argument("--tokenizer", help=f"comma-separated tokenizer families, a subset of {','.join(TOKENIZERS)} "
                                       "(default sigma_vae): SigmaVAE swept along --c-sigma, VAE along --beta, AE one point")
    p.add_argument("--c-sigma", help="comma-separated SigmaVAE noise scales, e.g. 0,0.1,0.25,0.5,1.0 (default: preset's)")
    p.add_argument("--beta", help="comma-separated VAE KL weights (GIVT's knob), e.g. 1e-4,1e-3,1e-2 (default: preset's)")
    p.add_argument("--sampler", choices=SAMPLERS, help="reverse-diffusion sampler of every diffusion arm (default ddpm)")
    p.add_argument("--sampling-steps", type=int, help="sampling steps of every diffusion arm (default: preset's)")
    p.add_argument("--temperature", type=float,
                   help="sampling temperature of every arm (default 1): GMM component scales, diffusion per-step "
                        "noise (MAR's convention); values other than 1 need --sampler ddpm")
    p.add_argument("--generators", help=f"comma-separated subset of {','.join(GENERATORS)} (default: preset's)")
    p.add_argument("--strategies", help=f"comma-separated subset of {','.join(STRATEGIES)}, run at --strategy-c-sigma "
                                        "on the AR generators (default: preset's)")
    p.add_argument("--strategy-generators", help="comma-separated AR generators (gmm, diffusion) the strategies run on "
                                                 "(default: preset's: gmm for smoke/quick, gmm,diffusion for full)")
    p.add_argument("--strategy-c-sigma", type=float, default=0.5, help="C_sigma at which strategies are compared (0.5)")
    p.add_argument("--seeds", type=int, help="number of seeds per cell (default: preset's)")
    p.add_argument("--cfg", help="comma-separated CFG scales >= 0; 1 means no guidance (default: 1,3)")
    p.add_argument("--data", default="digits",
                   help="digits (8x8, 16 tokens) | mnist (28x28, 49 tokens) | speech | wavfolder:PATH (default digits)")
    p.add_argument("--out", default="runs/sweep",
                   help="output directory (default runs/sweep). A rerun with the same settings resumes it; one with "
                        "other settings (steps, CFG scales, data, ...) trains new cells and tokenizers beside the old "
                        "ones, and results.csv / results.md / the plots show only the current settings' cells")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--steps", type=int, help="override the generator's training steps (>= 1)")
    p.add_argument("--tok-steps", type=int, help="override the tokenizer's training steps (>= 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_launch_args(p)
    return p


def _names(text: str | None, default: list[str], choices, option: str, what: str) -> list[str]:
    """A comma-separated list of names from ``choices``, each once; the preset's when not given."""
    names = unique(parse_list(text, str, option), option) if text is not None else list(default)
    for n in names:
        if n not in choices:
            raise UsageError(f"{option}: unknown {what} {n!r}; choose from {', '.join(choices)}")
    return names


def _scales(text: str | None, default: list[float], option: str) -> list[float]:
    """A comma-separated list of finite numbers >= 0, each once; the preset's when not given."""
    if text is None:
        return list(default)
    return unique([finite(v, option, minimum=0.0) for v in parse_list(text, float, option)], option)


def preset_for(name: str, data: str) -> dict[str, Any]:
    """Preset ``name``'s settings for ``data``: its ``per_data`` entry for the data's kind (digits,
    mnist, speech; a wav folder counts as speech) laid over the rest."""
    preset = dict(PRESETS[name])
    per_data = preset.pop("per_data", {})
    return {**preset, **per_data.get("speech" if data.startswith("wavfolder:") else data, {})}


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """The resolved sweep configuration, or a UsageError naming the first bad option (nothing runs before)."""
    preset = preset_for(args.preset, args.data)
    tokenizers = _names(args.tokenizer, preset["tokenizers"], TOKENIZERS, "--tokenizer", "tokenizer")
    c_sigma = _scales(args.c_sigma, preset["c_sigma"], "--c-sigma")
    beta = _scales(args.beta, preset["beta"], "--beta")
    strategy_c_sigma = finite(args.strategy_c_sigma, "--strategy-c-sigma", minimum=0.0)
    generators = _names(args.generators, preset["generators"], GENERATORS, "--generators", "generator")
    strategies = _names(args.strategies, preset["strategies"], STRATEGIES, "--strategies", "strategy")
    cfg = _scales(args.cfg, preset["cfg"], "--cfg")
    seeds = positive_int(args.seeds, "--seeds") if args.seeds is not None else preset["seeds"]
    if args.data.startswith("wavfolder:"):
        folder = args.data.split(":", 1)[1]
        if not Path(folder).expanduser().is_dir():
            raise UsageError(f"--data {args.data}: wav folder {folder!r} does not exist")
    elif args.data not in ("digits", "mnist", "speech"):
        raise UsageError(f"--data must be digits, mnist, speech or wavfolder:PATH, got {args.data!r}")
    budget = {k: v for k, v in preset.items()
              if k not in ("c_sigma", "beta", "tokenizers", "generators", "strategies", "seeds", "cfg")}
    if args.sampler is not None:
        budget["sampler"] = args.sampler
    if args.sampling_steps is not None:
        budget["sampling_steps"] = positive_int(args.sampling_steps, "--sampling-steps")
    if args.temperature is not None:
        budget["temperature"] = finite(args.temperature, "--temperature", minimum=0.0)
    try:
        SamplingConfig(budget["sampler"], budget["sampling_steps"], float(budget["temperature"]))
    except ValueError as e:
        raise UsageError(f"--sampler/--sampling-steps/--temperature: {e}") from None
    budget["strategy_generators"] = _names(args.strategy_generators, budget["strategy_generators"],
                                           ("gmm", "diffusion"), "--strategy-generators", "AR generator")
    if args.steps is not None:
        budget["gen_steps"] = positive_int(args.steps, "--steps")
    if args.tok_steps is not None:
        budget["tok_steps"] = positive_int(args.tok_steps, "--tok-steps")
    return SweepConfig(preset=args.preset, data=args.data, out=out_dir(args.out), device=check_device(args.device),
                       tokenizers=tokenizers, beta=beta, c_sigma=c_sigma, generators=generators, strategies=strategies,
                       strategy_c_sigma=strategy_c_sigma,
                       seeds=seeds, cfg=cfg, budget=budget, launch=launch_options(args))


def main(argv: list[str] | None = None, command: str = "sweep variance") -> int:
    args = build_parser(command).parse_args(argv)
    cfg = config_from_args(args)
    t0 = time.perf_counter()
    VarianceSweep(cfg).run(progress=not args.quiet)
    print(f"variance sweep done in {time.perf_counter() - t0:.0f} s")
    print(f"table: {cfg.out / 'results.md'}\nplots: {cfg.out / 'fd_vs_c_sigma.png'}, "
          f"{cfg.out / 'reconstruction_ceiling.png'}, {cfg.out / 'decoder_tolerance.png'}, {cfg.out / 'exposure_curves.png'}")
    print((cfg.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

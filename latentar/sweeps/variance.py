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
Each run keeps its resolved config in ``out/config.yaml`` (the preset's values, from
``latentar/configs/presets/sweep_variance/<preset>.yaml``, under the options given; ``--cfg-dump``
prints it and runs nothing, ``--config out/config.yaml --out NEW`` runs it again) and
``out/run.json`` (the command line, the latentar version and git commit).

The published expectation tested here (LatentLM, Fig. 6): without CFG, AR quality improves with
tokenizer variance while the non-AR control stays flat; with CFG, the curves become U-shaped.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

# The command line, the presets and SweepConfig (torch-free, so `--help` is instant): latentar.commands.sweep_variance.
from latentar.commands.sweep_variance import (GENERATORS, PRESETS, STRATEGIES, TOKENIZERS, SweepConfig,  # noqa: F401
                                              build_parser, config_from_args, main, preset_for, sweep_config)
from latentar.commands import runner_options
from latentar.configs import save_run
from latentar.data.cache import build_once
from latentar.diffusion.sampling import SAMPLERS  # noqa: F401
from latentar.generation import (LatentSequences, SamplingConfig, build_generator, encode_for_ar,
                                 held_out_exposure, sample_and_score)
from latentar.metrics.domains import make_domain
from latentar.sweeps.runner import SweepRunner, aggregate, markdown_table, settings_key
from latentar.sweeps.verdicts import COMPETENT_ACC, claim_verdicts, comparison_rows

# Budgets per preset: latentar/configs/presets/sweep_variance/<preset>.yaml (PRESETS: a read-only view);
# every arm gets the same optimizer steps, batch and learning rate (the budget rule results.md states).
# GENERATORS, STRATEGIES, TOKENIZERS (the families SigmaVAE, VAE, AE and their knobs): latentar.commands.sweep_variance.

# Image tokenizers other than the 8x8 preset: MNIST 28x28 -> a 7x7 grid (49 tokens of 8 dims); narrow
# channels keep a step at ~0.25 s on one core (800 steps: PSNR 27.7 dB, reconstruction FD 7.6).
IMAGE_NETWORKS = {"mnist": {"latent_dim": 8, "channels": [8, 16], "strides": [2, 2]}}
# Audio: 16 kHz, the default tokenizer's hop 256 gives 62.5 frames/s (audio_seconds 1.024 -> 64
# frames); tokenizers train on 0.512 s random windows (latentar.tokenizers.crops), AR models on whole clips.
AUDIO_RATE = 16000
AUDIO_TRAIN_CROP, AUDIO_TRAIN_BATCH = 8192, 16  # ~0.5 s per tokenizer step on one core (bench/audio_tokenizer.py)


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
        from latentar.tokenizers import TOKENIZERS as TOKENIZER_CLASSES, CropTraining  # TOKENIZERS here: the names
        from latentar.train import Trainer
        d, ts = self.tokenizer_dir(point), self.tokenizer_settings(point)
        cls = TOKENIZER_CLASSES[ts["tokenizer"]]
        train_dir = d.parent / f".{d.name}.train"

        def build(tmp: Path) -> None:
            torch.manual_seed(ts["init_seed"])
            tok = cls(**ts["model"])
            data = (TensorDataset(self.task.train_x, self.task.train_y) if self.task.train_y is not None
                    else TensorDataset(self.task.train_x))
            task = tok if ts["crop"] is None else CropTraining(tok, ts["crop"])  # audio: short random windows
            Trainer(**ts["train"], device=self.cfg.device, out_dir=train_dir, log_every=50,
                    progress=self.progress,
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
                          progress=self.progress)  # inside a cell only --verbose draws it (latentar.train.reporting)
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
        weight beta (VAE, dashed, top log axis), the AE as a dotted level; one panel per CFG scale.
        Error bars: ± the sample std over seeds (``aggregate``), their count in the legend."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        tf = [r for r in agg if r["strategy"] == "tf"]
        cfgs = [c for c in self.cfg.cfg if any(f"fd_cfg{c:g}_mean" in r for r in tf)]
        fig, axes = plt.subplots(1, len(cfgs), figsize=(max(6.0, 4.6 * len(cfgs)), 5.2), squeeze=False)
        colors = {g: f"C{i}" for i, g in enumerate(self.cfg.generators)}
        seeds = sorted({int(r["n"]) for r in tf})
        n_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
        bars = Line2D([], [], color="0.3", marker="|", markersize=12, linestyle="none",
                      label=f"error bars: mean ± std over {n_text} seeds" if seeds[-1] > 1
                      else "1 seed: no error bars")
        legend: dict[str, Any] = {}   # label -> handle, one figure legend for every panel
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
                                 label=f"{GEN_LABELS.get(gen, gen)}, VAE (top axis: beta)")
                for r in mine:
                    if r["tokenizer"] == "ae":
                        ax.axhline(r[f"{key}_mean"], linestyle=":", color=colors[gen],
                                   label=f"{GEN_LABELS.get(gen, gen)}, AE")
            if top is not None:
                top.set_xscale("log")
                top.set_xlabel("VAE KL weight beta (dashed, log scale)", fontsize=8)
            ax.set_xlabel("SigmaVAE noise scale C_sigma" + (" (solid)" if top is not None else ""))
            ax.set_ylabel(f"FD of {self.b['num_samples']} samples (lower is better)")
            ax.set_title("without CFG" if c == 1.0 else f"with CFG (scale {c:g})", fontsize=9)
            ax.grid(alpha=0.3)
            for a in (ax, top) if top is not None else (ax,):
                for h, lab in zip(*a.get_legend_handles_labels()):
                    legend.setdefault(lab, h)
        legend[bars.get_label()] = bars
        rows = -(-len(legend) // 3)
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(3, len(legend)), fontsize=7,
                   frameon=False)
        fig.suptitle(f"Generation FD against tokenizer variance ({self.cfg.data}, teacher forcing)", fontsize=10)
        fig.tight_layout(rect=(0, min(0.45, 0.045 * rows + 0.02), 1, 1))
        fig.savefig(self.out / "fd_vs_c_sigma.png", dpi=120)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(6, 4))
        points = []
        for r in tf:
            pt = (r["tokenizer"], r["c_sigma"], r["beta"])
            if pt not in [q[0] for q in points]:
                points.append((pt, r["recon_fd_mean"], r["recon_psnr_mean"]))
        names = [_point_name(pt) for pt, _, _ in points]
        fd_color, psnr_color = "tab:blue", "tab:orange"
        bar = ax.bar(range(len(points)), [fd for _, fd, _ in points], color=fd_color, alpha=0.7,
                     label="reconstruction FD (left axis, lower is better)")
        ax.set_xticks(range(len(points)), names, rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("tokenizer")
        ax.set_ylabel("FD of test reconstructions", color=fd_color)
        ax.tick_params(axis="y", colors=fd_color)
        ax2 = ax.twinx()
        psnr, = ax2.plot(range(len(points)), [ps for _, _, ps in points], "s", color=psnr_color, markersize=8,
                         label="PSNR (right axis, dB, higher is better)")
        ax2.set_ylabel("PSNR of test reconstructions (dB)", color=psnr_color)
        ax2.tick_params(axis="y", colors=psnr_color)
        ax2.spines["left"].set_color(fd_color)
        ax2.spines["right"].set_color(psnr_color)
        ax.legend(handles=[bar, psnr], fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2,
                  frameon=False)  # above the axes: never over a bar or a marker
        ax.set_title("Tokenizer reconstruction ceiling: decode(encode(x)) on the test split", fontsize=9, pad=20)
        fig.tight_layout()
        fig.savefig(self.out / "reconstruction_ceiling.png", dpi=120)
        plt.close(fig)
        self.plot_tolerance([pt for pt, _, _ in points])

    def plot_tolerance(self, points) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.8))
        for pt in points:
            rep = json.loads((self.tokenizer_dir(pt) / "report.json").read_text())
            tol = rep.get("tolerance") or {}
            if tol:
                unit = " (dB)" if tol["metric"] in ("psnr", "si_snr") else ""
                ax.plot(tol["radii"], tol[tol["metric"]], marker="o", label=_point_name(pt))
                ax.set_ylabel(f"{tol['metric']}{unit} of decode(mu + delta * std * eps)")
        ax.set_xlabel("latent perturbation radius delta (x latent std)")
        ax.set_title("Decoder tolerance: reconstruction quality as latent noise grows", fontsize=9)
        ax.legend(fontsize=7, title="tokenizer", title_fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.out / "decoder_tolerance.png", dpi=120)
        plt.close(fig)

    def plot_exposure(self, rows: list[dict[str, Any]]) -> None:
        """Per-position FD under own (solid) and ground-truth (dashed) prefixes, seed 0, per strategy."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        picked = [r for r in rows if r["tokenizer"] == "sigma_vae" and r["c_sigma"] == self.cfg.strategy_c_sigma
                  and r["seed"] == 0 and r["generator"] != "joint"]
        files = [(r, self.runner.cell_dir({k: r[k] for k in CELL_KEYS}) / "exposure.json") for r in picked]
        files = [(r, f) for r, f in files if f.exists()]
        if not files:
            return
        strategy_names = {"tf": "teacher forcing", "ss": "scheduled sampling", "noise": "context noise", "bash": "BASH"}
        fig, ax = plt.subplots(figsize=(8.5, 4.2))
        for r, f in files:
            d = json.loads(f.read_text())
            arr = {k: np.array(d[k], dtype=float) for k in ("positions", "fd_own", "fd_gt")}  # None -> nan
            name = f"{GEN_LABELS.get(r['generator'], r['generator'])}, {strategy_names.get(r['strategy'], r['strategy'])}"
            line, = ax.plot(arr["positions"], arr["fd_own"], label=name)
            ax.plot(arr["positions"], arr["fd_gt"], linestyle="--", color=line.get_color(), alpha=0.6)
        styles = [Line2D([], [], color="0.3", linestyle="-", label="own prefix (free-running)"),
                  Line2D([], [], color="0.3", linestyle="--", alpha=0.6, label="ground-truth prefix")]
        ax.set_xlabel("token position t")
        ax.set_ylabel("FD of generated latents at t vs held-out")
        ax.set_title(f"Exposure bias at C_sigma={self.cfg.strategy_c_sigma:g}: per-position FD (seed 0)", fontsize=9)
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=handles + styles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  title="colour: arm; line style: prefix", title_fontsize=7)
        ax.grid(alpha=0.3)
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
# Command line (the parser, the presets and the config: latentar.commands.sweep_variance)
# --------------------------------------------------------------------------------------------------
def run_cli(args: argparse.Namespace, config: dict[str, Any], command: str = "sweep variance") -> int:
    """Run the resolved ``config`` of ``latentar sweep variance`` (checked before: nothing has run)."""
    cfg = sweep_config(config, runner_options(args, config))
    save_run(cfg.out, command, config, getattr(args, "argv", None))
    t0 = time.perf_counter()
    VarianceSweep(cfg).run(progress=not args.quiet)
    print(f"variance sweep done in {time.perf_counter() - t0:.0f} s")
    print(f"table: {cfg.out / 'results.md'}\nplots: {cfg.out / 'fd_vs_c_sigma.png'}, "
          f"{cfg.out / 'reconstruction_ceiling.png'}, {cfg.out / 'decoder_tolerance.png'}, {cfg.out / 'exposure_curves.png'}")
    print((cfg.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

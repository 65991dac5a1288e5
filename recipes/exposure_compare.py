"""Exposure strategies side by side: one LatentAR backbone, one dataset, one budget.

    python recipes/exposure_compare.py                                        # toy Gauss-Markov latents
    python recipes/exposure_compare.py latents.tokenizer=runs/tok/model
    python recipes/exposure_compare.py seeds=[0,1,2] trainer.max_steps=3000 '~strategy@strategies.bash'
    python recipes/exposure_compare.py trainer=smoke out_dir=/tmp/ec meter.num_samples=64   # wiring check

Config: latentar/configs/exposure_compare.yaml (model, trainer and one ``strategies.<name>`` node per
strategy, each a ``latentar/configs/strategy`` config). Data: digits latents from a saved tokenizer
(``tok.ar_latents`` of the fixed train / test split, raster order, class labels) or, without one, a
Gauss-Markov toy (``latentar.data.gauss_markov``). Every (strategy, seed) cell trains from the
same initialisation with the same Trainer budget, then reports the held-out teacher-forced NLL and
the exposure meter (``exposure_curve``). Outputs in ``out_dir``: ``results.csv`` (one row per cell,
resumable through SweepRunner), ``results.md`` (mean ± std over seeds), ``exposure.png`` (FD per
position under own vs ground-truth prefixes, one line per strategy and prefix, bands ± std over
seeds) and ``cells/<id>/`` (curve JSON and plot, checkpoints).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import TensorDataset

from latentar.configs import record_recipe
from latentar.exposure import ExposureTask, exposure_curve
from latentar.metrics.plots import save_lines
from latentar.sweeps.runner import SweepRunner, aggregate, markdown_table


def load_latents(cfg: DictConfig) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """(train z (N, T, D), train labels | None, test z, test labels | None)."""
    if cfg.latents.tokenizer:
        from latentar.data import load_digits
        from latentar.pretrained import saved_class_name
        from latentar.tokenizers import AE, VAE, SigmaVAE
        path = Path(cfg.latents.tokenizer)
        kind = saved_class_name(path)
        classes = {"SigmaVAE": SigmaVAE, "VAE": VAE, "AE": AE}
        if kind not in classes:
            raise ValueError(f"{path} holds a {kind!r}, not a tokenizer ({sorted(classes)})")
        tok = classes[kind].from_pretrained(path).eval()
        out = []
        for split, seed in (("train", 0), ("test", 1)):
            x, y = load_digits(split)
            with torch.no_grad():
                z = tok.to_sequence(tok.ar_latents(x, generator=torch.Generator().manual_seed(seed)))
            out += [z.float(), y]
        return tuple(out)
    from latentar.data.gauss_markov import GaussMarkov
    toy = cfg.latents.toy
    proc = GaussMarkov(dim=toy.dim, length=toy.length, a=toy.a, theta=toy.theta)
    return (proc.sample(toy.num_train, torch.Generator().manual_seed(0)), None,
            proc.sample(toy.num_test, torch.Generator().manual_seed(1)), None)


@torch.no_grad()
def held_out_nll(model, z: torch.Tensor, y: torch.Tensor | None, device, batch: int = 256) -> float:
    """Teacher-forced NLL per token on held-out latents (what every strategy is also judged on)."""
    total = 0.0
    for s in range(0, len(z), batch):
        kw = {} if y is None else {"labels": y[s:s + batch].to(device)}
        total += float(model.loss(z[s:s + batch].to(device), reduction="sum", **kw))
    return total / (z.shape[0] * z.shape[1])


@hydra.main(config_path="pkg://latentar.configs", config_name="exposure_compare", version_base=None)
def main(cfg: DictConfig) -> None:
    out = Path(cfg.out_dir)
    record_recipe(cfg, out)
    train_z, train_y, test_z, test_y = load_latents(cfg)
    N, T, D = train_z.shape
    train = TensorDataset(train_z) if train_y is None else TensorDataset(train_z, train_y)
    train = [b[0] for b in train] if train_y is None else train  # bare (T, D) items without labels
    names = list(cfg.strategies)
    cells = [{"strategy": name, "seed": int(seed)} for seed in cfg.seeds for name in names]

    def run_cell(cell: dict, cell_dir: Path) -> dict:
        torch.manual_seed(cell["seed"])
        model = hydra.utils.instantiate(cfg.model, latent_dim=D, max_len=T,
                                        num_classes=0 if train_y is None else int(train_y.max()) + 1)
        strategy = hydra.utils.instantiate(cfg.strategies[cell["strategy"]])
        trainer = hydra.utils.instantiate(cfg.trainer, out_dir=str(cell_dir / "train"), seed=cell["seed"],
                                          desc=cell["strategy"])
        t0 = time.perf_counter()
        fit = trainer.fit(ExposureTask(model, strategy, data=train), train)
        seconds = time.perf_counter() - t0
        model.eval()
        curve = exposure_curve(model, test_z, prefix_len=cfg.meter.prefix_len, num_samples=cfg.meter.num_samples,
                               labels=test_y, temperature=cfg.meter.temperature, train_data=train_z,
                               generator=torch.Generator(device=trainer.device).manual_seed(10_000 + cell["seed"]))
        (cell_dir / "curve.json").write_text(json.dumps(curve.to_dict()))
        curve.save_plot(cell_dir / "exposure.png", title=f"{cell['strategy']} seed={cell['seed']}")
        return {"targets_valid": strategy.targets_valid, "train_loss": fit["loss"], "train_seconds": seconds,
                "test_nll": held_out_nll(model, test_z, test_y, trainer.device), **curve.summary()}

    # Cells are keyed by every setting that changes them (the resolved config, less the seed list and
    # the output folder), so a rerun with other settings never returns these cells' results.
    settings = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in ("seeds", "out_dir")}
    runner = SweepRunner(out, settings=settings)
    rows = runner.run(cells, run_cell, desc="strategies")
    metrics = ["test_nll", "fd_own_mean", "fd_gt_mean", "fd_own_last", "nn_own_mean", "nn_data_mean", "train_seconds"]
    agg = aggregate(rows, by=["strategy", "targets_valid"], metrics=[m for m in metrics if m in rows[0]])
    (out / "results.md").write_text(f"# Exposure strategies ({N} training sequences of {T} x {D} latents, "
                                    f"{cfg.trainer.max_steps} steps)\n\n" + markdown_table(agg))
    series = {}
    for name in names:
        curves = [json.loads((runner.cell_dir({"strategy": name, "seed": int(s)}) / "curve.json").read_text())
                  for s in cfg.seeds]
        for key, label in (("fd_own", "own prefix"), ("fd_gt", "ground-truth prefix")):
            v = np.array([[np.nan if e is None else e for e in c[key]] for c in curves], dtype=float)
            series[f"{name}, {label}"] = (np.nanmean(v, 0), np.nanstd(v, 0, ddof=1) if len(curves) > 1 else None)
    save_lines(out / "exposure.png", np.arange(T), series, xlabel="token position t",
               ylabel="FD of generated latents at t vs held-out",
               title=f"Exposure: per-position FD, own vs ground-truth prefix ({N} training sequences)",
               band=f"mean ± std over {len(cfg.seeds)} seeds")
    print((out / "results.md").read_text())
    print(f"plots: {out / 'exposure.png'} and {out / 'cells'}/*/exposure.png;  config:\n{OmegaConf.to_yaml(cfg.strategies)}")


if __name__ == "__main__":
    main()

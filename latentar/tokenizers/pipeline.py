"""Train a tokenizer end to end: fit, estimate the latent scale, report, save (what the recipe runs).

    report = fit_tokenizer(SigmaVAE(...), DigitsDataset("train"), Trainer(max_steps=2000),
                           eval_data=DigitsDataset("test"), out_dir="runs/tok")

Writes into ``out_dir``: ``model/`` (``save_pretrained``: config.json + diffusion_pytorch_model.safetensors, with the
latent scale), ``report.json`` (``latent_report``), ``tolerance.png`` and ``reconstructions.png``
(images) or ``spectrograms.png`` (audio). The Trainer's own checkpoint and ``metrics.jsonl`` go
wherever its ``out_dir`` points (the recipe uses ``<out_dir>/train``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from latentar.tokenizers.base import LatentTokenizer, batch_data
from latentar.tokenizers.plots import plot_reconstructions, plot_spectrograms, plot_tolerance
from latentar.tokenizers.report import DEFAULT_RADII, latent_report


def infer_data_spec(dataset: Any) -> dict[str, Any]:
    """``{"modality", "in_channels"[, "sample_rate"]}`` from a dataset's first item:
    ``(C, H, W)`` -> image, ``(C, T)`` -> audio (``sample_rate`` from ``dataset.sample_rate``)."""
    if len(dataset) == 0:
        raise ValueError("the training dataset is empty")
    x = batch_data(dataset[0])
    if x.dim() == 3:
        return {"modality": "image", "in_channels": int(x.shape[0])}
    if x.dim() == 2:
        spec = {"modality": "audio", "in_channels": int(x.shape[0])}
        if getattr(dataset, "sample_rate", None):
            spec["sample_rate"] = int(dataset.sample_rate)
        return spec
    raise ValueError(f"cannot tell the modality of dataset items of shape {tuple(x.shape)}: "
                     "expected (C, H, W) images or (C, T) audio")


def fit_tokenizer(tokenizer: LatentTokenizer, train_data: Any, trainer: Any, eval_data: Any = None,
                  out_dir: str | os.PathLike | None = None, radii: Any = DEFAULT_RADII,
                  report_examples: int | None = 1024, scale_examples: int | None = 4096) -> dict[str, Any]:
    """Fit with ``trainer`` (a ``latentar.train.Trainer``), set the latent scale on ``train_data``,
    report on ``eval_data`` (default ``train_data``) and, with ``out_dir``, save model, report and
    figures. Returns the report with ``report["train"]`` = the Trainer's last step and loss."""
    from latentar.metrics.plots import write_json

    result = trainer.fit(tokenizer, train_data)
    tokenizer.estimate_latent_scale(train_data, max_examples=scale_examples)
    eval_data = train_data if eval_data is None else eval_data
    report = latent_report(tokenizer, eval_data, radii=list(radii), max_examples=report_examples)
    report["train"] = {"step": result["step"], "loss": result["loss"]}
    if out_dir is not None:
        out = Path(out_dir)
        tokenizer.save_pretrained(out / "model")
        write_json(out / "report.json", report)
        plot_tolerance({report["model"]: report}, out / "tolerance.png")
        if tokenizer.modality == "image":
            plot_reconstructions(tokenizer, eval_data, out / "reconstructions.png")
        else:
            plot_spectrograms(tokenizer, eval_data, out / "spectrograms.png")
    return report

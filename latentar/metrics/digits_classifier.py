"""A small CNN trained on the digits train split: the feature extractor behind ``digits_fd``.

FID uses Inception features; 8x8 digits need their own network. ``DigitsClassifier`` is two 3x3
convolutions, a 2x2 max-pool and two linear layers; ``features`` returns the ``feature_dim``
penultimate activations (taken before their ReLU, so no feature is constantly zero and the
covariance stays full rank) that ``digits_fd`` fits Gaussians to. It is trained once
(Adam, fixed seed, about ten seconds on one CPU core), saved with ``save_pretrained`` under
``cache_dir("digits_classifier")/v<VERSION>``, and re-used; held-out accuracy on the fixed test
split is about 98-99% (checked to be >= 97% after training).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from latentar.data.cache import build_once, cache_dir
from latentar.data.digits import load_digits
from latentar.metrics.frechet import frechet_distance_from_features
from latentar.pretrained import PretrainedMixin

# Bump when the architecture or training recipe changes: old caches are then ignored.
VERSION = 1
MIN_ACCURACY = 0.97
TRAIN_SETTINGS = {"epochs": 20, "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-4, "seed": 0, "shift_aug": 1}


class DigitsClassifier(nn.Module, PretrainedMixin):
    """Digits CNN. Input ``(N, 1, 8, 8)`` in [-1, 1]; logits ``(N, 10)``; features ``(N, feature_dim)``."""

    def __init__(self, channels: int = 32, feature_dim: int = 64, version: int = VERSION):
        super().__init__()
        self.config = {"channels": channels, "feature_dim": feature_dim, "version": version}
        c = channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 2c, 4, 4)
        )
        self.fc = nn.Linear(2 * c * 16, feature_dim)
        self.out = nn.Linear(feature_dim, 10)

    @staticmethod
    def _check(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3 and x.shape[-2:] == (8, 8):
            x = x.unsqueeze(1)
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"expected digit images of shape (N, 1, 8, 8) scaled to [-1, 1], got {tuple(x.shape)}")
        return x.float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate pre-activations ``(N, feature_dim)``."""
        x = self._check(x)
        return self.fc(self.conv(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.features(x)))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted labels ``(N,)`` int64."""
        return self(x).argmax(-1)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(x).cpu() == y.cpu()).float().mean())


def _shift(x: torch.Tensor, g: torch.Generator, max_shift: int) -> torch.Tensor:
    """Random integer translation by up to ``max_shift`` pixels (background -1 fills the gap)."""
    if max_shift == 0:
        return x
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=g).tolist()
    return pad[..., dy:dy + 8, dx:dx + 8]


def train_digits_classifier(epochs: int = TRAIN_SETTINGS["epochs"], batch_size: int = TRAIN_SETTINGS["batch_size"],
                            lr: float = TRAIN_SETTINGS["lr"], weight_decay: float = TRAIN_SETTINGS["weight_decay"],
                            seed: int = TRAIN_SETTINGS["seed"], shift_aug: int = TRAIN_SETTINGS["shift_aug"]
                            ) -> tuple[DigitsClassifier, float]:
    """Train on the digits train split (CPU, deterministic); return ``(model, test accuracy)``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny CNN: extra threads only add contention (10x slower on a busy box)
    try:
        return _train(epochs, batch_size, lr, weight_decay, seed, shift_aug)
    finally:
        torch.set_num_threads(threads)


def _train(epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int, shift_aug: int
           ) -> tuple[DigitsClassifier, float]:
    x, y = load_digits("train")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(y) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(_shift(x[idx], g, shift_aug)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    xt, yt = load_digits("test")
    return model, model.accuracy(xt, yt)


def classifier_dir() -> Path:
    return cache_dir("digits_classifier") / f"v{VERSION}"


def _complete(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def _build(tmp: Path) -> None:
    """Train the classifier and save it with its held-out accuracy into the empty folder ``tmp``."""
    model, acc = train_digits_classifier()
    if acc < MIN_ACCURACY:
        raise RuntimeError(f"the digits classifier reached only {acc:.3f} held-out accuracy (< {MIN_ACCURACY}); "
                           "the training recipe or the digits split changed")
    model.save_pretrained(tmp)
    (tmp / "metrics.json").write_text(json.dumps({"test_accuracy": acc, "version": VERSION,
                                                  "train": TRAIN_SETTINGS}, indent=2))


def load_digits_classifier(device: str | torch.device = "cpu", retrain: bool = False) -> DigitsClassifier:
    """The cached classifier (trained and cached on first call, whatever grad mode the caller is
    in; concurrent first calls build it once: ``latentar.data.cache.build_once``), in eval mode,
    without gradients."""
    path = classifier_dir()
    if retrain and path.exists():
        shutil.rmtree(path, ignore_errors=True)
    build_once(path, _build, ready=_complete)
    try:
        model = DigitsClassifier.from_pretrained(path)
    except (ValueError, OSError, json.JSONDecodeError):  # damaged after the build: rebuild once
        shutil.rmtree(path, ignore_errors=True)
        build_once(path, _build, ready=_complete)
        model = DigitsClassifier.from_pretrained(path)
    model.eval().requires_grad_(False)
    return model.to(device)


@torch.no_grad()
def digits_features(images: torch.Tensor, model: DigitsClassifier | None = None, batch_size: int = 1024) -> torch.Tensor:
    """Classifier features ``(N, F)`` float32 (CPU) of ``images (N, 1, 8, 8)`` in [-1, 1]."""
    model = model or load_digits_classifier()
    device = next(model.parameters()).device
    out = [model.features(images[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def digits_fd(generated_images: torch.Tensor, reference_images: torch.Tensor | None = None,
              model: DigitsClassifier | None = None) -> float:
    """Frechet distance between classifier features of ``generated_images`` and ``reference_images``.

    Both ``(N, 1, 8, 8)`` in [-1, 1]; ``reference_images=None`` uses the digits train split
    (1,438 images). FD shrinks as N grows: compare runs with equal sample counts.
    """
    if not isinstance(generated_images, torch.Tensor):
        raise TypeError(f"generated_images must be a tensor (N, 1, 8, 8), got {type(generated_images).__name__}")
    if reference_images is None:
        reference_images, _ = load_digits("train")
    model = model or load_digits_classifier()
    return frechet_distance_from_features(digits_features(generated_images, model), digits_features(reference_images, model))

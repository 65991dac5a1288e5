"""Small CNNs trained on the digits (8x8) or MNIST (28x28) train split: the feature extractors
behind ``digits_fd`` and ``mnist_fd``.

FID uses Inception features; small grey digits need their own network. One mechanism serves both
datasets, selected by ``dataset="digits" | "mnist"`` (:data:`SPECS`): the same CNN
(:class:`ImageClassifier`: two 3x3 convolutions, 2x2 max-pooling, two linear layers; 28x28 inputs
are pooled after each convolution so the feature layer sees 7x7 maps), the same training loop
(AdamW + one-cycle, fixed seed, random integer shifts, one CPU thread), the same cache
(``build_once`` into ``cache_dir("<dataset>_classifier")/v<version>``, ``save_pretrained``,
held-out accuracy checked to be >= :data:`MIN_ACCURACY` after training) and the same Frechet
distance (:func:`image_fd`). ``features`` returns the ``feature_dim`` penultimate activations,
taken before their ReLU so no feature is constantly zero and the covariance stays full rank.

* digits (:class:`DigitsClassifier`, 32 channels): about ten seconds to train, 98-99% on the
  359 test digits.
* MNIST (:class:`MnistClassifier`, 16 channels, per-image shifts of up to 2 pixels): about
  20 seconds on one core (4,000 train images, 10 epochs), about 98% on the 1,000 test images.

The digits names (``DigitsClassifier``, ``load_digits_classifier``, ``digits_features``,
``digits_fd``, ``train_digits_classifier``, ``classifier_dir()``) behave as before and train the
bit-identical v1 model.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from latentar.data.cache import build_once, cache_dir
from latentar.data.digits import load_digits
from latentar.data.mnist import load_mnist
from latentar.metrics.frechet import frechet_distance_from_features
from latentar.pretrained import PretrainedMixin, is_saved, register_to_config

# Bump when the architecture or training recipe changes: old caches are then ignored.
VERSION = 1  # digits
MNIST_VERSION = 1
MIN_ACCURACY = 0.97
TRAIN_SETTINGS = {"epochs": 20, "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-4, "seed": 0, "shift_aug": 1}
MNIST_TRAIN_SETTINGS = {"epochs": 10, "batch_size": 64, "lr": 4e-3, "weight_decay": 1e-4, "seed": 0, "shift_aug": 2,
                        "shift_per_image": True}


class ImageClassifier(PretrainedMixin):
    """The shared CNN. Input ``(N, 1, S, S)`` in [-1, 1]; logits ``(N, 10)``; features ``(N, feature_dim)``.

    Subclasses fix the input size ``S`` (``image_size``) and whether to pool after the first
    convolution too (``pool_first``, for inputs large enough to afford it)."""

    image_size: int = 8
    pool_first: bool = False
    dataset: str = "digits"
    what: str = "digit"

    @register_to_config
    def __init__(self, channels: int = 32, feature_dim: int = 64, version: int = VERSION):
        super().__init__()
        c, s = channels, self.image_size
        layers: list[nn.Module] = [nn.Conv2d(1, c, 3, padding=1), nn.ReLU()]
        if self.pool_first:
            layers.append(nn.MaxPool2d(2))
            s //= 2
        layers += [nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]  # (N, 2c, s/2, s/2)
        s //= 2
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(2 * c * s * s, feature_dim)
        self.out = nn.Linear(feature_dim, 10)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if x.ndim == 3 and x.shape[-2:] == (s, s):
            x = x.unsqueeze(1)
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, s, s):
            raise ValueError(f"expected {self.what} images of shape (N, 1, {s}, {s}) scaled to [-1, 1], "
                             f"got {tuple(x.shape)}")
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


class DigitsClassifier(ImageClassifier):
    """Digits CNN. Input ``(N, 1, 8, 8)`` in [-1, 1]; logits ``(N, 10)``; features ``(N, feature_dim)``."""

    def __init__(self, channels: int = 32, feature_dim: int = 64, version: int = VERSION):
        super().__init__(channels, feature_dim, version)


class MnistClassifier(ImageClassifier):
    """MNIST CNN. Input ``(N, 1, 28, 28)`` in [-1, 1]; logits ``(N, 10)``; features ``(N, feature_dim)``."""

    image_size = 28
    pool_first = True
    dataset = "mnist"
    what = "MNIST"

    def __init__(self, channels: int = 16, feature_dim: int = 64, version: int = MNIST_VERSION):
        super().__init__(channels, feature_dim, version)


@dataclass(frozen=True)
class ClassifierSpec:
    """What differs between datasets: the model class, the split loader, the recipe and its version."""

    model_cls: type[ImageClassifier]
    load: Callable[[str], tuple[torch.Tensor, torch.Tensor]]
    version: int
    train: dict[str, Any]


SPECS: dict[str, ClassifierSpec] = {
    "digits": ClassifierSpec(DigitsClassifier, load_digits, VERSION, TRAIN_SETTINGS),
    "mnist": ClassifierSpec(MnistClassifier, load_mnist, MNIST_VERSION, MNIST_TRAIN_SETTINGS),
}


def _spec(dataset: str) -> ClassifierSpec:
    if dataset not in SPECS:
        raise ValueError(f"unknown classifier dataset {dataset!r}; expected one of {tuple(SPECS)}")
    return SPECS[dataset]


def _shift(x: torch.Tensor, g: torch.Generator, max_shift: int, per_image: bool = False) -> torch.Tensor:
    """Random integer translation by up to ``max_shift`` pixels (background -1 fills the gap): one
    shift for the whole batch, or (``per_image``) one per image."""
    if max_shift == 0:
        return x
    h, w = x.shape[-2:]
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    if not per_image:
        dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=g).tolist()
        return pad[..., dy:dy + h, dx:dx + w]
    d = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=g)
    rows = (d[:, 0, None] + torch.arange(h))[:, None, :, None]  # (N, 1, h, 1)
    cols = (d[:, 1, None] + torch.arange(w))[:, None, None, :]  # (N, 1, 1, w)
    n = torch.arange(len(x))[:, None, None, None]
    ch = torch.arange(x.shape[1])[None, :, None, None]
    return pad[n, ch, rows, cols]


def train_classifier(dataset: str = "digits", **overrides: Any) -> tuple[ImageClassifier, float]:
    """Train ``dataset``'s classifier on its train split (CPU, one thread, deterministic) with
    :data:`SPECS` settings updated by ``overrides``; return ``(model, test accuracy)``."""
    spec = _spec(dataset)
    unknown = set(overrides) - set(spec.train)
    if unknown:
        raise TypeError(f"unknown training settings {sorted(unknown)} for the {dataset} classifier; "
                        f"expected some of {sorted(spec.train)}")
    settings = {**spec.train, **overrides}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny CNN: extra threads only add contention (10x slower on a busy box)
    try:
        return _train(spec, **settings)
    finally:
        torch.set_num_threads(threads)


def train_digits_classifier(epochs: int = TRAIN_SETTINGS["epochs"], batch_size: int = TRAIN_SETTINGS["batch_size"],
                            lr: float = TRAIN_SETTINGS["lr"], weight_decay: float = TRAIN_SETTINGS["weight_decay"],
                            seed: int = TRAIN_SETTINGS["seed"], shift_aug: int = TRAIN_SETTINGS["shift_aug"]
                            ) -> tuple[DigitsClassifier, float]:
    """Train on the digits train split (CPU, deterministic); return ``(model, test accuracy)``."""
    return train_classifier("digits", epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                            seed=seed, shift_aug=shift_aug)


def train_mnist_classifier(**overrides: Any) -> tuple[MnistClassifier, float]:
    """Train on the MNIST train split (4,000 images; CPU, deterministic); return ``(model, test accuracy)``."""
    return train_classifier("mnist", **overrides)


def _train(spec: ClassifierSpec, epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int,
           shift_aug: int, shift_per_image: bool = False) -> tuple[ImageClassifier, float]:
    x, y = spec.load("train")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.model_cls()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(y) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(_shift(x[idx], g, shift_aug, shift_per_image)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    xt, yt = spec.load("test")
    return model, model.accuracy(xt, yt)


def classifier_dir(dataset: str = "digits") -> Path:
    """``cache_dir("<dataset>_classifier") / "v<version>"``: where ``dataset``'s classifier is cached."""
    spec = _spec(dataset)
    return cache_dir(f"{dataset}_classifier") / f"v{spec.version}"


def _complete(path: Path) -> bool:
    return is_saved(path)  # either layout: caches written before the diffusers format still load


def _builder(dataset: str) -> Callable[[Path], None]:
    def build(tmp: Path) -> None:
        """Train the classifier and save it with its held-out accuracy into the empty folder ``tmp``."""
        model, acc = train_classifier(dataset)
        if acc < MIN_ACCURACY:
            raise RuntimeError(f"the {dataset} classifier reached only {acc:.3f} held-out accuracy "
                               f"(< {MIN_ACCURACY}); the training recipe or the {dataset} split changed")
        model.save_pretrained(tmp)
        spec = _spec(dataset)
        (tmp / "metrics.json").write_text(json.dumps({"test_accuracy": acc, "version": spec.version,
                                                      "train": spec.train}, indent=2))
    return build


def load_classifier(dataset: str = "digits", device: str | torch.device = "cpu",
                    retrain: bool = False) -> ImageClassifier:
    """``dataset``'s cached classifier (trained and cached on first call, whatever grad mode the
    caller is in; concurrent first calls build it once: ``latentar.data.cache.build_once``), in
    eval mode, without gradients."""
    spec, path, build = _spec(dataset), classifier_dir(dataset), _builder(dataset)
    if retrain and path.exists():
        shutil.rmtree(path, ignore_errors=True)
    build_once(path, build, ready=_complete)
    try:
        model = spec.model_cls.from_pretrained(path)
    except (ValueError, OSError, json.JSONDecodeError):  # damaged after the build: rebuild once
        shutil.rmtree(path, ignore_errors=True)
        build_once(path, build, ready=_complete)
        model = spec.model_cls.from_pretrained(path)
    model.eval().requires_grad_(False)
    return model.to(device)


def load_digits_classifier(device: str | torch.device = "cpu", retrain: bool = False) -> DigitsClassifier:
    """The cached digits classifier (see :func:`load_classifier`)."""
    return load_classifier("digits", device, retrain)


def load_mnist_classifier(device: str | torch.device = "cpu", retrain: bool = False) -> MnistClassifier:
    """The cached MNIST classifier (see :func:`load_classifier`)."""
    return load_classifier("mnist", device, retrain)


def _resolve(model: ImageClassifier | None, dataset: str | None) -> tuple[ImageClassifier, str]:
    if model is not None:
        if dataset is not None and dataset != model.dataset:
            raise ValueError(f"a {type(model).__name__} gives {model.dataset} features, not {dataset} ones")
        return model, model.dataset
    if dataset is None:
        raise ValueError("pass dataset='digits' or 'mnist' (or the classifier itself as model=)")
    return load_classifier(dataset), dataset


@torch.no_grad()
def image_features(images: torch.Tensor, model: ImageClassifier | None = None, batch_size: int = 1024,
                   dataset: str | None = None) -> torch.Tensor:
    """Classifier features ``(N, F)`` float32 (CPU) of ``images (N, 1, S, S)`` in [-1, 1], from
    ``model`` or else ``dataset``'s cached classifier."""
    model, _ = _resolve(model, dataset)
    device = next(model.parameters()).device
    out = [model.features(images[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def image_fd(generated_images: torch.Tensor, reference_images: torch.Tensor | None = None,
             model: ImageClassifier | None = None, dataset: str | None = None) -> float:
    """Frechet distance between classifier features of ``generated_images`` and ``reference_images``.

    Both ``(N, 1, S, S)`` in [-1, 1]; the classifier is ``model`` or ``dataset``'s cached one;
    ``reference_images=None`` uses that dataset's train split. FD shrinks as N grows: compare runs
    with equal sample counts.
    """
    if not isinstance(generated_images, torch.Tensor):  # before loading (maybe training) a classifier
        s = (model or _spec(dataset or "digits").model_cls).image_size
        raise TypeError(f"generated_images must be a tensor (N, 1, {s}, {s}), got {type(generated_images).__name__}")
    model, dataset = _resolve(model, dataset)
    if reference_images is None:
        reference_images, _ = _spec(dataset).load("train")
    return frechet_distance_from_features(image_features(generated_images, model),
                                          image_features(reference_images, model))


def digits_features(images: torch.Tensor, model: DigitsClassifier | None = None, batch_size: int = 1024) -> torch.Tensor:
    """Classifier features ``(N, F)`` float32 (CPU) of ``images (N, 1, 8, 8)`` in [-1, 1]."""
    return image_features(images, model, batch_size, dataset="digits")


def mnist_features(images: torch.Tensor, model: MnistClassifier | None = None, batch_size: int = 1024) -> torch.Tensor:
    """Classifier features ``(N, F)`` float32 (CPU) of ``images (N, 1, 28, 28)`` in [-1, 1]."""
    return image_features(images, model, batch_size, dataset="mnist")


def digits_fd(generated_images: torch.Tensor, reference_images: torch.Tensor | None = None,
              model: DigitsClassifier | None = None) -> float:
    """Frechet distance between classifier features of ``generated_images`` and ``reference_images``.

    Both ``(N, 1, 8, 8)`` in [-1, 1]; ``reference_images=None`` uses the digits train split
    (1,438 images). FD shrinks as N grows: compare runs with equal sample counts.
    """
    return image_fd(generated_images, reference_images, model, dataset="digits")


def mnist_fd(generated_images: torch.Tensor, reference_images: torch.Tensor | None = None,
             model: MnistClassifier | None = None) -> float:
    """Frechet distance on MNIST classifier features; both ``(N, 1, 28, 28)`` in [-1, 1];
    ``reference_images=None`` uses the MNIST train split (4,000 images). Compare equal sample counts."""
    return image_fd(generated_images, reference_images, model, dataset="mnist")

"""The MNIST classifier (the digits one's mechanism, dataset="mnist"): held-out accuracy from an
empty cache, caching under its own versioned folder, full-rank features, and mnist_fd ordering
real test images far below noise.

The full recipe (10 epochs, about 20 s of one core) runs in the slow tests; the default suite
checks the same pipeline on a 2-epoch model."""
import json

import pytest
import torch

import latentar.metrics.digits_classifier as dc
from latentar.data import load_digits, load_mnist
from latentar.metrics import (DigitsClassifier, MnistClassifier, image_fd, load_mnist_classifier, mnist_fd,
                              mnist_features, train_mnist_classifier)
from latentar.pretrained import is_saved


@pytest.fixture(scope="module")
def quick_classifier():
    """A 2-epoch model (about 5 s; ~94% held out): enough to check features and FD ordering."""
    model, acc = train_mnist_classifier(epochs=2)
    assert acc > 0.85, f"2-epoch held-out accuracy {acc:.3f}"
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def cached_classifier(tmp_path_factory):
    """Train once, with the real recipe, into a private empty cache (hermetic)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LATENTAR_CACHE", str(tmp_path_factory.mktemp("cache")))
    model = load_mnist_classifier()
    yield model
    mp.undo()


def _fd_checks(model: MnistClassifier) -> tuple[float, float, float]:
    test, _ = load_mnist("test")
    g = torch.Generator().manual_seed(0)
    train, _ = load_mnist("train")
    real = mnist_fd(test, model=model)  # 1,000 test vs the 4,000 train images (the default reference)
    noisy = mnist_fd((test + 0.5 * torch.randn(test.shape, generator=g)).clamp(-1, 1), train[::4], model)
    uniform = mnist_fd(torch.rand(test.shape, generator=g) * 2 - 1, train[::4], model)
    assert 0 <= real < 0.1 * noisy < 0.1 * uniform, (real, noisy, uniform)
    assert mnist_fd(test, test, model=model) == pytest.approx(0.0, abs=1e-6)
    return real, noisy, uniform


def _full_rank(model: MnistClassifier) -> None:
    x, _ = load_mnist("test")
    feats = mnist_features(x, model)
    assert feats.shape == (1000, 64) and feats.dtype == torch.float32
    assert (feats.std(0) > 1e-6).all()  # no dead feature (pre-ReLU)
    assert int(torch.linalg.matrix_rank(torch.cov(feats.T.double()))) == 64


def test_quick_model_features_are_full_rank(quick_classifier):
    _full_rank(quick_classifier)


def test_quick_model_fd_orders_real_far_below_noise(quick_classifier):
    _fd_checks(quick_classifier)


def test_shapes_and_datasets_are_checked():
    model = MnistClassifier()
    assert model.config == {"channels": 16, "feature_dim": 64, "version": dc.MNIST_VERSION}
    with pytest.raises(ValueError, match=r"MNIST images of shape \(N, 1, 28, 28\)"):
        model.features(torch.zeros(4, 1, 8, 8))
    assert model.features(torch.zeros(2, 28, 28)).shape == (2, 64)  # (N, 28, 28) gains its channel
    with pytest.raises(ValueError, match="gives digits features, not mnist"):
        mnist_fd(torch.zeros(4, 1, 8, 8), model=DigitsClassifier())
    with pytest.raises(ValueError, match="unknown classifier dataset 'cifar'"):
        image_fd(torch.zeros(4, 1, 28, 28), dataset="cifar")
    with pytest.raises(ValueError, match="pass dataset="):
        image_fd(torch.zeros(4, 1, 28, 28))
    with pytest.raises(TypeError, match=r"tensor \(N, 1, 28, 28\)"):
        mnist_fd([[0.0]])
    with pytest.raises(TypeError, match="unknown training settings"):
        train_mnist_classifier(epoch=1)
    assert dc.classifier_dir("mnist").parent.name == "mnist_classifier"


@pytest.mark.slow
def test_held_out_accuracy_from_an_empty_cache(cached_classifier):
    x, y = load_mnist("test")
    acc = cached_classifier.accuracy(x, y)
    assert acc >= 0.97, f"held-out accuracy {acc:.3f}"
    path = dc.classifier_dir("mnist")
    assert path.name == f"v{dc.MNIST_VERSION}" and is_saved(path)  # either layout: a cache older than the diffusers format
    saved = json.loads((path / "metrics.json").read_text())
    assert saved["test_accuracy"] == pytest.approx(acc) and saved["train"] == dc.MNIST_TRAIN_SETTINGS
    assert not is_saved(dc.classifier_dir("digits"))  # separate caches


@pytest.mark.slow
def test_cache_is_reused(cached_classifier, monkeypatch):
    monkeypatch.setattr(dc, "train_classifier", lambda *a, **k: pytest.fail("retrained despite a cache"))
    again = load_mnist_classifier()
    x, _ = load_mnist("test")
    assert isinstance(again, MnistClassifier)
    assert torch.equal(again.features(x), cached_classifier.features(x))
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        again.features(load_digits("test")[0])


@pytest.mark.slow
def test_features_full_rank_and_fd_small_for_real_large_for_noise(cached_classifier):
    _full_rank(cached_classifier)
    real, noisy, uniform = _fd_checks(cached_classifier)
    assert real < 10 and noisy > 100 and uniform > 1000, (real, noisy, uniform)

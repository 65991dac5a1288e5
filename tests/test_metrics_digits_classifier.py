"""The digits classifier: held-out accuracy, caching with a version key, and digits_fd; the
general names (load_classifier, image_fd) serve digits exactly as the digits ones do."""
import pytest
import torch

import latentar.metrics.digits_classifier as dc
from latentar.data import load_digits
from latentar.metrics import (DigitsClassifier, ImageClassifier, digits_features, digits_fd, image_fd,
                              image_features, load_classifier, load_digits_classifier)
from latentar.pretrained import is_saved


@pytest.fixture(scope="module")
def cached_classifier(tmp_path_factory):
    """Train once into a private cache (hermetic); every test in this file re-uses it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LATENTAR_CACHE", str(tmp_path_factory.mktemp("cache")))
    model = load_digits_classifier()
    yield model
    mp.undo()


def test_held_out_accuracy(cached_classifier):
    x, y = load_digits("test")
    acc = float((cached_classifier.predict(x) == y).float().mean())
    assert acc >= 0.97, f"held-out accuracy {acc:.3f}"
    feats = cached_classifier.features(x)
    assert feats.shape == (359, 64) and (feats.std(0) > 1e-6).all()  # no dead feature


def test_cache_is_reused_and_versioned(cached_classifier, monkeypatch):
    path = dc.classifier_dir()
    assert path.name == f"v{dc.VERSION}" and is_saved(path)  # either layout: a cache older than the diffusers format
    monkeypatch.setattr(dc, "train_classifier", lambda *a, **k: pytest.fail("retrained despite a cache"))
    monkeypatch.setattr(dc, "train_digits_classifier", lambda **k: pytest.fail("retrained despite a cache"))
    again = load_digits_classifier()
    x, _ = load_digits("test")
    assert torch.equal(again.features(x), cached_classifier.features(x))
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        again.features(torch.zeros(4, 64))


def test_digits_fd_orders_real_above_noise(cached_classifier):
    test, _ = load_digits("test")
    g = torch.Generator().manual_seed(0)
    real = digits_fd(test, model=cached_classifier)
    noisy = digits_fd((test + 0.5 * torch.randn(test.shape, generator=g)).clamp(-1, 1), model=cached_classifier)
    uniform = digits_fd(torch.rand(test.shape, generator=g) * 2 - 1, model=cached_classifier)
    assert 0 <= real < noisy < uniform
    assert digits_fd(test, test, model=cached_classifier) == pytest.approx(0.0, abs=1e-6)


def test_general_names_serve_digits_unchanged(cached_classifier):
    assert isinstance(cached_classifier, DigitsClassifier) and isinstance(cached_classifier, ImageClassifier)
    assert cached_classifier.config == {"channels": 32, "feature_dim": 64, "version": dc.VERSION}
    assert dc.classifier_dir() == dc.classifier_dir("digits") and dc.classifier_dir().parent.name == "digits_classifier"
    x, _ = load_digits("test")
    same = load_classifier("digits")
    assert torch.equal(same.features(x), cached_classifier.features(x))
    assert torch.equal(image_features(x, dataset="digits"), digits_features(x, cached_classifier))
    ref = x[::2]
    assert image_fd(x, ref, dataset="digits") == digits_fd(x, ref, cached_classifier)
    assert digits_fd(x, ref) == digits_fd(x, ref, cached_classifier)  # the cached model by default

"""The exposure meter against known generating processes: flat for an exact model, growing with
position for a deliberately biased one (checked against the closed-form drift)."""
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import default_collate

from latentar.data import SeqTask
from latentar.data.gauss_markov import GaussMarkov, GaussMarkovModel
from latentar.exposure import exposure_curve
from latentar.models import LatentAR
from latentar.models.char_lm import CharLM

PROC = GaussMarkov(dim=3, length=12, a=0.9, theta=0.0)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def held_out():
    return PROC.sample(1500, gen(1)), PROC.sample(250, gen(2))  # (held-out, training)


def test_exact_model_curve_is_flat(held_out):
    test, train = held_out
    c = exposure_curve(GaussMarkovModel(PROC), test, num_samples=1000, generator=gen(0), train_data=train)
    assert c.kind == "continuous" and c.fd_own.shape == (12,)
    assert np.nanmax(c.fd_own) < 0.08 and np.nanmax(c.fd_gt) < 0.08     # at the estimator's noise floor
    assert abs(c.summary()["fd_own_slope"]) < 0.003
    np.testing.assert_allclose(c.nn_own, c.nn_data, rtol=0.12)           # as close to the cloud as the data


def test_biased_model_curve_grows_with_position_as_the_drift_predicts(held_out):
    test, train = held_out
    b, a, D = 0.15, PROC.a, PROC.dim
    c = exposure_curve(GaussMarkovModel(PROC, bias=b), test, num_samples=1000, generator=gen(0), train_data=train)
    t = np.arange(12)
    drift = b * (1 - a ** (t + 1)) / (1 - a)       # m_t = a m_{t-1} + b, m_0 = b; covariance stays I
    np.testing.assert_allclose(c.fd_own, D * drift ** 2, rtol=0.25, atol=0.08)
    np.testing.assert_allclose(c.fd_gt, np.full(12, D * b ** 2), atol=0.04)  # one-step error only
    assert np.all(np.diff(c.fd_own[::3]) > 0)
    assert c.summary()["fd_own_slope"] > 0.1 and c.fd_own[-1] > 10 * c.fd_gt.mean()
    assert c.nn_own[-1] > 1.5 * c.nn_own[0] and c.nn_own[-1] > 1.5 * np.mean(c.nn_data)


class SuccessorChain(nn.Module):
    """Tokens: x_0 uniform over K, x_t = x_{t-1} + 1 mod K. The model emits x_{t-1} + 2 with probability eps."""

    def __init__(self, K=7, eps=0.0):
        super().__init__()
        self.K, self.eps = K, eps
        self.register_buffer("dummy", torch.zeros(()))

    def _next(self, prev, generator):
        wrong = torch.rand(prev.shape, generator=generator) < self.eps
        return (prev + 1 + wrong.long()) % self.K

    def predict_parallel(self, x, temperature=1.0, generator=None):
        out = self._next(torch.cat([x[:, :1], x[:, :-1]], 1), generator)
        out[:, 0] = torch.randint(0, self.K, (x.shape[0],), generator=generator)
        return out

    def generate(self, batch_size, length, reference=None, use_reference=None, temperature=1.0, generator=None):
        out = torch.empty(batch_size, length, dtype=torch.long)
        for t in range(length):
            tok = torch.randint(0, self.K, (batch_size,), generator=generator) if t == 0 else \
                self._next(out[:, t - 1], generator)
            out[:, t] = torch.where(use_reference[:, t], reference[:, t], tok)
        return out

    def sample(self, n, T, generator):
        x0 = torch.randint(0, self.K, (n, 1), generator=generator)
        return (x0 + torch.arange(T)) % self.K


def test_discrete_exact_model_is_flat_and_biased_model_compounds():
    K, T, n, eps = 7, 10, 2000, 0.1
    data = SuccessorChain(K).sample(n, T, gen(0))
    exact = exposure_curve(SuccessorChain(K), data, prefix_len=1, num_samples=n, generator=gen(1))
    assert exact.kind == "discrete" and np.isnan(exact.err_own[0])
    assert np.all(exact.err_own[1:] == 0) and np.all(exact.err_gt[1:] == 0)
    assert np.nanmax(exact.tv_own) < 0.1
    biased = exposure_curve(SuccessorChain(K, eps), data, prefix_len=1, num_samples=n, generator=gen(1))
    t = np.arange(1, T)
    np.testing.assert_allclose(biased.err_own[1:], 1 - (1 - eps) ** t, atol=0.04)   # one slip derails the rest
    np.testing.assert_allclose(biased.err_gt[1:], eps, atol=0.03)                  # the teacher-forced error
    assert biased.summary()["err_own_slope"] > 0.03


def test_latent_ar_curve_with_labels_prefix_and_outputs(tmp_path):
    torch.manual_seed(0)
    model = LatentAR(latent_dim=3, d_model=32, depth=1, num_heads=2, max_len=12, num_classes=2,
                     head_kwargs={"num_mixtures": 2})
    x = PROC.sample(64, gen(3))
    y = torch.arange(64) % 2
    c = exposure_curve(model, x, prefix_len=3, num_samples=32, labels=y, generator=gen(0))
    assert np.isnan(c.fd_own[:3]).all() and np.isfinite(c.fd_own[3:]).all() and np.isfinite(c.fd_gt).all()
    assert c.nn_own is not None and np.isfinite(c.nn_data).all()   # cloud = the 32 unused held-out rows
    c2 = exposure_curve(model, x, prefix_len=3, num_samples=32, labels=y, generator=gen(0))
    np.testing.assert_array_equal(c.fd_own, c2.fd_own)              # seeded: reproducible
    d = json.loads(json.dumps(c.to_dict()))
    assert d["fd_own"][0] is None and len(d["fd_gt"]) == 12 and "fd_own_mean" in d["summary"]
    png = c.save_plot(tmp_path / "curve.png", title="tiny")
    assert png.stat().st_size > 1000


def test_token_curve_on_a_seq2seq_batch_measures_answers_only():
    torch.manual_seed(0)
    model = CharLM(d_model=32, depth=1, num_heads=2, max_len=16)
    data = SeqTask("copy", 4, 16, alphabet="abcd")
    batch = default_collate([data[i] for i in range(16)])
    c = exposure_curve(model, batch, num_samples=16, temperature=0.0, generator=gen(0))
    assert np.isnan(c.err_own[:5]).all() and np.isnan(c.err_gt[:5]).all()    # the prompt and SEP are given
    assert np.isfinite(c.err_own[5:]).all() and np.isfinite(c.err_gt[5:]).all()


def test_bad_prefix_is_named():
    with pytest.raises(ValueError, match="prefix_len"):
        exposure_curve(GaussMarkovModel(PROC), PROC.sample(8), prefix_len=12)

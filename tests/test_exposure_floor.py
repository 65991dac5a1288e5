"""The exposure meter's floor: an exact sampler of the training latents reads FD ~ 0 at every C_sigma.

The AR model trains on ``ar_latents`` (posterior samples for a SigmaVAE). Scoring its samples
against the posterior *means* would add a floor of sum_d (sqrt(v_d + s_d^2) - sqrt(v_d))^2 that
grows with C_sigma; ``held_out_exposure`` scores against latents drawn exactly as the training
latents are. The model below is a perfect sampler of that distribution, so its own-prefix and
ground-truth-prefix curves must sit at the estimator's finite-sample floor for every C_sigma.
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from latentar.data import load_digits
from latentar.exposure import exposure_curve
from latentar.generation import encode_posterior_batched, held_out_exposure, held_out_latents
from latentar.metrics.frechet import frechet_distance, gaussian_stats
from latentar.tokenizers import SigmaVAE


def unit_scale_tokenizer(c_sigma: float) -> SigmaVAE:
    """An untrained SigmaVAE whose raw means have about unit std (as a trained one's do under its
    mean(mu^2) penalty), so C_sigma has its trained meaning; the same weights for every C_sigma."""
    torch.manual_seed(0)
    tok = SigmaVAE(modality="image", in_channels=1, latent_dim=4, c_sigma=c_sigma, channels=[8, 16]).eval()
    x, _ = load_digits("train")
    with torch.no_grad():
        std = tok.encode(x[:512]).std()
        last = [m for m in tok.encoder.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]
        last.weight /= std
        last.bias /= std
    tok.estimate_latent_scale(x[:512])
    return tok.requires_grad_(False)


class ExactSampler(nn.Module):
    """Every generated position is a fresh posterior sample of a random held-out example: exactly the
    distribution of the training latents at every position, whatever the prefix."""

    def __init__(self, tok: SigmaVAE, x: torch.Tensor, seed: int = 123):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the meter a device
        self.tok, self.posterior = tok, encode_posterior_batched(tok, x)
        self.g = torch.Generator().manual_seed(seed)

    def draw(self, n: int, length: int) -> torch.Tensor:
        mu = self.posterior[0]
        idx = torch.randint(0, mu.shape[0], (n,), generator=self.g)
        seq = self.tok.to_sequence(self.tok.sample_posterior(mu[idx], generator=self.g))
        return seq[:, :length]

    def generate(self, batch_size, length, reference=None, use_reference=None, **kw):
        fresh = self.draw(batch_size, length)
        return torch.where(use_reference[..., None], reference, fresh) if reference is not None else fresh

    def predict_parallel(self, z, **kw):
        return self.draw(z.shape[0], z.shape[1])


def floor_fd(tok, x, n_gen: int, seed: int = 5) -> float:
    """The estimator's floor: FD of two independent exact draws with the meter's sample sizes (the
    held-out set, and ``n_gen`` draws of random examples), averaged over positions."""
    g = torch.Generator().manual_seed(seed)
    mu = encode_posterior_batched(tok, x)[0]
    a = tok.to_sequence(tok.sample_posterior(mu, generator=g))
    b = tok.to_sequence(tok.sample_posterior(mu[torch.randint(0, len(mu), (n_gen,), generator=g)], generator=g))
    return sum(frechet_distance(*gaussian_stats(b[:, t]), *gaussian_stats(a[:, t]))
               for t in range(a.shape[1])) / a.shape[1]


@pytest.fixture(scope="module")
def test_split():
    return load_digits("test")[0]


@pytest.mark.parametrize("c_sigma", [0.0, 0.25, 1.0])
def test_exact_sampler_reads_the_floor_at_every_c_sigma(c_sigma, test_split):
    tok = unit_scale_tokenizer(c_sigma)
    domain = SimpleNamespace(test_x=test_split, test_y=None)
    n = 256
    summary = held_out_exposure(ExactSampler(tok, test_split), tok, domain, seed=0, prefix_len=1, num_samples=n)
    floor = floor_fd(tok, test_split, n)
    for key in ("exposure_fd_own_mean", "exposure_fd_gt_mean"):
        assert summary[key] < 3 * floor + 0.02, (c_sigma, key, summary[key], floor)

    # What the meter read before: the same generations against the posterior means. Its excess is
    # the Gaussian-fit FD between the means and means + noise, FD(N(m, C), N(m, C + s^2 I)) per position.
    means = tok.to_sequence(tok.encode(test_split))
    old = exposure_curve(ExactSampler(tok, test_split), means, prefix_len=1, num_samples=n,
                         generator=torch.Generator().manual_seed(0)).summary()["fd_own_mean"]
    s2 = float(tok.noise_std / float(tok.latent_std)) ** 2
    stats = [gaussian_stats(means[:, t]) for t in range(means.shape[1])]
    excess = sum(frechet_distance(m, C, m, C + s2 * np.eye(len(m))) for m, C in stats) / len(stats)
    assert old == pytest.approx(excess + summary["exposure_fd_own_mean"], rel=0.3, abs=0.01), (old, excess, summary)
    if c_sigma == 1.0:
        assert old > 5 * summary["exposure_fd_own_mean"], (old, summary)


def test_held_out_latents_are_the_training_distribution_and_fixed():
    x = load_digits("test")[0][:64]
    tok = unit_scale_tokenizer(0.5)
    a, b = held_out_latents(tok, x), held_out_latents(tok, x)
    assert torch.equal(a, b)  # one seeded draw: every arm and seed is measured against the same latents
    mu = tok.to_sequence(tok.encode(x))
    # posterior samples, not the means: the residual has the SigmaVAE's per-example scale s ~ N(0, (C/0.8)^2)
    resid = (a - mu) * tok.latent_std
    assert resid.abs().max() > 0
    per_example = resid.reshape(len(x), -1).std(1)
    assert float(per_example.mean()) == pytest.approx(0.5 / 0.8 * (2 / torch.pi) ** 0.5, rel=0.3)

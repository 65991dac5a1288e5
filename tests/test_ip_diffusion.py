"""Input-perturbation noising, sampling and epsilon scaling (latentar.diffusion), against float64
recomputes of the formulas and against diffusers' own schedulers."""
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from latentar.diffusion import (IPDiffusionTrainer, build_unet, ddpm_scheduler, epsilon_scaling, perturbed_noising,
                                sample, sample_at_steps)


def _abar_linear(T=1000, beta_start=1e-4, beta_end=0.02):
    """alpha-bar of DDPM's linear schedule, recomputed in float64 (independent of diffusers)."""
    betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def _draws(shape=(6, 1, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(shape, generator=g) * 2 - 1
    eps = torch.randn(shape, generator=g)
    xi = torch.randn(shape, generator=g)
    t = torch.tensor([0, 1, 10, 250, 700, 999])[: shape[0]]
    return x0, eps, xi, t


@pytest.mark.parametrize("gamma", [0.1, 0.2])
def test_perturbed_input_equals_the_formula(gamma):
    x0, eps, xi, t = _draws()
    x_t, target = perturbed_noising(DDPMScheduler(), x0, t, gamma, noise=eps, xi=xi)
    abar = torch.from_numpy(_abar_linear()[t.numpy()]).view(-1, 1, 1, 1)
    want = abar.sqrt() * x0.double() + (1 - abar).sqrt() * (eps.double() + gamma * xi.double())
    torch.testing.assert_close(x_t.double(), want, atol=1e-5, rtol=1e-5)
    assert torch.equal(target, eps)                    # the target is the *unperturbed* eps
    # v-prediction: v from the unperturbed eps, v = sqrt(abar) eps - sqrt(1 - abar) x0
    _, v = perturbed_noising(DDPMScheduler(prediction_type="v_prediction"), x0, t, gamma, noise=eps, xi=xi)
    torch.testing.assert_close(v.double(), abar.sqrt() * eps.double() - (1 - abar).sqrt() * x0.double(),
                               atol=1e-5, rtol=1e-5)
    _, x0_target = perturbed_noising(DDPMScheduler(), x0, t, gamma, noise=eps, xi=xi, prediction_type="sample")
    assert torch.equal(x0_target, x0)


def test_gamma_zero_is_diffusers_add_noise_exactly_and_draws_no_xi():
    x0, eps, _, t = _draws()
    for scheduler in (DDPMScheduler(), DDPMScheduler(beta_schedule="squaredcos_cap_v2"), ddpm_scheduler()):
        g = torch.Generator().manual_seed(3)
        state = g.get_state()
        x_t, target = perturbed_noising(scheduler, x0, t, 0.0, noise=eps, generator=g)
        assert torch.equal(x_t, scheduler.add_noise(x0, eps, t))
        assert torch.equal(target, eps)
        assert torch.equal(g.get_state(), state)       # no xi was drawn: plain DDPM training, bit for bit
    # per-token latents (N, D) broadcast as well (what DiffusionHead feeds)
    z = torch.randn(6, 4)
    n = torch.randn(6, 4)
    assert torch.equal(perturbed_noising(DDPMScheduler(), z, t, 0.0, noise=n).x_t, DDPMScheduler().add_noise(z, n, t))


def test_perturbation_is_fresh_gaussian_not_a_constant():
    """x_t - add_noise(x0, eps, t) = sqrt(1 - abar) gamma xi with xi ~ N(0, I) drawn per element
    (a known reimplementation bug adds the constant gamma instead)."""
    gamma, n = 0.1, 20000
    x0 = torch.zeros(n, 4)
    eps = torch.randn(n, 4, generator=torch.Generator().manual_seed(1))
    t = torch.full((n,), 500)
    sch = DDPMScheduler()
    x_t, _ = perturbed_noising(sch, x0, t, gamma, noise=eps, generator=torch.Generator().manual_seed(2))
    xi = (x_t - sch.add_noise(x0, eps, t)).double() / (gamma * math.sqrt(1 - _abar_linear()[500]))
    assert abs(xi.mean().item()) < 0.03 and abs(xi.std().item() - 1.0) < 0.03
    assert abs(torch.corrcoef(torch.stack([xi.flatten(), eps.double().flatten()]))[0, 1].item()) < 0.03
    again, _ = perturbed_noising(sch, x0, t, gamma, noise=eps, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(x_t, again)


def test_training_step_uses_the_perturbed_input_and_the_clean_target():
    """IPDiffusionTrainer.loss = mean (model(x_t, t) - eps)^2 with x_t from perturbed_noising."""
    torch.manual_seed(0)
    unet = build_unet("tiny", 1, 8)
    task = IPDiffusionTrainer(unet, ddpm_scheduler(), gamma=0.1)
    x0, eps, xi, t = _draws()
    x_t = perturbed_noising(task.scheduler, x0, t, 0.1, noise=eps, xi=xi).x_t
    with torch.no_grad():
        want = ((unet(x_t, t).sample - eps) ** 2).mean()
        got = task.loss(x0, timesteps=t, noise=eps, xi=xi)
    torch.testing.assert_close(got, want)
    assert task.training_step((x0, torch.zeros(6))).dim() == 0


def test_prediction_type_rebuilds_the_scheduler_so_sampling_agrees():
    task = IPDiffusionTrainer(build_unet("tiny", 1, 8), ddpm_scheduler(), gamma=0.1, prediction_type="v_prediction")
    assert task.scheduler.config.prediction_type == "v_prediction"
    assert task.scheduler.config.timestep_spacing == "trailing"
    assert task.sample_shape == (1, 8, 8)


def test_config_errors_are_clear():
    unet = build_unet("tiny", 1, 8)
    with pytest.raises(ValueError, match=r"gamma must be a finite number >= 0.*-0.1"):
        IPDiffusionTrainer(unet, ddpm_scheduler(), gamma=-0.1)
    with pytest.raises(ValueError, match="gamma"):
        perturbed_noising(DDPMScheduler(), torch.zeros(2, 3), torch.tensor([0, 1]), -1.0)
    with pytest.raises(ValueError, match=r"\[1, 100\].*num_train_timesteps=100"):
        sample(unet, ddpm_scheduler(num_train_timesteps=100), 101, (2, 1, 8, 8))
    with pytest.raises(ValueError, match="unknown sampler 'euler'.*ddpm"):
        sample(unet, ddpm_scheduler(), 5, (2, 1, 8, 8), sampler="euler")
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 999\]"):
        perturbed_noising(DDPMScheduler(), torch.zeros(2, 3), torch.tensor([0, 1000]), 0.1)
    with pytest.raises(ValueError, match="prediction_type"):
        IPDiffusionTrainer(unet, ddpm_scheduler(), prediction_type="score")
    with pytest.raises(TypeError, match="diffusers noise scheduler"):
        IPDiffusionTrainer(unet, object())
    with pytest.raises(ValueError, match="unknown UNet preset"):
        build_unet("huge")
    with pytest.raises(ValueError, match="eps_scale"):
        sample(unet, ddpm_scheduler(), 5, (2, 1, 8, 8), eps_scale=0.0)


class _Affine(nn.Module):
    """A fixed, non-trivial 'denoiser': eps_hat = a * x + b * t / T (deterministic, no weights to train)."""

    def __init__(self, a=0.7, b=0.3, scale=1.0):
        super().__init__()
        self.a, self.b, self.scale = a, b, scale
        self.w = nn.Parameter(torch.zeros(()))   # gives the module a device

    def forward(self, x, t):
        return self.scale * (self.a * x + self.b * t.view(-1, *[1] * (x.dim() - 1)).float() / 1000)


def test_ddim_sampling_equals_a_plain_diffusers_loop():
    """sample(..., "ddim") is exactly DDIMScheduler.from_config(training config) stepped by hand."""
    model, sch = _Affine(), ddpm_scheduler(clip_sample=False)
    got = sample(model, sch, 7, (5, 1, 8, 8), sampler="ddim", generator=torch.Generator().manual_seed(4))
    ddim = DDIMScheduler.from_config(sch.config)
    ddim.set_timesteps(7)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    for t in ddim.timesteps:
        x = ddim.step(model(x, torch.full((5,), int(t))), t, x).prev_sample
    assert torch.equal(got, x)
    assert ddim.timesteps[0] == 999                   # "trailing": every step count starts at t = T - 1


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver"])
def test_epsilon_scaling_with_lambda_one_is_plain_sampling(sampler):
    model, sch = _Affine(), ddpm_scheduler()
    plain = sample(model, sch, 6, (4, 1, 8, 8), sampler=sampler, generator=torch.Generator().manual_seed(0))
    es1 = sample(model, sch, 6, (4, 1, 8, 8), sampler=sampler, generator=torch.Generator().manual_seed(0),
                 eps_scale=1.0, eps_scale_k=0.0)
    assert torch.equal(plain, es1)
    # lambda = 2 on eps equals a model whose eps is halved
    es2 = sample(model, sch, 6, (4, 1, 8, 8), sampler=sampler, generator=torch.Generator().manual_seed(0), eps_scale=2.0)
    half = sample(_Affine(scale=0.5), sch, 6, (4, 1, 8, 8), sampler=sampler, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(es2, half, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(es2, plain)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_epsilon_scaling_for_v_and_x0_models_scales_the_implied_eps(prediction_type):
    """Converting to eps, dividing by lambda, converting back: checked in float64 against eps / lambda."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 5, generator=g).double(), torch.randn(3, 5, generator=g).double()
    abar, lam = 0.37, 1.25
    x_t = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps
    out = math.sqrt(abar) * eps - math.sqrt(1 - abar) * x0 if prediction_type == "v_prediction" else x0
    scaled = epsilon_scaling(out, x_t, abar, lam, prediction_type)
    if prediction_type == "v_prediction":
        eps_back = math.sqrt(abar) * scaled + math.sqrt(1 - abar) * x_t
    else:
        eps_back = (x_t - math.sqrt(abar) * scaled) / math.sqrt(1 - abar)
    torch.testing.assert_close(eps_back, eps / lam)
    assert epsilon_scaling(out, x_t, abar, 1.0, prediction_type) is out


def test_sample_at_steps_is_seeded_and_deterministic():
    model, sch = _Affine(), ddpm_scheduler()
    a = sample_at_steps(model, sch, [2, 5], (3, 1, 8, 8), sampler="ddpm", seed=11)
    b = sample_at_steps(model, sch, [2, 5], (3, 1, 8, 8), sampler="ddpm", seed=11)
    assert set(a) == {2, 5} and all(torch.equal(a[k], b[k]) for k in a)
    c = sample_at_steps(model, sch, [2], (3, 1, 8, 8), sampler="ddpm", seed=12)
    assert not torch.equal(a[2], c[2])

"""The one reverse-diffusion loop (latentar.diffusion.sampling.reverse_diffusion) and every arm that uses
it (DiffusionHead.sample, JointDiffusion.generate, IPDiffusionTrainer.sample), against a hand-written
diffusers loop with the same seeds:

    s.set_timesteps(n); x = randn(shape, g)
    for t in s.timesteps: out = f(x, t); x = s.step(out, t, x, ...).prev_sample

for every sampler and prediction type, with and without CFG (mixed by hand from two separate network
calls), and the MAR temperature convention x_{t-1} = mu_theta(x_t, t) + tau sigma_t z_t with x_T
unscaled (LTH14/mar diffusion/gaussian_diffusion.py line 419), recomputed in float64.
"""
from __future__ import annotations

import inspect
import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import nn

import latentar.diffusion.input_perturbation as ip_module
import latentar.diffusion.sampling as sampling
import latentar.heads.diffusion as head_module
import latentar.models.joint_diffusion as joint_module
from latentar.diffusion import (DEFAULT_NUM_STEPS, DEFAULT_SAMPLER, PREDICTION_TYPES, SAMPLERS, IPDiffusionTrainer,
                                ddpm_scheduler, reverse_diffusion)
from latentar.heads import DiffusionHead
from latentar.models import JointDiffusion

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # DPM-Solver + numpy 2

STEPS = 5
# (sampler, eta, temperature): every sampler, DDIM with and without per-step noise, tau != 1 where it acts
CASES = [("ddpm", 0.0, 1.0), ("ddpm", 0.0, 0.6), ("ddim", 0.0, 1.0), ("ddim", 1.0, 0.6), ("dpmsolver", 0.0, 1.0)]
CASE_IDS = [f"{s}-eta{e}-tau{t}" for s, e, t in CASES]
LATENT = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", timestep_spacing="leading")


# ------------------------------------------------------------------------------ the reference
def reference_scheduler(sampler: str, **config):
    """The diffusers scheduler built by hand (not through latentar's factory)."""
    if sampler == "ddpm":
        return DDPMScheduler(**config)
    if sampler == "ddim":
        return DDIMScheduler(**config, set_alpha_to_one=True)
    config.pop("clip_sample", None)
    return DPMSolverMultistepScheduler(**config, algorithm_type="dpmsolver++", solver_order=2)


def ddpm_step_by_hand(sched, out, t: int, prev: int, x, z, tau: float):
    """Ho et al. eq. 7 in float64: mu = c0 x0_hat + c1 x_t, sigma^2 = (1 - abar') / (1 - abar) beta_t
    (fixed_small), x' = mu + tau sigma z (z unused at t = 0: no noise on the last step)."""
    a = sched.alphas_cumprod.double()
    at, ap = a[t], (a[prev] if prev >= 0 else torch.tensor(1.0, dtype=torch.float64))
    alpha, beta = at / ap, 1 - at / ap
    out, x = out.double(), x.double()
    pt = sched.config.prediction_type
    x0 = {"epsilon": lambda: (x - (1 - at).sqrt() * out) / at.sqrt(),
          "v_prediction": lambda: at.sqrt() * x - (1 - at).sqrt() * out,
          "sample": lambda: out}[pt]()
    if sched.config.clip_sample:
        x0 = x0.clamp(-1, 1)
    mean = ap.sqrt() * beta / (1 - at) * x0 + alpha.sqrt() * (1 - ap) / (1 - at) * x
    if t == 0:
        return mean
    sigma = ((1 - ap) / (1 - at) * beta).clamp(min=1e-20).sqrt()
    return mean + tau * sigma * z.double()


def reference_loop(f, sampler: str, config: dict, shape, seed: int, eta=0.0, tau=1.0, start_tau=1.0):
    """The plain diffusers loop; tau on DDPM's noise by hand, on DDIM's through variance_noise."""
    sched = reference_scheduler(sampler, **config)
    sched.set_timesteps(STEPS)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * start_tau
    ts = sched.timesteps.tolist()
    for k, t in enumerate(sched.timesteps):
        out = f(x, torch.full((shape[0],), int(t), dtype=torch.long))
        if sampler == "ddpm" and tau == 1.0:
            x = sched.step(out, t, x, generator=g).prev_sample
        elif sampler == "ddpm":
            z = torch.randn(shape, generator=g) if int(t) > 0 else None
            x = ddpm_step_by_hand(sched, out, int(t), ts[k + 1] if k + 1 < len(ts) else -1, x, z, tau).float()
        elif sampler == "ddim" and eta > 0:
            x = sched.step(out, t, x, eta=eta, variance_noise=tau * torch.randn(shape, generator=g)).prev_sample
        else:
            x = sched.step(out, t, x).prev_sample
    return x


def _tol(tau):
    # tau = 1: bit-for-bit the same diffusers calls; tau != 1 on DDPM: a float64 recompute
    return dict(rtol=0, atol=0) if tau == 1.0 else dict(rtol=1e-4, atol=1e-4)


class Fixed(nn.Module):
    """A fixed non-linear denoiser f(x, t) = tanh(x W + t / T b) for (N, ..., 3) inputs."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(3, 3, generator=g))
        self.b = nn.Parameter(torch.randn(3, generator=g))

    def forward(self, x, t):
        tt = t.float().view(-1, *[1] * (x.dim() - 1)) / 1000
        return torch.tanh(x @ self.w + tt * self.b)


def test_cases_cover_every_sampler():
    assert {c[0] for c in CASES} == set(SAMPLERS)


# ------------------------------------------------------------------------------ the shared loop
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("sampler,eta,tau", CASES, ids=CASE_IDS)
def test_reverse_diffusion_equals_the_diffusers_loop(sampler, eta, tau, prediction_type):
    f = Fixed()
    config = dict(LATENT, prediction_type=prediction_type, clip_sample=False)
    got = reverse_diffusion(f, DDPMScheduler(**config), (6, 3), sampler=sampler, num_steps=STEPS, temperature=tau,
                            eta=eta, generator=torch.Generator().manual_seed(1))
    want = reference_loop(f, sampler, config, (6, 3), seed=1, eta=eta, tau=tau)
    torch.testing.assert_close(got, want, **_tol(tau))


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0), ("dpmsolver", 0.0)])
def test_start_and_steps_mode_also_scales_x_T(sampler, eta):
    f, tau = Fixed(), 0.6
    config = dict(LATENT, prediction_type="epsilon", clip_sample=False)
    got = reverse_diffusion(f, DDPMScheduler(**config), (6, 3), sampler=sampler, num_steps=STEPS, temperature=tau,
                            temperature_mode="start_and_steps", eta=eta, generator=torch.Generator().manual_seed(1))
    want = reference_loop(f, sampler, config, (6, 3), seed=1, eta=eta, tau=tau, start_tau=tau)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["mar", "start_and_steps"])
def test_temperature_convention_is_mean_plus_tau_sigma_z(mode):
    """MAR (default): x_T = z_T unscaled, x_{t'} = mu_theta(x_t, t) + tau sigma_t z_t, z replayed from the
    seed; "start_and_steps": x_T = tau z_T, the same step rule. Recomputed in float64 per step."""
    f, tau, shape = Fixed(seed=3), 0.4, (7, 3)
    config = dict(LATENT, prediction_type="epsilon", clip_sample=False)
    seen = []
    record = lambda x, t: (seen.append(x.clone()), f(x, t))[1]  # noqa: E731
    final = reverse_diffusion(record, DDPMScheduler(**config), shape, sampler="ddpm", num_steps=4, temperature=tau,
                              temperature_mode=mode, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    z_T = torch.randn(shape, generator=g)
    assert torch.equal(seen[0], z_T if mode == "mar" else tau * z_T)
    sched = DDPMScheduler(**config)
    sched.set_timesteps(4)
    ts = sched.timesteps.tolist()
    assert ts == [750, 500, 250, 0]                                          # "leading"
    xs = seen + [final]
    for k, t in enumerate(ts):
        x = xs[k].double()
        a = sched.alphas_cumprod.double()
        at, ap = a[t], (a[ts[k + 1]] if k + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64))
        beta = 1 - at / ap
        eps = f(xs[k], torch.full((shape[0],), t)).double()
        x0 = (x - (1 - at).sqrt() * eps) / at.sqrt()
        mean = ap.sqrt() * beta / (1 - at) * x0 + (at / ap).sqrt() * (1 - ap) / (1 - at) * x
        sigma = ((1 - ap) / (1 - at) * beta).sqrt()
        noise = tau * sigma * torch.randn(shape, generator=g).double() if t > 0 else 0.0
        torch.testing.assert_close(xs[k + 1].double(), mean + noise, rtol=1e-5, atol=1e-5)


def test_temperature_with_a_deterministic_sampler_raises():
    f, train = Fixed(), DDPMScheduler(**LATENT, clip_sample=False)
    for sampler in ("ddim", "dpmsolver"):
        with pytest.raises(ValueError, match=f"temperature=0.5 has no effect with sampler='{sampler}'"):
            reverse_diffusion(f, train, (2, 3), sampler=sampler, num_steps=3, temperature=0.5)
        reverse_diffusion(f, train, (2, 3), sampler=sampler, num_steps=3, temperature=1.0)   # tau = 1 is fine
        reverse_diffusion(f, train, (2, 3), sampler=sampler, num_steps=3, temperature=0.5,
                          temperature_mode="start_and_steps")                              # scales x_T
    reverse_diffusion(f, train, (2, 3), sampler="ddim", eta=0.5, num_steps=3, temperature=0.5)  # noise to scale
    head = DiffusionHead(3, 8, width=8, depth=1)
    with pytest.raises(ValueError, match="sampler='ddim' with eta=0"):
        head.sample(torch.randn(2, 8), temperature=0.5, sampler="ddim", num_steps=3)
    with pytest.raises(ValueError, match="sampler='dpmsolver'"):
        JointDiffusion(3, d_model=16, depth=1, num_heads=2, max_len=4).generate(2, 4, temperature=0.7,
                                                                                 sampler="dpmsolver", num_steps=3)
    task = IPDiffusionTrainer(Fixed(), ddpm_scheduler(), gamma=0.0, sample_shape=(2, 3))
    with pytest.raises(ValueError, match="sampler='ddim' with eta=0"):
        task.sample(2, 3, sampler="ddim", temperature=0.5)
    with pytest.raises(ValueError, match="temperature_mode must be one of"):
        reverse_diffusion(f, train, (2, 3), num_steps=3, temperature_mode="x_T")
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        reverse_diffusion(f, train, (2, 3), num_steps=3, temperature=float("nan"))


# ------------------------------------------------------------------------------ DiffusionHead
def _head(prediction_type):
    head = DiffusionHead(dim=3, cond_dim=8, width=16, depth=2, prediction_type=prediction_type,
                         num_sampling_steps=STEPS)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():                        # randomise: the zero-init head would predict 0
        for p in head.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return head


@pytest.mark.parametrize("cfg", [1.0, 2.5])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sampler,eta,tau", CASES, ids=CASE_IDS)
def test_head_sample_equals_the_diffusers_loop(sampler, eta, tau, prediction_type, cfg):
    head = _head(prediction_type)
    g = torch.Generator().manual_seed(5)
    cond, uncond = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    got = head.sample(cond, temperature=tau, sampler=sampler, eta=eta, cond_uncond=uncond if cfg != 1 else None,
                      cfg_scale=cfg, generator=torch.Generator().manual_seed(2))
    c, u = cond.reshape(6, 8), uncond.reshape(6, 8)

    def f(x, t):
        out_c = head.net(x, t, c)
        return out_c if cfg == 1.0 else head.net(x, t, u) + cfg * (out_c - head.net(x, t, u))

    config = dict(LATENT, prediction_type=prediction_type, clip_sample=False)
    want = reference_loop(f, sampler, config, (6, 3), seed=2, eta=eta, tau=tau).reshape(2, 3, 3)
    assert got.shape == (2, 3, 3)
    tol = _tol(tau) if cfg == 1.0 else dict(rtol=1e-4, atol=1e-4)  # CFG: one doubled batch vs two calls
    torch.testing.assert_close(got, want, **tol)
    if cfg == 1.0:                               # a 2-D cond (N, cond_dim) is N independent tokens
        flat = head.sample(c, temperature=tau, sampler=sampler, eta=eta, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(flat, want.reshape(6, 3), **_tol(tau))


# ------------------------------------------------------------------------------ JointDiffusion
def _joint(prediction_type):
    torch.manual_seed(0)
    model = JointDiffusion(latent_dim=3, d_model=16, depth=1, num_heads=2, max_len=4, num_classes=3,
                           prediction_type=prediction_type)
    with torch.no_grad():                        # zero-init DiT output layers: randomise
        for p in list(model.out.parameters()) + list(model.ada_out.parameters()):
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("cfg", [1.0, 2.5])
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("sampler,eta,tau", CASES, ids=CASE_IDS)
def test_joint_generate_equals_the_diffusers_loop(sampler, eta, tau, prediction_type, cfg):
    model = _joint(prediction_type).train()
    y = torch.tensor([0, 2, 1])
    got = model.generate(3, 4, labels=y, cfg_scale=cfg, temperature=tau, num_steps=STEPS, sampler=sampler, eta=eta,
                         generator=torch.Generator().manual_seed(4))
    assert model.training                        # generate ran in eval mode and restored the mode
    model.eval()
    null = torch.full((3,), 3)

    def f(x, t):
        out_c = model(x, t, y)
        return out_c if cfg == 1.0 else model(x, t, null) + cfg * (out_c - model(x, t, null))

    config = dict(LATENT, prediction_type=prediction_type, clip_sample=False)
    with torch.no_grad():
        want = reference_loop(f, sampler, config, (3, 4, 3), seed=4, eta=eta, tau=tau)
    tol = _tol(tau) if cfg == 1.0 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got, want, **tol)


# ------------------------------------------------------------------------------ IPDiffusionTrainer (images)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("sampler,eta,tau", CASES, ids=CASE_IDS)
def test_ip_sample_equals_the_diffusers_loop(sampler, eta, tau, prediction_type):
    net = Fixed(seed=1)
    task = IPDiffusionTrainer(net, ddpm_scheduler(prediction_type=prediction_type), gamma=0.1, sample_shape=(2, 3))
    got = task.sample(4, STEPS, sampler=sampler, eta=eta, temperature=tau, generator=torch.Generator().manual_seed(9))
    config = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction_type,
                  clip_sample=True, timestep_spacing="trailing")
    with torch.no_grad():
        want = reference_loop(net, sampler, config, (4, 2, 3), seed=9, eta=eta, tau=tau)
    torch.testing.assert_close(got, want, **_tol(tau))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_ip_sample_with_epsilon_scaling_equals_the_loop_on_eps_over_lambda(sampler):
    """ADM-ES lambda_t = b + k t on an eps model: the loop on eps / lambda_t."""
    net, b, k = Fixed(seed=1), 1.01, 1e-5
    task = IPDiffusionTrainer(net, ddpm_scheduler(), gamma=0.1, sample_shape=(2, 3))
    got = task.sample(4, STEPS, sampler=sampler, eps_scale=b, eps_scale_k=k, generator=torch.Generator().manual_seed(9))
    config = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon", clip_sample=True,
                  timestep_spacing="trailing")
    with torch.no_grad():
        want = reference_loop(lambda x, t: net(x, t) / (b + k * t.double().view(-1, 1, 1)).float(), sampler, config,
                              (4, 2, 3), seed=9)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------ one definition, one default
def test_one_definition_of_samplers_prediction_types_and_factory():
    assert ip_module.PREDICTION_TYPES is sampling.PREDICTION_TYPES is joint_module.PREDICTION_TYPES
    assert head_module.SAMPLERS is sampling.SAMPLERS
    assert set(head_module.HEAD_PREDICTION_TYPES) < set(PREDICTION_TYPES)
    assert not hasattr(head_module, "make_latent_scheduler")
    # both latent arms build their sampling schedulers from their training scheduler's config
    head = DiffusionHead(3, 8, width=8, depth=1, timestep_spacing="trailing", prediction_type="v_prediction")
    joint = JointDiffusion(3, d_model=16, depth=1, num_heads=2, max_len=4, timestep_spacing="trailing")
    for arm, sched in ((head, head.make_scheduler("dpmsolver")), (joint, joint.make_sampler("dpmsolver"))):
        assert isinstance(sched, DPMSolverMultistepScheduler)
        for key in ("num_train_timesteps", "beta_schedule", "prediction_type", "timestep_spacing"):
            assert sched.config[key] == arm.noise_scheduler.config[key]


def test_latent_arms_share_one_default_sampler_steps_and_temperature_mode():
    head = DiffusionHead(3, 8, width=8, depth=1)
    gen = inspect.signature(JointDiffusion.generate).parameters
    assert head.sampler == gen["sampler"].default == DEFAULT_SAMPLER == "ddpm"
    assert head.num_sampling_steps == gen["num_steps"].default == DEFAULT_NUM_STEPS
    for fn in (reverse_diffusion, DiffusionHead.sample, JointDiffusion.generate, IPDiffusionTrainer.sample):
        assert inspect.signature(fn).parameters["temperature_mode"].default == "mar"
    assert math.isclose(inspect.signature(DiffusionHead.sample).parameters["temperature"].default, 1.0)

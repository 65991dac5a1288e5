"""Heads: exact NLL against torch.distributions, sampling statistics, diffusers parity, shape errors.

The ring fits (tests/test_heads_ring.py) check that each head learns a multimodal density.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler

import latentar.heads as heads_pkg
from latentar.heads import HEADS, DiffusionHead, GMMHead, MSEHead, build_head

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


CONFIG_DIR = Path(heads_pkg.__file__).resolve().parent.parent / "configs" / "head"


def _randomise(module: torch.nn.Module, std: float = 0.5, seed: int = 0) -> None:
    """Overwrite every parameter with N(0, std^2), so zero-initialised layers do something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def _small(name: str, **kw):
    if name == "diffusion":
        kw = dict(width=32, depth=2, num_sampling_steps=10) | kw
    return build_head(name, dim=3, cond_dim=8, **kw)


# ------------------------------------------------------------------------------ GMM
def test_gmm_nll_equals_mixture_same_family_log_prob_float64():
    torch.manual_seed(0)
    head = GMMHead(dim=4, cond_dim=6, num_mixtures=5, hidden=16).double()
    _randomise(head, std=0.7)
    cond = torch.randn(3, 7, 6, dtype=torch.float64)
    target = torch.randn(3, 7, 4, dtype=torch.float64) * 2
    nll = head.loss(cond, target)
    assert nll.shape == (3, 7)
    ref = -head.distribution(cond).log_prob(target)
    # independent recompute from the raw parameters, not through the head's log-density code
    logits, loc, scale = head.params(cond.reshape(-1, 6))
    comp = torch.distributions.Normal(loc, scale).log_prob(target.reshape(-1, 1, 4)).sum(-1)
    ref2 = -torch.logsumexp(torch.log_softmax(logits, -1) + comp, -1).reshape(3, 7)
    torch.testing.assert_close(nll, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nll, ref2, rtol=1e-12, atol=1e-12)
    # the parameters really are diverse (so the check is not trivially one Gaussian)
    assert logits.std() > 0.1 and (scale.max() / scale.min()) > 2


def test_gmm_scale_floor_and_init():
    head = GMMHead(dim=2, cond_dim=3, num_mixtures=4, min_scale=0.05)
    logits, loc, scale = head.params(torch.randn(10, 3))
    torch.testing.assert_close(scale, torch.ones_like(scale))            # init_scale = 1
    torch.testing.assert_close(logits, torch.zeros_like(logits))         # zero-initialised logits
    assert loc[0].std() > 0.1                                              # symmetry broken
    with torch.no_grad():
        head.out.bias[4 + 8:] = -50.0                                      # softplus -> 0
    _, _, scale = head.params(torch.zeros(1, 3))
    assert torch.allclose(scale, torch.full_like(scale, 0.05))


def test_gmm_samples_match_mixture_mean_and_covariance():
    torch.manual_seed(1)
    head = GMMHead(dim=3, cond_dim=4, num_mixtures=4).double()
    _randomise(head, std=0.8, seed=3)
    cond = torch.randn(1, 4, dtype=torch.float64)
    n = 200_000
    x = head.sample(cond.expand(n, 4), generator=torch.Generator().manual_seed(0))
    assert x.shape == (n, 3)
    logits, loc, scale = head.params(cond)
    pi, loc, var = logits.softmax(-1)[0], loc[0], scale[0] ** 2             # (k,), (k, d), (k, d)
    mean = (pi[:, None] * loc).sum(0)
    second = (pi[:, None, None] * (torch.diag_embed(var) + loc[:, :, None] * loc[:, None, :])).sum(0)
    cov = second - torch.outer(mean, mean)
    emp_mean, emp_cov = x.mean(0), torch.cov(x.T)
    se = (cov.diagonal() / n).sqrt()
    assert ((emp_mean - mean).abs() < 5 * se).all(), (emp_mean, mean)
    # Gaussian var of a covariance entry is (S_ii S_jj + S_ij^2) / n; mixtures have heavier 4th moments
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov ** 2) / n).sqrt()
    assert ((emp_cov - cov).abs() < 8 * se_cov).all(), ((emp_cov - cov) / se_cov)
    # and the mixture is not degenerate: off-diagonal covariance exists
    assert cov.triu(1).abs().max() > 0.05


def test_gmm_temperature_halves_within_component_std():
    head = GMMHead(dim=2, cond_dim=1, num_mixtures=3)
    with torch.no_grad():
        head.out.bias[3:9] = torch.tensor([[-10.0, 0.0], [0.0, 10.0], [10.0, 0.0]]).flatten()  # separated
        head.out.bias[9:] = math.log(math.expm1(0.7 - head.min_scale))                       # sigma = 0.7
    cond = torch.zeros(50_000, 1)
    draws = {t: head.sample(cond, temperature=t, generator=torch.Generator().manual_seed(5)) for t in (0.0, 0.5, 1.0)}
    # same generator -> same component and z: x(0.5) is exactly the midpoint of x(0) (the mean) and x(1)
    torch.testing.assert_close(draws[0.5], 0.5 * (draws[0.0] + draws[1.0]))
    # statistical: the std around the chosen component mean halves
    std = {t: (draws[t] - draws[0.0]).std(0) for t in (0.5, 1.0)}
    torch.testing.assert_close(std[1.0], torch.full((2,), 0.7), rtol=0.02, atol=0)
    torch.testing.assert_close(std[0.5] / std[1.0], torch.full((2,), 0.5), rtol=1e-5, atol=0)


def test_gmm_logit_temperature_sharpens_mixture_weights():
    """pi_k ∝ pi_k^(1/tau) for logit_temperature tau; GIVT's temperature_probs t gives pi_k ∝ pi_k^t."""
    head = GMMHead(dim=1, cond_dim=1, num_mixtures=2, min_scale=1e-3)
    with torch.no_grad():
        head.out.bias[:2] = torch.tensor([0.0, math.log(3.0)])             # pi = (1/4, 3/4)
        head.out.bias[2:4] = torch.tensor([-5.0, 5.0])
    n = 40_000
    cond = torch.zeros(n, 1)
    g = torch.Generator().manual_seed(0)

    def share(**kw):  # share of draws from the component at +5
        return (head.sample(cond, generator=g, **kw) > 0).double().mean().item()

    def expected(power):  # (3/4)^power / ((1/4)^power + (3/4)^power)
        return 0.75 ** power / (0.25 ** power + 0.75 ** power)

    tol = lambda p: 5 * math.sqrt(p * (1 - p) / n) + 1e-12
    for kw, p in [({}, 0.75), ({"logit_temperature": 0.5}, expected(2)), ({"logit_temperature": 2.0}, expected(0.5)),
                  ({"temperature_probs": 2.0}, expected(2)), ({"temperature_probs": 0.5}, expected(0.5)),
                  ({"temperature_probs": 0.0}, 0.5)]:
        assert abs(share(**kw) - p) < tol(p), (kw, p)
    assert share(logit_temperature=0.0) == 1.0                              # tau = 0: argmax
    with pytest.raises(ValueError, match="not both"):
        head.sample(cond, logit_temperature=0.5, temperature_probs=2.0)
    with pytest.raises(ValueError, match="temperature_probs"):
        head.sample(cond, temperature_probs=-1.0)


def _gmm_reference(logits, loc, scale):
    """The mixture built by hand from its parameters (k logits, (k, d) locs, (k, d) stds)."""
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal
    return MixtureSameFamily(Categorical(logits=logits), Independent(Normal(loc, scale), 1))


def _gmm_assert_sample_moments(x, ref, z=5.0):
    """Sample mean and per-dim variance of x (n, d) against ref's exact ones, within z standard errors.

    SE of the mean: sqrt(var / n); SE of the variance: sqrt((m4 - var^2) / n), with the mixture's
    central fourth moment m4 = sum_k pi_k (delta^4 + 6 delta^2 sigma^2 + 3 sigma^4), delta = mu_k - mean."""
    n = x.shape[0]
    pi = ref.mixture_distribution.probs
    loc, std = ref.component_distribution.base_dist.loc, ref.component_distribution.base_dist.scale
    mean, var = ref.mean, ref.variance
    delta = loc - mean
    m4 = (pi[..., None] * (delta ** 4 + 6 * delta ** 2 * std ** 2 + 3 * std ** 4)).sum(-2)
    se_mean, se_var = (var / n).sqrt(), ((m4 - var ** 2) / n).sqrt()
    assert ((x.mean(0) - mean).abs() < z * se_mean).all(), ((x.mean(0) - mean) / se_mean)
    assert ((x.var(0) - var).abs() < z * se_var).all(), ((x.var(0) - var) / se_var)


def test_gmm_tempered_density_and_samples_match_hand_built_mixture():
    """temperature t: sigma_k -> t sigma_k (GIVT: scales * t); logit_temperature tau: logits / tau;
    GIVT's temperature_probs g: logits * g. Each checked as a hand-built torch.distributions mixture."""
    torch.manual_seed(2)
    head = GMMHead(dim=2, cond_dim=4, num_mixtures=3).double()
    _randomise(head, std=0.8, seed=4)
    cond = torch.randn(6, 4, dtype=torch.float64)
    points = torch.randn(6, 2, dtype=torch.float64) * 2
    logits, loc, scale = head.params(cond)
    t, tau, g = 0.6, 0.5, 3.0
    cases = [(dict(temperature=t, logit_temperature=tau), _gmm_reference(logits / tau, loc, t * scale)),
             (dict(temperature=t, temperature_probs=g), _gmm_reference(logits * g, loc, t * scale)),
             (dict(temperature=t, temperature_probs=1 / tau), _gmm_reference(logits / tau, loc, t * scale))]
    for kw, ref in cases:
        torch.testing.assert_close(head.distribution(cond, **kw).log_prob(points), ref.log_prob(points),
                                   rtol=1e-12, atol=1e-12)
    # sampling draws from the same densities: moments at cond[0], large n
    n = 200_000
    for seed, (kw, ref) in enumerate(cases[:2]):
        x = head.sample(cond[:1].expand(n, 4), generator=torch.Generator().manual_seed(7 + seed), **kw)
        _gmm_assert_sample_moments(x, _gmm_reference(ref.mixture_distribution.logits[0],
                                                     ref.component_distribution.base_dist.loc[0],
                                                     ref.component_distribution.base_dist.scale[0]))
    with pytest.raises(ValueError, match="temperature"):
        head.distribution(cond, temperature=0.0)


# ------------------------------------------------------------------------------ diffusion
def test_diffusion_add_noise_equals_diffusers_and_ip_formula():
    head = DiffusionHead(dim=4, cond_dim=8, width=16, depth=1)
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    g = torch.Generator().manual_seed(0)
    x0, eps, xi = (torch.randn(64, 4, generator=g) for _ in range(3))
    t = torch.randint(0, 1000, (64,), generator=g)
    torch.testing.assert_close(head.add_noise(x0, eps, t, gamma=0.0), ref.add_noise(x0, eps, t), rtol=0, atol=0)
    abar = ref.alphas_cumprod.double()[t][:, None]
    for gamma in (0.1, 0.3):
        expected = abar.sqrt() * x0.double() + (1 - abar).sqrt() * (eps.double() + gamma * xi.double())
        torch.testing.assert_close(head.add_noise(x0, eps, t, gamma=gamma, xi=xi).double(), expected, rtol=1e-5, atol=1e-5)
    # the head's own gamma is the default, and xi is random when not given
    ip = DiffusionHead(dim=4, cond_dim=8, width=16, depth=1, input_perturbation=0.1)
    a = ip.add_noise(x0, eps, t, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, ref.add_noise(x0, eps, t))
    xi1 = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, ip.add_noise(x0, eps, t, xi=xi1))


def test_diffusion_training_target_is_unperturbed_eps_or_v():
    x0 = torch.randn(32, 2)
    eps = torch.randn(32, 2)
    t = torch.randint(0, 1000, (32,))
    head = DiffusionHead(2, 4, width=8, depth=1, input_perturbation=0.2)
    assert torch.equal(head.training_target(x0, eps, t), eps)
    vhead = DiffusionHead(2, 4, width=8, depth=1, prediction_type="v_prediction")
    abar = vhead.noise_scheduler.alphas_cumprod[t][:, None]
    torch.testing.assert_close(vhead.training_target(x0, eps, t), abar.sqrt() * eps - (1 - abar).sqrt() * x0)


def test_diffusion_batch_mul_changes_copies_not_loss_shape():
    cond, target = torch.randn(2, 5, 8), torch.randn(2, 5, 3)
    for batch_mul in (1, 4):
        head = _small("diffusion", batch_mul=batch_mul)
        seen = []
        head.net.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
        loss = head.loss(cond, target)
        assert loss.shape == (2, 5)
        assert seen == [2 * 5 * batch_mul]
    # 2-D inputs: N independent tokens
    assert _small("diffusion").loss(cond[0], target[0]).shape == (5,)


def test_diffusion_loss_averages_each_token_over_its_own_copies():
    # zero-initialised v-prediction head outputs 0, so a copy's loss is mean_d v^2 with
    # v = sqrt(abar) eps - sqrt(1 - abar) x0: small for x0 = 0, large for x0 = 30.
    head = DiffusionHead(dim=3, cond_dim=8, width=16, depth=1, prediction_type="v_prediction", batch_mul=4)
    target = torch.zeros(2, 6, 3)
    target[:, 1::2] = 30.0
    loss = head.loss(torch.randn(2, 6, 8), target, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (2, 6)
    assert (loss[:, 0::2] < 5).all() and (loss[:, 1::2] > 50).all(), loss


def test_diffusion_loss_at_init_is_target_second_moment():
    # zero-initialised output: prediction 0, so the eps loss is E[eps^2] = 1 per dim
    head = DiffusionHead(dim=4, cond_dim=8, width=32, depth=2, batch_mul=8)
    loss = head.loss(torch.randn(256, 8), torch.randn(256, 4), generator=torch.Generator().manual_seed(0))
    assert loss.shape == (256,)
    assert abs(loss.mean().item() - 1.0) < 0.08      # mean of 8192 chi2_1 draws: sd 0.016


# Sampler outputs against a hand-written diffusers loop, and the MAR temperature convention:
# tests/test_diffusion_sampling.py.
def test_diffusion_temperature_start_and_steps_mode_scales_x_T_and_step_noise():
    """The opt-in old convention: x_T = tau z_T and every per-step noise scaled by tau."""
    head = DiffusionHead(dim=2, cond_dim=2, width=8, depth=1)      # untrained: eps_hat = 0, linear in noise
    cond = torch.zeros(3, 2)
    for sampler, eta in (("ddpm", 0.0), ("ddim", 1.0), ("dpmsolver", 0.0), ("ddim", 0.0)):
        kw = dict(sampler=sampler, num_steps=5, eta=eta, temperature_mode="start_and_steps")
        a = head.sample(cond, temperature=1.0, generator=torch.Generator().manual_seed(2), **kw)
        b = head.sample(cond, temperature=0.5, generator=torch.Generator().manual_seed(2), **kw)
        # with eps_hat = 0 every update is linear in (x_T, step noises), all scaled by tau
        torch.testing.assert_close(b, 0.5 * a, rtol=1e-5, atol=1e-6)
        z = head.sample(cond, temperature=0.0, generator=torch.Generator().manual_seed(2), **kw)
        assert torch.equal(z, torch.zeros_like(z))


def test_diffusion_ddpm_sampler_matches_diffusers_loop():
    head = _small("diffusion")
    _randomise(head, std=0.2)
    cond = torch.randn(6, 8)
    ours = head.sample(cond, sampler="ddpm", num_steps=7, generator=torch.Generator().manual_seed(4))
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    sched.set_timesteps(7)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 3, generator=g)
    for t in sched.timesteps:
        eps = head.net(x, torch.full((6,), int(t)), cond)
        x = sched.step(eps, t, x, generator=g).prev_sample
    torch.testing.assert_close(ours, x, rtol=0, atol=0)


# ------------------------------------------------------------------------------ guidance (all heads)
@pytest.mark.parametrize("name", sorted(HEADS))
def test_cfg_scale_one_equals_conditional_sampling(name):
    head = _small(name)
    _randomise(head, std=0.3)
    cond, uncond = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    plain = head.sample(cond, generator=torch.Generator().manual_seed(0))
    guided1 = head.sample(cond, generator=torch.Generator().manual_seed(0), cond_uncond=uncond, cfg_scale=1.0)
    assert torch.equal(plain, guided1)
    guided3 = head.sample(cond, generator=torch.Generator().manual_seed(0), cond_uncond=uncond, cfg_scale=3.0)
    assert guided3.shape == plain.shape and torch.isfinite(guided3).all()
    assert not torch.allclose(guided3, plain)
    # cond_uncond == cond: guidance has nothing to extrapolate
    same = head.sample(cond, generator=torch.Generator().manual_seed(0), cond_uncond=cond, cfg_scale=3.0)
    torch.testing.assert_close(same, plain, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="cond_uncond"):
        head.sample(cond, cfg_scale=2.0)
    with pytest.raises(ValueError, match="same shape as cond"):
        head.sample(cond, cond_uncond=uncond[:, :2], cfg_scale=2.0)


def test_mse_cfg_extrapolates_the_mean():
    head = _small("mse")
    _randomise(head)
    c, u = torch.randn(4, 8), torch.randn(4, 8)
    torch.testing.assert_close(head.sample(c, cond_uncond=u, cfg_scale=2.5),
                               head.mean(u) + 2.5 * (head.mean(c) - head.mean(u)))


def test_gmm_cfg_guided_mixture_matches_hand_built_distribution():
    """Documented guidance: logits l_u + s (l_c - l_u), means mu_u + s (mu_c - mu_u), stds sigma_c,
    then the temperatures. The head's guided log-density and its guided samples are checked against
    that mixture built by hand with torch.distributions."""
    torch.manual_seed(3)
    head = GMMHead(dim=2, cond_dim=8, num_mixtures=3).double()
    _randomise(head, std=0.5, seed=5)
    c, u = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    s, t, tau = 2.0, 0.8, 0.7
    lc, mc, sc = head.params(c)
    lu, mu, _ = head.params(u)
    ref = _gmm_reference((lu + s * (lc - lu)) / tau, mu + s * (mc - mu), t * sc)
    points = torch.randn(4, 5, 2, dtype=torch.float64) * 2
    got = head.distribution(c, cond_uncond=u, cfg_scale=s, temperature=t, logit_temperature=tau).log_prob(points)
    torch.testing.assert_close(got, ref.log_prob(points), rtol=1e-12, atol=1e-12)
    # guidance changes the density (the check is not trivially the conditional one)
    assert (got - head.distribution(c, temperature=t, logit_temperature=tau).log_prob(points)).abs().max() > 0.1
    # guided sampling: row 0 repeated n times, moments against the hand-built mixture
    n = 200_000
    x = head.sample(c[:1].expand(n, 8), cond_uncond=u[:1].expand(n, 8), cfg_scale=s, temperature=t,
                    logit_temperature=tau, generator=torch.Generator().manual_seed(9))
    _gmm_assert_sample_moments(x, _gmm_reference(ref.mixture_distribution.logits[0],
                                                 ref.component_distribution.base_dist.loc[0],
                                                 ref.component_distribution.base_dist.scale[0]))


def test_gmm_cfg_is_density_guidance_when_components_are_shared():
    """Where the docstring calls the rule exact: (a) one component, scale independent of cond: the
    guided density is p_c^s p_u^(1-s) renormalised (numerical integration on a grid); (b) locs and
    scales independent of cond: guided samples pick component k with probability ∝ pi_c,k^s pi_u,k^(1-s)."""
    s = 2.5
    # (a) k = 1, dim = 1: only the mean depends on cond
    head = GMMHead(dim=1, cond_dim=2, num_mixtures=1).double()
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.weight[1] = torch.tensor([0.7, -0.4], dtype=torch.float64)   # loc row
        head.out.bias[2] = 0.3                                                 # raw scale -> sigma ~ 0.85
    c, u = torch.tensor([[1.0, 0.5]], dtype=torch.float64), torch.tensor([[-0.5, 1.0]], dtype=torch.float64)
    grid = torch.linspace(-15, 15, 30_001, dtype=torch.float64)[:, None, None]  # (G, 1, 1)
    log_c = head.distribution(c).log_prob(grid)[:, 0]
    log_u = head.distribution(u).log_prob(grid)[:, 0]
    unnorm = s * log_c + (1 - s) * log_u
    dx = float(grid[1] - grid[0])
    log_ref = unnorm - (torch.logsumexp(unnorm, 0) + math.log(dx))
    guided = head.distribution(c, cond_uncond=u, cfg_scale=s).log_prob(grid)[:, 0]
    keep = log_ref > -20
    torch.testing.assert_close(guided[keep], log_ref[keep], rtol=0, atol=1e-6)
    # (b) k = 3 well-separated fixed components, only the logits depend on cond
    head = GMMHead(dim=1, cond_dim=2, num_mixtures=3, min_scale=1e-3).double()
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.weight[:3] = torch.tensor([[0.5, -0.2], [-0.3, 0.4], [0.1, 0.6]], dtype=torch.float64)
        head.out.bias[3:6] = torch.tensor([-10.0, 0.0, 10.0], dtype=torch.float64)
    pi_c = head.distribution(c).mixture_distribution.probs[0]
    pi_u = head.distribution(u).mixture_distribution.probs[0]
    w = pi_c ** s * pi_u ** (1 - s)
    w = w / w.sum()
    n = 60_000
    x = head.sample(c.expand(n, 2), cond_uncond=u.expand(n, 2), cfg_scale=s,
                    generator=torch.Generator().manual_seed(11))[:, 0]
    freq = torch.stack([(x < -5).double().mean(), ((x > -5) & (x < 5)).double().mean(), (x > 5).double().mean()])
    se = (w * (1 - w) / n).sqrt()
    assert ((freq - w).abs() < 5 * se).all(), (freq, w)
    assert (w - pi_c).abs().max() > 0.05                                       # guidance moved the weights


def test_diffusion_cfg_mixes_model_output_per_step():
    head = _small("diffusion")
    _randomise(head, std=0.2)
    c, u = torch.randn(4, 8), torch.randn(4, 8)
    ours = head.sample(c, sampler="ddim", num_steps=4, cond_uncond=u, cfg_scale=2.0,
                       generator=torch.Generator().manual_seed(0))
    sched = head.make_scheduler("ddim")
    sched.set_timesteps(4)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    for t in sched.timesteps:
        tt = torch.full((4,), int(t))
        e_c, e_u = head.net(x, tt, c), head.net(x, tt, u)
        x = sched.step(e_u + 2.0 * (e_c - e_u), t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ interface & errors
@pytest.mark.parametrize("name", sorted(HEADS))
def test_interface_shapes_3d_and_2d(name):
    head = _small(name)
    cond, target = torch.randn(2, 5, 8), torch.randn(2, 5, 3)
    assert head.loss(cond, target).shape == (2, 5)
    assert head.sample(cond).shape == (2, 5, 3)
    assert head.loss(cond[0], target[0]).shape == (5,)
    assert head.sample(cond[0]).shape == (5, 3)
    loss = head.loss(cond, target).mean()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


@pytest.mark.parametrize("name", sorted(HEADS))
def test_bad_shapes_raise_value_error_naming_expected_shape(name):
    head = _small(name)
    cond, target = torch.randn(2, 5, 8), torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"expected cond of shape \(B, T, 8\) or \(N, 8\), got \(2, 5, 7\)"):
        head.loss(torch.randn(2, 5, 7), target)
    with pytest.raises(ValueError, match=r"expected target of shape \(B, T, dim\) = \(2, 5, 3\).*got \(2, 5, 4\)"):
        head.loss(cond, torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"expected target of shape \(B, T, dim\) = \(2, 5, 3\).*got \(2, 4, 3\)"):
        head.loss(cond, torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"expected target of shape \(N, dim\) = \(5, 3\)"):
        head.loss(cond[0], target)
    with pytest.raises(ValueError, match=r"expected cond of shape"):
        head.sample(torch.randn(8))
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        head.sample(cond, temperature=-1.0)


def test_constructor_errors_and_registry():
    with pytest.raises(ValueError, match="unknown head 'flow'"):
        build_head("flow", 4, 8)
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionHead(4, 8, prediction_type="sample")
    with pytest.raises(ValueError, match="sampler"):
        DiffusionHead(4, 8, sampler="euler")
    with pytest.raises(ValueError, match="num_steps"):
        DiffusionHead(4, 8, width=8, depth=1).sample(torch.randn(2, 8), num_steps=0)
    with pytest.raises(ValueError, match="min_scale"):
        GMMHead(4, 8, min_scale=0.0)
    with pytest.raises(ValueError, match="dim must be a positive int"):
        MSEHead(0, 8)
    assert HEADS == {"gmm": GMMHead, "diffusion": DiffusionHead, "mse": MSEHead}
    assert isinstance(build_head("gmm", 4, 8, num_mixtures=3), GMMHead)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_configs_instantiate_with_every_constructor_argument(name):
    import inspect

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    head = instantiate(cfg)
    assert type(head) is HEADS[name]
    args = set(inspect.signature(HEADS[name].__init__).parameters) - {"self"}
    assert set(cfg) - {"_target_"} == args
    assert head.config == {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "_target_"} | (
        {"width": cfg.cond_dim} if name == "diffusion" and cfg.width is None else {})
    x = head.sample(torch.randn(2, cfg.cond_dim))
    assert x.shape == (2, cfg.dim)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_save_and_load_round_trip(name, tmp_path):
    head = _small(name)
    _randomise(head)
    head.save_pretrained(tmp_path / name)
    again = type(head).from_pretrained(tmp_path / name)
    cond, target = torch.randn(4, 8), torch.randn(4, 3)
    if name == "diffusion":
        g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        torch.testing.assert_close(head.loss(cond, target, generator=g1), again.loss(cond, target, generator=g2))
    else:
        torch.testing.assert_close(head.loss(cond, target), again.loss(cond, target))

"""Reverse diffusion: the one sampling loop and the one scheduler factory of latentar.

Every diffusion arm samples through :func:`reverse_diffusion`: the per-token ``DiffusionHead``
(conditioned on the backbone state), ``JointDiffusion`` (whole latent sequences) and the image
``IPDiffusionTrainer`` (via :func:`sample`). The arms only supply a denoiser ``f(x_t, t) -> output``.

Samplers (:func:`make_sampling_scheduler`: a fresh diffusers scheduler per call, built with
``from_config`` from the *training* scheduler, so the noise schedule, prediction type, clipping and
``timestep_spacing`` always match what the model was trained on; multistep schedulers keep state,
so one instance per sampling loop):

* ``"ddpm"``       ``DDPMScheduler``: ancestral sampling (Ho et al. 2020) on ``num_steps`` timesteps,
  x_{t'} = mu_theta(x_t, t) + sigma_t z_t (the training config's ``variance_type``, "fixed_small" =
  the posterior variance). The default of every latent arm (as MAR), ``DEFAULT_NUM_STEPS`` steps.
* ``"ddim"``       ``DDIMScheduler`` (Song et al. 2021); ``eta = 0`` is deterministic after x_T,
  ``eta > 0`` adds eta sigma_t z_t per step.
* ``"dpmsolver"``  ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)``: an
  ODE solver, no per-step noise.

Timestep spacing (one rule for every arm). The sampling timesteps follow the training scheduler's
``timestep_spacing``. With eps-prediction the first step's x_0 estimate is
(x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), so an eps error e reaches x_{t'} as ~ e
sqrt(abar_{t'} / abar_t). On the capped cosine schedule ("squaredcos_cap_v2", beta <= 0.999),
abar_{T-1} = 2.4e-9: "trailing" / "linspace" start there and amplify the error ~630x at 50 steps
(a weakly trained eps model then blows up: FD ~1e6 on the ring test, samples ~1e4 on a toy);
"leading" starts at (n - 1) * (T // n) (t = 980, abar = 8.8e-4, ~2x) and is the latent arms'
default. v-prediction (x_0 = sqrt(abar) x_t - sqrt(1 - abar) v) has no 1 / sqrt(abar) factor,
so "trailing" is safe there on any schedule. On the linear schedule (abar_{T-1} = 4e-5, ~1.2x
either way) use "trailing", as ``ddpm_scheduler`` does, so that every step count starts at
t = T - 1 (diffusers' "leading" would start 5-step sampling at t = 800).

Temperature tau (``temperature_mode``):

* ``"mar"`` (default): tau multiplies only the per-step noise and x_T ~ N(0, I) is not scaled,
      x_{t'} = mu_theta(x_t, t) + tau sigma_t z_t
  (MAR, LTH14/mar@fe470ac: ``diffusion/gaussian_diffusion.py`` line 419, ``p_sample``:
  ``sample = out["mean"] + nonzero_mask * th.exp(0.5 * out["log_variance"]) * noise * temperature``;
  x_T is the unscaled ``torch.randn`` of ``models/diffloss.py`` lines 38 / 43). For ddim the
  per-step noise is eta sigma_t z_t, scaled the same way. A sampler with no per-step noise
  (ddim with eta = 0, dpmsolver) ignores tau here, so tau != 1 raises a ValueError instead of
  silently doing nothing. (DDPM adds no noise at its last step, t -> 0, so a one-step DDPM
  chain is not affected by tau either.)
* ``"start_and_steps"``: x_T = tau z_T *and* every per-step noise is scaled by tau (the head's old
  convention); for the noiseless samplers tau then scales x_T only.

DDPM's per-step noise is drawn inside ``DDPMScheduler.step``; for tau != 1 the step is taken twice
on the same z (a replayed copy of the generator): once on (f, x_t), giving mu + sigma z, and once on
zeros, giving exactly sigma z (the mean is linear in (output, x_t)); the result is
mu + sigma z + (tau - 1) sigma z. The generator advances once per step either way.

Classifier-free guidance (:func:`classifier_free_guidance`): the denoiser evaluates the
conditional and unconditional branch on one doubled batch and mixes out_u + s (out_c - out_u)
(eps-level as MAR, LatentLM, VibeVoice; for v- or x0-prediction the same mix on the output equals
the mix on eps, since at fixed x_t the maps eps -> v and eps -> x0 are affine).

Epsilon scaling (ADM-ES, Ning et al. 2024, "Elucidating the exposure bias in diffusion models",
forever208/ADM-ES): a training-free fix at sampling time. The predicted noise is divided by

    lambda_t = b + k t        (b = ``eps_scale``, k = ``eps_scale_k``, t the training timestep)

(the paper's default is the constant b, e.g. 1.017 on CIFAR-10, 1.004-1.006 at higher
resolution). For v- and x0-predicting models the output is converted to eps at the current x_t,
scaled, and converted back: eps = sqrt(abar) v + sqrt(1 - abar) x_t, v' = (eps' - sqrt(1 - abar) x_t) / sqrt(abar);
eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar), x0' = (x_t - sqrt(1 - abar) eps') / sqrt(abar).
lambda = 1 is plain sampling, bit for bit (the output is not touched).

Generators (:func:`check_generator`, one rule for every function here and so for every diffusion
arm): a ``torch.Generator`` on the CPU or on the sampling device; every draw is made on the
*generator's* device and moved to the sampling device (diffusers' ``randn_tensor`` rule). A CPU
generator gives the same samples on every device; a generator on the model's device (the one the
GMM head's ``torch.randn(..., generator=g, device=<model device>)`` needs) draws there, with no
copy per step. A generator on any other device is a ValueError. None -> a generator on the
sampling device seeded from torch's global (CPU) RNG, so ``torch.manual_seed`` still makes
sampling reproducible.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import nn

SAMPLERS = ("ddpm", "ddim", "dpmsolver")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TEMPERATURE_MODES = ("mar", "start_and_steps")
DEFAULT_SAMPLER = "ddpm"          # every latent arm (DiffusionHead, JointDiffusion), as MAR
DEFAULT_NUM_STEPS = 50
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def schedule_length(scheduler) -> int:
    """The length T of a diffusers scheduler's training schedule (timesteps 0..T-1)."""
    config = getattr(scheduler, "config", None)
    if config is None or "num_train_timesteps" not in config or not hasattr(scheduler, "add_noise"):
        raise TypeError(f"expected a diffusers noise scheduler (e.g. DDPMScheduler) with add_noise and a config, "
                        f"got {type(scheduler).__name__}")
    return int(config["num_train_timesteps"])


def check_sampler(sampler: str) -> str:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    return sampler


def check_steps(num_steps, scheduler) -> int:
    """num_steps as an int in [1, T], or an error naming the training schedule's length T."""
    T = schedule_length(scheduler)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= T:
        raise ValueError(f"number of sampling steps must be an integer in [1, {T}] (the scheduler was trained with "
                         f"num_train_timesteps={T}), got {num_steps!r}; lower the step count or train with more timesteps")
    return num_steps


def check_temperature(temperature, temperature_mode: str, sampler: str, eta: float) -> float:
    """tau as a float; a ValueError if it is not finite >= 0, or if it would silently do nothing."""
    if temperature_mode not in TEMPERATURE_MODES:
        raise ValueError(f"temperature_mode must be one of {TEMPERATURE_MODES} ('mar': tau scales the per-step "
                         f"noise only; 'start_and_steps': x_T too), got {temperature_mode!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    noiseless = sampler == "dpmsolver" or (sampler == "ddim" and eta == 0)
    if temperature != 1 and temperature_mode == "mar" and noiseless:
        what = "sampler='dpmsolver' (an ODE solver)" if sampler == "dpmsolver" else "sampler='ddim' with eta=0"
        raise ValueError(f"temperature={temperature} has no effect with {what} under temperature_mode='mar' (tau "
                         "scales only the per-step noise, and this sampler adds none after x_T); use sampler='ddpm', "
                         "'ddim' with eta > 0, or temperature_mode='start_and_steps' to scale x_T")
    return float(temperature)


def make_sampling_scheduler(train_scheduler, sampler: str = "ddim"):
    """A fresh diffusers scheduler for ``sampler`` with the training scheduler's configuration.

    ddpm: ``DDPMScheduler.from_config``; ddim: ``DDIMScheduler.from_config`` (``set_alpha_to_one``
    default True: the last step ends at alpha = 1); dpmsolver: DPM-Solver++ of order 2. Clipping,
    thresholding and ``timestep_spacing`` come from the training config (module docstring).
    """
    check_sampler(sampler)
    schedule_length(train_scheduler)
    config = train_scheduler.config
    if sampler == "ddpm":
        return DDPMScheduler.from_config(config)
    if sampler == "ddim":
        return DDIMScheduler.from_config(config)
    return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)


def model_output(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``model(x, t)`` as a tensor: diffusers models return an object with ``.sample``."""
    out = model(x, t)
    if hasattr(out, "sample"):
        out = out.sample
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if not torch.is_tensor(out) or out.shape != x.shape:
        raise ValueError(f"the denoiser must return a prediction shaped like its input {tuple(x.shape)}, "
                         f"got {getattr(out, 'shape', type(out).__name__)}")
    return out


def epsilon_scaling(output: torch.Tensor, x_t: torch.Tensor, abar_t: float, lam: float,
                    prediction_type: str = "epsilon") -> torch.Tensor:
    """The model output with its implied eps divided by ``lam`` (ADM-ES; module docstring).

    output, x_t: ``(B, ...)``; abar_t: alpha-bar at the current timestep; lam > 0.
    """
    if not lam > 0 or not math.isfinite(lam):
        raise ValueError(f"epsilon scaling lambda must be a finite number > 0, got {lam}")
    if lam == 1.0:
        return output
    a, s = math.sqrt(abar_t), math.sqrt(1.0 - abar_t)
    if prediction_type == "epsilon":
        return output / lam
    if prediction_type == "v_prediction":
        eps = a * output + s * x_t
        return (eps / lam - s * x_t) / a
    if prediction_type == "sample":
        eps = (x_t - a * output) / s
        return (x_t - s * eps / lam) / a
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def classifier_free_guidance(denoise_pair: Denoiser, cfg_scale: float) -> Denoiser:
    """A denoiser ``f(x_t, t)`` from ``denoise_pair(x2, t2)`` run on the doubled batch
    ``x2 = [x_t; x_t]``, ``t2 = [t; t]`` whose first half is conditional, second unconditional:
    f = out_u + s (out_c - out_u) (module docstring)."""
    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out_c, out_u = denoise_pair(torch.cat([x, x]), torch.cat([t, t])).chunk(2)
        return out_u + cfg_scale * (out_c - out_u)
    return guided


def check_generator(generator: torch.Generator | None, device: torch.device | str) -> torch.Generator:
    """The generator a sampler draws from (module docstring, "Generators"): ``generator`` if it is on
    the CPU or on ``device``, a fresh one on ``device`` seeded from torch's global RNG if None, else
    a ValueError naming both devices."""
    device = torch.device(device)
    if generator is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())       # a CPU tensor: no device sync
        return torch.Generator(device=device).manual_seed(seed)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (or None), got {type(generator).__name__}")
    g = generator.device
    same_index = g.index is None or device.index is None or g.index == device.index
    if g.type == "cpu" or (g.type == device.type and same_index):
        return generator
    raise ValueError(f"generator is on {g} but sampling runs on {device}; pass a CPU generator (the same samples "
                     f"on every device) or one on the sampling device, torch.Generator(device={str(device)!r})")


def _randn(shape, generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """N(0, I) drawn on the generator's device, then moved (as diffusers' randn_tensor)."""
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


@torch.no_grad()
def reverse_diffusion(denoise: Denoiser, train_scheduler, shape: Sequence[int], sampler: str = DEFAULT_SAMPLER,
                      num_steps: int = DEFAULT_NUM_STEPS, temperature: float = 1.0, temperature_mode: str = "mar",
                      eta: float = 0.0, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                      eps_scale: float = 1.0, eps_scale_k: float = 0.0) -> torch.Tensor:
    """x_0 ``shape`` from x_T ~ N(0, I) in ``num_steps`` reverse steps of ``sampler``.

    Exactly the diffusers loop ``s = make_sampling_scheduler(train_scheduler, sampler);
    s.set_timesteps(num_steps)``, then for t in s.timesteps: ``x = s.step(f(x, t), t, x).prev_sample``,
    plus temperature, DDIM's eta and ADM-ES (module docstring).

    Args:
        denoise: ``f(x_t (N, ...), t (N,) long) -> output`` shaped like x_t: eps, v or x0 per the
            training scheduler's prediction_type (wrap it with :func:`classifier_free_guidance` for CFG).
        train_scheduler: the scheduler the model was trained with (schedule, prediction type, clipping,
            timestep_spacing).
        shape: ``(N, ...)`` of the samples. sampler: one of ``SAMPLERS``; num_steps in [1, T].
        temperature, temperature_mode: tau >= 0 and where it acts ("mar" | "start_and_steps").
        eta: DDIM's stochasticity (0 = deterministic); ignored by the other samplers.
        generator: on the CPU or on ``device`` (:func:`check_generator`); x_T, then each step's noise
            (ddpm: inside ``step``; ddim eta > 0: ``variance_noise``) come from it in that order, drawn
            on its device and moved to ``device``. None -> one on ``device`` seeded from torch's
            global RNG, so ``torch.manual_seed`` still makes sampling reproducible.
        device, dtype: of x (None -> CPU); the output of ``denoise`` is cast to dtype.
        eps_scale, eps_scale_k: ADM-ES lambda_t = eps_scale + eps_scale_k * t (1, 0 = off).

    Returns:
        x_0 ``shape`` in ``dtype`` on ``device``.
    """
    check_sampler(sampler)
    check_steps(num_steps, train_scheduler)
    if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    tau = check_temperature(temperature, temperature_mode, sampler, eta)
    if not (math.isfinite(eps_scale) and eps_scale > 0 and math.isfinite(eps_scale_k)):
        raise ValueError(f"eps_scale (ADM-ES lambda) must be a finite number > 0 (1 = off, ~1.005 typical) and "
                         f"eps_scale_k finite, got {eps_scale}, {eps_scale_k}")
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or shape[0] < 1:
        raise ValueError(f"shape must be (N, ...) with N >= 1, got {shape}")
    device = torch.device("cpu" if device is None else device)
    generator = check_generator(generator, device)
    prediction_type = train_scheduler.config.get("prediction_type", "epsilon")
    scheduler = make_sampling_scheduler(train_scheduler, sampler)
    scheduler.set_timesteps(num_steps)            # CPU timesteps: int(t) below is not a device sync
    abar = scheduler.alphas_cumprod.double()
    start_tau = tau if temperature_mode == "start_and_steps" else 1.0
    x = _randn(shape, generator, device, dtype)
    if start_tau * scheduler.init_noise_sigma != 1.0:
        x = x * (start_tau * scheduler.init_noise_sigma)
    n = shape[0]
    for t in scheduler.timesteps:
        ti = int(t)
        x_in = scheduler.scale_model_input(x, t)
        out = denoise(x_in, torch.full((n,), ti, device=device, dtype=torch.long)).to(dtype)
        lam = eps_scale + eps_scale_k * ti
        if lam != 1.0:
            out = epsilon_scaling(out, x_in, float(abar[ti]), lam, prediction_type)
        x = _step(scheduler, sampler, out, t, x, tau, eta, generator).to(dtype)
    return x


def _step(scheduler, sampler: str, out: torch.Tensor, t, x: torch.Tensor, tau: float, eta: float,
          generator: torch.Generator) -> torch.Tensor:
    """One scheduler step with tau-scaled per-step noise (module docstring)."""
    if sampler == "ddpm":
        if tau == 1.0:
            return scheduler.step(out, t, x, generator=generator).prev_sample
        twin = torch.Generator(device=generator.device)
        twin.set_state(generator.get_state())
        full = scheduler.step(out, t, x, generator=generator).prev_sample                       # mu + sigma z
        noise = scheduler.step(torch.zeros_like(out), t, torch.zeros_like(x), generator=twin).prev_sample  # sigma z
        return full + (tau - 1.0) * noise
    if sampler == "ddim":
        noise = None
        if eta > 0:
            noise = _randn(x.shape, generator, x.device, x.dtype)
            if tau != 1.0:
                noise = tau * noise
        return scheduler.step(out, t, x, eta=eta, variance_noise=noise).prev_sample
    return scheduler.step(out, t, x).prev_sample


@torch.no_grad()
def sample(model: nn.Module, train_scheduler, num_steps: int, shape: Sequence[int], sampler: str = "ddim",
           generator: torch.Generator | None = None, eps_scale: float = 1.0, eps_scale_k: float = 0.0,
           eta: float = 0.0, batch_size: int = 512, device: torch.device | str | None = None,
           temperature: float = 1.0, temperature_mode: str = "mar") -> torch.Tensor:
    """Draw ``shape[0]`` samples ``shape = (N, C, H, W)`` (any rank) from ``model(x_t, t)``: batches
    of :func:`reverse_diffusion`, in float32, in eval mode.

    Args:
        model: denoiser ``model(x_t, t) -> eps`` (or v / x0 per the scheduler's prediction_type);
            a diffusers model's ``.sample`` output is unwrapped.
        train_scheduler: the scheduler the model was trained with (schedule, prediction type, clipping).
        num_steps: in [1, num_train_timesteps].
        sampler: "ddpm" | "ddim" | "dpmsolver".
        generator: on the CPU or on ``device`` (:func:`check_generator`); x_T and every per-step
            noise come from it, in batch order, drawn on its device (a CPU generator: the same samples
            on every device). None -> one on ``device`` seeded from torch's global RNG.
        eps_scale, eps_scale_k: ADM-ES lambda_t = eps_scale + eps_scale_k * t (1, 0 = off).
        eta: DDIM's stochasticity (0 = deterministic); ignored by the other samplers.
        batch_size: samples per network call.
        device: where to run; None -> the model's parameters' device.
        temperature, temperature_mode: see the module docstring ("mar": per-step noise only).

    Returns:
        samples ``shape``, float32, on ``device``.
    """
    check_sampler(sampler)
    check_steps(num_steps, train_scheduler)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or shape[0] < 1:
        raise ValueError(f"shape must be (N, ...) with N >= 1, got {shape}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    generator = check_generator(generator, device)          # one generator for every batch
    denoise = lambda x, t: model_output(model, x, t).float()  # noqa: E731
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, shape[0], batch_size):
            n = min(batch_size, shape[0] - start)
            out.append(reverse_diffusion(denoise, train_scheduler, (n, *shape[1:]), sampler=sampler,
                                         num_steps=num_steps, temperature=temperature,
                                         temperature_mode=temperature_mode, eta=eta, generator=generator,
                                         device=device, dtype=torch.float32, eps_scale=eps_scale,
                                         eps_scale_k=eps_scale_k))
    finally:
        model.train(was_training)
    return torch.cat(out)


def sample_at_steps(model: nn.Module, train_scheduler, steps: Sequence[int], shape: Sequence[int],
                    sampler: str = "ddim", seed: int = 0, **kwargs) -> dict[int, torch.Tensor]:
    """``{num_steps: samples}`` for every step count, each drawn from ``Generator().manual_seed(seed)``
    (the same x_T for every step count, so differences come from the step count alone)."""
    steps = [check_steps(s, train_scheduler) for s in steps]
    check_sampler(sampler)
    return {s: sample(model, train_scheduler, s, shape, sampler=sampler,
                      generator=torch.Generator().manual_seed(int(seed)), **kwargs) for s in steps}

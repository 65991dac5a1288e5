"""Reverse diffusion with diffusers' samplers at any number of steps, with optional epsilon scaling.

Samplers (a fresh scheduler per call, built with ``from_config`` from the *training* scheduler, so
the noise schedule, prediction type and clipping always match what the model was trained on;
multistep schedulers keep state, so one instance per sampling loop):

* ``"ddpm"``       ``DDPMScheduler``: ancestral sampling (Ho et al. 2020) on ``num_steps`` timesteps.
* ``"ddim"``       ``DDIMScheduler`` (Song et al. 2021), ``eta = 0`` deterministic after x_T.
* ``"dpmsolver"``  ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)``.

The sampling timesteps follow the training scheduler's ``timestep_spacing``; use ``"trailing"``
(as the builders in this package do) so that every step count starts at t = T - 1, where
x_T ~ N(0, I) is closest to true; diffusers' default "leading" starts 5-step sampling at t = 800.

Epsilon scaling (ADM-ES, Ning et al. 2024, "Elucidating the exposure bias in diffusion models",
forever208/ADM-ES): a training-free fix at sampling time. The predicted noise is divided by

    lambda_t = b + k t        (b = ``eps_scale``, k = ``eps_scale_k``, t the training timestep)

(the paper's default is the constant b, e.g. 1.017 on CIFAR-10, 1.004-1.006 at higher
resolution). For v- and x0-predicting models the output is converted to eps at the current x_t,
scaled, and converted back: eps = sqrt(abar) v + sqrt(1 - abar) x_t, v' = (eps' - sqrt(1 - abar) x_t) / sqrt(abar);
eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar), x0' = (x_t - sqrt(1 - abar) eps') / sqrt(abar).
lambda = 1 is plain sampling, bit for bit (the output is not touched).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import nn

SAMPLERS = ("ddpm", "ddim", "dpmsolver")


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


def make_sampling_scheduler(train_scheduler, sampler: str = "ddim"):
    """A fresh diffusers scheduler for ``sampler`` with the training scheduler's configuration."""
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
    raise ValueError(f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}")


@torch.no_grad()
def sample(model: nn.Module, train_scheduler, num_steps: int, shape: Sequence[int], sampler: str = "ddim",
           generator: torch.Generator | None = None, eps_scale: float = 1.0, eps_scale_k: float = 0.0,
           eta: float = 0.0, batch_size: int = 512, device: torch.device | str | None = None) -> torch.Tensor:
    """Draw ``shape[0]`` samples ``shape = (N, C, H, W)`` (any rank) in ``num_steps`` reverse steps.

    Args:
        model: denoiser ``model(x_t, t) -> eps`` (or v / x0 per the scheduler's prediction_type).
        train_scheduler: the scheduler the model was trained with (schedule, prediction type, clipping).
        num_steps: in [1, num_train_timesteps].
        sampler: "ddpm" | "ddim" | "dpmsolver".
        generator: a CPU ``torch.Generator``; x_T and every per-step noise come from it, in batch
            order, so a seed gives the same samples on every device. None -> seeded from torch's
            global RNG.
        eps_scale, eps_scale_k: ADM-ES lambda_t = eps_scale + eps_scale_k * t (1, 0 = off).
        eta: DDIM's stochasticity (0 = deterministic); ignored by the other samplers.
        batch_size: samples per network call.
        device: where to run; None -> the model's parameters' device.

    Returns:
        samples ``shape``, float32, on ``device``.
    """
    check_sampler(sampler)
    check_steps(num_steps, train_scheduler)
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if not eps_scale > 0:
        raise ValueError(f"eps_scale (ADM-ES lambda) must be > 0 (1 = off, ~1.005 typical), got {eps_scale}")
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or shape[0] < 1:
        raise ValueError(f"shape must be (N, ...) with N >= 1, got {shape}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
    if generator.device.type != "cpu":
        raise ValueError("pass a CPU torch.Generator: the noise is drawn on the CPU so a seed gives the same samples on every device")
    prediction_type = train_scheduler.config.get("prediction_type", "epsilon")
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, shape[0], batch_size):
            n = min(batch_size, shape[0] - start)
            out.append(_sample_batch(model, train_scheduler, num_steps, (n, *shape[1:]), sampler, generator,
                                     eps_scale, eps_scale_k, eta, device, prediction_type))
    finally:
        model.train(was_training)
    return torch.cat(out)


def _sample_batch(model, train_scheduler, num_steps, shape, sampler, generator, eps_scale, eps_scale_k, eta,
                  device, prediction_type) -> torch.Tensor:
    scheduler = make_sampling_scheduler(train_scheduler, sampler)
    scheduler.set_timesteps(num_steps, device=device)
    abar = scheduler.alphas_cumprod.double().cpu()
    x = torch.randn(shape, generator=generator).to(device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        ti = int(t)
        x_in = scheduler.scale_model_input(x, t)
        pred = model_output(model, x_in, torch.full((shape[0],), ti, device=device, dtype=torch.long)).float()
        lam = eps_scale + eps_scale_k * ti
        pred = epsilon_scaling(pred, x_in, float(abar[ti]), lam, prediction_type)
        if sampler == "ddpm":
            # DDPMScheduler draws its own z with our generator (on the CPU, then moved).
            x = scheduler.step(pred, t, x, generator=generator).prev_sample
        elif sampler == "ddim":
            noise = torch.randn(shape, generator=generator).to(device) if eta > 0 else None
            x = scheduler.step(pred, t, x, eta=eta, variance_noise=noise).prev_sample
        else:
            x = scheduler.step(pred, t, x).prev_sample
    return x.float()


def sample_at_steps(model: nn.Module, train_scheduler, steps: Sequence[int], shape: Sequence[int],
                    sampler: str = "ddim", seed: int = 0, **kwargs) -> dict[int, torch.Tensor]:
    """``{num_steps: samples}`` for every step count, each drawn from ``Generator().manual_seed(seed)``
    (the same x_T for every step count, so differences come from the step count alone)."""
    steps = [check_steps(s, train_scheduler) for s in steps]
    check_sampler(sampler)
    return {s: sample(model, train_scheduler, s, shape, sampler=sampler,
                      generator=torch.Generator().manual_seed(int(seed)), **kwargs) for s in steps}

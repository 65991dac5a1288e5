"""Input-perturbation (IP) diffusion training: DDPM-IP / ADM-IP (Ning et al. 2023, forever208/DDPM-IP).

Exposure bias in diffusion: at sampling time the network sees x_t built from its *own* earlier
predictions, which sit off the forward-process marginal it was trained on. IP widens the training
inputs so those errors land inside the training distribution, while the target stays correct:

    x_t    = sqrt(abar_t) x_0 + sqrt(1 - abar_t) (eps + gamma xi),    eps, xi ~ N(0, I), xi fresh
    target = eps                                   (prediction_type="epsilon")
           = v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0   ("v_prediction", from the unperturbed eps)
           = x_0                                   ("sample")

gamma = 0 is standard DDPM training; gamma is constant over t (0.1 in Ning et al.'s README and in
diffusers' ``--input_perturbation``, "recommended 0.1"; > 0.2 is reported to hurt). Sampling is
unchanged. The same construction appears in Ning et al.'s ``training_losses``
(``new_noise = noise + gamma * randn_like(noise)``, ``q_sample(x_start, t, noise=new_noise)``) and
in diffusers' ``examples/text_to_image/train_text_to_image.py``.

:func:`perturbed_noising` is the one implementation of the formula above in latentar; it depends
only on a diffusers scheduler (``add_noise`` for x_t, ``get_velocity`` for v), so every diffusion
trainer (this module's :class:`IPDiffusionTrainer`, the per-token ``DiffusionHead``,
``JointDiffusion``) can share it.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from latentar.diffusion.sampling import PREDICTION_TYPES, model_output, sample, schedule_length
from latentar.torch_utils import draw_device

_BATCH_KEYS = ("x", "image", "images", "latents", "z")


class NoisedBatch(NamedTuple):
    """One training draw: the network input ``x_t`` and what it regresses, both shaped like x_0."""
    x_t: torch.Tensor
    target: torch.Tensor


def check_gamma(gamma: Any, where: str = "gamma") -> float:
    """gamma as a float, or a clear error unless it is a finite number >= 0."""
    try:
        value = float(gamma)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where} must be a number >= 0 (0.1 in Ning et al.), got {gamma!r}") from e
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be a finite number >= 0 (0 = plain DDPM training, 0.1 is Ning et al.'s "
                         f"default, > 0.2 is reported to hurt), got {gamma!r}")
    return value



def perturbed_noising(scheduler, x0: torch.Tensor, timesteps: torch.Tensor, gamma: float,
                      noise: torch.Tensor | None = None, xi: torch.Tensor | None = None,
                      generator: torch.Generator | None = None,
                      prediction_type: str | None = None, validate: bool = True) -> NoisedBatch:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) (eps + gamma xi) and the unperturbed target (module docstring).

    Args:
        scheduler: a diffusers scheduler (DDPMScheduler, DDIMScheduler, ...): abar_t, ``add_noise``
            and ``get_velocity`` come from it.
        x0: clean data ``(B, ...)``: images ``(B, C, H, W)``, tokens ``(B*T, D)``, any rank.
        timesteps: ``(B,)`` integer training timesteps in ``[0, T-1]``.
        gamma: input-perturbation strength >= 0. With gamma = 0 no xi is drawn and x_t is exactly
            ``scheduler.add_noise(x0, noise, timesteps)``.
        noise: eps, shaped like x0; drawn from ``generator`` when None.
        xi: the perturbation, shaped like x0; drawn (after eps) from ``generator`` when None and gamma > 0.
        prediction_type: "epsilon" | "v_prediction" | "sample"; None -> the scheduler's own.
        validate: check that timesteps lie in ``[0, T-1]``. That check reads them on the host (a
            device sync on GPU), so training loops that draw t themselves from ``randint(0, T)``
            pass False; every other check (shapes, dtypes, gamma) is metadata-only and always runs.

    Returns:
        ``NoisedBatch(x_t, target)``, both shaped like x0.
    """
    gamma = check_gamma(gamma)
    T = schedule_length(scheduler)
    prediction_type = scheduler.config.get("prediction_type", "epsilon") if prediction_type is None else prediction_type
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    if not torch.is_tensor(x0) or not x0.is_floating_point() or x0.dim() < 1:
        raise TypeError(f"x0 must be a floating-point tensor (B, ...), got {getattr(x0, 'shape', type(x0).__name__)}")
    if not torch.is_tensor(timesteps) or timesteps.dim() != 1 or timesteps.shape[0] != x0.shape[0]:
        raise ValueError(f"timesteps must be a 1-D tensor with one entry per example ({x0.shape[0]}), "
                         f"got {getattr(timesteps, 'shape', type(timesteps).__name__)}")
    if timesteps.is_floating_point() or timesteps.is_complex():
        raise TypeError(f"timesteps must be integers in [0, {T - 1}], got dtype {timesteps.dtype}")
    if validate and timesteps.numel() and (int(timesteps.min()) < 0 or int(timesteps.max()) >= T):
        raise ValueError(f"timesteps must lie in [0, {T - 1}] (num_train_timesteps={T}), got "
                         f"[{int(timesteps.min())}, {int(timesteps.max())}]")

    def draw(given: torch.Tensor | None, name: str) -> torch.Tensor:
        if given is None:
            return torch.randn(x0.shape, generator=generator, device=draw_device(generator, x0.device),
                               dtype=x0.dtype).to(x0.device)
        if given.shape != x0.shape:
            raise ValueError(f"{name} must have the shape of x0 {tuple(x0.shape)}, got {tuple(given.shape)}")
        return given.to(device=x0.device, dtype=x0.dtype)

    eps = draw(noise, "noise")
    noise_in = eps if gamma == 0 else eps + gamma * draw(xi, "xi")
    x_t = scheduler.add_noise(x0, noise_in, timesteps)
    if prediction_type == "epsilon":
        target = eps
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(x0, eps, timesteps)
    else:
        target = x0
    return NoisedBatch(x_t, target)



def batch_tensor(batch: Any) -> torch.Tensor:
    """The data of a DataLoader batch: a tensor, the first item of ``(data, labels)``, or a dict entry."""
    if torch.is_tensor(batch):
        return batch
    if isinstance(batch, (tuple, list)) and batch and torch.is_tensor(batch[0]):
        return batch[0]
    if isinstance(batch, dict):
        for k in _BATCH_KEYS:
            if k in batch:
                return batch[k]
        raise KeyError(f"batch dict has none of the keys {_BATCH_KEYS}: {sorted(batch)}")
    raise TypeError(f"cannot find the data in a batch of type {type(batch).__name__}; "
                    "yield tensors (B, C, H, W) or (tensor, label) pairs")


class IPDiffusionTrainer(nn.Module):
    """A diffusion training task for the shared ``Trainer``, with input perturbation gamma.

    ``training_step(batch)``: t ~ U{0..T-1}, eps ~ N(0, I), (x_t, target) = ``perturbed_noising``,
    loss = mean (model(x_t, t) - target)^2. ``sample`` runs DDPM, DDIM or DPM-Solver++ from the
    same schedule through the shared ``reverse_diffusion`` loop (``latentar.diffusion.sampling``).

    Args:
        model: the denoiser ``model(x_t (B, ...), t (B,)) -> (B, ...)``: a diffusers ``UNet2DModel``
            (whose ``.sample`` output is unwrapped) or any module predicting eps (or v / x0).
        scheduler: a diffusers scheduler that defines the training schedule (``DDPMScheduler``).
        gamma: input-perturbation strength >= 0; 0.1 by default (Ning et al.), 0 = standard DDPM.
        prediction_type: None -> the scheduler's; otherwise the scheduler is rebuilt from its config
            with this prediction type, so training and sampling agree.
        sample_shape: ``(C, H, W)`` of one sample; None -> read from a diffusers model's config
            (``in_channels``, ``sample_size``).

    Example::

        unet = build_unet("small", in_channels=1, sample_size=8)
        task = IPDiffusionTrainer(unet, DDPMScheduler(timestep_spacing="trailing"), gamma=0.1)
        Trainer(max_steps=1000, batch_size=128, lr=2e-3).fit(task, DigitsDataset("train"))
        images = task.sample(256, num_steps=20, sampler="ddim", generator=torch.Generator().manual_seed(0))
    """

    def __init__(self, model: nn.Module, scheduler, gamma: float = 0.1, prediction_type: str | None = None,
                 sample_shape: tuple[int, ...] | None = None):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module denoiser model(x_t, t), got {type(model).__name__}")
        self.num_train_timesteps = schedule_length(scheduler)
        self.gamma = check_gamma(gamma, "IPDiffusionTrainer: gamma")
        own = scheduler.config.get("prediction_type", "epsilon")
        if prediction_type is None:
            prediction_type = own
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"IPDiffusionTrainer: prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if prediction_type != own:
            scheduler = type(scheduler).from_config(scheduler.config, prediction_type=prediction_type)
        self.prediction_type = prediction_type
        self.model = model
        self.scheduler = scheduler
        self._sample_shape = tuple(int(s) for s in sample_shape) if sample_shape is not None else None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one sample."""
        if self._sample_shape is not None:
            return self._sample_shape
        cfg = getattr(self.model, "config", None)
        if cfg is not None and "in_channels" in cfg and "sample_size" in cfg:
            size = cfg["sample_size"]
            h, w = (size, size) if isinstance(size, int) else tuple(size)
            return (int(cfg["in_channels"]), int(h), int(w))
        raise ValueError(f"cannot tell the sample shape of a {type(self.model).__name__}; "
                         "pass sample_shape=(C, H, W) to IPDiffusionTrainer")

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's prediction (eps, v or x0 per ``prediction_type``), shaped like x_t."""
        return model_output(self.model, x_t, t)

    def loss(self, x0: torch.Tensor, timesteps: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             xi: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar mean squared error; t, eps, xi are drawn from torch's global RNG unless given.

        Timesteps given by the caller are range-checked (a host read, once per call: the boundary);
        drawn ones are in range by construction, so the training path (``training_step``) reads
        nothing back from the device.
        """
        if not torch.is_tensor(x0) or not x0.is_floating_point():
            raise TypeError(f"x0 must be a floating-point tensor (B, ...), got {getattr(x0, 'dtype', type(x0).__name__)}")
        given = timesteps is not None
        if not given:
            timesteps = torch.randint(0, self.num_train_timesteps, (x0.shape[0],), device=x0.device)
        x_t, target = perturbed_noising(self.scheduler, x0, timesteps, self.gamma, noise=noise, xi=xi,
                                        prediction_type=self.prediction_type, validate=given)
        return F.mse_loss(self(x_t, timesteps).float(), target.float())

    def training_step(self, batch: Any) -> torch.Tensor:
        """Shared-Trainer hook: ``batch`` is data ``(B, C, H, W)``, ``(data, labels)`` or a dict."""
        return self.loss(batch_tensor(batch))

    @torch.no_grad()
    def sample(self, num_samples: int, num_steps: int, sampler: str = "ddim",
               generator: torch.Generator | None = None, eps_scale: float = 1.0, eps_scale_k: float = 0.0,
               eta: float = 0.0, batch_size: int = 512, temperature: float = 1.0,
               temperature_mode: str = "mar") -> torch.Tensor:
        """``num_samples`` samples ``(N, C, H, W)`` with ``num_steps`` steps of the shared loop
        (``sampling.sample`` -> ``reverse_diffusion``): ADM-ES ``eps_scale``, DDIM ``eta``, and
        temperature tau on the per-step noise only (``temperature_mode="mar"``, MAR's
        x_{t'} = mu + tau sigma_t z_t) or on x_T too ("start_and_steps")."""
        return sample(self.model, self.scheduler, num_steps, (num_samples, *self.sample_shape), sampler=sampler,
                      generator=generator, eps_scale=eps_scale, eps_scale_k=eps_scale_k, eta=eta,
                      batch_size=batch_size, temperature=temperature, temperature_mode=temperature_mode)

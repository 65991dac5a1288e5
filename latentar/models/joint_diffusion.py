"""JointDiffusion: a bidirectional Transformer that denoises all T latent positions at once.

What: the non-autoregressive control arm of the variance sweep (LatentLM Fig. 6 compares against
DiT). A DDPM (Ho et al. 2020) over whole latent sequences ``z (B, T, D)``:

    x_t   = sqrt(abar_t) z + sqrt(1 - abar_t) (eps + gamma * xi),   eps, xi ~ N(0, I)
    loss  = || f(x_t, t, y) - target ||^2,   target = eps (or v / z for the other parameterisations)

where gamma is ``input_perturbation`` (Ning et al. 2023, DDPM-IP; the target keeps the
unperturbed eps; gamma = 0 is plain DDPM). The network f is DiT-like: latents are projected to
d_model, a conditioning token c = emb(t) + emb(y) is prepended (in-context conditioning as in
DiT's variant and U-ViT's "everything as tokens"), the tokens go through a bidirectional
``CausalTransformer(causal=False)`` and a DiT final layer (LayerNorm modulated by c, AdaLN,
then a zero-initialised linear) reads the prediction off positions 1..T.

x_t and the target come from ``latentar.diffusion.input_perturbation.perturbed_noising``, the one
implementation of that formula. The noise schedule and ``add_noise`` are a diffusers DDPMScheduler
with ``clip_sample=False`` (latents are not in [-1, 1]); ``generate`` runs the shared loop
``latentar.diffusion.sampling.reverse_diffusion`` on a scheduler built from that training config by
``make_sampling_scheduler`` (DDPM by default with 50 steps, as the DiffusionHead and MAR; DDIM,
DPM-Solver++). Temperature follows MAR by default: x_T ~ N(0, I) unscaled,
x_{t-1} = mu_theta(x_t, t) + tau sigma_t z_t (``temperature_mode="mar"``; "start_and_steps" also
scales x_T); see that module for the source line and the timestep-spacing rule.
Classifier-free guidance mixes the model outputs of the conditional and null-class branches:
out = out_uncond + s * (out_cond - out_uncond). A sample is never fed back as context.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.models.embeddings import TimestepEmbedding, Timesteps

from latentar.diffusion.input_perturbation import perturbed_noising
from latentar.diffusion.sampling import (DEFAULT_NUM_STEPS, DEFAULT_SAMPLER, PREDICTION_TYPES, TIMESTEP_SPACINGS,
                                         classifier_free_guidance, make_sampling_scheduler, reverse_diffusion)
from latentar.heads.base import check_guidance
from latentar.models.transformer import CausalTransformer
from latentar.pretrained import PretrainedMixin, register_to_config
from latentar.torch_utils import eval_mode, latent_batch

TIME_FREQ_DIM = 256  # sinusoidal timestep features before the MLP (DiT's frequency_embedding_size)


class JointDiffusion(PretrainedMixin):
    """DiT-like denoiser over whole latent sequences ``(B, T, latent_dim)``.

    Args:
        latent_dim, d_model, depth, num_heads, max_len: latent channels, Transformer width / depth /
            heads, longest sequence T.
        num_classes, class_dropout: class conditioning with a null class ``num_classes`` for CFG;
            labels are dropped to it with probability ``class_dropout`` in training.
        num_train_timesteps, beta_schedule, prediction_type: the diffusers DDPMScheduler.
        input_perturbation: gamma of DDPM-IP (Ning et al. 2023); 0 disables it, 0.1 is the paper's default.
        timestep_spacing: diffusers' spacing of the sampling timesteps, "leading" (default) |
            "trailing" | "linspace". The rule (``latentar.diffusion.sampling`` docstring): with the
            capped cosine schedule and eps-prediction keep "leading" (trailing / linspace start at
            abar ~ 2e-9 and a weak eps model blows up); with v-prediction "trailing" is safe.
        mlp_ratio, dropout, pos: the Transformer blocks.
    """

    @register_to_config
    def __init__(self, latent_dim: int, d_model: int = 128, depth: int = 4, num_heads: int = 4, max_len: int = 64,
                 num_classes: int = 0, class_dropout: float = 0.1, num_train_timesteps: int = 1000,
                 beta_schedule: str = "squaredcos_cap_v2", prediction_type: str = "epsilon",
                 input_perturbation: float = 0.0, timestep_spacing: str = "leading", mlp_ratio: float = 4.0,
                 dropout: float = 0.0, pos: str = "rope"):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}")
        if not 0.0 <= class_dropout < 1.0:
            raise ValueError(f"class_dropout must be in [0, 1), got {class_dropout}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}")
        if input_perturbation < 0:
            raise ValueError(f"input_perturbation (gamma) must be >= 0, got {input_perturbation}; 0.1 is the usual value")
        self.latent_dim, self.max_len = latent_dim, max_len
        self.num_classes, self.class_dropout, self.null_class = num_classes, class_dropout, num_classes
        self.input_perturbation = input_perturbation
        # The training schedule; every sampling scheduler is built from its config.
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                                             prediction_type=prediction_type, clip_sample=False, thresholding=False,
                                             variance_type="fixed_small", timestep_spacing=timestep_spacing)

        self.in_proj = nn.Linear(latent_dim, d_model)
        self.time_proj = Timesteps(TIME_FREQ_DIM, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_emb = TimestepEmbedding(TIME_FREQ_DIM, d_model)
        if num_classes > 0:
            self.class_emb = nn.Embedding(num_classes + 1, d_model)
            nn.init.normal_(self.class_emb.weight, std=0.02)
        self.backbone = CausalTransformer(d_model, depth, num_heads, max_len + 1, mlp_ratio=mlp_ratio,
                                          dropout=dropout, pos=pos, causal=False)
        # DiT final layer: LN without affine, modulated by (shift, scale) from c, then a zero-init linear.
        self.norm_out = nn.LayerNorm(d_model, elementwise_affine=False)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 2 * d_model))
        self.out = nn.Linear(d_model, latent_dim)
        for m in (self.ada_out[1], self.out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ network
    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Model output ``(B, T, D)`` (eps, v or x0 per ``prediction_type``) for noisy latents ``x_t (B, T, D)``.

        ``timesteps``: ``(B,)`` or a scalar; ``labels``: ``(B,)`` (None = null class / unconditional).
        """
        self._check_latents(x_t, "x_t")
        B = x_t.shape[0]
        timesteps = torch.as_tensor(timesteps, device=x_t.device)
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(B)
        if timesteps.shape != (B,):
            raise ValueError(f"timesteps must be a scalar or shape ({B},), got {tuple(timesteps.shape)}")
        c = self.time_emb(self.time_proj(timesteps).to(x_t.dtype))  # (B, d)
        if self.num_classes > 0:
            c = c + self.class_emb(self._labels(labels, B, x_t.device))
        elif labels is not None:
            raise ValueError("labels were given to an unconditional JointDiffusion (num_classes=0); pass labels=None")
        h = self.backbone(torch.cat([c[:, None], self.in_proj(x_t)], dim=1))[:, 1:]  # (B, T, d)
        shift, scale = self.ada_out(c).chunk(2, dim=-1)  # (B, d) each
        return self.out(self.norm_out(h) * (1 + scale[:, None]) + shift[:, None])

    def _labels(self, labels: torch.Tensor | None, B: int, device: torch.device, values: bool = False) -> torch.Tensor:
        """Labels as a long tensor on ``device`` (None -> null class). Shape and dtype checks need no
        host read; ``values=True`` (the ``generate`` boundary) also range-checks them with one read.
        In training an out-of-range label fails at the class-embedding lookup."""
        if labels is None:
            return torch.full((B,), self.null_class, dtype=torch.long, device=device)
        labels = torch.as_tensor(labels, device=device)
        if labels.shape != (B,) or labels.dtype.is_floating_point:
            raise ValueError(f"labels must be an integer tensor of shape ({B},), got {labels.dtype} {tuple(labels.shape)}")
        if values and labels.numel() and (labels.min() < 0 or labels.max() > self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1} (or {self.null_class} = null class)")
        return labels.long()

    def _check_latents(self, z: torch.Tensor, name: str = "z") -> None:
        if not torch.is_tensor(z) or z.dim() != 3 or z.shape[-1] != self.latent_dim:
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ValueError(f"expected {name} of shape (B, T, {self.latent_dim}), got {shape}")
        if not 1 <= z.shape[1] <= self.max_len:
            raise ValueError(f"{name} has T={z.shape[1]} positions; this model handles 1..max_len={self.max_len}")

    # ------------------------------------------------------------------ training
    def loss(self, z: torch.Tensor, labels: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             timesteps: torch.Tensor | None = None, perturbation: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared error of the model output against eps (or v, or z), a scalar.

        ``noise`` eps, ``timesteps`` t ``(B,)`` and ``perturbation`` xi may be passed to make the loss
        deterministic; otherwise they are drawn from torch's global RNG in the order eps, t, xi (t
        uniform over the training steps). In training mode labels are dropped to the null class
        with probability ``class_dropout``. Given timesteps must be integers in [0, T-1]; drawn
        ones skip that range check (a host sync on GPU).
        """
        self._check_latents(z)
        B, N = z.shape[0], self.noise_scheduler.config.num_train_timesteps
        if self.num_classes == 0 and labels is not None:
            raise ValueError("labels were given to an unconditional JointDiffusion (num_classes=0); pass labels=None")
        if self.num_classes > 0:
            labels = self._labels(labels, B, z.device)
            if self.training and self.class_dropout > 0:
                drop = torch.rand(B, device=z.device) < self.class_dropout
                labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        # Drawn here rather than inside perturbed_noising to keep the RNG order eps, t, xi (and
        # randn_like's memory layout for non-contiguous z).
        eps = torch.randn_like(z) if noise is None else noise
        t = torch.randint(0, N, (B,), device=z.device) if timesteps is None else timesteps.to(z.device).long()
        if self.input_perturbation > 0 and perturbation is None:
            perturbation = torch.randn_like(z)
        x_t, target = perturbed_noising(self.noise_scheduler, z, t, self.input_perturbation, noise=eps,
                                        xi=perturbation, validate=timesteps is not None)
        return F.mse_loss(self(x_t, t, labels), target)

    def training_step(self, batch) -> torch.Tensor:
        """Shared-Trainer hook: ``batch`` is latents ``(B, T, D)``, ``(latents,)`` or ``(latents, labels)``."""
        x, labels = latent_batch(batch, "JointDiffusion", self.latent_dim)
        return self.loss(x, labels=labels if self.num_classes > 0 else None)

    # ------------------------------------------------------------------ sampling
    def make_sampler(self, sampler: str = DEFAULT_SAMPLER):
        """A fresh sampling scheduler: ``make_sampling_scheduler(self.noise_scheduler, sampler)``."""
        return make_sampling_scheduler(self.noise_scheduler, sampler)

    @torch.no_grad()
    def generate(self, batch_size: int, length: int, labels: torch.Tensor | None = None, cfg_scale: float = 1.0,
                 temperature: float = 1.0, num_steps: int = DEFAULT_NUM_STEPS, sampler: str = DEFAULT_SAMPLER,
                 generator: torch.Generator | None = None, eta: float = 0.0,
                 temperature_mode: str = "mar") -> torch.Tensor:
        """Sample ``(batch_size, length, D)`` by denoising all positions jointly in ``num_steps`` steps.

        The shared ``reverse_diffusion`` loop. ``temperature`` tau: ``temperature_mode="mar"``
        (default) keeps x_T ~ N(0, I) and scales the per-step noise, x_{t-1} = mu + tau sigma_t z_t;
        "start_and_steps" also scales x_T. ``eta``: DDIM's stochasticity. ``cfg_scale != 1`` runs
        conditional and null-class branches as one 2B batch. Runs in eval mode without grad.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 1 <= length <= self.max_len:
            raise ValueError(f"length={length} must be in 1..max_len={self.max_len}")
        N = self.noise_scheduler.config.num_train_timesteps
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= N:
            raise ValueError(f"num_steps must be an int in 1..{N} (the training steps), got {num_steps!r}")
        guided = check_guidance("JointDiffusion.generate", cfg_scale, temperature, labels, self.num_classes)
        if labels is not None and self.num_classes == 0:
            raise ValueError("labels were given to an unconditional JointDiffusion (num_classes=0); pass labels=None")
        device, dtype = self.in_proj.weight.device, self.in_proj.weight.dtype
        if self.num_classes > 0:
            labels = self._labels(labels, batch_size, device, values=True)
        if guided:
            pair = torch.cat([labels, torch.full_like(labels, self.null_class)])  # cond | null
            denoise = classifier_free_guidance(lambda x2, t2: self(x2, t2, pair), cfg_scale)
        else:
            denoise = lambda x, t: self(x, t, labels)  # noqa: E731
        with eval_mode(self):
            return reverse_diffusion(denoise, self.noise_scheduler, (batch_size, length, self.latent_dim),
                                     sampler=sampler, num_steps=num_steps, temperature=temperature,
                                     temperature_mode=temperature_mode, eta=eta, generator=generator,
                                     device=device, dtype=dtype)

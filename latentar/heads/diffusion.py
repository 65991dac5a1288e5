"""DiffusionHead: a small per-token denoiser conditioned on the backbone state (MAR, LatentLM, VibeVoice).

Process (DDPM, Ho et al. 2020), taken from diffusers rather than rewritten:

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,        eps ~ N(0, I),   t ~ U{0, ..., T-1}
    loss = || f(x_t, t, c) - y ||^2 / dim,   y = eps (prediction_type="epsilon")
                                             y = v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 ("v_prediction")

``DDPMScheduler.add_noise`` / ``get_velocity`` give x_t and v; 1000 steps, cosine
("squaredcos_cap_v2") schedule by default, ``clip_sample=False`` and no thresholding (latents are
not in [-1, 1]; MAR clips nothing).

``batch_mul`` (MAR's diffusion_batch_mul, LatentLM/VibeVoice's ddpm_batch_mul; 4 in all three
papers' commands) repeats every token that many times with independent (t, eps), and the
per-token loss is the mean over its copies: more noise levels per backbone pass for free.

Input perturbation (Ning et al. 2023, "DDPM-IP"; diffusers' ``--input_perturbation``), gamma:

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) (eps + gamma xi),   xi ~ N(0, I),   target still eps

(or v computed from the unperturbed eps). The formula lives once, in
``latentar.diffusion.input_perturbation.perturbed_noising``; ``add_noise``, ``training_target``
and ``noised`` are this head's views of it.

Network (MAR's SimpleMLPAdaLN; LatentLM / VibeVoice heads are the same shape): Linear(dim -> w)
input; condition y = Linear(cond_dim -> w)(c) + MLP(sinusoid_256(t)); ``depth`` residual blocks
x + gate * MLP(norm(x) * (1 + scale) + shift) with (shift, scale, gate) = Linear(SiLU(y)); a final
non-affine norm modulated by (shift, scale) then Linear(w -> dim). The AdaLN projections and the
output layer start at zero, so every block starts as the identity and the head predicts 0.

Sampling: the shared loop ``latentar.diffusion.sampling.reverse_diffusion`` (one loop for every
diffusion arm), on a scheduler from ``make_sampling_scheduler(self.noise_scheduler, sampler)``, so
sampling uses the training config (schedule, prediction type, no clipping, ``timestep_spacing``).
Default sampler "ddpm" with 50 steps (``DEFAULT_SAMPLER``, ``DEFAULT_NUM_STEPS``), as MAR and
JointDiffusion. Temperature tau, ``temperature_mode="mar"`` (default; MAR's ``p_sample``,
LTH14/mar ``diffusion/gaussian_diffusion.py`` line 419): x_T ~ N(0, I) unscaled and
x_{t-1} = mu_theta(x_t, t) + tau sigma_t z_t (ddpm; ddim with eta > 0 scales its eta sigma_t z_t);
ddim with eta = 0 and dpmsolver have no per-step noise, so tau != 1 raises there.
``temperature_mode="start_and_steps"`` (this head's old convention) also sets x_T = tau z_T.

Classifier-free guidance, ``cfg_scale = s``: per step the head is evaluated on the same x_t with
cond and with cond_uncond as one doubled batch and mixes f_u + s (f_c - f_u) (eps-level guidance,
as MAR, LatentLM and VibeVoice). For v-prediction the same mix on v equals the mix on eps, since
at fixed x_t the map eps -> v is affine with weights that sum to one.
"""
from __future__ import annotations

import math

import torch
from diffusers import DDPMScheduler
from torch import nn

from latentar.diffusion.input_perturbation import check_gamma, perturbed_noising
from latentar.diffusion.sampling import (DEFAULT_NUM_STEPS, DEFAULT_SAMPLER, PREDICTION_TYPES, SAMPLERS,
                                         TIMESTEP_SPACINGS, classifier_free_guidance, make_sampling_scheduler,
                                         reverse_diffusion)
from latentar.heads.base import Head
from latentar.pretrained import register_to_config
from latentar.torch_utils import draw_device

# x0-prediction ("sample") is left out: a per-token head regressing x0 is not what MAR / LatentLM train.
HEAD_PREDICTION_TYPES = tuple(p for p in PREDICTION_TYPES if p != "sample")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("mlp", "swiglu")


# ---------------------------------------------------------------------------- blocks
def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: (N,) -> (N, dim) (DiT / MAR)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
    return nn.RMSNorm(width, elementwise_affine=False, eps=1e-6)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x) with hidden width 3 * width (VibeVoice's head_ffn_ratio)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.w13 = nn.Linear(width, 2 * hidden)
        self.w2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w13(x).chunk(2, dim=-1)
        return self.w2(nn.functional.silu(a) * b)


class TimestepEmbedder(nn.Module):
    """t (N,) -> sinusoid_256(t) -> Linear -> SiLU -> Linear -> (N, width)."""

    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class AdaLNBlock(nn.Module):
    """x + gate * MLP(norm(x) * (1 + scale) + shift), (shift, scale, gate) = Linear(SiLU(y))."""

    def __init__(self, width: int, norm: str, mlp: str):
        super().__init__()
        self.norm = _norm(norm, width)
        if mlp == "mlp":
            self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        else:
            self.mlp = SwiGLU(width, 3 * width)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(y).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class FinalLayer(nn.Module):
    """Linear(norm(x) * (1 + scale) + shift) with (shift, scale) = Linear(SiLU(y)); all zero-init."""

    def __init__(self, width: int, out_dim: int, norm: str):
        super().__init__()
        self.norm = _norm(norm, width)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_dim)
        for layer in (self.ada[1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(y).chunk(2, dim=-1)
        return self.linear(self.norm(x) * (1 + scale) + shift)


class AdaLNDenoiser(nn.Module):
    """f(x_t, t, c): x_t (N, dim), t (N,), c (N, cond_dim) -> (N, dim)."""

    def __init__(self, dim: int, cond_dim: int, width: int, depth: int, norm: str, mlp: str):
        super().__init__()
        self.input_proj = nn.Linear(dim, width)
        self.cond_proj = nn.Linear(cond_dim, width)
        self.time_embed = TimestepEmbedder(width)
        self.blocks = nn.ModuleList(AdaLNBlock(width, norm, mlp) for _ in range(depth))
        self.final = FinalLayer(width, dim, norm)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.input_proj(x)
        y = self.time_embed(t) + self.cond_proj(c)
        for block in self.blocks:
            h = block(h, y)
        return self.final(h, y)


# ---------------------------------------------------------------------------- the head

class DiffusionHead(Head):
    """Per-token diffusion head. Formulas, sampler and temperature semantics: module docstring.

    Args:
        dim, cond_dim: token and backbone-state dimensions.
        width: denoiser width (default cond_dim). depth: number of AdaLN residual blocks.
        num_train_timesteps, beta_schedule: the diffusers noise schedule.
        prediction_type: "epsilon" or "v_prediction".
        batch_mul: noised copies per token in ``loss``.
        sampler: default sampler, "ddpm" | "ddim" | "dpmsolver"; num_sampling_steps: default steps.
        input_perturbation: gamma of DDPM-IP (0 disables; Ning et al. use 0.1).
        norm: "layernorm" (MAR) or "rmsnorm" (LatentLM, VibeVoice), both without affine weights.
        mlp: "mlp" (Linear-SiLU-Linear, MAR) or "swiglu" (3x hidden, LatentLM / VibeVoice).
        timestep_spacing: diffusers' spacing of the sampling timesteps, "leading" (default) |
            "trailing" | "linspace". The rule (``latentar.diffusion.sampling`` docstring): with the
            capped cosine schedule and eps-prediction keep "leading" (trailing / linspace start at
            abar ~ 2e-9 and a weak eps head blows up); with v-prediction "trailing" is safe.
    """

    @register_to_config
    def __init__(self, dim: int, cond_dim: int, width: int | None = None, depth: int = 3,
                 num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2",
                 prediction_type: str = "epsilon", batch_mul: int = 4, sampler: str = DEFAULT_SAMPLER,
                 num_sampling_steps: int = DEFAULT_NUM_STEPS, input_perturbation: float = 0.0,
                 norm: str = "layernorm", mlp: str = "mlp", timestep_spacing: str = "leading"):
        super().__init__(dim, cond_dim)
        width = cond_dim if width is None else width
        checks = [
            (isinstance(width, int) and width >= 1, f"width must be a positive int, got {width!r}"),
            (isinstance(depth, int) and depth >= 1, f"depth must be a positive int, got {depth!r}"),
            (isinstance(num_train_timesteps, int) and num_train_timesteps >= 2,
             f"num_train_timesteps must be an int >= 2, got {num_train_timesteps!r}"),
            (prediction_type in HEAD_PREDICTION_TYPES,
             f"prediction_type must be one of {HEAD_PREDICTION_TYPES}, got {prediction_type!r}"),
            (isinstance(batch_mul, int) and batch_mul >= 1, f"batch_mul must be a positive int, got {batch_mul!r}"),
            (sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}, got {sampler!r}"),
            (input_perturbation >= 0, f"input_perturbation must be >= 0, got {input_perturbation}"),
            (norm in NORMS, f"norm must be one of {NORMS}, got {norm!r}"),
            (mlp in MLPS, f"mlp must be one of {MLPS}, got {mlp!r}"),
            (timestep_spacing in TIMESTEP_SPACINGS,
             f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"DiffusionHead: {msg}")
        self.register_to_config(width=width)  # resolved: None -> cond_dim
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        self.batch_mul = batch_mul
        self.sampler = sampler
        self.input_perturbation = float(input_perturbation)
        self._check_steps(num_sampling_steps)
        self.num_sampling_steps = num_sampling_steps
        self.net = AdaLNDenoiser(dim, cond_dim, width, depth, norm, mlp)
        # The training schedule: add_noise / get_velocity here, and the config every sampling
        # scheduler is built from (no x0 clipping or thresholding: latents are not in [-1, 1]).
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                                             prediction_type=prediction_type, clip_sample=False, thresholding=False,
                                             variance_type="fixed_small", timestep_spacing=timestep_spacing)

    # ---------------------------------------------------------------- schedulers
    def make_scheduler(self, sampler: str | None = None):
        """A fresh sampling scheduler: ``make_sampling_scheduler(self.noise_scheduler, sampler)``."""
        return make_sampling_scheduler(self.noise_scheduler, self.sampler if sampler is None else sampler)

    def _check_steps(self, num_steps) -> None:
        if not isinstance(num_steps, int) or not 1 <= num_steps <= self.num_train_timesteps:
            raise ValueError(f"DiffusionHead: num_steps must be an int in [1, {self.num_train_timesteps}], got {num_steps!r}")

    # ---------------------------------------------------------------- training pieces
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, gamma: float | None = None,
                  xi: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) (noise + gamma xi): the x_t of ``perturbed_noising``.

        x0, noise, xi: (N, dim) (any shape whose first axis matches timesteps (N,) integers in [0, T-1]).
        gamma defaults to the head's ``input_perturbation``; xi is drawn from ``generator`` when
        gamma > 0 and it is not given. With gamma = 0 this is exactly diffusers' add_noise.
        """
        gamma = self.input_perturbation if gamma is None else check_gamma(gamma, "DiffusionHead.add_noise: gamma")
        return perturbed_noising(self.noise_scheduler, x0, timesteps, gamma, noise=noise, xi=xi, generator=generator,
                                 prediction_type=self.prediction_type).x_t

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the network regresses: the unperturbed eps, or v = get_velocity(x0, eps, t) (``perturbed_noising``)."""
        return perturbed_noising(self.noise_scheduler, x0, timesteps, 0.0, noise=noise,
                                 prediction_type=self.prediction_type).target

    def noised(self, x0: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training draw for clean tokens x0 (N, dim): (x_t (N, dim), t (N,) long, target (N, dim)).

        t ~ U{0..T-1}, then ``perturbed_noising`` draws eps and (gamma > 0) xi, in that order, from
        ``generator``: x_t = add_noise(x0, eps, t) (with input perturbation), target =
        training_target(x0, eps, t). This is the training hot path and t is drawn in range here,
        so the timestep range check (a host sync on GPU) is skipped.
        """
        t = torch.randint(0, self.num_train_timesteps, (x0.shape[0],), generator=generator,
                          device=draw_device(generator, x0.device)).to(x0.device)
        x_t, target = perturbed_noising(self.noise_scheduler, x0, t, self.input_perturbation, generator=generator,
                                        prediction_type=self.prediction_type, validate=False)
        return x_t, t, target

    def predict(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Network output (eps or v): x_t (N, dim), timesteps (N,), cond (N, cond_dim) -> (N, dim)."""
        return self.net(x_t, timesteps, cond)

    def loss(self, cond: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-token diffusion loss: cond (B, T, cond_dim), target (B, T, dim) -> (B, T).

        Each token is repeated ``batch_mul`` times (row j*N + i is copy j of token i), each copy
        gets its own t and eps; the loss is mean_d (f - y)^2, averaged over the copies.
        """
        c, lead = self._flatten_cond(cond)
        x0 = self._flatten_target(target, lead).to(c.dtype)
        n, m = x0.shape[0], self.batch_mul
        x0 = x0.repeat(m, 1)                                     # (m*N, dim)
        c = c.repeat(m, 1)                                       # (m*N, cond_dim)
        x_t, t, y = self.noised(x0, generator=generator)
        out = self.predict(x_t, t, c)
        per = (out.float() - y.float()).pow(2).mean(-1)          # (m*N,)
        return per.view(m, n).mean(0).reshape(lead)

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, cond: torch.Tensor, temperature: float = 1.0, num_steps: int | None = None,
               sampler: str | None = None, generator: torch.Generator | None = None,
               cond_uncond: torch.Tensor | None = None, cfg_scale: float = 1.0, eta: float = 0.0,
               temperature_mode: str = "mar") -> torch.Tensor:
        """Reverse diffusion per token: cond (B, T, cond_dim) -> (B, T, dim), via ``reverse_diffusion``.

        ``temperature`` tau: with ``temperature_mode="mar"`` (default) x_T ~ N(0, I) and
        x_{t-1} = mu_theta(x_t, t) + tau sigma_t z_t (MAR); "start_and_steps" also scales x_T.
        ``eta`` is DDIM's stochasticity (ignored by the other samplers). ``cond_uncond`` and
        ``cfg_scale`` != 1: eps-level CFG on a doubled batch. Without a generator one is seeded
        from torch's global RNG, so ``torch.manual_seed`` still makes sampling reproducible.
        """
        self._check_temperature("temperature", temperature)
        sampler = self.sampler if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"DiffusionHead.sample: sampler must be one of {SAMPLERS}, got {sampler!r}")
        num_steps = self.num_sampling_steps if num_steps is None else num_steps
        self._check_steps(num_steps)
        if not eta >= 0:
            raise ValueError(f"DiffusionHead.sample: eta must be >= 0, got {eta}")
        c, lead = self._flatten_cond(cond)
        u = self._flatten_uncond(cond, cond_uncond, cfg_scale)
        param = next(self.parameters())
        device, dtype = param.device, param.dtype
        c = c.to(dtype)
        if u is None:
            denoise = lambda x, t: self.predict(x, t, c)  # noqa: E731
        else:
            c2 = torch.cat([c, u.to(dtype)], dim=0)
            denoise = classifier_free_guidance(lambda x2, t2: self.predict(x2, t2, c2), cfg_scale)
        x = reverse_diffusion(denoise, self.noise_scheduler, (c.shape[0], self.dim), sampler=sampler,
                              num_steps=num_steps, temperature=temperature, temperature_mode=temperature_mode,
                              eta=eta, generator=generator, device=device, dtype=dtype)
        return x.reshape(*lead, self.dim)

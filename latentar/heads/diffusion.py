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

Sampling (a fresh diffusers scheduler per call, since multistep schedulers keep state), with
``temperature`` tau:

* ``"ddpm"``  DDPMScheduler (ancestral, fixed_small variance): x_T = tau z_T and every step
  x_{t-1} = mu_theta(x_t, t) + tau sigma_t z_t. This is MAR's temperature on the per-step noise
  (MAR leaves x_T unscaled), plus a scaled start.
* ``"ddim"``  DDIMScheduler(eta): x_T = tau z_T; with eta > 0 the per-step noise
  eta sigma_t z_t is scaled by tau too; eta = 0 (default) is deterministic after x_T.
* ``"dpmsolver"``  DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2): an
  ODE solver with no per-step noise, so tau only scales x_T.

Classifier-free guidance, ``cfg_scale = s``: per step the head is evaluated on the same x_t with
cond and with cond_uncond and mixes f_u + s (f_c - f_u) (eps-level guidance, as MAR, LatentLM
and VibeVoice). For v-prediction the same mix on v equals the mix on eps, since at fixed x_t the
map eps -> v is affine with weights that sum to one.
"""
from __future__ import annotations

import math

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import nn

from latentar.diffusion.input_perturbation import check_gamma, perturbed_noising
from latentar.heads.base import Head

PREDICTION_TYPES = ("epsilon", "v_prediction")
SAMPLERS = ("ddpm", "ddim", "dpmsolver")
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

def make_latent_scheduler(sampler: str, num_train_timesteps: int, beta_schedule: str, prediction_type: str,
                          timestep_spacing: str):
    """A fresh diffusers sampling scheduler for latents: no x0 clipping or thresholding (MAR clips
    nothing), DDPM with the posterior variance, DDIM ending at alpha = 1, DPM-Solver++ order 2.
    Fresh per sampling call, since multistep schedulers keep state."""
    common = dict(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                  prediction_type=prediction_type, thresholding=False, timestep_spacing=timestep_spacing)
    if sampler == "ddpm":
        return DDPMScheduler(**common, clip_sample=False, variance_type="fixed_small")
    if sampler == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)
    if sampler == "dpmsolver":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")

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
        timestep_spacing: diffusers' spacing of the sampling timesteps. "leading" (default)
            starts at (n - 1) * (T // n), e.g. t = 980 for 50 steps. "trailing" / "linspace"
            start at T - 1, where the capped cosine schedule has abar ~ 2e-9: an eps-prediction
            error there is amplified by ~sqrt(abar_next / abar_{T-1}) (hundreds) in x_{T-1}; a
            small head then samples garbage (we measured FD ~1e6 on the ring test). Use
            "trailing" with prediction_type="v_prediction", which has no 1/sqrt(abar) factor.
    """

    def __init__(self, dim: int, cond_dim: int, width: int | None = None, depth: int = 3,
                 num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2",
                 prediction_type: str = "epsilon", batch_mul: int = 4, sampler: str = "ddpm",
                 num_sampling_steps: int = 50, input_perturbation: float = 0.0,
                 norm: str = "layernorm", mlp: str = "mlp", timestep_spacing: str = "leading"):
        super().__init__(dim, cond_dim)
        width = cond_dim if width is None else width
        checks = [
            (isinstance(width, int) and width >= 1, f"width must be a positive int, got {width!r}"),
            (isinstance(depth, int) and depth >= 1, f"depth must be a positive int, got {depth!r}"),
            (isinstance(num_train_timesteps, int) and num_train_timesteps >= 2,
             f"num_train_timesteps must be an int >= 2, got {num_train_timesteps!r}"),
            (prediction_type in PREDICTION_TYPES, f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"),
            (isinstance(batch_mul, int) and batch_mul >= 1, f"batch_mul must be a positive int, got {batch_mul!r}"),
            (sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}, got {sampler!r}"),
            (input_perturbation >= 0, f"input_perturbation must be >= 0, got {input_perturbation}"),
            (norm in NORMS, f"norm must be one of {NORMS}, got {norm!r}"),
            (mlp in MLPS, f"mlp must be one of {MLPS}, got {mlp!r}"),
            (timestep_spacing in ("linspace", "leading", "trailing"),
             f"timestep_spacing must be 'linspace', 'leading' or 'trailing', got {timestep_spacing!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"DiffusionHead: {msg}")
        self.config = dict(dim=dim, cond_dim=cond_dim, width=width, depth=depth,
                           num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                           prediction_type=prediction_type, batch_mul=batch_mul, sampler=sampler,
                           num_sampling_steps=num_sampling_steps, input_perturbation=input_perturbation,
                           norm=norm, mlp=mlp, timestep_spacing=timestep_spacing)
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        self.batch_mul = batch_mul
        self.sampler = sampler
        self.input_perturbation = float(input_perturbation)
        self._check_steps(num_sampling_steps)
        self.num_sampling_steps = num_sampling_steps
        self.net = AdaLNDenoiser(dim, cond_dim, width, depth, norm, mlp)
        # Stateless use only (add_noise, get_velocity); sampling builds its own instance.
        self.noise_scheduler = self.make_scheduler("ddpm")

    # ---------------------------------------------------------------- schedulers
    def make_scheduler(self, sampler: str | None = None):
        """A fresh diffusers scheduler for ``sampler`` on this head's schedule (no clipping)."""
        return make_latent_scheduler(self.sampler if sampler is None else sampler, self.num_train_timesteps,
                                     self.config["beta_schedule"], self.prediction_type, self.config["timestep_spacing"])

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
        t = torch.randint(0, self.num_train_timesteps, (x0.shape[0],), generator=generator, device=x0.device)
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
               cond_uncond: torch.Tensor | None = None, cfg_scale: float = 1.0, eta: float = 0.0) -> torch.Tensor:
        """Reverse diffusion per token: cond (B, T, cond_dim) -> (B, T, dim).

        ``temperature`` scales x_T and (ddpm; ddim with eta > 0) the per-step noise; see the
        module docstring. ``eta`` is DDIM's stochasticity (ignored by the other samplers).
        Without a generator one is seeded from torch's global RNG, so ``torch.manual_seed``
        still makes sampling reproducible.
        """
        self._check_temperature("temperature", temperature)
        sampler = self.sampler if sampler is None else sampler
        num_steps = self.num_sampling_steps if num_steps is None else num_steps
        self._check_steps(num_steps)
        if not eta >= 0:
            raise ValueError(f"DiffusionHead.sample: eta must be >= 0, got {eta}")
        c, lead = self._flatten_cond(cond)
        u = self._flatten_uncond(cond, cond_uncond, cfg_scale)
        scheduler = self.make_scheduler(sampler)
        scheduler.set_timesteps(num_steps)
        param = next(self.parameters())
        device, dtype = param.device, param.dtype
        c = c.to(dtype)
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        n = c.shape[0]
        x = torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)
        x = x * (scheduler.init_noise_sigma * temperature)
        if u is not None:
            c2 = torch.cat([c, u.to(dtype)], dim=0)
        for t in scheduler.timesteps:
            if u is None:
                out = self.predict(x, torch.full((n,), int(t), device=device), c)
            else:
                both = self.predict(torch.cat([x, x], dim=0), torch.full((2 * n,), int(t), device=device), c2)
                out_c, out_u = both.chunk(2, dim=0)
                out = out_u + cfg_scale * (out_c - out_u)
            x = self._step(scheduler, sampler, out.to(dtype), t, x, temperature, generator, eta).to(dtype)
        return x.reshape(*lead, self.dim)

    @staticmethod
    def _step(scheduler, sampler, out, t, x, temperature, generator, eta) -> torch.Tensor:
        if sampler == "ddpm":
            if temperature == 1.0:
                return scheduler.step(out, t, x, generator=generator).prev_sample
            # DDPMScheduler.step draws its own z; its noise term sigma_t z is what a step on zero
            # inputs returns (the mean is linear in (model output, x_t)). Replay the same z
            # from a copy of the generator and rescale that term by tau.
            twin = torch.Generator(device=generator.device)
            twin.set_state(generator.get_state())
            full = scheduler.step(out, t, x, generator=generator).prev_sample
            noise_term = scheduler.step(torch.zeros_like(out), t, torch.zeros_like(x), generator=twin).prev_sample
            return full + (temperature - 1.0) * noise_term
        if sampler == "ddim":
            noise = None
            if eta > 0:
                noise = temperature * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return scheduler.step(out, t, x, eta=eta, variance_noise=noise).prev_sample
        return scheduler.step(out, t, x).prev_sample

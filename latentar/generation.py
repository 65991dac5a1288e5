"""Train a generator on tokenizer latents, sample, decode, score: the steps every latent recipe shares.

    latents = encode_for_ar(tokenizer, images, labels, draws=4, seed=7)
    model = build_generator("gmm", latents.dim, latents.length, num_classes=10)
    Trainer(...).fit(model, latents.dataset())
    result = sample_and_score(model, tokenizer, domain, latents, num_samples=400, cfg_scale=3.0, seed=0)

The AR model trains on posterior samples ``mu + s * eps`` (LatentLM's choice; ``draws`` fresh
draws per example, seeded) unless the tokenizer says ``sample_for_training=False``; sequences are
the tokenizer's raster order (``to_sequence``), decoded back with ``from_sequence``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

GENERATORS = ("gmm", "diffusion", "mse", "joint")


@dataclass
class LatentSequences:
    z: torch.Tensor                 # (N * draws, T, D)
    labels: torch.Tensor | None     # (N * draws,)
    grid: tuple[int, ...]           # latent grid (h, w) for images, (T,) for audio
    data_length: int                # samples per clip (audio) or image width, for decoding

    @property
    def length(self) -> int:
        return self.z.shape[1]

    @property
    def dim(self) -> int:
        return self.z.shape[2]

    def dataset(self) -> TensorDataset:
        return TensorDataset(self.z, self.labels) if self.labels is not None else TensorDataset(self.z)


@torch.no_grad()
def encode_posterior_batched(tokenizer, x: torch.Tensor, batch_size: int = 512
                             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``tokenizer.encode_posterior(x)`` in batches: (mu, logvar or None), each ``(N, latent_dim, *grid)``."""
    parts = [tokenizer.encode_posterior(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    mu = torch.cat([m for m, _ in parts])
    logvar = None if parts[0][1] is None else torch.cat([lv for _, lv in parts])
    return mu, logvar


@torch.no_grad()
def encode_for_ar(tokenizer, x: torch.Tensor, labels: torch.Tensor | None = None, draws: int = 1,
                  seed: int = 7, batch_size: int = 512) -> LatentSequences:
    """Encode ``x`` into AR training sequences: ``draws`` draws of ``tokenizer.ar_latents`` per
    example (posterior samples, or the means for an AE / ``sample_for_training=False``), seeded.
    SigmaVAE, VAE and AE all go through the same call."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    tokenizer = tokenizer.eval()
    g = torch.Generator().manual_seed(seed)
    posterior = encode_posterior_batched(tokenizer, x, batch_size)
    seqs = [tokenizer.to_sequence(tokenizer.ar_latents(posterior=posterior, generator=g)) for _ in range(draws)]
    return LatentSequences(torch.cat(seqs), None if labels is None else labels.repeat(draws),
                           tuple(posterior[0].shape[2:]), x.shape[-1])


def build_generator(kind: str, latent_dim: int, length: int, num_classes: int = 0, d_model: int = 128,
                    depth: int = 4, num_heads: int = 4, sampling_steps: int = 50, diffusion_batch_mul: int = 4,
                    diffusion_kwargs: dict[str, Any] | None = None, **kw):
    """``gmm`` / ``diffusion`` / ``mse``: LatentAR with that head; ``joint``: the non-AR JointDiffusion
    control with the same width and depth. ``diffusion_batch_mul``: noised copies of each token per
    training step for the diffusion head (MAR's ``diffusion_batch_mul``); ``diffusion_kwargs``: the
    diffusion process of either diffusion arm (e.g. ``prediction_type``, ``timestep_spacing``)."""
    from latentar.models import JointDiffusion, LatentAR
    common = dict(d_model=d_model, depth=depth, num_heads=num_heads, max_len=length, num_classes=num_classes, **kw)
    diffusion_kwargs = dict(diffusion_kwargs or {})
    if kind == "joint":
        return JointDiffusion(latent_dim=latent_dim, **common, **diffusion_kwargs)
    if kind not in GENERATORS:
        raise ValueError(f"unknown generator {kind!r}; choose from {', '.join(GENERATORS)}")
    head_kwargs = ({"num_sampling_steps": sampling_steps, "batch_mul": diffusion_batch_mul, **diffusion_kwargs}
                   if kind == "diffusion" else {})
    return LatentAR(latent_dim=latent_dim, head=kind, head_kwargs=head_kwargs, **common)


@dataclass(frozen=True)
class SamplingConfig:
    """How every arm of a comparison is sampled: one setting, so arms differ only in what they learned.

    ``sampler`` ("ddpm" | "ddim" | "dpmsolver", ``latentar.diffusion.sampling``) and ``num_steps``
    apply to every diffusion arm (LatentAR's diffusion head, JointDiffusion); ``temperature``
    applies to every arm (the GMM head's component scales, the diffusion arms' per-step noise).
    ``row()`` is what a results table records of it.
    """

    sampler: str = "ddpm"   # latentar.diffusion.sampling.DEFAULT_SAMPLER
    num_steps: int = 50     # latentar.diffusion.sampling.DEFAULT_NUM_STEPS
    temperature: float = 1.0

    def __post_init__(self):
        from latentar.diffusion.sampling import check_sampler, check_temperature
        check_sampler(self.sampler)
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"num_steps (sampling steps) must be a positive integer, got {self.num_steps!r}")
        # MAR's convention (tau scales the per-step noise only); tau != 1 with a noiseless sampler is refused
        check_temperature(self.temperature, "mar", self.sampler, eta=0.0)

    def kwargs(self, model) -> dict[str, Any]:
        """Keyword arguments for ``model.generate`` / ``predict_parallel``: the temperature, plus the
        sampler and step count for a model that samples by reverse diffusion."""
        kw: dict[str, Any] = {"temperature": self.temperature}
        if samples_by_diffusion(model):
            kw.update(sampler=self.sampler, num_steps=self.num_steps)
        return kw

    def row(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "sampling_steps": self.num_steps, "temperature": self.temperature}


def samples_by_diffusion(model) -> bool:
    """True for JointDiffusion and for a LatentAR whose head is a DiffusionHead."""
    from latentar.heads import DiffusionHead
    from latentar.models import JointDiffusion
    return isinstance(model, JointDiffusion) or isinstance(getattr(model, "head", None), DiffusionHead)


@torch.no_grad()
def generate_latents(model, num_samples: int, length: int, labels: torch.Tensor | None = None,
                     cfg_scale: float = 1.0, seed: int = 0, sampling: SamplingConfig | None = None,
                     batch_size: int = 500) -> torch.Tensor:
    """Seeded sampling in batches, every model with the same ``sampling`` setting."""
    sampling = SamplingConfig() if sampling is None else sampling
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for i in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - i)
        kw: dict[str, Any] = dict(cfg_scale=cfg_scale, generator=g, **sampling.kwargs(model))
        if labels is not None:
            kw["labels"] = labels[i:i + n].to(device)
        out.append(model.generate(n, length, **kw).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def decode_sequences(tokenizer, seq: torch.Tensor, latents: LatentSequences, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([tokenizer.decode(tokenizer.from_sequence(seq[i:i + batch_size], latents.grid),
                                       length=latents.data_length) for i in range(0, len(seq), batch_size)])


def sample_and_score(model, tokenizer, domain, latents: LatentSequences, num_samples: int, cfg_scale: float = 1.0,
                     seed: int = 0, sampling: SamplingConfig | None = None,
                     samples_png: str | Path | None = None, title: str = "") -> dict[str, float]:
    """Generate ``num_samples`` (labels cycling over the classes), decode, score against the test split."""
    labels = torch.arange(num_samples) % domain.num_classes if domain.num_classes else None
    seq = generate_latents(model, num_samples, latents.length, labels, cfg_scale, seed, sampling)
    x = decode_sequences(tokenizer.cpu(), seq, latents)
    if samples_png is not None:
        domain.save_samples(x, samples_png, title, reconstruct=tokenizer.reconstruct)  # audio: real clip round trip
    return domain.score(x, labels)


HELD_OUT_SEED = 30_000  # the held-out reference latents: one seeded draw, the same for every arm and seed


@torch.no_grad()
def held_out_latents(tokenizer, x: torch.Tensor, seed: int = HELD_OUT_SEED) -> torch.Tensor:
    """The held-out reference sequences ``(N, T, D)``, drawn exactly as the training latents are
    (``ar_latents``: posterior samples for SigmaVAE / VAE, means for an AE), so that a perfect
    sampler of the training distribution reads FD ~ 0 at every C_sigma. Scoring against the means
    ``encode(x)`` instead adds a floor of about sum_d (sqrt(v_d + s_d^2) - sqrt(v_d))^2 (v_d the
    variance of the means, s_d^2 the posterior noise variance) that grows with C_sigma."""
    g = torch.Generator().manual_seed(seed)
    return tokenizer.to_sequence(tokenizer.eval().ar_latents(posterior=encode_posterior_batched(tokenizer, x),
                                                             generator=g))


def held_out_exposure(model, tokenizer, domain, seed: int = 0, prefix_len: int = 1, num_samples: int = 256,
                      json_path: str | Path | None = None, png_path: str | Path | None = None,
                      sampling: SamplingConfig | None = None) -> dict[str, float]:
    """``exposure_curve`` on the test split's ``held_out_latents``, sampled with ``sampling``;
    returns its summary (``exposure_*`` keys)."""
    import json

    from latentar.exposure import exposure_curve
    sampling = SamplingConfig() if sampling is None else sampling
    device = next(model.parameters()).device
    held = held_out_latents(tokenizer.cpu(), domain.test_x)
    g = torch.Generator(device=device).manual_seed(20_000 + seed)
    labels = None if domain.test_y is None else domain.test_y.to(device)
    kw = sampling.kwargs(model)
    curve = exposure_curve(model, held.to(device), prefix_len=prefix_len, num_samples=num_samples, labels=labels,
                           generator=g, temperature=kw.pop("temperature"), sample_kw=kw)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(curve.to_dict()))
    if png_path is not None:
        curve.save_plot(png_path)
    return {f"exposure_{k}": v for k, v in curve.summary().items()}

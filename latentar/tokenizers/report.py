"""``latent_report``: what a tokenizer's latents look like and how well its decoder tolerates errors.

For a trained tokenizer and a dataset it measures, on the scaled latents ``mu = encode(x)``:

* latent statistics: overall and per-channel mean / std;
* collapse, per channel, against a threshold in nats per latent element:
  - VAE: mean KL(q(z|x) || N(0, 1)) per channel (a channel whose posterior equals the prior
    carries nothing); also the mean posterior variance per channel (1 = the prior's);
  - SigmaVAE: the capacity of the channel under its training noise, 0.5 log(1 + var(mu_c) / E[s^2])
    with E[s^2] = (C_sigma / 0.8)^2 (the Gaussian-channel bound: a channel whose signal is far
    below the noise cannot carry information);
  - AE (or C_sigma = 0): no noise to compare with; a channel counts as collapsed when its std is
    below ``collapse_threshold`` times the largest channel std;
* reconstruction of the mean: PSNR (images, per-example mean, ``latentar.metrics.psnr``) or log-mel
  distance and SI-SNR (audio, ``latentar.metrics.audio``), under ``report["reconstruction"]`` and
  copied to the top level (``report["psnr"]``, ``report["mel_distance"]``, ``report["si_snr"]``);
* **decoder tolerance**: the same scores for ``decode(mu + delta * std(mu) * eps)``, eps ~ N(0, I),
  for each radius delta in ``radii`` (relative to the overall std of the scaled latents, so
  tokenizers with different latent scales compare fairly). An AR model's sampling errors land in
  such a neighbourhood of mu; a flat curve is what variance shaping (C_sigma) buys.

Every number is a plain float or list, so the report is JSON-ready.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from latentar.tokenizers.base import LatentTokenizer, iter_batches
from latentar.tokenizers.vae import kl_per_element

DEFAULT_RADII = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """(B, D, *grid) -> (B * prod(grid), D), float64."""
    return t.transpose(0, 1).reshape(t.shape[1], -1).T.double()


@torch.no_grad()
def latent_report(model: LatentTokenizer, data: Any, radii: tuple[float, ...] | list[float] = DEFAULT_RADII,
                  batch_size: int = 256, max_examples: int | None = 1024, seed: int = 0,
                  collapse_threshold: float = 0.01, data_range: float = 2.0) -> dict[str, Any]:
    """Latent statistics, collapse, reconstruction and decoder tolerance of ``model`` on ``data``.

    Args:
        data: a tensor ``(N, C, ...)``, a map-style Dataset (items: tensor or (tensor, label)) or an
            iterable of batches.
        radii: noise radii delta, relative to the overall std of the scaled latents.
        max_examples: use at most this many examples (None: all).
        seed: seed of the tolerance noise (the report is deterministic).
        collapse_threshold: nats per latent element (VAE, SigmaVAE) or relative std (AE).
        data_range: image value range for PSNR (2 for [-1, 1]).
    Returns: a JSON-ready dict; see the module docstring.
    """
    from latentar.metrics import psnr
    from latentar.metrics.audio import mel_distance, si_snr

    if not isinstance(model, LatentTokenizer):
        raise TypeError(f"latent_report needs a latentar tokenizer (SigmaVAE, VAE, AE), got {type(model).__name__}")
    radii = [float(r) for r in radii]
    if any(r < 0 for r in radii):
        raise ValueError(f"radii must be >= 0, got {radii}")
    was_training = model.training
    model.eval()
    device = model.latent_std.device
    D = model.latent_dim
    sample_rate = model.config["sample_rate"]
    try:
        # Pass 1: latent statistics (float64 running sums, per channel).
        n_ex, n_el = 0, 0
        s1, s2, kl, pvar = (torch.zeros(D, dtype=torch.float64) for _ in range(4))
        for x in iter_batches(data, batch_size, max_examples):
            mu, logvar = model.encode_posterior(x.to(device))
            m = _channels_last(mu).cpu()
            n_ex, n_el = n_ex + len(x), n_el + m.shape[0]
            s1 += m.sum(0)
            s2 += m.pow(2).sum(0)
            if logvar is not None:  # KL and variance against the prior, in raw units
                raw_mu, raw_logvar = mu * model.latent_std, logvar + 2 * torch.log(model.latent_std)
                kl += _channels_last(kl_per_element(raw_mu, raw_logvar)).sum(0).cpu()
                pvar += _channels_last(raw_logvar.exp()).sum(0).cpu()
        if n_ex == 0:
            raise ValueError("latent_report got no examples")
        mean_c = s1 / n_el
        var_c = (s2 / n_el - mean_c.pow(2)).clamp_min(0)
        mean_all = float(s1.sum() / (n_el * D))
        std_all = math.sqrt(max(float(s2.sum() / (n_el * D)) - mean_all**2, 0.0))
        report: dict[str, Any] = {
            "model": type(model).__name__, "modality": model.modality, "config": dict(model.config),
            "num_examples": n_ex, "latent_std_buffer": float(model.latent_std),
            "latent": {"mean": mean_all, "std": std_all, "mean_per_channel": mean_c.tolist(),
                       "std_per_channel": var_c.sqrt().tolist()},
            "collapse": _collapse(model, var_c, kl / n_el, pvar / n_el, collapse_threshold),
        }

        # Pass 2: reconstruction at each noise radius (radius 0 = the mean).
        gen = torch.Generator(device=device).manual_seed(seed)
        sums: dict[str, list[float]] = {}
        for x in iter_batches(data, batch_size, max_examples):
            x = x.to(device)
            mu = model.encode(x)
            for i, r in enumerate(radii):
                eps = torch.randn(mu.shape, generator=gen, device=device, dtype=mu.dtype)
                x_hat = model.decode(mu + r * std_all * eps, length=x.shape[-1]).float()
                if model.modality == "image":
                    scores = {"psnr": psnr(x, x_hat, data_range, reduction="none"),
                              "mse": (x_hat - x).pow(2).flatten(1).mean(1)}
                else:
                    scores = {"mel_distance": mel_distance(x, x_hat, sample_rate, reduction="none"),
                              "si_snr": si_snr(x, x_hat, reduction="none"),
                              "l1": (x_hat - x).abs().flatten(1).mean(1)}
                for k, v in scores.items():
                    sums.setdefault(k, [0.0] * len(radii))[i] += float(v.double().sum())
        curves = {k: [v / n_ex for v in vals] for k, vals in sums.items()}
        main = "psnr" if model.modality == "image" else "mel_distance"
        base = radii.index(0.0) if 0.0 in radii else None
        report["reconstruction"] = {k: v[base] for k, v in curves.items()} if base is not None else {}
        report.update(report["reconstruction"])  # top-level copies: report["psnr"], report["mel_distance"], ...
        report["tolerance"] = {
            "radii": radii, "relative_to": "overall std of the scaled latents", "latent_std": std_all,
            "metric": main, "higher_is_better": main == "psnr", **curves,
            # the change of the main score from radius 0; flatter curve = smaller change
            "degradation": ([abs(v - curves[main][base]) for v in curves[main]] if base is not None else None),
        }
    finally:
        model.train(was_training)
    return report


def _collapse(model: LatentTokenizer, var_c: torch.Tensor, kl_c: torch.Tensor, pvar_c: torch.Tensor,
              threshold: float) -> dict[str, Any]:
    if model.stats_per_latent == 2:
        per = kl_c
        out = {"criterion": "mean KL(q || N(0,1)) per channel < threshold (nats per element)",
               "kl_per_channel": kl_c.tolist(), "posterior_var_per_channel": pvar_c.tolist()}
    elif getattr(model, "c_sigma", 0.0) > 0:
        noise_var = model.noise_std ** 2  # E[s^2] in raw units
        raw_var = var_c * float(model.latent_std) ** 2
        per = 0.5 * torch.log1p(raw_var / noise_var)
        out = {"criterion": "0.5 log(1 + var(mu_c) / E[s^2]) < threshold (nats per element)",
               "capacity_per_channel": per.tolist()}
    else:
        std = var_c.sqrt()
        per = std / std.max().clamp_min(1e-30)
        out = {"criterion": "std(mu_c) / max_c std(mu_c) < threshold", "relative_std_per_channel": per.tolist()}
    collapsed = [i for i, v in enumerate(per.tolist()) if v < threshold]
    return {**out, "threshold": threshold, "collapsed_channels": collapsed,
            "collapsed_share": len(collapsed) / len(per)}

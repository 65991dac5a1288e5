"""The exposure meter: per-position error of a model under its own prefixes against under
ground-truth prefixes.

What, for held-out sequences x and a model q:

* own prefixes:  s ~ q run freely from position ``prefix_len`` (``generate`` with the reference
  fed on the prefix; on a seq2seq batch the prompt, i.e. every position outside the loss mask, is
  fed too);
* ground-truth prefixes:  s'_t ~ q(. | x_{<t}) for every t in one pass (``predict_parallel``).

Continuous latents ``(N, T, D)``, per position t:
    FD_t = FD(N(mu_s_t, S_s_t), N(mu_x_t, S_x_t))     (``frechet_distance`` of Gaussian fits of
                                                       the generated and the held-out latents at t)
    NN_t = mean_i min_j || s_{i,t} - c_j ||            (distance to the training latent cloud c)
Tokens ``(N, T)``, per position t:
    err_t = mean_i 1[s_{i,t} != x_{i,t}]               (token error rate: exact for deterministic
                                                       tasks such as copy / reverse / sort)
    tv_t  = 1/2 sum_v | hist_s_t(v) - hist_x_t(v) |    (total variation of the token histograms: the
                                                       distribution-level check for stochastic data)

Why: teacher-forced losses are computed under data prefixes and cannot register exposure bias;
the gap between the two curves can. For an exact model both curves are flat at the estimator's
noise floor (the model's samples have the data's distribution at every position); errors that
compound make the own-prefix curve grow with position while the ground-truth curve stays flat
(Arora et al. 2022 measure the same accumulation with an oracle LM; Ross et al. 2011 bound it as
quadratic versus linear in the horizon). Positions inside the prefix are NaN in the own-prefix
curves (they were given, not generated). FD is biased upwards for few samples: compare curves
measured with the same ``num_samples``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from latentar.exposure.base import SeqBatch, make_batch, model_device, trainable_mask, unpack_batch
from latentar.metrics.frechet import frechet_distance, gaussian_stats
from latentar.torch_utils import eval_mode

CURVES = {"continuous": ("fd_own", "fd_gt", "nn_own", "nn_gt", "nn_data"),
          "discrete": ("err_own", "err_gt", "tv_own", "tv_gt")}


@dataclass
class ExposureCurve:
    """Per-position curves (numpy arrays of length T; NaN where not measured).

    kind: "continuous" (fd_*, nn_*) or "discrete" (err_*, tv_*); the other family is None.
    fd_own / fd_gt: per-position FD under own / ground-truth prefixes.
    nn_own / nn_gt: mean distance of generated latents to the nearest training latent;
    nn_data: the same for the held-out latents (the floor an exact model reaches; None without a cloud).
    err_own / err_gt: token error rates; tv_own / tv_gt: total variation of token histograms.
    """

    kind: str
    positions: np.ndarray
    prefix_len: int
    num_samples: int
    fd_own: np.ndarray | None = None
    fd_gt: np.ndarray | None = None
    nn_own: np.ndarray | None = None
    nn_gt: np.ndarray | None = None
    nn_data: np.ndarray | None = None
    err_own: np.ndarray | None = None
    err_gt: np.ndarray | None = None
    tv_own: np.ndarray | None = None
    tv_gt: np.ndarray | None = None

    @property
    def primary(self) -> tuple[str, str]:
        """The headline pair: (FD own, FD gt) for latents, (error own, error gt) for tokens."""
        return ("fd_own", "fd_gt") if self.kind == "continuous" else ("err_own", "err_gt")

    def summary(self) -> dict[str, float]:
        """Scalars for tables: the mean of every curve over measured positions, the mean of the
        last quarter of the own-prefix curve, and its least-squares slope per position."""
        out: dict[str, float] = {}
        for name in CURVES[self.kind]:
            v = getattr(self, name)
            if v is not None and np.isfinite(v).any():
                out[f"{name}_mean"] = float(np.nanmean(v))
        own = getattr(self, self.primary[0])
        ok = np.isfinite(own)
        if ok.sum() >= 2:
            pos, val = self.positions[ok].astype(float), own[ok]
            q = max(1, len(val) // 4)
            out[f"{self.primary[0]}_last"] = float(val[-q:].mean())
            out[f"{self.primary[0]}_slope"] = float(np.polyfit(pos, val, 1)[0])
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays as lists (NaN as None), plus the summary."""
        d: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if isinstance(v, np.ndarray):
                d[k] = [None if not np.isfinite(e) else float(e) for e in v.astype(float)]
            else:
                d[k] = v
        d["summary"] = self.summary()
        return d

    def save_plot(self, path_png: str | Path, title: str = "") -> Path:
        """Own- vs ground-truth-prefix curves against position (two panels), as a PNG."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        panels = ([("fd", "Frechet distance to held-out"), ("nn", "distance to training cloud")]
                  if self.kind == "continuous" else [("err", "token error rate"), ("tv", "total variation")])
        fig = Figure(figsize=(10, 4), dpi=110)
        FigureCanvasAgg(fig)
        for i, (stem, ylabel) in enumerate(panels):
            ax = fig.add_subplot(1, 2, i + 1)
            for suffix, label, style in (("own", "own prefixes", "-o"), ("gt", "ground-truth prefixes", "--s"),
                                         ("data", "held-out data", ":")):
                v = getattr(self, f"{stem}_{suffix}", None)
                if v is not None:
                    ax.plot(self.positions, v, style, label=label, markersize=3)
            if self.prefix_len > 0:
                ax.axvline(self.prefix_len - 0.5, color="grey", lw=0.8)
            ax.set_xlabel("position t")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        path = Path(path_png)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        return path


# ---------------------------------------------------------------------------- helpers


def _as_batch(data: Any, labels: torch.Tensor | None = None) -> SeqBatch:
    """Held-out data (a tensor, a SeqBatch, a collated batch or a map-style dataset) as one batch."""
    if isinstance(data, SeqBatch):
        b = data
    elif torch.is_tensor(data) or isinstance(data, (dict, tuple, list)):
        b = unpack_batch(data)
    else:
        if len(data) < 1:
            raise ValueError("exposure_curve got an empty dataset")
        b = unpack_batch(default_collate([data[i] for i in range(len(data))]))
    if labels is not None:
        b = make_batch(b.x, labels, b.loss_mask)
    if b.labels is not None and b.labels.shape[0] != b.x.shape[0]:
        raise ValueError(f"got {b.labels.shape[0]} labels for {b.x.shape[0]} sequences")
    return b


def _cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    if generator is None or generator.device.type == "cpu":
        return generator
    return torch.Generator().manual_seed(generator.initial_seed())


def _nearest_distance(points: torch.Tensor, cloud: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``min_j ||p_i - c_j||`` for points (N, D) against cloud (M, D): (N,) (float32 distances)."""
    out = torch.empty(points.shape[0], dtype=torch.float64)
    cloud = cloud.float()
    for s in range(0, points.shape[0], chunk):
        out[s:s + chunk] = torch.cdist(points[s:s + chunk].float(), cloud).min(dim=1).values.double()
    return out


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Per-position mean of ``values (n, T)`` over rows where ``mask (n, T)``; NaN where none."""
    m = mask.double()
    counts = m.sum(0)
    out = ((values.double() * m).sum(0) / counts.clamp_min(1)).numpy()
    out[(counts == 0).numpy()] = np.nan
    return out


def _per_position_fd(gen: torch.Tensor, ref: torch.Tensor, rows: torch.Tensor | None = None) -> np.ndarray:
    """FD between Gaussian fits of gen[:, t] (n, D) and ref[:, t] (N, D) for every t."""
    T = gen.shape[1]
    out = np.full(T, np.nan)
    for t in range(T):
        g = gen[:, t] if rows is None else gen[rows[:, t], t]
        if g.shape[0] < 2:
            continue
        mu1, s1 = gaussian_stats(g)
        mu2, s2 = gaussian_stats(ref[:, t])
        out[t] = frechet_distance(mu1, s1, mu2, s2)
    return out


# ---------------------------------------------------------------------------- the meter
@torch.no_grad()
def exposure_curve(model: nn.Module, data: Any, prefix_len: int = 0, num_samples: int = 256,
                   labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
                   train_data: Any = None, temperature: float = 1.0, batch_size: int = 256,
                   cloud_size: int = 10000, sample_kw: dict[str, Any] | None = None) -> ExposureCurve:
    """Measure exposure bias of ``model`` on held-out ``data``; see the module docstring.

    Args:
        model: implements ``generate`` and ``predict_parallel`` (LatentAR, CharLM, ...).
        data: held-out sequences: latents (N, T, D), tokens (N, T), a SeqTask-style batch dict, a
            SeqBatch, or a map-style dataset of such items.
        prefix_len: ground-truth positions fed before the free run (0: fully generated).
        num_samples: sequences generated (a random subset of ``data`` gives prefixes and labels).
        labels: (N,) class labels for a class-conditional model (else taken from the data).
        generator: seeds the subset and the model's sampling (reproducible curves).
        train_data: training latents for the nearest-neighbour cloud (default: the held-out
            sequences not used for generation; no cloud if none remain). Continuous only.
        temperature: sampling temperature (0 = greedy for tokens).
        batch_size: sequences generated at once.
        cloud_size: at most this many training latents in the cloud (a random subset).
        sample_kw: further sampler settings for ``generate`` and ``predict_parallel`` (e.g. a
            diffusion head's ``sampler`` and ``num_steps``), so both curves, and every arm of a
            comparison, are sampled alike (``latentar.generation.SamplingConfig.kwargs``).
    """
    held = _as_batch(data, labels).to(torch.device("cpu"))
    N, T = held.x.shape[:2]
    if not 0 <= prefix_len < T:
        raise ValueError(f"prefix_len must lie in 0..T-1 = {T - 1} (at least one generated position), got {prefix_len}")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 (per-position statistics), got {num_samples}")
    device = model_device(model)
    cpu_gen = _cpu_generator(generator)
    order = torch.randperm(N, generator=cpu_gen)
    n = min(num_samples, N)
    chosen, rest = order[:n], order[n:]
    sub = held.rows(chosen)

    given = ~trainable_mask(sub.x, sub.loss_mask)          # (n, T) prompt / padding: always fed
    given[:, :prefix_len] = True
    own = torch.empty_like(sub.x)
    gt = torch.empty_like(sub.x)
    with eval_mode(model):
        for s in range(0, n, batch_size):
            part = sub.rows(torch.arange(s, min(n, s + batch_size))).to(device)
            kw: dict[str, Any] = {"temperature": temperature, **(sample_kw or {})}
            if part.labels is not None:
                kw["labels"] = part.labels
            if generator is not None:
                kw["generator"] = generator
            own[s:s + part.x.shape[0]] = model.generate(part.x.shape[0], T, reference=part.x,
                                                        use_reference=given[s:s + part.x.shape[0]].to(device),
                                                        **kw).cpu()
            gt[s:s + part.x.shape[0]] = model.predict_parallel(part.x, **kw).cpu()

    measured = ~given                                       # (n, T) positions the model generated
    positions = np.arange(T)
    if not held.discrete:
        fd_own = _per_position_fd(own, held.x, rows=measured)
        fd_gt = _per_position_fd(gt, held.x)
        nn_own = nn_gt = nn_data = None
        if train_data is not None:
            cloud = _as_batch(train_data).x
        else:
            cloud = held.x[rest] if len(rest) else None
        if cloud is not None:
            cloud = cloud.reshape(-1, cloud.shape[-1])
            if cloud.shape[0] > cloud_size:
                cloud = cloud[torch.randperm(cloud.shape[0], generator=cpu_gen)[:cloud_size]]
            D = own.shape[-1]
            nn_own = _masked_mean(_nearest_distance(own.reshape(-1, D), cloud).reshape(n, T), measured)
            nn_gt = _nearest_distance(gt.reshape(-1, D), cloud).reshape(n, T).mean(0).numpy()
            nn_data = _nearest_distance(sub.x.reshape(-1, D), cloud).reshape(n, T).mean(0).numpy()
        return ExposureCurve("continuous", positions, prefix_len, n, fd_own=fd_own, fd_gt=fd_gt,
                             nn_own=nn_own, nn_gt=nn_gt, nn_data=nn_data)

    trained = trainable_mask(sub.x, sub.loss_mask)
    vocab = int(max(own.max(), gt.max(), sub.x.max())) + 1
    tv_own, tv_gt = np.full(T, np.nan), np.full(T, np.nan)
    for t in range(T):
        for out, tokens, rows in ((tv_own, own, measured), (tv_gt, gt, trained)):
            r = rows[:, t]
            if r.sum() < 1:
                continue
            h1 = torch.bincount(tokens[r, t], minlength=vocab).double() / r.sum()
            h2 = torch.bincount(sub.x[r, t], minlength=vocab).double() / r.sum()
            out[t] = 0.5 * float((h1 - h2).abs().sum())
    return ExposureCurve("discrete", positions, prefix_len, n,
                         err_own=_masked_mean((own != sub.x).double(), measured),
                         err_gt=_masked_mean((gt != sub.x).double(), trained), tv_own=tv_own, tv_gt=tv_gt)

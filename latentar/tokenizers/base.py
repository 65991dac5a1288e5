"""One tokenizer, three posteriors: the shared body of ``SigmaVAE``, ``VAE`` and ``AE``.

A tokenizer maps data ``x`` to continuous latents and back:

* images ``x: (B, C, H, W)`` -> latents ``z: (B, latent_dim, H / hop, W / hop)``
  (``ImageEncoder`` / ``ImageDecoder``, ``hop = prod(strides)``, H and W multiples of ``hop``);
* audio ``x: (B, C, T)`` -> latents ``z: (B, latent_dim, ceil(T / hop))`` (``AudioEncoder`` /
  ``AudioDecoder``; the waveform is zero-padded on the right to a multiple of ``hop`` and the
  reconstruction is trimmed back, so any length round-trips: ``reconstruct(x).shape == x.shape``).

The three subclasses share the networks, the reconstruction loss and ``training_step``; they differ
only in what the encoder emits (``stats_per_latent``: 1 = mean, 2 = mean and log-variance), in
``_noise_raw`` (how a posterior sample departs from the mean) and in ``_regularizer``:

    loss = reconstruction(decode_raw(mu_raw + noise), x) + regularizer
    reconstruction = pointwise (L2 images / L1 audio) [+ mel_weight * multi-resolution log-mel L1]

**Latent scale.** ``encode`` returns ``mu_raw / latent_std`` and ``decode(z)`` runs the decoder on
``z * latent_std``, where the buffer ``latent_std`` (a scalar, 1 until ``estimate_latent_scale``
is called on data) is the std of the raw means, so downstream models see latents of about unit
std (LatentLM, MAR and Stable Diffusion store the same factor; we keep it in the model, not as a
constant in a loop). One scalar, not one per channel, so isotropic noise stays isotropic.
Training and every noise scale (C_sigma, the VAE's variance) live in the *raw* space, as in
LatentLM's code; ``sample_posterior`` maps them into the scaled space consistently.

**Sequence layout** for the AR models: ``to_sequence(z) -> (B, T, latent_dim)``: images in raster
order of the latent grid (row by row, ``T = h * w``), audio one token per latent frame.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from latentar.pretrained import PretrainedMixin, register_to_config, saved_config
from latentar.tokenizers.audio_net import AudioDecoder, AudioEncoder, hop_length
from latentar.tokenizers.image_net import ImageDecoder, ImageEncoder
from latentar.tokenizers.losses import MultiResolutionMelLoss, pointwise_loss

MODALITIES = ("image", "audio")

# Network presets per modality, used where ``channels`` / ``strides`` are left as None.
NETWORK_PRESETS: dict[str, dict[str, tuple[int, ...]]] = {
    # 8x8 digits -> 4x4 latent grid (T = 16 tokens).
    "image": {"channels": (32, 64), "strides": (2, 1)},
    # hop 256: 16 kHz -> 62.5 latent frames per second (1.024 s -> 64 frames). The first stride is a
    # patch (samples folded into channels), so no layer runs at the sample rate (audio_net).
    "audio": {"channels": (16, 32, 64, 128), "strides": (4, 4, 4, 4)},
}
DEFAULT_RECON = {"image": "mse", "audio": "l1"}


class LatentTokenizer(PretrainedMixin):
    """Base class; use ``SigmaVAE``, ``VAE`` or ``AE``.

    Args:
        modality: ``"image"`` (2D convs) or ``"audio"`` (1D strided convs).
        in_channels: data channels (1 for digits and mono audio).
        latent_dim: channels of the latent, i.e. the dimension of one AR token.
        channels, strides: one entry per stage; None -> ``NETWORK_PRESETS[modality]``. Image strides
            are 1 or 2; the latent grid is ``H / prod(strides)``. Audio hop is ``prod(strides)``.
        res_blocks: residual blocks per stage.
        causal: audio only: causal convs (a latent frame depends on no later sample).
        sample_rate: audio only: Hz, for the mel loss.
        recon_loss: ``"mse"`` or ``"l1"``; None -> mse for images, l1 for audio.
        mel_weight: audio only: weight of the multi-resolution log-mel L1 term (0 disables it).
        mel_n_ffts: audio only: the STFT sizes of that term.
        beta: weight of the regularizer (subclass-specific meaning).
        sample_for_training: whether ``ar_latents`` (what an AR model trains on) returns posterior
            samples (default, as LatentLM) or the means.
    """

    stats_per_latent: int = 1

    @register_to_config
    def __init__(self, modality: str = "image", in_channels: int = 1, latent_dim: int = 4, *,
                 channels: Sequence[int] | None = None, strides: Sequence[int] | None = None,
                 res_blocks: int = 1, causal: bool = False, sample_rate: int = 24000,
                 recon_loss: str | None = None, mel_weight: float = 1.0,
                 mel_n_ffts: Sequence[int] = (256, 512, 1024), beta: float = 0.0,
                 sample_for_training: bool = True):
        super().__init__()
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if int(in_channels) < 1 or int(latent_dim) < 1:
            raise ValueError(f"in_channels and latent_dim must be positive, got {in_channels}, {latent_dim}")
        for name, v in (("beta", beta), ("mel_weight", mel_weight)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        preset = NETWORK_PRESETS[modality]
        channels = [int(c) for c in (preset["channels"] if channels is None else channels)]
        strides = [int(s) for s in (preset["strides"] if strides is None else strides)]
        recon_loss = DEFAULT_RECON[modality] if recon_loss is None else recon_loss
        if recon_loss not in ("mse", "l1"):
            raise ValueError(f"recon_loss must be 'mse' or 'l1', got {recon_loss!r}")
        if causal and modality == "image":
            raise ValueError("causal=True applies to audio only; image tokenizers use ordinary 2D convs")
        self.modality, self.in_channels, self.latent_dim = modality, int(in_channels), int(latent_dim)
        self.hop = hop_length(strides)
        self.beta, self.recon_loss, self.mel_weight = float(beta), recon_loss, float(mel_weight)
        self.sample_for_training = bool(sample_for_training)
        resolved = dict(  # the config records resolved values (presets, default loss), not the Nones given
            modality=modality, in_channels=self.in_channels, latent_dim=self.latent_dim, channels=channels,
            strides=strides, res_blocks=int(res_blocks), causal=bool(causal), sample_rate=int(sample_rate),
            recon_loss=recon_loss, mel_weight=self.mel_weight, mel_n_ffts=[int(n) for n in mel_n_ffts],
            beta=self.beta, sample_for_training=self.sample_for_training,
        )
        self.register_to_config(**{k: v for k, v in resolved.items() if k not in self.ignore_for_config})
        out = self.stats_per_latent * self.latent_dim
        if modality == "image":
            self.encoder = ImageEncoder(self.in_channels, out, channels, strides, res_blocks)
            self.decoder = ImageDecoder(self.latent_dim, self.in_channels, channels, strides, res_blocks)
            self.mel_loss = None
        else:
            self.encoder = AudioEncoder(self.in_channels, out, channels, strides, res_blocks, causal)
            self.decoder = AudioDecoder(self.latent_dim, self.in_channels, channels, strides, res_blocks, causal)
            self.mel_loss = MultiResolutionMelLoss(sample_rate, mel_n_ffts) if self.mel_weight > 0 else None
        # std of the raw encoder means over data; set by estimate_latent_scale, saved with the model.
        self.register_buffer("latent_std", torch.ones(()))

    # -- subclass hooks (raw, unscaled space) -----------------------------------------------------
    def _noise_raw(self, mu: torch.Tensor, logvar: torch.Tensor | None,
                   generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Posterior sample minus mean, in raw units; None for a deterministic posterior."""
        return None

    def _regularizer(self, mu: torch.Tensor, logvar: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """beta * mean(mu^2) (LatentLM's "kl" term; the AE's optional latent penalty)."""
        mu2 = mu.float().pow(2).mean()
        return self.beta * mu2, {"mu2": mu2.detach()}

    # -- input checks -----------------------------------------------------------------------------
    def _expected(self) -> str:
        return f"(B, {self.in_channels}, H, W) images" if self.modality == "image" else f"(B, {self.in_channels}, T) audio"

    def check_input(self, x: Any, where: str = "input", values: bool = True) -> torch.Tensor:
        """Raise a clear error unless ``x`` is finite data of this tokenizer's modality and shape.

        Type, rank, channels and size are metadata. ``values`` adds the NaN / inf scan, the one check
        that reads the data back (a device-to-host sync when x is on an accelerator): the public
        entry points (``encode``, ``reconstruct``, ...) run it, the training path (``loss``) only
        for data on the host.
        """
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: {where} must be a torch.Tensor of shape {self._expected()}, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: {where} must be floating point, got {x.dtype}; convert with x.float()")
        want = 4 if self.modality == "image" else 3
        if x.dim() != want:
            hint = ""
            if self.modality == "audio" and x.dim() == 2:
                hint = "; add the channel axis with x.unsqueeze(1)"
            elif self.modality == "audio" and x.dim() == 4:
                hint = "; this looks like images, but the tokenizer was built with modality='audio'"
            elif self.modality == "image" and x.dim() == 3:
                hint = ("; this looks like audio (B, C, T) or one unbatched image (C, H, W): the tokenizer "
                        "was built with modality='image' (use x.unsqueeze(0) for a single image)")
            raise ValueError(f"{name}: expected {self._expected()}, got {where} of shape {tuple(x.shape)}{hint}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{name}: expected {self._expected()} with {self.in_channels} channel(s), "
                             f"got {where} of shape {tuple(x.shape)} ({x.shape[1]} channels)")
        if x.shape[0] == 0 or x.shape[-1] == 0:
            raise ValueError(f"{name}: {where} of shape {tuple(x.shape)} is empty")
        if self.modality == "image" and (x.shape[-2] % self.hop or x.shape[-1] % self.hop):
            raise ValueError(f"{name}: image size {tuple(x.shape[-2:])} must be a multiple of the total stride "
                             f"{self.hop} (strides {self.config['strides']}); pad or resize the images")
        bad = (~torch.isfinite(x)).sum().item() if values else 0
        if bad:
            raise ValueError(f"{name}: {where} contains {bad} NaN or inf value(s) out of {x.numel()}; "
                             "clean or clamp the data before encoding")
        return x

    def _check_finite_on_host(self, x: torch.Tensor, where: str = "input") -> None:
        """The NaN / inf scan of a CPU tensor with no read into Python (``torch._assert_async`` is
        synchronous on the CPU); the count is read only to word the error."""
        try:
            torch._assert_async(torch.isfinite(x).all())
        except RuntimeError:
            self.check_input(x, where)              # raises the ValueError naming the count
            raise

    def check_latent(self, z: Any, where: str = "latent") -> torch.Tensor:
        name = type(self).__name__
        want = 4 if self.modality == "image" else 3
        spec = f"(B, {self.latent_dim}, h, w)" if self.modality == "image" else f"(B, {self.latent_dim}, T)"
        if not isinstance(z, torch.Tensor) or z.dim() != want or z.shape[1] != self.latent_dim:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{name}: expected {where} of shape {spec}, got {got}; a token sequence "
                             "(B, T, latent_dim) goes through from_sequence(seq, shape) first")
        return z

    # -- encode / decode --------------------------------------------------------------------------
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Audio: zero-pad the time axis on the right to a multiple of ``hop``."""
        if self.modality == "audio" and x.shape[-1] % self.hop:
            x = nn.functional.pad(x, (0, self.hop - x.shape[-1] % self.hop))
        return x

    def _stats_raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Checked, padded x -> (mu_raw, logvar_raw or None), each ``(B, latent_dim, *grid)``."""
        stats = self.encoder(self._pad(x))
        if self.stats_per_latent == 1:
            return stats, None
        mu, logvar = stats.chunk(2, dim=1)
        return mu, logvar.float().clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x -> the posterior mean, scaled: ``mu_raw / latent_std``, ``(B, latent_dim, *grid)``."""
        mu, _ = self._stats_raw(self.check_input(x))
        return mu / self.latent_std

    def encode_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x -> (mu, logvar) in the scaled space; logvar is None for SigmaVAE and AE."""
        mu, logvar = self._stats_raw(self.check_input(x))
        scale = self.latent_std
        return mu / scale, None if logvar is None else logvar - 2.0 * torch.log(scale)

    def decode(self, z: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Scaled latents -> data. Audio: ``length`` trims the output (default ``T' * hop`` samples)."""
        x_hat = self.decoder(self.check_latent(z) * self.latent_std)
        return x_hat if length is None else x_hat[..., :length]

    def reconstruct(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """decode(encode(x)) (or of a posterior sample), with the shape of ``x``."""
        x = self.check_input(x)
        z = self.sample_posterior(x=x, generator=generator) if sample else self.encode(x)
        return self.decode(z, length=x.shape[-1])

    def sample_posterior(self, mu: torch.Tensor | None = None, *, x: torch.Tensor | None = None,
                         logvar: torch.Tensor | None = None, generator: torch.Generator | None = None,
                         return_noise: bool = False):
        """A posterior sample in the scaled space, from data ``x`` or from the output of
        ``encode_posterior``: scaled means ``mu`` plus, for a VAE, their ``logvar`` (SigmaVAE's and
        AE's posteriors do not depend on the input, so ``mu`` alone is enough for them). The noise
        is drawn in raw units and divided by ``latent_std``. With ``return_noise=True`` returns
        ``(z, noise)`` where ``z = mu + noise``."""
        name = type(self).__name__
        if (mu is None) == (x is None):
            raise ValueError(f"{name}.sample_posterior takes exactly one of mu (scaled means from encode) or x (data)")
        if x is not None:
            if logvar is not None:
                raise ValueError(f"{name}.sample_posterior: logvar goes with mu, not with x (x is encoded here)")
            mu, logvar = self.encode_posterior(x)
        else:
            self.check_latent(mu, "mu")
            if self.stats_per_latent == 2 and logvar is None:
                raise ValueError(f"{name}.sample_posterior needs the posterior variance: pass x=data, or mu and "
                                 "logvar from encode_posterior(x)")
            if logvar is not None and (self.stats_per_latent == 1 or logvar.shape != mu.shape):
                raise ValueError(f"{name}.sample_posterior: logvar must be None (fixed posterior) or shaped like mu "
                                 f"{tuple(mu.shape)} for a learned one, got {tuple(logvar.shape)}")
        scale = self.latent_std
        noise = self._noise_raw(mu * scale, None if logvar is None else logvar + 2.0 * torch.log(scale), generator)
        noise = torch.zeros_like(mu) if noise is None else noise / scale
        z = mu + noise
        return (z, noise) if return_noise else z

    def ar_latents(self, x: torch.Tensor | None = None, *,
                   posterior: tuple[torch.Tensor, torch.Tensor | None] | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """What an AR model trains on, the same way for every tokenizer: a posterior sample
        (``sample_posterior``) if ``sample_for_training`` else the mean. Give data ``x``, or
        ``posterior = encode_posterior(x)`` to draw several samples from one encoding."""
        if (x is None) == (posterior is None):
            raise ValueError(f"{type(self).__name__}.ar_latents takes exactly one of x (data) or "
                             "posterior=(mu, logvar) from encode_posterior")
        mu, logvar = self.encode_posterior(x) if posterior is None else posterior
        if not self.sample_for_training:
            return self.check_latent(mu, "mu")
        return self.sample_posterior(mu, logvar=logvar, generator=generator)

    # -- training ---------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, sample: bool = True,
             validate: bool | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training objective on a batch ``x``; returns ``(loss, metrics)`` (metrics detached).

        loss = pointwise(x_hat, x) [+ mel_weight * mel(x_hat, x)] + regularizer, where
        x_hat = decoder(mu_raw + noise) (noise from the posterior; none if ``sample=False``).

        ``validate``: scan x for NaN / inf (a ValueError naming the count). None (default): only when
        x is on the CPU, where the scan reads no device memory (nor any value into Python unless it
        fails: ``_check_finite_on_host``); on an accelerator this training path
        reads nothing back, and a non-finite batch gives a non-finite loss, which the ``Trainer``
        stops on ("check the data"). True / False force / skip the scan. Metadata checks always run.
        """
        x = self.check_input(x, values=bool(validate))
        if validate is None and x.device.type == "cpu":
            self._check_finite_on_host(x)
        mu, logvar = self._stats_raw(x)
        noise = self._noise_raw(mu, logvar) if sample else None
        z = mu if noise is None else mu + noise.to(mu.dtype)
        x_hat = self.decoder(z)[..., : x.shape[-1]]
        rec = pointwise_loss(self.recon_loss, x_hat, x)
        metrics: dict[str, torch.Tensor] = {"rec": rec.detach()}
        total = rec
        if self.mel_loss is not None:
            mel = self.mel_loss(x_hat, x)
            total = total + self.mel_weight * mel
            metrics["mel"] = mel.detach()
        reg, reg_metrics = self._regularizer(mu, logvar)
        metrics.update(reg_metrics)
        return total + reg, metrics

    def training_step(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """For ``latentar.train.Trainer``: batch is data, ``(data, labels, ...)`` or a dict with
        one of the keys ``x``, ``image``, ``images``, ``audio``, ``wave``, ``waveform``."""
        return self.loss(batch_data(batch))

    @torch.no_grad()
    def estimate_latent_scale(self, data: Any, batch_size: int = 256, max_examples: int | None = 4096) -> float:
        """Set the buffer ``latent_std`` to the std of the raw means over ``data`` (so encode()
        returns latents of about unit std); returns it. ``data``: a tensor, a Dataset or an iterable
        of batches (as accepted by ``iter_batches``)."""
        was_training = self.training
        self.eval()
        try:
            n, s1, s2 = 0, 0.0, 0.0                      # the sums stay on the device, read once at the end
            for x in iter_batches(data, batch_size, max_examples):
                x = self.check_input(x.to(self.latent_std.device))
                mu, _ = self._stats_raw(x)
                mu = mu.double()
                n, s1, s2 = n + mu.numel(), s1 + mu.sum(), s2 + mu.pow(2).sum()
            if n < 2:
                raise ValueError("estimate_latent_scale needs data: got no examples")
            s1, s2 = float(s1), float(s2)
            var = (s2 - s1 * s1 / n) / (n - 1)
            std = math.sqrt(max(var, 0.0))
            if not std > 1e-8:
                raise ValueError(f"the encoder's means have std {std:.3g} on this data (collapsed); cannot set a latent scale")
            self.latent_std.fill_(std)
        finally:
            self.train(was_training)
        return std

    # -- sequence layout --------------------------------------------------------------------------
    def to_sequence(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> tokens ``(B, T, latent_dim)``: images in raster order of the grid, audio by frame."""
        self.check_latent(z)
        return z.flatten(2).transpose(1, 2)

    def from_sequence(self, seq: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
        """Tokens ``(B, T, latent_dim)`` -> latents. Images: ``shape`` is the grid ``(h, w)``
        (default: square, ``h = w = sqrt(T)``); audio: ``(B, latent_dim, T)`` (``shape`` ignored
        except as a check ``(T,)``)."""
        if not isinstance(seq, torch.Tensor) or seq.dim() != 3 or seq.shape[-1] != self.latent_dim:
            got = tuple(seq.shape) if isinstance(seq, torch.Tensor) else type(seq).__name__
            raise ValueError(f"{type(self).__name__}.from_sequence: expected tokens (B, T, {self.latent_dim}), got {got}")
        B, T, D = seq.shape
        z = seq.transpose(1, 2)
        if self.modality == "audio":
            if shape is not None and tuple(shape)[-1] != T:
                raise ValueError(f"from_sequence: {T} tokens do not fill {tuple(shape)} latent frames")
            return z.contiguous()
        if shape is None:
            side = math.isqrt(T)
            if side * side != T:
                raise ValueError(f"from_sequence: {T} tokens are not a square grid; pass shape=(h, w)")
            shape = (side, side)
        h, w = (int(s) for s in tuple(shape)[-2:])
        if h * w != T:
            raise ValueError(f"from_sequence: {T} tokens do not fill a {h}x{w} latent grid")
        return z.reshape(B, D, h, w)

    def latent_shape(self, data_shape: Sequence[int]) -> tuple[int, ...]:
        """Latent shape for data of shape ``(B, C, H, W)`` / ``(B, C, T)`` (or without B)."""
        spatial = tuple(int(s) for s in data_shape[-(2 if self.modality == "image" else 1):])
        if self.modality == "image":
            return (self.latent_dim, *(s // self.hop for s in spatial))
        return (self.latent_dim, -(-spatial[0] // self.hop))

    # -- save / load ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device | None = None, **kwargs):
        """Load a directory written by ``save_pretrained``; a checkpoint whose architecture or latent
        size differs from the requested one (constructor arguments in ``kwargs``) fails with a
        message naming both."""
        try:
            return super().from_pretrained(path, map_location=map_location, **kwargs)
        except ValueError as e:
            if "incompatible" not in str(e):
                raise
            from pathlib import Path

            saved = saved_config(Path(path) / kwargs["subfolder"] if kwargs.get("subfolder") else path)
            diff = {k: (saved.get(k), v) for k, v in kwargs.items() if k in saved and saved.get(k) != v}
            detail = "; ".join(f"{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"{cls.__name__}.from_pretrained({str(path)!r}): the checkpoint was trained with a "
                             f"different architecture or latent size ({detail or 'see below'}); drop the "
                             f"overrides or train a new tokenizer.\n{e}") from e


_BATCH_KEYS = ("x", "image", "images", "audio", "wave", "waveform")


def batch_data(batch: Any) -> torch.Tensor:
    """The data tensor of a batch: the tensor itself, the first element of a tuple/list, or a dict entry."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    if isinstance(batch, Mapping):
        for k in _BATCH_KEYS:
            if k in batch:
                return batch[k]
        raise KeyError(f"batch dict has none of the keys {_BATCH_KEYS}: {sorted(batch)}")
    raise TypeError(f"cannot find the data in a batch of type {type(batch).__name__}; yield tensors or (tensor, label)")


def iter_batches(data: Any, batch_size: int = 256, max_examples: int | None = None):
    """Yield data tensors ``(b, C, ...)`` from a tensor, a map-style Dataset (items: tensor or
    (tensor, ...); items of unequal length are yielded one at a time) or an iterable of batches."""
    seen = 0

    def room(n: int) -> int:
        return n if max_examples is None else max(0, min(n, max_examples - seen))

    if isinstance(data, torch.Tensor):
        for i in range(0, len(data), batch_size):
            k = room(min(batch_size, len(data) - i))
            if k == 0:
                return
            seen += k
            yield data[i: i + k]
        return
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (list, tuple)):
        n = len(data)
        i = 0
        while i < n:
            items = [batch_data(data[j]) for j in range(i, min(n, i + batch_size))]
            i += len(items)
            groups = [items] if len({t.shape for t in items}) == 1 else [[t] for t in items]
            for g in groups:
                k = room(len(g))
                if k == 0:
                    return
                seen += k
                yield torch.stack(g[:k])
        return
    for batch in data:
        x = batch_data(batch)
        k = room(len(x))
        if k == 0:
            return
        seen += k
        yield x[:k]

"""LatentAR: next-token generation of continuous latents = input projection + CausalTransformer + head.

What: for latents ``z (B, T, D)`` the model factorises p(z | y) = prod_t p(z_t | y, z_{<t}), with
p(z_t | .) a head (GMM as in GIVT, per-token diffusion as in MAR / LatentLM, or MSE regression)
conditioned on the backbone state h_t:

    inputs = [s_y, W z_1, ..., W z_{T-1}]          (B, T, d_model), s_y the start token
    h      = CausalTransformer(inputs)             (B, T, d_model), h_t sees s_y, z_{<t}
    loss   = mean_t head.loss(h_t, z_t)

The start token is a class embedding (``num_classes + 1`` rows; row ``num_classes`` is the null
class used for classifier-free guidance, Ho & Salimans 2022) or a learned BOS when unconditional.
During training labels are dropped to the null class with probability ``class_dropout``
(MAR: 0.1).

Why: the methods below are the hooks the exposure strategies use: ``cond_states`` and
``loss(z, context=...)`` train on a corrupted or self-generated context while the targets stay z
(scheduled sampling, context noise, BASH); ``predict_parallel`` is pass 1 of two-pass scheduled
sampling; ``generate(reference=..., use_reference=...)`` mixes reference and sampled tokens
(prefix conditioning, BASH's Bernoulli contexts). ``num_backbone_calls`` counts backbone forwards.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn

from latentar.heads.base import check_guidance
from latentar.models.transformer import CausalTransformer, KVCache, compute_dtype
from latentar.pretrained import PretrainedMixin, plain, register_to_config
from latentar.torch_utils import eval_mode, latent_batch

REDUCTIONS = ("mean", "sum", "none")



class LatentAR(PretrainedMixin):
    """Autoregressive model over continuous latents ``(B, T, latent_dim)``.

    Args:
        latent_dim: D, channels of one latent token.
        head: ``"gmm"``, ``"diffusion"`` or ``"mse"`` (a key of ``latentar.heads.HEADS``).
        d_model, depth, num_heads, mlp_ratio, dropout, pos: the CausalTransformer.
        max_len: longest latent sequence T the model generates or scores.
        num_classes: 0 for an unconditional model (learned BOS), else class labels 0..num_classes-1
            plus the null class ``num_classes``.
        class_dropout: probability of replacing a label by the null class in training.
        head_kwargs: extra constructor arguments of the head (e.g. ``{"num_mixtures": 16}``).
    """

    @register_to_config
    def __init__(self, latent_dim: int, head: str = "gmm", d_model: int = 128, depth: int = 4, num_heads: int = 4,
                 max_len: int = 64, num_classes: int = 0, class_dropout: float = 0.1,
                 head_kwargs: Mapping[str, Any] | None = None, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 pos: str = "rope"):
        super().__init__()
        from latentar.heads import HEADS  # the heads package; the backbone itself never sees it

        head_kwargs = plain(head_kwargs) if head_kwargs is not None else {}
        if not isinstance(head, str) or head not in HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {sorted(HEADS)}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}")
        if not 0.0 <= class_dropout < 1.0:
            raise ValueError(f"class_dropout must be in [0, 1), got {class_dropout}")
        for reserved in ("dim", "cond_dim"):
            if reserved in head_kwargs:
                raise ValueError(f"head_kwargs may not set {reserved!r}: LatentAR sets it from latent_dim / d_model")
        self.register_to_config(head_kwargs=head_kwargs)  # None -> {}
        self.latent_dim, self.max_len = latent_dim, max_len
        self.num_classes, self.class_dropout = num_classes, class_dropout
        self.null_class = num_classes  # index of the unconditional row (only when num_classes > 0)

        self.in_proj = nn.Linear(latent_dim, d_model)
        if num_classes > 0:
            self.class_emb = nn.Embedding(num_classes + 1, d_model)
            nn.init.normal_(self.class_emb.weight, std=0.02)
        else:
            self.bos = nn.Parameter(torch.randn(d_model) * 0.02)
        nn.init.normal_(self.in_proj.weight, std=0.02)
        nn.init.zeros_(self.in_proj.bias)
        self.backbone = CausalTransformer(d_model, depth, num_heads, max_len, mlp_ratio=mlp_ratio,
                                          dropout=dropout, pos=pos, causal=True)
        self.head = HEADS[head](dim=latent_dim, cond_dim=d_model, **head_kwargs)
        self.num_backbone_calls = 0

    # ------------------------------------------------------------------ inputs
    def _check_latents(self, z: torch.Tensor, name: str = "z") -> None:
        if not torch.is_tensor(z) or z.dim() != 3 or z.shape[-1] != self.latent_dim:
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ValueError(f"expected {name} of shape (B, T, {self.latent_dim}), got {shape}")
        if z.shape[1] < 1 or z.shape[1] > self.max_len:
            raise ValueError(f"{name} has T={z.shape[1]} positions; this model handles 1..max_len={self.max_len} "
                             f"(build it with a larger max_len for longer sequences)")

    def _check_labels(self, labels: torch.Tensor | None, batch_size: int, values: bool = False) -> torch.Tensor | None:
        """Shape and dtype checks (no host read); ``values=True`` (the ``generate`` boundary) also
        range-checks the labels with one host read. In the per-step paths the class-embedding lookup
        reports an out-of-range label (:meth:`start_tokens`)."""
        if labels is None:
            return None
        if self.num_classes == 0:
            raise ValueError("labels were given to an unconditional LatentAR (num_classes=0); "
                             "pass labels=None or build the model with num_classes > 0")
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.shape[0] != batch_size or labels.dtype.is_floating_point:
            raise ValueError(f"labels must be an integer tensor of shape ({batch_size},), got "
                             f"{labels.dtype} {tuple(labels.shape)}")
        if values and labels.numel():
            lo, hi = torch.stack([labels.min(), labels.max()]).tolist()
            if lo < 0 or hi > self.num_classes:
                raise ValueError(self._label_range_error(f"got min {lo}, max {hi}"))
        return labels

    def _label_range_error(self, got: str) -> str:
        return f"labels must lie in 0..{self.num_classes - 1} (or {self.null_class} = null class), {got}"

    def start_tokens(self, labels: torch.Tensor | None, batch_size: int, drop_labels: bool = False) -> torch.Tensor:
        """Start embeddings ``(B, 1, d_model)``: class rows (None -> null class) or the learned BOS.

        ``drop_labels``: replace each label by the null class with probability ``class_dropout``.
        """
        if self.num_classes == 0:
            return self.bos.view(1, 1, -1).expand(batch_size, 1, -1)
        device = self.class_emb.weight.device
        if labels is None:
            labels = torch.full((batch_size,), self.null_class, dtype=torch.long, device=device)
        labels = labels.to(device=device, dtype=torch.long)
        if drop_labels and self.class_dropout > 0:
            drop = torch.rand(batch_size, device=device) < self.class_dropout
            labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        try:
            return self.class_emb(labels).unsqueeze(1)
        except IndexError:  # CPU raises at the lookup (CUDA asserts on the device); the error path reads
            self._check_labels(labels, batch_size, values=True)
            raise

    def _backbone(self, x: torch.Tensor, cache: KVCache | None = None,
                  start_pos: int | torch.Tensor | None = None) -> torch.Tensor:
        if not torch.compiler.is_compiling():  # a Python int in a graph would recompile per call
            self.num_backbone_calls += 1
        return self.backbone(x, cache=cache, start_pos=start_pos)

    # ------------------------------------------------------------------ training hooks
    def cond_states(self, context: torch.Tensor, labels: torch.Tensor | None = None,
                    drop_labels: bool | None = None) -> torch.Tensor:
        """Backbone states ``(B, T, d_model)``; state t conditions the head for position t on ``context[:, :t]``.

        The context is shifted right behind the start token: inputs = [s_y, W c_0, ..., W c_{T-2}].
        ``drop_labels`` defaults to ``self.training`` (label dropout for CFG).
        """
        self._check_latents(context, "context")
        B = context.shape[0]
        labels = self._check_labels(labels, B)
        if drop_labels is None:
            drop_labels = self.training
        start = self.start_tokens(labels, B, drop_labels=drop_labels).to(context.dtype)
        x = torch.cat([start, self.in_proj(context[:, :-1])], dim=1)  # (B, T, d_model)
        return self._backbone(x)

    def loss(self, z: torch.Tensor, labels: torch.Tensor | None = None, context: torch.Tensor | None = None,
             reduction: str = "mean", loss_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced loss of targets ``z (B, T, D)``.

        ``context`` (same shape as z), if given, is fed as the input sequence instead of z (a noisy
        or self-generated context) while the targets stay z. ``loss_mask (B, T)`` bool keeps only the
        positions where it is True (the others are given at inference). ``reduction``: "mean"
        (scalar, over kept positions), "sum" (scalar) or "none" (``(B, T)``, zero where masked out).
        """
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
        self._check_latents(z)
        if context is None:
            context = z
        elif context.shape != z.shape:
            raise ValueError(f"context {tuple(context.shape)} must have the shape of the targets z {tuple(z.shape)}")
        per_token = self.head.loss(self.cond_states(context, labels), z)  # (B, T)
        if loss_mask is not None:
            if tuple(loss_mask.shape) != tuple(z.shape[:2]) or loss_mask.dtype != torch.bool:
                raise ValueError(f"loss_mask must be a bool tensor of shape {tuple(z.shape[:2])}, got "
                                 f"{loss_mask.dtype} {tuple(loss_mask.shape)}")
            keep = loss_mask.to(per_token.device)
            per_token = per_token * keep
            if reduction == "mean":
                return per_token.sum() / keep.sum().clamp(min=1)
        if reduction == "none":
            return per_token
        return per_token.mean() if reduction == "mean" else per_token.sum()

    def training_step(self, batch) -> torch.Tensor:
        """Shared-Trainer hook: ``batch`` is latents ``(B, T, D)``, ``(latents,)`` or ``(latents, labels)``."""
        x, labels = latent_batch(batch, "LatentAR", self.latent_dim)
        return self.loss(x, labels=labels if self.num_classes > 0 else None)

    @torch.no_grad()
    def predict_parallel(self, z: torch.Tensor, labels: torch.Tensor | None = None, temperature: float = 1.0,
                         **sample_kw) -> torch.Tensor:
        """Sample every position t from p(. | y, z_{<t}) in one backbone pass: ``(B, T, D)``, no grad.

        Pass 1 of two-pass scheduled sampling. Labels are never dropped here; the module's
        train/eval mode is left as it is (the caller decides whether dropout is on).
        """
        h = self.cond_states(z, labels, drop_labels=False)
        return self.head.sample(h, temperature=temperature, **sample_kw)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, batch_size: int, length: int, labels: torch.Tensor | None = None, cfg_scale: float = 1.0,
                 temperature: float = 1.0, reference: torch.Tensor | None = None,
                 use_reference: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True, compile: bool | str | Callable = False, **sample_kw) -> torch.Tensor:
        """Sample ``(batch_size, length, D)`` token by token; returns the sequence that was fed back.

        * ``labels (B,)``: class labels (None in a conditional model = null class).
        * ``cfg_scale != 1``: classifier-free guidance. Conditional and null-class branches run as one
          batch of 2B; the head gets ``cond`` and ``cond_uncond`` and mixes them with ``cfg_scale``.
          ``cfg_scale == 1`` skips the null branch, so it is exactly plain conditional sampling.
        * ``reference (B, length, D)`` + ``use_reference (B, length)`` bool: where True the reference
          token is fed (and returned) instead of the sample: prefix-conditioned generation
          (``use_reference[:, :k] = True``) and BASH's Bernoulli-mixed contexts.
        * ``use_cache=False`` recomputes the whole prefix at every step (same result, O(T^2) work;
          the baseline of ``bench/generate.py``).
        * ``compile=True`` runs each cached backbone step through ``torch.compile(fullgraph=True)``
          on the static-shape cache with a tensor position: one graph for every position (the first
          call compiles; the head's sampling stays eager). A string or callable is the
          backend (default ``"inductor"``; ``"aot_eager"`` checks the graph without a C++ compiler).
        * ``generator``, ``temperature`` and ``**sample_kw`` (e.g. ``num_steps``) go to ``head.sample``.

        Runs in eval mode (restored afterwards) and without grad.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 1 <= length <= self.max_len:
            raise ValueError(f"length={length} must be in 1..max_len={self.max_len}; build the model with a larger max_len")
        labels = self._check_labels(labels, batch_size, values=True)
        guided = check_guidance("LatentAR.generate", cfg_scale, temperature, labels, self.num_classes)
        device, dtype = self.in_proj.weight.device, self.in_proj.weight.dtype
        mask = self._check_reference(reference, use_reference, batch_size, length)
        if mask is not None:
            reference, mask = reference.to(device=device, dtype=dtype), mask.to(device)

        if compile and not use_cache:
            raise ValueError("compile=True needs use_cache=True (it compiles the cached decode step)")
        # which positions feed the reference in every row (no sampling there): one host read, here
        all_reference = [False] * length if mask is None else mask.all(0).tolist()

        with eval_mode(self):
            start = self.start_tokens(labels, batch_size).to(dtype)  # (B, 1, d)
            if guided:
                start = torch.cat([start, self.start_tokens(None, batch_size).to(dtype)])  # (2B, 1, d): cond | null
            # the BOS is an expanded view of a parameter (requires grad, stride 0): detached and copied, it
            # gives the compiled step the same kind of input as every later position (no second graph)
            start = start.detach().contiguous()
            step, cache, positions = self._decode_setup(start, length, use_cache, compile)
            inputs = [start]  # embeddings fed so far (only kept whole without the cache)
            out = torch.empty(batch_size, length, self.latent_dim, device=device, dtype=dtype)
            for t in range(length):
                if use_cache:
                    h = step(inputs[-1], cache=cache, start_pos=positions[t])[:, -1:]  # (B', 1, d)
                else:
                    h = self._backbone(torch.cat(inputs, dim=1))[:, -1:]
                if all_reference[t]:
                    token = reference[:, t:t + 1]  # every row feeds the reference: no need to sample
                else:
                    if guided:
                        token = self.head.sample(h[:batch_size], temperature=temperature, generator=generator,
                                                 cond_uncond=h[batch_size:], cfg_scale=cfg_scale, **sample_kw)
                    else:
                        token = self.head.sample(h, temperature=temperature, generator=generator, **sample_kw)
                    token = token.to(dtype)  # (B, 1, D)
                    if mask is not None:
                        token = torch.where(mask[:, t, None, None], reference[:, t:t + 1], token)
                out[:, t:t + 1] = token
                if t + 1 < length:
                    emb = self.in_proj(token)  # (B, 1, d)
                    inputs.append(torch.cat([emb, emb]) if guided else emb)
                    if use_cache:
                        inputs = inputs[-1:]
        return out

    def _decode_setup(self, start: torch.Tensor, length: int, use_cache: bool, compile: bool | str | Callable):
        """(step, cache, positions) of the cached decode loop: eager steps with int positions, or a
        ``torch.compile``d backbone over a preallocated static cache with 0-dim tensor positions."""
        if not use_cache:
            return None, None, None
        if not compile:
            return self._backbone, KVCache(), list(range(length))
        cache = self.backbone.new_cache(start.shape[0], start.device, compute_dtype(start))
        self.num_backbone_calls += length  # the compiled module bypasses _backbone's counter
        backend = "inductor" if compile is True else compile
        step = torch.compile(self.backbone, fullgraph=True, dynamic=False, backend=backend)
        return step, cache, torch.arange(length, device=start.device)

    def _check_reference(self, reference, use_reference, batch_size: int, length: int) -> torch.Tensor | None:
        if reference is None and use_reference is None:
            return None
        if reference is None:
            raise ValueError("use_reference was given without reference; pass reference (B, length, D) too")
        expected = (batch_size, length, self.latent_dim)
        if tuple(reference.shape) != expected:
            raise ValueError(f"reference must have shape {expected}, got {tuple(reference.shape)}")
        if use_reference is None:  # a reference alone is fed everywhere (teacher forcing as a generation)
            return torch.ones(batch_size, length, dtype=torch.bool)
        if tuple(use_reference.shape) != (batch_size, length) or use_reference.dtype != torch.bool:
            raise ValueError(f"use_reference must be a bool tensor of shape {(batch_size, length)}, got "
                             f"{use_reference.dtype} {tuple(use_reference.shape)}")
        return use_reference

"""CausalTransformer: a pre-norm Transformer over input embeddings, with a KV cache.

What: ``h = CausalTransformer(...)(x)`` maps embeddings ``x (B, T, d_model)`` to hidden states
``h (B, T, d_model)`` through ``depth`` pre-norm blocks (GPT-2 / nanoGPT layout)

    x = x + Attn(LN(x));   x = x + MLP(LN(x));   h = LN_f(x)

with ``F.scaled_dot_product_attention``. Positions are either rotary (RoPE, Su et al. 2021,
arXiv 2104.09864: q and k of position p are rotated by angles p * 10000^(-2i/head_dim)) or a
learned table added to the input.

Why: it is the one backbone of the toolkit. It knows nothing of latents, heads, tokens or
strategies: ``LatentAR`` wraps an input projection and a head around it, ``JointDiffusion`` uses
the bidirectional variant (``causal=False``), a byte-level CharLM wraps a token embedding and an
LM head around it.

KV cache: ``forward(x, cache=cache)`` appends the keys/values of the new positions to ``cache``
(preallocated to ``max_len`` on first use) and attends over everything cached so far, so decoding
one position at a time gives the same states as one full forward pass (tested to < 1e-5 in
float32). Only the causal variant can be cached. The cache is allocated in the compute dtype (bf16
under bf16 autocast), so no step converts the cached prefix.

Two ways to give the position: a Python int ``start_pos`` attends over the filled part of the cache
only (cheapest in eager mode); a 0-dim integer *tensor* ``start_pos`` is the static-shape path for
``torch.compile``: keys and values are written with ``index_copy_`` and every query attends over all
``max_len`` cached slots with a mask ``slot <= position``, so one compiled graph serves every
position (no recompile, no host read of the position). On that path the caller tracks the position:
``cache.length`` is left as it is and the inputs are not range-checked (``new_cache`` allocates).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

POSITIONS = ("rope", "learned")


class KVCache:
    """Per-layer keys and values of the positions decoded so far.

    ``k[l], v[l]``: ``(B, num_heads, max_len, head_dim)``, allocated by the transformer on first
    use (batch size, device and dtype come from the first input); ``length``: how many positions
    are filled. Create an empty one with ``KVCache()`` and pass it to every ``forward`` call.
    """

    def __init__(self) -> None:
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.length = 0

    @property
    def allocated(self) -> bool:
        return bool(self.k)

    @property
    def batch_size(self) -> int | None:
        return self.k[0].shape[0] if self.k else None

    def allocate(self, depth: int, batch_size: int, num_heads: int, max_len: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch_size, num_heads, max_len, head_dim)
        # the compute dtype (bf16 under autocast): the k/v of every step are stored as they come
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.length = 0

    def reset(self) -> None:
        """Forget the cached positions (keeps the buffers)."""
        self.length = 0

    def __repr__(self) -> str:
        shape = tuple(self.k[0].shape) if self.k else None
        return f"KVCache(length={self.length}, layers={len(self.k)}, shape={shape})"


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls produce for input ``x``: autocast's (e.g. bf16) when it is on, else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def rope_tables(max_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables ``(max_len, head_dim // 2)`` for RoPE: angle[p, i] = p * base^(-2i / head_dim)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x (B, H, T, hd)`` by ``cos, sin (T, hd/2)`` (rotate-half pairing, as GPT-NeoX / Llama)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, dropout: float, causal: bool):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.causal = causal
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                cache: KVCache | None, layer: int, start_pos: int | torch.Tensor,
                positions: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # each (B, H, T, hd)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        mask, is_causal = None, False
        if cache is not None and torch.is_tensor(start_pos):  # static shapes: all max_len slots, masked
            ck, cv = cache.k[layer], cache.v[layer]
            ck.index_copy_(2, positions, k.to(ck.dtype))
            cv.index_copy_(2, positions, v.to(cv.dtype))
            slots = torch.arange(ck.shape[2], device=x.device)
            mask = slots[None, :] <= positions[:, None]  # (T, max_len): query i sees slots 0..start_pos + i
            k, v = ck.to(q.dtype), cv.to(q.dtype)  # no-ops when the cache holds the compute dtype
        elif cache is not None:
            end = start_pos + T
            cache.k[layer][:, :, start_pos:end] = k
            cache.v[layer][:, :, start_pos:end] = v
            # (B, H, end, hd); the .to is a no-op when the cache was allocated in the compute dtype
            k, v = cache.k[layer][:, :, :end].to(q.dtype), cache.v[layer][:, :, :end].to(q.dtype)
            if T > 1:  # query i sits at position start_pos + i and sees keys 0..start_pos + i
                mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(diagonal=start_pos)
        else:
            is_causal = self.causal and T > 1
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, d_model: int, mlp_ratio: float):
        super().__init__()
        hidden = int(round(d_model * mlp_ratio))
        self.fc = nn.Linear(d_model, hidden)
        self.proj = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model: int, num_heads: int, mlp_ratio: float, dropout: float, causal: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, num_heads, dropout, causal)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, rope, cache, layer, start_pos, positions):
        x = x + self.drop(self.attn(self.ln1(x), rope, cache, layer, start_pos, positions))
        return x + self.drop(self.mlp(self.ln2(x)))


class CausalTransformer(nn.Module):
    """Pre-norm Transformer over embeddings ``(B, T, d_model) -> (B, T, d_model)``.

    Args:
        d_model, depth, num_heads: width, number of blocks, attention heads (d_model % num_heads == 0).
        max_len: longest sequence (positions 0..max_len-1); longer inputs raise a ValueError.
        mlp_ratio: MLP hidden width / d_model.
        dropout: attention and residual dropout (training only).
        pos: ``"rope"`` (rotary q/k, no parameters) or ``"learned"`` (a table added to the input).
        causal: True: position t attends to 0..t (and a KV cache may be used); False: every
            position attends to every other (bidirectional, e.g. for JointDiffusion).

    ``forward(x, cache=None, start_pos=None)``: ``x`` holds positions ``start_pos .. start_pos+T-1``;
    ``start_pos`` defaults to ``cache.length`` (0 without a cache). With a ``KVCache`` the new keys
    and values are stored and attention covers every cached position. A 0-dim tensor ``start_pos``
    takes the static-shape path of the module docstring (allocate with :meth:`new_cache` first).
    """

    def __init__(self, d_model: int, depth: int, num_heads: int, max_len: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, pos: str = "rope", causal: bool = True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}; pick num_heads dividing d_model")
        if pos not in POSITIONS:
            raise ValueError(f"unknown pos={pos!r}; expected one of {POSITIONS}")
        if pos == "rope" and (d_model // num_heads) % 2:
            raise ValueError(f"RoPE needs an even head_dim, got d_model/num_heads={d_model // num_heads}; "
                             f"change num_heads or use pos='learned'")
        if depth < 1 or max_len < 1:
            raise ValueError(f"depth and max_len must be >= 1, got depth={depth}, max_len={max_len}")
        self.d_model, self.depth, self.num_heads, self.max_len = d_model, depth, num_heads, max_len
        self.head_dim = d_model // num_heads
        self.pos, self.causal = pos, causal
        if pos == "learned":
            self.pos_emb = nn.Embedding(max_len, d_model)
        else:
            cos, sin = rope_tables(max_len, self.head_dim)
            self.register_buffer("rope_cos", cos, persistent=False)  # (max_len, hd/2)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, num_heads, mlp_ratio, dropout, causal) for _ in range(depth))
        self.ln_f = nn.LayerNorm(d_model)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 * depth)
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * depth))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def new_cache(self, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> KVCache:
        """An allocated, empty KVCache for ``batch_size`` rows in ``dtype`` (use the compute dtype:
        bf16 under bf16 autocast): what the static-shape path needs before the first call."""
        if not self.causal:
            raise ValueError("a KVCache needs causal=True: in the bidirectional variant earlier states depend on later positions")
        cache = KVCache()
        cache.allocate(self.depth, batch_size, self.num_heads, self.max_len, self.head_dim, torch.device(device), dtype)
        return cache

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                start_pos: int | torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"CausalTransformer expects embeddings of shape (B, T, {self.d_model}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        if T == 0:
            raise ValueError("CausalTransformer got an empty sequence (T=0); pass at least one position")
        if torch.is_tensor(start_pos):
            return self._forward_static(x, cache, start_pos)
        if start_pos is None:
            start_pos = cache.length if cache is not None else 0
        if start_pos < 0:
            raise ValueError(f"start_pos must be >= 0, got {start_pos}")
        if start_pos + T > self.max_len:
            raise ValueError(f"positions {start_pos}..{start_pos + T - 1} exceed max_len={self.max_len}; "
                             f"shorten the sequence or build the model with max_len >= {start_pos + T}")
        if cache is not None:
            self._check_cache(cache, B, start_pos, x)
        elif start_pos and self.causal:
            raise ValueError(f"start_pos={start_pos} without a cache would drop the earlier positions; pass the KVCache that holds them")
        x = self._blocks(x, cache, start_pos, torch.arange(start_pos, start_pos + T, device=x.device))
        if cache is not None:
            cache.length = start_pos + T
        return x

    def _forward_static(self, x: torch.Tensor, cache: KVCache | None, start_pos: torch.Tensor) -> torch.Tensor:
        """The static-shape cached pass (tensor position; no host read, no range check)."""
        if not isinstance(cache, KVCache) or not cache.allocated:
            raise ValueError("a tensor start_pos is the static-cache path: pass a KVCache from new_cache(...)")
        if start_pos.dim() != 0 or start_pos.dtype.is_floating_point:
            raise ValueError(f"a tensor start_pos must be a 0-dim integer tensor, got {start_pos.dtype} "
                             f"{tuple(start_pos.shape)}")
        positions = start_pos.to(x.device) + torch.arange(x.shape[1], device=x.device)
        return self._blocks(x, cache, start_pos, positions)

    def _blocks(self, x: torch.Tensor, cache: KVCache | None, start_pos: int | torch.Tensor,
                positions: torch.Tensor) -> torch.Tensor:
        rope = None
        if self.pos == "learned":
            x = x + self.pos_emb(positions)
        else:
            rope = (self.rope_cos[positions], self.rope_sin[positions])
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, rope, cache, layer, start_pos, positions)
        return self.ln_f(x)

    def _check_cache(self, cache: KVCache, B: int, start_pos: int, x: torch.Tensor) -> None:
        if not self.causal:
            raise ValueError("a KVCache needs causal=True: in the bidirectional variant earlier states depend on later positions")
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a latentar.models.KVCache, got {type(cache).__name__}")
        if not cache.allocated:
            if start_pos:
                raise ValueError(f"empty KVCache but start_pos={start_pos}; decoding must start at position 0")
            cache.allocate(self.depth, B, self.num_heads, self.max_len, self.head_dim, x.device, compute_dtype(x))
            return
        if cache.batch_size != B:
            raise ValueError(f"KVCache holds batch size {cache.batch_size} but the input has {B}; use a new KVCache()")
        if len(cache.k) != self.depth or cache.k[0].shape[2] != self.max_len or cache.k[0].shape[1] != self.num_heads:
            raise ValueError(f"KVCache was allocated by a different transformer ({cache!r}); use a new KVCache()")
        if start_pos > cache.length:
            raise ValueError(f"start_pos={start_pos} leaves a gap after the {cache.length} cached positions; "
                             f"continue at start_pos={cache.length} (or earlier to overwrite)")

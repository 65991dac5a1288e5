"""CharLM: a byte-level language model = token embedding + CausalTransformer + LM head.

What: for a token sequence ``x (B, T)`` the model factorises p(x) = prod_t p(x_t | x_{<t}):

    inputs = [s, E x_0, ..., E x_{T-2}]           (B, T, d_model), s a learned start embedding
    h      = CausalTransformer(inputs)            (B, T, d_model), h_t sees s, x_{<t}
    logits = h E^T   (tied)  or  W h              (B, T, vocab_size)
    loss   = sum_t m_t CE(logits_t, x_t) / sum_t m_t     (m: the loss mask, e.g. answer bytes only)

The vocabulary defaults to the 260 ids of ``latentar.data.seq_tasks`` (256 bytes, PAD, BOS, SEP,
EOS); a seq2seq example ``prompt SEP answer EOS`` is one sequence whose loss mask covers the
answer and EOS, so a prompt is just a prefix (decoder-only seq2seq, as in GPT-style SFT).

Why: it is the token-level twin of ``LatentAR``, driven by the same exposure strategies through the
*sequence-model protocol* (docs/CONTRIBUTING.md), written once in :class:`TokenLMProtocol` and
shared with the Hugging Face adapter (``latentar.models.hf_adapter``):

* ``loss(x, context=..., context_noise=..., loss_mask=..., reduction=...)``: targets x, inputs the
  context (a self-generated or mixed sequence for scheduled sampling / BASH; noisy embeddings
  for ContextNoise). The start token is never noised.
* ``predict_parallel(x, mode="sample" | "argmax")``: every position t from p(. | x_{<t}) in one
  pass, without grad (pass 1 of two-pass scheduled sampling; RAC's correction labels).
* ``generate(batch_size, length, prompt=..., reference=..., use_reference=...)``: token by token
  with the KV cache (greedy, temperature, top-k, top-p); where ``use_reference`` is True the
  reference token is fed (and returned) instead of the sample.
* ``num_backbone_calls`` counts backbone passes (the cost measure of the strategies).
* ``training_step(batch)`` for the shared Trainer (a SeqTask dict batch or a TextCorpus pair).

Weight tying (Press & Wolf 2017, as GPT-2 / nanoGPT) multiplies by the embedding matrix directly,
so the state dict holds one tensor and ``save_pretrained`` (safetensors) needs no special case.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from latentar.models.transformer import CausalTransformer, KVCache
from latentar.pretrained import PretrainedMixin, register_to_config
from latentar.torch_utils import eval_mode

REDUCTIONS = ("mean", "sum", "none")
PREDICT_MODES = ("sample", "argmax")
EOS_CHECK_EVERY = 8  # generate reads "has every row produced EOS?" back to the host every 8 tokens
SEQ_TASK_VOCAB = 260  # latentar.data.seq_tasks.VOCAB_SIZE (models never import the data package)


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the nucleus of mass top_p (Holtzman et al. 2020).

    ``logits (..., V)``. The nucleus keeps the smallest set of highest-probability tokens whose
    mass reaches ``top_p`` (the token that crosses the threshold is kept, so at least one stays).
    """
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        k = min(int(top_k), logits.shape[-1])
        kth = logits.topk(k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # mass of strictly better tokens
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, greedy: bool = False, top_k: int | None = None,
                  top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of ``logits (..., V)`` -> ``(...)`` long: argmax if greedy (or temperature 0),
    else a draw from softmax(filter(logits) / temperature) with ``generator``."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if greedy or temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    if generator is not None and generator.device != flat.device:
        # a CPU generator driving a CUDA model: draw on the generator's device
        return torch.multinomial(flat.to(generator.device), 1, generator=generator).to(flat.device).view(probs.shape[:-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def left_align(prompts: torch.Tensor, lengths: Sequence[int] | torch.Tensor) -> list[torch.Tensor]:
    """Left-padded prompts ``(B, P)`` with true lengths ``(B,)`` -> the list of unpadded 1D prompts."""
    lengths = torch.as_tensor(lengths).tolist()
    return [prompts[i, prompts.shape[1] - int(n):] for i, n in enumerate(lengths)]


@torch.no_grad()
def complete(model, prompts: Sequence[torch.Tensor], length: int, **generate_kw) -> torch.Tensor:
    """Continue prompts of different lengths: ``(N, length)`` tokens from ``model.generate``.

    The backbone has no padding mask, so prompts are batched by length (rows of one length share a
    KV cache) and the results put back in the input order. ``generate_kw`` go to ``generate``;
    ``reference`` / ``use_reference`` (``(N, length)``) are split with the rows.
    """
    if not len(prompts):
        raise ValueError("complete() got no prompts")
    reference, use_reference = generate_kw.pop("reference", None), generate_kw.pop("use_reference", None)
    device = prompts[0].device
    out = torch.empty(len(prompts), length, dtype=torch.long, device=device)
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(int(p.numel()), []).append(i)
    for n in sorted(by_len):
        rows = by_len[n]
        idx = torch.tensor(rows, device=device)
        kw = dict(generate_kw)
        if reference is not None:
            kw["reference"] = reference[idx]
        if use_reference is not None:
            kw["use_reference"] = use_reference[idx]
        prompt = torch.stack([prompts[i] for i in rows]) if n else None
        out[idx] = model.generate(len(rows), length, prompt=prompt, **kw)
    return out


class TokenLMProtocol:
    """The sequence-model protocol over token ids, written once for every token LM.

    A subclass provides ``_start_embeds(B) -> (B, 1, d)``, ``embed(ids) -> (B, T, d)``,
    ``_run(embeds, cache, start_pos) -> logits (B, T, V)`` (one backbone pass that also counts
    ``num_backbone_calls``), ``_new_cache()``, ``vocab_size``, ``max_len`` (None = unbounded) and
    ``_param`` (any parameter, for device and dtype).
    """

    vocab_size: int
    max_len: int | None
    num_backbone_calls: int

    # ------------------------------------------------------------------ checks
    def _check_tokens(self, x: torch.Tensor, name: str = "x", values: bool = False) -> None:
        """Shape and dtype checks (metadata: no host read). ``values=True`` (the generate boundary)
        also range-checks the ids with one host read; the per-step paths leave that to the embedding
        lookup, whose IndexError :meth:`_embed_checked` turns into the same clear error."""
        if not torch.is_tensor(x) or x.dim() != 2 or x.dtype.is_floating_point or x.dtype == torch.bool:
            shape = f"{x.dtype} {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"expected {name} as integer token ids of shape (B, T), got {shape}")
        if x.shape[1] < 1 or (self.max_len is not None and x.shape[1] > self.max_len):
            raise ValueError(f"{name} has T={x.shape[1]} positions; this model handles 1..max_len={self.max_len} "
                             f"(build it with a larger max_len for longer sequences)")
        if values and x.numel():
            lo, hi = torch.stack([x.min(), x.max()]).tolist()
            if lo < 0 or hi >= self.vocab_size:
                raise ValueError(f"{name} holds ids in {lo}..{hi}, outside the vocabulary 0..{self.vocab_size - 1}")

    def _embed_checked(self, ids: torch.Tensor, name: str) -> torch.Tensor:
        """``embed(ids)``, with an out-of-vocabulary id reported by name (CPU raises IndexError at the
        lookup; CUDA asserts on the device). No host read."""
        try:
            return self.embed(ids)
        except IndexError:
            self._check_tokens(ids, name, values=True)  # the error path may read: names the ids
            raise

    @staticmethod
    def _check_labels(labels) -> None:
        if labels is not None:
            raise ValueError("token LMs are unconditional: put the condition in the prompt and pass labels=None")

    # ------------------------------------------------------------------ forward
    def _inputs(self, context: torch.Tensor, context_noise: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Input embeddings ``(B, T, d)`` = [s, E c_0, ..., E c_{T-2}], Gaussian noise on the E c part.

        ``context_noise``: std of the noise relative to the std of the embedding table, a float or a
        tensor broadcastable to the context positions ``(B, T)`` (noise on context token c_t).
        """
        B = context.shape[0]
        start = self._start_embeds(B)
        if context.shape[1] == 1:
            return start
        emb = self._embed_checked(context[:, :-1], "context")  # (B, T-1, d)
        if torch.is_tensor(context_noise) or context_noise:
            scale = torch.as_tensor(context_noise, dtype=emb.dtype, device=emb.device)
            if scale.dim() == 2:  # per position (B, T): noise on c_t scales E c_t
                scale = scale[:, :-1].unsqueeze(-1)
            elif scale.dim() == 1:  # per row (B,)
                scale = scale.view(-1, 1, 1)
            emb = emb + torch.randn_like(emb) * scale * self.embedding_std()
        return torch.cat([start.to(emb.dtype), emb], dim=1)

    def forward(self, x: torch.Tensor, context_noise: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Logits ``(B, T, V)``; row t scores x_t given the start token and ``x[:, :t]``."""
        self._check_tokens(x)
        return self._run(self._inputs(x, context_noise), None, 0)

    def forward_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, V)`` for input embeddings ``(B, T, d)`` fed as they are (no start token added):
        the hook for callers that build their own inputs, e.g. soft prompts prepended to ``embed(ids)``."""
        if embeds.dim() != 3:
            raise ValueError(f"expected input embeddings of shape (B, T, d), got {tuple(embeds.shape)}")
        return self._run(embeds, None, 0)

    def loss(self, x: torch.Tensor, labels=None, context: torch.Tensor | None = None,
             context_noise: float | torch.Tensor = 0.0, loss_mask: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy of targets ``x (B, T)`` given ``context`` (default x) as the input sequence.

        ``loss_mask (B, T)`` bool/float over positions of x (None = all); "mean" divides the masked
        sum by the mask's sum, "sum" returns the masked sum, "none" the ``(B, T)`` per-token loss
        (zero where masked out).
        """
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
        self._check_labels(labels)
        self._check_tokens(x)
        if context is None:
            context = x
        else:
            self._check_tokens(context, "context")
            if context.shape != x.shape:
                raise ValueError(f"context {tuple(context.shape)} must have the shape of the targets x {tuple(x.shape)}")
        logits = self._run(self._inputs(context, context_noise), None, 0)  # (B, T, V)
        per_token = F.cross_entropy(logits.float().transpose(1, 2), x, reduction="none")  # (B, T)
        if loss_mask is not None:
            if tuple(loss_mask.shape) != tuple(x.shape):
                raise ValueError(f"loss_mask must have the shape of x {tuple(x.shape)}, got {tuple(loss_mask.shape)}")
            mask = loss_mask.to(per_token.dtype)
            per_token = per_token * mask
        else:
            mask = None
        if reduction == "none":
            return per_token
        if reduction == "sum":
            return per_token.sum()
        return per_token.sum() / (mask.sum().clamp_min(1.0) if mask is not None else per_token.numel())

    def training_step(self, batch) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]:
        """Shared-Trainer hook (plain teacher forcing).

        * a SeqTask batch (dict with ``tokens (B, S)`` and ``loss_mask (B, S-1)`` over next-token
          targets): loss on the answer and EOS only;
        * a TextCorpus batch ``(input (B, n), target (B, n))``: the sequence ``input_0, target``,
          loss on every target byte.
        """
        x, mask = batch_to_tokens(batch)
        return self.loss(x, loss_mask=mask)

    @torch.no_grad()
    def predict_parallel(self, x: torch.Tensor, labels=None, temperature: float = 1.0, mode: str = "sample",
                         generator: torch.Generator | None = None, top_k: int | None = None,
                         top_p: float | None = None) -> torch.Tensor:
        """One token per position ``(B, T)``, position t drawn from p(. | x_{<t}) in one pass; no grad.

        ``mode="argmax"`` takes the most likely token (temperature is then irrelevant). The module's
        train/eval mode is left as it is (the caller decides whether dropout is on).
        """
        if mode not in PREDICT_MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {PREDICT_MODES}")
        self._check_labels(labels)
        logits = self.forward(x)
        return sample_logits(logits, temperature, greedy=mode == "argmax", top_k=top_k, top_p=top_p,
                             generator=generator)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, batch_size: int, length: int, prompt: torch.Tensor | None = None,
                 reference: torch.Tensor | None = None, use_reference: torch.Tensor | None = None,
                 labels=None, temperature: float = 1.0, greedy: bool = False, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None, use_cache: bool = True,
                 eos_id: int | None = None, pad_id: int | None = None) -> torch.Tensor:
        """``length`` new tokens ``(batch_size, length)`` after the start token and ``prompt``.

        * ``prompt (B, P)`` or ``(P,)``: fed first in one cached pass (same length for every row;
          use :func:`complete` for ragged prompts).
        * ``reference (B, length)`` + ``use_reference (B, length)`` bool: where True the reference
          token is fed and returned instead of the sample (prefix conditioning, BASH's mixed
          contexts); a reference alone is fed everywhere.
        * ``greedy`` (or ``temperature=0``), ``temperature``, ``top_k``, ``top_p``, ``generator``:
          how each token is drawn.
        * ``eos_id``: rows that produced it get ``pad_id`` (default ``eos_id``) afterwards, and the
          loop stops once every row has (reference positions still win where ``use_reference``).
        * ``use_cache=False`` recomputes the whole prefix at every step (same tokens, O(T^2)).

        Runs in eval mode (restored afterwards) and without grad.
        """
        self._check_labels(labels)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        device = self._param.device
        if prompt is not None:
            prompt = torch.as_tensor(prompt, device=device)
            if prompt.dim() == 1:
                prompt = prompt.unsqueeze(0).expand(batch_size, -1)
            self._check_tokens(prompt, "prompt", values=True)
            if prompt.shape[0] != batch_size:
                raise ValueError(f"prompt has {prompt.shape[0]} rows for batch_size={batch_size}")
        P = 0 if prompt is None else prompt.shape[1]
        if self.max_len is not None and 1 + P + length - 1 > self.max_len:
            raise ValueError(f"start + prompt ({P}) + {length} new tokens exceed max_len={self.max_len}; "
                             f"shorten them or build the model with a larger max_len")
        mask = self._check_reference(reference, use_reference, batch_size, length)
        if mask is not None:
            reference, mask = reference.to(device), mask.to(device)
        fill = eos_id if pad_id is None else pad_id
        # mask_after[t]: some row still feeds a reference at position t or later (one host read)
        mask_after = None if mask is None else mask.any(0).flip(0).cumsum(0).flip(0).gt(0).tolist()

        with eval_mode(self):
            first = self._start_embeds(batch_size)
            if prompt is not None:
                first = torch.cat([first, self.embed(prompt).to(first.dtype)], dim=1)  # (B, 1+P, d)
            cache = self._new_cache() if use_cache else None
            fed = first  # without the cache: everything fed so far
            new = first
            pos = 0
            out = torch.full((batch_size, length), fill if fill is not None else 0, dtype=torch.long, device=device)
            done = torch.zeros(batch_size, dtype=torch.bool, device=device)
            for t in range(length):
                if use_cache:
                    logits, cache = self._run_cached(new, cache, pos)
                    pos += new.shape[1]
                else:
                    logits = self._run(fed, None, 0)
                logits = logits[:, -1]  # (B, V)
                token = sample_logits(logits, temperature, greedy, top_k, top_p, generator)  # (B,)
                if eos_id is not None:
                    token = torch.where(done, torch.full_like(token, fill), token)
                if mask is not None:
                    token = torch.where(mask[:, t], reference[:, t], token)
                out[:, t] = token
                if eos_id is not None:
                    done = done | (token == eos_id)
                    # stop once every row is done: one host read every EOS_CHECK_EVERY tokens (the
                    # tokens are the same either way: finished rows only get fill after EOS)
                    if (t + 1) % EOS_CHECK_EVERY == 0 and t + 1 < length and bool(done.all()) \
                            and not (mask_after is not None and mask_after[t + 1]):
                        break
                if t + 1 < length:
                    new = self.embed(token[:, None]).to(first.dtype)  # (B, 1, d)
                    if not use_cache:
                        fed = torch.cat([fed, new], dim=1)
        return out

    def _check_reference(self, reference, use_reference, batch_size: int, length: int) -> torch.Tensor | None:
        if reference is None and use_reference is None:
            return None
        if reference is None:
            raise ValueError("use_reference was given without reference; pass reference (B, length) too")
        if tuple(reference.shape) != (batch_size, length) or reference.dtype.is_floating_point:
            raise ValueError(f"reference must be integer token ids of shape {(batch_size, length)}, got "
                             f"{reference.dtype} {tuple(reference.shape)}")
        if use_reference is None:
            return torch.ones(batch_size, length, dtype=torch.bool)
        if tuple(use_reference.shape) != (batch_size, length) or use_reference.dtype != torch.bool:
            raise ValueError(f"use_reference must be a bool tensor of shape {(batch_size, length)}, got "
                             f"{use_reference.dtype} {tuple(use_reference.shape)}")
        return use_reference

    def _run_cached(self, embeds: torch.Tensor, cache, start_pos: int):
        """One cached pass; returns (logits, cache) (HF caches may be replaced, ours is updated in place)."""
        return self._run(embeds, cache, start_pos), cache


def batch_to_tokens(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A Trainer batch -> ``(x (B, T), loss_mask (B, T) or None)`` over positions of x.

    SeqTask dicts give ``tokens`` with the mask ``[False] + loss_mask`` (the mask is stored over
    next-token targets ``tokens[1:]``); TextCorpus pairs give ``cat(input[:, :1], target)`` with
    position 0 masked out (so the loss covers exactly the targets).
    """
    if isinstance(batch, Mapping):
        if "tokens" not in batch:
            raise ValueError(f"a dict batch needs 'tokens' (and 'loss_mask'), as SeqTask yields; got keys {sorted(batch)}")
        x = batch["tokens"]
        mask = batch.get("loss_mask")
        if mask is not None:
            if mask.shape[1] == x.shape[1] - 1:
                mask = torch.cat([torch.zeros_like(mask[:, :1]), mask], dim=1)
            elif mask.shape != x.shape:
                raise ValueError(f"loss_mask {tuple(mask.shape)} fits neither tokens {tuple(x.shape)} nor tokens[:, 1:]")
        return x, mask
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(torch.is_tensor(b) for b in batch):
        inp, tgt = batch
        if inp.shape != tgt.shape or inp.dim() != 2:
            raise ValueError(f"a (input, target) batch needs two (B, n) tensors, got {tuple(inp.shape)}, {tuple(tgt.shape)}")
        x = torch.cat([inp[:, :1], tgt], dim=1)
        mask = torch.ones_like(x, dtype=torch.bool)
        mask[:, 0] = False
        return x, mask
    if torch.is_tensor(batch) and batch.dim() == 2:
        return batch, None
    raise ValueError(f"cannot read a token batch from {type(batch).__name__}: pass a SeqTask dict, an "
                     f"(input, target) pair (TextCorpus) or a (B, T) id tensor")


class CharLM(TokenLMProtocol, PretrainedMixin):
    """Byte-level causal LM; see the module docstring for the formula and the protocol.

    Args:
        vocab_size: number of token ids (260 = the seq-task vocabulary: bytes + PAD, BOS, SEP, EOS;
            256 for raw text).
        d_model, depth, num_heads, mlp_ratio, dropout, pos: the CausalTransformer.
        max_len: longest sequence (start token included in the count of positions: ``x`` may hold
            up to ``max_len`` tokens).
        tie_weights: logits = h E^T with the token embedding E (else a separate linear head).
    """

    @register_to_config
    def __init__(self, vocab_size: int = SEQ_TASK_VOCAB, d_model: int = 128, depth: int = 4, num_heads: int = 4,
                 max_len: int = 256, mlp_ratio: float = 4.0, dropout: float = 0.0, pos: str = "rope",
                 tie_weights: bool = True):
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        self.vocab_size, self.max_len, self.d_model = int(vocab_size), int(max_len), int(d_model)
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        self.start = nn.Parameter(torch.randn(d_model) * 0.02)
        self.backbone = CausalTransformer(d_model, depth, num_heads, max_len, mlp_ratio=mlp_ratio,
                                          dropout=dropout, pos=pos, causal=True)
        self.lm_head = None if tie_weights else nn.Linear(d_model, vocab_size, bias=False)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=0.02)
        self.num_backbone_calls = 0

    @property
    def _param(self) -> torch.Tensor:
        return self.tok_emb.weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(B, T, d_model)``."""
        return self.tok_emb(ids)

    def embedding_std(self) -> torch.Tensor:
        """Std of the embedding table (no grad): the unit of ``context_noise``."""
        return self.tok_emb.weight.detach().std()

    def _start_embeds(self, batch_size: int) -> torch.Tensor:
        return self.start.view(1, 1, -1).expand(batch_size, 1, -1)

    def _new_cache(self) -> KVCache:
        return KVCache()

    def _run(self, embeds: torch.Tensor, cache: KVCache | None, start_pos: int) -> torch.Tensor:
        if not torch.compiler.is_compiling():  # a Python int in a graph would recompile per call
            self.num_backbone_calls += 1
        h = self.backbone(embeds, cache=cache, start_pos=start_pos if cache is not None else None)  # (B, T, d)
        return h @ self.tok_emb.weight.t() if self.lm_head is None else self.lm_head(h)  # (B, T, V)

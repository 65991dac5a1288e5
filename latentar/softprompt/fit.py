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

Batched (:func:`fit_soft_prompts`): B prompts for B targets in one loop, one LM forward and backward
per step for all of them (the LM is frozen, so the fits share nothing but the LM's passes). Each
row is its own fit: its own AdamW state (the update is elementwise, so one AdamW over the
``(B, n, d)`` rows still fitting is B AdamWs; a finished row takes no update and its moments stay as
they were), its own seed, its own early stop (rows that reproduce their target leave the batch).
Row b's result is the single fit's of prompt b on target b, up to float rounding (bit for bit on
the CPU where batched matmuls are row-independent).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from collections.abc import Sequence

from latentar.softprompt.decoding import greedy, greedy_rows
from latentar.softprompt.objectives import BatchContext, Objective, StepContext, first_wrong, make_objective
from latentar.softprompt.prompt import PromptRows, SoftPrompt, TFPass, upcast
from latentar.train.reporting import progress_bar


@dataclass
class FitResult:
    """The outcome of one fit. ``target`` and ``output`` are ``(T,)`` ids (``output``: greedy decode of
    the final prompt); ``tf_loss`` / ``tf_accuracy``: teacher-forced CE (nats per token) and argmax
    accuracy of the final prompt; ``first_divergence``: common-prefix length of output and target;
    ``batch``: how many prompts were fitted together (1: alone); ``seconds``: wall time of the fit
    (in a batch, each step's time shared equally among the rows it advanced)."""

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
    batch: int = 1


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
    bar = progress_bar(total=max_steps, desc=f"fit {obj.name}", enabled=progress)  # a sweep's --verbose decides in a cell
    prompt.train()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for step in range(max_steps + 1):
            tf = prompt.teacher_forced(x, hidden=obj.needs_hidden)
            with torch.no_grad():
                tf_loss = float(F.cross_entropy(upcast(tf.logits)[0], x[0]))
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


ADAM_EPS = 1e-8  # torch.optim.AdamW's default, as the single fit uses


@torch.no_grad()
def adamw_rows(p: torch.Tensor, m: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, step: int, lr: float,
               betas: tuple[float, float], weight_decay: float, eps: float = ADAM_EPS) -> None:
    """torch.optim.AdamW's update (its single-tensor form) on rows ``rows`` of ``p (B, ...)`` only, from
    ``p.grad``; ``m`` / ``v`` the first and second moments, ``step`` the rows' step count after this
    update (every row still fitting has taken every step, so they share it). Other rows, their
    moments included, are left untouched: a finished fit stays finished."""
    b1, b2 = betas
    g = p.grad[rows]
    pr, mr, vr = p[rows], m[rows], v[rows]
    pr.mul_(1 - lr * weight_decay)
    mr.lerp_(g, 1 - b1)
    vr.mul_(b2).addcmul_(g, g, value=1 - b2)
    bias1, bias2_sqrt = 1 - b1 ** step, (1 - b2 ** step) ** 0.5
    denom = (vr.sqrt() / bias2_sqrt).add_(eps)
    pr.addcdiv_(mr, denom, value=-lr / bias1)
    p[rows], m[rows], v[rows] = pr, mr, vr


def _per_row(value: Any, B: int, what: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != B:
            raise ValueError(f"{what}: expected one per prompt ({B}), got {len(value)}")
        return list(value)
    return [value] * B


def fit_soft_prompts(prompts: Sequence[SoftPrompt], targets: Sequence[Any], objective: str | Objective = "ce",
                     max_steps: int = 2000, lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.9),
                     weight_decay: float = 0.01, seeds: int | Sequence[int] = 0, stop_on_exact: bool = True,
                     log_every: int = 0, progress: bool = False, objective_kwargs: dict | None = None,
                     objectives: Sequence[str | Objective] | None = None) -> list[FitResult]:
    """Fit ``prompts[b]`` to ``targets[b]`` for every b at once; row b's result is ``fit_soft_prompt(prompts[b],
    targets[b], ..., seed=seeds[b])``'s (see the module docstring). The prompts are updated in place.

    ``prompts``: B SoftPrompts on one frozen LM (the same ``FrozenLM`` object), all with n_virtual
    vectors; ``targets``: B texts or id sequences, of any lengths (right-padded, the padding masked);
    ``objective``: one spec for every row, or ``objectives``: one per row (rows sharing a spec are
    one group; each group's objective scores its rows at once). Objectives that do not batch
    (``Objective.batchable`` False: none of the built-in ones; an Objective subclass that does not override
    ``batch_loss``) are fitted one row at a time by :func:`fit_soft_prompt` (their results say
    ``batch=1``). ``seeds``: one, or one per row.
    """
    prompts = list(prompts)
    B = len(prompts)
    if B == 0:
        raise ValueError("fit_soft_prompts needs at least one prompt")
    if len(targets) != B:
        raise ValueError(f"one target per prompt: {B} prompts, {len(targets)} targets")
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    lm = prompts[0].lm
    for p in prompts:
        if not isinstance(p, SoftPrompt) or isinstance(p, PromptRows):
            raise TypeError(f"fit_soft_prompts fits SoftPrompts, got {type(p).__name__}")
        if p.lm is not lm:
            raise ValueError("the prompts of one batch must share one frozen LM (the same FrozenLM object)")
        if p.n_virtual != prompts[0].n_virtual:
            raise ValueError(f"the prompts of one batch need the same n_virtual, got {p.n_virtual} and "
                             f"{prompts[0].n_virtual}")
    seeds = [int(s) for s in _per_row(seeds, B, "seeds")]
    specs = _per_row(objective, B, "objective") if objectives is None else _per_row(list(objectives), B, "objectives")
    kwargs = objective_kwargs or {}
    ids = []
    for p, t in zip(prompts, targets):
        x = _as_ids(p, t)
        if x.shape[0] != 1:
            raise ValueError(f"one target per prompt; got a batch of {x.shape[0]} for one prompt")
        ids.append(p._check_ids(x)[0])
    # group rows by objective: one instance per distinct spec (or per Objective object)
    groups: dict[Any, tuple[Objective, list[int]]] = {}
    for b, spec in enumerate(specs):
        key = ("obj", id(spec)) if isinstance(spec, Objective) else ("spec", make_objective(spec, **kwargs).name)
        if key not in groups:
            groups[key] = (make_objective(spec, **kwargs), [])
        groups[key][1].append(b)
    results: list[FitResult | None] = [None] * B
    batched: list[tuple[Objective, list[int]]] = []
    for obj, rows in groups.values():
        if obj.batchable:
            batched.append((obj, rows))
            continue
        for b in rows:  # fallback: one at a time
            results[b] = fit_soft_prompt(prompts[b], ids[b], obj, max_steps=max_steps, lr=lr, betas=betas,
                                         weight_decay=weight_decay, seed=seeds[b], stop_on_exact=stop_on_exact,
                                         log_every=log_every, progress=progress)
    rows = [b for _, rs in batched for b in rs]
    if rows:
        fitted = _fit_batch([prompts[b] for b in rows], [ids[b] for b in rows],
                            [(obj, [rows.index(b) for b in rs]) for obj, rs in batched], max_steps, lr, betas,
                            weight_decay, [seeds[b] for b in rows], stop_on_exact, log_every, progress)
        for b, r in zip(rows, fitted):
            results[b] = r
    return results


def _fit_batch(prompts: list[SoftPrompt], ids: list[torch.Tensor], groups: list[tuple[Objective, list[int]]],
               max_steps: int, lr: float, betas: tuple[float, float], weight_decay: float, seeds: list[int],
               stop_on_exact: bool, log_every: int, progress: bool) -> list[FitResult]:
    """The batched loop of :func:`fit_soft_prompts` over rows whose objectives all batch."""
    B, lm, dev = len(prompts), prompts[0].lm, prompts[0].device
    lengths = torch.tensor([len(x) for x in ids], device=dev)
    T = int(lengths.max())
    X = torch.zeros(B, T, dtype=torch.long, device=dev)
    for b, x in enumerate(ids):
        X[b, :len(x)] = x
    pos_mask = torch.arange(T, device=dev) < lengths[:, None]  # (B, T)
    P = torch.stack([p.embeddings.detach() for p in prompts]).clone().requires_grad_(True)  # (B, n, d)
    m, v = torch.zeros_like(P), torch.zeros_like(P)
    group_of = torch.empty(B, dtype=torch.long)
    local = torch.empty(B, dtype=torch.long)  # a row's index within its group
    for gi, (obj, rs) in enumerate(groups):
        obj.reset()
        group_of[rs] = gi
        local[rs] = torch.arange(len(rs))
    needs_hidden = any(obj.needs_hidden for obj, _ in groups)
    gens = [torch.Generator().manual_seed(s) for s in seeds]  # each row's stand-in for a single fit's global RNG
    own = [torch.Generator().manual_seed(s) for s in seeds]  # ... and for its StepContext.generator
    snapshot = lm.snapshot()
    done = torch.zeros(B, dtype=torch.bool)
    steps, stopped = [0] * B, ["max_steps"] * B
    outputs: list[torch.Tensor | None] = [None] * B
    tf_loss, tf_acc, seconds = [float("nan")] * B, [float("nan")] * B, [0.0] * B
    history: list[list[dict[str, float]]] = [[] for _ in range(B)]
    bar = progress_bar(total=max_steps, desc=f"fit {B} prompts", enabled=progress)
    for step in range(max_steps + 1):
        active = (~done).nonzero().view(-1)
        if not len(active):
            break
        t0 = time.perf_counter()
        rows = PromptRows(P[active.to(dev)], lm)
        xa, la, ma = X[active], lengths[active], pos_mask[active]
        tf = rows.teacher_forced(xa, hidden=needs_hidden)
        with torch.no_grad():
            per_token = F.cross_entropy(upcast(tf.logits).transpose(1, 2), xa, reduction="none")
            loss_a = ((per_token * ma).sum(1) / la).tolist()
            correct = ((tf.logits.argmax(-1) == xa) & ma).sum(1)
            acc_a = (correct.float() / la).tolist()
        finishing = torch.zeros(len(active), dtype=torch.bool)
        if stop_on_exact and bool((correct == la).any()):
            cand = (correct == la).nonzero().view(-1)
            out = greedy_rows(rows.select(cand.to(dev)), xa[cand], torch.zeros_like(cand), int(la[cand].max()))
            for j, i in enumerate(cand.tolist()):
                L = int(la[i])
                if torch.equal(out[j, :L], xa[i, :L]):
                    b = int(active[i])
                    finishing[i], outputs[b], stopped[b] = True, out[j, :L].clone(), "exact"
        last = step == max_steps
        upd = (~finishing).nonzero().view(-1) if not last else finishing.new_zeros(0).long()
        metrics_of: dict[int, dict[str, float]] = {}
        row_loss = torch.full((len(active),), float("nan"))
        if len(upd):
            total = None
            for gi, (obj, _) in enumerate(groups):
                sel = upd[group_of[active[upd]] == gi]
                if not len(sel):
                    continue
                seld = sel.to(dev)
                ctx = BatchContext(rows.select(seld), xa[seld], la[seld],
                                   TFPass(tf.logits[seld], None if tf.hidden is None else tf.hidden[seld]),
                                   step, max_steps, [gens[int(active[i])] for i in sel], local[active[sel]],
                                   len(groups[gi][1]), [own[int(active[i])] for i in sel],
                                   log=bool(log_every) and step % log_every == 0)
                per_row, metrics = obj.batch_loss(ctx)
                row_loss[sel] = per_row.detach().float().cpu()
                metrics_of.update({int(i): metrics for i in sel})
                total = per_row.sum() if total is None else total + per_row.sum()
            P.grad = None
            total.backward()
            adamw_rows(P, m, v, active[upd].to(dev), step + 1, lr, betas, weight_decay)
        dt = (time.perf_counter() - t0) / len(active)
        for i, b in enumerate(active.tolist()):
            tf_loss[b], tf_acc[b], seconds[b], steps[b] = loss_a[i], acc_a[i], seconds[b] + dt, step
            if log_every and step % log_every == 0 and i in metrics_of:
                history[b].append({"step": step, "loss": float(row_loss[i]), "tf_loss": loss_a[i],
                                   "tf_accuracy": acc_a[i], **metrics_of[i]})
        done[active[finishing]] = True
        if last:
            done[:] = True
        if bar is not None:
            bar.update(1)
            bar.set_postfix(active=int((~done).sum()), exact=sum(s == "exact" for s in stopped))
    if bar is not None:
        bar.close()
    todo = [b for b in range(B) if outputs[b] is None]
    if todo:
        idx = torch.tensor(todo, device=dev)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = greedy_rows(PromptRows(P.detach()[idx], lm), X[idx], torch.zeros_like(idx), int(lengths[idx].max()))
        for j, b in enumerate(todo):
            outputs[b] = out[j, :int(lengths[b])].clone()
            seconds[b] += (time.perf_counter() - t0) / len(todo)
    with torch.no_grad():
        for b, p in enumerate(prompts):
            p.embeddings.copy_(P[b])
            p.eval()
    lm.assert_unchanged(snapshot)
    name = {b: obj.name for obj, rs in groups for b in rs}
    return [FitResult(objective=name[b], exact=bool(torch.equal(outputs[b], ids[b])), steps=steps[b],
                      tf_loss=tf_loss[b], tf_accuracy=tf_acc[b], first_divergence=first_wrong(outputs[b], ids[b]),
                      target=ids[b].detach().cpu(), output=outputs[b].detach().cpu(), seconds=seconds[b],
                      stopped=stopped[b], history=history[b], batch=B) for b in range(B)]

"""Objectives for fitting a soft prompt to one target x = (x_0, ..., x_{T-1}), combinable with weights.

Each objective sees one :class:`StepContext` per optimizer step (the prompt, the target, the
teacher-forced pass, the step) and returns ``(loss, metrics)``; only the prompt receives gradients.

* ``ce``: teacher-forced cross-entropy ``L = -(1/T) sum_t log p(x_t | p, x_<t)``.
* ``ss``: scheduled sampling, :class:`latentar.exposure.ScheduledSampling` run on the prompted LM
  (which speaks the sequence-model protocol): the context position t is the model's own prediction
  with probability p(e), targets stay x. Not target-valid (Huszar 2015).
* ``ul``: token-level unlikelihood (Welleck et al. 2019, facebookresearch/unlikelihood_training,
  ``candidate_penalty_ce_loss``) on the tokens the free-running model wrongly produces:
  ``L = (1/T) sum_t sum_{c in C_t} -log clamp(1 - p(c | p, x_<t), 1e-5)`` with
  ``C_t = {y_t} if y_t != x_t`` for the greedy free run y (repeats and out-of-order tokens alike),
  optionally also the wrong teacher-forced argmax and Welleck's previous-context candidates
  ``{x_j : j < t} - {x_t}``. The penalty is taken on the gold prefix, where "y_t is wrong" is true
  supervision (the free run itself is refreshed every ``rollout_every`` steps).
* ``rl``: sequence-level REINFORCE with a baseline, MIXER-style (Ranzato et al. 2016): the first k
  target tokens are fed (teacher forcing; k shrinks by ``delta`` every ``stage_steps`` steps), the
  rest y_{k:} are sampled; ``L = -(1/K) sum_i (r_i - b_i) (1/(T-k)) sum_{t>=k} log p(y_it | p, x_<k, y_i,k:t)``
  with reward ``r = (1 - w) lcp(y_{k:}, x_{k:}) / (T - k) + w 1[y_{k:} = x_{k:}]`` (partial credit for
  the correct prefix, a bonus for exact match) and baseline b the greedy continuation's reward
  (self-critical, Rennie et al. 2017), the mean of the other samples, or a running mean.
* ``pf``: professor forcing (Lamb et al. 2016): a small discriminator D on hidden-state sequences
  learns teacher-forced (label 1) against free-running (label 0) passes; the prompt minimises
  ``-log D(h_free)`` so the free run's states look teacher-forced.

Greedy reconstruction is exact exactly when every teacher-forced argmax is right: the greedy run
and the teacher-forced pass share their context up to the first wrong argmax k, which is where the
free run leaves the target (``StepContext.first_error``). The free run is therefore decoded from
x_<k onwards with the cache prefilled by one pass.

Batched (:func:`latentar.softprompt.fit.fit_soft_prompts`): every objective also scores G prompts
at once, ``batch_loss(BatchContext) -> (per-row losses (G,), metrics)``, each row's loss the
single-fit loss of that row's prompt and target (targets right-padded, padding masked; each row's
random draws from its own generators, in the single fit's order). ``rl`` decodes every row's K
samples in one pass and scores the G * K sequences in one more; ``pf`` batches the free runs and
the LM passes, while each row's own discriminator (a small GRU) runs row by row on its unpadded
states.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentar.exposure.base import bernoulli_mask, mix
from latentar.exposure.scheduled_sampling import ScheduledSampling
from latentar.exposure.sequence_level import prefix_reward, reinforce_loss
from latentar.exposure.unlikelihood import UL_MIN, previous_token_candidates
from latentar.exposure.unlikelihood import unlikelihood_loss  # noqa: F401  (re-exported by latentar.softprompt)
from latentar.exposure.schedules import linear, make_schedule
from latentar.softprompt.decoding import greedy, greedy_rows, sample, sample_rows
from latentar.softprompt.prompt import PromptRows, SoftPrompt, TFPass, upcast
from latentar.torch_utils import eval_mode



# ------------------------------------------------------------------ the formulas, as pure functions
def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean ``-log softmax(logits)[target]`` over all positions; ``logits (B, T, V)``, ``targets (B, T)``.
    (Summed per row, then divided: the batched fit's per-row CE is the same arithmetic.)"""
    per_token = F.cross_entropy(upcast(logits).transpose(1, 2), targets, reduction="none")  # (B, T)
    return (per_token.sum(1) / targets.shape[1]).mean()


def ul_penalty(logits: torch.Tensor, min_prob: float = UL_MIN) -> torch.Tensor:
    """``-log clamp(1 - p, min_prob)`` for every token of ``logits (..., V)``: the unlikelihood of
    :func:`latentar.exposure.unlikelihood.unlikelihood_loss`, summed over candidates by the caller."""
    return -torch.log((1.0 - upcast(logits).softmax(-1)).clamp_min(min_prob))


def first_wrong(pred: torch.Tensor, target: torch.Tensor) -> int:
    """First position where ``pred (T,)`` differs from ``target (T,)``; T if none."""
    wrong = (pred.view(-1) != target.view(-1)).nonzero()
    return int(wrong[0]) if len(wrong) else int(target.numel())


def repeated_positions(seq: Sequence[int], n: int = 2) -> list[bool]:
    """``True`` at t when ``seq[t-n+1 .. t]`` already occurred earlier in ``seq`` (a loop token)."""
    seen, out = set(), []
    for t in range(len(seq)):
        gram = tuple(seq[max(0, t - n + 1):t + 1])
        out.append(len(gram) == n and gram in seen)
        if len(gram) == n:
            seen.add(gram)
    return out


# ------------------------------------------------------------------ the step context
@dataclass
class StepContext:
    """What an objective sees at one optimizer step.

    ``x (1, T)`` the target ids; ``tf`` the teacher-forced pass (with grad; hidden states when some
    objective needs them); ``generator`` a CPU generator for the objectives' own sampling.
    """

    prompt: SoftPrompt
    x: torch.Tensor
    tf: TFPass
    step: int
    max_steps: int
    generator: torch.Generator
    _free: torch.Tensor | None = field(default=None, repr=False)

    @property
    def progress(self) -> float:
        return self.step / max(1, self.max_steps)

    @property
    def length(self) -> int:
        return int(self.x.shape[1])

    def first_error(self) -> int:
        """First position whose teacher-forced argmax is wrong (= greedy's first divergence); T if none."""
        return first_wrong(self.tf.logits.detach().argmax(-1)[0], self.x[0])

    def free_run(self) -> torch.Tensor:
        """The greedy free run ``(T,)``: x_<k, then greedy from there (k = :meth:`first_error`); memoized."""
        if self._free is None:
            k = self.first_error()
            x = self.x[0]
            if k == self.length:
                self._free = x.clone()
            else:
                cont = greedy(self.prompt, self.length - k, prefix=x[:k])[0]
                self._free = torch.cat([x[:k], cont])
        return self._free


@dataclass
class BatchContext:
    """What an objective sees at one step of a batched fit: G rows, each its own prompt and target.

    ``prompt`` the G rows' prompts (:class:`PromptRows`); ``x (G, T)`` the targets, right-padded with
    id 0 to the longest, ``lengths (G,)`` their lengths; ``tf`` the G rows' teacher-forced pass (with
    grad); ``generators`` one CPU generator per row, seeded as a single fit seeds the global RNG, so a
    row draws what its single fit would draw (``sample_generators``: likewise for the single fit's own
    ``StepContext.generator``, which REINFORCE and professor forcing draw from); ``rows (G,)`` each
    row's index among the ``num_rows`` rows this objective fits (rows drop out as they finish; state
    kept between steps is indexed by it); ``log``: whether this step's metrics are recorded (metrics
    that cost passes of their own may be skipped when not).
    """

    prompt: PromptRows
    x: torch.Tensor
    lengths: torch.Tensor
    tf: TFPass
    step: int
    max_steps: int
    generators: list[torch.Generator]
    rows: torch.Tensor
    num_rows: int
    sample_generators: list[torch.Generator] | None = None
    log: bool = True
    _free: torch.Tensor | None = field(default=None, repr=False)

    @property
    def progress(self) -> float:
        return self.step / max(1, self.max_steps)

    @property
    def mask(self) -> torch.Tensor:
        """``(G, T)`` bool: the target positions (False on padding)."""
        T = self.x.shape[1]
        return torch.arange(T, device=self.x.device) < self.lengths.to(self.x.device)[:, None]

    def row_mean(self, per_token: torch.Tensor) -> torch.Tensor:
        """``(G, T) -> (G,)``: the mean over each row's target positions (padding excluded)."""
        m = self.mask.to(per_token.dtype)
        return (per_token * m).sum(1) / self.lengths.to(per_token.device, per_token.dtype)

    def first_error(self) -> torch.Tensor:
        """``(G,)``: each row's first wrong teacher-forced argmax (= greedy's first divergence); its length if none."""
        wrong = (self.tf.logits.detach().argmax(-1) != self.x) & self.mask
        T = self.x.shape[1]
        pos = torch.where(wrong, torch.arange(T, device=self.x.device), T).min(1).values
        return torch.minimum(pos, self.lengths.to(pos.device))

    def free_run(self) -> torch.Tensor:
        """``(G, T)`` greedy free runs: x_<k, then greedy from there, per row (as :meth:`StepContext.free_run`);
        memoized."""
        if self._free is None:
            k = self.first_error()
            free = self.x.clone()
            todo = (k < self.lengths.to(k.device)).nonzero().view(-1)
            if len(todo):
                length = int(self.lengths[todo].max())
                free[todo, :length] = greedy_rows(self.prompt.select(todo), self.x[todo], k[todo], length)
            self._free = free
        return self._free


# ------------------------------------------------------------------ objectives
class Objective(ABC):
    """``loss(ctx) -> (scalar loss, metrics)``; ``reset()`` clears per-target state before a fit.

    An objective that overrides ``batch_loss(BatchContext) -> (per-row losses (G,), metrics)``, row
    g's loss being :meth:`loss` of row g's prompt and target alone, is ``batchable``: fit_soft_prompts
    fits G prompts in one step with it. One that does not is fitted one row at a time.
    """

    name: str = "objective"
    needs_hidden: bool = False

    @property
    def batchable(self) -> bool:
        """True when the class overrides :meth:`batch_loss` (read, not declared, so it cannot disagree)."""
        return type(self).batch_loss is not Objective.batch_loss

    @abstractmethod
    def loss(self, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective's scalar loss at this step, and metrics to log."""

    def batch_loss(self, ctx: BatchContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Per-row losses ``(G,)`` of G prompts at once; only ``batchable`` objectives have one."""
        raise TypeError(f"objective {self.name!r} ({type(self).__name__}) has no batch_loss: it fits one "
                        "prompt at a time (fit_soft_prompts does so for it; check .batchable before calling)")

    def reset(self) -> None:
        """Forget state carried between steps (baselines, discriminators); called at the start of a fit."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _zero(ctx: StepContext) -> torch.Tensor:
    return ctx.tf.logits.sum() * 0.0  # a zero that keeps the graph (the step still runs)


class CrossEntropy(Objective):
    """Teacher-forced cross-entropy on the target."""

    name = "ce"

    def loss(self, ctx):
        return token_cross_entropy(ctx.tf.logits, ctx.x), {}

    def batch_loss(self, ctx):
        per_token = F.cross_entropy(upcast(ctx.tf.logits).transpose(1, 2), ctx.x, reduction="none")  # (G, T)
        return ctx.row_mean(per_token), {}


class ScheduledSamplingObjective(Objective):
    """Two-pass scheduled sampling through :class:`latentar.exposure.ScheduledSampling`.

    The prompted LM is the sequence model (``SoftPrompt.loss`` / ``predict_parallel``). Default
    schedule: ``p(e) = p_max * linear(e, end=ramp)`` over fit progress e = step / max_steps (p stays
    below 1: always sampling does badly, Bengio et al. 2015); ``mode="argmax"`` feeds the tokens greedy
    decoding would produce. Any ``schedule`` accepted by ``ScheduledSampling`` overrides it.
    """

    name = "ss"

    def __init__(self, p_max: float = 0.5, ramp: float = 0.25, schedule: Any = None,
                 schedule_kwargs: dict | None = None, mode: str = "argmax", passes: int = 2):
        if not 0.0 <= p_max <= 1.0:
            raise ValueError(f"p_max must be a probability, got {p_max}")
        self.p_max, self.ramp = float(p_max), float(ramp)
        if schedule is None:
            if schedule_kwargs:
                raise ValueError("schedule_kwargs need a named schedule")
            schedule = self._default_schedule
        self.strategy = ScheduledSampling(schedule=schedule, schedule_kwargs=schedule_kwargs, mode=mode, passes=passes)

    def _default_schedule(self, progress: float) -> float:
        return self.p_max * linear(progress, end=self.ramp)

    def loss(self, ctx):
        loss, metrics = self.strategy.loss(ctx.prompt, ctx.x, progress=ctx.progress)
        return loss, metrics

    def batch_loss(self, ctx):
        """The strategy's two-pass loss per row: each row's coins (and samples) from its own generator,
        drawn in the order the strategy draws them from the global RNG in a single fit. The first
        prediction pass (context = the targets) reuses the teacher-forced logits: the same pass."""
        st, p = self.strategy, self.strategy.probability(ctx.progress)
        x, lengths = ctx.x, ctx.lengths.tolist()
        if p == 0.0:  # teacher forcing exactly (the single fit's extra pass gives the same logits)
            per_token = F.cross_entropy(upcast(ctx.tf.logits).transpose(1, 2), x, reduction="none")
            return ctx.row_mean(per_token), {"ss_p": 0.0, "ss_share": 0.0}
        replaced = torch.zeros_like(x, dtype=torch.bool)
        for g, (L, gen) in enumerate(zip(lengths, ctx.generators)):
            replaced[g, :L] = bernoulli_mask((1, L), p, x.device, gen)[0]
        context = x
        for k in range(st.passes - 1):
            if k == 0:  # the first prediction pass reads the targets: it is the teacher-forced pass
                logits = upcast(ctx.tf.logits.detach())
            else:
                with torch.no_grad(), eval_mode(ctx.prompt):
                    logits = upcast(ctx.prompt(context))  # (G, T, V)
            if st.mode == "argmax" or st.temperature == 0:
                pred = logits.argmax(-1)
            else:
                pred = x.clone()
                for g, (L, gen) in enumerate(zip(lengths, ctx.generators)):
                    probs = (logits[g, :L] / st.temperature).softmax(-1)
                    pred[g, :L] = torch.multinomial(probs.to(gen.device), 1, generator=gen).view(-1).to(x.device)
            context = mix(replaced, pred, x)
        per_token = ctx.prompt.loss(x, context=context, reduction="none")  # (G, T)
        share = float(replaced.sum()) / max(1, sum(lengths))
        return ctx.row_mean(per_token), {"ss_p": p, "ss_share": share}

    def __repr__(self) -> str:
        return f"ScheduledSamplingObjective(p_max={self.p_max}, ramp={self.ramp}, strategy={self.strategy!r})"


class Unlikelihood(Objective):
    """Token-level unlikelihood on the free run's wrong tokens (see the module docstring).

    Args:
        previous_context: also penalise Welleck's candidates ``{x_j : j < t} - {x_t}``.
        teacher_forced: also penalise the teacher-forced argmax where it is wrong (the token greedy
            decoding would emit from the gold prefix; at the first divergence it is the free run's).
        rollout_every: decode a new free run every this many steps (default 4: the free run is the
            costly part); in between the last run's wrong tokens stay candidates (they are still
            wrong at their positions, so the supervision stays correct).
        ngram: n of the repeated n-grams counted as loop tokens in the metrics.
        min_prob: the clamp of ``1 - p``.
    """

    name = "ul"

    def __init__(self, previous_context: bool = False, teacher_forced: bool = False, rollout_every: int = 4,
                 ngram: int = 2, min_prob: float = UL_MIN):
        if rollout_every < 1:
            raise ValueError(f"rollout_every must be >= 1, got {rollout_every}")
        self.previous_context, self.teacher_forced = bool(previous_context), bool(teacher_forced)
        self.rollout_every = int(rollout_every)
        self.ngram, self.min_prob = int(ngram), float(min_prob)
        self._free: torch.Tensor | None = None
        self._free_rows: dict[int, torch.Tensor] = {}

    def reset(self):
        self._free = None
        self._free_rows = {}

    def candidates(self, x: torch.Tensor, free: torch.Tensor, vocab: int,
                   tf_argmax: torch.Tensor | None = None) -> torch.Tensor:
        """``(1, T, V)`` bool: the free run's token where it is wrong (+ the wrong teacher-forced argmax,
        + previous-context tokens, as configured)."""
        T = x.shape[1]
        cand = torch.zeros(1, T, vocab, dtype=torch.bool, device=x.device)
        for tokens in (free, tf_argmax if self.teacher_forced else None):
            if tokens is None:
                continue
            pos = (tokens != x[0]).nonzero().view(-1)
            cand[0, pos, tokens[pos]] = True
        if self.previous_context:
            for t in range(1, T):
                cand[0, t, x[0, :t]] = True
            cand[0, torch.arange(T, device=x.device), x[0]] = False
        return cand

    def loss(self, ctx):
        if self._free is None or ctx.step % self.rollout_every == 0:
            self._free = ctx.free_run()
        free, x = self._free, ctx.x
        cand = self.candidates(x, free, ctx.tf.logits.shape[-1], ctx.tf.logits.detach().argmax(-1)[0])
        if not cand.any():
            return _zero(ctx), {"ul_candidates": 0.0}
        wrong = (free != x[0]).tolist()
        loops = repeated_positions(free.tolist(), self.ngram)
        in_target = set(x[0].tolist())
        rep = sum(w and lp for w, lp in zip(wrong, loops))
        ooo = sum(w and (not lp) and tok in in_target for w, lp, tok in zip(wrong, loops, free.tolist()))
        penalty = ul_penalty(ctx.tf.logits, self.min_prob)
        return (penalty * cand.to(penalty.dtype)).sum() / x.shape[1], {
            "ul_candidates": float(cand.sum()), "ul_repeats": float(rep), "ul_out_of_order": float(ooo)}

    def batch_loss(self, ctx):
        """Per row as :meth:`loss`: the free runs are decoded for all rows at once (every
        ``rollout_every`` steps, or when a row has none yet) and kept per row between refreshes."""
        rows = ctx.rows.tolist()
        if ctx.step % self.rollout_every == 0 or any(r not in self._free_rows for r in rows):
            free = ctx.free_run()
            self._free_rows.update({r: free[g] for g, r in enumerate(rows)})
        free = torch.stack([self._free_rows[r] for r in rows])  # (G, T)
        x, mask, V = ctx.x, ctx.mask, ctx.tf.logits.shape[-1]
        cand = torch.zeros(*x.shape, V, dtype=torch.bool, device=x.device)
        for tokens in (free, ctx.tf.logits.detach().argmax(-1) if self.teacher_forced else None):
            if tokens is None:
                continue
            wrong = (tokens != x) & mask
            cand |= torch.zeros_like(cand).scatter_(-1, tokens.unsqueeze(-1), wrong.unsqueeze(-1))
        if self.previous_context:
            cand |= previous_token_candidates(x, mask, V)
        penalty = ul_penalty(ctx.tf.logits, self.min_prob)  # (G, T, V)
        per_row = (penalty * cand.to(penalty.dtype)).sum((1, 2)) / ctx.lengths.to(penalty.device, penalty.dtype)
        return per_row, {"ul_candidates": float(cand.sum()) / len(rows)}

    def __repr__(self) -> str:
        return (f"Unlikelihood(previous_context={self.previous_context}, teacher_forced={self.teacher_forced}, "
                f"rollout_every={self.rollout_every}, ngram={self.ngram})")


BASELINES = ("greedy", "mean", "ema")


class Reinforce(Objective):
    """REINFORCE with a baseline over sampled continuations after a shrinking teacher-forced prefix (MIXER).

    Args:
        num_samples: K continuations sampled per step (temperature ``temperature``).
        baseline: "greedy" (the greedy continuation's reward: self-critical), "mean" (leave-one-out
            mean of the other samples), "ema" (running mean of rewards, decay ``ema_decay``).
        exact_bonus: w in the reward (see :func:`prefix_reward`).
        delta: tokens the teacher-forced prefix shrinks by per stage (None: max(1, T // 16)).
        stage_steps: steps per stage; the prefix is ``k = max(0, T - delta * (1 + step // stage_steps))``.
    """

    name = "rl"

    def __init__(self, num_samples: int = 4, temperature: float = 1.0, baseline: str = "greedy",
                 exact_bonus: float = 0.5, delta: int | None = None, stage_steps: int = 20, ema_decay: float = 0.9):
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; expected one of {BASELINES}")
        if num_samples < 1 or (baseline == "mean" and num_samples < 2):
            raise ValueError(f"num_samples must be >= 1 (>= 2 for the leave-one-out mean), got {num_samples}")
        if stage_steps < 1 or (delta is not None and delta < 1):
            raise ValueError(f"stage_steps and delta must be >= 1, got {stage_steps}, {delta}")
        self.num_samples, self.temperature, self.baseline = int(num_samples), float(temperature), baseline
        self.exact_bonus, self.delta, self.stage_steps = float(exact_bonus), delta, int(stage_steps)
        self.ema_decay = float(ema_decay)
        self._ema: float | None = None
        self._ema_rows: dict[int, float] = {}

    def reset(self):
        self._ema = None
        self._ema_rows = {}

    def prefix_length(self, T: int, step: int) -> int:
        """MIXER's teacher-forced prefix k at ``step`` for a target of length T."""
        delta = self.delta or max(1, T // 16)
        return max(0, T - delta * (1 + step // self.stage_steps))

    def loss(self, ctx):
        x, T, prompt = ctx.x[0], ctx.length, ctx.prompt
        k = self.prefix_length(T, ctx.step)
        K = self.num_samples
        greedy_row = self.baseline == "greedy"
        ys = sample(prompt, T - k, K, self.temperature, prefix=x[:k], generator=ctx.generator,
                    with_greedy=greedy_row)  # (K [+1], T-k)
        if greedy_row:
            ys, g = ys[:K], ys[K:]
        r = prefix_reward(ys, x[k:], self.exact_bonus)  # (K,)
        if greedy_row:
            b = prefix_reward(g, x[k:], self.exact_bonus).expand(K)
        elif self.baseline == "mean":
            b = (r.sum() - r) / (K - 1)
        else:
            b = torch.full_like(r, self._ema if self._ema is not None else float(r.mean()))
            m = float(r.mean())
            self._ema = m if self._ema is None else self.ema_decay * self._ema + (1 - self.ema_decay) * m
        full = torch.cat([x[:k].expand(K, k), ys], dim=1)  # (K, T)
        logits = prompt.teacher_forced(full).logits[:, k:]  # (K, T-k, V): row t scores y_t
        token_logp = upcast(logits).log_softmax(-1).gather(-1, ys.unsqueeze(-1)).squeeze(-1)  # (K, T-k)
        return reinforce_loss(token_logp, r, b), {
            "rl_prefix": float(k), "rl_reward": float(r.mean()), "rl_baseline": float(b.mean()),
            "rl_exact": float((r >= 1.0 - 1e-9).float().mean())}

    def batch_loss(self, ctx):
        """Per row as :meth:`loss`: each row's prefix k from its own length, its K (+ greedy) continuations
        decoded for all rows at once (:func:`sample_rows`, row b drawing from its ``sample_generators[b]``,
        the single fit's ``ctx.generator``), one teacher-forced pass over the G * K sequences."""
        if ctx.sample_generators is None:
            raise ValueError("batched REINFORCE needs BatchContext.sample_generators (one per row)")
        x, G, K = ctx.x, ctx.x.shape[0], self.num_samples
        lengths = ctx.lengths.tolist()
        ks = [self.prefix_length(L, ctx.step) for L in lengths]
        greedy_row = self.baseline == "greedy"
        R = K + int(greedy_row)
        ys = sample_rows(ctx.prompt, x, torch.tensor(ks), ctx.lengths, K, self.temperature, ctx.sample_generators,
                         with_greedy=greedy_row).view(G, R, -1)  # (G, R, T): x_<k, then the continuation
        adv, rewards, bases = [], [], []
        for g, (L, k, row) in enumerate(zip(lengths, ks, ctx.rows.tolist())):
            r = prefix_reward(ys[g, :K, k:L], x[g, k:L], self.exact_bonus)  # (K,)
            if greedy_row:
                b = prefix_reward(ys[g, K:, k:L], x[g, k:L], self.exact_bonus).expand(K)
            elif self.baseline == "mean":
                b = (r.sum() - r) / (K - 1)
            else:
                ema = self._ema_rows.get(row)
                b = torch.full_like(r, ema if ema is not None else float(r.mean()))
                m = float(r.mean())
                self._ema_rows[row] = m if ema is None else self.ema_decay * ema + (1 - self.ema_decay) * m
            adv.append(r - b)
            rewards.append(float(r.mean()))
            bases.append(float(b.mean()))
        full = ys[:, :K].reshape(G * K, -1)  # (G K, T)
        samples = ctx.prompt.select(torch.arange(G, device=x.device).repeat_interleave(K))
        logits = samples.teacher_forced(full).logits  # (G K, T, V)
        token_logp = upcast(logits).log_softmax(-1).gather(-1, full.unsqueeze(-1)).squeeze(-1).view(G, K, -1)
        pos = torch.arange(x.shape[1], device=x.device)
        per_row = [reinforce_loss(token_logp[g][:, (pos >= k) & (pos < L)], adv[g], torch.zeros_like(adv[g]))
                   for g, (L, k) in enumerate(zip(lengths, ks))]
        return torch.stack(per_row), {
            "rl_prefix": sum(ks) / G, "rl_reward": sum(rewards) / G, "rl_baseline": sum(bases) / G}

    def __repr__(self) -> str:
        return (f"Reinforce(num_samples={self.num_samples}, temperature={self.temperature}, baseline={self.baseline!r}, "
                f"exact_bonus={self.exact_bonus}, delta={self.delta}, stage_steps={self.stage_steps})")


class HiddenDiscriminator(nn.Module):
    """Professor forcing's discriminator: ``h (B, T, d) -> logit (B,)``, "teacher-forced" > 0.

    LayerNorm (no affine: HF and CharLM states differ in scale) -> Linear(d, H) -> tanh ->
    bidirectional GRU(H) -> mean over time -> Linear(2H, 1).
    """

    def __init__(self, d_model: int, hidden: int = 64):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, elementwise_affine=False)
        self.proj = nn.Linear(d_model, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        g, _ = self.gru(torch.tanh(self.proj(self.norm(h.float()))))  # (B, T, 2H)
        return self.out(g.mean(1)).squeeze(-1)  # (B,)


class ProfessorForcing(Objective):
    """Professor forcing with a small discriminator on last-layer hidden states (see the module docstring).

    Each step: the discriminator takes ``d_steps`` AdamW steps on ``BCE(D(h_tf), 1) + BCE(D(h_free), 0)``
    (both detached), then the prompt's loss is ``-log D(h_free) = softplus(-D(h_free))`` with D fixed.
    The free run is the greedy one (:meth:`StepContext.free_run`); h_free comes from a pass with grad
    over it, so the prompt learns to move the free-running states towards the teacher-forced ones.
    With a frozen LM the adversarial gradient swamps CE at weight 1 (on the stdlib CharLM, 64-character
    targets fell to 0.53 teacher-forced accuracy); give it a small weight, e.g. ``"ce+pf*0.1"``.
    """

    name = "pf"
    needs_hidden = True

    def __init__(self, hidden: int = 64, lr: float = 1e-3, d_steps: int = 1):
        if hidden < 1 or d_steps < 1 or lr <= 0:
            raise ValueError(f"need hidden >= 1, d_steps >= 1, lr > 0; got {hidden}, {d_steps}, {lr}")
        self.hidden, self.lr, self.d_steps = int(hidden), float(lr), int(d_steps)
        self.disc: HiddenDiscriminator | None = None
        self.opt: torch.optim.Optimizer | None = None
        self._discs: dict[int, tuple[HiddenDiscriminator, torch.optim.Optimizer]] = {}  # batched: one per row

    def reset(self):
        self.disc, self.opt, self._discs = None, None, {}

    def _new(self, d_model: int, device: torch.device,
             generator: torch.Generator) -> tuple[HiddenDiscriminator, torch.optim.Optimizer]:
        """A fresh discriminator (seeded from ``generator``, the global RNG untouched) and its AdamW."""
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
            disc = HiddenDiscriminator(d_model, self.hidden)
        disc = disc.to(device)
        return disc, torch.optim.AdamW(disc.parameters(), lr=self.lr)

    def _build(self, ctx: StepContext) -> None:
        self.disc, self.opt = self._new(ctx.prompt.lm.d_model, ctx.prompt.device, ctx.generator)

    def _step(self, disc: HiddenDiscriminator, opt: torch.optim.Optimizer, h_tf: torch.Tensor,
              h_free: torch.Tensor, accuracy: bool = True) -> tuple[torch.Tensor, float, float]:
        """``d_steps`` discriminator updates, then the prompt's loss with D fixed: (g_loss, d_loss, D's
        accuracy after the updates; NaN unless ``accuracy``: it costs two more passes of D)."""
        for _ in range(self.d_steps):
            d_tf, d_free = disc(h_tf.detach()), disc(h_free.detach())
            d_loss = F.softplus(-d_tf).mean() + F.softplus(d_free).mean()
            opt.zero_grad(set_to_none=True)
            d_loss.backward()
            opt.step()
        for p in disc.parameters():
            p.requires_grad_(False)
        try:
            g_loss = F.softplus(-disc(h_free)).mean()
        finally:
            for p in disc.parameters():
                p.requires_grad_(True)
        acc = float("nan")
        if accuracy:
            with torch.no_grad():
                acc = 0.5 * (float((disc(h_tf) > 0).float().mean()) + float((disc(h_free) <= 0).float().mean()))
        return g_loss, float(d_loss.detach()), acc

    def loss(self, ctx):
        if ctx.tf.hidden is None:
            raise ValueError("professor forcing needs the teacher-forced hidden states (needs_hidden=True)")
        if self.disc is None:
            self._build(ctx)
        free = ctx.free_run().unsqueeze(0)  # (1, T)
        h_free = ctx.prompt.teacher_forced(free, hidden=True).hidden  # (1, T, d), grad to the prompt
        g_loss, d_loss, acc = self._step(self.disc, self.opt, ctx.tf.hidden, h_free)
        return g_loss, {"pf_d_loss": d_loss, "pf_d_acc": acc}

    def batch_loss(self, ctx):
        """Per row as :meth:`loss`: the free runs and their hidden states for all rows at once, then each
        row's own discriminator (seeded from its ``sample_generators[g]``) on its unpadded states."""
        if ctx.tf.hidden is None:
            raise ValueError("professor forcing needs the teacher-forced hidden states (needs_hidden=True)")
        if ctx.sample_generators is None:
            raise ValueError("batched professor forcing needs BatchContext.sample_generators (one per row)")
        h_free = ctx.prompt.teacher_forced(ctx.free_run(), hidden=True).hidden  # (G, T, d)
        losses, d_losses, accs = [], [], []
        for g, (L, row) in enumerate(zip(ctx.lengths.tolist(), ctx.rows.tolist())):
            if row not in self._discs:
                self._discs[row] = self._new(ctx.prompt.lm.d_model, ctx.prompt.device, ctx.sample_generators[g])
            g_loss, d_loss, acc = self._step(*self._discs[row], ctx.tf.hidden[g:g + 1, :L], h_free[g:g + 1, :L],
                                             accuracy=ctx.log)
            losses.append(g_loss)
            d_losses.append(d_loss)
            accs.append(acc)
        return torch.stack(losses), {"pf_d_loss": sum(d_losses) / len(losses), "pf_d_acc": sum(accs) / len(accs)}

    def __repr__(self) -> str:
        return f"ProfessorForcing(hidden={self.hidden}, lr={self.lr}, d_steps={self.d_steps})"


# ------------------------------------------------------------------ combinations
OBJECTIVES: dict[str, Callable[[], Objective]] = {
    "ce": CrossEntropy, "ss": ScheduledSamplingObjective, "ul": Unlikelihood, "rl": Reinforce, "pf": ProfessorForcing,
}


@dataclass
class Term:
    """One weighted objective: ``weight * schedule(progress) * loss``; ``schedule`` is None (1), a
    schedule name of ``latentar.exposure.schedules`` (with ``schedule_kwargs``), a number or a callable."""

    objective: Objective
    weight: float = 1.0
    schedule: Any = None
    schedule_kwargs: dict | None = None

    def __post_init__(self):
        if not isinstance(self.objective, Objective):
            raise TypeError(f"Term.objective must be an Objective, got {type(self.objective).__name__}")
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"a term's weight must be finite and >= 0, got {self.weight}")
        self._scale = None if self.schedule is None else make_schedule(self.schedule, self.schedule_kwargs)

    def factor(self, progress: float) -> float:
        return self.weight * (1.0 if self._scale is None else float(self._scale(progress)))


class Combination(Objective):
    """``L = sum_i w_i s_i(e) L_i`` over :class:`Term` s; metrics of every term, plus ``loss_<name>``."""

    def __init__(self, terms: Sequence[Term]):
        if not terms:
            raise ValueError("a combination needs at least one term")
        names = [t.objective.name for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"objective listed twice in {names}; give each objective once with its weight")
        self.terms = list(terms)
        self.name = "+".join(t.objective.name if t.weight == 1.0 else f"{t.objective.name}*{t.weight:g}"
                             for t in self.terms)
        self.needs_hidden = any(t.objective.needs_hidden for t in self.terms)

    @property
    def batchable(self) -> bool:
        return all(t.objective.batchable for t in self.terms)

    def reset(self):
        for t in self.terms:
            t.objective.reset()

    def loss(self, ctx):
        total, metrics = None, {}
        for t in self.terms:
            f = t.factor(ctx.progress)
            if f == 0.0:
                continue
            value, m = t.objective.loss(ctx)
            metrics[f"loss_{t.objective.name}"] = float(value.detach())
            metrics.update(m)
            total = f * value if total is None else total + f * value
        return (total if total is not None else _zero(ctx)), metrics

    def batch_loss(self, ctx):
        if not self.batchable:
            alone = [t.objective.name for t in self.terms if not t.objective.batchable]
            raise TypeError(f"objective {self.name!r} has no batch_loss: its term(s) {alone} fit one prompt "
                            "at a time (fit_soft_prompts does so for it; check .batchable before calling)")
        total, metrics = None, {}
        for t in self.terms:
            f = t.factor(ctx.progress)
            if f == 0.0:
                continue
            value, m = t.objective.batch_loss(ctx)
            metrics[f"loss_{t.objective.name}"] = float(value.detach().mean())
            metrics.update(m)
            total = f * value if total is None else total + f * value
        return (total if total is not None else ctx.tf.logits.sum((1, 2)) * 0.0), metrics

    def __repr__(self) -> str:
        return f"Combination({self.name!r})"


def make_objective(spec: str | Objective | Sequence, **kwargs: dict) -> Objective:
    """An objective from a spec: ``"ce"``, ``"ce+ul"``, ``"ce,ss,ul,rl"`` (commas or plus signs join
    terms), ``"ce+ul*0.5"`` (a weight), an :class:`Objective`, or a list of those / of :class:`Term` s.

    ``kwargs`` maps a short name to its constructor arguments, e.g. ``rl={"baseline": "mean"}``.
    """
    unknown = set(kwargs) - set(OBJECTIVES)
    if unknown:
        raise ValueError(f"options for unknown objectives {sorted(unknown)}; known: {sorted(OBJECTIVES)}")
    if isinstance(spec, Objective):
        return spec
    parts = [p.strip() for p in spec.replace(",", "+").split("+") if p.strip()] if isinstance(spec, str) else list(spec)
    if not parts:
        raise ValueError("empty objective spec; use e.g. 'ce' or 'ce+ul'")
    terms = []
    for p in parts:
        if isinstance(p, Term):
            terms.append(p)
            continue
        if isinstance(p, Objective):
            terms.append(Term(p))
            continue
        name, _, w = str(p).partition("*")
        name = name.strip().lower()
        if name not in OBJECTIVES:
            raise ValueError(f"unknown objective {name!r} in {spec!r}; expected names from {sorted(OBJECTIVES)} "
                             f"joined by '+' (weights as 'ul*0.5')")
        try:
            weight = float(w) if w else 1.0
        except ValueError as e:
            raise ValueError(f"cannot read the weight {w!r} of {name!r} in {spec!r}") from e
        terms.append(Term(OBJECTIVES[name](**kwargs.get(name, {})), weight))
    return terms[0].objective if len(terms) == 1 and terms[0].weight == 1.0 and terms[0].schedule is None \
        else Combination(terms)

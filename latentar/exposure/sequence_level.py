"""A sequence-level objective: REINFORCE with a baseline on the model's own answers, with MIXER's
annealing of the sampled suffix (Williams 1992; Ranzato et al., ICLR 2016, "Sequence Level
Training with Recurrent Neural Networks").

What: after an SFT warm-up, every step feeds the first k answer tokens of ``rollout_rows`` batch
rows from the data, samples the rest from the model (KV cache), and scores each sampled suffix
y_{k:} against the reference x_{k:}:

    r_i  = (1 - w) lcp(y_{i,k:}, x_{k:}) / (A - k) + w 1[y_{i,k:} = x_{k:}]      (reward="prefix")
    r_i  = BLEU-N(y_{i,k:}, x_{k:}), add-one smoothed, no brevity penalty      (reward="bleu")
    b_i  = mean_{l != i} r_l                                                   (leave-one-out baseline)
    J_RL = - (1/R) sum_i (r_i - b_i) (1/(A - k)) sum_{t >= k} log p(y_it | x, x_{<k}, y_{i,k:t})
    J    = J_SFT + rl_weight J_RL

MIXER anneals k: the sampled share of the answer grows linearly from ``start_share`` at the end of
the warm-up to 1 at the end of training (``mixer=False``: the whole answer is sampled from the
start, plain REINFORCE). Unlike MIXER's XENT-on-the-prefix, J_SFT stays on every position, as BASH
and RAC keep it, so all the offline and online strategies share one anchor.

The prefix reward suits tasks with one right answer (partial credit for the correct prefix, a
bonus for an exact match). On free text a sampled continuation almost never shares a prefix with
the reference, so that reward is ~0 for every row and REINFORCE gets no signal. ``reward="bleu"``
scores n-gram overlap instead, as MIXER itself did (Ranzato et al. trained on BLEU).

``targets_valid = True``: no target is reused under a foreign prefix; the reward scores the model's
own sequence, so the optimum is the reward's (Huszar's objection to scheduled sampling does not
apply). The cost is online: ``A - k`` cached passes per step for ``rollout_rows`` rows.
"""
from __future__ import annotations

import torch
from torch import nn

from latentar.exposure.base import SeqBatch, Strategy, check_finite, make_batch, rollout, trainable_mask
from latentar.torch_utils import eval_mode


def reinforce_loss(token_logp: torch.Tensor, rewards: torch.Tensor, baseline: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """``-(1/K) sum_i (r_i - b_i) mean_t log p_it`` for ``token_logp (K, L)``, ``rewards, baseline (K,)``;
    the mean over t runs over ``mask (K, L)`` when given. The advantage is a constant (no gradient
    flows into the reward or the baseline)."""
    adv = (rewards - baseline).detach().to(token_logp.dtype)
    if mask is None:
        per_row = token_logp.mean(dim=1)
    else:
        m = mask.to(token_logp.dtype)
        per_row = (token_logp * m).sum(1) / m.sum(1).clamp_min(1.0)
    return -(adv * per_row).mean()


def bleu_reward(sample_ids: torch.Tensor, target: torch.Tensor, max_n: int = 4,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sentence BLEU-N per row of ``sample_ids (K, L)`` against ``target`` ``(L,)`` or ``(K, L)``
    (Papineni et al. 2002): the geometric mean over n = 1..max_n of the clipped n-gram precision

        p_n = (1 + sum_g min(count_y(g), count_x(g))) / (1 + number of n-grams of y),

    with add-one smoothing (Lin & Och 2004) so that a row without a 4-gram match is not 0. Sample
    and reference have equal lengths, so there is no brevity penalty. With ``mask (K, L)`` only
    the masked positions are scored, in both sequences (an n-gram must lie wholly inside them).
    Exact n-gram matching on the device, no hashing: O(L^2) per row."""
    if not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n must be an int >= 1, got {max_n!r}")
    target = (target if target.dim() == 2 else target.view(1, -1)).expand_as(sample_ids)
    valid = torch.ones_like(sample_ids, dtype=torch.bool) if mask is None else mask.bool()
    L = sample_ids.shape[1]
    eq_yx = sample_ids[:, :, None] == target[:, None, :]        # (K, L, L): token i of y equals token j of x
    eq_yy = sample_ids[:, :, None] == sample_ids[:, None, :]
    earlier = torch.ones(L, L, dtype=torch.bool, device=sample_ids.device).tril(-1)  # j < i
    log_p = torch.zeros(sample_ids.shape[0], device=sample_ids.device)
    for n in range(1, max_n + 1):
        if n > 1:  # n-gram (i..i+n-1) equals (j..j+n-1): extend the (n-1)-gram match by one token
            eq_yx = eq_yx[:, :-1, :-1] & (sample_ids[:, n - 1:, None] == target[:, None, n - 1:])
            eq_yy = eq_yy[:, :-1, :-1] & (sample_ids[:, n - 1:, None] == sample_ids[:, None, n - 1:])
            valid = valid[:, :-1] & valid[:, 1:]
            earlier = earlier[:-1, :-1]
        if eq_yx.shape[1] == 0:
            break
        pair = valid[:, :, None] & valid[:, None, :]
        in_ref = (eq_yx & pair).sum(2)                           # count_x of y's n-gram at i
        rank = (eq_yy & pair & earlier).sum(2)                   # earlier copies of it in y
        matched = (valid & (rank < in_ref)).sum(1)               # clipped matches
        log_p = log_p + torch.log((matched + 1.0) / (valid.sum(1) + 1.0))
    return torch.exp(log_p / max_n)


REWARDS = ("prefix", "bleu")


def prefix_reward(sample_ids: torch.Tensor, target: torch.Tensor, exact_bonus: float = 0.5,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(1 - w) lcp / L + w 1[exact]`` per row of ``sample_ids (K, L)`` against ``target`` ``(L,)`` or
    ``(K, L)``: 1 for an exact match, partial credit for the length of the correct prefix. With
    ``mask (K, L)`` only the masked positions are scored (L = their count per row)."""
    if not 0.0 <= exact_bonus <= 1.0:
        raise ValueError(f"exact_bonus must lie in [0, 1], got {exact_bonus}")
    target = target if target.dim() == 2 else target.view(1, -1)
    scored = torch.ones_like(sample_ids, dtype=torch.bool) if mask is None else mask.bool()
    wrong = (sample_ids != target) & scored  # (K, L)
    exact = ~wrong.any(1)
    lcp = (scored & (wrong.long().cumsum(1) == 0)).sum(1).float()
    L = scored.sum(1).clamp_min(1).float()
    return (1.0 - exact_bonus) * lcp / L + exact_bonus * exact.float()


class SequenceLevel(Strategy):
    """REINFORCE with a leave-one-out baseline, MIXER-annealed; see the module docstring.

    Args:
        warmup: training progress (0..1) of SFT alone before the first rollout.
        mixer: anneal the sampled share of the answer from ``start_share`` to 1 (else always 1).
        start_share: MIXER's first sampled share (Ranzato et al. start from the last Delta tokens).
        rollout_rows: batch rows rolled out per step (>= 2, for the baseline); the online cost.
        temperature: sampling temperature of the rollouts.
        exact_bonus: w in the prefix reward.
        rl_weight: weight of J_RL.
        reward: "prefix" (correct-prefix credit + exact bonus: tasks with one answer) or "bleu"
            (smoothed sentence BLEU-4: free text); see the module docstring.
    """

    name = "sequence_level"
    targets_valid = True

    def __init__(self, warmup: float = 0.5, mixer: bool = True, start_share: float = 0.25, rollout_rows: int = 8,
                 temperature: float = 1.0, exact_bonus: float = 0.5, rl_weight: float = 1.0,
                 reward: str = "prefix"):
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; expected one of {REWARDS}")
        self.reward = reward
        self.warmup = check_finite("warmup (a share of training)", warmup, 0.0, 1.0)
        self.start_share = check_finite("start_share", start_share, 0.0, 1.0)
        if not isinstance(rollout_rows, int) or isinstance(rollout_rows, bool) or rollout_rows < 2:
            raise ValueError(f"rollout_rows must be an int >= 2 (the baseline needs another row), got {rollout_rows!r}")
        self.mixer, self.rollout_rows = bool(mixer), rollout_rows
        self.temperature = check_finite("temperature", temperature)
        self.exact_bonus = check_finite("exact_bonus", exact_bonus, 0.0, 1.0)
        self.rl_weight = check_finite("rl_weight", rl_weight)

    def sampled_share(self, progress: float) -> float:
        """The share of each answer sampled from the model at ``progress`` (0 during the warm-up)."""
        if progress < self.warmup:
            return 0.0
        if not self.mixer:
            return 1.0
        ramp = (progress - self.warmup) / max(1e-12, 1.0 - self.warmup)
        return min(1.0, self.start_share + (1.0 - self.start_share) * ramp)

    def loss(self, model: nn.Module, x: torch.Tensor, progress: float = 0.0, labels: torch.Tensor | None = None,
             loss_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        b = make_batch(x, labels, loss_mask)
        if not b.discrete:
            raise ValueError("the sequence-level objective samples tokens; it has no continuous-latent form")
        sft = model.loss(b.x, **b.model_kwargs())
        share = self.sampled_share(progress)
        if share == 0.0 or b.x.shape[0] < 2:
            return sft, {"sft": sft.detach(), "rl_active": 0.0}
        R = min(self.rollout_rows, b.x.shape[0])
        rows = SeqBatch(b.x[:R], None if b.labels is None else b.labels[:R],
                        None if b.loss_mask is None else b.loss_mask[:R])
        answer = trainable_mask(rows.x, rows.loss_mask)
        index = answer.long().cumsum(1) - 1  # answer index at answer positions
        keep = torch.ceil((1.0 - share) * answer.sum(1).float()).long()  # teacher-fed answer tokens
        sampled = answer & (index >= keep.unsqueeze(1))
        with eval_mode(model):
            y = rollout(model, rows, ~sampled, self.temperature, R)
        if self.reward == "bleu":
            r = bleu_reward(y, rows.x, mask=sampled)
        else:
            r = prefix_reward(y, rows.x, self.exact_bonus, mask=sampled)
        base = (r.sum() - r) / (R - 1)
        logp = -model.loss(y, loss_mask=sampled, reduction="none")  # (R, T), zero off the sampled span
        j_rl = reinforce_loss(logp, r, base, mask=sampled)
        return sft + self.rl_weight * j_rl, {"sft": sft.detach(), "rl": j_rl.detach(),
                                             "rl_active": 1.0, "rl_share": share,
                                             "rl_reward": r.mean().detach()}

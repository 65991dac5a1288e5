"""Token-level unlikelihood training (Welleck et al., ICLR 2020, "Neural Text Generation with
Unlikelihood Training"; facebookresearch/unlikelihood_training, ``candidate_penalty_ce_loss``).

What: besides the likelihood of the target, push down the probability of *candidate* tokens the
model should not produce at position t:

    J = - sum_t log p(x_t | x_{<t})  +  alpha sum_t sum_{c in C_t} - log clamp(1 - p(c | x_{<t}), 1e-5)

with Welleck's previous-context candidates C_t = {x_j : j < t, j trained} - {x_t}: tokens already
written in the answer that are not the next one, the repeats that make free-running text loop.
Both sums run over the trained positions and are divided by their count; one backbone pass
serves both terms. ``alpha = 1`` is the paper's token-level setting.

``targets_valid = True``: the context is the data's and the target is the data's; the penalty is a
prior against repetition, which is wrong wherever the data itself repeats (running sums do: a
finding the comparison reports rather than hides).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentar.exposure.base import Strategy, check_finite, make_batch, trainable_mask

UL_MIN = 1e-5  # Welleck et al.'s clamp of 1 - p


def unlikelihood_loss(logits: torch.Tensor, candidates: torch.Tensor, min_prob: float = UL_MIN) -> torch.Tensor:
    """``(1/(B T)) sum_{b,t} sum_{c: candidates[b,t,c]} -log clamp(1 - p_{b,t}(c), min_prob)``.

    ``logits (B, T, V)``, ``candidates (B, T, V)`` bool.
    """
    if candidates.shape != logits.shape:
        raise ValueError(f"candidates {tuple(candidates.shape)} must have the logits' shape {tuple(logits.shape)}")
    probs = logits.float().softmax(-1)
    penalty = -torch.log((1.0 - probs).clamp_min(min_prob))  # (B, T, V)
    return (penalty * candidates.to(penalty.dtype)).sum() / (logits.shape[0] * logits.shape[1])


def previous_token_candidates(x: torch.Tensor, trained: torch.Tensor, vocab: int) -> torch.Tensor:
    """``(B, T, V)`` bool: at trained position t, every token of an earlier trained position except x_t."""
    seen = F.one_hot(x, vocab).bool() & trained.unsqueeze(-1)  # (B, T, V): written at t
    before = (seen.long().cumsum(1) - seen.long()) > 0  # written strictly before t
    cand = before & trained.unsqueeze(-1)
    return cand & ~F.one_hot(x, vocab).bool()


class TokenUnlikelihood(Strategy):
    """Likelihood + ``alpha`` x token-level unlikelihood of previous-context candidates (module docstring)."""

    name = "unlikelihood"
    targets_valid = True

    def __init__(self, alpha: float = 1.0, min_prob: float = UL_MIN):
        self.alpha = check_finite("alpha (the unlikelihood weight)", alpha)
        self.min_prob = check_finite("min_prob", min_prob, 0.0, 1.0)

    def loss(self, model: nn.Module, x: torch.Tensor, progress: float = 0.0, labels: torch.Tensor | None = None,
             loss_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        b = make_batch(x, labels, loss_mask)
        if not b.discrete:
            raise ValueError("unlikelihood penalises token candidates; it has no continuous-latent form")
        trained = trainable_mask(b.x, b.loss_mask)
        logits = model(b.x).float()  # (B, T, V): row t scores x_t
        m = trained.float()
        n = m.sum().clamp_min(1.0)
        nll = (F.cross_entropy(logits.transpose(1, 2), b.x, reduction="none") * m).sum() / n
        cand = previous_token_candidates(b.x, trained, logits.shape[-1])
        ul = unlikelihood_loss(logits, cand, self.min_prob) * (b.x.shape[0] * b.x.shape[1]) / n
        return nll + self.alpha * ul, {"sft": nll.detach(), "ul": ul.detach(),
                                       "ul_candidates": cand.sum() / n}

"""``latentar demo huszar``: the correctness criterion made visible on a length-2 toy.

    latentar demo huszar [--steps 400] [--symbols 4] [--p-equal 0.9] [--sigma 0.5] [--seed 0] [--json]

Data: (x1, x2) over K symbols with P(x1) uniform and P(x2 = x1 | x1) = p_equal
(``latentar.data.toys.length2_joint``). Three copies of one tiny model (:class:`PairLM`) get the
same data, steps, batch and optimizer, under three strategies:

* TeacherForcing: x2 is predicted from the data's x1 -> the model recovers the joint P(x1, x2).
* ScheduledSampling, fully annealed (p = 1): x2 is predicted from the model's own sample of x1,
  with the data's x2 as target. Huszar (2015, arXiv 1511.05101) shows the optimum is the product
  of the marginals P(x1) P(x2): the target carries no information about the sampled prefix.
* ContextNoise: x2 is predicted from a noisy embedding of the data's x1; the target stays valid
  for that context, so the model stays near the joint (smoothed by the noise) and keeps the
  dependence.

Each model is a table we can read in closed form, Q(a, b) = q(x1 = a) q(x2 = b | x1 = a), and the
demo prints KL(Q || P) and KL(Q || P1 P2) in nats. For reference KL(P1 P2 || P) (where SS lands)
and the mutual information KL(P || P1 P2) (where TF lands) are printed too.
"""
from __future__ import annotations

import json
import time
from typing import Any

import torch
from torch import nn

from latentar.data.toys import length2_joint, product_of_marginals, sample_length2
from latentar.exposure.base import ExposureTask, Strategy
from latentar.exposure.context_noise import ContextNoise
from latentar.exposure.scheduled_sampling import ScheduledSampling
from latentar.exposure.teacher_forcing import TeacherForcing
from latentar.models.char_lm import TokenLMProtocol
from latentar.train import Trainer


class PairLM(TokenLMProtocol, nn.Module):
    """A tiny token LM whose output at position t depends on the previous token and t only:

        logits_t = MLP(E c_{t-1} + P_t),   c_{-1} = a learned start embedding s

    For length-2 sequences that is the whole history, so the model is a general p(x1) p(x2 | x1)
    and its joint table is exact (:meth:`joint_table`). The sequence-model protocol (``loss`` with
    ``context`` / ``context_noise`` / ``loss_mask``, ``predict_parallel``, ``generate``) comes from
    ``TokenLMProtocol``, shared with CharLM, so every strategy drives it unchanged. Being first
    order, it needs no KV cache: a decoding step reads only the token just fed.
    """

    def __init__(self, num_symbols: int = 4, length: int = 2, d_model: int = 32, hidden: int = 64):
        super().__init__()
        self.config = dict(num_symbols=num_symbols, length=length, d_model=d_model, hidden=hidden)
        self.vocab_size, self.max_len = int(num_symbols), int(length)
        self.tok_emb = nn.Embedding(num_symbols, d_model)
        self.pos_emb = nn.Embedding(length, d_model)
        self.start = nn.Parameter(torch.randn(d_model) * 0.02)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, num_symbols))
        self.num_backbone_calls = 0

    @property
    def _param(self) -> torch.Tensor:
        return self.tok_emb.weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tok_emb(ids)

    def embedding_std(self) -> torch.Tensor:
        return self.tok_emb.weight.detach().std()

    def _start_embeds(self, batch_size: int) -> torch.Tensor:
        return self.start.view(1, 1, -1).expand(batch_size, 1, -1)

    def _new_cache(self) -> None:
        return None  # first order: nothing to cache

    def _run(self, embeds: torch.Tensor, cache: Any, start_pos: int) -> torch.Tensor:
        """Logits (B, n, K) for positions start_pos .. start_pos + n - 1 of ``embeds (B, n, d)``."""
        self.num_backbone_calls += 1
        pos = torch.arange(start_pos, start_pos + embeds.shape[1], device=embeds.device)
        return self.mlp(embeds + self.pos_emb(pos))

    @torch.no_grad()
    def joint_table(self) -> torch.Tensor:
        """Q(a, b) = q(x1 = a) q(x2 = b | x1 = a): (K, K) float64, exact."""
        K = self.vocab_size
        q1 = self._run(self._start_embeds(1), None, 0).double().softmax(-1)[0, 0]                 # (K,)
        q2 = self._run(self.embed(torch.arange(K, device=self._param.device))[:, None], None, 1)  # (K, 1, K)
        return q1[:, None] * q2[:, 0].double().softmax(-1)


def kl(q: torch.Tensor, p: torch.Tensor) -> float:
    """KL(Q || P) = sum Q log(Q / P) in nats (0 log 0 = 0)."""
    q, p = q.double(), p.double()
    terms = torch.where(q > 0, q * (q.clamp_min(1e-300).log() - p.clamp_min(1e-300).log()), torch.zeros_like(q))
    return float(terms.sum())


def run_huszar(steps: int = 400, num_symbols: int = 4, p_equal: float = 0.9, sigma: float = 0.5,
               batch_size: int = 256, lr: float = 1e-2, num_examples: int = 50_000, seed: int = 0,
               device: str = "cpu") -> dict[str, Any]:
    """Train TF, fully annealed SS (p = 1) and ContextNoise(sigma) on the toy; return the numbers.

    Returns ``{"strategies": {name: {"kl_joint", "kl_product", "targets_valid", "seconds"}},
    "reference": {"kl_product_to_joint", "mutual_information"}, "config": {...}}``.
    """
    joint = length2_joint(num_symbols, p_equal)
    product = product_of_marginals(joint)
    data = sample_length2(joint, num_examples, generator=torch.Generator().manual_seed(seed))  # (N, 2) long
    strategies: dict[str, Strategy] = {
        "teacher_forcing": TeacherForcing(),
        "scheduled_sampling_p1": ScheduledSampling(schedule="constant", schedule_kwargs={"p": 1.0}),
        "context_noise": ContextNoise(sigma_ctx=sigma),
    }
    out: dict[str, Any] = {"strategies": {}, "reference": {
        "kl_product_to_joint": kl(product, joint), "mutual_information": kl(joint, product)},
        "config": dict(steps=steps, num_symbols=num_symbols, p_equal=p_equal, sigma=sigma, batch_size=batch_size,
                       lr=lr, num_examples=num_examples, seed=seed)}
    for k, (name, strategy) in enumerate(strategies.items(), 1):
        torch.manual_seed(seed)  # the same initial model for every strategy
        model = PairLM(num_symbols)
        t0 = time.perf_counter()
        # a step bar on stderr (stdout stays the table / JSON); inside a sweep cell only with --verbose
        Trainer(max_steps=steps, batch_size=batch_size, lr=lr, warmup_steps=0, grad_clip=None, seed=seed,
                device=device, progress=True, handle_signals=False,
                desc=f"{name} ({k}/{len(strategies)})").fit(ExposureTask(model, strategy), data)
        Q = model.joint_table().cpu()
        out["strategies"][name] = {"kl_joint": kl(Q, joint), "kl_product": kl(Q, product),
                                   "targets_valid": strategy.targets_valid, "seconds": time.perf_counter() - t0}
    return out


def format_table(result: dict[str, Any]) -> str:
    ref = result["reference"]
    lines = [f"{'strategy':<24}{'targets valid':>14}{'KL(model||joint)':>19}{'KL(model||product)':>21}"]
    for name, r in result["strategies"].items():
        lines.append(f"{name:<24}{str(r['targets_valid']):>14}{r['kl_joint']:>19.4f}{r['kl_product']:>21.4f}")
    lines.append(f"{'(product of marginals)':<24}{'':>14}{ref['kl_product_to_joint']:>19.4f}{0.0:>21.4f}")
    lines.append(f"{'(the joint itself)':<24}{'':>14}{0.0:>19.4f}{ref['mutual_information']:>21.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, command: str = "demo huszar") -> int:
    """``latentar demo huszar`` (its parser, torch-free: ``latentar.commands.demo_huszar``)."""
    from latentar.commands.demo_huszar import main as command_main
    return command_main(argv, command)


def run_cli(args, config=None, command: str = "demo huszar") -> int:
    """Run the demo of parsed, checked ``args`` (``latentar.commands.demo_huszar``) and print the table."""
    result = run_huszar(steps=args.steps, num_symbols=args.symbols, p_equal=args.p_equal, sigma=args.sigma,
                        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"length-2 toy: K={args.symbols}, P(x2 = x1) = {args.p_equal}, {args.steps} steps x {args.batch_size} "
              f"sequences per strategy\n")
        print(format_table(result))
        print("\nTeacher forcing recovers the joint; fully annealed scheduled sampling lands on the product of the "
              "marginals (its target was not valid for its context); context noise keeps the dependence.")
    return 0

"""Soft prompts fitted in batches: row b of a batched fit is the single fit of prompt b on target b (checked
against ``fit_soft_prompt`` and ``torch.optim.AdamW`` in float64), finished rows stop changing, targets of
different lengths are padded and masked, each batched objective's per-row loss is its single loss, and
objectives that do not batch fall back to single fits."""
import copy

import pytest
import torch

from latentar.models.char_lm import CharLM
from latentar.softprompt import SoftPrompt, fit_soft_prompt, greedy, make_objective
from latentar.softprompt.backend import as_frozen_lm
from latentar.softprompt.decoding import greedy_rows
from latentar.softprompt.fit import adamw_rows, fit_soft_prompts
from latentar.softprompt.objectives import BatchContext, Objective, StepContext, token_cross_entropy
from latentar.softprompt.prompt import PromptRows


def tiny_lm(vocab=7, seed=0, **kw):
    torch.manual_seed(seed)
    return as_frozen_lm(CharLM(**{**dict(vocab_size=vocab, d_model=16, depth=2, num_heads=2, max_len=48), **kw}))


@pytest.fixture(scope="module")
def text_lm64():
    """The test-preset CharLM (pretrained, so prompts reach exact reconstruction) in float64."""
    from latentar.softprompt.pretrained_charlm import text_charlm
    return as_frozen_lm(copy.deepcopy(text_charlm("test")).double())


def padded(targets):
    lengths = torch.tensor([len(t) for t in targets])
    x = torch.zeros(len(targets), int(lengths.max()), dtype=torch.long)
    for b, t in enumerate(targets):
        x[b, :len(t)] = t
    return x, lengths


# ----------------------------------------------------------------------------- the fit
def test_batched_fit_is_the_single_fits_row_by_row(text_lm64):
    """Six targets of 4..12 bytes, five objectives, one batch: every row stops where its own fit stops
    (exact reconstruction at its own step, or max_steps) with the same prompt, though the other rows
    kept fitting after it finished."""
    targets = ["return", "x = 1", "x = 1", "    return s", "# xq", "self.x = 1\n"]
    objectives = ["ce", "ce+ul", "ce+pf*0.1", "ce+rl", "ce+ss", "ce"]
    seeds = [2, 6, 6, 4, 5, 3]
    singles = [SoftPrompt(8, text_lm64, seed=s) for s in seeds]
    ref = [fit_soft_prompt(p, t, o, max_steps=80, seed=s)
           for p, t, o, s in zip(singles, targets, objectives, seeds)]
    rows = [SoftPrompt(8, text_lm64, seed=s) for s in seeds]
    got = fit_soft_prompts(rows, targets, objectives=objectives, max_steps=80, seeds=seeds)
    stops = [r.steps for r in ref if r.stopped == "exact"]
    assert len(set(stops)) >= 3 and sum(r.stopped == "max_steps" for r in ref) >= 2  # rows finish apart
    for b, (r, g) in enumerate(zip(ref, got)):
        assert (g.steps, g.stopped, g.exact, g.objective, g.batch) == (r.steps, r.stopped, r.exact, r.objective, 6), \
            (b, g.steps, r.steps)
        assert torch.equal(g.output, r.output) and torch.equal(g.target, r.target)
        assert g.tf_loss == pytest.approx(r.tf_loss, rel=1e-9, abs=1e-12)
        assert g.tf_accuracy == r.tf_accuracy and g.first_divergence == r.first_divergence
        assert torch.allclose(rows[b].embeddings, singles[b].embeddings, rtol=0, atol=1e-9), b
        if g.exact:
            assert rows[b].decode(greedy(rows[b], len(g.target))[0]) == targets[b]
    assert sum(g.seconds for g in got) > 0


def test_adamw_rows_is_torch_adamw_on_the_rows_still_fitting():
    """Row 1 finishes after step 2 and row 3 after step 4: their parameters and moments stop changing,
    though their gradients are not zero; every other row is its own torch AdamW."""
    g = torch.Generator().manual_seed(0)
    P = torch.randn(4, 3, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    m, v = torch.zeros_like(P), torch.zeros_like(P)
    ref = [P[b].detach().clone().requires_grad_(True) for b in range(4)]
    opts = [torch.optim.AdamW([r], lr=0.05, betas=(0.9, 0.9), weight_decay=0.01) for r in ref]
    last = {0: 6, 1: 2, 2: 6, 3: 4}
    for step in range(1, 7):
        grad = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
        P.grad = grad.clone()
        active = torch.tensor([b for b in range(4) if step <= last[b]])
        frozen = {b: (P[b].detach().clone(), m[b].clone(), v[b].clone()) for b in range(4) if step > last[b]}
        adamw_rows(P, m, v, active, step, lr=0.05, betas=(0.9, 0.9), weight_decay=0.01)
        for b in active.tolist():
            ref[b].grad = grad[b].clone()
            opts[b].step()
        for b, (p0, m0, v0) in frozen.items():
            assert torch.equal(P[b].detach(), p0) and torch.equal(m[b], m0) and torch.equal(v[b], v0)
    for b in range(4):
        assert torch.allclose(P[b].detach(), ref[b].detach(), rtol=0, atol=1e-14), b
        assert torch.allclose(m[b], opts[b].state[ref[b]]["exp_avg"], rtol=0, atol=1e-14)


class SingleOnlyCE(Objective):
    """Cross-entropy without ``batch_loss``: an objective that does not batch."""

    name = "ce_single"

    def loss(self, ctx):
        return token_cross_entropy(ctx.tf.logits, ctx.x), {}


def test_objectives_that_do_not_batch_are_fitted_one_at_a_time():
    lm = tiny_lm(seed=1)
    x = torch.randint(0, 7, (3, 6), generator=torch.Generator().manual_seed(2))
    rows = [SoftPrompt(2, lm, seed=b) for b in range(3)]
    alone = SingleOnlyCE()
    got = fit_soft_prompts(rows, list(x), objectives=[alone, "ce", "ce+rl"], max_steps=4, seeds=[0, 1, 2],
                           stop_on_exact=False)
    assert all(make_objective(o).batchable for o in ("ce", "ss", "ul", "rl", "pf", "ce+ss+ul+rl+pf*0.1"))
    assert not alone.batchable and not make_objective(["ce", alone]).batchable
    assert [r.batch for r in got] == [1, 2, 2]
    with pytest.raises(TypeError, match="'ce_single' .SingleOnlyCE. has no batch_loss"):
        alone.batch_loss(None)
    with pytest.raises(TypeError, match="'ce_single'"):
        make_objective(["ce", alone]).batch_loss(None)
    single = SoftPrompt(2, lm, seed=0)
    ref = fit_soft_prompt(single, x[0], SingleOnlyCE(), max_steps=4, seed=0, stop_on_exact=False)
    assert torch.equal(rows[0].embeddings, single.embeddings) and got[0].tf_loss == ref.tf_loss


def test_bad_batches_are_named():
    lm = tiny_lm()
    with pytest.raises(ValueError, match="one target per prompt"):
        fit_soft_prompts([SoftPrompt(2, lm)], [[1, 2], [3]])
    with pytest.raises(ValueError, match="share one frozen LM"):
        fit_soft_prompts([SoftPrompt(2, lm), SoftPrompt(2, tiny_lm())], [[1], [2]])
    with pytest.raises(ValueError, match="same n_virtual"):
        fit_soft_prompts([SoftPrompt(2, lm), SoftPrompt(3, lm)], [[1], [2]])
    with pytest.raises(ValueError, match="one per prompt"):
        fit_soft_prompts([SoftPrompt(2, lm)], [[1]], seeds=[0, 1])
    with pytest.raises(ValueError, match="at least one prompt"):
        fit_soft_prompts([], [])
    with pytest.raises(ValueError, match="vocabulary"):
        fit_soft_prompts([SoftPrompt(2, lm)], [[9]])
    with pytest.raises(ValueError, match="exactly 2 rows"):
        PromptRows(torch.zeros(2, 3, 16), lm).prefix(3)
    with pytest.raises(ValueError, match=r"\(B, n, d\)"):
        PromptRows(torch.zeros(3, 16), lm)


# ----------------------------------------------------------------------------- the pieces
def test_prompt_rows_score_each_row_as_its_own_prompt_and_padding_does_not_leak():
    lm = tiny_lm(seed=3)
    prompts = [SoftPrompt(3, lm, seed=b) for b in range(3)]
    g = torch.Generator().manual_seed(4)
    targets = [torch.randint(0, 7, (L,), generator=g) for L in (4, 9, 6)]
    x, lengths = padded(targets)
    rows = PromptRows(torch.stack([p.embeddings for p in prompts]), lm)
    logits = rows(x)
    for b, (p, t) in enumerate(zip(prompts, targets)):
        assert torch.allclose(logits[b, :len(t)], p(t[None])[0], atol=1e-5)
    forced = torch.tensor([0, 3, 6])
    out = greedy_rows(rows, x, forced)
    for b, (p, t) in enumerate(zip(prompts, targets)):
        k = int(forced[b])
        assert torch.equal(out[b, :k], t[:k])
        assert torch.equal(out[b, k:len(t)], greedy(p, x.shape[1] - k, prefix=t[:k])[0][:len(t) - k])


@pytest.mark.parametrize("spec, kwargs", [
    ("ce", {}), ("ul", {}), ("ul", {"ul": {"previous_context": True, "teacher_forced": True}}),
    ("ss", {}), ("ss", {"ss": {"mode": "sample", "passes": 3, "p_max": 0.8}}), ("ce+ul*0.5+ss", {}),
    ("rl", {}), ("rl", {"rl": {"baseline": "mean", "num_samples": 3, "delta": 3, "stage_steps": 3}}),
    ("ce+rl+ss", {"rl": {"baseline": "ema"}}), ("pf", {"pf": {"hidden": 8, "d_steps": 2}}), ("ce+pf*0.1+ul", {})])
def test_each_batched_objective_is_its_single_loss_per_row(spec, kwargs):
    """Three rows of different lengths at a step where scheduled sampling mixes (p > 0) and REINFORCE's
    prefix differs per row: row b's batched loss equals the objective's loss on prompt b and target b
    alone, with the single fit's global RNG and its own generator seeded as row b's two generators."""
    lm = tiny_lm(seed=5, vocab=9)
    prompts = [SoftPrompt(2, lm, seed=b) for b in range(3)]
    g = torch.Generator().manual_seed(6)
    targets = [torch.randint(0, 9, (L,), generator=g) for L in (5, 11, 8)]
    x, lengths = padded(targets)
    rows = PromptRows(torch.stack([p.embeddings for p in prompts]), lm)
    batched = make_objective(spec, **kwargs)
    hidden = batched.needs_hidden
    ctx = BatchContext(rows, x, lengths, rows.teacher_forced(x, hidden=hidden), step=8, max_steps=10,
                       generators=[torch.Generator().manual_seed(10 + b) for b in range(3)],
                       rows=torch.arange(3), num_rows=3,
                       sample_generators=[torch.Generator().manual_seed(20 + b) for b in range(3)])
    per_row, _ = batched.batch_loss(ctx)
    assert per_row.shape == (3,)
    for b, (p, t) in enumerate(zip(prompts, targets)):
        single = make_objective(spec, **kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(10 + b)
            sctx = StepContext(p, t[None], p.teacher_forced(t[None], hidden=hidden), 8, 10,
                               torch.Generator().manual_seed(20 + b))
            loss, _ = single.loss(sctx)
        assert per_row[b].item() == pytest.approx(loss.item(), rel=1e-5, abs=1e-7), b
    per_row.sum().backward()  # through the view, to each prompt's own tensor
    assert all(p.embeddings.grad is not None for p in prompts)  # (zero where all rewards tie the baseline)

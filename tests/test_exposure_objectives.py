"""Relabel (DAgger targets from an expert), TokenUnlikelihood and SequenceLevel (REINFORCE / MIXER)
on a CharLM: each against an independent recompute (loops over positions, float64, the task's
expert called prefix by prefix)."""
import math

import pytest
import torch

from latentar.data.compounding import COMPOUNDING
from latentar.data.seq_tasks import EOS, NUM_BYTES, SeqTask, decode_ids
from latentar.exposure import ExposureTask, Relabel, SequenceLevel, TokenUnlikelihood
from latentar.exposure.base import unpack_batch
from latentar.exposure.sequence_level import prefix_reward, reinforce_loss
from latentar.exposure.unlikelihood import previous_token_candidates, unlikelihood_loss
from latentar.models.char_lm import CharLM
from torch.utils.data import default_collate


def lm(seed=0, max_len=32):
    torch.manual_seed(seed)
    return CharLM(d_model=32, depth=1, num_heads=2, max_len=max_len)


def batch_of(ds, n):
    return default_collate([ds[i] for i in range(n)])


# ----------------------------------------------------------------------------- Relabel
def test_relabel_pool_targets_are_the_experts_continuation_of_each_own_prefix():
    ds = SeqTask("running_sum", 5, 40, seed=0)
    model = lm(1, ds.seq_len)
    strat = Relabel(expert=ds.expert_targets, warmup_steps=0, regen_every=1, pool_size=24, gen_batch_size=8)
    stats = strat.regenerate(model, ds, generator=torch.Generator().manual_seed(0))
    pool = strat.pool
    assert pool["context"].shape == (24, ds.seq_len)
    task = COMPOUNDING["running_sum"]
    P = ds.max_prompt_len + 1  # prompt bytes + SEP; the answer follows
    for i in range(24):
        z, labels, mask = pool["context"][i], pool["labels"][i], pool["loss_mask"][i]
        prompt = decode_ids(z[:P], stop_at_eos=False)
        prefix = bytearray()
        for j in range(P, z.shape[0]):
            nxt = task.next_byte(prompt, bytes(prefix))  # independent: the task's own expert
            assert bool(mask[j]), f"row {i}: answer position {j} carries no loss before any special id"
            assert labels[j].item() == (EOS if nxt is None else nxt)
            t = int(z[j])
            if not 0 <= t < NUM_BYTES:  # the free run ended (EOS / PAD): nothing after it is trained
                assert not mask[j + 1:].any()
                break
            prefix.append(t)
        assert not mask[:P].any()
    # the untrained model's prefixes are wrong, so the expert's targets differ from the data's
    assert stats["trained_share"] > 0 and 0.0 < stats["relabelled_share"] <= 1.0


def test_relabel_loss_is_sft_plus_the_pool_nll_and_the_pool_is_checkpointed():
    ds = SeqTask("chain", 2, 32, seed=0)
    model = lm(2, ds.seq_len)
    strat = Relabel(expert=ds.expert_targets, warmup_steps=0, regen_every=1, pool_size=16, relabel_weight=0.5)
    b = unpack_batch(batch_of(ds, 8))
    x, mask = b.x, b.loss_mask
    sft_only, m0 = strat.loss(model, x, loss_mask=mask)
    assert m0["relabel_active"] == 0.0
    strat.regenerate(model, ds, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    loss, m = strat.loss(model, x, loss_mask=mask)
    torch.manual_seed(5)
    idx = torch.randint(0, 16, (8,))
    p = strat.pool
    j = model.loss(p["labels"][idx], context=p["context"][idx], loss_mask=p["loss_mask"][idx])
    assert loss.item() == pytest.approx(sft_only.item() + 0.5 * j.item(), rel=1e-5)
    assert m["relabel_active"] == 1.0
    restored = Relabel(expert=ds.expert_targets)
    restored.load_state_dict(strat.state_dict())
    assert torch.equal(restored.pool["labels"], p["labels"])
    with pytest.raises(TypeError, match="expert"):
        Relabel(expert=None)


# ----------------------------------------------------------------------------- unlikelihood
def test_previous_token_candidates_match_a_loop():
    torch.manual_seed(0)
    x = torch.randint(0, 6, (3, 9))
    trained = torch.rand(3, 9) > 0.3
    got = previous_token_candidates(x, trained, 6)
    for b in range(3):
        for t in range(9):
            expect = set()
            if trained[b, t]:
                expect = {int(x[b, j]) for j in range(t) if trained[b, j]} - {int(x[b, t])}
            assert {c for c in range(6) if got[b, t, c]} == expect


def test_token_unlikelihood_loss_matches_a_float64_recompute():
    ds = SeqTask("running_sum", 6, 8, seed=0)
    model = lm(3, ds.seq_len)
    b = unpack_batch(batch_of(ds, 4))
    x, mask = b.x, b.loss_mask
    loss, m = TokenUnlikelihood(alpha=0.7).loss(model, x, loss_mask=mask)
    logits = model(x).double()  # row t scores x_t
    logp = logits.log_softmax(-1)
    trained = mask  # unpack_batch aligns SeqTask's target mask to the positions of x
    nll, ul, n = 0.0, 0.0, 0
    for b in range(x.shape[0]):
        seen = []
        for t in range(x.shape[1]):
            if not trained[b, t]:
                continue
            n += 1
            nll -= logp[b, t, x[b, t]].item()
            for c in set(seen) - {int(x[b, t])}:
                ul -= math.log(max(1 - logp[b, t, c].exp().item(), 1e-5))
            seen.append(int(x[b, t]))
    assert loss.item() == pytest.approx((nll + 0.7 * ul) / n, rel=1e-4)
    assert m["sft"] == pytest.approx(nll / n, rel=1e-4)
    with pytest.raises(ValueError, match="continuous"):
        TokenUnlikelihood().loss(model, torch.randn(2, 5, 3))


def test_unlikelihood_loss_checks_shapes():
    with pytest.raises(ValueError, match="shape"):
        unlikelihood_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4, dtype=torch.bool))


# ----------------------------------------------------------------------------- sequence level
def test_prefix_reward_scores_only_the_masked_span():
    target = torch.tensor([[7, 1, 2, 3, 4], [7, 1, 2, 3, 4]])
    samples = torch.tensor([[9, 1, 2, 0, 0], [9, 1, 2, 3, 4]])
    mask = torch.tensor([[False, True, True, True, True]] * 2)  # position 0 is the teacher-fed prompt
    # row 0: 2 of 4 scored positions right before the first error; row 1: exact on the span
    assert prefix_reward(samples, target, 0.5, mask=mask).tolist() == pytest.approx([0.25, 1.0])
    assert prefix_reward(samples, target, 0.0).tolist() == pytest.approx([0.0, 0.0])  # unmasked: pos 0 wrong


def test_reinforce_loss_with_a_mask_averages_over_the_masked_positions():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.8, 0.1, 0.3]]))
    mask = torch.tensor([[True, True, False], [False, True, True]])
    r, b = torch.tensor([1.0, 0.0]), torch.tensor([0.25, 0.25])
    expected = -(0.75 * (math.log(0.5) + math.log(0.25)) / 2 - 0.25 * (math.log(0.1) + math.log(0.3)) / 2) / 2
    assert reinforce_loss(logp, r, b, mask=mask).item() == pytest.approx(expected, rel=1e-6)


def test_sequence_level_schedule_and_loss():
    mixer = SequenceLevel(warmup=0.5, mixer=True, start_share=0.25)
    assert [mixer.sampled_share(e) for e in (0.0, 0.49, 0.5, 0.75, 1.0)] == pytest.approx([0, 0, 0.25, 0.625, 1.0])
    plain = SequenceLevel(warmup=0.2, mixer=False)
    assert plain.sampled_share(0.1) == 0.0 and plain.sampled_share(0.3) == 1.0
    ds = SeqTask("add_lsd", 3, 16, seed=0)
    model = lm(4, ds.seq_len)
    b = unpack_batch(batch_of(ds, 8))
    x, mask = b.x, b.loss_mask
    warm, m0 = plain.loss(model, x, progress=0.1, loss_mask=mask)
    assert m0["rl_active"] == 0.0 and warm.item() == pytest.approx(model.loss(x, loss_mask=mask).item(), rel=1e-6)
    loss, m = SequenceLevel(warmup=0.0, mixer=False, rollout_rows=4).loss(model, x, progress=0.5, loss_mask=mask)
    assert m["rl_active"] == 1.0 and m["rl_share"] == 1.0 and 0.0 <= m["rl_reward"] <= 1.0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="rollout_rows"):
        SequenceLevel(rollout_rows=1)


def test_every_new_strategy_trains_through_exposure_task():
    ds = SeqTask("running_sum", 3, 32, seed=0)
    for strat in (Relabel(expert=ds.expert_targets, warmup_steps=0, regen_every=2, pool_size=8),
                  TokenUnlikelihood(), SequenceLevel(warmup=0.0, rollout_rows=4)):
        model = lm(5, ds.seq_len)
        task = ExposureTask(model, strat, data=ds)
        from latentar.train import Trainer
        import tempfile
        fit = Trainer(max_steps=4, batch_size=8, lr=1e-3, device="cpu", out_dir=tempfile.mkdtemp(), ckpt_every=0,
                      seed=0, progress=False).fit(task, ds)
        assert math.isfinite(fit["loss"]), type(strat).__name__


def _bleu_reference(y: list[int], x: list[int], max_n: int = 4) -> float:
    """Smoothed sentence BLEU in plain Python (collections.Counter clipping), equal lengths."""
    import math
    from collections import Counter
    logs = []
    for n in range(1, max_n + 1):
        gy = Counter(tuple(y[i:i + n]) for i in range(len(y) - n + 1))
        gx = Counter(tuple(x[i:i + n]) for i in range(len(x) - n + 1))
        if not gy:
            break
        matched = sum(min(c, gx[g]) for g, c in gy.items())
        logs.append(math.log((matched + 1) / (sum(gy.values()) + 1)))
    return math.exp(sum(logs) / max_n)


def test_bleu_reward_matches_a_counter_reference_and_clips_repeats():
    from latentar.exposure.sequence_level import bleu_reward
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (6, 12), generator=g)
    x = torch.randint(0, 4, (6, 12), generator=g)
    got = bleu_reward(y, x)
    want = torch.tensor([_bleu_reference(a.tolist(), b.tolist()) for a, b in zip(y, x)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    ref = torch.tensor([5, 1, 2, 3, 4, 6, 7, 8])
    assert bleu_reward(ref[None], ref)[0] == pytest.approx(1.0)  # exact copy: every precision 1
    loop = torch.full((1, 8), 5)  # "5 5 5 ...": one unigram match after clipping, no higher ones
    assert bleu_reward(loop, ref)[0] == pytest.approx(_bleu_reference([5] * 8, ref.tolist()))
    assert bleu_reward(loop, ref)[0] < bleu_reward(ref[None].roll(1, 1), ref)[0]
    # a mask scores only the masked suffix, in both sequences
    mask = torch.zeros(6, 12, dtype=torch.bool)
    mask[:, 5:] = True
    got = bleu_reward(y, x, mask=mask)
    want = torch.tensor([_bleu_reference(a[5:].tolist(), b[5:].tolist()) for a, b in zip(y, x)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

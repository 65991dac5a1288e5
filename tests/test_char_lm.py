"""CharLM: the token-level sequence-model protocol, KV-cache generation, sampling filters, save/load,
and that SFT learns a short reverse task on CPU."""
import time

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from latentar.data.seq_tasks import EOS, PAD, SeqTask, answers_exact_match
from latentar.data.text import TextCorpus
from latentar.models.char_lm import CharLM, complete, filter_logits, left_align, sample_logits
from latentar.train import Trainer


def tiny(**kw):
    torch.manual_seed(0)
    return CharLM(**{**dict(d_model=32, depth=2, num_heads=4, max_len=48), **kw}).eval()


def test_loss_matches_categorical_log_prob_with_mask():
    m = tiny()
    x = torch.randint(0, 260, (3, 12))
    mask = torch.rand(3, 12) < 0.6
    logits = m(x).double()  # row t scores x_t from the start token and x_<t
    nll = -torch.distributions.Categorical(logits=logits).log_prob(x)  # (B, T), float64
    assert torch.allclose(m.loss(x, reduction="none"), nll.float(), atol=1e-5)
    expected = (nll * mask).sum() / mask.sum()
    assert m.loss(x, loss_mask=mask).item() == pytest.approx(expected.item(), rel=1e-5)
    assert m.loss(x, loss_mask=mask, reduction="sum").item() == pytest.approx((nll * mask).sum().item(), rel=1e-5)


def test_logits_are_causal_and_start_from_the_start_token():
    m = tiny()
    x = torch.randint(0, 260, (2, 10))
    y = x.clone()
    y[:, 6:] = torch.randint(0, 260, (2, 4))
    # row t depends only on x_<t: rows 0..6 agree when x differs from position 6 on
    assert torch.allclose(m(x)[:, :7], m(y)[:, :7], atol=1e-5)
    assert not torch.allclose(m(x)[:, 7:], m(y)[:, 7:])


def test_forward_embeds_is_forward_on_the_shifted_inputs():
    m = tiny()
    x = torch.randint(0, 260, (2, 7))
    inputs = torch.cat([m.start.view(1, 1, -1).expand(2, 1, -1), m.embed(x[:, :-1])], 1)
    assert torch.allclose(m.forward_embeds(inputs), m(x), atol=1e-6)


def test_context_replaces_the_inputs_and_keeps_the_targets():
    m = tiny()
    x, c = torch.randint(0, 260, (2, 9)), torch.randint(0, 260, (2, 9))
    expected = F.cross_entropy(m(c).transpose(1, 2), x, reduction="none")
    assert torch.allclose(m.loss(x, context=c, reduction="none"), expected, atol=1e-5)


def test_context_noise_scales_with_the_embedding_std_and_spares_zero_positions():
    m = tiny()
    x = torch.randint(0, 260, (2, 9))
    clean = m.loss(x, reduction="none")
    assert torch.equal(m.loss(x, context_noise=0.0, reduction="none"), clean)
    zeros = torch.zeros(2, 9)
    assert torch.allclose(m.loss(x, context_noise=zeros, reduction="none"), clean)
    noisy = m.loss(x, context_noise=5.0, reduction="none")
    assert not torch.allclose(noisy, clean)
    assert torch.allclose(noisy[:, 0], clean[:, 0])  # position 0 sees only the (never noised) start token
    # noise on context token c_t (scale[:, t]) first reaches the prediction of x_{t+1}
    scale = torch.zeros(2, 9)
    scale[:, 4] = 5.0
    partly = m.loss(x, context_noise=scale, reduction="none")
    assert torch.allclose(partly[:, :5], clean[:, :5], atol=1e-6)
    assert not torch.allclose(partly[:, 5:], clean[:, 5:])


def test_kv_cache_generation_equals_no_cache_generation():
    m = tiny()
    prompt = torch.randint(0, 256, (4, 5))
    for kw in (dict(greedy=True), dict(temperature=0.8, top_k=20), dict(temperature=1.2, top_p=0.9)):
        a = m.generate(4, 12, prompt=prompt, generator=torch.Generator().manual_seed(3), **kw)
        b = m.generate(4, 12, prompt=prompt, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
        assert torch.equal(a, b), kw
    # one prompt pass + one pass per new token but the last
    m.num_backbone_calls = 0
    m.generate(4, 12, prompt=prompt, greedy=True)
    assert m.num_backbone_calls == 12


def test_greedy_generation_is_a_fixed_point_of_parallel_argmax():
    m = tiny()
    prompt = torch.randint(0, 256, (3, 6))
    gen = m.generate(3, 10, prompt=prompt, greedy=True)
    seq = torch.cat([prompt, gen], 1)
    assert torch.equal(m.predict_parallel(seq, mode="argmax")[:, 6:], gen)


def test_reference_is_fed_where_asked():
    m = tiny()
    ref = torch.randint(0, 256, (3, 10))
    use = torch.zeros(3, 10, dtype=torch.bool)
    use[:, :4] = True
    use[1, 7] = True
    out = m.generate(3, 10, reference=ref, use_reference=use, greedy=True)
    assert torch.equal(out[use], ref[use])
    # a reference prefix is the same as a prompt
    assert torch.equal(out[[0, 2], 4:], m.generate(2, 6, prompt=ref[[0, 2], :4], greedy=True))


def test_complete_batches_ragged_prompts_like_one_row_at_a_time():
    m = tiny()
    prompts = [torch.randint(0, 256, (n,)) for n in (3, 5, 3, 1, 5)]
    out = complete(m, prompts, 6, greedy=True)
    for p, row in zip(prompts, out):
        assert torch.equal(row, m.generate(1, 6, prompt=p[None], greedy=True)[0])
    padded = torch.full((5, 5), PAD)
    for i, p in enumerate(prompts):
        padded[i, 5 - p.numel():] = p
    assert all(torch.equal(a, b) for a, b in zip(left_align(padded, [p.numel() for p in prompts]), prompts))


def test_eos_stops_rows_and_pads_after():
    m = tiny()
    ref = torch.randint(0, 256, (2, 8))
    use = torch.zeros(2, 8, dtype=torch.bool)
    use[:, :3] = True
    ref[:, 2] = EOS
    out = m.generate(2, 8, reference=ref, use_reference=use, greedy=True, eos_id=EOS, pad_id=PAD)
    assert (out[:, 3:] == PAD).all()


def test_filters_keep_the_top_k_and_the_nucleus():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    keep_p = torch.isfinite(filter_logits(logits, top_p=0.8))
    assert keep_p.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.8
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).sum() == 3
    assert torch.isfinite(filter_logits(logits, top_k=3)).tolist() == [[True, True, True, False]]
    # sampled frequencies follow the renormalised kept probabilities
    g = torch.Generator().manual_seed(0)
    draws = sample_logits(logits.expand(20000, 4), top_k=2, generator=g)
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    assert torch.allclose(freq, torch.tensor([0.625, 0.375, 0.0, 0.0], dtype=torch.float64), atol=0.015)


def test_temperature_zero_and_greedy_agree():
    logits = torch.randn(5, 30)
    assert torch.equal(sample_logits(logits, temperature=0.0), logits.argmax(-1))
    assert torch.equal(sample_logits(logits, greedy=True), logits.argmax(-1))


def test_save_load_round_trip(tmp_path):
    m = tiny(tie_weights=False, pos="learned")
    x = torch.randint(0, 260, (2, 11))
    m.save_pretrained(tmp_path / "lm")
    back = CharLM.from_pretrained(tmp_path / "lm").eval()
    assert back.config == m.config
    assert torch.equal(back(x), m(x))
    tied = tiny()
    tied.save_pretrained(tmp_path / "tied")  # tied weights: one tensor in the state dict
    assert torch.equal(CharLM.from_pretrained(tmp_path / "tied").eval()(x), tied(x))


def test_training_step_reads_seq_task_and_text_batches():
    m = tiny(max_len=64)
    task = SeqTask("reverse", 4, 8)
    batch = default_collate([task[i] for i in range(8)])
    mask = torch.cat([torch.zeros(8, 1, dtype=torch.bool), batch["loss_mask"]], 1)
    assert m.training_step(batch).item() == pytest.approx(m.loss(batch["tokens"], loss_mask=mask).item())
    text = TextCorpus(block_size=16, max_bytes=4000)
    inp, tgt = default_collate([text[i] for i in range(4)])
    expected = F.cross_entropy(m(torch.cat([inp[:, :1], tgt], 1))[:, 1:].transpose(1, 2), tgt)
    assert m.training_step((inp, tgt)).item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_inputs_say_what_is_wrong():
    m = tiny()
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        m.loss(torch.randn(2, 5))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m.loss(torch.full((1, 4), 300))
    with pytest.raises(ValueError, match="max_len"):
        m.generate(1, 60)
    with pytest.raises(ValueError, match="unconditional"):
        m.loss(torch.zeros(1, 3, dtype=torch.long), labels=torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="use_reference"):
        m.generate(2, 4, reference=torch.zeros(2, 4, dtype=torch.long), use_reference=torch.zeros(2, 4))


# Measured on 2 shared CPU cores: 200 steps (batch 32, lr 2e-3, learned positions) take ~7 CPU s
# (12-45 s wall, depending on load) and reach greedy exact match 1.00 on the 256 held-out prompts
# for seeds 0, 1 and 2; the bar leaves room for other torch builds. Reverse needs absolute offsets
# (answer byte j copies prompt byte L-1-j): with RoPE, 250 steps at lr 1e-3 stayed at exact match 0
# (token accuracy 0.6), so the test uses pos="learned".
SFT_STEPS, SFT_EXACT_MATCH = 200, 0.9


def test_sft_char_lm_learns_reverse_len8_on_cpu():
    torch.manual_seed(0)
    model = CharLM(d_model=64, depth=2, num_heads=4, max_len=20, pos="learned")
    train = SeqTask("reverse", 8, 20_000, seed=0)
    test = SeqTask("reverse", 8, 256, seed=0, split="test")
    t0 = time.perf_counter()
    Trainer(max_steps=SFT_STEPS, batch_size=32, lr=2e-3, warmup_steps=25, device="cpu", progress=False,
            seed=0).fit(model, train)
    batch = default_collate([test[i] for i in range(len(test))])
    out = complete(model, left_align(batch["prompt_ids"], batch["prompt_len"]), 9, greedy=True, eos_id=EOS, pad_id=PAD)
    exact = answers_exact_match(out, batch["answer"]).float().mean().item()
    print(f"reverse len 8, {SFT_STEPS} SFT steps: exact match {exact:.3f} in {time.perf_counter() - t0:.1f} s")
    assert exact >= SFT_EXACT_MATCH

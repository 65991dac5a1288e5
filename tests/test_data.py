"""Cache folder, toy distributions, synthetic seq2seq tasks and the stdlib text corpus."""
import math

import pytest
import torch
from torch.utils.data import DataLoader

from latentar.data import (EOS, PAD, SEP, VOCAB_SIZE, SeqTask, TextCorpus, answers_exact_match, cache_dir,
                           correlated_gaussian_2d, correlated_gaussian_2d_log_prob, decode_ids, joint_marginals,
                           length2_joint, product_of_marginals, ring_means, ring_of_gaussians,
                           ring_of_gaussians_log_prob, sample_length2, text_snippets)
from latentar.data.text import corpus_split


# ---- cache ------------------------------------------------------------------------------------
def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTAR_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and cache_dir().is_dir()
    assert cache_dir("a/b") == tmp_path / "c" / "a" / "b" and (tmp_path / "c" / "a" / "b").is_dir()


# ---- toys -------------------------------------------------------------------------------------
def test_length2_joint_and_product_of_marginals():
    first = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    joint = length2_joint(4, p_equal=0.7, first=first)
    assert joint.shape == (4, 4) and math.isclose(float(joint.sum()), 1.0, abs_tol=1e-12)
    for a in range(4):
        assert math.isclose(float(joint[a, a] / joint[a].sum()), 0.7, abs_tol=1e-12)
        for b in range(4):
            if a != b:
                assert math.isclose(float(joint[a, b]), float(first[a]) * 0.1, abs_tol=1e-12)
    p1, p2 = joint_marginals(joint)
    assert torch.allclose(p1, first)
    q = product_of_marginals(joint)
    for a in range(4):  # by hand: Q[a, b] = sum_c P[a, c] * sum_c P[c, b]
        for b in range(4):
            assert math.isclose(float(q[a, b]), sum(float(joint[a, c]) for c in range(4))
                                * sum(float(joint[c, b]) for c in range(4)), abs_tol=1e-12)
    assert math.isclose(float(q.sum()), 1.0, abs_tol=1e-12)
    assert not torch.allclose(q, joint)  # the joint is far from independent
    with pytest.raises(ValueError, match="sum to 1"):
        product_of_marginals(joint * 2)


def test_length2_sampler_matches_table():
    joint = length2_joint(3, p_equal=0.8)
    x = sample_length2(joint, 60000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (60000, 2) and x.dtype == torch.int64
    freq = torch.zeros(3, 3, dtype=torch.float64)
    freq.index_put_((x[:, 0], x[:, 1]), torch.ones(len(x), dtype=torch.float64), accumulate=True)
    assert torch.allclose(freq / len(x), joint, atol=0.01)


def test_ring_density_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    x = ring_of_gaussians(4000, num_modes=6, radius=3.0, std=0.1, generator=g)
    assert x.shape == (4000, 2)
    assert abs(float(x.norm(dim=1).mean()) - 3.0) < 0.02
    means = ring_means(6, 3.0)
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.full((6,), 1 / 6, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(means, torch.full_like(means, 0.1)), 1))
    pts = torch.randn(50, 2, generator=g, dtype=torch.float64) * 3
    assert torch.allclose(ring_of_gaussians_log_prob(pts, 6, 3.0, 0.1), ref.log_prob(pts), atol=1e-9)


def test_correlated_gaussian_matches_mvn():
    x = correlated_gaussian_2d(50000, rho=0.8, generator=torch.Generator().manual_seed(1))
    assert abs(float(torch.corrcoef(x.T)[0, 1]) - 0.8) < 0.01
    mvn = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                 torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64))
    pts = torch.randn(20, 2, dtype=torch.float64)
    assert torch.allclose(correlated_gaussian_2d_log_prob(pts, 0.8), mvn.log_prob(pts), atol=1e-10)
    with pytest.raises(ValueError, match="rho"):
        correlated_gaussian_2d(3, rho=1.0)


# ---- seq tasks --------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["copy", "reverse", "sort", "add"])
def test_seq_task_answers_and_packing(task):
    ds = SeqTask(task, length=6, num_examples=200, seed=3)
    for i in range(len(ds)):
        item = ds[i]
        p, a = item["prompt"], item["answer"]
        assert len(a) == 6
        if task == "copy":
            assert a == p
        elif task == "reverse":
            assert a == bytes(reversed(p)) and len(p) == 6
        elif task == "sort":
            assert list(a) == sorted(p) and sorted(a) == sorted(p)
        else:
            left, right = p.decode().split("+")
            assert int(a.decode()) == int(left) + int(right) and a[:1] != b"0"
        toks = item["tokens"].tolist()
        n = len(p) + 1 + len(a) + 1
        assert toks[:n] == list(p) + [SEP] + list(a) + [EOS] and all(t == PAD for t in toks[n:])
        assert max(toks) < VOCAB_SIZE
        # the mask (over targets tokens[1:]) selects exactly the answer and its EOS
        tgt = item["target_ids"][item["loss_mask"]].tolist()
        assert tgt == list(a) + [EOS]
        assert torch.equal(item["input_ids"], item["tokens"][:-1])
        assert decode_ids(item["prompt_ids"]) == p and item["prompt_ids"][-1] == SEP


def test_seq_task_deterministic_and_splits_disjoint():
    a = [SeqTask("reverse", 3, 300, seed=0)[i]["prompt"] for i in range(300)]
    b = [SeqTask("reverse", 3, 300, seed=0)[i]["prompt"] for i in range(300)]
    c = [SeqTask("reverse", 3, 300, seed=1)[i]["prompt"] for i in range(300)]
    assert a == b and a != c
    for task in ("copy", "add"):
        train = {SeqTask(task, 3, 3000, seed=s)[i]["prompt"] for s in (0, 1) for i in range(1500)}
        test = {SeqTask(task, 3, 500, seed=7, split="test")[i]["prompt"] for i in range(500)}
        assert len(test) > 100 and not train & test


def test_seq_task_tiny_space_fails_clearly_and_collates():
    outcomes = []
    for split in ("train", "test"):
        try:
            SeqTask("copy", 1, 1, alphabet="q", split=split)[0]
            outcomes.append("ok")
        except RuntimeError as e:
            assert "prompt space is too small" in str(e)
            outcomes.append("err")
    assert sorted(outcomes) == ["err", "ok"]  # the single prompt lives in exactly one split
    batch = next(iter(DataLoader(SeqTask("add", 2, 8), batch_size=4)))
    assert batch["tokens"].shape == (4, 5 + 1 + 2 + 1) and len(batch["answer"]) == 4
    good = [list(x) + [EOS, 7] for x in batch["answer"]]
    good[1] = [48]
    assert answers_exact_match(good, batch["answer"]).tolist() == [True, False, True, True]


# ---- text corpus ------------------------------------------------------------------------------
def test_text_corpus_blocks_and_snippets():
    ds = TextCorpus(block_size=32, split="train", max_bytes=200_000)
    val = TextCorpus(block_size=32, split="val", max_bytes=200_000)
    assert len(ds) == (180_000 - 33) // 32 + 1 and len(val) > 0
    x, y = ds[5]
    assert x.shape == (32,) and x.dtype == torch.int64 and torch.equal(x[1:], y[:-1])
    raw = corpus_split("train", 200_000)
    assert bytes(x.tolist()) == raw[160:192] and y[-1] == raw[192]
    assert b"import" in raw  # it is Python source
    snips = text_snippets(5, 40, seed=1, max_bytes=200_000)
    assert snips == text_snippets(5, 40, seed=1, max_bytes=200_000) and len(set(snips)) == 5
    held_out = corpus_split("val", 200_000)
    for s in snips:
        assert len(s) == 40 and s in held_out and s.isascii()

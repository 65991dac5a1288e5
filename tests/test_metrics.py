"""Frechet distance against closed forms, sequence metrics, audio metrics, PSNR and the writers."""
import math

import numpy as np
import pytest
import torch

from latentar.metrics import (exact_match, first_divergence, frechet_distance, frechet_distance_from_features,
                              gaussian_stats, markdown_table, mel_distance, mel_fd, psnr, read_table, save_lines,
                              seq_rep_n, si_snr, write_markdown_table, write_table)


def _spd(d, rng):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def _fd_reference(mu1, s1, mu2, s2):
    """Independent recompute: Tr (S1 S2)^{1/2} = Tr (S1^{1/2} S2 S1^{1/2})^{1/2}, via symmetric eigh."""
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


# ---- Frechet distance -------------------------------------------------------------------------
def test_fd_zero_for_identical_gaussians():
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=16), _spd(16, rng)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8
    assert frechet_distance(torch.tensor(mu), torch.tensor(s), mu, s) == pytest.approx(0.0, abs=1e-8)


def test_fd_diagonal_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.1, 3, size=5), rng.uniform(0.1, 3, size=5)
    expected = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)


def test_fd_one_dimensional():
    # N(0, 1) vs N(1, 4): (0 - 1)^2 + (1 - 2)^2 = 2
    assert frechet_distance(0.0, 1.0, 1.0, 4.0) == pytest.approx(2.0, rel=1e-12)
    assert frechet_distance(np.array([3.0]), np.array([[0.25]]), np.array([1.0]), np.array([[9.0]])) == \
        pytest.approx(4.0 + (0.5 - 3.0) ** 2, rel=1e-12)


def test_fd_full_covariance_matches_independent_recompute():
    rng = np.random.default_rng(2)
    mu1, mu2, s1, s2 = rng.normal(size=8), rng.normal(size=8), _spd(8, rng), _spd(8, rng)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_fd_reference(mu1, s1, mu2, s2), rel=1e-7)


def test_fd_singular_covariances_stay_finite():
    rng = np.random.default_rng(3)
    v, w = rng.normal(size=(6, 1)), rng.normal(size=(6, 1))
    # rank 1: Tr (v v^T w w^T)^{1/2} = |v . w|
    expected = 6.0 + float(v[:, 0] @ v[:, 0]) + float(w[:, 0] @ w[:, 0]) - 2 * abs(float(v[:, 0] @ w[:, 0]))
    fd = frechet_distance(np.zeros(6), v @ v.T, np.ones(6), w @ w.T)
    assert np.isfinite(fd) and fd == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # fewer samples than dimensions: rank-deficient estimated covariances
    a, b = rng.normal(size=(10, 40)), rng.normal(size=(12, 40)) + 0.5
    fd = frechet_distance_from_features(a, b)
    assert np.isfinite(fd) and fd > 0
    assert frechet_distance_from_features(a, a) == pytest.approx(0.0, abs=1e-5)


def test_fd_from_samples_approaches_closed_form():
    rng = np.random.default_rng(4)
    mu1, mu2, s1, s2 = np.zeros(3), np.array([1.0, -1.0, 0.5]), _spd(3, rng), _spd(3, rng)
    a = rng.multivariate_normal(mu1, s1, size=100_000)
    b = rng.multivariate_normal(mu2, s2, size=100_000)
    truth = _fd_reference(mu1, s1, mu2, s2)
    assert frechet_distance_from_features(a, b) == pytest.approx(truth, rel=0.03)


def test_gaussian_stats_match_torch_cov():
    x = torch.randn(200, 7, dtype=torch.float64)
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == np.float64 and sigma.shape == (7, 7)
    np.testing.assert_allclose(sigma, torch.cov(x.T).numpy(), rtol=1e-12)
    np.testing.assert_allclose(mu, x.mean(0).numpy(), rtol=1e-12)


def test_fd_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"\(3, 3\) covariance"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="same length"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([np.nan]), 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        gaussian_stats(np.zeros((1, 4)))


# ---- sequence metrics -------------------------------------------------------------------------
def test_seq_rep_n_known_values():
    assert seq_rep_n([1, 2, 3, 4, 5], 2) == 0.0
    assert seq_rep_n([7, 7, 7, 7, 7], 2) == pytest.approx(1 - 1 / 4)
    assert seq_rep_n("abcabcabc", 3) == pytest.approx(1 - 3 / 7)
    assert seq_rep_n([1, 2], 4) == 0.0
    assert seq_rep_n(torch.tensor([[1, 1, 1], [1, 2, 3]]), 1) == pytest.approx(((1 - 1 / 3) + 0) / 2)
    assert seq_rep_n([1, 1, 1, 9, 0, 0], 1, eos=9) == pytest.approx(1 - 1 / 3)


def test_exact_match_and_first_divergence():
    assert exact_match(b"abc", b"abc") == 1.0 and exact_match("abc", "abd") == 0.0
    assert exact_match([[1, 2], [3, 4], [5]], [[1, 2], [3, 5], [5]]) == pytest.approx(2 / 3)
    assert exact_match([1, 2, 0, 0], [1, 2], pad=0) == 1.0
    assert exact_match(torch.tensor([4, 5, 9, 3]), [4, 5], eos=9) == 1.0
    assert first_divergence("hello world", "hello there") == 6
    assert first_divergence([1, 2, 3], [1, 2, 3]) == 3
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    assert first_divergence([9, 2], [1, 2]) == 0
    assert first_divergence(torch.tensor([[1, 2, 3], [1, 5, 3]]), torch.tensor([[1, 2, 3], [1, 2, 3]])) == [3, 1]
    with pytest.raises(ValueError, match="equal size"):
        exact_match([[1], [2]], [[1]])


# ---- audio metrics ----------------------------------------------------------------------------
def test_si_snr_closed_form_and_scale_invariance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8000, generator=g, dtype=torch.float64)
    x -= x.mean(-1, keepdim=True)
    n = torch.randn(2, 8000, generator=g, dtype=torch.float64)
    n -= n.mean(-1, keepdim=True)
    n -= (n * x).sum(-1, keepdim=True) / (x * x).sum(-1, keepdim=True) * x  # orthogonal to x
    n *= torch.sqrt((x * x).sum(-1, keepdim=True) / (n * n).sum(-1, keepdim=True)) / 10  # 20 dB
    per = si_snr(x.float(), (x + n).float(), reduction="none")
    assert per.shape == (2,) and torch.allclose(per, torch.tensor([20.0, 20.0]), atol=1e-3)
    assert si_snr(x.float(), 3.0 * (x + n).float()) == pytest.approx(20.0, abs=1e-3)
    with pytest.raises(ValueError, match="same shape"):
        si_snr(x[:, :100], x[:, :99])


def _tone(freq, n=24000, sr=24000, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / sr
    return (0.5 * torch.sin(2 * math.pi * freq * t) + 0.01 * torch.randn(n, generator=g)).reshape(1, 1, n)


def test_mel_distance_and_mel_fd_order_correctly():
    a = torch.cat([_tone(440, seed=s) for s in range(3)])
    a2 = torch.cat([_tone(440, seed=s + 10) for s in range(3)])
    b = torch.cat([_tone(1760, seed=s) for s in range(3)])
    assert mel_distance(a, a) == 0.0
    assert 0 < mel_distance(a, a2) < mel_distance(a, b)
    assert mel_fd(a, a, 24000) == pytest.approx(0.0, abs=1e-6)
    assert mel_fd(a, a2, 24000) < 0.1 * mel_fd(a, b, 24000)
    padded = torch.nn.functional.pad(a, (0, 24000))  # zero padding is dropped as silence
    assert mel_fd(padded, a2, 24000) < 0.1 * mel_fd(a, b, 24000)
    with pytest.raises(ValueError, match="mono"):
        mel_distance(torch.zeros(1, 2, 4000), torch.zeros(1, 2, 4000))


def test_psnr_closed_form():
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    assert psnr(x, x + 0.1) == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-6)
    per = psnr(x, torch.cat([x[:2] + 0.1, x[2:] + 0.2]), reduction="none")
    assert torch.allclose(per, torch.tensor([26.0206, 26.0206, 20.0, 20.0]), atol=1e-3)


# ---- writers ----------------------------------------------------------------------------------
def test_tables_and_plot(tmp_path):
    rows = [{"c_sigma": 0.5, "fd": 1.25, "model": "gmm"}, {"c_sigma": 1.0, "fd": float("nan"), "seed": 2}]
    path = write_table(tmp_path / "out" / "t.csv", rows)
    back = read_table(path)
    assert list(back[0]) == ["c_sigma", "fd", "model", "seed"]
    assert back[0]["fd"] == "1.25" and back[1]["model"] == "" and back[1]["seed"] == "2"
    md = markdown_table(rows)
    assert md.splitlines()[0] == "| c_sigma | fd | model | seed |" and "| 1 | nan |  | 2 |" in md
    assert write_markdown_table(tmp_path / "t.md", rows, title="FD").read_text().startswith("## FD\n")
    png = save_lines(tmp_path / "plots" / "fd.png", [0.1, 0.5, 1.0],
                     {"gmm": ([3.0, 2.0, 1.5], [0.1, 0.2, 0.1]), "joint": ([2.0, 2.0, 2.0], None)},
                     "C_sigma", "FD", "FD vs tokenizer variance")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    with pytest.raises(ValueError, match="series 'bad'"):
        save_lines(tmp_path / "x.png", [1, 2], {"bad": ([1, 2, 3], None)}, "x", "y", "t")

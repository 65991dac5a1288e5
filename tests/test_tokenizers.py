"""SigmaVAE / VAE / AE: posterior structure, noise statistics, C_sigma = 0 == AE, scale, errors,
sequence layout, save / load, the latent report. Independent references: scipy KS tests against
Monte Carlo draws of the stated distribution, torch.distributions' KL, float64 recomputes."""
import numpy as np
import pytest
import torch
from scipy import stats

from latentar.data import DigitsDataset, load_digits
from latentar.models import JointDiffusion
from latentar.tokenizers import AE, VAE, SigmaVAE, latent_report, load_tokenizer, plot_reconstructions, plot_tolerance
from latentar.train import Trainer

TINY = dict(channels=(8, 16), strides=(2, 1))  # 8x8 -> 4x4 latent grid


def tiny(cls, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(modality="image", in_channels=1, latent_dim=4, **TINY, **kw)


@pytest.fixture(scope="module")
def digits():
    return load_digits("train")[0]


# -- the posterior: SigmaVAE predicts only a mean ------------------------------------------------
@pytest.mark.parametrize("modality", ["image", "audio"])
def test_sigma_vae_encoder_emits_only_the_mean(modality):
    kw = TINY if modality == "image" else dict(channels=(8, 16), strides=(4, 4))
    models = {cls: cls(modality=modality, in_channels=1, latent_dim=6, **kw) for cls in (SigmaVAE, VAE, AE)}
    x = torch.randn(3, 1, 8, 8) if modality == "image" else torch.randn(3, 1, 160)
    widths = {}
    for cls, m in models.items():
        out = []
        h = m.encoder.register_forward_hook(lambda mod, inp, o: out.append(o))
        m.encode(x)
        h.remove()
        widths[cls] = out[0].shape[1]
    assert widths[SigmaVAE] == widths[AE] == 6      # mu only
    assert widths[VAE] == 12                        # mu and log-variance: the check can fail
    names = [n for n, _ in models[SigmaVAE].named_parameters()] + [n for n, _ in models[SigmaVAE].named_buffers()]
    assert not [n for n in names if "var" in n.lower() or "sigma" in n.lower()]
    m = models[SigmaVAE].train()
    assert torch.equal(m.encode(x), m.encode(x))    # encode is the mean, deterministic even in train mode
    assert m.encode_posterior(x)[1] is None


def test_noise_does_not_depend_on_input_or_weights(digits):
    a, b = tiny(SigmaVAE, c_sigma=0.5, seed=0), tiny(SigmaVAE, c_sigma=0.5, seed=1)
    _, na = a.sample_posterior(x=digits[:16], generator=torch.Generator().manual_seed(3), return_noise=True)
    _, nb = b.sample_posterior(x=digits[16:32], generator=torch.Generator().manual_seed(3), return_noise=True)
    assert torch.equal(na, nb)
    # ... but it does depend on the seed
    _, nc = b.sample_posterior(x=digits[16:32], generator=torch.Generator().manual_seed(4), return_noise=True)
    assert not torch.equal(na, nc)


def _norm_statistic(noise_raw: torch.Tensor, sigma: float) -> np.ndarray:
    """||noise_b||^2 / sigma^2 per example; = chi2_1 * chi2_n if noise_b = s_b eps_b, s_b ~ N(0, sigma^2)."""
    return (noise_raw.double().flatten(1).pow(2).sum(1) / sigma**2).numpy()


def _one_scalar_reference(n: int, size: int = 200_000) -> np.ndarray:
    rng = np.random.default_rng(12345)
    return rng.chisquare(1, size) * rng.chisquare(n, size)


@pytest.mark.parametrize("c_sigma", [0.25, 0.75])
def test_sample_posterior_noise_is_one_scalar_per_example(c_sigma):
    tok = tiny(SigmaVAE, c_sigma=c_sigma)
    tok.latent_std.fill_(2.5)  # noise is drawn in raw units, divided by the scale
    B, n = 4000, 4 * 4 * 4
    mu = torch.randn(B, 4, 4, 4)
    z, noise = tok.sample_posterior(mu, generator=torch.Generator().manual_seed(0), return_noise=True)
    assert torch.allclose(z - mu, noise, atol=1e-6)
    sigma = c_sigma / 0.8
    q = _norm_statistic(noise * 2.5, sigma)
    ref = _one_scalar_reference(n)
    assert stats.ks_2samp(q, ref).pvalue > 1e-3
    # E|s| ~ C_sigma: |s_b| is estimated by the RMS over the n elements (bias ~ 1/(4n))
    s_abs = np.sqrt(q / n) * sigma
    assert abs(s_abs.mean() / c_sigma - np.sqrt(2 / np.pi) / 0.8) < 0.03
    # the same test rejects the alternatives: iid per-element noise, and std C_sigma instead of C_sigma / 0.8
    iid = torch.randn(B, n, generator=torch.Generator().manual_seed(1)) * sigma
    assert stats.ks_2samp(_norm_statistic(iid, sigma), ref).pvalue < 1e-6
    assert stats.ks_2samp(_norm_statistic(noise * 2.5, c_sigma), ref).pvalue < 1e-6


def test_training_noise_is_one_scalar_per_example(digits):
    """In loss(): decoder input minus encoder output, captured by hooks, has the stated law."""
    tok = tiny(SigmaVAE, c_sigma=0.5).train()
    mus, zs = [], []
    h1 = tok.encoder.register_forward_hook(lambda m, i, o: mus.append(o.detach()))
    h2 = tok.decoder.register_forward_pre_hook(lambda m, i: zs.append(i[0].detach()))
    with torch.no_grad():
        for _ in range(3):
            tok.loss(digits)
    h1.remove(), h2.remove()
    noise = torch.cat([z - mu for z, mu in zip(zs, mus)])
    q = _norm_statistic(noise, 0.5 / 0.8)
    assert len(q) == 3 * len(digits)
    assert stats.ks_2samp(q, _one_scalar_reference(noise[0].numel())).pvalue > 1e-3


def test_c_sigma_zero_trains_exactly_like_the_ae():
    data = DigitsDataset("train")
    results = {}
    for name, model in {"sigma0": tiny(SigmaVAE, c_sigma=0.0, beta=0.01), "ae": tiny(AE, beta=0.01),
                        "sigma.3": tiny(SigmaVAE, c_sigma=0.3, beta=0.01)}.items():
        init = {k: v.clone() for k, v in model.state_dict().items()}
        rng = torch.get_rng_state()
        out = Trainer(max_steps=6, batch_size=32, lr=1e-3, device="cpu", progress=False, log_every=1).fit(model, data)
        results[name] = (init, [r["loss"] for r in out["history"]], model.state_dict())
    (i0, l0, w0), (i1, l1, w1), (i2, l2, w2) = results["sigma0"], results["ae"], results["sigma.3"]
    assert all(torch.equal(i0[k], i1[k]) for k in i1)                 # same initialisation
    assert l0 == l1                                                   # same loss at every step
    assert all(torch.equal(w0[k], w1[k]) for k in w1)                 # same weights after training
    assert l2[0] != l1[0]                                             # noise changes the loss (control)


def test_c_sigma_zero_draws_no_random_numbers(digits):
    tok = tiny(SigmaVAE, c_sigma=0.0).train()
    state = torch.get_rng_state()
    tok.loss(digits[:8])
    assert torch.equal(state, torch.get_rng_state())


# -- latent scale ---------------------------------------------------------------------------------
@torch.no_grad()
def test_latent_scale_is_consistent(digits):
    tok = tiny(SigmaVAE, c_sigma=0.5).eval()
    x = digits[:256]
    raw = tok.encode(x).double()
    rec_raw = tok.decode(tok.encode(x))
    std = tok.estimate_latent_scale(x)
    assert std == pytest.approx(float(raw.std()), rel=1e-4)           # float64 recompute
    mu = tok.encode(x)
    assert float(mu.double().std()) == pytest.approx(1.0, rel=1e-3)
    assert torch.allclose(mu * std, raw.float(), atol=1e-5)
    assert torch.allclose(tok.decode(mu), rec_raw, atol=1e-5)         # decode undoes the scale
    # sample_posterior: raw noise s * eps seen through the scale
    z, noise = tok.sample_posterior(mu, generator=torch.Generator().manual_seed(0), return_noise=True)
    _, raw_noise = tok.sample_posterior(mu, generator=torch.Generator().manual_seed(0), return_noise=True)
    tok.latent_std.fill_(1.0)
    _, unit_noise = tok.sample_posterior(mu, generator=torch.Generator().manual_seed(0), return_noise=True)
    assert torch.allclose(noise * std, unit_noise, atol=1e-5)


# -- VAE ------------------------------------------------------------------------------------------
def test_vae_kl_matches_torch_distributions(digits):
    tok = tiny(VAE, beta=0.1)
    x = digits[:32]
    mus, zs = [], []
    h = tok.encoder.register_forward_hook(lambda m, i, o: mus.append(o.detach()))
    loss, metrics = tok.loss(x)
    h.remove()
    mu, logvar = mus[0].chunk(2, dim=1)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu.double(), (0.5 * logvar.double()).exp()),
        torch.distributions.Normal(torch.zeros_like(mu, dtype=torch.float64), 1.0)).mean()
    assert float(metrics["kl"]) == pytest.approx(float(ref), rel=1e-4)
    assert float(loss.detach()) == pytest.approx(float(metrics["rec"]) + 0.1 * float(ref), rel=1e-5)


@torch.no_grad()
def test_vae_posterior_sample_has_the_encoded_law(digits):
    tok = tiny(VAE).eval()
    x = digits[:1].expand(4000, -1, -1, -1)
    mu, logvar = tok.encode_posterior(x)
    z = tok.sample_posterior(mu, logvar=logvar, generator=torch.Generator().manual_seed(0))
    std_normal = ((z - mu) / (0.5 * logvar).exp()).flatten()
    assert stats.kstest(std_normal.numpy(), "norm").pvalue > 1e-3
    with pytest.raises(ValueError, match="variance"):
        tok.sample_posterior(mu)                    # a VAE cannot sample from the mean alone


# -- clear errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, match", [
    (torch.full((2, 1, 8, 8), float("nan")), "NaN or inf"),
    (torch.tensor([[[[float("inf")] * 8] * 8]]), "NaN or inf"),
    (torch.randn(2, 8, 8), r"expected \(B, 1, H, W\) images"),
    (torch.randn(2, 3, 8, 8), "1 channel"),
    (torch.randn(2, 1, 160), "modality='image'"),
    (torch.randn(2, 1, 7, 7), "multiple of the total stride"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.long), "floating point"),
])
def test_image_input_errors_are_clear(bad, match):
    tok = tiny(SigmaVAE)
    with pytest.raises((ValueError, TypeError), match=match):
        tok.encode(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        tok.loss(bad)


def test_decode_rejects_wrong_latents():
    tok = tiny(SigmaVAE)
    with pytest.raises(ValueError, match=r"expected latent of shape \(B, 4, h, w\).*from_sequence"):
        tok.decode(torch.randn(2, 16, 4))
    with pytest.raises(ValueError, match="exactly one of"):
        tok.sample_posterior(torch.randn(2, 4, 4, 4), x=torch.randn(2, 1, 8, 8))


# -- sequence layout --------------------------------------------------------------------------------
def test_sequence_layout_is_raster_order():
    tok = tiny(SigmaVAE)
    z = torch.randn(2, 4, 3, 5)
    seq = tok.to_sequence(z)
    assert seq.shape == (2, 15, 4)
    for i in range(3):
        for j in range(5):
            assert torch.equal(seq[:, i * 5 + j], z[:, :, i, j])
    assert torch.equal(tok.from_sequence(seq, (3, 5)), z)
    assert torch.equal(tok.from_sequence(tok.to_sequence(z[:, :, :3, :3])), z[:, :, :3, :3])  # square default
    with pytest.raises(ValueError, match="not a square grid"):
        tok.from_sequence(seq)
    with pytest.raises(ValueError, match=r"tokens \(B, T, 4\)"):
        tok.from_sequence(torch.randn(2, 15, 3), (3, 5))


# -- save / load ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SigmaVAE, VAE, AE])
def test_save_load_round_trip(cls, tmp_path, digits):
    tok = tiny(cls).eval()
    tok.estimate_latent_scale(digits[:128])
    tok.save_pretrained(tmp_path / "tok")
    back = cls.from_pretrained(tmp_path / "tok").eval()
    assert back.config == tok.config
    assert float(back.latent_std) == float(tok.latent_std)
    x = digits[:8]
    assert torch.equal(back.encode(x), tok.encode(x))
    assert torch.equal(back.decode(back.encode(x)), tok.decode(tok.encode(x)))
    if cls is SigmaVAE:
        assert back.c_sigma == tok.c_sigma


def test_load_mismatch_errors_are_clear(tmp_path):
    tiny(SigmaVAE).save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match=r"latent_dim: checkpoint 4 vs requested 8"):
        SigmaVAE.from_pretrained(tmp_path / "tok", latent_dim=8)
    with pytest.raises(ValueError, match="different architecture"):
        SigmaVAE.from_pretrained(tmp_path / "tok", channels=[8, 32])
    with pytest.raises(ValueError, match="holds a 'SigmaVAE' checkpoint, not a VAE"):
        VAE.from_pretrained(tmp_path / "tok")


def test_load_tokenizer_picks_the_saved_class_and_rejects_other_models(tmp_path, digits):
    x = digits[:8]
    for cls in (SigmaVAE, VAE):
        tok = tiny(cls, c_sigma=0.3) if cls is SigmaVAE else tiny(cls)
        tok.estimate_latent_scale(digits[:128])
        tok.eval().save_pretrained(tmp_path / cls.__name__)
        back = load_tokenizer(tmp_path / cls.__name__)
        assert type(back) is cls and not back.training
        assert not any(p.requires_grad for p in back.parameters())
        assert back.config == tok.config and float(back.latent_std) == float(tok.latent_std)
        assert torch.equal(back.encode(x), tok.encode(x))
        assert torch.equal(back.decode(back.encode(x)), tok.decode(tok.encode(x)))
    assert load_tokenizer(tmp_path / "SigmaVAE").c_sigma == 0.3
    JointDiffusion(latent_dim=4, d_model=16, depth=1, num_heads=2, max_len=4).save_pretrained(tmp_path / "jd")
    with pytest.raises(ValueError, match=r"holds a 'JointDiffusion', not a tokenizer \(one of \['AE', 'SigmaVAE', 'VAE'\]\)"):
        load_tokenizer(tmp_path / "jd")
    with pytest.raises(FileNotFoundError, match="no config.json in .*save_pretrained"):
        load_tokenizer(tmp_path / "missing")


# -- Trainer, report, plots -------------------------------------------------------------------------
def test_training_step_accepts_the_trainer_batches(digits):
    tok = tiny(SigmaVAE)
    labels = torch.zeros(8, dtype=torch.long)
    l1, m1 = tok.training_step((digits[:8], labels))
    l2, _ = tok.training_step({"images": digits[:8]})
    assert l1.dim() == 0 and torch.isfinite(l1) and {"rec", "mu2"} <= set(m1)
    with pytest.raises(KeyError, match="none of the keys"):
        tok.training_step({"pixels": digits[:8]})


def test_latent_report_detects_collapsed_channels(digits):
    x = digits[:200]
    sig, vae, ae = tiny(SigmaVAE, c_sigma=0.5), tiny(VAE), tiny(AE)
    with torch.no_grad():
        for m in (sig, ae):                        # channel 2: a constant mean
            m.encoder.net[-1].weight[2].zero_()
        head = vae.encoder.net[-1]                  # output channels: mu 0..3, logvar 4..7
        head.weight[:4] *= 50.0                     # informative means ...
        head.weight[4:].zero_()
        head.bias[4:] = -4.0                        # ... with small posterior variance: KL >> 0
        head.weight[2].zero_()                      # channel 2: mu = 0 and logvar = 0, the prior: KL = 0
        head.bias[2] = 0.0
        head.bias[6] = 0.0
    for m in (sig, vae, ae):
        rep = latent_report(m, x, radii=[0.0, 1.0])
        assert rep["collapse"]["collapsed_channels"] == [2], type(m).__name__
        assert rep["collapse"]["collapsed_share"] == pytest.approx(0.25)
        assert rep["num_examples"] == 200 and len(rep["latent"]["std_per_channel"]) == 4
    assert rep["tolerance"]["radii"] == [0.0, 1.0] and rep["psnr"] == rep["tolerance"]["psnr"][0]
    # reconstruction PSNR: float64 recompute
    ae.eval()
    with torch.no_grad():
        mse = (ae.decode(ae.encode(x)).double() - x.double()).pow(2).flatten(1).mean(1)
    assert rep["psnr"] == pytest.approx(float((10 * torch.log10(4.0 / mse)).mean()), rel=1e-5)


def test_plots_write_pngs(tmp_path, digits):
    tok = tiny(SigmaVAE)
    reps = {f"c={c}": latent_report(tiny(SigmaVAE, c_sigma=c), digits[:64], radii=[0, 1, 2]) for c in (0.0, 0.5)}
    for path in (plot_tolerance(reps, tmp_path / "tol.png"), plot_reconstructions(tok, digits, tmp_path / "rec.png")):
        assert path.read_bytes()[:4] == b"\x89PNG"

"""Audio tokenizers: arbitrary lengths round-trip, causal convs are causal, clear input errors,
the multi-resolution mel loss against a float64 recompute, and a tiny model trained on espeak-ng
speech (skipped, with the reason, when espeak-ng is missing)."""
import shutil

import pytest
import torch
import torchaudio

from latentar.tokenizers import AE, VAE, SigmaVAE, MultiResolutionMelLoss, latent_report, plot_spectrograms

TINY = dict(channels=(8, 16), strides=(4, 4), sample_rate=16000, mel_n_ffts=(128, 256))  # hop 16


def tiny(cls=SigmaVAE, causal=False, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(modality="audio", in_channels=1, latent_dim=4, causal=causal, **TINY, **kw)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("cls", [SigmaVAE, VAE, AE])
def test_arbitrary_lengths_round_trip(cls, causal):
    tok = tiny(cls, causal)
    for T in (1, 15, 16, 17, 161, 1000):
        x = torch.randn(2, 1, T)
        z = tok.encode(x)
        assert z.shape == (2, 4, -(-T // 16)) == (2, *tok.latent_shape(x.shape))
        assert tok.reconstruct(x).shape == x.shape
        assert tok.decode(z).shape == (2, 1, z.shape[-1] * 16)
        loss, _ = tok.loss(x)
        assert torch.isfinite(loss)


def test_causal_encoder_and_decoder_ignore_the_future():
    x = torch.randn(1, 1, 320)
    x2 = x.clone()
    x2[..., 200:] += 1.0                     # change from sample 200 on (latent frame 12 = samples 192..207)
    causal, acausal = tiny(causal=True), tiny(causal=False)
    with torch.no_grad():
        d = (causal.encode(x) - causal.encode(x2)).abs().amax(dim=1)[0]
        assert d[:12].max() == 0 and d[12] > 0
        r = (causal.reconstruct(x) - causal.reconstruct(x2)).abs()[0, 0]
        assert r[:192].max() == 0            # outputs before frame 12 depend on earlier frames only
        assert (acausal.encode(x) - acausal.encode(x2)).abs().amax(dim=1)[0, :12].max() > 0  # control


@pytest.mark.parametrize("bad, match", [
    (torch.randn(2, 160), r"expected \(B, 1, T\) audio, got input of shape \(2, 160\); add the channel axis"),
    (torch.randn(160), r"expected \(B, 1, T\) audio"),
    (torch.randn(2, 2, 160), "1 channel"),
    (torch.randn(2, 1, 8, 8), "modality='audio'"),
    (torch.tensor([[[0.0, float("nan"), 1.0]]]), "1 NaN or inf"),
    (torch.zeros(2, 1, 0), "empty"),
])
def test_audio_input_errors_are_clear(bad, match):
    tok = tiny()
    with pytest.raises(ValueError, match=match):
        tok.encode(bad)
    with pytest.raises(ValueError, match=match):
        tok.training_step(bad)


def test_mel_loss_matches_a_float64_recompute():
    torch.manual_seed(0)
    x, y = torch.randn(2, 1, 3000), torch.randn(2, 1, 3000)
    loss = MultiResolutionMelLoss(16000, n_ffts=(256, 512))(x, y)
    terms = []
    for n_fft in (256, 512):
        fb = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, 8000.0, n_fft // 8, 16000).double()
        win = torch.hann_window(n_fft, dtype=torch.float64)

        def logmel(w):
            spec = torch.stft(torch.nn.functional.pad(w[:, 0].double(), (n_fft // 2, n_fft // 2)), n_fft,
                              n_fft // 4, window=win, center=False, return_complex=True).abs()
            return torch.log(torch.einsum("bft,fm->bmt", spec, fb) + 1e-5)

        terms.append((logmel(x) - logmel(y)).abs().mean())
    assert float(loss) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-4)
    assert float(MultiResolutionMelLoss(16000)(x, x)) == 0.0


def test_tiny_model_trains_on_tones():
    t = torch.arange(2048) / 16000
    x = (0.5 * torch.sin(2 * torch.pi * torch.tensor([220.0, 330.0, 440.0, 550.0])[:, None] * t)).unsqueeze(1)
    tok = tiny(c_sigma=0.1)
    opt = torch.optim.AdamW(tok.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = tok.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.7 * losses[0]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_tiny_model_trains_on_espeak_speech(tmp_path):
    from latentar.data.speech import SpeechCorpus
    from latentar.train import Trainer

    corpus = SpeechCorpus(root=tmp_path / "speech", sample_rate=16000, voices=["en-us"], rates=[175],
                          sentences=["The quick brown fox jumps over the lazy dog.", "Good morning!",
                                     "Seven silver spoons lay on the kitchen table."], crop_seconds=0.5)
    tok = tiny(c_sigma=0.2)
    first = float(tok.loss(torch.stack([corpus[i] for i in range(3)]))[0].detach())
    out = Trainer(max_steps=30, batch_size=3, lr=3e-3, device="cpu", progress=False, log_every=5).fit(tok, corpus)
    assert out["loss"] < 0.8 * first
    tok.estimate_latent_scale(corpus)
    rep = latent_report(tok, corpus, radii=[0.0, 1.0])
    assert {"mel_distance", "si_snr"} <= set(rep["reconstruction"])
    assert rep["tolerance"]["metric"] == "mel_distance" and len(rep["tolerance"]["mel_distance"]) == 2
    assert rep["latent"]["std"] == pytest.approx(1.0, rel=0.05)
    assert plot_spectrograms(tok, corpus, tmp_path / "spec.png").read_bytes()[:4] == b"\x89PNG"

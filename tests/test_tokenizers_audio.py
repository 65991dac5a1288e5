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


# -- issue 14: patched first stage, mel loss rewrite, crop training -----------------------------

def test_patchify_is_an_inverse_pair_and_orders_samples():
    from latentar.tokenizers.audio_net import patchify, unpatchify
    x = torch.arange(2 * 3 * 12, dtype=torch.float32).reshape(2, 3, 12)
    p = patchify(x, 4)
    assert p.shape == (2, 12, 3) and torch.equal(unpatchify(p, 4), x)
    assert p[0, :4, 1].tolist() == x[0, 0, 4:8].tolist()  # channel c*s + k = sample t*s + k
    with pytest.raises(ValueError, match="multiple of the patch size 4"):
        patchify(torch.zeros(1, 1, 10), 4)


@pytest.mark.parametrize("causal", [False, True])
def test_patched_layout_runs_nothing_at_the_sample_rate(causal):
    from latentar.tokenizers.audio_net import AudioDecoder, AudioEncoder
    x = torch.randn(2, 1, 4 * 64)
    for patch in (True, False):
        enc = AudioEncoder(1, 8, [8, 16, 32], [4, 4, 4], causal=causal, patch=patch)
        dec = AudioDecoder(4, 1, [8, 16, 32], [4, 4, 4], causal=causal, patch=patch)
        assert enc(x).shape == (2, 8, 4) and dec(torch.randn(2, 4, 4)).shape == (2, 1, 256)
        lengths = []
        hook = lambda m, inp, out: lengths.append(inp[0].shape[-1])  # noqa: E731
        handles = [m.register_forward_hook(hook) for m in [*enc.modules(), *dec.modules()]
                   if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
        enc(x), dec(torch.randn(2, 4, 4))
        for h in handles:
            h.remove()
        if patch:
            assert max(lengths) <= 256 // 4 + 8       # every conv sees at most T / s0 (+ padding) frames
            assert enc.net[0].conv.in_channels == 4 and dec.net[-1].conv.out_channels == 4
        else:
            assert max(lengths) >= 256                # SEANet's stem and last conv run on every sample


def test_causal_patched_decoder_ignores_later_latents():
    tok = tiny(causal=True)
    z = torch.randn(1, 4, 20)
    z2 = z.clone()
    z2[..., 12:] += 1.0
    with torch.no_grad():
        d = (tok.decode(z) - tok.decode(z2)).abs()[0, 0]
    assert d[:12 * 16].max() == 0 and d[12 * 16:].max() > 0


def test_mel_loss_matches_torchaudio_melspectrogram_and_has_finite_gradients():
    torch.manual_seed(1)
    x, y = 0.3 * torch.randn(3, 1, 2000), 0.3 * torch.randn(3, 1, 2000)
    loss = MultiResolutionMelLoss(16000, n_ffts=(128, 512))
    ref = []
    for n_fft in (128, 512):
        mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=n_fft, hop_length=n_fft // 4,
                                                   n_mels=n_fft // 8, pad_mode="constant", power=1.0)
        ref.append((torch.log(mel(x) + 1e-5) - torch.log(mel(y) + 1e-5)).abs().mean())
    assert float(loss(x, y)) == pytest.approx(float(torch.stack(ref).mean()), rel=1e-5)
    for a, b in zip(loss.log_mels(x), [torch.log(m + 1e-5) for m in (
            torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=n, hop_length=n // 4, n_mels=n // 8,
                                                 pad_mode="constant", power=1.0)(x) for n in (128, 512))]):
        assert a.shape == b.shape == (3, 1, *b.shape[-2:]) and torch.allclose(a, b, atol=1e-4)
    # Zero padding (exactly zero spectrum bins) next to sound: finite gradients, no NaN from |.| at 0.
    padded = torch.cat([0.3 * torch.randn(2, 1, 600), torch.zeros(2, 1, 400)], dim=-1).requires_grad_()
    loss(padded, y[:2, :, :1000]).backward()
    assert torch.isfinite(padded.grad).all() and padded.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="differ in shape"):
        loss(x, y[..., :100])


def test_tokenizer_trains_on_random_crops_and_encodes_full_clips():
    from latentar.data.audio_io import RandomCrops
    from latentar.train import Trainer
    t = torch.arange(4096) / 16000
    freqs = torch.tensor([200.0, 300.0, 450.0, 600.0, 750.0, 900.0])[:, None]
    clips = (0.5 * torch.sin(2 * torch.pi * freqs * t) * (0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t))).unsqueeze(1)
    crops = RandomCrops(clips, 512, generator=0)
    tok = tiny(c_sigma=0.1)
    first = float(tok.loss(torch.stack([crops[i] for i in range(6)]))[0].detach())
    out = Trainer(max_steps=40, batch_size=6, lr=3e-3, device="cpu", progress=False, log_every=10).fit(tok, crops)
    assert out["loss"] < 0.7 * first
    with torch.no_grad():
        z = tok.encode(clips)                      # the AR model sees the full clips' latents
        full = float(tok.mel_loss(tok.reconstruct(clips), clips))
    assert z.shape == (6, 4, 4096 // 16)
    assert full < first                            # what was learned on crops carries to full clips


@pytest.mark.slow
def test_recommended_speech_config_step_is_fast_and_small():
    """The bench's ``new`` config in a fresh process, one thread: step time and peak RSS (issue 14)."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    bench = Path(__file__).resolve().parents[1] / "bench" / "audio_tokenizer.py"
    proc = subprocess.run([sys.executable, str(bench), "--child", "new", "--batch", "16", "--steps", "2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["peak_rss_mb"] < 4096
    assert res["step_s"] < 3.0                     # ~0.3-0.4 s on one core; generous for a loaded box


def test_crop_training_draws_windows_from_the_global_rng_so_resume_replays_them():
    from latentar.tokenizers import CropTraining, SigmaVAE, random_crops
    x = torch.arange(2 * 3 * 1000, dtype=torch.float32).reshape(2, 3, 1000)
    torch.manual_seed(5)
    a = random_crops(x, 256)
    torch.manual_seed(5)
    b = random_crops(x, 256)
    assert torch.equal(a, b) and a.shape == (2, 3, 256)  # the Trainer's saved RNG state replays the crops
    for i in range(2):  # each is one contiguous window of its own clip, the same on every channel
        start = int(a[i, 0, 0]) - i * 3000
        assert torch.equal(a[i], x[i, :, start:start + 256])
    assert torch.equal(random_crops(x[..., :200], 256), x[..., :200])  # short clips are used whole
    tok = SigmaVAE(modality="audio", latent_dim=4, channels=[8, 16], strides=[4, 4], sample_rate=16000)
    with pytest.raises(ValueError, match="hop"):
        CropTraining(tok, 8)
    with pytest.raises(ValueError, match="modality"):
        CropTraining(SigmaVAE(modality="image", latent_dim=4), 256)
    loss = CropTraining(tok, 256).training_step(torch.randn(2, 1, 1000))
    assert torch.isfinite(loss[0] if isinstance(loss, tuple) else loss)

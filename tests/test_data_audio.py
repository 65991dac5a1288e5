"""WavFolder (errors, mix-down, resampling, crops) and the espeak-ng SpeechCorpus."""
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import latentar.data.speech as speech
from latentar.data import SpeechCorpus, WavFolder, fix_length


def _sine(freq, sr, n, amp=0.5):
    t = np.arange(n) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_missing_folder_names_it(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        WavFolder(missing)


def test_folder_without_audio_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match="no files ending in"):
        WavFolder(tmp_path)


def test_corrupt_empty_and_nan_files_are_named(tmp_path):
    sf.write(tmp_path / "good.wav", _sine(440, 24000, 2400), 24000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x01garbage" * 10)
    with pytest.raises(ValueError, match="corrupt.wav"):
        WavFolder(tmp_path)
    (tmp_path / "corrupt.wav").unlink()
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 24000)
    with pytest.raises(ValueError, match="empty.wav.*empty"):
        WavFolder(tmp_path)
    (tmp_path / "empty.wav").unlink()
    bad = _sine(440, 24000, 2400)
    bad[100] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 24000, subtype="FLOAT")
    with pytest.raises(ValueError, match="nan.wav.*NaN"):
        WavFolder(tmp_path)


def test_silent_file_skipped_with_warning(tmp_path):
    sf.write(tmp_path / "a_good.wav", _sine(440, 24000, 2400), 24000)
    sf.write(tmp_path / "b_silent.wav", np.zeros(2400, np.float32), 24000)
    with pytest.raises(ValueError, match="b_silent.wav.*silent"):
        WavFolder(tmp_path)
    with pytest.warns(UserWarning, match="b_silent.wav"):
        ds = WavFolder(tmp_path, on_error="skip")
    assert len(ds) == 1 and ds.files[0].name == "a_good.wav"
    assert [p.name for p, _ in ds.skipped] == ["b_silent.wav"]
    (tmp_path / "a_good.wav").unlink()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no usable audio"):
        WavFolder(tmp_path, on_error="skip")


def test_stereo_is_mixed_down(tmp_path):
    left = _sine(300, 24000, 4800)
    stereo = np.stack([left, -0.5 * left], axis=1)  # (T, 2)
    sf.write(tmp_path / "st.wav", stereo, 24000, subtype="FLOAT")
    wave = WavFolder(tmp_path)[0]
    assert wave.shape == (1, 4800)
    np.testing.assert_allclose(wave[0].numpy(), 0.25 * left, atol=1e-6)


@pytest.mark.parametrize("sr_in,n_in", [(16000, 16000), (22050, 1000), (48000, 7)])
def test_resampled_length(tmp_path, sr_in, n_in):
    sf.write(tmp_path / "x.wav", _sine(200, sr_in, n_in), sr_in, subtype="FLOAT")
    wave = WavFolder(tmp_path, sample_rate=24000)[0]
    assert wave.shape == (1, math.ceil(n_in * 24000 / sr_in))


def test_resampled_sine_keeps_its_frequency(tmp_path):
    sf.write(tmp_path / "x.wav", _sine(440, 16000, 16000), 16000, subtype="FLOAT")
    wave = WavFolder(tmp_path, sample_rate=24000)[0][0].numpy()
    ref = _sine(440, 24000, 24000)
    mid = slice(1000, 23000)  # away from the filter's edge effects
    np.testing.assert_allclose(wave[mid], ref[mid], atol=2e-2)


def test_crops_fixed_length_deterministic_and_random(tmp_path):
    sf.write(tmp_path / "long.wav", np.linspace(-0.9, 0.9, 24000, dtype=np.float32), 24000, subtype="FLOAT")
    sf.write(tmp_path / "short.wav", _sine(440, 24000, 1000), 24000, subtype="FLOAT")
    ds = WavFolder(tmp_path, crop_seconds=0.5)
    a, b = ds[0], ds[0]
    assert a.shape == (1, 12000) and torch.equal(a, b)
    assert torch.allclose(a[0, 0], torch.tensor(np.linspace(-0.9, 0.9, 24000)[6000], dtype=torch.float32))
    short = ds[1]
    assert short.shape == (1, 12000) and short[0, 1000:].abs().max() == 0 and short[0, :1000].abs().max() > 0.4
    r1 = WavFolder(tmp_path, crop_seconds=0.5, generator=3)
    r2 = WavFolder(tmp_path, crop_seconds=0.5, generator=3)
    starts1 = [float(r1[0][0, 0]) for _ in range(5)]
    assert starts1 == [float(r2[0][0, 0]) for _ in range(5)]  # same seed, same crops
    assert len(set(starts1)) > 1  # random windows
    with pytest.raises(ValueError, match="positive"):
        fix_length(torch.zeros(1, 5), 0)


def test_speech_missing_espeak_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    ds = SpeechCorpus(root=tmp_path, sentences=["hello"], voices=["en-us"], rates=[175])
    with pytest.raises(RuntimeError, match="apt-get install -y espeak-ng"):
        ds[0]


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed (apt-get install -y espeak-ng, or `make`)")
def test_speech_corpus_synthesizes_caches_and_crops(tmp_path, monkeypatch):
    root = tmp_path / "speech"
    ds = SpeechCorpus(root=root, sentences=["Hello world.", "Seven silver spoons."], voices=["en-us"], rates=[175])
    assert len(ds) == 2 and not root.exists()  # construction is free
    waves = [ds[0], ds[1]]
    for i, w in enumerate(waves):
        assert w.ndim == 2 and w.shape[0] == 1 and w.dtype == torch.float32
        assert 0.3 * 24000 < w.shape[1] < 4 * 24000
        assert w.abs().max() > 0.05 and w.std() > 0.01  # speech, not silence
        assert sf.info(str(ds.path(i))).samplerate == 24000
    assert waves[0].shape != waves[1].shape or not torch.equal(waves[0], waves[1])
    # A second corpus with the same settings re-uses the files and never calls espeak-ng.
    monkeypatch.setattr(speech, "synthesize", lambda *a, **k: pytest.fail("re-synthesized a cached utterance"))
    again = SpeechCorpus(root=root, sentences=["Hello world.", "Seven silver spoons."], voices=["en-us"], rates=[175],
                         crop_seconds=0.5)
    assert again[0].shape == (1, 12000) and torch.equal(again[1], again[1])
    assert ds.item_info(1) == {"text": "Seven silver spoons.", "voice": "en-us", "rate": 175, "sentence_index": 1}


# -- issue 14: a larger corpus (speakers with pitches, sizes, item order) and random crops -------

def test_full_corpus_size_speakers_and_order_without_synthesizing(tmp_path):
    full = SpeechCorpus(root=tmp_path)  # construction synthesizes nothing
    assert len(full) == 64 * 12 * 2 == 1536 >= 1500 and not any(tmp_path.iterdir())
    infos = [full.item_info(i) for i in range(len(full))]
    assert len({full.path(i) for i in range(len(full))}) == len(full)  # one file per utterance
    assert len({(d["voice"], d.get("pitch")) for d in infos}) == 12
    assert len({d["voice"].split("+")[0] for d in infos}) == 8  # accents
    assert {d["rate"] for d in infos} == {150, 190} and len({d["text"] for d in infos}) == 64
    # The speaker varies fastest: a test split of the first fifth holds every speaker and both rates.
    head = infos[: len(full) // 5]
    assert len({(d["voice"], d.get("pitch"), d["rate"]) for d in head}) == 24
    assert infos[0]["sentence_index"] == 0 and infos[24]["sentence_index"] == 1
    assert full.item_info(1) == {"text": speech.SENTENCES[0], "voice": "en-us+f3", "rate": 150,
                                 "sentence_index": 0, "pitch": 65}
    assert full.path(1).name == "0000_en-us_f3_p65_150.wav"
    # Deterministic: a second instance agrees item by item and on the cache folder.
    again = SpeechCorpus()
    assert [again.item_info(i) for i in range(len(again))] == infos and again.settings_hash() == full.settings_hash()
    small = SpeechCorpus(size="small")
    assert len(small) == 24 and small.settings_hash() != full.settings_hash()
    assert len(SpeechCorpus(size="small", rates=[140, 175])) == 48  # explicit lists override the size's
    assert speech.FORMAT_VERSION >= 2


@pytest.mark.parametrize("kw, match", [
    (dict(size="huge"), "size must be one of"),
    (dict(voices=["en-us@120"]), "pitch after '@' must be an integer 0..99"),
    (dict(voices=["en-us@high"]), "pitch after '@'"),
    (dict(voices=["@50"]), "names no espeak-ng voice"),
])
def test_corpus_argument_errors_are_clear(kw, match):
    with pytest.raises(ValueError, match=match):
        SpeechCorpus(**kw)


def test_synthesize_passes_voice_rate_and_pitch_to_espeak(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        out = cmd[cmd.index("-w") + 1]
        sf.write(out, _sine(200, 22050, 2205), 22050)
        return type("P", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(speech.shutil, "which", lambda name: "/usr/bin/espeak-ng")
    monkeypatch.setattr(speech.subprocess, "run", fake_run)
    ds = SpeechCorpus(root=tmp_path, sentences=["hi there"], voices=["en-gb+f2@65", "en-us"], rates=[160],
                      sample_rate=16000)
    a, b = ds[0], ds[1]
    assert calls[0][1:7] == ["-v", "en-gb+f2", "-s", "160", "-p", "65"] and "-p" not in calls[1]
    assert calls[0][-2:] == ["--", "hi there"]
    assert a.shape == b.shape == (1, 1600)  # 0.1 s resampled 22,050 -> 16,000 Hz
    assert ds.item_info(0)["pitch"] == 65 and "pitch" not in ds.item_info(1)


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed (apt-get install -y espeak-ng, or `make`)")
def test_speech_pitch_and_speakers_change_the_audio(tmp_path):
    ds = SpeechCorpus(root=tmp_path, sentences=["Seven silver spoons."], voices=["en-us@30", "en-us@80", "en-gb+f2"],
                      rates=[175], sample_rate=16000)
    low, high, other = ds[0], ds[1], ds[2]

    def f0(w):  # autocorrelation pitch of the loudest 0.1 s, 60..400 Hz
        w = w[0]
        seg = w[int(w.abs().argmax()) - 800:][:1600]
        seg = seg - seg.mean()
        ac = torch.stack([(seg[:-lag] * seg[lag:]).sum() for lag in range(40, 267)])
        return 16000 / (40 + int(ac.argmax()))

    assert f0(high) > 1.2 * f0(low)
    assert other.shape != low.shape or not torch.allclose(other, low)


def test_random_crops_are_seeded_random_windows():
    from latentar.data.audio_io import RandomCrops
    clips = torch.arange(3 * 1000, dtype=torch.float32).reshape(3, 1, 1000)
    a, b = RandomCrops(clips, 100, generator=5), RandomCrops(clips, 100, generator=5)
    first = [a[i] for i in (0, 1, 2, 0, 0)]
    assert all(c.shape == (1, 100) for c in first)
    assert [c.tolist() for c in first] == [b[i].tolist() for i in (0, 1, 2, 0, 0)]  # same seed, same crops
    for i, c in zip((0, 1, 2, 0, 0), first):
        start = int(c[0, 0]) - 1000 * i
        assert 0 <= start <= 900 and torch.equal(c, clips[i, :, start:start + 100])  # a window of clip i
    assert len({int(c[0, 0]) for c in (first[0], first[3], first[4])}) > 1  # fresh window per access
    assert RandomCrops(clips[:, :, :50], 100)[0][0, 50:].abs().max() == 0  # short clips are zero-padded
    pairs = RandomCrops([(clips[0], 0), (clips[1], 1)], 10)  # any map-style dataset of (C, T) items
    assert len(pairs) == 2 and pairs[1].shape == (1, 10)
    with pytest.raises(ValueError, match=r"\(N, C, T\)"):
        RandomCrops(clips[:, 0], 10)
    with pytest.raises(ValueError, match="positive"):
        RandomCrops(clips, 0)

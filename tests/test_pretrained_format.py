"""Every saved model class in diffusers' layout (config.json with ``_class_name`` +
diffusion_pytorch_model.safetensors): round trips, ``torch_dtype`` / ``variant``, the clear errors of
``latentar.pretrained``, atomic saves, the caller's RNG, and directories of the earlier layout
(``{"class", "config"}`` + model.safetensors, ``tests/fixtures/legacy``) that must keep loading."""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import diffusers
import pytest
import torch
from diffusers import ConfigMixin, ModelMixin
from safetensors.torch import load_file, save_file

import latentar.pretrained as lp
from latentar.heads import DiffusionHead, GMMHead, MSEHead
from latentar.heads.base import Head
from latentar.metrics.digits_classifier import DigitsClassifier, ImageClassifier, MnistClassifier
from latentar.models import CharLM, JointDiffusion, LatentAR
from latentar.pretrained import (CONFIG_NAME, LEGACY_WEIGHTS_NAME, WEIGHTS_NAME, PretrainedMixin, convert_legacy,
                                 is_legacy_dir, is_saved, saved_class_name, saved_config)
from latentar.softprompt.prompt import SoftPrompt, SoftPromptWeights
from latentar.tokenizers import AE, VAE, SigmaVAE, load_tokenizer
from latentar.tokenizers.base import LatentTokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "legacy"


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


X_IMG = torch.rand(2, 1, 8, 8, generator=_g(1)) * 2 - 1
X_AUDIO = torch.randn(2, 1, 320, generator=_g(2)) * 0.3
X_MNIST = torch.rand(2, 1, 28, 28, generator=_g(3)) * 2 - 1
Z, Y = torch.randn(2, 4, 2, generator=_g(4)), torch.tensor([0, 1])
COND, TARGET = torch.randn(5, 8, generator=_g(5)), torch.randn(5, 3, generator=_g(6))
IDS = torch.randint(0, 11, (2, 7), generator=_g(7))

TOK = dict(latent_dim=2, channels=[4, 8], strides=[2, 1])
AR = dict(latent_dim=2, d_model=8, depth=1, num_heads=2, max_len=4, num_classes=2)


def _tok_out(m):
    return torch.cat([m.encode(X_IMG).flatten(), m.reconstruct(X_IMG).flatten()])


def _ar_out(m):
    return torch.cat([m.loss(Z, Y, reduction="none").flatten(),
                      m.generate(2, 4, labels=Y, cfg_scale=2.0, generator=_g(8)).flatten()])


# case id -> (class, build, outputs); every output is computed under torch.manual_seed(0).
CASES = {
    "SigmaVAE": (SigmaVAE, lambda: SigmaVAE(c_sigma=0.3, **TOK), _tok_out),
    "SigmaVAE-audio": (SigmaVAE, lambda: SigmaVAE("audio", c_sigma=0.3, latent_dim=2, channels=[4, 8], strides=[4, 4],
                                                  sample_rate=8000, mel_n_ffts=[64, 128]),
                       lambda m: torch.stack(list(m.loss(X_AUDIO, sample=False)[1].values()))),  # mel buffers
    "VAE": (VAE, lambda: VAE(**TOK), _tok_out),
    "AE": (AE, lambda: AE(beta=0.1, **TOK), _tok_out),
    "LatentTokenizer": (LatentTokenizer, lambda: LatentTokenizer(**TOK), _tok_out),
    "GMMHead": (GMMHead, lambda: GMMHead(dim=3, cond_dim=8, num_mixtures=2, hidden=8), lambda h: h.loss(COND, TARGET)),
    "MSEHead": (MSEHead, lambda: MSEHead(dim=3, cond_dim=8, hidden=8), lambda h: h.loss(COND, TARGET)),
    "DiffusionHead": (DiffusionHead, lambda: DiffusionHead(dim=3, cond_dim=8, depth=1, num_sampling_steps=3),
                      lambda h: torch.cat([h.loss(COND, TARGET, generator=_g(9)).flatten(),
                                           h.sample(COND, generator=_g(10)).flatten()])),
    "LatentAR-gmm": (LatentAR, lambda: LatentAR(head_kwargs={"num_mixtures": 2}, **AR), _ar_out),
    "LatentAR-diffusion": (LatentAR, lambda: LatentAR(head="diffusion", pos="learned",
                                                      head_kwargs={"width": 8, "depth": 1, "num_sampling_steps": 2},
                                                      **AR), _ar_out),
    "JointDiffusion": (JointDiffusion, lambda: JointDiffusion(**AR), lambda m: m(Z, torch.tensor([3, 700]), Y)),
    "CharLM": (CharLM, lambda: CharLM(vocab_size=11, d_model=8, depth=1, num_heads=2, max_len=8, tie_weights=False),
               lambda m: torch.cat([m(IDS).flatten(), m.generate(2, 5, greedy=False, generator=_g(11)).flatten()])),
    "ImageClassifier": (ImageClassifier, lambda: ImageClassifier(channels=4, feature_dim=8), lambda m: m(X_IMG)),
    "DigitsClassifier": (DigitsClassifier, lambda: DigitsClassifier(channels=4, feature_dim=8), lambda m: m(X_IMG)),
    "MnistClassifier": (MnistClassifier, lambda: MnistClassifier(channels=2, feature_dim=8), lambda m: m(X_MNIST)),
    "SoftPromptWeights": (SoftPromptWeights, lambda: SoftPromptWeights(n_virtual=3, d_model=8, lm="CharLM"),
                          lambda m: m.embeddings),
}


def build(case: str):
    """The case's model, in eval mode, with every parameter moved off its (partly zero) init."""
    _, make, _ = CASES[case]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = make()
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * torch.randn_like(p))
            if isinstance(m, LatentTokenizer):
                m.latent_std.fill_(0.7)
    return m.eval()


def outputs(case: str, m) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        return CASES[case][2](m).detach().float()


def _latentar_classes() -> set[type]:
    for m in lp._MODEL_MODULES:
        __import__(m)
    todo, found = [PretrainedMixin], set()
    while todo:
        for s in todo.pop().__subclasses__():
            todo.append(s)
            if s.__module__.startswith("latentar."):
                found.add(s)
    return found


# ------------------------------------------------------------------------------------ round trips
def test_every_saved_model_class_has_a_round_trip_case():
    assert _latentar_classes() - {Head} == {cls for cls, _, _ in CASES.values()}  # Head: abstract base


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_in_the_diffusers_layout(case, tmp_path):
    cls = CASES[case][0]
    m = build(case)
    before = dict(m.config)
    m.save_pretrained(tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == [CONFIG_NAME, WEIGHTS_NAME]
    saved = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    assert saved["_class_name"] == cls.__name__ and saved["_diffusers_version"] == diffusers.__version__
    assert {k: v for k, v in saved.items() if not k.startswith("_")} == before  # every argument, plain JSON
    assert set(before) == lp._init_params(cls) and dict(m.config) == before     # saving left the config alone
    back = cls.from_pretrained(tmp_path / "m")
    assert type(back) is cls and isinstance(back, ModelMixin) and isinstance(back, ConfigMixin)
    assert not back.training and back.config == m.config and dict(back.config) == before
    assert torch.equal(outputs(case, back), outputs(case, m))
    assert saved_class_name(tmp_path / "m") == cls.__name__ and saved_config(tmp_path / "m") == before


def test_config_reads_as_a_dict_and_as_attributes():
    m = build("SigmaVAE")
    assert m.config["c_sigma"] == m.config.c_sigma == 0.3 and m.config["channels"] == [4, 8]
    ar = build("LatentAR-gmm")
    assert isinstance(ar.head, GMMHead) and ar.config["head"] == "gmm"  # the submodule is not shadowed
    with pytest.raises(AttributeError):
        ar.depth  # noqa: B018  (config values are read through .config only)


@pytest.mark.parametrize("case", ["LatentAR-gmm", "SigmaVAE-audio", "JointDiffusion", "CharLM"])
def test_low_cpu_mem_usage_loads_the_same_model(case, tmp_path):
    """Non-persistent buffers built in __init__ (rope tables, mel filterbanks) are right either way."""
    m = build(case)
    m.save_pretrained(tmp_path / "m")
    cls = CASES[case][0]
    for flag in (False, True):
        back = cls.from_pretrained(tmp_path / "m", low_cpu_mem_usage=flag)
        assert all(t.device.type == "cpu" for t in [*back.parameters(), *back.buffers()])
        assert torch.equal(outputs(case, back), outputs(case, m)), flag


@pytest.mark.parametrize("case", ["LatentAR-gmm", "SigmaVAE", "CharLM"])
def test_torch_dtype_bfloat16(case, tmp_path):
    m = build(case)
    m.save_pretrained(tmp_path / "m")
    back = CASES[case][0].from_pretrained(tmp_path / "m", torch_dtype=torch.bfloat16)
    assert {p.dtype for p in back.parameters()} == {torch.bfloat16}
    ref = copy.deepcopy(m).to(torch.bfloat16)  # the same as casting the loaded model, buffers included
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), ref.state_dict().values()))
    assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(back.buffers(), ref.buffers()))


def test_variant_fp16_round_trip_beside_the_full_precision_weights(tmp_path):
    m = build("LatentAR-gmm")
    m16 = copy.deepcopy(m).to(torch.float16)
    m.save_pretrained(tmp_path / "m")
    m16.save_pretrained(tmp_path / "m", variant="fp16")
    assert sorted(os.listdir(tmp_path / "m")) == [CONFIG_NAME, "diffusion_pytorch_model.fp16.safetensors", WEIGHTS_NAME]
    back16 = LatentAR.from_pretrained(tmp_path / "m", variant="fp16", torch_dtype=torch.float16)
    assert {p.dtype for p in back16.parameters()} == {torch.float16}
    assert all(torch.equal(a, b) for a, b in zip(back16.state_dict().values(), m16.state_dict().values()))
    back = LatentAR.from_pretrained(tmp_path / "m")  # the default file is still the float32 one
    assert torch.equal(outputs("LatentAR-gmm", back), outputs("LatentAR-gmm", m))
    (tmp_path / "m" / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*diffusion_pytorch_model\.safetensors.*pass variant"):
        LatentAR.from_pretrained(tmp_path / "m")


def test_sharded_save_loads_and_a_later_single_file_save_drops_the_shards(tmp_path):
    m = build("LatentAR-gmm")
    m.save_pretrained(tmp_path / "m", max_shard_size="2KB")
    files = sorted(os.listdir(tmp_path / "m"))
    assert lp.INDEX_NAME in files and len(files) > 3
    assert torch.equal(outputs("LatentAR-gmm", LatentAR.from_pretrained(tmp_path / "m")), outputs("LatentAR-gmm", m))
    m.save_pretrained(tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == [CONFIG_NAME, WEIGHTS_NAME]


def test_map_location_moves_the_model(tmp_path):
    build("CharLM").save_pretrained(tmp_path / "m")
    back = CharLM.from_pretrained(tmp_path / "m", map_location="meta")
    assert {p.device.type for p in back.parameters()} == {"meta"}
    assert {p.device.type for p in CharLM.from_pretrained(tmp_path / "m", map_location="cpu").parameters()} == {"cpu"}


@pytest.mark.parametrize("case", ["LatentAR-gmm", "SigmaVAE"])
def test_loading_leaves_the_callers_rng_alone(case, tmp_path):
    build(case).save_pretrained(tmp_path / "new")
    dirs = [tmp_path / "new", FIXTURES / ("latent_ar_gmm" if case.startswith("LatentAR") else "sigma_vae")]
    for d in dirs:
        state = torch.get_rng_state()
        CASES[case][0].from_pretrained(d)
        assert torch.equal(torch.get_rng_state(), state), d


def test_an_interrupted_save_leaves_the_previous_model_intact(tmp_path, monkeypatch):
    import safetensors.torch

    build("CharLM").save_pretrained(tmp_path / "m")
    before = {f: (tmp_path / "m" / f).read_bytes() for f in os.listdir(tmp_path / "m")}

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    other = CharLM(vocab_size=5, d_model=4, depth=1, num_heads=1, max_len=3)
    with pytest.raises(OSError, match="disk full"):
        other.save_pretrained(tmp_path / "m")
    assert {f: (tmp_path / "m" / f).read_bytes() for f in os.listdir(tmp_path / "m")} == before  # no .saving-* left


def test_soft_prompt_saves_in_the_diffusers_layout_and_reads_the_earlier_one(tmp_path):
    torch.manual_seed(0)
    lm = CharLM(vocab_size=7, d_model=16, depth=1, num_heads=2, max_len=24)
    prompt = SoftPrompt(3, lm, seed=5)
    prompt.save(tmp_path / "p")
    assert sorted(os.listdir(tmp_path / "p")) == [CONFIG_NAME, WEIGHTS_NAME]
    assert saved_class_name(tmp_path / "p") == "SoftPromptWeights"
    x = torch.randint(0, 7, (2, 5), generator=_g(12))
    for back in (SoftPrompt.load(tmp_path / "p", lm), SoftPrompt.from_pretrained(tmp_path / "p", lm)):
        assert torch.equal(back.embeddings, prompt.embeddings) and back.config == prompt.config
        assert torch.equal(back(x), prompt(x))
    old = tmp_path / "old"  # the earlier layout: prompt.json + prompt.safetensors
    old.mkdir()
    save_file({"embeddings": prompt.embeddings.detach().clone()}, str(old / "prompt.safetensors"))
    (old / "prompt.json").write_text(json.dumps(prompt.config))
    assert torch.equal(SoftPrompt.load(old, lm).embeddings, prompt.embeddings)
    with pytest.raises(ValueError, match="fitted on"):
        SoftPrompt.load(tmp_path / "p", CharLM(vocab_size=7, d_model=8, depth=1, num_heads=2, max_len=24))


# ------------------------------------------------------------------------------------ clear errors
@pytest.fixture
def saved_sigma(tmp_path):
    d = tmp_path / "tok"
    build("SigmaVAE").save_pretrained(d)
    return d


def _edit(d: Path, fn) -> None:
    (d / CONFIG_NAME).write_text(json.dumps(fn(json.loads((d / CONFIG_NAME).read_text()))))


def test_wrong_class_names_the_class_to_use(saved_sigma):
    with pytest.raises(ValueError, match=r"holds a 'SigmaVAE' checkpoint, not a VAE; load it with "
                                         r"latentar\.SigmaVAE\.from_pretrained"):
        VAE.from_pretrained(saved_sigma)
    build("LatentAR-gmm").save_pretrained(saved_sigma.parent / "ar")
    with pytest.raises(ValueError, match=r"holds a 'LatentAR' checkpoint, not a SigmaVAE"):
        SigmaVAE.from_pretrained(saved_sigma.parent / "ar")
    with pytest.raises(ValueError, match=r"holds a 'LatentAR', not a tokenizer"):
        load_tokenizer(saved_sigma.parent / "ar")


def test_a_config_missing_an_argument_is_not_filled_with_a_default(saved_sigma):
    _edit(saved_sigma, lambda m: {k: v for k, v in m.items() if k != "c_sigma"})
    with pytest.raises(ValueError, match=r"config\.json has no value for c_sigma .*never replaced by a default"):
        SigmaVAE.from_pretrained(saved_sigma)


def test_a_config_with_an_unknown_argument_or_no_class(saved_sigma):
    _edit(saved_sigma, lambda m: {**m, "wings": 2})
    with pytest.raises(ValueError, match=r"'wings' is not an argument of SigmaVAE"):
        SigmaVAE.from_pretrained(saved_sigma)
    _edit(saved_sigma, lambda m: {k: v for k, v in m.items() if k != "_class_name"})
    with pytest.raises(ValueError, match=r"names no model class"):
        SigmaVAE.from_pretrained(saved_sigma)


def test_mismatched_architecture_names_keys_and_shapes(tmp_path):
    build("LatentAR-gmm").save_pretrained(tmp_path / "ar")
    with pytest.raises(ValueError, match=r"shape mismatch.*in_proj\.weight: checkpoint \(8, 2\) vs model \(8, 3\)"):
        LatentAR.from_pretrained(tmp_path / "ar", latent_dim=3)
    w = tmp_path / "ar" / WEIGHTS_NAME
    state = load_file(str(w))
    save_file({k: v for k, v in state.items() if k != "class_emb.weight"} | {"extra": torch.zeros(2)}, str(w))
    with pytest.raises(ValueError, match=r"(?s)missing keys: \['class_emb\.weight'\].*unexpected keys: \['extra'\]"):
        LatentAR.from_pretrained(tmp_path / "ar")
    state.pop("in_proj.bias")
    save_file(state, str(w))
    with pytest.raises(ValueError, match=r"missing keys: \['in_proj\.bias'\]"):
        LatentAR.from_pretrained(tmp_path / "ar")


def test_tokenizer_mismatch_names_both_values(saved_sigma):
    with pytest.raises(ValueError, match=r"latent_dim: checkpoint 2 vs requested 3"):
        SigmaVAE.from_pretrained(saved_sigma, latent_dim=3)


def test_corrupt_files_and_nan_weights(saved_sigma, tmp_path):
    (saved_sigma / CONFIG_NAME).write_text((saved_sigma / CONFIG_NAME).read_text()[:30])
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        SigmaVAE.from_pretrained(saved_sigma)
    m = build("SigmaVAE")
    m.save_pretrained(tmp_path / "t")
    w = tmp_path / "t" / WEIGHTS_NAME
    w.write_bytes(w.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model\.safetensors is corrupt or truncated"):
        SigmaVAE.from_pretrained(tmp_path / "t")
    with torch.no_grad():
        next(m.parameters()).fill_(float("nan"))
    m.save_pretrained(tmp_path / "nan")
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model\.safetensors holds NaN or inf in 1 tensor"):
        SigmaVAE.from_pretrained(tmp_path / "nan")


def test_missing_directory_and_files(saved_sigma, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere is not a directory"):
        SigmaVAE.from_pretrained(tmp_path / "nowhere")
    (saved_sigma / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*diffusion_pytorch_model\.safetensors"):
        SigmaVAE.from_pretrained(saved_sigma)
    (saved_sigma / CONFIG_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*config\.json"):
        SigmaVAE.from_pretrained(saved_sigma)


# ------------------------------------------------------------------------------------ the earlier layout
def _fixture_inputs():
    """As tests/fixtures/legacy/make_fixtures.py made them."""
    g = torch.Generator().manual_seed(123)
    z = torch.randn(2, 4, 2, generator=g)
    x = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    return z, torch.tensor([0, 1]), x


EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def _check_fixture_outputs(ar: LatentAR, tok: SigmaVAE) -> None:
    z, y, x = _fixture_inputs()
    with torch.no_grad():
        torch.testing.assert_close(ar.loss(z, y, reduction="none"), torch.tensor(EXPECTED["latent_ar_gmm"]["loss"]))
        torch.testing.assert_close(tok.encode(x), torch.tensor(EXPECTED["sigma_vae"]["encode"]))
        torch.testing.assert_close(tok.reconstruct(x), torch.tensor(EXPECTED["sigma_vae"]["reconstruct"]))


def test_legacy_fixtures_load_and_compute_the_stored_outputs():
    for name in ("latent_ar_gmm", "sigma_vae"):
        assert sorted(os.listdir(FIXTURES / name)) == [CONFIG_NAME, LEGACY_WEIGHTS_NAME]
        assert is_legacy_dir(FIXTURES / name) and is_saved(FIXTURES / name)
    ar, tok = LatentAR.from_pretrained(FIXTURES / "latent_ar_gmm"), SigmaVAE.from_pretrained(FIXTURES / "sigma_vae")
    assert not ar.training and float(tok.latent_std) == pytest.approx(0.7) and tok.config["c_sigma"] == 0.3
    _check_fixture_outputs(ar, tok)
    assert type(load_tokenizer(FIXTURES / "sigma_vae")) is SigmaVAE
    assert saved_class_name(FIXTURES / "latent_ar_gmm") == "LatentAR"
    assert saved_config(FIXTURES / "sigma_vae")["c_sigma"] == 0.3
    bf16 = LatentAR.from_pretrained(FIXTURES / "latent_ar_gmm", torch_dtype=torch.bfloat16)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}


def test_convert_legacy_in_place_and_into_another_folder(tmp_path):
    for name in ("latent_ar_gmm", "sigma_vae"):
        shutil.copytree(FIXTURES / name, tmp_path / name)
    convert_legacy(tmp_path / "latent_ar_gmm")
    convert_legacy(tmp_path / "sigma_vae", tmp_path / "tok_new")
    for d in (tmp_path / "latent_ar_gmm", tmp_path / "tok_new"):
        assert sorted(os.listdir(d)) == [CONFIG_NAME, WEIGHTS_NAME] and not is_legacy_dir(d)
    assert is_legacy_dir(tmp_path / "sigma_vae")  # the source, untouched
    _check_fixture_outputs(LatentAR.from_pretrained(tmp_path / "latent_ar_gmm"),
                           SigmaVAE.from_pretrained(tmp_path / "tok_new"))
    with pytest.raises(ValueError, match="earlier latentar layout"):
        convert_legacy(tmp_path / "tok_new")


def test_legacy_errors_stay_clear(tmp_path):
    with pytest.raises(ValueError, match=r"holds a 'LatentAR' checkpoint, not a SigmaVAE; load it with "
                                         r"latentar\.LatentAR\.from_pretrained"):
        SigmaVAE.from_pretrained(FIXTURES / "latent_ar_gmm")
    d = shutil.copytree(FIXTURES / "sigma_vae", tmp_path / "t")
    meta = json.loads((d / CONFIG_NAME).read_text())
    (d / CONFIG_NAME).write_text(json.dumps({**meta, "config": {k: v for k, v in meta["config"].items()
                                                                if k != "c_sigma"}}))
    with pytest.raises(ValueError, match=r"config\.json has no value for c_sigma"):
        SigmaVAE.from_pretrained(d)
    (d / CONFIG_NAME).write_text(json.dumps(meta))
    w = d / LEGACY_WEIGHTS_NAME
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupt or truncated"):
        SigmaVAE.from_pretrained(d)
    with pytest.raises(ValueError, match=r"shape mismatch"):
        LatentAR.from_pretrained(FIXTURES / "latent_ar_gmm", latent_dim=3)


def test_saving_over_an_earlier_layout_replaces_it(tmp_path):
    d = shutil.copytree(FIXTURES / "latent_ar_gmm", tmp_path / "ar")
    m = build("LatentAR-gmm")
    m.save_pretrained(d)
    assert sorted(os.listdir(d)) == [CONFIG_NAME, WEIGHTS_NAME]
    assert torch.equal(outputs("LatentAR-gmm", LatentAR.from_pretrained(d)), outputs("LatentAR-gmm", m))


def _write_legacy(model, path: Path) -> None:
    """What the earlier save_pretrained wrote."""
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / LEGACY_WEIGHTS_NAME))
    (path / CONFIG_NAME).write_text(json.dumps({"class": type(model).__name__, "config": dict(model.config)}))


def test_caches_written_in_the_earlier_layout_keep_loading(tmp_path, monkeypatch):
    """The classifier and CharLM caches (build_once) accept an old save instead of rebuilding it."""
    import latentar.metrics.digits_classifier as dc
    import latentar.softprompt.pretrained_charlm as pc

    monkeypatch.setenv("LATENTAR_CACHE", str(tmp_path))
    torch.manual_seed(0)
    clf = DigitsClassifier().eval()
    _write_legacy(clf, dc.classifier_dir("digits"))
    monkeypatch.setattr(dc, "train_classifier", lambda *a, **k: pytest.fail("retrained despite a cache"))
    again = dc.load_classifier("digits")
    assert torch.equal(again(X_IMG), clf(X_IMG))
    lm = CharLM(vocab_size=256, **pc.TEXT_CHARLM_PRESETS["test"][0]).eval()
    _write_legacy(lm, tmp_path / "softprompt" / f"charlm-test-{pc._key('test')}")
    monkeypatch.setattr(pc, "_train_text_charlm", lambda *a, **k: pytest.fail("retrained despite a cache"))
    ids = torch.randint(0, 256, (1, 9), generator=_g(13))
    assert torch.equal(pc.text_charlm("test")(ids), lm(ids))

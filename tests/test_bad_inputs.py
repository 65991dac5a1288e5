"""Every bad input gets a clear error naming the problem: the Python API (exception type and a
message naming the offending value or file), the CLI run as a subprocess (exit 2, one line
``latentar <command>: error: ...``, no traceback) and the Hydra recipes (non-zero exit, the
offending key or value named)."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentar.exposure import BASH, ContextNoise, ExposureTask, ScheduledSampling
from latentar.exposure.base import unpack_batch
from latentar.heads import GMMHead
from latentar.metrics.frechet import frechet_distance_from_features
from latentar.models import CharLM, JointDiffusion, LatentAR
from latentar.tokenizers import SigmaVAE, load_tokenizer
from latentar.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------------------------------
# Python API: constructors and calls
# --------------------------------------------------------------------------------------------------
def _tok(**kw):
    return SigmaVAE(modality="image", in_channels=1, latent_dim=2, channels=[8, 8], strides=[2, 1], **kw)


def _ar(num_classes=3):
    return LatentAR(latent_dim=2, head="gmm", d_model=16, depth=1, num_heads=2, max_len=8, num_classes=num_classes)


API_CASES = [
    ("SigmaVAE c_sigma=inf", lambda: _tok(c_sigma=INF), ValueError, "c_sigma"),
    ("SigmaVAE c_sigma=nan", lambda: _tok(c_sigma=NAN), ValueError, "c_sigma"),
    ("SigmaVAE c_sigma<0", lambda: _tok(c_sigma=-1.0), ValueError, "c_sigma"),
    ("SigmaVAE beta=nan", lambda: _tok(beta=NAN), ValueError, "beta"),
    ("SigmaVAE beta<0", lambda: _tok(beta=-0.1), ValueError, "beta"),
    ("tokenizer mel_weight=nan", lambda: _tok(mel_weight=NAN), ValueError, "mel_weight"),
    ("tokenizer unknown modality", lambda: SigmaVAE(modality="video"), ValueError, "video"),
    ("encode NaN images", lambda: _tok().encode(torch.full((2, 1, 8, 8), NAN)), ValueError, "NaN"),
    ("encode wrong rank", lambda: _tok().encode(torch.zeros(2, 8, 8)), ValueError, r"\(2, 8, 8\)"),
    ("encode wrong channels", lambda: _tok().encode(torch.zeros(2, 3, 8, 8)), ValueError, "3 channels"),
    ("generate cfg_scale<0", lambda: _ar().generate(2, 4, labels=torch.tensor([0, 1]), cfg_scale=-3), ValueError, "-3"),
    ("generate cfg_scale=nan", lambda: _ar().generate(2, 4, labels=torch.tensor([0, 1]), cfg_scale=NAN), ValueError, "nan"),
    ("generate CFG without labels", lambda: _ar().generate(2, 4, labels=None, cfg_scale=5), ValueError, "without labels"),
    ("generate CFG unconditional", lambda: _ar(0).generate(2, 4, cfg_scale=3), ValueError, "class-conditional"),
    ("generate temperature<0", lambda: _ar().generate(2, 4, temperature=-1.0), ValueError, "temperature"),
    ("generate length>max_len", lambda: _ar().generate(2, 9), ValueError, "max_len"),
    ("generate labels out of range", lambda: _ar().generate(2, 4, labels=torch.tensor([0, 7])), ValueError, "7"),
    ("JointDiffusion CFG without labels",
     lambda: JointDiffusion(latent_dim=2, max_len=4, d_model=16, depth=1, num_heads=2, num_classes=3)
     .generate(2, 4, cfg_scale=2.0), ValueError, "without labels"),
    ("Trainer grad_clip<0", lambda: Trainer(grad_clip=-1), ValueError, "grad_clip"),
    ("Trainer grad_clip=nan", lambda: Trainer(grad_clip=NAN), ValueError, "grad_clip"),
    ("Trainer lr=0", lambda: Trainer(lr=0.0), ValueError, "lr"),
    ("Trainer lr=inf", lambda: Trainer(lr=INF), ValueError, "lr"),
    ("Trainer betas nan", lambda: Trainer(betas=(NAN, 0.95)), ValueError, "betas"),
    ("Trainer weight_decay<0", lambda: Trainer(weight_decay=-1e-2), ValueError, "weight_decay"),
    ("Trainer max_steps<0", lambda: Trainer(max_steps=-1), ValueError, "max_steps"),
    ("Trainer precision", lambda: Trainer(precision="fp16"), ValueError, "fp16"),
    ("Trainer device cuda absent", lambda: Trainer(device="cuda"), ValueError, "CUDA"),
    ("BASH beta=nan", lambda: BASH(beta=NAN), ValueError, "beta"),
    ("BASH beta>1", lambda: BASH(beta=1.5), ValueError, "1.5"),
    ("BASH regen_every=0", lambda: BASH(regen_every=0), ValueError, "regen_every"),
    ("ScheduledSampling unknown mode", lambda: ScheduledSampling("linear", mode="bogus"), ValueError, "bogus"),
    ("ContextNoise sigma<0", lambda: ContextNoise(sigma_ctx=-0.5), ValueError, "sigma_ctx"),
    ("ContextNoise sigma=nan", lambda: ContextNoise(sigma_ctx=NAN), ValueError, "sigma_ctx"),
    ("ExposureTask without protocol", lambda: ExposureTask(torch.nn.Linear(2, 2), ContextNoise(0.1)), TypeError,
     "sequence-model protocol"),
    ("unpack_batch 4-D latents", lambda: unpack_batch(torch.zeros(2, 3, 4, 5)), ValueError, r"\(B, T, D\)"),
    ("GMMHead num_mixtures=0", lambda: GMMHead(dim=2, cond_dim=8, num_mixtures=0), ValueError, "num_mixtures"),
    ("FD feature dims differ", lambda: frechet_distance_from_features(torch.randn(10, 3), torch.randn(10, 4)),
     ValueError, "3 vs 4"),
    ("FD NaN features", lambda: frechet_distance_from_features(torch.full((10, 3), NAN), torch.randn(10, 3)),
     ValueError, "NaN"),
    ("CharLM tokens out of vocab", lambda: CharLM(vocab_size=8, d_model=16, depth=1, num_heads=2, max_len=16)
     .loss(torch.full((2, 5), 9)), ValueError, "9"),
]


@pytest.mark.parametrize("make, exc, pattern", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


# --------------------------------------------------------------------------------------------------
# Python API: files on disk
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok") / "model"
    torch.manual_seed(0)
    _tok(c_sigma=0.7).save_pretrained(d)
    return d


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_config(d: Path, fn) -> None:
    meta = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(fn(meta)))


def test_saved_tokenizer_loads(saved_tok):  # the reference the broken copies below differ from
    assert load_tokenizer(saved_tok).c_sigma == 0.7


def test_config_missing_c_sigma_is_not_replaced_by_a_default(saved_tok, tmp_path):
    d = _copy(saved_tok, tmp_path / "m")
    _edit_config(d, lambda m: {k: v for k, v in m.items() if k != "c_sigma"})
    with pytest.raises(ValueError, match=r"config\.json has no value for c_sigma"):
        load_tokenizer(d)


def test_config_without_its_config_section(saved_tok, tmp_path):
    d = _copy(saved_tok, tmp_path / "m")
    _edit_config(d, lambda m: {"class": m["_class_name"]})  # the earlier layout, its 'config' lost
    with pytest.raises(ValueError, match=r"config\.json lacks .*'config' section"):
        SigmaVAE.from_pretrained(d)


def test_truncated_config(saved_tok, tmp_path):
    d = _copy(saved_tok, tmp_path / "m")
    (d / "config.json").write_text((d / "config.json").read_text()[:25])
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        SigmaVAE.from_pretrained(d)


def test_config_with_an_unknown_argument(saved_tok, tmp_path):
    d = _copy(saved_tok, tmp_path / "m")
    _edit_config(d, lambda m: {**m, "wings": 2})
    with pytest.raises(ValueError, match="wings"):
        SigmaVAE.from_pretrained(d)


def test_truncated_safetensors_names_the_file(saved_tok, tmp_path):
    d = _copy(saved_tok, tmp_path / "m")
    w = d / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model\.safetensors is corrupt or truncated"):
        SigmaVAE.from_pretrained(d)


def test_garbage_safetensors_names_the_file(saved_tok, tmp_path):
    d = _copy(saved_tok, tmp_path / "m")
    (d / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model\.safetensors is corrupt"):
        SigmaVAE.from_pretrained(d)


def test_nan_weights_are_refused_at_load(tmp_path):
    tok = _tok()
    with torch.no_grad():
        next(tok.parameters()).fill_(NAN)
    tok.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="NaN or inf in 1 tensor"):
        load_tokenizer(tmp_path / "m")


def test_a_latent_ar_directory_is_not_a_tokenizer(tmp_path):
    _ar().save_pretrained(tmp_path / "ar")
    with pytest.raises(ValueError, match="'LatentAR'.*not a tokenizer"):
        load_tokenizer(tmp_path / "ar")
    with pytest.raises(ValueError, match="holds a 'LatentAR' checkpoint, not a SigmaVAE"):
        SigmaVAE.from_pretrained(tmp_path / "ar")


def test_missing_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SigmaVAE.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_tokenizer(tmp_path)


def test_architecture_mismatch_names_both_values(saved_tok):
    with pytest.raises(ValueError, match="latent_dim: checkpoint 2 vs requested 3"):
        SigmaVAE.from_pretrained(saved_tok, latent_dim=3)


def _trainer(out, **kw):
    base = dict(max_steps=4, batch_size=4, lr=1e-2, out_dir=str(out), progress=False, log_every=1, device="cpu")
    return Trainer(**{**base, **kw})


def _data():
    return torch.utils.data.TensorDataset(torch.randn(16, 4, 2))


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(2, 2)

    def training_step(self, batch):
        (x,) = batch
        return (self.w(x) - x).pow(2).mean()


def test_resume_with_other_optimizer_settings_is_refused(tmp_path):
    _trainer(tmp_path).fit(_Tiny(), _data())
    with pytest.raises(ValueError, match="lr"):
        _trainer(tmp_path, lr=5e-3, max_steps=8).fit(_Tiny(), _data())
    with pytest.raises(ValueError, match="weight_decay"):
        _trainer(tmp_path, weight_decay=0.1, max_steps=8).fit(_Tiny(), _data())


def test_resume_with_max_steps_below_the_steps_done_is_refused(tmp_path):
    _trainer(tmp_path).fit(_Tiny(), _data())
    with pytest.raises(ValueError, match=r"max_steps.*\b2\b.*\b4\b|\b4\b.*max_steps.*\b2\b"):
        _trainer(tmp_path, max_steps=2).fit(_Tiny(), _data())


def test_corrupt_checkpoint_names_the_file(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"checkpoint\.pt"):
        _trainer(tmp_path).fit(_Tiny(), _data())


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/latentar-bad-input-marker")


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    MARKER.unlink(missing_ok=True)
    with open(tmp_path / "checkpoint.pt", "wb") as f:
        pickle.dump({"model": _Payload()}, f)
    with pytest.raises(ValueError, match=r"checkpoint\.pt"):
        _trainer(tmp_path).fit(_Tiny(), _data())
    assert not MARKER.exists()


def test_wav_folder_errors(tmp_path):
    from latentar.data.wavfolder import WavFolder
    with pytest.raises(FileNotFoundError, match="nowhere"):
        WavFolder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no files ending in"):
        WavFolder(tmp_path)
    with pytest.raises(ValueError, match="sample_rate"):
        WavFolder(tmp_path, sample_rate=0)


def test_nan_audio_file_is_named(tmp_path):
    import numpy as np
    import soundfile as sf

    from latentar.data.audio_io import AudioFileError, read_audio
    sf.write(tmp_path / "bad.wav", np.full(100, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioFileError, match=r"bad\.wav.*NaN"):
        read_audio(tmp_path / "bad.wav", 16000)


def test_speech_corpus_settings():
    from latentar.data.speech import SpeechCorpus
    with pytest.raises(ValueError, match="sample_rate"):
        SpeechCorpus(sample_rate=0)
    with pytest.raises(ValueError, match="rates"):
        SpeechCorpus(rates=[-10])


# --------------------------------------------------------------------------------------------------
# The CLI, run as subprocesses (started together: they fail before any training)
# --------------------------------------------------------------------------------------------------
def _cli_cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    a_file = tmp / "a_file"
    a_file.write_text("x")
    empty = tmp / "empty"
    empty.mkdir()
    v = ["sweep", "variance", "--preset", "smoke"]
    return [
        ("c-sigma repeated", v + ["--c-sigma", "0,0"], "0"),
        ("c-sigma empty item", v + ["--c-sigma", "0,,1"], "0,,1"),
        ("c-sigma negative", v + ["--c-sigma", "-1"], "-1"),
        ("c-sigma not a number", v + ["--c-sigma", "0,abc"], "abc"),
        ("steps negative", v + ["--steps", "-5"], "-5"),
        ("steps zero", v + ["--steps", "0"], "--steps"),
        ("tok-steps zero", v + ["--tok-steps", "0"], "--tok-steps"),
        ("seeds zero", v + ["--seeds", "0"], "--seeds"),
        ("device cuda without GPU", v + ["--device", "cuda"], "cuda"),
        ("device bogus", v + ["--device", "bogus"], "bogus"),
        ("out is a file", v + ["--out", str(a_file)], "a_file"),
        ("out under a file", v + ["--out", str(a_file / "sub")], "a_file"),
        ("cfg nan", v + ["--cfg", "nan"], "nan"),
        ("cfg negative", v + ["--cfg", "1,-2"], "-2"),
        ("strategy-c-sigma nan", v + ["--strategy-c-sigma", "nan"], "nan"),
        ("generators empty", v + ["--generators", ""], "--generators"),
        ("generators unknown", v + ["--generators", "gmm,vq"], "vq"),
        ("strategies unknown", v + ["--strategies", "tf,dagger"], "dagger"),
        ("preset unknown", ["sweep", "variance", "--preset", "huge"], "huge"),
        ("data unknown", v + ["--data", "cifar"], "cifar"),
        ("wavfolder missing", v + ["--data", f"wavfolder:{tmp / 'nowhere'}"], "nowhere"),
        ("unknown option", v + ["--bogus-flag"], "--bogus-flag"),
        ("ip tokenizer empty folder", ["sweep", "ip", "--preset", "smoke", "--space", "latent", "--tokenizer", str(empty)],
         "empty"),
        ("ip tokenizer missing", ["sweep", "ip", "--preset", "smoke", "--space", "latent", "--tokenizer",
                                  str(tmp / "nowhere")], "nowhere"),
        ("ip gamma nan", ["sweep", "ip", "--preset", "smoke", "--gamma", "0,nan"], "nan"),
        ("ip steps zero", ["sweep", "ip", "--preset", "smoke", "--steps", "0,5"], "0"),
        ("ip device bogus", ["sweep", "ip", "--preset", "smoke", "--device", "bogus"], "bogus"),
        ("discrete len zero", ["compare", "discrete", "--preset", "smoke", "--len", "0,8"], "0"),
        ("discrete task unknown", ["compare", "discrete", "--task", "chess"], "chess"),
        ("discrete strategies unknown", ["compare", "discrete", "--preset", "smoke", "--strategies", "sft,magic"],
         "magic"),
        ("discrete seeds zero", ["compare", "discrete", "--preset", "smoke", "--seeds", "0"], "--seeds"),
        ("discrete out is a file", ["compare", "discrete", "--preset", "smoke", "--out", str(a_file)], "a_file"),
        ("softprompt bench lengths zero", ["softprompt", "bench", "--model", "charlm", "--lengths", "0,16",
                                           "--out", str(tmp / "sp")], "0"),
        ("softprompt bench out missing", ["softprompt", "bench", "--model", "charlm"], "--out"),
        ("unknown command", ["train", "everything"], "train"),
    ]


_DRIVER = """
import contextlib, io, json, sys
from latentar.cli import main
out = {}
for name, argv in json.loads(sys.stdin.read()):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
        except BaseException as e:
            rc, err = -1, io.StringIO(f"Traceback: {type(e).__name__}: {e}")
    out[name] = [rc, err.getvalue()]
print(json.dumps(out))
"""

# Run for real, one process each (the console entry end to end); the rest share one interpreter.
SEPARATE = ("c-sigma repeated", "device bogus", "ip tokenizer empty folder", "unknown command")


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    env.pop("LATENTAR_DEBUG", None)
    cases = _cli_cases(tmp)
    procs = [(c, subprocess.Popen([sys.executable, "-m", "latentar.cli", *c[1]], env=env, cwd=tmp,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
             for c in cases if c[0] in SEPARATE]
    shared = subprocess.run([sys.executable, "-c", _DRIVER], env=env, cwd=tmp, capture_output=True, text=True,
                            timeout=300, input=json.dumps([[c[0], c[1]] for c in cases if c[0] not in SEPARATE]))
    assert shared.returncode == 0, shared.stderr[-3000:]
    got = json.loads(shared.stdout.strip().splitlines()[-1])
    results = {c[0]: (c, *got[c[0]], "") for c in cases if c[0] not in SEPARATE}
    for c, p in procs:
        out, err = p.communicate(timeout=120)
        results[c[0]] = (c, p.returncode, err, out)
    return results


def _case_names() -> list[str]:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        return [c[0] for c in _cli_cases(Path(d))]


@pytest.mark.parametrize("name", _case_names())
def test_cli_bad_input_is_one_line_and_exit_2(cli_results, name):
    (_, argv, needle), rc, err, _ = cli_results[name]
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2, f"latentar {' '.join(argv)} exited {rc}:\n{err[-2000:]}"
    assert "Traceback" not in err
    assert len(lines) == 1, err
    prog = "latentar " + " ".join(argv[:2]) if name != "unknown command" else "latentar"
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert needle in lines[0], lines[0]


def test_cli_debug_shows_the_traceback(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "latentar.cli", "sweep", "variance", "--c-sigma", "-1", "--debug"],
                       env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr


# --------------------------------------------------------------------------------------------------
# Hydra recipes
# --------------------------------------------------------------------------------------------------
RECIPE_CASES = [
    ("unknown key", "train_tokenizer.py", ["trainer.max_stepz=3"], r"max_stepz"),
    ("c_sigma inf", "train_tokenizer.py", ["tokenizer.c_sigma=inf", "trainer.max_steps=1"],
     r"c_sigma must be a finite number >= 0, got inf"),
    ("grad_clip negative", "train_tokenizer.py", ["trainer.grad_clip=-1", "trainer.max_steps=1"], r"grad_clip.*-1"),
    ("tokenizer_dir missing", "train_ar.py", [], r"tokenizer_dir"),
    ("tokenizer_dir not a model", "train_ar.py", ["tokenizer_dir=/nonexistent/tok"], r"/nonexistent/tok"),
    ("unknown config group option", "train_tokenizer.py", ["tokenizer=vqgan"], r"vqgan"),
]


@pytest.mark.parametrize("script, overrides, pattern", [c[1:] for c in RECIPE_CASES], ids=[c[0] for c in RECIPE_CASES])
def test_recipe_bad_input_names_the_value(tmp_path, script, overrides, pattern):
    import re
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="0")
    r = subprocess.run([sys.executable, str(ROOT / "recipes" / script), *overrides, f"out_dir={tmp_path / 'o'}",
                        f"hydra.run.dir={tmp_path / 'h'}"], env=env, capture_output=True, text=True, timeout=180,
                       cwd=tmp_path)
    assert r.returncode != 0
    # Hydra echoes the overrides when a job fails: the value must be named by the error itself.
    said = "\n".join(ln for ln in (r.stderr + r.stdout).splitlines() if "with overrides" not in ln)
    assert re.search(pattern, said), said[-2000:]

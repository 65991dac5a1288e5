"""recipes/train_tokenizer.py end to end (sys.argv patched, as torchtune tests its recipes)."""
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from latentar.tokenizers import AE, VAE, SigmaVAE

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "train_tokenizer.py"
CLASSES = {"sigma_vae": SigmaVAE, "vae": VAE, "ae": AE}


def run_recipe(monkeypatch, *overrides):
    spec = importlib.util.spec_from_file_location("train_tokenizer_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", [str(RECIPE), *overrides])
    try:
        module.main()
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("name", ["sigma_vae", "vae", "ae"])
def test_recipe_writes_model_report_and_figures(name, tmp_path, monkeypatch):
    out = tmp_path / name
    run_recipe(monkeypatch, f"tokenizer={name}", "data=digits", "trainer.max_steps=4", "trainer.batch_size=16",
               "trainer.progress=false", "tokenizer.channels=[8,16]", "report.max_examples=64", f"out_dir={out}")
    for f in ("model/config.json", "model/diffusion_pytorch_model.safetensors", "report.json", "tolerance.png", "reconstructions.png",
              "train/metrics.jsonl"):
        assert (out / f).is_file(), f
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == CLASSES[name].__name__ and report["num_examples"] == 64   # the test split, capped
    assert report["train"]["step"] == 4 and report["tolerance"]["radii"][0] == 0.0
    tok = CLASSES[name].from_pretrained(out / "model")
    assert tok.config["channels"] == [8, 16] and float(tok.latent_std) == report["latent_std_buffer"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_recipe_on_speech(tmp_path, monkeypatch):
    out = tmp_path / "speech"
    monkeypatch.setenv("LATENTAR_CACHE", str(tmp_path / "cache"))
    run_recipe(monkeypatch, "data=speech", "data.voices=[en-us]", "data.rates=[175]", "data.crop_seconds=0.5",
               'data.sentences=["Good morning!","Seven silver spoons lay on the table."]',
               "data.sample_rate=16000", "tokenizer.channels=[8,16]", "tokenizer.strides=[4,4]",
               "trainer.max_steps=3", "trainer.batch_size=2", "trainer.progress=false", "report.max_examples=4",
               f"out_dir={out}")
    report = json.loads((out / "report.json").read_text())
    assert report["modality"] == "audio" and report["config"]["sample_rate"] == 16000
    assert (out / "spectrograms.png").is_file()

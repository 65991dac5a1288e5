"""`latentar sweep ip` end to end through the CLI: the smoke preset, resumption, latent space, option errors."""
import csv
import json
import re

import pytest
import torch

from latentar.cli import main
from latentar.sweeps.runner import cell_id

COLUMNS = ["gamma", "seed", "sampler", "eps_scale", "steps", "fd", "sample_seconds", "seconds", "train_loss",
           "train_seconds"]


def _rows(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_smoke_sweep_end_to_end_and_rerun_skips(tmp_path, capsys):
    out = tmp_path / "ip"
    assert main(["sweep", "ip", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    rows = _rows(out)
    assert list(rows[0]) == COLUMNS
    # smoke grid: gamma 0, 0.1 x 1 seed x steps 5, 10, in grid order
    assert [(float(r["gamma"]), int(r["seed"]), int(r["steps"])) for r in rows] == \
        [(0.0, 0, 5), (0.0, 0, 10), (0.1, 0, 5), (0.1, 0, 10)]
    assert all(float(r["fd"]) > 0 and r["sampler"] == "ddim" for r in rows)
    # one model per (gamma, seed), shared by its step counts
    assert rows[0]["train_loss"] == rows[1]["train_loss"] != rows[2]["train_loss"]
    md = (out / "results.md").read_text()
    assert "| ddim | 1 | 0.1 |" in md and "10 steps" in md and "noise" in md
    assert (out / "fd_vs_steps.png").read_bytes()[:4] == b"\x89PNG"
    for model in ("gamma=0.0_seed=0", "gamma=0.1_seed=0"):
        model_dir, = (out / "models").glob(model + "-*")
        assert (model_dir / "checkpoint.pt").is_file()
        assert (model_dir / "unet_ema" / "config.json").is_file()
        assert json.loads((model_dir / "settings.json").read_text())["train_steps"] == 40
    before = (out / "results.csv").read_text()
    capsys.readouterr()

    # a rerun finds every cell finished: nothing trains or samples again, the CSV is unchanged
    assert main(["sweep", "ip", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    assert (out / "results.csv").read_text() == before


def test_sweep_is_deterministic_given_the_seed_and_resumes_a_lost_cell(tmp_path):
    args = ["sweep", "ip", "--preset", "smoke", "--gamma", "0.1", "--steps", "3", "--train-steps", "4",
            "--samples", "32", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    fd_a = [r["fd"] for r in _rows(tmp_path / "a")]
    assert fd_a == [r["fd"] for r in _rows(tmp_path / "b")]
    # lose the cell result (as if killed after training): the rerun reloads the model and scores it again
    cell = {"gamma": 0.1, "seed": 0, "sampler": "ddim", "eps_scale": 1.0, "steps": 3}
    next((tmp_path / "a" / "cells").glob(cell_id(cell) + "-*/result.json")).unlink()
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert [r["fd"] for r in _rows(tmp_path / "a")] == fd_a


def test_latent_space_sweep_decodes_with_the_tokenizer(tmp_path):
    from latentar.data.digits import load_digits
    from latentar.tokenizers import SigmaVAE

    torch.manual_seed(0)
    tok = SigmaVAE(modality="image", in_channels=1, latent_dim=4, c_sigma=0.5)
    tok.estimate_latent_scale(load_digits("train")[0][:256])
    tok.save_pretrained(tmp_path / "tok")
    out = tmp_path / "lat"
    assert main(["sweep", "ip", "--preset", "smoke", "--space", "latent", "--tokenizer", str(tmp_path / "tok"),
                 "--gamma", "0,0.1", "--steps", "2", "--train-steps", "3", "--samples", "32", "--out", str(out),
                 "--quiet"]) == 0
    rows = _rows(out)
    assert len(rows) == 2 and all(float(r["fd"]) > 0 for r in rows)
    settings = json.loads((out / "sweep.json").read_text())
    assert settings["space"] == "latent" and settings["tokenizer"].endswith("tok")
    unet = json.loads(next((out / "models").glob("gamma=0.0_seed=0-*/unet_ema/config.json")).read_text())
    assert unet["in_channels"] == 4 and unet["sample_size"] == 4


@pytest.mark.parametrize("argv, message", [
    (["--gamma", "0,-0.1"], "--gamma must be a finite number >= 0"),
    (["--steps", "5,2000"], r"--steps \[2000\] outside \[1, 1000\].*num_train_timesteps=1000"),
    (["--steps", "50", "--num-train-timesteps", "20"], "num_train_timesteps=20"),
    (["--sampler", "euler"], "invalid choice: 'euler'"),
    (["--space", "latent"], "--space latent needs --tokenizer"),
    (["--eps-scale", "0"], "--eps-scale must be > 0, got 0.0"),
    (["--gamma", "0.1,abc"], "--gamma: cannot read 'abc' as float"),
    (["--gamma", "0.1,0.1"], "--gamma: 0.1 is given twice"),
    (["--seeds", "0"], "--seeds must be an integer >= 1"),
    (["--samples", "1"], "--samples must be an integer >= 2"),
    (["--space", "latent", "--tokenizer", "/no/such/tok"], "--tokenizer '/no/such/tok' is not a directory"),
])
def test_option_errors_are_clear(tmp_path, capsys, argv, message):
    assert main(["sweep", "ip", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentar sweep ip: error: ") and re.search(message, err) and err.count("\n") == 1
    assert not (tmp_path / "x").exists()          # nothing was started


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "ip", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--gamma", "--steps", "--sampler", "--seeds", "--eps-scale", "--preset", "--space", "--tokenizer",
                "--out", "--device", "--train-steps", "--samples", "--num-train-timesteps", "--beta-schedule",
                "--quiet", "smoke", "quick", "full"):
        assert opt in text

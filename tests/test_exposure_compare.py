"""recipes/exposure_compare.py end to end (Hydra, sys.argv patched): table, plots, resumable cells."""
import csv
import importlib.util
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from latentar.sweeps.runner import SweepRunner

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "exposure_compare.py"


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_recipe(monkeypatch, *overrides):
    spec = importlib.util.spec_from_file_location("exposure_compare_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["exposure_compare.py", *overrides])
    module.main()
    GlobalHydra.instance().clear()


@pytest.mark.slow
def test_recipe_writes_table_and_curves_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "ec"
    args = [f"out_dir={out}", "trainer=smoke", "trainer.max_steps=6", "trainer.device=cpu", "meter.num_samples=32",
            "latents.toy.num_train=128", "latents.toy.num_test=64", "latents.toy.length=8",
            "model.d_model=32", "model.depth=1", "strategies.bash.warmup_steps=2", "strategies.bash.regen_every=2",
            "strategies.bash.pool_size=32"]
    run_recipe(monkeypatch, *args)
    table = (out / "results.md").read_text()
    for name in ("teacher_forcing", "scheduled_sampling", "context_noise", "bash"):
        assert name in table
        assert (SweepRunner(out).cell_dir({"strategy": name, "seed": 0}) / "curve.json").exists()
    assert (out / "exposure.png").stat().st_size > 1000
    before = read_rows(out / "results.csv")
    run_recipe(monkeypatch, *args)  # finished cells are skipped: the same results
    assert read_rows(out / "results.csv") == before

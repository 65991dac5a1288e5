"""Every `python recipes/...` command README.md shows runs, as written plus a smoke override.

The commands are extracted from the README's ```bash blocks verbatim and run in README order (the
later ones read the tokenizer the first one writes to runs/tok), each in its own process, inside a
temporary directory: relative paths such as runs/tok land there, never in the repository's runs/.
Only the overrides in SMOKE are appended, each to shorten the run, never to change what it does.
The whole chain takes about 1.5 min on 2 busy cores (most of it Python start-up and imports).
"""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import latentar.configs

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SMOKE_TRAINER = OmegaConf.load(Path(latentar.configs.__file__).parent / "trainer" / "smoke.yaml")
SMOKE_STEPS = SMOKE_TRAINER.max_steps

# script -> overrides appended to its README command. trainer=smoke (20 steps, batch 16) is the real
# shortening; the rest shrinks the evaluation around the training to a size that only checks wiring.
SMOKE = {
    "train_tokenizer.py": ["trainer=smoke",
                           "report.max_examples=128",      # latent_report on 128 test images, not 1024
                           "scale_examples=256"],          # latent std from 256 images, not 4096
    "train_ar.py": ["trainer=smoke",
                    "model.d_model=32", "model.depth=1",   # a 1-layer backbone (default 4 x 128)
                    "posterior_draws=1",                   # one posterior sample per image (default 4)
                    "sample.num_samples=32",               # 32 samples per CFG scale (default 400)
                    "sample.sampling_steps=2",             # 2 reverse-diffusion steps (default 50)
                    "exposure.num_samples=16"],            # 16 sequences for the exposure curve (default 256)
    "exposure_compare.py": ["trainer=smoke",
                            "model.d_model=32", "model.depth=1",
                            "meter.num_samples=16"],       # 16 generated sequences per cell (default 512)
    "ip_diffusion.py": ["trainer=smoke",
                        "diffusion.model.preset=tiny",     # the smallest UNet (default small)
                        "sampling.steps=[2]",              # FD at 2 sampling steps only (default 5..100)
                        "sampling.num_samples=32"],        # 32 samples per FD (default 512)
    # not a Trainer recipe: the CompareConfig smoke preset (40 steps), one length and two arms
    "discrete_compare.py": ["preset=smoke", "lengths=[3]", "strategies=[sft,ss]"],
}


def readme_recipe_commands() -> list[str]:
    """Every line of a ```bash block of the README that starts with `python recipes/`, without its comment."""
    blocks = re.findall(r"^```bash[ \t]*\n(.*?)^```[ \t]*$", README.read_text(), flags=re.M | re.S)
    lines = [ln.split("#", 1)[0].strip() for b in blocks for ln in b.splitlines()]
    return [ln for ln in lines if ln.startswith("python recipes/")]


def _script(command: str) -> str:
    return Path(shlex.split(command)[1]).name


def test_readme_shows_every_recipe_and_each_has_a_smoke_override():
    commands = readme_recipe_commands()
    assert commands, "README.md shows no `python recipes/...` command"
    shown = {_script(c) for c in commands}
    for name in shown:
        assert (ROOT / "recipes" / name).exists(), f"README runs recipes/{name}, which does not exist"
        assert name in SMOKE, f"add recipes/{name} to SMOKE in {Path(__file__).name}: how to shorten it"
    assert shown == {p.name for p in (ROOT / "recipes").glob("*.py")}, "a recipe is missing from the README"


@pytest.fixture
def hydra_configs():
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="latentar.configs", version_base=None):
        yield
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("name, budget", [("train_tokenizer", 2000), ("train_ar", 2000), ("ip_diffusion", 1000),
                                          ("exposure_compare", 1000)])
def test_trainer_smoke_wins_over_the_recipe_budget(hydra_configs, name, budget):
    """The recipe's own budget applies with the default trainer; trainer=smoke replaces it (it used
    to be overridden by the recipe's trainer block), and trainer.<key>= beats both."""
    extra = ["tokenizer_dir=x"] if name == "train_ar" else []
    assert compose(config_name=name, overrides=extra).trainer.max_steps == budget
    smoke = compose(config_name=name, overrides=extra + ["trainer=smoke"]).trainer
    assert smoke.max_steps == SMOKE_STEPS and smoke.batch_size == SMOKE_TRAINER.batch_size
    assert smoke.out_dir is not None or name == "exposure_compare"   # the recipe's out_dir still applies
    assert compose(config_name=name, overrides=extra + ["trainer=smoke", "trainer.max_steps=3"]).trainer.max_steps == 3
    assert compose(config_name=name, overrides=extra + ["trainer.max_steps=3"]).trainer.max_steps == 3


def test_ip_diffusion_gamma_shorthand(hydra_configs):
    """`gamma=0.1`, as the README writes it, sets the diffusion task's gamma (diffusion.gamma= too)."""
    assert compose(config_name="ip_diffusion", overrides=["gamma=0.3"]).diffusion.gamma == 0.3
    assert compose(config_name="ip_diffusion", overrides=["diffusion.gamma=0.2"]).diffusion.gamma == 0.2
    assert compose(config_name="ip_diffusion").diffusion.gamma == 0.1


def test_readme_recipe_commands_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}
    for i, command in enumerate(readme_recipe_commands()):
        argv = shlex.split(command)
        script = _script(command)
        argv = [sys.executable, str(ROOT / argv[1]), *argv[2:], *SMOKE[script],
                f"hydra.run.dir={tmp_path / 'hydra' / str(i)}"]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"`{command}` (+ {' '.join(SMOKE[script])}) failed:\n{proc.stderr[-4000:]}"
    # trainer=smoke really shortened the Trainer recipes (each writes its last step into a JSON)
    reports = [json.loads(f.read_text()) for f in tmp_path.glob("runs/**/report.json")]         # train_tokenizer
    results = [json.loads(f.read_text()) for f in tmp_path.glob("runs/**/results.json")]
    steps = [r["train"]["step"] for r in reports] + [r["train_step"] for r in results if "train_step" in r]  # train_ar
    assert len(steps) >= 2 and set(steps) == {SMOKE_STEPS}, steps
    # every recipe's output folder records what ran it: script, overrides, version, commit, config
    records = {json.loads(f.read_text())["command"]: json.loads(f.read_text()) for f in tmp_path.glob("runs/**/run.json")}
    assert {f"python {ROOT / 'recipes' / s}" for s in
            ("train_tokenizer.py", "train_ar.py", "exposure_compare.py", "ip_diffusion.py", "discrete_compare.py")} \
        <= set(records), sorted(records)
    for r in records.values():
        assert r["version"] and r["git_commit"] and isinstance(r["config"], dict), r

"""``pip install latentar`` from a built wheel works on its own: the wheel carries every module, the
Hydra configs and the ``latentar`` console script, and nothing it runs is read from the checkout.

The wheel is built (PEP 517, setuptools, no network) from a copy of the working tree, so the test
leaves no ``build/`` in the checkout. It is installed with ``--no-deps`` into a fresh venv whose own
site-packages come first; the test venv's site-packages follow through a ``.pth`` *path line* (for
torch, hydra and the other dependencies, without a second download). A path line does not run that
directory's ``.pth`` files, so the test venv's editable install of the checkout stays inactive, and
the test checks that ``latentar`` resolves to the new venv all the same.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "latentar"
CHECK = r"""
import importlib.metadata as md, importlib.resources as res, json, sys
import latentar, latentar.cli
from hydra import compose, initialize_config_module
cfgs = res.files("latentar.configs")
with initialize_config_module(config_module="latentar.configs", version_base=None):
    cfg = compose(config_name="train_ar")
print(json.dumps({"file": latentar.__file__, "cli": latentar.cli.__file__,
                  "train_ar": cfgs.joinpath("train_ar.yaml").is_file(),
                  "group": cfgs.joinpath("trainer", "default.yaml").is_file(),
                  "composed": sorted(cfg.keys()), "version": md.version("latentar"),
                  "dist": str(md.distribution("latentar").locate_file(""))}))
"""


def _run(cmd: list, cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    src = tmp / "src"
    src.mkdir()
    shutil.copytree(PACKAGE, src / "latentar", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", dist, src], cwd=tmp, env=env)
    wheel = next(dist.glob("latentar-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp, env=env)
    py = venv / "bin" / "python"
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env).stdout.strip())
    (purelib / "zz_latentar_test_deps.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel], tmp, env)
    outside = tmp / "elsewhere"  # not the checkout, so nothing is imported from the working directory
    outside.mkdir()
    return {"wheel": wheel, "src": src, "venv": venv, "py": py, "purelib": purelib, "cwd": outside, "env": env}


def test_wheel_has_every_file(installed):
    """Every module and every YAML config of the checkout is in the wheel, with the console script."""
    with zipfile.ZipFile(installed["wheel"]) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    src = installed["src"]  # the copy the wheel was built from (the checkout may change meanwhile)
    want = {p.relative_to(src).as_posix() for p in (src / "latentar").rglob("*") if p.suffix in (".py", ".yaml")}
    assert any(n.startswith("latentar/configs/") and n.count("/") >= 3 for n in want), "no group configs to check"
    assert not want - names, f"missing from the wheel: {sorted(want - names)}"
    assert "latentar = latentar.cli:main" in entry_points


def test_console_script_runs_from_the_wheel(installed):
    exe = installed["venv"] / "bin" / "latentar"
    assert exe.is_file()
    proc = _run([exe, "--help"], installed["cwd"], installed["env"], timeout=120)
    assert proc.stdout.startswith("usage: latentar") and "sweep variance" in proc.stdout
    info = json.loads(_run([installed["py"], "-c", CHECK], installed["cwd"], installed["env"], timeout=120).stdout)
    for key in ("file", "cli", "dist"):
        path = Path(info[key]).resolve()
        assert path.is_relative_to(installed["purelib"].resolve()), f"{key}: {path} is not the wheel's copy"
        assert not path.is_relative_to(ROOT), f"{key}: {path} comes from the checkout"
    assert info["train_ar"] and info["group"], "the Hydra configs are not in the installed package"
    assert {"trainer", "model"} <= set(info["composed"]), info["composed"]
    assert info["version"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # a user mistake through the installed script: one line on stderr, exit 2
    from latentar.cli import COMMANDS
    argv = ["report", installed["cwd"] / "no-such-run"] if ("report",) in COMMANDS else ["no-such-command"]
    proc = subprocess.run([exe, *argv], cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, (proc.returncode, proc.stderr)

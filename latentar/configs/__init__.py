"""The configs shipped with latentar, and the one loader of the commands' presets.

* Hydra configs of the recipes (``recipes/*.py``): ``train_tokenizer.yaml``, ``train_ar.yaml``, ... and
  the groups ``model/``, ``trainer/``, ``tokenizer/``, ..., composed through the ``pkg://latentar.configs``
  search path.
* The presets of the commands: ``presets/<command>/<preset>.yaml`` (``sweep_variance``, ``sweep_ip``,
  ``compare_discrete``, ``compare_text``, ``softprompt_bench``), plain OmegaConf YAML read by
  :func:`load_preset`. Each key is a key of the command's resolved config (the preset laid under the
  command-line options), which ``--cfg-dump`` prints, every run directory keeps as ``config.yaml``
  (:func:`save_run`, beside ``run.json``: the command line, the package version, the git commit) and
  ``--config PATH`` runs again.

Nothing here imports torch: ``latentar <command> --help`` and ``--cfg-dump`` read presets without it.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
PRESETS_DIR = ROOT / "presets"
CONFIG_NAME = "config.yaml"   # the resolved config of a run, in its run directory
RUN_NAME = "run.json"         # what ran it: command line, version, git commit


def preset_names(command: str) -> list[str]:
    """The presets of ``command`` (``"sweep_variance"``, ...): the YAML files in ``presets/<command>/``."""
    folder = PRESETS_DIR / command
    if not folder.is_dir():
        raise ValueError(f"no presets for {command!r}: {folder} is not a directory")
    return sorted(p.stem for p in folder.glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _read_yaml(path: str, mtime_ns: int) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file as plain Python values (OmegaConf: ``${...}`` interpolations resolved)."""
    p = Path(path)
    return copy.deepcopy(_read_yaml(str(p), p.stat().st_mtime_ns))


def load_preset(command: str, name: str) -> dict[str, Any]:
    """Preset ``name`` of ``command`` as a fresh dict (``presets/<command>/<name>.yaml``)."""
    path = PRESETS_DIR / command / f"{name}.yaml"
    if not isinstance(name, str) or not name or "/" in name or not path.is_file():
        raise ValueError(f"unknown preset {name!r}; expected one of {preset_names(command)}")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds no mapping of settings")
    return data


class Presets(Mapping):
    """The presets of one command as a read-only mapping name -> settings dict (a fresh copy per
    lookup), read from their YAML files: what the Python ``PRESETS`` dicts of the commands were."""

    def __init__(self, command: str):
        self.command = command

    def __getitem__(self, name: str) -> dict[str, Any]:
        if name not in self:
            raise KeyError(name)
        return load_preset(self.command, name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in preset_names(self.command)

    def __iter__(self) -> Iterator[str]:
        return iter(preset_names(self.command))

    def __len__(self) -> int:
        return len(preset_names(self.command))

    def __repr__(self) -> str:
        return f"Presets({self.command!r}: {', '.join(self)})"


def _plain(value: Any) -> Any:
    """Paths as strings, tuples as lists: what a YAML file holds."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def dump_config(config: Mapping[str, Any]) -> str:
    """``config`` as YAML (key order kept), read back by :func:`read_yaml` to the same values."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(_plain(config)))


def package_version() -> str:
    from latentar import __version__

    return __version__


def git_commit() -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}`` of the git checkout this package is imported from, or
    ``{"commit": "unknown", "dirty": None}`` (an installed copy, no git, any failure: never an error)."""
    unknown = {"commit": "unknown", "dirty": None}
    pkg = ROOT.parent                      # .../latentar
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}   # read only: never refresh the index
    try:
        r = subprocess.run(["git", "-C", str(pkg), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                           text=True, timeout=10, env=env)
        top, sha = r.stdout.split() if r.returncode == 0 else ("", "")
        if not sha or Path(top).resolve() != pkg.parent:   # a git repository that does not hold this package
            return unknown
        s = subprocess.run(["git", "-C", str(pkg.parent), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10, env=env)
        return {"commit": sha, "dirty": bool(s.stdout.strip()) if s.returncode == 0 else None}
    except (OSError, ValueError, subprocess.SubprocessError):
        return unknown


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def record_run(out: str | os.PathLike, command: str, argv: list[str] | None = None,
               config: Mapping[str, Any] | None = None) -> Path:
    """``out/run.json``: what ran (``command``, ``argv``), the package version, the git commit, the
    thread setting, Python's and torch's versions, and ``config`` when given (a Hydra recipe's
    resolved config; the CLI keeps its own in ``config.yaml``). Returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    git = git_commit()
    try:
        from importlib.metadata import version
        torch_version = version("torch")
    except Exception:  # noqa: BLE001 - not installed, odd metadata: only a record
        torch_version = None
    info = {"command": command, "argv": None if argv is None else list(argv),
            "version": package_version(), "git_commit": git["commit"], "git_dirty": git["dirty"],
            "threads": os.environ.get("OMP_NUM_THREADS"), "python": platform.python_version(), "torch": torch_version,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cwd": os.getcwd(), "executable": sys.executable}
    if config is not None:
        info["config"] = dict(config)
    _atomic_write(out / RUN_NAME, json.dumps(info, indent=2, default=str) + "\n")
    return out / RUN_NAME


def record_recipe(cfg: Any, out: str | os.PathLike) -> Path:
    """A Hydra recipe's ``out/run.json``: its script and overrides (``sys.argv``), version, git commit
    and resolved config (Hydra keeps its own copy in ``hydra.run.dir``; this one sits beside the outputs)."""
    from omegaconf import OmegaConf
    config = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    return record_run(out, f"python {sys.argv[0]}", sys.argv[1:], config)


def save_run(out: str | os.PathLike, command: str, config: Mapping[str, Any],
             argv: list[str] | None = None) -> Path:
    """Record a run in its directory ``out``: ``config.yaml`` (the resolved ``config``, what
    ``latentar <command> --config out/config.yaml`` runs again) and ``run.json`` (the command line,
    the package version, the git commit, the thread setting, Python's and torch's versions). The
    latest run's, when several runs share ``out``. Returns the path of ``config.yaml``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    git = git_commit()
    head = (f"# latentar {command}: the resolved config of this run (preset + options); latentar "
            f"{package_version()}, git {git['commit']}{' (with local changes)' if git['dirty'] else ''}.\n"
            f"# Run it again: latentar {command} --config {out / CONFIG_NAME} [--out NEW_DIR]\n")
    _atomic_write(out / CONFIG_NAME, head + dump_config(config))
    record_run(out, f"latentar {command}", argv)
    return out / CONFIG_NAME

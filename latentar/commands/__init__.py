"""The command lines of ``latentar <command>``, one light module per command, none importing torch.

``latentar.cli`` maps each command onto one of these modules; each builds its parser and turns the
parsed options into the run's resolved config (its preset, or a saved ``--config``, laid under the
options given) with no heavy import, so ``--help`` and ``--cfg-dump`` answer at once. Only then does
:func:`run_command_line` apply ``--threads`` to torch and import the library module that runs the
command (``latentar.sweeps.variance``, ``latentar.softprompt.cli``, ...).

* ``sweep_variance``: ``latentar sweep variance`` (``latentar.sweeps.variance``)
* ``sweep_ip``: ``latentar sweep ip`` (``latentar.sweeps.ip``)
* ``compare_discrete``: ``latentar compare discrete`` (``latentar.sweeps.discrete``)
* ``compare_text``: ``latentar compare text`` (``latentar.sweeps.text_compare``)
* ``demo_huszar``: ``latentar demo huszar`` (``latentar.demos.huszar``)
* ``softprompt``: ``latentar softprompt fit|bench`` (``latentar.softprompt.cli``)

The sweep commands' presets are YAML files, ``latentar/configs/presets/<command>/<preset>.yaml``
(:func:`latentar.configs.load_preset`); every run saves its resolved config and what ran it in its
output folder (:func:`latentar.configs.save_run`: ``config.yaml``, ``run.json``).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from dataclasses import fields
from typing import Any, ClassVar

from latentar.cliargs import UsageError, given, use_threads


def run_command_line(argv: list[str] | None, command: str, build_parser: Callable[[str], argparse.ArgumentParser],
                     run: str, resolve: Callable[[argparse.Namespace], dict[str, Any]] | None = None) -> int:
    """Parse ``argv`` (``--help`` ends here, torch never imported), resolve the config (``resolve``;
    ``--cfg-dump`` prints it and ends here), apply ``--threads``, then import ``run``
    (``"module:function"``) and return ``function(args, config, command)``; a run that succeeds
    with an output folder ends by writing its ``index.html`` (:func:`latentar.report.write_report`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(command).parse_args(argv)
    args.argv = argv
    config = resolve(args) if resolve is not None else None
    if config is not None and getattr(args, "cfg_dump", False):
        from latentar.configs import dump_config
        sys.stdout.write(dump_config(config))
        return 0
    use_threads(args.threads)
    module, _, function = run.partition(":")
    rc = int(getattr(importlib.import_module(module), function)(args, config, command) or 0)
    out = (config or {}).get("out")
    if rc == 0 and out and Path(out).is_dir():  # every finished run gets its page (latentar report)
        from latentar.report import write_report
        try:
            print(f"report: {write_report(out)}", file=sys.stderr)
        except UsageError:  # nothing the page could show (no results, no cells)
            pass
    return rc


class PresetConfig:
    """Base of a command's settings dataclass: built from a YAML preset (``preset_dir`` names its folder
    under ``latentar/configs/presets/``) or from a resolved config."""

    preset_dir: ClassVar[str] = ""

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any):
        from latentar.configs import load_preset
        return cls(preset=preset, **{**load_preset(cls.preset_dir, preset),
                                     **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_config(cls, config: dict[str, Any], progress: bool = True):
        """The dataclass of a resolved config (:func:`resolve`; ``launch`` is the runner's, not here)."""
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config}, progress=progress)

    @classmethod
    def resolve(cls, args: argparse.Namespace, defaults: Mapping[str, Any],
                options: Mapping[str, tuple[str, Callable]]) -> dict[str, Any]:
        """The resolved config of parsed ``args``: defaults, then the preset or ``--config`` file, then the
        options given; checked by ``validate`` (a UsageError names the first bad setting before anything runs)."""
        cfg = start_config(args, defaults, cls.preset_dir)
        apply_options(cfg, args, options)
        cfg["launch"] = launch_config(args, cfg["launch"] if args.config is not None else None)
        cls.from_config(cfg).validate()
        return cfg


def preset_option_adder(p: argparse.ArgumentParser, preset_keys: set[str], defaults: Mapping[str, Any]):
    """``add(flag, key, help, **kw)``: an option of config key ``key`` whose default is the preset's
    (help ends "(default: from --preset)") when a preset sets the key, else ``defaults[key]``."""
    from latentar.cliargs import FROM_PRESET

    def add(flag: str, key: str, help: str, **kw) -> None:
        if key in preset_keys:
            kw["default"], help = None, f"{help} {FROM_PRESET}"
        else:
            kw["default"] = defaults[key]
        p.add_argument(flag, help=help, **kw)
    return add


def presets_epilog(folder: str, presets: Mapping[str, Mapping[str, Any]]) -> str:
    """The ``--help`` epilog listing each preset of ``latentar/configs/presets/<folder>/`` and its values."""
    return (f"presets (latentar/configs/presets/{folder}/<preset>.yaml; values used unless an option "
            "overrides them, other keys as --cfg-dump shows):\n" + "\n".join(
                f"  {k}: " + ", ".join(f"{a}={b}" for a, b in presets[k].items()) for k in presets))


def module_docstring(module: str, default: str = "") -> str:
    """The docstring of ``module`` read from its source (importing it could import torch)."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
        return ast.get_docstring(ast.parse(Path(spec.origin).read_text()), clean=False) or default
    except (ImportError, OSError, SyntaxError, AttributeError, TypeError, ValueError):
        return default


def start_config(args: argparse.Namespace, defaults: Mapping[str, Any],
                 preset: str | Callable[[str, dict[str, Any]], dict[str, Any]],
                 preset_keys: set[str] = frozenset()) -> dict[str, Any]:
    """Where a config starts before the command line's options: ``defaults`` (the values of the
    options no preset sets), then ``preset(name, so_far)`` (``--preset``'s settings; a string names
    the preset folder under ``latentar/configs/presets/``), or, with ``--config``, that file laid over
    the preset it names (so a file that lacks a key still runs). A ``--config`` file may hold the keys
    of ``defaults`` and ``preset_keys`` (and ``preset``)."""
    if isinstance(preset, str):
        from latentar.configs import load_preset
        folder = preset
        preset = lambda name, _: load_preset(folder, name)  # noqa: E731
    if args.config is None:
        cfg = {"preset": args.preset, **defaults}
        return {**cfg, **preset(args.preset, cfg)}
    if "preset" in given(args):
        raise UsageError("--preset and --config exclude each other: a saved config holds its preset's values "
                         "already (give options beside --config to change some)")
    saved = load_saved_config(args.config, known={"preset", *defaults, *preset_keys})
    name = saved.get("preset", args.preset)
    cfg = {"preset": name, **defaults, **saved}
    try:
        base = preset(name, cfg)
    except ValueError:   # a preset that no longer exists: the file must hold every key itself
        base = {}
    return {"preset": name, **defaults, **base, **saved}


# Keys that an earlier run's config.json (written by the sweeps before config.yaml existed) holds but
# that change no result: dropped on reading, so ``--config OLD_RUN/config.json`` reruns that run.
DISPLAY_ONLY = ("progress",)


def load_saved_config(path: str, known: set[str] | None = None) -> dict[str, Any]:
    """A saved config (``OUT/config.yaml``) as a dict, or a UsageError naming what is wrong with it."""
    from latentar.configs import read_yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"--config {path!r} is not a file; give the config.yaml a run saved in its output folder")
    try:
        saved = read_yaml(p)
    except Exception as e:  # noqa: BLE001 - any YAML / OmegaConf error is the file's
        raise UsageError(f"--config {path!r} is not a readable YAML config: {' '.join(str(e).split())}") from None
    if not isinstance(saved, dict):
        raise UsageError(f"--config {path!r} holds no mapping of settings")
    for key in DISPLAY_ONLY:  # the config.json of runs from before config.yaml also recorded these
        saved.pop(key, None)
    if known is not None:
        unknown = sorted(set(saved) - set(known))
        if unknown:
            raise UsageError(f"--config {path!r}: {', '.join(unknown)} {'is not a setting' if len(unknown) == 1 else 'are not settings'} "
                             "of this command (a config saved by another command?)")
    return saved


SAVED_LAUNCH = ("workers", "launcher", "submitit")   # how cells run; saved in the config (never what they compute)


def _launch(args: argparse.Namespace, saved: Mapping[str, Any] | None) -> dict[str, Any]:
    """``latentar.sweeps.runner.launch_options`` of the command line, with the launch options it does
    not give taken from ``saved`` (a ``--config`` file's ``launch``)."""
    from latentar.sweeps.runner import launch_options

    if not saved:
        return launch_options(args)
    explicit, ns = given(args), argparse.Namespace(**vars(args))
    sub = dict(saved.get("submitit") or {})
    for dest, value in (("workers", saved.get("workers")), ("launcher", saved.get("launcher", "local")),
                        ("slurm_partition", sub.pop("slurm_partition", None)),
                        ("slurm_time", sub.pop("timeout_min", None))):
        if dest not in explicit:
            setattr(ns, dest, value)
    opts = launch_options(ns)
    opts["submitit"] = {**sub, **opts["submitit"]}   # other submitit parameters a hand-edited config names
    return opts


def launch_config(args: argparse.Namespace, saved: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config's ``launch`` (workers, launcher, submitit: checked), from the command line over ``saved``."""
    return {k: v for k, v in _launch(args, saved).items() if k in SAVED_LAUNCH}


def runner_options(args: argparse.Namespace, config: Mapping[str, Any]) -> dict[str, Any]:
    """``SweepRunner``'s keyword arguments: the config's ``launch`` and the command line's reporting
    options (``--verbose``, ``--wandb``: what a run shows, never taken from a saved config)."""
    return _launch(args, config.get("launch") or {"workers": None, "launcher": "local", "submitit": {}})


def apply_options(cfg: dict[str, Any], args: argparse.Namespace, options: Mapping[str, tuple[str, Callable]]) -> dict[str, Any]:
    """Lay the options the command line gave over ``cfg``: ``options`` maps an option's destination
    onto ``(config key, convert)``, ``convert`` reading the option's value (``parse_list`` ...)."""
    explicit = given(args)
    for dest, (key, convert) in options.items():
        if dest in explicit and getattr(args, dest) is not None:
            cfg[key] = convert(getattr(args, dest))
    return cfg

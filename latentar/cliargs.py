"""What every ``latentar`` command shares on its command line: an argument parser whose mistakes
are one line, and validators for the options several commands take.

A user mistake raises :class:`UsageError` (a ``ValueError``); ``latentar.cli.main`` turns it, and
every other ``ValueError`` / missing-file error a command raises while reading its options, into

    latentar <command>: error: <what is wrong and what to do>

on stderr and exit status 2 (a traceback only with ``--debug`` or ``LATENTAR_DEBUG=1``).

Nothing here imports torch at import time, and building or parsing a command line never does
(``latentar <command> --help`` answers in a fraction of a second): ``--threads`` is exported to the
environment when parsed and reaches torch when the command runs (:func:`use_threads`).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FROM_PRESET = "(default: from --preset)"   # the help text's default of an option a preset sets
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class UsageError(ValueError):
    """A mistake in what the user asked for (an option's value, a path): printed as one line, exit 2."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Every command's ``--help``: the description keeps its layout (a module docstring's paragraphs
    and command examples), and each option's help ends with its default, except where there is none
    to state: a default of None (an option a preset sets says ``(default: from --preset)`` itself), an
    on/off flag, or a help text that states its default already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default is None or isinstance(action.default, bool) or action.default is argparse.SUPPRESS
                or "(default" in text):
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors raise :class:`UsageError` instead of printing the
    usage block and exiting, so every command reports them through the one handler in ``cli.py``;
    with :class:`HelpFormatter` unless told otherwise. Parsing records which options the command
    line gave (:func:`given`: they override a ``--config`` file) and exports ``--threads``
    (:func:`add_common_args`, :func:`set_threads`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse's hook
        raise UsageError(message)

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        ns, extras = super().parse_known_args(args, namespace)   # --help prints and exits here
        # The same line again with every default suppressed: what is left was given.
        defaults = [(a, a.default) for a in self._actions]
        try:
            for a, _ in defaults:
                a.default = argparse.SUPPRESS
            explicit, _ = super().parse_known_args(args, None)
        finally:
            for a, d in defaults:
                a.default = d
        ns._given = frozenset(vars(explicit))
        if getattr(ns, "threads", None) is not None:
            ns.threads = set_threads(ns.threads)
        return ns, extras


def given(args: argparse.Namespace) -> frozenset[str]:
    """The destinations of the options ``args``'s command line gave (not their defaults)."""
    found = getattr(args, "_given", None)
    if found is None:   # a namespace from another parser: every option that is set counts
        return frozenset(k for k, v in vars(args).items() if v is not None)
    return found


# --------------------------------------------------------------------------------------------------
# Options every command (--threads) or every sweep (--config, --cfg-dump) shares (the sweeps' launch
# options: latentar.sweeps.runner.add_launch_args)
# --------------------------------------------------------------------------------------------------
def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--threads N``: torch / OpenMP / MKL threads of this process and of what it starts."""
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of torch, OpenMP and MKL in this process and in the processes it starts "
                             "(OMP_NUM_THREADS / MKL_NUM_THREADS are set to it), whatever the shell sets. The small "
                             "models here run fastest with 1; sweep workers use one thread each")
    return parser


def add_config_args(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """``--config PATH`` and ``--cfg-dump`` of a command whose runs save their resolved config."""
    g = parser.add_argument_group("config (preset + options: printed by --cfg-dump, saved as OUT/config.yaml)")
    g.add_argument("--config", default=None, metavar="PATH",
                   help=f"run the resolved config a run saved (OUT/config.yaml) instead of a preset: `latentar "
                        f"{command} --config runs/x/config.yaml --out runs/y` reruns it into runs/y; options "
                        "given beside it override its keys")
    g.add_argument("--cfg-dump", action="store_true",
                   help="print the resolved config (the preset or --config, then the options) as YAML and exit "
                        "without running")
    return parser


def set_threads(threads: Any, name: str = "--threads") -> int:
    """Export ``threads`` to OMP_NUM_THREADS / MKL_NUM_THREADS (read by torch when it is imported, and
    by every process started from here), and set torch's threads if torch is imported already."""
    n = positive_int(threads, name)
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        use_threads(n)
    return n


def use_threads(threads: int) -> None:
    """``torch.set_num_threads`` and, while torch still allows it (before its first parallel work),
    ``torch.set_num_interop_threads``: called once a command has parsed its options, before it runs."""
    import torch

    n = positive_int(threads, "--threads")
    torch.set_num_threads(n)
    if torch.get_num_interop_threads() != n:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # inter-op work has started in this process: that setting is fixed now
            pass


def parse_list(text: str | Sequence, cast: Callable = str, name: str = "value") -> list:
    """``'0,0.1,0.5'`` -> ``[0.0, 0.1, 0.5]``; an empty item (``'0,,1'``), an empty list, or an item
    that does not read as ``cast`` is an error naming the option and the item."""
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = str(text).split(",")
        if any(not t.strip() for t in items):
            raise UsageError(f"{name}: empty item in {text!r}; give comma-separated values such as 0,0.5,1")
    out = []
    for t in items:
        try:
            out.append(cast(t.strip() if isinstance(t, str) else t))
        except (ValueError, TypeError) as e:
            raise UsageError(f"{name}: cannot read {t!r} as {getattr(cast, '__name__', cast)}") from e
    if not out:
        raise UsageError(f"{name}: empty list")
    return out


def finite(value: float, name: str, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite float (and ``> minimum`` if strict, else ``>= minimum``), or a UsageError."""
    v = float(value)
    if not math.isfinite(v):
        raise UsageError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise UsageError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return v


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a UsageError naming the option."""
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def unique(values: Sequence, name: str) -> list:
    """``values`` unchanged, or a UsageError naming the repeated item (``--c-sigma 0,0``)."""
    seen = []
    for v in values:
        if v in seen:
            raise UsageError(f"{name}: {v!r} is given twice; list each value once")
        seen.append(v)
    return list(values)


def check_device(device: str, name: str = "--device") -> str:
    """``auto``, ``cpu``, ``cuda[:N]`` or ``mps``, and available on this machine; else a UsageError
    (``auto`` and ``cpu`` without importing torch)."""
    if device in ("auto", "cpu"):
        return device
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"{name} {device!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{name} {device!r}: CUDA is not available on this machine; use --device auto or cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{name} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise UsageError(f"{name} {device!r}: MPS is not available on this machine; use --device auto or cpu")
    elif dev.type != "cpu":
        raise UsageError(f"{name} {device!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device


def out_dir(path: str | Path, name: str = "--out") -> Path:
    """An output folder that is, or can become, a directory: not a file, not under a file."""
    p = Path(path).expanduser()
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                what = "is a file" if q == p else f"lies under the file {q}"
                raise UsageError(f"{name} {str(path)!r} {what}; name a directory")
            break
    return p


def existing_dir(path: str | Path, name: str, must_contain: str | None = None) -> Path:
    """A folder that exists (and holds ``must_contain``, if given), or a UsageError naming it."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise UsageError(f"{name} {str(path)!r} is not a directory")
    if must_contain is not None and not (p / must_contain).is_file():
        raise UsageError(f"{name} {str(path)!r} holds no {must_contain}; point it at a saved model folder")
    return p

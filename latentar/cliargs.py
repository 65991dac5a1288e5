"""What every ``latentar`` command shares on its command line: an argument parser whose mistakes
are one line, and validators for the options several commands take.

A user mistake raises :class:`UsageError` (a ``ValueError``); ``latentar.cli.main`` turns it, and
every other ``ValueError`` / missing-file error a command raises while reading its options, into

    latentar <command>: error: <what is wrong and what to do>

on stderr and exit status 2 (a traceback only with ``--debug`` or ``LATENTAR_DEBUG=1``).
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


class UsageError(ValueError):
    """A mistake in what the user asked for (an option's value, a path): printed as one line, exit 2."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors raise :class:`UsageError` instead of printing the
    usage block and exiting, so every command reports them through the one handler in ``cli.py``."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        raise UsageError(message)


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
    """``auto``, ``cpu``, ``cuda[:N]`` or ``mps``, and available on this machine; else a UsageError."""
    import torch

    if device == "auto":
        return device
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

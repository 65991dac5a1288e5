"""Atomic checkpoints that load without running code, and the random state that exact resumption needs.

A checkpoint is written to a temporary file ``<name>.<random>.tmp`` in the same directory, flushed
to disk, then renamed over the old one (``os.replace`` is atomic on POSIX), so a crash mid-write
never replaces the last good checkpoint; :func:`remove_orphans` deletes the temporary files that a
``kill -9`` during a write leaves behind.

Loading uses ``torch.load(weights_only=True)``: only tensors and plain containers (dict, list,
tuple, str, int, float, bool, None) are unpickled, so a crafted file cannot run code (a pickled
object's ``__reduce__`` can call anything, e.g. ``os.system``). Everything a checkpoint holds is
therefore kept in those types, the RNG states included (:func:`rng_state`).
"""
from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _atomic_write(path: Path, mode: str, write) -> Path:
    """Write through ``write(file)`` into a temporary sibling, fsync, rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    return _atomic_write(Path(path), "wb", lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Replace ``path`` by ``text`` atomically."""
    return _atomic_write(Path(path), "w", lambda f: f.write(text))


def remove_orphans(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files ``<name>.*.tmp`` that an interrupted atomic write of ``path`` left
    in its directory; returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for p in path.parent.glob(f"{path.name}.*.tmp"):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True``; a file holding anything but tensors
    and plain containers is refused (its payload never runs), a truncated one reported as corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):
            detail = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln), "")
            raise ValueError(
                f"refused to load checkpoint {path}: it holds an object that is not a tensor or a plain "
                f"container ({detail}), and unpickling it could run arbitrary code. latentar checkpoints "
                f"never hold such objects: the file is foreign or was written by an older latentar; "
                f"delete it (or use another out_dir / resume=False) to start afresh") from None
        raise ValueError(f"checkpoint {path} is unreadable or corrupt ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[-3:]})") from e
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"checkpoint {path} is unreadable or corrupt ({type(e).__name__}: {e})") from e


def rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch (and CUDA) generator states, as tensors and plain values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

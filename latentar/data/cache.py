"""Where latentar keeps files it builds once and re-uses (synthesized speech, the digits
classifier, the LM copies, sweep tokenizers), and the one way to build them.

``$LATENTAR_CACHE`` if set, else ``~/.cache/latentar``; sub-folders are created on demand.

:func:`build_once` is how every cached artifact is made: under an exclusive file lock (so two
processes that find an empty cache at the same moment build it once), into a private temporary
folder that is renamed into place only when complete (so a crash never leaves half an artifact),
with gradients enabled and inference mode off whatever the caller is in (a first use under
``torch.no_grad()`` must train the same model as a first use outside it), and inside a forked RNG
(building a cache must not change the caller's random stream: a warm cache and a cold one give
the same results downstream).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def cache_dir(sub: str | os.PathLike | None = None) -> Path:
    """Return (and create) the cache root, or ``root / sub`` when ``sub`` is given."""
    env = os.environ.get("LATENTAR_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "latentar"
    path = root / sub if sub is not None else root
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(
            f"cannot create the latentar cache folder {path}: {e}; "
            "set LATENTAR_CACHE to a writable directory"
        ) from e
    return path


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing), held for the block; other
    processes taking the same lock wait. Released when the process dies, so a kill never wedges it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def building_context() -> Iterator[None]:
    """Grad on, inference mode off, and a forked RNG (CPU and CUDA) for the block."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=devices):
        yield


def build_once(path: str | os.PathLike, build: Callable[[Path], None],
               ready: Callable[[Path], bool] | None = None) -> Path:
    """Make sure the folder ``path`` holds a complete artifact, building it if it does not.

    ``build(tmp)`` writes the artifact into the empty folder ``tmp`` (a sibling of ``path``); it is
    called under :func:`building_context` and at most once across processes sharing the cache.
    ``ready(path)`` says whether an existing folder is complete and current (default: it exists);
    a folder that is not is rebuilt. Returns ``path``.
    """
    path = Path(path)
    ready = ready or (lambda p: p.is_dir())
    if ready(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent / f".{path.name}.lock"):
        if ready(path):  # another process built it while we waited
            return path
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        try:
            with building_context():
                build(tmp)
            if path.exists():  # stale or damaged: replace it whole
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    if not ready(path):
        raise RuntimeError(f"building the cached artifact {path} did not produce what it should; "
                           f"delete {path} and retry, or set LATENTAR_CACHE to a fresh folder")
    return path

"""Where latentar keeps files it builds once and re-uses: synthesized speech, the digits classifier.

``$LATENTAR_CACHE`` if set, else ``~/.cache/latentar``; sub-folders are created on demand.
"""
from __future__ import annotations

import os
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

"""A resumable grid of cells: each cell runs once, its result is saved atomically, reruns skip it.

Every sweep (``latentar sweep variance``, ``sweep ip``, ``compare discrete``, ``softprompt bench``)
lists its cells as dicts of parameters and hands a function ``fn(cell, cell_dir) -> dict of
results`` to :class:`SweepRunner`, together with ``settings``: everything else that changes a
cell's result (steps, model sizes, data, sample counts, ...: the resolved configuration minus what
only selects which cells exist or how they run, such as the lists of seeds, the device, progress
bars and the output folder).

A cell's folder is ``cells/<readable id>-<hash>``, the hash (:func:`settings_key`) taken over the
cell's parameters and ``settings``, and ``settings.json`` in it records both. So a rerun into the
same folder with the same settings skips finished cells (``result.json``) and resumes an
interrupted one from the Trainer checkpoint it left, while a rerun with other settings computes
new cells beside the old ones and never returns their results. ``results.csv`` holds exactly the
cells of the current call, rewritten from the saved results after every cell in the grid's
order, so a run killed and restarted produces the same file as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from latentar.cliargs import parse_list  # noqa: F401  (re-exported for sweeps)
from latentar.train.checkpoint import atomic_write_text
from latentar.metrics.plots import markdown_table, write_table  # noqa: F401  (re-exported for sweeps)

RESULT_NAME = "result.json"
SETTINGS_NAME = "settings.json"


def cell_id(cell: dict[str, Any]) -> str:
    """A readable, filesystem-safe id from a cell's parameters, in their given order."""
    parts = [f"{k}={v}" for k, v in cell.items()]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", ",".join(parts))


def settings_key(*parts: Any, length: int = 10) -> str:
    """A short stable hash of JSON-serialisable ``parts`` (dict keys sorted; ``0`` and ``0.0`` differ,
    so callers pass resolved, typed values): equal settings give equal keys across processes."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write_text(json.dumps(obj, indent=2, default=float), path)  # key order kept: CSV columns stay stable


class SweepRunner:
    """Runs cells into ``out_dir/cells/``; ``settings`` (JSON-serialisable) is what, besides a cell's
    parameters, changes its result: it is part of every cell's folder name (see the module docstring)."""

    def __init__(self, out_dir: str | os.PathLike, progress: bool = True, settings: dict[str, Any] | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.settings = dict(settings or {})

    def cell_dir(self, cell: dict[str, Any]) -> Path:
        return self.out_dir / "cells" / f"{cell_id(cell)}-{settings_key(cell, self.settings)}"

    def run(self, cells: Iterable[dict[str, Any]], fn: Callable[[dict[str, Any], Path], dict[str, Any]],
            desc: str = "cells") -> list[dict[str, Any]]:
        """Run every unfinished cell; return one row per cell (parameters, then results)."""
        cells = list(cells)
        ids = [cell_id(c) for c in cells]
        if len(set(ids)) != len(ids):
            raise ValueError("the sweep has duplicate cells; check for repeated values in the options")
        rows = []
        bar = tqdm(cells, desc=desc, disable=not self.progress, dynamic_ncols=True)
        for cell in bar:
            d = self.cell_dir(cell)
            done = d / RESULT_NAME
            if done.exists():
                result = json.loads(done.read_text())
            else:
                bar.set_postfix_str(cell_id(cell)[:60])
                d.mkdir(parents=True, exist_ok=True)
                _write_json_atomic(d / SETTINGS_NAME, {"cell": cell, "settings": self.settings})
                t0 = time.perf_counter()
                result = dict(fn(cell, d))
                result.setdefault("seconds", time.perf_counter() - t0)
                _write_json_atomic(done, result)
            rows.append({**cell, **result})
            write_table(self.out_dir / "results.csv", rows)
        return rows


def aggregate(rows: list[dict[str, Any]], by: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of ``metrics`` over rows sharing the ``by`` values (seeds)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in by), []).append(r)
    out = []
    for key, rs in groups.items():
        row = dict(zip(by, key))
        row["n"] = len(rs)
        for m in metrics:
            vals = [float(r[m]) for r in rs if r.get(m) is not None and not math.isnan(float(r[m]))]
            row[f"{m}_mean"] = statistics.fmean(vals) if vals else float("nan")
            row[f"{m}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(row)
    return out

"""Writers every sweep shares: a line plot with spread bands (PNG), CSV, JSON and markdown tables.

Plots draw on a bare Agg canvas (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``), never through
pyplot, so they work with no display and leave a notebook's backend alone.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _columns(rows: Sequence[Mapping]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        if not isinstance(r, Mapping):
            raise TypeError(f"rows must be dicts, got {type(r).__name__}")
        cols.extend(k for k in r if k not in cols)
    return cols


def _atomic_write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_table(csv_path: str | os.PathLike, rows: Sequence[Mapping]) -> Path:
    """Write ``rows`` as CSV; columns in order of first appearance, missing cells left empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_columns(rows), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return _atomic_write(Path(csv_path), buf.getvalue())


def read_table(csv_path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a CSV written by ``write_table`` (values come back as strings)."""
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def _fmt(v, digits: int) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}g}"
    return "" if v is None else str(v)


def markdown_table(rows: Sequence[Mapping], digits: int = 4, columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (floats with ``digits`` significant digits).

    ``columns`` picks and orders columns (default: all, in order of first appearance). A pair of
    columns ``x_mean`` and ``x_std`` (as written by ``latentar.sweeps.aggregate``) is shown as one
    column ``x`` with ``mean ± std``."""
    cols = list(columns) if columns is not None else _columns(rows)
    if not cols:
        return ""
    shown, header = [], []
    for c in cols:
        if c.endswith("_std") and c[:-4] + "_mean" in cols:
            continue
        paired = c.endswith("_mean") and c[:-5] + "_std" in cols
        shown.append((c, c[:-5] + "_std" if paired else None))
        header.append(c[:-5] if paired else c)

    def cell(r: Mapping, c: str, std: str | None) -> str:
        text = _fmt(r.get(c), digits)
        if std is not None and isinstance(r.get(std), float):
            text += f" ± {_fmt(r[std], 2)}"
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(r, c, std) for c, std in shown) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_markdown_table(md_path: str | os.PathLike, rows: Sequence[Mapping], digits: int = 4,
                         title: str | None = None) -> Path:
    text = (f"## {title}\n\n" if title else "") + markdown_table(rows, digits)
    return _atomic_write(Path(md_path), text)


def write_json(path: str | os.PathLike, obj) -> Path:
    return _atomic_write(Path(path), json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


def save_lines(path_png: str | os.PathLike, x: Sequence[float], series: Mapping[str, tuple],
               xlabel: str, ylabel: str, title: str = "", logx: bool = False, logy: bool = False,
               band: str | None = None) -> Path:
    """One line per entry of ``series`` (``name -> (mean, spread)``, each of ``len(x)``, spread may be
    None), with a shaded band ``mean ± spread`` in the line's colour; saved as a PNG (parent folders
    created).

    ``band`` says what the spread is, with its count, e.g. ``"mean ± std over 3 seeds"`` or
    ``"95% CI over 3 seeds"``: the legend then ends with an entry ``shaded: <band>`` whenever a band
    of non-zero width is drawn, so the figure reads without the code."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    xs = np.asarray(x, dtype=float)
    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn = False
    for name, value in series.items():
        mean, std = value if isinstance(value, tuple) else (value, None)
        m = np.asarray(mean, dtype=float)
        if m.shape != xs.shape:
            raise ValueError(f"series {name!r}: mean has shape {m.shape}, x has {xs.shape}")
        line, = ax.plot(xs, m, marker="o", label=str(name))
        if std is not None:
            s = np.asarray(std, dtype=float)
            if s.shape != xs.shape:
                raise ValueError(f"series {name!r}: std has shape {s.shape}, x has {xs.shape}")
            ax.fill_between(xs, m - s, m + s, alpha=0.2, color=line.get_color())
            drawn = drawn or bool((np.nan_to_num(s) > 0).any())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if series:
        handles, _ = ax.get_legend_handles_labels()
        if drawn and band:
            handles.append(Patch(facecolor="0.5", alpha=0.3, label=f"shaded: {band}"))
        ax.legend(handles=handles, fontsize=8)
    fig.tight_layout()
    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path

"""``latentar report RUN_DIR``: one self-contained ``RUN_DIR/index.html`` for a sweep's output.

    latentar report runs/standard/speech      # writes runs/standard/speech/index.html

The page needs no network and no JavaScript: every link is relative to ``RUN_DIR`` (so the folder
can be moved, zipped or served as it is), and all text read from the run is HTML-escaped. It shows,
in this order, whatever of the following the run directory holds:

* **Settings**: ``sweep.json`` / ``config.json`` / ``bench.json`` (the sweep's settings), as a table;
* **Results**: ``results.md`` (headings, paragraphs, lists and its markdown tables, the verdict
  tables included) converted to HTML; then ``results.csv`` (one row per cell) as a folded table;
* **Plots**: every ``*.png`` directly in ``RUN_DIR``, each with its file name as alt text and caption
  (PNGs deeper down, outside ``cells/``, follow under "Other figures");
* **Cells**: for each ``cells/<id>/`` that holds media, its PNGs (sample grids such as
  ``samples.png``, found at any depth), its text samples (``samples.txt``, folded) and its audio.

Audio convention (what a sweep writes for the page to play a sample next to its ground truth)::

    cells/<id>/samples/<k>_sample.wav           generated sample k
    cells/<id>/samples/<k>_reference.wav        the real clip it is compared with
    cells/<id>/samples/<k>_reconstruction.wav   that clip encoded and decoded by the tokenizer

``<k>`` is any name without ``_`` (usually 0, 1, 2, ...; sorted numerically where it is a number);
``.flac`` and ``.ogg`` work as well as ``.wav``. Each ``k`` becomes one row of three
``<audio controls>`` players (a missing member shows as a dash). Generated samples written the way
``AudioDomain.save_samples`` wrote them before it wrote triples, ``cells/<id>/samples.<k>.wav``, are shown the same
way (sample only); any other audio file under a cell gets a player captioned with its path.

``write_report(run_dir)`` is the library call (each sweep can call it at its end); ``main`` is the
command. A path that is not a directory, or a directory with none of ``results.md``,
``results.csv``, ``sweep.json``, ``bench.json`` or ``cells/``, is a :class:`UsageError`.
"""
from __future__ import annotations

import csv
import html
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from latentar.cliargs import ArgumentParser, UsageError

INDEX_NAME = "index.html"
SETTINGS_FILES = ("sweep.json", "config.json", "bench.json")
RUN_MARKERS = ("results.md", "results.csv", "sweep.json", "bench.json", "cells")
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg"}
AUDIO_ROLES = ("sample", "reference", "reconstruction")
TEXT_SAMPLES = ("samples.txt",)
MAX_TEXT_CHARS = 20_000
MAX_CSV_ROWS = 2_000

_TRIPLE = re.compile(r"^(?P<k>[^_]+)_(?P<role>sample|reference|reconstruction)$")
_LEGACY = re.compile(r"^samples\.(?P<k>\d+)$")

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 80em; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
code, pre { font-family: ui-monospace, monospace; font-size: .9em; background: #f6f6f6; }
pre { padding: .5em; overflow-x: auto; white-space: pre-wrap; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #555; word-break: break-all; }
.cell { margin: 1em 0 2em 0; }
.cell figure img { max-width: 36em; }
.cell h3 { font-size: 1em; font-family: ui-monospace, monospace; word-break: break-all; }
audio { width: 16em; }
nav a { margin-right: 1em; }
.scroll { overflow-x: auto; max-width: 100%; }
"""


# -- small helpers --------------------------------------------------------------------------------
def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _url(run_dir: Path, path: Path) -> str:
    """A relative, percent-encoded URL of ``path`` from ``run_dir`` (HTML-escaped for an attribute)."""
    return _e(quote(path.relative_to(run_dir).as_posix()))


def _natural(text: str) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t]


def _files(root: Path, suffixes: Iterable[str]) -> list[Path]:
    """Files under ``root`` (any depth) whose suffix is in ``suffixes``, skipping hidden names."""
    suffixes = {s.lower() for s in suffixes}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [Path(dirpath) / f for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in suffixes]
    return sorted(out, key=lambda p: _natural(p.relative_to(root).as_posix()))


# -- markdown -------------------------------------------------------------------------------------
def _inline(text: str) -> str:
    """Escape ``text`` and render `code`, **bold** and the escapes ``\\|``, ``\\*``, ``\\_``."""
    parts = re.split(r"(`[^`]*`)", text.replace("\x00", ""))
    out = []
    for p in parts:
        if len(p) >= 2 and p.startswith("`") and p.endswith("`"):
            out.append(f"<code>{_e(p[1:-1])}</code>")
            continue
        p = re.sub(r"\\([\\|*_`#\[\]()])", lambda m: f"\x00{ord(m.group(1))}\x00", p)
        p = _e(p)
        p = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", p)
        p = re.sub(r"\x00(\d+)\x00", lambda m: _e(chr(int(m.group(1)))), p)
        out.append(p)
    return "".join(out)


def _split_row(line: str) -> list[str]:
    """``| a | b \\| c |`` -> ``["a", "b \\| c"]`` (escaped pipes stay for :func:`_inline`)."""
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", s)]


_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$")


def _table_html(header: list[str], rows: list[list[str]], aligns: list[str] | None = None, raw: bool = False) -> str:
    """An HTML table; cells are markdown inline text, or plain text when ``raw``."""
    fmt = _e if raw else _inline
    aligns = aligns or [""] * len(header)

    def td(tag: str, text: str, i: int) -> str:
        a = aligns[i] if i < len(aligns) else ""
        style = f' style="text-align:{a}"' if a else ""
        return f"<{tag}{style}>{fmt(text)}</{tag}>"

    head = "".join(td("th", h, i) for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(td("td", c, i) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return (f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n'
            "</table></div>")


def markdown_to_html(text: str, heading_offset: int = 1) -> str:
    """The markdown that latentar writes (ATX headings, paragraphs, ``-``/``*`` lists, fenced code,
    GitHub tables, inline `code` and **bold**) as escaped HTML. Headings move down
    ``heading_offset`` levels (the page's own title is the only ``<h1>``)."""
    lines = text.splitlines()
    out: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + _inline(" ".join(s.strip() for s in para)) + "</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if not s:
            flush()
            i += 1
        elif s.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            out.append("<pre>" + _e("\n".join(lines[i + 1:j])) + "</pre>")
            i = j + 1
        elif re.match(r"^#{1,6}\s", s):
            flush()
            level = min(6, len(s) - len(s.lstrip("#")) + heading_offset)
            out.append(f"<h{level}>{_inline(s.lstrip('#').strip())}</h{level}>")
            i += 1
        elif s.startswith("|") and i + 1 < len(lines) and _SEPARATOR.match(lines[i + 1]):
            flush()
            header = _split_row(s)
            aligns = []
            for c in _split_row(lines[i + 1]):
                aligns.append("center" if c.startswith(":") and c.endswith(":") else
                              "right" if c.endswith(":") else "")
            j, rows = i + 2, []
            while j < len(lines) and lines[j].strip().startswith("|"):
                rows.append(_split_row(lines[j]))
                j += 1
            out.append(_table_html(header, rows, aligns))
            i = j
        elif re.match(r"^[-*]\s", s):
            flush()
            items = []
            while i < len(lines) and re.match(r"^[-*]\s", lines[i].strip()):
                items.append("<li>" + _inline(lines[i].strip()[2:].strip()) + "</li>")
                i += 1
            out.append("<ul>\n" + "\n".join(items) + "\n</ul>")
        else:
            para.append(line)
            i += 1
    flush()
    return "\n".join(out)


# -- sections -------------------------------------------------------------------------------------
def _settings_section(run_dir: Path) -> str:
    parts = []
    for name in SETTINGS_FILES:
        path = run_dir / name
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        link = f'<a href="{_url(run_dir, path)}">{_e(name)}</a>'
        if isinstance(data, dict):
            rows = [[str(k), v if isinstance(v, str) else json.dumps(v)] for k, v in data.items()]
            parts.append(f"<p>{link}</p>\n" + _table_html(["setting", "value"], rows, raw=True))
        else:
            parts.append(f"<p>{link}</p>\n<pre>{_e(text)}</pre>")
    return "\n".join(parts)


def _short_number(text: str) -> str:
    """``0.30166666666666664`` -> ``0.3017`` (4 significant digits); integers and words unchanged."""
    if not any(c in text for c in ".eE") or text.lower() in ("nan", "inf", "-inf"):
        return text
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


def _csv_html(path: Path) -> tuple[str, int]:
    with path.open(newline="", errors="replace") as f:
        rows = list(csv.reader(f))
    if not rows:
        return "", 0
    header, body = rows[0], rows[1:]
    shown = [[_short_number(v) for v in r] for r in body[:MAX_CSV_ROWS]]
    note = f"<p>first {MAX_CSV_ROWS} of {len(body)} rows</p>\n" if len(body) > len(shown) else ""
    return note + _table_html(header, shown, raw=True), len(body)


def _results_section(run_dir: Path) -> str:
    parts = []
    md = run_dir / "results.md"
    if md.is_file():
        parts.append(markdown_to_html(md.read_text(errors="replace"), heading_offset=2))
    csv_path = run_dir / "results.csv"
    if csv_path.is_file():
        table, n = _csv_html(csv_path)
        link = f'<a href="{_url(run_dir, csv_path)}">results.csv</a>'
        if table:
            summary = f"{link}: one row per cell ({n} rows)"
            opened = "" if md.is_file() else " open"
            parts.append(f"<details{opened}><summary>{summary}</summary>\n{table}\n</details>")
        else:
            parts.append(f"<p>{link} (empty)</p>")
    return "\n".join(parts)


def _figure(run_dir: Path, path: Path, caption: str | None = None) -> str:
    cap = _e(caption if caption is not None else path.name)
    return (f'<figure><img src="{_url(run_dir, path)}" alt="{cap}" loading="eager">'
            f"<figcaption>{cap}</figcaption></figure>")


def _audio(run_dir: Path, path: Path | None, caption: str) -> str:
    if path is None:
        return "&mdash;"
    mime = AUDIO_TYPES.get(path.suffix.lower(), "audio/wav")
    url = _url(run_dir, path)
    return (f'<audio controls preload="metadata" title="{_e(caption)}">'
            f'<source src="{url}" type="{mime}"><a href="{url}">{_e(path.name)}</a></audio>'
            f"<br><small>{_e(caption)}</small>")


def _cell_audio(run_dir: Path, cell: Path) -> str:
    """The audio of one cell: rows of (sample, reference, reconstruction), then any other files."""
    groups: dict[tuple[str, str], dict[str, Path]] = {}
    others = []
    for path in _files(cell, AUDIO_TYPES):
        rel_parent = path.parent.relative_to(cell).as_posix()
        m = _TRIPLE.match(path.stem) if rel_parent == "samples" else None
        legacy = _LEGACY.match(path.stem) if rel_parent == "." else None
        if m:
            groups.setdefault(("", m["k"]), {})[m["role"]] = path
        elif legacy:
            groups.setdefault(("samples.", legacy["k"]), {})["sample"] = path
        else:
            others.append(path)
    if not groups and not others:
        return ""
    parts = []
    if groups:
        rows = []
        for (prefix, k), members in sorted(groups.items(), key=lambda kv: (kv[0][0], _natural(kv[0][1]))):
            cols = "".join(f"<td>{_audio(run_dir, members.get(r), f'{prefix}{k} {r}')}</td>" for r in AUDIO_ROLES)
            rows.append(f"<tr><th>{_e(prefix + k)}</th>{cols}</tr>")
        head = "<tr><th>k</th>" + "".join(f"<th>{r}</th>" for r in AUDIO_ROLES) + "</tr>"
        parts.append(f'<table class="audio">\n<thead>{head}</thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody>\n</table>")
    if others:
        parts.append("<p>" + " ".join(_audio(run_dir, p, p.relative_to(cell).as_posix()) for p in others) + "</p>")
    return "\n".join(parts)


def _cell_text(run_dir: Path, cell: Path) -> str:
    parts = []
    for name in TEXT_SAMPLES:
        path = cell / name
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        note = ""
        if len(text) > MAX_TEXT_CHARS:
            text, note = text[:MAX_TEXT_CHARS], f" (first {MAX_TEXT_CHARS} characters)"
        parts.append(f'<details><summary><a href="{_url(run_dir, path)}">{_e(name)}</a>{_e(note)}</summary>'
                     f"<pre>{_e(text)}</pre></details>")
    return "\n".join(parts)


def _cells_section(run_dir: Path) -> str:
    cells_dir = run_dir / "cells"
    if not cells_dir.is_dir():
        return ""
    parts = []
    for cell in sorted((c for c in cells_dir.iterdir() if c.is_dir() and not c.name.startswith(".")),
                       key=lambda c: _natural(c.name)):
        figures = "".join(_figure(run_dir, p, p.relative_to(cell).as_posix()) for p in _files(cell, (".png",)))
        body = "\n".join(s for s in (figures, _cell_text(run_dir, cell), _cell_audio(run_dir, cell)) if s)
        if body:
            parts.append(f'<section class="cell" id="cell-{_e(quote(cell.name, safe=""))}">'
                         f"<h3>{_e(cell.name)}</h3>\n{body}\n</section>")
    return "\n".join(parts)


def _plots_sections(run_dir: Path) -> tuple[str, str]:
    top = sorted((p for p in run_dir.glob("*.png") if p.is_file() and not p.name.startswith(".")),
                 key=lambda p: _natural(p.name))
    deeper = [p for p in _files(run_dir, (".png",))
              if p.parent != run_dir and p.relative_to(run_dir).parts[0] != "cells"]
    return ("".join(_figure(run_dir, p) for p in top),
            "".join(_figure(run_dir, p, p.relative_to(run_dir).as_posix()) for p in deeper))


# -- the page -------------------------------------------------------------------------------------
def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """``run_dir`` as a Path, or a :class:`UsageError` when it is not a sweep's output directory."""
    path = Path(run_dir)
    if not path.exists():
        raise UsageError(f"run directory {str(path)!r} does not exist; give a sweep's --out directory")
    if not path.is_dir():
        raise UsageError(f"{str(path)!r} is not a directory; give a sweep's --out directory")
    if not any((path / m).exists() for m in RUN_MARKERS):
        runs = sorted(d.name for d in path.iterdir() if d.is_dir() and any((d / m).exists() for m in RUN_MARKERS))
        hint = (f"; run directories inside it: {', '.join(runs[:5])}{', ...' if len(runs) > 5 else ''}"
                if runs else " (no " + ", ".join(RUN_MARKERS) + "); give a sweep's --out directory")
        raise UsageError(f"{str(path)!r} is not a run directory{hint}")
    return path


def render_report(run_dir: str | os.PathLike) -> str:
    """The HTML text of the report of ``run_dir`` (see the module docstring)."""
    run_dir = check_run_dir(run_dir).resolve()
    title = f"latentar report: {run_dir.name}"
    sections = [("settings", "Settings", _settings_section(run_dir)),
                ("results", "Results", _results_section(run_dir))]
    plots, other = _plots_sections(run_dir)
    sections += [("plots", "Plots", plots), ("other-figures", "Other figures", other),
                 ("cells", "Cells", _cells_section(run_dir))]
    sections = [s for s in sections if s[2]]
    nav = " ".join(f'<a href="#{sid}">{_e(name)}</a>' for sid, name, _ in sections)
    body = "\n".join(f'<section id="{sid}">\n<h2>{_e(name)}</h2>\n{content}\n</section>' for sid, name, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{_e(title)}</h1>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n")


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``run_dir/index.html`` (atomically) and return its path."""
    text = render_report(run_dir)
    path = Path(run_dir) / INDEX_NAME
    tmp = path.with_name(f".{INDEX_NAME}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def build_parser(prog: str = "latentar report") -> ArgumentParser:
    p = ArgumentParser(prog=prog, description="Write RUN_DIR/index.html: a self-contained page with a sweep's "
                       "settings, tables, verdicts, plots, per-cell sample grids and audio (no network, no JS).")
    p.add_argument("run_dir", help="a sweep's --out directory (holds results.md / results.csv / cells/)")
    return p


def main(argv: list[str] | None = None, command: str = "report") -> int:
    args = build_parser(f"latentar {command}").parse_args(argv)
    path = write_report(args.run_dir)
    print(path)
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))

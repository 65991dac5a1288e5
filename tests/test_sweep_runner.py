import csv
import json
import statistics

import pytest

from latentar.sweeps.runner import SweepRunner, aggregate, markdown_table, parse_list, settings_key


def test_finished_cells_are_not_rerun_and_csv_is_identical(tmp_path):
    calls, killed = [], []

    def fn(cell, d):
        calls.append((cell["a"], cell["seed"]))
        if (cell["a"], cell["seed"]) == (2, 0) and not killed:
            killed.append(True)
            raise KeyboardInterrupt  # the run is killed during the third cell
        return {"score": cell["a"] * 10.0 + cell["seed"], "seconds": 0.0}

    cells = [{"a": a, "seed": s} for a in (1, 2) for s in (0, 1)]
    with pytest.raises(KeyboardInterrupt):
        SweepRunner(tmp_path / "run", progress=False).run(cells, fn)
    rows = SweepRunner(tmp_path / "run", progress=False).run(cells, fn)
    # finished cells ran once; the interrupted one ran again, then the rest
    assert calls == [(1, 0), (1, 1), (2, 0), (2, 0), (2, 1)]
    assert [(r["a"], r["seed"], r["score"]) for r in rows] == [(1, 0, 10.0), (1, 1, 11.0), (2, 0, 20.0), (2, 1, 21.0)]

    SweepRunner(tmp_path / "fresh", progress=False).run(cells, fn)
    assert (tmp_path / "fresh" / "results.csv").read_text() == (tmp_path / "run" / "results.csv").read_text()
    with open(tmp_path / "run" / "results.csv") as f:
        assert list(csv.DictReader(f))[3] == {"a": "2", "seed": "1", "score": "21.0", "seconds": "0.0"}


def test_settings_key_the_cells(tmp_path):
    """Same settings: the finished cells are reused; other settings: new cells beside them, and the
    rows (and results.csv) hold only the current settings' cells."""
    calls = []

    def fn(cell, d):
        calls.append(cell["a"])
        return {"score": cell["a"] * 10.0, "seconds": 0.0}

    cells = [{"a": 1}, {"a": 2}]
    SweepRunner(tmp_path, progress=False, settings={"steps": 10}).run(cells, fn)
    SweepRunner(tmp_path, progress=False, settings={"steps": 10}).run(cells, fn)
    assert calls == [1, 2]
    rows = SweepRunner(tmp_path, progress=False, settings={"steps": 20}).run(cells[:1], fn)
    assert calls == [1, 2, 1] and [r["a"] for r in rows] == [1]
    with open(tmp_path / "results.csv") as f:
        assert [r["a"] for r in csv.DictReader(f)] == ["1"]
    a10 = SweepRunner(tmp_path, settings={"steps": 10}).cell_dir(cells[0])
    a20 = SweepRunner(tmp_path, settings={"steps": 20}).cell_dir(cells[0])
    assert a10 != a20 and a10.name.startswith("a=1-") and len(list((tmp_path / "cells").iterdir())) == 3
    assert json.loads((a20 / "settings.json").read_text()) == {"cell": {"a": 1}, "settings": {"steps": 20}}
    # the key is the settings' values, not their order, and 1 and 1.0 are different settings
    assert SweepRunner(tmp_path, settings={"x": 1, "y": 2}).cell_dir(cells[0]) == \
        SweepRunner(tmp_path, settings={"y": 2, "x": 1}).cell_dir(cells[0])
    assert settings_key({"x": 1}) != settings_key({"x": 1.0}) != settings_key({"x": 2})


def test_aggregate_matches_statistics():
    rows = [{"g": "x", "seed": s, "m": v} for s, v in enumerate([1.0, 2.0, 4.0])] + [{"g": "y", "seed": 0, "m": 3.0}]
    agg = {r["g"]: r for r in aggregate(rows, by=["g"], metrics=["m"])}
    assert agg["x"]["m_mean"] == pytest.approx(statistics.fmean([1, 2, 4]))
    assert agg["x"]["m_std"] == pytest.approx(statistics.stdev([1, 2, 4]))
    assert agg["y"]["n"] == 1 and agg["y"]["m_std"] == 0.0
    table = markdown_table(list(agg.values()))
    assert "| x | 3 | 2.333 ± 1.5 |" in table and table.count("\n") == 4


def test_parse_list_errors_name_the_option():
    assert parse_list("0,0.1, 0.5", float, "--c-sigma") == [0.0, 0.1, 0.5]
    with pytest.raises(ValueError, match="--c-sigma"):
        parse_list("0,abc", float, "--c-sigma")
    with pytest.raises(ValueError, match="--c-sigma: empty item"):
        parse_list("0,,1", float, "--c-sigma")

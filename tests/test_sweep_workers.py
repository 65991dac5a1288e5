"""Cells in parallel (``SweepRunner(workers=..., launcher=...)``): the same results.csv as a serial
run, finished cells kept across a Ctrl-C or a SIGTERM, a worker's error raised here with the cell's
id, submitit's local mode, and ``compare discrete --workers 2`` equal to ``--workers 1``."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from latentar.sweeps.runner import SweepRunner, add_launch_args, cell_id, launch_options

ROOT = Path(__file__).resolve().parents[1]
CELLS = [{"a": a, "seed": s} for a in (1, 2) for s in (0, 1, 2)]


def toy_cell(cell, cell_dir):
    """A seeded result (a tiny torch computation), the worker's thread count, a marker of each run."""
    with open(cell_dir / "runs.txt", "a") as f:
        f.write("run\n")
    g = torch.Generator().manual_seed(cell["seed"])
    x = torch.randn(64, 64, generator=g) * cell["a"]
    if cell.get("sleep"):
        time.sleep(cell["sleep"])
    return {"score": float((x @ x.T).tanh().sum()), "threads": torch.get_num_threads(), "seconds": 0.0}


def failing_cell(cell, cell_dir):
    if cell["a"] == 2:
        raise ValueError(f"bad value a={cell['a']}")
    return toy_cell(cell, cell_dir)


def slow_cell(cell, cell_dir):
    """The first cell finishes at once; the others take long (so an interrupt finds them running)."""
    out = toy_cell(cell, cell_dir)
    if (cell["a"], cell["seed"]) != (1, 0):
        time.sleep(30)
    return out


def _runs(out):
    return {d.name.split("-")[0]: len((d / "runs.txt").read_text().split()) for d in (out / "cells").iterdir()
            if (d / "runs.txt").exists()}


def _csv(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_workers_give_the_serial_results(tmp_path):
    serial = SweepRunner(tmp_path / "serial", progress=False).run(CELLS, toy_cell)
    par = SweepRunner(tmp_path / "par", progress=False, workers=2).run(CELLS, toy_cell)
    assert [r["score"] for r in par] == [r["score"] for r in serial]           # rows in cell order
    s, p = _csv(tmp_path / "serial"), _csv(tmp_path / "par")
    assert [{k: v for k, v in r.items() if k != "threads"} for r in p] == \
        [{k: v for k, v in r.items() if k != "threads"} for r in s]
    assert {r["threads"] for r in p} == {"1"}                                  # one torch thread per worker
    # a rerun with workers finds every cell finished
    SweepRunner(tmp_path / "par", progress=False, workers=2).run(CELLS, toy_cell)
    assert set(_runs(tmp_path / "par").values()) == {1}


def test_groups_run_in_one_worker_in_order(tmp_path):
    rows = SweepRunner(tmp_path, progress=False, workers=2).run(CELLS, toy_cell, group=lambda c: c["a"])
    assert [(r["a"], r["seed"]) for r in rows] == [(c["a"], c["seed"]) for c in CELLS]


def test_ctrl_c_keeps_finished_cells_and_a_rerun_resumes(tmp_path, monkeypatch):
    """KeyboardInterrupt in the main process once the first cell is finished: the workers stop
    promptly, the finished cell is kept (result.json, results.csv) and a rerun runs only the rest."""
    import latentar.sweeps.runner as runner

    real = runner.write_table

    interrupted = []

    def interrupt_after_first(path, rows):
        real(path, rows)
        if rows:
            interrupted.append(time.monotonic())
            raise KeyboardInterrupt
    monkeypatch.setattr(runner, "write_table", interrupt_after_first)
    cells = CELLS[:4]
    with pytest.raises(KeyboardInterrupt):
        SweepRunner(tmp_path, progress=False, workers=2).run(cells, slow_cell)
    assert time.monotonic() - interrupted[0] < 15     # the sleeping worker was stopped, not waited for
    monkeypatch.setattr(runner, "write_table", real)
    assert [r["seed"] for r in _csv(tmp_path)] == ["0"]
    rows = SweepRunner(tmp_path, progress=False, workers=2).run(cells, toy_cell)
    runs = _runs(tmp_path)
    assert runs[cell_id(cells[0])] == 1               # the finished cell did not run again
    assert all(runs[cell_id(c)] in (1, 2) for c in cells[1:])
    assert [r["seed"] for r in _csv(tmp_path)] == ["0", "1", "2", "0"] and len(rows) == 4


SIGTERM_SCRIPT = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
from latentar.sweeps.runner import SweepRunner
from test_sweep_workers import CELLS, slow_cell
SweepRunner({out!r}, progress=False, workers=2).run(CELLS[:4], slow_cell)
"""


def test_sigterm_stops_the_workers_and_a_rerun_skips_finished_cells(tmp_path):
    out = tmp_path / "run"
    script = SIGTERM_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), out=str(out))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None and not (out / "results.csv").exists():
        time.sleep(0.2)
    assert (out / "results.csv").exists(), p.stderr.read() if p.poll() is not None else "no cell finished"
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert time.monotonic() - t0 < 20 and p.returncode != 0
    assert "KeyboardInterrupt" in err                  # SIGTERM became an interrupt: a clean stop
    assert [r["seed"] for r in _csv(out)] == ["0"]
    SweepRunner(out, progress=False, workers=2).run(CELLS[:4], toy_cell)
    assert _runs(out)[cell_id(CELLS[0])] == 1
    assert len(_csv(out)) == 4


def test_a_worker_error_is_raised_with_the_cell_id(tmp_path):
    with pytest.raises(ValueError, match="bad value a=2") as e:
        SweepRunner(tmp_path, progress=False, workers=2).run(CELLS, failing_cell)
    assert any("a=2_seed=" in n for n in getattr(e.value, "__notes__", []))
    # the cells that did finish are kept
    assert all(json.loads((d / "result.json").read_text())["score"]
               for d in (tmp_path / "cells").iterdir() if (d / "result.json").exists())


def test_an_unpicklable_cell_function_is_a_clear_error(tmp_path):
    with pytest.raises(TypeError, match="picklable"):
        SweepRunner(tmp_path, progress=False, workers=2).run(CELLS, lambda c, d: {"x": 1})


def test_submitit_local_mode_gives_the_same_results(tmp_path, monkeypatch):
    """Two jobs on submitit's local cluster (processes that import the test module by PYTHONPATH);
    a failing cell's error through submitit's in-process debug cluster."""
    pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    cells = CELLS[:2]
    serial = SweepRunner(tmp_path / "serial", progress=False).run(cells, toy_cell)
    sub = SweepRunner(tmp_path / "sub", progress=False, workers=2, launcher="submitit",
                      submitit={"folder": tmp_path / "jobs", "cluster": "local", "timeout_min": 5}).run(cells, toy_cell)
    assert [r["score"] for r in sub] == [r["score"] for r in serial] and {r["threads"] for r in sub} == {1}
    assert [r["score"] for r in _csv(tmp_path / "sub")] == [r["score"] for r in _csv(tmp_path / "serial")]
    with pytest.raises(ValueError, match="bad value a=2") as e:
        SweepRunner(tmp_path / "debug", progress=False, launcher="submitit",
                    submitit={"folder": tmp_path / "jobs2", "cluster": "debug"}).run(CELLS[3:4], failing_cell)
    assert any("a=2_seed=0" in n for n in e.value.__notes__)


def test_launch_options_validate_and_default():
    import argparse
    from latentar.cliargs import ArgumentParser, UsageError

    p = add_launch_args(ArgumentParser())
    assert launch_options(p.parse_args([])) == {"workers": None, "launcher": "local", "submitit": {},
                                                "verbose": False, "wandb": None}
    assert launch_options(p.parse_args(["--workers", "3"]))["workers"] == 3
    assert launch_options(p.parse_args(["--launcher", "submitit", "--slurm-time", "30", "--slurm-partition", "gpu"])) \
        == {"workers": None, "launcher": "submitit", "submitit": {"timeout_min": 30, "slurm_partition": "gpu"},
            "verbose": False, "wandb": None}
    with pytest.raises(UsageError, match="--workers must be an integer >= 1"):
        launch_options(p.parse_args(["--workers", "0"]))
    with pytest.raises(UsageError, match="need --launcher submitit"):
        launch_options(p.parse_args(["--slurm-time", "30"]))
    assert isinstance(p, argparse.ArgumentParser)


def test_compare_discrete_workers_2_equals_workers_1(tmp_path):
    from latentar import cli

    argv = ["compare", "discrete", "--preset", "smoke", "--len", "2", "--strategies", "sft,ss", "--steps", "6",
            "--num-train", "64", "--num-test", "8", "--no-progress", "--device", "cpu"]
    assert cli.main(argv + ["--workers", "1", "--out", str(tmp_path / "w1")]) == 0
    assert cli.main(argv + ["--workers", "2", "--out", str(tmp_path / "w2")]) == 0
    timing = ("seconds", "train_seconds")
    w1, w2 = _csv(tmp_path / "w1"), _csv(tmp_path / "w2")
    assert len(w1) == 2
    assert [{k: v for k, v in r.items() if k not in timing} for r in w2] == \
        [{k: v for k, v in r.items() if k not in timing} for r in w1]


def test_softprompt_bench_workers_2_equals_workers_1(tmp_path):
    """The frozen LM travels to the worker processes with each cell; the fits are the serial ones."""
    from latentar import cli

    argv = ["softprompt", "bench", "--model", "charlm", "--charlm-preset", "test", "--lengths", "8", "--targets", "2",
            "--max-steps", "10", "--objectives", "ce,ce+ul", "--n-virtual", "4", "--quiet", "--device", "cpu"]
    assert cli.main(argv + ["--workers", "1", "--out", str(tmp_path / "w1")]) == 0
    assert cli.main(argv + ["--workers", "2", "--out", str(tmp_path / "w2")]) == 0
    w1, w2 = _csv(tmp_path / "w1"), _csv(tmp_path / "w2")
    assert len(w1) == 4
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in w2] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in w1]

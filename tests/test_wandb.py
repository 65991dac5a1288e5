"""--wandb: each cell run now is one Weights & Biases run with the Trainer's scalars and the result row;
wandb is imported only when asked, and its absence is a one-line usage error. (wandb is not a
dependency: a fake module stands in for it.)"""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from latentar import cli
from latentar.cliargs import ArgumentParser, UsageError
from latentar.sweeps.runner import SweepRunner, add_launch_args, cell_id, launch_options
from latentar.train import Trainer

ROOT = Path(__file__).parents[1]
MISSING = "--wandb needs the wandb package: pip install wandb"


class Line(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(3, 1)

    def training_step(self, batch):
        (x,) = batch
        return self.w(x).pow(2).mean(), {"w_norm": self.w.weight.norm()}


def train_cell(cell, d):
    torch.manual_seed(cell["k"])
    fit = Trainer(max_steps=6, batch_size=8, device="cpu", log_every=2, handle_signals=False,
                  out_dir=str(d / "train")).fit(Line(), TensorDataset(torch.randn(32, 3)))
    if cell["k"] == 9:
        raise RuntimeError("cell 9 fails")
    return {"score": float(cell["k"]), "train_loss": fit["loss"], "label": "text is not a scalar"}


class FakeRun:
    def __init__(self, calls, **kw):
        self.calls = calls
        calls.append(("init", kw))

    def define_metric(self, name, step_metric=None):
        self.calls.append(("define_metric", name, step_metric))

    def log(self, values, **kw):
        self.calls.append(("log", dict(values)))

    def finish(self, exit_code=None):
        self.calls.append(("finish", exit_code))


@pytest.fixture
def fake_wandb(monkeypatch):
    calls = []
    mod = types.ModuleType("wandb")
    mod.init = lambda **kw: FakeRun(calls, **kw)
    monkeypatch.setitem(sys.modules, "wandb", mod)
    return calls


def parse(*argv):
    return launch_options(add_launch_args(ArgumentParser()).parse_args(list(argv)))


def test_each_cell_run_now_is_one_wandb_run_with_its_scalars(tmp_path, fake_wandb):
    cells = [{"k": 0}, {"k": 1}, {"k": 2}]
    out = tmp_path / "my-sweep"
    SweepRunner(out, progress=False, settings={"steps": 6}).run(cells[:1], train_cell)  # cached, not logged
    opts = parse("--wandb", "--wandb-project", "proj")
    assert opts["wandb"] == {"project": "proj"}
    SweepRunner(out, progress=False, settings={"steps": 6}, **{**opts, "workers": 1}).run(cells, train_cell)

    inits = [c[1] for c in fake_wandb if c[0] == "init"]
    assert [i["name"] for i in inits] == [cell_id(c) for c in cells[1:]]
    for i, cell in zip(inits, cells[1:]):
        assert i["project"] == "proj" and i["group"] == "my-sweep" and i["dir"] == str(out.resolve())
        assert i["config"] == {"steps": 6, **cell}
    per_run = []  # the calls between one init and its finish
    for c in fake_wandb:
        if c[0] == "init":
            per_run.append([])
        else:
            per_run[-1].append(c)
    for calls in per_run:
        logs = [c[1] for c in calls if c[0] == "log"]
        assert ("define_metric", "Line/*", "Line/step") in calls
        train = [entry for entry in logs if "Line/loss" in entry]
        assert [entry["Line/step"] for entry in train] == [2, 4, 6]
        assert {"Line/lr", "Line/samples_per_s", "Line/w_norm", "Line/grad_norm"} <= set(train[0])
        result = logs[-1]
        assert set(result) == {"result/score", "result/train_loss", "result/seconds"}  # no strings
        assert calls[-1] == ("finish", None)


def test_a_failing_cell_finishes_its_run_as_failed(tmp_path, fake_wandb):
    with pytest.raises(RuntimeError, match="cell 9 fails"):
        SweepRunner(tmp_path, progress=False, wandb=True).run([{"k": 9}], train_cell)
    assert fake_wandb[0][1]["project"] == os.environ.get("WANDB_PROJECT", "latentar")
    assert fake_wandb[-1] == ("finish", 1)
    assert not any(c[0] == "log" and any(k.startswith("result/") for k in c[1]) for c in fake_wandb)


def test_without_wandb_it_is_never_imported(tmp_path, monkeypatch):
    """A wandb that could be imported (a stand-in on sys.path) stays unimported by a run without --wandb."""
    (tmp_path / "fake" / "wandb").mkdir(parents=True)
    (tmp_path / "fake" / "wandb" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    opts = parse()
    assert opts["wandb"] is None
    SweepRunner(tmp_path / "run", progress=True, **{**opts, "workers": 1}).run([{"k": 0}], train_cell)
    assert "wandb" not in sys.modules


def test_missing_wandb_is_a_one_line_usage_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(UsageError) as e:
        parse("--wandb")
    assert str(e.value) == MISSING
    with pytest.raises(UsageError, match="--wandb-project needs --wandb"):
        parse("--wandb-project", "x")
    with pytest.raises(ImportError, match="pip install wandb"):
        SweepRunner("unused-dir-not-created", wandb=True)


@pytest.mark.parametrize("command", [["sweep", "variance"], ["sweep", "ip"], ["compare", "discrete"],
                                     ["compare", "text"], ["softprompt", "bench"]])
def test_every_sweep_command_has_the_options(command, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)
    code = cli.main([*command, "--out", str(tmp_path / "out"), "--device", "cpu", "--verbose", "--wandb"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().endswith(MISSING) and len(err.strip().splitlines()) == 1, err


FAKE_MODULE = '''
import json, os


class Run:
    def __init__(self, **kw):
        self.kw = kw
        self.write("init", name=kw["name"], group=kw["group"], config=kw["config"])

    def write(self, what, **kw):
        with open(os.environ["FAKE_WANDB_LOG"], "a") as f:
            f.write(json.dumps({"what": what, "pid": os.getpid(), **kw}) + "\\n")

    def log(self, values):
        self.write("log", values=values, name=self.kw["name"])

    def finish(self, exit_code=None):
        self.write("finish", name=self.kw["name"], exit_code=exit_code)


def init(**kw):
    return Run(**kw)
'''

SCRIPT = '''
import sys
from pathlib import Path
from latentar.sweeps.runner import SweepRunner
import test_wandb

if __name__ == "__main__":
    print("main pid", __import__("os").getpid())
    SweepRunner(Path(sys.argv[1]), progress=False, workers=2, wandb={"project": "p"}).run(
        [{"k": 0}, {"k": 1}], test_wandb.train_cell)
'''


def test_worker_processes_log_their_cells(tmp_path):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "wandb.py").write_text(FAKE_MODULE)
    (tmp_path / "script.py").write_text(SCRIPT)
    log = tmp_path / "wandb.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FAKE_WANDB_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), str(ROOT / "tests"), str(ROOT)])}
    p = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(tmp_path / "out")], env=env,
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(r["name"] for r in records if r["what"] == "init") == ["k=0", "k=1"]
    main_pid = int(p.stdout.split("main pid")[1].split()[0])
    assert all(r["pid"] != main_pid for r in records)  # logged by the workers
    for name in ("k=0", "k=1"):
        mine = [r for r in records if r["name"] == name]
        assert any("Line/loss" in r.get("values", {}) for r in mine)
        assert any("result/score" in r.get("values", {}) for r in mine)
        assert mine[-1] == {**mine[-1], "what": "finish", "exit_code": None}

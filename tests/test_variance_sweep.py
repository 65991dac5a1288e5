"""`latentar sweep variance` end to end on the smoke preset, its resumption, and its option errors."""
import csv
import shutil

import pytest

from latentar import cli
from latentar.sweeps import variance

SMOKE = ["sweep", "variance", "--preset", "smoke", "--quiet", "--device", "cpu"]
COLUMNS = {"c_sigma", "generator", "strategy", "seed", "train_loss", "recon_psnr", "recon_fd",
           "fd_cfg1", "fd_cfg3", "class_acc_cfg1", "class_acc_cfg3", "seconds"}


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    assert cli.main(SMOKE + ["--out", str(out)]) == 0
    return out


def test_smoke_preset_end_to_end(smoke_run):
    rows = read_rows(smoke_run / "results.csv")
    # smoke: C_sigma {0, 0.5} x generators {gmm, joint} x 1 seed, plus scheduled sampling on gmm at 0.5
    assert [(r["c_sigma"], r["generator"], r["strategy"]) for r in rows] == [
        ("0.0", "gmm", "tf"), ("0.0", "joint", "tf"), ("0.5", "gmm", "tf"), ("0.5", "joint", "tf"), ("0.5", "gmm", "ss")]
    assert COLUMNS <= set(rows[0]), COLUMNS - set(rows[0])
    for r in rows:
        assert float(r["fd_cfg1"]) >= 0 and float(r["fd_cfg3"]) >= 0
        if r["generator"] != "joint":
            assert float(r["exposure_fd_own_mean"]) >= 0 and float(r["exposure_fd_gt_mean"]) >= 0
    for name in ("results.md", "fd_vs_c_sigma.png", "reconstruction_ceiling.png", "decoder_tolerance.png",
                 "exposure_curves.png"):
        assert (smoke_run / name).stat().st_size > 0, name
    assert "± " in (smoke_run / "results.md").read_text()


def test_interrupted_sweep_resumes_to_identical_csv(smoke_run, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    shutil.copytree(smoke_run / "tokenizers", out / "tokenizers")  # cached tokenizers are reused, as in a rerun
    calls = []
    original = variance.VarianceSweep.run_cell

    def killed_after_first(self, cell, cell_dir):
        if len(calls) == 1:
            raise KeyboardInterrupt  # killed after the first finished cell
        calls.append(cell)
        return original(self, cell, cell_dir)

    monkeypatch.setattr(variance.VarianceSweep, "run_cell", killed_after_first)
    assert cli.main(SMOKE + ["--out", str(out)]) == 130  # the CLI reports the interrupt, exit 130
    monkeypatch.setattr(variance.VarianceSweep, "run_cell", original)
    assert len(read_rows(out / "results.csv")) == 1
    assert cli.main(SMOKE + ["--out", str(out)]) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(read_rows(out / "results.csv")) == strip(read_rows(smoke_run / "results.csv"))


@pytest.mark.parametrize("args, message", [
    (["--c-sigma", "0,-0.5"], ">= 0"),
    (["--c-sigma", "0,0"], "--c-sigma: 0.0 is given twice"),
    (["--generators", "gmm,transformer"], "unknown generator 'transformer'"),
    (["--generators", ""], "--generators: empty item"),
    (["--strategies", "tf,dagger"], "unknown strategy 'dagger'"),
    (["--data", "wavfolder:/no/such/dir"], "does not exist"),
    (["--seeds", "0"], "--seeds"),
    (["--steps", "0"], "--steps must be an integer >= 1, got 0"),
    (["--tok-steps", "0"], "--tok-steps must be an integer >= 1, got 0"),
    (["--cfg", "nan"], "--cfg must be a finite number"),
    (["--strategy-c-sigma", "nan"], "--strategy-c-sigma must be a finite number"),
    (["--device", "bogus"], "--device 'bogus'"),
])
def test_bad_options_get_clear_errors(args, message, capsys, tmp_path):
    assert cli.main(["sweep", "variance", "--preset", "smoke", "--out", str(tmp_path / "x")] + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentar sweep variance: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()  # nothing started


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["sweep", "variance", "--help"])
    text = capsys.readouterr().out
    for opt in ("--c-sigma", "--generators", "--strategies", "--strategy-c-sigma", "--seeds", "--cfg", "--data",
                "--preset", "--out", "--device"):
        assert opt in text
    assert "other settings" in text  # --out says what a rerun with other settings does

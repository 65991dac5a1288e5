"""A rerun never returns results of other settings: every sweep command, rerun into the same ``--out``
with one training setting changed, computes new cells (and shows only them), while a rerun with the
first settings returns the first results again without training anything."""
import csv
import json

import pytest

from latentar import cli
from latentar.softprompt import bench
from latentar.sweeps import discrete, variance
from latentar.train.trainer import Trainer


def _rows(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def fits(monkeypatch):
    """Counts training runs: Trainer.fit calls and soft-prompt fits."""
    calls = []
    fit, sp_fit, sp_fits = Trainer.fit, bench.fit_soft_prompt, bench.fit_soft_prompts
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: calls.append("trainer") or fit(self, *a, **k))
    monkeypatch.setattr(bench, "fit_soft_prompt", lambda *a, **k: calls.append("prompt") or sp_fit(*a, **k))
    monkeypatch.setattr(bench, "fit_soft_prompts", lambda *a, **k: calls.append("prompts") or sp_fits(*a, **k))
    return calls


def check_rerun_keys(fits, out, first, changed, metric, new_fits=1):
    """``first`` into ``out``, then ``changed`` (one setting differs), then ``first`` again."""
    assert cli.main(first + ["--out", str(out)]) == 0
    rows_a, csv_a = _rows(out), (out / "results.csv").read_text()
    n_cells = len(list((out / "cells").iterdir()))
    assert n_cells == len(rows_a)

    before = len(fits)
    assert cli.main(changed + ["--out", str(out)]) == 0
    rows_b = _rows(out)
    assert len(fits) - before == new_fits                    # the new settings' cells were trained
    assert len(rows_b) == len(rows_a)                         # only the current settings' rows
    assert [r[metric] for r in rows_b] != [r[metric] for r in rows_a]
    cells = sorted((out / "cells").iterdir())
    assert len(cells) == 2 * n_cells                          # new cells beside the old ones
    assert all((d / "settings.json").is_file() for d in cells)

    before = len(fits)
    assert cli.main(first + ["--out", str(out)]) == 0
    assert len(fits) == before                                # nothing retrained
    assert (out / "results.csv").read_text() == csv_a        # the first settings' results, as they were
    return rows_a, rows_b


VARIANCE = ["sweep", "variance", "--preset", "smoke", "--c-sigma", "0", "--generators", "gmm", "--strategies", "tf",
            "--cfg", "1", "--tok-steps", "20", "--quiet", "--device", "cpu"]


def test_variance_sweep_keys_cells_by_steps(fits, tmp_path):
    out = tmp_path / "sweep"
    check_rerun_keys(fits, out, VARIANCE + ["--steps", "20"], VARIANCE + ["--steps", "30"], "train_loss")
    # the generator's steps do not change the tokenizer: one tokenizer served both settings
    assert len([d for d in (out / "tokenizers").iterdir() if not d.name.startswith(".")]) == 1
    steps = sorted(json.loads((d / "settings.json").read_text())["settings"]["budget"]["gen_steps"]
                   for d in (out / "cells").iterdir())
    assert steps == [20, 30]
    assert "cfg1" in (out / "results.md").read_text()


def _sweep(argv, out):
    args = variance.build_parser().parse_args(argv[2:] + ["--out", out])   # argv without "sweep variance"
    return variance.VarianceSweep(variance.config_from_args(args))


def test_tokenizer_key_changes_with_what_changes_the_tokenizer(tmp_path):
    out = str(tmp_path / "s")
    c0, c5 = ("sigma_vae", 0.0, None), ("sigma_vae", 0.5, None)
    base = _sweep(VARIANCE + ["--steps", "20"], out)
    assert base.tokenizer_dir(c0) == _sweep(VARIANCE + ["--steps", "30"], out).tokenizer_dir(c0)
    other = _sweep(VARIANCE + ["--tok-steps", "21"], out)   # the last --tok-steps counts
    assert base.tokenizer_dir(c0) != other.tokenizer_dir(c0)
    assert base.tokenizer_dir(c0) != base.tokenizer_dir(c5)
    assert base.tokenizer_dir(c0) != _sweep(VARIANCE + ["--preset", "quick"], out).tokenizer_dir(c0)  # batch size
    assert base.tokenizer_dir(c0).name.startswith("c_sigma=0-")
    # the VAE's beta and the family key the tokenizer too; the AE has one
    vae = [base.tokenizer_dir(("vae", None, b)) for b in (1e-3, 1e-2)] + [base.tokenizer_dir(("ae", None, None))]
    assert len({*vae, base.tokenizer_dir(c0)}) == 4 and vae[0].name.startswith("vae_beta=0.001-")
    # and the cells' key follows the tokenizer's: other tokenizer settings, other cells
    cell = base.cells()[0]
    assert base.runner.cell_dir(cell) != other.runner.cell_dir(cell)
    # the shared sampler setting changes every cell (not the tokenizers)
    ddim = _sweep(VARIANCE + ["--steps", "20", "--sampler", "ddim"], out)
    assert ddim.runner.cell_dir(cell) != base.runner.cell_dir(cell)
    assert ddim.tokenizer_dir(c0) == base.tokenizer_dir(c0)
    # adding a tokenizer family adds cells, it does not re-key the SigmaVAE's
    both = _sweep(VARIANCE + ["--steps", "20", "--tokenizer", "sigma_vae,vae,ae", "--beta", "1e-3,1e-2"], out)
    assert both.runner.cell_dir(cell) == base.runner.cell_dir(cell)
    assert [(c["tokenizer"], c["c_sigma"], c["beta"]) for c in both.cells()] == [
        ("sigma_vae", 0.0, None), ("vae", None, 1e-3), ("vae", None, 1e-2), ("ae", None, None)]


def test_ip_sweep_keys_models_and_cells_by_train_steps(fits, tmp_path):
    ip = ["sweep", "ip", "--preset", "smoke", "--gamma", "0", "--steps", "2", "--samples", "32", "--quiet",
          "--device", "cpu"]
    out = tmp_path / "ip"
    check_rerun_keys(fits, out, ip + ["--train-steps", "3"], ip + ["--train-steps", "4"], "train_loss")
    assert len(list((out / "models").iterdir())) == 2
    # a different number of scored samples rescores with the same model: no training
    before = len(fits)
    assert cli.main(ip + ["--train-steps", "3", "--samples", "40", "--out", str(out)]) == 0
    assert len(fits) - before == 1 and len(list((out / "models").iterdir())) == 2  # fit() resumed, finished at once
    assert len(list((out / "cells").iterdir())) == 3


def test_compare_discrete_keys_cells_by_steps(fits, tmp_path):
    cmd = ["compare", "discrete", "--preset", "smoke", "--len", "2", "--strategies", "sft", "--num-train", "64",
           "--num-test", "8", "--no-progress", "--device", "cpu"]
    check_rerun_keys(fits, tmp_path / "cmp", cmd + ["--steps", "3"], cmd + ["--steps", "5"], "train_loss")


def test_softprompt_bench_keys_cells_by_max_steps(fits, tmp_path):
    cmd = ["softprompt", "bench", "--model", "charlm", "--charlm-preset", "test", "--lengths", "8", "--targets", "1",
           "--objectives", "ce", "--n-virtual", "2", "--quiet", "--device", "cpu"]
    out = tmp_path / "sp"
    check_rerun_keys(fits, out, cmd + ["--max-steps", "3"], cmd + ["--max-steps", "6"], "tf_loss")
    assert json.loads((out / "bench.json").read_text())["max_steps"] == 3   # the latest run's settings


def test_compare_discrete_key_omits_a_later_setting_only_at_its_old_behaviour():
    """rl_reward arrived after cells were cached: at "prefix" (what those cells ran) the key is the
    old one, and "bleu" keys other cells."""
    from dataclasses import asdict
    cfg = discrete.CompareConfig.from_preset("quick")
    old = {k: v for k, v in asdict(cfg).items() if k not in discrete.NOT_SETTINGS and k != "rl_reward"}
    assert discrete.cell_settings(cfg) == old
    bleu = discrete.cell_settings(discrete.CompareConfig.from_preset("quick", rl_reward="bleu"))
    assert bleu == {**old, "rl_reward": "bleu"}

"""`latentar sweep variance` end to end on the smoke preset, its resumption, and its option errors."""
import csv
import shutil

import pytest
import torch

from latentar import cli
from latentar.metrics.domains import make_domain
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
    # FD on the scale of two references scored by the same instrument at the same sample count:
    # real train digits (the floor of a perfect generator) and N(0, 1) noise images (no generator).
    domain = make_domain("digits")
    g = torch.Generator().manual_seed(0)
    n = variance.PRESETS["smoke"]["num_samples"]
    floor = domain.score(domain.train_x[torch.randperm(len(domain.train_x), generator=g)[:n]], None)["fd"]
    noise = domain.score(torch.randn(n, *domain.train_x.shape[1:], generator=g), None)["fd"]
    for r in rows:
        assert (r["sampler"], int(r["sampling_steps"]), float(r["temperature"])) == ("ddpm", 10, 1.0)
        for key in ("fd_cfg1", "fd_cfg3"):
            # the smoke budget (120 steps) leaves JointDiffusion short of competence: about noise level
            assert floor < float(r[key]) < (noise if r["generator"] != "joint" else 1.25 * noise), (r, key, floor, noise)
        assert 0 < float(r["recon_fd"]) < float(r["fd_cfg1"])  # the tokenizer's ceiling is below its samples
        if r["generator"] != "joint":
            assert 0 < float(r["exposure_fd_gt_mean"]) < float(r["exposure_fd_own_mean"]) * 5 < 1e3
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

    # the smoke preset's two GMM teacher-forcing cells (its tokenizers, CFG 1 only)
    argv = SMOKE + ["--generators", "gmm", "--strategies", "tf", "--cfg", "1", "--workers", "1", "--out", str(out)]
    monkeypatch.setattr(variance.VarianceSweep, "run_cell", killed_after_first)
    assert cli.main(argv) == 130  # the CLI reports the interrupt, exit 130
    monkeypatch.setattr(variance.VarianceSweep, "run_cell", original)
    assert len(read_rows(out / "results.csv")) == 1
    assert cli.main(argv) == 0
    resumed = read_rows(out / "results.csv")
    # the same cells of the uninterrupted smoke run (whose extra CFG scale is sampled after these)
    straight = [r for r in read_rows(smoke_run / "results.csv") if (r["generator"], r["strategy"]) == ("gmm", "tf")]
    assert [r["c_sigma"] for r in resumed] == [r["c_sigma"] for r in straight] == ["0.0", "0.5"]
    for a, b in zip(resumed, straight):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: b[k] for k in a if k != "seconds"}


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
    (["--tokenizer", "sigma_vae,vqvae"], "unknown tokenizer 'vqvae'"),
    (["--beta", "1e-3,-1"], "--beta must be"),
    (["--sampler", "euler"], "invalid choice: 'euler'"),
    (["--sampling-steps", "0"], "--sampling-steps must be an integer >= 1, got 0"),
    (["--temperature", "inf"], "--temperature must be a finite number"),
    (["--temperature", "0.9", "--sampler", "ddim"], "has no effect with sampler='ddim'"),
    (["--workers", "0"], "--workers must be an integer >= 1, got 0"),
    (["--data", "cifar"], "--data must be digits, mnist, speech or wavfolder:PATH"),
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
    for opt in ("--workers", "--launcher", "--tokenizer", "--beta", "--sampler", "--sampling-steps", "--temperature", "--c-sigma", "--generators", "--strategies", "--strategy-c-sigma", "--seeds", "--cfg", "--data",
                "--preset", "--out", "--device"):
        assert opt in text
    assert "other settings" in text  # --out says what a rerun with other settings does


def test_presets_resolve_per_data_and_the_command_line_overrides_them(tmp_path):
    """The standard preset's speech budget (no classes: CFG 1 only) comes from its ``per_data`` entry, a
    wav folder counts as speech, and options given on the command line still win over both."""
    from latentar.sweeps.variance import build_parser, config_from_args
    base = ["--preset", "standard", "--out", str(tmp_path / "o")]

    def cfg(*args):
        return config_from_args(build_parser().parse_args(base + list(args)))
    mnist, speech = cfg("--data", "mnist"), cfg("--data", "speech")
    std = variance.PRESETS["standard"]
    assert mnist.cfg == std["cfg"] and mnist.budget["gen_steps"] == std["gen_steps"]
    assert mnist.generators == std["generators"] and "per_data" not in mnist.budget
    sp = std["per_data"]["speech"]
    assert speech.cfg == [1.0] and speech.generators == sp["generators"] != mnist.generators
    assert (speech.budget["gen_steps"], speech.budget["batch_size"]) == (sp["gen_steps"], sp["batch_size"]) != \
        (mnist.budget["gen_steps"], mnist.budget["batch_size"])
    (tmp_path / "wavs").mkdir()
    assert cfg("--data", f"wavfolder:{tmp_path / 'wavs'}").budget["gen_steps"] == sp["gen_steps"]
    over = cfg("--data", "speech", "--steps", "7", "--cfg", "1,2", "--strategies", "tf")
    assert (over.budget["gen_steps"], over.cfg, over.strategies) == (7, [1.0, 2.0], ["tf"])
    for name in variance.PRESETS:  # every preset resolves for every built-in data
        for data in ("digits", "mnist", "speech"):
            assert config_from_args(build_parser().parse_args(["--preset", name, "--data", data, "--out",
                                                               str(tmp_path / "p")])).seeds >= 1


TINY = ["sweep", "variance", "--preset", "smoke", "--quiet", "--device", "cpu", "--strategies", "tf", "--cfg", "1",
        "--tok-steps", "30", "--steps", "20"]


def test_every_diffusion_arm_is_sampled_with_the_one_sampler(tmp_path, monkeypatch):
    """The diffusion head and JointDiffusion of a cell are sampled (samples and exposure curves) by the
    same scheduler class with the same number of steps: the --sampler / --sampling-steps setting."""
    import diffusers
    seen = []
    for cls in (diffusers.DDPMScheduler, diffusers.DDIMScheduler, diffusers.DPMSolverMultistepScheduler):
        original = cls.set_timesteps

        def spy(self, num_inference_steps=None, *a, _original=original, **k):
            seen.append((type(self).__name__, num_inference_steps))
            return _original(self, num_inference_steps, *a, **k)
        monkeypatch.setattr(cls, "set_timesteps", spy)
    out = tmp_path / "s"
    assert cli.main(TINY + ["--c-sigma", "0.5", "--generators", "diffusion,joint", "--sampler", "ddim",
                            "--sampling-steps", "7", "--workers", "1", "--out", str(out)]) == 0  # spied in-process
    assert seen and set(seen) == {("DDIMScheduler", 7)}, set(seen)
    rows = read_rows(out / "results.csv")
    assert [r["generator"] for r in rows] == ["diffusion", "joint"]
    assert all((r["sampler"], r["sampling_steps"]) == ("ddim", "7") for r in rows)


def test_vae_and_ae_tokenizers_go_through_the_sweep(tmp_path):
    """--tokenizer vae,ae: GIVT's KL-weight knob and the deterministic AE beside the SigmaVAE, on one plot."""
    out = tmp_path / "s"
    assert cli.main(TINY + ["--tokenizer", "sigma_vae,vae,ae", "--c-sigma", "0.5", "--beta", "1e-3,1e-1",
                            "--generators", "gmm", "--out", str(out)]) == 0
    rows = read_rows(out / "results.csv")
    assert [(r["tokenizer"], r["c_sigma"], r["beta"]) for r in rows] == [
        ("sigma_vae", "0.5", ""), ("vae", "", "0.001"), ("vae", "", "0.1"), ("ae", "", "")]
    tokenizers = sorted(d.name.split("-")[0] for d in (out / "tokenizers").iterdir() if not d.name.startswith("."))
    assert tokenizers == ["ae", "c_sigma=0.5", "vae_beta=0.001", "vae_beta=0.1"]
    for r in rows:
        assert float(r["fd_cfg1"]) > 0 and float(r["exposure_fd_own_mean"]) > 0
    md = (out / "results.md").read_text()
    assert "| vae |" in md and "| ae |" in md
    assert (out / "fd_vs_c_sigma.png").stat().st_size > 0


def test_parallel_workers_give_the_serial_results(smoke_run, tmp_path):
    """The smoke run (default --workers: the cores, tokenizers first in parallel) against a serial
    rerun of two of its cells on its tokenizers: identical rows, timings aside."""
    out = tmp_path / "serial"
    shutil.copytree(smoke_run / "tokenizers", out / "tokenizers")
    argv = SMOKE + ["--generators", "joint", "--strategies", "tf", "--workers", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    serial = read_rows(out / "results.csv")
    parallel = [r for r in read_rows(smoke_run / "results.csv") if r["generator"] == "joint"]
    assert len(serial) == len(parallel) == 2
    for a, b in zip(serial, parallel):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: b[k] for k in a if k != "seconds"}
        assert all(b[k] == "" for k in set(b) - set(a))  # the AR arms' columns (exposure) are empty here
    md = (smoke_run / "results.md").read_text()
    assert "## Comparisons (paired over seeds)" in md and "## Verdicts on the published claims" in md
    assert "Budget rule: every arm gets the same optimizer steps" in md

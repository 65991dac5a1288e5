"""Every plot reads without the code: a title, axis labels with units, a legend where lines differ,
and a legend entry saying what the error bars / bands are (with their count). Behaviour, not
pixels: each plotting function runs on small fake data and the saved figure's matplotlib objects
are inspected (``Figure.savefig`` is wrapped to keep the figure it saves)."""
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure


@pytest.fixture
def saved(monkeypatch):
    """{file name: the Figure saved to it} for every savefig during the test."""
    figures: dict[str, Figure] = {}
    original = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        figures[Path(fname).name] = self
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def legend_texts(fig: Figure) -> list[str]:
    """Texts of every legend of the figure (axes legends and figure legends)."""
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    return [t.get_text() for lg in legends for t in lg.get_texts()]


# -- latentar.metrics.plots.save_lines (every sweep's line plots) ---------------------------------
def test_save_lines_names_its_bands_in_the_legend(saved, tmp_path):
    from latentar.metrics.plots import save_lines
    x = [1, 2, 4]
    save_lines(tmp_path / "a.png", x, {"gamma=0": ([3.0, 2.0, 1.0], [0.3, 0.2, 0.1]), "gamma=0.1": ([2.5, 1.5, 1.0], None)},
               xlabel="sampling steps", ylabel="FD", title="FD vs steps", band="mean ± std over 3 seeds")
    fig = saved["a.png"]
    assert legend_texts(fig) == ["gamma=0", "gamma=0.1", "shaded: mean ± std over 3 seeds"]
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() == "sampling steps" and ax.get_ylabel() == "FD"
    band, = ax.collections                                       # the band takes its line's colour
    assert to_hex(band.get_facecolor()[0]) == to_hex(ax.lines[0].get_color())


@pytest.mark.parametrize("std", [None, [0.0, 0.0, 0.0]])
def test_save_lines_claims_no_band_it_did_not_draw(saved, tmp_path, std):
    from latentar.metrics.plots import save_lines
    save_lines(tmp_path / "b.png", [0, 1, 2], {"one seed": ([1.0, 2.0, 3.0], std)}, xlabel="t", ylabel="y",
               band="mean ± std over 1 seed")
    assert legend_texts(saved["b.png"]) == ["one seed"]


# -- latentar.sweeps.variance: fd_vs_c_sigma, reconstruction_ceiling, decoder_tolerance, exposure_curves
GENERATORS = ("gmm", "diffusion", "joint")


@pytest.fixture
def sweep(tmp_path):
    """A VarianceSweep with fake aggregated rows, tokenizer reports and exposure curves: no training."""
    from latentar.sweeps.runner import SweepRunner
    from latentar.sweeps.variance import CELL_KEYS, SweepConfig, VarianceSweep
    sw = VarianceSweep.__new__(VarianceSweep)                   # no data domain, no tokenizers
    sw.cfg = SweepConfig(preset="quick", data="digits", out=tmp_path, c_sigma=[0, 0.5, 1], generators=list(GENERATORS),
                         strategies=["tf", "ss"], tokenizers=["sigma_vae", "vae"], beta=[1e-3, 1e-2], seeds=3,
                         cfg=[1.0, 3.0])
    sw.b, sw.out = {"num_samples": 200}, tmp_path
    sw.runner = SweepRunner(tmp_path, progress=False, settings={})
    sw.tokenizer_dir = lambda pt: tmp_path / "tokenizers" / "-".join(map(str, pt))
    rng = np.random.default_rng(0)
    points = [("sigma_vae", c, None) for c in (0, 0.5, 1)] + [("vae", None, b) for b in (1e-3, 1e-2)]
    agg, rows = [], []
    for pt in points:
        d = sw.tokenizer_dir(pt)
        d.mkdir(parents=True)
        (d / "report.json").write_text(json.dumps({"tolerance": {"metric": "psnr", "radii": [0, 0.5, 1],
                                                                 "psnr": [30.0, 27.0, 24.0]}}))
        for gen in GENERATORS:
            r = {"tokenizer": pt[0], "c_sigma": pt[1], "beta": pt[2], "generator": gen, "strategy": "tf", "n": 3,
                 "recon_fd_mean": 5 + 10 * rng.random(), "recon_psnr_mean": 25 + 8 * rng.random()}
            for c in (1, 3):
                r[f"fd_cfg{c}_mean"], r[f"fd_cfg{c}_std"] = 30 + 40 * rng.random(), 5 * rng.random()
            agg.append(r)
    for gen in ("gmm", "diffusion"):
        for strategy in ("tf", "ss"):
            row = {"tokenizer": "sigma_vae", "c_sigma": 0.5, "beta": None, "generator": gen, "strategy": strategy, "seed": 0}
            f = sw.runner.cell_dir({k: row[k] for k in CELL_KEYS}) / "exposure.json"
            f.parent.mkdir(parents=True)
            f.write_text(json.dumps({"positions": list(range(1, 16)), "fd_own": list(0.2 + 0.02 * np.arange(15)),
                                     "fd_gt": [0.2] * 14 + [None]}))
            rows.append(row)
    return sw, agg, rows


def test_reconstruction_ceiling_colours_each_axis_like_its_data_and_has_a_legend(saved, sweep):
    sw, agg, _ = sweep
    sw.plot(agg)
    fig = saved["reconstruction_ceiling.png"]
    texts = legend_texts(fig)
    assert any(t.startswith("reconstruction FD") for t in texts) and any(t.startswith("PSNR") for t in texts)
    ax, ax2 = fig.axes
    bar_color = to_hex(ax.patches[0].get_facecolor(), keep_alpha=False)
    psnr_color = to_hex(ax2.lines[0].get_color())
    assert bar_color != psnr_color
    assert to_hex(ax.yaxis.label.get_color()) == bar_color and to_hex(ax2.yaxis.label.get_color()) == psnr_color
    assert all(to_hex(t.get_color()) == bar_color for t in ax.get_yticklabels())
    assert all(to_hex(t.get_color()) == psnr_color for t in ax2.get_yticklabels())
    assert "dB" in ax2.get_ylabel() and ax.get_title() and ax.get_xlabel()


def test_fd_vs_c_sigma_says_what_its_error_bars_are(saved, sweep):
    sw, agg, _ = sweep
    sw.plot(agg)
    fig = saved["fd_vs_c_sigma.png"]
    texts = legend_texts(fig)
    assert "error bars: mean ± std over 3 seeds" in texts
    assert any("SigmaVAE" in t for t in texts) and any("VAE (top axis: beta)" in t for t in texts)
    assert fig._suptitle is not None and fig._suptitle.get_text()
    assert all(ax.get_xlabel() for ax in fig.axes)


def test_decoder_tolerance_has_units_and_a_legend(saved, sweep):
    sw, agg, _ = sweep
    sw.plot(agg)                                                # plot() draws the tolerance figure too
    fig = saved["decoder_tolerance.png"]
    ax = fig.axes[0]
    assert "(dB)" in ax.get_ylabel() and "x latent std" in ax.get_xlabel() and ax.get_title()
    assert "c_sigma=0.5" in legend_texts(fig)


def test_exposure_curves_explain_solid_and_dashed_in_the_legend(saved, sweep):
    sw, _, rows = sweep
    sw.plot_exposure(rows)
    fig = saved["exposure_curves.png"]
    texts = legend_texts(fig)
    assert "own prefix (free-running)" in texts and "ground-truth prefix" in texts
    ax = fig.axes[0]
    legend = ax.get_legend()
    styles = {t.get_text(): h.get_linestyle() for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert styles["own prefix (free-running)"] == "-" and styles["ground-truth prefix"] == "--"
    assert any("scheduled sampling" in t for t in texts)      # strategies spelled out, not "ss"
    assert "Exposure bias" in ax.get_title() and "solid" not in ax.get_title()


# -- the sweeps' save_lines callers pass what their bands are ---------------------------------------
def test_ip_sweep_plot_says_std_over_seeds(saved, tmp_path):
    from latentar.sweeps.ip import write_report
    rows = [{"sampler": "ddim", "eps_scale": 1.0, "gamma": g, "steps": s, "seed": k, "fd": 10 + g + s + k}
            for g in (0.0, 0.1) for s in (5, 10) for k in range(3)]
    write_report(tmp_path, rows, {"noise": 300.0, "data": 2.0}, {"space": "pixel", "num_samples": 64}, "sweep ip")
    fig = saved["fd_vs_steps.png"]
    assert legend_texts(fig) == ["gamma=0", "gamma=0.1", "shaded: mean ± std over 3 seeds"]


def test_discrete_exact_plot_says_ci_over_seeds(saved, tmp_path):
    from latentar.sweeps.discrete import CompareConfig, _plots, exact_metric
    cfg = CompareConfig(tasks=["running_sum"], lengths=[3, 6], strategies=["sft", "ss"], seeds=3, out=str(tmp_path))
    m = exact_metric("running_sum")
    rows = [{"task": "running_sum", "strategy": s, "len": n, "seed": k, m: 0.2 * k + 0.1 * (s == "ss")}
            for s in ("sft", "ss") for n in (3, 6) for k in range(3)]
    _plots(rows, cfg, tmp_path)
    texts = legend_texts(saved["running_sum_exact_vs_length.png"])
    assert texts == ["sft", "ss", "shaded: 95% Student-t CI over 3 seeds"]

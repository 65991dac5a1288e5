"""The verdict logic on synthetic result tables where each claim holds, fails, or is inconclusive."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from latentar.sweeps.stats import mean_ci, paired_difference
from latentar.sweeps.verdicts import FAILS, HOLDS, INCONCLUSIVE, PENDING, claim_verdicts, comparison_rows

C = [0.0, 0.25, 0.5, 1.0]


def table(fd1, fd3, joint1, ss_delta, slope_tf, slope_ss_delta, noise=0.5, seeds=3, joint_acc=0.8,
          vae=None, seed=0):
    """Rows shaped like results.csv: functions of C_sigma give the means, ``noise`` the seed spread."""
    rng = np.random.default_rng(seed)
    rows = []

    def row(gen, c, strategy, s, f1, f3, acc=0.8, slope=0.01, tok="sigma_vae", beta=None, psnr=30.0):
        rows.append({"tokenizer": tok, "c_sigma": c, "beta": beta, "generator": gen, "strategy": strategy, "seed": s,
                     "fd_cfg1": f1 + noise * rng.standard_normal(), "fd_cfg3": f3 + noise * rng.standard_normal(),
                     "class_acc_cfg3": acc, "exposure_fd_own_slope": slope + noise * 1e-3 * rng.standard_normal(),
                     "recon_psnr": psnr})
    for s in range(seeds):
        for c in C:
            row("gmm", c, "tf", s, fd1(c), fd3(c), slope=slope_tf)
            row("joint", c, "tf", s, joint1(c), joint1(c), acc=joint_acc)
            del rows[-1]["exposure_fd_own_slope"]  # the non-AR control has no exposure curve
        row("gmm", 0.5, "ss", s, fd1(0.5) + ss_delta, fd3(0.5) + ss_delta, slope=slope_tf + slope_ss_delta)
        if vae is not None:
            for b, psnr in zip((1e-4, 1e-3, 1e-2), vae["psnr"]):
                row("gmm", None, "tf", s, vae["fd"](b), vae["fd"](b), tok="vae", beta=b, psnr=psnr)
    return rows


def verdicts(rows):
    return {v["claim"]: v["verdict"] for v in claim_verdicts(rows, cfg_scales=[1.0, 3.0], strategy_c_sigma=0.5)}


def test_every_claim_holds_on_a_table_built_to_agree():
    rows = table(fd1=lambda c: 60 - 20 * c, fd3=lambda c: 40 + 60 * (c - 0.5) ** 2, joint1=lambda c: 100.0,
                 ss_delta=-5.0, slope_tf=0.02, slope_ss_delta=-0.01,
                 vae={"psnr": (30.0, 28.0, 25.0), "fd": lambda b: 50 + 5 * math.log10(1e-4 / b)})
    v = verdicts(rows)
    assert v == {
        "gmm: without CFG, AR FD falls as C_sigma grows": HOLDS,
        "JointDiffusion (non-AR): without CFG, FD stays flat in C_sigma": HOLDS,
        "gmm: with CFG 3, FD is U-shaped in C_sigma": HOLDS,
        "gmm: a larger VAE KL weight beta lowers reconstruction but improves AR sampling": HOLDS,
        "gmm: under teacher forcing, own-prefix error grows with position": HOLDS,
        "gmm: scheduled sampling lowers FD against teacher forcing at C_sigma 0.5": HOLDS,
        "gmm: scheduled sampling flattens the own-prefix drift": HOLDS,
    }


def test_every_claim_fails_on_a_table_built_to_disagree():
    rows = table(fd1=lambda c: 60 + 20 * c, fd3=lambda c: 40 - 60 * (c - 0.5) ** 2, joint1=lambda c: 100 + 30 * c,
                 ss_delta=5.0, slope_tf=-0.02, slope_ss_delta=0.01,
                 vae={"psnr": (25.0, 28.0, 30.0), "fd": lambda b: 50 - 5 * math.log10(1e-4 / b)})
    assert set(verdicts(rows).values()) == {FAILS}


def test_claims_are_inconclusive_when_seeds_overlap_or_the_control_is_not_competent():
    rows = table(fd1=lambda c: 60 - 2 * c, fd3=lambda c: 40 + 1 * (c - 0.5) ** 2, joint1=lambda c: 100.0,
                 ss_delta=-0.5, slope_tf=0.0, slope_ss_delta=0.0, noise=20.0, joint_acc=0.1)
    v = verdicts(rows)
    assert v["gmm: without CFG, AR FD falls as C_sigma grows"] == INCONCLUSIVE
    assert v["JointDiffusion (non-AR): without CFG, FD stays flat in C_sigma"] == INCONCLUSIVE  # acc 0.1
    assert v["gmm: with CFG 3, FD is U-shaped in C_sigma"] == INCONCLUSIVE
    assert v["gmm: scheduled sampling lowers FD against teacher forcing at C_sigma 0.5"] == INCONCLUSIVE
    assert v["gmm: a larger VAE KL weight beta lowers reconstruction but improves AR sampling"] == PENDING
    one_seed = verdicts(table(fd1=lambda c: 60 - 20 * c, fd3=lambda c: 40 + 60 * (c - 0.5) ** 2,
                              joint1=lambda c: 100.0, ss_delta=-5.0, slope_tf=0.02, slope_ss_delta=-0.01, seeds=1))
    assert set(one_seed.values()) <= {INCONCLUSIVE, PENDING}  # one seed: no interval, no verdict


def test_verdicts_read_csv_strings_like_floats():
    rows = table(fd1=lambda c: 60 - 20 * c, fd3=lambda c: 40 + 60 * (c - 0.5) ** 2, joint1=lambda c: 100.0,
                 ss_delta=-5.0, slope_tf=0.02, slope_ss_delta=-0.01)
    as_csv = [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows]
    assert verdicts(as_csv) == verdicts(rows)


def test_intervals_match_scipy():
    x = [3.0, 5.5, 4.2, 6.1]
    ci = mean_ci(x)
    lo, hi = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert (ci.mean, ci.lo, ci.hi, ci.n) == pytest.approx((np.mean(x), lo, hi, 4))
    a, b = {0: 1.0, 1: 2.0, 2: 3.5, 3: 9.0}, {0: 0.5, 1: 1.2, 2: 3.0, 3: 7.9, 4: 100.0}  # seed 4 unpaired
    d = paired_difference(a, b)
    ref = sps.ttest_rel([0.5, 1.2, 3.0, 7.9], [1.0, 2.0, 3.5, 9.0])
    assert d.n == 4 and d.mean == pytest.approx(-0.725) and d.p == pytest.approx(ref.pvalue)
    assert mean_ci([1.0]).n == 1 and math.isnan(mean_ci([1.0]).lo) and not mean_ci([1.0]).excludes_zero


def test_comparison_rows_cover_every_c_sigma_and_strategy():
    rows = table(fd1=lambda c: 60 - 20 * c, fd3=lambda c: 40.0, joint1=lambda c: 100.0,
                 ss_delta=-5.0, slope_tf=0.02, slope_ss_delta=-0.01)
    comps = [r for r in comparison_rows(rows, ["fd_cfg1", "exposure_fd_own_slope"], strategy_c_sigma=0.5)
             if r["metric"] == "fd_cfg1"]
    got = [(r["generator"], r["comparison"], r["significant"]) for r in comps]
    assert got == [("gmm", "C_sigma 0.25 vs 0", "yes"), ("gmm", "C_sigma 0.5 vs 0", "yes"),
                   ("gmm", "C_sigma 1 vs 0", "yes"), ("gmm", "ss vs tf at C_sigma 0.5", "yes"),
                   ("joint", "C_sigma 0.25 vs 0", "no"), ("joint", "C_sigma 0.5 vs 0", "no"),
                   ("joint", "C_sigma 1 vs 0", "no")]

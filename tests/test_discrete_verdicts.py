"""Verdicts of `compare discrete` on synthetic per-seed rows where each claim holds, fails, and is
inconclusive; the compounding table's gap interval against scipy's t interval."""
import pytest
from scipy import stats

from latentar.sweeps.discrete_verdicts import (FAILS, HOLDS, INCONCLUSIVE, PENDING, compounding_rows,
                                               discrete_verdicts)

SEEDS = (0, 1, 2)


def rows_for(task="running_sum", length=10, err_gt=0.1, **arms):
    """``arms``: strategy -> (per-seed final_exact, train_seconds, per-seed exposure_gap or None)."""
    out = []
    for s, (exact, secs, gap) in arms.items():
        for k, e in zip(SEEDS, exact):
            out.append({"task": task, "strategy": s, "len": length, "seed": k, "final_exact": e,
                        "exact_match": e, "train_seconds": secs, "exposure_gap": None if gap is None else gap[k],
                        "err_own_mean": 0.3, "err_gt_mean": err_gt})
    return out


def verdict(rows, claim_start, task="running_sum"):
    vs = discrete_verdicts(rows, [task], [10], metric_of=lambda t: "final_exact")
    hits = [v for v in vs if v["claim"].startswith(claim_start)]
    assert len(hits) == 1, [v["claim"] for v in vs]
    return hits[0]


def test_strategy_vs_sft_holds_fails_and_is_inconclusive():
    sft = ([0.50, 0.60, 0.55], 10.0, [0.20, 0.25, 0.22])
    better = ([0.60, 0.71, 0.64], 12.0, None)     # +0.10, +0.11, +0.09
    worse = ([0.40, 0.49, 0.46], 12.0, None)      # -0.10, -0.11, -0.09
    noisy = ([0.70, 0.40, 0.60], 12.0, None)      # +0.2, -0.2, +0.05
    rows = rows_for(sft=sft, bash=better, rac=worse, relabel=noisy)
    assert verdict(rows, "BASH >= SFT")["verdict"] == HOLDS
    assert verdict(rows, "RAC >= SFT")["verdict"] == FAILS
    assert verdict(rows, "relabelling")["verdict"] == INCONCLUSIVE
    assert "final_exact bash - sft 0.1 [" in verdict(rows, "BASH >= SFT")["evidence"]
    assert verdict(rows, "SFT's own-prefix error exceeds")["verdict"] == HOLDS
    assert verdict(rows, "MIXER >= SFT")["verdict"] == PENDING  # not run
    assert verdict(rows, "BASH matches online SS")["verdict"] == PENDING


def test_a_length_where_sft_is_not_competent_is_not_judged():
    sft = ([0.10, 0.12, 0.11], 10.0, [0.20, 0.25, 0.22])
    rows = rows_for(err_gt=0.7, sft=sft, bash=([0.60, 0.71, 0.64], 12.0, None))
    v = verdict(rows, "BASH >= SFT")
    assert v["verdict"] == INCONCLUSIVE and "SFT not competent" in v["evidence"]
    assert compounding_rows(rows, ["running_sum"], [10])[0]["SFT competent"] == "no"


def test_compounding_gap_and_its_interval():
    rows = rows_for(sft=([0.5] * 3, 1.0, [0.02, -0.01, 0.00]))
    assert verdict(rows, "SFT's own-prefix error exceeds")["verdict"] == INCONCLUSIVE
    table = compounding_rows(rows, ["running_sum"], [10])
    assert table[0]["compounds"] == "no"
    gaps = [0.10, 0.14, 0.12]
    table = compounding_rows(rows_for(sft=([0.5] * 3, 1.0, gaps)), ["running_sum"], [10])
    lo, hi = stats.t.interval(0.95, 2, loc=sum(gaps) / 3, scale=stats.sem(gaps))
    assert table[0]["compounds"] == "yes" and f"[{lo:.3g}, {hi:.3g}]" in table[0]["gap (95% CI)"]


@pytest.mark.parametrize("bash_exact, bash_secs, expected", [
    ([0.50, 0.61, 0.54], 5.0, HOLDS),          # within the margin of SS, and cheaper
    ([0.50, 0.61, 0.54], 25.0, FAILS),         # as good but not cheaper
    ([0.50, 0.61, 0.54], 15.0, FAILS),         # cheaper, but not "a fraction" (0.75 > 0.5)
    ([0.30, 0.41, 0.36], 5.0, FAILS),          # clearly worse
    ([0.60, 0.20, 0.55], 5.0, INCONCLUSIVE),   # too noisy to call
])
def test_bash_matches_ss_at_a_fraction_of_its_cost(bash_exact, bash_secs, expected):
    rows = rows_for(sft=([0.5] * 3, 10.0, [0.1] * 3), ss=([0.50, 0.60, 0.55], 20.0, None),
                    bash=(bash_exact, bash_secs, None))
    assert verdict(rows, "BASH matches online SS")["verdict"] == expected


def test_fully_annealed_ss_degrades():
    sft = ([0.5] * 3, 10.0, [0.1] * 3)
    rows = rows_for(sft=sft, ss=([0.50, 0.60, 0.55], 20.0, None), ss_anneal=([0.20, 0.31, 0.24], 20.0, None))
    assert verdict(rows, "scheduled sampling's fully annealed")["verdict"] == HOLDS
    rows = rows_for(sft=sft, ss=([0.50, 0.60, 0.55], 20.0, None), ss_anneal=([0.60, 0.71, 0.64], 20.0, None))
    assert verdict(rows, "scheduled sampling's fully annealed")["verdict"] == FAILS

"""Verdicts on the published claims the variance sweep tests, from its per-seed result rows.

Each claim is decided from confidence intervals over seeds (``latentar.sweeps.stats``), never from
bare means, and gets one of ``holds``, ``does not hold`` or ``inconclusive at this budget`` (the
interval contains 0, fewer than two seeds, or an arm not trained to competence), or ``pending``
when the sweep did not run the arms the claim needs.

Claims (rows are teacher-forced SigmaVAE cells unless said otherwise; FD is lower-is-better):

* LatentLM Fig. 6, without CFG, per AR generator: FD falls as C_sigma grows. Statistic: the
  per-seed least-squares slope dFD/dC_sigma; holds if its interval lies below 0.
* LatentLM Fig. 6, the non-AR control (JointDiffusion) stays flat: holds if its slope interval
  contains 0 and lies within +-|mean AR slope|; does not hold if it excludes 0. A control whose
  class accuracy at the largest CFG scale is below ``COMPETENT_ACC`` is not judged.
* LatentLM Fig. 6, with CFG (largest scale), per AR generator: FD is U-shaped in C_sigma.
  Statistic: the curvature a of a per-seed quadratic fit a c^2 + b c + d; holds if a's interval
  lies above 0 and the mean fit's vertex -b / 2a lies inside the C_sigma range.
* GIVT, per AR generator: a larger VAE KL weight beta lowers reconstruction (PSNR, one tokenizer
  per beta, so no interval) but improves AR sampling (per-seed slope of FD against log10 beta < 0).
* Exposure strategies at the strategy C_sigma, per AR generator and strategy: FD(strategy) - FD(TF)
  paired over seeds; holds (the strategy helps) if the interval lies below 0.
* Exposure drift: the own-prefix FD slope per position of TF lies above 0 (errors compound), and
  each strategy's slope minus TF's (paired) lies below 0 (it flattens the drift).
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from latentar.sweeps.stats import Interval, mean_ci, paired_difference, per_seed_fit

HOLDS, FAILS, INCONCLUSIVE, PENDING = "holds", "does not hold", "inconclusive at this budget", "pending"
COMPETENT_ACC = 0.5  # class accuracy (at the largest CFG scale) an arm needs before its FD counts
AR_GENERATORS = ("gmm", "diffusion")
STRATEGY_NAMES = {"ss": "scheduled sampling", "noise": "context noise", "bash": "BASH"}


def _f(v: Any) -> float:
    """A result value as a float (CSV strings included); NaN when empty or missing."""
    if v is None or v == "":
        return float("nan")
    return float(v)


def _by_sign(ci: Interval, good: int) -> str:
    """``holds`` if the interval lies on the ``good`` side of 0, ``does not hold`` on the other."""
    if ci.sign == 0:
        return INCONCLUSIVE
    return HOLDS if ci.sign == good else FAILS


def _verdict(claim: str, source: str, evidence: str, verdict: str) -> dict[str, str]:
    return {"claim": claim, "source": source, "evidence": evidence, "verdict": verdict}


def _select(rows: Iterable[Mapping[str, Any]], **match) -> list[Mapping[str, Any]]:
    out = []
    for r in rows:
        ok = True
        for k, v in match.items():
            rv = r.get(k)
            if isinstance(v, float):
                ok = ok and rv not in (None, "") and math.isclose(_f(rv), v)
            else:
                ok = ok and rv == v
        if ok:
            out.append(r)
    return out


def _curves(rows, metric: str, x: str, transform=lambda v: v) -> dict[int, list[tuple[float, float]]]:
    """{seed: [(x, metric)]} over the given rows."""
    out: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        out[int(_f(r["seed"]))].append((transform(_f(r[x])), _f(r.get(metric))))
    return dict(out)


def _slope(rows, metric: str, x: str, transform=lambda v: v) -> Interval:
    fits = per_seed_fit(_curves(rows, metric, x, transform), 1)
    return mean_ci([c[0] for c in fits.values()])


def _by_seed(rows, metric: str) -> dict[int, float]:
    return {int(_f(r["seed"])): _f(r.get(metric)) for r in rows}


def _competence(rows, cfg_max: float) -> float:
    """Mean class accuracy at the largest CFG scale (NaN without labels)."""
    accs = [_f(r.get(f"class_acc_cfg{cfg_max:g}")) for r in rows]
    accs = [a for a in accs if math.isfinite(a)]
    return float(np.mean(accs)) if accs else float("nan")


def claim_verdicts(rows: Sequence[Mapping[str, Any]], cfg_scales: Sequence[float], strategy_c_sigma: float,
                   competent_acc: float = COMPETENT_ACC) -> list[dict[str, str]]:
    """One verdict row per published claim (module docstring) from the sweep's per-seed rows."""
    cfg_max = max(cfg_scales)
    fd1, fdg = "fd_cfg1", f"fd_cfg{cfg_max:g}"
    sig = [r for r in rows if r.get("tokenizer", "sigma_vae") == "sigma_vae" and r["strategy"] == "tf"]
    gens = [g for g in dict.fromkeys(r["generator"] for r in rows)]
    out: list[dict[str, str]] = []
    fig6 = "LatentLM Fig. 6"

    def not_competent(rs) -> str | None:
        acc = _competence(rs, cfg_max)
        if math.isfinite(acc) and acc < competent_acc:
            return f"class accuracy at CFG {cfg_max:g} is {acc:.2f} < {competent_acc:g}: not trained to competence"
        return None

    ar_slopes = []
    for g in gens:
        rs = [r for r in sig if r["generator"] == g]
        n_c = len({_f(r["c_sigma"]) for r in rs})
        if g in AR_GENERATORS:
            claim = f"{g}: without CFG, AR FD falls as C_sigma grows"
            if n_c < 2:
                out.append(_verdict(claim, fig6, "needs >= 2 C_sigma values", PENDING))
                continue
            ci = _slope(rs, fd1, "c_sigma")
            ar_slopes.append(ci.mean)
            weak = not_competent(rs)
            out.append(_verdict(claim, fig6, f"dFD/dC_sigma = {ci.text()} over {ci.n} seeds" + (f"; {weak}" if weak else ""),
                                INCONCLUSIVE if weak else _by_sign(ci, -1)))
    for g in gens:
        rs = [r for r in sig if r["generator"] == g]
        if g in AR_GENERATORS or g != "joint":
            continue
        claim = "JointDiffusion (non-AR): without CFG, FD stays flat in C_sigma"
        if len({_f(r["c_sigma"]) for r in rs}) < 2:
            out.append(_verdict(claim, fig6, "needs >= 2 C_sigma values", PENDING))
            continue
        ci = _slope(rs, fd1, "c_sigma")
        weak = not_competent(rs)
        bound = max((abs(s) for s in ar_slopes), default=float("nan"))
        if weak:
            verdict = INCONCLUSIVE
        elif ci.excludes_zero:
            verdict = FAILS
        elif ci.n >= 2 and math.isfinite(bound) and -bound <= ci.lo and ci.hi <= bound:
            verdict = HOLDS
        else:
            verdict = INCONCLUSIVE
        ev = f"dFD/dC_sigma = {ci.text()} over {ci.n} seeds; |AR slope| up to {bound:.3g}" + (f"; {weak}" if weak else "")
        out.append(_verdict(claim, fig6, ev, verdict))
    if cfg_max != 1.0:
        for g in [g for g in gens if g in AR_GENERATORS]:
            rs = [r for r in sig if r["generator"] == g]
            cs = sorted({_f(r["c_sigma"]) for r in rs})
            claim = f"{g}: with CFG {cfg_max:g}, FD is U-shaped in C_sigma"
            if len(cs) < 3:
                out.append(_verdict(claim, fig6, "needs >= 3 C_sigma values", PENDING))
                continue
            fits = per_seed_fit(_curves(rs, fdg, "c_sigma"), 2)
            curv = mean_ci([c[0] for c in fits.values()])
            a, b = (float(np.mean([c[i] for c in fits.values()])) for i in (0, 1))
            vertex = -b / (2 * a) if a != 0 else float("nan")
            inside = math.isfinite(vertex) and cs[0] < vertex < cs[-1]
            if curv.sign == 1 and inside:
                verdict = HOLDS
            elif curv.sign == -1 or (curv.sign == 1 and not inside):
                verdict = FAILS
            else:
                verdict = INCONCLUSIVE
            out.append(_verdict(claim, fig6, f"curvature {curv.text()} over {curv.n} seeds; vertex at C_sigma "
                                             f"{vertex:.3g} (range {cs[0]:g}..{cs[-1]:g})", verdict))
    vae = [r for r in rows if r.get("tokenizer") == "vae" and r["strategy"] == "tf"]
    for g in [g for g in gens if g in AR_GENERATORS]:
        rs = [r for r in vae if r["generator"] == g]
        betas = sorted({_f(r["beta"]) for r in rs})
        claim = f"{g}: a larger VAE KL weight beta lowers reconstruction but improves AR sampling"
        if len(betas) < 2:
            out.append(_verdict(claim, "GIVT", "needs the VAE arm with >= 2 beta values (--tokenizer vae --beta ...)",
                                PENDING))
            continue
        psnr = [float(np.mean([_f(r["recon_psnr"]) for r in rs if math.isclose(_f(r["beta"]), b)])) for b in betas]
        recon_falls = all(p2 < p1 for p1, p2 in zip(psnr, psnr[1:]))
        recon_rises = all(p2 > p1 for p1, p2 in zip(psnr, psnr[1:]))
        ci = _slope(rs, fd1, "beta", transform=math.log10)
        if recon_rises or ci.sign == 1:
            verdict = FAILS
        elif recon_falls and ci.sign == -1:
            verdict = HOLDS
        else:
            verdict = INCONCLUSIVE
        ev = (f"PSNR {' > '.join(f'{p:.1f}' for p in psnr)} dB at beta {', '.join(f'{b:g}' for b in betas)} "
              f"(one tokenizer each); dFD/dlog10(beta) = {ci.text()} over {ci.n} seeds")
        out.append(_verdict(claim, "GIVT", ev, verdict))
    at = [r for r in rows if r.get("tokenizer", "sigma_vae") == "sigma_vae" and r.get("c_sigma") not in (None, "")
          and math.isclose(_f(r["c_sigma"]), strategy_c_sigma)]
    for g in [g for g in gens if g in AR_GENERATORS]:
        tf = [r for r in at if r["generator"] == g and r["strategy"] == "tf"]
        others = list(dict.fromkeys(r["strategy"] for r in at if r["generator"] == g and r["strategy"] != "tf"))
        if not tf or not others:
            continue
        drift = mean_ci([_f(r.get("exposure_fd_own_slope")) for r in tf])
        out.append(_verdict(f"{g}: under teacher forcing, own-prefix error grows with position",
                            "exposure bias (Ranzato et al. 2016; Arora et al. 2022)",
                            f"own-prefix FD slope per position {drift.text()} at C_sigma {strategy_c_sigma:g}",
                            _by_sign(drift, 1)))
        for st in others:
            rs = [r for r in at if r["generator"] == g and r["strategy"] == st]
            name = STRATEGY_NAMES.get(st, st)
            d = paired_difference(_by_seed(tf, fd1), _by_seed(rs, fd1))
            out.append(_verdict(f"{g}: {name} lowers FD against teacher forcing at C_sigma {strategy_c_sigma:g}",
                                "scheduled sampling (Bengio et al. 2015) / variance shaping",
                                f"FD({st}) - FD(tf) = {d.text()} over {d.n} seeds", _by_sign(d, -1)))
            ds = paired_difference(_by_seed(tf, "exposure_fd_own_slope"), _by_seed(rs, "exposure_fd_own_slope"))
            out.append(_verdict(f"{g}: {name} flattens the own-prefix drift",
                                "exposure bias", f"slope({st}) - slope(tf) = {ds.text()} over {ds.n} seeds",
                                _by_sign(ds, -1)))
    return out


def comparison_rows(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], strategy_c_sigma: float
                    ) -> list[dict[str, Any]]:
    """Every comparison the tables draw, paired over seeds: each C_sigma against C_sigma 0 (or the
    smallest) per generator, and each strategy against teacher forcing at the strategy C_sigma."""
    out = []
    sig = [r for r in rows if r.get("tokenizer", "sigma_vae") == "sigma_vae"]
    for g in dict.fromkeys(r["generator"] for r in sig):
        tf = [r for r in sig if r["generator"] == g and r["strategy"] == "tf"]
        cs = sorted({_f(r["c_sigma"]) for r in tf})
        for c in cs[1:]:
            a, b = _select(tf, c_sigma=cs[0]), _select(tf, c_sigma=c)
            for m in [m for m in metrics if any(m in r for r in tf)]:
                d = paired_difference(_by_seed(a, m), _by_seed(b, m))
                out.append({"generator": g, "comparison": f"C_sigma {c:g} vs {cs[0]:g}", "metric": m,
                            "difference (95% CI)": d.text(), "n": d.n,
                            "significant": "yes" if d.excludes_zero else "no"})
        at = _select(sig, generator=g, c_sigma=float(strategy_c_sigma))
        base = [r for r in at if r["strategy"] == "tf"]
        for st in dict.fromkeys(r["strategy"] for r in at if r["strategy"] != "tf"):
            rs = [r for r in at if r["strategy"] == st]
            for m in metrics:
                d = paired_difference(_by_seed(base, m), _by_seed(rs, m))
                out.append({"generator": g, "comparison": f"{st} vs tf at C_sigma {strategy_c_sigma:g}", "metric": m,
                            "difference (95% CI)": d.text(), "n": d.n,
                            "significant": "yes" if d.excludes_zero else "no"})
    return out

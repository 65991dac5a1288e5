"""Speed-up of running sweep cells in parallel: the same small ``compare discrete`` cells (CharLM
fits with the library's strategies, CPU-bound) with ``workers=1`` and ``workers=2``, in one run.

    python bench/sweep_workers.py [--cells 4] [--steps 150] [--rounds 2]

``workers=1`` runs the cells one by one in this process with ``--serial-threads`` torch threads
(default 1: the same arithmetic as a worker, so the results match bit for bit; on a busy machine,
two OpenMP threads on two loaded cores can be many times slower than one); ``workers=2`` runs them
in two worker processes of one thread each (``SweepRunner``'s forkserver pool). Every round writes into fresh folders, and the two are
checked to give the same results. The workers' start (the forkserver importing torch and the
sweep module, once per sweep command) is timed apart: the first pool pays it ("cold"), later ones
fork from the running server ("warm"). Target on a 2-core machine: warm speed-up >= 1.8. Ends with
`RESULT workers2_speedup=...` (warm, median over rounds); the line before it gives what two
processes can get from the machine at that moment (other jobs on a shared machine lower it).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from latentar.sweeps import discrete
from latentar.sweeps.runner import SweepRunner


def run(out: Path, cfg: discrete.CompareConfig, cells: list[dict], workers: int) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    rows = SweepRunner(out, progress=False, settings=discrete.cell_settings(cfg), workers=workers).run(
        cells, partial(discrete.run_cell, cfg=cfg))
    return time.perf_counter() - t0, rows


def _spin(n: int) -> float:
    x = 0
    for i in range(n):
        x += i * i
    return float(x)


def ceiling(n: int = 10_000_000) -> float:
    """What two processes get from this machine now: two pure-Python loops one after the other,
    over the same two side by side (2.0 on two idle cores; less when other jobs load it)."""
    from concurrent.futures import ProcessPoolExecutor
    t0 = time.perf_counter()
    _spin(n), _spin(n)
    serial = time.perf_counter() - t0
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(_spin, [1, 1]))  # started
        t0 = time.perf_counter()
        list(ex.map(_spin, [n, n]))
        return serial / (time.perf_counter() - t0)


def same(a: list[dict], b: list[dict]) -> bool:
    keep = lambda r: {k: v for k, v in r.items() if "seconds" not in k}  # noqa: E731
    return [keep(r) for r in a] == [keep(r) for r in b]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=4, help="cells per run (strategies sft/ss x seeds)")
    ap.add_argument("--steps", type=int, default=150, help="training steps per cell")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--serial-threads", type=int, default=1, help="torch threads of the workers=1 run")
    args = ap.parse_args()
    torch.set_num_threads(args.serial_threads)
    cfg = discrete.CompareConfig.from_preset("smoke", lengths=[8], steps=args.steps, num_train=2000, num_test=64,
                                             d_model=64, depth=2, num_heads=4, device="cpu", progress=False)
    cells = [{"strategy": s, "len": 8, "seed": k} for k in range(args.cells) for s in ("sft", "ss")][:args.cells]
    print(f"{len(cells)} compare-discrete cells of {args.steps} steps (CharLM d=64, depth 2); "
          f"torch threads in this process: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cold, cold_rows = run(tmp / "cold", cfg, cells, workers=2)
        serial, parallel = [], []
        for r in range(args.rounds):
            t1, rows1 = run(tmp / f"w1-{r}", cfg, cells, workers=1)
            t2, rows2 = run(tmp / f"w2-{r}", cfg, cells, workers=2)
            assert same(rows1, rows2) or torch.get_num_threads() > 1, "workers=2 changed the results"
            serial.append(t1)
            parallel.append(t2)
            print(f"round {r}: workers=1 {t1:6.1f} s   workers=2 {t2:6.1f} s   speed-up {t1 / t2:.2f}   "
                  f"same results: {same(rows1, rows2)}")
    t1, t2 = statistics.median(serial), statistics.median(parallel)
    print(f"machine ceiling for two processes right now (pure-Python loops): {ceiling():.2f}")
    print(f"first pool (cold: forkserver start and imports included): {cold:.1f} s, speed-up {t1 / cold:.2f}")
    print(f"median: workers=1 {t1:.1f} s, workers=2 {t2:.1f} s (warm)")
    print(f"RESULT workers2_speedup={t1 / t2:.2f}")


if __name__ == "__main__":
    main()

"""Benchmark: LatentAR decoding. The KV cache versus recomputing the prefix, then tokens/s of the
GMM and the diffusion head (20 and 100 sampler steps), eager versus ``generate(compile=...)``, and
the head's share of decode time.

    .venv/bin/python bench/generate.py                 # CPU, one thread: 3-5 min on our busy 2-core box
    .venv/bin/python bench/generate.py --device cuda
    .venv/bin/python bench/generate.py --quick --compile-backend aot_eager   # smoke test, seconds

Why: per-token decoding is a long chain of tiny backbone calls plus a head sample per position, so
at these sizes Python and kernel-launch overhead rather than FLOPs set the speed. The cache removes
the O(T^2) recompute; ``compile`` cuts the per-call overhead of the backbone step (static shapes,
so the graph is reused across positions); the head table says how much of what is left is the head.
The head stays eager, so compiling the backbone gains at most 1 / (1 - head share): little next to
a 100-step diffusion head.

Run time (2-core CPU shared with a niced background job, load 4-7): 2 min 45 s to 4 min 25 s, most
of it the 1024-position recompute; the first inductor compile takes about 25 s cold (two graphs:
position 0 feeds the BOS parameter view, which requires grad) and about 6 s from inductor's on-disk
cache. Under that load repeated runs differ by 20-40% in tokens/s, so read compile ratios near 1
as noise; an idle machine or ``--device cuda`` gives cleaner figures.

One CPU thread by default: on a shared 2-core machine, two OpenMP threads per process spin-wait for
each other when the cores are oversubscribed, which slowed both paths about 5x (unevenly) in our
runs; one thread keeps the side-by-side ratio stable. ``--threads 2`` on an idle machine.

1. KV cache. The same LatentAR (MSE head, so the head costs almost nothing; d_model 256, depth 4,
   batch 1) generates 64, 256 and 1024 positions with ``use_cache=True`` (one new position per
   backbone call: O(T) work) and ``use_cache=False`` (the whole prefix at every step: O(T^2)),
   timed alternately in one run. kv_speedup_T = tokens/s(cache) / tokens/s(recompute); best of
   ``--repeats`` runs (a single run at 1024, where the recompute takes most of the budget).
2. Heads, eager vs compiled. The same backbone with a GMMHead, and with a DiffusionHead sampled with
   20 (VibeVoice) and 100 (MAR) ``--sampler`` steps, generates ``--head-length`` positions with the
   cache, eagerly and with ``compile=--compile-backend`` (``torch.compile(fullgraph=True,
   dynamic=False)`` of the backbone step; the head's sampling stays eager). One warm-up call per
   model and mode first (both times are printed; their difference is the compile), then the
   two modes alternate for ``--head-repeats`` runs; the fastest run of each is kept. Per row:
   tok_s_X_eager, tok_s_X_compiled, compile_speedup_X = compiled / eager tokens/s, and
   head_share_X_{eager,compiled} = time inside ``head.sample`` (synchronised) / total generate time
   of that fastest run. X is gmm, diff20 or diff100.

``--quick`` shrinks everything (d_model 64, depth 2, KV lengths 16 and 32, 8 head positions, one
repeat) for the smoke test ``tests/test_bench_generate.py``; its figures mean nothing.

The last line is ``RESULT kv_speedup_64=... kv_speedup_256=... kv_speedup_1024=... tok_s_gmm_eager=...
tok_s_gmm_compiled=... compile_speedup_gmm=... head_share_gmm_eager=... head_share_gmm_compiled=...
tok_s_diff20_eager=... ... head_share_diff100_compiled=...`` (with ``--quick``: kv_speedup_16 and
kv_speedup_32).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from latentar.models import LatentAR  # noqa: E402

LENGTHS = (64, 256, 1024)
QUICK_LENGTHS = (16, 32)
# (RESULT name, head, sampler steps or None)
HEAD_ROWS = (("gmm", "gmm", None), ("diff20", "diffusion", 20), ("diff100", "diffusion", 100))
MODES = ("eager", "compiled")
DEFAULTS = dict(d_model=256, depth=4, repeats=3, head_length=32, head_repeats=5)
QUICK = dict(d_model=64, depth=2, repeats=1, head_length=8, head_repeats=1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_generate(model: LatentAR, length: int, batch_size: int, device: torch.device, **kw) -> float:
    sync(device)
    start = time.perf_counter()
    model.generate(batch_size, length, generator=torch.Generator(device).manual_seed(0), **kw)
    sync(device)
    return time.perf_counter() - start


def kv_speedups(args, device: torch.device) -> dict[int, tuple[float, float]]:
    """{length: (tokens/s with cache, tokens/s recomputing)}."""
    torch.manual_seed(0)
    model = LatentAR(latent_dim=args.latent_dim, head="mse", d_model=args.d_model, depth=args.depth,
                     num_heads=args.num_heads, max_len=max(args.lengths)).to(device).eval()
    time_generate(model, 16, args.batch_size, device)  # warm-up (allocator, kernels)
    time_generate(model, 16, args.batch_size, device, use_cache=False)
    results = {}
    for length in args.lengths:
        repeats = 1 if length >= 1024 else args.repeats
        cached, full = [], []
        for _ in range(repeats):  # alternate, so both paths see the same machine load
            cached.append(time_generate(model, length, args.batch_size, device, use_cache=True))
            full.append(time_generate(model, length, args.batch_size, device, use_cache=False))
        tokens = length * args.batch_size
        results[length] = (tokens / min(cached), tokens / min(full))
        print(f"T={length:5d}  cache {results[length][0]:9.1f} tok/s   recompute {results[length][1]:9.1f} tok/s   "
              f"speedup {results[length][0] / results[length][1]:6.1f}x", flush=True)
    return results


def timed_head(model: LatentAR, device: torch.device) -> list[float]:
    """Wrap ``model.head.sample`` so the returned one-element list accumulates the seconds spent in it."""
    inner = model.head.sample
    spent = [0.0]

    def timed_sample(*a, **kw):
        sync(device)
        start = time.perf_counter()
        out = inner(*a, **kw)
        sync(device)
        spent[0] += time.perf_counter() - start
        return out

    model.head.sample = timed_sample  # instance attribute: shadows the method for this model only
    return spent


def head_table(args, device: torch.device) -> dict[str, dict[str, tuple[float, float]]]:
    """{row: {mode: (tokens/s, head share)}} for the rows of HEAD_ROWS, modes eager and compiled."""
    models: dict[str, tuple[LatentAR, list[float]]] = {}
    table = {}
    tokens = args.head_length * args.batch_size
    for name, head, steps in HEAD_ROWS:
        if head not in models:  # the diffusion rows share one model (and one compiled graph)
            torch.manual_seed(0)
            model = LatentAR(latent_dim=args.latent_dim, head=head, d_model=args.d_model, depth=args.depth,
                             num_heads=args.num_heads, max_len=args.head_length).to(device).eval()
            models[head] = (model, timed_head(model, device))
        model, spent = models[head]
        kw = {} if steps is None else dict(num_steps=steps, sampler=args.sampler)
        compile_kw = dict(eager=dict(compile=False), compiled=dict(compile=args.compile_backend))
        warm = {mode: time_generate(model, args.head_length, args.batch_size, device, **kw, **compile_kw[mode])
                for mode in MODES}  # warm-up: allocator and kernels; the first compiled call also compiles
        print(f"{name:8s} warm-up call: eager {warm['eager']:6.2f} s, compiled {warm['compiled']:6.2f} s "
              "(the difference is the compile, on the first row of each head)", flush=True)
        best = {mode: (float("inf"), 0.0) for mode in MODES}  # (seconds, head seconds) of the fastest run
        for _ in range(args.head_repeats):
            for mode in MODES:  # alternate, so both modes see the same machine load
                spent[0] = 0.0
                total = time_generate(model, args.head_length, args.batch_size, device, **kw, **compile_kw[mode])
                if total < best[mode][0]:
                    best[mode] = (total, spent[0])
        table[name] = {mode: (tokens / best[mode][0], best[mode][1] / best[mode][0]) for mode in MODES}
        (eager, share_e), (compiled, share_c) = table[name]["eager"], table[name]["compiled"]
        print(f"{name:8s} eager {eager:9.1f} tok/s (head {share_e:.3f})   compiled {compiled:9.1f} tok/s "
              f"(head {share_c:.3f})   compiled/eager {compiled / eager:5.2f}x", flush=True)
    return table


def result_line(kv: dict[int, tuple[float, float]], table: dict[str, dict[str, tuple[float, float]]]) -> str:
    parts = [f"kv_speedup_{n}={cached / full:.2f}" for n, (cached, full) in kv.items()]
    for name, row in table.items():
        (eager, share_e), (compiled, share_c) = row["eager"], row["compiled"]
        parts += [f"tok_s_{name}_eager={eager:.1f}", f"tok_s_{name}_compiled={compiled:.1f}",
                  f"compile_speedup_{name}={compiled / eager:.2f}",
                  f"head_share_{name}_eager={share_e:.3f}", f"head_share_{name}_compiled={share_c:.3f}"]
    return "RESULT " + " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; see the module docstring)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and lengths (smoke test; figures mean nothing)")
    p.add_argument("--d-model", type=int, default=None, help=f"default {DEFAULTS['d_model']} ({QUICK['d_model']} with --quick)")
    p.add_argument("--depth", type=int, default=None, help=f"default {DEFAULTS['depth']} ({QUICK['depth']} with --quick)")
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=None, help="KV-cache timed runs below 1024 positions (best is kept; "
                   f"default {DEFAULTS['repeats']})")
    p.add_argument("--head-length", type=int, default=None, help="positions generated per head-table run "
                   f"(default {DEFAULTS['head_length']})")
    p.add_argument("--head-repeats", type=int, default=None, help="timed runs per head row and mode (best is kept; "
                   f"default {DEFAULTS['head_repeats']})")
    p.add_argument("--sampler", default="ddpm", choices=("ddpm", "ddim", "dpmsolver"), help="diffusion sampler (default ddpm)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of generate(compile=...) (default inductor; aot_eager needs no C++ compiler)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.lengths = QUICK_LENGTHS if args.quick else LENGTHS
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(f"device {device}, {torch.get_num_threads()} threads, d_model {args.d_model}, depth {args.depth}, "
          f"batch {args.batch_size}, compile backend {args.compile_backend}", flush=True)
    start = time.perf_counter()
    kv = kv_speedups(args, device)
    table = head_table(args, device)
    print(f"total {time.perf_counter() - start:.1f} s")
    print(result_line(kv, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())

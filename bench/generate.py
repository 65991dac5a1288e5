"""Benchmark: LatentAR generation with the KV cache versus recomputing the prefix, and the diffusion
head's share of sampling time.

    .venv/bin/python bench/generate.py                 # CPU, one thread: about 1 min idle, < 4 min under load
    .venv/bin/python bench/generate.py --device cuda

One CPU thread by default: on a shared 2-core machine, two OpenMP threads per process spin-wait for
each other when the cores are oversubscribed, which slowed both paths about 5x (unevenly) in our
runs; one thread keeps the side-by-side ratio stable. ``--threads 2`` on an idle machine.

1. KV cache. The same LatentAR (MSE head, so the head costs almost nothing; d_model 256, depth 4,
   batch 1) generates 64, 256 and 1024 positions with ``use_cache=True`` (one new position per
   backbone call: O(T) work) and ``use_cache=False`` (the whole prefix at every step: O(T^2)),
   timed alternately in one run. kv_speedup_T = tokens/s(cache) / tokens/s(recompute); best of
   ``--repeats`` runs (a single run at 1024, where the recompute takes most of the budget).
2. Head share. The same backbone with a DiffusionHead generates ``--head-length`` positions with
   25 and 100 sampler steps; head_share_S = time inside ``head.sample`` / total generate time.

The last line is ``RESULT kv_speedup_64=... kv_speedup_256=... kv_speedup_1024=... head_share_25=...
head_share_100=...``.
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
HEAD_STEPS = (25, 100)


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
                     num_heads=args.num_heads, max_len=max(LENGTHS)).to(device).eval()
    time_generate(model, 16, args.batch_size, device)  # warm-up (allocator, kernels)
    time_generate(model, 16, args.batch_size, device, use_cache=False)
    results = {}
    for length in LENGTHS:
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


def head_shares(args, device: torch.device) -> dict[int, float]:
    """{sampler steps: fraction of generate time spent in DiffusionHead.sample}."""
    torch.manual_seed(0)
    model = LatentAR(latent_dim=args.latent_dim, head="diffusion", d_model=args.d_model, depth=args.depth,
                     num_heads=args.num_heads, max_len=args.head_length).to(device).eval()
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
    time_generate(model, 4, args.batch_size, device, num_steps=5)  # warm-up
    shares = {}
    for steps in HEAD_STEPS:
        spent[0] = 0.0
        total = time_generate(model, args.head_length, args.batch_size, device, num_steps=steps, sampler=args.sampler)
        shares[steps] = spent[0] / total
        print(f"diffusion head, {steps:3d} {args.sampler} steps: {args.head_length * args.batch_size / total:8.1f} tok/s, "
              f"head share {shares[steps]:.3f}", flush=True)
    return shares


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; see the module docstring)")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed runs at 64 and 256 positions (best is kept)")
    p.add_argument("--head-length", type=int, default=32, help="positions generated for the head-share measurement")
    p.add_argument("--sampler", default="ddpm", choices=("ddpm", "ddim", "dpmsolver"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(f"device {device}, {torch.get_num_threads()} threads, d_model {args.d_model}, depth {args.depth}, "
          f"batch {args.batch_size}", flush=True)
    start = time.perf_counter()
    kv = kv_speedups(args, device)
    shares = head_shares(args, device)
    print(f"total {time.perf_counter() - start:.1f} s")
    print("RESULT " + " ".join([f"kv_speedup_{n}={kv[n][0] / kv[n][1]:.2f}" for n in LENGTHS]
                               + [f"head_share_{s}={shares[s]:.3f}" for s in HEAD_STEPS]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

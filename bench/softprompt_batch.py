"""Soft prompts fitted per minute: B prompts in one batch against the same B fitted one at a time, in one run.

    python bench/softprompt_batch.py [--batch 8] [--length 32] [--max-steps 150]
                                     [--objectives ce,ce+ul,ce+ss,ce+rl,ce+pf*0.1] [--charlm-preset small]
                                     [--threads 1] [--device cpu]

The frozen LM is the soft-prompt benchmark's CharLM (``latentar softprompt bench --model charlm``;
trained once and cached on first use). For every objective the same ``--batch`` held-out snippets of
``--length`` characters are fitted twice with the same seeds: by ``fit_soft_prompt`` one after the
other, and by ``fit_soft_prompts`` as one batch (one LM forward and backward per step for all rows;
rows leave the batch when they reproduce their target). Both stop at exact reconstruction or after
``--max-steps``. The rate is prompts per minute of this process's CPU time (``--threads`` torch
threads, default 1, as under ``make``; on an idle machine that is its wall time), so other load on
a shared machine does not tilt it; wall times are printed beside. The rows must agree (same exact
count; prompts equal up to float rounding: on a CPU whose batched matmuls are row-independent,
bit for bit). Target >= 4x on CPU at B = 8. Ends with
``RESULT softprompt_batch_speedup=... prompts_per_min_batched=... prompts_per_min_single=...``.
"""
from __future__ import annotations

import argparse
import time

import torch

from latentar.data.text import text_snippets
from latentar.softprompt import SoftPrompt, fit_soft_prompt, load_frozen_lm
from latentar.softprompt.fit import fit_soft_prompts
from latentar.train.trainer import select_device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8, help="prompts per batch (B)")
    p.add_argument("--length", type=int, default=32, help="target length in characters")
    p.add_argument("--max-steps", type=int, default=150)
    p.add_argument("--n-virtual", type=int, default=8)
    p.add_argument("--objectives", default="ce,ce+ul,ce+ss,ce+rl,ce+pf*0.1",
                   help="comma-separated, each a '+'-joined combination (default: softprompt bench's)")
    p.add_argument("--charlm-preset", default="small", choices=["small", "test"])
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--device", default="cpu", help="cpu (default) or auto / cuda")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    lm = load_frozen_lm("charlm", device=device, charlm_preset=args.charlm_preset)
    texts = text_snippets(args.batch, args.length, split="val", seed=0)
    seeds = list(range(args.batch))
    fit = dict(max_steps=args.max_steps)
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    fit_soft_prompt(SoftPrompt(args.n_virtual, lm, seed=0), texts[0], "ce", max_steps=5)  # warm-up
    cpu = {"single": 0.0, "batched": 0.0}
    print(f"CharLM {args.charlm_preset} on {device}, B={args.batch}, {args.length}-character targets, "
          f"<= {args.max_steps} steps, threads={torch.get_num_threads()}; seconds of CPU (wall)")
    print(f"{'objective':>10} {'single s':>15} {'batched s':>15} {'speedup':>8} {'exact single':>13} "
          f"{'exact batched':>14} {'max |dP|':>9}")
    for obj in objectives:
        singles = [SoftPrompt(args.n_virtual, lm, seed=s) for s in seeds]
        c0, w0 = time.process_time(), time.perf_counter()
        one = [fit_soft_prompt(sp, t, obj, seed=s, **fit) for sp, t, s in zip(singles, texts, seeds)]
        c_single, w_single = time.process_time() - c0, time.perf_counter() - w0
        rows = [SoftPrompt(args.n_virtual, lm, seed=s) for s in seeds]
        c0, w0 = time.process_time(), time.perf_counter()
        many = fit_soft_prompts(rows, texts, obj, seeds=seeds, **fit)
        c_batched, w_batched = time.process_time() - c0, time.perf_counter() - w0
        with torch.no_grad():
            diff = max(float((a.embeddings - b.embeddings).abs().max()) for a, b in zip(singles, rows))
        cpu["single"] += c_single
        cpu["batched"] += c_batched
        print(f"{obj:>10} {c_single:7.2f} ({w_single:5.1f}) {c_batched:7.2f} ({w_batched:5.1f}) "
              f"{c_single / c_batched:7.1f}x {sum(r.exact for r in one):>8}/{len(one)} "
              f"{sum(r.exact for r in many):>9}/{len(many)} {diff:9.2g}")
    n = args.batch * len(objectives)
    per_min = {k: 60.0 * n / v for k, v in cpu.items()}
    print(f"RESULT softprompt_batch_speedup={cpu['single'] / cpu['batched']:.1f} "
          f"prompts_per_min_batched={per_min['batched']:.0f} prompts_per_min_single={per_min['single']:.0f}")


if __name__ == "__main__":
    main()

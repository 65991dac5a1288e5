"""Benchmark: training throughput and model FLOPs utilisation (MFU) of a ~300M-parameter LatentAR
through the library's own Trainer (bf16 autocast, torch.compile, SDPA attention, fused AdamW).

    .venv/bin/python bench/gpu_train.py --device cuda --peak-flops 989e12     # H100 / H200 bf16 dense
    .venv/bin/python bench/gpu_train.py --tiny --device cpu --peak-flops 1e11 # the smoke size (seconds)

What is measured, per head (GMM, then the per-token diffusion head):

* the model: LatentAR with d_model 1024, 24 layers, 16 heads, 256 latent tokens of 16 channels,
  10 classes (about 300M parameters in the backbone; the heads add a few million);
* FLOPs per training step: counted once with ``torch.utils.flop_counter.FlopCounterMode`` on an
  eager forward + backward of the real step (matmuls and SDPA; the diffusion head's noised copies
  included), so nothing is assumed. The 6N + 12 L T d estimate (PaLM appendix B) is printed beside
  it as a cross-check;
* tokens/s: ``Trainer.fit`` runs ``--windows`` log windows of ``--steps`` steps each; the first
  window holds the compilation and warm-up, the best later window is kept. The Trainer reads values
  back only at log steps (no host sync inside the window), so a window's wall time is its GPU time;
* MFU = (FLOPs per step x steps per second) / ``--peak-flops``: the achieved fraction of the
  accelerator's dense bf16 peak (989e12 for H100/H200 SXM). torchtitan reports 33-39% for Llama 8B
  on H100; the issue's target is >= 40%.

The last line is ``RESULT tokens_per_s=... mfu=... tokens_per_s_diffusion=... mfu_diffusion=...
params_m=...``, where the unsuffixed keys are the first ``--heads`` entry (gmm by default).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from latentar.models import LatentAR  # noqa: E402
from latentar.train import Trainer  # noqa: E402

FULL = dict(d_model=1024, depth=24, num_heads=16, tokens=256, latent_dim=16, batch_size=32)
TINY = dict(d_model=64, depth=2, num_heads=4, tokens=16, latent_dim=8, batch_size=4)
HEADS = ("gmm", "diffusion")
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16 FLOP/s (NVIDIA's SXM datasheets, no sparsity)


def build(head: str, args) -> LatentAR:
    torch.manual_seed(0)
    return LatentAR(args.latent_dim, head=head, d_model=args.d_model, depth=args.depth, num_heads=args.num_heads,
                    max_len=args.tokens, num_classes=10)


def data(args, n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, args.tokens, args.latent_dim, generator=g),
                         torch.randint(0, 10, (n,), generator=g))


def step_flops(model: LatentAR, args, device: torch.device, precision: str) -> int:
    """FLOPs of one training step (forward + backward of ``training_step`` on one batch), counted."""
    x, y = data(args, args.batch_size).tensors
    model = model.to(device).train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with FlopCounterMode(display=False) as counter:
        with autocast:
            loss = model.training_step((x.to(device), y.to(device)))
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def estimate_flops(model: LatentAR, args) -> float:
    """6 N + 12 L T d per token (PaLM, Chowdhery et al. 2022, appendix B), times tokens per step.
    N: backbone matmul parameters only (the heads' cost depends on their own batch multiplier)."""
    n = sum(p.numel() for name, p in model.backbone.named_parameters() if p.dim() == 2 and "pos_emb" not in name)
    per_token = 6 * n + 12 * args.depth * args.tokens * args.d_model
    return per_token * args.tokens * args.batch_size


def measure(head: str, args, device: torch.device) -> dict[str, float]:
    model = build(head, args)
    params = sum(p.numel() for p in model.parameters())
    precision = "bf16" if device.type == "cuda" else args.precision
    flops = step_flops(model, args, device, precision)
    trainer = Trainer(max_steps=args.windows * args.steps, log_every=args.steps, batch_size=args.batch_size,
                      lr=1e-4, warmup_steps=0, grad_clip=1.0, precision=precision,
                      compile=args.compile_backend if args.compile_backend != "none" else False,
                      device=str(device), progress=False, seed=0, desc=f"bench {head}")
    start = time.perf_counter()
    trainer.fit(model, data(args, args.batch_size * args.windows * args.steps))
    wall = time.perf_counter() - start
    steady = trainer.history[1:] or trainer.history  # window 0 holds the compilation
    samples_per_s = max(r["samples_per_s"] for r in steady)
    steps_per_s = samples_per_s / args.batch_size
    out = {"params_m": params / 1e6, "flops_per_step": flops, "estimate": estimate_flops(model, args),
           "tokens_per_s": samples_per_s * args.tokens, "mfu": flops * steps_per_s / args.peak_flops,
           "wall_s": wall}
    print(f"{head:9s} params {out['params_m']:7.1f}M  step {flops / 1e9:.4g} GFLOP counted "
          f"({out['estimate'] / 1e9:.4g} by 6N+12LTd, backbone only)  {out['tokens_per_s']:10.0f} tokens/s  "
          f"MFU {100 * out['mfu']:5.1f}%  ({wall:.0f} s incl. compile)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="torch device; auto = cuda when available, else cpu")
    p.add_argument("--peak-flops", type=float, default=None,
                   help="the accelerator's dense peak in FLOP/s for the precision used; default: 989e12 on an "
                        "H100/H200 (bf16 dense), else unknown (mfu=nan)")
    p.add_argument("--tiny", action="store_true", help="the CPU smoke size (d_model 64, 2 layers, 16 tokens)")
    p.add_argument("--heads", default=",".join(HEADS), help="comma-separated heads to measure")
    p.add_argument("--steps", type=int, default=20, help="steps per timed window")
    p.add_argument("--windows", type=int, default=3, help="log windows; the first holds the compilation")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend, or 'none' for eager")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="off CUDA only (CUDA: bf16)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    for k, v in FULL.items():
        p.add_argument("--" + k.replace("_", "-"), type=int, default=None, help=f"default {v} ({TINY[k]} with --tiny)")
    args = p.parse_args(argv)
    for k in FULL:
        if getattr(args, k) is None:
            setattr(args, k, (TINY if args.tiny else FULL)[k])
    heads = [h for h in args.heads.split(",") if h]
    bad = [h for h in heads if h not in HEADS]
    if bad or not heads:
        p.error(f"--heads: unknown {bad}; expected names from {', '.join(HEADS)}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type != "cuda" and not args.tiny and argv is None and len(sys.argv) == 1:
        args.tiny = True  # `make bench` on a machine without a GPU: the smoke size, not hours on the CPU
        for k in FULL:
            setattr(args, k, TINY[k])
        print("no GPU: running the --tiny smoke size", flush=True)
    if args.peak_flops is None:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
        args.peak_flops = PEAK_BF16.get(next((k for k in PEAK_BF16 if k in name), ""), math.nan)
    if not (math.isnan(args.peak_flops) or (math.isfinite(args.peak_flops) and args.peak_flops > 0)):
        p.error(f"--peak-flops must be a positive number, got {args.peak_flops}")
    if args.steps < 1 or args.windows < 2:
        p.error("need --steps >= 1 and --windows >= 2 (the first window holds the compilation)")
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"device {torch.cuda.get_device_name(device)}", flush=True)
    results = {h: measure(h, args, device) for h in heads}
    first = results[heads[0]]
    fields = [f"tokens_per_s={first['tokens_per_s']:.0f}", f"mfu={first['mfu']:.4f}"]
    for h in heads[1:]:
        fields += [f"tokens_per_s_{h}={results[h]['tokens_per_s']:.0f}", f"mfu_{h}={results[h]['mfu']:.4f}"]
    print("RESULT " + " ".join(fields + [f"params_m={first['params_m']:.1f}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

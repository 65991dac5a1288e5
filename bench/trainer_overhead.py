"""Trainer step time / bare PyTorch loop step time, same model, data and batch, measured in one run.

    python bench/trainer_overhead.py [--steps 200] [--rounds 3] [--device cpu]

Both loops do the same work per step (shuffled DataLoader batch, forward, backward, grad clipping,
AdamW, LR schedule); the ratio is the Trainer's bookkeeping (loss check, metrics, progress bar,
data-position tracking). Target <= 1.10 on CPU. Ends with `RESULT trainer_overhead=...`.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from latentar.train import Trainer
from latentar.train.trainer import cosine_with_warmup


class MLPTask(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
                                 nn.Linear(width, width), nn.GELU(), nn.Linear(width, 1))

    def training_step(self, batch):
        x, y = batch
        return nn.functional.mse_loss(self.net(x).squeeze(-1), y)


def bare_loop(task, data, steps, batch_size, device):
    task.to(device).train()
    opt = torch.optim.AdamW(task.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(0, steps, 0.1))
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)
    it, done = iter(loader), 0
    t0 = time.perf_counter()
    while done < steps:
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        loss = task.training_step((x.to(device), y.to(device)))
        loss.backward()
        nn.utils.clip_grad_norm_(task.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        done += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def trainer_loop(task, data, steps, batch_size, device):
    tr = Trainer(max_steps=steps, batch_size=batch_size, lr=1e-3, device=str(device), progress=True,
                 log_every=10, precision="fp32", handle_signals=True)
    t0 = time.perf_counter()
    tr.fit(task, data)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(4096, 64, generator=g), torch.randn(4096, generator=g))
    ratios = []
    for r in range(args.rounds + 1):  # round 0 warms up both paths; the order alternates per round
        times = {}
        for name in (("bare", "trainer") if r % 2 else ("trainer", "bare")):
            torch.manual_seed(r)
            loop = bare_loop if name == "bare" else trainer_loop
            times[name] = loop(MLPTask(args.width), data, args.steps, args.batch_size, device)
        t_bare, t_tr = times["bare"], times["trainer"]
        if r:
            ratios.append(t_tr / t_bare)
            print(f"round {r}: bare {t_bare * 1e3:.2f} ms/step, Trainer {t_tr * 1e3:.2f} ms/step, ratio {t_tr / t_bare:.3f}")
    ratio = statistics.median(ratios)
    print(f"RESULT trainer_overhead={ratio:.3f}")


if __name__ == "__main__":
    main()

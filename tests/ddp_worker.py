"""Run by tests/test_trainer.py and tests/test_resume_kill.py under `torchrun --nproc_per_node=2`
(or alone): trains TinyTask for 12 steps and saves each rank's results to ``OUT.rank<r>.pt``.

    ddp_worker.py OUT BATCH            -> the parameters (dropout 0, no checkpoints)
    ddp_worker.py OUT BATCH --dropout P --run-dir DIR [--stall-at K] [--init-seed S] [--straight-dir DIR2]
        -> checkpoints every 4 steps in DIR (resuming what is there); with --stall-at, rank 0 writes
           DIR/reached at step K and waits to be killed. Saves {params, rng (the final torch RNG
           state), loss, start_step, last_mask (the dropout mask of the last step)}; with
           --straight-dir, then also a fresh uninterrupted run in DIR2 (same processes, so one
           launch gives both) to ``OUT-straight.rank<r>.pt``.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from tiny_task import make_task, tiny_data  # noqa: E402

from latentar.train import Trainer  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("batch_size", type=int)
parser.add_argument("--dropout", type=float, default=0.0)
parser.add_argument("--run-dir", default=None)
parser.add_argument("--stall-at", type=int, default=None)
parser.add_argument("--init-seed", type=int, default=0)
parser.add_argument("--straight-dir", default=None)
args = parser.parse_args()
rank = int(os.environ.get("RANK", 0))
torch.set_num_threads(1)
KW = dict(max_steps=12, batch_size=args.batch_size, lr=0.05, device="cpu", progress=False, seed=3)

if args.run_dir is None:
    task = make_task(dropout=args.dropout)
    Trainer(**KW).fit(task, tiny_data())
    torch.save({k: v.clone() for k, v in task.state_dict().items()}, f"{args.out}.rank{rank}.pt")
    sys.exit(0)


def train(run_dir: str, init_seed: int, stall_at: int | None, out: str) -> None:
    task = make_task(seed=init_seed, dropout=args.dropout)
    seen: dict = {}

    def on_train_step_start(trainer):
        seen.setdefault("start_step", trainer.step)
        if trainer.step == stall_at and rank == 0:
            (Path(run_dir) / "reached").write_text(str(os.getpid()))
            time.sleep(600)

    def record_mask(module, inputs, output):
        seen["last_mask"] = (output == 0) & (inputs[0] != 0)

    task.on_train_step_start = on_train_step_start
    task.net[2].register_forward_hook(record_mask)
    result = Trainer(**KW, out_dir=run_dir, ckpt_every=4, log_every=1).fit(task, tiny_data())
    torch.save({"params": {k: v.clone() for k, v in task.state_dict().items()}, "rng": torch.get_rng_state(),
                "loss": result["loss"], **seen}, f"{out}.rank{rank}.pt")


train(args.run_dir, args.init_seed, args.stall_at, args.out)
if args.straight_dir:
    train(args.straight_dir, 0, None, f"{args.out}-straight")

"""Run by tests/test_trainer.py under `torchrun --nproc_per_node=2`: trains TinyTask, saves params."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from tiny_task import make_task, tiny_data  # noqa: E402

from latentar.train import Trainer  # noqa: E402

out, batch_size = sys.argv[1], int(sys.argv[2])
task = make_task(dropout=0.0)
Trainer(max_steps=12, batch_size=batch_size, lr=0.05, device="cpu", progress=False, seed=3).fit(task, tiny_data())
if int(os.environ.get("RANK", 0)) >= 0:
    torch.save({k: v.clone() for k, v in task.state_dict().items()}, f"{out}.rank{os.environ.get('RANK', 0)}.pt")

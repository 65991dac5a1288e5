"""SIGTERM to a running `latentar` command: it stops within one training step, saves a
checkpoint, prints one line saying how to resume, and exits 130 (no traceback)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_mid_training_saves_and_says_how_to_resume(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), LATENTAR_CACHE=str(tmp_path / "cache"))
    env.pop("LATENTAR_DEBUG", None)
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "latentar.cli", "sweep", "variance", "--preset", "smoke", "--c-sigma", "0",
           "--generators", "gmm", "--strategies", "tf", "--cfg", "1", "--seeds", "1", "--tok-steps", "10",
           "--steps", "100000", "--out", str(out), "--quiet"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 400
    metrics = []
    while time.time() < deadline and p.poll() is None:  # wait until the generator is training
        metrics = [m for m in out.glob("cells/*/train/metrics.jsonl") if m.stat().st_size > 0]
        if metrics:
            break
        time.sleep(0.5)
    assert metrics, f"the generator never started training (rc={p.poll()})"
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert time.time() - t0 < 30  # a smoke step is milliseconds; saving and exiting take a few seconds
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    m = re.fullmatch(r"latentar sweep variance: interrupted at step (\d+), checkpoint saved; "
                     r"rerun the same command to resume", last)
    assert m, last
    ckpt = metrics[0].parent / "checkpoint.pt"
    assert torch.load(ckpt, weights_only=True)["step"] == int(m.group(1))

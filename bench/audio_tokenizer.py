"""Audio tokenizer training step: ms per step (forward + backward + Adam) on one CPU thread and peak
RSS, old configuration vs new, measured side by side on the same machine in one run.

    .venv/bin/python bench/audio_tokenizer.py              # about 1-2 min on a shared 2-core box
    .venv/bin/python bench/audio_tokenizer.py --profile    # plus a torch.profiler table per config

Configurations (SigmaVAE, latent_dim 16, mel_weight 1, L1 + multi-resolution log-mel loss):

* ``old``: the quick sweep's speech tokenizer before issue 14: SEANet layout (``patch=False``: stem,
  residual unit and strided conv at the full sample rate), channels (32, 64, 128, 256), strides
  (2, 4, 5, 8) = hop 320, 24 kHz (75 frames/s), 1 s clips, mel n_ffts (256, 512, 1024), batch 128.
  One such step takes minutes, so it is timed at ``--old-batch`` (default 8) and scaled linearly to
  128 (the work and the activations are linear in the batch; the weights are not, so the scaled RSS
  is an upper bound on the activations' share only).
* ``new``: patched first stage (``patch=True``: the first stride is a reshape, nothing runs at the
  sample rate), channels (16, 32, 64, 128), strides (4, 4, 4, 4) = hop 256, 16 kHz (62.5 frames/s;
  2.048 s clips give the AR model 128 frames, 1.024 s give 64), trained on random 0.512 s crops
  (8192 samples = 32 frames), mel n_ffts (256, 512, 1024), batch 16.

Each configuration runs in its own subprocess (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is then
that configuration's peak), which also holds a training-set tensor of the full speech corpus's size
(1,536 clips at the configuration's clip length), as a sweep worker does. Rounds alternate old / new
and each figure is the median over rounds of the median step time inside a round, so machine load
hits both alike. ``speedup`` is old quick-preset step / new step; ``sample_speedup`` compares the
time per audio sample processed (the architecture alone, without the smaller batch and crops).

Ends with ``RESULT audio_step_ms=... audio_peak_rss_mb=... speedup=...``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

CORPUS_CLIPS = 1536
CONFIGS: dict[str, dict] = {
    "old": dict(patch=False, channels=(32, 64, 128, 256), strides=(2, 4, 5, 8), sample_rate=24000,
                mel_n_ffts=(256, 512, 1024), crop=24000, clip=24000, batch=128),
    "new": dict(patch=True, channels=(16, 32, 64, 128), strides=(4, 4, 4, 4), sample_rate=16000,
                mel_n_ffts=(256, 512, 1024), crop=8192, clip=32768, batch=16),
}


def build(cfg: dict):
    """A SigmaVAE with ``cfg``'s networks (``patch`` swaps in the chosen encoder / decoder layout)."""
    import torch

    from latentar.tokenizers import SigmaVAE
    from latentar.tokenizers.audio_net import AudioDecoder, AudioEncoder

    torch.manual_seed(0)
    tok = SigmaVAE(modality="audio", in_channels=1, latent_dim=16, mel_weight=1.0, channels=cfg["channels"],
                   strides=cfg["strides"], sample_rate=cfg["sample_rate"], mel_n_ffts=cfg["mel_n_ffts"])
    args = (list(cfg["channels"]), list(cfg["strides"]), 1, False)
    tok.encoder = AudioEncoder(1, tok.latent_dim * tok.stats_per_latent, *args, patch=cfg["patch"])
    tok.decoder = AudioDecoder(tok.latent_dim, 1, *args, patch=cfg["patch"])
    return tok


def child(cfg: dict, batch: int, steps: int, profile: bool) -> dict:
    """Run in a fresh process: time ``steps`` training steps; phases; peak RSS."""
    import resource

    import torch

    from latentar.data.audio_io import RandomCrops

    torch.set_num_threads(1)
    tok = build(cfg)
    opt = torch.optim.Adam(tok.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    train = 0.1 * torch.randn(CORPUS_CLIPS, 1, cfg["clip"], generator=gen)  # a corpus-sized training set
    crops = RandomCrops(train, cfg["crop"], generator=1)
    idx = torch.randint(0, CORPUS_CLIPS, (steps + 1, batch), generator=gen)

    def step(i: int, phases: dict | None = None) -> None:
        x = torch.stack([crops[int(j)] for j in idx[i]])
        t0 = time.perf_counter()
        loss, _ = tok.loss(x)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if phases is not None:
            for k, v in (("forward", t1 - t0), ("backward", t2 - t1), ("adam", t3 - t2)):
                phases.setdefault(k, []).append(v)

    step(0)  # warm-up: allocator, oneDNN primitives
    phases: dict[str, list[float]] = {}
    times = []
    for i in range(1, steps + 1):
        t = time.perf_counter()
        step(i, phases)
        times.append(time.perf_counter() - t)
    # The mel term alone (forward + backward), to split the forward / backward figures.
    x = torch.stack([crops[int(j)] for j in idx[0]])
    x_hat = (x + 0.01 * torch.randn_like(x)).requires_grad_()
    t = time.perf_counter()
    tok.mel_loss(x_hat, x).backward()
    mel = time.perf_counter() - t
    out = {"step_s": statistics.median(times), "mel_s": mel,
           "phases_s": {k: statistics.median(v) for k, v in phases.items()},
           "params": sum(p.numel() for p in tok.parameters()),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof
        with prof(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
            step(0)
        out["profile"] = p.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=28, max_shapes_column_width=50)
    return out


def run_child(name: str, batch: int, steps: int, profile: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, "--child", name, "--batch", str(batch), "--steps", str(steps)]
    if profile:
        cmd.append("--profile")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {name!r} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="alternating old / new rounds (default 2)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round after one warm-up (default 3)")
    p.add_argument("--old-batch", type=int, default=8, help="batch at which the old config is timed (default 8)")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table per configuration")
    p.add_argument("--child", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(CONFIGS[args.child], args.batch, args.steps, args.profile)))
        return 0

    batches = {"old": args.old_batch, "new": CONFIGS["new"]["batch"]}
    res: dict[str, list[dict]] = {"old": [], "new": []}
    for r in range(args.rounds):
        for name in ("old", "new"):
            res[name].append(run_child(name, batches[name], args.steps, args.profile and r == 0))
    summary = {}
    for name, rows in res.items():
        cfg = CONFIGS[name]
        scale = cfg["batch"] / batches[name]
        step = statistics.median(r["step_s"] for r in rows)
        samples = batches[name] * cfg["crop"]
        summary[name] = dict(
            step_ms=1000 * step * scale, measured_ms=1000 * step, us_per_sample=1e6 * step / samples,
            mel_ms=1000 * statistics.median(r["mel_s"] for r in rows) * scale,
            phases_ms={k: 1000 * scale * statistics.median(r["phases_s"][k] for r in rows) for k in rows[0]["phases_s"]},
            rss_mb=max(r["peak_rss_mb"] for r in rows), params=rows[0]["params"])
        hop = 1
        for s in cfg["strides"]:
            hop *= s
        s = summary[name]
        print(f"{name}: {'SEANet' if not cfg['patch'] else 'patched'} channels {cfg['channels']} strides {cfg['strides']} "
              f"(hop {hop}, {cfg['sample_rate'] / hop:g} frames/s), {cfg['sample_rate'] // 1000} kHz, "
              f"{s['params'] / 1e6:.2f}M params, batch {cfg['batch']} x {cfg['crop']} samples "
              f"({cfg['crop'] / cfg['sample_rate']:.3f} s, {cfg['crop'] // hop} frames)")
        note = f" (timed at batch {batches[name]}: {s['measured_ms']:.0f} ms, scaled x{scale:g})" if scale != 1 else ""
        ph = ", ".join(f"{k} {v:.0f}" for k, v in s["phases_ms"].items())
        print(f"    step {s['step_ms']:9.0f} ms{note}; {ph} ms; of which mel loss fwd+bwd {s['mel_ms']:.0f} ms; "
              f"{s['us_per_sample']:.2f} us per sample; peak RSS {s['rss_mb']:.0f} MB at batch {batches[name]}")
        if args.profile and "profile" in rows[0]:
            print(rows[0]["profile"])
    old, new = summary["old"], summary["new"]
    speedup = old["step_ms"] / new["step_ms"]
    sample_speedup = old["us_per_sample"] / new["us_per_sample"]
    print(f"new vs old: {speedup:.0f}x faster per step, {sample_speedup:.1f}x per audio sample")
    print(f"RESULT audio_step_ms={new['step_ms']:.0f} audio_peak_rss_mb={new['rss_mb']:.0f} speedup={speedup:.1f} "
          f"sample_speedup={sample_speedup:.1f} old_step_ms={old['step_ms']:.0f} old_peak_rss_mb_at_batch{batches['old']}="
          f"{old['rss_mb']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

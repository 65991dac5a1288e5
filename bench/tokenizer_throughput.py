"""Tokenizer throughput: encode + decode per second in fp32 and under bf16 autocast, as a ratio.

    .venv/bin/python bench/tokenizer_throughput.py                    # CPU, 1 thread, about 30 s
    .venv/bin/python bench/tokenizer_throughput.py --device cuda      # the same on a GPU

Models: the default presets, SigmaVAE(modality="image", latent_dim=4) on 8x8 digits (channels
[32, 64], 8x8 -> 4x4) and SigmaVAE(modality="audio", latent_dim=16) on 1 s clips at 24 kHz
(channels [32, 64, 128, 256], hop 320 -> 75 latent frames per second). One unit of work is
``decode(encode(x))`` under ``torch.inference_mode``. fp32 and bf16 are timed in interleaved
rounds, and each ratio is the median over rounds of (bf16 rate / fp32 rate in the same round), so
machine load cancels. Rates: images/s and latent frames/s (frames = 75 per second of audio).
On a CPU with AMX / AVX512-BF16 (Sapphire Rapids and later) bf16 autocast is faster; without
them oneDNN emulates bf16 and the ratio drops below 1.

Ends with ``RESULT device=... image_fp32_per_s=... image_bf16_over_fp32=... audio_frames_fp32_per_s=...
audio_bf16_over_fp32=...``.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from latentar.data import load_digits  # noqa: E402
from latentar.tokenizers import SigmaVAE  # noqa: E402
from latentar.train.trainer import select_device  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(model, x, device, bf16: bool, min_seconds: float) -> float:
    """Examples per second of decode(encode(x)), repeated for at least ``min_seconds``."""
    ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    n, t0 = 0, time.perf_counter()
    with torch.inference_mode(), ctx:
        while True:
            model.decode(model.encode(x), length=x.shape[-1] if model.modality == "audio" else None)
            n += 1
            sync(device)
            dt = time.perf_counter() - t0
            if dt >= min_seconds:
                return n * len(x) / dt


def compare(model, x, device, rounds: int, seconds: float) -> tuple[float, float, float]:
    """(median fp32 rate, median bf16 rate, median per-round ratio bf16 / fp32)."""
    rate(model, x, device, False, seconds / 2)  # warm-up (allocator, kernels)
    rate(model, x, device, True, seconds / 2)
    f32, b16 = [], []
    for _ in range(rounds):
        f32.append(rate(model, x, device, False, seconds))
        b16.append(rate(model, x, device, True, seconds))
    ratios = [b / f for b, f in zip(b16, f32)]
    return statistics.median(f32), statistics.median(b16), statistics.median(ratios)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0, help="minimum seconds per timed measurement")
    p.add_argument("--image-batch", type=int, default=64)
    p.add_argument("--audio-batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared 2-core box, 2 threads that wait on each "
                        "other at every barrier ran 70x slower; 0 leaves torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    torch.manual_seed(0)

    image_tok = SigmaVAE(modality="image", in_channels=1, latent_dim=4).to(device).eval()
    images = load_digits("train")[0][: args.image_batch].to(device)
    audio_tok = SigmaVAE(modality="audio", in_channels=1, latent_dim=16, sample_rate=24000).to(device).eval()
    waves = (0.1 * torch.randn(args.audio_batch, 1, 24000)).to(device)
    frames_per_clip = audio_tok.latent_shape(waves.shape)[-1]

    print(f"device {device}, threads {torch.get_num_threads()}, {args.rounds} interleaved rounds of >= {args.seconds}s")
    i32, i16, iratio = compare(image_tok, images, device, args.rounds, args.seconds)
    print(f"image  8x8 -> 4x4x4, batch {len(images)}: fp32 {i32:9.0f} images/s  bf16 {i16:9.0f} images/s  "
          f"bf16/fp32 {iratio:.2f}")
    a32, a16, aratio = compare(audio_tok, waves, device, args.rounds, args.seconds)
    a32, a16 = a32 * frames_per_clip, a16 * frames_per_clip
    print(f"audio  1 s @ 24 kHz -> {frames_per_clip} frames, batch {len(waves)}: fp32 {a32:9.0f} frames/s  "
          f"bf16 {a16:9.0f} frames/s  bf16/fp32 {aratio:.2f}  (real-time factor fp32 {a32 / frames_per_clip:.1f}x)")
    print(f"RESULT device={device.type} image_fp32_per_s={i32:.0f} image_bf16_per_s={i16:.0f} "
          f"image_bf16_over_fp32={iratio:.2f} audio_frames_fp32_per_s={a32:.0f} audio_frames_bf16_per_s={a16:.0f} "
          f"audio_bf16_over_fp32={aratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

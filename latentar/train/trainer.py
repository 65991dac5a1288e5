"""The one training loop every recipe uses.

A *task* is an ``nn.Module`` with ``training_step(batch) -> loss | (loss, metrics) | {"loss": ...}``.
The Trainer owns everything else: device selection (CUDA, then MPS, then CPU), bf16 autocast on
CUDA, optional ``torch.compile``, DDP under ``torchrun`` (gloo on CPU), gradient accumulation and
clipping, AdamW with warmup + cosine decay, optional EMA, logged metrics (JSONL, TensorBoard, and
inside a sweep cell run with ``--wandb`` the cell's W&B run: ``_MetricsLogger``'s sinks), a progress
bar (inside a sweep cell only with ``--verbose``; the cell's line in the sweep's bar shows the step
either way, see ``latentar.train.reporting``), a clear error on a non-finite loss, and atomic
checkpoints that resume exactly (model, optimizer, scheduler, EMA, every rank's RNG states, data
position, and whatever the task keeps in its ``get_extra_state``), also after a ``kill -9``: the
checkpoint loads with ``weights_only=True``, orphaned temporary files are removed, and
``metrics.jsonl`` is cut back to the checkpoint's step.
SIGINT / SIGTERM stop the run within one step (under DDP: at the next log or checkpoint step, where
the ranks agree) and save a checkpoint before exiting. The step itself reads nothing back to the
host: loss, metrics, the gradient norm and the NaN check stay on the device until the log step.

    trainer = Trainer(max_steps=2000, batch_size=64, lr=1e-3, out_dir="runs/x")
    trainer.fit(model, dataset)
"""
from __future__ import annotations

import contextlib
import json
import math
import numbers
import signal
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from latentar.pretrained import load_state_checked
from latentar.train.checkpoint import (atomic_save, atomic_write_text, load_checkpoint, remove_orphans, rng_state,
                                       set_rng_state)
from latentar.train.distributed import all_gather, all_reduce_mean, any_rank, barrier, init_distributed
from latentar.train.ema import EMA
from latentar.train.reporting import report_status, show_bars, wandb_sink
from latentar.train.sampler import ResumableSampler

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
CHECKPOINT_VERSION = 2
STATUS_EVERY_S = 1.0   # how often a fit inside a sweep cell updates the cell's line in the sweep's bar


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after SIGINT/SIGTERM once the current step finished and a checkpoint was saved."""

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"training interrupted at step {step}" + (f"; checkpoint saved to {checkpoint}" if checkpoint else ""))
        self.step, self.checkpoint = step, checkpoint


def select_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; anything else is passed to ``torch.device``."""
    if str(device) != "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} requested but CUDA is not available; use device='auto' or 'cpu'")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def move_to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [move_to(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def split_output(out: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
    """Normalise what ``training_step`` returned into (loss, metrics). Tensor metrics stay tensors
    (detached, reduced to a scalar on their device): reading them is the caller's choice."""
    if isinstance(out, torch.Tensor):
        loss, metrics = out, {}
    elif isinstance(out, Mapping):
        if "loss" not in out:
            raise TypeError(f"training_step returned a dict without a 'loss' key: {sorted(out)}")
        loss, metrics = out["loss"], {k: v for k, v in out.items() if k != "loss"}
    elif isinstance(out, (tuple, list)) and len(out) == 2:
        loss, metrics = out
    else:
        raise TypeError(f"training_step must return a loss tensor, (loss, metrics) or a dict with 'loss'; got {type(out)}")
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise TypeError(f"training_step's loss must be a scalar tensor, got {getattr(loss, 'shape', type(loss))}")
    return loss, {k: v.detach().float().mean() if isinstance(v, torch.Tensor) else float(v) for k, v in metrics.items()}


class _Window:
    """Per-step loss and metrics summed where they live (device tensors stay on the device), read
    back to Python once per log step: the hot loop has no device-to-host copy. A non-finite loss is
    flagged on the device with its step and micro-batch and raised at the next read."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, int] = {}
        self.bad = torch.full((2,), -1, dtype=torch.long, device=device)  # (step, micro) of the first NaN/inf

    def add(self, values: Mapping[str, torch.Tensor | float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def flag_nonfinite(self, loss: torch.Tensor, step: int, micro: int) -> None:
        first = (~torch.isfinite(loss.detach())) & (self.bad[0] < 0)
        self.bad = torch.where(first, torch.tensor([step, micro], device=self.device), self.bad)

    def first_nonfinite(self) -> tuple[int, int] | None:
        """(step, micro-batch) of the first non-finite loss since the start (one host read)."""
        step, micro = self.bad.tolist()
        return None if step < 0 else (step, micro)

    def read(self) -> dict[str, float]:
        """The window's means as Python floats (one host read for all tensors), then an empty window."""
        keys = [k for k, v in self.sums.items() if isinstance(v, torch.Tensor)]
        values = torch.stack([self.sums[k].float() for k in keys]).tolist() if keys else []
        out = {k: float(self.sums[k]) / self.counts[k] for k in self.sums if k not in keys}
        out.update({k: v / self.counts[k] for k, v in zip(keys, values)})
        self.sums, self.counts = {}, {}
        return out


def cosine_with_warmup(warmup_steps: int, max_steps: int, min_lr_ratio: float):
    """lr multiplier: linear warmup to 1, then cosine decay to ``min_lr_ratio`` at ``max_steps``."""
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, max_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


class _StepModule(nn.Module):
    """Routes ``forward`` to ``task.training_step`` so DDP and torch.compile see one call."""

    def __init__(self, task: nn.Module):
        super().__init__()
        self.task = task

    def forward(self, batch):
        return self.task.training_step(batch)


class Trainer:
    """One loop for every model; see the module docstring. Arguments map one-to-one onto the
    ``trainer`` Hydra config group.

    ``batch_size`` is per process and per micro-step: the global batch of one optimizer step is
    ``batch_size * grad_accum * world_size``.
    """

    def __init__(self, max_steps: int = 1000, batch_size: int = 32, lr: float = 3e-4,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.95),
                 warmup_steps: int = 0, min_lr_ratio: float = 0.1, grad_clip: float | None = 1.0,
                 grad_accum: int = 1, ema_decay: float | None = None, precision: str = "auto",
                 compile: bool | str | Any = False, device: str = "auto", out_dir: str | None = None,
                 ckpt_every: int = 0, log_every: int = 10, seed: int = 0, progress: bool = True,
                 resume: bool = True, shuffle: bool = True, num_workers: int = 0,
                 find_unused_parameters: bool = False, tensorboard: bool = False,
                 handle_signals: bool = True, desc: str = "train"):
        if max_steps < 0 or batch_size < 1 or grad_accum < 1:
            raise ValueError(f"need max_steps >= 0, batch_size >= 1, grad_accum >= 1; got {max_steps}, {batch_size}, {grad_accum}")
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
        _check_optimizer_args(lr, betas, weight_decay, warmup_steps, min_lr_ratio, grad_clip, ema_decay)
        self.max_steps, self.batch_size, self.lr = int(max_steps), int(batch_size), float(lr)
        self.weight_decay, self.betas = float(weight_decay), tuple(betas)
        self.warmup_steps, self.min_lr_ratio = int(warmup_steps), float(min_lr_ratio)
        self.grad_clip, self.grad_accum, self.ema_decay = grad_clip, int(grad_accum), ema_decay
        self.compile, self.ckpt_every, self.log_every = compile, int(ckpt_every), max(1, int(log_every))
        self.seed, self.show_progress, self.resume, self.shuffle = int(seed), progress, resume, shuffle
        self.num_workers, self.find_unused_parameters = num_workers, find_unused_parameters
        self.tensorboard, self.handle_signals, self.desc = tensorboard, handle_signals, desc
        self.out_dir = Path(out_dir) if out_dir else None
        self.device = select_device(device)
        self.dist = init_distributed(self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        self.precision = precision
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.history: list[dict[str, float]] = []
        self.task: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self.ema: EMA | None = None
        self._stop_signal: int | None = None

    # -- small public helpers used by tasks and recipes -------------------------------------------
    @property
    def progress(self) -> float:
        """Training progress in [0, 1] (what schedules such as scheduled sampling's depend on)."""
        return self.step / self.max_steps if self.max_steps else 1.0

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def ema_model(self):
        """Use the EMA weights inside the block (a no-op without ``ema_decay``)."""
        if self.ema is None:
            yield self.task
        else:
            with self.ema.swapped_in(self.task) as m:
                yield m

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir else None

    # -- setup ------------------------------------------------------------------------------------
    def _build_optimizer(self, task: nn.Module) -> None:
        params = [p for p in task.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(task).__name__} has no trainable parameters")
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = self.device.type in ("cuda", "cpu")  # one kernel, and no per-parameter step.item()
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr, betas=self.betas, fused=fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_with_warmup(self.warmup_steps, self.max_steps, self.min_lr_ratio))
        self.ema = EMA(task, self.ema_decay) if self.ema_decay is not None else None

    def _resume_signature(self) -> dict[str, int]:
        return {"batch_size": self.batch_size, "grad_accum": self.grad_accum,
                "world_size": self.dist.world_size, "seed": self.seed}

    def _optimizer_settings(self) -> dict[str, Any]:
        """What the optimizer and the lr schedule were built from; a resume must not change them
        (the optimizer state would silently override lr / betas / weight decay)."""
        return {"lr": self.lr, "betas": [float(b) for b in self.betas], "weight_decay": self.weight_decay,
                "warmup_steps": self.warmup_steps, "min_lr_ratio": self.min_lr_ratio,
                "grad_clip": float(self.grad_clip) if self.grad_clip else 0.0}

    def state_dict(self, rng_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The checkpoint: tensors and plain containers only (it loads with ``weights_only=True``).
        ``rng_states``: every rank's :func:`rng_state`, in rank order (default: this process's)."""
        return {
            "version": CHECKPOINT_VERSION, "step": self.step, "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch, "max_steps": self.max_steps,
            "model": self.task.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
            "rng": rng_states if rng_states is not None else [rng_state()],
            "signature": self._resume_signature(), "settings": self._optimizer_settings(),
            "model_class": type(self.task).__name__,
        }

    def save_checkpoint(self) -> Path | None:
        """Write the checkpoint atomically: every rank's RNG state is gathered, rank 0 writes, the
        others wait (a collective: call it on every rank)."""
        path = self.checkpoint_path
        if path is not None:
            rngs = all_gather(rng_state())
            if self.dist.is_main:
                atomic_save(self.state_dict(rngs), path)
        barrier()
        return path

    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint {path} is not a latentar Trainer checkpoint of version {CHECKPOINT_VERSION} "
                             f"(got version {ckpt.get('version') if isinstance(ckpt, dict) else type(ckpt).__name__}); "
                             f"use another out_dir or resume=False")
        if ckpt.get("model_class") != type(self.task).__name__:
            raise ValueError(f"checkpoint {path} was written for a {ckpt.get('model_class')}, not a "
                             f"{type(self.task).__name__}; use another out_dir or resume=False")
        if ckpt["signature"] != self._resume_signature():
            raise ValueError(f"checkpoint {path} was written with {ckpt['signature']}, but this run uses "
                             f"{self._resume_signature()}; exact resumption needs the same values")
        now = self._optimizer_settings()
        differ = [f"{k}: checkpoint {ckpt['settings'].get(k)!r}, this run {v!r}" for k, v in now.items()
                  if ckpt["settings"].get(k) != v]
        if differ:
            raise ValueError(f"checkpoint {path} was written with other optimizer settings ({'; '.join(differ)}); "
                             f"resume with the checkpoint's values, or use another out_dir / resume=False")
        if ckpt["step"] > self.max_steps:
            raise ValueError(f"checkpoint {path} has already done {ckpt['step']} steps, more than "
                             f"max_steps={self.max_steps}; pass max_steps >= {ckpt['step']} or use another out_dir")
        if ckpt["max_steps"] != self.max_steps and ckpt["step"] < self.max_steps and self.dist.is_main:
            warnings.warn(f"resuming {path} (written for max_steps={ckpt['max_steps']}) with "
                          f"max_steps={self.max_steps}: the cosine lr schedule changes from step {ckpt['step']} on, "
                          f"so the result matches a straight run of neither length", stacklevel=3)
        load_state_checked(self.task, ckpt["model"], source=f"checkpoint {path}")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.ema is not None:
            if ckpt["ema"] is None:
                raise ValueError(f"checkpoint {path} has no EMA state but ema_decay={self.ema_decay}")
            self.ema.load_state_dict(ckpt["ema"])
        set_rng_state(ckpt["rng"][self.dist.rank])  # each rank its own stream (world size checked above)
        self.step, self.epoch, self.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]

    def _truncate_metrics(self) -> None:
        """Keep the ``metrics.jsonl`` records of steps <= ``self.step`` (rank 0, atomically): the steps
        a killed run logged after its last checkpoint are redone, and must appear once."""
        path = self.out_dir / METRICS_NAME
        if not path.is_file():
            return
        text = path.read_text()
        kept = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill mid-write
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), (int, float)) and record["step"] <= self.step:
                kept.append(line + "\n")
        if "".join(kept) != text:
            atomic_write_text("".join(kept), path)

    # -- data -------------------------------------------------------------------------------------
    def _batches(self, dataset: Dataset, sampler: ResumableSampler):
        """Yield batches forever from the current data position, tracking (epoch, batch_in_epoch)."""
        while True:
            sampler.set_position(self.epoch, self.batch_in_epoch)
            # A private generator: creating a loader iterator must not consume the global RNG,
            # or a run resumed mid-epoch would see different dropout/noise than a straight run.
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            loader = DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                                num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                                generator=gen)
            for batch in loader:
                self.batch_in_epoch += 1
                yield move_to(batch, self.device)
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    # -- signals ----------------------------------------------------------------------------------
    def _stop_requested(self) -> bool:
        """Whether SIGINT / SIGTERM arrived (on any rank, so all ranks stop at the same step)."""
        return any_rank(self._stop_signal is not None, self.device)

    def _interrupt(self) -> None:
        path = self.save_checkpoint()
        raise TrainingInterrupted(self.step, path)

    @contextlib.contextmanager
    def _signals(self):
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        def handler(signum, frame):
            self._stop_signal = signum
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, task: nn.Module, train_data: Dataset, val_data: Dataset | None = None,
            val_every: int = 0) -> dict[str, Any]:
        if not hasattr(task, "training_step"):
            raise TypeError(f"{type(task).__name__} has no training_step(batch) method")
        self.task = task.to(self.device)
        self._build_optimizer(self.task)
        self.step, self.epoch, self.batch_in_epoch, self._stop_signal = 0, 0, 0, None
        torch.manual_seed(self.seed + self.dist.rank)
        if self.out_dir is not None and self.dist.is_main:  # left by a kill during a write
            remove_orphans(self.checkpoint_path)
            remove_orphans(self.out_dir / METRICS_NAME)
        if self.resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            self._load(self.checkpoint_path)
        if self.out_dir is not None and self.dist.is_main:
            self._truncate_metrics()
        if self.step >= self.max_steps:
            return self._result()

        step_module: nn.Module = _StepModule(self.task)
        if self.dist.enabled:
            step_module = DDP(step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                              find_unused_parameters=self.find_unused_parameters)
        # compile: True = inductor, or a backend name ("aot_eager" checks the graph without a C++ compiler)
        run = step_module if not self.compile else torch.compile(
            step_module, backend="inductor" if self.compile is True else self.compile)
        sampler = ResumableSampler(len(train_data), self.batch_size, self.seed, self.shuffle,
                                   self.dist.rank, self.dist.world_size)
        batches = self._batches(train_data, sampler)
        logger = _MetricsLogger(self.out_dir, self.dist.is_main, self.tensorboard, type(self.task).__name__)
        # inside a sweep cell the sweep's --verbose decides (latentar.train.reporting), else `progress`
        bar = tqdm(total=self.max_steps, initial=self.step, desc=self.desc, dynamic_ncols=True,
                   disable=not (show_bars(self.show_progress) and self.dist.is_main), leave=False)
        status = _Status(self.desc, self.max_steps, self.dist.is_main)
        status.update(self.step, force=True)
        window = _Window(self.device)
        t0, samples = time.perf_counter(), 0
        self.task.train()
        try:
            with self._signals():
                while self.step < self.max_steps:
                    if hasattr(self.task, "on_train_step_start"):
                        # A hook must be idempotent per step: a stop right after it saves step
                        # `self.step`, and the resumed run calls it again at that step.
                        self.task.on_train_step_start(self)
                        if self._stop_requested():  # e.g. during BASH's pool regeneration
                            self._interrupt()
                    window.add(self._optimizer_step(run, step_module, batches, window))
                    self.step += 1
                    samples += self.batch_size * self.grad_accum * self.dist.world_size
                    bar.update(1)
                    status.update(self.step)
                    log = self.step % self.log_every == 0 or self.step == self.max_steps
                    save = bool(self.ckpt_every) and self.step % self.ckpt_every == 0
                    if log:
                        self._raise_nonfinite(window)
                        dt = time.perf_counter() - t0
                        record = {"step": self.step, **window.read(),
                                  "lr": self.scheduler.get_last_lr()[0], "samples_per_s": samples / max(dt, 1e-9)}
                        record["loss"] = all_reduce_mean(record["loss"], self.device)
                        if val_data is not None and val_every and self.step % val_every == 0:
                            record.update(self.evaluate(val_data))
                        self.history.append(record)
                        logger.log(record)
                        bar.set_postfix(loss=f"{record['loss']:.4g}", sps=f"{record['samples_per_s']:.0f}")
                        status.loss = record["loss"]
                        t0, samples = time.perf_counter(), 0
                    # One process: a signal is a Python flag (no sync). Under DDP, agreeing on it is a
                    # collective, so ranks compare flags only at log and checkpoint steps.
                    if (not self.dist.enabled or log or save) and self._stop_requested():
                        self._raise_nonfinite(window)  # never save weights a NaN already reached
                        self._interrupt()
                    if save:
                        self._raise_nonfinite(window)
                        self.save_checkpoint()
            self._raise_nonfinite(window)
            if self.out_dir is not None:
                self.save_checkpoint()
        finally:
            bar.close()
            logger.close()
            status.clear()
        return self._result()

    def _raise_nonfinite(self, window: _Window) -> None:
        """Raise the FloatingPointError of the first non-finite loss flagged so far (one host read)."""
        bad = window.first_nonfinite()
        if bad is not None:
            step, micro = bad
            lr = self.lr * cosine_with_warmup(self.warmup_steps, self.max_steps, self.min_lr_ratio)(step)
            raise FloatingPointError(
                f"non-finite loss at step {step} (micro-batch {micro}); lower lr (it was {lr:.3g}), "
                f"enable grad_clip, or check the data")

    def _optimizer_step(self, run: nn.Module, step_module: nn.Module, batches,
                        window: _Window) -> dict[str, torch.Tensor | float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns the loss and metrics as
        device tensors (no host read: the window reads them at the log step)."""
        total, metrics_sum = 0.0, {}
        for micro in range(self.grad_accum):
            batch = next(batches)
            last = micro == self.grad_accum - 1
            sync = contextlib.nullcontext() if (last or not self.dist.enabled) else step_module.no_sync()
            with sync:
                with self.autocast():
                    loss, metrics = split_output(run(batch))
                window.flag_nonfinite(loss, self.step, micro)
                (loss / self.grad_accum).backward()
            total = total + loss.detach().float() / self.grad_accum
            for k, v in metrics.items():
                metrics_sum[k] = metrics_sum.get(k, 0.0) + v / self.grad_accum
        if self.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.task.parameters(), self.grad_clip)
            metrics_sum["grad_norm"] = grad_norm.detach()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.task)
        return {"loss": total, **metrics_sum}

    @torch.no_grad()
    def evaluate(self, data: Dataset, max_batches: int | None = None) -> dict[str, float]:
        """Mean of ``validation_step`` (or ``training_step``) over ``data``, under the EMA weights."""
        fn = getattr(self.task, "validation_step", None) or self.task.training_step
        loader = DataLoader(data, batch_size=self.batch_size, shuffle=False)
        sums: dict[str, float] = {}
        n = 0
        was_training = self.task.training
        self.task.eval()
        with self.ema_model():
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                with self.autocast():
                    loss, metrics = split_output(fn(move_to(batch, self.device)))
                for k, v in {"loss": float(loss), **metrics}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                n += 1
        self.task.train(was_training)
        return {f"val/{k}": v / max(n, 1) for k, v in sums.items()}

    def _result(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        return {"step": self.step, "loss": last.get("loss"), "metrics": last, "history": self.history}


def _check_optimizer_args(lr, betas, weight_decay, warmup_steps, min_lr_ratio, grad_clip, ema_decay) -> None:
    """Refuse optimizer settings that silently train badly (a negative grad_clip flips the update)."""
    def number(v) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool)
    if not (number(lr) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    try:
        betas = tuple(betas)  # a tuple, list or Hydra ListConfig
    except TypeError:
        pass
    if not isinstance(betas, tuple) or len(betas) != 2 or not all(number(b) and 0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    if not (number(weight_decay) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if not (number(warmup_steps) and warmup_steps >= 0 and warmup_steps == int(warmup_steps)):
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    if not (number(min_lr_ratio) and 0.0 <= min_lr_ratio <= 1.0):
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
    if grad_clip is not None and not (number(grad_clip) and grad_clip >= 0):
        raise ValueError(f"grad_clip must be a number >= 0 (0 or None: no clipping), got {grad_clip!r}")
    if ema_decay is not None and not (number(ema_decay) and 0.0 < ema_decay < 1.0):
        raise ValueError(f"ema_decay must be in (0, 1) (None: no EMA), got {ema_decay!r}")


class _JsonlSink:
    """JSONL lines in ``metrics.jsonl`` (appended across resumes, after the file was cut back to the
    checkpoint's step)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a")

    def log(self, record: dict[str, float]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class _TensorBoardSink:
    """TensorBoard scalars in ``out_dir/tb`` (``tensorboard=True``, when the package is installed)."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter  # ImportError without the tensorboard package
        self.tb = SummaryWriter(str(folder))

    def log(self, record: dict[str, float]) -> None:
        for k, v in record.items():
            if k != "step":
                self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self.tb.close()


class _MetricsLogger:
    """Where the log records go, on rank 0: a list of sinks, each with ``log(record)`` and ``close()``:
    ``metrics.jsonl`` in ``out_dir``, TensorBoard if asked (both need an ``out_dir``), and the W&B
    run of the sweep cell this runs in, if the sweep runs with ``--wandb`` (keys ``<name>/<metric>``,
    ``name`` the task's class; see ``latentar.train.reporting``)."""

    def __init__(self, out_dir: Path | None, is_main: bool, tensorboard: bool, name: str = "train"):
        self.sinks: list[Any] = []
        if not is_main:
            return
        if out_dir is not None:
            self.sinks.append(_JsonlSink(out_dir / METRICS_NAME))
            if tensorboard:
                try:
                    self.sinks.append(_TensorBoardSink(out_dir / "tb"))
                except ImportError:
                    warnings.warn("tensorboard=True but the tensorboard package is not installed; logging JSONL only")
        wandb = wandb_sink(name)
        if wandb is not None:
            self.sinks.append(wandb)

    def log(self, record: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.log(record)

    def close(self) -> None:
        for sink in self.sinks:
            with contextlib.suppress(Exception):  # close the others too
                sink.close()


class _Status:
    """The fit's line in the sweep's bar (``"<desc> <step>/<max_steps> loss <loss>"``), at most once per
    ``STATUS_EVERY_S``; a no-op off rank 0 and outside a sweep cell (``report_status``)."""

    def __init__(self, desc: str, max_steps: int, is_main: bool):
        self.desc, self.max_steps, self.is_main = desc, max_steps, is_main
        self.loss: float | None = None
        self.last = -math.inf

    def update(self, step: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.is_main and (force or step == self.max_steps or now - self.last >= STATUS_EVERY_S):
            self.last = now
            loss = "" if self.loss is None else f" loss {self.loss:.4g}"
            report_status(f"{self.desc} {step}/{self.max_steps}{loss}")

    def clear(self) -> None:
        if self.is_main:
            report_status("")

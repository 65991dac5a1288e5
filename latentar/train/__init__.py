"""The shared training loop (see ``trainer.py``)."""
from latentar.train.checkpoint import atomic_save, load_checkpoint
from latentar.train.distributed import DistInfo, dist_info
from latentar.train.ema import EMA
from latentar.train.trainer import Trainer, TrainingInterrupted, select_device

__all__ = ["Trainer", "TrainingInterrupted", "EMA", "select_device", "atomic_save", "load_checkpoint",
           "DistInfo", "dist_info"]

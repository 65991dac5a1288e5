"""Exposure-bias strategies on the shared Trainer loop, and the exposure meter.

Strategies change the context a sequence model trains on and declare whether their targets stay
valid for it (``targets_valid``): TeacherForcing (yes), ContextNoise (yes), ScheduledSampling (no:
Huszar 2015), BASH (no, diluted), RAC (relabels its targets). ``ExposureTask(model, strategy)``
makes any of them a Trainer task; ``exposure_curve`` measures exposure bias per position.
"""
from __future__ import annotations

import importlib.util

from latentar.exposure.base import ExposureTask, SeqBatch, Strategy, unpack_batch
from latentar.exposure.bash import BASH
from latentar.exposure.context_noise import ContextNoise
from latentar.exposure.meter import ExposureCurve, exposure_curve
from latentar.exposure.scheduled_sampling import ScheduledSampling
from latentar.exposure.teacher_forcing import TeacherForcing

__all__ = ["Strategy", "ExposureTask", "SeqBatch", "unpack_batch", "TeacherForcing", "ScheduledSampling",
           "ContextNoise", "BASH", "exposure_curve", "ExposureCurve"]
if importlib.util.find_spec("latentar.exposure.rac") is not None:
    __all__.append("RAC")


def __getattr__(name: str):
    # RAC lives in its own module (written separately); import it on first use (PEP 562).
    if name == "RAC":
        from latentar.exposure.rac import RAC
        return RAC
    raise AttributeError(f"module 'latentar.exposure' has no attribute {name!r}")

"""Exposure-bias strategies on the shared Trainer loop, and the exposure meter.

Strategies change the context a sequence model trains on and declare whether their targets stay
valid for it (``targets_valid``): TeacherForcing (yes), ContextNoise (yes), ScheduledSampling (no:
Huszar 2015), BASH (no, diluted), RAC (relabels its targets with the model), Relabel (DAgger: an
expert's target for each own prefix, yes), TokenUnlikelihood (yes), SequenceLevel (REINFORCE /
MIXER on own samples, yes). ``ExposureTask(model, strategy)``
makes any of them a Trainer task; ``exposure_curve`` measures exposure bias per position.
"""
from __future__ import annotations

from latentar.exposure.base import ExposureTask, SeqBatch, Strategy, unpack_batch
from latentar.exposure.bash import BASH
from latentar.exposure.context_noise import ContextNoise
from latentar.exposure.meter import ExposureCurve, exposure_curve
from latentar.exposure.rac import RAC
from latentar.exposure.relabel import Relabel
from latentar.exposure.scheduled_sampling import ScheduledSampling
from latentar.exposure.sequence_level import SequenceLevel
from latentar.exposure.teacher_forcing import TeacherForcing
from latentar.exposure.unlikelihood import TokenUnlikelihood

__all__ = ["Strategy", "ExposureTask", "SeqBatch", "unpack_batch", "TeacherForcing", "ScheduledSampling",
           "ContextNoise", "BASH", "RAC", "Relabel", "TokenUnlikelihood", "SequenceLevel", "exposure_curve", "ExposureCurve"]

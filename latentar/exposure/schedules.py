"""Schedules for scheduled sampling: the probability p of feeding the model's own sample, over
training progress e.

Bengio et al. (2015, "Scheduled Sampling for Sequence Prediction with Recurrent Neural Networks")
anneal the probability eps_i of feeding the *ground truth* from 1 towards 0; we write the
complementary probability p = 1 - eps of feeding the *model's sample*, the quantity
``ScheduledSampling`` uses:

    linear           p = min(1, e / E)                       (E: progress at which p reaches 1)
    exponential      p = 1 - k^e                             (0 < k < 1; Bengio: eps = k^i)
    inverse_sigmoid  p = 1 / (1 + exp((c - e) / b))          (c: midpoint, b > 0: width;
                                                              Bengio: eps = k / (k + exp(i / k)))
    constant         p = p0                                  (p0 = 1: fully annealed, Huszar's limit)

``e`` is whatever the caller passes; the Trainer's ``progress`` runs from 0 to 1, so the defaults
are set for that range (linear reaches 1 at the end of training, exponential reaches 0.99 and the
inverse sigmoid is centred halfway). Pass step counts and step-sized constants to schedule in steps.
Each function returns a float in [0, 1].
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any


def _check_progress(progress: float) -> float:
    e = float(progress)
    if not math.isfinite(e) or e < 0:
        raise ValueError(f"progress must be a finite number >= 0, got {progress!r}")
    return e


def linear(progress: float, end: float = 1.0) -> float:
    """``p = min(1, e / E)`` with ``E = end`` (> 0)."""
    e = _check_progress(progress)
    if not end > 0:
        raise ValueError(f"linear schedule: end (the progress at which p reaches 1) must be > 0, got {end}")
    return min(1.0, e / end)


def exponential(progress: float, k: float = 0.01) -> float:
    """``p = 1 - k^e`` with ``0 < k < 1`` (k = 0.01 gives p = 0.99 at e = 1)."""
    e = _check_progress(progress)
    if not 0.0 < k < 1.0:
        raise ValueError(f"exponential schedule: k must lie in (0, 1), got {k}")
    return 1.0 - k ** e


def inverse_sigmoid(progress: float, c: float = 0.5, b: float = 0.1) -> float:
    """``p = 1 / (1 + exp((c - e) / b))``: p = 1/2 at e = c; b > 0 sets the width of the transition."""
    e = _check_progress(progress)
    if not b > 0:
        raise ValueError(f"inverse_sigmoid schedule: b (the width) must be > 0, got {b}")
    z = (c - e) / b
    if z > 700:  # exp would overflow; p is 0 to double precision
        return 0.0
    return 1.0 / (1.0 + math.exp(z))


def constant(progress: float, p: float = 1.0) -> float:
    """``p`` at every progress (p = 1: always the model's sample, the fully annealed limit)."""
    _check_progress(progress)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"constant schedule: p is a probability, got {p}")
    return float(p)


SCHEDULES: dict[str, Callable[..., float]] = {
    "linear": linear, "exponential": exponential, "inverse_sigmoid": inverse_sigmoid, "constant": constant,
}


def make_schedule(schedule: str | float | Callable[[float], float],
                  kwargs: Mapping[str, Any] | None = None) -> Callable[[float], float]:
    """A one-argument schedule ``progress -> p`` from a name (with ``kwargs``), a number (constant)
    or a callable (returned as is; ``kwargs`` must then be empty)."""
    kwargs = dict(kwargs or {})
    if isinstance(schedule, bool):
        raise TypeError("schedule must be a name, a probability or a callable, not a bool")
    if isinstance(schedule, (int, float)):
        if kwargs:
            raise ValueError(f"a constant schedule ({schedule}) takes no schedule_kwargs, got {sorted(kwargs)}")
        constant(0.0, float(schedule))  # validates the probability
        return partial(constant, p=float(schedule))
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; expected one of {sorted(SCHEDULES)}, "
                             f"a probability, or a callable progress -> p")
        fn = partial(SCHEDULES[schedule], **kwargs)
        try:
            fn(0.0)  # fail now, naming the bad keyword or value, not at the first training step
        except TypeError as err:
            raise ValueError(f"bad schedule_kwargs for {schedule!r}: {err}") from err
        return fn
    if callable(schedule):
        if kwargs:
            raise ValueError("schedule_kwargs only apply to a named schedule, not to a callable")
        return schedule
    raise TypeError(f"schedule must be a name in {sorted(SCHEDULES)}, a probability or a callable, "
                    f"got {type(schedule).__name__}")

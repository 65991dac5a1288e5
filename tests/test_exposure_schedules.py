"""Scheduled-sampling schedules against their formulas (recomputed independently with numpy)."""
import math

import numpy as np
import pytest

from latentar.exposure.schedules import SCHEDULES, constant, exponential, inverse_sigmoid, linear, make_schedule

POINTS = [0.0, 0.1, 0.25, 0.5, 0.8, 1.0, 1.7]


@pytest.mark.parametrize("e", POINTS)
def test_linear_matches_formula(e):
    for E in (1.0, 0.5, 2.0):
        assert linear(e, end=E) == pytest.approx(np.minimum(1.0, e / E), abs=1e-15)


@pytest.mark.parametrize("e", POINTS)
def test_exponential_matches_formula(e):
    for k in (0.01, 0.5, 0.97):
        assert exponential(e, k=k) == pytest.approx(1.0 - np.power(k, e), abs=1e-15)


@pytest.mark.parametrize("e", POINTS)
def test_inverse_sigmoid_matches_formula(e):
    for c, b in ((0.5, 0.1), (0.3, 0.05), (1.0, 0.5)):
        assert inverse_sigmoid(e, c=c, b=b) == pytest.approx(1.0 / (1.0 + np.exp((c - e) / b)), abs=1e-15)


def test_landmarks():
    assert linear(0.0) == 0.0 and linear(1.0) == 1.0 and linear(3.0) == 1.0
    assert exponential(0.0) == 0.0 and exponential(1.0, k=0.01) == pytest.approx(0.99)
    assert inverse_sigmoid(0.5, c=0.5) == pytest.approx(0.5)
    assert inverse_sigmoid(0.0, c=1e4, b=1.0) == 0.0  # no overflow far before the midpoint
    assert constant(0.3, p=1.0) == 1.0 and constant(0.9, p=0.25) == 0.25


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules_are_monotone_probabilities(name):
    fn = make_schedule(name)
    vals = [fn(e) for e in np.linspace(0, 2, 41)]
    assert all(0.0 <= v <= 1.0 for v in vals)
    assert all(b >= a - 1e-15 for a, b in zip(vals, vals[1:]))


def test_make_schedule_forms():
    assert make_schedule(0.3)(0.7) == 0.3
    assert make_schedule("linear", {"end": 0.5})(0.25) == 0.5
    assert make_schedule(lambda e: e / 2)(0.5) == 0.25


@pytest.mark.parametrize("call, match", [
    (lambda: linear(0.5, end=0.0), "end"),
    (lambda: exponential(0.5, k=1.0), "k must"),
    (lambda: inverse_sigmoid(0.5, b=0.0), "width"),
    (lambda: constant(0.5, p=1.5), "probability"),
    (lambda: linear(-0.1), "progress"),
    (lambda: linear(math.nan), "progress"),
    (lambda: make_schedule("cosine"), "unknown schedule"),
    (lambda: make_schedule("linear", {"stop": 1}), "bad schedule_kwargs"),
    (lambda: make_schedule(1.5), "probability"),
])
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()

"""The time classes of categorical step and duration heads (NumPy only; no Keras import).

A regression head trained with squared error predicts the *average* of what may come next: after
a chord tone of a chorale the next note is either struck with it (step 0 s) or a beat later
(0.5 s), and the regression says 0.2 s, so every chord comes out rolled. A categorical head
predicts a distribution over time classes instead, and sampling draws one of them.

The grid: class 0 is "0 s" (below :data:`TIME_ZERO`: struck together with the note before); the
other classes are log-spaced from 4 ms to 8 s, each about 6% wide (a time is represented to
within about +-3%, finer than a performer's timing varies); the last class holds everything
from 8 s up. :data:`TIME_VALUES` is the time each class stands for.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import MusicRNNError

TIMINGS = ("regression", "categorical")  # the kinds of step/duration head
TIME_BINS = 128  # classes per categorical timing head
TIME_ZERO = 0.004  # seconds; a time below this is class 0, "0 s"
TIME_MAX = 8.0  # seconds; the last class holds everything from here up
# TIME_EDGES[k] is where class k + 1 begins: [0, 0.004) | [0.004, 0.00425) | ... | [8, inf)
TIME_EDGES = np.geomspace(TIME_ZERO, TIME_MAX, TIME_BINS - 1).astype(np.float32)
_RATIO = (TIME_MAX / TIME_ZERO) ** (1 / (TIME_BINS - 2))  # about 1.062
# The time each class stands for: 0, then the geometric middle of each class.
TIME_VALUES = np.concatenate([
    [0.0], np.sqrt(TIME_EDGES[:-1].astype(np.float64) * TIME_EDGES[1:]),
    [TIME_MAX * math.sqrt(_RATIO)],
]).astype(np.float32)


def timing_width(timing: str) -> int:
    """Units of the step and duration heads: 1 for "regression", 128 for "categorical"."""
    if timing not in TIMINGS:
        raise MusicRNNError(f"timing must be 'regression' or 'categorical', got {timing!r}")
    return 1 if timing == "regression" else TIME_BINS


def time_classes(seconds: Any) -> np.ndarray:
    """The class (0 .. 127) of each time in seconds: how many :data:`TIME_EDGES` are <= it."""
    seconds = np.asarray(seconds, dtype=np.float32)  # as the loss compares them
    return np.searchsorted(TIME_EDGES, seconds, side="right").astype(np.int64)


def time_class_probabilities(logits: Any) -> np.ndarray:
    """Softmax of time-class logits ``(..., 128)``, float64."""
    logits = np.asarray(logits, dtype=np.float64)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def timing_point(values: Any) -> np.ndarray:
    """One time in seconds per prediction, from a timing head's output ``(..., units)``.

    A regression head's values ``(..., 1)`` come back as they are; for categorical logits
    ``(..., 128)`` the median of the predicted distribution over :data:`TIME_VALUES` (the time
    that minimises the expected absolute error), shaped ``(..., 1)``.
    """
    values = np.asarray(values)
    if values.shape[-1] == 1:
        return values
    if values.shape[-1] != TIME_BINS:
        raise MusicRNNError(f"a timing head has 1 or {TIME_BINS} outputs, got {values.shape[-1]}")
    cumulative = np.cumsum(time_class_probabilities(values), axis=-1)
    median = (cumulative < 0.5).sum(axis=-1)
    return TIME_VALUES[np.minimum(median, TIME_BINS - 1)][..., None]


def sample_time_classes(logits: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Draw one time per row of logits ``(rows, 128)`` by inverse CDF with ``uniform`` draws in
    [0, 1) ``(rows,)``; returns seconds ``(rows,)`` float32 (the classes' :data:`TIME_VALUES`).
    ``logits`` is left as it is."""
    weights = logits - logits.max(axis=1, keepdims=True)
    np.exp(weights, out=weights)
    cumulative = weights.cumsum(axis=1, out=weights)
    draw = uniform * cumulative[:, -1]
    classes = (cumulative <= draw[:, None]).sum(axis=1)
    np.minimum(classes, TIME_BINS - 1, out=classes)
    return TIME_VALUES[classes]

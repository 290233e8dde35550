"""The classes of the categorical heads: time (step, duration) and velocity (NumPy only).

A regression head trained with squared error predicts the *average* of what may come next: after
a chord tone of a chorale the next note is either struck with it (step 0 s) or a beat later
(0.5 s), and the regression says 0.2 s, so every chord comes out rolled. A categorical head
predicts a distribution over time classes instead, and sampling draws one of them.

The grid: class 0 is "0 s" (below :data:`TIME_ZERO`: struck together with the note before); the
other classes are log-spaced from 4 ms to 8 s, each about 6% wide (a time is represented to
within about +-3%, finer than a performer's timing varies); the last class holds everything
from 8 s up. :data:`TIME_VALUES` is the time each class stands for.

Velocity classes (the dynamics head, as Performance RNN's): the MIDI velocities 1-127 are cut
into :data:`VELOCITY_BINS` (32) equal classes of 4 velocities (the top one 3); a class stands for
the middle of its velocities (:func:`velocity_classes`, :func:`class_velocity`). Measured on the
168,514 notes of the MAESTRO v2 sample (124 distinct velocities): the round trip moves a velocity
by 1.00 on average and at most 2 (16 classes: 2.01 and 4; 64: 0.50 and 1), 75% of notes move at
all, and every distinct velocity shares its class with others; the classes keep 2.89 of the
4.27 nats of entropy of the raw velocities.
"""

from __future__ import annotations

import functools
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


# ---------------------------------------------------------------------------------------------
# Pitch after step: the step groups
# ---------------------------------------------------------------------------------------------
# A model with ``pitch_given_step = N`` draws the step first and then the pitch from one of N
# pitch readouts, the one of the step's group: whether a note is struck with the one before (a
# chord tone, most likely above it), a few milliseconds after it (a rolled chord, a grace note)
# or a beat later (the next melody note) says much about its pitch. Group 0 is time class 0 ("0
# s"); the others are cut at log-spaced times from 10 ms to 320 ms (the range where MAESTRO's
# steps change what comes next: on the validation pieces an interval model that also reads the
# step's group of 8 scores 3.621 nats against 3.711 without, while finer cuts gain nothing).
STEP_GROUPS_MAX = 32


def check_step_groups(groups: Any) -> int:
    """``groups`` as an int: 0 (pitch does not read the step) or 2 .. 32, or a clear error."""
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or not (
            groups == 0 or 2 <= groups <= STEP_GROUPS_MAX):
        raise MusicRNNError(f"pitch_given_step must be 0 (off) or a whole number of step groups "
                            f"from 2 to {STEP_GROUPS_MAX}, got {groups!r}")
    return int(groups)


def step_group_edges(groups: int) -> np.ndarray:
    """Where step groups 1 .. N - 1 begin, in seconds: :data:`TIME_ZERO` (the end of "0 s"),
    then ``N - 2`` log-spaced times from 10 ms to 320 ms."""
    groups = check_step_groups(groups)
    if groups < 2:
        return np.zeros(0, np.float32)
    cuts = np.geomspace(0.01, 0.32, groups - 2) if groups > 2 else np.zeros(0)
    return np.concatenate([[TIME_ZERO], cuts]).astype(np.float32)


@functools.lru_cache(maxsize=None)
def step_groups(groups: int) -> np.ndarray:
    """The step group of every time class, ``(TIME_BINS,)`` int64 (read-only, made once per
    number of groups: the sampler looks it up at every note): how many of
    :func:`step_group_edges` are at or below the time the class stands for."""
    edges = step_group_edges(groups)
    table = np.searchsorted(edges, TIME_VALUES, side="right").astype(np.int64)
    table.flags.writeable = False
    return table


def step_group_of(seconds: Any, groups: int) -> np.ndarray:
    """The step group of each step in seconds (through its time class, as the sampler sees it)."""
    return step_groups(groups)[time_classes(seconds)]


def pitch_targets(pitch: Any, step: Any, groups: int) -> np.ndarray:
    """The pitch targets of a model with ``pitch_given_step = groups``: ``pitch + 128 * group``
    of each note's step, int32 (``groups`` 0: the pitches as they are). The loss
    (:class:`musicrnn.model.PitchGivenStepCrossentropy`) unpacks them."""
    pitch = np.asarray(pitch).astype(np.int32)
    if not groups:
        return pitch
    return (pitch + 128 * step_group_of(step, groups)).astype(np.int32)


def pitch_given_step_logits(pitch: np.ndarray, group: Any) -> np.ndarray:
    """The pitch logits of each row's step group: ``pitch`` ``(rows, N * 128)`` (N readouts of
    128, group by group), ``group`` ``(rows,)`` ints; returns ``(rows, 128)``. Logits 128
    wide (a model without groups) come back as they are."""
    pitch = np.asarray(pitch)
    if pitch.shape[-1] == 128:
        return pitch
    rows = pitch.reshape(len(pitch), -1, 128)
    return rows[np.arange(len(rows)), np.asarray(group, dtype=np.int64)]


def pitch_given_steps(pitch: np.ndarray, steps: Any) -> np.ndarray:
    """The pitch logits each row draws from once its step is ``steps`` (seconds, ``(rows,)``):
    128 logits as they are, or the readout of the step's group (``(rows, N * 128)``)."""
    pitch = np.asarray(pitch)
    if pitch.shape[-1] == 128:
        return pitch
    return pitch_given_step_logits(pitch, step_group_of(steps, pitch.shape[-1] // 128))


def marginal_pitch_logits(pitch: np.ndarray, step_logits: np.ndarray) -> np.ndarray:
    """Log-probabilities of the pitch with the step summed out: ``log sum_g P(group g) P(pitch |
    g)`` per row, from ``pitch`` ``(rows, N * 128)`` and the step head's time-class logits
    ``(rows, 128)``; float64 ``(rows, 128)``. Logits 128 wide come back as they are."""
    pitch = np.asarray(pitch)
    if pitch.shape[-1] == 128:
        return pitch
    groups = pitch.shape[-1] // 128
    by_group = np.asarray(pitch, np.float64).reshape(len(pitch), groups, 128)
    by_group = by_group - by_group.max(axis=2, keepdims=True)
    by_group -= np.log(np.exp(by_group).sum(axis=2, keepdims=True))  # log P(pitch | g)
    step = time_class_probabilities(step_logits)
    group_probs = np.zeros((len(pitch), groups))
    np.add.at(group_probs.T, step_groups(groups), step.T)  # P(g): its classes' probabilities
    with np.errstate(divide="ignore"):
        joint = by_group + np.log(group_probs)[:, :, None]
    top = joint.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(joint - top).sum(axis=1, keepdims=True)))[:, 0]


# ---------------------------------------------------------------------------------------------
# Velocity classes
# ---------------------------------------------------------------------------------------------

VELOCITIES = ("none", "categorical")  # the kinds of velocity modelling (ModelConfig.velocity)
VELOCITY_BINS = 32  # classes of the velocity head by default (Performance RNN's 32)
VELOCITY_MIN, VELOCITY_MAX = 1, 127  # MIDI note-on velocities (0 is a note-off)
# The velocity given to notes that come without one (a 3-column primer fed to a velocity model):
# what the MIDI specification asks a keyboard without velocity sensing to send. The MAESTRO v2
# sample's median is 67.
DEFAULT_VELOCITY = 64


def check_velocity_bins(bins: Any) -> int:
    """``bins`` as an int 1-127, or a clear error."""
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not (
            1 <= bins <= VELOCITY_MAX):
        raise MusicRNNError(f"velocity bins must be a whole number from 1 to {VELOCITY_MAX}, "
                            f"got {bins!r}")
    return int(bins)


def velocity_classes(velocity: Any, bins: int = VELOCITY_BINS) -> np.ndarray:
    """The class (0 .. ``bins`` - 1) of each MIDI velocity: ``(v - 1) * bins // 127``.

    The 127 velocities 1-127 fall into ``bins`` equal classes (3 or 4 velocities each for 32);
    velocities are rounded first, and anything below 1 or above 127 counts as 1 or 127.
    Returns int64 of the input's shape.
    """
    bins = check_velocity_bins(bins)
    v = np.clip(np.rint(np.asarray(velocity, dtype=np.float64)), VELOCITY_MIN, VELOCITY_MAX)
    return ((v.astype(np.int64) - VELOCITY_MIN) * bins) // VELOCITY_MAX


def velocity_values(bins: int = VELOCITY_BINS) -> np.ndarray:
    """The MIDI velocity each class stands for, ``(bins,)`` int64: the middle of its velocities
    (the lower middle for an even count), so every velocity comes back within half a class."""
    bins = check_velocity_bins(bins)
    members = velocity_classes(np.arange(VELOCITY_MIN, VELOCITY_MAX + 1), bins)
    low = np.searchsorted(members, np.arange(bins), side="left") + VELOCITY_MIN
    high = np.searchsorted(members, np.arange(bins), side="right") + VELOCITY_MIN - 1
    return (low + high) // 2


def class_velocity(classes: Any, bins: int = VELOCITY_BINS) -> np.ndarray:
    """The representative MIDI velocity (1-127) of each class (:func:`velocity_values`);
    classes outside 0 .. ``bins`` - 1 are refused."""
    classes = np.asarray(classes)
    table = velocity_values(bins)
    if classes.size and (not np.issubdtype(classes.dtype, np.integer)
                         or classes.min() < 0 or classes.max() >= len(table)):
        raise MusicRNNError(f"velocity classes must be whole numbers 0-{len(table) - 1}, got "
                            f"{classes.min()} .. {classes.max()}")
    return table[classes]


def sample_velocity_classes(logits: np.ndarray, uniform: np.ndarray,
                            inverse_temperature: float = 1.0) -> np.ndarray:
    """Draw one class per row of velocity logits ``(rows, bins)`` by inverse CDF with
    ``uniform`` draws in [0, 1) ``(rows,)``, the logits divided by the temperature first;
    returns classes ``(rows,)`` int64. ``logits`` is left as it is."""
    if len(logits) == 1:  # one stream (the live case): the same draw with fewer, 1-D calls
        weights = logits[0] * np.float32(inverse_temperature)
        weights -= weights.max()
        np.exp(weights, out=weights)
        np.cumsum(weights, out=weights)
        chosen = weights.searchsorted(uniform[0] * weights[-1], side="right")
        return np.array([min(int(chosen), len(weights) - 1)], dtype=np.int64)
    weights = logits * np.float32(inverse_temperature)
    weights -= weights.max(axis=1, keepdims=True)
    np.exp(weights, out=weights)
    cumulative = weights.cumsum(axis=1, out=weights)
    draw = uniform * cumulative[:, -1]
    classes = (cumulative <= draw[:, None]).sum(axis=1)
    return np.minimum(classes, logits.shape[1] - 1)

"""Hand-made note arrays shared by the statistics and evaluation tests."""

from __future__ import annotations

import numpy as np


def piece(pitches, step=0.25, duration=0.5, velocity=None) -> np.ndarray:
    """Raw notes (pitch, step, duration[, velocity]) with one step, duration (and velocity)."""
    pitches = np.asarray(pitches, dtype=float)
    columns = [pitches, np.full(len(pitches), step), np.full(len(pitches), duration)]
    if velocity is not None:
        columns.append(np.broadcast_to(np.asarray(velocity, dtype=float), pitches.shape))
    return np.column_stack(columns)

"""Musical statistics of note sequences and their comparison between two sets of samples.

What evaluation (generated against held-out music) and plots (distribution overlays) both need,
below both of them: :func:`music_statistics` of one note sequence (pitch-class histogram, range,
intervals, inter-onset intervals, durations, polyphony, entropies, scale consistency, repetition,
and -- when the notes carry a velocity column -- dynamics), and :func:`compare_statistics` of two
sets of samples as overlapping area and KL divergence of kernel density estimates, in the manner
of Yang & Lerch (2018, "On the evaluation of generative models in music").

Note sequences are raw ``(n, 3)`` float arrays of pitch 0-127, step seconds and duration seconds,
or ``(n, 4)`` with each note's MIDI velocity as the fourth column (:func:`as_notes`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .errors import MusicRNNError

N_PITCHES = 128
_CHORD_STEP = 0.03  # seconds: onsets closer than this sound together (a chord)
_DENSITY_WINDOW = 1.0  # seconds: the window around each onset that counts its neighbours

__all__ = [
    "N_PITCHES", "as_notes", "as_pieces", "STATISTICS", "VELOCITY_STATISTICS",
    "music_statistics", "overlap_area", "kl_divergence", "compare_statistics",
]


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def as_notes(notes: Any, name: str = "notes") -> np.ndarray:
    """Check one note sequence and return it as a float64 array of 3 or 4 columns.

    Accepts a note table (DataFrame with ``pitch``, ``step``, ``duration`` columns, and
    ``velocity`` when it has one) or an array of 3 columns (pitch, step, duration) or 4 (with
    each note's MIDI velocity last). Returns ``(n, 3)`` or ``(n, 4)`` accordingly. Raises
    :class:`MusicRNNError` naming the first problem: wrong shape, NaN or infinite values,
    pitches outside 0-127 or not whole numbers, negative steps or durations, velocities outside
    1-127.
    """
    if hasattr(notes, "columns"):  # a pandas DataFrame
        missing = [c for c in ("pitch", "step", "duration") if c not in notes.columns]
        if missing:
            raise MusicRNNError(f"{name} lacks the columns {missing}; expected a note table")
        columns = ["pitch", "step", "duration"] + (["velocity"] if "velocity" in notes.columns
                                                   else [])
        notes = notes[columns].to_numpy()
    try:
        array = np.asarray(notes, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MusicRNNError(
            f"{name} is not numeric ({exc}); pass (pitch, step, duration) rows"
        ) from exc
    if array.ndim != 2 or array.shape[1] not in (3, 4):
        raise MusicRNNError(
            f"{name} has shape {array.shape}; expected (n_notes, 3) rows of (pitch, step, "
            "duration), or (n_notes, 4) with each note's velocity last"
        )
    bad = ~np.isfinite(array)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise MusicRNNError(
            f"{name} holds {int(bad.sum())} NaN/infinite values (first: row {row}, column "
            f"{('pitch', 'step', 'duration', 'velocity')[col]}); drop or repair those notes first"
        )
    pitch = array[:, 0]
    if ((pitch < 0) | (pitch > N_PITCHES - 1)).any() or (pitch != np.round(pitch)).any():
        raise MusicRNNError(f"{name}: pitches must be whole MIDI numbers 0-127")
    if (array[:, 1:3] < 0).any():
        raise MusicRNNError(f"{name}: steps and durations must be >= 0 seconds")
    if array.shape[1] == 4 and ((array[:, 3] < 1) | (array[:, 3] > 127)).any():
        raise MusicRNNError(f"{name}: velocities (the 4th column) must be MIDI velocities 1-127")
    return array


def as_pieces(pieces: Any, name: str = "pieces") -> list[np.ndarray]:
    """Checked note arrays, one per piece, from a list of arrays/tables or a ``NoteCorpus``."""
    if hasattr(pieces, "iter_features") and hasattr(pieces, "offsets"):
        pieces = list(pieces.iter_features())
    elif isinstance(pieces, np.ndarray) and pieces.ndim == 2:
        pieces = [pieces]
    return [as_notes(p, f"{name}[{i}]") for i, p in enumerate(pieces)]


# ---------------------------------------------------------------------------------------------
# Musical statistics (per sample) and their comparison between sets (Yang & Lerch 2018)
# ---------------------------------------------------------------------------------------------

# The 24 major and minor scales as (24, 12) pitch-class masks (rows: C major .. B major, then
# C minor .. B minor), for scale consistency.
_MAJOR = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=bool)
_MINOR = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], dtype=bool)
_SCALES = np.array([np.roll(m, k) for m in (_MAJOR, _MINOR) for k in range(12)])

STATISTICS: dict[str, str] = {
    "pitch_class_histogram": "share of notes per pitch class (12 values; compared as a vector)",
    "pitch_range": "highest minus lowest pitch, semitones",
    "n_pitches_used": "distinct pitches",
    "n_pitch_classes_used": "distinct pitch classes",
    "pitch_entropy": "Shannon entropy of the pitch histogram, bits",
    "pitch_class_entropy": "Shannon entropy of the pitch-class histogram, bits",
    "scale_consistency": "largest share of notes inside one major or minor scale",
    "mean_interval": "mean |pitch change| between consecutive notes, semitones",
    "mean_ioi": "mean inter-onset interval between distinct onsets, seconds",
    "mean_duration": "mean note duration, seconds",
    "note_density": "notes per second",
    "chord_rate": "share of notes starting with the previous one (step < 30 ms)",
    "polyphony": "mean number of notes sounding while any sounds",
    "polyphony_rate": "share of sounding time with two or more notes",
    "silence_rate": "share of the span with no note sounding",
    "repeated_pitch_rate": "share of notes repeating the previous note's pitch",
    "repeated_4gram_rate": "share of 4-note pitch patterns already heard earlier in the sample",
    "velocity_mean": "mean MIDI velocity (notes with a velocity column only)",
    "velocity_std": "standard deviation of the velocities: the spread of the dynamics",
    "velocity_change": "mean |velocity change| between consecutive notes",
    "velocity_density_correlation": "correlation of each note's velocity with the notes per "
                                    "second starting within 0.5 s of it (0 when either is flat)",
}
"""The statistics :func:`music_statistics` computes, with what each measures."""

VELOCITY_STATISTICS: tuple[str, ...] = tuple(k for k in STATISTICS if k.startswith("velocity_"))
"""The statistics of dynamics: only notes with a velocity column have them."""


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) if len(p) else 0.0


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two samples; 0 when either does not vary (nothing to relate)."""
    a, b = a - a.mean(), b - b.mean()
    scale = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / scale) if scale > 1e-12 else 0.0


def _velocity_statistics(velocity: np.ndarray, start: np.ndarray) -> dict[str, float]:
    """The :data:`VELOCITY_STATISTICS` of notes with MIDI ``velocity`` starting at ``start``
    (seconds, non-decreasing)."""
    half = _DENSITY_WINDOW / 2
    neighbours = (np.searchsorted(start, start + half, side="right")
                  - np.searchsorted(start, start - half, side="left"))
    return {
        "velocity_mean": float(velocity.mean()),
        "velocity_std": float(velocity.std()),
        "velocity_change": float(np.abs(np.diff(velocity)).mean()) if len(velocity) > 1 else 0.0,
        "velocity_density_correlation": _correlation(velocity, neighbours / _DENSITY_WINDOW),
    }


def music_statistics(notes: Any) -> dict[str, float | np.ndarray]:
    """The :data:`STATISTICS` of one note sequence (raw rows or a note table).

    The original evaluation script's set (pitch-class histogram, range, intervals, inter-onset
    intervals, durations, polyphony) plus MusPy's (pitches and pitch classes used, pitch and
    pitch-class entropy, polyphony rate, scale consistency) and repetition rates. Polyphony and
    silence are measured exactly over note events, not on a time grid. Notes with a velocity
    column (4 columns, or a table with ``velocity``) also get the :data:`VELOCITY_STATISTICS`:
    mean, spread, note-to-note change, and the correlation of velocity with the local density of
    onsets (notes per second in the second around each note); notes without one do not.
    """
    notes = as_notes(notes)
    if not len(notes):
        raise MusicRNNError("cannot compute statistics of an empty note sequence")
    pitch = notes[:, 0].astype(np.int64)
    step, duration = notes[:, 1], notes[:, 2]
    start = np.cumsum(step) - step[0]
    end = start + duration
    pitch_counts = np.bincount(pitch, minlength=N_PITCHES).astype(float)
    pc_counts = np.bincount(pitch % 12, minlength=12).astype(float)
    n = len(notes)

    # polyphony over events: +1 at each onset, -1 at each offset (offsets first at equal times)
    times = np.concatenate([end, start])
    delta = np.concatenate([-np.ones(n), np.ones(n)])
    order = np.lexsort((delta, times))
    times, active = times[order], np.cumsum(delta[order])
    spans = np.diff(times)
    active = active[:-1]
    span = end.max() - start.min()
    sounding = spans[active > 0].sum()
    onsets_apart = step[1:][step[1:] >= _CHORD_STEP]

    grams = (np.lib.stride_tricks.sliding_window_view(pitch, 4) if n >= 4
             else np.zeros((0, 4), np.int64))
    if len(grams):
        keys = grams @ (N_PITCHES ** np.arange(4, dtype=np.int64))  # one key per pattern
        _, first = np.unique(keys, return_index=True)
        repeated_4gram = 1.0 - len(first) / len(keys)
    else:
        repeated_4gram = 0.0

    stats: dict[str, float | np.ndarray] = {
        "pitch_class_histogram": pc_counts / n,
        "pitch_range": float(pitch.max() - pitch.min()),
        "n_pitches_used": float((pitch_counts > 0).sum()),
        "n_pitch_classes_used": float((pc_counts > 0).sum()),
        "pitch_entropy": _entropy_bits(pitch_counts),
        "pitch_class_entropy": _entropy_bits(pc_counts),
        "scale_consistency": float((_SCALES @ pc_counts).max() / n),
        "mean_interval": float(np.abs(np.diff(pitch)).mean()) if n > 1 else 0.0,
        "mean_ioi": float(onsets_apart.mean()) if len(onsets_apart) else 0.0,
        "mean_duration": float(duration.mean()),
        "note_density": float(n / span) if span > 0 else 0.0,
        "chord_rate": float((step[1:] < _CHORD_STEP).mean()) if n > 1 else 0.0,
        "polyphony": float((spans * active)[active > 0].sum() / sounding) if sounding > 0 else 0.0,
        "polyphony_rate": float(spans[active >= 2].sum() / sounding) if sounding > 0 else 0.0,
        "silence_rate": float(spans[active <= 0].sum() / span) if span > 0 else 0.0,
        "repeated_pitch_rate": float((np.diff(pitch) == 0).mean()) if n > 1 else 0.0,
        "repeated_4gram_rate": float(repeated_4gram),
    }
    if notes.shape[1] == 4:
        stats.update(_velocity_statistics(notes[:, 3], start))
    return stats


def _kde_pair(a: np.ndarray, b: np.ndarray, grid_size: int = 1024):
    """Gaussian KDEs (Scott's bandwidth, floored) of two 1-D samples on one shared grid.

    Samples are binned onto the grid and convolved with the sampled kernel (the usual fast KDE):
    cost grows with the grid, not with the number of samples.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if not len(a) or not len(b) or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise MusicRNNError("overlap/KL need two non-empty samples of finite values")
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    scale = max(hi - lo, np.abs(np.concatenate([a, b])).max() * 1e-3, 1e-9)
    floor = 0.02 * scale

    def bandwidth(x):
        return max(x.std(ddof=1) * len(x) ** (-0.2) if len(x) > 1 else 0.0, floor)

    ha, hb = bandwidth(a), bandwidth(b)
    width = 5 * max(ha, hb)
    grid = np.linspace(lo - width, hi + width, grid_size)
    dx = grid[1] - grid[0]

    def pdf(x, h):
        counts = np.bincount(np.rint((x - grid[0]) / dx).astype(np.int64), minlength=grid_size)
        half = int(min(grid_size - 1, math.ceil(5 * h / dx)))
        kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * dx / h) ** 2)
        smoothed = np.convolve(counts[:grid_size].astype(np.float64), kernel, mode="same")
        return smoothed / (smoothed.sum() * dx)

    return grid, pdf(a, ha), pdf(b, hb)


def _overlap_and_kl(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    grid, p, q = _kde_pair(np.asarray(a), np.asarray(b))
    dx = grid[1] - grid[0]
    overlap = float(min(1.0, np.minimum(p, q).sum() * dx))
    q = np.maximum(q, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        integrand = np.where(p > 0, p * np.log(np.maximum(p, 1e-300) / q), 0.0)
    return overlap, float(max(0.0, integrand.sum() * dx))


def overlap_area(a: Sequence[float], b: Sequence[float]) -> float:
    """Overlapping area of the two samples' density estimates: 1 for identical samples, 0 for
    disjoint ones (the integral of the smaller of the two PDFs, Yang & Lerch 2018)."""
    return _overlap_and_kl(a, b)[0]


def kl_divergence(a: Sequence[float], b: Sequence[float]) -> float:
    """KL(a || b) in nats between the two samples' density estimates (0 for identical samples;
    the second density is floored at 1e-12 so the value stays finite)."""
    return _overlap_and_kl(a, b)[1]


def _feature_matrix(stats: list[dict], name: str) -> np.ndarray:
    return np.array([np.atleast_1d(s[name]) for s in stats], dtype=np.float64)


def _pairwise(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances between rows: all pairs i < j of ``x`` or all pairs (x_i, y_j)."""
    if y is None:
        i, j = np.triu_indices(len(x), k=1)
        return np.linalg.norm(x[i] - x[j], axis=1)
    return np.linalg.norm(x[:, None, :] - y[None, :, :], axis=2).ravel()


def compare_statistics(generated: Sequence[Any], reference: Sequence[Any],
                       statistics: Sequence[str] | None = None):
    """Compare generated samples with reference (held-out) samples, one row per statistic.

    Yang & Lerch (2018): for each statistic, the *intra-set* distances (between every two
    reference samples) and the *inter-set* distances (between every reference and every generated
    sample) are smoothed into densities; ``overlap_area`` is the area the two densities share
    (1: the generated samples sit among the reference ones as the references sit among
    themselves) and ``kl_divergence`` is KL(intra || inter). ``value_overlap`` compares the
    statistic's own values directly. The pitch-class histogram is compared as a 12-vector.
    By default every statistic both sets have is compared: the :data:`VELOCITY_STATISTICS` only
    when every sample of both has a velocity column. Returns a DataFrame indexed by statistic.
    """
    import pandas as pd

    if len(generated) < 1 or len(reference) < 2:
        raise MusicRNNError(
            "comparing statistics needs at least 1 generated and 2 reference samples "
            f"(got {len(generated)} and {len(reference)}); sample more"
        )
    gen = [music_statistics(s) for s in generated]
    ref = [music_statistics(s) for s in reference]
    unknown = sorted(set(statistics or ()) - set(STATISTICS))
    if unknown:
        raise MusicRNNError(f"unknown statistics {unknown}; choose from {sorted(STATISTICS)}")
    available = set.intersection(*(set(x) for x in gen + ref))
    names = list(statistics) if statistics else [k for k in STATISTICS if k in available]
    absent = [k for k in names if k not in available]
    if absent:
        raise MusicRNNError(f"statistics {absent} need notes with a velocity column in both sets "
                            "(4 columns: pitch, step, duration, velocity); leave them out")
    rows = []
    for name in names:
        g, r = _feature_matrix(gen, name), _feature_matrix(ref, name)
        intra, inter = _pairwise(r), _pairwise(r, g)
        row = {
            "statistic": name,
            "reference_mean": float(r.mean(axis=0).mean()) if r.shape[1] > 1 else float(r.mean()),
            "reference_std": float(r.std(axis=0).mean()) if r.shape[1] > 1 else float(r.std()),
            "generated_mean": float(g.mean(axis=0).mean()) if g.shape[1] > 1 else float(g.mean()),
            "generated_std": float(g.std(axis=0).mean()) if g.shape[1] > 1 else float(g.std()),
        }
        row["overlap_area"], row["kl_divergence"] = _overlap_and_kl(intra, inter)
        if r.shape[1] == 1:
            row["value_overlap"], row["value_kl"] = _overlap_and_kl(r[:, 0], g[:, 0])
        else:  # a histogram: compare the pooled histograms by their shared mass
            pr, pg = r.mean(axis=0), g.mean(axis=0)
            row["value_overlap"] = float(np.minimum(pr, pg).sum())
            row["value_kl"] = float((pr * np.log(np.maximum(pr, 1e-12)
                                                 / np.maximum(pg, 1e-12)))[pr > 0].sum())
        rows.append(row)
    return pd.DataFrame(rows).set_index("statistic")

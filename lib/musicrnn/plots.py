"""Pictures of notes and of training: piano rolls, note distributions, loss curves.

Every function draws with matplotlib's object API (no pyplot state, safe on the headless Agg
backend), takes an optional ``ax``/``fig`` to draw into, and returns the
:class:`matplotlib.figure.Figure`. In a notebook, a returned figure displays itself as PNG (once,
whatever the backend); elsewhere :func:`save_figure` writes it as a PNG, atomically.

Notes may be given in any of the shapes the library passes around: a note table (pandas DataFrame
or dict of :data:`~musicrnn.notes.NOTE_COLUMNS`), a raw ``(n, 3)`` array of (pitch, step, duration)
as the models read and write them (``(n, 4)`` with velocity last for a model with velocity), or a
whole :class:`~musicrnn.notes.NoteCorpus`. A piano roll colours each note by its velocity when the
notes have one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .errors import MusicRNNError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PRIMER_COLOR = "#7f7f7f"  # grey: the notes the model was given
NOTE_COLOR = "#1f77b4"  # blue: the notes of a piece, or what the model played
SET_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
VELOCITY_CMAP = "viridis"  # piano rolls: soft notes dark purple, loud notes yellow

_NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def _figure_class():
    from matplotlib.figure import Figure

    class ShowableFigure(Figure):
        """A Figure that a notebook shows as PNG even before pyplot has set up inline display."""

        def _repr_png_(self) -> bytes:
            import io

            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100)
            return buffer.getvalue()

    return ShowableFigure


def _new_figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1):
    global _FIGURE_CLASS
    if _FIGURE_CLASS is None:
        _FIGURE_CLASS = _figure_class()
    fig = _FIGURE_CLASS(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


_FIGURE_CLASS = None


def save_figure(fig: "Figure", path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (PNG unless the suffix says otherwise), atomically."""
    from .paths import atomic_path

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt)
    return path


# -- note tables in any shape --------------------------------------------------------------------


def _note_times(notes: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pitch, start, end) of a note table, raw array or dict; starts from steps when needed."""
    from .notes import FEATURES

    if isinstance(notes, np.ndarray) and notes.dtype.names is None:
        raw = np.asarray(notes, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] < 3:
            raise MusicRNNError(
                f"raw notes must have shape (n, 3) of (pitch, step, duration) or (n, 4) with "
                f"velocity; got {raw.shape}"
            )
        cols = {c: raw[:, i] for i, c in enumerate(FEATURES)}
    elif hasattr(notes, "keys") or (isinstance(notes, np.ndarray) and notes.dtype.names):
        names = notes.dtype.names if isinstance(notes, np.ndarray) else list(notes.keys())
        cols = {c: np.asarray(notes[c], dtype=np.float64) for c in names
                if c in ("pitch", "step", "duration", "start", "end")}
    else:
        raise MusicRNNError(
            f"expected notes as a DataFrame, dict or (n, 3) array, got {type(notes).__name__}"
        )
    if "pitch" not in cols:
        raise MusicRNNError("the notes have no 'pitch' column")
    if "start" in cols and "end" in cols:
        start, end = cols["start"], cols["end"]
    elif "step" in cols and "duration" in cols:
        start = np.cumsum(cols["step"])
        end = start + np.maximum(cols["duration"], 0.0)
    else:
        raise MusicRNNError("the notes need 'start' and 'end', or 'step' and 'duration'")
    return cols["pitch"], start, end


def _steps(notes: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pitch, step, duration) of a note table, raw array, dict or NoteCorpus."""
    from .notes import FEATURES, NoteCorpus

    if isinstance(notes, NoteCorpus):
        return tuple(np.asarray(notes.columns[c], dtype=np.float64) for c in FEATURES)  # type: ignore
    if isinstance(notes, np.ndarray) and notes.dtype.names is None:
        raw = np.asarray(notes, dtype=np.float64)
        if raw.ndim == 3:  # a batch of generated sequences
            raw = raw.reshape(-1, raw.shape[-1])
        if raw.ndim != 2 or raw.shape[1] < 3:
            raise MusicRNNError(
                f"raw notes must have shape (n, 3) of (pitch, step, duration) or (n, 4) with "
                f"velocity; got {raw.shape}"
            )
        return raw[:, 0], raw[:, 1], raw[:, 2]
    try:
        return tuple(np.asarray(notes[c], dtype=np.float64) for c in FEATURES)  # type: ignore
    except (KeyError, IndexError, TypeError, ValueError):
        raise MusicRNNError(
            "each set of notes must be a NoteCorpus, a note table with pitch, step and duration, "
            f"or an (n, 3) array; got {type(notes).__name__}"
        ) from None


def _velocities(notes: Any) -> np.ndarray | None:
    """Each note's MIDI velocity: the 4th column of a raw array, a table's ``velocity`` column;
    None when the notes carry none (a raw ``(n, 3)`` array, a table without the column)."""
    if isinstance(notes, np.ndarray) and notes.dtype.names is None:
        return np.asarray(notes[:, 3], dtype=np.float64) if notes.ndim == 2 and \
            notes.shape[1] >= 4 else None
    names = notes.dtype.names if isinstance(notes, np.ndarray) else list(notes.keys())
    return np.asarray(notes["velocity"], dtype=np.float64) if "velocity" in names else None


def _pitch_label(pitch: int) -> str:
    return f"{_NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def _rectangles(pitch: np.ndarray, start: np.ndarray, end: np.ndarray, height: float = 0.8):
    """(n, 4, 2) vertices of one rectangle per note, for a PolyCollection."""
    lo, hi = pitch - height / 2, pitch + height / 2
    return np.stack([
        np.stack([start, lo], axis=1), np.stack([end, lo], axis=1),
        np.stack([end, hi], axis=1), np.stack([start, hi], axis=1),
    ], axis=1)


def style_rolls(pieces: dict[str, Any], primer: Any = None, *, title: str | None = None,
                max_seconds: float | None = None, width: float = 12.0) -> "Figure":
    """The same primer continued in several styles: one piano roll per style (``pieces``:
    style name -> notes, as :func:`piano_roll` takes them), stacked on one time axis."""
    import matplotlib.pyplot as plt

    if not pieces:
        raise MusicRNNError("give at least one style's notes to draw")
    fig, axes = plt.subplots(len(pieces), 1, figsize=(width, 2.6 * len(pieces)), sharex=True,
                             squeeze=False)
    for ax, (name, notes) in zip(axes[:, 0], pieces.items()):
        piano_roll(notes, ax=ax, primer=primer, title=name, max_seconds=max_seconds)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def piano_roll(
    notes: Any,
    ax: "Axes | None" = None,
    primer: Any = None,
    title: str | None = None,
    *,
    color: str = NOTE_COLOR,
    primer_color: str = PRIMER_COLOR,
    by_velocity: bool = True,
    max_seconds: float | None = None,
    figsize: tuple[float, float] = (12.0, 4.0),
) -> "Figure":
    """Draw notes as a piano roll: one bar per note, time across, pitch up, colour for velocity.

    Args:
        notes: a note table (``start``/``end``, or ``step``/``duration``; ``velocity`` when it
            has one) or a raw ``(n, 3)`` array of (pitch, step, duration), ``(n, 4)`` with
            each note's MIDI velocity last.
        ax: axes to draw into; None makes a new figure.
        primer: notes the model was primed with. They are drawn first, in ``primer_color``;
            ``notes`` (the continuation) follow, placed by their steps after the primer's last
            note, as the model played them, with a line where the model took over.
        title: the axes title.
        color: colour of notes without velocity (of the continuation when a primer is given).
        primer_color: colour of the primer's notes.
        by_velocity: colour each note (of the continuation, when a primer is given) by its
            velocity on one fixed scale, MIDI 1-127 (:data:`VELOCITY_CMAP`), with a colour bar
            labelled "velocity" -- when the notes have velocities; False: all in ``color``.
        max_seconds: draw only the first this many seconds.
        figsize: size of a new figure, in inches.

    Returns:
        The figure. Its note bars are ``PolyCollection`` artists labelled ``"notes"``,
        or ``"primer"`` and ``"generated"``; with velocity colours, one more axes holds the
        colour bar.
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize

    if ax is None:
        fig, axes = _new_figure(figsize)
        ax = axes[0, 0]
    fig = ax.figure
    layers = []  # (label, colour, pitch, start, end, velocity or None)
    if primer is not None:
        p_pitch, p_start, p_end = _note_times(primer)
        c_pitch, c_step, c_duration = _steps(notes)
        velocity = _velocities(notes) if by_velocity else None
        offset = float(p_start[-1]) if len(p_start) else 0.0
        c_start = offset + np.cumsum(c_step)
        c_end = c_start + np.maximum(c_duration, 0.0)
        layers.append(("primer", primer_color, p_pitch, p_start, p_end, None))
        layers.append(("generated", color, c_pitch, c_start, c_end, velocity))
        boundary = float(c_start[0]) if len(c_start) else offset
    else:
        times = _note_times(notes)
        layers.append(("notes", color, *times, _velocities(notes) if by_velocity else None))
        boundary = None

    all_pitch = np.concatenate([layer[2] for layer in layers])
    if not len(all_pitch):
        raise MusicRNNError("there are no notes to draw")
    t_max = max(float(layer[4].max()) for layer in layers if len(layer[4]))
    norm = Normalize(vmin=1, vmax=127)  # one scale for every roll: a colour means one velocity
    cmap = None
    for label, c, pitch, start, end, vel in layers:
        if max_seconds is not None:
            keep = start < max_seconds
            pitch, start, end = pitch[keep], start[keep], np.minimum(end[keep], max_seconds)
            vel = vel[keep] if vel is not None else None
        if vel is not None:
            from matplotlib import colormaps

            cmap = colormaps[VELOCITY_CMAP]
            c = cmap(norm(np.clip(vel, 1, 127)))
        bars = PolyCollection(_rectangles(pitch, start, end), facecolors=c, edgecolors="none",
                              alpha=0.85, label=label)
        ax.add_collection(bars)
    if cmap is not None:
        from matplotlib.cm import ScalarMappable

        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="velocity",
                     pad=0.01, fraction=0.03, ticks=[1, 32, 64, 96, 127])
    right = min(t_max, max_seconds) if max_seconds is not None else t_max
    ax.set_xlim(0.0, right if right > 0 else 1.0)
    lo, hi = int(all_pitch.min()) - 2, int(all_pitch.max()) + 2
    ax.set_ylim(lo, hi)
    ticks = [p for p in range(max(lo, 0), min(hi, 127) + 1) if p % 12 == 0]
    if len(ticks) < 2:
        ticks = [p for p in range(max(lo, 0), min(hi, 127) + 1) if p % 12 in (0, 7)]
    ax.set_yticks(ticks, [_pitch_label(p) for p in ticks])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch")
    ax.grid(axis="y", alpha=0.3)
    if boundary is not None:
        ax.axvline(boundary, color="black", linewidth=1, linestyle="--")
        ax.legend(loc="best")
    if title:
        ax.set_title(title)
    return fig


def _as_sets(tables_or_corpus: Any, labels: Sequence[str] | None) -> list[tuple[str, Any]]:
    if isinstance(tables_or_corpus, Mapping) and not _looks_like_table(tables_or_corpus):
        sets = [(str(k), v) for k, v in tables_or_corpus.items()]
    elif isinstance(tables_or_corpus, (list, tuple)):
        sets = [(f"set {i + 1}", v) for i, v in enumerate(tables_or_corpus)]
    else:
        sets = [(getattr(tables_or_corpus, "dataset", None) or "notes", tables_or_corpus)]
    if labels is not None:
        if len(labels) != len(sets):
            raise MusicRNNError(f"{len(labels)} labels for {len(sets)} sets of notes")
        sets = [(str(label), v) for label, (_, v) in zip(labels, sets)]
    if not sets:
        raise MusicRNNError("no sets of notes to compare")
    return sets


def _looks_like_table(obj: Mapping) -> bool:
    return "pitch" in obj


def note_distributions(
    tables_or_corpus: Any,
    fig: "Figure | None" = None,
    labels: Sequence[str] | None = None,
    *,
    quantile: float = 0.99,
    bins: int = 60,
    figsize: tuple[float, float] = (13.0, 3.6),
) -> "Figure":
    """Histograms of pitch, step and duration for one set of notes or several, overlaid.

    Several sets (a training corpus and generated notes, say) share bins and are normalised to
    densities, so their shapes compare whatever their sizes.

    Args:
        tables_or_corpus: one set (a NoteCorpus, a note table, an ``(n, 3)`` or ``(B, n, 3)``
            array), or several: a list of sets, or a dict ``{label: set}``.
        fig: a figure to draw into (three axes are added); None makes one.
        labels: names of the sets, for the legend (default: dict keys, the corpus's dataset,
            or "set 1", "set 2", ...).
        quantile: step and duration axes end at this quantile of all sets (long tails hidden;
            the count of hidden notes is in each axes' title).
        bins: bins for step and duration (pitch has one bin per MIDI note).
        figsize: size of a new figure, in inches.

    Returns:
        The figure, with axes titled pitch, step and duration; each set is one histogram
        (a ``Polygon`` patch) per axes.
    """
    sets = _as_sets(tables_or_corpus, labels)
    values = [(label, _steps(v)) for label, v in sets]
    if fig is None:
        fig, axes = _new_figure(figsize, 1, 3)
        axes = axes[0]
    else:
        axes = fig.subplots(1, 3)
    pitch_bins = np.arange(-0.5, 128.5, 1.0)
    for col, ax, name, unit in zip(range(3), axes, ("pitch", "step", "duration"),
                                   ("MIDI note", "s", "s")):
        pooled = np.concatenate([v[col] for _, v in values])
        pooled = pooled[np.isfinite(pooled)]
        if col == 0:
            edges = pitch_bins
            if len(pooled):
                lo, hi = max(pooled.min() - 2, 0), min(pooled.max() + 2, 127)
                ax.set_xlim(lo, hi)
            hidden = 0
        else:
            top = float(np.quantile(pooled, quantile)) if len(pooled) else 1.0
            top = top if top > 0 else (float(pooled.max()) if len(pooled) and pooled.max() > 0
                                       else 1.0)
            edges = np.linspace(0.0, top, bins + 1)
            hidden = int((pooled > top).sum())
        for i, (label, v) in enumerate(values):
            data = np.asarray(v[col])
            data = data[np.isfinite(data)]
            ax.hist(data, bins=edges, density=True, histtype="step", linewidth=1.6,
                    color=SET_COLORS[i % len(SET_COLORS)], label=f"{label} ({len(data):,})")
        ax.set_xlabel(f"{name} ({unit})")
        ax.set_title(name if not hidden else f"{name} ({hidden:,} beyond {edges[-1]:.2f} s)")
        ax.set_yticks([])
    axes[0].set_ylabel("density")
    axes[0].legend(loc="upper left", fontsize="small")
    return fig


def _history_x(frame: "pd.DataFrame") -> tuple[np.ndarray, str]:
    """The x axis of a training history: passes over the training windows where the history
    has them (``musicrnn.training``'s rows, one per validation), else Keras's 0-based ``epoch``
    + 1, else the row number."""
    if "passes" in frame.columns:
        return frame["passes"].to_numpy(dtype=float), "passes over the training windows"
    if "epoch" in frame.columns:
        return frame["epoch"].to_numpy() + 1, "epoch"
    return np.arange(1, len(frame) + 1), "validation"


def training_curves(
    history: "str | os.PathLike | pd.DataFrame",
    fig: "Figure | None" = None,
    title: str | None = None,
    *,
    figsize: tuple[float, float] = (12.0, 4.0),
) -> "Figure":
    """Loss curves of a training run: the total loss, and the loss of each output head.

    Args:
        history: a ``history.csv`` (a path) or a DataFrame with ``loss``/``val_loss`` and
            ``<head>_loss`` columns, one row per validation; drawn against its ``passes`` column
            (passes over the training windows), else Keras's ``epoch``, else the row number.
        fig: a figure to draw into (two axes are added); None makes one.
        title: the figure's title.
        figsize: size of a new figure, in inches.

    Returns:
        The figure: on the left ``loss`` and ``val_loss`` (the best validation marked), on
        the right one line per other loss column, validation dashed. One ``Line2D`` per column.
    """
    import pandas as pd

    if isinstance(history, (str, os.PathLike)):
        path = Path(history)
        if not path.is_file():
            raise MusicRNNError(f"no training history at {path}; train a model first")
        try:
            frame = pd.read_csv(path)
        except (ValueError, OSError) as exc:
            raise MusicRNNError(f"{path} is not a readable history CSV ({exc})") from exc
    elif isinstance(history, pd.DataFrame):
        frame = history
    elif isinstance(history, Mapping):  # keras History.history
        frame = pd.DataFrame(dict(history))
    else:
        raise MusicRNNError(f"expected a history CSV path or DataFrame, got {type(history).__name__}")
    losses = [c for c in frame.columns if str(c).endswith("loss")]
    if not losses or len(frame) == 0:
        raise MusicRNNError("the history has no loss columns (or no rows); nothing to plot")
    epochs, xlabel = _history_x(frame)
    if fig is None:
        fig, axes = _new_figure(figsize, 1, 2)
        axes = axes[0]
    else:
        axes = fig.subplots(1, 2)
    total = [c for c in ("loss", "val_loss") if c in frame.columns]
    heads = [c for c in losses if c not in total]
    for c in total:
        ax = axes[0]
        ax.plot(epochs, frame[c], marker="o", markersize=3, label=c,
                linestyle="--" if c.startswith("val_") else "-")
    if "val_loss" in frame.columns and frame["val_loss"].notna().any():
        best = int(np.nanargmin(frame["val_loss"].to_numpy()))
        where = (f"validation {int(frame['validation'].iloc[best])}, {epochs[best]:.2f} passes"
                 if "validation" in frame.columns and "passes" in frame.columns
                 else f"{xlabel} {epochs[best]}")
        axes[0].scatter([epochs[best]], [frame["val_loss"].iloc[best]], s=80, facecolors="none",
                        edgecolors="black", zorder=3, label=f"best: {where}")
    axes[0].set_title("total loss")
    bases = sorted({c[4:] if c.startswith("val_") else c for c in heads})
    for i, base in enumerate(bases):
        color = SET_COLORS[i % len(SET_COLORS)]
        for c in (base, f"val_{base}"):
            if c in frame.columns:
                axes[1].plot(epochs, frame[c], color=color, label=c,
                             linestyle="--" if c.startswith("val_") else "-")
    axes[1].set_title("loss per output" if bases else "(no per-output losses)")
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss")
        if ax.get_lines():
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


# -- evaluation and experiments (appended by the evaluation stage) -------------------------------


def nll_bars(
    scores: "pd.DataFrame",
    ax: "Axes | None" = None,
    *,
    context: str | None = None,
    goal_fraction: float | None = 0.85,
    figsize: tuple[float, float] = (8.0, 3.8),
) -> "Figure":
    """Held-out pitch NLL (nats/note) of models and baselines as bars, lowest first.

    Args:
        scores: rows with ``name``, ``context`` and ``pitch_nll`` (``EvaluationReport.scores``
            or the experiment log); rows without a pitch NLL (the repeat-last rule) are skipped.
        ax: axes to draw into; None makes a figure.
        context: which context regime to show (default: the first in ``scores``).
        goal_fraction: draw the goal line at this fraction of Markov-2's NLL (None: no line).
        figsize: size of a new figure, in inches.

    Returns:
        The figure; baselines are grey, models coloured, each bar labelled with its value.
    """
    frame = scores.reset_index() if "name" not in scores.columns else scores
    if "context" in frame.columns:
        context = context or str(frame["context"].iloc[0])
        frame = frame[frame["context"] == context]
    frame = frame[np.isfinite(frame["pitch_nll"].astype(float))]
    if frame.empty:
        raise MusicRNNError("no pitch NLL to plot")
    is_baseline = frame["name"].str.fullmatch(r"unigram|markov\d+")
    models = list(dict.fromkeys(frame.loc[~is_baseline, "name"]))  # colours in given order
    frame = frame.sort_values("pitch_nll")
    if ax is None:
        fig, axes = _new_figure(figsize)
        ax = axes[0][0]
    else:
        fig = ax.figure
    colors = ["#9e9e9e" if name not in models else SET_COLORS[models.index(name) % len(SET_COLORS)]
              for name in frame["name"]]
    bars = ax.bar(frame["name"], frame["pitch_nll"], color=colors)
    ax.bar_label(bars, fmt="%.2f", fontsize="small")
    markov2 = frame.loc[frame["name"] == "markov2", "pitch_nll"]
    if goal_fraction and len(markov2):
        ax.axhline(float(markov2.iloc[0]) * goal_fraction, color="black", linestyle=":",
                   label=f"goal: {1 - goal_fraction:.0%} below Markov-2")
        ax.legend(fontsize="small", loc="upper left")
    ax.set_ylabel("pitch NLL (nats/note)")
    ax.set_title(f"Held-out next-pitch NLL, lower is better ({context})" if context
                 else "Held-out next-pitch NLL, lower is better")
    ax.tick_params(axis="x", rotation=30)
    ax.grid(axis="y", alpha=0.3)
    return fig


def overlap_by_temperature(
    sweep: "pd.DataFrame",
    ax: "Axes | None" = None,
    *,
    reference_overlap: float | None = None,
    goal: float | None = 0.8,
    figsize: tuple[float, float] = (8.0, 4.0),
) -> "Figure":
    """How close generated statistics come to held-out music at each sampling temperature.

    Args:
        sweep: the temperature sweep (index ``temperature``, column ``overlap_area`` and one
            ``overlap_<statistic>`` column per statistic), or ``{label: sweep}`` for several
            models (one line each, no per-statistic lines).
        ax: axes to draw into; None makes a figure.
        reference_overlap: the overlap real music reaches at the same sample size (drawn dashed).
        goal: the goal line (None: none).
        figsize: size of a new figure, in inches.

    Returns:
        The figure: the mean overlap (thick, best temperature marked) over thin per-statistic lines.
    """
    if ax is None:
        fig, axes = _new_figure(figsize)
        ax = axes[0][0]
    else:
        fig = ax.figure
    several = isinstance(sweep, Mapping)
    sweeps = dict(sweep) if several else {"mean over statistics": sweep}
    if not several:
        temps = np.asarray(sweep.index, dtype=float)
        for col in [c for c in sweep.columns
                    if str(c).startswith("overlap_") and c != "overlap_area"]:
            ax.plot(temps, sweep[col], color="#bdbdbd", linewidth=0.8)
    for i, (label, one) in enumerate(sweeps.items()):
        temps = np.asarray(one.index, dtype=float)
        color = SET_COLORS[i % len(SET_COLORS)]
        best = int(np.argmax(one["overlap_area"].to_numpy()))
        ax.plot(temps, one["overlap_area"], color=color, linewidth=2.5, marker="o",
                label=f"{label} (best T = {temps[best]:g})" if several else label)
        ax.scatter([temps[best]], [one["overlap_area"].iloc[best]], s=120, facecolors="none",
                   edgecolors="black", zorder=3,
                   label=None if several else f"best: T = {temps[best]:g}")
    if reference_overlap is not None:
        ax.axhline(reference_overlap, color="#7f7f7f", linestyle="--",
                   label=f"real music: {reference_overlap:.2f}")
    if goal is not None:
        ax.axhline(goal, color="black", linestyle=":", label=f"goal: {goal:g}")
    ax.set_xlabel("temperature")
    ax.set_ylabel("overlapping area with held-out music")
    ax.set_ylim(0, 1.02)
    ax.set_title("Generated vs held-out statistics"
                 + ("" if several else " (grey: each statistic)"))
    ax.legend(fontsize="small", loc="lower left")
    ax.grid(alpha=0.3)
    return fig


_OVERLAY_STATISTICS = ("pitch_range", "mean_interval", "mean_ioi", "mean_duration", "polyphony",
                       "pitch_entropy", "chord_rate", "repeated_pitch_rate")


def statistics_overlays(
    sets: Mapping[str, Sequence[Any]],
    fig: "Figure | None" = None,
    *,
    statistics: Sequence[str] = _OVERLAY_STATISTICS,
    figsize: tuple[float, float] = (14.0, 6.5),
) -> "Figure":
    """Distributions of musical statistics per sample, one panel each, several sets overlaid.

    Args:
        sets: ``{label: [notes, notes, ...]}``, e.g. held-out continuations and generated ones;
            each item is a raw ``(n, 3)`` array or note table (see
            :func:`musicrnn.statistics.music_statistics`).
        fig: a figure to draw into; None makes one.
        statistics: the scalar statistics to show (the pitch-class histogram is always the first
            panel, as pooled bars).
        figsize: size of a new figure, in inches.

    Returns:
        The figure with ``1 + len(statistics)`` panels; the first set (the reference) is drawn
        in black, the others in the package's colours in order.
    """
    from .statistics import music_statistics

    sets = {str(k): list(v) for k, v in sets.items() if len(v)}
    if not sets:
        raise MusicRNNError("no samples to plot")
    stats = {label: [music_statistics(s) for s in samples] for label, samples in sets.items()}
    panels = 1 + len(statistics)
    ncols = min(5, panels)
    nrows = int(np.ceil(panels / ncols))
    if fig is None:
        fig, axes = _new_figure(figsize, nrows, ncols)
    else:
        axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    flat = list(np.ravel(axes))
    width = 0.8 / len(stats)
    colors = ["black"] + [SET_COLORS[i % len(SET_COLORS)] for i in range(len(stats) - 1)]
    for i, (label, values) in enumerate(stats.items()):
        hist = np.mean([v["pitch_class_histogram"] for v in values], axis=0)
        flat[0].bar(np.arange(12) + (i - (len(stats) - 1) / 2) * width, hist, width=width,
                    color=colors[i], label=f"{label} ({len(values)})")
    flat[0].set_xticks(range(12), _NOTE_NAMES, fontsize="x-small")
    flat[0].set_title("pitch-class histogram")
    flat[0].legend(fontsize="x-small")
    for ax, name in zip(flat[1:], statistics):
        pooled = np.concatenate([[v[name] for v in values] for values in stats.values()])
        lo, hi = float(pooled.min()), float(pooled.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 21)
        for i, values in enumerate(stats.values()):
            ax.hist([v[name] for v in values], bins=edges, density=True, histtype="step",
                    linewidth=1.6, color=colors[i])
        ax.set_title(name.replace("_", " "), fontsize="small")
        ax.set_yticks([])
    for ax in flat[panels:]:
        ax.set_visible(False)
    return fig


def loss_curves_together(
    histories: Mapping[str, Any],
    fig: "Figure | None" = None,
    *,
    columns: Sequence[str] = ("val_loss", "val_pitch_loss"),
    figsize: tuple[float, float] = (12.0, 4.0),
) -> "Figure":
    """Validation curves of several training runs on shared axes, one panel per column.

    Args:
        histories: ``{label: history}``, each a ``history.csv`` path or a DataFrame (Keras
            history columns, drawn against ``passes`` where they have it, else ``epoch``).
        fig: a figure to draw into; None makes one.
        columns: the history columns to draw (a missing one falls back to its training column,
            drawn dashed).
        figsize: size of a new figure, in inches.

    Returns:
        The figure, one line per run and column.
    """
    import pandas as pd

    frames = {}
    for label, history in histories.items():
        if isinstance(history, (str, os.PathLike)):
            path = Path(history)
            if not path.is_file():
                raise MusicRNNError(f"no training history at {path}")
            history = pd.read_csv(path)
        frames[str(label)] = pd.DataFrame(history)
    if not frames:
        raise MusicRNNError("no training histories to plot")
    if fig is None:
        fig, axes = _new_figure(figsize, 1, len(columns))
        axes = axes[0]
    else:
        axes = fig.subplots(1, len(columns), squeeze=False)[0]
    xlabel = _history_x(next(iter(frames.values())))[1]
    for ax, column in zip(axes, columns):
        for i, (label, frame) in enumerate(frames.items()):
            col, style = column, "-"
            if col not in frame.columns and col.removeprefix("val_") in frame.columns:
                col, style = col.removeprefix("val_"), "--"
            if col not in frame.columns:
                continue
            epochs = _history_x(frame)[0]
            ax.plot(epochs, frame[col], style, marker="o", markersize=3,
                    color=SET_COLORS[i % len(SET_COLORS)], label=label)
        ax.set_title(column)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize="small")
    return fig


def context_curves(curves: "pd.DataFrame", figsize: tuple[float, float] = (6.0, 3.6)
                   ) -> "Figure":
    """Held-out pitch NLL against the notes of context, one line per model
    (:func:`musicrnn.evaluation.context_curve`'s rows, ``model``, ``context``, ``pitch_nll``):
    where a model uses a longer past, its line falls."""
    if curves.empty:
        raise MusicRNNError("no context curve to plot")
    fig, axes = _new_figure(figsize)
    ax = axes[0][0]
    for index, (name, group) in enumerate(curves.groupby("model", sort=False)):
        group = group.sort_values("context")
        ax.plot(group["context"], group["pitch_nll"], marker="o", label=str(name),
                color=SET_COLORS[index % len(SET_COLORS)])
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(curves["context"].unique()))
    ax.set_xticklabels([str(c) for c in sorted(curves["context"].unique())])
    ax.set_xlabel("notes of context")
    ax.set_ylabel("pitch NLL (nats/note)")
    ax.set_title("Held-out pitch NLL by context length (the same notes)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig

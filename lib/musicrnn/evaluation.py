"""Measure a model instead of guessing: held-out likelihood, simple baselines, musical statistics.

Four kinds of measurement, each a plain function on note arrays (raw ``(n, 3)`` float arrays of
pitch 0-127, step seconds, duration seconds, one per piece):

* **Teacher-forced scores** on held-out pieces -- pitch negative log-likelihood (nats per note)
  and perplexity, top-1/top-5 pitch accuracy, step and duration mean absolute error -- in two
  context regimes: :func:`score_windows` ("full context": the note after a whole ``seq_length``
  window read from a fresh state, exactly as a ``last``-target model is trained) and
  :func:`score_carried` (one pass over each whole piece, the state carried from its first note).
* **Baselines** fitted on the training pieces: :class:`NGramPitchModel` (unigram and Markov
  models of any order, interpolated Kneser-Ney with discounts tuned on validation pieces) and the
  "repeat the last step/duration" rule (:func:`repeat_last_scores`). A network that cannot beat
  them has learned nothing.
* **Musical statistics** of a note sequence (:func:`music_statistics`: pitch-class histogram,
  range, intervals, inter-onset intervals, durations, polyphony, entropies, scale consistency,
  repetition) and their comparison between generated and held-out music
  (:func:`compare_statistics`), as overlapping area and KL divergence of kernel density estimates
  in the manner of Yang & Lerch (2018, "On the evaluation of generative models in music").
* A **temperature sweep** (:func:`temperature_sweep`): which sampling temperature brings generated
  statistics closest to held-out music.

:func:`evaluate_run` puts them together for a run directory (``musicrnn evaluate``) and
:func:`run_experiments` trains and evaluates several presets on one budget (``make experiments``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import MusicRNNError

N_PITCHES = 128
_PAD = N_PITCHES  # the "before the piece" symbol in n-gram contexts
_CHORD_STEP = 0.03  # seconds: onsets closer than this sound together (a chord)

__all__ = [
    "N_PITCHES", "PredictionScores", "pitch_scores", "as_notes", "as_pieces", "held_out_split",
    "score_windows", "score_carried", "sequence_model", "model_seq_length",
    "NGramPitchModel", "fit_ngram_baselines", "ngram_scores", "repeat_last_scores",
    "music_statistics", "overlap_area", "kl_divergence",
    "compare_statistics", "continuation_segments", "generate_continuations",
    "temperature_sweep", "best_temperature", "EvaluationReport", "evaluate_model",
    "evaluate_run", "STATISTICS", "DEFAULT_TEMPERATURES", "markdown_table", "window_targets",
    "time_budget_callback", "load_experiment_config", "run_experiments",
]


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def as_notes(notes: Any, name: str = "notes") -> np.ndarray:
    """Check one note sequence and return it as a float64 ``(n, 3)`` array (pitch, step, duration).

    Accepts a note table (DataFrame with ``pitch``, ``step``, ``duration`` columns) or an array
    whose first three columns are those features. Raises :class:`MusicRNNError` naming the first
    problem: wrong shape, NaN or infinite values, pitches outside 0-127 or not whole numbers,
    negative steps or durations.
    """
    if hasattr(notes, "columns"):  # a pandas DataFrame
        missing = [c for c in ("pitch", "step", "duration") if c not in notes.columns]
        if missing:
            raise MusicRNNError(f"{name} lacks the columns {missing}; expected a note table")
        notes = notes[["pitch", "step", "duration"]].to_numpy()
    try:
        array = np.asarray(notes, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MusicRNNError(
            f"{name} is not numeric ({exc}); pass (pitch, step, duration) rows"
        ) from exc
    if array.ndim != 2 or array.shape[1] < 3:
        raise MusicRNNError(
            f"{name} has shape {array.shape}; expected (n_notes, 3) rows of (pitch, step, duration)"
        )
    array = array[:, :3]
    bad = ~np.isfinite(array)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise MusicRNNError(
            f"{name} holds {int(bad.sum())} NaN/infinite values (first: row {row}, column "
            f"{('pitch', 'step', 'duration')[col]}); drop or repair those notes first"
        )
    pitch = array[:, 0]
    if ((pitch < 0) | (pitch > N_PITCHES - 1)).any() or (pitch != np.round(pitch)).any():
        raise MusicRNNError(f"{name}: pitches must be whole MIDI numbers 0-127")
    if (array[:, 1:] < 0).any():
        raise MusicRNNError(f"{name}: steps and durations must be >= 0 seconds")
    return array


def as_pieces(pieces: Any, name: str = "pieces") -> list[np.ndarray]:
    """Checked note arrays, one per piece, from a list of arrays/tables or a ``NoteCorpus``."""
    if hasattr(pieces, "iter_features") and hasattr(pieces, "offsets"):
        pieces = list(pieces.iter_features())
    elif isinstance(pieces, np.ndarray) and pieces.ndim == 2:
        pieces = [pieces]
    return [as_notes(p, f"{name}[{i}]") for i, p in enumerate(pieces)]


def held_out_split(corpus: Any, preferred: str = "test") -> str:
    """The split to evaluate on: ``preferred`` when it has pieces, else ``validation``.

    Some corpora hold no test pieces (the shared MAESTRO sample has only train and validation);
    their validation pieces are then the held-out set.
    """
    for split in (preferred, "test", "validation"):
        if len(corpus.indices(split)):
            return split
    raise MusicRNNError(
        f"{corpus.dataset} has no test or validation pieces to evaluate on; use more files "
        "(a larger max_files) or a dataset with held-out pieces"
    )


def _concat(pieces: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    notes = np.concatenate(pieces) if len(pieces) else np.zeros((0, 3))
    return notes, offsets


def _positions(offsets: np.ndarray) -> np.ndarray:
    """Index of each note inside its own piece."""
    lengths = np.diff(offsets)
    return np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths)


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


@dataclass
class PredictionScores:
    """Next-note prediction quality on a set of positions (NaN where a predictor has no head)."""

    name: str  # who predicted: a model name or a baseline ("unigram", "markov2", ...)
    context: str  # "window" (full seq_length context), "carried" (whole piece), or a description
    n_notes: int  # positions scored
    pitch_nll: float = math.nan  # mean negative log-likelihood of the true pitch, nats per note
    perplexity: float = math.nan  # exp(pitch_nll): the effective number of equally likely pitches
    top1_accuracy: float = math.nan  # fraction of positions whose true pitch has the highest score
    top5_accuracy: float = math.nan  # fraction whose true pitch is among the five highest
    step_mae: float = math.nan  # mean |predicted step - true step|, seconds
    duration_mae: float = math.nan  # mean |predicted duration - true duration|, seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pitch_scores(logits: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-position NLL (nats) of the true pitch, and whether it is in the top 1 and top 5.

    ``logits`` may be logits or log-probabilities. Ties are broken at random in expectation: a
    true pitch tied with ``m`` others just inside the top ``k`` counts ``(k - above) / (m + 1)``,
    so a uniform model scores 1/128 top-1, not 1.
    """
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    true = logits[np.arange(len(target)), target]
    above = (logits > true[:, None]).sum(axis=1)
    ties = (logits == true[:, None]).sum(axis=1)  # includes the true pitch itself
    hits = [np.clip((k - above) / ties, 0.0, 1.0) for k in (1, 5)]
    return log_z - true, hits[0], hits[1]


class _Accumulator:
    """Sums of per-position scores, turned into a :class:`PredictionScores` at the end."""

    def __init__(self) -> None:
        self.nll: list[np.ndarray] = []
        self.top1: list[np.ndarray] = []
        self.top5: list[np.ndarray] = []
        self.step_err: list[np.ndarray] = []
        self.duration_err: list[np.ndarray] = []

    def add(self, nll=None, top1=None, top5=None, step_err=None, duration_err=None) -> None:
        for store, value in ((self.nll, nll), (self.top1, top1), (self.top5, top5),
                             (self.step_err, step_err), (self.duration_err, duration_err)):
            if value is not None:
                store.append(np.asarray(value, dtype=np.float64).ravel())

    def result(self, name: str, context: str) -> PredictionScores:
        def cat(parts):
            return np.concatenate(parts) if parts else np.zeros(0)

        nll, top1, top5 = cat(self.nll), cat(self.top1), cat(self.top5)
        step, duration = cat(self.step_err), cat(self.duration_err)
        n = max(len(nll), len(step))
        mean = lambda a: float(a.mean()) if len(a) else math.nan  # noqa: E731
        pitch_nll = mean(nll)
        return PredictionScores(
            name=name, context=context, n_notes=int(n), pitch_nll=pitch_nll,
            perplexity=float(math.exp(pitch_nll)) if np.isfinite(pitch_nll) else math.nan,
            top1_accuracy=mean(top1), top5_accuracy=mean(top5),
            step_mae=mean(step), duration_mae=mean(duration),
        )


def _progress(iterable, show: bool, desc: str):
    """``iterable`` with a tqdm bar when ``show`` and it has more than one item."""
    if not show or len(iterable) < 2:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc)


def model_seq_length(model: Any) -> int | None:
    """The fixed time length of ``model``'s input, or None when it reads any length."""
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):
        shape = shape[0]
    if shape is None or len(shape) != 3:
        return None
    return None if shape[1] is None else int(shape[1])


def _check_seq_length(model: Any, seq_length: int) -> None:
    if int(seq_length) < 1:
        raise MusicRNNError(f"seq_length must be >= 1, got {seq_length}")
    fixed = model_seq_length(model)
    if fixed is not None and fixed != int(seq_length):
        raise MusicRNNError(
            f"the model reads windows of exactly {fixed} notes but seq_length={seq_length} was "
            f"asked for; evaluate it with seq_length={fixed} (the length it was trained on)"
        )


def _heads(outputs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pitch logits, step, duration) as numpy from a model's outputs (dict or list); step and
    duration as one time each ``(..., 1)`` (the median of time-class logits, see
    :func:`musicrnn.timing.timing_point`)."""
    from keras import ops

    from .timing import timing_point

    if isinstance(outputs, dict):
        pitch, step, duration = outputs["pitch"], outputs["step"], outputs["duration"]
    else:
        pitch, step, duration = outputs
    pitch, step, duration = (o if isinstance(o, np.ndarray) else np.asarray(ops.convert_to_numpy(o))
                             for o in (pitch, step, duration))
    return pitch, timing_point(step), timing_point(duration)


def _predict(model: Any, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, ...]:
    """Run ``model`` over ``x`` in fixed-size batches (one traced graph; the tail is padded)."""
    outs: list[tuple[np.ndarray, ...]] = []
    n = len(x)
    for start in range(0, n, batch_size):
        batch = x[start:start + batch_size]
        short = batch_size - len(batch)
        if short and n > batch_size:  # keep the batch shape so no new graph is traced
            batch = np.concatenate([batch, np.zeros((short, *batch.shape[1:]), batch.dtype)])
        heads = _heads(model.predict_on_batch(batch))
        outs.append(tuple(h[:len(batch) - (short if n > batch_size else 0)] for h in heads))
    return tuple(np.concatenate([o[i] for o in outs]) for i in range(3))


def _select_positions(candidates: np.ndarray, max_positions: int | None) -> np.ndarray:
    if max_positions is not None and len(candidates) > max_positions:
        keep = np.linspace(0, len(candidates) - 1, int(max_positions)).round().astype(np.int64)
        candidates = candidates[np.unique(keep)]
    return candidates


def window_targets(pieces: Sequence[np.ndarray], seq_length: int, min_position: int | None = None,
                   max_positions: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The positions scored with full context: ``(notes, offsets, target_index)``.

    Note ``t`` of a piece (0-based) is a target when ``t >= min_position`` (default
    ``seq_length``): its context is notes ``t - seq_length .. t - 1`` of the same piece.
    ``max_positions`` keeps an evenly spaced subset (deterministic). Raises
    :class:`MusicRNNError` when no piece is long enough.
    """
    min_position = int(seq_length if min_position is None else min_position)
    if min_position < seq_length:
        raise MusicRNNError(f"min_position ({min_position}) must be >= seq_length ({seq_length})")
    notes, offsets = _concat(pieces)
    positions = _positions(offsets)
    targets = np.flatnonzero(positions >= min_position)
    if not len(targets):
        longest = int(np.diff(offsets).max()) if len(pieces) else 0
        raise MusicRNNError(
            f"the evaluation set is too short: no piece has more than {min_position} notes "
            f"(longest: {longest}), so no note has a full {seq_length}-note context; use more or "
            "longer pieces, or a model with a shorter seq_length"
        )
    return notes, offsets, _select_positions(targets, max_positions)


def score_windows(model: Any, pieces: Sequence[np.ndarray] | Any, seq_length: int, *,
                  name: str = "model", min_position: int | None = None,
                  max_positions: int | None = None, batch_size: int = 512,
                  chunk_size: int = 16384, return_per_note: bool = False,
                  progress: bool = False):
    """Teacher-forced scores with a full ``seq_length`` context for every scored note.

    Every note ``t >= seq_length`` of every piece is predicted from the window of the
    ``seq_length`` notes before it, read from a fresh state -- exactly what a model trained with
    ``targets="last"`` learnt, and the last position of a ``targets="all"`` model's training
    window. The windows are batched (``batch_size`` per forward pass); a model with sequence
    outputs is scored at the last position of each window, which is the only one with the full
    context. Returns :class:`PredictionScores` (and the per-note NLL array with
    ``return_per_note``).
    """
    pieces = as_pieces(pieces)
    _check_seq_length(model, seq_length)
    notes, _, targets = window_targets(pieces, seq_length, min_position, max_positions)
    acc = _Accumulator()
    offsets_in_window = np.arange(-int(seq_length), 0)
    x_all = notes.astype(np.float32)
    for start in _progress(range(0, len(targets), chunk_size), progress, "scoring windows"):
        t = targets[start:start + chunk_size]
        windows = x_all[t[:, None] + offsets_in_window[None, :]]
        pitch, step, duration = _predict(model, windows, batch_size)
        if pitch.ndim == 3:  # sequence outputs: the last position has the full context
            pitch, step, duration = pitch[:, -1], step[:, -1], duration[:, -1]
        true = notes[t]
        nll, top1, top5 = pitch_scores(pitch, true[:, 0].astype(np.int64))
        acc.add(nll, top1, top5, np.abs(np.maximum(step[:, 0], 0) - true[:, 1]),
                np.abs(np.maximum(duration[:, 0], 0) - true[:, 2]))
    scores = acc.result(name, f"window ({seq_length} notes)")
    if return_per_note:
        return scores, np.concatenate(acc.nll)
    return scores


def sequence_model(model: Any, config: Any = None) -> Any:
    """``model`` with its top LSTM returning every position, reading any length; same weights.

    A model of this package is rebuilt by :func:`musicrnn.model.with_sequence_outputs` (with the
    run's ``ModelConfig`` when given); any other Keras model has its config edited: the top LSTM
    gets ``return_sequences=True`` and the input any time length.
    """
    import keras

    from .model import with_sequence_outputs

    try:
        return with_sequence_outputs(model, True, config)
    except MusicRNNError:
        pass  # not this package's layer layout: edit the Keras config instead
    cfg = model.get_config()
    layers = cfg.get("layers", [])
    lstms = [layer for layer in layers if layer.get("class_name") == "LSTM"]
    if not lstms:
        raise MusicRNNError(
            "cannot score whole pieces with this model: it has no LSTM layer to unroll; "
            "use score_windows instead"
        )
    if lstms[-1]["config"].get("return_sequences"):
        return model
    lstms[-1]["config"]["return_sequences"] = True
    for layer in layers:
        if layer.get("class_name") == "InputLayer":
            conf = layer["config"]
            key = "batch_shape" if "batch_shape" in conf else "batch_input_shape"
            if conf.get(key) is not None and len(conf[key]) == 3:
                conf[key] = [conf[key][0], None, conf[key][2]]
    rebuilt = keras.Model.from_config(cfg)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def score_carried(model: Any, pieces: Sequence[np.ndarray] | Any, *, name: str = "model",
                  config: Any = None, min_position: int = 1, batch_size: int = 16,
                  return_per_note: bool = False, progress: bool = False):
    """Teacher-forced scores with the state carried through each whole piece.

    One forward pass of the sequence-output model (:func:`sequence_model`) per batch of pieces;
    the output after note ``t - 1`` predicts note ``t``, so every note ``t >= min_position``
    (default 1: all but the first) is scored with all the notes before it as context. Pieces are
    batched by length, padded at the end (padding after a position never changes it).
    """
    pieces = as_pieces(pieces)
    if min_position < 1:
        raise MusicRNNError("min_position must be >= 1: the first note of a piece has no context")
    seq_model = sequence_model(model, config)
    order = np.argsort([len(p) for p in pieces], kind="stable")
    usable = [i for i in order if len(pieces[i]) > min_position]
    if not usable:
        raise MusicRNNError(
            f"the evaluation set is too short: no piece has more than {min_position} notes"
        )
    acc = _Accumulator()
    per_note: list[np.ndarray] = []
    for start in _progress(range(0, len(usable), batch_size), progress, "scoring pieces"):
        group = [pieces[i] for i in usable[start:start + batch_size]]
        longest = max(len(p) for p in group)
        x = np.zeros((len(group), longest - 1, 3), np.float32)
        for row, piece in enumerate(group):
            x[row, :len(piece) - 1] = piece[:-1]
        pitch, step, duration = _heads(seq_model.predict_on_batch(x))
        for row, piece in enumerate(group):
            idx = np.arange(min_position, len(piece))  # targets; their output sits at idx - 1
            nll, top1, top5 = pitch_scores(pitch[row, idx - 1], piece[idx, 0].astype(np.int64))
            acc.add(nll, top1, top5, np.abs(np.maximum(step[row, idx - 1, 0], 0) - piece[idx, 1]),
                    np.abs(np.maximum(duration[row, idx - 1, 0], 0) - piece[idx, 2]))
            per_note.append(nll)
    scores = acc.result(name, "carried (whole piece)")
    if return_per_note:
        return scores, np.concatenate(per_note)
    return scores


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------


def _pitch_sequences(pieces: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(p)[:, 0].astype(np.int64) for p in pieces]


def _encode(symbols: np.ndarray) -> np.ndarray:
    """Rows of symbols (0..128, oldest first) -> int64 keys in base 129."""
    key = np.zeros(len(symbols), dtype=np.int64)
    for j in range(symbols.shape[1]):
        key = key * (N_PITCHES + 1) + symbols[:, j]
    return key


def _grams(pitches: Sequence[np.ndarray], order: int,
           min_position: int = 0) -> np.ndarray:
    """``(n, order + 1)`` rows: the ``order`` pitches before each note (PAD before the piece
    start), then the note's own pitch; one row per note at position >= ``min_position``."""
    rows = []
    for seq in pitches:
        if len(seq) <= min_position:
            continue
        padded = np.concatenate([np.full(order, _PAD, np.int64), seq])
        idx = np.arange(min_position, len(seq))[:, None] + np.arange(order + 1)[None, :]
        rows.append(padded[idx])
    if not rows:
        return np.zeros((0, order + 1), np.int64)
    return np.concatenate(rows)


@dataclass
class _Level:
    """Counts of one n-gram level: sorted keys of (context + pitch), their counts, and per
    context the total count and the number of distinct following pitches."""

    keys: np.ndarray
    counts: np.ndarray
    context_keys: np.ndarray
    context_totals: np.ndarray
    context_types: np.ndarray

    @classmethod
    def from_keys(cls, keys: np.ndarray, counts: np.ndarray) -> "_Level":
        contexts, inverse = np.unique(keys // (N_PITCHES + 1), return_inverse=True)
        return cls(
            keys=keys, counts=counts.astype(np.float64), context_keys=contexts,
            context_totals=np.bincount(inverse, weights=counts, minlength=len(contexts)),
            context_types=np.bincount(inverse, minlength=len(contexts)).astype(np.float64),
        )

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count of the n-gram, total count of its context, distinct pitches after the context)."""
        def find(table, values, query):
            if not len(table):
                return np.zeros(len(query))
            i = np.minimum(np.searchsorted(table, query), len(table) - 1)
            return np.where(table[i] == query, values[i], 0.0)

        return (find(self.keys, self.counts, keys),
                find(self.context_keys, self.context_totals, keys // (N_PITCHES + 1)),
                find(self.context_keys, self.context_types, keys // (N_PITCHES + 1)))


class NGramPitchModel:
    """A Markov model of pitch with interpolated Kneser-Ney smoothing (numpy, vectorised).

    ``order`` is the number of previous notes the model looks at: 0 is a unigram model (absolute
    discounting towards the uniform distribution), 2 is "Markov-2" (a trigram model). Level ``k``
    mixes the discounted counts of the ``k``-note context with the level below::

        P_k(w | h) = max(c(h w) - D_k, 0) / c(h) + D_k * N1+(h .) / c(h) * P_{k-1}(w | h')

    where ``h'`` drops the oldest note, ``c`` are raw counts at the top level and continuation
    counts (distinct left neighbours) below it, and contexts never seen fall through to the level
    below. Contexts are hashed into one int64 key per n-gram (base 129: 128 pitches plus "before
    the piece"), so fitting and scoring are ``np.unique`` / ``np.searchsorted`` over arrays.
    The discounts ``D_k`` are tuned on validation pieces by :meth:`tune`.
    """

    def __init__(self, order: int, discounts: Sequence[float] | float = 0.75):
        if not 0 <= int(order) <= 8:
            raise MusicRNNError(f"n-gram order must be 0-8 (int64 keys), got {order}")
        self.order = int(order)
        d = [float(discounts)] * (self.order + 1) if np.isscalar(discounts) else list(discounts)
        if len(d) != self.order + 1 or not all(0 < x < 1 for x in d):
            raise MusicRNNError(f"discounts must be {self.order + 1} values in (0, 1), got {d}")
        self.discounts = d
        self.levels: list[_Level] = []

    @property
    def name(self) -> str:
        return "unigram" if self.order == 0 else f"markov{self.order}"

    def fit(self, pieces: Sequence[np.ndarray] | Any) -> "NGramPitchModel":
        """Count the training pieces' pitches (arrays, note tables or a ``NoteCorpus``)."""
        pitches = _pitch_sequences(as_pieces(pieces, "training pieces"))
        grams = _grams(pitches, self.order)
        if not len(grams):
            raise MusicRNNError("no training notes to fit the n-gram model on")
        levels = []
        for k in range(self.order + 1):
            cols = grams[:, self.order - k:]
            if k == self.order:  # raw counts of (k-note context, pitch)
                keys, counts = np.unique(_encode(cols), return_counts=True)
            else:  # continuation counts: distinct notes before the (k+1)-gram
                longer = np.unique(_encode(grams[:, self.order - k - 1:]))
                keys, counts = np.unique(longer % (N_PITCHES + 1) ** (k + 1), return_counts=True)
            levels.append(_Level.from_keys(keys, counts))
        self.levels = levels
        return self

    def _lookups(self, grams: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if not self.levels:
            raise MusicRNNError("fit the n-gram model before scoring with it")
        return [self.levels[k].lookup(_encode(grams[:, self.order - k:]))
                for k in range(self.order + 1)]

    def _combine(self, lookups, discounts: Sequence[float]) -> np.ndarray:
        prob = np.full(len(lookups[0][0]), 1.0 / N_PITCHES)
        for (count, total, types), d in zip(lookups, discounts):
            seen = total > 0
            safe = np.where(seen, total, 1.0)
            mixed = np.maximum(count - d, 0.0) / safe + d * types / safe * prob
            prob = np.where(seen, mixed, prob)
        return prob

    def log_prob(self, pieces: Sequence[np.ndarray] | Any, min_position: int = 0) -> np.ndarray:
        """Natural-log probability of every note at position >= ``min_position`` of each piece,
        concatenated in piece order."""
        grams = _grams(_pitch_sequences(as_pieces(pieces)), self.order, min_position)
        return np.log(self._combine(self._lookups(grams), self.discounts))

    def predict_log_proba(self, contexts: np.ndarray) -> np.ndarray:
        """``(n, 128)`` log-probabilities of the next pitch after each row of ``contexts``
        (``(n, order)`` pitches, oldest first; 128 marks "before the piece")."""
        contexts = np.asarray(contexts, dtype=np.int64).reshape(len(contexts), self.order)
        n = len(contexts)
        grams = np.concatenate([np.repeat(contexts, N_PITCHES, axis=0),
                                np.tile(np.arange(N_PITCHES), n)[:, None]], axis=1)
        prob = self._combine(self._lookups(grams), self.discounts)
        return np.log(prob.reshape(n, N_PITCHES))

    def score(self, pieces: Sequence[np.ndarray] | Any, min_position: int = 0,
              max_positions: int | None = None, chunk_size: int = 8192) -> PredictionScores:
        """Pitch NLL, perplexity and top-1/top-5 accuracy on notes at position >= ``min_position``
        (``max_positions`` keeps an evenly spaced subset, as :func:`window_targets` does)."""
        grams = _grams(_pitch_sequences(as_pieces(pieces)), self.order, min_position)
        keep = _select_positions(np.arange(len(grams)), max_positions)
        grams = grams[keep]
        if not len(grams):
            raise MusicRNNError(f"no notes at position >= {min_position} to score")
        acc = _Accumulator()
        for start in range(0, len(grams), chunk_size):
            g = grams[start:start + chunk_size]
            logp = self.predict_log_proba(g[:, :self.order])
            acc.add(*pitch_scores(logp, g[:, self.order]))
        return acc.result(self.name, f"{self.order} previous notes")

    def tune(self, validation: Sequence[np.ndarray] | Any,
             grid: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
             sweeps: int = 2) -> "NGramPitchModel":
        """Choose each level's discount on validation pieces (coordinate descent over ``grid``),
        minimising the validation NLL."""
        grams = _grams(_pitch_sequences(as_pieces(validation, "validation pieces")), self.order)
        if not len(grams):
            return self
        lookups = self._lookups(grams)
        best = list(self.discounts)
        best_nll = -np.log(self._combine(lookups, best)).mean()
        for _ in range(sweeps):
            for k in range(self.order + 1):
                for d in grid:
                    trial = best[:k] + [float(d)] + best[k + 1:]
                    nll = -np.log(self._combine(lookups, trial)).mean()
                    if nll < best_nll - 1e-12:
                        best, best_nll = trial, nll
        self.discounts = best
        return self


def fit_ngram_baselines(train: Sequence[np.ndarray] | Any,
                        validation: Sequence[np.ndarray] | Any | None = None,
                        orders: Iterable[int] = (0, 1, 2, 3, 4)) -> dict[str, NGramPitchModel]:
    """Unigram and Markov pitch models fitted on ``train``, discounts tuned on ``validation``.

    Without validation pieces (when they are the held-out set), every fifth training piece is
    set aside to tune the discounts, and the models are then refitted on all training pieces.
    Keys: ``unigram``, ``markov1`` ...
    """
    train = as_pieces(train, "training pieces")
    validation = as_pieces(validation, "validation pieces") if validation is not None else []
    tune_fit, tune_on = train, validation
    if not validation and len(train) >= 5:
        tune_fit = [p for i, p in enumerate(train) if i % 5 != 4]
        tune_on = train[4::5]
    models = {}
    for order in orders:
        m = NGramPitchModel(order)
        if tune_on:
            m.fit(tune_fit).tune(tune_on)
        models[m.name] = m.fit(train)
    return models


def ngram_scores(baselines: dict[str, NGramPitchModel], pieces: Sequence[np.ndarray] | Any,
                 min_position: int = 0, max_positions: int | None = None,
                 context: str | None = None) -> list[PredictionScores]:
    """:meth:`NGramPitchModel.score` of every baseline on the same positions."""
    pieces = as_pieces(pieces)
    out = []
    for m in baselines.values():
        s = m.score(pieces, min_position=min_position, max_positions=max_positions)
        if context:
            s.context = context
        out.append(s)
    return out


def repeat_last_scores(pieces: Sequence[np.ndarray] | Any, min_position: int = 1,
                       max_positions: int | None = None,
                       context: str = "previous note") -> PredictionScores:
    """The "repeat the last step and duration" rule: MAE of predicting each note's step and
    duration as its predecessor's (notes at position >= ``min_position``; pitch left NaN)."""
    if min_position < 1:
        raise MusicRNNError("min_position must be >= 1: the first note has no predecessor")
    notes, offsets = _concat(as_pieces(pieces))
    t = _select_positions(np.flatnonzero(_positions(offsets) >= min_position), max_positions)
    if not len(t):
        raise MusicRNNError(f"no notes at position >= {min_position} to score")
    acc = _Accumulator()
    acc.add(step_err=np.abs(notes[t - 1, 1] - notes[t, 1]),
            duration_err=np.abs(notes[t - 1, 2] - notes[t, 2]))
    return acc.result("repeat last", context)


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
}
"""The statistics :func:`music_statistics` computes, with what each measures."""


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) if len(p) else 0.0


def music_statistics(notes: Any) -> dict[str, float | np.ndarray]:
    """The :data:`STATISTICS` of one note sequence (raw pitch/step/duration rows or a table).

    The original evaluation script's set (pitch-class histogram, range, intervals, inter-onset
    intervals, durations, polyphony) plus MusPy's (pitches and pitch classes used, pitch and
    pitch-class entropy, polyphony rate, scale consistency) and repetition rates. Polyphony and
    silence are measured exactly over note events, not on a time grid.
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
        keys = _encode(grams)
        _, first = np.unique(keys, return_index=True)
        repeated_4gram = 1.0 - len(first) / len(keys)
    else:
        repeated_4gram = 0.0

    return {
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
    Returns a DataFrame indexed by statistic.
    """
    import pandas as pd

    if len(generated) < 1 or len(reference) < 2:
        raise MusicRNNError(
            "comparing statistics needs at least 1 generated and 2 reference samples "
            f"(got {len(generated)} and {len(reference)}); sample more"
        )
    gen = [music_statistics(s) for s in generated]
    ref = [music_statistics(s) for s in reference]
    names = list(statistics or STATISTICS)
    unknown = sorted(set(names) - set(STATISTICS))
    if unknown:
        raise MusicRNNError(f"unknown statistics {unknown}; choose from {sorted(STATISTICS)}")
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


# ---------------------------------------------------------------------------------------------
# Generated against held-out music: primers, continuations, the temperature sweep
# ---------------------------------------------------------------------------------------------


def continuation_segments(pieces: Sequence[np.ndarray] | Any, primer_length: int, num_notes: int,
                          num_samples: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """``num_samples`` (primer, true continuation) pairs cut from held-out pieces.

    Each pair is ``primer_length + num_notes`` consecutive notes of one piece, drawn uniformly
    over every such span of every long-enough piece (without repeats while there are enough).
    Returns ``(primers (S, primer_length, 3) float32, continuations [S x (num_notes, 3)])``;
    the continuations are the reference the generated music is compared with.
    """
    pieces = as_pieces(pieces)
    span = int(primer_length) + int(num_notes)
    if primer_length < 1 or num_notes < 4 or num_samples < 2:
        raise MusicRNNError("need primer_length >= 1, num_notes >= 4 and num_samples >= 2")
    starts_per_piece = [max(0, len(p) - span + 1) for p in pieces]
    total = int(sum(starts_per_piece))
    if total == 0:
        longest = max((len(p) for p in pieces), default=0)
        raise MusicRNNError(
            f"no held-out piece has {span} notes (primer {primer_length} + {num_notes} to "
            f"compare; longest {longest}); lower num_notes or use longer pieces"
        )
    rng = np.random.default_rng(seed)
    picks = rng.choice(total, size=int(num_samples), replace=total < num_samples)
    bounds = np.cumsum(starts_per_piece)
    primers, continuations = [], []
    for pick in np.sort(picks):
        i = int(np.searchsorted(bounds, pick, side="right"))
        start = int(pick - (bounds[i - 1] if i else 0))
        segment = pieces[i][start:start + span]
        primers.append(segment[:primer_length])
        continuations.append(segment[primer_length:])
    return np.stack(primers).astype(np.float32), continuations


def generate_continuations(model: Any, primers: np.ndarray, num_notes: int,
                           temperature: float = 1.0, seed: int = 0, **sampler_options: Any
                           ) -> list[np.ndarray]:
    """Sample ``num_notes`` after each primer (one batch, :class:`musicrnn.generation.Sampler`);
    returns one ``(num_notes, 3)`` array per primer."""
    from .generation import Sampler

    primers = np.asarray(primers, dtype=np.float32)
    sampler = Sampler(model, batch_size=len(primers), seed=seed, **sampler_options)
    sampler.prime(primers)
    out = np.asarray(sampler.sample(int(num_notes), temperature=float(temperature)))
    return [np.asarray(o, dtype=np.float64) for o in out]


def temperature_sweep(model: Any, primers: np.ndarray, reference: Sequence[np.ndarray],
                      temperatures: Sequence[float], *, seed: int = 0,
                      statistics: Sequence[str] | None = None, progress: bool = False,
                      **sampler_options: Any):
    """Generate continuations of ``primers`` at each temperature and compare them with the true
    continuations ``reference`` (:func:`compare_statistics`).

    Returns ``(sweep, comparisons, samples)``: a DataFrame with one row per temperature (mean
    overlap area and KL divergence over the statistics, then each statistic's overlap), the
    per-temperature comparison tables, and the generated samples. The best temperature is the
    row with the largest mean overlap: :func:`best_temperature`.
    """
    import pandas as pd

    temperatures = [float(t) for t in temperatures]
    if not temperatures or any(not t > 0 for t in temperatures):
        raise MusicRNNError(f"temperatures must be positive numbers, got {temperatures}")
    iterator = temperatures
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(temperatures, desc="temperature sweep")
    rows, comparisons, samples = [], {}, {}
    num_notes = len(reference[0])
    for t in iterator:
        generated = generate_continuations(model, primers, num_notes, t, seed, **sampler_options)
        table = compare_statistics(generated, reference, statistics)
        comparisons[t], samples[t] = table, generated
        row = {"temperature": t, "overlap_area": float(table["overlap_area"].mean()),
               "kl_divergence": float(table["kl_divergence"].mean()),
               "value_overlap": float(table["value_overlap"].mean())}
        row.update({f"overlap_{k}": float(v) for k, v in table["overlap_area"].items()})
        rows.append(row)
    return pd.DataFrame(rows).set_index("temperature"), comparisons, samples


def best_temperature(sweep) -> float:
    """The temperature whose generated statistics overlap held-out music most."""
    return float(sweep["overlap_area"].idxmax())


# ---------------------------------------------------------------------------------------------
# A model's whole evaluation, and a run directory's
# ---------------------------------------------------------------------------------------------

DEFAULT_TEMPERATURES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)
GOAL_MARKOV2_IMPROVEMENT = 0.15  # the best model's NLL must be >= 15% below Markov-2's
GOAL_OVERLAP = 0.8  # mean overlapping area of generated vs held-out statistics


def markdown_table(frame, floatfmt: str = ".4g") -> str:
    """A pandas DataFrame as a GitHub-flavoured Markdown table (index included when named)."""
    df = frame.reset_index() if frame.index.name is not None else frame
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "" if not np.isfinite(v) else format(float(v), floatfmt)
        return str(v)
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def _write_table(frame, out_dir: Path, stem: str, title: str) -> None:
    from .paths import atomic_write_text

    atomic_write_text(out_dir / f"{stem}.csv", frame.to_csv())
    atomic_write_text(out_dir / f"{stem}.md", f"# {title}\n\n" + markdown_table(frame))


@dataclass
class EvaluationReport:
    """Everything :func:`evaluate_model` measured; :meth:`save` writes it to a folder."""

    metrics: dict[str, Any]  # the headline numbers (metrics.json)
    scores: Any  # DataFrame: model and baselines, both context regimes
    sweep: Any  # DataFrame: one row per temperature
    statistics: Any  # DataFrame: per-statistic comparison at the best temperature
    generated: dict[float, list[np.ndarray]] = field(default_factory=dict)  # per temperature
    reference: list[np.ndarray] = field(default_factory=list)  # the true continuations
    real: list[np.ndarray] = field(default_factory=list)  # continuations from training pieces

    def save(self, out_dir: str | Path, plots: bool = True) -> Path:
        """Write ``metrics.json``, ``scores``/``temperature_sweep``/``statistics`` as CSV and
        Markdown, and (with ``plots``) ``nll_bars.png``, ``temperature_sweep.png``,
        ``distributions.png``. Returns the folder."""
        from .paths import atomic_write_text

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _write_table(self.scores, out, "scores", "Next-note prediction on held-out pieces")
        _write_table(self.sweep, out, "temperature_sweep",
                     "Generated vs held-out statistics by temperature (overlapping area)")
        _write_table(self.statistics, out, "statistics",
                     f"Statistics at the best temperature ({self.metrics['best_temperature']})")
        atomic_write_text(out / "metrics.json", json.dumps(_jsonable(self.metrics), indent=2,
                                                           sort_keys=True) + "\n")
        if plots:
            self.plot(out)
        return out

    def plot(self, out_dir: str | Path) -> list[Path]:
        """Save the three evaluation figures into ``out_dir``; returns their paths."""
        from . import plots as _plots

        out = Path(out_dir)
        best = self.metrics["best_temperature"]
        figures = {
            "nll_bars.png": lambda: _plots.nll_bars(self.scores),
            "temperature_sweep.png": lambda: _plots.overlap_by_temperature(
                self.sweep, reference_overlap=self.metrics.get("reference_overlap_area")),
            "distributions.png": lambda: _plots.statistics_overlays(
                {"held-out": self.reference,
                 f"generated (T={best:g})": self.generated.get(best, []),
                 "training pieces": self.real}),
        }
        return [_plots.save_figure(draw(), out / name) for name, draw in figures.items()]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _scores_frame(rows: list[PredictionScores]):
    import pandas as pd

    return pd.DataFrame([r.to_dict() for r in rows])


def evaluate_model(model: Any, corpus: Any, *, seq_length: int, config: Any = None,
                   name: str = "model", split: str = "test",
                   temperatures: Sequence[float] = DEFAULT_TEMPERATURES, num_samples: int = 64,
                   num_notes: int = 100, seed: int = 0, min_position: int | None = None,
                   max_positions: int | None = None, baselines: dict | None = None,
                   carried: bool = True, progress: bool = True,
                   sampler_options: dict | None = None) -> EvaluationReport:
    """Measure ``model`` on the held-out pieces of ``corpus`` (a ``NoteCorpus``).

    1. Teacher-forced scores with a full ``seq_length`` context (notes at position
       ``>= min_position``, default ``seq_length``; ``max_positions`` keeps an evenly spaced
       subset) and with the state carried through whole pieces (``carried``), beside the n-gram
       baselines and the repeat-last rule on exactly the same notes.
    2. A temperature sweep: ``num_samples`` primers of ``seq_length`` held-out notes, continued
       for ``num_notes`` notes at each temperature, compared with the true continuations; the
       same comparison of continuations cut from *training* pieces gives the overlap real music
       reaches (``reference_overlap_area``), the ceiling for a perfect model at this sample size.

    Baselines are fitted on the training pieces and tuned on the validation pieces (untuned when
    validation is the held-out split); pass ``baselines`` to reuse fitted ones.
    """
    split = held_out_split(corpus, split)
    held_out = list(corpus.iter_features(split))
    train = list(corpus.iter_features("train"))
    if not train:
        raise MusicRNNError(f"{corpus.dataset} has no training pieces to fit the baselines on")
    validation = list(corpus.iter_features("validation")) if split != "validation" else []
    _check_seq_length(model, seq_length)
    min_position = int(seq_length if min_position is None else min_position)
    if baselines is None:
        baselines = fit_ngram_baselines(train, validation or None)

    t0 = time.perf_counter()
    rows = [score_windows(model, held_out, seq_length, name=name, min_position=min_position,
                          max_positions=max_positions, progress=progress)]
    window_context = rows[0].context
    rows += ngram_scores(baselines, held_out, min_position, max_positions, window_context)
    repeat = repeat_last_scores(held_out, min_position, max_positions, window_context)
    rows.append(repeat)
    if carried:
        carried_rows = [score_carried(model, held_out, name=name, config=config,
                                      progress=progress)]
        ctx = carried_rows[0].context
        carried_rows += ngram_scores(baselines, held_out, 1, None, ctx)
        carried_rows.append(repeat_last_scores(held_out, 1, None, ctx))
        rows += carried_rows
    scores = _scores_frame(rows)
    scoring_seconds = time.perf_counter() - t0

    primers, reference = continuation_segments(held_out, seq_length, num_notes, num_samples, seed)
    _, real = continuation_segments(train, seq_length, num_notes, len(reference), seed + 1)
    real_table = compare_statistics(real, reference)
    options = {"config": config} if config is not None else {}
    options.update(sampler_options or {})
    sweep, comparisons, generated = temperature_sweep(
        model, primers, reference, temperatures, seed=seed, progress=progress, **options)
    best_t = best_temperature(sweep)
    statistics = comparisons[best_t].copy()
    statistics["real_overlap_area"] = real_table["overlap_area"]

    window = {r.name: r for r in rows[: len(baselines) + 2]}
    ngram_names = list(baselines)
    best_ngram = min(ngram_names, key=lambda k: window[k].pitch_nll)
    model_row = window[name]
    m2 = window.get("markov2")
    metrics: dict[str, Any] = {
        "model": name,
        "dataset": corpus.dataset,
        "split": split,
        "n_pieces": len(held_out),
        "seq_length": int(seq_length),
        "min_position": min_position,
        "n_positions": model_row.n_notes,
        "pitch_nll": model_row.pitch_nll,
        "perplexity": model_row.perplexity,
        "top1_accuracy": model_row.top1_accuracy,
        "top5_accuracy": model_row.top5_accuracy,
        "step_mae": model_row.step_mae,
        "duration_mae": model_row.duration_mae,
        "best_ngram": best_ngram,
        "best_ngram_pitch_nll": window[best_ngram].pitch_nll,
        "repeat_last_step_mae": repeat.step_mae,
        "repeat_last_duration_mae": repeat.duration_mae,
        "best_temperature": best_t,
        "overlap_area": float(sweep.loc[best_t, "overlap_area"]),
        "kl_divergence": float(sweep.loc[best_t, "kl_divergence"]),
        "reference_overlap_area": float(real_table["overlap_area"].mean()),
        "temperatures": [float(t) for t in sweep.index],
        "num_samples": len(reference),
        "num_notes": int(num_notes),
        "scoring_seconds": scoring_seconds,
    }
    for k in ngram_names:
        metrics[f"{k}_pitch_nll"] = window[k].pitch_nll
        metrics[f"{k}_top1_accuracy"] = window[k].top1_accuracy
    if carried:
        c = carried_rows[0]
        metrics.update({"carried_pitch_nll": c.pitch_nll, "carried_top1_accuracy": c.top1_accuracy,
                        "carried_top5_accuracy": c.top5_accuracy, "carried_step_mae": c.step_mae,
                        "carried_duration_mae": c.duration_mae, "carried_n_positions": c.n_notes})
    if m2 is not None:
        improvement = 1.0 - model_row.pitch_nll / m2.pitch_nll
        metrics["improvement_over_markov2"] = improvement
        metrics["goal_markov2_15pct"] = bool(improvement >= GOAL_MARKOV2_IMPROVEMENT)
    metrics["goal_beats_best_ngram"] = bool(model_row.pitch_nll < window[best_ngram].pitch_nll)
    metrics["goal_overlap_0_8"] = bool(metrics["overlap_area"] >= GOAL_OVERLAP)
    return EvaluationReport(metrics=metrics, scores=scores, sweep=sweep, statistics=statistics,
                            generated=generated, reference=reference, real=real)


def evaluate_run(run_dir: str | Path, *, data_dir: str | Path | None = None,
                 dataset: str | None = None, max_files: int | None = None,
                 temperatures: Sequence[float] | None = None, num_samples: int = 64,
                 num_notes: int = 100, seed: int = 0, split: str = "test",
                 min_position: int | None = None, max_positions: int | None = None,
                 out_dir: str | Path | None = None, plots: bool = True,
                 progress: bool = True, baselines: dict | None = None) -> EvaluationReport:
    """Evaluate the model of a run directory and write ``<run_dir>/evaluation/`` (or ``out_dir``).

    The held-out pieces come from the dataset (and ``max_files``) the run was trained on, unless
    ``dataset``/``max_files`` say otherwise. See :func:`evaluate_model` for what is measured;
    ``metrics.json`` holds at least ``pitch_nll``, ``unigram_pitch_nll``, ``markov2_pitch_nll``,
    ``best_ngram_pitch_nll``, ``best_temperature`` and ``overlap_area``.
    """
    from .model import load_run
    from .notes import load_corpus

    run = load_run(run_dir)
    info = dict(getattr(run, "info", {}) or {})
    dataset = dataset or info.get("dataset")
    if not dataset:
        raise MusicRNNError(
            f"{run_dir}/config.json names no dataset; pass dataset= (e.g. bach-chorales)"
        )
    if max_files is None:
        max_files = info.get("max_files")
    corpus = load_corpus(dataset, data_dir=data_dir, max_files=max_files)
    config = run.config
    report = evaluate_model(
        run.model, corpus, seq_length=config.seq_length, config=config,
        name=getattr(config, "name", "model"), split=split,
        temperatures=tuple(temperatures or DEFAULT_TEMPERATURES), num_samples=num_samples,
        num_notes=num_notes, seed=seed, min_position=min_position, max_positions=max_positions,
        baselines=baselines, progress=progress,
    )
    report.metrics["run_dir"] = str(Path(run.run_dir))
    report.metrics["max_files"] = max_files
    report.save(Path(out_dir) if out_dir else Path(run.run_dir) / "evaluation", plots=plots)
    return report


# ---------------------------------------------------------------------------------------------
# Experiments: several presets, one data set, one wall-clock budget each, one log
# ---------------------------------------------------------------------------------------------


def time_budget_callback(seconds: float) -> Any:
    """A Keras callback that stops training once ``seconds`` of wall-clock time have passed.

    The clock starts when the first training step has finished (so the one-off graph tracing is
    not charged) and counts everything after it, validation included. It stops after the batch
    that crosses the budget; Keras still runs that period's validation, and early stopping then
    restores the best weights, so every model leaves with its best validated weights however far
    it got.
    """
    import keras

    if not seconds > 0:
        raise MusicRNNError(f"the training budget must be > 0 seconds, got {seconds}")

    class TimeBudget(keras.callbacks.Callback):
        def __init__(self, budget: float):
            super().__init__()
            self.budget = float(budget)
            self.started: float | None = None
            self.stopped = False

        def on_train_begin(self, logs=None):
            self.started = None

        def on_train_batch_end(self, batch, logs=None):
            if self.started is None:
                self.started = time.perf_counter()
            elif time.perf_counter() - self.started >= self.budget:
                self.stopped = True
                self.model.stop_training = True

    return TimeBudget(seconds)


def load_experiment_config(path: str | Path) -> dict[str, Any]:
    """Read an experiments file (``configs/experiments-*.yaml``); clear errors for bad ones.

    Keys: ``dataset``, ``max_files``, ``seed``, ``budget_seconds`` (training wall-clock per
    model), ``train`` (more arguments of :func:`musicrnn.training.train`), ``evaluation``
    (arguments of :func:`evaluate_model`) and ``models``: ``{name: {preset: ..., <ModelConfig
    field>: value, ...}}``.
    """
    from .paths import read_yaml

    path = Path(path)
    raw = read_yaml(path, f"experiments file at {path}; see configs/experiments-*.yaml")
    known = {"description", "dataset", "max_files", "data_dir", "seed", "budget_seconds", "train",
             "evaluation", "models"}
    if not isinstance(raw, dict) or set(raw) - known:
        raise MusicRNNError(f"{path}: unknown keys {sorted(set(raw) - known)}; known: "
                            f"{sorted(known)}")
    models = raw.get("models") or {}
    if not isinstance(models, dict) or not models:
        raise MusicRNNError(f"{path}: 'models' must map names to presets, e.g. v2: {{preset: v2}}")
    from .training import resolve_config

    for name, spec in models.items():
        if not isinstance(spec, dict) or "preset" not in spec:
            raise MusicRNNError(f"{path}: model {name!r} needs a 'preset' (baseline, v1, ...)")
        resolve_config(dict(spec))  # unknown presets/fields and bad values fail here, early
    budget = raw.get("budget_seconds", 120)
    if not isinstance(budget, (int, float)) or budget <= 0:
        raise MusicRNNError(f"{path}: budget_seconds must be a positive number, got {budget!r}")
    return {
        "name": path.stem,
        "description": raw.get("description", ""),
        "dataset": raw.get("dataset", "bach-chorales"),
        "max_files": raw.get("max_files"),
        "data_dir": raw.get("data_dir"),
        "seed": int(raw.get("seed", 42)),
        "budget_seconds": float(budget),
        "train": dict(raw.get("train") or {}),
        "evaluation": dict(raw.get("evaluation") or {}),
        "models": {str(k): dict(v) for k, v in models.items()},
    }


def _history_row(history, best_epoch: int | None) -> dict[str, float]:
    if history is None or not len(history):
        return {}
    row = history.iloc[int(best_epoch) if best_epoch is not None and best_epoch < len(history)
                       else -1]
    out = {}
    for key in ("loss", "val_loss", "pitch_loss", "val_pitch_loss"):
        if key in history.columns:
            out[f"{'train_' if not key.startswith('val_') else ''}{key}"] = float(row[key])
    return out


def run_experiments(config: str | Path | dict[str, Any], out_dir: str | Path | None = None, *,
                    data_dir: str | Path | None = None, budget_seconds: float | None = None,
                    models: Sequence[str] | None = None, progress: bool = True):
    """Train every model of an experiments file on the same data with the same wall-clock budget,
    evaluate each on the same held-out notes, and write the experiment log.

    Each model gets its own run directory ``<out_dir>/<name>/`` (with ``evaluation/``); the log
    goes to ``<out_dir>/experiment_log.csv`` and ``.md`` with ``loss_curves.png``,
    ``nll_bars.png``, ``temperature_sweep.png`` and ``distributions.png``, and ``summary.json``
    (the goals, measured on the best model). Every model is scored on notes with at least the
    longest model's ``seq_length`` of context, so all rows score the very same notes. A finished
    run directory is loaded, not retrained (run again with the same ``out_dir`` to resume).
    Returns the log as a DataFrame.
    """
    import pandas as pd

    from . import plots as _plots
    from .model import count_params
    from .notes import load_corpus
    from .paths import RUNS, atomic_write_text
    from .training import resolve_config, train

    cfg = config if isinstance(config, dict) else load_experiment_config(config)
    budget = float(budget_seconds or cfg["budget_seconds"])
    names = list(models or cfg["models"])
    unknown = sorted(set(names) - set(cfg["models"]))
    if unknown:
        raise MusicRNNError(f"models {unknown} are not in the experiments file "
                            f"({', '.join(cfg['models'])})")
    out = Path(out_dir) if out_dir else RUNS / f"{cfg['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or cfg.get("data_dir")
    corpus = load_corpus(cfg["dataset"], data_dir=data_dir, max_files=cfg["max_files"])
    configs = {n: resolve_config(dict(cfg["models"][n]), seed=cfg["seed"]) for n in names}
    configs = {n: c.replace(name=n) for n, c in configs.items()}
    min_position = max(c.seq_length for c in configs.values())
    split = held_out_split(corpus, "test")
    baselines = fit_ngram_baselines(
        list(corpus.iter_features("train")),
        list(corpus.iter_features("validation")) if split != "validation" else None)
    evaluation = {"temperatures": DEFAULT_TEMPERATURES, "num_samples": 64, "num_notes": 100,
                  "seed": cfg["seed"], **cfg["evaluation"]}

    rows, reports, histories = [], {}, {}
    for name in names:
        model_config = configs[name]
        run_dir = out / name
        if progress:
            print(f"== {name}: {model_config.pitch_input} pitch input, {model_config.targets} "
                  f"targets, LSTM {list(model_config.lstm_units)}; budget {budget:g} s")
        budget_cb = time_budget_callback(budget)
        started = time.perf_counter()
        result = train(model_config, cfg["dataset"], run_dir, data_dir=data_dir,
                       max_files=cfg["max_files"], corpus=corpus, callbacks=[budget_cb],
                       progress=2 if progress else 0, **cfg["train"])
        wall = time.perf_counter() - started
        report = evaluate_model(
            result.model, corpus, seq_length=model_config.seq_length, config=model_config,
            name=name, split=split, min_position=min_position, baselines=baselines,
            progress=progress, **evaluation)
        report.save(run_dir / "evaluation")
        reports[name] = report
        histories[name] = result.history
        m = report.metrics
        rows.append({
            "model": name,
            "pitch_input": model_config.pitch_input,
            "targets": model_config.targets,
            "lstm_units": "-".join(str(u) for u in model_config.lstm_units),
            "params": count_params(model_config),
            "final_epoch": int(result.epochs_run),
            "steps": int(result.steps),
            "train_seconds": round(float(result.train_seconds), 1),
            "wall_seconds": round(wall, 1) if not result.already_complete else math.nan,
            "stopped_by_budget": bool(budget_cb.stopped),
            **_history_row(result.history, result.best_epoch),
            "heldout_pitch_nll": m["pitch_nll"],
            "heldout_perplexity": m["perplexity"],
            "heldout_top1": m["top1_accuracy"],
            "heldout_top5": m["top5_accuracy"],
            "heldout_step_mae": m["step_mae"],
            "heldout_duration_mae": m["duration_mae"],
            "carried_pitch_nll": m.get("carried_pitch_nll", math.nan),
            "best_temperature": m["best_temperature"],
            "overlap_area": m["overlap_area"],
            "kl_divergence": m["kl_divergence"],
        })
    first = reports[names[0]]
    window = first.scores[first.scores["context"] == first.scores["context"].iloc[0]]
    for _, b in window[~window["name"].isin(names)].iterrows():
        rows.append({"model": b["name"], "heldout_pitch_nll": b["pitch_nll"],
                     "heldout_perplexity": b["perplexity"], "heldout_top1": b["top1_accuracy"],
                     "heldout_top5": b["top5_accuracy"], "heldout_step_mae": b["step_mae"],
                     "heldout_duration_mae": b["duration_mae"]})
    log = pd.DataFrame(rows).set_index("model")

    trained = log.loc[names]
    goals = _goal_table(reports, names)
    best_nll = str(trained["heldout_pitch_nll"].idxmin())
    meeting = goals[goals["all_goals"]]
    # the best model: the lowest NLL among the models that meet every goal (else overall)
    best = str(meeting["pitch_nll"].idxmin()) if len(meeting) else best_nll
    bm = reports[best].metrics
    summary = {
        "experiments": cfg["name"], "dataset": cfg["dataset"], "max_files": cfg["max_files"],
        "split": split, "budget_seconds": budget, "min_position": min_position,
        "n_positions": bm["n_positions"], "best_model": best,
        "best_model_meets_every_goal": bool(len(meeting)), "best_nll_model": best_nll,
        "goals": {n: {k: _jsonable(v) for k, v in row.items()}
                  for n, row in goals.to_dict(orient="index").items()},
        "best_pitch_nll": bm["pitch_nll"], "markov2_pitch_nll": bm.get("markov2_pitch_nll"),
        "best_ngram": bm["best_ngram"], "best_ngram_pitch_nll": bm["best_ngram_pitch_nll"],
        "improvement_over_markov2": bm.get("improvement_over_markov2"),
        "goal_markov2_15pct": bm.get("goal_markov2_15pct"),
        "goal_beats_best_ngram": bm["goal_beats_best_ngram"],
        "best_temperature": bm["best_temperature"], "overlap_area": bm["overlap_area"],
        "reference_overlap_area": bm["reference_overlap_area"],
        "goal_overlap_0_8": bm["goal_overlap_0_8"],
        "best_overlap_model": str(trained["overlap_area"].idxmax()),
        "best_overlap_area": float(trained["overlap_area"].max()),
    }
    atomic_write_text(out / "summary.json", json.dumps(_jsonable(summary), indent=2) + "\n")
    atomic_write_text(out / "experiment_log.csv", log.to_csv())
    atomic_write_text(out / "experiment_log.md", _experiment_markdown(log, summary, cfg, goals))

    scores = pd.concat([window[~window["name"].isin(names)]] + [
        r.scores[r.scores["context"] == r.scores["context"].iloc[0]].iloc[:1]
        for r in reports.values()])
    scores = scores.assign(context="same notes for every model")
    figures = {
        "loss_curves.png": lambda: _plots.loss_curves_together(histories),
        "nll_bars.png": lambda: _plots.nll_bars(scores),
        "temperature_sweep.png": lambda: _plots.overlap_by_temperature(
            {n: r.sweep for n, r in reports.items()},
            reference_overlap=bm["reference_overlap_area"]),
        "distributions.png": lambda: _plots.statistics_overlays(
            {"held-out": first.reference, **{
                f"{n} (T={r.metrics['best_temperature']:g})":
                    r.generated[r.metrics["best_temperature"]] for n, r in reports.items()}}),
    }
    for file_name, draw in figures.items():
        _plots.save_figure(draw(), out / file_name)
    if progress:
        print(log.to_string(float_format=lambda v: f"{v:.3f}"))
        print(f"wrote {out}/experiment_log.md (+ .csv, summary.json, plots)")
    return log


def _goal_table(reports: dict[str, Any], names: Sequence[str]):
    """Per trained model: its NLL, the improvement over Markov-2, and each goal met or not."""
    import pandas as pd

    rows = {}
    for name in names:
        m = reports[name].metrics
        flags = [bool(m.get("goal_markov2_15pct")), bool(m["goal_beats_best_ngram"]),
                 bool(m["goal_overlap_0_8"])]
        rows[name] = {
            "pitch_nll": m["pitch_nll"],
            "improvement_over_markov2": m.get("improvement_over_markov2", math.nan),
            "goal_markov2_15pct": flags[0], "goal_beats_best_ngram": flags[1],
            "best_temperature": m["best_temperature"], "overlap_area": m["overlap_area"],
            "goal_overlap_0_8": flags[2], "all_goals": all(flags),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _experiment_markdown(log, summary: dict[str, Any], cfg: dict[str, Any], goals=None) -> str:
    def yes(flag):
        return "yes" if flag else "no"

    if summary.get("best_model_meets_every_goal"):
        heading = f"best model: `{summary['best_model']}`, the lowest NLL among the models " \
                  "that meet every goal"
    else:
        heading = f"no model meets every goal; best model by held-out NLL: " \
                  f"`{summary['best_model']}`"
    if summary.get("best_nll_model") not in (None, summary["best_model"]):
        heading += f"; the lowest NLL overall is `{summary['best_nll_model']}`'s"
    per_model = []
    if goals is not None:
        per_model = ["| model | held-out NLL | vs Markov-2 | beats best n-gram | best T | overlap "
                     "| every goal |", "|---|---|---|---|---|---|---|"]
        for name, g in goals.iterrows():
            per_model.append(
                f"| {name} | {g['pitch_nll']:.3f} | {g['improvement_over_markov2']:.1%} "
                f"{'(yes)' if g['goal_markov2_15pct'] else '(no)'} | "
                f"{yes(g['goal_beats_best_ngram'])} | {g['best_temperature']:g} | "
                f"{g['overlap_area']:.3f} {'(yes)' if g['goal_overlap_0_8'] else '(no)'} | "
                f"{yes(g['all_goals'])} |")
        per_model.append("")

    lines = [
        f"# Experiment log: {cfg['name']}",
        "",
        f"Dataset `{cfg['dataset']}` (max_files {cfg['max_files']}), held-out "
        f"`{summary['split']}` pieces, {summary['n_positions']:,} notes scored, each with at least "
        f"{summary['min_position']} notes of context (the same notes for every row). Every model "
        f"trained for a wall-clock budget of {summary['budget_seconds']:g} s. NLL in nats per "
        "note; "
        "losses at the restored (best validation) period; `val_pitch_loss` of an `all`-targets "
        "model averages every position of a window, so compare models on `heldout_pitch_nll`.",
        "",
        markdown_table(log),
        f"## Goals ({heading})",
        "",
        *per_model,
        f"- NLL {summary['best_pitch_nll']:.3f} vs Markov-2 {summary['markov2_pitch_nll']:.3f}: "
        f"{summary['improvement_over_markov2']:.1%} better (goal >= 15%): "
        f"{yes(summary['goal_markov2_15pct'])}",
        f"- beats the best n-gram ({summary['best_ngram']}, "
        f"{summary['best_ngram_pitch_nll']:.3f}): {yes(summary['goal_beats_best_ngram'])}",
        f"- overlapping area at its best temperature ({summary['best_temperature']:g}): "
        f"{summary['overlap_area']:.3f} (goal >= 0.8: {yes(summary['goal_overlap_0_8'])}; real "
        f"music against held-out music at this sample size: "
        f"{summary['reference_overlap_area']:.3f})",
        "",
    ]
    return "\n".join(lines)

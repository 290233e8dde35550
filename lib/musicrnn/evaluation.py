"""Measure a model instead of guessing: held-out likelihood, simple baselines, musical statistics.

Three kinds of measurement, each a plain function on note arrays (raw ``(n, 3)`` float arrays of
pitch 0-127, step seconds, duration seconds, one per piece; ``(n, 4)`` with each note's MIDI
velocity last for a model that reads and predicts velocity):

* **Teacher-forced scores** on held-out pieces -- the negative log-likelihood (nats per note) of
  every categorical head (``pitch_nll``; ``step_nll`` and ``duration_nll`` for time-class heads,
  ``velocity_nll`` for a velocity head) and their sum ``note_nll``, pitch perplexity and
  top-1/top-5 accuracy, step and duration mean absolute error -- in two context regimes:
  :func:`score_windows` ("full context": the note after a whole ``seq_length`` window read from
  a fresh state, exactly as a ``last``-target model is trained) and :func:`score_carried` (one
  pass over each whole piece, the state carried from its first note). A regression head has no
  likelihood: its NLL is NaN (``None`` in ``metrics.json``), and so is ``note_nll``.
* **Baselines** fitted on the training pieces: :class:`NGramModel` (unigram and Markov models
  of any order over a head's classes -- pitches, time classes or velocity classes --,
  interpolated Kneser-Ney with discounts tuned on validation pieces) and the "repeat the last
  step/duration" rule (:func:`repeat_last_scores`). A network that cannot beat them has learned
  nothing.
* Generated against held-out music: a **temperature sweep** (:func:`temperature_sweep`) samples
  continuations of held-out primers and compares their musical statistics with the true
  continuations (:func:`musicrnn.statistics.compare_statistics`); the sweep extends itself past
  the edge of the grid until the best temperature is inside it.

:func:`evaluate_model` puts them together for a model and a corpus, :func:`evaluate_run` for a
run directory (``musicrnn evaluate``); :mod:`musicrnn.experiments` compares presets with them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import MusicRNNError
from .statistics import N_PITCHES, as_pieces, compare_statistics

HEADS: tuple[str, ...] = ("pitch", "step", "duration", "velocity")  # a model's output heads
MIN_TEMPERATURE = 0.05  # the sweep never extends below this temperature
MAX_EXTENSIONS = 4  # temperatures the sweep may add beyond the edge of its grid

__all__ = [
    "HEADS", "PredictionScores", "pitch_scores", "class_nll", "held_out_split", "corpus_pieces",
    "score_windows", "score_carried", "sequence_model", "model_seq_length", "model_input_width",
    "NGramModel", "NGramPitchModel", "fit_ngram_baselines", "fit_head_baselines",
    "ngram_scores", "repeat_last_scores", "continuation_segments", "generate_continuations",
    "next_temperature", "sweep_until_inside", "temperature_sweep", "best_temperature",
    "EvaluationReport", "evaluate_model", "evaluate_run", "DEFAULT_TEMPERATURES", "MIN_TEMPERATURE",
    "MAX_EXTENSIONS", "markdown_table", "window_targets", "CONTEXT_LENGTHS", "context_curve",
    "generation_speed",
]

CONTEXT_LENGTHS = (50, 100, 200, 400)  # notes of context of context_curve (issue 14's)


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


def corpus_pieces(corpus: Any, split: str | None = None, *, velocity: bool = False
                  ) -> list[np.ndarray]:
    """The pieces of one split of a ``NoteCorpus`` as note arrays: ``(n, 3)`` raw (pitch, step,
    duration), or ``(n, 4)`` with each note's MIDI velocity last when ``velocity`` (what a model
    that reads velocity needs)."""
    if not velocity:
        return [np.asarray(p, dtype=np.float64) for p in corpus.iter_features(split)]
    if "velocity" not in corpus.columns:
        raise MusicRNNError(f"{corpus.dataset}'s note tables hold no velocity; extract them again "
                            "(musicrnn extract NAME --force) to evaluate a velocity model")
    from .sequences import piece_features

    return [piece_features(corpus, int(i), velocity=True).astype(np.float64)
            for i in corpus.indices(split)]


def _concat(pieces: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    widths = {p.shape[1] for p in pieces}
    if len(widths) > 1:
        raise MusicRNNError("the pieces mix 3 and 4 columns; give every piece a velocity column "
                            "or none")
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
    """Next-note prediction quality on a set of positions (NaN where a predictor has no head, or
    a head without a likelihood: a regression head has no NLL)."""

    name: str  # who predicted: a model name or a baseline ("unigram", "markov2", ...)
    context: str  # "window" (full seq_length context), "carried" (whole piece), or a description
    n_notes: int  # positions scored
    pitch_nll: float = math.nan  # mean negative log-likelihood of the true pitch, nats per note
    perplexity: float = math.nan  # exp(pitch_nll): the effective number of equally likely pitches
    top1_accuracy: float = math.nan  # fraction of positions whose true pitch has the highest score
    top5_accuracy: float = math.nan  # fraction whose true pitch is among the five highest
    step_mae: float = math.nan  # mean |predicted step - true step|, seconds
    duration_mae: float = math.nan  # mean |predicted duration - true duration|, seconds
    step_nll: float = math.nan  # NLL of the true step's time class (categorical heads), nats
    duration_nll: float = math.nan  # NLL of the true duration's time class, nats
    velocity_nll: float = math.nan  # NLL of the true velocity class (velocity heads), nats
    note_nll: float = math.nan  # the sum of the heads' NLLs, when every head has one: nats/note
    # NLL of the true pitch with the step summed out, nats/note: for a model whose pitch reads
    # the step (pitch_given_step) pitch_nll is the pitch given the true step and this one is
    # comparable with a model that draws them apart; for any other predictor it is pitch_nll
    pitch_nll_marginal: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add_note_nll(self) -> "PredictionScores":
        """Set :attr:`note_nll`: pitch + step + duration NLL (+ velocity NLL when there is one),
        or NaN when pitch, step or duration has none. Returns ``self``."""
        if not np.isfinite(self.pitch_nll_marginal):
            self.pitch_nll_marginal = self.pitch_nll
        parts = [self.pitch_nll, self.step_nll, self.duration_nll]
        if np.isfinite(self.velocity_nll):
            parts.append(self.velocity_nll)
        self.note_nll = float(sum(parts)) if all(np.isfinite(parts)) else math.nan
        return self


def class_nll(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-position NLL (nats) of the true class ``target`` ``(n,)`` under ``logits`` ``(n, k)``
    (logits or log-probabilities)."""
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return log_z - logits[np.arange(len(target)), np.asarray(target, dtype=np.int64)]


def pitch_scores(logits: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-position NLL (nats) of the true pitch, and whether it is in the top 1 and top 5.

    ``logits`` may be logits or log-probabilities. Ties are broken at random in expectation: a
    true pitch tied with ``m`` others just inside the top ``k`` counts ``(k - above) / (m + 1)``,
    so a uniform model scores 1/128 top-1, not 1.
    """
    logits = np.asarray(logits, dtype=np.float64)
    true = logits[np.arange(len(target)), target]
    above = (logits > true[:, None]).sum(axis=1)
    ties = (logits == true[:, None]).sum(axis=1)  # includes the true pitch itself
    hits = [np.clip((k - above) / ties, 0.0, 1.0) for k in (1, 5)]
    return class_nll(logits, target), hits[0], hits[1]


class _Accumulator:
    """Per-position scores collected in parts, turned into a :class:`PredictionScores`."""

    FIELDS = ("nll", "top1", "top5", "step_err", "duration_err", "step_nll", "duration_nll",
              "velocity_nll", "marginal_nll")

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in self.FIELDS}

    def add(self, **values: Any) -> None:
        for key, value in values.items():
            if value is not None:
                self.parts[key].append(np.asarray(value, dtype=np.float64).ravel())

    def add_predictions(self, heads: Mapping[str, np.ndarray], true: np.ndarray) -> np.ndarray:
        """Score one batch of predictions ``heads`` (one row per scored position: pitch logits,
        step and duration outputs, velocity logits when the model has them) against the true
        notes ``true``; returns the pitch NLL per position."""
        from .timing import (
            TIME_BINS, marginal_pitch_logits, pitch_given_steps, time_classes, timing_point,
        )

        pitch = np.asarray(heads["pitch"])
        target = true[:, 0].astype(np.int64)
        values: dict[str, Any] = {}
        if pitch.shape[-1] > N_PITCHES:  # the pitch reads the step: score it given the true one
            values["marginal_nll"] = class_nll(marginal_pitch_logits(pitch, heads["step"]),
                                               target)
            pitch = pitch_given_steps(pitch, true[:, 1])
        nll, top1, top5 = pitch_scores(pitch, target)
        values.update(nll=nll, top1=top1, top5=top5)
        for head, column in (("step", 1), ("duration", 2)):
            out = heads[head]
            values[f"{head}_err"] = np.abs(np.maximum(timing_point(out)[:, 0], 0) - true[:, column])
            if out.shape[-1] == TIME_BINS:  # categorical: a distribution over time classes
                values[f"{head}_nll"] = class_nll(out, time_classes(true[:, column]))
        if "velocity" in heads and true.shape[1] >= 4:
            from .timing import velocity_classes

            logits = heads["velocity"]
            values["velocity_nll"] = class_nll(
                logits, velocity_classes(true[:, 3], bins=logits.shape[-1]))
        self.add(**values)
        return nll

    def result(self, name: str, context: str) -> PredictionScores:
        def mean(key: str) -> float:
            parts = self.parts[key]
            return float(np.concatenate(parts).mean()) if parts else math.nan

        n = max(sum(len(a) for a in self.parts[k]) for k in self.FIELDS)
        pitch_nll = mean("nll")
        return PredictionScores(
            name=name, context=context, n_notes=int(n), pitch_nll=pitch_nll,
            perplexity=float(math.exp(pitch_nll)) if np.isfinite(pitch_nll) else math.nan,
            top1_accuracy=mean("top1"), top5_accuracy=mean("top5"),
            step_mae=mean("step_err"), duration_mae=mean("duration_err"),
            step_nll=mean("step_nll"), duration_nll=mean("duration_nll"),
            velocity_nll=mean("velocity_nll"), pitch_nll_marginal=mean("marginal_nll"),
        ).add_note_nll()


def _progress(iterable, show: bool, desc: str):
    """``iterable`` with a tqdm bar when ``show`` and it has more than one item."""
    if not show or len(iterable) < 2:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc)


def _input_shape(model: Any) -> tuple | None:
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):
        shape = shape[0]
    return None if shape is None or len(shape) != 3 else tuple(shape)


def model_seq_length(model: Any) -> int | None:
    """The fixed time length of ``model``'s input, or None when it reads any length."""
    shape = _input_shape(model)
    return None if shape is None or shape[1] is None else int(shape[1])


def model_input_width(model: Any) -> int:
    """Columns of the notes ``model`` reads: 3 (pitch, step, duration) or 4 (and velocity)."""
    shape = _input_shape(model)
    return 3 if shape is None or shape[2] is None else int(shape[2])


def _check_seq_length(model: Any, seq_length: int) -> None:
    if int(seq_length) < 1:
        raise MusicRNNError(f"seq_length must be >= 1, got {seq_length}")
    fixed = model_seq_length(model)
    if fixed is not None and fixed != int(seq_length):
        raise MusicRNNError(
            f"the model reads windows of exactly {fixed} notes but seq_length={seq_length} was "
            f"asked for; evaluate it with seq_length={fixed} (the length it was trained on)"
        )


def _model_notes(model: Any, notes: np.ndarray) -> np.ndarray:
    """``notes`` cut to the columns ``model`` reads, float32; a clear error when a velocity
    model is given notes without velocity."""
    width = model_input_width(model)
    if notes.shape[1] < width:
        raise MusicRNNError(
            f"the model reads {width} columns (pitch, step, duration, velocity) but the notes "
            f"have {notes.shape[1]}; evaluate it on notes with velocity (corpus_pieces(corpus, "
            "split, velocity=True))")
    return notes[:, :width].astype(np.float32)


def _heads(outputs: Any) -> dict[str, np.ndarray]:
    """A model's outputs (dict or list) as numpy, by head: ``pitch`` logits, ``step`` and
    ``duration`` (one value each, or time-class logits), ``velocity`` logits when present."""
    from keras import ops

    if isinstance(outputs, dict):
        named = {k: outputs[k] for k in HEADS if k in outputs}
    else:
        named = dict(zip(HEADS, outputs))
    return {k: o if isinstance(o, np.ndarray) else np.asarray(ops.convert_to_numpy(o))
            for k, o in named.items()}


def _call(model: Any, x: np.ndarray, style: np.ndarray | None) -> Any:
    """``model.predict_on_batch`` on notes ``x``; a conditioned model also gets each row's
    label (``style``; None: 0, "none")."""
    from .model import model_inputs

    return model.predict_on_batch(model_inputs(model, x, style))


def _predict(model: Any, x: np.ndarray, batch_size: int,
             style: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Run ``model`` over ``x`` in fixed-size batches (one traced graph; the tail is padded);
    sequence outputs are cut to their last position (the only one with the whole window).
    ``style``: a conditioned model's label of every row of ``x``."""
    outs: list[dict[str, np.ndarray]] = []
    n = len(x)
    for start in range(0, n, batch_size):
        batch = x[start:start + batch_size]
        labels = None if style is None else style[start:start + batch_size]
        short = batch_size - len(batch)
        if short and n > batch_size:  # keep the batch shape so no new graph is traced
            batch = np.concatenate([batch, np.zeros((short, *batch.shape[1:]), batch.dtype)])
            if labels is not None:
                labels = np.concatenate([labels, np.zeros(short, labels.dtype)])
        keep = len(batch) - (short if n > batch_size else 0)
        heads = _heads(_call(model, batch, labels))
        outs.append({k: (h[:, -1] if h.ndim == 3 else h)[:keep] for k, h in heads.items()})
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _piece_labels(styles: Any, count: int) -> np.ndarray | None:
    """One int label per piece from ``styles`` (None, one label, or one per piece)."""
    if styles is None:
        return None
    labels = np.asarray(styles, dtype=np.int64)
    if labels.ndim == 0:
        return np.full(count, int(labels), np.int32)
    if labels.shape != (count,):
        raise MusicRNNError(f"give one style label per piece ({count}), got {labels.shape}")
    return labels.astype(np.int32)


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
                  progress: bool = False, styles: Any = None):
    """Teacher-forced scores with a full ``seq_length`` context for every scored note.

    Every note ``t >= seq_length`` of every piece is predicted from the window of the
    ``seq_length`` notes before it, read from a fresh state -- exactly what a model trained with
    ``targets="last"`` learnt, and the last position of a ``targets="all"`` model's training
    window. The windows are batched (``batch_size`` per forward pass); a model with sequence
    outputs is scored at the last position of each window, which is the only one with the full
    context. Every categorical head is scored by its NLL (see :class:`PredictionScores`).
    Returns :class:`PredictionScores` (and the per-note pitch NLL array with
    ``return_per_note``). A conditioned model reads every piece with its label from ``styles``
    (one per piece, or one for all; None: the "none" label).
    """
    pieces = as_pieces(pieces)
    _check_seq_length(model, seq_length)
    notes, offsets, targets = window_targets(pieces, seq_length, min_position, max_positions)
    labels = _piece_labels(styles, len(pieces))
    acc = _Accumulator()
    per_note = []
    offsets_in_window = np.arange(-int(seq_length), 0)
    x_all = _model_notes(model, notes)
    for start in _progress(range(0, len(targets), chunk_size), progress, "scoring windows"):
        t = targets[start:start + chunk_size]
        windows = x_all[t[:, None] + offsets_in_window[None, :]]
        style = None if labels is None else labels[
            np.searchsorted(offsets, t, side="right") - 1]
        per_note.append(acc.add_predictions(_predict(model, windows, batch_size, style),
                                            notes[t]))
    scores = acc.result(name, f"window ({seq_length} notes)")
    if return_per_note:
        return scores, np.concatenate(per_note)
    return scores


def context_curve(model: Any, pieces: Sequence[np.ndarray] | Any,
                  contexts: Sequence[int] = CONTEXT_LENGTHS, *, name: str = "model",
                  max_positions: int | None = 5000, progress: bool = False, config: Any = None):
    """Held-out NLL as a function of context length: the very same notes, each predicted from
    the last ``c`` notes before it, for every ``c`` of ``contexts``.

    The notes are those at positions ``>=`` the longest context that some piece is long enough
    for (``max_positions`` of them, evenly spaced); contexts longer than that are left out. A
    model that uses its context well gets lower NLL as ``c`` grows; one that cannot (an
    n-gram, or a network that forgets) stays flat; a model read past the length it was trained
    on may get worse. A transformer reads every context as its sampler plays it, through its
    sliding window (:func:`musicrnn.model.sliding_window_model`): past its training length each
    block attends to the last ``seq_length`` notes, the deeper blocks reaching further back
    through them; full attention over more notes than it was trained on is no way it is ever
    played (``config``: the run's ``ModelConfig``, whose ``seq_length`` is that window; default:
    read off the model). Returns a DataFrame with ``model``, ``context``, ``n_notes``,
    ``pitch_nll``, ``note_nll`` and ``pitch_nll_marginal`` (see :class:`PredictionScores`).
    """
    import pandas as pd

    if hasattr(model, "layers"):  # a Keras model (not an n-gram baseline)
        from .model import sliding_window_model

        model = sliding_window_model(model, config) or model
    pieces = as_pieces(pieces)
    contexts = sorted({int(c) for c in contexts})
    if not contexts or contexts[0] < 1:
        raise MusicRNNError(f"contexts must be whole numbers >= 1, got {contexts}")
    longest = max((len(p) for p in pieces), default=0)
    usable = [c for c in contexts if c < longest]
    if not usable:
        raise MusicRNNError(f"no held-out piece is longer than {contexts[0]} notes (longest: "
                            f"{longest}); use shorter contexts")
    rows = []
    for context in usable:
        scores = score_windows(model, pieces, context, name=name, min_position=usable[-1],
                               max_positions=max_positions, progress=progress,
                               batch_size=max(16, 25_600 // context))  # attention: T^2 memory
        rows.append({"model": name, "context": context, "n_notes": scores.n_notes,
                     "pitch_nll": scores.pitch_nll, "note_nll": scores.note_nll,
                     "pitch_nll_marginal": scores.pitch_nll_marginal})
    return pd.DataFrame(rows)


def generation_speed(model: Any, primer: np.ndarray, *, config: Any = None,
                     num_notes: int = 2000, batch_size: int = 1, seed: int = 0) -> float:
    """Notes per second of the sampler (:class:`musicrnn.generation.Sampler`) on this machine:
    ``batch_size`` streams primed with ``primer``, then ``num_notes`` notes each, timed after a
    short warm-up."""
    import time

    from .generation import Sampler

    sampler = Sampler(model, batch_size=batch_size, seed=seed, config=config)
    sampler.prime(primer)
    sampler.sample(min(100, num_notes))
    started = time.perf_counter()
    sampler.sample(num_notes)
    return batch_size * num_notes / (time.perf_counter() - started)


def sequence_model(model: Any, config: Any = None) -> Any:
    """``model`` with its top LSTM returning every position, reading any length; same weights.
    A transformer comes back attending to its last ``seq_length`` notes at every position, as
    its sampler plays (:func:`musicrnn.model.sliding_window_model`).

    A model of this package is rebuilt by :func:`musicrnn.model.with_sequence_outputs` (with the
    run's ``ModelConfig`` when given); any other Keras model has its config edited: the top LSTM
    gets ``return_sequences=True`` and the input any time length.
    """
    import keras

    from .model import sliding_window_model, with_sequence_outputs

    try:
        windowed = sliding_window_model(model, config)
        if windowed is not None:  # a transformer: as its sampler plays, a sliding window
            return windowed
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


CARRIED_CHUNK = 512  # positions per forward pass when a sliding-window model scores a piece


def _receptive_field(model: Any) -> int | None:
    """How many notes before a position can change its outputs (:func:`musicrnn.model.
    receptive_field`)."""
    from .model import receptive_field

    return receptive_field(model)


def _predict_in_chunks(model: Any, x: np.ndarray, reach: int | None,
                       style: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The model's outputs at every position of ``x``: one pass, or (with a finite ``reach``)
    chunks of :data:`CARRIED_CHUNK` positions, each fed the ``reach`` notes before it."""
    from .model import predict_in_chunks

    return predict_in_chunks(lambda part: _heads(_call(model, part, style)), x, reach,
                             chunk=CARRIED_CHUNK)


def score_carried(model: Any, pieces: Sequence[np.ndarray] | Any, *, name: str = "model",
                  config: Any = None, min_position: int = 1, batch_size: int = 16,
                  return_per_note: bool = False, progress: bool = False, styles: Any = None):
    """Teacher-forced scores with the state carried through each whole piece.

    One forward pass of the sequence-output model (:func:`sequence_model`) per batch of pieces;
    the output after note ``t - 1`` predicts note ``t``, so every note ``t >= min_position``
    (default 1: all but the first) is scored with all the notes before it as context. Pieces are
    batched by length, padded at the end (padding after a position never changes it).

    A transformer reads each piece through its sliding window (:func:`sequence_model`); its
    outputs depend on the last ``blocks x (window - 1)`` notes only, so long pieces go through it
    in chunks of :data:`CARRIED_CHUNK` positions, each after that many notes before it: the same
    numbers as one pass, in memory that does not grow with the square of the piece.

    A conditioned model reads each piece with its label from ``styles`` (as for
    :func:`score_windows`).
    """
    pieces = as_pieces(pieces)
    labels = _piece_labels(styles, len(pieces))
    if min_position < 1:
        raise MusicRNNError("min_position must be >= 1: the first note of a piece has no context")
    seq_model = sequence_model(model, config)
    reach = _receptive_field(seq_model)
    order = np.argsort([len(p) for p in pieces], kind="stable")
    usable = [i for i in order if len(pieces[i]) > min_position]
    if not usable:
        raise MusicRNNError(
            f"the evaluation set is too short: no piece has more than {min_position} notes"
        )
    acc = _Accumulator()
    per_note: list[np.ndarray] = []
    for start in _progress(range(0, len(usable), batch_size), progress, "scoring pieces"):
        chosen = usable[start:start + batch_size]
        group = [pieces[i] for i in chosen]
        inputs = [_model_notes(model, piece[:-1]) for piece in group]
        x = np.zeros((len(group), max(len(i) for i in inputs), inputs[0].shape[1]), np.float32)
        for row, piece_input in enumerate(inputs):
            x[row, :len(piece_input)] = piece_input
        heads = _predict_in_chunks(seq_model, x, reach,
                                   None if labels is None else labels[np.asarray(chosen)])
        for row, piece in enumerate(group):
            idx = np.arange(min_position, len(piece))  # targets; their output sits at idx - 1
            per_note.append(acc.add_predictions({k: h[row, idx - 1] for k, h in heads.items()},
                                                piece[idx]))
    scores = acc.result(name, "carried (whole piece)")
    if return_per_note:
        return scores, np.concatenate(per_note)
    return scores


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------


def _head_classes(head: str, n_classes: int) -> Callable[[np.ndarray], np.ndarray]:
    """The function from a note array to the class sequence of ``head`` (int64)."""
    from .timing import time_classes

    if head == "pitch":
        return lambda notes: notes[:, 0].astype(np.int64)
    if head in ("step", "duration"):
        column = 1 if head == "step" else 2
        return lambda notes: time_classes(notes[:, column])

    def velocity(notes: np.ndarray) -> np.ndarray:
        from .timing import velocity_classes

        if notes.shape[1] < 4:
            raise MusicRNNError("a velocity n-gram model needs notes with a velocity column "
                                "(4 columns: pitch, step, duration, velocity)")
        return velocity_classes(notes[:, 3], bins=n_classes)

    return velocity


def _encode(symbols: np.ndarray, base: int) -> np.ndarray:
    """Rows of symbols (0 .. base - 1, oldest first) -> int64 keys in ``base``."""
    key = np.zeros(len(symbols), dtype=np.int64)
    for j in range(symbols.shape[1]):
        key = key * base + symbols[:, j]
    return key


def _grams(sequences: Sequence[np.ndarray], order: int, pad: int,
           min_position: int = 0) -> np.ndarray:
    """``(n, order + 1)`` rows: the ``order`` symbols before each note (``pad`` before the piece
    start), then the note's own symbol; one row per note at position >= ``min_position``."""
    rows = []
    for seq in sequences:
        if len(seq) <= min_position:
            continue
        padded = np.concatenate([np.full(order, pad, np.int64), seq])
        idx = np.arange(min_position, len(seq))[:, None] + np.arange(order + 1)[None, :]
        rows.append(padded[idx])
    if not rows:
        return np.zeros((0, order + 1), np.int64)
    return np.concatenate(rows)


@dataclass
class _Level:
    """Counts of one n-gram level: sorted keys of (context + symbol), their counts, and per
    context the total count and the number of distinct following symbols."""

    base: int
    keys: np.ndarray
    counts: np.ndarray
    context_keys: np.ndarray
    context_totals: np.ndarray
    context_types: np.ndarray

    @classmethod
    def from_keys(cls, keys: np.ndarray, counts: np.ndarray, base: int) -> "_Level":
        contexts, inverse = np.unique(keys // base, return_inverse=True)
        return cls(
            base=base, keys=keys, counts=counts.astype(np.float64), context_keys=contexts,
            context_totals=np.bincount(inverse, weights=counts, minlength=len(contexts)),
            context_types=np.bincount(inverse, minlength=len(contexts)).astype(np.float64),
        )

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count of the n-gram, total count of its context, distinct symbols after the
        context)."""
        def find(table, values, query):
            if not len(table):
                return np.zeros(len(query))
            i = np.minimum(np.searchsorted(table, query), len(table) - 1)
            return np.where(table[i] == query, values[i], 0.0)

        return (find(self.keys, self.counts, keys),
                find(self.context_keys, self.context_totals, keys // self.base),
                find(self.context_keys, self.context_types, keys // self.base))


class NGramModel:
    """A Markov model of one head's classes with interpolated Kneser-Ney smoothing (numpy).

    ``head`` says what it models: ``pitch`` (128 MIDI pitches, the default), ``step`` or
    ``duration`` (the 128 time classes of :mod:`musicrnn.timing`) or ``velocity`` (velocity
    classes, ``n_classes`` of them: 32 by default). ``order`` is the number of previous notes
    the model looks at: 0 is a unigram model (absolute discounting towards the uniform
    distribution), 2 is "Markov-2" (a trigram model). Level ``k`` mixes the discounted counts of
    the ``k``-note context with the level below::

        P_k(w | h) = max(c(h w) - D_k, 0) / c(h) + D_k * N1+(h .) / c(h) * P_{k-1}(w | h')

    where ``h'`` drops the oldest note, ``c`` are raw counts at the top level and continuation
    counts (distinct left neighbours) below it, and contexts never seen fall through to the level
    below. Contexts are hashed into one int64 key per n-gram (base ``n_classes + 1``: the classes
    plus "before the piece"), so fitting and scoring are ``np.unique`` / ``np.searchsorted`` over
    arrays. The discounts ``D_k`` are tuned on validation pieces by :meth:`tune`.
    """

    def __init__(self, order: int, discounts: Sequence[float] | float = 0.75, *,
                 head: str = "pitch", n_classes: int | None = None):
        from .timing import TIME_BINS, VELOCITY_BINS

        if head not in HEADS:
            raise MusicRNNError(f"an n-gram model's head is one of {', '.join(HEADS)}, got "
                                f"{head!r}")
        default = {"pitch": N_PITCHES, "step": TIME_BINS, "duration": TIME_BINS,
                   "velocity": VELOCITY_BINS}[head]
        self.n_classes = int(n_classes or default)
        if head != "velocity" and self.n_classes != default:
            raise MusicRNNError(f"the {head} head has {default} classes, not {n_classes}")
        max_order = int(63 * math.log(2) / math.log(self.n_classes + 1)) - 1  # int64 keys
        if not 0 <= int(order) <= max_order:
            raise MusicRNNError(f"n-gram order must be 0-{max_order} (int64 keys of "
                                f"{self.n_classes + 1} symbols), got {order}")
        self.order = int(order)
        self.head = head
        d = [float(discounts)] * (self.order + 1) if np.isscalar(discounts) else list(discounts)
        if len(d) != self.order + 1 or not all(0 < x < 1 for x in d):
            raise MusicRNNError(f"discounts must be {self.order + 1} values in (0, 1), got {d}")
        self.discounts = d
        self.levels: list[_Level] = []
        self._classes = _head_classes(head, self.n_classes)

    @property
    def name(self) -> str:
        return "unigram" if self.order == 0 else f"markov{self.order}"

    @property
    def _base(self) -> int:
        return self.n_classes + 1  # the classes and "before the piece"

    def _sequence_grams(self, pieces: Any, min_position: int = 0,
                        what: str = "pieces") -> np.ndarray:
        sequences = [self._classes(p) for p in as_pieces(pieces, what)]
        return _grams(sequences, self.order, self.n_classes, min_position)

    def fit(self, pieces: Sequence[np.ndarray] | Any) -> "NGramModel":
        """Count the training pieces' classes (arrays, note tables or a ``NoteCorpus``)."""
        grams = self._sequence_grams(pieces, what="training pieces")
        if not len(grams):
            raise MusicRNNError("no training notes to fit the n-gram model on")
        levels = []
        for k in range(self.order + 1):
            cols = grams[:, self.order - k:]
            if k == self.order:  # raw counts of (k-note context, symbol)
                keys, counts = np.unique(_encode(cols, self._base), return_counts=True)
            else:  # continuation counts: distinct notes before the (k+1)-gram
                longer = np.unique(_encode(grams[:, self.order - k - 1:], self._base))
                keys, counts = np.unique(longer % self._base ** (k + 1), return_counts=True)
            levels.append(_Level.from_keys(keys, counts, self._base))
        self.levels = levels
        return self

    def _lookups(self, grams: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if not self.levels:
            raise MusicRNNError("fit the n-gram model before scoring with it")
        return [self.levels[k].lookup(_encode(grams[:, self.order - k:], self._base))
                for k in range(self.order + 1)]

    def _combine(self, lookups, discounts: Sequence[float]) -> np.ndarray:
        prob = np.full(len(lookups[0][0]), 1.0 / self.n_classes)
        for (count, total, types), d in zip(lookups, discounts):
            seen = total > 0
            safe = np.where(seen, total, 1.0)
            mixed = np.maximum(count - d, 0.0) / safe + d * types / safe * prob
            prob = np.where(seen, mixed, prob)
        return prob

    def log_prob(self, pieces: Sequence[np.ndarray] | Any, min_position: int = 0) -> np.ndarray:
        """Natural-log probability of every note at position >= ``min_position`` of each piece,
        concatenated in piece order."""
        grams = self._sequence_grams(pieces, min_position)
        return np.log(self._combine(self._lookups(grams), self.discounts))

    def predict_log_proba(self, contexts: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` log-probabilities of the next class after each row of ``contexts``
        (``(n, order)`` classes, oldest first; ``n_classes`` marks "before the piece")."""
        contexts = np.asarray(contexts, dtype=np.int64).reshape(len(contexts), self.order)
        n, k = len(contexts), self.n_classes
        grams = np.concatenate([np.repeat(contexts, k, axis=0),
                                np.tile(np.arange(k), n)[:, None]], axis=1)
        prob = self._combine(self._lookups(grams), self.discounts)
        return np.log(prob.reshape(n, k))

    def score(self, pieces: Sequence[np.ndarray] | Any, min_position: int = 0,
              max_positions: int | None = None, chunk_size: int = 8192) -> PredictionScores:
        """The head's NLL on notes at position >= ``min_position`` (``max_positions`` keeps an
        evenly spaced subset, as :func:`window_targets` does); for pitch also perplexity and
        top-1/top-5 accuracy."""
        grams = self._sequence_grams(pieces, min_position)
        grams = grams[_select_positions(np.arange(len(grams)), max_positions)]
        if not len(grams):
            raise MusicRNNError(f"no notes at position >= {min_position} to score")
        acc = _Accumulator()
        for start in range(0, len(grams), chunk_size):
            g = grams[start:start + chunk_size]
            logp = self.predict_log_proba(g[:, :self.order])
            if self.head == "pitch":
                nll, top1, top5 = pitch_scores(logp, g[:, self.order])
                acc.add(nll=nll, top1=top1, top5=top5)
            else:
                acc.add(**{f"{self.head}_nll": class_nll(logp, g[:, self.order])})
        return acc.result(self.name, f"{self.order} previous notes")

    def tune(self, validation: Sequence[np.ndarray] | Any,
             grid: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
             sweeps: int = 2) -> "NGramModel":
        """Choose each level's discount on validation pieces (coordinate descent over ``grid``),
        minimising the validation NLL."""
        grams = self._sequence_grams(validation, what="validation pieces")
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


NGramPitchModel = NGramModel  # the pitch model: NGramModel's default head
"""The n-gram model of pitch (:class:`NGramModel` with ``head="pitch"``, the default)."""


def _fit_tuned(models: Iterable[NGramModel], train: list[np.ndarray],
               validation: list[np.ndarray]) -> dict[str, NGramModel]:
    """Fit each model on ``train`` with its discounts tuned on ``validation`` (or, without
    validation pieces, on every fifth training piece set aside, then refitted on all)."""
    tune_fit, tune_on = train, validation
    if not validation and len(train) >= 5:
        tune_fit = [p for i, p in enumerate(train) if i % 5 != 4]
        tune_on = train[4::5]
    fitted = {}
    for m in models:
        if tune_on:
            m.fit(tune_fit).tune(tune_on)
        fitted[m.name] = m.fit(train)
    return fitted


def fit_ngram_baselines(train: Sequence[np.ndarray] | Any,
                        validation: Sequence[np.ndarray] | Any | None = None,
                        orders: Iterable[int] = (0, 1, 2, 3, 4)) -> dict[str, NGramModel]:
    """Unigram and Markov pitch models fitted on ``train``, discounts tuned on ``validation``.

    Without validation pieces (when they are the held-out set), every fifth training piece is
    set aside to tune the discounts, and the models are then refitted on all training pieces.
    Keys: ``unigram``, ``markov1`` ...
    """
    train = as_pieces(train, "training pieces")
    validation = as_pieces(validation, "validation pieces") if validation is not None else []
    return _fit_tuned([NGramModel(order) for order in orders], train, validation)


def fit_head_baselines(train: Sequence[np.ndarray] | Any,
                       validation: Sequence[np.ndarray] | Any | None = None, *,
                       heads: Sequence[str] = ("step", "duration"),
                       orders: Iterable[int] = (0, 1),
                       velocity_bins: int | None = None) -> dict[str, dict[str, NGramModel]]:
    """Unigram and Markov-1 models of the classes of each head but pitch, fitted on ``train``
    (tuned as :func:`fit_ngram_baselines` tunes): ``{head: {"unigram": ..., "markov1": ...}}``.

    ``step`` and ``duration`` model the time classes of :mod:`musicrnn.timing`; ``velocity``
    (notes of 4 columns) the velocity classes, ``velocity_bins`` of them (default 32).
    """
    train = as_pieces(train, "training pieces")
    validation = as_pieces(validation, "validation pieces") if validation is not None else []
    orders = list(orders)
    return {head: _fit_tuned([NGramModel(o, head=head,
                                         n_classes=velocity_bins if head == "velocity" else None)
                              for o in orders], train, validation)
            for head in heads}


def ngram_scores(baselines: dict[str, NGramModel], pieces: Sequence[np.ndarray] | Any,
                 min_position: int = 0, max_positions: int | None = None,
                 context: str | None = None,
                 head_baselines: dict[str, dict[str, NGramModel]] | None = None
                 ) -> list[PredictionScores]:
    """:meth:`NGramModel.score` of every pitch baseline on the same positions, one row each.

    With ``head_baselines`` (:func:`fit_head_baselines`), the row of each pitch baseline also
    gets the NLL of the same-named model of every other head, and their sum ``note_nll``.
    """
    pieces = as_pieces(pieces)
    out = []
    for m in baselines.values():
        s = m.score(pieces, min_position=min_position, max_positions=max_positions)
        for head, models in (head_baselines or {}).items():
            if m.name in models:
                other = models[m.name].score(pieces, min_position, max_positions)
                setattr(s, f"{head}_nll", getattr(other, f"{head}_nll"))
        s.add_note_nll()
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
# Generated against held-out music: primers, continuations, the temperature sweep
# ---------------------------------------------------------------------------------------------


def continuation_segments(pieces: Sequence[np.ndarray] | Any, primer_length: int, num_notes: int,
                          num_samples: int, seed: int = 0, return_pieces: bool = False):
    """``num_samples`` (primer, true continuation) pairs cut from held-out pieces.

    Each pair is ``primer_length + num_notes`` consecutive notes of one piece, drawn uniformly
    over every such span of every long-enough piece (without repeats while there are enough).
    Returns ``(primers (S, primer_length, c) float32, continuations [S x (num_notes, c)])``
    with the pieces' ``c`` columns (3, or 4 with velocity);
    the continuations are the reference the generated music is compared with. With
    ``return_pieces`` a third item: the index of the piece each pair was cut from.
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
    primers, continuations, sources = [], [], []
    for pick in np.sort(picks):
        i = int(np.searchsorted(bounds, pick, side="right"))
        start = int(pick - (bounds[i - 1] if i else 0))
        segment = pieces[i][start:start + span]
        primers.append(segment[:primer_length])
        continuations.append(segment[primer_length:])
        sources.append(i)
    if return_pieces:
        return np.stack(primers).astype(np.float32), continuations, np.asarray(sources)
    return np.stack(primers).astype(np.float32), continuations


def generate_continuations(model: Any, primers: np.ndarray, num_notes: int,
                           temperature: float = 1.0, seed: int = 0, **sampler_options: Any
                           ) -> list[np.ndarray]:
    """Sample ``num_notes`` after each primer (one batch, :class:`musicrnn.generation.Sampler`);
    returns one ``(num_notes, 3)`` array per primer (4 columns for a model with velocity)."""
    from .generation import Sampler

    primers = np.asarray(primers, dtype=np.float32)
    sampler = Sampler(model, batch_size=len(primers), seed=seed, **sampler_options)
    sampler.prime(primers)
    out = np.asarray(sampler.sample(int(num_notes), temperature=float(temperature)))
    return [np.asarray(o, dtype=np.float64) for o in out]


def next_temperature(overlaps: Mapping[float, float],
                     min_temperature: float = MIN_TEMPERATURE) -> float | None:
    """The temperature to try next so that the best one is not at the edge of those tried.

    ``overlaps`` maps every temperature tried to its score (higher is better; ties go to the
    lower temperature, as :func:`best_temperature` breaks them). When the best is the lowest
    tried, one step lower: down by the spacing of the two lowest, but at most halving and never
    below ``min_temperature`` (0.5, 0.75 -> 0.25 -> 0.125 -> 0.0625 -> 0.05); when the best is
    the highest, one step higher by the spacing of the two highest (1.25, 1.5 -> 1.75 -> 2.0).
    None when the best is inside, fewer than two temperatures were tried (one temperature is
    not a sweep), or the lowest is already ``min_temperature``.
    """
    temps = sorted(float(t) for t in overlaps)
    if len(temps) < 2:
        return None
    best = max(temps, key=lambda t: (overlaps[t], -t))
    if best == temps[0]:
        if temps[0] <= min_temperature * (1 + 1e-9):
            return None
        step_down = max(temps[0] - (temps[1] - temps[0]), temps[0] / 2, min_temperature)
        return round(step_down, 6)
    if best == temps[-1]:
        return round(temps[-1] + (temps[-1] - temps[-2]), 6)
    return None


def _check_sweep(temperatures: Sequence[float], max_extensions: int,
                 min_temperature: float) -> list[float]:
    """The temperatures asked for, sorted and checked, or a clear error."""
    try:
        asked = sorted({float(t) for t in temperatures})
    except (TypeError, ValueError):
        asked = []
    if not asked or any(not t > 0 or not math.isfinite(t) for t in asked):
        raise MusicRNNError(f"temperatures must be positive numbers, got {list(temperatures)}")
    if int(max_extensions) < 0 or not float(min_temperature) > 0:
        raise MusicRNNError(f"max_extensions must be >= 0 and min_temperature > 0, got "
                            f"{max_extensions} and {min_temperature}")
    return asked


def sweep_until_inside(score: Callable[[float], float], temperatures: Sequence[float], *,
                       max_extensions: int = MAX_EXTENSIONS,
                       min_temperature: float = MIN_TEMPERATURE) -> dict[float, float]:
    """Score every temperature, then step past the edge while the best is there.

    ``score(t)`` is higher for better temperatures. After the grid, :func:`next_temperature`
    adds one temperature at a time, at most ``max_extensions``, never below ``min_temperature``
    (or the lowest temperature asked for, when that is lower). Returns ``{temperature: score}``
    in the order tried.
    """
    asked = _check_sweep(temperatures, max_extensions, min_temperature)
    floor = min(float(min_temperature), asked[0])
    scores = {t: float(score(t)) for t in asked}
    for _ in range(int(max_extensions)):
        t = next_temperature(scores, floor)
        if t is None:
            break
        scores[t] = float(score(t))
    return scores


def temperature_sweep(model: Any, primers: np.ndarray, reference: Sequence[np.ndarray],
                      temperatures: Sequence[float], *, seed: int = 0,
                      statistics: Sequence[str] | None = None, progress: bool = False,
                      max_extensions: int = MAX_EXTENSIONS,
                      min_temperature: float = MIN_TEMPERATURE, **sampler_options: Any):
    """Generate continuations of ``primers`` at each temperature and compare them with the true
    continuations ``reference`` (:func:`musicrnn.statistics.compare_statistics`).

    When the best temperature is the lowest or the highest of those tried, the sweep goes one
    step further in that direction (:func:`next_temperature`) until the best is inside, at most
    ``max_extensions`` more temperatures (0: exactly the grid given), never below
    ``min_temperature`` (see :func:`sweep_until_inside`). Returns ``(sweep, comparisons,
    samples)``: a DataFrame with one row per temperature tried, in increasing order (mean
    overlap area and KL divergence over the statistics, ``added``: whether the sweep added it
    beyond the grid, then each statistic's overlap), the per-temperature comparison tables, and
    the generated samples. The best
    temperature is the row with the largest mean overlap: :func:`best_temperature`;
    ``sweep.attrs["at_edge"]`` says whether it is still the lowest or highest tried (the cap
    or the floor was reached first).
    """
    import pandas as pd

    asked = _check_sweep(temperatures, max_extensions, min_temperature)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(asked), desc="temperature sweep")
    rows, comparisons, samples = {}, {}, {}
    num_notes = len(reference[0])

    def run(t: float) -> float:
        generated = generate_continuations(model, primers, num_notes, t, seed, **sampler_options)
        table = compare_statistics(generated, reference, statistics)
        comparisons[t], samples[t] = table, generated
        row = {"temperature": t, "overlap_area": float(table["overlap_area"].mean()),
               "kl_divergence": float(table["kl_divergence"].mean()),
               "value_overlap": float(table["value_overlap"].mean()), "added": t not in asked}
        row.update({f"overlap_{k}": float(v) for k, v in table["overlap_area"].items()})
        rows[t] = row
        if bar is not None:
            bar.update(1)
        return row["overlap_area"]

    def extending(t: float) -> float:
        if bar is not None and t not in asked:
            bar.total += 1
            bar.refresh()
        return run(t)

    sweep_until_inside(extending, asked, max_extensions=max_extensions,
                       min_temperature=min_temperature)
    if bar is not None:
        bar.close()
    sweep = pd.DataFrame([rows[t] for t in sorted(rows)]).set_index("temperature")
    best = best_temperature(sweep)
    sweep.attrs["at_edge"] = bool(len(sweep) > 1 and best in (sweep.index[0], sweep.index[-1]))
    return sweep, comparisons, samples


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
                   head_baselines: dict | None = None, carried: bool = True,
                   progress: bool = True, max_extensions: int = MAX_EXTENSIONS,
                   sampler_options: dict | None = None) -> EvaluationReport:
    """Measure ``model`` on the held-out pieces of ``corpus`` (a ``NoteCorpus``).

    1. Teacher-forced scores with a full ``seq_length`` context (notes at position
       ``>= min_position``, default ``seq_length``; ``max_positions`` keeps an evenly spaced
       subset) and with the state carried through whole pieces (``carried``), beside the n-gram
       baselines and the repeat-last rule on exactly the same notes: the NLL of every
       categorical head and their sum ``note_nll``, against unigram and Markov-1 models of each
       head's classes and the sum of those (``unigram_note_nll``, ``markov1_note_nll``).
    2. A temperature sweep: ``num_samples`` primers of ``seq_length`` held-out notes, continued
       for ``num_notes`` notes at each temperature (and beyond the grid while the best is at its
       edge, at most ``max_extensions`` more; a conditioned model plays each in the style of
       the piece its primer comes from), compared with the true continuations; the same
       comparison of continuations cut from *training* pieces gives the overlap real music
       reaches (``reference_overlap_area``), the ceiling for a perfect model at this sample size.

    A model that reads velocity (4 input columns) is scored on notes with velocity, and its
    music's statistics include the velocity statistics. The held-out split is ``split`` when the
    corpus has pieces in it, else validation (``metrics["split"]`` says which). Baselines are
    fitted on the training pieces and tuned on the validation pieces (untuned when validation is
    the held-out split); pass ``baselines`` (pitch, :func:`fit_ngram_baselines`) and
    ``head_baselines`` (:func:`fit_head_baselines`) to reuse fitted ones.
    """
    split = held_out_split(corpus, split)
    velocity = model_input_width(model) == 4
    held_out = corpus_pieces(corpus, split, velocity=velocity)
    train = corpus_pieces(corpus, "train", velocity=velocity)
    if not train:
        raise MusicRNNError(f"{corpus.dataset} has no training pieces to fit the baselines on")
    validation = corpus_pieces(corpus, "validation", velocity=velocity) \
        if split != "validation" else []
    _check_seq_length(model, seq_length)
    min_position = int(seq_length if min_position is None else min_position)
    if baselines is None:
        baselines = fit_ngram_baselines(train, validation or None)
    if head_baselines is None:
        heads = ("step", "duration", "velocity") if velocity else ("step", "duration")
        head_baselines = fit_head_baselines(train, validation or None, heads=heads,
                                            velocity_bins=getattr(config, "velocity_bins", None))

    conditioned = bool(getattr(config, "conditioned", False))
    labels = None
    if conditioned:  # the model reads every held-out piece with its own label
        from .styles import piece_styles

        labels = piece_styles(corpus, config.condition, config.styles)[corpus.indices(split)]
    t0 = time.perf_counter()
    rows = [score_windows(model, held_out, seq_length, name=name, min_position=min_position,
                          max_positions=max_positions, progress=progress, styles=labels)]
    window_context = rows[0].context
    rows += ngram_scores(baselines, held_out, min_position, max_positions, window_context,
                         head_baselines)
    repeat = repeat_last_scores(held_out, min_position, max_positions, window_context)
    rows.append(repeat)
    if carried:
        carried_rows = [score_carried(model, held_out, name=name, config=config,
                                      progress=progress, styles=labels)]
        ctx = carried_rows[0].context
        carried_rows += ngram_scores(baselines, held_out, 1, None, ctx, head_baselines)
        carried_rows.append(repeat_last_scores(held_out, 1, None, ctx))
        rows += carried_rows
    scores = _scores_frame(rows)
    scoring_seconds = time.perf_counter() - t0

    primers, reference, sources = continuation_segments(held_out, seq_length, num_notes,
                                                        num_samples, seed, return_pieces=True)
    _, real = continuation_segments(train, seq_length, num_notes, len(reference), seed + 1)
    real_table = compare_statistics(real, reference)
    options = {"config": config} if config is not None else {}
    if labels is not None:  # each continuation played in the style of the piece it is cut from
        options["style"] = [int(label) for label in labels[sources]]
    options.update(sampler_options or {})
    sweep, comparisons, generated = temperature_sweep(
        model, primers, reference, temperatures, seed=seed, progress=progress,
        max_extensions=max_extensions, **options)
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
        "pitch_nll_marginal": model_row.pitch_nll_marginal,
        "step_nll": model_row.step_nll,
        "duration_nll": model_row.duration_nll,
        "velocity_nll": model_row.velocity_nll,
        "note_nll": model_row.note_nll,
        "heads": _head_kinds(model_row),
        "nll_note": "nats per note on the held-out split; step/duration NLL is null for a "
                    "regression head (no likelihood), velocity_nll without a velocity head, "
                    "note_nll (the sum of the heads' NLLs) unless every head is categorical",
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
        "best_temperature_at_edge": bool(sweep.attrs.get("at_edge", False)),
        "overlap_area": float(sweep.loc[best_t, "overlap_area"]),
        "kl_divergence": float(sweep.loc[best_t, "kl_divergence"]),
        "reference_overlap_area": float(real_table["overlap_area"].mean()),
        "overlap_statistics": list(statistics.index),
        "temperatures": [float(t) for t in sweep.index],
        "temperatures_added": [float(t) for t in sweep.index[sweep["added"].to_numpy(bool)]],
        "num_samples": len(reference),
        "num_notes": int(num_notes),
        "scoring_seconds": scoring_seconds,
    }
    for k in ngram_names:
        metrics[f"{k}_pitch_nll"] = window[k].pitch_nll
        metrics[f"{k}_top1_accuracy"] = window[k].top1_accuracy
    sums = {}
    for k in next(iter(head_baselines.values()), {}):
        for head in head_baselines:
            metrics[f"{k}_{head}_nll"] = getattr(window[k], f"{head}_nll")
        metrics[f"{k}_note_nll"] = sums[k] = window[k].note_nll
    if sums:
        best_sum = min(sums, key=lambda k: sums[k])
        metrics["baseline_note_nll"], metrics["baseline_note_nll_model"] = sums[best_sum], best_sum
        metrics["goal_note_nll_below_baselines"] = (
            bool(model_row.note_nll < sums[best_sum]) if np.isfinite(model_row.note_nll)
            else None)
    if carried:
        c = carried_rows[0]
        metrics.update({"carried_pitch_nll": c.pitch_nll, "carried_top1_accuracy": c.top1_accuracy,
                        "carried_top5_accuracy": c.top5_accuracy, "carried_step_mae": c.step_mae,
                        "carried_duration_mae": c.duration_mae, "carried_n_positions": c.n_notes,
                        "carried_note_nll": c.note_nll})
    # against the n-grams, which do not see the step: the pitch with the step summed out (the
    # pitch NLL itself unless the model's pitch reads the step)
    comparable = model_row.pitch_nll_marginal
    if m2 is not None:
        improvement = 1.0 - comparable / m2.pitch_nll
        metrics["improvement_over_markov2"] = improvement
        metrics["goal_markov2_15pct"] = bool(improvement >= GOAL_MARKOV2_IMPROVEMENT)
    metrics["goal_beats_best_ngram"] = bool(comparable < window[best_ngram].pitch_nll)
    metrics["goal_overlap_0_8"] = bool(metrics["overlap_area"] >= GOAL_OVERLAP)
    if conditioned:
        metrics.update(style_report(
            model, corpus, config, split=split, seq_length=seq_length, temperature=best_t,
            num_samples=num_samples, num_notes=num_notes, seed=seed, min_position=min_position,
            max_positions=max_positions, progress=progress))
    return EvaluationReport(metrics=metrics, scores=scores, sweep=sweep, statistics=statistics,
                            generated=generated, reference=reference, real=real)


GUIDANCES: tuple[float, ...] = (1.0, 2.0, 3.0)  # guidance values the style accuracy is read at
GOAL_STYLE_ACCURACY_DATASET = 0.95  # generated pieces classified as their dataset, at g = 1


def wrong_labels(labels: np.ndarray, num_styles: int) -> np.ndarray:
    """For each label, another real style: the next one round (1 .. ``num_styles``); a piece
    without a style (0) gets style 1."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.where(labels > 0, labels % num_styles + 1, 1).astype(np.int32)


def style_excerpts(pieces: Sequence[np.ndarray], labels: np.ndarray, length: int,
                   per_piece: int = 4) -> tuple[list[np.ndarray], np.ndarray]:
    """Up to ``per_piece`` evenly spaced excerpts of ``length`` notes of every piece with a
    style (label > 0), with their labels: real music as long as the generated pieces it is
    compared with (a classifier reads a whole piece much better than 100 notes of it)."""
    excerpts, out = [], []
    for piece, label in zip(pieces, np.asarray(labels)):
        if label <= 0 or len(piece) < length:
            continue
        starts = np.unique(np.linspace(0, len(piece) - length, per_piece).astype(int))
        excerpts += [piece[s: s + length] for s in starts]
        out += [int(label)] * len(starts)
    return excerpts, np.asarray(out, dtype=np.int32)


def style_report(model: Any, corpus: Any, config: Any, *, split: str, seq_length: int,
                 temperature: float = 1.0, guidances: Sequence[float] = GUIDANCES,
                 num_samples: int = 64, num_notes: int = 100, seed: int = 0,
                 min_position: int | None = None, max_positions: int | None = None,
                 progress: bool = False, max_guidance_extensions: int = 2) -> dict[str, Any]:
    """What conditioning does for a model trained with labels (``config.condition``).

    * Prediction: held-out NLL per note (``note_nll`` when every head has one, else the pitch
      NLL) with each piece's true label, with the "none" label and with a wrong one (the next
      style round) -- ``nll_true_label``, ``nll_none_label``, ``nll_wrong_label`` (and
      ``pitch_nll_*`` of the pitch head alone), on the same positions as
      :func:`score_windows`.
    * Style accuracy: a :class:`musicrnn.styles.StyleClassifier` that never saw the model,
      fitted on the training pieces, labels held-out excerpts as long as the generated pieces
      (``style_accuracy_real``: the ceiling; whole held-out pieces:
      ``style_accuracy_real_pieces``) and pieces generated in each style at ``temperature`` from ``num_samples``
      held-out primers of every style alike (the primer's own style does not decide), at
      each of ``guidances``: ``style_accuracy_by_guidance``, ``style_accuracy_generated`` (at
      guidance 1) and ``style_accuracy_generated_best`` (at ``best_guidance``). While the best
      guidance is the highest tried, the grid goes one step further (at most
      ``max_guidance_extensions`` steps), so that "best" is not just the edge of the grid.
    """
    from .styles import StyleClassifier, piece_styles

    styles = tuple(config.styles)
    labels_all = piece_styles(corpus, config.condition, styles)
    velocity = model_input_width(model) == 4
    held_out = corpus_pieces(corpus, split, velocity=velocity)
    labels = labels_all[corpus.indices(split)]
    out: dict[str, Any] = {"condition": config.condition, "styles": list(styles)}
    for kind, given in (("true", labels), ("none", 0),
                        ("wrong", wrong_labels(labels, len(styles)))):
        row = score_windows(model, held_out, seq_length, name=kind, min_position=min_position,
                            max_positions=max_positions, styles=given)
        out[f"nll_{kind}_label"] = row.note_nll if np.isfinite(row.note_nll) else row.pitch_nll
        out[f"pitch_nll_{kind}_label"] = row.pitch_nll
    out["nll_label_kind"] = "note_nll" if np.isfinite(row.note_nll) else "pitch_nll"
    out["goal_true_below_none_below_wrong"] = bool(
        out["nll_true_label"] < out["nll_none_label"] < out["nll_wrong_label"])

    classifier = StyleClassifier().fit(corpus, labels_all, styles)
    styled = labels > 0
    out["style_accuracy_real_pieces"] = (classifier.accuracy(
        [p for p, keep in zip(held_out, styled) if keep], labels[styled])
        if styled.any() else math.nan)
    excerpts, excerpt_labels = style_excerpts(held_out, labels, num_notes)
    out["style_accuracy_real"] = (classifier.accuracy(excerpts, excerpt_labels)
                                  if len(excerpts) else out["style_accuracy_real_pieces"])
    primers, _ = continuation_segments(held_out, seq_length, num_notes, num_samples, seed)
    options = {"config": config}
    per_style: dict[str, dict[str, float]] = {}

    def accuracy_at(guidance: float) -> float:
        """Mean over the styles of the share of pieces played in a style classified as it."""
        shares = {}
        for label in range(1, len(styles) + 1):
            generated = generate_continuations(model, primers, num_notes, temperature, seed,
                                               style=label, guidance=guidance, **options)
            shares[styles[label - 1]] = classifier.accuracy(generated,
                                                            np.full(len(generated), label))
        per_style[f"{guidance:g}"] = shares
        return float(np.mean(list(shares.values())))

    asked = sorted({float(g) for g in guidances})
    by_value = {g: accuracy_at(g) for g in _progress(asked, progress, "guidance")}
    for _ in range(int(max_guidance_extensions)):  # never the edge of the grid: step past it
        best = max(by_value, key=lambda g: (by_value[g], -g))
        if best != max(by_value) or len(by_value) < 2:
            break
        ordered = sorted(by_value)
        further = round(best + ordered[-1] - ordered[-2], 6)
        by_value[further] = accuracy_at(further)
    by_guidance = {f"{g:g}": by_value[g] for g in sorted(by_value)}
    best = max(by_value, key=lambda g: (by_value[g], -g))
    out.update({
        "style_accuracy_by_guidance": by_guidance,
        "style_accuracy_by_style": per_style,
        "style_accuracy_generated": by_guidance.get("1", math.nan),
        "style_accuracy_generated_best": by_guidance[f"{best:g}"],
        "best_guidance": best,
        "guidances_added": [g for g in sorted(by_value) if g not in asked],
        "style_temperature": float(temperature),
        "style_samples": int(len(primers)),
    })
    if config.condition == "dataset":
        out["goal_style_accuracy_dataset"] = bool(
            out["style_accuracy_generated"] >= GOAL_STYLE_ACCURACY_DATASET)
    elif np.isfinite(out["style_accuracy_real"]) and out["style_accuracy_real"] > 0:
        out["style_accuracy_ratio_best"] = (out["style_accuracy_generated_best"]
                                            / out["style_accuracy_real"])
    return out


def _head_kinds(scores: PredictionScores) -> dict[str, str]:
    """What each head of a scored model is: ``categorical`` (it has an NLL), ``regression``
    (step/duration without one) or ``none`` (no velocity head)."""
    kinds = {"pitch": "categorical"}
    for head in ("step", "duration"):
        kinds[head] = "categorical" if np.isfinite(getattr(scores, f"{head}_nll")) \
            else "regression"
    kinds["velocity"] = "categorical" if np.isfinite(scores.velocity_nll) else "none"
    return kinds


def evaluate_run(run_dir: str | Path, *, data_dir: str | Path | None = None,
                 dataset: str | None = None, max_files: int | None = None,
                 temperatures: Sequence[float] | None = None, num_samples: int = 64,
                 num_notes: int = 100, seed: int = 0, split: str = "test",
                 min_position: int | None = None, max_positions: int | None = None,
                 out_dir: str | Path | None = None, plots: bool = True,
                 progress: bool = True, baselines: dict | None = None,
                 max_extensions: int = MAX_EXTENSIONS) -> EvaluationReport:
    """Evaluate the model of a run directory and write ``<run_dir>/evaluation/`` (or ``out_dir``).

    The held-out pieces come from the dataset (and ``max_files``) the run was trained on, unless
    ``dataset``/``max_files`` say otherwise. See :func:`evaluate_model` for what is measured;
    ``metrics.json`` holds at least ``split``, ``pitch_nll``, ``step_nll``, ``duration_nll``,
    ``velocity_nll``, ``note_nll`` (null where a head has no likelihood), ``pitch_nll_marginal``
    (the pitch with the step summed out: ``pitch_nll`` unless the model's pitch reads the step,
    ``pitch_given_step``, when ``pitch_nll`` is the pitch given the true step),
    ``unigram_pitch_nll``,
    ``markov2_pitch_nll``, ``best_ngram_pitch_nll``, ``unigram_note_nll``, ``markov1_note_nll``,
    ``best_temperature`` and ``overlap_area``.
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
        baselines=baselines, progress=progress, max_extensions=max_extensions,
    )
    report.metrics["run_dir"] = str(Path(run.run_dir))
    report.metrics["max_files"] = max_files
    report.save(Path(out_dir) if out_dir else Path(run.run_dir) / "evaluation", plots=plots)
    return report

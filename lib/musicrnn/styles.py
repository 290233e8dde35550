"""Styles: the labels a conditioned model reads, and a classifier of styles that never sees it.

Labels
------
A *condition* (:data:`CONDITIONS`) names where a piece's style comes from:

* ``"none"``: no styles (an unconditioned model); every piece is label 0.
* ``"dataset"``: the dataset a piece comes from, in a mixture such as
  ``bach-chorales+essen-folksongs`` (its corpus carries ``metadata["dataset"]``, each piece's
  part; a corpus without that key is one dataset, ``corpus.dataset``, for every piece). The
  styles are the datasets in the order of their first piece, which is the order the mixture
  names them: ``bach-chorales+essen-folksongs`` gives ``("bach-chorales", "essen-folksongs")``
  and the user reads their styles in the order they wrote them.
* ``"composer"``: MAESTRO's ``canonical_composer``. The composers with the most notes in the
  training split (all pieces when there is none) each get a style, most notes first (ties by
  name); the rest share :data:`OTHER`. When every composer fits in ``max_styles`` and no piece
  needs ``"other"``, there is no ``"other"``; otherwise at most ``max_styles - 1`` composers get
  a style of their own, and ``"other"`` is last.

  **Shared composers.** MAESTRO joins names with ``" / "`` where a piece is one composer's work
  as another set it: ``"Franz Schubert / Franz Liszt"`` is Liszt's piano transcription of a
  Schubert song, ``"Johann Sebastian Bach / Ferruccio Busoni"`` Busoni's arrangement of Bach
  (in MAESTRO v2, 49 performances of 26 such pairs, 3.4% of the training notes). Such a piece
  is neither composer's own style (a Liszt transcription of a song sounds like neither
  Schubert's songs nor Liszt's own études), so it goes to ``"other"``: it never counts towards
  a composer's rank, and a training split that has one makes the vocabulary carry ``"other"``.

:func:`piece_styles` labels each piece with an index into ``("none",) + styles``: 0 is always
``"none"`` (the label a conditioned model is trained to read as "no style", and the one it
samples with when no style is asked for), real styles start at 1. A piece whose style is not in
the vocabulary (a composer seen only in validation, say) gets ``"other"`` when the vocabulary has
it, else 0; a piece without a composer (a chorale in a mixture with MAESTRO) gets 0.
:func:`style_index` turns a name a user typed into its index.

Classifier
----------
:class:`StyleClassifier` tells styles apart by likelihood, as a judge of generated music that
shares nothing with the generator: per style, one n-gram model of each *feature stream* of the
notes, and a piece goes to the style under which the sum of its streams' log-likelihoods is
highest (a uniform prior over styles). The streams (:data:`FEATURE_STREAMS`), each read in the
note table's order (by start, then pitch):

* ``interval``: semitones from the previous note, clipped to +-12 (transposition-invariant);
* ``pitch_class``: the pitch modulo 12 (depends on the key);
* ``step``, ``duration``: the time class of :func:`musicrnn.timing.time_classes`, in groups of
  :data:`TIME_GROUP` classes (0 s alone, then log-spaced classes each about 1.6 times the last).

The default, ``interval`` and ``duration`` bigrams with add-0.1 smoothing, is what classified
best, measured on real held-out pieces (fitted on the training split; classifying the validation
and test pieces, or validation where there is no test):

* chorales against folk songs (409 chorales, 7,556 Essen folk songs; 1,620 held-out pieces):
  every stream set with ``interval`` or ``step`` in it, order 2 or 3, classifies 99.9-100% of
  the held-out pieces, and the default 100% of their first 16 notes and 98% of their first 4;
  alone, ``step`` is 100% (chorales strike chords, folk songs are one voice), ``pitch_class``
  97-99%, ``duration`` 82-84%.
* MAESTRO v2 composers (967 training, 137 validation performances; 5-8 styles, the last
  "other"): ``interval + duration`` bigrams 57-67% of pieces (balanced over styles 54-70%),
  ``interval`` alone 51-64%, ``interval + step + duration`` 45-53% (step is the performer's
  timing more than the composer's), all four streams 49-59% (keys are no composer's own).
  Order 3 reaches 58-62% only by sending most pieces to the broad "other" model: named
  composers fall from 64-72% to 26-40%.
  The smoothing k (0.01, 0.1, 1) moves bigram accuracy by at most two pieces.

So the pitch stream is transposition-invariant, and the time stream is duration (how notes are
held) rather than step. Velocity, when a piece has it, is not read: it tells performers (and
recording sessions) apart more than styles, and generated pieces may have none.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MusicRNNError
from .statistics import as_notes
from .timing import TIME_BINS, time_classes

__all__ = [
    "CONDITIONS", "DEFAULT_FEATURES", "DEFAULT_ORDER", "DEFAULT_SMOOTHING", "FEATURE_STREAMS",
    "MAX_STYLES", "NONE", "OTHER", "SHARED_COMPOSER_SEPARATOR", "TIME_GROUP", "StyleClassifier",
    "piece_styles", "style_index", "style_labels", "style_vocabulary", "supported_conditions",
]

CONDITIONS: tuple[str, ...] = ("none", "dataset", "composer")
NONE = "none"  # label 0: no style
OTHER = "other"  # the composers without a style of their own, and shared-composer pieces
SHARED_COMPOSER_SEPARATOR = " / "  # how MAESTRO writes a piece of two composers
MAX_STYLES = 8  # styles a vocabulary holds at most by default ("none" not counted)
COMPOSER_KEY = "canonical_composer"  # MAESTRO's metadata column of composers
DATASET_KEY = "dataset"  # a mixture's metadata column of each piece's dataset

# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def _check_condition(condition: Any) -> str:
    if condition not in CONDITIONS:
        raise MusicRNNError(f"unknown condition {condition!r}; choose one of "
                            f"{', '.join(CONDITIONS)}")
    return condition


def _piece_datasets(corpus) -> np.ndarray:
    if DATASET_KEY in corpus.metadata:
        return np.char.strip(np.asarray(corpus.metadata[DATASET_KEY], dtype=str))
    return np.full(len(corpus), str(corpus.dataset))


def _piece_composers(corpus) -> np.ndarray:
    """Each piece's ``canonical_composer`` (stripped), or an error naming what the dataset
    supports when the corpus has no composers."""
    composers = corpus.metadata.get(COMPOSER_KEY)
    if composers is None or not np.char.str_len(np.char.strip(composers)).any():
        supported = [c for c in CONDITIONS if c != "composer" and c in supported_conditions(corpus)]
        raise MusicRNNError(
            f"{corpus.dataset} has no composer metadata (MAESTRO's {COMPOSER_KEY}); the "
            f"conditions it supports: {', '.join(supported)}")
    return np.char.strip(np.asarray(composers, dtype=str))


def _distinct_in_order(values: np.ndarray) -> list[str]:
    _, first = np.unique(values, return_index=True)
    return [str(values[i]) for i in sorted(first) if str(values[i])]


def _ranked_composers(corpus) -> tuple[list[str], bool]:
    """(own composers, most training notes first, ties by name; whether some training piece is
    of shared composers)."""
    composers = _piece_composers(corpus)
    train = corpus.indices("train")
    pieces = train if len(train) else corpus.indices()
    names = composers[pieces]
    notes = corpus.lengths()[pieces]
    shared = np.char.find(names, SHARED_COMPOSER_SEPARATOR.strip()) >= 0
    own = ~shared & (np.char.str_len(names) > 0)
    totals: dict[str, int] = {}
    for name, n in zip(names[own].tolist(), notes[own].tolist()):
        totals[name] = totals.get(name, 0) + int(n)
    ranked = sorted(totals, key=lambda name: (-totals[name], name))
    return ranked, bool(shared.any())


def supported_conditions(corpus) -> tuple[str, ...]:
    """The conditions :func:`style_vocabulary` accepts for ``corpus``: always ``"none"``;
    ``"dataset"`` for a mixture of two datasets or more; ``"composer"`` when the pieces have
    two composers (or a composer and ``"other"``) or more."""
    found = ["none"]
    if len(_distinct_in_order(_piece_datasets(corpus))) >= 2:
        found.append("dataset")
    composers = corpus.metadata.get(COMPOSER_KEY)
    if composers is not None and np.char.str_len(np.char.strip(composers)).any():
        ranked, shared = _ranked_composers(corpus)
        if len(ranked) + shared >= 2:
            found.append("composer")
    return tuple(found)


def _check_max_styles(max_styles: Any) -> int:
    if isinstance(max_styles, bool) or not isinstance(max_styles, (int, np.integer)) \
            or max_styles < 2:
        raise MusicRNNError(f"max_styles must be a whole number of 2 or more, got {max_styles!r}")
    return int(max_styles)


def style_vocabulary(corpus, condition: str, max_styles: int = MAX_STYLES) -> tuple[str, ...]:
    """The styles of ``corpus`` under ``condition`` ("none" not included; see the module's
    docstring for the rules).

    Args:
        corpus: a :class:`musicrnn.notes.NoteCorpus`.
        condition: one of :data:`CONDITIONS`.
        max_styles: the most styles to make (``"other"`` included), 2 or more.

    Returns:
        ``()`` for ``"none"``; the datasets in the order of their first piece for
        ``"dataset"``; the composers by training notes, then ``"other"`` when needed, for
        ``"composer"``.

    Raises:
        MusicRNNError: an unknown condition; ``"composer"`` on a corpus without composers;
            fewer than two styles; a mixture of more datasets than ``max_styles``.
    """
    condition = _check_condition(condition)
    max_styles = _check_max_styles(max_styles)
    if condition == "none":
        return ()
    if condition == "dataset":
        styles = _distinct_in_order(_piece_datasets(corpus))
        if len(styles) > max_styles:
            raise MusicRNNError(f"{corpus.dataset} mixes {len(styles)} datasets, more than "
                                f"max_styles={max_styles}; raise max_styles or mix fewer")
    else:
        ranked, shared = _ranked_composers(corpus)
        if len(ranked) <= max_styles and not shared:
            styles = ranked
        else:
            styles = ranked[: max_styles - 1] + [OTHER]
    if len(styles) < 2:
        raise MusicRNNError(
            f"conditioning needs at least two styles; {corpus.dataset} has "
            f"{len(styles)} under --condition {condition} ({', '.join(styles) or 'none'}): "
            f"{'mix datasets (a+b)' if condition == 'dataset' else 'use more pieces'} or "
            "train with --condition none")
    return tuple(styles)


def style_labels(styles: Sequence[str]) -> tuple[str, ...]:
    """``("none",) + styles``: the name of every label index."""
    styles = tuple(str(s) for s in styles)
    return styles if styles[:1] == (NONE,) else (NONE, *styles)


def mix_name(styles: Sequence[str], weights: Sequence[float]) -> str:
    """What a mix of labels plays: the style's name when one label has all the weight, else
    each label's share, ``"70% a, 30% b"`` (labels without weight left out)."""
    weights = np.asarray(weights, dtype=np.float64)
    used = np.flatnonzero(weights > 1e-6)
    if len(used) == 1:
        return str(styles[int(used[0])])
    return ", ".join(f"{weights[i]:.0%} {styles[int(i)]}" for i in used)


def piece_styles(corpus, condition: str, styles: Sequence[str]) -> np.ndarray:
    """Each piece's label: an index into ``("none",) + styles``, ``(n_pieces,)`` int32.

    A piece whose dataset or composer has no style of its own gets ``"other"`` when ``styles``
    has it, else 0; a shared-composer piece (``"A / B"``) likewise; a piece without a composer
    gets 0. Under ``"none"`` every piece is 0.

    Raises:
        MusicRNNError: an unknown condition, or ``"composer"`` on a corpus without composers.
    """
    condition = _check_condition(condition)
    labels = style_labels(styles)
    if condition == "none":
        return np.zeros(len(corpus), dtype=np.int32)
    values = _piece_datasets(corpus) if condition == "dataset" else _piece_composers(corpus)
    index = {name: i for i, name in enumerate(labels) if i}
    fallback = index.get(OTHER, 0)
    out = np.zeros(len(corpus), dtype=np.int32)
    for i, value in enumerate(values.tolist()):
        if not value:
            continue
        shared = condition == "composer" and SHARED_COMPOSER_SEPARATOR.strip() in value
        out[i] = fallback if shared else index.get(value, fallback)
    return out


def style_index(styles: Sequence[str], name: Any) -> int:
    """The label index of the style called ``name`` (case and surrounding spaces ignored;
    ``"none"`` and None are 0; a label index is returned as it is). ``styles`` is a
    vocabulary, with or without ``"none"`` first.

    Raises:
        MusicRNNError: a name (or index) the vocabulary does not have; the message lists the
            styles, e.g. "unknown style 'x'; this model knows: none, bach-chorales,
            essen-folksongs".
    """
    labels = style_labels(styles)
    if name is None:
        return 0
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        if 0 <= int(name) < len(labels):
            return int(name)
    elif isinstance(name, str):
        wanted = name.strip().casefold()
        for i, label in enumerate(labels):
            if label.casefold() == wanted:
                return i
    raise MusicRNNError(f"unknown style {name!r}; this model knows: {', '.join(labels)}")


# ---------------------------------------------------------------------------------------------
# The style classifier: per-style n-gram models of pitch and time classes
# ---------------------------------------------------------------------------------------------

FEATURE_STREAMS: tuple[str, ...] = ("interval", "pitch_class", "step", "duration")
DEFAULT_FEATURES: tuple[str, ...] = ("interval", "duration")  # measured: the module's docstring
DEFAULT_ORDER = 2  # bigrams: a token given the one before
DEFAULT_SMOOTHING = 0.1  # k of add-k
MAX_INTERVAL = 12  # semitones: larger leaps count as an octave
TIME_GROUP = 8  # fine time classes per coarse one: 0 s, then classes about 1.6x wide
_TIME_VOCABULARY = 1 + (TIME_BINS - 2) // TIME_GROUP + 1
_VOCABULARY = {"interval": 2 * MAX_INTERVAL + 1, "pitch_class": 12,
               "step": _TIME_VOCABULARY, "duration": _TIME_VOCABULARY}
_FORMAT = 1  # of a saved classifier


def _coarse_time(seconds: np.ndarray) -> np.ndarray:
    fine = time_classes(seconds)
    return np.where(fine == 0, 0, 1 + (fine - 1) // TIME_GROUP)


def _stream(notes: np.ndarray, feature: str) -> np.ndarray:
    """The tokens of one feature stream of one piece (int64): interval and step from the
    second note on (the first has neither), pitch class and duration from the first."""
    if feature == "interval":
        return np.clip(np.diff(notes[:, 0]).astype(np.int64), -MAX_INTERVAL,
                       MAX_INTERVAL) + MAX_INTERVAL
    if feature == "pitch_class":
        return notes[:, 0].astype(np.int64) % 12
    if feature == "step":
        return _coarse_time(notes[1:, 1])
    return _coarse_time(notes[:, 2])


def _events(pieces: list[np.ndarray], feature: str, order: int) -> tuple[np.ndarray, np.ndarray]:
    """(event id = context * V + token, piece of each event) of one stream over all pieces; a
    context before a piece's first token holds the start symbol V."""
    vocabulary = _VOCABULARY[feature]
    streams = [_stream(p, feature) for p in pieces]
    lengths = np.array([len(s) for s in streams], dtype=np.int64)
    tokens = np.concatenate(streams) if streams else np.zeros(0, dtype=np.int64)
    piece = np.repeat(np.arange(len(pieces)), lengths)
    position = np.arange(len(tokens)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    context = np.zeros(len(tokens), dtype=np.int64)
    for back in range(order - 1, 0, -1):  # the oldest note first: context in base V + 1
        earlier = np.full(len(tokens), vocabulary, dtype=np.int64)
        if len(tokens) > back:
            earlier[back:] = tokens[:-back]
        earlier[position < back] = vocabulary
        context = context * (vocabulary + 1) + earlier
    return context * vocabulary + tokens, piece


def _as_piece_list(pieces: Any, name: str = "pieces") -> list[np.ndarray]:
    """Checked ``(n, 3)`` float64 arrays (pitch, step, duration), one per piece, from a list of
    note arrays or tables, a ``(batch, n, 3|4)`` array, one ``(n, 3|4)`` array (one piece) or a
    ``NoteCorpus``; a velocity column is dropped."""
    if hasattr(pieces, "iter_features") and hasattr(pieces, "offsets"):
        pieces = list(pieces.iter_features())
    elif isinstance(pieces, np.ndarray) and pieces.ndim == 2:
        pieces = [pieces]
    return [as_notes(p, f"{name}[{i}]")[:, :3] for i, p in enumerate(pieces)]


class StyleClassifier:
    """Per-style n-gram models of pitch and time classes; a piece goes to the likeliest style.

    ``fit`` counts, per style, every stream's n-grams in the training pieces (a context
    before a piece's first token is a start symbol, so openings are modelled too);
    ``classify`` scores a piece under each style with add-``smoothing`` estimates
    ``p(token | context) = (count + k) / (context count + k V)`` and labels it with the style
    of the highest total log-likelihood. A piece however short is classified from what it has
    (a single note: its duration, with the default streams); a piece that gives no token to
    read (no notes) has no evidence and gets label 0 (``"none"``), which never counts as right.
    The defaults (``interval`` and ``duration`` bigrams, k = 0.1) are the best measured: see
    the module's docstring.

    Args:
        features: the streams to read, from :data:`FEATURE_STREAMS`.
        order: the n-gram order, 1 (unigrams) to 4.
        smoothing: k of add-k smoothing, > 0.
    """

    def __init__(self, features: Sequence[str] = DEFAULT_FEATURES, order: int = DEFAULT_ORDER,
                 smoothing: float = DEFAULT_SMOOTHING):
        features = tuple(features)
        unknown = [f for f in features if f not in FEATURE_STREAMS]
        if not features or unknown:
            raise MusicRNNError(f"unknown classifier features {unknown}; choose from "
                                f"{', '.join(FEATURE_STREAMS)}")
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) \
                or not 1 <= order <= 4:
            raise MusicRNNError(f"the n-gram order must be 1 to 4, got {order!r}")
        if not (isinstance(smoothing, (int, float, np.floating)) and smoothing > 0):
            raise MusicRNNError(f"smoothing must be a number > 0, got {smoothing!r}")
        self.features = features
        self.order = int(order)
        self.smoothing = float(smoothing)
        self.styles: tuple[str, ...] = ()
        self.counts: dict[str, np.ndarray] = {}  # feature -> (styles, contexts * V) int64
        self._log_probabilities: dict[str, np.ndarray] = {}

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, corpus, piece_labels: Any, styles: Sequence[str],
            split: str | None = "train") -> StyleClassifier:
        """Fit on the pieces of one split of ``corpus`` (all pieces for None), labelled by
        ``piece_labels`` (:func:`piece_styles`: indices into ``("none",) + styles``); pieces
        labelled 0 are left out. Returns ``self``."""
        labels = np.asarray(piece_labels)
        if labels.shape != (len(corpus),):
            raise MusicRNNError(f"piece_labels has shape {labels.shape}; expected one label per "
                                f"piece of the corpus ({len(corpus)},)")
        chosen = corpus.indices(split)
        return self.fit_pieces([corpus.features(int(i)) for i in chosen], labels[chosen], styles)

    def fit_pieces(self, pieces: Any, labels: Any, styles: Sequence[str]) -> StyleClassifier:
        """Fit on note arrays ``(n, 3)`` or ``(n, 4)`` with their labels (indices into
        ``("none",) + styles``; 0 is left out). Returns ``self``.

        Raises:
            MusicRNNError: labels that do not match the pieces or the styles, or a style with
                no notes to learn from.
        """
        styles = style_labels(styles)[1:]
        if not styles:
            raise MusicRNNError("give the styles to tell apart, e.g. style_vocabulary(corpus, "
                                "'dataset')")
        pieces = _as_piece_list(pieces)
        labels = np.asarray(labels)
        if labels.shape != (len(pieces),) or (labels.size and (
                not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0
                or labels.max() > len(styles))):
            raise MusicRNNError(f"labels must be {len(pieces)} whole numbers 0-{len(styles)} "
                                f"(indices into none, {', '.join(styles)})")
        notes = np.zeros(len(styles) + 1)
        if labels.size:
            notes = np.bincount(labels, weights=[len(p) for p in pieces],
                                minlength=len(styles) + 1)
        empty = [s for s, n in zip(styles, notes[1:]) if n == 0]
        if empty:
            raise MusicRNNError(f"no training notes of the style(s) {', '.join(empty)}; label "
                                "some training pieces with each style, or drop it")
        self.styles = tuple(styles)
        self.counts = {}
        for feature in self.features:
            size = self._contexts(feature) * _VOCABULARY[feature]
            events, piece = _events(pieces, feature, self.order)
            style = labels[piece].astype(np.int64) - 1
            keep = style >= 0
            self.counts[feature] = np.bincount(
                style[keep] * size + events[keep], minlength=len(styles) * size,
            ).reshape(len(styles), size)
        self._log_probabilities = {}
        return self

    def _contexts(self, feature: str) -> int:
        return (_VOCABULARY[feature] + 1) ** (self.order - 1)

    def _table(self, feature: str) -> np.ndarray:
        """log p(token | context) per style, ``(styles, contexts * V)``."""
        if feature not in self._log_probabilities:
            vocabulary = _VOCABULARY[feature]
            counts = self.counts[feature].reshape(len(self.styles), -1, vocabulary)
            totals = counts.sum(axis=2, keepdims=True)
            table = np.log(counts + self.smoothing) - np.log(totals + self.smoothing * vocabulary)
            self._log_probabilities[feature] = table.reshape(len(self.styles), -1)
        return self._log_probabilities[feature]

    # -- classifying ------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self.styles:
            raise MusicRNNError("the style classifier is not fitted; call fit(...) or load(...)"
                                " first")

    def log_likelihoods(self, pieces: Any) -> np.ndarray:
        """Each piece's total log-likelihood (nats) under each style, ``(n_pieces, styles)``
        float64; column ``j`` is ``styles[j]`` (label ``j + 1``). ``pieces`` as for
        :meth:`classify`."""
        return self._scores(_as_piece_list(pieces))[0]

    def _scores(self, pieces: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(log-likelihoods ``(n_pieces, styles)``, tokens read per piece ``(n_pieces,)``)."""
        self._check_fitted()
        scores = np.zeros((len(pieces), len(self.styles)))
        tokens = np.zeros(len(pieces), dtype=np.int64)
        for feature in self.features:
            events, piece = _events(pieces, feature, self.order)
            table = self._table(feature)[:, events]  # (styles, events)
            for s in range(len(self.styles)):
                scores[:, s] += np.bincount(piece, weights=table[s], minlength=len(pieces))
            tokens += np.bincount(piece, minlength=len(pieces))
        return scores, tokens

    def classify(self, pieces: Any) -> tuple[np.ndarray, np.ndarray]:
        """Label each piece with its likeliest style (a uniform prior; ties go to the earlier
        style).

        Args:
            pieces: note arrays ``(n, 3)`` or ``(n, 4)`` of raw pitch, step, duration[,
                velocity] (velocity is not read) or note tables, a ``(batch, n, 3|4)`` array,
                or a ``NoteCorpus`` (all its pieces); one ``(n, 3|4)`` array is one piece.

        Returns:
            ``(labels, log_likelihoods)``: indices into ``("none",) + styles`` ``(n_pieces,)``
            int32, 0 for a piece that gives no token to read (no notes; one note when only
            ``interval`` and ``step`` are read), and :meth:`log_likelihoods`.
        """
        scores, tokens = self._scores(_as_piece_list(pieces))
        labels = np.zeros(len(scores), dtype=np.int32)
        if len(scores):
            labels[:] = np.argmax(scores, axis=1) + 1
        labels[tokens == 0] = 0
        return labels, scores

    def accuracy(self, pieces: Any, true_labels: Any) -> float:
        """The fraction of pieces classified as their true label (indices into ``("none",) +
        styles``); pieces whose true label is 0 (no style) are not scored."""
        truth = np.asarray(true_labels)
        predicted, _ = self.classify(pieces)
        if truth.shape != predicted.shape:
            raise MusicRNNError(f"true_labels has shape {truth.shape}; expected one label per "
                                f"piece {predicted.shape}")
        scored = truth > 0
        if not scored.any():
            raise MusicRNNError("no piece has a style to score (every true label is 0, 'none')")
        return float(np.mean(predicted[scored] == truth[scored]))

    # -- storage ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted classifier to ``path`` (``.npz``, atomically, no pickles)."""
        from .paths import atomic_path

        self._check_fitted()
        arrays = {
            "format": np.asarray(_FORMAT), "styles": np.asarray(self.styles, dtype=str),
            "features": np.asarray(self.features, dtype=str), "order": np.asarray(self.order),
            "smoothing": np.asarray(self.smoothing), "time_group": np.asarray(TIME_GROUP),
            "max_interval": np.asarray(MAX_INTERVAL),
            **{f"counts_{f}": c for f, c in self.counts.items()},
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> StyleClassifier:
        """Read a classifier written by :meth:`save` (never unpickles anything)."""
        path = Path(path)
        if not path.is_file():
            raise MusicRNNError(f"no style classifier at {path}; fit one and save() it first")
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["format"]) != _FORMAT or int(z["time_group"]) != TIME_GROUP \
                        or int(z["max_interval"]) != MAX_INTERVAL:
                    raise ValueError("written by another version of musicrnn.styles")
                classifier = cls([str(f) for f in z["features"]], int(z["order"]),
                                 float(z["smoothing"]))
                classifier.styles = tuple(str(s) for s in z["styles"])
                classifier.counts = {f: z[f"counts_{f}"].astype(np.int64)
                                     for f in classifier.features}
            for f, c in classifier.counts.items():
                if c.shape != (len(classifier.styles),
                               classifier._contexts(f) * _VOCABULARY[f]):
                    raise ValueError(f"counts of {f} have shape {c.shape}")
            return classifier
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
                MusicRNNError) as exc:
            raise MusicRNNError(f"the style classifier {path} is unreadable ({exc}); fit and "
                                "save it again") from exc

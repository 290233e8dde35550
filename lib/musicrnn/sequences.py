"""Training windows: inside one piece, split by piece, gathered by index, augmented on the fly.

The original research code concatenated every piece into one stream and cut windows of 51 notes
with ``tf.data.Dataset.window`` -- windows spanned the end of one piece and the start of an
unrelated one, each window was a materialised copy (tens of GB at MAESTRO scale), and the shuffled
order was frozen by ``.cache()``. Here:

* a window is just an integer, the row where it starts in the split's flat note array, and is
  valid only if it and its target lie inside one piece;
* a batch is one fancy-index gather of ``batch_size`` windows from that array, so memory is
  O(notes), never O(windows x seq_length);
* the window order (and, with ``shift > 1``, each piece's random phase) is drawn afresh for every
  pass over the data, from ``(seed, pass)`` only, so a resumed run sees the very same batches;
* the stream is endless (passes run back to back), for ``model.fit(..., steps_per_epoch=N)``:
  Keras keeps one iterator for the whole run and never re-creates it between epochs;
* training batches can be transposed by up to ``+-k`` semitones (only by shifts that keep every
  pitch of the window in 0..127) and time-stretched by a random tempo factor.

Two target modes:

``last``  (the original) inputs ``notes[s : s+L]``, target ``notes[s+L]``:
          inputs ``(B, L, 3)``, targets ``(B,)`` per head.
``all``   the same inputs, targets ``notes[s+1 : s+L+1]`` -- the next note at every position:
          targets ``(B, L)`` per head; up to ``L`` times more learning signal per window.

Both need ``L + 1`` notes of one piece per window, so the same window starts serve both.

For a model of dynamics (``ModelConfig.velocity == "categorical"``) every note carries its MIDI
velocity as a 4th column (inputs ``(B, L, 4)``) and the targets gain ``velocity``: the class of
the next note's velocity (:func:`musicrnn.timing.velocity_classes`). Augmentation leaves velocity
alone. A corpus with one velocity throughout (the chorales) trains all the same: the head learns
that one class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .errors import MusicRNNError
from .notes import FEATURES, SPLITS, NoteCorpus
from .timing import (
    DEFAULT_VELOCITY, VELOCITY_MAX, check_step_groups, check_velocity_bins, pitch_targets,
    velocity_classes,
)

TARGET_MODES: tuple[str, ...] = ("last", "all")
N_PITCHES = 128
PREFETCH_BATCHES = 4  # batches the generator makes ahead of the training step (to_tf)

Batch = tuple[np.ndarray, dict[str, np.ndarray]]


@dataclass(frozen=True)
class WindowPlan:
    """How many windows each piece yields: the facts a caller may want before training."""

    split: str  # which split of the corpus
    pieces: int  # pieces in the split
    usable_pieces: int  # pieces long enough for one window (seq_length + 1 notes)
    notes: int  # notes in the split
    windows: int  # windows per pass over the data (phase 0)
    steps_per_pass: int  # batches per pass (the last one completed from the next pass)


class WindowDataset:
    """The windows of one split of a :class:`~musicrnn.notes.NoteCorpus`, batched by index.

    Holds only the split's notes as one ``(n_notes, 3)`` float32 array (pitch, step, duration;
    ``(n_notes, 4)`` with velocity) and the piece boundaries; every window and batch is computed
    from integers on demand.

    Args:
        corpus: the note corpus.
        split: ``"train"``, ``"validation"`` or ``"test"``: the corpus's own split by piece.
        seq_length: notes of context per window (inputs); a window needs ``seq_length + 1``
            notes of one piece.
        targets: ``"last"`` (the note after the window) or ``"all"`` (the next note at every
            position).
        batch_size: windows per batch.
        shift: notes between the starts of consecutive windows of a piece (1: every window;
            ``seq_length``: windows that tile the piece). With ``shuffle``, each piece's first
            window starts at a random offset in ``[0, shift)`` drawn anew every pass, so over
            many passes every window is seen.
        shuffle: draw a new random window order every pass (training); else the windows come
            in corpus order, one pass (evaluation).
        transpose: random transposition in ``[-transpose, transpose]`` semitones per window,
            among the shifts that keep all its pitches within 0..127.
        time_stretch: random tempo factor in ``[1 - time_stretch, 1 + time_stretch]`` per window,
            applied to step and duration.
        seed: the one seed of the window order, phases and augmentation.
        max_windows: keep at most this many windows, evenly spaced (evaluation on a budget).
        velocity_bins: for a velocity model, the classes of its velocity head: the notes carry
            their velocity as a 4th column and the targets gain ``velocity`` (the class of the
            next note's velocity). None (the default): 3 columns, no velocity target.
        styles: for a conditioned model, the style label of every piece of the corpus (ints,
            0 for "none"; :func:`musicrnn.styles.piece_styles`): the inputs become ``(notes,
            labels)``, one label per window, the label of its piece. None: notes alone.
        label_dropout: the fraction of training windows whose label is replaced by 0 ("none"),
            drawn per window from the batch's random generator (training batches only).
        step_groups: for a model whose pitch follows the step (``pitch_given_step``), the
            number of step groups: each pitch target becomes ``pitch + 128 * group`` of its
            note's step (:func:`musicrnn.timing.pitch_targets`). 0: the pitches.
    """

    def __init__(
        self,
        corpus: NoteCorpus,
        split: str,
        seq_length: int,
        *,
        targets: str = "all",
        batch_size: int = 64,
        shift: int = 1,
        shuffle: bool = True,
        transpose: int = 0,
        time_stretch: float = 0.0,
        seed: int = 0,
        max_windows: int | None = None,
        velocity_bins: int | None = None,
        styles: np.ndarray | None = None,
        label_dropout: float = 0.0,
        step_groups: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise MusicRNNError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if targets not in TARGET_MODES:
            raise MusicRNNError(f"targets must be 'last' or 'all', got {targets!r}")
        if int(seq_length) < 1 or int(batch_size) < 1 or int(shift) < 1:
            raise MusicRNNError(
                f"seq_length, batch_size and shift must be >= 1, got {seq_length}, "
                f"{batch_size}, {shift}"
            )
        if not 0 <= int(transpose) <= 127:
            raise MusicRNNError(f"transpose must be in [0, 127] semitones, got {transpose}")
        if not 0.0 <= float(time_stretch) < 1.0:
            raise MusicRNNError(f"time_stretch must be in [0, 1), got {time_stretch}")
        if max_windows is not None and int(max_windows) < 1:
            raise MusicRNNError(f"max_windows must be >= 1, got {max_windows}")
        self.split = split
        self.seq_length = int(seq_length)
        self.targets = targets
        self.batch_size = int(batch_size)
        self.shift = int(shift)
        self.shuffle = bool(shuffle)
        self.transpose = int(transpose)
        self.time_stretch = float(time_stretch)
        self.seed = int(seed)
        self.max_windows = None if max_windows is None else int(max_windows)
        self.velocity_bins = None if velocity_bins is None else check_velocity_bins(velocity_bins)
        if not 0.0 <= float(label_dropout) < 1.0:
            raise MusicRNNError(f"label_dropout must be in [0, 1), got {label_dropout}")
        self.label_dropout = float(label_dropout)
        self.step_groups = check_step_groups(step_groups)

        pieces = corpus.indices(split)
        if len(pieces) == 0:
            counts = {s: int((corpus.splits == s).sum()) for s in SPLITS}
            raise MusicRNNError(
                f"the {corpus.dataset!r} corpus has no pieces in the {split!r} split "
                f"(pieces per split: {counts}); use a dataset (or a larger max_files) "
                f"whose {split} split is not empty"
            )
        lengths = corpus.lengths()[pieces]
        # The split's notes as one flat float32 array; pieces keep their order.
        self.notes = _split_features(corpus, pieces, velocity=self.velocity_bins is not None)
        self.piece_names = corpus.names[pieces]
        self.piece_styles: np.ndarray | None = None  # per piece of the split: its label
        if styles is not None:
            styles = np.asarray(styles)
            if styles.shape != (len(corpus),) or not np.issubdtype(styles.dtype, np.integer) \
                    or (len(styles) and styles.min() < 0):
                raise MusicRNNError(f"styles must hold one label >= 0 per piece of the corpus "
                                    f"({len(corpus)}), got shape {styles.shape}")
            self.piece_styles = styles[pieces].astype(np.int32)
        self.piece_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # Pieces long enough for one window, with the largest valid start (relative to piece).
        usable = lengths >= self.seq_length + 1
        if not usable.any():
            raise MusicRNNError(
                f"seq_length {self.seq_length} needs pieces of at least {self.seq_length + 1} "
                f"notes, but the longest of the {len(pieces)} {split} pieces of "
                f"{corpus.dataset!r} has {int(lengths.max())}; lower seq_length"
            )
        self._starts = self.piece_offsets[:-1][usable]  # (usable,) first row of each piece
        self._last = (lengths[usable] - self.seq_length - 1).astype(np.int64)  # max rel. start
        self._eval_starts: np.ndarray | None = None
        if not self.shuffle:
            starts = self._window_starts(np.zeros(len(self._starts), dtype=np.int64))
            if self.max_windows is not None and len(starts) > self.max_windows:
                keep = np.unique(np.linspace(0, len(starts) - 1, self.max_windows).astype(int))
                starts = starts[keep]
            self._eval_starts = starts
        self.plan = WindowPlan(
            split=split,
            pieces=int(len(pieces)),
            usable_pieces=int(usable.sum()),
            notes=int(lengths.sum()),
            windows=self.windows_per_pass,
            steps_per_pass=max(1, -(-self.windows_per_pass // self.batch_size)),
        )

    # -- windows --------------------------------------------------------------------------------
    @property
    def windows_per_pass(self) -> int:
        """Windows in one pass with every phase 0 (the most a pass can hold)."""
        if self._eval_starts is not None:
            return int(len(self._eval_starts))
        n = int(self._counts(np.zeros_like(self._last)).sum())
        return n if self.max_windows is None else min(n, self.max_windows)

    @property
    def steps_per_pass(self) -> int:
        """Batches per pass over the windows (at least 1)."""
        return self.plan.steps_per_pass

    def _counts(self, phases: np.ndarray) -> np.ndarray:
        """Windows per usable piece when its first window starts ``phases`` notes in."""
        return np.where(phases <= self._last, (self._last - phases) // self.shift + 1, 0)

    def _window_starts(self, phases: np.ndarray) -> np.ndarray:
        """Absolute start rows of every window, piece by piece, for the given phases."""
        counts = self._counts(phases)
        total = int(counts.sum())
        first = np.repeat(self._starts + phases, counts)
        index_in_piece = np.arange(total, dtype=np.int64) - np.repeat(
            np.cumsum(counts) - counts, counts
        )
        return first + self.shift * index_in_piece

    def _pass_rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 0x5EED, int(epoch)])

    def _pass_phases(self, rng: np.random.Generator) -> np.ndarray:
        if self.shift == 1:
            return np.zeros(len(self._starts), dtype=np.int64)
        return rng.integers(0, self.shift, size=len(self._starts), dtype=np.int64)

    def window_starts(self, epoch: int = 0) -> np.ndarray:
        """The window start rows of pass ``epoch``, in the order they are served.

        Training (``shuffle=True``): a fresh permutation (and fresh phases) per pass, a pure
        function of ``(seed, epoch)``. Evaluation: the same windows in corpus order every time.
        """
        if self._eval_starts is not None:
            return self._eval_starts
        rng = self._pass_rng(epoch)
        starts = self._window_starts(self._pass_phases(rng))
        starts = starts[rng.permutation(len(starts))]
        if self.max_windows is not None:
            starts = starts[: self.max_windows]
        return starts

    def _pass_length(self, epoch: int) -> int:
        if self._eval_starts is not None:
            return len(self._eval_starts)
        phases = self._pass_phases(self._pass_rng(epoch))
        n = int(self._counts(phases).sum())
        return n if self.max_windows is None else min(n, self.max_windows)

    def piece_of(self, starts: np.ndarray) -> np.ndarray:
        """Index (within the split) of the piece each window start belongs to."""
        return np.searchsorted(self.piece_offsets, np.asarray(starts), side="right") - 1

    # -- batches --------------------------------------------------------------------------------
    def gather(self, starts: np.ndarray, rng: np.random.Generator | None = None) -> Batch:
        """The batch of windows starting at ``starts``: ``(inputs, targets)`` as numpy arrays.

        Augments (when configured and ``rng`` is given) each window independently.
        """
        starts = np.asarray(starts, dtype=np.int64)
        rows = starts[:, None] + np.arange(self.seq_length + 1, dtype=np.int64)
        window = self.notes[rows]  # (B, L + 1, 3 or 4): the only copy, one batch big
        if rng is not None and (self.transpose or self.time_stretch):
            window = augment(window, rng, transpose=self.transpose,
                             time_stretch=self.time_stretch)
        inputs: Any = np.ascontiguousarray(window[:, :-1])
        if self.piece_styles is not None:
            style = self.piece_styles[self.piece_of(starts)]
            if rng is not None and self.label_dropout:
                style = np.where(rng.random(len(style)) < self.label_dropout, 0, style)
            inputs = (inputs, style.astype(np.int32))
        labels = window[:, 1:] if self.targets == "all" else window[:, -1]
        targets = {
            "pitch": pitch_targets(labels[..., 0], labels[..., 1], self.step_groups),
            "step": np.ascontiguousarray(labels[..., 1]),
            "duration": np.ascontiguousarray(labels[..., 2]),
        }
        if self.velocity_bins is not None:
            targets["velocity"] = velocity_classes(labels[..., 3], self.velocity_bins
                                                   ).astype(np.int32)
        return inputs, targets

    def batches(self, start_step: int = 0) -> Iterator[Batch]:
        """Yield batches: endless passes when shuffling (training), else one pass.

        Training batches are consecutive ``batch_size`` slices of the concatenated per-pass
        orders, so no window is dropped and ``start_step`` (a resumed run's first step) lands on
        exactly the batch an uninterrupted run would have served there.
        """
        if not self.shuffle:
            order = self.window_starts()
            for i in range(0, len(order), self.batch_size):
                yield self.gather(order[i: i + self.batch_size])
            return
        b = self.batch_size
        position = int(start_step) * b  # windows already served
        epoch = 0
        while position >= (n := self._pass_length(epoch)):  # skip whole passes cheaply
            position -= n
            epoch += 1
        order = self.window_starts(epoch)[position:]
        step = int(start_step)
        while True:
            while len(order) < b:
                epoch += 1
                order = np.concatenate([order, self.window_starts(epoch)])
            chosen, order = order[:b], order[b:]
            rng = np.random.default_rng([self.seed, 0xA06, step])
            yield self.gather(chosen, rng)
            step += 1

    def element_spec(self) -> tuple[Any, dict[str, Any]]:
        """The ``tf.TensorSpec`` structure of a batch (fixed batch size when training)."""
        import tensorflow as tf

        b = self.batch_size if self.shuffle else None
        shape = (b, self.seq_length) if self.targets == "all" else (b,)
        targets = {
            "pitch": tf.TensorSpec(shape, tf.int32),
            "step": tf.TensorSpec(shape, tf.float32),
            "duration": tf.TensorSpec(shape, tf.float32),
        }
        if self.velocity_bins is not None:
            targets["velocity"] = tf.TensorSpec(shape, tf.int32)
        features = self.notes.shape[1]
        notes = tf.TensorSpec((b, self.seq_length, features), tf.float32, name="notes")
        if self.piece_styles is not None:
            return (notes, tf.TensorSpec((b,), tf.int32, name="style")), targets
        return notes, targets

    def to_tf(self, start_step: int = 0):
        """The batches as a ``tf.data.Dataset`` (endless when training), prefetched.

        Feed to ``model.fit(..., steps_per_epoch=N)``: passes run back to back.
        """
        import tensorflow as tf

        dataset = tf.data.Dataset.from_generator(
            lambda: self.batches(start_step), output_signature=self.element_spec()
        )
        options = tf.data.Options()
        # Each batch is produced whole by the generator; under MultiWorkerMirroredStrategy
        # every worker keeps every N-th batch.
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        # No autotuning: its thread sleeps up to a minute between rounds, and an iterator that
        # Python's garbage collector frees (Keras leaves them in reference cycles) waits for that
        # thread with the interpreter locked - stalls of up to a minute at a random moment after
        # training. One generator feeding the model has nothing to tune: a fixed buffer does.
        options.autotune.enabled = False
        if self.shuffle:
            dataset = dataset.repeat()  # the generator never ends; declares the stream endless
        else:  # a known length: Keras then ends each evaluation without a warning
            batches = -(-len(self.window_starts()) // self.batch_size)
            dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
        return dataset.with_options(options).prefetch(PREFETCH_BATCHES)

    def memory_bytes(self) -> int:
        """Bytes of the arrays this dataset holds (notes, piece and window bookkeeping)."""
        held = [self.notes, self.piece_offsets, self._starts, self._last]
        if self._eval_starts is not None:
            held.append(self._eval_starts)
        return int(sum(a.nbytes for a in held))

    def __repr__(self) -> str:
        p = self.plan
        return (
            f"WindowDataset({p.split}: {p.usable_pieces}/{p.pieces} pieces, {p.notes} notes, "
            f"{p.windows} windows of {self.seq_length}+1 (shift {self.shift}), targets="
            f"{self.targets!r}, batch {self.batch_size}, {p.steps_per_pass} steps/pass)"
        )


def _split_features(corpus: NoteCorpus, pieces: np.ndarray, velocity: bool = False
                    ) -> np.ndarray:
    """(n_notes, 3) float32 (pitch, step, duration) of the given pieces, in order; (n_notes, 4)
    with each note's MIDI velocity when ``velocity``."""
    if len(pieces) == len(corpus) and np.array_equal(pieces, np.arange(len(corpus))):
        rows = slice(None)
    else:
        spans = [np.arange(corpus.offsets[i], corpus.offsets[i + 1]) for i in pieces]
        rows = np.concatenate(spans)
    names = (*FEATURES, "velocity") if velocity else FEATURES
    n = corpus.n_notes if isinstance(rows, slice) else len(rows)
    notes = np.empty((n, len(names)), np.float32)
    for j, name in enumerate(names):
        notes[:, j] = corpus.columns[name][rows]
    return notes


def match_features(notes: Any, features: int, default_velocity: int = DEFAULT_VELOCITY
                   ) -> np.ndarray:
    """Raw notes ``(..., 3 or 4)`` as ``(..., features)`` float32 for a model reading
    ``features`` columns: a 4th column (velocity) is dropped for a 3-column model, and added as
    ``default_velocity`` (:data:`musicrnn.timing.DEFAULT_VELOCITY`, 64) for a 4-column model.
    Returns ``notes`` itself when it already fits (as float32)."""
    notes = np.asarray(notes, dtype=np.float32)
    have = notes.shape[-1]
    if have == features:
        return notes
    if have == 4 and features == 3:
        return np.ascontiguousarray(notes[..., :3])
    if have == 3 and features == 4:
        if not 1 <= default_velocity <= VELOCITY_MAX:
            raise MusicRNNError(f"the default velocity must be 1-{VELOCITY_MAX}, "
                                f"got {default_velocity}")
        column = np.full((*notes.shape[:-1], 1), float(default_velocity), dtype=np.float32)
        return np.concatenate([notes, column], axis=-1)
    raise MusicRNNError(f"notes must have 3 or 4 columns (pitch, step, duration[, velocity]), "
                        f"got {have}; a model reading {features} was asked for")


def piece_features(corpus: NoteCorpus, piece: int, velocity: bool = False) -> np.ndarray:
    """Piece ``piece`` of ``corpus`` as raw float32 notes: ``(n, 3)`` (pitch, step, duration)
    like ``corpus.features(piece)``, or ``(n, 4)`` with each note's MIDI velocity when
    ``velocity`` (what a velocity model reads)."""
    return _split_features(corpus, np.asarray([int(piece)]), velocity=velocity)


def augment(
    window: np.ndarray,
    rng: np.random.Generator,
    *,
    transpose: int = 0,
    time_stretch: float = 0.0,
) -> np.ndarray:
    """Transpose and time-stretch a batch of raw windows ``(B, T, 3)``; returns a new array.

    Each window gets a transposition drawn uniformly from the shifts in ``[-transpose,
    transpose]`` that keep all its pitches within 0..127 (as if out-of-range draws were drawn
    again), and a tempo factor drawn uniformly from ``[1 - time_stretch, 1 + time_stretch]`` that
    scales its steps and durations. A 4th column (velocity) is left as it is.
    """
    out = np.array(window, dtype=np.float32, copy=True)
    n = len(out)
    if transpose:
        low = np.maximum(-transpose, -out[:, :, 0].min(axis=1))
        high = np.minimum(transpose, (N_PITCHES - 1) - out[:, :, 0].max(axis=1))
        high = np.maximum(high, low)  # a window spanning more than 127 - 2k keeps a narrow range
        shifts = np.floor(low + rng.random(n) * (high - low + 1)).astype(np.float32)
        out[:, :, 0] += np.minimum(shifts, high)[:, None]
    if time_stretch:
        factor = rng.uniform(1.0 - time_stretch, 1.0 + time_stretch, size=n).astype(np.float32)
        out[:, :, 1:3] *= factor[:, None, None]
    return out


def make_dataset(
    corpus: NoteCorpus,
    split: str,
    config: Any,
    *,
    training: bool | None = None,
    shift: int | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
    max_windows: int | None = None,
    styles: np.ndarray | None = None,
) -> WindowDataset:
    """The :class:`WindowDataset` of ``split`` for a :class:`~musicrnn.model.ModelConfig`.

    Training data (``training``, default: ``split == "train"``) is shuffled every pass with the
    config's ``window_shift`` and augmentation. Evaluation data is one pass in corpus order, not
    augmented, with ``shift`` defaulting to ``seq_length`` for ``targets="all"`` (each note is a
    target once) and 1 for ``"last"`` (each note after a full window is a target once). A config
    with ``velocity="categorical"`` gets velocity in its notes and targets. ``styles`` (one label
    per piece of the corpus) gives a conditioned model its labels, with the config's
    ``label_dropout`` on training data.
    """
    training = split == "train" if training is None else training
    if training:
        shift = config.window_shift if shift is None else shift
    else:
        shift = (config.seq_length if config.targets == "all" else 1) if shift is None else shift
    return WindowDataset(
        corpus, split, config.seq_length,
        targets=config.targets,
        batch_size=config.batch_size if batch_size is None else batch_size,
        shift=shift,
        shuffle=training,
        transpose=config.transpose if training else 0,
        time_stretch=config.time_stretch if training else 0.0,
        seed=config.seed if seed is None else seed,
        max_windows=max_windows,
        velocity_bins=(config.velocity_bins
                       if getattr(config, "velocity", "none") != "none" else None),
        styles=styles,
        label_dropout=getattr(config, "label_dropout", 0.0) if training and styles is not None
        else 0.0,
        step_groups=getattr(config, "pitch_given_step", 0),
    )


def seed_window(corpus: NoteCorpus, seq_length: int, split: str = "validation",
                seed: int = 0, velocity: bool = False) -> np.ndarray:
    """A ``(seq_length, 3)`` float32 window of raw notes from a random piece of ``split``
    (``(seq_length, 4)`` with velocity when ``velocity``).

    Falls back to the training split when ``split`` has no piece long enough (a generation
    primer must exist even for a tiny corpus).
    """
    rng = np.random.default_rng([int(seed), 0x5EED5])
    for name in (split, "train"):
        idx = corpus.indices(name)
        long_enough = idx[corpus.lengths()[idx] >= seq_length]
        if len(long_enough):
            piece = int(rng.choice(long_enough))
            start = int(rng.integers(0, corpus.lengths()[piece] - seq_length + 1))
            return piece_features(corpus, piece, velocity)[start: start + seq_length]
    raise MusicRNNError(
        f"no piece of the {split!r} or 'train' split has {seq_length} notes for a seed sequence"
    )

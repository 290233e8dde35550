"""The network: a commented config, the named presets of the project's history, and the model.

Every model reads raw note features -- a ``(batch, time, 3)`` float tensor of (pitch 0-127, step
seconds, duration seconds), or ``(batch, time, 4)`` with each note's MIDI velocity 1-127 for a
model of dynamics (``velocity="categorical"``) -- and does its own input scaling inside, so
callers (training, the sampler, live play) always feed notes exactly as they come out of a note
table and can never feed them back scaled the wrong way. It predicts three heads: ``pitch`` (128
logits), ``step`` and ``duration`` -- and a fourth, ``velocity`` (logits over
``velocity_bins`` classes of :func:`musicrnn.timing.velocity_classes`), for a model of dynamics
-- for the last position (``targets="last"``, the original) or for every position
(``targets="all"``). Step and duration are either one value each, regressed with the tutorial's
mean squared error (``timing="regression"``, the original), or 128 logits each over a grid of
time classes (``timing="categorical"``): class 0 is "0 s" (a note struck with the one before,
a chord) and the others are log-spaced from 4 ms to 8 s, so the model can say "a chord tone or
a quarter note" instead of averaging the two -- see :mod:`musicrnn.timing`.

The layers are written with ``keras.ops`` only, so the same code runs on Keras's TensorFlow, JAX
and PyTorch backends.

Saving and loading:

* :func:`save_model` / :func:`load_model` -- a ``.keras`` file that loads in a fresh process with
  plain ``keras.saving.load_model(path)`` once ``musicrnn.model`` is imported (the layers and the
  loss are registered). :func:`load_model` also reads the ``music_rnn_model.keras`` files the
  original research code saved (input pitch/128, fixed window length, an unregistered loss
  function) and returns them rebuilt in this module's raw-input convention.
* :func:`load_original_checkpoint` -- the original code's weights-only ``ckpt_N.weights.h5``.
* :func:`write_run_files` / :func:`load_run` -- a run directory (model, ``config.json``, seed
  sequence) as one :class:`Run`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import weakref
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from .errors import MusicRNNError
from .notes import read_notes_npy, validate_notes
from .paths import atomic_path, atomic_write_text
from .sequences import match_features
from .timing import (
    TIME_BINS, TIME_EDGES, TIMINGS, VELOCITIES, VELOCITY_BINS, VELOCITY_MAX, check_step_groups,
    timing_width, velocity_classes,
)

N_PITCHES = 128
HEADS = ("pitch", "step", "duration")  # the heads of every model
VELOCITY_HEAD = "velocity"  # the fourth head of a model with velocity="categorical"
N_FEATURES = 3  # (pitch, step, duration) per note
N_FEATURES_VELOCITY = 4  # (pitch, step, duration, velocity) per note of a velocity model
# A velocity model reads velocity / 127 (0-1, as the scalar pitch input reads pitch / 128): one
# number, because velocity is ordinal -- 64 lies between 60 and 70 -- and smooth, so the network
# has the neighbourhood for free where an embedding per class would have to learn it; it also
# reads any velocity of a primer, not only class values, and the sampler folds it into the first
# LSTM's weights like step and duration (no table lookup per note).
VELOCITY_SCALE = 1.0 / VELOCITY_MAX

# Files of a run directory (the contract between training, generation and evaluation).
MODEL_FILE = "music_rnn_model.keras"
CONFIG_FILE = "config.json"
SEED_FILE = "seed_sequence.npy"
HISTORY_FILE = "history.csv"
CHECKPOINTS_DIR = "checkpoints"
MODEL_CONFIG_FILE = "model_config.json"  # what notebook 03 writes: the chosen ModelConfig alone

ARCHITECTURES = ("lstm", "transformer")  # ModelConfig.architecture
LR_SCHEDULES = ("plateau", "cosine")  # ModelConfig.lr_schedule
LR_FLOOR = 0.02  # where lr_schedule="cosine" ends, as a fraction of learning_rate

ORIGINAL_LOSS_NAME = "mse_with_positive_pressure"  # the original's plain, unregistered function
ORIGINAL_HEAD_ORDER = ("duration", "pitch", "step")  # Keras sorts dict outputs: dense, dense_1, ...


# ---------------------------------------------------------------------------------------------
# The config and the presets
# ---------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Everything that defines a model and how it is trained. Presets are named instances."""

    name: str = "custom"  # preset name this config started from ("custom" when none)
    # -- architecture ---------------------------------------------------------------------------
    architecture: str = "lstm"  # "lstm": stacked LSTMs (lstm_units); "transformer": a causal
    #                     decoder of attention_layers blocks over the notes (model_dim wide,
    #                     rotary positions), reading every note through NoteEmbedding
    lstm_units: tuple[int, ...] = (256, 128)  # one LSTM layer per entry, bottom to top
    model_dim: int = 128  # transformer: width of every note's vector
    attention_layers: int = 4  # transformer: decoder blocks (attention + feed-forward)
    attention_heads: int = 4  # transformer: heads per attention (model_dim / heads: even)
    ff_dim: int = 512  # transformer: hidden width of each block's feed-forward part
    attention_window: int = 0  # transformer: 0, a note attends to every earlier note of its
    #                     window; N, only to the last N (itself included) in every block -- what
    #                     the sampler's cache of N notes does once a piece is longer than N
    dropout: float = 0.3  # dropout between stacked LSTM layers (none after the top one)
    pitch_input: str = "scalar"  # "scalar": pitch/128 as one number (original); "embedding"
    pitch_embedding_dim: int = 32  # size of the learned pitch vector when pitch_input="embedding"
    seq_length: int = 50  # notes of context per training window
    targets: str = "all"  # "last": predict the note after the window; "all": after every position
    timing: str = "regression"  # step/duration heads: "regression" (one value, MSE: original)
    #                             or "categorical" (128 time classes, cross-entropy: TIME_VALUES)
    velocity: str = "none"  # dynamics: "none" (3 input columns, every note played at one
    #                         velocity: original) or "categorical" (velocity read as a 4th input
    #                         column, predicted by a head over velocity_bins classes)
    velocity_bins: int = VELOCITY_BINS  # classes of the velocity head (timing.velocity_classes)
    pitch_given_step: int = 0  # 0: pitch and step are drawn independently given the context
    #                     (original); N (2-32, categorical timing): the step is drawn first and
    #                     the pitch from one of N pitch readouts, the one of the step's group
    #                     (timing.step_groups: struck with the note before, a few ms later, ...)
    # -- loss -----------------------------------------------------------------------------------
    pitch_loss_weight: float = 0.5  # weight of the pitch cross-entropy in the total loss
    step_loss_weight: float = 1.0  # weight of the step MSE (with positive pressure)
    duration_loss_weight: float = 1.0  # weight of the duration MSE (with positive pressure)
    velocity_loss_weight: float = 1.0  # weight of the velocity cross-entropy (velocity models)
    # -- optimisation ---------------------------------------------------------------------------
    learning_rate: float = 0.001  # Adam learning rate (the peak, under lr_schedule="cosine")
    lr_schedule: str = "plateau"  # "plateau": halve the rate after reduce_lr_patience
    #                     validations without improvement; "cosine": decay it from learning_rate
    #                     to LR_FLOOR x learning_rate along a half cosine over the run's length
    #                     (its steps, or its time budget when that ends it first)
    batch_size: int = 64  # windows per batch
    epochs: int = 50  # upper bound; early stopping usually ends training sooner
    clipnorm: float | None = 1.0  # gradient clipping by norm (None: off)
    early_stopping_patience: int = 5  # evaluations without validation improvement before stopping
    reduce_lr_patience: int = 2  # evaluations without improvement before the learning rate halves
    window_shift: int = 1  # notes between the starts of consecutive training windows
    # -- augmentation (training data only) ------------------------------------------------------
    transpose: int = 0  # random transposition in [-transpose, +transpose] semitones per window
    time_stretch: float = 0.0  # random tempo factor in [1 - time_stretch, 1 + time_stretch]
    # -- style control (conditioning) ----------------------------------------------------------
    condition: str = "none"  # what a label names: "none" (no label input), "dataset" (the part
    #                     of a mixture such as bach-chorales+essen-folksongs a piece comes from)
    #                     or "composer" (MAESTRO's canonical_composer); see musicrnn.styles
    styles: tuple[str, ...] = ()  # the labels, in input order after the "none" label (index 0);
    #                     training fills them from the data when empty
    max_styles: int = 8  # at most this many labels (composers beyond it share "other")
    style_dim: int = 16  # LSTM: width of the learned style vector read beside every note (a
    #                     transformer adds a model_dim-wide one to every note's vector)
    label_dropout: float = 0.1  # fraction of training windows whose label is replaced by
    #                     "none", so one model also generates unconditioned (and guidance works)
    # -- reproducibility ------------------------------------------------------------------------
    seed: int = 42  # one seed for every source of randomness
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried into config.json

    def __post_init__(self) -> None:
        if isinstance(self.lstm_units, (list, tuple)):
            self.lstm_units = tuple(self.lstm_units)
        if isinstance(self.styles, (list, tuple)):
            self.styles = tuple(self.styles)
        self.validate()

    def validate(self) -> "ModelConfig":
        """Check types and ranges; raise :class:`MusicRNNError` naming every impossible value.

        Returns:
            The config itself, so that calls can be chained.
        """
        problems = _type_problems(self)
        if problems:  # ranges only make sense once the types are right
            raise MusicRNNError("invalid model config: " + "; ".join(problems))
        if not self.name:
            problems.append("name must not be empty")
        if self.architecture not in ARCHITECTURES:
            problems.append(f"architecture must be 'lstm' or 'transformer', got "
                            f"{self.architecture!r}")
        if self.architecture == "transformer":
            for name in ("model_dim", "attention_layers", "attention_heads", "ff_dim"):
                if getattr(self, name) < 1:
                    problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
            heads = max(1, self.attention_heads)
            if self.model_dim % heads or (self.model_dim // heads) % 2:
                problems.append(
                    f"model_dim ({self.model_dim}) must split into attention_heads ({heads}) "
                    "heads of an even width (rotary positions turn pairs of numbers)")
            if self.attention_window < 0:
                problems.append(f"attention_window must be >= 0 (0: no limit), got "
                                f"{self.attention_window}")
            if self.targets != "all":
                problems.append("a transformer predicts after every position: targets must be "
                                f"'all', got {self.targets!r}")
        if not self.lstm_units or any(u < 1 for u in self.lstm_units):
            problems.append(f"lstm_units must be one or more positive integers, got "
                            f"{list(self.lstm_units)}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pitch_input not in ("scalar", "embedding"):
            problems.append(
                f"pitch_input must be 'scalar' or 'embedding', got {self.pitch_input!r}")
        if self.pitch_embedding_dim < 1:
            problems.append(f"pitch_embedding_dim must be >= 1, got {self.pitch_embedding_dim}")
        if self.seq_length < 1:
            problems.append(f"seq_length must be >= 1, got {self.seq_length}")
        if self.targets not in ("last", "all"):
            problems.append(f"targets must be 'last' or 'all', got {self.targets!r}")
        if self.timing not in TIMINGS:
            problems.append(f"timing must be 'regression' or 'categorical', got {self.timing!r}")
        if self.velocity not in VELOCITIES:
            problems.append(f"velocity must be 'none' or 'categorical', got {self.velocity!r}")
        if not 2 <= self.velocity_bins <= VELOCITY_MAX:
            problems.append(f"velocity_bins must be 2-{VELOCITY_MAX}, got {self.velocity_bins}")
        try:
            check_step_groups(self.pitch_given_step)
        except MusicRNNError as error:
            problems.append(str(error))
        else:
            if self.pitch_given_step and self.timing != "categorical":
                problems.append("pitch_given_step needs timing='categorical' (the step is drawn "
                                "as a time class first)")
        names = ["pitch_loss_weight", "step_loss_weight", "duration_loss_weight",
                 "velocity_loss_weight"]
        for name in names:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be a finite number >= 0, got {value}")
        weights = [getattr(self, name) for name in names[: 4 if self.velocity != "none" else 3]]
        if all(math.isfinite(w) for w in weights) and sum(weights) <= 0:
            problems.append("at least one loss weight must be > 0")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            problems.append(f"learning_rate must be a finite number > 0, got {self.learning_rate}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be 'plateau' or 'cosine', got {self.lr_schedule!r}")
        if self.clipnorm is not None and not (math.isfinite(self.clipnorm) and self.clipnorm > 0):
            problems.append(f"clipnorm must be > 0 or None, got {self.clipnorm}")
        for name in ("batch_size", "epochs", "window_shift"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("early_stopping_patience", "reduce_lr_patience"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.transpose <= 24:
            problems.append(f"transpose must be in [0, 24] semitones, got {self.transpose}")
        if not 0.0 <= self.time_stretch < 1.0:
            problems.append(f"time_stretch must be in [0, 1), got {self.time_stretch}")
        problems += _style_problems(self)
        if problems:
            raise MusicRNNError("invalid model config: " + "; ".join(problems))
        return self

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``lstm_units`` as a list) that :meth:`from_dict` reads back."""
        d = dataclasses.asdict(self)
        d["lstm_units"] = list(self.lstm_units)
        d["styles"] = list(self.styles)
        return d

    def to_json(self) -> str:
        """:meth:`to_dict` as stable, readable JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Read a config dict; unknown keys and impossible values are clear errors."""
        if not isinstance(d, dict):
            raise MusicRNNError(f"a model config must be a mapping, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise MusicRNNError(
                f"unknown model config keys {unknown}; known keys are {sorted(known)}"
            )
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """Read :meth:`to_json`'s output."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise MusicRNNError(f"the model config is not valid JSON: {exc}") from exc

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated, unknown keys refused)."""
        return ModelConfig.from_dict({**self.to_dict(), **changes})

    def describe_architecture(self) -> str:
        """The network in a few words: ``LSTM [256, 128], pitch embedding`` or ``transformer: 4
        blocks x 4 heads, width 128, feed-forward 512``."""
        if self.architecture == "transformer":
            window = f", attending to the last {self.attention_window} notes" \
                if self.attention_window else ""
            return (f"transformer: {self.attention_layers} blocks x {self.attention_heads} heads, "
                    f"width {self.model_dim}, feed-forward {self.ff_dim}{window}"
                    f"{self.describe_condition()}")
        return f"LSTM {list(self.lstm_units)}, pitch {self.pitch_input}{self.describe_condition()}"

    @property
    def conditioned(self) -> bool:
        """Whether a model of this config reads a style label beside its notes."""
        return self.condition != "none"

    def describe_condition(self) -> str:
        """``", conditioned on dataset (2 styles)"`` or "" for a model without labels."""
        if not self.conditioned:
            return ""
        count = f"{len(self.styles)} styles" if self.styles else "styles from the data"
        return f", conditioned on {self.condition} ({count})"

    def same_architecture(self, other: "ModelConfig") -> bool:
        """Whether a model of ``self`` and one of ``other`` have the same layers and weights."""
        if self.architecture != other.architecture:
            return False
        if (self.condition, self.styles) != (other.condition, other.styles):
            return False
        if self.conditioned and self.architecture == "lstm" and self.style_dim != other.style_dim:
            return False
        if self.architecture == "transformer":
            keys = ("model_dim", "attention_layers", "attention_heads", "ff_dim", "timing",
                    "velocity") + (("velocity_bins",) if self.velocity != "none" else ())
            return all(getattr(self, k) == getattr(other, k) for k in keys)
        keys = ("lstm_units", "pitch_input", "timing", "velocity") + (
            ("pitch_embedding_dim",) if self.pitch_input == "embedding" else ()
        ) + (("velocity_bins",) if self.velocity != "none" else ())
        return all(getattr(self, k) == getattr(other, k) for k in keys)


# The type each field must have: (accepted Python types, what to call it in an error).
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "a string"),
    "architecture": ((str,), "a string"),
    "model_dim": ((int,), "an integer"),
    "attention_layers": ((int,), "an integer"),
    "attention_heads": ((int,), "an integer"),
    "ff_dim": ((int,), "an integer"),
    "attention_window": ((int,), "an integer"),
    "dropout": ((int, float), "a number"),
    "pitch_input": ((str,), "a string"),
    "timing": ((str,), "a string"),
    "velocity": ((str,), "a string"),
    "velocity_bins": ((int,), "an integer"),
    "pitch_given_step": ((int,), "an integer"),
    "velocity_loss_weight": ((int, float), "a number"),
    "pitch_embedding_dim": ((int,), "an integer"),
    "seq_length": ((int,), "an integer"),
    "targets": ((str,), "a string"),
    "pitch_loss_weight": ((int, float), "a number"),
    "step_loss_weight": ((int, float), "a number"),
    "duration_loss_weight": ((int, float), "a number"),
    "learning_rate": ((int, float), "a number"),
    "lr_schedule": ((str,), "a string"),
    "batch_size": ((int,), "an integer"),
    "epochs": ((int,), "an integer"),
    "early_stopping_patience": ((int,), "an integer"),
    "reduce_lr_patience": ((int,), "an integer"),
    "window_shift": ((int,), "an integer"),
    "transpose": ((int,), "an integer"),
    "time_stretch": ((int, float), "a number"),
    "seed": ((int,), "an integer"),
    "condition": ((str,), "a string"),
    "max_styles": ((int,), "an integer"),
    "style_dim": ((int,), "an integer"),
    "label_dropout": ((int, float), "a number"),
    "extra": ((dict,), "a mapping"),
}

CONDITIONS = ("none", "dataset", "composer")  # ModelConfig.condition
NONE_STYLE = "none"  # the label of index 0: no style (what label dropout trains)


def _style_problems(config: ModelConfig) -> list[str]:
    """Range errors of the conditioning fields."""
    problems = []
    if config.condition not in CONDITIONS:
        problems.append(f"condition must be one of {', '.join(CONDITIONS)}, got "
                        f"{config.condition!r}")
    styles = config.styles
    if not isinstance(styles, tuple) or not all(isinstance(x, str) and x.strip() for x in styles):
        problems.append(f"styles must be a list of non-empty names, got {styles!r}")
    else:
        lowered = [x.lower() for x in styles]
        if len(set(lowered)) != len(lowered) or NONE_STYLE in lowered:
            problems.append(f"styles must be distinct names other than {NONE_STYLE!r}, got "
                            f"{list(styles)}")
        if styles and config.condition == "none":
            problems.append("styles are given but condition is 'none'; set condition to "
                            "'dataset' or 'composer', or drop the styles")
        if len(styles) > max(config.max_styles, 1):
            problems.append(f"{len(styles)} styles is more than max_styles ({config.max_styles})")
    if config.max_styles < 2:
        problems.append(f"max_styles must be >= 2, got {config.max_styles}")
    if config.style_dim < 1:
        problems.append(f"style_dim must be >= 1, got {config.style_dim}")
    if not 0.0 <= config.label_dropout < 1.0:
        problems.append(f"label_dropout must be in [0, 1), got {config.label_dropout}")
    return problems


def _type_problems(config: ModelConfig) -> list[str]:
    """Type errors of ``config`` (bools are not numbers here; ints become floats where due)."""
    problems = []
    for name, (types, what) in _FIELD_TYPES.items():
        value = getattr(config, name)
        if isinstance(value, (np.integer, np.floating)):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, types):
            problems.append(f"{name} must be {what}, got {value!r}")
            continue
        if float in types:
            value = float(value)
        setattr(config, name, value)
    units = config.lstm_units
    if isinstance(units, (int, np.integer)) and not isinstance(units, bool):
        units = (int(units),)
    if not isinstance(units, (list, tuple)) or any(
        isinstance(u, bool) or not isinstance(u, (int, np.integer)) for u in units
    ):
        problems.append(f"lstm_units must be a list of integers, got {config.lstm_units!r}")
    else:
        config.lstm_units = tuple(int(u) for u in units)
    if isinstance(config.styles, list):
        config.styles = tuple(config.styles)
    clip = config.clipnorm
    if clip is not None:
        if isinstance(clip, bool) or not isinstance(clip, (int, float, np.number)):
            problems.append(f"clipnorm must be a number or None, got {clip!r}")
        else:
            config.clipnorm = float(clip)
    return problems


PRESETS: dict[str, ModelConfig] = {
    # The original tutorial-sized model ("Experiment 1: Baseline" of the original notes).
    "baseline": ModelConfig(
        name="baseline", lstm_units=(128,), dropout=0.0, seq_length=25, targets="last",
        pitch_loss_weight=0.05, step_loss_weight=1.0, duration_loss_weight=1.0,
        learning_rate=0.005, batch_size=64, clipnorm=None,
    ),
    # The same with a longer context and a stronger pitch loss ("Version 1").
    "v1": ModelConfig(
        name="v1", lstm_units=(128,), dropout=0.0, seq_length=50, targets="last",
        pitch_loss_weight=0.5, step_loss_weight=1.0, duration_loss_weight=1.0,
        learning_rate=0.005, batch_size=64, clipnorm=None,
    ),
    # The original's last design ("Version 2"): two stacked LSTMs with dropout, its loss weights,
    # learning rate and batch. Trained on a next-note target at every position of windows 25 notes
    # apart (measured better than the original's one target per window, see notebook 04 and
    # benchmarks/train.py); the original's training is targets="last", window_shift=1.
    "v2": ModelConfig(
        name="v2", lstm_units=(256, 128), dropout=0.3, seq_length=50, targets="all",
        pitch_loss_weight=0.5, step_loss_weight=1.0, duration_loss_weight=1.0,
        learning_rate=0.001, batch_size=64, clipnorm=None, window_shift=25,
    ),
    # Proposed: v2's LSTMs reading a learned vector per pitch instead of pitch/128, trained on a
    # next-note target at every position (same weights per window, seq_length x the signal), with
    # gradient clipping. The training issue measures what it gains; its settings may be tuned.
    "v3": ModelConfig(
        name="v3", lstm_units=(256, 128), dropout=0.3, pitch_input="embedding",
        pitch_embedding_dim=32, seq_length=50, targets="all",
        pitch_loss_weight=0.5, step_loss_weight=1.0, duration_loss_weight=1.0,
        learning_rate=0.001, batch_size=64, clipnorm=1.0,
    ),
    # Proposed: v3 with categorical timing. A regression head trained with squared error predicts
    # the average step, so a model that knows "a chord tone (0 s) or the next beat (0.5 s)" says
    # 0.2 s and every chord comes out rolled; classes over TIME_VALUES let it say both, and
    # sampling draws one. All three losses are then log-likelihoods (nats); timing is weighted
    # 0.1 because it competes with pitch for the LSTM (measured on the chorales with one
    # LSTM(128) for 120 s: timing weights 1 / 0.3 / 0.1 gave held-out pitch NLL 1.88 / 1.74 /
    # 1.61 and statistics overlap 0.90 / 0.89 / 0.87).
    "v4": ModelConfig(
        name="v4", lstm_units=(256, 128), dropout=0.3, pitch_input="embedding",
        pitch_embedding_dim=32, seq_length=50, targets="all", timing="categorical",
        pitch_loss_weight=1.0, step_loss_weight=0.1, duration_loss_weight=0.1,
        learning_rate=0.001, batch_size=64, clipnorm=1.0,
    ),
    # Proposed: v4 with dynamics. Every note of the original's output played at velocity 100; a
    # performance lives on its dynamics. The notes carry their MIDI velocity as a 4th input
    # column (read as velocity / 127) and a head predicts it over 32 classes of 4 velocities
    # (Performance RNN's bins; the round trip moves a MAESTRO velocity by 1.0 on average, at most
    # 2), sampled with its own temperature. Velocity competes with pitch for the LSTM, as timing
    # does (measured on the MAESTRO sample, one LSTM(128), the same 600 / 1200 steps, validation
    # nats/note: velocity weight 1 / 0.3 / 0.1 gave pitch 3.323 / 3.255 / 3.255 and velocity
    # 2.612 / 2.629 / 2.743 after 600 steps; 0.3 / 0.1 gave pitch 3.112 / 3.110 and velocity
    # 2.597 / 2.628 after 1200): 0.3 costs pitch nothing measurable and learns dynamics faster.
    "v5": ModelConfig(
        name="v5", lstm_units=(256, 128), dropout=0.3, pitch_input="embedding",
        pitch_embedding_dim=32, seq_length=50, targets="all", timing="categorical",
        velocity="categorical", velocity_bins=32,
        pitch_loss_weight=1.0, step_loss_weight=0.1, duration_loss_weight=0.1,
        velocity_loss_weight=0.3, learning_rate=0.001, batch_size=64, clipnorm=1.0,
    ),
    # Proposed: attention instead of recurrence. v5's note features and heads (timing classes,
    # velocity) read by a small decoder-only transformer: every note looked up as the sum of a
    # pitch, a step-class, a duration-class and a velocity-class vector, two blocks of causal
    # self-attention (rotary positions: a query meets a key by how far back it is, so the model
    # continues past its window) each followed by a feed-forward part. A step sees every
    # earlier note of its 128-note window directly instead of through a fixed-size state; the
    # sampler keeps each note's keys and values in a cache (one step per note). Sized like the
    # CPU profiles' LSTM(128): about the same multiply-adds per note (125,000 against 136,000);
    # on 9 minutes of one CPU core on MAESTRO lr 0.005 beat 0.002 (validation pitch NLL 3.309
    # against 3.345). Scale model_dim, attention_layers and ff_dim up on a GPU.
    "v6": ModelConfig(
        name="v6", architecture="transformer", model_dim=64, attention_layers=2,
        attention_heads=4, ff_dim=256, dropout=0.0, seq_length=128, targets="all",
        timing="categorical", velocity="categorical", velocity_bins=32,
        pitch_loss_weight=1.0, step_loss_weight=0.1, duration_loss_weight=0.1,
        velocity_loss_weight=0.3, learning_rate=0.005, lr_schedule="cosine", batch_size=32,
        clipnorm=1.0,
    ),
}

DEFAULT_PRESET = "v2"  # the default: the original's last design

# Config fields added after runs were written, with what a config.json without them means (a
# resumed or finished older run is then recognised as the same run).
ADDED_FIELDS: dict[str, Any] = {"velocity": "none", "velocity_bins": VELOCITY_BINS,
                                "velocity_loss_weight": 1.0, "lr_schedule": "plateau",
                                "architecture": "lstm", "model_dim": 128, "attention_layers": 4,
                                "attention_heads": 4, "ff_dim": 512, "attention_window": 0,
                                "condition": "none", "styles": (), "max_styles": 8,
                                "style_dim": 16, "label_dropout": 0.1, "pitch_given_step": 0}

# What the original notes ("Optimization Changes Summary") give as parameter counts.
ORIGINAL_NOTES_PARAMS: dict[str, int] = {"baseline": 199_000, "v1": 199_000, "v2": 528_000}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset (a fresh copy), with ``overrides`` applied.

    Args:
        name: one of :data:`PRESETS` (``baseline``, ``v1``, ``v2``, ``v3``, ``v4``, ``v5``).
        **overrides: fields to change, e.g. ``seq_length=100``; unknown keys are refused.

    Raises:
        MusicRNNError: for an unknown name, unknown keys or impossible values.
    """
    if name not in PRESETS:
        raise MusicRNNError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides)


def write_model_config(run_dir: str | Path, config: ModelConfig) -> Path:
    """Write ``config`` alone to ``<run_dir>/model_config.json`` (atomically); returns the path.

    What notebook 03 hands to notebook 04: the architecture and training settings chosen, before
    any training (``config.json``, written by training, also records the data and the outcome).
    """
    config.validate()
    return atomic_write_text(Path(run_dir) / MODEL_CONFIG_FILE, config.to_json())


def read_model_config(run_dir: str | Path) -> ModelConfig:
    """Read ``<run_dir>/model_config.json`` back; clear errors when missing or invalid."""
    path = Path(run_dir) / MODEL_CONFIG_FILE
    if not path.is_file():
        raise MusicRNNError(
            f"no {MODEL_CONFIG_FILE} in {run_dir}; run notebook 03_build_model for this run first"
        )
    return ModelConfig.from_json(path.read_text())


# ---------------------------------------------------------------------------------------------
# Layers and losses (registered, so a saved model loads in a fresh process with no custom code)
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="musicrnn")
class NoteScaling(keras.layers.Layer):
    """Raw (pitch, step, duration) -> (pitch / 128, step, duration): the original's input scale;
    a 4th column, velocity, becomes velocity / 127."""

    def call(self, notes):
        factors = [1.0 / N_PITCHES, 1.0, 1.0, VELOCITY_SCALE][: notes.shape[-1]]
        scale = ops.convert_to_tensor(factors, dtype=notes.dtype)
        return notes * scale

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="musicrnn")
class PitchEmbedding(keras.layers.Layer):
    """Raw (pitch, step, duration) -> [embedding(pitch), step, duration]; a 4th column, velocity,
    comes out as velocity / 127 after them.

    The scalar input makes the network decode pitch identity from one number; a learned vector
    per pitch gives each pitch its own direction from the start. Pitches are rounded and clipped
    to 0-127 first, so a sampled or transposed note can never index outside the table.
    """

    def __init__(self, output_dim: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = int(output_dim)
        self.embedding = keras.layers.Embedding(N_PITCHES, self.output_dim, name="table")

    def build(self, input_shape):
        self.embedding.build(tuple(input_shape[:-1]))
        self.built = True

    def call(self, notes):
        pitch = ops.cast(ops.clip(ops.round(notes[..., 0]), 0, N_PITCHES - 1), "int32")
        vectors = ops.cast(self.embedding(pitch), notes.dtype)
        rest = notes[..., 1:]
        if notes.shape[-1] == N_FEATURES_VELOCITY:
            rest = rest * ops.convert_to_tensor([1.0, 1.0, VELOCITY_SCALE], dtype=notes.dtype)
        return ops.concatenate([vectors, rest], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim + input_shape[-1] - 1)

    def get_config(self):
        return {**super().get_config(), "output_dim": self.output_dim}


def _classes_of(values, edges):
    """The class of each value: how many of ``edges`` (ascending) are at or below it."""
    edges = ops.convert_to_tensor(edges, dtype=values.dtype)
    return ops.sum(ops.cast(ops.expand_dims(values, -1) >= edges, "int32"), axis=-1)


def velocity_edges(bins: int) -> np.ndarray:
    """Where each velocity class after the first begins (:func:`musicrnn.timing.velocity_classes`
    as comparisons: the class of ``v`` is how many of these are ``<= round(v)``)."""
    classes = velocity_classes(np.arange(1, VELOCITY_MAX + 1), bins)
    starts = np.flatnonzero(np.diff(classes)) + 2  # the velocity where each new class begins
    return starts.astype(np.float32) - 0.5


@keras.saving.register_keras_serializable(package="musicrnn")
class NoteEmbedding(keras.layers.Layer):
    """Raw notes -> one ``model_dim`` vector per note: the sum of a learned vector for its pitch,
    for the time class of its step and of its duration (:data:`musicrnn.timing.TIME_EDGES`) and,
    with ``velocity_bins``, for its velocity class. The transformer's input layer.

    Every feature is looked up rather than scaled: attention compares vectors, and a table gives
    "a chord tone (step 0)" and "a quarter note later" directions of their own from the start.
    """

    def __init__(self, model_dim: int = 128, velocity_bins: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.model_dim = int(model_dim)
        self.velocity_bins = int(velocity_bins)
        self.pitch_table = keras.layers.Embedding(N_PITCHES, self.model_dim, name="pitch_table")
        self.step_table = keras.layers.Embedding(TIME_BINS, self.model_dim, name="step_table")
        self.duration_table = keras.layers.Embedding(TIME_BINS, self.model_dim,
                                                     name="duration_table")
        self.velocity_table = (keras.layers.Embedding(self.velocity_bins, self.model_dim,
                                                      name="velocity_table")
                               if self.velocity_bins else None)

    def build(self, input_shape):
        shape = tuple(input_shape[:-1])
        for table in self.tables():
            table.build(shape)
        self.built = True

    def tables(self) -> list:
        """The lookup tables in column order: pitch, step, duration[, velocity]."""
        found = [self.pitch_table, self.step_table, self.duration_table]
        return found + ([self.velocity_table] if self.velocity_table is not None else [])

    def call(self, notes):
        notes = ops.cast(notes, "float32")
        pitch = ops.cast(ops.clip(ops.round(notes[..., 0]), 0, N_PITCHES - 1), "int32")
        x = self.pitch_table(pitch)
        x = x + self.step_table(_classes_of(notes[..., 1], TIME_EDGES))
        x = x + self.duration_table(_classes_of(notes[..., 2], TIME_EDGES))
        if self.velocity_table is not None:
            velocity = ops.round(notes[..., 3])
            x = x + self.velocity_table(_classes_of(velocity, velocity_edges(self.velocity_bins)))
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.model_dim)

    def get_config(self):
        return {**super().get_config(), "model_dim": self.model_dim,
                "velocity_bins": self.velocity_bins}


@keras.saving.register_keras_serializable(package="musicrnn")
class StyleInput(keras.layers.Layer):
    """Notes' vectors plus a style: ``[x (batch, time, d), style (batch,) int]`` -> the learned
    vector of each window's style label read at every step, beside (``mode="concat"``: ``(batch,
    time, d + dim)``, the LSTM's input) or added to (``mode="add"``: ``(batch, time, d)``, the
    transformer's note vectors) each note's vector. Label 0 is "none" (no style).

    One label per window: the sampler changes a stream's label between two notes, so a style can
    change mid-piece (and two labels' vectors can be mixed) without the model knowing more.
    """

    def __init__(self, num_styles: int = 2, dim: int = 16, mode: str = "concat", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("concat", "add"):
            raise ValueError(f"mode must be 'concat' or 'add', got {mode!r}")
        self.num_styles = int(num_styles)
        self.dim = int(dim)
        self.mode = mode
        # zeros: a new model reads every label alike, as an unconditioned one, and learns
        # only the differences the data shows (random vectors cost a short composer run pitch
        # NLL)
        self.table = keras.layers.Embedding(self.num_styles, self.dim, name="style_table",
                                            embeddings_initializer="zeros")

    def build(self, input_shape):
        self.table.build(tuple(input_shape[1]))
        self.built = True

    def call(self, inputs):
        x, style = inputs
        style = ops.clip(ops.cast(style, "int32"), 0, self.num_styles - 1)
        vector = ops.cast(self.table(style), x.dtype)[:, None, :]  # (batch, 1, dim)
        if self.mode == "add":
            return x + vector
        steps = ops.shape(x)[1]
        return ops.concatenate([x, ops.repeat(vector, steps, axis=1)], axis=-1)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape[0])
        return shape if self.mode == "add" else (*shape[:-1], shape[-1] + self.dim)

    def get_config(self):
        return {**super().get_config(), "num_styles": self.num_styles, "dim": self.dim,
                "mode": self.mode}


ROTARY_BASE = 10000.0  # the rotary positions' longest wavelength scale (RoFormer's choice)
NORM_EPSILON = 1e-5  # the layer norms' epsilon (the sampler reads it off the layers)
STYLE_LAYER = "style_input"  # the name of a conditioned model's StyleInput layer


def rotary_frequencies(head_dim: int, base: float = ROTARY_BASE) -> np.ndarray:
    """The angle per position of each of a head's ``head_dim // 2`` rotary pairs (float64): the
    one definition the Keras block and the sampler's cached step both use."""
    half = head_dim // 2
    return base ** (-np.arange(half, dtype=np.float64) / half)


@keras.saving.register_keras_serializable(package="musicrnn")
class AttentionBlock(keras.layers.Layer):
    """One decoder block: causal multi-head self-attention with rotary positions, then a
    feed-forward part, each read through a layer norm and added back (pre-norm residuals).

    Rotary positions (RoFormer) turn each pair of a head's query and key numbers by an angle
    proportional to the note's position, so that a query meets a key by how far back it is, not
    where both sit in the window: the block continues past the length it was trained on, and a
    sampler can keep a sliding window of cached keys. The causal mask lets position ``t`` see
    positions ``<= t`` only. Built from Keras layers (Dense, LayerNormalization, Dropout) and
    ``keras.ops``.
    """

    def __init__(self, model_dim: int = 128, num_heads: int = 4, ff_dim: int = 512,
                 dropout: float = 0.0, window: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.window = int(window)  # 0: every earlier position; N: the last N only
        self.model_dim = int(model_dim)
        self.num_heads = int(num_heads)
        self.ff_dim = int(ff_dim)
        self.dropout = float(dropout)
        self.head_dim = self.model_dim // self.num_heads
        d = self.model_dim
        self.norm_1 = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name="norm_1")
        self.query = keras.layers.Dense(d, name="query")
        self.key = keras.layers.Dense(d, name="key")
        self.value = keras.layers.Dense(d, name="value")
        self.attention_output = keras.layers.Dense(d, name="attention_output")
        self.norm_2 = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name="norm_2")
        self.ff_in = keras.layers.Dense(self.ff_dim, activation="relu", name="ff_in")
        self.ff_out = keras.layers.Dense(d, name="ff_out")
        self.drop = keras.layers.Dropout(self.dropout, name="drop")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in (self.norm_1, self.query, self.key, self.value, self.norm_2, self.ff_in):
            layer.build(shape)
        self.attention_output.build(shape)
        self.ff_out.build((*shape[:-1], self.ff_dim))
        self.built = True

    def _rotate(self, x, cos, sin):
        half = self.head_dim // 2
        first, second = x[..., :half], x[..., half:]
        return ops.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)

    def call(self, x, training=None):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        h = self.norm_1(x)
        split = (batch, length, self.num_heads, self.head_dim)
        q = ops.reshape(self.query(h), split)
        k = ops.reshape(self.key(h), split)
        v = ops.reshape(self.value(h), split)
        positions = ops.cast(ops.arange(length), "float32")
        frequencies = ops.convert_to_tensor(rotary_frequencies(self.head_dim).astype(np.float32))
        angles = ops.expand_dims(positions, -1) * ops.expand_dims(frequencies, 0)  # (T, half)
        cos = ops.cast(ops.cos(angles)[None, :, None, :], q.dtype)
        sin = ops.cast(ops.sin(angles)[None, :, None, :], q.dtype)
        q = self._rotate(q, cos, sin) * ops.cast(1.0 / math.sqrt(self.head_dim), q.dtype)
        k = self._rotate(k, cos, sin)
        scores = ops.cast(ops.einsum("bqhd,bkhd->bhqk", q, k), "float32")
        back = ops.expand_dims(ops.arange(length), 1) - ops.expand_dims(ops.arange(length), 0)
        causal = ops.greater_equal(back, 0)  # (T, T): key k at or before query q
        if self.window:
            causal = ops.logical_and(causal, ops.less(back, self.window))
        scores = ops.where(causal[None, None], scores, ops.full_like(scores, -1e9))
        weights = ops.cast(ops.softmax(scores, axis=-1), v.dtype)
        attended = ops.einsum("bhqk,bkhd->bqhd", weights, v)
        attended = ops.reshape(attended, (batch, length, self.model_dim))
        x = x + self.drop(self.attention_output(attended), training=training)
        x = x + self.drop(self.ff_out(self.ff_in(self.norm_2(x))), training=training)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "model_dim": self.model_dim, "num_heads": self.num_heads,
                "ff_dim": self.ff_dim, "dropout": self.dropout, "window": self.window}


@keras.saving.register_keras_serializable(package="musicrnn")
class LastPosition(keras.layers.Layer):
    """``(batch, time, d)`` -> ``(batch, d)``: the last position (a transformer predicting only
    the note after its window, as :func:`with_sequence_outputs` asks)."""

    def call(self, x):
        return x[:, -1]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="musicrnn")
def mse_with_positive_pressure(y_true, y_pred):
    """Mean squared error plus 10x any negative prediction (the tutorial's loss for step/duration).

    Works for ``(batch, 1)`` and ``(batch, time, 1)`` predictions alike, with targets of the same
    shape or without the trailing 1.
    """
    y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), ops.shape(y_pred))
    mse = (y_true - y_pred) ** 2
    positive_pressure = 10.0 * ops.maximum(-y_pred, 0.0)
    return ops.mean(mse + positive_pressure, axis=-1)


@keras.saving.register_keras_serializable(package="musicrnn")
def time_class_crossentropy(y_true, y_pred):
    """Cross-entropy of the time class of ``y_true`` (seconds) under logits ``y_pred`` (128).

    The class of a time is the number of :data:`musicrnn.timing.TIME_EDGES` at or below it,
    computed with comparisons (no bucketize op), so it runs on every backend and under XLA.
    Targets come as seconds, shaped like the predictions without the class axis or with a
    trailing 1.
    """
    edges = ops.convert_to_tensor(TIME_EDGES)
    seconds = ops.reshape(ops.cast(y_true, "float32"), ops.shape(y_pred)[:-1])
    classes = ops.sum(ops.cast(ops.expand_dims(seconds, -1) >= edges, "int32"), axis=-1)
    return ops.sparse_categorical_crossentropy(classes, y_pred, from_logits=True)


@keras.saving.register_keras_serializable(package="musicrnn")
class PitchGivenStepCrossentropy(keras.losses.Loss):
    """Cross-entropy of the true pitch under the pitch readout of the true step's group.

    The predictions are ``groups`` readouts of 128 logits each, side by side; the target packs
    the pitch and the group of the note's step as ``pitch + 128 * group``
    (:class:`musicrnn.sequences.WindowDataset` with ``step_groups``), so each position is
    scored on the readout the sampler uses once it has drawn that step.
    """

    def __init__(self, groups: int = 2, name: str = "pitch_given_step_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.groups = int(groups)

    def call(self, y_true, y_pred):
        packed = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
        group, pitch = packed // N_PITCHES, packed % N_PITCHES
        shape = ops.shape(y_pred)
        logits = ops.reshape(y_pred, (*shape[:-1], self.groups, N_PITCHES))
        chosen = ops.sum(logits * ops.expand_dims(ops.one_hot(group, self.groups,
                                                              dtype=y_pred.dtype), -1), axis=-2)
        return ops.sparse_categorical_crossentropy(pitch, chosen, from_logits=True)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


def pitch_width(config: "ModelConfig") -> int:
    """Units of the pitch head: 128, or 128 per step group (``pitch_given_step``)."""
    return N_PITCHES * max(1, config.pitch_given_step)


# The config each model of this process was built from (infer_config's starting point).
_CONFIGS: "weakref.WeakKeyDictionary[keras.Model, ModelConfig]" = weakref.WeakKeyDictionary()


def _lstm_body(config: ModelConfig, notes, sequence_outputs: bool, style=None):
    """Input scaling (and the style vector) and the LSTM stack of a model of ``config``."""
    if config.pitch_input == "embedding":
        x = PitchEmbedding(config.pitch_embedding_dim, name="input_scaling")(notes)
    else:
        x = NoteScaling(name="input_scaling")(notes)
    if style is not None:
        x = StyleInput(len(config.styles) + 1, config.style_dim, "concat",
                       name=STYLE_LAYER)([x, style])
    n = len(config.lstm_units)
    for i, units in enumerate(config.lstm_units, start=1):
        top = i == n
        x = keras.layers.LSTM(
            units, return_sequences=(not top) or sequence_outputs, name=f"lstm_{i}"
        )(x)
        if not top and config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    return x


def _transformer_body(config: ModelConfig, notes, sequence_outputs: bool, style=None):
    """Note embedding (plus the style vector), the decoder blocks and a final norm of a
    transformer of ``config``."""
    bins = config.velocity_bins if config.velocity != "none" else 0
    x = NoteEmbedding(config.model_dim, bins, name="input_scaling")(notes)
    if style is not None:
        x = StyleInput(len(config.styles) + 1, config.model_dim, "add",
                       name=STYLE_LAYER)([x, style])
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, name="dropout_0")(x)
    for i in range(1, config.attention_layers + 1):
        x = AttentionBlock(config.model_dim, config.attention_heads, config.ff_dim,
                           config.dropout, config.attention_window, name=f"attention_{i}")(x)
    x = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name="final_norm")(x)
    if not sequence_outputs:
        x = LastPosition(name="last_position")(x)
    return x


def build_model(config: ModelConfig, sequence_outputs: bool | None = None) -> keras.Model:
    """The functional Keras model for ``config`` (uncompiled).

    Args:
        config: the architecture (``lstm_units``, ``dropout``, ``pitch_input``...).
        sequence_outputs: make the top LSTM return every position, so the heads predict a next
            note per position (default: ``config.targets == "all"``). The weights are the same
            either way, so a model trained one way can be rebuilt the other way with the same
            weights (:func:`with_sequence_outputs`).

    Returns:
        A model reading raw notes ``(batch, time, 3)`` of any length, with outputs
        ``{"pitch": (..., 128) logits, "step": (..., 1), "duration": (..., 1)}`` -- or
        ``(..., 128)`` logits over :data:`musicrnn.timing.TIME_VALUES` for step and duration when
        ``config.timing == "categorical"``. With ``config.velocity == "categorical"`` it reads
        ``(batch, time, 4)`` (the 4th column: MIDI velocity) and adds ``"velocity": (...,
        velocity_bins)`` logits over :func:`musicrnn.timing.velocity_classes`. Layer names are
        stable (``input_scaling``, ``lstm_1`` ..., ``dropout_1`` ..., ``pitch``, ``step``,
        ``duration``, ``velocity``) -- the sampler and the loaders rely on them. The heads compute
        in float32 even under a mixed-precision policy.

        A ``config.architecture == "transformer"`` model has the same input and heads; between
        them sit :class:`NoteEmbedding` (named ``input_scaling``), ``attention_1`` ...
        (:class:`AttentionBlock`) and ``final_norm``; without sequence outputs a
        :class:`LastPosition` before the heads keeps the last position.

        A conditioned model (``config.condition`` other than ``"none"``) has a second input,
        ``style``: one int label per window, 0 for "none" and ``i`` for ``config.styles[i -
        1]``; :class:`StyleInput` (named ``style_input``) reads its learned vector beside every
        note (LSTM) or adds it to every note's vector (transformer). Call it with ``[notes,
        style]`` (:func:`model_inputs` builds them).
    """
    config.validate()
    if sequence_outputs is None:
        sequence_outputs = config.targets == "all"
    notes = keras.Input(shape=(None, note_features(config)), name="notes")
    style = None
    if config.conditioned:
        if len(config.styles) < 2:
            raise MusicRNNError(
                f"a model conditioned on {config.condition} needs at least two styles, got "
                f"{list(config.styles)}; training reads them off the data (or set styles)")
        style = keras.Input(shape=(), dtype="int32", name="style")
    if config.architecture == "transformer":
        x = _transformer_body(config, notes, bool(sequence_outputs), style)
    else:
        x = _lstm_body(config, notes, bool(sequence_outputs), style)
    timing_units = timing_width(config.timing)
    outputs = {
        "pitch": keras.layers.Dense(pitch_width(config), name="pitch", dtype="float32")(x),
        "step": keras.layers.Dense(timing_units, name="step", dtype="float32")(x),
        "duration": keras.layers.Dense(timing_units, name="duration", dtype="float32")(x),
    }
    if config.velocity != "none":
        outputs[VELOCITY_HEAD] = keras.layers.Dense(config.velocity_bins, name=VELOCITY_HEAD,
                                                    dtype="float32")(x)
    model = keras.Model(notes if style is None else [notes, style], outputs,
                        name=f"music_rnn_{config.name}")
    _CONFIGS[model] = config
    return model


def note_features(config_or_model: "ModelConfig | keras.Model") -> int:
    """Columns per note a model reads: 3 (pitch, step, duration), or 4 with velocity.

    Takes a :class:`ModelConfig` or a model (read off its input; 3 when it has no readable one).
    """
    if isinstance(config_or_model, ModelConfig):
        return N_FEATURES_VELOCITY if config_or_model.velocity != "none" else N_FEATURES
    try:
        width = config_or_model.inputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return N_FEATURES
    return int(width) if width in (N_FEATURES, N_FEATURES_VELOCITY) else N_FEATURES


def heads_of(config: ModelConfig) -> tuple[str, ...]:
    """The output heads of a model of ``config``: :data:`HEADS`, plus ``velocity`` when it
    models velocity."""
    return HEADS + ((VELOCITY_HEAD,) if config.velocity != "none" else ())




def losses_for(config: ModelConfig) -> tuple[dict, dict]:
    """The loss and loss-weight dicts used to compile a model of ``config``.

    The velocity head (a velocity model's) is scored with the cross-entropy of the target's
    velocity class (:func:`musicrnn.timing.velocity_classes`: the targets are classes, as pitch's
    are pitches).
    """
    timing_loss = (mse_with_positive_pressure if config.timing == "regression"
                   else time_class_crossentropy)
    loss = {
        "pitch": (PitchGivenStepCrossentropy(config.pitch_given_step) if config.pitch_given_step
                  else keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
        "step": timing_loss,
        "duration": timing_loss,
    }
    weights = {
        "pitch": config.pitch_loss_weight,
        "step": config.step_loss_weight,
        "duration": config.duration_loss_weight,
    }
    if config.velocity != "none":  # targets: velocity classes (sequences.WindowDataset)
        loss[VELOCITY_HEAD] = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        weights[VELOCITY_HEAD] = config.velocity_loss_weight
    return loss, weights


def compile_model(model: keras.Model, config: ModelConfig, jit_compile: bool | str = "auto"):
    """Compile ``model`` with Adam and the weighted losses of ``config``; returns the model."""
    loss, weights = losses_for(config)
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate, clipnorm=config.clipnorm)
    model.compile(optimizer=optimizer, loss=loss, loss_weights=weights, jit_compile=jit_compile)
    _build_training_state(model, config.seq_length)
    return model


def _build_training_state(model: keras.Model, seq_length: int) -> None:
    """Make every variable of training (Adam's slots, the loss trackers) now, before the first
    step is traced.

    Keras 3 does this itself under a distribution strategy only. Otherwise the first traced step
    creates them and TensorFlow then traces that step a second time: seconds per model, the most
    for a transformer's many small variables (a toy v6's first step: 13.5 s, 7.0 s built
    first). Only shapes and dtypes matter, so one zero window of ``seq_length`` notes stands in
    for the data. A model of another layout, or a Keras without this method, traces as before.
    """
    build = getattr(model, "_symbolic_build", None)
    outputs = getattr(model, "output", None)
    conditioned = style_layer(model) is not None
    if (getattr(model, "_distribute_strategy", None) is not None or not callable(build)
            or not model.built or not isinstance(outputs, dict)
            or len(model.inputs) != 1 + conditioned):
        return
    _, length, features = model.inputs[0].shape
    length = length or seq_length
    notes = np.zeros((1, length, features), np.float32)
    sequence = len(next(iter(outputs.values())).shape) == 3  # a prediction after every note
    targets = {name: np.zeros((1, length) if sequence else (1,),
                              np.int32 if name in ("pitch", VELOCITY_HEAD) else np.float32)
               for name in outputs}
    inputs = (notes, np.zeros((1,), np.int32)) if conditioned else notes
    build(data_batch=(inputs, targets))


# ---------------------------------------------------------------------------------------------
# Parameter counts in closed form
# ---------------------------------------------------------------------------------------------


def lstm_param_count(units: int, input_dim: int) -> int:
    """Weights of one Keras LSTM layer: four gates, each ``units x (input_dim + units) + units``."""
    return 4 * (units * (input_dim + units) + units)


def dense_param_count(units: int, input_dim: int) -> int:
    """Weights of one Dense layer: a kernel and a bias."""
    return units * input_dim + units


def param_breakdown(config: ModelConfig, input_dim: int | None = None) -> list[dict[str, Any]]:
    """The parameter count of each layer of ``config``'s model, from the closed forms.

    Args:
        config: the architecture.
        input_dim: features per note reaching the first LSTM (default: 3 for the scalar pitch
            input, ``pitch_embedding_dim + 2`` for the embedding; one more with velocity).
            Passing another width shows what a different input would cost -- the notebook
            uses it to check the original notes' figures.

    Returns:
        One dict per layer with ``layer``, ``formula`` and ``params``.
    """
    if config.architecture == "transformer":
        return _transformer_breakdown(config)
    rows = []
    if input_dim is None:
        features = note_features(config)
        if config.pitch_input == "embedding":
            rows.append({"layer": "input_scaling (pitch embedding)",
                         "formula": f"{N_PITCHES} x {config.pitch_embedding_dim}",
                         "params": N_PITCHES * config.pitch_embedding_dim})
            input_dim = config.pitch_embedding_dim + features - 1
        else:
            input_dim = features
    width = input_dim
    for i, units in enumerate(config.lstm_units, start=1):
        rows.append({"layer": f"lstm_{i}",
                     "formula": f"4 x ({units} x ({width} + {units}) + {units})",
                     "params": lstm_param_count(units, width)})
        width = units
    return rows + _head_rows(config, width)


def _head_rows(config: ModelConfig, width: int) -> list[dict[str, Any]]:
    """The breakdown rows of the dense heads reading ``width`` numbers."""
    timing_units = timing_width(config.timing)
    heads = [("pitch", pitch_width(config)), ("step", timing_units), ("duration", timing_units)]
    if config.velocity != "none":
        heads.append((VELOCITY_HEAD, config.velocity_bins))
    return [{"layer": head, "formula": f"{units} x {width} + {units}",
             "params": dense_param_count(units, width)} for head, units in heads]


def _transformer_breakdown(config: ModelConfig) -> list[dict[str, Any]]:
    d, f = config.model_dim, config.ff_dim
    tables = [("pitch", N_PITCHES), ("step", TIME_BINS), ("duration", TIME_BINS)]
    if config.velocity != "none":
        tables.append(("velocity", config.velocity_bins))
    rows = [{"layer": "input_scaling (note embedding)",
             "formula": " + ".join(f"{n} x {d}" for _, n in tables),
             "params": sum(n * d for _, n in tables)}]
    block = 4 * dense_param_count(d, d) + dense_param_count(f, d) + dense_param_count(d, f) \
        + 2 * 2 * d
    for i in range(1, config.attention_layers + 1):
        rows.append({"layer": f"attention_{i}",
                     "formula": f"4 x ({d} x {d} + {d}) + ({d} x {f} + {f}) + ({f} x {d} + {d})"
                                f" + 2 x 2 x {d}",
                     "params": block})
    rows.append({"layer": "final_norm", "formula": f"2 x {d}", "params": 2 * d})
    return rows + _head_rows(config, d)


def count_params(config: ModelConfig) -> int:
    """Trainable parameters of a model built from ``config`` (counted by Keras)."""
    return int(build_model(config).count_params())


# ---------------------------------------------------------------------------------------------
# Rebuilding: infer a config from a model, copy weights, toggle per-position outputs
# ---------------------------------------------------------------------------------------------


def _lstm_layers(model: keras.Model) -> list[keras.layers.Layer]:
    found = []
    for layer in model.layers:
        m = re.fullmatch(r"lstm_(\d+)", layer.name)
        if m and isinstance(layer, keras.layers.LSTM):
            found.append((int(m.group(1)), layer))
    return [layer for _, layer in sorted(found, key=lambda t: t[0])]


def _attention_blocks(model: keras.Model) -> list[keras.layers.Layer]:
    found = []
    for layer in model.layers:
        m = re.fullmatch(r"attention_(\d+)", layer.name)
        if m and isinstance(layer, AttentionBlock):
            found.append((int(m.group(1)), layer))
    return [layer for _, layer in sorted(found, key=lambda t: t[0])]


def returns_sequences(model: keras.Model) -> bool | None:
    """Whether a model of this package predicts after every position (False: after the last;
    None: not this package's layer layout)."""
    lstms = _lstm_layers(model)
    if lstms:
        return bool(lstms[-1].return_sequences)
    if _attention_blocks(model):
        return not any(isinstance(layer, LastPosition) for layer in model.layers)
    return None


def infer_config(model: keras.Model, base: ModelConfig | None = None) -> ModelConfig:
    """The :class:`ModelConfig` a model of this package was built from, read off its layers.

    The architecture (LSTM sizes, dropout, pitch input, timing and velocity heads, per-position
    outputs, a fixed window length) comes from the model; everything else (loss weights,
    optimiser) from ``base``, by default the config the model was built from in this process
    (:func:`build_model`, :func:`load_original_checkpoint`, ...), else the preset named in the
    model's name (``music_rnn_<preset>``), else the defaults.

    Raises:
        MusicRNNError: when the model does not have this package's layer layout.
    """
    try:
        scaling = model.get_layer("input_scaling")
    except ValueError:
        scaling = None
    lstms = _lstm_layers(model)
    blocks = _attention_blocks(model)
    names = {layer.name for layer in model.layers}
    if scaling is None or not (lstms or blocks) or any(head not in names for head in HEADS):
        if model in _CONFIGS:  # e.g. a wrapped original model: nothing to read off its layers
            return _CONFIGS[model]
        raise MusicRNNError(
            f"model {model.name!r} does not have this package's layers (input_scaling, lstm_1..n, "
            "pitch/step/duration); load files with musicrnn.model.load_model, which converts the "
            "original research models"
        )
    if base is None:
        base = _CONFIGS.get(model)
    if base is None:
        preset = model.name.removeprefix("music_rnn_")
        base = PRESETS[preset] if preset in PRESETS else ModelConfig(name=preset or "custom")
    if blocks:
        changes: dict[str, Any] = {
            "architecture": "transformer", "attention_layers": len(blocks),
            "model_dim": blocks[0].model_dim, "attention_heads": blocks[0].num_heads,
            "ff_dim": blocks[0].ff_dim, "dropout": blocks[0].dropout, "targets": "all",
            "attention_window": blocks[0].window,
        }
    else:
        changes = {
            "architecture": "lstm", "lstm_units": [layer.units for layer in lstms],
            "targets": "all" if lstms[-1].return_sequences else "last",
        }
    step_units = int(model.get_layer("step").units)
    if step_units not in (1, TIME_BINS):
        raise MusicRNNError(
            f"model {model.name!r} has a step head of {step_units} units; this package's models "
            f"have 1 (regression) or {TIME_BINS} (categorical timing)")
    changes["timing"] = "regression" if step_units == 1 else "categorical"
    pitch_units = int(model.get_layer("pitch").units)
    changes["pitch_given_step"] = pitch_units // N_PITCHES if pitch_units > N_PITCHES else 0
    if VELOCITY_HEAD in names:
        changes.update(velocity="categorical",
                       velocity_bins=int(model.get_layer(VELOCITY_HEAD).units))
    else:
        changes["velocity"] = "none"
    changes.update(_style_changes(model, base))
    if isinstance(scaling, PitchEmbedding):
        changes.update(pitch_input="embedding", pitch_embedding_dim=scaling.output_dim)
    elif not blocks:
        changes["pitch_input"] = "scalar"
    if not blocks:
        dropouts = [la for la in model.layers if isinstance(la, keras.layers.Dropout)]
        changes["dropout"] = float(dropouts[0].rate) if dropouts else 0.0
    time_steps = model.inputs[0].shape[1] if model.inputs else None
    if time_steps:
        changes["seq_length"] = int(time_steps)
    return base.replace(**changes)


def _style_changes(model: keras.Model, base: ModelConfig) -> dict[str, Any]:
    """The conditioning fields read off a model: none without a style input; else the number
    of labels from its table (names from ``base`` when it has as many, else ``style_1`` ...)."""
    layer = style_layer(model)
    if layer is None:
        return {"condition": "none", "styles": []}
    count = layer.num_styles - 1
    styles = list(base.styles) if len(base.styles) == count else [
        f"style_{i}" for i in range(1, count + 1)]
    changes: dict[str, Any] = {
        "condition": base.condition if base.condition != "none" else "dataset",
        "styles": styles, "max_styles": max(base.max_styles, count)}
    if layer.mode == "concat":
        changes["style_dim"] = layer.dim
    return changes


def style_layer(model: Any) -> "StyleInput | None":
    """The :class:`StyleInput` layer of a conditioned model, None for any other model."""
    try:
        layer = model.get_layer(STYLE_LAYER)
    except (ValueError, AttributeError):
        return None
    return layer if isinstance(layer, StyleInput) else None


def model_inputs(model: Any, notes: Any, style: Any = None) -> Any:
    """What to call ``model`` with on ``notes`` ``(batch, time, features)``: the notes alone,
    or ``[notes, style]`` for a conditioned model, ``style`` one int label per row (an int for
    every row; default 0, "none")."""
    if style_layer(model) is None:
        return notes
    rows = int(np.shape(notes)[0])
    labels = np.broadcast_to(np.asarray(0 if style is None else style, np.int32), (rows,))
    return [notes, np.ascontiguousarray(labels)]


def transfer_weights(source: keras.Model, target: keras.Model) -> keras.Model:
    """Copy the weights of every layer of ``target`` from the layer of the same name in ``source``.

    Returns:
        ``target``.

    Raises:
        MusicRNNError: when a layer with weights is missing in ``source`` or its shapes differ.
    """
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            src = source.get_layer(layer.name)
        except ValueError:
            raise MusicRNNError(
                f"cannot copy weights: {source.name!r} has no layer {layer.name!r}"
            ) from None
        values = src.get_weights()
        shapes = [tuple(w.shape) for w in layer.weights]
        if [tuple(v.shape) for v in values] != shapes:
            raise MusicRNNError(
                f"cannot copy weights of layer {layer.name!r}: shapes "
                f"{[tuple(v.shape) for v in values]} in {source.name!r}, "
                f"{shapes} in {target.name!r}"
            )
        layer.set_weights(values)
    return target


def with_sequence_outputs(
    model: keras.Model, sequence_outputs: bool = True, config: ModelConfig | None = None
) -> keras.Model:
    """``model`` rebuilt to predict at every position (or only the last), with the same weights.

    A ``targets="last"`` model predicts only after its whole window; rebuilt with
    ``sequence_outputs=True`` it gives the next-note prediction after every prefix in one pass
    (for held-out likelihood), and rebuilt the other way a ``targets="all"`` model gives only the
    last. The model returned is uncompiled.

    Args:
        model: a model of this package (from :func:`build_model` or :func:`load_model`).
        sequence_outputs: whether the heads see every position.
        config: the model's config when known (default: :func:`infer_config`).

    Returns:
        ``model`` itself when it already has the requested outputs, else a new model.
    """
    config = config or infer_config(model)
    if returns_sequences(model) == bool(sequence_outputs):
        return model
    return transfer_weights(model, build_model(config, sequence_outputs=sequence_outputs))


def sliding_window_model(model: keras.Model, config: ModelConfig | None = None
                         ) -> keras.Model | None:
    """A transformer as its sampler plays a piece longer than its window: every position
    attends to the last ``seq_length`` notes only (``attention_window``), with the same weights
    -- exactly the sampler's sliding cache. Returns the model itself when it already has an
    attention window, and None for a model without attention blocks (an LSTM carries its state
    instead).

    Over a whole piece, a transformer's full attention would reach hundreds of notes further
    back than anything it was trained on; scoring it that way would measure a model nobody
    plays.
    """
    if not _attention_blocks(model):
        return None
    config = config or infer_config(model)
    if config.attention_window:
        return model
    banded = config.replace(attention_window=config.seq_length)
    return transfer_weights(model, build_model(banded, sequence_outputs=True))


CARRIED_CHUNK = 512  # positions per forward pass when a sliding-window model reads a piece


def receptive_field(model: Any) -> int | None:
    """How many notes before a position can change its outputs (None: all of them, as for an
    LSTM's carried state or full attention)."""
    blocks = _attention_blocks(model) if hasattr(model, "layers") else []
    if not blocks or not all(block.window for block in blocks):
        return None
    return sum(block.window - 1 for block in blocks)


def predict_in_chunks(predict: Any, x: np.ndarray, reach: int | None,
                      chunk: int = CARRIED_CHUNK) -> dict[str, np.ndarray]:
    """``predict(part)`` (a dict of ``(batch, time, ...)`` arrays) at every position of ``x``:
    one call, or (with a finite ``reach``, a sliding-window transformer's
    :func:`receptive_field`) calls of ``chunk`` positions, each fed the ``reach`` notes before
    it -- the same numbers as one call, in memory that does not grow with the square of the
    piece's length."""
    if reach is None or x.shape[1] <= chunk + reach:
        return predict(x)
    parts: dict[str, list[np.ndarray]] = {}
    for begin in range(0, x.shape[1], chunk):
        first = max(0, begin - reach)
        out = predict(x[:, first:begin + chunk])
        for key, value in out.items():
            parts.setdefault(key, []).append(np.asarray(value)[:, begin - first:])
    return {key: np.concatenate(values, axis=1) for key, values in parts.items()}


# ---------------------------------------------------------------------------------------------
# Saving and loading models
# ---------------------------------------------------------------------------------------------


def save_model(model: keras.Model, path: str | Path) -> Path:
    """Save ``model`` as a ``.keras`` file atomically (a temporary file beside it, then a rename).

    A crash while saving leaves the previous file intact; a reader never sees half a file.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise MusicRNNError(f"save models as a .keras file, got {path.name!r}")
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not getattr(optimizer, "built", True):
        # A compiled model that never trained: give its optimizer its (zero) state, so that the
        # saved state matches what loading builds (Keras skips a mismatched state with a warning).
        optimizer.build(model.trainable_variables)
    with atomic_path(path) as tmp:
        model.save(tmp, overwrite=True)
    return path


def _keras_archive_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` inside a ``.keras`` zip archive, with clear errors."""
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise MusicRNNError(f"{path} is a zip file but not a Keras model (no config.json)")
            return json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MusicRNNError(f"{path} is not a readable .keras model ({exc})") from exc


def _is_ours(model_config: dict[str, Any]) -> bool:
    layers = model_config.get("config", {}).get("layers", [])
    return any(
        str(layer.get("registered_name") or "").startswith("musicrnn>")
        and layer.get("config", {}).get("name") == "input_scaling"
        for layer in layers
    )


def load_model(path: str | Path, compile: bool = True) -> keras.Model:
    """Load a saved model, always in the raw-input convention (raw pitch 0-127, step, duration).

    Reads:

    * this package's ``.keras`` files (as saved by :func:`save_model`);
    * a ``music_rnn_model.keras`` saved by the original research code -- a functional model fed
      ``(pitch/128, step, duration)`` windows of a fixed length and compiled with a plain,
      unregistered ``mse_with_positive_pressure``. It is recognised by having no ``input_scaling``
      layer, and rebuilt as this package's model (any window length, scaling inside) with the
      same weights; its loss weights and learning rate are kept when it was compiled;
    * the same saved in Keras's legacy full-model HDF5 format (``.h5``).

    Args:
        path: the file.
        compile: compile the model for training and evaluation (our files: as saved; the
            original's: with this package's losses and the original's loss weights).

    Raises:
        MusicRNNError: missing file, not a model, or an architecture that cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise MusicRNNError(f"no model file at {path}; train one first (`musicrnn train`) or "
                            "check the path")
    custom = {ORIGINAL_LOSS_NAME: mse_with_positive_pressure}
    if zipfile.is_zipfile(path):
        archive_config = _keras_archive_config(path)
        if _is_ours(archive_config):
            try:
                return keras.saving.load_model(path, compile=compile)
            except Exception as exc:  # Keras raises ValueError/TypeError/KeyError/OSError alike
                raise MusicRNNError(f"could not load the model {path}: {exc}") from exc
        compile_config = archive_config.get("compile_config") or {}
    else:
        import h5py

        if not h5py.is_hdf5(path):
            raise MusicRNNError(
                f"{path} is neither a .keras model nor an HDF5 file; pass a music_rnn_model.keras"
            )
        with h5py.File(path, "r") as handle:
            if "model_config" not in handle.attrs:
                raise MusicRNNError(
                    f"{path} holds weights only; load it with "
                    "musicrnn.model.load_original_checkpoint"
                )
            raw = handle.attrs.get("training_config")
        compile_config = {}
        if raw is not None:
            try:
                compile_config = json.loads(raw).get("compile_config") or json.loads(raw)
            except (TypeError, ValueError):
                compile_config = {}
    try:
        original = keras.saving.load_model(path, compile=False, custom_objects=custom)
    except Exception as exc:
        raise MusicRNNError(f"could not load the model {path}: {exc}") from exc
    return from_original_model(original, compile_config=compile_config, compile=compile)


def _original_layout(original: keras.Model) -> tuple[list, list, dict] | None:
    """The LSTMs, dropouts and heads of an original model, or None when it is not that layout."""
    lstms, dropouts, heads = [], [], {}
    for layer in original.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.LSTM):
            lstms.append(layer)
        elif isinstance(layer, keras.layers.Dropout):
            dropouts.append(layer)
        elif isinstance(layer, keras.layers.Dense) and layer.name in HEADS:
            heads[layer.name] = layer
        else:
            return None
    if not lstms or set(heads) != set(HEADS):
        return None
    standard = all(
        la.activation is keras.activations.tanh
        and la.recurrent_activation is keras.activations.sigmoid
        and la.use_bias and not la.go_backwards and not la.return_state
        for la in lstms
    ) and all(la.return_sequences for la in lstms[:-1])
    sizes_ok = heads["pitch"].units == N_PITCHES and heads["step"].units == 1 and (
        heads["duration"].units == 1
    ) and all(h.activation is keras.activations.linear for h in heads.values())
    chained = all(
        lstms[i + 1].input.shape[-1] == lstms[i].units for i in range(len(lstms) - 1)
    )
    return (lstms, dropouts, heads) if standard and sizes_ok and chained else None


def from_original_model(
    original: keras.Model, compile_config: dict[str, Any] | None = None, compile: bool = True
) -> keras.Model:
    """Turn a model of the original research code (fed pitch/128) into a raw-input model.

    The original's layout (LSTMs, optional dropout, Dense heads ``pitch``/``step``/``duration``)
    is rebuilt with :func:`build_model` and given the same weights, so the result has this
    package's layer names and reads windows of any length. A model with other layers is wrapped
    instead: raw notes -> :class:`NoteScaling` -> the original model (fixed window length).

    Args:
        original: the loaded original model.
        compile_config: the saved compile settings (loss weights, optimiser) when known.
        compile: compile the result with this package's losses.
    """
    inputs = original.inputs
    if len(inputs) != 1 or len(inputs[0].shape) != 3 or inputs[0].shape[-1] != N_FEATURES:
        raise MusicRNNError(
            f"model {original.name!r} takes inputs {[tuple(i.shape) for i in inputs]}; "
            "expected one (batch, time, 3) input of (pitch/128, step, duration)"
        )
    seq_length = inputs[0].shape[1]
    layout = _original_layout(original)
    changes: dict[str, Any] = {"name": "original"}
    if seq_length:
        changes["seq_length"] = int(seq_length)
    changes.update(_settings_from_compile_config(compile_config or {}))
    if layout is None:  # some other architecture: keep it whole, scale in front of it
        notes = keras.Input(shape=(seq_length, N_FEATURES), name="notes")
        outputs = original(NoteScaling(name="input_scaling")(notes))
        if not isinstance(outputs, dict) or set(outputs) != set(HEADS):
            raise MusicRNNError(
                f"model {original.name!r} does not predict the heads {HEADS}; it is not a "
                "music RNN model"
            )
        model = keras.Model(notes, outputs, name="music_rnn_original_wrapped")
        changes["extra"] = {
            "wrapped_original": "layers other than LSTMs: lstm_units is a placeholder"}
        config = get_preset("baseline").replace(**changes)
        _CONFIGS[model] = config
        if compile:
            compile_model(model, config)
        return model
    lstms, dropouts, heads = layout
    changes.update(
        lstm_units=[la.units for la in lstms],
        dropout=float(dropouts[0].rate) if dropouts and len(lstms) > 1 else 0.0,
        targets="all" if lstms[-1].return_sequences else "last",
    )
    base = "baseline" if len(lstms) == 1 and changes.get("seq_length") == 25 else (
        "v1" if len(lstms) == 1 else "v2"
    )
    config = get_preset(base).replace(**changes)
    model = build_model(config)
    for i, layer in enumerate(lstms, start=1):
        model.get_layer(f"lstm_{i}").set_weights(layer.get_weights())
    for head in HEADS:
        model.get_layer(head).set_weights(heads[head].get_weights())
    if compile:
        compile_model(model, config)
    return model


def _settings_from_compile_config(compile_config: dict[str, Any]) -> dict[str, Any]:
    """Loss weights and Adam settings of a saved compile config (only what is readable)."""
    found: dict[str, Any] = {}
    weights = compile_config.get("loss_weights")
    if isinstance(weights, dict):
        for head in HEADS:
            value = weights.get(head)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
                found[f"{head}_loss_weight"] = float(value)
    optimizer = compile_config.get("optimizer") or compile_config.get("optimizer_config")
    opt_config = optimizer.get("config", {}) if isinstance(optimizer, dict) else {}
    lr = opt_config.get("learning_rate")
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0:
        found["learning_rate"] = float(f"{lr:.6g}")  # 0.004999999888 -> 0.005 (float32 noise)
    clip = opt_config.get("clipnorm")
    if isinstance(clip, (int, float)) and not isinstance(clip, bool) and clip > 0:
        found["clipnorm"] = float(clip)
    return found


# ---------------------------------------------------------------------------------------------
# The original research code's weights-only checkpoints and seed sequence
# ---------------------------------------------------------------------------------------------


def _h5_layer_vars(group) -> list[np.ndarray] | None:
    """The arrays under ``<layer>/vars`` (or ``<layer>/cell/vars``), in index order."""
    for sub in ("vars", "cell/vars"):
        vars_group = group.get(sub)
        if vars_group is not None and len(vars_group):
            keys = sorted(vars_group.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
            return [np.asarray(vars_group[k]) for k in keys]
    return None


def _read_original_checkpoint(handle, path: Path) -> tuple[list[list[np.ndarray]], dict]:
    """LSTM weight lists (bottom to top) and head weights from an original ``.weights.h5``."""
    layers = handle.get("layers")
    if layers is None or not hasattr(layers, "keys"):
        raise MusicRNNError(
            f"{path} is an HDF5 file but not a Keras 3 weights checkpoint (no 'layers' group)"
        )

    def order(name: str) -> int:
        m = re.search(r"_(\d+)$", name)
        return int(m.group(1)) if m else 0

    lstm_names = sorted((k for k in layers if re.fullmatch(r"lstm(_\d+)?", k)), key=order)
    dense_names = sorted((k for k in layers if re.fullmatch(r"dense(_\d+)?", k)), key=order)
    others = [
        k for k in layers
        if k not in lstm_names and k not in dense_names and _h5_layer_vars(layers[k])
    ]
    if others or not lstm_names or len(dense_names) != len(HEADS):
        raise MusicRNNError(
            f"{path} holds the layers {sorted(layers.keys())}; the original architecture has "
            "LSTM layers and three Dense heads (pitch, step, duration) -- this checkpoint is of "
            "another model"
        )
    lstm_weights = []
    width = N_FEATURES
    for name in lstm_names:
        values = _h5_layer_vars(layers[name])
        if values is None or len(values) != 3:
            raise MusicRNNError(f"{path}: layer {name!r} does not hold LSTM weights")
        kernel, recurrent, bias = values
        units = recurrent.shape[0]
        if (kernel.shape != (width, 4 * units) or recurrent.shape != (units, 4 * units)
                or bias.shape != (4 * units,)):
            raise MusicRNNError(
                f"{path}: LSTM {name!r} has shapes {kernel.shape}, {recurrent.shape}, "
                f"{bias.shape}; expected ({width}, 4u), (u, 4u), (4u,) for an input of "
                f"{width} features"
            )
        lstm_weights.append(values)
        width = units
    heads: dict[str, list[np.ndarray]] = {}
    for position, name in enumerate(dense_names):
        group = layers[name]
        label = None
        if "vars" in group:
            label = group["vars"].attrs.get("name")
            label = label.decode() if isinstance(label, bytes) else label
        if label not in HEADS:  # no names stored: Keras's order of the sorted dict outputs
            label = ORIGINAL_HEAD_ORDER[position]
        values = _h5_layer_vars(group)
        expected = N_PITCHES if label == "pitch" else 1
        if (values is None or len(values) != 2 or values[0].shape != (width, expected)
                or values[1].shape != (expected,)):
            raise MusicRNNError(
                f"{path}: Dense {name!r} ({label}) has shapes "
                f"{[v.shape for v in values or []]}; expected ({width}, {expected}), ({expected},)"
            )
        heads[label] = values
    if set(heads) != set(HEADS):
        raise MusicRNNError(f"{path}: the Dense heads are {sorted(heads)}, expected {HEADS}")
    return lstm_weights, heads


def load_original_checkpoint(
    weights_path: str | Path, seq_length: int | None = None, compile: bool = True
) -> keras.Model:
    """Load a weights-only checkpoint of the original research code as a raw-input model.

    The original saved ``ckpt_{epoch}.weights.h5`` files of a functional model fed
    ``(pitch/128, step, duration)``: one or more LSTMs (``layers/lstm/cell/vars/{0,1,2}``, ...)
    and three Dense heads stored as ``dense``, ``dense_1``, ``dense_2`` in the order of the sorted
    output names (duration, pitch, step; the stored layer names are used when present). The
    architecture is read from the file's shapes, so baseline (LSTM(128)) and v2 (LSTM(256) ->
    LSTM(128)) checkpoints both load.

    Args:
        weights_path: the ``.weights.h5`` file.
        seq_length: the window length it was trained with, recorded in the config the model is
            built from (it reads windows of any length). Default: the length of a
            ``seed_sequence.npy`` beside the checkpoint when there is one, else the preset's.
        compile: compile with this package's losses (the closest preset's loss weights).

    Raises:
        MusicRNNError: a missing file, a file that is not HDF5, or a checkpoint of another model.
    """
    import h5py

    path = Path(weights_path)
    if not path.is_file():
        raise MusicRNNError(f"no checkpoint at {path}; pass the path of a ckpt_N.weights.h5 file")
    if not h5py.is_hdf5(path):
        hint = "; it is a whole model: load it with musicrnn.model.load_model" if (
            zipfile.is_zipfile(path)) else ""
        raise MusicRNNError(
            f"{path} is not an HDF5 weights file; expected a Keras 3 ckpt_N.weights.h5{hint}"
        )
    try:
        with h5py.File(path, "r") as handle:
            lstm_weights, heads = _read_original_checkpoint(handle, path)
    except OSError as exc:  # truncated or corrupt HDF5
        raise MusicRNNError(f"{path} is damaged and cannot be read ({exc})") from exc
    if seq_length is None:
        seed_path = path.parent / SEED_FILE
        if seed_path.is_file():
            try:
                seq_length = len(load_seed_sequence(seed_path))
            except MusicRNNError:
                seq_length = None
    units = [w[1].shape[0] for w in lstm_weights]
    base = "v2" if len(units) > 1 else ("baseline" if seq_length in (None, 25) else "v1")
    changes: dict[str, Any] = {"name": "original", "lstm_units": units}
    if seq_length is not None:
        changes["seq_length"] = int(seq_length)
    config = get_preset(base).replace(**changes)
    model = build_model(config)
    for i, values in enumerate(lstm_weights, start=1):
        model.get_layer(f"lstm_{i}").set_weights(values)
    for head, values in heads.items():
        model.get_layer(head).set_weights(values)
    if compile:
        compile_model(model, config)
    return model


def load_seed_sequence(path: str | Path) -> np.ndarray:
    """Read a ``seed_sequence.npy`` ((n, 3) raw pitch, step, duration; (n, 4) with velocity, as a
    velocity model's run writes it) without unpickling.

    Returns:
        A float32 ``(n, 3)`` or ``(n, 4)`` array.

    Raises:
        MusicRNNError: a missing, unreadable or malformed file.
    """
    return read_notes_npy(path)


# ---------------------------------------------------------------------------------------------
# Run directories
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One trained model and what belongs with it, as loaded from a run directory."""

    run_dir: Path  # the folder
    model: keras.Model  # raw-input model (see build_model)
    config: ModelConfig  # how it was built and trained
    seed_sequence: np.ndarray  # (n, 3) float32 raw notes, (n, 4) with velocity for a velocity
    #                            model: the default primer for generation
    info: dict[str, Any]  # everything in config.json ("model", "dataset", "max_files", ...)

    @property
    def history_path(self) -> Path:
        """``history.csv`` (may not exist)."""
        return self.run_dir / HISTORY_FILE

    def history(self):
        """The training history as a pandas DataFrame, or None when there is none."""
        import pandas as pd

        return pd.read_csv(self.history_path) if self.history_path.is_file() else None

    @property
    def checkpoints(self) -> list[Path]:
        """The per-epoch weight checkpoints, oldest first."""
        folder = self.run_dir / CHECKPOINTS_DIR
        return sorted(folder.glob("*.weights.h5"), key=lambda p: p.stat().st_mtime) if (
            folder.is_dir()) else []


def write_run_files(
    run_dir: str | Path,
    model: keras.Model,
    config: ModelConfig,
    seed_sequence: Any,
    info: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write a run directory's model, ``config.json`` and ``seed_sequence.npy``, each atomically.

    ``config.json`` is ``{"model": config.to_dict(), **info}`` (``info``: dataset, max_files,
    anything JSON-able). The model goes last, so a folder holding a model holds the rest. The
    seed sequence is stored with the columns the model reads
    (:func:`musicrnn.sequences.match_features`): 4 with velocity for a velocity model, 3
    otherwise.

    Returns:
        ``{"model": path, "config": path, "seed_sequence": path}``.

    Raises:
        MusicRNNError: a seed sequence that is not ``(n, 3)`` or ``(n, 4)`` raw notes, ``info``
            with a ``"model"`` key, or a model whose layers differ from ``config``.
    """
    run_dir = Path(run_dir)
    config.validate()
    info = dict(info or {})
    if "model" in info:
        raise MusicRNNError("info must not have a 'model' key: config.json keeps the config there")
    seed = match_features(validate_notes(seed_sequence, what="seed sequence"),
                          note_features(config))
    try:
        built = infer_config(model, base=config)
    except MusicRNNError:
        built = None  # a wrapped original: nothing to compare
    if built is not None and not built.same_architecture(config):
        raise MusicRNNError(
            f"the model's layers (lstm_units={list(built.lstm_units)}, pitch_input="
            f"{built.pitch_input}, velocity={built.velocity}) differ from the config "
            f"({list(config.lstm_units)}, {config.pitch_input}, {config.velocity})"
        )
    info.setdefault("keras_version", keras.__version__)
    info.setdefault("backend", keras.backend.backend())
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"model": run_dir / MODEL_FILE, "config": run_dir / CONFIG_FILE,
             "seed_sequence": run_dir / SEED_FILE}
    with atomic_path(paths["seed_sequence"]) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, seed.astype(np.float64), allow_pickle=False)
    text = json.dumps({"model": config.to_dict(), **info}, indent=2, sort_keys=True, default=str)
    atomic_write_text(paths["config"], text + "\n")
    save_model(model, paths["model"])
    return paths


def load_run(run_dir: str | Path, compile: bool = True) -> Run:
    """Load a run directory written by training (or the original code's two files).

    Needs ``music_rnn_model.keras``, ``config.json`` and ``seed_sequence.npy``. A folder from the
    original research code, which has no ``config.json``, loads too: its config is read off the
    converted model.

    Raises:
        MusicRNNError: a missing folder, missing files (all of them named), an unreadable
            ``config.json``, or a model that differs from what ``config.json`` describes.
    """
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise MusicRNNError(
            f"no run directory at {run_dir}; train one with `musicrnn train --run-dir {run_dir}`"
        )
    required = (MODEL_FILE, CONFIG_FILE, SEED_FILE)
    missing = [name for name in required if not (run_dir / name).is_file()]
    original_folder = missing == [CONFIG_FILE] and not _holds_our_model(run_dir / MODEL_FILE)
    if missing and not original_folder:
        present = sorted(p.name for p in run_dir.iterdir())
        raise MusicRNNError(
            f"run directory {run_dir} lacks {', '.join(missing)} (it holds: "
            f"{', '.join(present) or 'nothing'}); train a model into it first "
            f"(`musicrnn train --run-dir {run_dir}`)"
        )
    model = load_model(run_dir / MODEL_FILE, compile=compile)
    seed = load_seed_sequence(run_dir / SEED_FILE)
    if original_folder:
        config = infer_config(model)
        info: dict[str, Any] = {"model": config.to_dict(), "source": "original research code"}
        return Run(run_dir=run_dir, model=model, config=config, seed_sequence=seed, info=info)
    try:
        info = json.loads((run_dir / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MusicRNNError(f"{run_dir / CONFIG_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(info, dict) or not isinstance(info.get("model"), dict):
        raise MusicRNNError(
            f"{run_dir / CONFIG_FILE} has no 'model' section; it was not written by musicrnn"
        )
    config = ModelConfig.from_dict(info["model"])
    try:
        built = infer_config(model, base=config)
    except MusicRNNError:
        built = config  # a wrapped original model: no layers of ours to compare
    if not built.same_architecture(config):
        raise MusicRNNError(
            f"{run_dir}: {MODEL_FILE} has lstm_units={list(built.lstm_units)}, pitch_input="
            f"{built.pitch_input}, velocity={built.velocity}, but {CONFIG_FILE} says lstm_units="
            f"{list(config.lstm_units)}, pitch_input={config.pitch_input}, velocity="
            f"{config.velocity}; the folder mixes two runs"
        )
    # what infer_config reads for this model from now on: its layers cannot say how long a window
    # it was trained on (a transformer's sliding window is that long)
    _CONFIGS[model] = config
    return Run(run_dir=run_dir, model=model, config=config, seed_sequence=seed, info=info)


def _holds_our_model(path: Path) -> bool:
    """Whether ``path`` is a ``.keras`` file saved by this package (False when unreadable)."""
    try:
        return zipfile.is_zipfile(path) and _is_ours(_keras_archive_config(path))
    except MusicRNNError:
        return False

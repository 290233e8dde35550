"""The network: a commented config, the named presets of the project's history, and the model.

Every model reads raw note features -- a ``(batch, time, 3)`` float tensor of (pitch 0-127, step
seconds, duration seconds) -- and does its own input scaling inside, so callers (training,
the sampler, live play) always feed notes exactly as they come out of a note table and can never
feed them back scaled the wrong way. It predicts three heads: ``pitch`` (128 logits), ``step`` and
``duration`` (one value each), for the last position (``targets="last"``, the original) or for
every position (``targets="all"``).

The layers are written with ``keras.ops`` only, so the same code runs on Keras's TensorFlow, JAX
and PyTorch backends.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import keras
from keras import ops

from .errors import MusicRNNError

N_PITCHES = 128
HEADS = ("pitch", "step", "duration")


@dataclass
class ModelConfig:
    """Everything that defines a model and how it is trained. Presets are named instances."""

    name: str = "v2"  # preset name this config started from
    # -- architecture ---------------------------------------------------------------------------
    lstm_units: tuple[int, ...] = (256, 128)  # one LSTM layer per entry, bottom to top
    dropout: float = 0.3  # dropout between stacked LSTM layers (none after the top one)
    pitch_input: str = "scalar"  # "scalar": pitch/128 as one number (original); "embedding"
    pitch_embedding_dim: int = 32  # size of the learned pitch vector when pitch_input="embedding"
    seq_length: int = 50  # notes of context per training window
    targets: str = "all"  # "last": predict the note after the window; "all": after every position
    # -- loss -----------------------------------------------------------------------------------
    pitch_loss_weight: float = 0.5  # weight of the pitch cross-entropy in the total loss
    step_loss_weight: float = 1.0  # weight of the step MSE (with positive pressure)
    duration_loss_weight: float = 1.0  # weight of the duration MSE (with positive pressure)
    # -- optimisation ---------------------------------------------------------------------------
    learning_rate: float = 0.001  # Adam learning rate
    batch_size: int = 64  # windows per batch
    epochs: int = 50  # upper bound; early stopping usually ends training sooner
    clipnorm: float | None = 1.0  # gradient clipping by norm (None: off)
    early_stopping_patience: int = 5  # evaluations without validation improvement before stopping
    reduce_lr_patience: int = 2  # evaluations without improvement before the learning rate halves
    window_shift: int = 1  # notes between the starts of consecutive training windows
    # -- augmentation (training data only) ------------------------------------------------------
    transpose: int = 0  # random transposition in [-transpose, +transpose] semitones per window
    time_stretch: float = 0.0  # random tempo factor in [1 - time_stretch, 1 + time_stretch]
    # -- reproducibility ------------------------------------------------------------------------
    seed: int = 42  # one seed for every source of randomness
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried into config.json

    def __post_init__(self) -> None:
        self.lstm_units = tuple(int(u) for u in self.lstm_units)
        self.validate()

    def validate(self) -> "ModelConfig":
        """Raise :class:`MusicRNNError` naming the first impossible value."""
        problems = []
        if not self.lstm_units or any(u < 1 for u in self.lstm_units):
            problems.append(f"lstm_units must be positive integers, got {self.lstm_units}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pitch_input not in ("scalar", "embedding"):
            problems.append(f"pitch_input must be 'scalar' or 'embedding', got {self.pitch_input!r}")
        if self.pitch_embedding_dim < 1:
            problems.append(f"pitch_embedding_dim must be >= 1, got {self.pitch_embedding_dim}")
        if self.seq_length < 1:
            problems.append(f"seq_length must be >= 1, got {self.seq_length}")
        if self.targets not in ("last", "all"):
            problems.append(f"targets must be 'last' or 'all', got {self.targets!r}")
        for name in ("pitch_loss_weight", "step_loss_weight", "duration_loss_weight"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size < 1 or self.epochs < 1 or self.window_shift < 1:
            problems.append("batch_size, epochs and window_shift must be >= 1")
        if not 0 <= self.transpose <= 24:
            problems.append(f"transpose must be in [0, 24] semitones, got {self.transpose}")
        if not 0.0 <= self.time_stretch < 1.0:
            problems.append(f"time_stretch must be in [0, 1), got {self.time_stretch}")
        if problems:
            raise MusicRNNError("invalid model config: " + "; ".join(problems))
        return self

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lstm_units"] = list(self.lstm_units)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise MusicRNNError(
                f"unknown config keys {unknown}; known keys are {sorted(known)}"
            )
        return cls(**d)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated, unknown keys refused)."""
        return ModelConfig.from_dict({**self.to_dict(), **changes})


PRESETS: dict[str, ModelConfig] = {
    # The original tutorial-sized model.
    "baseline": ModelConfig(
        name="baseline", lstm_units=(128,), dropout=0.0, seq_length=25, targets="last",
        pitch_loss_weight=0.05, learning_rate=0.005, batch_size=64, clipnorm=None,
    ),
    # The same with a longer context and a stronger pitch loss.
    "v1": ModelConfig(
        name="v1", lstm_units=(128,), dropout=0.0, seq_length=50, targets="last",
        pitch_loss_weight=0.5, learning_rate=0.005, batch_size=64, clipnorm=None,
    ),
    # The original's last design: two stacked LSTMs with dropout, trained as it was.
    "v2": ModelConfig(
        name="v2", lstm_units=(256, 128), dropout=0.3, seq_length=50, targets="last",
        pitch_loss_weight=0.5, learning_rate=0.001, batch_size=64, clipnorm=None,
    ),
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset, with ``overrides`` applied. Unknown names get a clear error."""
    if name not in PRESETS:
        raise MusicRNNError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name].replace()


# ---------------------------------------------------------------------------------------------
# Layers and losses (registered, so a saved model loads in a fresh process with no custom code)
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="musicrnn")
class NoteScaling(keras.layers.Layer):
    """Raw (pitch, step, duration) -> (pitch / 128, step, duration): the original's input scale."""

    def call(self, notes):
        scale = ops.convert_to_tensor([1.0 / N_PITCHES, 1.0, 1.0], dtype=notes.dtype)
        return notes * scale

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="musicrnn")
class PitchEmbedding(keras.layers.Layer):
    """Raw (pitch, step, duration) -> [embedding(pitch), step, duration].

    The scalar input makes the network decode pitch identity from one number; a learned vector
    per pitch gives each pitch its own direction from the start.
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
        return ops.concatenate([self.embedding(pitch), notes[..., 1:]], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim + 2)

    def get_config(self):
        return {**super().get_config(), "output_dim": self.output_dim}


@keras.saving.register_keras_serializable(package="musicrnn")
def mse_with_positive_pressure(y_true, y_pred):
    """Mean squared error plus 10x any negative prediction (the tutorial's loss for step/duration).

    Works for ``(batch, 1)`` and ``(batch, time, 1)`` predictions alike.
    """
    y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), ops.shape(y_pred))
    mse = (y_true - y_pred) ** 2
    positive_pressure = 10.0 * ops.maximum(-y_pred, 0.0)
    return ops.mean(mse + positive_pressure, axis=-1)


def build_model(config: ModelConfig, sequence_outputs: bool | None = None) -> keras.Model:
    """The functional Keras model for ``config`` (uncompiled).

    ``sequence_outputs`` (default: ``config.targets == "all"``) makes the top LSTM return every
    position, so the heads predict a next note per position; the weights are the same either way,
    so a model trained one way can be rebuilt the other way and given the same weights.
    Layer names are stable (``input_scaling``, ``lstm_1`` ..., ``dropout_1`` ..., ``pitch``,
    ``step``, ``duration``) -- the sampler and the loaders rely on them.
    """
    config.validate()
    if sequence_outputs is None:
        sequence_outputs = config.targets == "all"
    notes = keras.Input(shape=(None, 3), name="notes")
    if config.pitch_input == "embedding":
        x = PitchEmbedding(config.pitch_embedding_dim, name="input_scaling")(notes)
    else:
        x = NoteScaling(name="input_scaling")(notes)
    n = len(config.lstm_units)
    for i, units in enumerate(config.lstm_units, start=1):
        top = i == n
        x = keras.layers.LSTM(
            units, return_sequences=(not top) or sequence_outputs, name=f"lstm_{i}"
        )(x)
        if not top and config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    outputs = {
        "pitch": keras.layers.Dense(N_PITCHES, name="pitch")(x),
        "step": keras.layers.Dense(1, name="step")(x),
        "duration": keras.layers.Dense(1, name="duration")(x),
    }
    return keras.Model(notes, outputs, name=f"music_rnn_{config.name}")


def losses_for(config: ModelConfig) -> tuple[dict, dict]:
    """The loss and loss-weight dicts used to compile a model of ``config``."""
    loss = {
        "pitch": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "step": mse_with_positive_pressure,
        "duration": mse_with_positive_pressure,
    }
    weights = {
        "pitch": config.pitch_loss_weight,
        "step": config.step_loss_weight,
        "duration": config.duration_loss_weight,
    }
    return loss, weights


def compile_model(model: keras.Model, config: ModelConfig, jit_compile: bool | str = "auto"):
    """Compile ``model`` with Adam and the weighted losses of ``config``; returns the model."""
    loss, weights = losses_for(config)
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate, clipnorm=config.clipnorm)
    model.compile(optimizer=optimizer, loss=loss, loss_weights=weights, jit_compile=jit_compile)
    return model


def count_params(config: ModelConfig) -> int:
    """Trainable parameters of a model built from ``config``."""
    return int(build_model(config).count_params())

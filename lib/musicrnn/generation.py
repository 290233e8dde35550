"""Generate notes from a trained model: a stateful sampler that runs one LSTM step per note.

The tutorial (and the original code) generated every note by running the model on the whole
50-note window again -- ``model.predict`` per note, some 70-110 ms each. A recurrent network does
not need that: its LSTM state *is* the summary of everything it has read, so after priming the
state with the primer notes, each new note costs one recurrent step.

:class:`Sampler` reads the weights out of the Keras layers once (the input scaling or pitch
embedding, every ``lstm_i``, the ``pitch``/``step``/``duration`` heads, and the ``velocity`` head
of a model of dynamics) and runs that step in NumPy, float32, on preallocated buffers --
per-call overhead, not arithmetic, is what made the Keras step slow. It checks itself against the
Keras model when it is built, so a model whose layers it misreads is refused instead of sampled
wrongly.

Carried state and the window see different contexts: the window model forgets everything older
than ``seq_length`` notes, the carried state keeps it. For the first note after priming both give
the same distribution; after that they differ exactly where the window truncates history. A model
trained only on ``seq_length`` windows from a zero state (``targets="last"``) never saw a state
carried for hundreds of notes, so for such models the sampler re-primes: every ``reprime_every``
notes it rebuilds the state from the last ``seq_length`` notes (see :func:`default_reprime_every`).

Dynamics: a model with a velocity head (``ModelConfig.velocity == "categorical"``) reads and
writes notes of 4 columns (pitch, step, duration, MIDI velocity); the sampler draws each note's
velocity class from that head with its own ``velocity_temperature`` and plays the class's
representative velocity (:func:`musicrnn.timing.class_velocity`). Other models read and write 3
columns, exactly as before. Notes of the other width are adapted wherever they come in (a
3-column primer given to a velocity model plays at :data:`musicrnn.timing.DEFAULT_VELOCITY`, 64;
a 4-column primer given to a 3-column model loses its velocities).
"""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import MusicRNNError
from .notes import read_notes_npy, validate_notes  # noqa: F401  (part of this module's interface)
from .sequences import match_features, piece_features
from .styles import mix_name, style_index, style_labels
from .timing import (
    DEFAULT_VELOCITY, TIME_BINS, class_velocity, marginal_pitch_logits, pitch_given_steps,
    sample_time_classes, sample_velocity_classes, time_class_probabilities, timing_point,
    velocity_values,
)

N_PITCHES = 128
MAX_NUM_NOTES = 100_000  # more than anyone listens to; a typo's 10**9 is refused, not attempted
NOTES_TABLE_VELOCITY = 100  # notes_table's velocity for notes without one (the original's)


# ---------------------------------------------------------------------------------------------
# The network in NumPy
# ---------------------------------------------------------------------------------------------


@dataclass
class _LSTMLayer:
    """One LSTM layer in the sampler's layout.

    ``weights`` multiplies ``[x, h, 1]`` (input, previous output, a constant one for the bias) and
    gives the gate pre-activations in the order (i, f, o, c) -- Keras stores (i, f, c, o). In the
    fast layout (sigmoid gates, tanh cell) the i/f/o columns are halved, so that one ``tanh`` over
    all four gates serves both: ``sigmoid(z) = 0.5 * tanh(z / 2) + 0.5``. For many streams at
    once ``weights_exp`` serves instead: i/f/o columns negated and c columns times -2, so that
    one ``exp`` and one reciprocal give every gate (``sigmoid(z) = 1 / (1 + exp(-z))``,
    ``tanh(z) = 2 sigmoid(2z) - 1``) -- NumPy's float32 ``exp`` is about twice as fast as its
    ``tanh``, which pays off once the arrays are large enough that call overhead does not count.
    """

    weights: np.ndarray  # (input_dim + units + 1, 4 * units) float32
    weights_exp: np.ndarray | None  # the same for the exp layout (fast layers only)
    input_dim: int
    units: int
    fast: bool  # True: tanh cell and sigmoid gates (the Keras defaults)
    activation: Any = None  # used when not fast: numpy functions
    recurrent_activation: Any = None


EXP_LAYOUT_ROWS = 16  # blocks of this many streams or more use the exp layout of the gates


class _Block:
    """The buffers of a block of streams (rows) and, per layer, the views the step writes into."""

    def __init__(self, layers: list[_LSTMLayer], xh, c, z, rows: slice, style_add=()):
        self.rows = rows
        self.style_add = style_add  # per gate layout, (rows, 4 units): the streams' styles
        self.xh0 = xh[0]
        n_rows = len(xh[0])
        self.rows_few = n_rows if 1 < n_rows <= 3 else 0
        self.exp_layout = n_rows >= EXP_LAYOUT_ROWS
        self.layers = []
        for index, layer in enumerate(layers):
            u = layer.units
            zz = z[index]
            h = xh[index][:, layer.input_dim: layer.input_dim + u]
            following = xh[index + 1][:, :u] if index + 1 < len(layers) else None
            self.layers.append((layer, xh[index], zz, c[index], zz[:, :u], zz[:, u: 2 * u],
                                zz[:, 2 * u: 3 * u], zz[:, 3 * u:], zz[:, : 3 * u], h, following))


class _State:
    """Buffers for ``batch`` streams: per layer ``[x, h, 1]``, the cell ``c``, the gates.

    The rows are cut into ``blocks`` that can be stepped on separate threads.
    """

    def __init__(self, layers: list[_LSTMLayer], batch: int, blocks: int = 1,
                 head_width: int = N_PITCHES + 2, style_tables: tuple = ()):
        self.batch = batch
        self.xh = []
        for layer in layers:
            buf = np.zeros((batch, layer.input_dim + layer.units + 1), dtype=np.float32)
            buf[:, -1] = 1.0
            self.xh.append(buf)
        self.c = [np.zeros((batch, layer.units), dtype=np.float32) for layer in layers]
        self.z = [np.zeros((batch, 4 * layer.units), dtype=np.float32) for layer in layers]
        self.heads = np.zeros((batch, head_width), dtype=np.float32)
        self.top = self.xh[-1][:, layers[-1].input_dim:]  # [h, 1] of the top layer: heads' input
        # a conditioned model's per-stream style, in the first layer's gate pre-activations: in
        # the tanh layout and in the exp layout (NoteRNN.set_style fills them)
        self.style_add = [np.zeros((batch, 4 * layers[0].units), np.float32)
                          for _ in style_tables]
        bounds = np.linspace(0, batch, max(1, min(int(blocks), batch)) + 1).astype(int)
        self.blocks = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            rows = slice(int(lo), int(hi))
            self.blocks.append(_Block(layers, [a[rows] for a in self.xh],
                                      [a[rows] for a in self.c], [a[rows] for a in self.z], rows,
                                      [a[rows] for a in self.style_add]))

    def reset(self, rows: slice = slice(None)) -> None:
        """Zero the state of all streams (or of ``rows``)."""
        for buf, layer_c in zip(self.xh, self.c):
            buf[rows, :-1] = 0.0
            layer_c[rows] = 0.0


_pool: Any = None


def _thread_pool():
    """A small pool of threads for stepping blocks of streams side by side (NumPy releases the
    GIL inside its loops and BLAS calls)."""
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        from .paths import usable_cpus

        _pool = ThreadPoolExecutor(max_workers=max(1, usable_cpus() - 1),
                                   thread_name_prefix="musicrnn-sampler")
    return _pool


def _gate_scaled(weights: np.ndarray, units: int, fast: bool, exp: bool = False) -> np.ndarray:
    """Gate columns (i, f, o, c) scaled for the tanh layout (i/f/o halved) or the exp layout
    (i/f/o negated, c times -2); unchanged for layers with other activations."""
    scaled = np.array(weights, dtype=np.float64)
    if fast:
        if exp:
            scaled[:, : 3 * units] *= -1.0
            scaled[:, 3 * units:] *= -2.0
        else:
            scaled[:, : 3 * units] *= 0.5
    return np.ascontiguousarray(scaled, dtype=np.float32)


def _numpy_activation(fn) -> tuple[str, Any]:
    """Name and NumPy version of a Keras activation function."""
    import keras

    name = keras.activations.serialize(fn)
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    table = {
        "tanh": np.tanh,
        "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
        "hard_sigmoid": lambda z: np.clip(z / 6.0 + 0.5, 0.0, 1.0),
        "relu": lambda z: np.maximum(z, 0.0),
        "linear": lambda z: z,
    }
    if name not in table:
        raise MusicRNNError(f"the sampler does not know the activation {name!r}")
    return str(name), table[name]


def _apply_heads(state, weights: np.ndarray, heads: bool | slice) -> np.ndarray | None:
    """The head outputs of a step: ``state.top`` (``[x, 1]`` per stream) times ``weights``,
    for every stream (True), a slice of rows, or none (False); a view of ``state.heads``."""
    if heads is False:
        return None
    if heads is True:
        np.dot(state.top, weights, out=state.heads)
        return state.heads
    out = state.heads[heads]
    np.dot(state.top[heads], weights, out=out)
    return out


class _NetHeads:
    """What the sampler reads off a NumPy network's heads (shared by the LSTM and the
    transformer)."""

    timing_width: int
    velocity_bins: int
    pitch_width: int = N_PITCHES  # pitch logits: 128, or 128 per step group (pitch_given_step)

    @property
    def pitch_groups(self) -> int:
        """Step groups of a model whose pitch is drawn after the step (0: pitch first)."""
        return self.pitch_width // N_PITCHES if self.pitch_width > N_PITCHES else 0

    @property
    def categorical_timing(self) -> bool:
        """Whether step and duration are time-class logits (else one regressed value each)."""
        return self.timing_width > 1

    @property
    def velocity(self) -> bool:
        """Whether the model reads and predicts velocity (notes of 4 columns)."""
        return self.velocity_bins > 0

    style_tables: tuple[np.ndarray, ...] = ()  # per layout, (labels, width): what a label adds

    @property
    def num_styles(self) -> int:
        """Labels the model reads (0 for an unconditioned model; else "none" + its styles)."""
        return int(self.style_tables[0].shape[0]) if self.style_tables else 0

    def style_mix(self, styles: Any, rows: int) -> np.ndarray:
        """``(rows, num_styles)`` weights of each stream's labels: one label per stream (an int,
        or one per row), or already a ``(rows, num_styles)`` mix of labels (rows summing to 1:
        two labels' vectors mixed, a morph between styles)."""
        count = self.num_styles
        if not count:
            raise MusicRNNError("this model reads no style label (it was trained without "
                                "--condition)")
        array = np.asarray(styles)
        if array.ndim == 2:
            if array.shape != (rows, count):
                raise MusicRNNError(f"a style mix must be ({rows}, {count}), got {array.shape}")
            return array.astype(np.float32)
        labels = np.broadcast_to(array.astype(np.int64), (rows,))
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= count:
            raise MusicRNNError(f"style labels must be 0-{count - 1}, got {np.unique(labels)}")
        return np.eye(count, dtype=np.float32)[labels]

    def set_style(self, state: Any, styles: Any, rows: slice = slice(None)) -> None:
        """Give the streams ``rows`` of ``state`` their labels (see :meth:`style_mix`); they
        read them from their next note on."""
        count = len(range(*rows.indices(state.batch)))
        mix = self.style_mix(styles, count)
        for table, added in zip(self.style_tables, state.style_add):
            added[rows] = mix @ table


class NoteRNN(_NetHeads):
    """The arithmetic of a note model -- input scaling, stacked LSTMs, three heads (four with
    velocity) -- in NumPy.

    Built from a Keras model with :meth:`from_keras`; :meth:`step` advances a :class:`_State` by
    one note of raw (pitch, step, duration) -- or (pitch, step, duration, velocity) for a model
    with a velocity head -- for every stream at once.
    """

    def __init__(self, layers: list[_LSTMLayer], heads: np.ndarray,
                 pitch_table: np.ndarray | None, timing_width: int | None = None,
                 velocity_bins: int = 0, features: int = 3, style_tables: tuple = (),
                 pitch_width: int = N_PITCHES):
        self.layers = layers
        self.pitch_width = int(pitch_width)
        # a conditioned model's labels times the first kernel, (labels, 4 * units_1), in the
        # tanh and the exp layouts; () without labels
        self.style_tables = tuple(style_tables)
        # (top units + 1, p + 2 w + v): [h, 1] -> pitch logits (p: 128, or 128 per step group),
        # step, duration, velocity logits
        self.heads = heads
        self.velocity_bins = int(velocity_bins)  # classes of the velocity head (0: none)
        # units of each timing head: 1 (a regressed value) or TIME_BINS (time-class logits)
        self.timing_width = int(timing_width) if timing_width is not None else (
            (heads.shape[1] - self.pitch_width - self.velocity_bins) // 2)
        self.features = int(features)  # columns per note read: 3, or 4 with velocity
        # for embedding inputs: the embedding times the first kernel, (128, 4 * units_1), in the
        # tanh and the exp layouts; else None
        self.pitch_table = pitch_table
        self.return_sequences_top = True

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_keras(cls, model) -> "NoteRNN":
        """Read the weights out of a Keras note model (ours, or a loaded original artefact).

        The model is walked from its ``pitch``/``step``/``duration`` outputs back to its input,
        through nested models; between the input and the first LSTM there may be any chain of
        element-wise affine layers (``NoteScaling``, ``Rescaling``, ...) or one ``PitchEmbedding``;
        between the LSTMs only dropout; nothing but the three dense heads (and a ``velocity``
        head) after the top one.
        """
        heads = _trace_heads(model)
        chain, pre = _trace_chain(heads["pitch"][1])
        features = _input_features(model)
        if ("velocity" in heads) != (features == 4):
            raise MusicRNNError(
                "a model with a velocity head must read 4 columns per note and one without it 3; "
                f"this one reads {features} and {'has' if 'velocity' in heads else 'has no'} "
                "velocity head")
        for name in [h for h in heads if h != "pitch"]:
            other_chain, _ = _trace_chain(heads[name][1])
            if [id(x) for x in other_chain] != [id(x) for x in chain]:
                raise MusicRNNError(
                    f"the {name} head does not read the same LSTM stack as the pitch head; "
                    "the sampler supports one LSTM stack feeding the dense heads"
                )
        if not chain:
            raise MusicRNNError("the model has no LSTM layer; the sampler needs an LSTM note model")
        from .model import style_layer

        styled = style_layer(model)
        style_dim = styled.dim if styled is not None else 0
        pitch_table, input_matrix, input_offset = _input_transform(pre, chain[0], features,
                                                                   style_dim)
        style_tables: Any = ()
        layers = []
        for index, lstm in enumerate(chain):
            cell = lstm.cell
            if getattr(lstm, "go_backwards", False):
                raise MusicRNNError(f"LSTM layer {lstm.name} runs backwards; it cannot generate")
            kernel = np.asarray(_to_numpy(cell.kernel), dtype=np.float64)
            recurrent = np.asarray(_to_numpy(cell.recurrent_kernel), dtype=np.float64)
            units = int(cell.units)
            bias = (np.asarray(_to_numpy(cell.bias), dtype=np.float64) if cell.use_bias
                    else np.zeros(4 * units))
            if index == 0:
                if styled is not None:  # the label's vector times its rows of the kernel
                    table = np.asarray(_to_numpy(styled.table.embeddings), dtype=np.float64)
                    style_tables = table @ kernel[-style_dim:]
                    kernel = kernel[:-style_dim]
                # raw notes -> input scaling -> kernel, folded into one matrix
                if pitch_table is not None:
                    dim = pitch_table.shape[1]
                    pitch_table = pitch_table @ kernel[:dim]
                    # (step, duration[, velocity]) rows, with the layer's scaling of them
                    kernel = input_matrix @ kernel[dim:]
                else:
                    bias = bias + input_offset @ kernel
                    kernel = input_matrix @ kernel
            act_name, act = _numpy_activation(cell.activation)
            ract_name, ract = _numpy_activation(cell.recurrent_activation)
            fast = act_name == "tanh" and ract_name == "sigmoid"
            order = np.concatenate([
                np.arange(0, units), np.arange(units, 2 * units),  # i, f
                np.arange(3 * units, 4 * units), np.arange(2 * units, 3 * units),  # o, c
            ])
            weights = np.concatenate([kernel, recurrent, bias[None, :]], axis=0)[:, order]
            layers.append(_LSTMLayer(
                weights=_gate_scaled(weights, units, fast), input_dim=kernel.shape[0],
                units=units, fast=fast, activation=act, recurrent_activation=ract,
                weights_exp=_gate_scaled(weights, units, fast, exp=True) if fast else None,
            ))
            if index == 0 and pitch_table is not None:
                table = pitch_table[:, order]
                pitch_table = (_gate_scaled(table, units, fast),
                               _gate_scaled(table, units, fast, exp=True))
            if index == 0 and styled is not None:
                table = style_tables[:, order]
                style_tables = (_gate_scaled(table, units, fast),
                                _gate_scaled(table, units, fast, exp=True))
        for lower, upper in zip(layers, layers[1:]):
            if upper.input_dim != lower.units:
                raise MusicRNNError("consecutive LSTM layers disagree on their sizes")
        head_weights = []
        for name in heads:
            dense = heads[name][0]
            kernel = np.asarray(dense.kernel.numpy(), dtype=np.float32)
            bias = (np.asarray(dense.bias.numpy(), dtype=np.float32) if dense.use_bias
                    else np.zeros(kernel.shape[1], np.float32))
            act_name, _ = _numpy_activation(dense.activation)
            if name == "pitch":  # 128 logits, or 128 per step group
                width = (kernel.shape[1] if kernel.shape[1] % N_PITCHES == 0
                         and kernel.shape[1] > N_PITCHES else N_PITCHES)
            elif name == "step":  # one regressed value, or time-class logits
                width = kernel.shape[1] if kernel.shape[1] in (1, TIME_BINS) else 1
            elif name == "duration":  # the duration head has the step head's kind
                width = head_weights[1].shape[1]
            else:  # velocity: logits over its classes
                width = kernel.shape[1] if kernel.shape[1] >= 2 else 2
            if act_name != "linear" or kernel.shape != (layers[-1].units, width):
                what = (f"Dense({width})" if name in ("pitch", "velocity") else
                        "Dense(1) or Dense(128) (time classes), the same for step and duration")
                raise MusicRNNError(
                    f"the {name} head should be a linear {what} on the top LSTM, "
                    f"found kernel {kernel.shape} with activation {act_name}"
                )
            head_weights.append(np.concatenate([kernel, bias[None, :]], axis=0))
        timing_width = head_weights[1].shape[1]
        velocity_bins = head_weights[3].shape[1] if len(head_weights) > 3 else 0
        net = cls(layers, np.ascontiguousarray(np.concatenate(head_weights, axis=1)), pitch_table,
                  timing_width=timing_width, velocity_bins=velocity_bins, features=features,
                  style_tables=style_tables, pitch_width=head_weights[0].shape[1])
        net.return_sequences_top = bool(getattr(chain[-1], "return_sequences", True))
        return net

    # -- running ------------------------------------------------------------------------------
    def new_state(self, batch: int, blocks: int = 1) -> _State:
        """Zero state for ``batch`` streams (label 0, "none", for a conditioned model)."""
        state = _State(self.layers, batch, blocks, head_width=self.heads.shape[1],
                       style_tables=self.style_tables)
        if self.style_tables:
            self.set_style(state, 0)
        return state

    def step(self, state: _State, notes: np.ndarray,
             heads: bool | slice = True) -> np.ndarray | None:
        """Feed one raw note per stream (``(batch, 3)``, ``(batch, 4)`` with velocity); returns
        the head outputs when asked.

        ``heads``: True for every stream, a ``slice`` of rows for some, False for none. The
        returned ``(rows, 128 + 2 w + v)`` array (pitch logits, then step and duration: one value
        each, or ``w = 128`` time-class logits each; then ``v`` velocity logits, none without a
        velocity head) is a view of a buffer of
        ``state``: the next call overwrites it. A state cut into several blocks steps them on
        separate threads.
        """
        blocks = state.blocks
        if len(blocks) == 1:
            self._step_block(blocks[0], notes)
        else:
            pool = _thread_pool()
            futures = [pool.submit(self._step_block, block, notes[block.rows])
                       for block in blocks[1:]]
            self._step_block(blocks[0], notes[blocks[0].rows])
            for future in futures:
                future.result()
        return _apply_heads(state, self.heads, heads)

    def _step_block(self, block: _Block, notes: np.ndarray) -> None:
        features = self.features
        if self.pitch_table is None:
            block.xh0[:, :features] = notes
        else:
            block.xh0[:, :features - 1] = notes[:, 1:features]
        first = True
        few = block.rows_few
        exp_layout = block.exp_layout
        for layer, xh, z, c, i_gate, f_gate, o_gate, candidate, gates, h, following \
                in block.layers:
            weights = layer.weights_exp if exp_layout and layer.fast else layer.weights
            if few:  # one matrix-vector product per row: BLAS's 2- and 3-row products are slow
                for row in range(few):
                    np.dot(xh[row], weights, out=z[row])
            else:
                np.dot(xh, weights, out=z)
            if first and self.pitch_table is not None:
                pitch = np.clip(np.rint(notes[:, 0]), 0, N_PITCHES - 1).astype(np.intp)
                z += self.pitch_table[1 if exp_layout and layer.fast else 0][pitch]
            if first and block.style_add:
                z += block.style_add[1 if exp_layout and layer.fast else 0]
            first = False
            if layer.fast and exp_layout:
                np.exp(z, out=z)  # overflow to inf is right here: 1 / (1 + inf) = 0
                z += 1.0
                np.reciprocal(z, out=z)  # i, f, o = sigmoid; c = sigmoid(2 z)
                candidate *= 2.0
                candidate -= 1.0  # tanh(z)
                c *= f_gate
                np.multiply(i_gate, candidate, out=i_gate)
                c += i_gate
                np.multiply(c, -2.0, out=candidate)  # tanh(c) = 2 / (1 + exp(-2c)) - 1
                np.exp(candidate, out=candidate)
                candidate += 1.0
                np.reciprocal(candidate, out=candidate)
                candidate *= 2.0
                candidate -= 1.0
                np.multiply(o_gate, candidate, out=h)
                if following is not None:
                    following[:] = h
                continue
            if layer.fast:
                np.tanh(z, out=z)
                gates *= 0.5
                gates += 0.5
            else:
                gates[:] = layer.recurrent_activation(gates)
                candidate[:] = layer.activation(candidate)
            c *= f_gate
            np.multiply(i_gate, candidate, out=i_gate)
            c += i_gate
            if layer.fast:
                np.tanh(c, out=candidate)
            else:
                candidate[:] = layer.activation(c)
            np.multiply(o_gate, candidate, out=h)
            if following is not None:
                following[:] = h

    def run(self, notes: np.ndarray, state: _State | None = None, style: Any = None
            ) -> tuple[np.ndarray, _State]:
        """Feed ``(batch, time, 3)`` raw notes (``(batch, time, 4)`` with velocity) from
        ``state`` (zero when None), in ``style`` (a conditioned model's labels, see
        :meth:`set_style`; None keeps the state's).

        Returns the head outputs after the last note (a copy) and the state.
        """
        notes = match_features(notes, self.features)
        if state is None:
            state = self.new_state(notes.shape[0])
        if style is not None:
            self.set_style(state, style)
        out = None
        with np.errstate(over="ignore"):
            for t in range(notes.shape[1]):
                out = self.step(state, notes[:, t], heads=t == notes.shape[1] - 1)
        assert out is not None
        return out.copy(), state

    def check_against(self, model, *, length: int = 12, batch: int = 2, seed: int = 0) -> float:
        """Largest difference between this network and ``model`` on random raw notes (also
        with enough streams for the exp layout of the gates).

        Raises :class:`MusicRNNError` when it is larger than float32 arithmetic explains.
        """
        return _check_net(self, model, _fixed_length(model) or length, batch, seed,
                          repeats=-(-EXP_LAYOUT_ROWS // batch))


def _check_net(net, model, length: int, batch: int, seed: int, repeats: int) -> float:
    """Largest difference between ``net``'s heads and the Keras model's after ``length`` random
    raw notes, for ``batch`` streams and for them repeated ``repeats`` times over."""
    rng = np.random.default_rng(seed)
    columns = [
        rng.integers(36, 90, size=(batch, length)).astype(np.float32),
        rng.exponential(0.25, size=(batch, length)).astype(np.float32),
        rng.exponential(0.4, size=(batch, length)).astype(np.float32),
    ]
    if net.features == 4:
        columns.append(rng.integers(1, 128, size=(batch, length)).astype(np.float32))
    notes = np.stack(columns, axis=-1)
    style = rng.integers(0, net.num_styles, size=batch) if net.num_styles else None
    theirs = keras_heads(model, notes, style)
    with np.errstate(over="ignore"):
        ours, _ = net.run(notes, style=style)
        diff = float(np.abs(ours - theirs).max())
        if repeats > 1:
            many, _ = net.run(np.repeat(notes, repeats, axis=0),
                              style=None if style is None else np.repeat(style, repeats))
            diff = max(diff, float(np.abs(many[::repeats] - theirs).max()))
    scale = max(1.0, float(np.abs(theirs).max()))
    if not diff <= 1e-3 * scale:
        raise MusicRNNError(
            f"the sampler's reading of this model disagrees with Keras by {diff:.3g}; its "
            "layers are not the note-model layout the sampler understands (input scaling, "
            "an LSTM stack or attention blocks, pitch/step/duration[/velocity] heads)"
        )
    return diff


# ---------------------------------------------------------------------------------------------
# The transformer in NumPy: one step per note with a cache of keys and values
# ---------------------------------------------------------------------------------------------


@dataclass
class _AttentionLayer:
    """One decoder block in the sampler's layout. The layer norms' gains and biases are folded
    into the matrices that read them, the query's 1 / sqrt(head width) into its columns, and
    rotary positions' pair swap into four extra columns per query/key pair: ``qkv`` gives
    ``[q, k, v, swap(q), swap(k)]``, and the turned query and key are ``[q, k] * cos +
    [swap(q), swap(k)] * sin`` (``swap`` of a head's halves (a, b) is (-b, a))."""

    qkv: np.ndarray  # (d + 1, 5 d): [normalised input, 1] -> query, key, value, swapped q, k
    output: np.ndarray  # (d, d)
    output_bias: np.ndarray  # (d,)
    ff_in: np.ndarray  # (d + 1, ff): [normalised input, 1] -> hidden
    ff_out: np.ndarray  # (ff, d)
    ff_out_bias: np.ndarray  # (d,)
    epsilon: tuple[float, float]  # of norm_1 and norm_2


def _swap_halves(matrix: np.ndarray, heads: int) -> np.ndarray:
    """The columns of ``matrix`` (per head: halves a, b) rearranged as (-b, a)."""
    rows = matrix.shape[:-1]
    split = matrix.reshape(*rows, heads, 2, -1)
    return np.concatenate([-split[..., 1, :], split[..., 0, :]], axis=-1).reshape(matrix.shape)


class _AttentionState:
    """The key/value cache of ``batch`` streams: per block, keys ``(batch, heads, head_dim,
    capacity)`` and values ``(batch, heads, capacity, head_dim)``, written as a ring.

    Every stream has read the same number of notes (``count``): the streams step together, so
    the whole batch is reset at once.
    """

    def __init__(self, net: "NoteTransformer", batch: int, blocks: int = 1):
        self.batch = batch
        h, hd, c = net.num_heads, net.head_dim, net.capacity
        self.keys = [np.zeros((batch, h, hd, c), np.float32) for _ in net.layers]
        self.values = [np.zeros((batch, h, c, hd), np.float32) for _ in net.layers]
        self.count = 0
        self.heads = np.zeros((batch, net.heads.shape[1]), np.float32)
        self.top = np.ones((batch, net.model_dim + 1), np.float32)  # [normalised x, 1]
        # a conditioned model's per-stream style vector, added to every note's
        self.style_add = [np.zeros((batch, net.model_dim), np.float32) for _ in net.style_tables]
        bounds = np.linspace(0, batch, max(1, min(int(blocks), batch)) + 1).astype(int)
        self.blocks = [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]

    def reset(self, rows: slice = slice(None)) -> None:
        """Empty the cache (of every stream: a transformer's streams are reset together)."""
        if slice(None).indices(self.batch) != rows.indices(self.batch):
            raise MusicRNNError("a transformer's sampler resets all its streams together; it "
                                "slides its window of cached keys instead of re-priming lanes")
        self.count = 0


def _normalise(x: np.ndarray, epsilon: float, mean_vector: np.ndarray,
               out: np.ndarray) -> np.ndarray:
    """Layer normalisation without gain and bias (those are folded into the next matrix), into
    ``out[:, :d]``; ``out``'s last column is a constant 1 that picks the matrix's bias row.

    ``mean_vector`` is ``ones(d) / d``: row means as one matrix-vector product each, cheaper
    than ``mean`` for the handful of rows the sampler steps. One row (a single stream, where
    the count of NumPy calls is the cost) takes its mean and spread as Python floats.
    """
    centred = out[:, :-1]
    if len(x) == 1:
        row = centred[0]
        np.subtract(x[0], float(np.dot(x[0], mean_vector)), out=row)
        row *= 1.0 / math.sqrt(float(np.dot(row, row)) / len(row) + epsilon)
        return out
    np.subtract(x, (x @ mean_vector)[:, None], out=centred)
    variance = np.square(centred) @ mean_vector
    variance += epsilon
    centred *= (1.0 / np.sqrt(variance))[:, None]
    return out


def _read_dense(layer) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(_to_numpy(layer.kernel), np.float64),
            np.asarray(_to_numpy(layer.bias), np.float64))


def _read_norm(layer) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(_to_numpy(layer.gamma), np.float64),
            np.asarray(_to_numpy(layer.beta), np.float64))


def _fold(norm: tuple[np.ndarray, np.ndarray], kernel: np.ndarray, bias: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """A layer norm's gain and bias folded into the dense layer reading it."""
    gain, shift = norm
    return gain[:, None] * kernel, shift @ kernel + bias


class NoteTransformer(_NetHeads):
    """The arithmetic of a transformer note model (``ModelConfig.architecture ==
    "transformer"``) in NumPy, one note per step.

    Each step embeds the new note and, in every block, computes its query, key and value, turns
    query and key by the note's rotary angle, writes key and value into the cache and attends
    over the cached ones: the keys of earlier notes are never computed again. The cache holds
    ``capacity`` notes: the model's ``attention_window`` when it has one, else its
    ``seq_length``, the farthest it looked back in training. Beyond that it is a sliding
    window: the oldest key is overwritten, so every block of every step attends over the last
    ``capacity`` notes -- exactly the model built with ``attention_window=capacity`` (a banded
    causal mask), run over the whole piece. Rotary positions make attention depend only on how
    far back a key is, so positions past the training length are no problem; a deeper block's
    cached key still carries what its note saw when it was new (as Transformer-XL's cached
    memory does). :meth:`check_against` verifies the arithmetic against Keras.
    """

    return_sequences_top = True  # a transformer predicts after every position

    def __init__(self, embedding: list[np.ndarray], layers: list[_AttentionLayer],
                 heads: np.ndarray, *, num_heads: int, capacity: int, final_epsilon: float,
                 timing_width: int, velocity_bins: int, features: int,
                 rotary_base: float = 10000.0, style_tables: tuple = (),
                 pitch_width: int = N_PITCHES):
        from .model import rotary_frequencies, velocity_edges
        from .timing import TIME_EDGES

        self.embedding = embedding  # pitch, step-class, duration-class[, velocity-class] tables
        self.style_tables = tuple(style_tables)  # (labels, d): each label's vector, or ()
        self.layers = layers
        self.heads = heads  # (d + 1, p + 2 w + v): [normalised x, 1] -> every head
        self.pitch_width = int(pitch_width)  # 128, or 128 per step group
        self.model_dim = int(heads.shape[0] - 1)
        self.num_heads = int(num_heads)
        self.head_dim = self.model_dim // self.num_heads
        self.capacity = int(capacity)
        self.final_epsilon = float(final_epsilon)
        self.timing_width = int(timing_width)
        self.velocity_bins = int(velocity_bins)
        self.features = int(features)
        self.frequencies = rotary_frequencies(self.head_dim, rotary_base)
        self._rotary_start: int | None = None  # the first position of the rotary table below
        self._rotary_cos = self._rotary_sin = np.zeros((0, 0), np.float32)
        self.mean_vector = np.full(self.model_dim, 1.0 / self.model_dim, np.float32)
        self.time_edges = np.asarray(TIME_EDGES, dtype=np.float32)
        self.velocity_edges = velocity_edges(self.velocity_bins) if self.velocity_bins else None
        self._time_edge_list = self.time_edges.tolist()  # the same float32 values, for bisect
        self._velocity_edge_list = ([] if self.velocity_edges is None
                                    else self.velocity_edges.tolist())

    @classmethod
    def from_keras(cls, model, capacity: int | None = None) -> "NoteTransformer":
        """Read the weights of a transformer note model (:func:`musicrnn.model.build_model`).

        ``capacity``: notes the cache holds (default: the model's ``attention_window`` when it
        has one, else its ``seq_length``).
        """
        from .model import ROTARY_BASE, _attention_blocks, infer_config

        blocks = _attention_blocks(model)
        if not blocks:
            raise MusicRNNError("the model has no attention blocks; it is not a transformer")
        config = infer_config(model)
        capacity = int(config.attention_window or capacity or config.seq_length)
        if capacity < 1:
            raise MusicRNNError(f"the cache must hold at least one note, got {capacity}")
        embedding = [np.asarray(_to_numpy(t.embeddings), np.float32)
                     for t in model.get_layer("input_scaling").tables()]
        from .model import style_layer

        styled = style_layer(model)
        style_tables = () if styled is None else (
            np.asarray(_to_numpy(styled.table.embeddings), np.float32),)
        scale = 1.0 / math.sqrt(blocks[0].head_dim)
        f32 = np.float32
        layers = []
        for block in blocks:
            (wq, bq), (wk, bk), (wv, bv) = (_read_dense(block.query), _read_dense(block.key),
                                            _read_dense(block.value))
            wq, bq, heads = wq * scale, bq * scale, block.num_heads
            qkv, qkv_bias = _fold(
                _read_norm(block.norm_1),
                np.concatenate([wq, wk, wv, _swap_halves(wq, heads), _swap_halves(wk, heads)], 1),
                np.concatenate([bq, bk, bv, _swap_halves(bq, heads), _swap_halves(bk, heads)]))
            wo, bo = _read_dense(block.attention_output)
            w1, b1 = _fold(_read_norm(block.norm_2), *_read_dense(block.ff_in))
            w2, b2 = _read_dense(block.ff_out)
            layers.append(_AttentionLayer(
                qkv=np.concatenate([qkv, qkv_bias[None]]).astype(f32), output=wo.astype(f32),
                output_bias=bo.astype(f32), ff_in=np.concatenate([w1, b1[None]]).astype(f32),
                ff_out=w2.astype(f32), ff_out_bias=b2.astype(f32),
                epsilon=(float(block.norm_1.epsilon), float(block.norm_2.epsilon))))
        final = model.get_layer("final_norm")
        names = ["pitch", "step", "duration"] + (["velocity"] if config.velocity != "none" else [])
        kernels, biases = zip(*(_read_dense(model.get_layer(name)) for name in names))
        kernel, bias = _fold(_read_norm(final), np.concatenate(kernels, axis=1),
                             np.concatenate(biases))
        heads = np.ascontiguousarray(np.concatenate([kernel, bias[None, :]], axis=0), f32)
        return cls(embedding, layers, heads, num_heads=blocks[0].num_heads, capacity=capacity,
                   final_epsilon=float(final.epsilon), timing_width=kernels[1].shape[1],
                   velocity_bins=kernels[3].shape[1] if len(kernels) > 3 else 0,
                   features=4 if len(kernels) > 3 else 3, rotary_base=ROTARY_BASE,
                   style_tables=style_tables, pitch_width=kernels[0].shape[1])

    def new_state(self, batch: int, blocks: int = 1) -> _AttentionState:
        """An empty cache for ``batch`` streams, cut into ``blocks`` of rows that are stepped
        on separate threads (label 0, "none", for a conditioned model)."""
        state = _AttentionState(self, batch, blocks)
        if self.style_tables:
            self.set_style(state, 0)
        return state

    ROTARY_BLOCK = 1024  # positions whose rotary cosines and sines are computed at once

    def _rotary(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """Per query/key column, the cosine and sine of its pair's angle at ``position`` (the
        same in every head), from a table of :attr:`ROTARY_BLOCK` positions."""
        start = position - position % self.ROTARY_BLOCK
        if self._rotary_start != start:
            angles = np.arange(start, start + self.ROTARY_BLOCK)[:, None] * self.frequencies
            columns = 4 * self.num_heads  # (query, key) x heads x (first, second half)
            self._rotary_cos = np.tile(np.cos(angles), columns).astype(np.float32)
            self._rotary_sin = np.tile(np.sin(angles), columns).astype(np.float32)
            self._rotary_start = start
        return self._rotary_cos[position - start], self._rotary_sin[position - start]

    def _embed(self, notes: np.ndarray) -> np.ndarray:
        if len(notes) == 1:  # one stream: table rows picked in Python, three additions
            return self._embed_one(notes[0])[None]
        pitch = np.clip(np.rint(notes[:, 0]), 0, N_PITCHES - 1).astype(np.intp)
        x = self.embedding[0][pitch]
        classes = np.searchsorted(self.time_edges, notes[:, 1:3], side="right")
        x += self.embedding[1][classes[:, 0]]
        x += self.embedding[2][classes[:, 1]]
        if self.velocity_edges is not None:
            velocity = np.rint(notes[:, 3])
            x += self.embedding[3][np.searchsorted(self.velocity_edges, velocity, side="right")]
        return x

    def _embed_one(self, note: np.ndarray) -> np.ndarray:
        """:meth:`_embed` of one note: the same classes (``bisect`` on the same float32 edges,
        ``round`` halves to even as ``np.rint`` does)."""
        pitch, step, duration = float(note[0]), float(note[1]), float(note[2])
        x = self.embedding[0][min(max(round(pitch), 0), N_PITCHES - 1)].copy()
        x += self.embedding[1][bisect.bisect_right(self._time_edge_list, step)]
        x += self.embedding[2][bisect.bisect_right(self._time_edge_list, duration)]
        if self.velocity_edges is not None:
            x += self.embedding[3][bisect.bisect_right(self._velocity_edge_list,
                                                       round(float(note[3])))]
        return x

    def step(self, state: _AttentionState, notes: np.ndarray,
             heads: bool | slice = True) -> np.ndarray | None:
        """Feed one raw note per stream; returns the head outputs as :meth:`NoteRNN.step` does
        (a view of a buffer of ``state`` that the next call overwrites)."""
        notes = np.asarray(notes, dtype=np.float32)
        cos, sin = self._rotary(state.count)
        blocks = state.blocks
        if len(blocks) == 1:
            self._step_rows(state, notes, blocks[0], cos, sin, heads is not False)
        else:
            pool = _thread_pool()
            futures = [pool.submit(self._step_rows, state, notes[rows], rows, cos, sin,
                                   heads is not False) for rows in blocks[1:]]
            self._step_rows(state, notes[blocks[0]], blocks[0], cos, sin, heads is not False)
            for future in futures:
                future.result()
        state.count += 1
        return _apply_heads(state, self.heads, heads)

    def _step_rows(self, state: _AttentionState, notes: np.ndarray, block: slice,
                   cos: np.ndarray, sin: np.ndarray, top: bool) -> None:
        """One step of the streams in ``block`` (their cache rows and their ``state.top``)."""
        rows = len(notes)
        x = self._embed(notes)
        if state.style_add:
            x += state.style_add[0][block]
        d, h, hd = self.model_dim, self.num_heads, self.head_dim
        mean_vector = self.mean_vector
        position = state.count
        slot = position % self.capacity
        seen = min(position + 1, self.capacity)
        normalised = state.top[block]  # [x normalised, 1]: the next matrix's input and bias
        for layer, all_keys, all_values in zip(self.layers, state.keys, state.values):
            keys, values = all_keys[block], all_values[block]
            qkv = _normalise(x, layer.epsilon[0], mean_vector, normalised) @ layer.qkv
            turned = qkv[:, : 2 * d] * cos
            turned += qkv[:, 3 * d:] * sin
            keys[:, :, :, slot] = turned[:, d:].reshape(rows, h, hd)
            values[:, :, slot, :] = qkv[:, 2 * d: 3 * d].reshape(rows, h, hd)
            scores = np.matmul(turned[:, :d].reshape(rows, h, 1, hd), keys[:, :, :, :seen])
            scores -= np.maximum.reduce(scores, axis=-1, keepdims=True)  # (rows, h, 1, seen)
            np.exp(scores, out=scores)
            attended = np.matmul(scores, values[:, :, :seen])  # (rows, h, 1, hd)
            attended /= np.add.reduce(scores, axis=-1, keepdims=True)  # softmax's division,
            # on the head_dim numbers the weights give instead of on the seen weights
            x += attended.reshape(rows, d) @ layer.output
            x += layer.output_bias
            hidden = _normalise(x, layer.epsilon[1], mean_vector, normalised) @ layer.ff_in
            np.maximum(hidden, 0.0, out=hidden)
            x += hidden @ layer.ff_out
            x += layer.ff_out_bias
        if top:
            _normalise(x, self.final_epsilon, mean_vector, normalised)

    def run(self, notes: np.ndarray, state: _AttentionState | None = None, style: Any = None
            ) -> tuple[np.ndarray, _AttentionState]:
        """Feed ``(batch, time, features)`` raw notes from ``state`` (an empty cache when None),
        in ``style`` (a conditioned model's labels; None keeps the state's); the head outputs
        after the last note (a copy) and the state."""
        notes = match_features(notes, self.features)
        if state is None:
            state = self.new_state(notes.shape[0])
        if style is not None:
            self.set_style(state, style)
        out = None
        for t in range(notes.shape[1]):
            out = self.step(state, notes[:, t], heads=t == notes.shape[1] - 1)
        assert out is not None
        return out.copy(), state

    def check_against(self, model, *, length: int = 12, batch: int = 2, seed: int = 0) -> float:
        """Largest difference between this network and ``model`` on random raw notes (within
        the cache's capacity); a :class:`MusicRNNError` when float32 does not explain it."""
        return _check_net(self, model, min(length, self.capacity), batch, seed, repeats=1)


def note_network(model, config=None) -> "NoteRNN | NoteTransformer":
    """The sampler's NumPy network for ``model``: a :class:`NoteTransformer` for a transformer
    (its cache as long as ``config.seq_length`` when a config is given), else a
    :class:`NoteRNN`."""
    from .model import _attention_blocks

    if _attention_blocks(model):
        return NoteTransformer.from_keras(model, getattr(config, "seq_length", None))
    return NoteRNN.from_keras(model)


def _infer_config(model):
    """The model's config read off its layers (None when it has not this package's layout)."""
    from .model import infer_config

    try:
        return infer_config(model)
    except MusicRNNError:
        return None


def _input_features(model) -> int:
    """Columns per note ``model`` reads: 4 (with velocity) or 3."""
    try:
        width = model.inputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError):
        return 3
    return 4 if width == 4 else 3


def _fixed_length(model) -> int | None:
    """The window length a model's input insists on (None: any length)."""
    try:
        return model.inputs[0].shape[1] or None
    except (AttributeError, IndexError, TypeError):
        return None


def keras_heads(model, notes: np.ndarray, style: Any = None) -> np.ndarray:
    """Run ``model`` on ``(batch, time, 3)`` raw notes: ``(batch, 128 + 2 w)`` outputs after the
    last (pitch logits, step, duration; ``w`` is 1, or 128 for time-class logits). A velocity
    model reads ``(batch, time, 4)`` and its velocity logits come last (``+ v`` columns); notes
    of the other width are adapted (:func:`musicrnn.sequences.match_features`).

    The reference the sampler is checked against (one Keras call, no state carried in).
    """
    from .model import model_inputs

    notes = match_features(notes, _input_features(model))
    out = model(model_inputs(model, notes, style), training=False)
    if not isinstance(out, dict):
        raise MusicRNNError("the model must return a dict with 'pitch', 'step' and 'duration'")
    parts = []
    for name in ("pitch", "step", "duration", "velocity"):
        if name == "velocity" and name not in out:
            continue
        value = np.asarray(_to_numpy(out[name]), dtype=np.float32)
        if value.ndim == 3:  # every-position model: the last position
            value = value[:, -1]
        parts.append(value.reshape(notes.shape[0], -1))
    return np.concatenate(parts, axis=1)


def _to_numpy(x) -> np.ndarray:
    import keras

    if isinstance(x, keras.Variable):
        return np.asarray(x.numpy())
    return keras.ops.convert_to_numpy(x)


# -- reading the graph ---------------------------------------------------------------------------


def _trace_heads(model) -> dict[str, tuple[Any, Any]]:
    """``{head: (Dense layer, its input tensor)}`` found by following the model's outputs."""
    import keras

    try:
        outputs = model.output
    except (AttributeError, ValueError) as exc:
        raise MusicRNNError(
            "the sampler needs a functional Keras model (with a traceable graph)"
        ) from exc
    if not isinstance(outputs, dict) or not set(("pitch", "step", "duration")) <= set(outputs):
        raise MusicRNNError(
            "the model's outputs must be a dict with 'pitch', 'step' and 'duration'; "
            "load it with musicrnn.model.load_model"
        )
    found = {}
    for name in ("pitch", "step", "duration", "velocity"):
        if name == "velocity" and name not in outputs:
            continue
        op, node, _ = _producer(outputs[name])
        while isinstance(op, keras.layers.Dropout) or type(op).__name__ == "Identity":
            op, node, _ = _producer(node.input_tensors[0])
        if not isinstance(op, keras.layers.Dense):
            raise MusicRNNError(f"the {name} output is not made by a Dense layer ({op!r})")
        found[name] = (op, node.input_tensors[0])
    return found


def _producer(tensor):
    """(operation, node, tensor_index) that made ``tensor``, looking inside nested models."""
    import keras

    history = tensor._keras_history
    op = history.operation
    node = op._inbound_nodes[history.node_index]
    if isinstance(op, keras.Model) and not isinstance(op, keras.layers.InputLayer):
        inner = keras.tree.flatten(op.outputs)[history.tensor_index]
        return _producer_nested(inner, op, node)
    return op, node, history.tensor_index


def _producer_nested(tensor, model, outer_node):
    """Like :func:`_producer` for a tensor inside ``model``; leaving it through its inputs."""
    import keras

    op, node, index = _producer(tensor)
    if isinstance(op, keras.layers.InputLayer):
        inputs = keras.tree.flatten(model.inputs)
        position = next(i for i, t in enumerate(inputs) if t is tensor)
        return _producer(keras.tree.flatten(outer_node.input_tensors)[position])
    return op, _NestedNode(node, model, outer_node), index


class _NestedNode:
    """A node inside a nested model whose input tensors lead back out through the outer node."""

    def __init__(self, node, model, outer_node):
        self.node, self.model, self.outer_node = node, model, outer_node

    @property
    def input_tensors(self):
        return [_Inner(t, self.model, self.outer_node) for t in self.node.input_tensors]


class _Inner:
    def __init__(self, tensor, model, outer_node):
        self.tensor, self.model, self.outer_node = tensor, model, outer_node


def _step_back(tensor):
    """(operation, node) producing ``tensor`` (plain or inside a nested model)."""
    if isinstance(tensor, _Inner):
        return _producer_nested(tensor.tensor, tensor.model, tensor.outer_node)[:2]
    return _producer(tensor)[:2]


def _trace_chain(tensor) -> tuple[list, list]:
    """Walk from the heads' input back to the model input: (LSTMs bottom-up, layers before them)."""
    import keras

    lstms: list = []
    pre: list = []
    while True:
        op, node = _step_back(tensor)
        if isinstance(op, keras.layers.InputLayer):
            break
        from .model import StyleInput

        if isinstance(op, StyleInput):  # notes' vectors + the label's: follow the notes
            tensor = node.input_tensors[0]
            continue
        if isinstance(op, keras.layers.LSTM):
            if pre:
                raise MusicRNNError(
                    f"the sampler cannot run layer {pre[0].name!r} between LSTM layers"
                )
            lstms.append(op)
        elif isinstance(op, keras.layers.Dropout):
            pass
        else:
            if not lstms:
                raise MusicRNNError(
                    f"the sampler cannot run layer {op.name!r} between the top LSTM and the heads"
                )
            pre.append(op)
        inputs = node.input_tensors
        if len(inputs) != 1:
            raise MusicRNNError(f"layer {op.name!r} has {len(inputs)} inputs; expected one")
        tensor = inputs[0]
    return lstms[::-1], pre[::-1]


def _input_transform(pre: list, first_lstm, features: int = 3, style_dim: int = 0
                     ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """How raw notes of ``features`` columns reach the first LSTM: ``(pitch_table, matrix,
    offset)``.

    With a :class:`~musicrnn.model.PitchEmbedding` the first LSTM reads ``[table[pitch], rest]``,
    ``rest`` an affine scaling of the other columns (step, duration[, velocity / 127]):
    ``pitch_table`` is the ``(128, dim)`` table and ``matrix`` the ``(features - 1, features -
    1)`` scaling of the other columns. Otherwise the chain of layers before the first LSTM must
    be affine in the raw notes; it is measured on probe notes and checked: ``x = notes @ matrix
    + offset``.
    """
    from .model import PitchEmbedding

    input_dim = int(first_lstm.cell.kernel.shape[0]) - int(style_dim)  # the style's rows last
    # probes: no note, 64 in each column alone, and an ordinary note (for the check)
    ordinary = np.array([61.0, 0.5, 0.25, 90.0])[:features]
    probe = np.concatenate([np.zeros((1, features)), np.eye(features) * 64.0, ordinary[None]])
    if any(isinstance(layer, PitchEmbedding) for layer in pre):
        if len(pre) != 1:
            raise MusicRNNError("the sampler supports a PitchEmbedding only as the sole input layer")
        table = np.asarray(_to_numpy(pre[0].embedding.embeddings), dtype=np.float64)
        dim = table.shape[1]
        if table.shape[0] != N_PITCHES or input_dim != dim + features - 1:
            raise MusicRNNError("the pitch embedding does not match the first LSTM's input size")
        probe[:, 0] = 60.0  # one pitch throughout: only the other columns change the rest
        rest = np.asarray(_to_numpy(pre[0](probe[None].astype(np.float32))),
                          dtype=np.float64)[0, :, dim:]
        offset = rest[0]
        matrix = (rest[2: features + 1] - offset) / 64.0
        if not (np.allclose(offset, 0.0, atol=1e-6) and np.allclose(
                probe[-1, 1:] @ matrix, rest[-1], rtol=1e-4, atol=1e-5)):
            raise MusicRNNError("the pitch embedding's other columns are not a scaling of the "
                                "raw notes")
        return table, matrix, np.zeros(input_dim)
    x = probe[None].astype(np.float32)
    for layer in pre:
        x = np.asarray(_to_numpy(layer(x)), dtype=np.float64)
    x = x[0]
    if x.shape[-1] != input_dim:
        raise MusicRNNError(
            f"the layers before the first LSTM give {x.shape[-1]} features, it expects {input_dim}"
        )
    offset = x[0]
    matrix = (x[1: features + 1] - offset) / 64.0
    if not np.allclose(probe[-1] @ matrix + offset, x[-1], rtol=1e-4, atol=1e-5):
        raise MusicRNNError(
            "the layers before the first LSTM are not an affine scaling of the raw notes; "
            "the sampler supports NoteScaling, PitchEmbedding and other affine input scalings"
        )
    return None, matrix, offset


# ---------------------------------------------------------------------------------------------
# The sampler
# ---------------------------------------------------------------------------------------------

_blas_controller: Any = None


def blas_threads(threads: int | None):
    """A context manager running BLAS (NumPy's matrix products) on ``threads`` threads.

    The sampler's products are small (one note per stream per call): split over threads they
    spend more time waiting on each other than computing, and on a busy machine a waiting thread
    can cost 20x. None (or threadpoolctl missing) leaves the library's setting alone.
    """
    import contextlib

    global _blas_controller
    if threads is None:
        return contextlib.nullcontext()
    if _blas_controller is None:
        try:
            from threadpoolctl import ThreadpoolController

            _blas_controller = ThreadpoolController().select(user_api="blas")
        except ImportError:
            _blas_controller = False
    if not _blas_controller:
        return contextlib.nullcontext()
    return _blas_controller.limit(limits=int(threads))


def default_reprime_every(config=None, *, trained_on_windows: bool | None = None) -> int | None:
    """How often to rebuild the state from the last window, or None to carry it for ever.

    A model trained with ``targets="last"`` only ever predicted after exactly ``seq_length``
    notes read from a zero state; carried for hundreds of notes its state drifts where training
    never took it (measured on such a model: 17.5% of top-1 pitches changed). For such a model
    the state is rebuilt from the last ``seq_length`` notes every ``seq_length // 2`` notes, so
    every prediction sees between one and one and a half windows of context. Models trained on
    every position (``targets="all"``) carry their state.

    Without a config, ``trained_on_windows`` says whether the model predicts after the last
    position only (a top LSTM that does not return sequences: the original design).
    """
    if config is not None:
        trained_on_windows = config.targets == "last"
        seq_length = config.seq_length
    else:
        seq_length = None
    if not trained_on_windows:
        return None
    return max(1, (seq_length or 50) // 2)


def check_guidance(guidance: Any) -> float:
    """``guidance`` as a float, or a one-line error: a finite number >= 0 (1: plain
    conditioning)."""
    if isinstance(guidance, str):
        try:
            guidance = float(guidance)
        except ValueError:
            raise MusicRNNError(f"guidance must be a number >= 0, got {guidance!r}") from None
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float, np.number)) \
            or not math.isfinite(float(guidance)) or float(guidance) < 0:
        raise MusicRNNError(f"guidance must be a finite number >= 0 (1: plain conditioning, "
                            f"above 1: a stronger style), got {guidance!r}")
    return float(guidance)


def model_styles(config: Any, net: Any = None) -> tuple[str, ...]:
    """The labels a model reads, ``("none", *config.styles)``; () for an unconditioned model.
    Without names in ``config`` (a model loaded without its run), ``style_1`` ... from the
    number of labels ``net`` reads."""
    count = getattr(net, "num_styles", 0) if net is not None else 0
    names = tuple(getattr(config, "styles", ()) or ())
    if net is not None and not count:
        return ()
    if count and len(names) != count - 1:
        names = tuple(f"style_{i}" for i in range(1, count))
    return style_labels(names) if names else ()


def check_temperature(temperature: float, what: str = "temperature") -> float:
    """``temperature`` as a float, or a clear error (naming it ``what``) unless it is a finite
    number > 0."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise MusicRNNError(f"{what} must be a number > 0, got {temperature!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise MusicRNNError(f"{what} must be a finite number > 0, got {temperature!r}")
    return value


def check_top_k(top_k: int | None) -> int | None:
    """``top_k`` as an int 1-127, None for off (None, 0 or 128), or a clear error."""
    if top_k is None or (not isinstance(top_k, str) and top_k == 0):
        return None
    try:
        value = float(top_k)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(top_k, bool) or not value.is_integer() or not 1 <= value <= N_PITCHES:
        raise MusicRNNError(f"top_k must be a whole number from 1 to {N_PITCHES}, got {top_k!r}")
    return None if int(value) == N_PITCHES else int(value)


def check_top_p(top_p: float | None) -> float | None:
    """``top_p`` as a float in (0, 1), None for off (None or 1), or a clear error."""
    if top_p is None:
        return None
    try:
        value = float(top_p)
    except (TypeError, ValueError):
        raise MusicRNNError(f"top_p must be a number in (0, 1], got {top_p!r}") from None
    if not 0.0 < value <= 1.0:
        raise MusicRNNError(f"top_p must be in (0, 1], got {top_p!r}")
    return None if value == 1.0 else value


SECONDS_CHUNK = 256  # notes drawn at a time by Generator.generate(seconds=...)


def check_num_notes(num_notes: int) -> int:
    """``num_notes`` as an int, or a clear error when it is not 1 .. :data:`MAX_NUM_NOTES`."""
    if isinstance(num_notes, bool):
        raise MusicRNNError(f"num_notes must be a whole number, got {num_notes!r}")
    try:
        as_float = float(num_notes)
    except (TypeError, ValueError):
        raise MusicRNNError(f"num_notes must be a whole number, got {num_notes!r}") from None
    if not as_float.is_integer() or not 1 <= as_float <= MAX_NUM_NOTES:
        raise MusicRNNError(
            f"num_notes must be a whole number from 1 to {MAX_NUM_NOTES:,}, got {num_notes!r}"
        )
    return int(as_float)


def pitch_distribution(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
                       top_p: float | None = None) -> np.ndarray:
    """Sampling probabilities from pitch logits ``(..., 128)``: temperature, then top-k, top-p.

    Top-k keeps the ``k`` most likely pitches (more on exact ties); top-p then keeps the most
    likely pitches until their probability reaches ``top_p`` (always at least one).
    """
    temperature = check_temperature(temperature)
    top_k, top_p = check_top_k(top_k), check_top_p(top_p)
    logits = np.asarray(logits, dtype=np.float64)
    shape = logits.shape
    weights = _pitch_weights(logits.reshape(-1, shape[-1]).astype(np.float32), 1.0 / temperature,
                             top_k, top_p)
    weights = weights.astype(np.float64)
    return (weights / weights.sum(axis=1, keepdims=True)).reshape(shape)


def _pitch_weights(logits: np.ndarray, inverse_temperature: float, top_k: int | None,
                   top_p: float | None) -> np.ndarray:
    """Unnormalised sampling weights ``(batch, 128)`` (a new array)."""
    weights = logits * np.float32(inverse_temperature)
    weights -= weights.max(axis=1, keepdims=True)
    np.exp(weights, out=weights)
    if top_k is not None:
        kth = np.partition(weights, N_PITCHES - top_k, axis=1)[:, N_PITCHES - top_k, None]
        weights[weights < kth] = 0.0
    if top_p is not None:
        ordered = -np.sort(-weights, axis=1)
        before = np.cumsum(ordered, axis=1) - ordered  # mass of the more likely pitches
        keep = before < np.float32(top_p) * ordered.sum(axis=1, keepdims=True)
        keep[:, 0] = True
        smallest_kept = np.take_along_axis(ordered, keep.sum(axis=1, keepdims=True) - 1, axis=1)
        weights[weights < smallest_kept] = 0.0
    return weights


class Sampler:
    """Generate notes one LSTM step at a time, for ``batch_size`` independent streams.

    Args:
        model: a note model (raw notes in, ``pitch``/``step``/``duration`` out), e.g.
            ``musicrnn.model.load_run(run_dir).model``.
        batch_size: streams generated side by side (each with its own random draws).
        seed: seed of the random generator; the same seed, primer and settings give exactly the
            same notes.
        reprime_every: rebuild the state from the last ``window`` notes every this many notes;
            ``None`` carries the state for ever; ``"auto"`` decides from ``config`` (or, without
            one, from the model's layout) with :func:`default_reprime_every`.
        config: the run's :class:`~musicrnn.model.ModelConfig` (gives ``seq_length`` and
            ``targets``).
        window: notes of context a re-prime reads (default ``config.seq_length``, else the
            primer's length).
        timing_noise: log-normal jitter on generated step and duration (0: the model's values, as
            the original; 0.1 is about +-10%).
        verify: check the NumPy network against the Keras model once (a few milliseconds).
        threads: BLAS threads while sampling (see :func:`blas_threads`; None: leave as is).
        workers: threads that step blocks of streams side by side (NumPy releases the GIL in
            its loops); ``"auto"``: two for 32 streams or more, else one. The split does not
            depend on the machine, so a seed gives the same notes everywhere the arithmetic is
            the same.
        net: the model's :class:`NoteRNN`, when one was already read (and checked) from it.
        velocity_temperature: the temperature of the velocity draws of a model with a velocity
            head (each call of :meth:`sample` / :meth:`next_note` may give its own); below 1 the
            dynamics keep to the most likely level, above 1 they vary more.
        default_velocity: the velocity given to the notes of a 3-column primer fed to a velocity
            model (:data:`musicrnn.timing.DEFAULT_VELOCITY`, 64: what the MIDI specification asks
            of a keyboard without velocity sensing; the MAESTRO v2 sample's median is 67).
        style: a conditioned model's style: a name of ``config.styles`` (any case), ``"none"``
            or None (no style: what label dropout trained), a label index, or one of those per
            stream (a batch can mix styles). :meth:`set_style` changes it between two notes;
            :meth:`morph` mixes two styles' vectors.
        guidance: classifier-free guidance (one for every stream, or one per stream): every
            categorical head's logits become ``none + g x (style - none)``, the "none" label's
            logits read from a twin of every stream that sees the same notes with label 0. 1 (the default): plain conditioning (no twin);
            above 1: a stronger style; 0: unconditioned. A regression head keeps the styled
            stream's value.
        twins: keep the "none" twins even at guidance 1, so that :meth:`set_guidance` can
            change the guidance at any note (a live performance's control does).

    A velocity model's notes have 4 columns (pitch, step, duration, velocity) in and out; every
    other model's 3. Notes of the other width are adapted as they come in (a 4th column dropped,
    or ``default_velocity`` added).

    Example::

        sampler = Sampler(run.model, config=run.config, seed=1)
        sampler.prime(run.seed_sequence)
        notes = sampler.sample(200, temperature=1.5)[0]   # (200, 3) raw notes; (200, 4) with
        #                                                   velocity
    """

    def __init__(self, model, *, batch_size: int = 1, seed: int | None = None,
                 reprime_every: int | None | str = "auto", config=None, window: int | None = None,
                 timing_noise: float = 0.0, verify: bool = True, threads: int | None = 1,
                 workers: int | str = "auto", net: "NoteRNN | NoteTransformer | None" = None,
                 velocity_temperature: float = 1.0, default_velocity: int = DEFAULT_VELOCITY,
                 style: Any = None, guidance: float = 1.0, twins: bool = False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise MusicRNNError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if not (isinstance(timing_noise, (int, float)) and 0.0 <= timing_noise <= 2.0):
            raise MusicRNNError(f"timing_noise must be in [0, 2], got {timing_noise!r}")
        self.model = model
        if config is None:
            config = _infer_config(model)
        self.config = config
        if net is None:
            net = note_network(model, config)
            if verify:
                net.check_against(model)
        self.net = net
        self.features = net.features  # columns per note in and out: 3, or 4 with velocity
        self.velocity_temperature = check_temperature(velocity_temperature,
                                                      "velocity_temperature")
        if isinstance(default_velocity, bool) or not isinstance(
                default_velocity, (int, np.integer)) or not 1 <= default_velocity <= 127:
            raise MusicRNNError(f"default_velocity must be a whole number 1-127, got "
                                f"{default_velocity!r}")
        self.default_velocity = int(default_velocity)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.timing_noise = float(timing_noise)
        self.threads = threads
        if reprime_every == "auto":
            reprime_every = default_reprime_every(
                config, trained_on_windows=not self.net.return_sequences_top
            )
        elif reprime_every is not None:
            if isinstance(reprime_every, bool) or not isinstance(reprime_every, (int, np.integer)) \
                    or reprime_every < 1:
                raise MusicRNNError(
                    f"reprime_every must be a whole number >= 1, None or 'auto', got {reprime_every!r}"
                )
            reprime_every = int(reprime_every)
        if reprime_every is not None and isinstance(self.net, NoteTransformer):
            raise MusicRNNError(
                "a transformer's sampler keeps a sliding window of cached keys instead of "
                "re-priming; leave reprime_every at 'auto' or None")
        self.reprime_every: int | None = reprime_every
        self.window = int(window) if window else (int(config.seq_length) if config else None)
        if workers == "auto":  # fixed, not per machine: the same seed gives the same notes
            workers = 2 if self.batch_size >= 32 else 1
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise MusicRNNError(f"workers must be a whole number >= 1 or 'auto', got {workers!r}")
        self.workers = int(workers)
        self.guidance = self._check_guidances(guidance)
        self.styles = model_styles(self.config, self.net)  # ("none", *config.styles) or ()
        self._style_mix = self._resolve_mix(style)  # (batch, labels) or None
        # streams the network steps: every stream, and its "none" twin when guided
        self._guided = bool(self.styles) and (self._any_guidance() or bool(twins))
        self._rows = self.batch_size * (2 if self._guided else 1)
        self._lanes = 0
        self._state: _State | None = None
        self._lane_notes: np.ndarray | None = None
        self._heads: np.ndarray | None = None  # head outputs after the last note fed
        self._count = 0  # notes fed since the state was zeroed
        self._primed_at = 0  # notes the primer fed
        self._ensure_state()

    # -- description ----------------------------------------------------------------------------
    def describe(self) -> str:
        """One sentence on how the state is kept (for notebooks and the CLI)."""
        if isinstance(self.net, NoteTransformer):
            return (f"The transformer caches the keys and values of the last "
                    f"{self.net.capacity} notes and attends over them: one step per note, the "
                    "oldest note leaving the window as a new one comes in."
                    + self._describe_style())
        if self.reprime_every is None:
            return "The LSTM state is carried from note to note for the whole piece." \
                + self._describe_style()
        window = f"{self.window}-note" if self.window else "primer-length"
        return (
            f"The model was trained on {window} windows only (targets='last'), so every "
            f"{self.reprime_every} notes the sampler rebuilds the LSTM state from the last window."
            + self._describe_style()
        )

    def _check_guidances(self, guidance: Any) -> "float | np.ndarray":
        """One guidance for every stream (a float), or one per stream (an array)."""
        if isinstance(guidance, (list, tuple, np.ndarray)):
            if len(guidance) != self.batch_size:
                raise MusicRNNError(f"give one guidance, or one per stream ({self.batch_size}), "
                                    f"got {len(guidance)}")
            return np.array([check_guidance(g) for g in guidance], dtype=np.float32)
        return check_guidance(guidance)

    def _any_guidance(self) -> bool:
        return bool(np.any(np.asarray(self.guidance) != 1.0))

    def _describe_style(self) -> str:
        if not self.styles:
            return ""
        values = sorted({float(g) for g in np.atleast_1d(self.guidance)})
        guided = (f", guidance {', '.join(f'{g:g}' for g in values)}" if self._guided
                  else "")
        names = self.style_names()
        shown = names[0] if len(set(names)) == 1 else ", ".join(names)
        return f" Style: {shown}{guided}."

    # -- styles ---------------------------------------------------------------------------------
    def _resolve_mix(self, style: Any) -> np.ndarray | None:
        """``(batch, labels)`` weights of each stream's label(s), None for an unconditioned
        model asked for no style."""
        if not self.styles:
            if style is not None and str(style).strip().lower() not in ("none", "0"):
                raise MusicRNNError("this model was trained without styles (no --condition); "
                                    "sample it without a style")
            return None
        if isinstance(style, (list, tuple, np.ndarray)) and not isinstance(style, str):
            if len(style) != self.batch_size:
                raise MusicRNNError(f"give one style per stream ({self.batch_size}), got "
                                    f"{len(style)}")
            labels = [style_index(self.styles, one) for one in style]
        else:
            labels = [style_index(self.styles, style)] * self.batch_size
        return self.net.style_mix(np.asarray(labels), self.batch_size)

    def style_names(self) -> list[str]:
        """Each stream's style now (``"70% a, 30% b"`` while morphing)."""
        if self._style_mix is None:
            return ["none"] * self.batch_size
        return [mix_name(self.styles, row) for row in self._style_mix]

    def set_style(self, style: Any, streams: Any = None) -> "Sampler":
        """Change the style of every stream from the next note on: a name, ``"none"``, a label
        index, or one per stream; with ``streams`` (stream indices) only those streams take
        ``style`` (one style for them all)."""
        if not self.styles:
            self._resolve_mix(style)  # the error for a model without styles
            return self
        new = self._resolve_mix(style) if streams is None else self._style_mix.copy()
        if streams is not None:
            chosen = np.atleast_1d(np.asarray(streams, dtype=np.int64))
            new[chosen] = self._resolve_mix(style)[: len(chosen)]
        self._style_mix = new
        self._apply_style()
        return self

    def morph(self, first: Any, second: Any, amount: float) -> "Sampler":
        """Every stream between two styles from the next note on: their vectors mixed, ``0``
        all ``first``, ``1`` all ``second``."""
        if not (isinstance(amount, (int, float)) and not isinstance(amount, bool)
                and 0.0 <= amount <= 1.0):
            raise MusicRNNError(f"a morph amount must be in [0, 1], got {amount!r}")
        if not self.styles:
            self._resolve_mix(first)
            return self
        a, b = style_index(self.styles, first), style_index(self.styles, second)
        mix = np.zeros((self.batch_size, len(self.styles)), np.float32)
        mix[:, a] += 1.0 - amount
        mix[:, b] += amount
        self._style_mix = mix
        self._apply_style()
        return self

    def set_guidance(self, guidance: float) -> "Sampler":
        """Change the guidance from the next note on. Guidance other than 1 reads each
        stream's "none" twin: a sampler made without twins (guidance 1, ``twins=False``) gets
        them here, before it is primed, and refuses after (prime it again)."""
        guidance = self._check_guidances(guidance)
        if self.styles and np.any(np.asarray(guidance) != 1.0) and not self._guided:
            if self._count:
                raise MusicRNNError("this sampler was primed without guidance; make it with "
                                    "guidance= or twins=True, or prime it again after "
                                    "set_guidance")
            self._guided = True
            self._rows = 2 * self.batch_size
            self._state = None
            self._ensure_state()
        self.guidance = guidance
        return self

    def _apply_style(self) -> None:
        """Write each stream's style into the state (every lane; twins get "none")."""
        if self._style_mix is None or self._state is None:
            return
        mix = self._style_mix
        if self._guided:
            none = np.zeros_like(mix)
            none[:, 0] = 1.0
            mix = np.concatenate([mix, none])
        self.net.set_style(self._state, np.tile(mix, (self._lanes, 1)))

    def _combine(self, heads: np.ndarray) -> np.ndarray:
        """The guided head outputs of every stream from its row and its twin's."""
        if not self._guided:
            return heads
        batch = self.batch_size
        if not self._any_guidance():
            return heads[:batch]
        styled, none = heads[:batch], heads[batch:]
        guidance = np.asarray(self.guidance, dtype=np.float32)
        out = none + (guidance[:, None] if guidance.ndim else guidance) * (styled - none)
        if self.net.timing_width == 1:  # regressed step and duration: the styled values
            p = self.net.pitch_width
            out[:, p: p + 2] = styled[:, p: p + 2]
        return out

    # -- the state and its lanes ----------------------------------------------------------------
    # Re-priming every R notes from the last W notes is done without stopping: the state holds
    # L = ceil((W + R) / R) "lanes" per stream, stepped together as one batch. Lane k is zeroed
    # W notes before the k-th re-prime is due and reads every note from then on, so when it
    # takes over it has read exactly the last W notes from a zero state -- the same numbers as
    # rebuilding the state from the window, at the cost of a few more rows per step.

    def _ensure_state(self) -> None:
        lanes = 1
        if self.reprime_every is not None and self.window is not None:
            lanes = -(-(self.window + self.reprime_every) // self.reprime_every)
        if self._state is None or lanes != self._lanes:
            self._lanes = lanes
            self._state = self.net.new_state(self._rows * lanes, blocks=self.workers)
            self._lane_notes = np.zeros((lanes, self._rows, self.features), dtype=np.float32)
            self._heads = None
            self._count = self._primed_at = 0
            self._apply_style()

    def _active_rows(self, count: int) -> slice:
        """The rows of the lane whose state predicts the next note after ``count`` notes."""
        if self._lanes == 1:
            return slice(None)
        k = max(0, count - self._primed_at) // self.reprime_every
        lane = k % self._lanes
        return slice(lane * self._rows, (lane + 1) * self._rows)

    def _advance(self, note: np.ndarray, heads: bool = True) -> None:
        """Feed one ``(batch, features)`` note to every lane; keep the active lane's head
        outputs."""
        count = self._count
        if self._lanes > 1 or self._rows != self.batch_size:
            if self._lanes > 1:
                due = count - self._primed_at + self.window  # lane k starts when due == k * R
                if due > 0 and due % self.reprime_every == 0:
                    lane = (due // self.reprime_every) % self._lanes
                    self._state.reset(slice(lane * self._rows, (lane + 1) * self._rows))
            lanes = self._lane_notes.reshape(self._lanes, -1, self.batch_size, self.features)
            lanes[:] = note  # every lane, and in it every stream and its twin
            note = self._lane_notes.reshape(-1, self.features)
        self._count = count + 1
        if heads:
            self._heads = self._combine(
                self.net.step(self._state, note, heads=self._active_rows(count + 1)))
        else:
            self.net.step(self._state, note, heads=False)

    # -- feeding --------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> "Sampler":
        """Zero the state (and reseed the random generator when ``seed`` is given)."""
        if seed is not None:
            self.seed = seed
            self.rng = np.random.default_rng(seed)
        self._ensure_state()
        self._state.reset()
        self._heads = None
        self._count = self._primed_at = 0
        return self

    def _as_batch(self, notes) -> np.ndarray:
        notes = np.asarray(notes, dtype=np.float32)
        if notes.ndim == 2:
            notes = np.broadcast_to(notes, (self.batch_size, *notes.shape))
        if notes.ndim != 3 or notes.shape[0] != self.batch_size or notes.shape[2] not in (3, 4):
            raise MusicRNNError(
                f"notes must be (time, 3) or ({self.batch_size}, time, 3) raw (pitch, step, "
                f"duration) (4 columns with velocity), got shape {tuple(np.shape(notes))}"
            )
        return match_features(notes, self.features, self.default_velocity)

    def prime(self, notes) -> "Sampler":
        """Start from a zero state and read the primer: raw ``(time, 3)`` (the same for every
        stream) or ``(batch, time, 3)``; 3 or 4 columns (velocity) for any model (adapted).

        When the sampler re-primes, only the last ``window`` primer notes are read (the context
        the model was trained on); otherwise all of them.
        """
        notes = self._as_batch(validate_notes(notes, what="primer", batch=True))
        if self.window is None and self.reprime_every is not None:
            self.window = notes.shape[1]
        if self.reprime_every is not None:
            notes = notes[:, -self.window:]
        self.reset()
        self._primed_at = notes.shape[1]
        self._feed(notes)
        return self

    def feed(self, notes) -> "Sampler":
        """Advance the state through known notes (``(time, 3)`` or ``(batch, time, 3)``),
        without sampling -- e.g. a melody a player is playing."""
        notes = self._as_batch(validate_notes(notes, what="notes", batch=True))
        if self.window is None and self.reprime_every is not None:
            self.window = notes.shape[1]
            self.reset()
        self._feed(notes)
        return self

    def _feed(self, notes: np.ndarray) -> None:
        last = notes.shape[1] - 1
        with np.errstate(over="ignore"), blas_threads(self.threads):
            for t in range(notes.shape[1]):
                self._advance(notes[:, t], heads=t == last)

    # -- sampling -------------------------------------------------------------------------------
    def distribution(self, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, velocity_temperature: float | None = None
                     ) -> dict[str, np.ndarray]:
        """The next note's distribution per stream: ``pitch`` ``(batch, 128)`` probabilities, and
        the predicted ``step`` and ``duration`` ``(batch,)`` (before clamping and noise; the
        median time for a model with categorical timing, whose class probabilities over
        :data:`musicrnn.timing.TIME_VALUES` come as ``step_probs`` and ``duration_probs``).

        A velocity model adds ``velocity_probs`` ``(batch, bins)``, the probabilities of the
        velocity classes at ``velocity_temperature`` (default: the sampler's), and ``velocity``
        ``(batch,)``, the velocity of their median class."""
        heads = self._require_primed()
        width, p = self.net.timing_width, self.net.pitch_width
        step = heads[:, p: p + width]
        duration = heads[:, p + width: p + 2 * width]
        out = {  # a pitch drawn after the step: its distribution with the step summed out
            "pitch": pitch_distribution(marginal_pitch_logits(heads[:, :p], step), temperature,
                                        top_k, top_p),
            "step": timing_point(step)[:, 0].copy(),
            "duration": timing_point(duration)[:, 0].copy(),
        }
        if width > 1:
            out["step_probs"] = time_class_probabilities(step)
            out["duration_probs"] = time_class_probabilities(duration)
        if self.net.velocity:
            inverse = 1.0 / self._velocity_temperature(velocity_temperature)
            probs = time_class_probabilities(heads[:, p + 2 * width:] * inverse)
            median = np.minimum((np.cumsum(probs, axis=-1) < 0.5).sum(axis=-1),
                                self.net.velocity_bins - 1)
            out["velocity_probs"] = probs
            out["velocity"] = class_velocity(median, self.net.velocity_bins).astype(np.float32)
        return out

    def _velocity_temperature(self, velocity_temperature: float | None) -> float:
        if velocity_temperature is None:
            return self.velocity_temperature
        return check_temperature(velocity_temperature, "velocity_temperature")

    def _require_primed(self) -> np.ndarray:
        if self._heads is None:
            raise MusicRNNError("prime the sampler with at least one note before sampling")
        return self._heads

    def next_note(self, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, velocity_temperature: float | None = None
                  ) -> np.ndarray:
        """Sample one note per stream and feed it back: ``(batch, 3)`` raw notes (``(batch,
        4)`` for a velocity model)."""
        out = np.empty((self.batch_size, 1, self.features), dtype=np.float32)
        self._sample_into(out, check_temperature(temperature), check_top_k(top_k),
                          check_top_p(top_p), self._velocity_temperature(velocity_temperature))
        return out[:, 0]

    def sample(self, num_notes: int, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, progress: bool = False,
               velocity_temperature: float | None = None) -> np.ndarray:
        """Generate ``num_notes`` notes per stream: ``(batch, num_notes, 3)`` raw notes, or
        ``(batch, num_notes, 4)`` with each note's velocity for a velocity model.

        Pitch is drawn from the logits divided by ``temperature`` (then top-k, top-p); step and
        duration are the model's values -- or, with categorical timing, drawn from its time-class
        distributions -- with ``timing_noise`` jitter, clamped at >= 0. A velocity class is
        drawn from the velocity logits divided by ``velocity_temperature`` (default: the
        sampler's) and played at its representative velocity.
        """
        num_notes = check_num_notes(num_notes)
        out = np.empty((self.batch_size, num_notes, self.features), dtype=np.float32)
        self._sample_into(out, check_temperature(temperature), check_top_k(top_k),
                          check_top_p(top_p), self._velocity_temperature(velocity_temperature),
                          progress=progress)
        return out

    def _sample_into(self, out: np.ndarray, temperature: float, top_k: int | None,
                     top_p: float | None, velocity_temperature: float = 1.0,
                     progress: bool = False) -> None:
        self._require_primed()
        batch = self.batch_size
        inverse_temperature = 1.0 / temperature
        rng = self.rng
        noise = self.timing_noise
        width, p = self.net.timing_width, self.net.pitch_width
        timing_end = p + 2 * width  # the velocity logits follow
        bins = self.net.velocity_bins
        if bins:
            velocities = velocity_values(bins).astype(np.float32)
            inverse_velocity_temperature = 1.0 / velocity_temperature
        steps = range(out.shape[1])
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="generating", unit="note")
        with np.errstate(over="ignore"), blas_threads(self.threads):
            for t in steps:
                heads = self._heads
                note = out[:, t]
                pitch_draw = rng.random(batch, dtype=np.float32)
                if width == 1:
                    note[:, 1:3] = heads[:, p: timing_end]
                else:  # step and duration classes of every stream in one draw
                    times = sample_time_classes(
                        heads[:, p: timing_end].reshape(2 * batch, width),
                        rng.random(2 * batch, dtype=np.float32))
                    note[:, 1:3] = times.reshape(batch, 2)
                # drawn after the step: the logits of its group (a model with step groups)
                logits = pitch_given_steps(heads[:, :p], note[:, 1])
                weights = _pitch_weights(logits, inverse_temperature, top_k, top_p)
                cumulative = np.cumsum(weights, axis=1)
                draw = pitch_draw * cumulative[:, -1]
                if batch == 1:
                    pitch = np.searchsorted(cumulative[0], draw[0], side="right")
                else:
                    pitch = (cumulative <= draw[:, None]).sum(axis=1)
                note[:, 0] = np.minimum(pitch, N_PITCHES - 1)
                if bins:
                    classes = sample_velocity_classes(heads[:, timing_end:],
                                                      rng.random(batch, dtype=np.float32),
                                                      inverse_velocity_temperature)
                    note[:, 3] = velocities[classes]
                if noise:
                    note[:, 1:3] *= np.exp(noise * rng.standard_normal((batch, 2), np.float32))
                np.maximum(note[:, 1:3], 0.0, out=note[:, 1:3])
                self._advance(note)


# ---------------------------------------------------------------------------------------------
# One-call generation, the reference loop, and note tables
# ---------------------------------------------------------------------------------------------


def generate(model, primer, num_notes: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed: int | None = None, batch_size: int = 1, *,
             config=None, reprime_every: int | None | str = "auto", timing_noise: float = 0.0,
             progress: bool = False, velocity_temperature: float = 1.0,
             default_velocity: int = DEFAULT_VELOCITY, style: Any = None,
             guidance: float = 1.0) -> np.ndarray:
    """Prime a :class:`Sampler` with ``primer`` and generate ``num_notes`` notes.

    Returns raw notes: ``(num_notes, 3)`` for one stream from a ``(time, 3)`` primer, else
    ``(batch_size, num_notes, 3)`` -- 4 columns (velocity last) for a velocity model, whose
    velocities are drawn at ``velocity_temperature`` (a 3-column primer plays at
    ``default_velocity``). A conditioned model plays in ``style`` with ``guidance`` (see
    :class:`Sampler`).
    """
    num_notes = check_num_notes(num_notes)
    sampler = Sampler(model, batch_size=batch_size, seed=seed, config=config,
                      reprime_every=reprime_every, timing_noise=timing_noise,
                      velocity_temperature=velocity_temperature,
                      default_velocity=default_velocity, style=style, guidance=guidance)
    sampler.prime(primer)
    notes = sampler.sample(num_notes, temperature=temperature, top_k=top_k, top_p=top_p,
                           progress=progress)
    if batch_size == 1 and np.ndim(primer) == 2:
        return notes[0]
    return notes


def tutorial_generate(model, primer, num_notes: int, temperature: float = 1.0,
                      seq_length: int | None = None, seed: int | None = None) -> np.ndarray:
    """The tutorial's loop, kept as the reference: ``model.predict`` on the window for every note.

    The window is the last ``seq_length`` notes (default: the primer's length); pitch is drawn
    from logits / temperature, step and duration clamped at 0; a velocity model's velocity class
    is drawn from its logits (temperature 1). Slow by design (one full forward pass over the
    window per note) -- benchmarks and tests compare the sampler with it.
    """
    num_notes = check_num_notes(num_notes)
    temperature = check_temperature(temperature)
    features = _input_features(model)
    window = match_features(validate_notes(primer, what="primer"), features).copy()
    seq_length = seq_length or len(window)
    rng = np.random.default_rng(seed)
    generated = np.zeros((num_notes, features), dtype=np.float32)
    for i in range(num_notes):
        inputs = window[-seq_length:][None]
        predictions = model.predict(inputs, verbose=0)
        logits = np.asarray(predictions["pitch"], dtype=np.float64)
        logits = logits.reshape(-1, logits.shape[-1])[-1:]

        def draw_pitch(logits: np.ndarray) -> int:
            probs = np.exp((logits - logits.max()) / temperature)
            return rng.choice(N_PITCHES, p=probs / probs.sum())

        if logits.shape[-1] == N_PITCHES:  # the tutorial's order: pitch, step, duration
            pitch = draw_pitch(logits[0])
        step, duration = (_tutorial_time(np.asarray(predictions[name]), rng)
                          for name in ("step", "duration"))
        if logits.shape[-1] > N_PITCHES:  # the pitch follows the step: its group's logits
            pitch = draw_pitch(pitch_given_steps(logits, [step])[0])
        generated[i, :3] = (pitch, max(step, 0.0), max(duration, 0.0))
        if features == 4:
            velocity_logits = np.asarray(predictions["velocity"], dtype=np.float32)
            velocity_logits = velocity_logits.reshape(-1, velocity_logits.shape[-1])[-1:]
            classes = sample_velocity_classes(velocity_logits, rng.random(1, dtype=np.float32))
            generated[i, 3] = class_velocity(classes, velocity_logits.shape[-1])[0]
        window = np.concatenate([window, generated[i: i + 1]])[-seq_length:]
    return generated


def _tutorial_time(values: np.ndarray, rng: np.random.Generator) -> float:
    """The last position's time from a timing head: the value, or a class drawn from logits."""
    width = values.shape[-1] if values.ndim > 1 else 1
    last = values.reshape(-1, width)[-1:]
    if width == 1:
        return float(last[0, 0])
    return float(sample_time_classes(last.astype(np.float32), rng.random(1, dtype=np.float32))[0])


def notes_table(generated, velocity: int | Sequence[int] | np.ndarray | None = None,
                start: float = 0.0):
    """Raw generated notes ``(n, 3)`` or ``(n, 4)`` as a note table (a DataFrame with
    ``NOTE_COLUMNS``).

    ``velocity``: one MIDI velocity (or one per note) for every note; by default each note's own
    velocity when the notes have a 4th column (a velocity model's), else
    :data:`NOTES_TABLE_VELOCITY` (100, the original's). ``start`` is the onset of the note
    *before* the first one (e.g. the primer's last note), so that the first note begins ``step``
    seconds after it.
    """
    import pandas as pd

    from .notes import NOTE_COLUMNS

    notes = np.asarray(generated, dtype=np.float64)
    if notes.ndim != 2 or notes.shape[1] not in (3, 4):
        raise MusicRNNError(f"generated notes must be (n, 3) or (n, 4) with velocity, got shape "
                            f"{notes.shape}")
    pitch = np.clip(np.rint(notes[:, 0]), 0, N_PITCHES - 1).astype(np.int16)
    step = np.maximum(notes[:, 1], 0.0)
    duration = np.maximum(notes[:, 2], 0.0)
    onset = float(start) + np.cumsum(step)
    if velocity is None:
        velocity = np.rint(notes[:, 3]) if notes.shape[1] == 4 else NOTES_TABLE_VELOCITY
    velocities = np.broadcast_to(np.asarray(velocity), (len(notes),)).astype(np.int16)
    if len(velocities) and (velocities.min() < 1 or velocities.max() > 127):
        raise MusicRNNError("velocity must be 1-127")
    table = pd.DataFrame({
        "pitch": pitch, "step": step, "duration": duration, "start": onset,
        "end": onset + duration, "velocity": velocities,
    })
    return table[list(NOTE_COLUMNS)]


# ---------------------------------------------------------------------------------------------
# Where the model and the primer come from
# ---------------------------------------------------------------------------------------------


@dataclass
class Generator:
    """A model ready to generate: the model, its config (when known) and a primer.

    Build one with :func:`load_generator` (from a run directory, or a model file and a seed
    sequence); the CLI, the notebook and the widgets panel all start from one. The primer is kept
    with the columns the model reads (:attr:`features`): a velocity model's primer has 4 (a
    3-column one gets ``default_velocity``), every other model's 3.
    """

    model: Any  # raw-input Keras note model
    config: Any  # musicrnn.model.ModelConfig or None
    primer: np.ndarray  # (n, 3) float32 raw notes; (n, 4) with velocity for a velocity model
    primer_source: str  # where the primer came from, for people
    run_dir: Path | None = None
    info: dict | None = None  # the run's config.json when there is one
    _net: "NoteRNN | NoteTransformer | None" = field(default=None, repr=False, compare=False)
    default_velocity: int = DEFAULT_VELOCITY  # velocity of a 3-column primer's notes

    def __post_init__(self) -> None:
        self.primer = match_features(validate_notes(self.primer, what="primer"), self.features,
                                     self.default_velocity)

    @property
    def features(self) -> int:
        """Columns per note the model reads and generates: 4 with velocity, else 3."""
        return _input_features(self.model)

    @property
    def velocity(self) -> bool:
        """Whether the model reads and predicts each note's velocity."""
        return self.features == 4

    def sampler(self, *, batch_size: int = 1, seed: int | None = None,
                reprime_every: int | None | str = "auto", timing_noise: float = 0.0,
                velocity_temperature: float = 1.0, style: Any = None,
                guidance: float = 1.0) -> Sampler:
        """A :class:`Sampler` for this model (re-priming decided from its config); the weights
        are read out of the model (and checked) once per generator."""
        if self._net is None:
            self._net = note_network(self.model, self.config)
            self._net.check_against(self.model)
        return Sampler(self.model, batch_size=batch_size, seed=seed, config=self.config,
                       reprime_every=reprime_every, timing_noise=timing_noise, net=self._net,
                       velocity_temperature=velocity_temperature,
                       default_velocity=self.default_velocity, style=style, guidance=guidance)

    @property
    def styles(self) -> tuple[str, ...]:
        """The styles the model plays, ``("none", ...)`` (() for a model without styles)."""
        if self._net is None:
            self._net = note_network(self.model, self.config)
            self._net.check_against(self.model)
        return model_styles(self.config, self._net)

    def generate(self, num_notes: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, batch_size: int = 1,
                 seconds: float | None = None, **options: Any) -> np.ndarray:
        """Generate from the primer: ``(num_notes, 3)`` raw notes, ``(batch, num_notes, 3)`` for
        ``batch_size > 1`` (4 columns, velocity last, for a velocity model; ``options`` such
        as ``velocity_temperature`` go to :meth:`sampler`).

        ``seconds`` asks for a piece of that length instead (one stream): notes are drawn, the
        state carried, until one starts at ``seconds`` or later; the piece is every note that
        starts before it, ``num_notes`` at most. The same seed gives the same first notes
        whatever the length asked for.
        """
        num_notes = check_num_notes(num_notes)
        if seconds is not None:
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
                    math.isfinite(seconds) and seconds > 0):
                raise MusicRNNError(f"seconds must be a number > 0, got {seconds!r}")
            if batch_size != 1:
                raise MusicRNNError("seconds= makes one piece: use batch_size=1")
        sampler = self.sampler(batch_size=batch_size, seed=seed, **options)
        sampler.prime(self.primer)
        if seconds is None:
            notes = sampler.sample(num_notes, temperature=temperature, top_k=top_k, top_p=top_p)
            return notes[0] if batch_size == 1 else notes
        chunks, drawn, onset = [], 0, 0.0
        while drawn < num_notes:
            chunk = sampler.sample(min(SECONDS_CHUNK, num_notes - drawn), temperature=temperature,
                                   top_k=top_k, top_p=top_p)[0]
            starts = onset + np.cumsum(chunk[:, 1], dtype=np.float64)
            inside = int(np.searchsorted(starts, seconds, side="left"))
            chunks.append(chunk[:inside])
            if inside < len(chunk):
                break
            drawn, onset = drawn + len(chunk), float(starts[-1])
        return np.concatenate(chunks)

    def with_primer(self, primer: np.ndarray, source: str) -> "Generator":
        """The same model with another primer."""
        return Generator(self.model, self.config, primer, source, self.run_dir, self.info,
                         self._net, self.default_velocity)

    @property
    def seq_length(self) -> int:
        return int(self.config.seq_length) if self.config is not None else len(self.primer)


def load_generator(run_dir: str | os.PathLike | None = None, *,
                   model_path: str | os.PathLike | None = None,
                   seed_sequence: str | os.PathLike | None = None,
                   primer: str | os.PathLike | None = None,
                   primer_length: int | None = None) -> Generator:
    """Load a model and a primer: from ``run_dir`` (its ``music_rnn_model.keras``, ``config.json``
    and ``seed_sequence.npy``), or from ``model_path`` (a ``.keras`` file, ours or the original
    research code's, or an original ``.weights.h5`` checkpoint) with ``seed_sequence``.

    ``primer`` (a ``.mid``/``.midi`` or ``.npy`` file) replaces the seed sequence; its last
    ``primer_length`` notes are used (default: the model's ``seq_length``). A MIDI primer gives
    a velocity model its own velocities.
    """
    if (run_dir is None) == (model_path is None):
        raise MusicRNNError("give either a run directory or a model file (not both)")
    if seed_sequence is not None and primer is not None:
        raise MusicRNNError("give either a seed sequence or a primer file, not both")
    # Files a person names are checked first, before the (slow) model loads.
    notes, source = None, ""
    if seed_sequence is not None:
        notes, source = read_notes_npy(seed_sequence), Path(seed_sequence).name
    if primer is not None:
        notes, source = load_primer(primer, velocity=True), Path(primer).name
    if run_dir is not None:
        folder = Path(run_dir).expanduser()
        if not (folder / "music_rnn_model.keras").is_file():
            where = "does not exist" if not folder.is_dir() else "holds no music_rnn_model.keras"
            raise MusicRNNError(
                f"the run directory {folder} {where}; train a model into it first (notebook "
                f"04_train or `musicrnn train --run-dir {folder}`), or pass --model FILE"
            )
    if model_path is not None:
        path = Path(model_path)
        if not path.is_file():
            raise MusicRNNError(f"no model file at {path}")
        beside = path.parent / "seed_sequence.npy"
        if notes is None:
            if not beside.is_file():
                raise MusicRNNError(
                    f"no primer: give a seed sequence (--seed-sequence FILE.npy) or a primer "
                    f"MIDI (--primer FILE.mid); there is no seed_sequence.npy beside {path.name}"
                )
            notes, source = read_notes_npy(beside), beside.name

    from . import model as model_lib

    if run_dir is not None:
        run = model_lib.load_run(run_dir, compile=False)  # sampled, never trained
        model, config, info, folder = run.model, run.config, run.info, Path(run.run_dir)
        if notes is None:
            notes, source = run.seed_sequence, f"{folder.name}/seed_sequence.npy"
    else:
        if path.name.endswith(".weights.h5"):
            model = model_lib.load_original_checkpoint(path, compile=False)
        else:
            model = model_lib.load_model(path, compile=False)
        config, info, folder = _infer_config(model), None, None
    if primer is not None:
        length = primer_length or (int(config.seq_length) if config is not None else None)
        if length:
            notes = notes[-length:]
    return Generator(model, config, notes, source, folder, info)


def load_primer(source: str | os.PathLike, *, length: int | None = None,
                velocity: bool = False) -> np.ndarray:
    """Primer notes from a file: a MIDI file (``.mid``/``.midi``, every non-drum note) or a
    ``.npy`` array of raw notes. Returns its last ``length`` notes (all when None), float32:
    ``(n, 3)``, or ``(n, 4)`` with the MIDI file's velocities when ``velocity`` (a ``.npy``
    file's notes come with the columns it has, 3 or 4)."""
    from .notes import FEATURES, midi_to_notes

    path = Path(source)
    if not path.is_file():
        raise MusicRNNError(f"no primer file at {path}")
    suffix = path.suffix.lower()
    if suffix in (".mid", ".midi"):
        try:
            table = midi_to_notes(path)
        except MusicRNNError as exc:
            raise MusicRNNError(f"cannot use {path.name} as a primer: {exc}") from exc
        if len(table) == 0:
            raise MusicRNNError(
                f"the primer MIDI {path} has no notes; give a file with at least one note"
            )
        columns = [*FEATURES, "velocity"] if velocity else list(FEATURES)
        notes = table[columns].to_numpy(dtype=np.float32)
    elif suffix == ".npy":
        notes = read_notes_npy(path)
    else:
        raise MusicRNNError(f"a primer must be a .mid, .midi or .npy file, got {path.name}")
    notes = validate_notes(notes, what=f"primer {path.name}")
    if length is not None:
        if length < 1:
            raise MusicRNNError(f"primer length must be >= 1, got {length}")
        notes = notes[-int(length):]
    return notes


def held_out_primer(corpus, length: int = 50, *, split: str | None = None,
                    piece: int | str | None = None, seed: int | None = None,
                    velocity: bool = False) -> tuple[np.ndarray, str]:
    """The first ``length`` notes of a held-out piece of ``corpus`` (a NoteCorpus).

    ``split`` defaults to ``"test"`` (``"validation"`` when the test split is empty); ``piece`` is
    an index into that split or a piece name; by default a piece is drawn with ``seed``.
    Returns ``(notes, "split/piece-name")``: ``(length, 3)`` notes, ``(length, 4)`` with each
    note's velocity when ``velocity``.
    """
    splits = [split] if split else ["test", "validation"]
    for name in splits:
        indices = corpus.indices(name)
        if len(indices):
            break
    else:
        raise MusicRNNError(
            f"the corpus {corpus.dataset!r} has no {' or '.join(splits)} pieces to take a primer from"
        )
    if isinstance(piece, str):
        matches = [i for i in indices if corpus.names[i] == piece]
        if not matches:
            raise MusicRNNError(f"no piece named {piece!r} in the {name} split")
        index = matches[0]
    elif piece is not None:
        if not 0 <= int(piece) < len(indices):
            raise MusicRNNError(f"piece must be 0..{len(indices) - 1} in the {name} split")
        index = indices[int(piece)]
    else:
        index = indices[np.random.default_rng(seed).integers(len(indices))]
    notes = piece_features(corpus, int(index), velocity)[: int(length)]
    if not len(notes):
        raise MusicRNNError(f"the piece {corpus.names[index]} has no notes")
    return validate_notes(notes, what="held-out primer"), f"{name}/{corpus.names[index]}"


def check_output_path(path: str | os.PathLike, suffixes: Sequence[str] = (".mid", ".midi")) -> Path:
    """Refuse, before any work, an output path that is a folder, has the wrong suffix, or lies in
    a folder that cannot be made or written."""
    out = Path(path).expanduser()
    if out.suffix.lower() not in suffixes:
        raise MusicRNNError(f"the output must be a {' or '.join(suffixes)} file, got {out.name!r}")
    if out.is_dir():
        raise MusicRNNError(f"the output {out} is a folder; give a file name")
    folder = out.parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise MusicRNNError(f"cannot write {out}: {existing} is not a writable folder")
    if out.exists() and not os.access(out, os.W_OK):
        raise MusicRNNError(f"cannot write {out}: the file exists and is read-only")
    return out


def resolve_run_dir(run_dir: str | os.PathLike | None = None) -> Path:
    """``run_dir`` as a Path; "" or None: the newest run under ``outputs/runs/`` with a model."""
    from . import paths

    if run_dir:
        return Path(run_dir).expanduser()
    runs = sorted(p for p in paths.RUNS.glob("*") if (p / "music_rnn_model.keras").is_file()) \
        if paths.RUNS.is_dir() else []
    if not runs:
        raise MusicRNNError(
            f"no trained run under {paths.RUNS}; train one first (notebook 04_train or "
            "`musicrnn train`) or set run_dir"
        )
    return runs[-1]


def carried_vs_window(model, notes, window: int, *, every: int = 1, max_positions: int = 400):
    """Carried state against the sliding window, note by note along ``notes``.

    At every ``every``-th position from ``window`` on, compare the next-pitch distribution of the
    carried state (which has read *all* the notes so far) with the model run on the last
    ``window`` notes only (the tutorial's way). Returns a DataFrame with ``context`` (notes read),
    ``tv_distance`` (total variation distance of the two distributions, 0 = identical, 1 =
    disjoint) and ``same_top1`` (whether the most likely pitch agrees). At ``context == window``
    both have read the same notes from a zero state, so they agree to float precision.
    """
    import pandas as pd

    notes = validate_notes(notes, what="notes")
    window = int(window)
    if not 1 <= window <= len(notes):
        raise MusicRNNError(f"window must be 1..{len(notes)} notes, got {window}")
    sampler = Sampler(model, reprime_every=None, verify=False)
    sampler.reset()
    positions = list(range(window, len(notes) + 1, max(1, int(every))))[:max_positions]
    carried = []
    fed = 0
    for context in positions:
        sampler.feed(notes[fed:context])
        fed = context
        carried.append(sampler.distribution()["pitch"][0])
    windows = np.stack([notes[c - window: c] for c in positions])
    heads = np.concatenate([keras_heads(model, windows[i: i + 256])
                            for i in range(0, len(windows), 256)])
    net = sampler.net
    windowed = pitch_distribution(marginal_pitch_logits(
        heads[:, :net.pitch_width], heads[:, net.pitch_width: net.pitch_width + net.timing_width]))
    carried = np.asarray(carried)
    return pd.DataFrame({
        "context": positions,
        "tv_distance": 0.5 * np.abs(carried - windowed).sum(axis=1),
        "same_top1": carried.argmax(axis=1) == windowed.argmax(axis=1),
    })


def choose_primer(generator: Generator, primer: str | os.PathLike = "", *, corpus=None,
                  seed: int | None = None) -> Generator:
    """``generator`` with the primer a notebook parameter names: ``""`` keeps its own (the run's
    seed sequence), ``"held-out"`` takes the start of a held-out piece of ``corpus``
    (:func:`held_out_primer`), anything else is a ``.mid``/``.midi``/``.npy`` file."""
    spec = str(primer or "")
    if not spec:
        return generator
    if spec == "held-out":
        if corpus is None:
            raise MusicRNNError('primer="held-out" needs the dataset\'s note corpus')
        notes, source = held_out_primer(corpus, generator.seq_length, seed=seed,
                                        velocity=generator.velocity)
        return generator.with_primer(notes, source)
    return generator.with_primer(load_primer(spec, length=generator.seq_length, velocity=True),
                                 Path(spec).name)

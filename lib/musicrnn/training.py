"""Train a model into a run directory: resumable, seeded, validated, distributed when it can be.

:func:`train` is the one entry point (the ``musicrnn train`` command and notebook 04 call it). It

* reads the corpus (:func:`musicrnn.notes.load_corpus`) and cuts windows inside each piece,
  split by piece (:mod:`musicrnn.sequences`);
* builds and compiles the model of a :class:`~musicrnn.model.ModelConfig` under a distribution
  strategy (:func:`resolve_strategy`: several GPUs, ``TF_CONFIG`` or a SLURM allocation);
* trains for ``epochs`` passes over the training windows, exactly (``epochs x steps_per_pass``
  steps, ``steps_per_pass = ceil(windows / batch_size)``), on an endless, reshuffled stream of
  batches, and validates every ``validate_every`` steps: the validation blocks fit inside the
  passes (one Keras "epoch" = one block; the last block is cut short where the passes end), with
  early stopping on the validation loss (patience counted in validations, best weights
  restored), ``ReduceLROnPlateau`` or a cosine schedule (``lr_schedule``) over the steps or the
  time budget (``budget_seconds``), ``TerminateOnNaN``, a weight checkpoint per validation, a CSV
  history with one row per validation (``validation``, ``steps``, ``passes``, the losses),
  optional TensorBoard and a progress bar over the whole run with the time left;
* backs the whole training state up after every validation (weights, optimiser, learning rate,
  the early-stopping and plateau counters, the best weights so far, the steps and the clock), so
  a run killed at any moment continues from its last validation when started again with the same
  arguments, on the very batches an uninterrupted run would have seen, and still ends after
  ``epochs`` passes;
* writes the run directory: ``music_rnn_model.keras``, ``config.json``, ``seed_sequence.npy``,
  ``history.csv``, ``checkpoints/``, ``loss_curves.png``.

Under ``MultiWorkerMirroredStrategy`` only the chief writes the run directory (other workers keep
their backup in ``.worker-<type>-<id>/`` inside it), and two known gaps of Keras 3's TensorFlow
trainer with that strategy are bridged (keras-team/keras#20585): the model is built from a local
batch, and scalar logs are averaged across workers with ``axis=None``.

:func:`pitch_nll` and :func:`state_drift` measure held-out pitch likelihood the way generation
uses a model: after a full window of context, or with the LSTM state carried through whole pieces.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import paths
from .errors import MusicRNNError
from .model import (
    ADDED_FIELDS, CHECKPOINTS_DIR, CONFIG_FILE, HISTORY_FILE, LR_FLOOR, MODEL_FILE, ModelConfig,
    build_model, compile_model, get_preset, note_features, transfer_weights,
    with_sequence_outputs, write_run_files,
)
from .model import (
    CARRIED_CHUNK, model_inputs, predict_in_chunks, receptive_field, returns_sequences,
    sliding_window_model,
)
from .notes import NoteCorpus
from .timing import pitch_given_steps
from .sequences import (
    WindowDataset, make_dataset, match_features, piece_features, seed_window,
)

BACKUP_DIR = "backup"  # inside the run directory while training; removed once the run is done
LOSS_CURVES_FILE = "loss_curves.png"
MIN_VALIDATE_EVERY = 200  # default steps between validations, when a pass is shorter
HISTORY_INDEX = ("validation", "steps", "passes")  # history.csv's first columns: what a row is
DEFAULT_VALIDATION_WINDOWS = 4096  # evaluation windows kept (evenly spaced) per validation
STATUS_TRAINING, STATUS_COMPLETE = "training", "complete"
ORIGINAL_TRAINING: dict[str, Any] = {
    "targets": "last", "window_shift": 1, "learning_rate": 0.001, "batch_size": 64,
    "clipnorm": None,
}
"""How the original research code trained v2: ``config.replace(**ORIGINAL_TRAINING)``."""
CPU_TRAINING: dict[str, Any] = {"learning_rate": 0.006, "batch_size": 16, "clipnorm": 1.0}
"""v2's every-position training tuned for a CPU (``benchmarks/train.py``): a larger step, cheaper
steps and clipped gradients leave the unigram plateau several times sooner on the chorales."""


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` did and where it put it."""

    run_dir: Path  # the run directory
    model: Any  # the trained keras.Model (best validation weights)
    config: ModelConfig  # the config it was trained with
    history: Any  # pandas DataFrame: one row per validation (history.csv)
    resumed_after: int = 0  # validations restored from a backup when this call began (> 0: resumed)
    validations: int = 0  # validations done in total (the history's rows)
    best_validation: int | None = None  # the validation (1-based, as in the history) with the
    #                                     lowest validation loss: the weights kept
    best_val_loss: float | None = None  # that validation loss
    stopped_early: bool = False  # early stopping ended training before the step budget
    stopped_by_budget: bool = False  # the time budget (budget_seconds) ended training
    terminated_on_nan: bool = False  # a NaN loss stopped training (best weights kept)
    already_complete: bool = False  # the run directory held this finished run; nothing trained
    steps: int = 0  # optimiser steps taken in total
    passes: float = 0.0  # passes over the training windows done: steps / steps_per_pass
    total_steps: int = 0  # the step budget: epochs x steps_per_pass
    steps_per_pass: int = 0  # steps in one pass over the training windows
    validate_every: int = 0  # steps between validations (the last block may be shorter)
    train_seconds: float = 0.0  # wall time in training steps (validation excluded), all calls
    windows_per_second: float = 0.0  # training windows per second of train_seconds
    target_notes_per_second: float = 0.0  # predicted notes per second (x seq_length for "all")
    strategy: str = "default"  # the distribution strategy's class name
    replicas: int = 1  # replicas in sync
    files: dict[str, Path] = field(default_factory=dict)  # the run directory's files

    def summary(self) -> str:
        """A few lines for people."""
        how = "already complete" if self.already_complete else (
            "resumed" if self.resumed_after else "trained")
        lines = [
            f"{how}: {self.config.name} ({self.config.targets} targets) in {self.run_dir}",
            f"  {self.steps} of {self.total_steps} steps = {self.passes:.2f} of "
            f"{self.config.epochs} passes over the training windows, {self.validations} "
            f"validations (every {self.validate_every} steps)",
            f"  {self.train_seconds:.1f} s training ({self.windows_per_second:.0f} windows/s, "
            f"{self.target_notes_per_second:.0f} target notes/s)",
        ]
        if self.best_val_loss is not None:
            lines.append(f"  best validation loss {self.best_val_loss:.4f} at validation "
                         f"{self.best_validation}"
                         + (" (stopped early)" if self.stopped_early else ""))
        if self.terminated_on_nan:
            lines.append("  a NaN loss stopped training; the best weights before it were kept")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Configuration helpers
# ---------------------------------------------------------------------------------------------


def resolve_config(config: ModelConfig | str | dict[str, Any], **overrides: Any) -> ModelConfig:
    """A validated :class:`ModelConfig` from a config, a preset name or a dict (+ overrides).

    ``None`` overrides are ignored; unknown keys and impossible values raise
    :class:`~musicrnn.errors.MusicRNNError`.
    """
    changes = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(config, ModelConfig):
        return config.replace(**changes)
    if isinstance(config, str):
        return get_preset(config, **changes)
    if isinstance(config, dict):
        base = dict(config)
        preset = base.pop("preset", None)
        if preset is not None:
            return get_preset(preset, **{**base, **changes})
        return ModelConfig.from_dict({**base, **changes})
    raise MusicRNNError(
        f"config must be a ModelConfig, a preset name or a dict, got {type(config).__name__}"
    )


def default_run_dir(config: ModelConfig, dataset: str, max_files: int | None = None) -> Path:
    """``outputs/runs/train-<preset>-<dataset>[-max<N>]-seed<S>``: the same for the same command,
    so that running it again resumes."""
    from .notes import dataset_slug

    return paths.RUNS / f"train-{config.name}-{dataset_slug(dataset, max_files)}-seed{config.seed}"


def _jit_default() -> bool | str:
    """XLA only where a GPU is visible: on CPU it makes these LSTMs 2-3x slower."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return "auto"
    import tensorflow as tf

    return "auto" if tf.config.list_logical_devices("GPU") else False


# ---------------------------------------------------------------------------------------------
# Distribution
# ---------------------------------------------------------------------------------------------


def under_slurm() -> bool:
    """Whether this process is one task of a multi-task SLURM step (``srun`` with ntasks > 1)."""
    env = os.environ
    tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS")
    try:
        return "SLURM_JOB_ID" in env and "SLURM_PROCID" in env and int(tasks or 1) > 1
    except ValueError:
        return False


def resolve_strategy(strategy: Any = None) -> Any:
    """The ``tf.distribute`` strategy to train under, or None for plain single-device training.

    ``None`` / ``"auto"``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set, or under a
    multi-task SLURM step (``SlurmClusterResolver``); ``MirroredStrategy`` when more than one GPU
    is visible; else none. ``"mirrored"``: all visible GPUs, else all logical CPU devices (two
    logical CPUs make a test of the mirrored path). ``"multiworker"``, ``"slurm"``, ``"none"``
    force a choice; a ``tf.distribute.Strategy`` is used as it is.

    Create it before TensorFlow runs anything else in the process: multi-worker collectives are
    configured at start-up.
    """
    import keras

    if strategy in ("none", "default", False):
        return None
    if keras.backend.backend() != "tensorflow":
        if strategy in (None, "auto"):
            return None
        raise MusicRNNError(
            f"distribution strategy {strategy!r} needs the TensorFlow backend; Keras runs on "
            f"{keras.backend.backend()!r} (set KERAS_BACKEND=tensorflow)"
        )
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy in (None, "auto"):
        if os.environ.get("TF_CONFIG"):
            strategy = "multiworker"
        elif under_slurm():
            strategy = "slurm"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            strategy = "mirrored"
        else:
            return None
    if strategy == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        names = tuple(d.name for d in devices)
        return _made_once(("mirrored", names), lambda: tf.distribute.MirroredStrategy(list(names)))
    if strategy == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise MusicRNNError("the multi-worker strategy needs TF_CONFIG describing the cluster")
        return _made_once(("multiworker", os.environ["TF_CONFIG"]),
                          tf.distribute.MultiWorkerMirroredStrategy)
    if strategy == "slurm":
        return _made_once(("slurm",), lambda: tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=tf.distribute.cluster_resolver.SlurmClusterResolver()))
    raise MusicRNNError(
        f"unknown strategy {strategy!r}; use 'auto', 'mirrored', 'multiworker', 'slurm' or 'none'"
    )


_STRATEGIES: dict[tuple, Any] = {}  # the strategies this process made, by kind and devices


def _made_once(key: tuple, make) -> Any:
    """One strategy of a kind per process, made on first use: a second ``MirroredStrategy``
    would number its collective operations from the same keys as the first, and the second
    model trained in a process (notebook 04's comparison on a host with two GPUs) would stop
    with a collective shape mismatch; a process has one multi-worker set-up anyway."""
    if key not in _STRATEGIES:
        _STRATEGIES[key] = make()
    return _STRATEGIES[key]


def strategy_name(strategy: Any) -> str:
    """The public name of a strategy (``tf.distribute`` classes have internal names)."""
    if strategy is None:
        return "default"
    import tensorflow as tf

    for name in ("MultiWorkerMirroredStrategy", "MirroredStrategy"):
        if isinstance(strategy, getattr(tf.distribute, name)):
            return name
    return type(strategy).__name__


def _is_chief(strategy: Any) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    task_type = getattr(resolver, "task_type", None) if resolver is not None else None
    if not task_type or task_type == "chief":
        return True
    if task_type == "worker" and int(resolver.task_id or 0) == 0:
        return "chief" not in resolver.cluster_spec().as_dict()
    return False


def _worker_dir(run_dir: Path, strategy: Any) -> Path:
    """Where a non-chief worker keeps its own backup (the chief owns the run directory)."""
    resolver = strategy.cluster_resolver
    return run_dir / f".worker-{resolver.task_type}-{resolver.task_id}"


# ---------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------


def time_budget_callback(seconds: float) -> Any:
    """A Keras callback that stops training once ``seconds`` of wall-clock time have passed.

    The clock starts when the first training step has finished (so the one-off graph tracing is
    not charged) and counts everything after it, validation included. It stops after the batch
    that crosses the budget; Keras still runs that period's validation, and early stopping then
    restores the best weights, so every model leaves with its best validated weights however far
    it got. :meth:`fraction` is the share of the budget spent (the cosine schedule reads it).
    """
    import keras

    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise MusicRNNError(f"the training budget must be > 0 seconds, got {seconds!r}")

    class TimeBudget(keras.callbacks.Callback):
        def __init__(self, budget: float):
            super().__init__()
            self.budget = float(budget)
            self.started: float | None = None
            self.stopped = False

        def on_train_begin(self, logs=None):
            self.started = None

        def fraction(self) -> float:
            if self.started is None:
                return 0.0
            return min(1.0, (time.perf_counter() - self.started) / self.budget)

        def on_train_batch_end(self, batch, logs=None):
            if self.started is None:
                self.started = time.perf_counter()
            elif time.perf_counter() - self.started >= self.budget:
                self.stopped = True
                self.model.stop_training = True

    return TimeBudget(seconds)


def cosine_rate(peak: float, fraction: float, floor: float = LR_FLOOR) -> float:
    """The learning rate ``fraction`` (0-1) of the way through a cosine schedule: ``peak`` at
    0, ``floor x peak`` at 1, half a cosine in between."""
    f = min(max(float(fraction), 0.0), 1.0)
    return float(peak) * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * f)))


def _callbacks():  # classes built on first use
    import keras

    class Clock(keras.callbacks.Callback):
        """Counts steps and training seconds (validation excluded), adds them to the logs, and
        ends training once ``total_steps`` steps are done: the block under way is cut short
        there, and Keras still validates it."""

        def __init__(self, total_steps: int, steps_per_pass: int, steps: int = 0):
            super().__init__()
            self.total_steps = int(total_steps)
            self.steps_per_pass = steps_per_pass
            self.steps = int(steps)  # steps done in the whole run (restored on resume)
            self.train_seconds = 0.0  # restored by the backup on resume
            self.session_seconds = 0.0
            self.session_steps = 0
            self._started: float | None = None

        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def _stop_clock(self):
            if self._started is not None:
                elapsed = time.perf_counter() - self._started
                self.train_seconds += elapsed
                self.session_seconds += elapsed
                self._started = None

        def on_train_batch_end(self, batch, logs=None):
            self.session_steps += 1
            self.steps += 1
            if self.steps >= self.total_steps:
                self.model.stop_training = True  # the passes are done: validate, then stop

        def on_test_begin(self, logs=None):
            self._stop_clock()

        def on_epoch_end(self, epoch, logs=None):
            self._stop_clock()
            if logs is not None:
                logs["steps"] = self.steps
                logs["passes"] = self.steps / self.steps_per_pass
                logs["train_seconds"] = self.train_seconds

    class Progress(keras.callbacks.Callback):
        """Progress over the whole run, with the time left: a tqdm bar of the steps (``bar``) or
        one line per validation; either way a line per validation with its losses.

        The time left is the steps left at the average pace of this call so far, validations
        included (tqdm's ``smoothing=0``), so it does not jump after each validation.
        """

        def __init__(self, clock: Clock, bar: bool):
            super().__init__()
            self.clock, self.bar = clock, bar
            self._tqdm = None
            self._started = 0.0
            self._start_steps = 0

        def on_train_begin(self, logs=None):
            self._started = time.perf_counter()
            self._start_steps = self.clock.steps
            if self.bar:
                from tqdm.auto import tqdm

                self._tqdm = tqdm(total=self.clock.total_steps, initial=self.clock.steps,
                                  unit="step", desc="training", smoothing=0, dynamic_ncols=True)

        def on_train_batch_end(self, batch, logs=None):
            if self._tqdm is not None:
                self._tqdm.update(self.clock.steps - self._tqdm.n)
                loss = (logs or {}).get("loss")
                if loss is not None and _is_number(loss):
                    self._tqdm.set_postfix(loss=f"{float(loss):.4f}", refresh=False)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            losses = ", ".join(f"{k} {float(logs[k]):.4f}" for k in (
                "loss", "val_loss", "val_pitch_loss") if _is_number(logs.get(k)))
            line = (f"validation {epoch + 1}: step {self.clock.steps}/{self.clock.total_steps}"
                    f" ({self.clock.steps / self.clock.steps_per_pass:.2f} passes), {losses}")
            if self._tqdm is not None:
                self._tqdm.write(line)
            else:
                print(f"{line}; {self.time_left()}", flush=True)

        def time_left(self) -> str:
            """``"<elapsed> elapsed, about <left> left"`` at this call's pace so far."""
            elapsed = time.perf_counter() - self._started
            done = self.clock.steps - self._start_steps
            left = max(0, self.clock.total_steps - self.clock.steps)
            eta = f"about {_clock_text(left * elapsed / done)} left" if done and left else (
                "done" if not left else "time left unknown")
            return f"{_clock_text(elapsed)} elapsed, {eta}"

        def on_train_end(self, logs=None):
            if self._tqdm is not None:
                self._tqdm.close()
                self._tqdm = None

    class HistoryCSV(keras.callbacks.Callback):
        """``history.csv`` rewritten atomically after every validation, one row each:
        ``validation`` (1-based), ``steps``, ``passes``, the training losses (means over the
        block), the validation losses, the learning rate and the training seconds. A resumed run
        keeps the rows of the validations it restored and drops any written after its backup."""

        def __init__(self, path: Path, resumed_after: int = 0, enabled: bool = True):
            super().__init__()
            self.path = Path(path)
            self.resumed_after = int(resumed_after)
            self.enabled = enabled
            self.rows: list[dict[str, Any]] = []

        def on_train_begin(self, logs=None):
            self.rows = [r for r in read_history_rows(self.path)
                         if int(r["validation"]) <= self.resumed_after]
            if self.enabled:
                self._write()

        def on_epoch_end(self, epoch, logs=None):
            row: dict[str, Any] = {k: float(v) for k, v in (logs or {}).items()
                                   if _is_number(v)}
            row["validation"] = int(epoch) + 1
            if "steps" in row:
                row["steps"] = int(row["steps"])
            self.rows.append(row)
            if self.enabled:
                self._write()

        def _write(self):
            if not self.rows:
                self.path.unlink(missing_ok=True)
                return
            first = [k for k in HISTORY_INDEX if any(k in r for r in self.rows)]
            keys = first + sorted({k for r in self.rows for k in r} - set(first))
            lines = [",".join(keys)]
            for r in self.rows:
                lines.append(",".join(_csv_value(r.get(k)) for k in keys))
            paths.atomic_write_text(self.path, "\n".join(lines) + "\n")

    class ValidationCheckpoint(keras.callbacks.Callback):
        """``checkpoints/validation_NNN.weights.h5`` after every validation (written atomically);
        keeps the newest ``keep`` and the best one."""

        def __init__(self, folder: Path, keep: int = 5, enabled: bool = True):
            super().__init__()
            self.folder = Path(folder)
            self.keep = keep
            self.enabled = enabled
            self.best: tuple[float, Path] | None = None

        def on_epoch_end(self, epoch, logs=None):
            if not self.enabled:
                return
            path = self.folder / f"validation_{epoch + 1:03d}.weights.h5"
            _save_weights_atomic(self.model, path)
            value = (logs or {}).get("val_loss")
            if value is not None and math.isfinite(value) and (
                self.best is None or value < self.best[0]
            ):
                self.best = (float(value), path)
            found = sorted(self.folder.glob("validation_*.weights.h5"))
            protect = {self.best[1].name} if self.best else set()
            for old in found[: max(0, len(found) - self.keep)]:
                if old.name not in protect:
                    old.unlink(missing_ok=True)

    class RunBackup(keras.callbacks.BackupAndRestore):
        """``BackupAndRestore`` that also keeps the rest of the training state.

        Keras's callback restores the weights, the optimiser (with its learning rate) and the
        epoch (here: the validations done). This one also restores the early-stopping and
        plateau counters, the best weights so far, the steps done, the clock and the best
        checkpoint, and writes every file atomically (with the previous backup kept), so a kill
        at any moment leaves a usable backup.
        """

        def __init__(self, backup_dir: Path, early, plateau, clock, checkpoint):
            super().__init__(str(backup_dir), save_freq="epoch", double_checkpoint=True,
                             delete_checkpoint=False)
            self.folder = Path(backup_dir)
            self.early, self.plateau, self.clock, self.checkpoint = (
                early, plateau, clock, checkpoint)
            self.state_path = self.folder / "training_state.json"
            self.best_path = self.folder / "best.weights.h5"
            self.restored_epoch = 0

        def on_train_begin(self, logs=None):
            state = read_backup_state(self.folder)
            if state is None:
                return
            if not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            if self.best_path.is_file():
                self.model.load_weights(str(self.best_path))
                self.early.best_weights = self.model.get_weights()
            self.model.load_weights(self._weights_path)
            self.model._initial_epoch = int(state["epoch"])
            self.restored_epoch = int(state["epoch"])
            e, p = state.get("early_stopping", {}), state.get("plateau", {})
            self.early.wait = int(e.get("wait", 0))
            self.early.best = e.get("best")
            self.early.best_epoch = int(e.get("best_epoch", 0))
            self.plateau.wait = int(p.get("wait", 0))
            self.plateau.best = p.get("best", self.plateau.best)
            self.plateau.cooldown_counter = int(p.get("cooldown_counter", 0))
            self.clock.train_seconds = float(state.get("train_seconds", 0.0))
            self.clock.steps = int(state.get("steps", self.clock.steps))
            best_ckpt = state.get("best_checkpoint")
            if best_ckpt:
                self.checkpoint.best = (float(best_ckpt[0]), Path(best_ckpt[1]))

        def on_epoch_end(self, epoch, logs=None):
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.early.best_epoch == epoch and self.early.best_weights is not None:
                _save_weights_atomic(self.model, self.best_path, self.early.best_weights)
            _save_weights_atomic(self.model, Path(self._weights_path))
            best_ckpt = self.checkpoint.best
            state = {
                "epoch": epoch + 1,
                "early_stopping": {"wait": self.early.wait, "best": _float_or_none(
                    self.early.best), "best_epoch": self.early.best_epoch},
                "plateau": {"wait": self.plateau.wait, "best": _float_or_none(self.plateau.best),
                            "cooldown_counter": self.plateau.cooldown_counter},
                "steps": self.clock.steps,
                "train_seconds": self.clock.train_seconds,
                "best_checkpoint": [best_ckpt[0], str(best_ckpt[1])] if best_ckpt else None,
            }
            # The state names the epoch; written last, it commits the backup.
            paths.atomic_write_text(self.state_path, json.dumps(state) + "\n")
            paths.atomic_write_text(self._training_metadata_path,
                                    json.dumps({"epoch": epoch + 1, "batch": 0}))

        def on_train_end(self, logs=None):
            pass  # the caller removes the backup once the run directory is written

    class CosineSchedule(keras.callbacks.Callback):
        """``lr_schedule="cosine"``: every ``every`` steps, sets the learning rate to
        :func:`cosine_rate` at the run's progress -- the larger of the share of its steps done
        and the share of its time budget spent (``budget``: a :func:`time_budget_callback`), so
        the rate reaches its floor where training actually ends. A resumed run picks it up from
        its restored step count."""

        def __init__(self, peak: float, clock: Clock, budget=None, every: int = 10):
            super().__init__()
            self.peak, self.clock, self.budget, self.every = float(peak), clock, budget, every
            self.rate = float(peak)

        def fraction(self) -> float:
            done = self.clock.steps / max(self.clock.total_steps, 1)
            return max(done, self.budget.fraction() if self.budget is not None else 0.0)

        def on_train_batch_begin(self, batch, logs=None):
            if self.clock.steps % self.every == 0:  # an assignment per step would cost ~2%
                self.rate = cosine_rate(self.peak, self.fraction())
                self.model.optimizer.learning_rate.assign(self.rate)

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:  # history.csv's learning_rate column: the rate of the last step
                logs["learning_rate"] = self.rate

    return Clock, Progress, HistoryCSV, ValidationCheckpoint, RunBackup, CosineSchedule


def _save_weights_atomic(model, path: Path, weights: list | None = None) -> None:
    """``model.save_weights`` through a temporary file (optionally of other weights)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[:-len('.weights.h5')]}.tmp.weights.h5")
    if weights is not None:
        current = model.get_weights()
        model.set_weights(weights)
        try:
            model.save_weights(str(tmp))
        finally:
            model.set_weights(current)
    else:
        model.save_weights(str(tmp))
    os.replace(tmp, path)


def _float_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _clock_text(seconds: float) -> str:
    """``"1:02:03"`` / ``"2:03"``: a duration for people."""
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def read_backup_state(backup_dir: Path) -> dict[str, Any] | None:
    """The backed-up training state of an interrupted run, or None when there is none."""
    state_path = Path(backup_dir) / "training_state.json"
    weights = Path(backup_dir) / "latest.weights.h5"
    if not (state_path.is_file() and weights.is_file()):
        return None
    try:
        state = json.loads(state_path.read_text())
        int(state["epoch"])
    except (ValueError, KeyError, TypeError):
        return None
    return state


def read_history_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``history.csv`` as dicts of floats, ``validation`` and ``steps`` as ints (a
    torn last line is dropped).

    A history written before rows were named by their validation (a 0-based ``epoch`` column)
    reads as ``validation = epoch + 1``.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    if not lines:
        return []
    keys = lines[0].split(",")
    rows = []
    for line in lines[1:]:
        values = line.split(",")
        if len(values) != len(keys):
            continue
        try:
            row = {k: float(v) for k, v in zip(keys, values) if v != ""}
            if "validation" not in row:
                row["validation"] = row.pop("epoch") + 1
            row["validation"] = int(row["validation"])
            if "steps" in row:
                row["steps"] = int(row["steps"])
            rows.append(row)
        except (ValueError, KeyError):
            continue
    return rows


# ---------------------------------------------------------------------------------------------
# The run directory
# ---------------------------------------------------------------------------------------------


def _run_info(config: ModelConfig, dataset: str, max_files: int | None,
              validate_every: int) -> dict[str, Any]:
    return {"model": config.to_dict(), "dataset": dataset, "max_files": max_files,
            "training": {"validate_every": validate_every}}


_RESUME_FREE = {"epochs"}  # may change between a run and its resumption


def _check_run_dir(run_dir: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The run directory's ``config.json`` (None when new); a clear error if it is another run."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MusicRNNError(f"{path} is not valid JSON ({exc}); delete it or use another "
                            "run directory") from exc
    differences = []
    found_model = {k: list(v) if isinstance(v, tuple) else v  # JSON has lists
                   for k, v in {**ADDED_FIELDS, **dict(found.get("model") or {})}.items()}
    for key, value in expected["model"].items():
        if key not in _RESUME_FREE and found_model.get(key) != value:
            differences.append(f"{key}: {found_model.get(key)!r} there, {value!r} now")
    for key in ("dataset", "max_files"):
        if found.get(key) != expected[key]:
            differences.append(f"{key}: {found.get(key)!r} there, {expected[key]!r} now")
    found_every = (found.get("training") or {}).get("validate_every")
    if found_every is not None and found_every != expected["training"]["validate_every"]:
        differences.append(f"validate_every: {found_every} there, "
                           f"{expected['training']['validate_every']} now")
    if differences:
        raise MusicRNNError(
            f"the run directory {run_dir} holds a run with a different config ("
            + "; ".join(differences) + "); pass another run directory, or delete this one to "
            "start over"
        )
    return found


def plot_loss_curves(history: Any, path: str | Path | None = None, title: str = ""):
    """Training and validation loss at each validation (total and per head), against the passes
    over the training windows; optionally written as a PNG.

    Uses :func:`musicrnn.plots.training_curves` when it exists, else a plain matplotlib figure.
    Returns the matplotlib figure.
    """
    import matplotlib

    if path is not None and "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(history)
    figure = None
    try:
        from .plots import training_curves

        result = training_curves(frame, title=title) if title else training_curves(frame)
        figure = getattr(result, "figure", None) or (result if hasattr(result, "savefig") else None)
    except Exception:  # plots may not exist yet, or take other arguments
        figure = None
    if figure is None:
        heads = [h for h in ("loss", "pitch_loss", "step_loss", "duration_loss",
                             "velocity_loss") if h in frame]
        figure, axes = plt.subplots(1, len(heads), figsize=(4 * len(heads), 3.2), squeeze=False)
        x = frame["passes"] if "passes" in frame else frame.index + 1
        for ax, key in zip(axes[0], heads):
            ax.plot(x, frame[key], label="train", marker=".")
            if f"val_{key}" in frame:
                ax.plot(x, frame[f"val_{key}"], label="validation", marker=".")
            ax.set_title(key.replace("_", " "))
            ax.set_xlabel("passes over the training windows" if "passes" in frame
                          else "validation")
            ax.grid(alpha=0.3)
        axes[0][0].legend()
        if title:
            figure.suptitle(title)
        figure.tight_layout()
    if path is not None:
        with paths.atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=110, format="png")
    return figure


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def train(
    config: ModelConfig | str | dict[str, Any],
    dataset: str = "bach-chorales",
    run_dir: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    max_files: int | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    corpus: NoteCorpus | None = None,
    strategy: Any = None,
    mixed_precision: bool | str = False,
    jit_compile: bool | str | None = None,
    tensorboard: bool = False,
    validate_every: int | None = None,
    validation_windows: int | None = DEFAULT_VALIDATION_WINDOWS,
    keep_checkpoints: int = 5,
    progress: bool | int = True,
    callbacks: list | None = None,
    budget_seconds: float | None = None,
) -> TrainResult:
    """Train a model and write its run directory; resume it if it was interrupted.

    Args:
        config: a :class:`~musicrnn.model.ModelConfig`, a preset name (``"v2"``) or a dict of
            config fields (optionally with ``"preset"``).
        dataset: the dataset name (``bach-chorales``, ``maestro-v2``, ``local:<dir>``, ...).
        run_dir: the run directory (default :func:`default_run_dir`). Started again with the
            same arguments, an interrupted run resumes; a finished one is loaded, not retrained;
            one holding a different config is an error.
        data_dir: the data folder (default: the project's ``data/``).
        max_files: use a deterministic subset of the dataset.
        epochs: passes over the training windows at most (default: the config's): training
            ends after exactly ``epochs x steps_per_pass`` steps unless early stopping ends it
            sooner (``steps_per_pass = ceil(training windows / batch_size)``).
        seed: the one seed for weights, dropout, window order and augmentation (default: the
            config's).
        corpus: a ready :class:`~musicrnn.notes.NoteCorpus` (skips loading ``dataset``).
        strategy: see :func:`resolve_strategy` (default: automatic).
        mixed_precision: ``True`` (float16 on GPU, bfloat16 on CPU) or a Keras dtype policy name.
        jit_compile: XLA for the training steps; default: on where a GPU is visible (it slows
            these LSTMs on CPU; a small transformer on one CPU core trains 1.2x faster with
            it). The returned and saved model runs without it (:func:`_plain_functions_after_xla`).
        tensorboard: also write TensorBoard logs to ``<run_dir>/logs``.
        validate_every: training steps between validations (one Keras epoch each); default:
            one pass over the windows, at least 200 steps, so that short passes do not make early
            stopping chase noise. The validations fit inside the passes: the last block is cut
            short where the ``epochs`` passes end. Early stopping and the plateau rule count
            validations.
        validation_windows: evaluate on at most this many validation windows (evenly spaced).
        keep_checkpoints: newest per-validation checkpoints kept (and the best one).
        progress: a progress bar over the whole run with the time left (``True``/1), one line
            per validation with the time left (2), or nothing (0/False).
        callbacks: more Keras callbacks.
        budget_seconds: also stop after this many seconds of wall-clock training, validation
            included (:func:`time_budget_callback`); a ``cosine`` schedule then decays over
            whichever ends first, the steps or the time.

    Returns:
        A :class:`TrainResult`.

    Raises:
        MusicRNNError: bad config values or keys, an empty split, a ``seq_length`` longer than
            every piece, a run directory of another run, or a loss that was NaN from the start.
    """
    import keras

    config = resolve_config(config, epochs=epochs, seed=seed)
    if max_files is not None and (isinstance(max_files, bool) or int(max_files) < 1):
        raise MusicRNNError(f"max_files must be a positive integer or None, got {max_files!r}")
    if validate_every is not None and (isinstance(validate_every, bool)
                                       or int(validate_every) < 1):
        raise MusicRNNError(f"validate_every must be a positive number of steps, got "
                            f"{validate_every!r}")
    dtype_policy(mixed_precision)  # refuse a bad value before anything is written
    budget = time_budget_callback(budget_seconds) if budget_seconds is not None else None
    if tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise MusicRNNError("tensorboard=True needs the tensorboard package: "
                                "`.venv/bin/pip install tensorboard`, or train without it")
    run_dir = Path(run_dir).expanduser() if run_dir else default_run_dir(config, dataset, max_files)

    # The strategy first: multi-worker collectives must be set up before TensorFlow runs.
    strategy = resolve_strategy(strategy)
    chief = _is_chief(strategy)

    if corpus is None:
        from .notes import load_corpus

        corpus = load_corpus(dataset, data_dir=data_dir, max_files=max_files)
    config, labels = corpus_styles(config, corpus)
    if labels is not None and progress:
        for line in style_coverage(config, corpus, labels):
            print(line)
    train_data = make_dataset(corpus, "train", config, styles=labels)
    val_data = make_dataset(corpus, "validation", config, max_windows=validation_windows,
                            styles=labels)
    steps_per_pass = train_data.steps_per_pass
    period = int(validate_every) if validate_every else max(steps_per_pass, MIN_VALIDATE_EVERY)
    total_steps = config.epochs * steps_per_pass  # exactly `epochs` passes
    info = _run_info(config, dataset, max_files, period)

    found = _check_run_dir(run_dir, info)
    if found is not None and found.get("status") == STATUS_COMPLETE and (
            run_dir / MODEL_FILE).is_file():
        return _finished_result(run_dir, found, config, period, steps_per_pass)

    keras.utils.set_random_seed(config.seed)
    own_dir = run_dir if chief else _worker_dir(run_dir, strategy)
    backup_dir = own_dir / BACKUP_DIR
    resumed_state = read_backup_state(backup_dir)
    resumed_after = int(resumed_state["epoch"]) if resumed_state else 0  # validations done
    start_step = int(resumed_state.get("steps", resumed_after * period)) if resumed_state else 0
    # Keras epochs = validation blocks of `period` steps; the Clock ends the last one early.
    keras_epochs = resumed_after + math.ceil(max(0, total_steps - start_step) / period)
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        paths.atomic_write_text(run_dir / CONFIG_FILE, json.dumps(
            {**info, "status": STATUS_TRAINING}, indent=2, sort_keys=True) + "\n")

    if progress:
        print(f"Training {config.name} ({config.targets} targets, seq_length {config.seq_length},"
              f" batch {config.batch_size}, lr {config.learning_rate:g}) on {dataset}:")
        print(f"  train      {train_data!r}")
        print(f"  validation {val_data!r}")
        last = total_steps - (math.ceil(total_steps / period) - 1) * period
        print(f"  {config.epochs} passes x {steps_per_pass} steps = {total_steps} steps at most, "
              f"validated every {period} steps ({math.ceil(total_steps / period)} validations"
              + (f", the last after a block of {last}" if last != period else "")
              + f"); early stopping after {config.early_stopping_patience} validations without"
              f" improvement; run directory {run_dir}")
        if resumed_after:
            print(f"  resuming after validation {resumed_after} at step {start_step} of "
                  f"{total_steps} (backup in {backup_dir})")

    model = _build(config, strategy, mixed_precision, jit_compile)
    _build_from_local_batch(model, strategy, train_data)
    train_tf = train_data.to_tf(start_step=start_step)
    val_tf = val_data.to_tf()

    Clock, Progress, HistoryCSV, ValidationCheckpoint, RunBackup, CosineSchedule = _callbacks()
    clock = Clock(total_steps, steps_per_pass, steps=start_step)
    early = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True)
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=0.5, patience=config.reduce_lr_patience, min_lr=1e-6)
    history_csv = HistoryCSV(run_dir / HISTORY_FILE, resumed_after, enabled=chief)
    checkpoint = ValidationCheckpoint(run_dir / CHECKPOINTS_DIR, keep=keep_checkpoints,
                                      enabled=chief)
    nan_guard = keras.callbacks.TerminateOnNaN()
    backup = RunBackup(backup_dir, early, plateau, clock, checkpoint)
    # The schedule: the plateau rule halves the rate, or a cosine sets it every 10 steps.
    schedule = (CosineSchedule(config.learning_rate, clock, budget)
                if config.lr_schedule == "cosine" else plateau)
    callback_list = [clock, nan_guard, early, schedule, history_csv, checkpoint]
    if budget is not None:
        callback_list.insert(1, budget)
    if progress and chief:  # after the clock, which counts the steps it shows
        callback_list.insert(1, Progress(clock, bar=progress != 2))
    if tensorboard and chief:
        callback_list.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs")))
    callback_list += list(callbacks or [])
    callback_list.append(backup)  # last: restores after the others reset, saves after they update

    model.fit(
        train_tf, epochs=keras_epochs, steps_per_epoch=period, validation_data=val_tf,
        callbacks=callback_list, verbose=0, shuffle=False,
    )
    _plain_functions_after_xla(model)
    validations = len(history_csv.rows)
    terminated = any(not math.isfinite(r.get("loss", math.nan)) for r in history_csv.rows)
    if early.best_weights is None or _float_or_none(early.best) is None:
        raise MusicRNNError(
            "training produced no usable weights: the loss was NaN before the first evaluation; "
            f"lower learning_rate (now {config.learning_rate:g}) or set clipnorm"
        )

    import pandas as pd

    history = pd.DataFrame(history_csv.rows)
    best_validation = int(early.best_epoch) + 1 if early.best is not None else None
    best_val = _float_or_none(early.best)
    seconds = clock.train_seconds
    steps = clock.steps
    windows_per_s = clock.session_steps * config.batch_size / clock.session_seconds if (
        clock.session_seconds > 0) else 0.0
    per_window = config.seq_length if config.targets == "all" else 1
    result = TrainResult(
        run_dir=run_dir, model=model, config=config, history=history,
        resumed_after=resumed_after, validations=validations, best_validation=best_validation,
        best_val_loss=best_val, stopped_early=bool(early.stopped_epoch) and not terminated,
        terminated_on_nan=terminated, stopped_by_budget=bool(budget and budget.stopped),
        steps=steps, passes=steps / steps_per_pass,
        total_steps=total_steps, steps_per_pass=steps_per_pass, validate_every=period,
        train_seconds=seconds, windows_per_second=windows_per_s,
        target_notes_per_second=windows_per_s * per_window,
        strategy=strategy_name(strategy),
        replicas=int(strategy.num_replicas_in_sync) if strategy is not None else 1,
    )
    if chief:
        seed_sequence = seed_window(corpus, config.seq_length, "validation", seed=config.seed,
                                    velocity=config.velocity != "none")
        final_info = {
            **{k: v for k, v in info.items() if k != "model"},
            "status": STATUS_COMPLETE,
            "seed": config.seed,
            "results": {
                "validations": validations, "steps": steps, "passes": steps / steps_per_pass,
                "total_steps": total_steps, "best_validation": best_validation,
                "best_val_loss": best_val, "stopped_early": result.stopped_early,
                "terminated_on_nan": terminated,
                "stopped_by_budget": result.stopped_by_budget,
                "lr_schedule": config.lr_schedule,
                "train_seconds": round(seconds, 3),
                "windows_per_second": round(windows_per_s, 2),
                "target_notes_per_second": round(result.target_notes_per_second, 2),
                "strategy": result.strategy, "replicas": result.replicas,
                "corpus": {s: int(v) for s, v in corpus.summary()["notes"].items()},
            },
        }
        final_info["training"].update({"steps_per_pass": steps_per_pass,
                                       "train_windows_per_pass": train_data.windows_per_pass})
        result.files = write_run_files(run_dir, model, config, seed_sequence, info=final_info)
        result.files["history"] = run_dir / HISTORY_FILE
        result.files["checkpoints"] = run_dir / CHECKPOINTS_DIR
        if len(history):
            import matplotlib.pyplot as plt

            figure = plot_loss_curves(history, run_dir / LOSS_CURVES_FILE,
                                      title=f"{config.name} on {dataset}")
            plt.close(figure)
            result.files["loss_curves"] = run_dir / LOSS_CURVES_FILE
    shutil.rmtree(backup_dir, ignore_errors=True)
    if not chief:
        shutil.rmtree(own_dir, ignore_errors=True)
    if progress:
        print(result.summary())
    return result


JIT_SETTINGS: dict[str, bool | None] = {"auto": None, "on": True, "off": False}


def jit_setting(value: Any) -> bool | None:
    """``jit_compile`` as a notebook or a profile gives it -> :func:`train`'s argument.

    ``"on"``/``"off"``/``"auto"`` (any case) or a bool (YAML reads an unquoted on/off as one)
    become True, False or None (the default: XLA with a GPU only).

    Raises:
        MusicRNNError: any other value.
    """
    if isinstance(value, bool):
        return value
    name = str(value).strip().lower()
    if name not in JIT_SETTINGS:
        raise MusicRNNError(f"jit_compile must be on, off or auto, got {value!r}")
    return JIT_SETTINGS[name]


def _plain_functions_after_xla(model: Any) -> None:
    """After training with XLA: what follows runs as plain graphs, and the saved model does not
    ask for XLA.

    XLA compiles a function once per input shape. Training sees one shape, but the drift check,
    evaluation and generation read many lengths, each of which would compile again; and a model
    saved with ``jit_compile`` in its compile config would do the same wherever it is loaded.
    """
    if not getattr(model, "jit_compile", False):
        return
    model.jit_compile = False
    model.train_function = model.test_function = model.predict_function = None
    compile_config = getattr(model, "_compile_config", None)
    if compile_config is not None and isinstance(getattr(compile_config, "config", None), dict):
        compile_config.config["jit_compile"] = False


def dtype_policy(mixed_precision: bool | str) -> str | None:
    """The Keras dtype policy for ``mixed_precision`` (None: the global one, float32).

    ``True`` means ``mixed_float16`` where a GPU is visible (tensor cores), ``mixed_bfloat16``
    on a CPU; a policy name is taken as it is.
    """
    if not mixed_precision:
        return None
    if isinstance(mixed_precision, str):
        if mixed_precision not in ("mixed_float16", "mixed_bfloat16", "float32"):
            raise MusicRNNError(f"mixed_precision must be True, False, 'mixed_float16' or "
                                f"'mixed_bfloat16', got {mixed_precision!r}")
        return mixed_precision
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"
    return "mixed_bfloat16"


def _build(config: ModelConfig, strategy: Any, mixed_precision: bool | str,
           jit_compile: bool | str | None):
    """Build and compile under the strategy's scope and the requested dtype policy."""
    import contextlib

    import keras

    policy = dtype_policy(mixed_precision)
    previous = keras.config.dtype_policy()
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    try:
        if policy:
            keras.config.set_dtype_policy(policy)
        with scope:
            model = build_model(config)
            compile_model(model, config,
                          jit_compile=_jit_default() if jit_compile is None else jit_compile)
    finally:
        keras.config.set_dtype_policy(previous)
    return model


def corpus_styles(config: ModelConfig, corpus: NoteCorpus
                  ) -> tuple[ModelConfig, np.ndarray | None]:
    """A conditioned config with its styles read off ``corpus`` (when it names none yet), and
    every piece's label (:func:`musicrnn.styles.piece_styles`); an unconditioned config comes
    back as it is, with None."""
    if not config.conditioned:
        return config, None
    from .styles import piece_styles, style_vocabulary

    if not config.styles:
        config = config.replace(styles=list(style_vocabulary(corpus, config.condition,
                                                             config.max_styles)))
    return config, piece_styles(corpus, config.condition, config.styles)


def style_coverage(config: ModelConfig, corpus: NoteCorpus, labels: np.ndarray) -> list[str]:
    """One line per style: its training pieces and how many hold a window (``seq_length + 1``
    notes); a note when a style loses more than half of them (folk songs are short)."""
    train = corpus.indices("train")
    long_enough = corpus.lengths()[train] >= config.seq_length + 1
    lines = []
    for index, name in enumerate(("none", *config.styles)):
        mine = labels[train] == index
        if not mine.any():
            continue
        kept = int((mine & long_enough).sum())
        line = f"  style {name}: {kept} of {int(mine.sum())} training pieces hold a window"
        if kept < mine.sum() / 2:
            line += (f" -- most are shorter than {config.seq_length + 1} notes; a shorter "
                     "seq_length (--set seq_length=N) trains on more of them")
        lines.append(line)
    return lines


def _build_from_local_batch(model, strategy: Any, data: WindowDataset) -> None:
    """Work around Keras 3 under ``MultiWorkerMirroredStrategy``.

    Before training, Keras builds the model from a first batch of the distributed dataset, which
    it averages across replicas with ``strategy.reduce``; the multi-worker strategy cannot reduce
    a nested batch and fails (keras-team/keras#20585). Only the shapes and dtypes matter there, so
    give it a local batch instead.
    """
    if strategy_name(strategy) != "MultiWorkerMirroredStrategy":
        return
    _patch_multi_worker_metric_reduction()
    local_batch = next(data.batches())
    original = model._maybe_symbolic_build

    def build(iterator=None, data_batch=None):
        return original(data_batch=local_batch if data_batch is None else data_batch)

    model._maybe_symbolic_build = build


def _patch_multi_worker_metric_reduction() -> None:
    """Work around Keras 3 averaging scalar metrics across workers with ``axis=0``.

    Under ``MultiWorkerMirroredStrategy`` Keras's TensorFlow trainer reduces each step's logs
    with ``strategy.reduce("MEAN", value, axis=0)``, which fails for the scalar losses it logs.
    The mean across replicas of a scalar is ``axis=None``; everything else goes to Keras as is.
    Idempotent; changes nothing for other strategies.
    """
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_musicrnn_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
                strategy):
            def reduce(value):
                if value is None:
                    return value
                rank = len(value.shape) if hasattr(value, "shape") else len(
                    strategy.experimental_local_results(value)[0].shape)
                if rank == 0:
                    return strategy.reduce("MEAN", value, axis=None)
                return original(value, strategy, reduction)

            return tree.map_structure(reduce, values)
        return original(values, strategy, reduction)

    reduce_per_replica._musicrnn_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def _finished_result(run_dir: Path, found: dict[str, Any], config: ModelConfig,
                     period: int, steps_per_pass: int) -> TrainResult:
    import pandas as pd

    from .model import load_run

    run = load_run(run_dir)
    history = pd.DataFrame(read_history_rows(run.history_path))
    results = found.get("results") or {}
    print(f"{run_dir} already holds this finished run; loaded it (delete the folder or pass "
          "another run directory to train again)")
    # run directories written before validations were named so: "evaluations", "best_epoch"
    validations = int(results.get("validations", results.get("evaluations", 0)))
    best = results.get("best_validation")
    if best is None and results.get("best_epoch") is not None:
        best = int(results["best_epoch"]) + 1
    steps = int(results.get("steps", 0))
    steps_per_pass = int((found.get("training") or {}).get("steps_per_pass", steps_per_pass))
    return TrainResult(
        run_dir=run_dir, model=run.model, config=config, history=history,
        resumed_after=validations, validations=validations, best_validation=best,
        best_val_loss=results.get("best_val_loss"),
        stopped_early=bool(results.get("stopped_early")),
        terminated_on_nan=bool(results.get("terminated_on_nan")), already_complete=True,
        steps=steps, passes=steps / steps_per_pass,
        total_steps=int(results.get("total_steps", config.epochs * steps_per_pass)),
        steps_per_pass=steps_per_pass, validate_every=period,
        train_seconds=float(results.get("train_seconds", 0.0)),
        windows_per_second=float(results.get("windows_per_second", 0.0)),
        target_notes_per_second=float(results.get("target_notes_per_second", 0.0)),
        strategy=str(results.get("strategy", "default")),
        replicas=int(results.get("replicas", 1)),
        files={"model": run_dir / MODEL_FILE, "config": run_dir / CONFIG_FILE},
    )


# ---------------------------------------------------------------------------------------------
# Held-out pitch likelihood: after a full window, and with the state carried through pieces
# ---------------------------------------------------------------------------------------------


@dataclass
class DriftReport:
    """Held-out pitch NLL of one model measured two ways, on the same target notes."""

    windowed_nll: float  # nats/note: each note predicted after exactly `context` notes, zero state
    carried_nll: float  # nats/note: the state carried from the start of the piece
    top1_disagreement: float  # share of notes whose most likely pitch differs between the two
    context: int  # notes of context of the windowed measure
    targets: int  # notes scored (those with at least `context` notes before them)
    pieces: int  # pieces scored

    @property
    def drift(self) -> float:
        """``carried_nll - windowed_nll``: > 0 means the carried state drifts."""
        return self.carried_nll - self.windowed_nll

    def no_worse(self, tolerance: float = 0.005) -> bool:
        """Whether carrying the state costs at most ``tolerance`` nats per note."""
        return self.drift <= tolerance

    def to_dict(self) -> dict[str, float | int]:
        return {"windowed_nll": self.windowed_nll, "carried_nll": self.carried_nll,
                "drift": self.drift, "top1_disagreement": self.top1_disagreement,
                "context": self.context, "targets": self.targets, "pieces": self.pieces}


def _pieces(corpus: NoteCorpus | list[np.ndarray], split: str) -> list[np.ndarray]:
    """The pieces' raw notes, with velocity (4 columns) from a corpus; scoring gives each model
    the columns it reads (:func:`musicrnn.sequences.match_features`)."""
    if isinstance(corpus, NoteCorpus):
        return [piece_features(corpus, int(i), velocity=True) for i in corpus.indices(split)]
    return [np.asarray(p, dtype=np.float32) for p in corpus]


def _target_positions(lengths: np.ndarray, context: int, max_targets: int | None
                      ) -> list[np.ndarray]:
    """Per piece, the positions ``t >= context`` scored (evenly thinned to ``max_targets``)."""
    per_piece = [np.arange(context, n, dtype=np.int64) for n in lengths]
    total = sum(len(p) for p in per_piece)
    if max_targets is None or total <= max_targets:
        return per_piece
    keep = np.zeros(total, dtype=bool)
    keep[np.unique(np.linspace(0, total - 1, int(max_targets)).astype(np.int64))] = True
    out, at = [], 0
    for p in per_piece:
        out.append(p[keep[at: at + len(p)]])
        at += len(p)
    return out


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))


_TWINS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {outputs: twin}


def _view(model, sequence_outputs: bool):
    """``model`` predicting at every position (or only the last), sharing its current weights.

    The rebuilt twin is kept per model, so that scoring a model again and again during training
    (its weights copied over each time) does not build and trace a new model every time.
    """
    if returns_sequences(model) == bool(sequence_outputs):  # None (not ours): rebuild
        return model  # never cached: a twin that is the model itself would keep it alive
    twins = _TWINS.setdefault(model, {})
    if sequence_outputs not in twins:
        twins[sequence_outputs] = with_sequence_outputs(model, sequence_outputs)
        return twins[sequence_outputs]
    return transfer_weights(model, twins[sequence_outputs])


def _windowed_logits(model, pieces: list[np.ndarray], positions: list[np.ndarray],
                     context: int, batch_size: int) -> np.ndarray:
    last = _view(model, False)
    rows = [(i, int(t)) for i in range(len(pieces)) for t in positions[i]]
    out = []
    offsets = np.arange(-context, 0, dtype=np.int64)
    width = note_features(model)
    for b in range(0, len(rows), batch_size):
        chunk = rows[b: b + batch_size]
        x = np.zeros((batch_size if len(rows) > batch_size else len(chunk), context, width),
                     np.float32)  # one shape for every batch: traced once
        x[: len(chunk)] = match_features(np.stack([pieces[i][t + offsets] for i, t in chunk]),
                                         width)
        logits = np.asarray(last.predict_on_batch(model_inputs(last, x))["pitch"], np.float32)
        out.append(pitch_given_steps(logits[: len(chunk)],
                                     np.array([pieces[i][t, 1] for i, t in chunk])))
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def _carried_logits(model, pieces: list[np.ndarray], positions: list[np.ndarray],
                    max_batch_notes: int = 262_144, chunk: int = CARRIED_CHUNK
                    ) -> list[np.ndarray]:
    """Pitch logits for predicting note ``t`` of each piece from notes ``0..t-1`` (state carried);
    pieces run in length-sorted, end-padded batches (padding after a piece changes nothing
    before it)."""
    sequence = sliding_window_model(model) or _view(model, True)  # as the sampler plays
    # a transformer reads long pieces in chunks (attention's memory grows with the square of
    # the positions of one call), a few pieces at a time
    reach = receptive_field(sequence)
    most_pieces = len(pieces) if reach is None else 16
    order = np.argsort([len(p) for p in pieces])
    result: list[np.ndarray | None] = [None] * len(pieces)
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order) and j - i < most_pieces and (
                (j - i + 1) * len(pieces[order[j]]) <= max_batch_notes):
            j += 1
        batch = order[i:j]
        longest = max(len(pieces[k]) for k in batch)
        padded = 1 << max(4, (longest - 1).bit_length())  # few distinct shapes
        width = note_features(model)
        x = np.zeros((len(batch), padded, width), np.float32)
        for r, k in enumerate(batch):
            x[r, : len(pieces[k])] = match_features(pieces[k], width)
        logits = np.asarray(predict_in_chunks(
            lambda part: {"pitch": np.asarray(sequence.predict_on_batch(
                model_inputs(sequence, part))["pitch"], np.float32)}, x, reach, chunk)["pitch"])
        for r, k in enumerate(batch):
            # a model whose pitch follows the step: the readout of each true step (its loss's)
            result[k] = pitch_given_steps(logits[r, positions[k] - 1], pieces[k][positions[k], 1])
        i = j
    return result  # type: ignore[return-value]


def pitch_nll(model, corpus: NoteCorpus | list[np.ndarray], split: str = "validation", *,
              context: int = 50, max_targets: int | None = 4096, batch_size: int = 256) -> float:
    """Held-out pitch NLL (nats per note) of each note after exactly ``context`` notes.

    The measure of the benchmark and of notebook 04: every note with at least ``context``
    notes before it in its piece (evenly thinned to ``max_targets``) is predicted from the
    ``context`` notes before it, from a zero state -- the same for ``last`` and ``all`` models.
    """
    pieces = _pieces(corpus, split)
    positions = _target_positions(np.array([len(p) for p in pieces]), context, max_targets)
    n = sum(len(p) for p in positions)
    if n == 0:
        raise MusicRNNError(f"no {split} piece has more than {context} notes to score")
    logits = _windowed_logits(model, pieces, positions, context, batch_size)
    targets = np.concatenate([pieces[i][positions[i], 0] for i in range(len(pieces))]
                             ).astype(np.int64)
    return float(-_log_softmax(logits)[np.arange(n), targets].mean())


def state_drift(model, corpus: NoteCorpus | list[np.ndarray], split: str = "validation", *,
                context: int = 50, max_targets: int | None = 4096, batch_size: int = 256
                ) -> DriftReport:
    """Pitch NLL with the LSTM state carried through whole pieces vs after a ``context`` window.

    Generation carries the state over hundreds of notes; a model only ever trained from a zero
    state on short windows may drift there. Both measures score the same notes (those with at
    least ``context`` notes before them): ``carried_nll <= windowed_nll`` means carrying the
    state costs nothing (longer memory even helps).
    """
    pieces = _pieces(corpus, split)
    positions = _target_positions(np.array([len(p) for p in pieces]), context, max_targets)
    n = sum(len(p) for p in positions)
    if n == 0:
        raise MusicRNNError(f"no {split} piece has more than {context} notes to score")
    used = [i for i in range(len(pieces)) if len(positions[i])]
    pieces = [pieces[i] for i in used]
    positions = [positions[i] for i in used]
    targets = np.concatenate([p[pos, 0] for p, pos in zip(pieces, positions)]).astype(np.int64)
    windowed = _log_softmax(_windowed_logits(model, pieces, positions, context, batch_size))
    carried = _log_softmax(np.concatenate(_carried_logits(model, pieces, positions)))
    rows = np.arange(n)
    return DriftReport(
        windowed_nll=float(-windowed[rows, targets].mean()),
        carried_nll=float(-carried[rows, targets].mean()),
        top1_disagreement=float((windowed.argmax(-1) != carried.argmax(-1)).mean()),
        context=int(context), targets=int(n), pieces=len(pieces),
    )


def step_scorer(corpus: NoteCorpus | list[np.ndarray], *, context: int,
                every: int | None = None, target_nll: float | None = None,
                budget_seconds: float | None = None, max_steps: int | None = None,
                eval_targets: int | None = 2000, label: str = "", progress: bool = False):
    """A Keras callback timing training by its steps and scoring :func:`pitch_nll` as it goes.

    Its clock is the sum of the training steps, each from batch begin to batch end (fetching the
    batch included); validation, scoring and whatever happens between epochs fall outside it, so
    two set-ups timed with it are timed the same way. Every ``every`` steps (or on demand with
    ``.score()``) it scores the validation split, outside the clock, and it stops training once
    the NLL reaches ``target_nll``, after ``budget_seconds`` of steps or after ``max_steps``.
    Read ``.curve`` (``(seconds, nll, steps)`` rows), ``.seconds``, ``.steps`` and ``.reached``
    (the training seconds at which the target was reached, or None).
    """
    import keras

    validation = _pieces(corpus, "validation")  # once, not at every scoring

    class StepScorer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = 0.0
            self.steps = 0
            self.curve: list[tuple[float, float, int]] = []
            self.reached: float | None = None
            self._started = 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self._started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.seconds += time.perf_counter() - self._started
            self.steps += 1
            if every and self.steps % every == 0:
                nll = self.score()
                if target_nll is not None and nll <= target_nll and self.reached is None:
                    self.reached = self.seconds
                    self.model.stop_training = True
            if (budget_seconds is not None and self.seconds >= budget_seconds) or (
                    max_steps is not None and self.steps >= max_steps):
                self.model.stop_training = True

        def score(self) -> float:
            nll = pitch_nll(self.model, validation, "validation", context=context,
                            max_targets=eval_targets)
            self.curve.append((self.seconds, nll, self.steps))
            if progress:
                print(f"  {label} {self.steps} steps: {self.seconds:.1f} s of training, "
                      f"validation pitch NLL {nll:.4f}", flush=True)
            return nll

    return StepScorer()


def learning_curve(
    config: ModelConfig | str | dict[str, Any],
    corpus: NoteCorpus,
    *,
    max_steps: int,
    eval_every: int = 25,
    budget_seconds: float | None = None,
    target_nll: float | None = None,
    context: int | None = None,
    eval_targets: int | None = 2000,
    validate_every: int | None = None,
    run_dir: str | Path | None = None,
    progress: bool = False,
):
    """Train ``config`` with :func:`train`, scoring :func:`pitch_nll` every ``eval_every`` steps.

    For comparing training set-ups by wall time (:func:`step_scorer`'s clock: the training steps
    only). The training itself is :func:`train`'s, validation period and early stopping included:
    the scoring does not change it. Stops after ``max_steps``, after ``budget_seconds`` of
    training, or once the NLL reaches ``target_nll``.

    Args:
        config: what to train (a config, a preset name or a dict).
        corpus: the note corpus (its validation split is scored).
        max_steps: training steps at most.
        eval_every: steps between scorings.
        budget_seconds: stop once this much training time has passed.
        target_nll: stop once the validation pitch NLL is at most this.
        context: notes of context before each scored note (default: ``seq_length``).
        eval_targets: validation notes scored (evenly spaced; None: all).
        validate_every: :func:`train`'s validation period (default: its own).
        run_dir: where the run is written (default: a temporary folder, removed afterwards).
        progress: print one line per scoring.

    Returns:
        ``(curve, result)``: a DataFrame with ``steps``, ``train_seconds``, ``pitch_nll`` per
        scoring (``reached`` marks the first row at or below ``target_nll``) and the
        :class:`TrainResult`.
    """
    import tempfile

    import pandas as pd

    config = resolve_config(config)
    context = context or config.seq_length
    steps_per_pass = make_dataset(corpus, "train", config).steps_per_pass
    config = config.replace(epochs=max(1, math.ceil(max_steps / steps_per_pass)))
    scorer = step_scorer(corpus, context=context, every=eval_every, target_nll=target_nll,
                         budget_seconds=budget_seconds, max_steps=max_steps,
                         eval_targets=eval_targets, progress=progress,
                         label=f"{config.name} ({config.targets}):")
    scratch = None
    if run_dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="musicrnn-curve-"))
        run_dir = scratch / "run"
    try:
        result = train(config, corpus.dataset, run_dir, corpus=corpus,
                       validate_every=validate_every, validation_windows=512, progress=False,
                       callbacks=[scorer], keep_checkpoints=1)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if not scorer.curve:
        scorer.score()  # too few steps for one scoring: score the model train() returned
    curve = pd.DataFrame(scorer.curve, columns=["train_seconds", "pitch_nll", "steps"])
    curve = curve[["steps", "train_seconds", "pitch_nll"]]
    curve["targets"] = config.targets
    if target_nll is not None:
        hit = curve["pitch_nll"] <= target_nll
        curve["reached"] = hit & ~hit.shift(fill_value=False).cummax()
    return curve, result


__all__ = [
    "TrainResult", "DriftReport", "WindowDataset", "train", "resolve_config", "resolve_strategy",
    "default_run_dir", "pitch_nll", "state_drift", "plot_loss_curves", "under_slurm",
    "learning_curve", "step_scorer", "ORIGINAL_TRAINING", "CPU_TRAINING", "strategy_name",
]

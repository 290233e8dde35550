"""Training speed, side by side: the original input pipeline against ours, v2 on the same data.

Both train the same v2 network (LSTM(256) -> Dropout(0.3) -> LSTM(128), same heads and loss
weights) on the same training pieces of the Bach chorales, on the same CPU, one after the other:

original  the research code's pipeline: every training note concatenated into one stream,
          ``tf.data`` element windows of 51 notes with shift 1 (windows cross from one piece into
          the next), one target per window (``targets="last"``), ``shuffle`` of the whole stream
          then ``batch`` then ``cache`` (so the order of epoch 1 is frozen), Adam 0.001, batch 64,
          3 epochs, Keras re-creating the iterator every epoch.
ours      :func:`musicrnn.training.train`: windows inside pieces gathered by index, a next-note
          target at every position (``targets="all"``) on windows 25 notes apart (v2's defaults),
          reshuffled every pass, with v2's training tuned for a CPU
          (:data:`musicrnn.training.CPU_TRAINING`: Adam 0.006, batches of 16, clipnorm 1).

Each side runs in a fresh Python process, one after the other, so that nothing of one (threads,
caches, traced functions) lingers in the other. The quality measure is the same for both: pitch NLL (nats per note) on the validation pieces,
each note predicted after a full 50-note context (:func:`musicrnn.training.pitch_nll`). The target
is what the original reaches after its 3 epochs; ours trains until it gets there, evaluated every
``--eval-every`` steps. Time counts training steps only (evaluation passes are excluded for both).

Prints samples (windows) per second, target notes per second, the two times and their ratio; the
last line is ``RESULT time_to_target_ratio=<r> ours_target_notes_per_s=<n>
original_target_notes_per_s=<n>``. About 8 minutes on 2 CPU cores with the default 120 files.

    .venv/bin/python benchmarks/train.py [--max-files 120] [--eval-every 25]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from musicrnn.model import build_model, compile_model, get_preset  # noqa: E402
from musicrnn.notes import FEATURES, load_corpus  # noqa: E402
from musicrnn.training import CPU_TRAINING, ORIGINAL_TRAINING, pitch_nll, train  # noqa: E402

KEY_ORDER = ("pitch", "step", "duration")


def original_dataset(train_notes: np.ndarray, seq_length: int, batch_size: int, seed: int):
    """The research code's pipeline, verbatim but for the pitch scaling (our model scales inside)."""
    notes_ds = tf.data.Dataset.from_tensor_slices(train_notes)
    length = seq_length + 1
    windows = notes_ds.window(length, shift=1, stride=1, drop_remainder=True)
    sequences = windows.flat_map(lambda x: x.batch(length, drop_remainder=True))

    def split_labels(sequence):
        inputs = sequence[:-1]
        labels_dense = sequence[-1]
        labels = {key: labels_dense[i] for i, key in enumerate(KEY_ORDER)}
        return inputs, labels

    seq_ds = sequences.map(split_labels, num_parallel_calls=tf.data.AUTOTUNE)
    buffer_size = len(train_notes) - seq_length
    return (seq_ds.shuffle(buffer_size, seed=seed)
            .batch(batch_size, drop_remainder=True)
            .cache()
            .prefetch(tf.data.experimental.AUTOTUNE))


class EpochClock(keras.callbacks.Callback):
    """Training seconds and steps per epoch (no validation runs inside these fits)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self.steps = 0
        self._t = 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t)


def run_original(corpus, config, epochs: int, eval_targets: int, seed: int) -> dict:
    """Train v2 the original way; pitch NLL after every epoch."""
    keras.utils.set_random_seed(seed)
    train_idx = corpus.indices("train")
    rows = np.concatenate([np.arange(corpus.offsets[i], corpus.offsets[i + 1]) for i in train_idx])
    train_notes = np.stack([corpus.columns[c][rows] for c in FEATURES], axis=1).astype(np.float64)
    dataset = original_dataset(train_notes, config.seq_length, config.batch_size, seed)
    model = compile_model(build_model(config), config, jit_compile=False)
    clock = EpochClock()
    curve = []
    for epoch in range(epochs):
        model.fit(dataset, epochs=epoch + 1, initial_epoch=epoch, callbacks=[clock], verbose=0)
        nll = pitch_nll(model, corpus, "validation", context=config.seq_length,
                        max_targets=eval_targets)
        curve.append((float(sum(clock.seconds)), nll))
        print(f"  original epoch {epoch + 1}: {clock.seconds[-1]:.1f} s, validation pitch NLL "
              f"{nll:.4f}", flush=True)
    seconds = float(sum(clock.seconds))
    windows = clock.steps * config.batch_size
    return {"curve": curve, "target": curve[-1][1], "seconds": seconds,
            "windows_per_s": windows / seconds, "targets_per_window": 1}


class ReachTarget(keras.callbacks.Callback):
    """After every period: pitch NLL after a full context; stop once it reaches the target."""

    def __init__(self, corpus, target: float, context: int, eval_targets: int, clock_ref):
        super().__init__()
        self.corpus, self.target, self.context = corpus, target, context
        self.eval_targets = eval_targets
        self.clock_ref = clock_ref
        self.curve: list[tuple[float, float, int]] = []
        self.reached: float | None = None

    def on_epoch_end(self, epoch, logs=None):
        nll = pitch_nll(self.model, self.corpus, "validation", context=self.context,
                        max_targets=self.eval_targets)
        seconds = float(logs["train_seconds"])
        self.curve.append((seconds, nll, int(logs["steps"])))
        print(f"  ours {int(logs['steps'])} steps: {seconds:.1f} s, validation pitch NLL "
              f"{nll:.4f}", flush=True)
        if nll <= self.target and self.reached is None:
            self.reached = seconds
            self.model.stop_training = True


def run_ours(corpus, config, target: float, eval_every: int, eval_targets: int,
             max_seconds: float) -> dict:
    """Train with musicrnn.training.train until the original's 3-epoch NLL is reached."""
    run_dir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    reach = ReachTarget(corpus, target, config.seq_length, eval_targets, None)

    class Budget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs and logs.get("train_seconds", 0) > max_seconds:
                self.model.stop_training = True

    try:
        result = train(config, corpus.dataset, run_dir / "run", corpus=corpus,
                       validate_every=eval_every, validation_windows=512, progress=False,
                       callbacks=[reach, Budget()], keep_checkpoints=1)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    per_window = config.seq_length if config.targets == "all" else 1
    return {"curve": reach.curve, "reached": reach.reached, "seconds": result.train_seconds,
            "windows_per_s": result.windows_per_second, "targets_per_window": per_window}


def _configs(args) -> tuple:
    original_config = get_preset("v2", seed=args.seed, **ORIGINAL_TRAINING)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        current = getattr(original_config, key)
        overrides[key] = type(current)(value) if current is not None else float(value)
    ours_config = get_preset(args.preset, seed=args.seed, **{**CPU_TRAINING, **overrides})
    return original_config, ours_config


def run_phase(args) -> dict:
    """One side of the comparison, in this (fresh) process."""
    corpus = load_corpus("bach-chorales", data_dir=args.data_dir, max_files=args.max_files)
    original_config, ours_config = _configs(args)
    if args.phase == "original":
        print(f"original pipeline: {args.epochs} epochs, targets 'last', batch "
              f"{original_config.batch_size}, lr {original_config.learning_rate:g}", flush=True)
        return run_original(corpus, original_config, args.epochs, args.eval_targets, args.seed)
    print(f"ours: targets {ours_config.targets!r}, shift {ours_config.window_shift}, batch "
          f"{ours_config.batch_size}, lr {ours_config.learning_rate:g}, clipnorm "
          f"{ours_config.clipnorm}; target pitch NLL {args.target:.4f}", flush=True)
    return run_ours(corpus, ours_config, args.target, args.eval_every, args.eval_targets,
                    args.budget)


def _run_child(argv: list[str], phase: str, extra: list[str]) -> dict:
    """Run one phase in a fresh Python process (nothing of one side lingers in the other's)."""
    import json
    import subprocess

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, __file__, *argv, "--phase", phase, "--result-json", str(out),
                   *extra]
        subprocess.run(command, check=True)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-files", type=int, default=120,
                        help="chorales used (all three splits); default 120 keeps it ~8 min")
    parser.add_argument("--data-dir", default=None, help="data folder (default: data/)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the original")
    parser.add_argument("--eval-every", type=int, default=25, help="our steps between checks")
    parser.add_argument("--eval-targets", type=int, default=2000,
                        help="validation notes scored per check (evenly spaced)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--preset", default="v2", help="the preset whose training is ours")
    parser.add_argument("--target", type=float, default=None,
                        help="skip the original and use this NLL as the target (exploration)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override our training config (exploration), e.g. learning_rate=3e-3")
    parser.add_argument("--phase", choices=["original", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--result-json", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=600.0, help=argparse.SUPPRESS)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)

    if args.phase:  # a child: one side, results to a JSON file
        result = run_phase(args)
        Path(args.result_json).write_text(json.dumps(result))
        return 0

    corpus = load_corpus("bach-chorales", data_dir=args.data_dir, max_files=args.max_files)
    print(corpus.summary().to_string(), flush=True)
    original_config, ours_config = _configs(args)
    if not ours_config.same_architecture(original_config):
        print(f"note: preset {args.preset} is not v2's architecture", flush=True)
    print(f"CPU cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}; each side runs "
          "in a fresh process, one after the other", flush=True)
    original = None
    target = args.target
    if target is None:
        original = _run_child(raw, "original", [])
        target = original["target"]
    budget = original["seconds"] if original else 600.0
    ours = _run_child(raw, "ours", ["--target", repr(target), "--budget", repr(budget)])
    print(f"load average after: {os.getloadavg()[0]:.2f}")

    ours_tps = ours["windows_per_s"] * ours["targets_per_window"]
    print("\n| pipeline | windows/s | target notes/s | training s to NLL "
          f"{target:.3f} |\n|---|---:|---:|---:|")
    if original:
        orig_tps = original["windows_per_s"] * original["targets_per_window"]
        print(f"| original ({args.epochs} epochs) | {original['windows_per_s']:.0f} | "
              f"{orig_tps:.0f} | {original['seconds']:.1f} |")
    reached = ours["reached"]
    print(f"| ours | {ours['windows_per_s']:.0f} | {ours_tps:.0f} | "
          f"{reached if reached is not None else float('nan'):.1f} |")
    if reached is None:
        print(f"ours did not reach the target within {budget:.0f} s of training", flush=True)
    if original:
        ratio = original["seconds"] / reached if reached else 0.0
        print(f"RESULT time_to_target_ratio={ratio:.2f} ours_target_notes_per_s={ours_tps:.0f} "
              f"original_target_notes_per_s={orig_tps:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

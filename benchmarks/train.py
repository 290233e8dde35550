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
caches, traced functions) lingers in the other. The quality measure is the same for both: pitch
NLL (nats per note) on the validation pieces, each note predicted after a full 50-note context
(:func:`musicrnn.training.pitch_nll`). The target is what the original reaches after its 3
epochs; ours trains until it gets there, scored every ``--eval-every`` steps. Time is the sum of
the training steps for both (batch fetch included; validation, scoring and epoch ends excluded);
our validation period and early stopping are train()'s own, unchanged by the scoring.

Prints samples (windows) per second, target notes per second, the two times and their ratio; the
last line is ``RESULT time_to_target_ratio=<r> ours_target_notes_per_s=<n>
original_target_notes_per_s=<n>``. About 6 minutes on 2 CPU cores with the default 120 files
(the original's 3 epochs on all 409 chorales would take ~20 minutes alone).

    .venv/bin/python benchmarks/train.py [--max-files 120] [--eval-every 25]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from musicrnn.model import build_model, compile_model, get_preset  # noqa: E402
from musicrnn.notes import FEATURES, load_corpus  # noqa: E402
from musicrnn.training import (  # noqa: E402
    CPU_TRAINING, ORIGINAL_TRAINING, step_scorer, train,
)

KEY_ORDER = ("pitch", "step", "duration")


def original_dataset(train_notes: np.ndarray, seq_length: int, batch_size: int, seed: int):
    """The research code's pipeline, verbatim but for the pitch scaling (our models scale)."""
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


def run_original(corpus, config, epochs: int, eval_targets: int, seed: int) -> dict:
    """Train v2 the original way (one ``fit`` of ``epochs`` epochs); NLL after every epoch."""
    keras.utils.set_random_seed(seed)
    train_idx = corpus.indices("train")
    rows = np.concatenate([np.arange(corpus.offsets[i], corpus.offsets[i + 1]) for i in train_idx])
    train_notes = np.stack([corpus.columns[c][rows] for c in FEATURES], axis=1).astype(np.float64)
    dataset = original_dataset(train_notes, config.seq_length, config.batch_size, seed)
    model = compile_model(build_model(config), config, jit_compile=False)
    clock = step_scorer(corpus, context=config.seq_length, eval_targets=eval_targets,
                        label="original", progress=True)

    class ScoreEachEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            clock.score()

    model.fit(dataset, epochs=epochs, callbacks=[clock, ScoreEachEpoch()], verbose=0)
    windows = clock.steps * config.batch_size
    return {"curve": clock.curve, "target": clock.curve[-1][1], "seconds": clock.seconds,
            "steps": clock.steps, "windows_per_s": windows / clock.seconds,
            "targets_per_window": 1}


def run_ours(corpus, config, target: float, eval_every: int, eval_targets: int,
             max_seconds: float) -> dict:
    """Train with musicrnn.training.train (its own validation period and callbacks) until the
    original's NLL is reached, scoring every ``eval_every`` steps outside the clock."""
    run_dir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    clock = step_scorer(corpus, context=config.seq_length, every=eval_every, target_nll=target,
                        budget_seconds=max_seconds, eval_targets=eval_targets, label="ours",
                        progress=True)
    try:
        train(config, corpus.dataset, run_dir / "run", corpus=corpus, progress=False,
              callbacks=[clock], keep_checkpoints=1)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    per_window = config.seq_length if config.targets == "all" else 1
    windows = clock.steps * config.batch_size
    return {"curve": clock.curve, "reached": clock.reached, "seconds": clock.seconds,
            "steps": clock.steps, "windows_per_s": windows / clock.seconds,
            "targets_per_window": per_window}


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

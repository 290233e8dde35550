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

``--dataset maestro`` measures throughput on MAESTRO instead: the design of
``configs/maestro-cpu.yaml`` (notebook 03's preset with notebook 04's settings, trained by
:func:`musicrnn.training.train`) against the original pipeline training v2, on the training
pieces of the same MAESTRO folder, each for the same ``--seconds`` of training steps after
``--warmup`` steps (graph tracing, the original's shuffle-buffer fill), each in a fresh process
that also reports its peak resident memory. The original's shuffle buffer holds every window of
the stream (6.5 GB of float64 windows on all of MAESTRO): it is capped at ``--original-buffer``
windows, which the table says. The last line is ``RESULT ours_vs_original=<r>
ours_target_notes_per_s=<n> original_target_notes_per_s=<n> ours_peak_rss_gb=<g>
original_peak_rss_gb=<g> pieces=<n> notes=<n>``. The folder is ``--maestro-dir``, else
``$MUSICRNN_MAESTRO_DIR``, else ``../shared/data/maestro-v2-trainval/maestro-v2.0.0``; the note
tables are cached in ``--data-dir`` (default ``data/``) by a first, unmeasured load.

    .venv/bin/python benchmarks/train.py --dataset maestro [--max-files 40] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from musicrnn.errors import MusicRNNError  # noqa: E402
from musicrnn.model import build_model, compile_model, get_preset  # noqa: E402
from musicrnn.notes import FEATURES, load_corpus  # noqa: E402
from musicrnn.runner import load_config, parameters_for  # noqa: E402
from musicrnn.training import (  # noqa: E402
    CPU_TRAINING, ORIGINAL_TRAINING, jit_setting, resolve_config, step_scorer, train,
)

KEY_ORDER = ("pitch", "step", "duration")
ROOT = Path(__file__).resolve().parents[1]
MAESTRO_DIR_ENV = "MUSICRNN_MAESTRO_DIR"
DEFAULT_MAESTRO = ROOT.parent / "shared" / "data" / "maestro-v2-trainval" / "maestro-v2.0.0"
CPU_PROFILE = ROOT / "configs" / "maestro-cpu.yaml"
# notebook 04's parameters that change the model config (0, "" or [] keeps the preset's value)
NOTEBOOK_04_FIELDS = ("epochs", "targets", "learning_rate", "batch_size", "window_shift",
                      "clipnorm", "lstm_units", "transpose")


def original_dataset(train_notes: np.ndarray, seq_length: int, batch_size: int, seed: int,
                     buffer_size: int | None = None):
    """The research code's pipeline, verbatim but for the pitch scaling (our models scale) and
    ``buffer_size`` (default: the original's, every window of the stream)."""
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
    buffer_size = buffer_size or len(train_notes) - seq_length
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


# -- MAESTRO: throughput of the CPU profile's design against the original pipeline --------------


def maestro_folder(given: str | None) -> Path:
    """The MAESTRO folder: ``given``, else ``$MUSICRNN_MAESTRO_DIR``, else the shared train and
    validation copy; a one-line error when there is none."""
    raw = given or os.environ.get(MAESTRO_DIR_ENV)
    folder = Path(raw).expanduser().resolve() if raw else DEFAULT_MAESTRO
    if not folder.is_dir():
        where = "" if raw else f" (the default; set ${MAESTRO_DIR_ENV} or give --maestro-dir)"
        raise MusicRNNError(f"no MAESTRO folder at {folder}{where}; give --maestro-dir DIR, the "
                            "folder of maestro-v2.0.0.csv and the year folders")
    return folder


def profile_settings(path: Path, seed: int):
    """What a profile trains, as notebook 04 applies it: the model config (notebook 03's preset
    with notebook 04's changes) and the XLA setting (None: the library's default)."""
    cfg = load_config(path)
    preset = parameters_for(cfg, "03_build_model")["preset"]
    train_params = parameters_for(cfg, "04_train")
    changes = {k: train_params[k] for k in NOTEBOOK_04_FIELDS if train_params.get(k)}
    changes.update(train_params.get("model_changes") or {})  # any other field, as notebook 04
    return (resolve_config(preset, **changes, seed=seed),
            jit_setting(train_params.get("jit_compile", "auto")))


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


class ThroughputClock(keras.callbacks.Callback):
    """Times training steps (batch fetch included) after ``warmup`` steps, and stops training
    once ``seconds`` of them have passed."""

    def __init__(self, seconds: float, warmup: int):
        super().__init__()
        self.limit, self.warmup = float(seconds), int(warmup)
        self.steps = 0  # all steps, warm-up included
        self.timed_steps = 0
        self.seconds = 0.0
        self._started = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps > self.warmup:
            self.seconds += time.perf_counter() - self._started
            self.timed_steps += 1
        if self.seconds >= self.limit:
            self.model.stop_training = True

    def result(self, batch_size: int, targets_per_window: int) -> dict:
        windows_per_s = self.timed_steps * batch_size / max(self.seconds, 1e-9)
        return {"steps": self.steps, "timed_steps": self.timed_steps, "seconds": self.seconds,
                "windows_per_s": windows_per_s,
                "target_notes_per_s": windows_per_s * targets_per_window}


def run_maestro_phase(args) -> dict:
    """One side of the MAESTRO comparison, in this (fresh) process."""
    folder = maestro_folder(args.maestro_dir)
    corpus = load_corpus(f"local:{folder}", data_dir=args.data_dir, max_files=args.max_files)
    clock = ThroughputClock(args.seconds, args.warmup)
    if args.phase == "original-maestro":
        config = get_preset("v2", seed=args.seed, **ORIGINAL_TRAINING)
        keras.utils.set_random_seed(args.seed)
        train_idx = corpus.indices("train")
        rows = np.concatenate([np.arange(corpus.offsets[i], corpus.offsets[i + 1])
                               for i in train_idx])
        notes = np.stack([corpus.columns[c][rows] for c in FEATURES], axis=1).astype(np.float64)
        windows = len(notes) - config.seq_length
        dataset = original_dataset(notes, config.seq_length, config.batch_size, args.seed,
                                   buffer_size=min(windows, args.original_buffer))
        model = compile_model(build_model(config), config, jit_compile=False)
        model.fit(dataset, epochs=1, callbacks=[clock], verbose=0)
        return {**clock.result(config.batch_size, 1), "peak_rss_gb": peak_rss_gb(),
                "windows": windows, "buffer": min(windows, args.original_buffer),
                "model": "v2", "batch_size": config.batch_size}
    config, xla = profile_settings(Path(args.profile), args.seed)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-train-maestro-"))
    try:
        train(config, corpus.dataset, run_dir / "run", corpus=corpus, progress=False,
              callbacks=[clock], keep_checkpoints=1, validate_every=10**6,
              jit_compile=xla)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    per_window = config.seq_length if config.targets == "all" else 1
    return {**clock.result(config.batch_size, per_window), "peak_rss_gb": peak_rss_gb(),
            "model": f"{config.name} ({config.describe_architecture()})",
            "batch_size": config.batch_size, "window_shift": config.window_shift,
            "targets": config.targets}


def maestro_main(args, raw: list[str]) -> int:
    """Both sides of the MAESTRO comparison, one after the other, and the table."""
    folder = maestro_folder(args.maestro_dir)
    profile = Path(args.profile)
    config, xla = profile_settings(profile, args.seed)  # a bad profile fails first
    started = time.perf_counter()
    corpus = load_corpus(f"local:{folder}", data_dir=args.data_dir, max_files=args.max_files)
    print(f"{len(corpus):,} performances, {corpus.n_notes:,} notes of {folder} "
          f"({'all' if args.max_files is None else f'--max-files {args.max_files}'}); "
          f"loaded in {time.perf_counter() - started:.1f} s, peak RSS {peak_rss_gb():.2f} GB",
          flush=True)
    print(corpus.summary().to_string(), flush=True)
    print(f"ours: {profile.relative_to(ROOT) if profile.is_relative_to(ROOT) else profile} "
          f"({config.name}, {config.describe_architecture()}, targets {config.targets!r}, batch "
          f"{config.batch_size}, XLA {xla or False}); original: v2, targets "
          f"'last', batch {ORIGINAL_TRAINING['batch_size']}", flush=True)
    print(f"CPU cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}; each side "
          f"{args.seconds:g} s of training steps after {args.warmup} warm-up steps, in a fresh "
          "process, one after the other", flush=True)
    original = _run_child(raw, "original-maestro", [])
    ours = _run_child(raw, "ours-maestro", [])
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    capped = original["buffer"] < original["windows"]
    buffer_note = (f"shuffle buffer capped at {original['buffer']:,} of {original['windows']:,} "
                   "windows" if capped else f"shuffle buffer of all {original['windows']:,} "
                   "windows")
    print("\n| pipeline | model | steps timed | windows/s | target notes/s | peak RSS |\n"
          "|---|---|---:|---:|---:|---:|")
    print(f"| original (element windows over the concatenated stream, one target per window, "
          f"{buffer_note}) | v2 | {original['timed_steps']} | {original['windows_per_s']:,.0f} | "
          f"{original['target_notes_per_s']:,.0f} | {original['peak_rss_gb']:.2f} GB |")
    print(f"| ours (windows inside pieces by index, shift {ours['window_shift']}, a target at "
          f"every position) | {ours['model']} | {ours['timed_steps']} | "
          f"{ours['windows_per_s']:,.0f} | {ours['target_notes_per_s']:,.0f} | "
          f"{ours['peak_rss_gb']:.2f} GB |")
    ratio = ours["target_notes_per_s"] / max(original["target_notes_per_s"], 1e-9)
    print(f"RESULT ours_vs_original={ratio:.2f} "
          f"ours_target_notes_per_s={ours['target_notes_per_s']:.0f} "
          f"original_target_notes_per_s={original['target_notes_per_s']:.0f} "
          f"ours_peak_rss_gb={ours['peak_rss_gb']:.2f} "
          f"original_peak_rss_gb={original['peak_rss_gb']:.2f} pieces={len(corpus)} "
          f"notes={corpus.n_notes}")
    return 0


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
    if args.phase.endswith("-maestro"):
        return run_maestro_phase(args)
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
    parser.add_argument("--max-files", type=int, default=None,
                        help="chorales used (all three splits; default 120, ~8 min), or MAESTRO "
                        "performances (default all)")
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
    parser.add_argument("--dataset", choices=["chorales", "maestro"], default="chorales",
                        help="chorales: time to the original's NLL (default); maestro: "
                        "throughput and memory of the CPU profile on MAESTRO")
    parser.add_argument("--maestro-dir", default=None,
                        help=f"MAESTRO folder (default ${MAESTRO_DIR_ENV}, else "
                        "../shared/data/maestro-v2-trainval/maestro-v2.0.0)")
    parser.add_argument("--profile", default=str(CPU_PROFILE),
                        help="maestro: the profile whose design is ours "
                        "(default configs/maestro-cpu.yaml)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="maestro: seconds of training steps timed per side")
    parser.add_argument("--warmup", type=int, default=10,
                        help="maestro: steps before the clock starts (tracing, buffer fill)")
    parser.add_argument("--original-buffer", type=int, default=100_000,
                        help="maestro: the original's shuffle buffer at most (windows)")
    parser.add_argument("--phase", choices=["original", "ours", "original-maestro",
                                            "ours-maestro"], help=argparse.SUPPRESS)
    parser.add_argument("--result-json", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=600.0, help=argparse.SUPPRESS)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    if args.max_files is None and args.dataset == "chorales":
        args.max_files = 120

    try:
        if args.phase:  # a child: one side, results to a JSON file
            result = run_phase(args)
            Path(args.result_json).write_text(json.dumps(result))
            return 0
        if args.dataset == "maestro":
            return maestro_main(args, raw)
    except MusicRNNError as exc:
        print(f"benchmarks/train.py: error: {exc}", file=sys.stderr)
        return 2

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

"""The ``musicrnn`` command: run, download, extract, train, generate, evaluate, perform, styles.

Thin by design: each sub-command parses its arguments and calls one library function. A
:class:`~musicrnn.errors.MusicRNNError` (bad input, missing files) is printed as one line and the
command exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import MusicRNNError


# -- sub-commands -------------------------------------------------------------------------------
# Each handler takes the parsed arguments and returns an exit status.


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_notebooks

    run_notebooks(args.config, run_dir=args.run_dir, upto=args.upto, dataset=args.dataset,
                  data_dir=args.data_dir, start=args.start)
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .datasets import download

    files = download(args.name, data_dir=args.data_dir, max_files=args.max_files,
                     workers=args.workers)
    print(files.describe())
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from .notes import extract_corpus

    corpus = extract_corpus(args.name, data_dir=args.data_dir, workers=args.workers,
                            max_files=args.max_files, force=args.force)
    print(corpus.summary().to_string())
    return 0


def _cmd_perform(args: argparse.Namespace) -> int:
    from .live import list_output_names, perform, sigint_raises

    if args.list_ports:
        names = list_output_names()
        print("\n".join(names) if names else "(no MIDI output ports)")
        return 0
    from .generation import check_guidance

    guidance = check_guidance(args.guidance)
    cc_map = None
    if args.temperature_cc is not None:
        cc_map = {args.temperature_cc: ("temperature", 0.1, 2.0)}
    if args.style_cc is not None:
        labels = len(_run_styles(args.run_dir))  # CC 0..127 sweeps none, style 1, ... the last
        if not labels:
            raise MusicRNNError("--style-cc needs a model trained with --condition (this one "
                                "has no styles)")
        cc_map = {**(cc_map or {}), args.style_cc: ("style", 0.0, float(labels - 1))}
    inputs = []
    if args.gestures:
        from .gestures import start_camera_thread

        inputs.append(lambda controls: start_camera_thread(
            controls, camera=args.camera, data_dir=args.data_dir).stop)
    # Ctrl-C must stop the performance (all notes off, the recording written) even when this
    # process was started with SIGINT ignored, as a background job of a script is.
    with sigint_raises():
        perform(args.run_dir, port=args.port, virtual=args.virtual, record=args.record,
                duration_s=args.duration, temperature=args.temperature, speed=args.speed,
                transpose=args.transpose, velocity=args.velocity, dynamics=args.dynamics,
                velocity_temperature=args.velocity_temperature, channel=args.channel,
                seed=args.seed, inputs=inputs, control_port=args.control_port,
                cc_map=cc_map, data_dir=args.data_dir, style=args.style, guidance=guidance)
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .generation import (
        check_guidance, check_temperature, check_top_k, check_top_p, check_num_notes,
        check_output_path, load_generator, notes_table,
    )

    temperature = check_temperature(_number(args.temperature, "--temperature"))
    velocity_temperature = None if args.velocity_temperature is None else check_temperature(
        _number(args.velocity_temperature, "--velocity-temperature"), "--velocity-temperature")
    num_notes = check_num_notes(_number(args.num_notes, "--num-notes", whole=True))
    top_k = check_top_k(None if args.top_k is None else _number(args.top_k, "--top-k", True))
    top_p = check_top_p(None if args.top_p is None else _number(args.top_p, "--top-p"))
    batch = int(_number(args.batch, "--batch", whole=True))
    if not 1 <= batch <= 1024:
        raise MusicRNNError(f"--batch must be 1 to 1024 pieces, got {args.batch}")
    seed = None if args.seed is None else int(_number(args.seed, "--seed", whole=True))
    if seed is not None and seed < 0:
        raise MusicRNNError(f"--seed must be >= 0, got {args.seed}")
    guidance = check_guidance(args.guidance)
    out = check_output_path(args.out)
    outs = [out] if batch == 1 else [
        out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(batch)
    ]
    generator = load_generator(args.run_dir, model_path=args.model,
                               seed_sequence=args.seed_sequence, primer=args.primer)
    if velocity_temperature is not None and not generator.velocity:
        print("note: --velocity-temperature has no effect: this model has no velocity head "
              "(its notes play at one velocity)")
    style = None if args.style is None else [s.strip() for s in args.style.split(",")]
    if style is not None and len(style) == 1:
        style = style[0]  # one style for every piece
    elif style is not None and len(style) != batch:
        raise MusicRNNError(f"--style gives {len(style)} styles for --batch {batch}; give one "
                            "style, or one per piece (comma-separated)")
    sampler = generator.sampler(batch_size=batch, seed=seed, style=style, guidance=guidance)
    sampler.prime(generator.primer)
    notes = sampler.sample(num_notes, temperature=temperature, top_k=top_k, top_p=top_p,
                           velocity_temperature=velocity_temperature)

    from .audio import save_piece

    written = []
    for path, stream in zip(outs, notes):
        table = notes_table(stream)
        if args.with_primer:
            import pandas as pd

            primer = notes_table(generator.primer)
            table = pd.concat([primer, notes_table(stream, start=float(primer["start"].iloc[-1]))],
                              ignore_index=True)
        try:
            files = save_piece(table, path, wav_path=path.with_suffix(".wav") if args.wav else None)
        except BaseException:
            for done in written:  # all or nothing: no half of a batch left behind
                for f in done.values():
                    f.unlink(missing_ok=True)
            raise
        written.append(files)
    print(f"primer: {len(generator.primer)} notes from {generator.primer_source}; "
          f"{sampler.describe()}")
    for files in written:
        print("wrote " + ", ".join(str(f) for f in files.values()))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_run

    report = evaluate_run(
        args.run_dir, data_dir=args.data_dir, dataset=args.dataset, max_files=args.max_files,
        temperatures=args.temperatures, num_samples=args.num_samples, num_notes=args.num_notes,
        seed=args.seed, split=args.split, max_positions=args.max_positions, progress=True,
    )
    m = report.metrics
    print(f"held-out {m['split']} pieces of {m['dataset']}: {m['n_positions']:,} notes scored "
          f"with a full {m['seq_length']}-note context")
    print(f"pitch NLL {m['pitch_nll']:.3f} nats/note (unigram {m['unigram_pitch_nll']:.3f}, "
          f"markov2 {m['markov2_pitch_nll']:.3f}, best n-gram {m['best_ngram']} "
          f"{m['best_ngram_pitch_nll']:.3f}); top-1 {m['top1_accuracy']:.1%}")
    print(f"best temperature {m['best_temperature']:g}: overlapping area {m['overlap_area']:.3f} "
          f"(real music reaches {m['reference_overlap_area']:.3f})")
    if "nll_true_label" in m:
        print(f"styles ({m['condition']}): NLL per note with the true label "
              f"{m['nll_true_label']:.3f}, none {m['nll_none_label']:.3f}, a wrong one "
              f"{m['nll_wrong_label']:.3f}; style accuracy of real excerpts "
              f"{m['style_accuracy_real']:.1%}, of generated pieces "
              f"{m['style_accuracy_generated']:.1%} (guidance 1), "
              f"{m['style_accuracy_generated_best']:.1%} (guidance {m['best_guidance']:g})")
    print(f"wrote {m['run_dir']}/evaluation/ (metrics.json, tables, plots)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .model import get_preset
    from .training import train

    config = get_preset(args.preset, **_settings(args.set))
    if args.condition != "none":
        config = config.replace(condition=args.condition, styles=[],
                                **({"max_styles": args.max_styles} if args.max_styles else {}))
    result = train(
        config, args.dataset, args.run_dir, data_dir=args.data_dir,
        max_files=args.max_files, epochs=args.epochs, seed=args.seed,
        validate_every=args.validate_every, strategy=args.strategy,
        mixed_precision=args.mixed_precision, tensorboard=args.tensorboard,
        progress=2 if args.quiet else True,
    )
    print(f"run directory: {result.run_dir}")
    return 0


def _settings(pairs: list[str] | None) -> dict:
    """``--set KEY=VALUE`` pairs as config changes (VALUE read as JSON, else as a string)."""
    import json

    changes = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise MusicRNNError(f"--set takes KEY=VALUE (e.g. seq_length=32), got {pair!r}")
        try:
            changes[key.strip()] = json.loads(text)
        except ValueError:
            changes[key.strip()] = text
    return changes


def _run_styles(run_dir: str | None) -> tuple[str, ...]:
    """The labels of the model in ``run_dir`` (``("none", ...)``; () without styles), read
    from its config.json (no TensorFlow needed)."""
    import json
    from pathlib import Path

    from .generation import resolve_run_dir

    path = Path(resolve_run_dir(run_dir)) / "config.json"
    try:
        model = json.loads(path.read_text()).get("model") or {}
    except (OSError, ValueError) as exc:
        raise MusicRNNError(f"cannot read {path} ({exc}); give the run directory of a trained "
                            "model") from None
    styles = [str(name) for name in model.get("styles") or []]
    return ("none", *styles) if model.get("condition", "none") != "none" and styles else ()


def _cmd_styles(args: argparse.Namespace) -> int:
    styles = _run_styles(args.run_dir)
    if not styles:
        print(f"musicrnn styles: {args.run_dir}'s model was trained without styles (train with "
              "--condition dataset or composer to get some)", file=sys.stderr)
        return 0
    print("\n".join(styles[1:]))
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
    from .experiments import run_experiments

    run_experiments(args.config, args.out_dir, data_dir=args.data_dir,
                    budget_seconds=args.budget_seconds, models=args.models, progress=True)
    return 0


def _number(text: str, option: str, whole: bool = False) -> float:
    """A command-line number, or a one-line error naming the option."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise MusicRNNError(f"{option} must be a number, got {text!r}") from None
    if whole and not value.is_integer():  # also refuses nan and inf
        raise MusicRNNError(f"{option} must be a whole number, got {text!r}")
    return value


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musicrnn",
        description="Generate music with a recurrent network: data, training, generation, live.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the notebooks in order with papermill (the main job)")
    p.add_argument("--config", default="configs/quick.yaml", help="parameter file (YAML)")
    p.add_argument("--run-dir", default=None, help="output folder (default outputs/runs/<time>)")
    p.add_argument("--upto", default=None, help="stop after this notebook, e.g. 04")
    p.add_argument("--start", default=None, help="begin with this notebook, e.g. 05, in a run "
                   "folder the earlier ones filled (with --run-dir)")
    p.add_argument("--dataset", default=None, help="every notebook's dataset instead of the "
                   "file's: maestro-v2, local:DIR (another copy), ...")
    p.add_argument("--data-dir", default=None, help="every notebook's data folder (default: "
                   "the project's data/)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("download", help="download (or write out) a dataset's MIDI files")
    p.add_argument("name", help="bach-chorales, essen-folksongs, maestro-v2, maestro-v3, "
                   "local:DIR, or several joined by + (a mixture; --max-files then counts per "
                   "dataset)")
    p.add_argument("--data-dir", default=None, help="data folder (default: the project's data/)")
    p.add_argument("--max-files", type=int, default=None,
                   help="a deterministic subset of N files covering every split")
    p.add_argument("--workers", type=int, default=None,
                   help="processes writing MIDI files (default: one per core)")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("extract", help="extract and cache a dataset's note tables")
    p.add_argument("name", help="dataset name, as for download")
    p.add_argument("--data-dir", default=None, help="data folder (default: the project's data/)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: auto)")
    p.add_argument("--max-files", type=int, default=None,
                   help="a deterministic subset of N files covering every split")
    p.add_argument("--force", action="store_true", help="ignore the cache and extract again")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("perform", help="play a trained model live to a MIDI port or a file")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--port", default=None, help="MIDI output port name (see --list-ports)")
    out.add_argument("--virtual", action="store_true",
                     help="open a virtual MIDI port 'Music RNN' for a DAW or soft synth")
    out.add_argument("--record", default=None, metavar="FILE.mid",
                     help="record to a MIDI file with the real times (no MIDI system needed)")
    out.add_argument("--list-ports", action="store_true", help="list the MIDI output ports")
    p.add_argument("--run-dir", default=None, help="trained run (default: the newest one)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds to play (default: until Ctrl-C)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--speed", type=float, default=1.0, help="tempo factor (2: twice as fast)")
    p.add_argument("--transpose", type=int, default=0, help="semitones added to every note")
    p.add_argument("--velocity", type=int, default=90,
                   help="MIDI velocity 1-127 of a model without velocity (default 90)")
    p.add_argument("--dynamics", type=float, default=1.0,
                   help="scale every note's velocity by this (0.25-2.0; default 1.0)")
    p.add_argument("--velocity-temperature", type=float, default=1.0,
                   help="velocity randomness of a model with velocity (default 1.0)")
    p.add_argument("--channel", type=int, default=0, help="MIDI channel 0-15")
    p.add_argument("--seed", type=int, default=None, help="random seed of the sampler")
    p.add_argument("--style", default=None, help="a conditioned model's style to start in")
    p.add_argument("--guidance", default="1.0", help="style guidance (1: plain, > 1 stronger)")
    p.add_argument("--style-cc", type=int, default=None, metavar="CC",
                   help="a MIDI CC of --control-port that moves through the styles (morphing "
                   "between neighbours)")
    p.add_argument("--control-port", default=None,
                   help="MIDI input port of a controller: its CCs pass through to the output")
    p.add_argument("--temperature-cc", type=int, default=None, metavar="CC",
                   help="controller number whose knob sets the temperature (0.1-2.0)")
    p.add_argument("--gestures", action="store_true",
                   help="steer with hand gestures from the camera (pip install .[gestures])")
    p.add_argument("--camera", type=int, default=0, help="camera index for --gestures")
    p.add_argument("--data-dir", default=None, help="data folder (gesture model cache)")
    p.set_defaults(func=_cmd_perform)

    p = sub.add_parser("generate", help="generate notes with a trained model: .mid (and .wav)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-dir", help="a run directory (model, config, seed sequence)")
    source.add_argument("--model", help="a .keras model (ours or the original's) or an original "
                        "ckpt_N.weights.h5")
    p.add_argument("--seed-sequence", help="primer notes: an (n, 3) .npy of raw pitch, step, "
                   "duration, or (n, 4) with velocity (default: the run's seed_sequence.npy)")
    p.add_argument("--primer", help="primer notes from a MIDI file (its last seq_length notes)")
    p.add_argument("--temperature", default="1.0",
                   help="pitch randomness, > 0: below 1 safer, above 1 wilder (default 1.0)")
    p.add_argument("--num-notes", default="120", help="notes to generate (default 120)")
    p.add_argument("--out", required=True, help="the MIDI file to write (FILE.mid)")
    p.add_argument("--wav", action="store_true", help="also render FILE.wav with FluidSynth")
    p.add_argument("--seed", default=None, help="random seed: the same seed gives the same notes")
    p.add_argument("--top-k", default=None, help="draw pitch only from the K most likely")
    p.add_argument("--top-p", default=None, help="draw pitch from the most likely pitches "
                   "holding probability P (nucleus sampling)")
    p.add_argument("--velocity-temperature", default=None,
                   help="dynamics randomness of a model with velocity, > 0: below 1 steadier, "
                   "above 1 more varied (default 1.0)")
    p.add_argument("--batch", default="1", help="generate N pieces at once: FILE-1.mid ...")
    p.add_argument("--style", default=None, help="a conditioned model's style (see `musicrnn "
                   "styles`; 'none' for no style), or one per piece, comma-separated")
    p.add_argument("--guidance", default="1.0", help="style guidance: 1 plain (default), > 1 "
                   "a stronger style, 0 none")
    p.add_argument("--with-primer", action="store_true",
                   help="put the primer's notes before the generated ones in the file")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("evaluate", help="held-out likelihood, baselines, temperature sweep: "
                       "writes RUN_DIR/evaluation/")
    p.add_argument("--run-dir", required=True, help="the run directory of the model to evaluate")
    p.add_argument("--temperatures", type=float, nargs="+", default=None,
                   help="temperatures to sweep (default 0.5 0.75 1.0 1.25 1.5)")
    p.add_argument("--data-dir", default=None, help="data folder (default: the project's data/)")
    p.add_argument("--dataset", default=None, help="held-out pieces from this dataset "
                   "(default: the one the run was trained on)")
    p.add_argument("--max-files", type=int, default=None,
                   help="files of the dataset (default: as the run was trained)")
    p.add_argument("--split", default="test", choices=["test", "validation"],
                   help="held-out split (validation when the dataset has no test pieces)")
    p.add_argument("--num-samples", type=int, default=64,
                   help="generated continuations per temperature (default 64)")
    p.add_argument("--num-notes", type=int, default=100,
                   help="notes per continuation (default 100)")
    p.add_argument("--max-positions", type=int, default=None,
                   help="score at most this many held-out notes (evenly spaced; default all)")
    p.add_argument("--seed", type=int, default=0, help="random seed of primers and sampling")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("experiments", help="train several presets on one wall-clock budget and "
                       "write the experiment log (make experiments)")
    p.add_argument("--config", default="configs/experiments-quick.yaml",
                   help="experiments file (default configs/experiments-quick.yaml)")
    p.add_argument("--out-dir", default=None, help="output folder (default "
                   "outputs/runs/<config>-<time>; an existing one resumes)")
    p.add_argument("--data-dir", default=None, help="data folder (default: the project's data/)")
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="training wall-clock per model (default: the file's budget_seconds)")
    p.add_argument("--models", nargs="+", default=None,
                   help="only these models of the file (default: all)")
    p.set_defaults(func=_cmd_experiments)

    p = sub.add_parser("train", help="train a model into a run directory (run it again after an "
                       "interruption and it resumes)")
    p.add_argument("--preset", default="v2",
                   help="model preset: baseline, v1, v2 (default), v3, v4 (categorical timing)")
    p.add_argument("--dataset", default="bach-chorales",
                   help="bach-chorales (default), essen-folksongs, maestro-v2, maestro-v3, "
                   "local:DIR")
    p.add_argument("--max-files", type=int, default=None, help="use a subset of N files")
    p.add_argument("--epochs", type=int, default=None,
                   help="passes over the training windows at most (default: the preset's)")
    p.add_argument("--run-dir", default=None, help="output folder (default: outputs/runs/"
                   "train-<preset>-<dataset>-seed<S>, the same for the same command)")
    p.add_argument("--seed", type=int, default=None, help="one seed for all randomness")
    p.add_argument("--data-dir", default=None, help="data folder (default: the project's data/)")
    p.add_argument("--validate-every", type=int, default=None,
                   help="training steps between validations (default: one pass, >= 200)")
    p.add_argument("--strategy", default="auto",
                   choices=["auto", "none", "mirrored", "multiworker", "slurm"],
                   help="distribution (auto: TF_CONFIG/SLURM -> multi-worker, >1 GPU -> "
                   "mirrored)")
    p.add_argument("--mixed-precision", action="store_true", help="mixed precision (GPUs)")
    p.add_argument("--tensorboard", action="store_true", help="TensorBoard logs in RUN_DIR/logs")
    p.add_argument("--quiet", action="store_true", help="one line per validation, no bar")
    p.add_argument("--condition", default="none", choices=["none", "dataset", "composer"],
                   help="learn a style label per piece: its dataset (a mixture such as "
                   "bach-chorales+essen-folksongs) or its composer (MAESTRO)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change one field of the preset, e.g. --set seq_length=32 (repeatable)")
    p.add_argument("--max-styles", type=int, default=None,
                   help="at most N styles (composers beyond them share 'other'; default 8)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("styles", help="list the styles of a conditioned model, one a line")
    p.add_argument("--run-dir", default=None, help="trained run (default: the newest one)")
    p.set_defaults(func=_cmd_styles)

    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MusicRNNError as exc:
        print(f"musicrnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"musicrnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Train one design for a short wall-clock budget and score it: how a profile's design is chosen.

A cheap way to compare designs before spending an hour on one: each run trains a preset with
some ModelConfig fields changed for ``--seconds`` of wall-clock (validation included, the cosine
schedule decaying over that time), then scores held-out pitch NLL, and the rest of each note,
with a fixed context on notes at positions ``>= --min-position`` of the held-out pieces (the
same notes for every design, whatever its ``seq_length``). Two designs side by side, one core
each, on a 2-core machine::

    taskset -c 0 .venv/bin/python scripts/short_run.py --dataset local:DIR --seconds 540 \\
        --set lstm_units=[128] --set learning_rate=0.01 --set lr_schedule=cosine --run-dir /tmp/F &
    taskset -c 1 .venv/bin/python scripts/short_run.py --dataset local:DIR --seconds 540 \\
        --set lstm_units=[128] --set learning_rate=0.01 --set lr_schedule=cosine \\
        --set batch_size=32 --run-dir /tmp/H &

Ends with ``RESULT key=value ...``. Short runs favour designs that learn fast; a longer budget
can favour a larger model, so use them to rank step sizes, batches and schedules, and confirm
the winner at full length.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _field(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--set wants FIELD=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value  # a bare string: cosine, embedding, ...


def main(argv: list[str] | None = None) -> int:
    from musicrnn import evaluation as ev
    from musicrnn.errors import MusicRNNError
    from musicrnn.model import get_preset
    from musicrnn.notes import load_corpus
    from musicrnn.training import jit_setting, train

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="dataset name or local:DIR")
    parser.add_argument("--data-dir", help="data folder holding the note cache")
    parser.add_argument("--max-files", type=int, help="use a subset of N files")
    parser.add_argument("--preset", default="v5")
    parser.add_argument("--set", dest="fields", type=_field, action="append", default=[],
                        metavar="FIELD=VALUE", help="a ModelConfig field (JSON value)")
    parser.add_argument("--seconds", type=float, default=540.0, help="training wall-clock")
    parser.add_argument("--validate-every", type=int, default=1000)
    parser.add_argument("--context", type=int, default=50, help="notes of context when scoring")
    parser.add_argument("--min-position", type=int, default=150)
    parser.add_argument("--max-positions", type=int, default=30000)
    parser.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto",
                        help="XLA for the training steps (auto: with a GPU only)")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    try:
        config = get_preset(args.preset, **{"dropout": 0.0, "epochs": 2, **dict(args.fields)})
        if args.context < 1 or args.min_position < args.context:
            raise MusicRNNError("--context must be >= 1 and --min-position >= --context")
        corpus = load_corpus(args.dataset, data_dir=args.data_dir, max_files=args.max_files)
        if not len(corpus.indices("validation")):
            raise MusicRNNError(f"{args.dataset} has no validation pieces to score designs on")
        started = time.perf_counter()
        result = train(config, args.dataset, args.run_dir, data_dir=args.data_dir,
                       max_files=args.max_files, corpus=corpus, budget_seconds=args.seconds,
                       validate_every=args.validate_every, progress=2,
                       jit_compile=jit_setting(args.jit_compile))
        split = "validation"  # designs are chosen on validation pieces, never on the test ones
        held_out = ev.corpus_pieces(corpus, split, velocity=config.velocity != "none")
        scores = ev.score_windows(result.model, held_out, args.context,
                                  min_position=args.min_position,
                                  max_positions=args.max_positions)
    except MusicRNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    figures = {"split": split, "steps": result.steps,
               "target_notes_per_s": round(result.target_notes_per_second),
               "pitch_nll": round(scores.pitch_nll, 4),
               "pitch_nll_marginal": round(scores.pitch_nll_marginal, 4),
               "step_nll": round(scores.step_nll, 4), "note_nll": round(scores.note_nll, 4),
               "wall_s": round(time.perf_counter() - started)}
    print("RESULT " + " ".join(f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

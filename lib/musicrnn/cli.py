"""The ``musicrnn`` command: run, download, extract, train, generate, evaluate, perform.

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

    run_notebooks(args.config, run_dir=args.run_dir, upto=args.upto)
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .datasets import download

    files = download(args.name, data_dir=args.data_dir)
    print(files.describe())
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from .notes import extract_corpus

    corpus = extract_corpus(args.name, data_dir=args.data_dir, workers=args.workers,
                            max_files=args.max_files, force=args.force)
    print(corpus.summary().to_string())
    return 0


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
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("download", help="download (or write out) a dataset's MIDI files")
    p.add_argument("name", help="bach-chorales, essen-folksongs, maestro-v2, maestro-v3, local:DIR")
    p.add_argument("--data-dir", default=None, help="data folder (default: the project's data/)")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("extract", help="extract and cache a dataset's note tables")
    p.add_argument("name", help="dataset name, as for download")
    p.add_argument("--data-dir", default=None, help="data folder (default: the project's data/)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: auto)")
    p.add_argument("--max-files", type=int, default=None, help="use only the first N files")
    p.add_argument("--force", action="store_true", help="ignore the cache and extract again")
    p.set_defaults(func=_cmd_extract)

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

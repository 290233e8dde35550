"""Score the original research checkpoint against simple baselines on held-out MAESTRO pieces.

The original project's experiment log expected stars; this measures. It reads a MAESTRO folder
laid out as the official archive (``maestro-v2.0.0.csv`` beside the year folders), fits the
unigram and Markov baselines on its train pieces, and scores them and the checkpoint on the same
held-out notes (the test pieces, or the validation pieces where the folder has no test pieces,
as in the shared sample). Prints a Markdown table and writes it (and a CSV) to ``--out``.

    .venv/bin/python scripts/score_original_checkpoint.py \\
        --maestro ../shared/data/maestro-v2-sample/maestro-v2.0.0 \\
        --checkpoint ../shared/data/seed-artifacts/ckpt_50.weights.h5
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from musicrnn import evaluation as ev
    from musicrnn.errors import MusicRNNError
    from musicrnn.model import load_original_checkpoint
    from musicrnn.notes import midi_to_notes
    from musicrnn.paths import OUTPUTS, atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maestro", default=str(SHARED / "maestro-v2-sample" / "maestro-v2.0.0"),
                        help="MAESTRO folder with maestro-v2.0.0.csv")
    parser.add_argument("--checkpoint", default=str(SHARED / "seed-artifacts" /
                                                    "ckpt_50.weights.h5"),
                        help="the original ckpt_N.weights.h5")
    parser.add_argument("--seq-length", type=int, default=50, help="window it was trained on")
    parser.add_argument("--max-positions", type=int, default=20000,
                        help="held-out notes scored (evenly spaced; 0 = all)")
    parser.add_argument("--out", default=str(OUTPUTS / "original-checkpoint"),
                        help="folder for original_vs_baselines.{md,csv}")
    args = parser.parse_args(argv)
    try:
        root = Path(args.maestro)
        csv = next(iter(sorted(root.glob("maestro-v*.csv"))), None)
        if csv is None:
            raise MusicRNNError(f"no maestro-v*.csv in {root}; pass --maestro FOLDER")
        meta = pd.read_csv(csv)
        held_out = "test" if (meta["split"] == "test").any() else "validation"
        pieces = {split: [midi_to_notes(root / f)
                          for f in meta.loc[meta["split"] == split, "midi_filename"]]
                  for split in ("train", held_out)}
        validation = None
        if held_out == "test" and (meta["split"] == "validation").any():
            validation = [midi_to_notes(root / f)
                          for f in meta.loc[meta["split"] == "validation", "midi_filename"]]
        model = load_original_checkpoint(args.checkpoint, seq_length=args.seq_length)
        max_positions = args.max_positions or None
        rows = [ev.score_windows(model, pieces[held_out], args.seq_length, name="original",
                                 max_positions=max_positions, progress=True)]
        baselines = ev.fit_ngram_baselines(pieces["train"], validation)
        rows += ev.ngram_scores(baselines, pieces[held_out], args.seq_length, max_positions,
                                rows[0].context)
        rows.append(ev.repeat_last_scores(pieces[held_out], args.seq_length, max_positions,
                                          rows[0].context))
    except MusicRNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = pd.DataFrame([r.to_dict() for r in rows]).set_index("name")
    title = (f"Original checkpoint vs baselines: {len(pieces[held_out])} held-out "
             f"({held_out}) MAESTRO pieces, {rows[0].n_notes:,} notes, fitted on "
             f"{len(pieces['train'])} train pieces")
    text = f"# {title}\n\n" + ev.markdown_table(table)
    out = Path(args.out)
    atomic_write_text(out / "original_vs_baselines.md", text)
    atomic_write_text(out / "original_vs_baselines.csv", table.to_csv())
    print(text)
    print(f"wrote {out}/original_vs_baselines.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Note extraction, side by side in one run: the original research loop against musicrnn.notes.

On the 60 shared MAESTRO v2 performances:

* **serial pretty_midi loop**, as the original research code (the TensorFlow music-generation
  tutorial) wrote it: ``pretty_midi.PrettyMIDI`` per file, instrument 0's notes sorted by start,
  a pandas DataFrame of pitch/step/duration per file, concatenated;
* **extract_corpus cold**: list the files, parse them (symusic), build the note tables and write
  the cache (``.npz`` + manifest) into a fresh data folder;
* **extract_corpus warm**: the same call again, answered from the cache.

Also shown: the engine alone (``extract_files``), a two-process pool, and the cache written
compressed or not. Every time is the best of ``--repeats`` runs (the slow serial loop: of at
most two), so that a busy machine's pauses do not decide the ratios. The last line reads
``RESULT cold_vs_serial=<ratio> warm_vs_cold=<ratio>`` (goals: at least 50 and 5).

Usage: ``python benchmarks/extract.py [MAESTRO_FOLDER] [--repeats N]``
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MUSICRNN_SHARED", ROOT.parent / "shared"))
DEFAULT_SAMPLE = SHARED / "data" / "maestro-v2-sample" / "maestro-v2.0.0"


def original_research_loop(paths: list[Path]):
    """The tutorial's ``midi_to_notes`` over every file, then one concatenated DataFrame."""
    import numpy as np
    import pandas as pd
    import pretty_midi

    tables = []
    for path in paths:
        pm = pretty_midi.PrettyMIDI(str(path))
        instrument = pm.instruments[0]
        notes = collections.defaultdict(list)
        sorted_notes = sorted(instrument.notes, key=lambda note: note.start)
        prev_start = sorted_notes[0].start
        for note in sorted_notes:
            start = note.start
            end = note.end
            notes["pitch"].append(note.pitch)
            notes["start"].append(start)
            notes["end"].append(end)
            notes["step"].append(start - prev_start)
            notes["duration"].append(end - start)
            prev_start = start
        tables.append(pd.DataFrame({name: np.array(value) for name, value in notes.items()}))
    return pd.concat(tables)


def best_of(repeats: int, run) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls of ``run(i)``, and the last result."""
    best, result = float("inf"), None
    for i in range(repeats):
        started = time.perf_counter()
        result = run(i)
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_SAMPLE),
                        help=f"the MAESTRO sample folder (default: {DEFAULT_SAMPLE})")
    parser.add_argument("--repeats", type=int, default=10, help="runs per measurement (best)")
    args = parser.parse_args(argv)
    folder = Path(args.folder).expanduser().resolve()
    if not folder.is_dir() or not any(folder.rglob("*.mid*")):
        print(f"benchmarks/extract.py: no MAESTRO MIDI files at {folder}; pass the folder of "
              "the shared sample (../shared/data/maestro-v2-sample/maestro-v2.0.0) or set "
              "MUSICRNN_SHARED", file=sys.stderr)
        return 2

    from musicrnn.datasets import download

    warnings.simplefilter("ignore")  # pretty_midi's tempo warnings are not what we measure
    name = f"local:{folder}"
    listing = download(name, progress=False)
    paths = [f.path for f in listing.files]
    scratch = Path(tempfile.mkdtemp(prefix="musicrnn-bench-"))
    try:
        return _measure(args, name, listing, paths, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _measure(args: argparse.Namespace, name: str, listing, paths: list[Path],
             scratch: Path) -> int:
    """Run every measurement, print the table; 0 when both sides read the same notes."""
    import numpy as np

    from musicrnn import notes

    n_files = len(paths)
    # Warm up imports and allocators on both sides (one file each), outside the timings.
    original_research_loop(paths[:1])
    notes.extract_files(paths[:1], "warm-up", scratch / "warm-up.npz", progress=False)

    rows = []
    serial_s, serial_table = best_of(max(1, min(args.repeats, 2)),
                                     lambda i: original_research_loop(paths))
    rows.append(("serial pretty_midi loop (original research code)", serial_s))

    def cold_corpus(i):
        return notes.extract_corpus(name, data_dir=scratch / f"cold-{i}", progress=False)

    cold_s, corpus = best_of(args.repeats, cold_corpus)
    rows.append(("extract_corpus cold (list, parse, tables, cache write)", cold_s))
    warm_dir = scratch / f"cold-{args.repeats - 1}"
    warm_s, warm = best_of(args.repeats,
                           lambda i: notes.extract_corpus(name, data_dir=warm_dir, progress=False))
    rows.append(("extract_corpus warm (cache read)", warm_s))

    engine_cold, _ = best_of(args.repeats, lambda i: notes.extract_files(
        listing, name, scratch / f"engine-{i}.npz", workers=1, progress=False))
    rows.append(("extract_files cold, serial", engine_cold))
    engine_warm, _ = best_of(args.repeats, lambda i: notes.extract_files(
        listing, name, scratch / "engine-0.npz", workers=1, progress=False))
    rows.append(("extract_files warm", engine_warm))
    pool_s, _ = best_of(args.repeats, lambda i: notes.extract_files(
        listing, name, scratch / f"pool-{i}.npz", workers=2, progress=False))
    rows.append(("extract_files cold, 2 processes", pool_s))

    # the same notes: the original loop reads instrument 0 only, which is all of MAESTRO
    same = (len(serial_table) == corpus.n_notes == warm.n_notes and np.array_equal(
        np.sort(serial_table["pitch"].to_numpy()), np.sort(corpus.columns["pitch"])))

    # the cache format: plain .npz against compressed, same arrays
    arrays = {c: corpus.columns[c] for c in notes.NOTE_COLUMNS}
    sizes, times = {}, {}
    for label, save in (("savez", np.savez), ("savez_compressed", np.savez_compressed)):

        def write(i, save=save):
            buffer = io.BytesIO()
            save(buffer, **arrays)
            return buffer.getvalue()

        times[label], data = best_of(min(args.repeats, 3), write)  # compressing takes seconds
        sizes[label] = len(data)

        def load(i, data=data):
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return [z[k] for k in z.files]

        times[label + " load"] = best_of(args.repeats, load)[0]

    print(f"Note extraction of {n_files} MAESTRO v2 performances ({corpus.n_notes:,} notes, "
          f"{sum(p.stat().st_size for p in paths) / 1e6:.1f} MB of MIDI), "
          f"best of {args.repeats} (serial loop: of {max(1, min(args.repeats, 2))}), "
          f"{os.cpu_count()} CPUs")
    print(f"  {'method':<56} {'seconds':>9} {'files/s':>9} {'vs serial':>10}")
    for label, seconds in rows:
        print(f"  {label:<56} {seconds:>9.4f} {n_files / seconds:>9.0f} "
              f"{serial_s / seconds:>9.1f}x")
    print(f"  same notes as the original loop: {'yes' if same else 'NO'}")
    print(f"  cache of {corpus.n_notes:,} notes: savez {times['savez']:.4f} s "
          f"({sizes['savez'] / 1e6:.1f} MB, load {times['savez load']:.4f} s) vs "
          f"savez_compressed {times['savez_compressed']:.4f} s "
          f"({sizes['savez_compressed'] / 1e6:.1f} MB, load {times['savez_compressed load']:.4f} s)")
    cold_vs_serial = serial_s / cold_s
    warm_vs_cold = cold_s / warm_s
    print(f"  goals: cold >= 50x serial ({'met' if cold_vs_serial >= 50 else 'NOT met'}), "
          f"warm >= 5x cold ({'met' if warm_vs_cold >= 5 else 'NOT met'})")
    print(f"RESULT cold_vs_serial={cold_vs_serial:.1f} warm_vs_cold={warm_vs_cold:.1f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

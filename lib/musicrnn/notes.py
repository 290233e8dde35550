"""MIDI <-> note tables, and whole corpora of them.

A *note table* is the tutorial's (pitch, step, duration) table grown up for polyphonic,
multi-track files: one row per note, sorted by start then pitch, with columns

========== ======= =====================================================
pitch      int     MIDI pitch 0-127
step       float   seconds since the previous note's start (0 for chords)
duration   float   seconds the note sounds (end - start)
start      float   absolute onset in seconds
end        float   absolute offset in seconds
velocity   int     MIDI velocity 1-127
========== ======= =====================================================

A :class:`NoteCorpus` holds the note tables of a whole dataset as flat arrays plus piece offsets
(no per-piece Python objects, no pickles), with each piece's split and metadata.

Reading MIDI
------------
:func:`midi_to_notes` reads with `symusic <https://github.com/Yikai-Liao/symusic>`_ (a C++
reader, about 100x faster than pretty_midi) in MIDI ticks, and converts ticks to seconds itself in
float64 with pretty_midi's formula, so that its tables equal pretty_midi's to the last bit on
ordinary files (a test checks this on MAESTRO performances and Bach chorales). Where the two
readers disagree by design, this module follows the MIDI semantics that pretty_midi (and
synthesizers such as FluidSynth) use, and says so:

* **Overlapping notes of one key.** symusic pairs note-ons and note-offs first-in first-out; a
  MIDI note-off, however, releases the key, ending *every* sounding note of that pitch on that
  channel. A note therefore ends at the first note-off of its key after its start. A file where
  that happens is read again from its events by this rule, so that a note-on whose note-off
  symusic gave to an earlier note is kept too (a key struck while held, released once, struck
  again). Not seen, and so still lost: a key struck again while held whose one release is its
  last, with no overlap that symusic shows (pretty_midi keeps that second note).
* **Velocity-0 note-ons** are note-offs (both readers agree).
* **Zero-length notes** (note-on and note-off at the same tick, nothing else sounding) make no
  sound and are dropped, as pretty_midi drops them.
* **Notes never switched off** are dropped (both readers agree).
* **Sustain pedal** (CC 64): by default ``duration`` is how long the key was held (both
  readers agree). With ``sustain=True`` it is how long the note *sounds*, by the convention of
  Magenta's note sequences: a note whose key goes up while the pedal is down (its last CC 64 at or
  before the key-up is 64 or more) sounds on until the pedal lifts or the same key is struck
  again, whichever comes first (a pedal never lifted: until the file's last event). The pedal
  acts on the notes of its own instrument track (a MIDI track's channel and program, as
  pretty_midi and Magenta group them); it never shortens a note, and notes struck again while
  their key is still held keep the rule above (they end at that key's next key-up, or later
  under the pedal). Corpus extraction applies it by default for MAESTRO
  (:func:`sustain_default`), where pianists pedal most of the time; the cache records which.
* **Tempo changes on tracks other than the first** (invalid in a type-1 file, but played by
  sequencers) are honoured here; pretty_midi ignores them with a warning, so its times differ.
* **Program changes in the middle of a note**: a note belongs to the program in force at its
  note-on (pretty_midi uses the one at its note-off). This matters only for ``programs=``.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from .errors import MusicRNNError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import pretty_midi

NOTE_COLUMNS: tuple[str, ...] = ("pitch", "step", "duration", "start", "end", "velocity")
"""The columns of a note table, in order."""

FEATURES: tuple[str, ...] = ("pitch", "step", "duration")
"""The per-note features the models read and predict, in order."""

SPLITS: tuple[str, ...] = ("train", "validation", "test")

CACHE_FORMAT = 4
"""Bump when extraction semantics or the cache layout change: older caches are extracted again."""

_DTYPES = {
    "pitch": np.int16,
    "step": np.float64,
    "duration": np.float64,
    "start": np.float64,
    "end": np.float64,
    "velocity": np.int16,
}


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an uncompressed ``.npz``, read whole (CRC-checked) and never unpickled.

    ``np.load`` reads zip members in 256 KB pieces; one read per member is several times faster
    for a note cache. Object arrays are refused, as ``allow_pickle=False`` would.
    """
    from numpy.lib import format as npy

    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            data = bytearray(archive.read(info))  # checks the CRC; writable arrays
            buffer = memoryview(data)
            head = io.BytesIO(data[: 2**16 + 16])  # a .npy header is at most 64 KiB
            version = npy.read_magic(head)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(head)
            else:
                shape, fortran, dtype = npy.read_array_header_2_0(head)
            if dtype.hasobject:
                raise ValueError(f"{info.filename} holds Python objects; refusing to unpickle")
            count = int(np.prod(shape, dtype=np.int64))
            array = np.frombuffer(buffer, dtype=dtype, count=count, offset=head.tell())
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            out[name] = array.reshape(shape, order="F" if fortran else "C")
    return out


@dataclass
class NoteCorpus:
    """The note tables of many pieces, concatenated.

    Piece ``i`` occupies rows ``offsets[i]:offsets[i + 1]`` of every column array. ``step`` restarts
    at each piece (its first note has step 0), so windows taken inside one piece never see a gap
    that belongs to another. ``skipped`` lists, with the reason, every file left out: by the
    dataset's listing (a file its CSV names that is missing, say) and by extraction (a file that
    cannot be read). ``sustain`` says whether durations have the sustain pedal applied.
    Made by :func:`extract_corpus` (or :func:`extract_files`); saved and loaded without pickles by
    :meth:`to_npz` / :meth:`from_npz`.
    """

    dataset: str  # registry name, e.g. "bach-chorales", "local:/path", or a mixture "a+b"
    names: np.ndarray  # (n_pieces,) str: the piece's file path relative to the dataset root
    splits: np.ndarray  # (n_pieces,) str: "train" | "validation" | "test"
    offsets: np.ndarray  # (n_pieces + 1,) int64: row where each piece starts; last = total rows
    columns: dict[str, np.ndarray]  # NOTE_COLUMNS -> (n_notes,) arrays
    metadata: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. "composer", "title", "work"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) left out
    sustain: bool = False  # durations with the sustain pedal applied (sounding, not key-up)

    def __post_init__(self) -> None:
        self.skipped = [(str(name), str(reason)) for name, reason in self.skipped]
        self.sustain = bool(self.sustain)
        self.names = np.asarray(self.names, dtype=str)
        self.splits = np.asarray(self.splits, dtype=str)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.columns = {c: np.asarray(self.columns[c], dtype=_DTYPES[c]) for c in NOTE_COLUMNS}
        self.metadata = {k: np.asarray(v, dtype=str) for k, v in self.metadata.items()}
        n = len(self.names)
        if len(self.splits) != n or len(self.offsets) != n + 1:
            raise ValueError("names, splits and offsets disagree on the number of pieces")
        total = int(self.offsets[-1]) if n else 0
        for c, a in self.columns.items():
            if len(a) != total:
                raise ValueError(f"column {c!r} has {len(a)} rows, offsets say {total}")
        bad = set(np.unique(self.splits)) - set(SPLITS)
        if bad:
            raise ValueError(f"unknown split names {sorted(bad)}; expected {SPLITS}")

    # -- size ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    @property
    def n_notes(self) -> int:
        return int(self.offsets[-1]) if len(self) else 0

    def lengths(self) -> np.ndarray:
        """Notes per piece, (n_pieces,) int64."""
        return np.diff(self.offsets)

    # -- access -------------------------------------------------------------------------------
    def features(self, i: int) -> np.ndarray:
        """Piece ``i`` as a float32 ``(n_notes, 3)`` array of raw (pitch, step, duration)."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return np.stack([self.columns[c][a:b] for c in FEATURES], axis=1).astype(np.float32)

    def piece(self, i: int):
        """Piece ``i`` as a pandas DataFrame with :data:`NOTE_COLUMNS`."""
        import pandas as pd

        a, b = self.offsets[i], self.offsets[i + 1]
        return pd.DataFrame({c: self.columns[c][a:b] for c in NOTE_COLUMNS})

    def iter_features(self, split: str | None = None) -> Iterator[np.ndarray]:
        """Yield :meth:`features` of every piece (of one split when given)."""
        for i in self.indices(split):
            yield self.features(int(i))

    def indices(self, split: str | None = None) -> np.ndarray:
        """Indices of the pieces in ``split`` (all pieces when None)."""
        if split is None:
            return np.arange(len(self))
        if split not in SPLITS:
            raise MusicRNNError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.splits == split)

    def subset(self, pieces: np.ndarray | list[int] | str) -> "NoteCorpus":
        """A new corpus holding only the given piece indices (or one split's pieces)."""
        idx = self.indices(pieces) if isinstance(pieces, str) else np.asarray(pieces, dtype=int)
        lengths = self.lengths()[idx]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        rows = (
            np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx])
            if len(idx) else np.zeros(0, dtype=np.int64)
        )
        return NoteCorpus(
            dataset=self.dataset,
            names=self.names[idx],
            splits=self.splits[idx],
            offsets=offsets,
            columns={c: a[rows] for c, a in self.columns.items()},
            metadata={k: v[idx] for k, v in self.metadata.items()},
            skipped=list(self.skipped),
            sustain=self.sustain,
        )

    def find(self, name: str | os.PathLike) -> int:
        """Index of the piece called ``name``.

        ``name`` is the piece's file path relative to the dataset root (for MAESTRO its
        ``midi_filename`` in the CSV, ``2004/MIDI-Unprocessed_...midi``); a path that ends with
        it (the file's full path, or ``maestro-v2.0.0/2004/...``) or the bare file name also
        finds it, as long as one piece only matches.

        Raises:
            MusicRNNError: no piece, or several pieces, match.
        """
        wanted = Path(name).as_posix().strip()
        hits = np.flatnonzero(self.names == wanted)
        if not len(hits) and wanted:
            hits = np.array([i for i, n in enumerate(self.names.tolist())
                             if wanted.endswith("/" + n) or n.endswith("/" + wanted)], dtype=int)
        if len(hits) > 1:
            shown = ", ".join(self.names[hits[:3]].tolist())
            raise MusicRNNError(f"{len(hits)} pieces of {self.dataset} match {wanted!r} ({shown}"
                                f"{', ...' if len(hits) > 3 else ''}); give more of the path")
        if not len(hits):
            raise MusicRNNError(f"no piece named {wanted!r} in {self.dataset}; see corpus.names")
        return int(hits[0])

    def info(self, i: int) -> dict[str, str]:
        """What is known about piece ``i``: its ``name``, ``split`` and every metadata field (for
        MAESTRO ``canonical_composer``, ``canonical_title``, ``year``, ``duration``, and the short
        ``composer``, ``title``, ``work``)."""
        return {"name": str(self.names[i]), "split": str(self.splits[i]),
                **{k: str(v[i]) for k, v in self.metadata.items()}}

    def summary(self):
        """Pieces and notes per split, as a pandas DataFrame."""
        import pandas as pd

        lengths = self.lengths()
        rows = []
        for split in SPLITS:
            sel = self.splits == split
            rows.append({
                "split": split,
                "pieces": int(sel.sum()),
                "notes": int(lengths[sel].sum()),
                "median notes/piece": float(np.median(lengths[sel])) if sel.any() else 0.0,
            })
        return pd.DataFrame(rows).set_index("split")

    # -- storage (npz without pickles) ----------------------------------------------------------
    # One uncompressed .npz with few members: start and end as one (2, n) float64 array (step and
    # duration follow from them exactly, so they are stored only when they do not), pitch and
    # velocity as one (2, n) int16 array, metadata as one (keys, pieces) array. Measured on 168K
    # notes: savez 0.01 s against savez_compressed 1 s to write, and several times faster to read.
    _INT_COLUMNS = ("pitch", "velocity")

    def _derived(self, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(step, duration) computed from start and end, exactly as extraction computes them."""
        step = np.empty_like(start)
        if len(start):
            np.subtract(start[1:], start[:-1], out=step[1:])
            firsts = self.offsets[:-1][self.offsets[:-1] < len(start)]
            step[firsts] = 0.0
        return step, end - start

    def to_npz(self, path: str | Path) -> Path:
        """Save to ``path`` as an uncompressed ``.npz`` (atomically; no pickles)."""
        from .paths import atomic_path

        keys = sorted(self.metadata)
        start, end = self.columns["start"], self.columns["end"]
        step, duration = self._derived(start, end)
        derived = (np.array_equal(step, self.columns["step"])
                   and np.array_equal(duration, self.columns["duration"]))
        floats = [start, end] if derived else [start, end, self.columns["step"],
                                               self.columns["duration"]]
        arrays: dict[str, np.ndarray] = {
            "format": np.asarray(CACHE_FORMAT),
            "dataset": np.asarray(self.dataset),
            "names": self.names, "splits": self.splits, "offsets": self.offsets,
            "floats": np.stack(floats).astype(np.float64),
            "ints": np.stack([self.columns[c] for c in self._INT_COLUMNS]).astype(np.int16),
            "meta_keys": np.asarray(keys, dtype=str),
            "meta_values": (np.stack([self.metadata[k] for k in keys]) if keys
                            else np.zeros((0, len(self)), dtype=str)),
            "skipped": np.asarray(self.skipped, dtype=str).reshape(-1, 2),
            "sustain": np.asarray(self.sustain),
        }
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
        return Path(path)

    @classmethod
    def from_npz(cls, path: str | Path) -> "NoteCorpus":
        """Load a corpus saved by :meth:`to_npz` (never unpickles anything)."""
        path = Path(path)
        if not path.is_file():
            raise MusicRNNError(f"no note cache at {path}; run `musicrnn extract DATASET` first")
        try:
            z = _read_npz(path)
            if int(z["format"]) != CACHE_FORMAT:
                raise ValueError(f"cache format {int(z['format'])}, expected {CACHE_FORMAT}")
            floats, ints, values = z["floats"], z["ints"], z["meta_values"]
            corpus = cls(
                dataset=str(z["dataset"]),
                names=z["names"], splits=z["splits"], offsets=z["offsets"],
                columns={"start": floats[0], "end": floats[1],
                         "step": floats[2] if len(floats) == 4 else floats[0],  # set below
                         "duration": floats[3] if len(floats) == 4 else floats[1],
                         **{c: ints[i] for i, c in enumerate(cls._INT_COLUMNS)}},
                metadata={str(k): values[i] for i, k in enumerate(z["meta_keys"])},
                skipped=[tuple(row) for row in z["skipped"].tolist()],
                sustain=bool(z["sustain"]),
            )
            if len(floats) == 2:
                step, duration = corpus._derived(floats[0], floats[1])
                corpus.columns["step"], corpus.columns["duration"] = step, duration
            return corpus
        except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as exc:
            raise MusicRNNError(
                f"the note cache {path} is unreadable ({exc}); delete it and extract again"
            ) from exc

    @classmethod
    def from_tables(cls, dataset: str, tables: list, names: list[str], splits: list[str],
                    metadata: dict[str, list[str]] | None = None,
                    skipped: list[tuple[str, str]] | None = None,
                    sustain: bool = False) -> "NoteCorpus":
        """Build a corpus from per-piece note tables (DataFrames or dicts of column arrays)."""
        lengths = [len(t["pitch"]) for t in tables]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        columns = {
            c: (np.concatenate([np.asarray(t[c]) for t in tables]) if tables
                else np.zeros(0, dtype=_DTYPES[c]))
            for c in NOTE_COLUMNS
        }
        return cls(dataset=dataset, names=names, splits=splits, offsets=offsets, columns=columns,
                   metadata=metadata or {}, skipped=list(skipped or []), sustain=sustain)


def manifest_text(manifest: dict) -> str:
    """The manifest as stable, readable JSON."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


# == one MIDI file -> note table ==================================================================

_MIDI_MAGIC = b"MThd"


def _read_score(path: Path):
    """Parse ``path`` with symusic (ticks), turning every failure into a clear MusicRNNError."""
    import symusic

    if not path.exists():
        raise MusicRNNError(f"no MIDI file at {path}; check the path (or download the dataset)")
    if path.is_dir():
        raise MusicRNNError(
            f"{path} is a folder, not a MIDI file; pass one .mid/.midi file, or extract the "
            f"whole folder with extract_corpus('local:{path}')"
        )
    try:
        data = path.read_bytes()
    except PermissionError as exc:
        raise MusicRNNError(f"cannot read {path}: permission denied; fix its permissions") from exc
    except OSError as exc:
        raise MusicRNNError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not data:
        raise MusicRNNError(f"{path} is empty (0 bytes); download it again or delete it")
    if not data.startswith(_MIDI_MAGIC):
        head = data[:16]
        looks_text = all(32 <= b < 127 or b in (9, 10, 13) for b in head)
        what = "text" if looks_text else "other binary data"
        raise MusicRNNError(
            f"{path} is not a MIDI file: it starts with {head!r} ({what}) instead of the MIDI "
            f"header 'MThd'; replace it with a real .mid file or remove it"
        )
    try:
        score = symusic.Score.from_midi(data)
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).replace("MiniMidi: ", "").replace(": iostream error", "").strip()
        raise MusicRNNError(
            f"{path} is a corrupt MIDI file ({reason}); download it again or remove it"
        ) from exc
    if score.ticks_per_quarter <= 0:
        raise MusicRNNError(
            f"{path} uses SMPTE or invalid time division ({score.ticks_per_quarter}); "
            "only ticks-per-quarter-note files are supported"
        )
    return score


def _tempo_map(score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(segment start ticks, segment start seconds, seconds per tick), as pretty_midi builds them.

    pretty_midi starts at 120 bpm, lets a tempo at tick 0 replace it, and skips repeats; the
    seconds of each segment start accumulate ``scale * ticks`` in float64, so the times below
    are bit-identical to pretty_midi's for files whose tempo events sit on the first track.
    """
    tempos = score.tempos.numpy()
    tpq = float(score.ticks_per_quarter)
    ticks, mspq = tempos["time"].astype(np.int64), tempos["mspq"].astype(np.int64)
    order = np.argsort(ticks, kind="stable")
    seg_ticks, scales = [0], [60.0 / (120.0 * tpq)]
    for tick, us in zip(ticks[order].tolist(), mspq[order].tolist()):
        if us <= 0:
            raise MusicRNNError(f"a tempo event at tick {tick} has {us} microseconds per beat")
        scale = 60.0 / ((6e7 / us) * tpq)
        if tick == seg_ticks[-1]:
            scales[-1] = scale
        elif scale != scales[-1]:
            seg_ticks.append(tick)
            scales.append(scale)
    starts = np.zeros(len(seg_ticks))
    for i in range(1, len(seg_ticks)):
        starts[i] = starts[i - 1] + scales[i - 1] * (seg_ticks[i] - seg_ticks[i - 1])
    return np.asarray(seg_ticks, dtype=np.int64), starts, np.asarray(scales)


def _ticks_to_seconds(ticks: np.ndarray, tempo_map) -> np.ndarray:
    seg_ticks, seg_starts, scales = tempo_map
    if len(seg_ticks) == 1:
        return ticks * scales[0]
    i = np.searchsorted(seg_ticks, ticks, side="right") - 1
    return seg_starts[i] + scales[i] * (ticks - seg_ticks[i])


SUSTAIN_CONTROL = 64
"""The MIDI control change of the sustain (damper) pedal: a value of 64 or more holds it down."""


def _pedal_events(track) -> tuple[np.ndarray, np.ndarray]:
    """(ticks, down) of one track's sustain-pedal control changes, in time order."""
    controls = track.controls.numpy()
    chosen = controls["number"] == SUSTAIN_CONTROL
    ticks = controls["time"][chosen].astype(np.int64)
    order = np.argsort(ticks, kind="stable")  # events of one tick keep the file's order
    return ticks[order], controls["value"][chosen][order] >= 64


def _sustained_offs(off: np.ndarray, key: np.ndarray, by_key: np.ndarray, key_sorted: np.ndarray,
                    on_sorted: np.ndarray, pedals: dict[int, tuple[np.ndarray, np.ndarray]],
                    last_tick: int) -> np.ndarray:
    """Note-off ticks with the sustain pedal applied (the note-sequence convention of Magenta).

    A note whose key goes up while its track's pedal is down (the track's last pedal event at or
    before the key-up tick says 64 or more) sounds on until the pedal's next lift or the next
    strike of the same key, whichever comes first; a pedal never lifted lets it sound to
    ``last_tick``. The pedal never shortens a note.

    Args:
        off: key-up ticks, int64, of notes sorted by start.
        key: each note's key, ``track * 128 + pitch`` (the pitch alone in a file whose notes
            are all on one track, which is then track 0 here).
        by_key: the notes' order by key, then start (a stable argsort of ``key``);
            ``key_sorted`` and ``on_sorted`` are ``key`` and the note-on ticks in that order.
        pedals: track -> :func:`_pedal_events` of that track (tracks without pedal left out).
        last_tick: the file's last note-off or pedal event.
    """
    n = len(off)
    out = off.copy()
    one_track = int(key.max()) < 128
    rank = np.empty(n, np.int64)
    rank[by_key] = np.arange(n)  # where each note stands in the order by key
    for track, (ticks, down) in pedals.items():
        mine = None if one_track else np.flatnonzero((key >> 7) == track)
        up_at = off if mine is None else off[mine]
        last = np.searchsorted(ticks, up_at, side="right") - 1  # the last pedal event <= key-up
        held = np.flatnonzero((last >= 0) & down[last])  # (down[-1] is masked by last >= 0)
        if not len(held):
            continue
        # The first lift after each pedal event (events after the last one <= a key-up are all
        # later than it): one lookup a note.
        m = len(down)
        first_lift = np.minimum.accumulate(np.where(down, m, np.arange(m))[::-1])[::-1]
        after = np.append(first_lift[1:], m)  # the index of the first lift after event i
        lift = np.append(ticks, last_tick)[after[last[held]]]
        # The next strike of the same key at or after the key-up: usually the key's next note.
        rows = held if mine is None else mine[held]
        up, k = off[rows], key[rows]
        j = rank[rows] + 1
        jj = np.minimum(j, n - 1)
        same = (j < n) & (key_sorted[jj] == k)
        restrike = np.where(same, on_sorted[jj], last_tick)
        early = np.flatnonzero(same & (on_sorted[jj] < up))  # struck again while still held
        if len(early):
            strikes = (key_sorted << 32) | on_sorted
            i = np.searchsorted(strikes, (k[early] << 32) | up[early], side="left")
            nxt = strikes[np.minimum(i, n - 1)]
            restrike[early] = np.where((i < n) & ((nxt >> 32) == k[early]), nxt & 0xFFFFFFFF,
                                       last_tick)
        out[rows] = np.maximum(up, np.minimum(lift, restrike))
    return out


_DATA_BYTES = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}


def _midi_events(data: bytes) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """The note and sustain-pedal events of a standard MIDI file, read straight from its bytes.

    Returns:
        (note-ons as (track, channel, pitch, tick, velocity, program in force), note-offs as
        (track, channel, pitch, tick) -- velocity-0 note-ons included --, pedal events as
        (track, channel, tick, value)), each in file order.

    Raises:
        ValueError, IndexError: bytes that do not parse.
    """
    def vlq(pos: int) -> tuple[int, int]:
        value = 0
        while True:
            byte = data[pos]
            pos += 1
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                return value, pos

    n_tracks = int.from_bytes(data[10:12], "big")
    pos = 8 + int.from_bytes(data[4:8], "big")
    ons: list[tuple] = []
    offs: list[tuple] = []
    pedal: list[tuple] = []
    track = 0
    while track < n_tracks and pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "big")
        pos += 8
        end = min(pos + size, len(data))
        if kind != b"MTrk":
            pos = end
            continue
        tick, running, program = 0, 0, [0] * 16
        while pos < end:
            delta, pos = vlq(pos)
            tick += delta
            byte = data[pos]
            if byte == 0xFF:  # a meta event; running status goes on after it
                meta, (size, pos) = data[pos + 1], vlq(pos + 2)
                pos += size
                if meta == 0x2F:  # end of track
                    break
                continue
            if byte in (0xF0, 0xF7):  # system exclusive: cancels running status
                size, pos = vlq(pos + 1)
                pos += size
                running = 0
                continue
            if byte >= 0x80:
                running = byte
                pos += 1
            message, channel = running & 0xF0, running & 0x0F
            if message not in _DATA_BYTES:
                raise ValueError(f"no channel message status at byte {pos}")
            if _DATA_BYTES[message] == 1:
                if message == 0xC0:
                    program[channel] = data[pos]
                pos += 1
                continue
            a, b = data[pos], data[pos + 1]
            pos += 2
            if message == 0x90 and b:
                ons.append((track, channel, a, tick, b, program[channel]))
            elif message in (0x80, 0x90):
                offs.append((track, channel, a, tick))
            elif message == 0xB0 and a == SUSTAIN_CONTROL:
                pedal.append((track, channel, tick, b))
        pos = end
        track += 1
    return ons, offs, pedal


def _notes_by_midi_rule(data: bytes, wanted: set[int] | None):
    """A file's melodic notes paired by MIDI's rule, read from its events (see
    :func:`_note_arrays`, which needs this only for overlapping notes of one key).

    Returns:
        (on, off, pitch, velocity, key, pedals): notes whose key is released after they start,
        each ending at the first release of its key (one MIDI track's channel and pitch); the
        key is ``channel index * 128 + pitch``, and ``pedals`` maps a channel index to its
        sustain-pedal (ticks, down). Empty arrays when no note qualifies.
    """
    on_events, off_events, pedal_events = _midi_events(data)
    ons = np.asarray(on_events, dtype=np.int64).reshape(-1, 6)
    offs = np.asarray(off_events, dtype=np.int64).reshape(-1, 4)
    melodic = ons[:, 1] != 9  # MIDI channel 10 is drums
    if wanted is not None:
        melodic &= np.isin(ons[:, 5], sorted(wanted))
    ons = ons[melodic]
    on_key = ((ons[:, 0] * 16 + ons[:, 1]) << 7) | ons[:, 2]
    releases = np.sort((((offs[:, 0] * 16 + offs[:, 1]) << 7 | offs[:, 2]) << 32) | offs[:, 3])
    i = np.searchsorted(releases, (on_key << 32) | ons[:, 3], side="right")
    found = releases[np.minimum(i, max(len(releases) - 1, 0))] if len(releases) else i
    closed = (i < len(releases)) & ((found >> 32) == on_key)
    ons, on_key, off = ons[closed], on_key[closed], (found & 0xFFFFFFFF)[closed]
    channels, channel_index = np.unique(on_key >> 7, return_inverse=True)
    key = (channel_index.astype(np.int64) << 7) | ons[:, 2]
    pedals = {}
    if pedal_events:
        events = np.asarray(pedal_events, dtype=np.int64)
        for index, channel in enumerate(channels.tolist()):
            mine = events[events[:, 0] * 16 + events[:, 1] == channel]
            order = np.argsort(mine[:, 2], kind="stable")
            down = mine[order, 3] >= 64
            if down.any():
                pedals[index] = (mine[order, 2], down)
    return ons[:, 3], off, ons[:, 2], ons[:, 4], key, pedals


def _note_arrays(path: str | os.PathLike, programs: Iterable[int] | None = None,
                 sustain: bool = False) -> dict[str, np.ndarray]:
    """The note table of one file as a dict of column arrays (the fast path behind
    :func:`midi_to_notes` and corpus extraction)."""
    path = Path(path)
    score = _read_score(path)
    wanted = None if programs is None else {int(p) for p in programs}
    groups, n_drum, found_programs = [], 0, set()
    for k, track in enumerate(score.tracks):
        notes = track.notes.numpy()
        n = len(notes["time"])
        if not n:
            continue
        if track.is_drum:
            n_drum += n
            continue
        found_programs.add(int(track.program))
        if wanted is not None and int(track.program) not in wanted:
            continue
        groups.append((k, notes))
    if not groups:
        if wanted is not None and found_programs:
            raise MusicRNNError(
                f"{path} has no notes for programs {sorted(wanted)}; its instruments use programs "
                f"{sorted(found_programs)} (or pass programs=None for every instrument)"
            )
        if n_drum:
            raise MusicRNNError(
                f"{path} holds only drum notes ({n_drum} on MIDI channel 10), which carry no "
                "pitch to model; use a file with melodic instruments"
            )
        raise MusicRNNError(
            f"{path} holds no notes (an empty file, or only control events such as the sustain "
            f"pedal); use a file with notes"
        )

    if len(groups) == 1:
        k, g = groups[0]
        on = g["time"].astype(np.int64)
        off = on + g["duration"]
        pitch = g["pitch"].astype(np.int64)
        velocity = g["velocity"]
        key = pitch
    else:
        on = np.concatenate([g["time"] for _, g in groups]).astype(np.int64)
        off = on + np.concatenate([g["duration"] for _, g in groups])
        pitch = np.concatenate([g["pitch"] for _, g in groups]).astype(np.int64)
        velocity = np.concatenate([g["velocity"] for _, g in groups])
        # One key = one (track, pitch): a note-off releases every sounding note of its key.
        track = np.concatenate([np.full(len(g["time"]), k, np.int64) for k, g in groups])
        key = track * 128 + pitch

    sounding = off > on  # zero-length notes make no sound (and pretty_midi drops them)
    if not sounding.all():
        on, off, pitch, velocity, key = (a[sounding] for a in (on, off, pitch, velocity, key))
        if not len(on):
            raise MusicRNNError(f"{path} holds only zero-length notes (note-off at the note-on)")
    pedals = None  # from the events, when they are read again below
    order = np.argsort((on << 7) | pitch, kind="stable")  # by start, then pitch
    on, off, pitch, velocity, key = on[order], off[order], pitch[order], velocity[order], key[order]
    # Stable sort by key of notes sorted by start: each key's notes in start order (a radix sort).
    by_key = np.argsort(key.astype(np.uint16) if key.max() < 2**16 else key, kind="stable")
    k_sorted, on_sorted, off_sorted = key[by_key], on[by_key], off[by_key]
    if np.any((k_sorted[1:] == k_sorted[:-1]) & (off_sorted[:-1] > on_sorted[1:])):
        # Overlapping notes of one key (struck again while held). symusic pairs note-ons and
        # note-offs first-in first-out, and so also drops a later note-on whose note-off it gave
        # to an earlier note; in MIDI a note-off releases the key, ending every sounding note of
        # it. Such files (5 of MAESTRO's 1,104 train and validation performances) are read
        # again by that rule, straight from their events.
        try:
            exact = _notes_by_midi_rule(path.read_bytes(), wanted)
        except (OSError, ValueError, IndexError):
            exact = None  # bytes symusic read but this reader does not: pair symusic's notes
        if exact is not None and len(exact[0]):
            on, off, pitch, velocity, key, pedals = exact
            order = np.argsort((on << 7) | pitch, kind="stable")
            on, off, pitch, velocity, key = (a[order] for a in (on, off, pitch, velocity, key))
            by_key = np.argsort(key, kind="stable")
            k_sorted, on_sorted = key[by_key], on[by_key]
        else:
            shifted = key << 32
            offs = np.sort(shifted | off)
            off = offs[np.searchsorted(offs, shifted | on, side="right")] & 0xFFFFFFFF
    if sustain:
        if pedals is None:
            pedals = {}
            for k, _ in groups:
                ticks, down = _pedal_events(score.tracks[k])
                if down.any():
                    pedals[k if len(groups) > 1 else 0] = (ticks, down)
        if pedals:
            last_tick = max(int(off.max()), *(int(t[-1]) for t, _ in pedals.values()))
            off = _sustained_offs(off, key, by_key, k_sorted, on_sorted, pedals, last_tick)
    tempo_map = _tempo_map(score)
    start = _ticks_to_seconds(on, tempo_map)
    end = _ticks_to_seconds(off, tempo_map)
    step = np.empty_like(start)
    step[0] = 0.0
    np.subtract(start[1:], start[:-1], out=step[1:])
    return {
        "pitch": pitch.astype(_DTYPES["pitch"]),
        "step": step,
        "duration": end - start,
        "start": start,
        "end": end,
        "velocity": velocity.astype(_DTYPES["velocity"]),
    }


def midi_to_notes(path: str | os.PathLike, programs: Iterable[int] | None = None,
                  *, sustain: bool = False) -> "pd.DataFrame":
    """Read one MIDI file into a note table.

    Every non-drum note of every instrument (or only of the General MIDI ``programs`` asked
    for), sorted by start then pitch, with the columns of :data:`NOTE_COLUMNS`. ``step`` is the
    time since the previous note's start (0 for the first note and within a chord).

    Args:
        path: a ``.mid``/``.midi`` file.
        programs: General MIDI program numbers (0-127) to keep; None keeps every instrument.
        sustain: apply the sustain pedal (CC 64): ``duration`` is how long a note sounds, not
            how long its key was held (see the module's notes). Corpus extraction does this by
            default for MAESTRO (:func:`sustain_default`); a single file does not unless asked.

    Returns:
        A pandas DataFrame, one row per note.

    Raises:
        MusicRNNError: a missing, empty, corrupt or non-MIDI file, or one without (non-drum)
            notes; the message names the file and what to do.
    """
    import pandas as pd

    return pd.DataFrame(_note_arrays(path, programs, sustain=sustain), columns=list(NOTE_COLUMNS))


def sustain_spans(path: str | os.PathLike) -> np.ndarray:
    """When the sustain pedal is down in a MIDI file: ``(k, 2)`` float64 seconds (down, up).

    One row per press of the pedal (CC 64 going to 64 or more, until it goes below 64) on each
    instrument track that has notes, sorted by time; a pedal never lifted ends at the file's
    last event. An empty ``(0, 2)`` array when the file has no pedal (the chorales, say).

    Raises:
        MusicRNNError: as :func:`midi_to_notes`, for a file that cannot be read.
    """
    score = _read_score(Path(path))
    rows = []
    for track in score.tracks:
        if track.is_drum or not len(track.notes):
            continue
        ticks, down = _pedal_events(track)
        if not down.any():
            continue
        before = np.concatenate([[False], down[:-1]])
        presses, lifts = ticks[down & ~before], ticks[~down & before]
        if len(lifts) < len(presses):
            lifts = np.append(lifts, max(int(score.end()), int(presses[-1])))
        rows.append(np.stack([presses, lifts], axis=1))
    if not rows:
        return np.zeros((0, 2))
    spans = np.concatenate(rows)
    spans = spans[spans[:, 1] > spans[:, 0]]
    spans = spans[np.lexsort((spans[:, 1], spans[:, 0]))]
    tempo_map = _tempo_map(score)
    return np.stack([_ticks_to_seconds(spans[:, 0], tempo_map),
                     _ticks_to_seconds(spans[:, 1], tempo_map)], axis=1).reshape(-1, 2)


def first_pedalled(files: Any) -> Any | None:
    """The first of ``files`` whose MIDI has sustain-pedal events, or None when none has.

    Args:
        files: a ``datasets.DatasetFiles``, ``DatasetFile`` objects (anything with ``path``) or
            plain paths. Files that cannot be read are passed over.

    Returns:
        That element of ``files`` (a ``DatasetFile``, or the path), or None.
    """
    for f in getattr(files, "files", files):
        try:
            if len(sustain_spans(getattr(f, "path", f))):
                return f
        except MusicRNNError:
            continue
    return None


# == note table -> MIDI ============================================================================


def _table_columns(notes: Any) -> dict[str, np.ndarray]:
    """Columns of a note table given as a DataFrame, a dict of arrays, a structured array or a raw
    ``(n, 3)`` array of (pitch, step, duration), or ``(n, 4)`` with each note's velocity last."""
    if isinstance(notes, np.ndarray) and notes.dtype.names is None:
        raw = np.asarray(notes, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] not in (3, 4):
            raise MusicRNNError(
                f"a raw note array must have shape (n, 3) of (pitch, step, duration) or (n, 4) "
                f"with velocity; got {raw.shape}"
            )
        columns = {c: raw[:, i] for i, c in enumerate(FEATURES)}
        if raw.shape[1] == 4:
            columns["velocity"] = raw[:, 3]
        return columns
    if isinstance(notes, np.ndarray):
        names = notes.dtype.names
        return {c: np.asarray(notes[c]) for c in NOTE_COLUMNS if c in names}
    try:
        keys = list(notes.keys())
    except AttributeError:
        raise MusicRNNError(
            f"expected a note table (DataFrame, dict of columns or (n, 3) array), got "
            f"{type(notes).__name__}"
        ) from None
    return {c: np.asarray(notes[c]) for c in NOTE_COLUMNS if c in keys}


def notes_to_midi(
    notes: Any,
    out_path: str | os.PathLike | None = None,
    program: int = 0,
    velocity: int | None = None,
    *,
    resolution: int = 480,
    tempo: float = 120.0,
    instrument_name: str = "",
) -> "pretty_midi.PrettyMIDI":
    """Write a note table as a one-instrument MIDI file: the inverse of :func:`midi_to_notes`.

    Times come from ``start``/``end`` when the table has them, else from ``step``/``duration``
    accumulated (a model's output). Notes are placed on a grid of ``resolution`` ticks per beat at
    a constant ``tempo``: 1.04 ms at the defaults, and reading the file back gives the table to
    within half of that. A note shorter than one tick lasts one tick. One MIDI channel cannot hold
    two overlapping notes of one key (a note-off releases the key), so such notes (a unison of two
    voices, a generated note struck again while it sounds) go to a second instrument track with
    the same program: nothing is cut, and :func:`midi_to_notes` reads the same notes back.

    Args:
        notes: a note table (DataFrame or dict with :data:`NOTE_COLUMNS`, or at least
            ``pitch``/``step``/``duration``), or a raw ``(n, 3)`` array of (pitch, step, duration)
            or ``(n, 4)`` with each note's velocity last (a velocity model's output).
        out_path: where to write the ``.mid`` file (atomically); None writes nothing.
        program: General MIDI program of the instrument (0 = acoustic grand piano).
        velocity: one velocity for every note; None takes the table's ``velocity`` column, or
            100 when it has none.
        resolution: ticks per quarter note.
        tempo: beats per minute of the file's single tempo.
        instrument_name: name of the instrument track.

    Returns:
        The ``pretty_midi.PrettyMIDI`` object (also written to ``out_path`` when given): one
        instrument, plus one more per level of same-key overlap.

    Raises:
        MusicRNNError: a table without the needed columns, pitches outside 0-127, negative or
            non-finite times, or an unwritable ``out_path``.
    """
    import pretty_midi

    if not 0 <= int(program) <= 127:
        raise MusicRNNError(f"program must be a General MIDI program 0-127, got {program}")
    cols = _table_columns(notes)
    if "pitch" not in cols:
        raise MusicRNNError("the note table has no 'pitch' column")
    pitch_f = np.asarray(cols["pitch"], dtype=np.float64)
    n = len(pitch_f)
    if "start" in cols and "end" in cols:
        start = np.asarray(cols["start"], dtype=np.float64)
        end = np.asarray(cols["end"], dtype=np.float64)
    elif "step" in cols and "duration" in cols:
        start = np.cumsum(np.asarray(cols["step"], dtype=np.float64))
        end = start + np.asarray(cols["duration"], dtype=np.float64)
    else:
        raise MusicRNNError(
            "the note table needs 'start' and 'end', or 'step' and 'duration' columns; "
            f"it has {sorted(cols)}"
        )
    if not (np.all(np.isfinite(pitch_f)) and np.all(np.isfinite(start)) and np.all(np.isfinite(end))):
        raise MusicRNNError("the note table holds NaN or infinite values; clean it first")
    pitch = np.rint(pitch_f).astype(np.int64)
    if n and (pitch.min() < 0 or pitch.max() > 127):
        raise MusicRNNError(
            f"pitches must be MIDI notes 0-127; this table has {pitch.min()}..{pitch.max()}"
        )
    if n and start.min() < 0:
        raise MusicRNNError(
            "note times must not be negative (clip a model's step and duration at 0 first)"
        )
    if n and np.any(end < start):
        bad = int(np.flatnonzero(end < start)[0])
        raise MusicRNNError(
            f"note {bad} ends before it starts ({end[bad]:.3f} s < {start[bad]:.3f} s); "
            "durations must not be negative (clip a model's duration at 0 first)"
        )
    if velocity is not None:
        vel = np.full(n, int(velocity), dtype=np.int64)
    elif "velocity" in cols:
        vel = np.rint(np.asarray(cols["velocity"], dtype=np.float64)).astype(np.int64)
    else:
        vel = np.full(n, 100, dtype=np.int64)
    vel = np.clip(vel, 1, 127)  # velocity 0 would be a note-off

    # Quantise to the tick grid, where the file lives (a MIDI tempo is whole microseconds per
    # beat); sort by start, then pitch.
    if not (tempo > 0 and resolution > 0):
        raise MusicRNNError(f"tempo and resolution must be positive (got {tempo}, {resolution})")
    us_per_beat = round(6e7 / float(tempo))
    tempo = 6e7 / us_per_beat
    tick = 60.0 / (tempo * resolution)
    on = np.rint(start / tick).astype(np.int64)
    off = np.maximum(np.rint(end / tick).astype(np.int64), on + 1)
    order = np.lexsort((off, pitch, on))
    on, off, pitch, vel = on[order], off[order], pitch[order], vel[order]
    lane = _lanes(on, off, pitch)

    midi = pretty_midi.PrettyMIDI(resolution=resolution, initial_tempo=float(tempo))
    for k in range(int(lane.max()) + 1 if n else 1):
        sel = np.flatnonzero(lane == k)
        instrument = pretty_midi.Instrument(program=int(program), name=instrument_name)
        instrument.notes = [
            pretty_midi.Note(velocity=int(v), pitch=int(p), start=a * tick, end=b * tick)
            for v, p, a, b in zip(vel[sel].tolist(), pitch[sel].tolist(), on[sel].tolist(),
                                  off[sel].tolist())
        ]
        midi.instruments.append(instrument)
    if out_path is not None:
        write_midi(midi, out_path)
    return midi


def write_midi(midi: "pretty_midi.PrettyMIDI", path: str | os.PathLike) -> Path:
    """Write ``midi`` to ``path`` atomically (never half a file); returns the path."""
    from .paths import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            midi.write(str(tmp))
    except OSError as exc:
        raise MusicRNNError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


_MAX_LANES = 15  # MIDI channels without the drum channel


def _lanes(on: np.ndarray, off: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """A track for each note so that no two notes of one key overlap within a track.

    One channel cannot hold overlapping notes of one key (a note-off releases the key): unisons of
    two voices, or a generated note struck again while it sounds, go to a second track (and so
    on). Beyond 15 tracks, a note is cut where the next note of its key starts instead.
    """
    lane = np.zeros(len(on), dtype=np.int64)
    by_key = np.lexsort((on, pitch))
    same_key = pitch[by_key][1:] == pitch[by_key][:-1]
    if not np.any(same_key & (on[by_key][1:] < off[by_key][:-1])):
        return lane  # the usual case: one track
    free_at: dict[tuple[int, int], int] = {}  # (lane, key) -> tick the key is free again
    for i in range(len(on)):  # in start order
        key, start = int(pitch[i]), int(on[i])
        for k in range(_MAX_LANES):
            if free_at.get((k, key), 0) <= start:
                break
        else:
            k = 0
            previous = np.flatnonzero((lane[:i] == 0) & (pitch[:i] == key))
            if len(previous):
                off[previous[-1]] = max(min(off[previous[-1]], start), on[previous[-1]] + 1)
        lane[i] = k
        free_at[(k, key)] = int(off[i])
    return lane


# == whole corpora: extraction and cache ==========================================================

# Process pools cost about half a second to start (spawned workers import numpy and symusic);
# parsing runs at about 50 MB of MIDI per second per core. Below this many bytes, serial wins.
_PARALLEL_MIN_BYTES = 48 * 1024 * 1024


@dataclass(frozen=True)
class _Source:
    """One file to extract: where it is, its id in the corpus, its split and metadata."""

    path: Path
    name: str
    split: str
    metadata: dict[str, str]


def _as_sources(files: Any) -> list[_Source]:
    """Normalise a ``DatasetFiles``, a list of ``DatasetFile``-like objects, or plain paths."""
    if hasattr(files, "files") and not isinstance(files, (str, os.PathLike)):
        files = files.files
    files = list(files)
    plain = [os.path.abspath(os.path.expanduser(f)) for f in files
             if isinstance(f, (str, os.PathLike))]
    root = os.path.commonpath([os.path.dirname(p) for p in plain]) if plain else ""
    plain_iter = iter(plain)
    sources = []
    for f in files:
        if isinstance(f, (str, os.PathLike)):
            path = next(plain_iter)
            name = Path(os.path.relpath(path, root)).as_posix()
            sources.append(_Source(Path(path), name, "train", {}))
        else:
            split = str(f.split)
            if split not in SPLITS:
                raise MusicRNNError(f"{f.name}: unknown split {split!r}; expected one of {SPLITS}")
            meta = {str(k): "" if v is None else str(v) for k, v in (f.metadata or {}).items()}
            sources.append(_Source(Path(f.path), str(f.name), split, meta))
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise MusicRNNError(f"several files share the names {dupes[:5]}; names must be unique")
    return sources


def _fingerprint(source: _Source) -> dict[str, Any]:
    try:
        st = source.path.stat()
        size, mtime = int(st.st_size), int(st.st_mtime_ns)
    except OSError:
        size, mtime = -1, -1
    return {"name": source.name, "path": str(source.path), "split": source.split,
            "size": size, "mtime_ns": mtime, "metadata": source.metadata}


def _versions() -> dict[str, Any]:
    import symusic

    from . import __version__

    return {"cache_format": CACHE_FORMAT, "musicrnn": __version__,
            "symusic": symusic.__version__, "numpy": np.__version__}


def _extract_one(path: str, programs: tuple[int, ...] | None, sustain: bool = False
                 ) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """Worker: one file's note arrays, or None and the reason it was skipped."""
    try:
        return _note_arrays(path, programs, sustain=sustain), None
    except MusicRNNError as exc:
        return None, str(exc).replace(str(path), "the file")
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop a corpus
        return None, f"unexpected {type(exc).__name__}: {exc}"


def _extract_chunk(paths: list[str], programs: tuple[int, ...] | None, sustain: bool = False
                   ) -> list[tuple]:
    return [_extract_one(p, programs, sustain) for p in paths]


def _auto_workers(total_bytes: int) -> int:
    from .paths import usable_cpus

    cpus = usable_cpus()
    if cpus < 2 or total_bytes < _PARALLEL_MIN_BYTES:
        return 1
    return min(cpus, 16)


def _run_extraction(sources: list[_Source], programs, workers: int, progress: bool, desc: str,
                    sustain: bool = False) -> tuple[list[tuple], int]:
    """Every source's (arrays, reason) in order, and the number of processes that parsed them."""
    from tqdm.auto import tqdm

    from .datasets import process_pool_refusal

    paths_ = [str(s.path) for s in sources]
    if workers > 1 and len(paths_) >= 2:
        refusal = process_pool_refusal()
        if refusal:
            _say(f"Parsing in one process: {refusal}")
            workers = 1
    bar = tqdm(total=len(paths_), desc=desc, unit="file", disable=not progress)
    try:
        if workers <= 1 or len(paths_) < 2:
            results = []
            for p in paths_:
                results.append(_extract_one(p, programs, sustain))
                bar.update(1)
            return results, 1
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        size = max(1, min(64, len(paths_) // (workers * 4)))
        chunks = [paths_[i:i + size] for i in range(0, len(paths_), size)]
        out: list[list[tuple] | None] = [None] * len(chunks)
        # "spawn": safe beside the threads of TensorFlow or Jupyter (fork is not).
        try:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_extract_chunk, c, programs, sustain): i
                           for i, c in enumerate(chunks)}
                for fut in as_completed(futures):
                    i = futures[fut]
                    out[i] = fut.result()
                    bar.update(len(chunks[i]))
        except (BrokenProcessPool, OSError) as exc:
            # e.g. a script read from stdin, which spawned workers cannot import
            _say(f"The process pool failed ({type(exc).__name__}: {exc}); parsing serially")
            for i, chunk in enumerate(chunks):
                if out[i] is None:
                    out[i] = _extract_chunk(chunk, programs, sustain)
                    bar.update(len(chunk))
        return [r for chunk in out for r in chunk], workers  # type: ignore[union-attr]
    finally:
        bar.close()


def _manifest_path(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.name[: -len(".npz")] + ".manifest.json") \
        if cache_path.name.endswith(".npz") else cache_path.with_suffix(".manifest.json")


def _read_cache(cache_path: Path, dataset: str, fingerprints: list[dict], programs,
                sustain: bool = False, left_out: list[list[str]] | None = None
                ) -> tuple[NoteCorpus | None, str]:
    """The cached corpus when it is current, else None and why not.

    Current means: made by these versions, for this dataset, programs and pedal setting, from
    files of the same names, splits, sizes and modification times, with the same files left
    out by the dataset's listing (``left_out``: ``[name, reason]`` pairs).
    """
    manifest_path = _manifest_path(cache_path)
    if not cache_path.is_file() or not manifest_path.is_file():
        return None, "no cache yet"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"the manifest {manifest_path.name} is unreadable ({exc})"
    if not isinstance(manifest, dict):
        return None, f"the manifest {manifest_path.name} is not a JSON object"
    if manifest.get("versions") != _versions():
        return None, "it was made by other versions of musicrnn/symusic/numpy"
    if manifest.get("dataset") != dataset or manifest.get("programs") != programs:
        return None, "it was made for another dataset or other programs"
    if manifest.get("sustain") is not bool(sustain):
        return None, ("it was made without the sustain pedal applied" if sustain
                      else "it was made with the sustain pedal applied")
    if manifest.get("files") != fingerprints:
        return None, "the files changed (names, splits, sizes or modification times)"
    if manifest.get("left_out", []) != (left_out or []):
        return None, "the dataset's listing leaves out other files now"
    try:
        corpus = NoteCorpus.from_npz(cache_path)
    except MusicRNNError as exc:
        return None, f"its notes are unreadable ({exc.__cause__ or exc})"
    if corpus.sustain is not bool(sustain):
        return None, "its notes disagree with the manifest on the sustain pedal"
    kept = {f["name"] for f in fingerprints} - {name for name, _ in corpus.skipped}
    if set(corpus.names.tolist()) != kept or corpus.n_notes != manifest.get("n_notes"):
        return None, "the cached notes do not match the manifest"
    return corpus, ""


def _say(message: str) -> None:
    print(message, flush=True)


def extract_files(
    files: Any,
    dataset: str,
    cache_path: str | os.PathLike | None = None,
    *,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    programs: Iterable[int] | None = None,
    sustain: bool | None = None,
) -> NoteCorpus:
    """Extract the note tables of a list of MIDI files into a :class:`NoteCorpus` (and cache it).

    The engine behind :func:`extract_corpus`, usable with any files. Bad files are skipped and
    listed with their reason in ``corpus.skipped``; one bad file never stops a corpus. Files
    that ``files`` (a ``DatasetFiles``) says its listing left out, such as MAESTRO files its CSV
    names but that are missing, are listed there too, first.

    Args:
        files: a ``datasets.DatasetFiles``, a list of ``DatasetFile`` (anything with ``path``,
            ``name``, ``split``, ``metadata``), or plain paths (named relative to their common
            folder, all in the ``train`` split).
        dataset: the dataset's name, recorded in the corpus and the manifest.
        cache_path: the ``.npz`` to cache the corpus at (its manifest goes beside it, as
            ``<stem>.manifest.json``); None extracts without caching.
        workers: processes to parse with; None picks serial for small inputs (where a process
            pool's start-up costs more than it saves) and one per core for big ones.
        force: extract again even when the cache is current.
        progress: show a progress bar and say what happened.
        programs: General MIDI programs to keep (None: every non-drum instrument).
        sustain: apply the sustain pedal to durations (see the module's notes); None: the
            default of ``dataset`` (:func:`sustain_default`: MAESTRO yes, other names no).
            Recorded in the corpus and the manifest; a cache made otherwise is not used.

    Returns:
        The corpus; ``corpus.skipped`` lists ``(file name, reason)`` for files left out.

    Raises:
        MusicRNNError: no files given, or not one file yielded notes.
    """
    started = time.perf_counter()
    sources = _as_sources(files)
    if not sources:
        raise MusicRNNError(f"{dataset}: no MIDI files to extract")
    left_out = [(str(n), str(r)) for n, r in getattr(files, "skipped", None) or []]
    sustain = sustain_default(dataset) if sustain is None else bool(sustain)
    programs_key = None if programs is None else sorted({int(p) for p in programs})
    fingerprints = [_fingerprint(s) for s in sources]
    cache_path = Path(cache_path) if cache_path is not None else None
    say = _say if progress else (lambda message: None)

    if cache_path is not None and not force:
        corpus, why = _read_cache(cache_path, dataset, fingerprints, programs_key, sustain,
                                  [list(pair) for pair in left_out])
        if corpus is not None:
            say(f"Read {len(corpus)} pieces ({corpus.n_notes:,} notes) of {dataset} from the "
                f"cache {cache_path} (current; pass force=True to extract again)")
            return corpus
        if why != "no cache yet":
            _say(f"Extracting {dataset} again: the cache {cache_path} is out of date: {why}")

    from .datasets import stop_if_rerun_by_worker

    stop_if_rerun_by_worker(f"the extraction of {dataset}")
    total_bytes = sum(max(f["size"], 0) for f in fingerprints)
    n_workers = _auto_workers(total_bytes) if workers is None else max(1, int(workers))
    results, n_workers = _run_extraction(
        sources, None if programs_key is None else tuple(programs_key), n_workers, progress,
        desc=f"Extracting {dataset}", sustain=sustain)

    tables, kept, skipped = [], [], []
    for source, (arrays, reason) in zip(sources, results):
        if arrays is None:
            skipped.append((source.name, reason or "unknown error"))
        else:
            tables.append(arrays)
            kept.append(source)
    if not tables:
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped[:3])
        raise MusicRNNError(
            f"{dataset}: not one of the {len(sources)} files yielded notes ({reasons})"
        )
    keys = sorted({k for s in kept for k in s.metadata})
    corpus = NoteCorpus.from_tables(
        dataset, tables, names=[s.name for s in kept], splits=[s.split for s in kept],
        metadata={_metadata_key(k): [s.metadata.get(k, "") for s in kept] for k in keys},
        skipped=left_out + skipped, sustain=sustain,
    )
    elapsed = time.perf_counter() - started
    if cache_path is not None:
        corpus.to_npz(cache_path)
        manifest = {
            "dataset": dataset,
            "programs": programs_key,
            "sustain": sustain,
            "files": fingerprints,
            "left_out": [list(pair) for pair in left_out],
            "skipped": [{"name": n, "reason": r} for n, r in left_out + skipped],
            "n_pieces": len(corpus),
            "n_notes": corpus.n_notes,
            "versions": _versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(elapsed, 3),
            "workers": n_workers,
        }
        from .paths import atomic_write_text

        atomic_write_text(_manifest_path(cache_path), manifest_text(manifest))
    where = f"; cached at {cache_path}" if cache_path is not None else ""
    pedal = "sounding durations (sustain pedal applied)" if sustain else "key-up durations"
    say(f"Extracted {len(corpus)} pieces ({corpus.n_notes:,} notes, {pedal}) of {dataset} in "
        f"{elapsed:.2f} s with {n_workers} process{'es' if n_workers > 1 else ''}{where}")
    if left_out:
        say(f"The dataset's listing left out {len(left_out)} files (in corpus.skipped), e.g. "
            f"{left_out[0][0]}: {left_out[0][1]}")
    if skipped:
        say(f"Skipped {len(skipped)} of {len(sources)} files (see corpus.skipped):")
        for name, reason in skipped[:10]:
            say(f"  {name}: {reason}")
        if len(skipped) > 10:
            say(f"  ... and {len(skipped) - 10} more")
    return corpus


def _metadata_key(key: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", key).strip("_") or "meta"


def _parts(name: str) -> list[str]:
    """The datasets ``name`` mixes (``[name]``, unchecked, for a name without ``+``); see
    :func:`musicrnn.datasets.mixture_parts`, whose errors this raises."""
    from .datasets import MIXTURE_SEPARATOR, mixture_parts

    if not isinstance(name, str) or MIXTURE_SEPARATOR not in name:
        return [name]
    return mixture_parts(name)


def dataset_slug(name: str, max_files: int | None = None) -> str:
    """File-name-safe id of a dataset (and subset size): the stem of its note cache.

    ``local:<dir>`` becomes ``local-<folder name>-<hash of the absolute path>``. A mixture
    becomes its parts' slugs joined by ``+`` (``bach-chorales+essen-folksongs-max20``): a name
    for run folders; a mixture has no cache of its own (see :func:`cache_path`).
    """
    from .datasets import MIXTURE_SEPARATOR, local_slug

    if MIXTURE_SEPARATOR in name:
        try:
            parts = _parts(name)
        except MusicRNNError:
            parts = [name]
        if len(parts) > 1:
            slug = MIXTURE_SEPARATOR.join(dataset_slug(p) for p in parts)
            return f"{slug}-max{int(max_files)}" if max_files else slug
    if name.strip().startswith("local:"):
        base = local_slug(name.strip())
    else:
        base = name
    slug = re.sub(r"[^0-9A-Za-z._-]+", "-", base).strip("-.").lower() or "dataset"
    return f"{slug}-max{int(max_files)}" if max_files else slug


def sustain_default(name: str) -> bool:
    """Whether extraction applies the sustain pedal to a dataset unless told otherwise.

    True for piano performances: ``maestro-v2``, ``maestro-v3`` and a ``local:`` folder that is
    a MAESTRO copy (it holds a MAESTRO metadata CSV); False for the rest (the chorales and folk
    songs have no pedal) and for names that are no dataset. A mixture: True when it is True for
    every part (each part still keeps its own default, see :func:`mix_corpora`).
    """
    from .datasets import get_dataset

    try:
        return all(bool(get_dataset(part).sustain) for part in _parts(name))
    except MusicRNNError:
        return False


def cache_path(name: str, data_dir: str | os.PathLike | None = None,
               max_files: int | None = None, sustain: bool | None = None) -> Path:
    """Where :func:`extract_corpus` caches a dataset: ``<data_dir>/notes/<slug>.npz``.

    With the dataset's own pedal setting (``sustain`` None, or equal to
    :func:`sustain_default`) that is the one path every notebook reads; the other setting is
    cached beside it, as ``<slug>-sustain.npz`` or ``<slug>-keyup.npz``, so the two never mix.

    Raises:
        MusicRNNError: ``name`` is a mixture: it has no cache of its own, its datasets have one
            each (:func:`cache_paths`).
    """
    from .paths import data_dir as resolve_data_dir

    if len(_parts(name)) > 1:
        raise MusicRNNError(f"the mixture {name!r} has no note cache of its own; its datasets "
                            f"have one each: use notes.cache_paths({name!r})")
    stem = dataset_slug(name, max_files)
    if sustain is not None and bool(sustain) != sustain_default(name):
        stem += "-sustain" if sustain else "-keyup"
    return resolve_data_dir(data_dir) / "notes" / f"{stem}.npz"


def cache_paths(name: str, data_dir: str | os.PathLike | None = None,
                max_files: int | None = None, sustain: bool | None = None) -> list[Path]:
    """The note caches behind ``name``: :func:`cache_path` of each dataset of a mixture, in
    order (``max_files`` and ``sustain`` as :func:`extract_corpus` passes them to each part);
    one path for one dataset."""
    return [cache_path(part, data_dir, max_files, sustain) for part in _parts(name)]


def mix_corpora(parts: list[tuple[str, NoteCorpus]]) -> NoteCorpus:
    """The corpora of several datasets as one: what :func:`extract_corpus` gives a mixture.

    Each piece keeps its notes, durations and split. Its name becomes ``<part prefix>/<name>``
    (:func:`musicrnn.datasets.part_prefix`: the registry name, or ``local-<folder>-<hash>`` for
    a ``local:`` part), as :func:`musicrnn.datasets.download` names a mixture's files, so names
    stay unique and :meth:`NoteCorpus.find` still finds a piece by its plain name when one part
    only has it. Metadata: the parts' keys unioned (a value a part lacks is ""), plus
    ``dataset`` (the part, as named) and ``sustain`` (``"1"`` where the part's durations have the
    sustain pedal applied, else ``"0"``) for every piece. ``corpus.sustain`` is True only when
    every part's is: it then describes every duration, and otherwise the per-piece ``sustain``
    says which durations sound and which are key-up. ``skipped`` is the parts' lists, prefixed
    the same way. The mixture's ``dataset`` is the parts' names joined by ``+``.

    Args:
        parts: (part name, its corpus) in the mixture's order.
    """
    from .datasets import mixture_name, part_prefix

    if not parts:
        raise MusicRNNError("give at least one dataset to mix")
    keys = sorted({k for _, c in parts for k in c.metadata} - {"dataset", "sustain"})
    lengths = np.concatenate([c.lengths() for _, c in parts])
    metadata = {k: np.concatenate([c.metadata[k] if k in c.metadata
                                   else np.full(len(c), "", dtype=str) for _, c in parts])
                for k in keys}
    metadata["dataset"] = np.concatenate([np.full(len(c), part) for part, c in parts])
    metadata["sustain"] = np.concatenate([np.full(len(c), "1" if c.sustain else "0")
                                          for _, c in parts])
    return NoteCorpus(
        dataset=mixture_name([part for part, _ in parts]),
        names=np.concatenate([np.char.add(f"{part_prefix(part)}/", c.names)
                              for part, c in parts]),
        splits=np.concatenate([c.splits for _, c in parts]),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        columns={col: np.concatenate([c.columns[col] for _, c in parts])
                 for col in NOTE_COLUMNS},
        metadata=metadata,
        skipped=[(f"{part_prefix(part)}/{n}", r) for part, c in parts for n, r in c.skipped],
        sustain=all(c.sustain for _, c in parts),
    )


def extract_corpus(
    name: str = "bach-chorales",
    data_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    max_files: int | None = None,
    force: bool = False,
    progress: bool = True,
    sustain: bool | None = None,
) -> NoteCorpus:
    """Extract (or read from the cache) the note tables of a whole dataset.

    Gets the dataset's files with :func:`musicrnn.datasets.download` (writing or downloading
    them if needed), parses them (in parallel where that pays) and caches the corpus at
    ``<data_dir>/notes/<slug>.npz`` with a ``<slug>.manifest.json`` beside it (files with sizes and
    modification times, skipped files, versions). A second call reads the cache when it is
    current. Split and metadata (composer, title, ...) of each piece are carried along.

    A mixture (``bach-chorales+essen-folksongs``) extracts each of its datasets exactly as alone,
    into that dataset's own cache, and joins them with :func:`mix_corpora` (names prefixed by
    dataset, ``metadata["dataset"]``, each part's own splits and pedal default); nothing is
    cached under the mixture's name.

    Args:
        name: a dataset name (``bach-chorales``, ``essen-folksongs``, ``maestro-v2``,
            ``maestro-v3``, ``local:<dir>``), or several joined by ``+``.
        data_dir: the data folder (default: the project's ``data/``).
        workers: parsing processes (None: automatic).
        max_files: use a deterministic subset of this many files (covering every split); in a
            mixture, this many of each dataset.
        force: ignore the cache and extract again.
        progress: show progress bars and messages.
        sustain: durations with the sustain pedal applied (how long notes sound) or not (how
            long keys were held); None: the dataset's default, :func:`sustain_default` (MAESTRO
            yes, the others no; in a mixture, each part's own).

    Returns:
        The :class:`NoteCorpus`, with ``.skipped`` listing files left out and why.

    Raises:
        MusicRNNError: an unknown dataset, a dataset that cannot be fetched, or no usable file.
    """
    from .datasets import download

    parts = _parts(name)
    if len(parts) > 1:
        mixed = mix_corpora([(part, extract_corpus(part, data_dir, workers, max_files, force,
                                                   progress, sustain)) for part in parts])
        if progress:
            counts = {part: int((mixed.metadata["dataset"] == part).sum()) for part in parts}
            _say(f"Mixed {len(mixed)} pieces ({mixed.n_notes:,} notes) of {mixed.dataset}: "
                 + ", ".join(f"{part} {n}" for part, n in counts.items()))
        return mixed
    files = download(name, data_dir=data_dir, max_files=max_files, progress=progress)
    sustain = sustain_default(name) if sustain is None else bool(sustain)
    return extract_files(files, dataset=name,
                         cache_path=cache_path(name, data_dir, max_files, sustain),
                         workers=workers, force=force, progress=progress, sustain=sustain)


def load_corpus(name: str = "bach-chorales", data_dir: str | os.PathLike | None = None,
                max_files: int | None = None, sustain: bool | None = None) -> NoteCorpus:
    """The note corpus of a dataset: from the cache when current, extracted otherwise.

    When the dataset's files cannot be listed any more (deleted, or the network is needed) but a
    cache exists, the cache is used as it is, with a message. A mixture loads each of its
    datasets so and joins them as :func:`extract_corpus` does.

    Args:
        name: a dataset name, or a mixture, as for :func:`extract_corpus`.
        data_dir: the data folder (default: the project's ``data/``).
        max_files: the same subset size the corpus was extracted with (None: all files; in a
            mixture, per dataset).
        sustain: the sustain pedal applied to durations, or not; None: the dataset's default
            (:func:`sustain_default`: MAESTRO, and ``local:`` MAESTRO copies, yes; in a mixture,
            each part's own).

    Returns:
        The :class:`NoteCorpus` (``corpus.sustain`` says which durations it holds).

    Raises:
        MusicRNNError: an unknown dataset, or one that can be neither listed nor found cached.
    """
    from .datasets import download

    parts = _parts(name)
    if len(parts) > 1:
        return mix_corpora([(part, load_corpus(part, data_dir, max_files, sustain))
                            for part in parts])
    cached = cache_path(name, data_dir, max_files, sustain)
    try:
        files = download(name, data_dir=data_dir, max_files=max_files)
    except MusicRNNError as exc:
        if not cached.is_file():
            raise
        _say(f"Could not list {name}'s files ({exc}); using the cache {cached} as it is")
        return NoteCorpus.from_npz(cached)
    sustain = sustain_default(name) if sustain is None else bool(sustain)
    return extract_files(files, dataset=name, cache_path=cached, sustain=sustain)


# ---------------------------------------------------------------------------------------------
# Raw note arrays given by users: primers, seed sequences
# ---------------------------------------------------------------------------------------------


def validate_notes(notes, *, what: str = "notes", batch: bool = False) -> np.ndarray:
    """Raw notes as float32 ``(time, 3)`` (or ``(batch, time, 3)`` when ``batch``), checked.

    Pitch must be a whole MIDI number 0-127 (raw, not divided by 128), step and duration finite
    and >= 0, at least one note. A fourth column, when there is one, is each note's MIDI
    velocity, a whole number 1-127 (the notes of a velocity model). The one check every entry
    point (primers, seed sequences, run files) goes through.
    """
    try:
        array = np.asarray(notes)
    except (TypeError, ValueError) as exc:
        raise MusicRNNError(f"the {what} must be a numeric array of notes: {exc}") from exc
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise MusicRNNError(f"the {what} must be a numeric array of notes, got {array.dtype}")
    array = array.astype(np.float32)
    ok_ndim = (2, 3) if batch else (2,)
    if array.ndim not in ok_ndim or array.shape[-1] not in (3, 4) or array.shape[-2] < 1:
        expected = "(notes, 3) or (batch, notes, 3)" if batch else "(n, 3) array"
        raise MusicRNNError(
            f"the {what} must have shape {expected} of raw (pitch, step, duration) (and "
            f"velocity as a 4th column) with at least one note, got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise MusicRNNError(f"the {what} holds NaN or infinite values")
    pitch = array[..., 0]
    if pitch.min() < 0 or pitch.max() > 127 or (pitch != np.round(pitch)).any():
        raise MusicRNNError(
            f"the {what}'s pitches must be whole MIDI numbers 0-127 (raw, not scaled), found "
            f"{pitch.min():g} .. {pitch.max():g}"
            + (" (they look divided by 128: multiply them back)" if pitch.max() <= 1 else "")
        )
    if array[..., 1:3].min() < 0:
        raise MusicRNNError(f"the {what}'s step and duration must be >= 0 seconds")
    if array.shape[-1] == 4:
        velocity = array[..., 3]
        if velocity.min() < 1 or velocity.max() > 127 or (velocity != np.round(velocity)).any():
            raise MusicRNNError(f"the {what}'s velocities (4th column) must be whole MIDI "
                                f"numbers 1-127, found {velocity.min():g} .. {velocity.max():g}")
    return array


def read_notes_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """Raw notes from a ``.npy`` file (a seed sequence), checked, never unpickled."""
    path = Path(path)
    if not path.is_file():
        raise MusicRNNError(f"no seed sequence at {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise MusicRNNError(
            f"{path} is not a plain numeric .npy array ({exc}); save it with numpy.save"
        ) from exc
    return validate_notes(array, what=f"seed sequence {path.name}")

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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import MusicRNNError

NOTE_COLUMNS: tuple[str, ...] = ("pitch", "step", "duration", "start", "end", "velocity")
"""The columns of a note table, in order."""

FEATURES: tuple[str, ...] = ("pitch", "step", "duration")
"""The per-note features the models read and predict, in order."""

SPLITS: tuple[str, ...] = ("train", "validation", "test")

_DTYPES = {
    "pitch": np.int16,
    "step": np.float64,
    "duration": np.float64,
    "start": np.float64,
    "end": np.float64,
    "velocity": np.int16,
}


@dataclass
class NoteCorpus:
    """The note tables of many pieces, concatenated.

    Piece ``i`` occupies rows ``offsets[i]:offsets[i + 1]`` of every column array. ``step`` restarts
    at each piece (its first note has step 0), so windows taken inside one piece never see a gap
    that belongs to another.
    """

    dataset: str  # registry name, e.g. "bach-chorales", "maestro-v2", "local:/path"
    names: np.ndarray  # (n_pieces,) str: the piece's file path relative to the dataset root
    splits: np.ndarray  # (n_pieces,) str: "train" | "validation" | "test"
    offsets: np.ndarray  # (n_pieces + 1,) int64: row where each piece starts; last = total rows
    columns: dict[str, np.ndarray]  # NOTE_COLUMNS -> (n_notes,) arrays
    metadata: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. "composer", "title", "work"

    def __post_init__(self) -> None:
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
        )

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
    def to_npz(self, path: str | Path) -> Path:
        """Save to ``path`` (uncompressed ``.npz``: several times faster to read and write)."""
        from .paths import atomic_path

        arrays: dict[str, np.ndarray] = {
            "names": self.names, "splits": self.splits, "offsets": self.offsets,
            "dataset": np.asarray(self.dataset),
        }
        arrays.update({f"col_{c}": a for c, a in self.columns.items()})
        arrays.update({f"meta_{k}": v for k, v in self.metadata.items()})
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
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    dataset=str(z["dataset"]),
                    names=z["names"], splits=z["splits"], offsets=z["offsets"],
                    columns={c: z[f"col_{c}"] for c in NOTE_COLUMNS},
                    metadata={k[5:]: z[k] for k in z.files if k.startswith("meta_")},
                )
        except (OSError, ValueError, KeyError) as exc:
            raise MusicRNNError(
                f"the note cache {path} is unreadable ({exc}); delete it and extract again"
            ) from exc

    @classmethod
    def from_tables(cls, dataset: str, tables: list, names: list[str], splits: list[str],
                    metadata: dict[str, list[str]] | None = None) -> "NoteCorpus":
        """Build a corpus from per-piece note tables (DataFrames or dicts of column arrays)."""
        lengths = [len(t["pitch"]) for t in tables]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        columns = {
            c: (np.concatenate([np.asarray(t[c]) for t in tables]) if tables
                else np.zeros(0, dtype=_DTYPES[c]))
            for c in NOTE_COLUMNS
        }
        return cls(dataset=dataset, names=names, splits=splits, offsets=offsets, columns=columns,
                   metadata=metadata or {})


def manifest_text(manifest: dict) -> str:
    """The manifest as stable, readable JSON."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"

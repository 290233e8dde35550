"""Datasets: a registry of MIDI collections, written out or downloaded, each file with its split.

One call, :func:`download`, turns a dataset's name into MIDI files on disk with their split
(train / validation / test) and what is known about them (composer, title, work, ...):

==================  =========  ===============================================================
name                network    source
==================  =========  ===============================================================
``bach-chorales``   offline    music21's bundled Bach chorales, written out as MIDI (default)
``essen-folksongs`` offline    music21's bundled Essen folk-song collection (one tune a file)
``maestro-v2``      download   the official MAESTRO v2.0.0 MIDI zip (1,282 piano performances)
``maestro-v3``      download   the official MAESTRO v3.0.0 MIDI zip (1,276 piano performances)
``local:<dir>``     offline    any folder of ``.mid`` / ``.midi`` files, searched recursively
==================  =========  ===============================================================

Mixtures
    Names joined by ``+`` (``bach-chorales+essen-folksongs``, ``bach-chorales+maestro-v2``,
    ``essen-folksongs+local:<dir>``) name a mixture: each part is fetched, split and subset
    exactly as it is alone (``max_files`` applies to *each* part) and the files are listed
    together, each named ``<part prefix>/<its name in the part>`` (the prefix is the registry
    name, or for a ``local:`` part :func:`part_prefix`'s ``local-<folder>-<hash>``), each with
    ``metadata["dataset"]``, the part as it was named. See :func:`mixture_parts` for the rules
    (and for a ``+`` inside a ``local:`` folder's path).

Where the files go: ``<data_dir>/raw/<folder>/`` (``data/raw/bach-chorales/``,
``data/raw/maestro-v2.0.0/``); a ``local:`` folder is read where it is.

Splits
    *By work*, so that no version of a piece in validation or test was seen in training.
    MAESTRO keeps its official split (from its CSV). The music21 collections hold several versions
    of some pieces: Bach harmonised many chorale tunes more than once, under different BWV
    numbers, and folk-song collections hold variants of one song. Versions are grouped by melody
    (chorales: the soprano's interval n-grams, so transposed versions group too) or by title (folk
    songs), and whole groups are assigned to splits in a deterministic order. A ``local:`` folder is
    split by file (a hash of its relative path), unless it holds a MAESTRO-style CSV with a
    ``split`` column, which is then used.

MAESTRO copies
    Any copy works: the official zip, its extracted folder, or a ``local:`` folder that holds a
    MAESTRO metadata CSV (named ``maestro*.csv``, or with a ``midi_filename`` column), with or
    without a test split. The CSV is read by column name: ``midi_filename`` and ``split`` are
    required (a one-line error names the one missing), the other known columns give each file's
    metadata and unknown ones are ignored. A row that cannot be used is left out and listed in
    ``.skipped`` with the reason, and so in the note corpus's skipped-file report: a file the CSV
    names that is not there (a half-copied download), a split other than train, validation or
    test (skipped rather than guessed at), a second row for one file, a row without a file name.
    MAESTRO is extracted with the sustain pedal applied by default (``Dataset.sustain``).

``max_files``
    A deterministic subset that still covers all three splits (in proportion, at least one file
    each), the same on every machine.

Downloads
    Resumed with HTTP ``Range`` from a ``.part`` file, shown with a tqdm bar, checked (size, the
    recorded SHA-256 and every member's zip CRC) and only then renamed into place; extraction
    refuses absolute paths, ``..`` and links, and happens in a temporary folder renamed into place
    when complete. ``MUSICRNN_MAESTRO_URL`` points the MAESTRO downloads at a mirror (a folder URL
    holding ``maestro-v2.0.0-midi.zip`` / ``maestro-v3.0.0-midi.zip``).
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import hashlib
import http.client
import io
import json
import numbers
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from . import paths
from .errors import MusicRNNError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SPLITS: tuple[str, ...] = ("train", "validation", "test")
"""The split names, in order (the same as :data:`musicrnn.notes.SPLITS`)."""

SPLIT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
"""Share of pieces in train, validation and test for datasets without an official split."""

MAESTRO_URL_ENV = "MUSICRNN_MAESTRO_URL"
"""Environment variable: a folder URL to fetch the MAESTRO zips from instead of the official one."""

MIDI_SUFFIXES: tuple[str, ...] = (".mid", ".midi")

_CATALOGUE_VERSION = 1
_CHUNK = 1 << 20  # bytes read per network / hashing step
_USER_AGENT = "musicrnn-datasets/1 (+https://magenta.tensorflow.org/datasets/maestro)"


# -- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """One entry of the registry: where a dataset comes from and how to check it."""

    name: str  # registry name, e.g. "maestro-v2"; "local:/abs/path" for a local folder
    kind: str  # "chorales" | "abc" (music21 corpora) | "archive" (a zip to download) | "local"
    description: str  # one line for people
    url: str = ""  # the archive's official URL (kind "archive")
    size: int | None = None  # the archive's size in bytes (kind "archive")
    sha256: str = ""  # the archive's recorded SHA-256, hex (kind "archive"; "" skips the check)
    folder: str = ""  # folder under <data_dir>/raw/ with the MIDI files (the archive's top folder)
    metadata_csv: str = ""  # official metadata CSV inside `folder` (MAESTRO), with the split
    source: str = ""  # music21 corpus folder ("bach", "essenFolksong") or the local folder
    license: str = ""  # terms of use, short
    homepage: str = ""  # where to read about it
    sustain: bool = False  # extraction applies the sustain pedal (CC 64) by default (pianists)

    @property
    def offline(self) -> bool:
        """True when the dataset needs no network."""
        return self.kind != "archive"

    @property
    def archive_name(self) -> str:
        """File name of the archive (``maestro-v2.0.0-midi.zip``); "" when there is none."""
        return PurePosixPath(self.url.split("?", 1)[0]).name if self.url else ""

    def archive_url(self) -> str:
        """The URL to download from: ``$MUSICRNN_MAESTRO_URL/<archive name>`` when that is set."""
        mirror = os.environ.get(MAESTRO_URL_ENV, "").strip()
        if mirror and self.kind == "archive":
            return f"{mirror.rstrip('/')}/{self.archive_name}"
        return self.url


# The MIDI-only zips of https://magenta.tensorflow.org/datasets/maestro; sizes and SHA-256 as
# recorded by MusPy (github.com/salu133445/muspy, muspy/datasets/maestro.py).
_MAESTRO_HOME = "https://magenta.tensorflow.org/datasets/maestro"
_MAESTRO_LICENSE = "CC BY-NC-SA 4.0 (non-commercial, share alike)"

DATASETS: dict[str, Dataset] = {
    "bach-chorales": Dataset(
        name="bach-chorales", kind="chorales",
        description="Bach's four-part chorales from music21's corpus, written out as MIDI",
        folder="bach-chorales", source="bach",
        license="public domain scores; encodings by Margaret Greentree (jsbchorales.net), "
                "distributed with music21",
        homepage="https://www.music21.org/music21docs/about/referenceCorpus.html",
    ),
    "essen-folksongs": Dataset(
        name="essen-folksongs", kind="abc",
        description="Folk-song melodies of the Essen collection from music21's corpus, one tune "
                    "a MIDI file",
        folder="essen-folksongs", source="essenFolksong",
        license="non-commercial use (Essen Folksong Collection; ABC by Seymour Shlien; music21)",
        homepage="https://www.esac-data.org",
    ),
    "maestro-v2": Dataset(
        name="maestro-v2", kind="archive",
        description="MAESTRO v2.0.0: 1,282 virtuoso piano performances (MIDI only, 59 MB zip)",
        url="https://storage.googleapis.com/magentadata/datasets/maestro/v2.0.0/"
            "maestro-v2.0.0-midi.zip",
        size=59_243_107,
        sha256="ec2cc9d94886c6b376db1eaa2b8ad1ce62ff9f0a28b3744782b13163295dadf3",
        folder="maestro-v2.0.0", metadata_csv="maestro-v2.0.0.csv",
        license=_MAESTRO_LICENSE, homepage=_MAESTRO_HOME, sustain=True,
    ),
    "maestro-v3": Dataset(
        name="maestro-v3", kind="archive",
        description="MAESTRO v3.0.0: 1,276 virtuoso piano performances (MIDI only, 58 MB zip)",
        url="https://storage.googleapis.com/magentadata/datasets/maestro/v3.0.0/"
            "maestro-v3.0.0-midi.zip",
        size=58_416_533,
        sha256="70470ee253295c8d2c71e6d9d4a815189e35c89624b76d22fce5a019d5dde12c",
        folder="maestro-v3.0.0", metadata_csv="maestro-v3.0.0.csv",
        license=_MAESTRO_LICENSE, homepage=_MAESTRO_HOME, sustain=True,
    ),
}
"""The registry: name -> :class:`Dataset`. Add entries with :func:`register_dataset`."""


def list_datasets() -> list[str]:
    """The registered dataset names (any folder also works as ``local:<dir>``)."""
    return list(DATASETS)


def register_dataset(dataset: Dataset, *, replace: bool = False) -> Dataset:
    """Add ``dataset`` to the registry (a mirror, a newer release, a test archive).

    Raises:
        MusicRNNError: the name is taken and ``replace`` is False, or it starts with ``local:``.
    """
    if dataset.name.startswith("local:") or not dataset.name.strip():
        raise MusicRNNError(f"cannot register a dataset named {dataset.name!r}")
    if dataset.name in DATASETS and not replace:
        raise MusicRNNError(f"a dataset named {dataset.name!r} is registered already")
    DATASETS[dataset.name] = dataset
    return dataset


def get_dataset(name: str) -> Dataset:
    """The registry entry for ``name`` (``local:<dir>`` gives an entry for that folder).

    Raises:
        MusicRNNError: an unknown name (the message lists the known ones).
    """
    if not isinstance(name, str) or not name.strip():
        raise MusicRNNError(f"give a dataset name: one of {_known_names()}")
    name = name.strip()
    if name.startswith("local:"):
        raw = name[len("local:"):].strip()
        if not raw:
            raise MusicRNNError("give a folder after 'local:', e.g. local:~/music/midi")
        folder = Path(raw).expanduser().resolve()
        maestro = folder.is_dir() and _find_maestro_csv(folder) is not None
        return Dataset(
            name=f"local:{folder}", kind="local", source=str(folder),
            description=(f"a MAESTRO copy at {folder}" if maestro
                         else f"the MIDI files under {folder}"),
            sustain=maestro,  # piano performances: durations with the pedal, as for MAESTRO
        )
    if name in DATASETS:
        return DATASETS[name]
    raise _unknown(name)


def _known_names() -> str:
    return ", ".join(DATASETS) + ", or local:/path/to/a/folder/of/midi/files"


def _unknown(name: str, where: str = "") -> MusicRNNError:
    close = difflib.get_close_matches(name, list(DATASETS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return MusicRNNError(f"unknown dataset {name!r}{where}{hint}; choose one of {_known_names()}")


# -- mixtures: several datasets under one name ----------------------------------------------------

MIXTURE_SEPARATOR = "+"
"""Joins the datasets of a mixture: ``bach-chorales+essen-folksongs``."""


def mixture_parts(name: str) -> list[str]:
    """The datasets a name mixes, in the order given: ``"bach-chorales+essen-folksongs"`` gives
    ``["bach-chorales", "essen-folksongs"]``; a name without ``+`` gives ``[name]``.

    Whitespace around each part is stripped, and every part is checked as :func:`get_dataset`
    checks a name, before anything is fetched.

    A ``+`` inside a ``local:`` part belongs to the folder's path (``local:~/code/c++`` is one
    folder) unless the text after it, up to the next ``+``, is a registered name or starts with
    ``local:``: ``local:~/a+b`` is the folder ``a+b``; ``local:~/a+bach-chorales`` mixes the
    folder ``a`` with the chorales. So a misspelt part after a ``local:`` part reads as part of
    that folder's path (and the folder is then not found). A folder whose path goes on with
    ``+<registered name>`` cannot be named in a mixture: name it through a link.

    Raises:
        MusicRNNError: an empty part (``a++b``, a ``+`` at either end), a part named twice (a
            ``local:`` folder by its resolved path), or an unknown part; the message names the
            part and lists the known datasets.
    """
    if not isinstance(name, str) or not name.strip():
        raise MusicRNNError(f"give a dataset name: one of {_known_names()}")
    parts: list[str] = []
    for token in name.split(MIXTURE_SEPARATOR):
        text = token.strip()
        if (parts and parts[-1].lstrip().startswith("local:") and text not in DATASETS
                and not text.startswith("local:")):
            parts[-1] += MIXTURE_SEPARATOR + token  # a '+' of the folder's own path
        else:
            parts.append(token)
    parts = [p.strip() for p in parts]
    if len(parts) == 1:
        get_dataset(parts[0])
        return parts
    seen: dict[str, str] = {}
    for i, part in enumerate(parts, start=1):
        if not part:
            raise MusicRNNError(
                f"part {i} of the mixture {name!r} is empty (two '+' in a row, or one at an "
                f"end); join dataset names with '+': {_known_names()}")
        if not part.startswith("local:") and part not in DATASETS:
            raise _unknown(part, f" in the mixture {name!r}")
        key = get_dataset(part).name
        if key in seen:
            raise MusicRNNError(
                f"the mixture {name!r} names {part!r} twice; name each dataset once, from "
                f"{_known_names()}")
        seen[key] = part
    return parts


def is_mixture(name: str) -> bool:
    """True when ``name`` mixes several datasets (see :func:`mixture_parts`)."""
    return len(mixture_parts(name)) > 1


def mixture_name(parts: Sequence[str]) -> str:
    """The one name of a mixture of ``parts``: ``"bach-chorales+essen-folksongs"``."""
    return MIXTURE_SEPARATOR.join(parts)


def local_slug(name: str) -> str:
    """File-name-safe id of a ``local:<dir>`` name: ``local-<folder name>-<hash of its path>``
    (lower case), the same for every way of writing the folder's path."""
    folder = Path(name[len("local:"):].strip()).expanduser().resolve()
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:8]
    return re.sub(r"[^0-9A-Za-z._-]+", "-", f"local-{folder.name}-{digest}").strip("-.").lower()


def part_prefix(part: str) -> str:
    """The folder-like prefix of a mixture part's piece names: the registry name itself
    (``bach-chorales/bwv1.6.mid``), or for a ``local:`` part :func:`local_slug` (its typed path
    holds ``/`` and ``:``, and two spellings of one folder must give one prefix)."""
    part = part.strip()
    return local_slug(part) if part.startswith("local:") else part


def mix_files(parts: Sequence[tuple[str, DatasetFiles]]) -> DatasetFiles:
    """The files of several datasets as one mixture (what :func:`download` gives a mixture).

    Each file keeps its path and split; its name becomes ``<part prefix>/<name>``
    (:func:`part_prefix`) and its metadata gains ``dataset``, the part as named. The files left
    out are prefixed the same way; the root is the folder the parts' roots share.

    Args:
        parts: (part name, its files) in the mixture's order.
    """
    files: list[DatasetFile] = []
    skipped: list[tuple[str, str]] = []
    for part, got in parts:
        prefix = part_prefix(part)
        files += [DatasetFile(f.path, f"{prefix}/{f.name}", f.split,
                              {**f.metadata, "dataset": part}) for f in got.files]
        skipped += [(f"{prefix}/{source}", reason) for source, reason in got.skipped]
    roots = [str(got.root) for _, got in parts]
    subset = any(got.total for _, got in parts)
    return DatasetFiles(
        mixture_name([part for part, _ in parts]), Path(os.path.commonpath(roots)),
        sorted(files, key=lambda f: f.name), skipped=skipped,
        total=sum(got.total or len(got) for _, got in parts) if subset else None,
    )


def registry_frame() -> "pd.DataFrame":
    """The registry as a table: name, network, size, license, description."""
    import pandas as pd

    rows = [{
        "name": d.name,
        "network": "offline" if d.offline else "download",
        "download MB": round(d.size / 1e6, 1) if d.size else None,
        "license": d.license,
        "description": d.description,
    } for d in DATASETS.values()]
    return pd.DataFrame(rows).set_index("name")


# -- what download returns ------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetFile:
    """One MIDI file of a dataset."""

    path: Path  # absolute path of the MIDI file
    name: str  # its id: the path relative to the dataset root, "/"-separated (mixture: <part>/id)
    split: str  # "train" | "validation" | "test"
    metadata: dict[str, str] = field(default_factory=dict)  # composer, title, work, year, ...


@dataclass
class DatasetFiles:
    """The files of a dataset (or of a ``max_files`` subset of it), with their splits."""

    dataset: str  # the dataset's name ("a+b" for a mixture)
    root: Path  # the folder the names are relative to (a mixture: the folder its parts share)
    files: list[DatasetFile]  # sorted by name
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason) left out
    total: int | None = None  # files in the whole dataset when this is a max_files subset

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[DatasetFile]:
        return iter(self.files)

    def by_split(self, split: str) -> list[DatasetFile]:
        """The files of one split."""
        if split not in SPLITS:
            raise MusicRNNError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return [f for f in self.files if f.split == split]

    def counts(self) -> dict[str, int]:
        """Files per split, in split order."""
        return {s: sum(f.split == s for f in self.files) for s in SPLITS}

    def to_frame(self) -> "pd.DataFrame":
        """One row per file: name, split, size in bytes, path, then every metadata field."""
        import pandas as pd

        keys = sorted({k for f in self.files for k in f.metadata})
        rows = []
        for f in self.files:
            row: dict[str, Any] = {"name": f.name, "split": f.split,
                                   "size_bytes": _size(f.path), "path": str(f.path)}
            row.update({k: f.metadata.get(k, "") for k in keys})
            rows.append(row)
        columns = ["name", "split", "size_bytes", "path", *keys]
        return pd.DataFrame(rows, columns=columns)

    def summary(self) -> "pd.DataFrame":
        """Files and megabytes per split (and works, where the metadata names them)."""
        import pandas as pd

        rows = []
        for split in SPLITS:
            chosen = self.by_split(split)
            row: dict[str, Any] = {"split": split, "files": len(chosen),
                                   "MB": round(sum(_size(f.path) for f in chosen) / 1e6, 2)}
            if any("work" in f.metadata for f in self.files):
                row["works"] = len({f.metadata.get("work", f.name) for f in chosen})
            rows.append(row)
        return pd.DataFrame(rows).set_index("split")

    def describe(self) -> str:
        """A few lines saying what is where."""
        counts = self.counts()
        size = sum(_size(f.path) for f in self.files)
        subset = f" (a subset of {self.total})" if self.total and self.total > len(self) else ""
        lines = [
            f"{self.dataset}: {len(self)} MIDI files{subset}, {size / 1e6:.1f} MB, in {self.root}",
            "  " + ", ".join(f"{split} {n}" for split, n in counts.items()),
        ]
        parts: dict[str, int] = {}
        for f in self.files:
            if "dataset" in f.metadata:
                parts[f.metadata["dataset"]] = parts.get(f.metadata["dataset"], 0) + 1
        if len(parts) > 1:  # a mixture: files per dataset
            lines.append("  " + ", ".join(f"{part} {n}" for part, n in parts.items()))
        if self.skipped:
            lines.append(f"  left out {len(self.skipped)} source files (see .skipped), e.g. "
                         f"{self.skipped[0][0]}: {self.skipped[0][1]}")
        return "\n".join(lines)

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_frame` as CSV (atomically)."""
        return paths.atomic_write_text(path, self.to_frame().to_csv(index=False))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# -- download: the one entry point ----------------------------------------------------------------


def download(
    name: str = "bach-chorales",
    data_dir: str | os.PathLike | None = None,
    *,
    max_files: int | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> DatasetFiles:
    """Make a dataset's MIDI files available and list them with their splits.

    Offline datasets are written out from music21's corpus (in parallel; files already written are
    kept); MAESTRO is downloaded, checked and extracted once; a ``local:`` folder is listed where
    it is. Calling it again is cheap. A mixture (``bach-chorales+essen-folksongs``) gets each of
    its datasets so, and lists them together (:func:`mix_files`).

    Args:
        name: ``bach-chorales``, ``essen-folksongs``, ``maestro-v2``, ``maestro-v3`` or
            ``local:<dir>`` (see :func:`list_datasets`), or several joined by ``+``.
        data_dir: the data folder (default: the project's ``data/``).
        max_files: a deterministic subset of this many files covering every split (None: all);
            in a mixture, this many of each dataset.
        progress: show progress bars.
        workers: processes that write MIDI files (None: one per core).

    Returns:
        The files, sorted by name, each with its split and metadata.

    Raises:
        MusicRNNError: an unknown name, a bad folder, no network for a download, a failed or
            corrupt download, an unsafe archive.
    """
    parts = mixture_parts(name)
    max_files = _check_max_files(max_files)
    if len(parts) > 1:
        return mix_files([(part, download(part, data_dir, max_files=max_files, progress=progress,
                                          workers=workers)) for part in parts])
    dataset = get_dataset(name)
    data = paths.data_dir(data_dir)
    if dataset.kind == "local":
        files = _local_files(dataset)
    elif dataset.kind == "archive":
        files = _archive_files(dataset, data, progress)
    elif dataset.kind in ("chorales", "abc"):
        return _music21_files(dataset, data, max_files, progress, workers)
    else:
        raise MusicRNNError(f"dataset {dataset.name!r} has an unknown kind {dataset.kind!r}")
    return _subset(files, max_files)


def plan(name: str = "bach-chorales", data_dir: str | os.PathLike | None = None) -> DatasetFiles:
    """Every file of a dataset with its split, without writing or downloading anything.

    For the music21 collections these are the files :func:`download` writes (they need not exist
    yet); a ``local:`` folder or an already-downloaded MAESTRO is listed as it is. A mixture
    lists every file of each of its datasets, as :func:`download` names them.

    Raises:
        MusicRNNError: as :func:`download`; for MAESTRO also when it is not downloaded yet.
    """
    parts = mixture_parts(name)
    if len(parts) > 1:
        return mix_files([(part, plan(part, data_dir)) for part in parts])
    dataset = get_dataset(name)
    data = paths.data_dir(data_dir)
    if dataset.kind == "local":
        return _local_files(dataset)
    if dataset.kind == "archive":
        root = _find_extracted(dataset, data)
        if root is None:
            raise MusicRNNError(f"{dataset.name} is not downloaded yet; run "
                                f"`musicrnn download {dataset.name}` first")
        files = _read_maestro_csv(root / dataset.metadata_csv, root)
        return dataclasses.replace(files, dataset=dataset.name)
    return _music21_plan(dataset, data)[1]


def _check_max_files(max_files: Any) -> int | None:
    if max_files is None:
        return None
    if isinstance(max_files, bool) or not isinstance(max_files, numbers.Integral) \
            or max_files < 1:
        raise MusicRNNError(
            f"max_files must be a positive whole number of files, or None for all "
            f"(got {max_files!r})"
        )
    return int(max_files)


def _subset(files: DatasetFiles, max_files: int | None) -> DatasetFiles:
    if max_files is None or max_files >= len(files):
        return files
    chosen = select_subset(files.files, max_files)
    return dataclasses.replace(files, files=chosen, total=len(files.files))


# -- splits and subsets ---------------------------------------------------------------------------


def _rank(key: str) -> str:
    """A stable, well-mixed sort key (the same on every machine and Python run)."""
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


def assign_splits(
    groups: dict[str, str], fractions: Sequence[float] = SPLIT_FRACTIONS
) -> dict[str, str]:
    """Split pieces by group: every piece of one group (one work) lands in the same split.

    Groups are taken in a fixed pseudo-random order (a hash of the group key); test is filled
    first, then validation, each up to its share of the pieces (at least one piece each when there
    are three or more), and the rest is train.

    Args:
        groups: piece name -> group key (pieces with the same key are versions of one work).
        fractions: shares of train, validation and test.

    Returns:
        piece name -> "train" | "validation" | "test".
    """
    members: dict[str, list[str]] = {}
    for piece, group in groups.items():
        members.setdefault(group, []).append(piece)
    n = len(groups)
    _, f_validation, f_test = fractions
    targets = {"test": 0, "validation": 0}
    if n >= 3:
        targets = {"test": max(1, round(f_test * n)), "validation": max(1, round(f_validation * n))}
    filled = {"test": 0, "validation": 0}
    result: dict[str, str] = {}
    for group in sorted(members, key=_rank):
        split = next((s for s in ("test", "validation") if filled[s] < targets[s]), "train")
        if split != "train":
            filled[split] += len(members[group])
        for piece in members[group]:
            result[piece] = split
    return result


def select_subset(files: Sequence[DatasetFile], max_files: int) -> list[DatasetFile]:
    """A deterministic subset of ``max_files`` files covering every split that has files.

    Each split gets a share in proportion to its size (at least one file); inside a split the
    files are taken in a fixed pseudo-random order (a hash of their name), so the subset spreads
    over the whole dataset and is the same everywhere.
    """
    by_split = {s: sorted((f for f in files if f.split == s), key=lambda f: _rank(f.name))
                for s in SPLITS}
    present = [s for s in SPLITS if by_split[s]]
    total = sum(len(by_split[s]) for s in present)
    if max_files >= total:
        return sorted(files, key=lambda f: f.name)
    quota = {s: 0 for s in present}
    if max_files >= len(present):
        exact = {s: max_files * len(by_split[s]) / total for s in present}
        quota = {s: min(len(by_split[s]), max(1, int(exact[s]))) for s in present}
        # Largest remainders first; never more than a split holds.
        order = sorted(present, key=lambda s: (-(exact[s] - int(exact[s])), SPLITS.index(s)))
        while sum(quota.values()) < max_files:
            grew = False
            for s in order:
                if sum(quota.values()) < max_files and quota[s] < len(by_split[s]):
                    quota[s] += 1
                    grew = True
            if not grew:
                break
        while sum(quota.values()) > max_files:  # the minimum of one each overshot
            s = max(present, key=lambda s: quota[s])
            quota[s] -= 1
    else:
        for s in present[:max_files]:
            quota[s] = 1
    chosen = [f for s in present for f in by_split[s][:quota[s]]]
    return sorted(chosen, key=lambda f: f.name)


# -- melody fingerprints: versions of one work ----------------------------------------------------


def melody_ngrams(pitches: Sequence[int], n: int = 8) -> set[tuple[int, ...]]:
    """The melody's interval n-grams (repeated notes merged), the same in any key.

    Two harmonisations of one chorale tune share most of these; two different tunes share few.
    """
    merged = [p for i, p in enumerate(pitches) if i == 0 or p != pitches[i - 1]]
    steps = [b - a for a, b in zip(merged, merged[1:])]
    return {tuple(steps[i:i + n]) for i in range(len(steps) - n + 1)}


def group_by_melody(
    melodies: dict[str, Sequence[int]], n: int = 8, threshold: float = 0.4
) -> dict[str, str]:
    """Group pieces whose melodies are versions of one tune.

    Two pieces are linked when the interval n-grams they share cover at least ``threshold`` of
    the smaller piece's n-grams; groups are the connected pieces. Each group is named after its
    first member in sorted order.

    Args:
        melodies: piece name -> the melody's MIDI pitches in order (chords: the top note).
        n: n-gram length in intervals.
        threshold: shared fraction that makes two pieces versions of one tune.

    Returns:
        piece name -> group name.
    """
    grams = {name: melody_ngrams(list(p), n) for name, p in melodies.items()}
    parent = {name: name for name in melodies}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    index: dict[tuple[int, ...], list[str]] = {}
    for name in sorted(grams):
        for g in grams[name]:
            index.setdefault(g, []).append(name)
    shared: dict[tuple[str, str], int] = {}
    for names in index.values():
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                shared[(a, b)] = shared.get((a, b), 0) + 1
    for (a, b), count in shared.items():
        if count >= threshold * min(len(grams[a]), len(grams[b])):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return {name: find(name) for name in melodies}


def _title_key(title: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", title.lower()).strip()


# -- music21 collections: catalogue, split, write out ---------------------------------------------


@dataclass
class _Piece:
    """One piece of a music21 collection, before it is written out."""

    name: str  # relative MIDI path under the dataset root
    source: str  # corpus file it comes from
    group: str = ""  # work it belongs to (versions share it)
    metadata: dict[str, str] = field(default_factory=dict)
    abc: str = ""  # the tune's ABC text (kind "abc")
    skip: str = ""  # why it is left out ("" keeps it)


@functools.lru_cache(maxsize=1)  # asked several times per download; the answer never changes
def _music21_package() -> tuple[Path, str]:
    """music21's package folder and version, found without importing it (that takes ~0.5 s)."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        raise MusicRNNError("music21 is not installed; install it with `pip install music21`")
    return (Path(next(iter(spec.submodule_search_locations))),
            importlib.metadata.version("music21"))


def _corpus_folder(dataset: Dataset) -> Path:
    folder = _music21_package()[0] / "corpus" / dataset.source
    if not folder.is_dir():
        raise MusicRNNError(
            f"music21's corpus has no folder {dataset.source!r} (looked in {folder}); "
            f"reinstall music21 with `pip install music21`"
        )
    return folder


def _music21_plan(dataset: Dataset, data: Path) -> tuple[dict[str, _Piece], DatasetFiles]:
    """The pieces to write (by name) and the files they become, split by work."""
    root = data / "raw" / dataset.folder
    catalogue = _catalogue(dataset, root)
    pieces = {p.name: p for p in catalogue if not p.skip}
    splits = assign_splits({p.name: p.group for p in pieces.values()})
    files = sorted((DatasetFile(root / p.name, p.name, splits[p.name], p.metadata)
                    for p in pieces.values()), key=lambda f: f.name)
    skipped = [(p.source, p.skip) for p in catalogue if p.skip]
    return pieces, DatasetFiles(dataset.name, root, files, skipped=skipped)


def _music21_files(dataset: Dataset, data: Path, max_files: int | None, progress: bool,
                   workers: int | None) -> DatasetFiles:
    root = data / "raw" / dataset.folder
    pieces, every = _music21_plan(dataset, data)
    chosen = select_subset(every.files, max_files) if max_files else every.files
    todo = [pieces[f.name] for f in chosen if not f.path.is_file()]
    failed = _write_pieces(dataset, root, todo, progress, workers)
    skipped = every.skipped + [(pieces[n].source, reason) for n, reason in failed.items()]
    files = [f for f in chosen if f.name not in failed]
    if not files:
        raise MusicRNNError(f"{dataset.name}: no piece could be written out ({skipped[:1]})")
    return DatasetFiles(dataset.name, root, files, skipped=skipped,
                        total=len(every) if len(chosen) < len(every) else None)


def _catalogue(dataset: Dataset, root: Path) -> list[_Piece]:
    """Every candidate piece with its work group and metadata; cached in ``<root>/.catalogue.json``.

    The cache is keyed by music21's version and the corpus files' names and sizes, so a new
    music21 release is catalogued afresh.
    """
    folder = _corpus_folder(dataset)
    sources = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix not in _NOT_MUSIC
        and not any(part.startswith((".", "__")) for part in p.relative_to(folder).parts)
    )
    key = {
        "version": _CATALOGUE_VERSION, "dataset": dataset.name, "music21": _music21_package()[1],
        "sources": [[p.relative_to(folder).as_posix(), p.stat().st_size] for p in sources],
    }
    cache = root / ".catalogue.json"
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return [_Piece(**p) for p in cached["pieces"]]
    except (OSError, ValueError, TypeError, KeyError):
        pass  # no cache yet, or unreadable: catalogue again
    if dataset.kind == "chorales":
        pieces = _chorale_catalogue(folder, sources, dataset.source)
    else:
        pieces = _abc_catalogue(folder, sources, dataset.source)
    payload = {"key": key, "pieces": [dataclasses.asdict(p) for p in pieces]}
    paths.atomic_write_text(cache, json.dumps(payload, ensure_ascii=False) + "\n")
    return pieces


# Chorales ----------------------------------------------------------------------------------------

_VOICES = ("soprano", "alto", "tenor", "bass")
_STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_MUSICXML = (".mxl", ".xml", ".musicxml")
_NOT_MUSIC = (".py", ".pyc", ".txt", ".md", ".json")  # package and licence files in the corpus


def _voice(part_name: str) -> str:
    """'soprano' for 'Soprano', 'Soprano 1', 'Soprano\\rOboe 1,2'; '' for instruments."""
    words = re.findall(r"[a-z]+", part_name.lower())
    return words[0] if words and words[0] in _VOICES else ""


def _open_musicxml(path: Path) -> Any:
    """A binary stream of a MusicXML file's score (``.mxl`` archives too)."""
    import xml.etree.ElementTree as ET

    if path.suffix.lower() != ".mxl":
        return open(path, "rb")
    with zipfile.ZipFile(path) as z:
        container = ET.fromstring(z.read("META-INF/container.xml"))
        rootfile = next(container.iter("rootfile")).get("full-path")
        return io.BytesIO(z.read(rootfile))


def musicxml_voices(path: str | os.PathLike,
                    voices: Iterable[str] = _VOICES) -> tuple[list[str], dict[str, list[int]]]:
    """The part names of a (partwise) MusicXML score and the sung line of its vocal parts.

    A light reader with the standard library (no music21 objects), for grouping versions by
    melody: pitches in order, tied continuations merged, the top note of a chord, rests and grace
    notes skipped. It stops reading once the parts asked for are read, so asking for the soprano
    alone costs a fraction of a full parse.

    Args:
        path: a ``.mxl``, ``.xml`` or ``.musicxml`` file.
        voices: which voices to read ("soprano", "alto", "tenor", "bass").

    Returns:
        (every part's name in score order, {vocal part name: MIDI pitches} for the voices asked).
    """
    import xml.etree.ElementTree as ET

    wanted = set(voices)
    names: dict[str, str] = {}
    lines: dict[str, list[int]] = {}
    pending: set[str] | None = None
    with _open_musicxml(Path(path)) as stream:
        for _, element in ET.iterparse(stream, events=("end",)):
            if element.tag == "score-part":
                names[element.get("id", "")] = element.findtext("part-name") or ""
            elif element.tag == "part-list":
                pending = {i for i, n in names.items() if _voice(n) in wanted}
            elif element.tag == "part":
                part_id = element.get("id", "")
                if _voice(names.get(part_id, "")) in wanted:
                    lines[names[part_id]] = _sung_line(element)
                element.clear()
                if pending is not None:
                    pending.discard(part_id)
                    if not pending:
                        break
    return list(names.values()), lines


def _sung_line(part: Any) -> list[int]:
    line: list[int] = []
    for note in part.iter("note"):
        pitch = note.find("pitch")
        if pitch is None or note.find("grace") is not None:
            continue
        if any(t.get("type") == "stop" for t in note.findall("tie")):
            continue
        midi = (12 * (int(pitch.findtext("octave", "4")) + 1)
                + _STEPS[pitch.findtext("step", "C").strip().upper()]
                + round(float(pitch.findtext("alter") or 0)))
        if note.find("chord") is not None and line:
            line[-1] = max(line[-1], midi)
        else:
            line.append(midi)
    return line


def _bwv(stem: str) -> str:
    match = re.match(r"bwv\s*([0-9]+(?:\.[0-9]+)?)", stem, re.IGNORECASE)
    return match.group(1) if match else ""


def _chorale_titles() -> dict[str, str]:
    """BWV number -> chorale title, from music21's chorale catalogue (BWV 250-438)."""
    try:
        from music21.corpus.chorales import ChoraleList

        return {str(k): str(v.get("title") or "") for k, v in ChoraleList().byBWV.items()}
    except Exception:  # noqa: BLE001 - titles are a nicety; never fail a download for them
        return {}


def _chorale_catalogue(folder: Path, sources: list[Path], corpus_folder: str) -> list[_Piece]:
    """Keep the four-part chorales: MusicXML scores with soprano, alto, tenor and bass voices.

    Left out, with the reason: Roman-numeral analyses (``.rntxt``), Humdrum (``.krn``) encodings
    of chorales that are there as MusicXML too, and scores without the four voices (the C major
    prelude BWV 846, for one).
    """
    musicxml_stems = {p.stem for p in sources if p.suffix.lower() in _MUSICXML}
    titles = _chorale_titles()
    pieces: list[_Piece] = []
    melodies: dict[str, list[int]] = {}
    for path in sources:
        relative = path.relative_to(folder)
        source = f"{corpus_folder}/{relative.as_posix()}"
        piece = _Piece(name=relative.with_suffix(".mid").as_posix(), source=source)
        suffix = path.suffix.lower()
        if suffix == ".rntxt":
            piece.skip = "a Roman-numeral analysis, not a score"
        elif suffix == ".krn":
            piece.skip = ("a second (Humdrum) encoding of a chorale that is here as MusicXML"
                          if path.stem in musicxml_stems else "a Humdrum file (only MusicXML read)")
        elif suffix not in _MUSICXML:
            piece.skip = f"not a score ({suffix or 'no extension'})"
        else:
            try:
                part_names, lines = musicxml_voices(path, voices=("soprano",))
            except Exception as exc:  # noqa: BLE001 - one unreadable score never stops a corpus
                part_names, lines = [], {}
                piece.skip = f"unreadable MusicXML ({type(exc).__name__}: {exc})"
            if not piece.skip:
                found = {_voice(n) for n in part_names}
                if not set(_VOICES) <= found:
                    piece.skip = ("not a four-part chorale (no "
                                  + "/".join(v for v in _VOICES if v not in found) + " voice)")
                elif not any(lines.values()):
                    piece.skip = "the soprano part holds no notes"
                else:
                    melodies[piece.name] = next(line for line in lines.values() if line)
                    bwv = _bwv(path.stem)
                    piece.metadata = {
                        "composer": "Johann Sebastian Bach",
                        "bwv": bwv,
                        "title": titles.get(bwv, ""),
                        "source": source,
                    }
        pieces.append(piece)
    groups = group_by_melody(melodies)
    for piece in pieces:
        if not piece.skip:
            piece.group = groups[piece.name]
            piece.metadata["work"] = Path(piece.group).stem
    return pieces


# ABC collections (folk songs) --------------------------------------------------------------------


def _abc_tunes(text: str) -> tuple[str, list[str]]:
    """Split an ABC file into its header (before the first ``X:``) and its tunes."""
    chunks = re.split(r"(?m)^(?=X:)", text)
    return chunks[0], [c for c in chunks[1:] if c.strip()]


def _abc_field(tune: str, key: str) -> str:
    match = re.search(rf"(?m)^{key}:[ \t]*(.*?)\s*$", tune)
    return match.group(1) if match else ""


def _abc_catalogue(folder: Path, sources: list[Path], corpus_folder: str) -> list[_Piece]:
    """Every tune of every ``.abc`` collection (music21's own ``test*`` fixtures left out).

    Variants of one song share a title in these collections, so tunes are grouped by title
    (untitled tunes stand alone).
    """
    pieces: list[_Piece] = []
    for path in sources:
        source = f"{corpus_folder}/{path.relative_to(folder).as_posix()}"
        if path.suffix.lower() != ".abc":
            pieces.append(_Piece(name=path.name, source=source, skip="not an ABC file"))
            continue
        if path.stem.lower().startswith("test"):
            pieces.append(_Piece(name=path.stem, source=source,
                                 skip="music21's test fixtures, not part of the collection"))
            continue
        header, tunes = _abc_tunes(path.read_text(encoding="utf-8", errors="replace"))
        used: set[str] = set()
        for ordinal, tune in enumerate(tunes, start=1):
            number = _abc_field(tune, "X")
            ident = f"{int(number):04d}" if number.isdigit() else f"{ordinal:04d}"
            if ident in used:
                ident = f"{ordinal:04d}-{ident}"
            used.add(ident)
            title = _abc_field(tune, "T")
            name = f"{path.relative_to(folder).with_suffix('').as_posix()}/{ident}.mid"
            key = _title_key(title)
            pieces.append(_Piece(
                name=name, source=f"{source}#X{number or ordinal}",
                group=f"title:{key}" if key else f"tune:{name}",
                metadata={"title": title, "origin": _abc_field(tune, "O"),
                          "collection": path.stem, "composer": "Traditional",
                          "work": key or name},
                abc=(header.strip() + "\n\n" + tune) if header.strip() else tune,
            ))
    return pieces


# Writing MIDI (in worker processes) --------------------------------------------------------------


def _write_piece(task: tuple[str, str, str, str]) -> tuple[str, str]:
    """Write one piece as MIDI; returns (name, "" or the reason it failed). Runs in a worker."""
    kind, source, abc, out = task
    name = out
    try:
        from music21 import converter, stream

        if kind == "chorales":
            score = converter.parse(source, forceSource=True)
            for part in list(score.parts):
                if not _voice(part.partName or ""):
                    score.remove(part)  # keep the chorale: the sung parts, not the instruments
        else:
            score = converter.parseData(abc, format="abc", forceSource=True)
            if isinstance(score, stream.Opus):
                score = score.scores[0]
        if not score.flatten().notes:
            return name, "no notes"
        with paths.atomic_path(out) as tmp:
            score.write("midi", fp=str(tmp))
        return name, ""
    except Exception as exc:  # noqa: BLE001 - one bad piece never stops a corpus
        # no object ids in the reason: the cache compares reasons from run to run
        detail = re.sub(r"\s*id\(\)=\d+|\s*(at )?0x[0-9a-f]+", "", str(exc))
        return name, f"could not be written as MIDI ({type(exc).__name__}: {detail})"


def _writer_processes(tasks: int, workers: int | None) -> int:
    """Processes to write ``tasks`` pieces with: ``workers``, or one per core this process may
    use, and 1 (no pool) for fewer than 10 pieces: a pool starts in ~1 s, a piece takes ~0.3 s."""
    n = max(1, min(workers or paths.usable_cpus(), tasks))
    return n if tasks >= 10 else 1


def _write_pieces(dataset: Dataset, root: Path, pieces: list[_Piece], progress: bool,
                  workers: int | None) -> dict[str, str]:
    """Write the pieces (in a process pool where that pays and is safe); returns name -> reason
    for the ones that failed."""
    if not pieces:
        return {}
    stop_if_rerun_by_worker(f"writing {dataset.name}")
    root.mkdir(parents=True, exist_ok=True)
    folder = _corpus_folder(dataset)
    tasks = []
    for p in pieces:
        source = str(folder / p.source.split("/", 1)[1].split("#", 1)[0])
        tasks.append((dataset.kind, source, p.abc, str(root / p.name)))
    names = {str(root / p.name): p.name for p in pieces}
    n_workers = _writer_processes(len(tasks), workers)
    parallel = n_workers > 1
    if parallel:
        refusal = process_pool_refusal()
        if refusal:
            print(f"Writing {dataset.name} in one process: {refusal}", flush=True)
            parallel = False
    from tqdm.auto import tqdm

    failed: dict[str, str] = {}
    done: set[str] = set()
    with tqdm(total=len(tasks), desc=f"Writing {dataset.name}", unit="file",
              disable=not progress) as bar:

        def record(out: str, reason: str) -> None:
            done.add(out)
            bar.update(1)
            if reason:
                failed[names[out]] = reason

        if parallel:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            from concurrent.futures.process import BrokenProcessPool

            context = multiprocessing.get_context("spawn")  # safe beside threads (Jupyter, TF)
            chunk = max(1, min(16, len(tasks) // (n_workers * 4)))
            try:
                with ProcessPoolExecutor(n_workers, mp_context=context) as pool:
                    for out, reason in pool.map(_write_piece, tasks, chunksize=chunk):
                        record(out, reason)
            except (BrokenProcessPool, OSError) as exc:
                print(f"The process pool writing {dataset.name} failed ({type(exc).__name__}: "
                      f"{exc}); writing the rest in one process", flush=True)
        for task in tasks:
            if task[3] not in done:
                record(*_write_piece(task))
    return failed


# -- process pools and scripts without a main guard -----------------------------------------------
#
# Pools here use the "spawn" start method (safe beside the threads of Jupyter and TensorFlow). A
# spawned worker starts by importing the parent's main module again, as ``__mp_main__``: the
# top-level code of a script runs once more in every worker. In a script without
# ``if __name__ == "__main__":`` that code is the very call that wants the pool, so every worker
# would start the work again; Python stops them with a RuntimeError and the pool breaks
# (``BrokenProcessPool``). So before starting a pool we look at where the call comes from: a
# script's top-level line outside such a guard gets one process, and a one-line note.


def main_guard_lines(source: str) -> list[tuple[int, int]]:
    """Line ranges (first, last) of the bodies of top-level ``if __name__ == "__main__":``
    blocks in a module's source (1-based, inclusive); [] when it has none.

    Raises:
        SyntaxError: ``source`` is not Python.
    """
    import ast

    def is_main_test(test: ast.expr) -> bool:
        if not (isinstance(test, ast.Compare) and len(test.ops) == 1
                and isinstance(test.ops[0], ast.Eq)):
            return False
        sides = [test.left, test.comparators[0]]
        return (any(isinstance(x, ast.Name) and x.id == "__name__" for x in sides)
                and any(isinstance(x, ast.Constant) and x.value == "__main__" for x in sides))

    return [(node.body[0].lineno, node.body[-1].end_lineno or node.body[-1].lineno)
            for node in ast.parse(source).body
            if isinstance(node, ast.If) and is_main_test(node.test)]


def _rerun_main_file(main: Any) -> Path | None:
    """The file a spawned worker would run again as its ``__mp_main__`` (None: nothing runs).

    Mirrors ``multiprocessing.spawn``: a main module imported by name (``python -m mod``) is
    imported again unless it is a package's ``__main__``; a main script is run again unless it is
    IPython's; the interactive prompt, ``python -c`` and Jupyter kernels leave nothing to re-run.
    """
    if main is None:
        return None
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if spec_name is not None:
        if spec_name == "__main__" or spec_name.endswith(".__main__"):
            return None
        origin = getattr(main.__spec__, "origin", None) or getattr(main, "__file__", None)
        return Path(origin) if origin else None
    path = getattr(main, "__file__", None)
    if not path or os.path.splitext(os.path.basename(path))[0] == "ipython":
        return None
    return Path(path)


def _main_module_line(main: Any) -> int | None:
    """The line of the main module's top-level code that is running now (the call that led
    here), or None when this call does not come from it (a thread, a callback)."""
    import sys

    frame = sys._getframe(1)
    line = None
    while frame is not None:
        if frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            line = frame.f_lineno
        frame = frame.f_back
    return line


def process_pool_refusal() -> str:
    """Why a "spawn" process pool must not be started from here, or "" when it may.

    A pool is refused when its workers would run again the call that starts it: the call comes
    from a main script's (or ``python -m`` module's) top-level code outside
    ``if __name__ == "__main__":`` (or, when the calling line cannot be told, from a script
    without such a guard), or the script cannot be read back. Notebooks, the interactive
    prompt, ``python -c``, the ``musicrnn`` command and guarded scripts get their pools.

    Returns:
        "" or a one-line reason that says what to add to get the pool.
    """
    import sys

    main = sys.modules.get("__main__")
    path = _rerun_main_file(main)
    if path is None:
        return ""
    advice = 'put its code under `if __name__ == "__main__":` to use several processes'
    try:
        guards = main_guard_lines(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return f"worker processes could not read the main script {path.name} back"
    line = _main_module_line(main)
    if line is None:
        return "" if guards else f"the script {path.name} has no main guard; {advice}"
    if any(first <= line <= last for first, last in guards):
        return ""
    return (f"the script {path.name} runs this from its top level (line {line}) without a main "
            f"guard, and worker processes would run it again; {advice}")


def stop_if_rerun_by_worker(what: str) -> None:
    """Stop a spawned worker that is running the parent's unguarded script again.

    While a "spawn" worker starts, it runs the parent's main script again; a script without a
    main guard then reaches the parent's own call (``load_corpus``, say) in the worker. The work
    is the parent's to do: the worker leaves at once with a one-line message, the parent's pool
    breaks, and the parent does the work in one process.

    Raises:
        SystemExit: in such a worker.
    """
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SystemExit(
            f"musicrnn: a worker process that was starting ran the main script again and "
            f"reached {what}; it leaves that to the parent process (put the script's code "
            f'under `if __name__ == "__main__":`)'
        )


# -- local folders --------------------------------------------------------------------------------


def _local_files(dataset: Dataset) -> DatasetFiles:
    folder = Path(dataset.source)
    if not folder.exists():
        plus = (f" (a '{MIXTURE_SEPARATOR}' in a local: path belongs to the path unless a "
                f"dataset name or local: follows it)" if MIXTURE_SEPARATOR in str(folder) else "")
        raise MusicRNNError(
            f"no folder at {folder} (from {dataset.name!r}); give an existing folder of "
            f".mid/.midi files{plus}"
        )
    if not folder.is_dir():
        raise MusicRNNError(f"{folder} is a file, not a folder; give the folder that holds it")
    midi = _find_midi(folder)
    if not midi:
        raise MusicRNNError(
            f"no .mid or .midi files under {folder} (searched all its subfolders); "
            f"put MIDI files there or give another folder"
        )
    maestro_csv = _find_maestro_csv(folder)
    if maestro_csv is not None:
        official = _read_maestro_csv(maestro_csv, folder)
        # Files the CSV does not name are split by file; a file it names but leaves out (an
        # unknown split, say) stays out, with its reason in `skipped`.
        named = {f.name for f in official.files} | {n for n, _ in official.skipped}
        extra = [p for p in midi if p.relative_to(folder).as_posix() not in named]
        hashed = _hash_split(folder, extra)
        files = sorted(official.files + hashed, key=lambda f: f.name)
        return DatasetFiles(dataset.name, folder, files, skipped=official.skipped)
    return DatasetFiles(dataset.name, folder, _hash_split(folder, midi))


def _hash_split(folder: Path, midi: list[Path]) -> list[DatasetFile]:
    """Split files by piece, deterministically: each file is one piece, ordered by a hash."""
    names = {p.relative_to(folder).as_posix(): p for p in midi}
    splits = assign_splits({n: n for n in names})
    return sorted(
        (DatasetFile(p.resolve(), n, splits[n], {"title": p.stem}) for n, p in names.items()),
        key=lambda f: f.name,
    )


def _find_midi(folder: Path) -> list[Path]:
    """Every ``.mid``/``.midi`` file under ``folder`` (hidden folders skipped); clear errors."""

    def fail(exc: OSError) -> None:
        where = exc.filename or folder
        raise MusicRNNError(
            f"cannot read the folder {where} ({exc.strerror or exc}); check its permissions "
            f"(it must be readable and searchable: chmod u+rx)"
        ) from exc

    try:
        os.listdir(folder)
    except OSError as exc:
        fail(exc)
    found: list[Path] = []
    for current, dirs, files in os.walk(folder, onerror=fail):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            if f.lower().endswith(MIDI_SUFFIXES) and not f.startswith("."):
                found.append(Path(current) / f)
    return sorted(found)


# -- MAESTRO: the official CSV --------------------------------------------------------------------

_CSV_REQUIRED = ("midi_filename", "split")
"""Columns a MAESTRO metadata CSV must have; any others are read where known, ignored if not."""

_CSV_FIELDS = {"composer": "canonical_composer", "title": "canonical_title", "year": "year",
               "duration": "duration"}
_CSV_KEPT_AS_IS = ("canonical_composer", "canonical_title")  # also under the CSV's own names


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV (BOM and spaces stripped); [] when it cannot be read."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return [h.strip() for h in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _find_maestro_csv(folder: Path) -> Path | None:
    """The MAESTRO metadata CSV at the top of ``folder``, or None.

    A CSV counts as one when it is named ``maestro*.csv`` or has a ``midi_filename`` column
    (whether it also has every column it needs is checked when it is read, with a clear error).
    """
    candidates = sorted(folder.glob("*.csv"),
                        key=lambda p: (not p.name.lower().startswith("maestro"), p.name))
    for candidate in candidates:
        if candidate.name.lower().startswith("maestro") or "midi_filename" in _csv_header(
                candidate):
            return candidate
    return None


def _read_maestro_csv(csv_path: Path, root: Path) -> DatasetFiles:
    """The files a MAESTRO CSV lists, with its split and composer/title/year metadata.

    Rows are read by column name, so extra or reordered columns do no harm. A row that cannot be
    used is left out and listed in ``skipped`` with the reason, never dropped silently: a file
    the CSV names that is not there (a half-copied download), a split other than train,
    validation or test (compared without case and spaces), a path leading outside the folder, a
    second row for one file, a row without a file name. Blank lines are ignored.

    Raises:
        MusicRNNError: an unreadable CSV, one without the ``midi_filename`` or ``split`` column,
            or one of which not a single file is there.
    """
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MusicRNNError(
            f"cannot read the metadata CSV {csv_path} ({exc}); restore the official one"
        ) from exc
    missing = [c for c in _CSV_REQUIRED if c not in header]
    if missing:
        shown = ", ".join(header[:10]) + (", ..." if len(header) > 10 else "")
        raise MusicRNNError(
            f"the metadata CSV {csv_path} has no {' and no '.join(missing)} column (its "
            f"columns: {shown or 'none'}); a MAESTRO CSV needs {' and '.join(_CSV_REQUIRED)}: "
            f"restore the official CSV, or remove it to split the folder by file"
        )
    column = {}
    for i, name in enumerate(header):
        column.setdefault(name, i)  # a repeated column name: the first one counts

    files: list[DatasetFile] = []
    skipped: list[tuple[str, str]] = []
    accepted: set[str] = set()
    for number, values in enumerate(rows, start=1):
        if not any(v.strip() for v in values):
            continue  # a blank line holds nothing to lose
        row = {col: values[i].strip() for col, i in column.items() if i < len(values)}
        get = row.get
        name = get("midi_filename", "").replace("\\", "/")
        where = f"{csv_path.name} row {number}"
        if not name:
            skipped.append((where, "the row names no midi_filename"))
            continue
        split = get("split", "")
        path = root / name
        if split.lower() not in SPLITS:
            skipped.append((name, f"unknown split {split!r} in {where} (expected "
                                  f"{', '.join(SPLITS)})"))
        elif name in accepted:
            skipped.append((f"{name} ({where})", f"listed twice in {csv_path.name}; the "
                                                 f"first row is used"))
        elif not _is_safe_member(name):
            skipped.append((name, f"a path outside the dataset folder ({where})"))
        elif not path.is_file():
            skipped.append((name, f"listed in {csv_path.name} but missing (a half-copied "
                                  f"download? copy the file again)"))
        else:
            metadata = {k: get(col, "") for k, col in _CSV_FIELDS.items() if col in column}
            metadata.update({col: get(col, "") for col in _CSV_KEPT_AS_IS if col in column})
            if "title" in metadata:
                metadata["work"] = f"{metadata.get('composer', '')}: {metadata['title']}"
            files.append(DatasetFile(path.resolve(), name, split.lower(), metadata))
            accepted.add(name)
    if not files:
        raise MusicRNNError(
            f"{csv_path} lists no MIDI file that is there ({len(skipped)} missing or unusable, "
            f"e.g. {skipped[0][0]}: {skipped[0][1]}); extract the whole archive next to it"
            if skipped else f"{csv_path} lists no MIDI files; restore the official CSV"
        )
    return DatasetFiles(csv_path.parent.name, root, sorted(files, key=lambda f: f.name),
                        skipped=skipped)


# -- MAESTRO: download, check, extract ------------------------------------------------------------


def _archive_files(dataset: Dataset, data: Path, progress: bool) -> DatasetFiles:
    root = _find_extracted(dataset, data)
    if root is None:
        archive = data / "raw" / dataset.archive_name
        if not archive.is_file():
            fetch(dataset.archive_url(), archive, size=dataset.size, sha256=dataset.sha256,
                  progress=progress, dataset=dataset)
        else:
            verify_archive(archive, size=dataset.size, sha256=dataset.sha256)
        root = extract_archive(archive, data / "raw", expect=f"{dataset.folder}/"
                               f"{dataset.metadata_csv}")
    files = _read_maestro_csv(root / dataset.metadata_csv, root)
    return dataclasses.replace(files, dataset=dataset.name)


def _find_extracted(dataset: Dataset, data: Path) -> Path | None:
    """An extracted copy: ``<data>/raw/<folder>``, ``<data>/<folder>`` or ``<data>`` itself."""
    for candidate in (data / "raw" / dataset.folder, data / dataset.folder, data):
        if (candidate / dataset.metadata_csv).is_file():
            return candidate
    return None


def _offline_message(dataset: Dataset | None, url: str, reason: str) -> str:
    host = urllib.request.urlparse(url).netloc or url
    offline = ", ".join(n for n, d in DATASETS.items() if d.offline)
    if dataset is None:
        return f"cannot reach {host} to download {url} ({reason})"
    return (
        f"cannot reach {host} to download {dataset.name} ({reason}). Without network, use an "
        f"offline dataset ({offline}) or a local copy: put {dataset.archive_name} (or its "
        f"extracted {dataset.folder}/ folder) in <data_dir>/raw/, or pass "
        f"local:/path/to/{dataset.folder}, or set {MAESTRO_URL_ENV} to a mirror"
    )


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    sha256: str = "",
    progress: bool = True,
    attempts: int = 3,
    timeout: float = 30.0,
    dataset: Dataset | None = None,
) -> Path:
    """Download ``url`` to ``dest``: resumable, checked, renamed into place only when whole.

    Bytes go to ``<dest>.part``; an interrupted download resumes from there with an HTTP
    ``Range`` request (automatically, up to ``attempts`` times while bytes keep coming, and on the
    next call). The finished file must have the expected ``size`` and ``sha256`` and, for a zip,
    pass the CRC test of every member; then it is renamed to ``dest``. A corrupt ``.part`` is
    deleted (it cannot be resumed).

    Raises:
        MusicRNNError: no network (one message saying what to do offline), an HTTP error, a
            download that keeps breaking off, or a file that fails its checks.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    for attempt in range(1, attempts + 1):
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:
            part.unlink()
            have = 0
        if size is not None and have == size:
            break
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing left to send: the .part is whole (or wrong)
                break
            advice = ("the file has moved or the URL is wrong" if exc.code in (403, 404, 410)
                      else "the server failed; try again later")
            raise MusicRNNError(
                f"downloading {url} failed: the server answered HTTP {exc.code} {exc.reason} "
                f"({advice}; set {MAESTRO_URL_ENV} to a mirror or use a local copy)"
            ) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise MusicRNNError(_offline_message(dataset, url, str(reason))) from exc
        with response:
            status = getattr(response, "status", 200)
            if status == 206 and _range_start(response) != have:
                part.unlink(missing_ok=True)  # a range we did not ask for: start afresh
                continue
            append = have > 0 and status == 206
            if not append:
                have = 0  # the server sent the whole file: start over
            total = size if size is not None else _content_length(response, have)
            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=dest.name, disable=not progress)
            got = 0
            try:
                with open(part, "ab" if append else "wb") as handle:
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
                        handle.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
                    handle.flush()
                    os.fsync(handle.fileno())
                broken = ""
            except (OSError, http.client.HTTPException) as exc:
                broken = f"{type(exc).__name__}: {exc}"
            finally:
                bar.close()
        have = part.stat().st_size
        whole = (size is None and not broken) or (size is not None and have >= size)
        if whole:
            break
        if got == 0 or attempt == attempts:
            expected = f" of {size:,}" if size else ""
            raise MusicRNNError(
                f"the download of {url} stopped after {have:,}{expected} bytes"
                f"{' (' + broken + ')' if broken else ''}; run the same command again to resume "
                f"from {part}"
            )
        time.sleep(0.2 * attempt)
    else:
        raise MusicRNNError(
            f"the download of {url} failed {attempts} times (the server answered with other "
            f"byte ranges than asked for); run the same command again"
        )
    try:
        verify_archive(part, size=size, sha256=sha256)
    except MusicRNNError as exc:
        part.unlink(missing_ok=True)
        raise MusicRNNError(f"{exc} (downloaded from {url}; deleted it, run again to retry)") \
            from None
    os.replace(part, dest)
    return dest


def _range_start(response: Any) -> int:
    match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", "") or "")
    return int(match.group(1)) if match else -1


def _content_length(response: Any, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return int(length) + offset if length and length.isdigit() else None


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_archive(path: str | os.PathLike, *, size: int | None = None, sha256: str = "") -> None:
    """Check a downloaded archive: its size, its SHA-256 and (zips) every member's CRC.

    Raises:
        MusicRNNError: naming the check that failed.
    """
    path = Path(path)
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise MusicRNNError(f"{path.name} has {actual:,} bytes where {size:,} were expected")
    if sha256:
        digest = file_sha256(path)
        if digest.lower() != sha256.lower():
            raise MusicRNNError(
                f"{path.name} has SHA-256 {digest[:16]}..., not the recorded {sha256[:16]}... "
                f"(a corrupt or different file)"
            )
    if zipfile.is_zipfile(path) or path.name.endswith((".zip", ".zip.part")):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise MusicRNNError(f"{path.name} is not a readable zip archive ({exc})") from exc
        if bad is not None:
            raise MusicRNNError(f"{path.name} is corrupt: member {bad} fails its CRC check")


def _is_safe_member(name: str) -> bool:
    """True for a relative path that stays inside the folder it is extracted to."""
    if not name or "\x00" in name:
        return False
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return False
    return ".." not in PurePosixPath(posix).parts


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract a zip into ``dest``, refusing anything that could land outside it.

    Every member is checked before anything is written: absolute paths, drive letters, ``..``
    components and symbolic links are refused.

    Returns:
        The extracted files.

    Raises:
        MusicRNNError: naming the first unsafe member, or a corrupt archive.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with zipfile.ZipFile(archive) as z:
            members = z.infolist()
            for info in members:
                if not _is_safe_member(info.filename):
                    raise MusicRNNError(
                        f"refusing to extract {archive.name}: member {info.filename!r} would "
                        f"land outside the target folder"
                    )
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise MusicRNNError(
                        f"refusing to extract {archive.name}: member {info.filename!r} is a "
                        f"symbolic link"
                    )
            written = []
            for info in members:
                target = dest.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                written.append(target)
            return written
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise MusicRNNError(f"{archive.name} is not a readable zip archive ({exc})") from exc


def extract_archive(archive: str | os.PathLike, dest_parent: str | os.PathLike,
                    expect: str) -> Path:
    """Extract ``archive`` into a temporary folder, check it holds ``expect``, move it into place.

    ``expect`` is ``<top folder>/<a file it must hold>`` (``maestro-v2.0.0/maestro-v2.0.0.csv``);
    the top folder is renamed to ``<dest_parent>/<top folder>`` only when the extraction is whole,
    so an interrupted or refused extraction leaves nothing behind.

    Returns:
        The extracted top folder.
    """
    archive, dest_parent = Path(archive), Path(dest_parent)
    top, _, required = expect.partition("/")
    final = dest_parent / top
    dest_parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{top}.extract-", dir=dest_parent))
    try:
        safe_extract(archive, work)
        if not (work / top / required).is_file():
            raise MusicRNNError(
                f"{archive.name} does not hold {expect}; it is not the archive expected "
                f"(delete it and download again)"
            )
        if final.exists():
            raise MusicRNNError(
                f"{final} exists but holds no {required}; move it away (or finish it) and "
                f"run again"
            )
        os.replace(work / top, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


# -- the public names -----------------------------------------------------------------------------

__all__ = [
    "DATASETS", "Dataset", "DatasetFile", "DatasetFiles", "MAESTRO_URL_ENV", "SPLITS",
    "assign_splits", "download", "plan", "extract_archive", "fetch", "file_sha256", "get_dataset",
    "group_by_melody", "is_mixture", "list_datasets", "local_slug", "melody_ngrams",
    "MIXTURE_SEPARATOR", "mix_files", "mixture_name", "mixture_parts", "musicxml_voices",
    "part_prefix", "register_dataset",
    "main_guard_lines", "process_pool_refusal", "registry_frame", "safe_extract",
    "select_subset", "stop_if_rerun_by_worker", "verify_archive",
]

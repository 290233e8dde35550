"""musicrnn.datasets on real data: music21's corpora, the shared MAESTRO sample, real HTTP.

Downloads are served by a loopback HTTP server (``ThreadingHTTPServer`` on 127.0.0.1, with Range
support) that this module starts; the archive is a MAESTRO-shaped zip built from the shared
sample, registered with its real size and SHA-256. No mocks: the real urllib client, the real zip
checks, the real music21 writer.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import xml.etree.ElementTree as ET
import zipfile
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pretty_midi
import pytest

from musicrnn import datasets, notes
from musicrnn.errors import MusicRNNError

ROOT = Path(__file__).resolve().parents[1]
MUSICRNN = ROOT / ".venv" / "bin" / "musicrnn"
if not MUSICRNN.exists():  # an installed environment other than the project's .venv
    MUSICRNN = Path(sys.executable).with_name("musicrnn")


# -- a loopback HTTP server with Range support ----------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        server: _Server = self.server  # type: ignore[assignment]
        server.requests.append((self.path, self.headers.get("Range")))
        route = server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        if isinstance(route, int):
            self.send_error(route)
            return
        body: bytes = route["body"]
        start = 0
        wanted = self.headers.get("Range")
        if wanted:
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if route.get("drops", 0) > 0:  # promise the whole payload, send part, hang up
            route["drops"] -= 1
            self.wfile.write(payload[:route["cut"]])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, dict | int] = {}
        self.requests: list[tuple[str, str | None]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture(scope="module")
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def maestro_zip(maestro_sample, tmp_path_factory) -> bytes:
    """A MAESTRO-shaped archive: maestro-v2.0.0/ with the official CSV and the sample's MIDI."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(maestro_sample.rglob("*")):
            if path.is_file():
                z.write(path, f"maestro-v2.0.0/{path.relative_to(maestro_sample).as_posix()}")
    return buffer.getvalue()


@pytest.fixture
def no_mirror(monkeypatch):
    monkeypatch.delenv(datasets.MAESTRO_URL_ENV, raising=False)


@pytest.fixture
def registered():
    """Register loopback datasets for one test; removed afterwards."""
    names = []

    def register(name: str, url: str, body: bytes, sha256: str | None = None) -> str:
        entry = dataclasses.replace(
            datasets.get_dataset("maestro-v2"), name=name, url=url, size=len(body),
            sha256=hashlib.sha256(body).hexdigest() if sha256 is None else sha256,
        )
        datasets.register_dataset(entry, replace=True)
        names.append(name)
        return name

    yield register
    for name in names:
        datasets.DATASETS.pop(name, None)


def _leftovers(data: Path) -> list[str]:
    """Anything half-done under data/: .part files, temporary files and extraction folders."""
    return sorted(p.name for p in data.rglob("*")
                  if p.name.endswith(".part") or ".extract-" in p.name or ".tmp" in p.name)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the registry ---------------------------------------------------------------------------------


def test_registry_names_and_records():
    assert datasets.list_datasets()[:4] == ["bach-chorales", "essen-folksongs", "maestro-v2",
                                            "maestro-v3"]
    assert datasets.SPLITS == notes.SPLITS
    for name in ("maestro-v2", "maestro-v3"):
        entry = datasets.get_dataset(name)
        assert not entry.offline and entry.size > 50_000_000
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        assert entry.url.startswith("https://storage.googleapis.com/magentadata/datasets/maestro/")
        assert entry.archive_name == f"{entry.folder}-midi.zip"
    assert datasets.get_dataset("bach-chorales").offline
    table = datasets.registry_frame()
    assert list(table.index[:4]) == datasets.list_datasets()[:4]


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(MusicRNNError) as info:
        datasets.get_dataset("bach-choral")
    message = str(info.value)
    assert "did you mean 'bach-chorales'" in message
    for name in ("bach-chorales", "essen-folksongs", "maestro-v2", "maestro-v3", "local:"):
        assert name in message
    with pytest.raises(MusicRNNError, match="folder after 'local:'"):
        datasets.get_dataset("local:")
    with pytest.raises(MusicRNNError, match="max_files"):
        datasets.download("bach-chorales", max_files=0)


def test_mirror_variable_moves_the_download(monkeypatch):
    monkeypatch.setenv(datasets.MAESTRO_URL_ENV, "http://mirror.example/maestro/")
    assert datasets.get_dataset("maestro-v3").archive_url() == (
        "http://mirror.example/maestro/maestro-v3.0.0-midi.zip")
    monkeypatch.delenv(datasets.MAESTRO_URL_ENV)
    assert datasets.get_dataset("maestro-v3").archive_url() == datasets.get_dataset(
        "maestro-v3").url


# -- splits and subsets ---------------------------------------------------------------------------


def test_assign_splits_keeps_groups_together_and_is_stable():
    groups = {f"piece{i:03d}": f"work{i // 3}" for i in range(90)}  # 30 works, 3 versions each
    splits = datasets.assign_splits(groups)
    assert splits == datasets.assign_splits(dict(reversed(list(groups.items()))))
    for work in set(groups.values()):
        assert len({splits[p] for p, w in groups.items() if w == work}) == 1
    counts = {s: sum(v == s for v in splits.values()) for s in datasets.SPLITS}
    assert counts["validation"] == 9 and counts["test"] == 9 and counts["train"] == 72


def test_select_subset_covers_every_split_in_proportion():
    files = [datasets.DatasetFile(Path(f"/x/{i}.mid"), f"{i}.mid", split)
             for i, split in enumerate(["train"] * 80 + ["validation"] * 10 + ["test"] * 10)]
    chosen = datasets.select_subset(files, 24)
    assert len(chosen) == 24
    counts = {s: sum(f.split == s for f in chosen) for s in datasets.SPLITS}
    assert counts["train"] >= 18 and counts["validation"] >= 2 and counts["test"] >= 2
    assert chosen == datasets.select_subset(list(reversed(files)), 24)
    assert {f.split for f in datasets.select_subset(files, 3)} == set(datasets.SPLITS)


# -- Bach chorales --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chorale_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chorale-data")


@pytest.fixture(scope="module")
def chorale_plan(chorale_data) -> datasets.DatasetFiles:
    return datasets.plan("bach-chorales", chorale_data)


def test_chorale_catalogue_keeps_only_chorales(chorale_plan):
    names = [f.name for f in chorale_plan]
    assert len(names) > 350
    assert all(n.endswith(".mid") and n.startswith("bwv") for n in names)
    assert "bwv846.mid" not in names
    skipped = dict(chorale_plan.skipped)
    assert "not a four-part chorale" in skipped["bach/bwv846.mxl"]
    assert not any(f.metadata["source"].endswith((".krn", ".rntxt")) for f in chorale_plan)
    assert sum("Roman-numeral analysis" in r for r in skipped.values()) >= 20
    assert sum("second (Humdrum) encoding" in r for r in skipped.values()) >= 3
    counts = chorale_plan.counts()
    assert counts["validation"] >= 0.08 * len(names) and counts["test"] >= 0.08 * len(names)
    works = {}
    for f in chorale_plan:
        works.setdefault(f.metadata["work"], set()).add(f.split)
    assert max(len(s) for s in works.values()) == 1  # every work in one split
    assert sum(1 for f in chorale_plan if f.metadata["work"] == "bwv13.6") > 2  # versions found


def _musicxml_texture(path: Path) -> list[int]:
    """All sung notes of a chorale sorted by onset then pitch (ties merged): a reference reader.

    Independent of the library's melody reader; checked against music21 below.
    """
    if path.suffix == ".mxl":
        with zipfile.ZipFile(path) as z:
            container = ET.fromstring(z.read("META-INF/container.xml"))
            root = ET.fromstring(z.read(next(container.iter("rootfile")).get("full-path")))
    else:
        root = ET.parse(path).getroot()
    names = {sp.get("id"): (sp.findtext("part-name") or "") for sp in root.iter("score-part")}
    steps = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
    events = []
    for part in root.iter("part"):
        words = re.findall(r"[a-z]+", names.get(part.get("id"), "").lower())
        if not words or words[0] not in ("soprano", "alto", "tenor", "bass"):
            continue
        divisions, cursor, last_onset = 1, Fraction(0), Fraction(0)
        for measure in part.iter("measure"):
            for element in measure:
                if element.tag == "attributes" and element.findtext("divisions"):
                    divisions = int(element.findtext("divisions"))
                elif element.tag in ("backup", "forward"):
                    amount = Fraction(int(element.findtext("duration")), divisions)
                    cursor += amount if element.tag == "forward" else -amount
                elif element.tag == "note":
                    if element.find("grace") is not None:
                        continue
                    chord = element.find("chord") is not None
                    onset = last_onset if chord else cursor
                    if not chord:
                        last_onset = cursor
                        cursor += Fraction(int(element.findtext("duration", "0")), divisions)
                    pitch = element.find("pitch")
                    tied = any(t.get("type") == "stop" for t in element.findall("tie"))
                    if pitch is not None and not tied:
                        events.append((onset, 12 * (int(pitch.findtext("octave")) + 1)
                                       + steps[pitch.findtext("step")]
                                       + round(float(pitch.findtext("alter") or 0))))
    return [p for _, p in sorted(events)]


def _ngrams(seq: list[int], n: int = 12) -> set[tuple[int, ...]]:
    return {tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)}


def _worst_leak(grams: dict[str, set], splits: dict[str, str]) -> tuple[float, str, str]:
    """The largest share of a validation/test piece's n-grams found in one training piece."""
    index: dict[tuple, list[str]] = {}
    for name, g in grams.items():
        if splits[name] == "train":
            for gram in g:
                index.setdefault(gram, []).append(name)
    worst = (0.0, "", "")
    for name, g in grams.items():
        if splits[name] == "train" or not g:
            continue
        shared: dict[str, int] = {}
        for gram in g:
            for other in index.get(gram, ()):
                shared[other] = shared.get(other, 0) + 1
        for other, count in shared.items():
            worst = max(worst, (count / len(g), name, other))
    return worst


@pytest.mark.slow
def test_no_validation_or_test_chorale_repeats_a_training_chorale(chorale_plan):
    """Versions of one chorale never straddle train and validation/test (12-note pitch n-grams)."""
    from music21 import common, converter

    corpus = Path(common.getCorpusFilePath())
    sources = {f.name: corpus / f.metadata["source"] for f in chorale_plan}
    # The reference reader agrees with music21 (ties stripped, all sung parts, onset then pitch).
    for name in ("bwv1.6.mid", "bwv10.7.mid", "bwv67.4.mid", "bwv248.64-s.mid"):
        score = converter.parse(sources[name], forceSource=True)
        events = []
        for part in score.parts:
            if re.match(r"(?i)\s*(soprano|alto|tenor|bass)", part.partName or ""):
                for n in part.stripTies(matchByPitch=True).flatten().notes:
                    events += [(Fraction(n.offset), p.midi) for p in n.pitches]
        assert [p for _, p in sorted(events)] == _musicxml_texture(sources[name]), name
    grams = {name: _ngrams(_musicxml_texture(path)) for name, path in sources.items()}
    splits = {f.name: f.split for f in chorale_plan}
    share, piece, training_piece = _worst_leak(grams, splits)
    assert share <= 0.5, f"{piece} shares {share:.0%} of its 12-grams with {training_piece}"
    # The measure does catch versions: a split by file name alone leaks some of them.
    naive = datasets.assign_splits({name: name for name in grams})
    assert _worst_leak(grams, naive)[0] > 0.9


def test_chorales_written_as_midi_cached_and_atomic(chorale_data, chorale_plan):
    files = datasets.download("bach-chorales", chorale_data, max_files=9, progress=False)
    assert len(files) == 9 and files.total == len(chorale_plan)
    assert set(files.counts()) == set(datasets.SPLITS) and min(files.counts().values()) >= 1
    planned = {f.name: f.split for f in chorale_plan}
    for f in files:
        assert f.path.is_absolute() and f.path == files.root / f.name
        assert f.split == planned[f.name]  # a subset keeps each piece's split
        assert f.metadata["composer"] == "Johann Sebastian Bach"
        midi = pretty_midi.PrettyMIDI(str(f.path))
        sung = [i for i in midi.instruments if i.notes]
        assert len(sung) >= 4, f"{f.name}: {len(sung)} parts with notes"
    assert _leftovers(chorale_data) == []
    # A second call writes nothing; a deleted file is written again, alone.
    mtimes = {f.name: f.path.stat().st_mtime_ns for f in files}
    again = datasets.download("bach-chorales", chorale_data, max_files=9, progress=False)
    assert [f.name for f in again] == [f.name for f in files]
    assert {f.name: f.path.stat().st_mtime_ns for f in again} == mtimes
    files.files[0].path.unlink()
    datasets.download("bach-chorales", chorale_data, max_files=9, progress=False)
    assert files.files[0].path.is_file()
    assert all(f.path.stat().st_mtime_ns == mtimes[f.name] for f in files.files[1:])
    # Ten or more to write, two processes asked for: a pool writes them, the same bytes.
    assert datasets._writer_processes(10, 2) == 2
    catalogue = Path("raw") / "bach-chorales" / ".catalogue.json"  # skip the corpus scan only
    (chorale_data / "pooled" / catalogue).parent.mkdir(parents=True)
    shutil.copyfile(chorale_data / catalogue, chorale_data / "pooled" / catalogue)
    pooled = datasets.download("bach-chorales", chorale_data / "pooled", max_files=10,
                               workers=2, progress=False)
    assert len(pooled) == 10 and _leftovers(chorale_data / "pooled") == []
    common = {f.name for f in files} & {f.name for f in pooled}
    assert len(common) >= 5
    for name in common:
        assert (files.root / name).read_bytes() == (pooled.root / name).read_bytes(), name
    frame = files.to_frame()
    assert list(frame.columns[:4]) == ["name", "split", "size_bytes", "path"]
    assert (frame["size_bytes"] > 0).all()
    assert "bach-chorales: 9 MIDI files" in files.describe()


def test_essen_folk_songs_one_tune_a_file(tmp_path):
    whole = datasets.plan("essen-folksongs", tmp_path)
    assert len(whole) > 5000
    assert all(not f.metadata["collection"].startswith("test") for f in whole)
    by_title: dict[str, set] = {}
    for f in whole:
        if f.metadata["title"]:
            by_title.setdefault(f.metadata["work"], set()).add(f.split)
    assert max(len(s) for s in by_title.values()) == 1  # variants of a song stay together
    files = datasets.download("essen-folksongs", tmp_path, max_files=5, progress=False)
    assert len(files) == 5 and set(files.counts().values()) != {0}
    assert min(files.counts().values()) >= 1
    for f in files:
        midi = pretty_midi.PrettyMIDI(str(f.path))
        assert sum(len(i.notes) for i in midi.instruments) > 5, f.name
        assert f.metadata["collection"] == f.name.split("/")[0]


# -- local folders --------------------------------------------------------------------------------


def test_local_folder_split_by_file(tmp_path, chorale_data):
    source = datasets.download("bach-chorales", chorale_data, max_files=9, progress=False)
    folder = tmp_path / "my midi"
    for i, f in enumerate(source):
        target = folder / ("deep" if i % 2 else "") / f"piece {i}{'.MIDI' if i == 3 else '.mid'}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f.path, target)
    (folder / "notes.txt").write_text("not music")
    (folder / ".hidden").mkdir()
    shutil.copy(source.files[0].path, folder / ".hidden" / "skipped.mid")
    files = datasets.download(f"local:{folder}", progress=False)
    assert files.dataset == f"local:{folder.resolve()}"
    assert len(files) == 9 and "deep/piece 1.mid" in {f.name for f in files}
    assert "deep/piece 3.MIDI" in {f.name for f in files}
    assert min(files.counts().values()) >= 1
    assert datasets.download(f"local:{folder}", progress=False).files == files.files
    subset = datasets.download(f"local:{folder}", max_files=3, progress=False)
    assert sorted(f.split for f in subset) == sorted(datasets.SPLITS)


def test_local_folder_errors(tmp_path):
    with pytest.raises(MusicRNNError, match="no folder at"):
        datasets.download(f"local:{tmp_path / 'missing'}")
    (tmp_path / "a.mid").write_bytes(b"MThd")
    with pytest.raises(MusicRNNError, match="is a file, not a folder"):
        datasets.download(f"local:{tmp_path / 'a.mid'}")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no music here")
    with pytest.raises(MusicRNNError, match="no .mid or .midi files under"):
        datasets.download(f"local:{empty}")


def test_local_maestro_folder_keeps_the_official_split(maestro_sample):
    files = datasets.download(f"local:{maestro_sample}", progress=False)
    with open(maestro_sample / "maestro-v2.0.0.csv", newline="", encoding="utf-8") as handle:
        rows = {r["midi_filename"]: r for r in csv.DictReader(handle)}
    assert len(files) == len(rows) == 60
    for f in files:
        assert f.split == rows[f.name]["split"]
        assert f.metadata["composer"] == rows[f.name]["canonical_composer"]
        assert f.metadata["year"] == rows[f.name]["year"]


# -- mixtures: several datasets under one name ---------------------------------------------------


MIXTURE = "bach-chorales+essen-folksongs"


@pytest.fixture(scope="module")
def mixture(chorale_data) -> tuple[Path, datasets.DatasetFiles]:
    """Six chorales and six folk songs, written out as one mixture (spaces around the '+'), in
    the chorales' data folder (its catalogue of the chorales takes seconds to make)."""
    return chorale_data, datasets.download("bach-chorales + essen-folksongs", chorale_data,
                                           max_files=6, progress=False)


def test_mixture_gets_each_dataset_with_its_own_max_files(mixture):
    data, files = mixture
    assert files.dataset == MIXTURE and len(files) == 12
    alone = {part: datasets.download(part, data, max_files=6, progress=False)
             for part in ("bach-chorales", "essen-folksongs")}
    for part, own in alone.items():
        mine = [f for f in files if f.metadata["dataset"] == part]
        assert len(mine) == 6 and min(own.counts().values()) >= 1
        # each file as it is alone: its path, its split, its metadata, the name under a prefix
        assert [(f.name, f.path, f.split) for f in mine] == [
            (f"{part}/{f.name}", f.path, f.split) for f in own]
        assert all({**f.metadata, "dataset": part} == m.metadata for f, m in zip(own, mine))
        assert all(f.path.is_file() for f in mine)
    assert files.total == sum(own.total for own in alone.values())
    assert files.skipped == [(f"{part}/{source}", reason) for part, own in alone.items()
                             for source, reason in own.skipped]
    assert set(files.to_frame()["dataset"]) == set(alone)
    lines = files.describe().splitlines()
    assert lines[0].startswith(f"{MIXTURE}: 12 MIDI files (a subset of {files.total})")
    assert "  bach-chorales 6, essen-folksongs 6" in lines
    # plan lists every file of both, named as download names them
    whole = datasets.plan(MIXTURE, data)
    assert len(whole) == files.total
    assert {f.name for f in files} <= {f.name for f in whole}


@pytest.mark.parametrize("name, message", [
    ("bach-chorales+bach-choral", "unknown dataset 'bach-choral' in the mixture "
                                  "'bach-chorales+bach-choral' (did you mean 'bach-chorales'?)"),
    ("bach-chorales++essen-folksongs", "part 2 of the mixture 'bach-chorales++essen-folksongs' "
                                       "is empty"),
    ("essen-folksongs+", "part 2 of the mixture 'essen-folksongs+' is empty"),
    (" + bach-chorales", "part 1 of the mixture ' + bach-chorales' is empty"),
    ("bach-chorales+essen-folksongs+bach-chorales ", "names 'bach-chorales' twice"),
])
def test_bad_mixtures_are_one_line_errors(tmp_path, name, message):
    with pytest.raises(MusicRNNError) as info:
        datasets.download(name, tmp_path, max_files=2, progress=False)
    text = str(info.value)
    assert text.startswith(message) or message in text, text
    assert "\n" not in text and "maestro-v3" in text and "local:" in text  # the known ones
    with pytest.raises(MusicRNNError, match=re.escape(message)):
        datasets.plan(name, tmp_path)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_mixture_names_and_a_plus_inside_a_local_path(tmp_path, mixture):
    assert datasets.mixture_parts("bach-chorales") == ["bach-chorales"]
    assert datasets.mixture_parts(" maestro-v2 +bach-chorales") == ["maestro-v2", "bach-chorales"]
    assert not datasets.is_mixture("essen-folksongs") and datasets.is_mixture(MIXTURE)
    # '+' belongs to a local: path unless a registered name or local: follows it
    songs, more = tmp_path / "c++ songs", tmp_path / "folk + more"
    chorales = [f for f in mixture[1] if f.metadata["dataset"] == "bach-chorales"]
    for folder, chosen in ((songs, chorales[:3]), (more, chorales[3:])):
        folder.mkdir()
        for f in chosen:
            shutil.copy(f.path, folder / Path(f.name).name)
    assert datasets.mixture_parts(f"local:{songs}") == [f"local:{songs}"]
    assert datasets.mixture_parts(f"local:{songs}+bach-chorales") == [f"local:{songs}",
                                                                      "bach-chorales"]
    name = f"local:{songs} + local:{more}"
    assert datasets.mixture_parts(name) == [f"local:{songs}", f"local:{more}"]
    files = datasets.download(name, progress=False)
    prefixes = {f.name.split("/")[0] for f in files}
    assert prefixes == {datasets.part_prefix(f"local:{songs}"), datasets.part_prefix(
        f"local:{more}")} and all(p.startswith("local-") for p in prefixes)
    assert datasets.part_prefix(f"local:{songs}/") == datasets.part_prefix(f"local:{songs}")
    assert sorted(f.metadata["dataset"] for f in files) == [f"local:{songs}"] * 3 + [
        f"local:{more}"] * 3
    assert files.root == tmp_path
    with pytest.raises(MusicRNNError, match="twice"):
        datasets.mixture_parts(f"local:{songs}+local:{songs}/")
    # a misspelt dataset after a local: part reads as the folder's path, and the message says so
    with pytest.raises(MusicRNNError, match=r"no folder at .*\+bach-choral .*belongs to the path"):
        datasets.download(f"local:{songs}+bach-choral", progress=False)


# -- MAESTRO copies with bad input: built in tmp_path from sample files ---------------------------


def maestro_copy(sample: Path, dest: Path, n: int = 6) -> tuple[Path, list[str], list[dict]]:
    """A MAESTRO folder at ``dest``: the official CSV's columns, the rows of the ``n`` smallest
    performances (train and validation both) and their files. Returns (root, columns, rows)."""
    with open(sample / "maestro-v2.0.0.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames or []), list(reader)
    rows.sort(key=lambda r: (sample / r["midi_filename"]).stat().st_size)
    chosen = [r for r in rows if r["split"] == "validation"][:2]
    chosen += [r for r in rows if r["split"] == "train"][: n - len(chosen)]
    for row in chosen:
        target = dest / row["midi_filename"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample / row["midi_filename"], target)
    write_csv(dest / "maestro-v2.0.0.csv", columns, chosen)
    return dest, columns, chosen


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_half_copied_maestro_folder_loads_what_is_there(maestro_sample, tmp_path, capsys):
    root, _, rows = maestro_copy(maestro_sample, tmp_path / "maestro-v2.0.0")
    gone = [rows[1]["midi_filename"], rows[4]["midi_filename"]]
    for name in gone:
        (root / name).unlink()
    name = f"local:{root}"
    files = datasets.download(name, progress=False)
    assert sorted(f.name for f in files) == sorted(r["midi_filename"] for r in rows
                                                   if r["midi_filename"] not in gone)
    assert files.counts()["test"] == 0  # a copy without a test split is a copy like any other
    reasons = dict(files.skipped)
    assert sorted(reasons) == sorted(gone)
    assert all("listed in maestro-v2.0.0.csv but missing" in reasons[n] for n in gone)

    # the rest load, with the pedal (a MAESTRO copy), and the report says what is missing
    data = tmp_path / "data"
    corpus = notes.extract_corpus(name, data_dir=data, progress=False)
    assert len(corpus) == len(rows) - 2 and corpus.sustain
    assert dict(corpus.skipped) == reasons
    cache = notes.cache_path(name, data)
    manifest = json.loads(cache.with_name(cache.stem + ".manifest.json").read_text())
    assert {s["name"] for s in manifest["skipped"]} == set(gone)
    assert len(datasets.download(name, max_files=3, progress=False)) == 3

    # a file copied in later: the cache is out of date, the corpus complete again
    shutil.copyfile(maestro_sample / gone[0], root / gone[0])
    capsys.readouterr()
    again = notes.load_corpus(name, data_dir=data)
    assert "out of date" in capsys.readouterr().out
    assert len(again) == len(rows) - 1 and [n for n, _ in again.skipped] == [gone[1]]


def test_maestro_csv_columns_extra_and_missing(maestro_sample, tmp_path):
    root, columns, rows = maestro_copy(maestro_sample, tmp_path / "copy", n=3)
    csv_path = root / "maestro-v2.0.0.csv"
    # extra and reordered columns: read by name, the rest ignored
    shuffled = ["notes", *reversed(columns), "rating"]
    write_csv(csv_path, shuffled, [dict(r, notes="x, y", rating="5") for r in rows])
    files = datasets.download(f"local:{root}", progress=False)
    assert len(files) == 3 and not files.skipped
    by_name = {f.name: f for f in files}
    for row in rows:
        f = by_name[row["midi_filename"]]
        assert f.split == row["split"]
        assert f.metadata["canonical_composer"] == f.metadata["composer"] == \
            row["canonical_composer"]
        assert f.metadata["canonical_title"] == row["canonical_title"]
        assert f.metadata["year"] == row["year"]
    # a required column missing: one line that names it
    for missing in ("split", "midi_filename"):
        write_csv(csv_path, [c for c in columns if c != missing], rows)
        with pytest.raises(MusicRNNError, match=f"has no {missing} column") as info:
            datasets.download(f"local:{root}", progress=False)
        assert "\n" not in str(info.value) and "restore the official CSV" in str(info.value)


def test_maestro_csv_odd_rows_are_reported(maestro_sample, tmp_path):
    """Unknown splits are skipped with the reason (the rest load); so are repeated rows and rows
    without a file; spaces and capitals in a split name do no harm."""
    root, columns, rows = maestro_copy(maestro_sample, tmp_path / "copy", n=5)
    odd = [dict(rows[0], split="dev"), dict(rows[1], split=" Train "), *rows[2:],
           dict(rows[3], year="1999"), dict(rows[4], midi_filename="")]
    write_csv(root / "maestro-v2.0.0.csv", columns, odd)
    with open(root / "maestro-v2.0.0.csv", "a", encoding="utf-8") as handle:
        handle.write("\n,,\n")  # blank rows: nothing to report
    extra = root / "mine" / "extra.mid"  # a file the CSV does not name: split by file
    extra.parent.mkdir()
    shutil.copyfile(root / rows[2]["midi_filename"], extra)
    files = datasets.download(f"local:{root}", progress=False)
    by_name = {f.name: f for f in files}
    assert rows[0]["midi_filename"] not in by_name  # not even as a file the CSV does not name
    assert by_name[rows[1]["midi_filename"]].split == "train"
    assert by_name[rows[3]["midi_filename"]].metadata["year"] == rows[3]["year"]  # first row
    assert "mine/extra.mid" in by_name and len(files) == 5
    reasons = dict(files.skipped)
    assert len(reasons) == 3
    assert re.search(r"unknown split 'dev' in maestro-v2.0.0.csv row 1 \(expected train, "
                     r"validation, test\)", reasons[rows[0]["midi_filename"]])
    assert "listed twice" in reasons[f"{rows[3]['midi_filename']} (maestro-v2.0.0.csv row 6)"]
    assert reasons["maestro-v2.0.0.csv row 7"] == "the row names no midi_filename"
    corpus = notes.extract_corpus(f"local:{root}", data_dir=tmp_path / "data", progress=False)
    assert len(corpus) == 5 and dict(corpus.skipped) == reasons


# -- MAESTRO over HTTP ----------------------------------------------------------------------------


def test_download_checks_extracts_and_reads_the_csv(server, maestro_zip, registered, tmp_path,
                                                    no_mirror):
    server.routes["/full/maestro-v2.0.0-midi.zip"] = {"body": maestro_zip}
    name = registered("maestro-loopback", server.url("/full/maestro-v2.0.0-midi.zip"), maestro_zip)
    files = datasets.download(name, tmp_path, progress=False)
    assert files.root == tmp_path / "raw" / "maestro-v2.0.0"
    assert len(files) == 60 and files.counts() == {"train": 48, "validation": 12, "test": 0}
    assert (tmp_path / "raw" / "maestro-v2.0.0-midi.zip").read_bytes() == maestro_zip
    assert "Frédéric Chopin" in {f.metadata["composer"] for f in files}
    assert _leftovers(tmp_path) == []
    served = len(server.requests)
    again = datasets.download(name, tmp_path, max_files=10, progress=False)
    assert len(server.requests) == served  # extracted already: no network
    assert len(again) == 10 and {f.split for f in again} == {"train", "validation"}


def test_download_cut_half_way_resumes_with_range(server, maestro_zip, registered, tmp_path,
                                                  no_mirror):
    cut = len(maestro_zip) // 2
    path = "/cut/maestro-v2.0.0-midi.zip"
    server.routes[path] = {"body": maestro_zip, "drops": 1, "cut": cut}
    name = registered("maestro-cut", server.url(path), maestro_zip)
    server.requests.clear()
    files = datasets.download(name, tmp_path, progress=False)
    assert len(files) == 60
    assert server.requests == [(path, None), (path, f"bytes={cut}-")]
    assert (tmp_path / "raw" / "maestro-v2.0.0-midi.zip").read_bytes() == maestro_zip


def test_download_that_keeps_breaking_resumes_on_the_next_call(server, maestro_zip, registered,
                                                               tmp_path, no_mirror):
    cut = len(maestro_zip) // 5
    path = "/flaky/maestro-v2.0.0-midi.zip"
    server.routes[path] = {"body": maestro_zip, "drops": 3, "cut": cut}
    name = registered("maestro-flaky", server.url(path), maestro_zip)
    with pytest.raises(MusicRNNError, match="run the same command again to resume"):
        datasets.download(name, tmp_path, progress=False)
    part = tmp_path / "raw" / "maestro-v2.0.0-midi.zip.part"
    assert part.stat().st_size == 3 * cut
    assert not (tmp_path / "raw" / "maestro-v2.0.0-midi.zip").exists()
    assert not (tmp_path / "raw" / "maestro-v2.0.0").exists()
    server.requests.clear()
    assert len(datasets.download(name, tmp_path, progress=False)) == 60
    assert server.requests == [(path, f"bytes={3 * cut}-")]
    assert not part.exists()


def test_corrupt_archive_is_refused_and_removed(server, maestro_zip, registered, tmp_path,
                                                no_mirror):
    # Damage a member's compressed bytes, and record the damaged file's checksum: the zip CRC
    # test is what must catch it.
    damaged = bytearray(maestro_zip)
    offset = maestro_zip.index(b"MThd") if b"MThd" in maestro_zip else len(maestro_zip) // 3
    for i in range(offset + 200, offset + 264):
        damaged[i] ^= 0xFF
    damaged = bytes(damaged)
    server.routes["/bad/maestro-v2.0.0-midi.zip"] = {"body": damaged}
    name = registered("maestro-bad", server.url("/bad/maestro-v2.0.0-midi.zip"), damaged)
    with pytest.raises(MusicRNNError, match=r"corrupt|not a readable zip|CRC"):
        datasets.download(name, tmp_path, progress=False)
    assert list((tmp_path / "raw").iterdir()) == []
    # Bytes that differ from the recorded SHA-256 are refused the same way.
    other = registered("maestro-sha", server.url("/full-sha/maestro-v2.0.0-midi.zip"), maestro_zip,
                       sha256="0" * 64)
    server.routes["/full-sha/maestro-v2.0.0-midi.zip"] = {"body": maestro_zip}
    with pytest.raises(MusicRNNError, match="SHA-256"):
        datasets.download(other, tmp_path, progress=False)
    assert list((tmp_path / "raw").iterdir()) == []


def test_truncated_archive_is_refused(server, maestro_zip, registered, tmp_path, no_mirror):
    short = maestro_zip[: len(maestro_zip) - 1000]
    server.routes["/short/maestro-v2.0.0-midi.zip"] = {"body": short}
    name = registered("maestro-short", server.url("/short/maestro-v2.0.0-midi.zip"), maestro_zip)
    with pytest.raises(MusicRNNError, match="bytes where"):
        datasets.download(name, tmp_path, progress=False)
    assert list((tmp_path / "raw").iterdir()) == []


def _zip_with(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("maestro-v2.0.0/maestro-v2.0.0.csv", "midi_filename,split\n")
        for info, data in entries:
            z.writestr(info, data)
    return buffer.getvalue()


def test_archive_escaping_its_folder_is_refused(server, registered, tmp_path, no_mirror):
    evil = _zip_with([("../evil.mid", b"MThd")])
    server.routes["/evil/maestro-v2.0.0-midi.zip"] = {"body": evil}
    data = tmp_path / "data"
    name = registered("maestro-evil", server.url("/evil/maestro-v2.0.0-midi.zip"), evil)
    with pytest.raises(MusicRNNError, match="refusing to extract.*outside"):
        datasets.download(name, data, progress=False)
    assert not list(tmp_path.rglob("evil.mid"))
    assert not (data / "raw" / "maestro-v2.0.0").exists() and _leftovers(data) == []


@pytest.mark.parametrize("member", ["/tmp/absolute.mid", "C:/windows.mid",
                                    "maestro-v2.0.0/../../up.mid", "link"])
def test_safe_extract_refuses_unsafe_members(tmp_path, member):
    info = zipfile.ZipInfo(member)
    if member == "link":
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_with([(info, b"/etc/passwd" if member == "link" else b"MThd")]))
    target = tmp_path / "out"
    with pytest.raises(MusicRNNError, match="refusing to extract"):
        datasets.safe_extract(archive, target)
    assert not target.exists()


@pytest.mark.parametrize("status", [404, 500])
def test_http_errors_are_reported(server, maestro_zip, registered, tmp_path, no_mirror, status):
    server.routes[f"/status/{status}.zip"] = status
    name = registered(f"maestro-{status}", server.url(f"/status/{status}.zip"), maestro_zip)
    with pytest.raises(MusicRNNError, match=f"HTTP {status}"):
        datasets.download(name, tmp_path, progress=False)
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []


def test_no_network_gives_one_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.MAESTRO_URL_ENV, f"http://127.0.0.1:{_closed_port()}/maestro")
    with pytest.raises(MusicRNNError) as info:
        datasets.download("maestro-v2", tmp_path, progress=False)
    message = str(info.value)
    assert "cannot reach" in message and "\n" not in message
    for hint in ("bach-chorales", "essen-folksongs", "local:", "maestro-v2.0.0-midi.zip"):
        assert hint in message
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []


def test_an_extracted_copy_needs_no_network(monkeypatch, maestro_sample, tmp_path):
    monkeypatch.setenv(datasets.MAESTRO_URL_ENV, f"http://127.0.0.1:{_closed_port()}/maestro")
    files = datasets.download("maestro-v2", maestro_sample.parent, progress=False)
    assert len(files) == 60 and files.root == maestro_sample
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "maestro-v2.0.0").symlink_to(maestro_sample, target_is_directory=True)
    assert len(datasets.download("maestro-v2", tmp_path, max_files=5, progress=False)) == 5


# -- process pools and scripts without a main guard (issue 11) -------------------------------------


def test_main_guard_lines():
    source = (
        "import sys\n"                                 # 1
        "if __name__ == '__main__':\n"                 # 2
        "    print('a')\n"                             # 3
        "    print('b')\n"                             # 4
        "else:\n"                                      # 5
        "    print('imported')\n"                      # 6
        'if "__main__" == __name__: main()\n'           # 7
        "def f():\n"                                   # 8
        "    if __name__ == '__main__':\n"             # 9: not at the top level
        "        pass\n"                               # 10
        "if __name__ != '__main__':\n"                 # 11: the opposite
        "    pass\n"                                   # 12
    )
    assert datasets.main_guard_lines(source) == [(3, 4), (7, 7)]
    assert datasets.main_guard_lines("import musicrnn\n") == []


def test_process_pool_refusal_knows_where_the_call_comes_from(tmp_path):
    """Refused from a script's top level outside the guard (as a file or with -m); allowed
    inside the guard, under `python -c`, and here (pytest's main module is a package's)."""
    (tmp_path / "probe.py").write_text(
        "from musicrnn.datasets import process_pool_refusal\n"
        "print('TOP', repr(process_pool_refusal()))\n"
        "def nested():\n"
        "    return process_pool_refusal()\n"
        "if __name__ == '__main__':\n"
        "    print('GUARDED', repr(nested()))\n"
    )
    python = sys.executable
    for args in ([python, "probe.py"], [python, "-m", "probe"]):
        out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                             check=True).stdout.splitlines()
        assert out[0].startswith("TOP '") and "(line 2) without a main guard" in out[0], args
        assert 'if __name__ == "__main__":' in out[0]
        assert out[1] == "GUARDED ''", args
    out = subprocess.run([python, "-c", "from musicrnn.datasets import process_pool_refusal; "
                                        "print(repr(process_pool_refusal()))"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "''"
    assert datasets.process_pool_refusal() == ""


def _every_core() -> None:
    """In a child process: run on every core of the machine, whatever the parent was held to."""
    try:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except (AttributeError, OSError):  # no affinity here, or a CPU set that forbids it
        pass


def test_script_without_main_guard_loads_the_chorales(tmp_path, chorale_data, chorale_plan):
    """A plain script, no `if __name__ == "__main__":`, on a cold data folder: writing the
    chorales and parsing them want process pools, whose spawned workers would run the script
    again. It runs in one process instead, says so in one line, and loads the corpus."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: no pool would start, so there is no guard to meet")
    data = tmp_path / "data"
    catalogue = data / "raw" / "bach-chorales" / ".catalogue.json"  # skip the corpus scan only
    catalogue.parent.mkdir(parents=True)
    shutil.copyfile(chorale_data / "raw" / "bach-chorales" / ".catalogue.json", catalogue)
    script = tmp_path / "plain.py"
    script.write_text(
        "import sys\n"
        "from musicrnn import notes\n"
        "print('START', flush=True)\n"
        "corpus = notes.load_corpus('bach-chorales', data_dir=sys.argv[1], max_files=10)\n"
        "print('LOADED', len(corpus), corpus.n_notes, flush=True)\n"
        "again = notes.extract_corpus('bach-chorales', data_dir=sys.argv[1], max_files=10,\n"
        "                             workers=2, force=True, progress=False)\n"
        "print('AGAIN', len(again), again.n_notes, flush=True)\n"
    )
    result = subprocess.run([sys.executable, str(script), str(data)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300,
                            preexec_fn=_every_core)  # where a pool pays (make test pins a core)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output and "BrokenProcessPool" not in output
    lines = result.stdout.splitlines()
    assert lines.count("START") == 1  # no worker ran the script again
    loaded = next(line for line in lines if line.startswith("LOADED")).split()
    assert loaded[1] == "10" and int(loaded[2]) > 1000
    assert next(line for line in lines if line.startswith("AGAIN")).split()[1:] == loaded[1:]
    notes_said = [line for line in lines if "in one process: the script plain.py" in line]
    assert [line.split(":")[0] for line in notes_said] == [
        "Writing bach-chorales in one process", "Parsing in one process"]
    assert all("(line 4)" in notes_said[0] and "(line 6)" in notes_said[1]
               and "without a main guard" in line for line in notes_said)
    assert len(list((data / "raw" / "bach-chorales").glob("*.mid"))) == 10


def test_workers_that_run_the_script_again_leave_the_work_to_the_parent(maestro_sample, tmp_path):
    """A script that starts a pool inside its guard but extracts at its top level too: every
    spawned worker runs that top level again while it starts. It stops there with one line
    instead of extracting (or starting pools of its own); the parent, its pool broken, parses in
    one process and finishes."""
    songs = tmp_path / "songs"
    songs.mkdir()
    for path in sorted(maestro_sample.rglob("*.midi"), key=lambda p: p.stat().st_size)[:3]:
        shutil.copyfile(path, songs / path.name)
    (tmp_path / "half.py").write_text(
        "import glob, sys\n"
        "from musicrnn import notes\n"
        "print('START', flush=True)\n"
        "notes.extract_corpus(f'local:{sys.argv[1]}', data_dir=sys.argv[2], force=True,\n"
        "                     progress=False)\n"
        "if __name__ == '__main__':\n"
        "    paths = sorted(glob.glob(sys.argv[1] + '/*.midi'))\n"
        "    corpus = notes.extract_files(paths, 'songs', None, workers=2, progress=False)\n"
        "    print('DONE', len(corpus), flush=True)\n"
    )
    result = subprocess.run([sys.executable, "half.py", str(songs), str(tmp_path / "data")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "DONE 3"
    assert result.stdout.count("START") >= 2  # the workers did run the script again ...
    assert "reached the extraction of local:" in result.stderr  # ... and stopped there
    assert "The process pool failed (BrokenProcessPool" in result.stdout


# -- the command line -----------------------------------------------------------------------------


def _cli(*args: str, env: dict | None = None, prefix: tuple[str, ...] = ()):
    return subprocess.run([*prefix, str(MUSICRNN), "download", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)


@pytest.mark.parametrize("args", [
    ("no-such-dataset",),
    ("local:/no/such/folder",),
    ("bach-chorales", "--max-files", "0"),
    ("bach-chorales+no-such-dataset",),
])
def test_cli_bad_input_is_one_line(args, tmp_path):
    result = _cli(*args, "--data-dir", str(tmp_path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("musicrnn download: error:"), result.stderr
    assert "Traceback" not in result.stderr


def test_cli_without_network(tmp_path):
    result = _cli("maestro-v3", "--data-dir", str(tmp_path),
                  env={datasets.MAESTRO_URL_ENV: f"http://127.0.0.1:{_closed_port()}"})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "bach-chorales" in result.stderr and "local:" in result.stderr


def test_cli_lists_a_local_folder(maestro_sample):
    result = _cli(f"local:{maestro_sample}", "--max-files", "6")
    assert result.returncode == 0, result.stderr
    assert "6 MIDI files (a subset of 60)" in result.stdout


def test_cli_unreadable_folder(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="musicrnn-unreadable-"))
    try:
        locked = base / "locked"
        locked.mkdir()
        (locked / "a.mid").write_bytes(b"MThd")
        locked.chmod(0)
        prefix: tuple[str, ...] = ()
        if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv to drop CAP_DAC_* for the check")
            prefix = (setpriv, "--bounding-set", "-dac_override,-dac_read_search")
        result = _cli(f"local:{locked}", prefix=prefix)
        assert result.returncode == 2, result.stderr
        assert "cannot read the folder" in result.stderr and "permissions" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        (base / "locked").chmod(0o700)
        shutil.rmtree(base)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this system")
def test_pools_are_sized_by_the_cores_this_process_may_use():
    """A process held to one core (taskset, a container's CPU set, a SLURM job) writes and
    extracts in itself: a pool of one process per machine core would only pay its start-up."""
    from musicrnn import paths

    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})
        assert paths.usable_cpus() == 1
        assert datasets._writer_processes(40, None) == 1
        assert notes._auto_workers(10**9) == 1
        assert datasets._writer_processes(40, 3) == 3  # asked for: as asked
    finally:
        os.sched_setaffinity(0, allowed)
    assert paths.usable_cpus() == len(allowed)
    assert datasets._writer_processes(9, 4) == 1  # too few pieces for a pool
    assert datasets._writer_processes(40, None) == min(len(allowed), 40)

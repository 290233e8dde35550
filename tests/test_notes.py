"""musicrnn.notes: MIDI <-> note tables, checked against pretty_midi on real files, and corpora.

Real MIDI only: the shared MAESTRO performances, music21's Bach chorales written out as MIDI, and
small files written here with mido to pin down each MIDI edge case.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import mido
import numpy as np
import pandas as pd
import pretty_midi
import pytest

from musicrnn import datasets, notes
from musicrnn.cli import main as cli_main
from musicrnn.datasets import DatasetFile
from musicrnn.errors import MusicRNNError
from musicrnn.notes import NOTE_COLUMNS, NoteCorpus, extract_files, midi_to_notes, notes_to_midi

# -- helpers ---------------------------------------------------------------------------------------


def pretty_midi_table(path: Path) -> np.ndarray:
    """The reference: every non-drum note pretty_midi reads, as sorted (start, end, pitch, vel)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        midi = pretty_midi.PrettyMIDI(str(path))
    rows = [(n.start, n.end, n.pitch, n.velocity)
            for inst in midi.instruments if not inst.is_drum for n in inst.notes]
    return np.array(sorted(rows), dtype=np.float64).reshape(-1, 4)


def our_table(frame: pd.DataFrame) -> np.ndarray:
    rows = np.stack([frame[c].to_numpy(np.float64) for c in ("start", "end", "pitch", "velocity")],
                    axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def assert_valid_table(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(NOTE_COLUMNS)
    start, pitch = frame["start"].to_numpy(), frame["pitch"].to_numpy()
    # sorted by start, then pitch
    assert np.all(np.diff(start) >= 0)
    same = np.diff(start) == 0
    assert np.all(np.diff(pitch)[same] >= 0)
    assert frame["step"].iloc[0] == 0.0
    np.testing.assert_array_equal(frame["step"].to_numpy()[1:], np.diff(start))
    np.testing.assert_array_equal(frame["duration"], frame["end"] - frame["start"])
    assert (frame["duration"] > 0).all()
    assert frame["pitch"].between(0, 127).all() and frame["velocity"].between(1, 127).all()


def write_midi(path: Path, tracks: list[list[tuple[int, mido.Message]]], tpq: int = 480) -> Path:
    """A type-1 MIDI file from per-track lists of (absolute tick, message)."""
    mf = mido.MidiFile(ticks_per_beat=tpq, type=1)
    for events in tracks:
        track = mido.MidiTrack()
        last = 0
        for tick, msg in events:
            track.append(msg.copy(time=tick - last))
            last = tick
        mf.tracks.append(track)
    mf.save(str(path))
    return path


def on(pitch: int, velocity: int = 64, channel: int = 0) -> mido.Message:
    return mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)


def off(pitch: int, channel: int = 0) -> mido.Message:
    return mido.Message("note_off", note=pitch, velocity=0, channel=channel)


def tempo(us_per_beat: int) -> mido.MetaMessage:
    return mido.MetaMessage("set_tempo", tempo=us_per_beat)


def program(number: int, channel: int = 0) -> mido.Message:
    return mido.Message("program_change", program=number, channel=channel)


def pedal(value: int, channel: int = 0) -> mido.Message:
    """A sustain-pedal control change (CC 64): 64 or more is down."""
    return mido.Message("control_change", control=64, value=value, channel=channel)


MUSICRNN = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "musicrnn"
if not MUSICRNN.exists():  # an installed environment other than the project's .venv
    MUSICRNN = Path(sys.executable).with_name("musicrnn")

TICK = 60.0 / (120.0 * 480)  # one tick of notes_to_midi's default grid, in seconds
BEAT_TICKS = 480  # ticks per beat of write_midi's files: 0.5 s at the default 120 bpm


@pytest.fixture(scope="module")
def chorales(tmp_path_factory) -> list[Path]:
    """Bach chorales from music21's corpus, written to MIDI by music21 (spread over the corpus)."""
    from music21 import corpus

    folder = tmp_path_factory.mktemp("chorales")
    sources = sorted(p for p in corpus.getComposer("bach") if str(p).endswith(".mxl"))
    out = []
    for source in sources[:: max(1, len(sources) // 6)][:6]:
        path = folder / f"{Path(source).stem}.mid"
        corpus.parse(source).write("midi", fp=str(path))
        out.append(path)
    return out


def maestro_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.midi"))


# -- midi_to_notes equals pretty_midi ----------------------------------------------------------------


def test_maestro_tables_equal_pretty_midi(maestro_sample):
    files = maestro_files(maestro_sample)
    assert len(files) == 60
    total = 0
    for path in files[::3]:  # 20 performances of every year: pretty_midi takes 0.3 s a file
        ours = midi_to_notes(path)
        assert_valid_table(ours)
        ref = pretty_midi_table(path)
        got = our_table(ours)
        assert got.shape == ref.shape, path.name
        np.testing.assert_array_equal(got[:, 2:], ref[:, 2:], err_msg=path.name)  # pitch, vel
        # Same float64 formula as pretty_midi: equal far below one tick (bit-equal today).
        np.testing.assert_allclose(got[:, :2], ref[:, :2], rtol=0, atol=1e-9, err_msg=path.name)
        total += len(ours)
    assert total > 40_000


def test_chorale_tables_equal_pretty_midi(chorales):
    for path in chorales:
        ours = midi_to_notes(path)
        assert_valid_table(ours)
        ref = pretty_midi_table(path)
        got = our_table(ours)
        assert got.shape == ref.shape and len(got) > 50, path.name
        np.testing.assert_array_equal(got[:, 2:], ref[:, 2:], err_msg=path.name)
        np.testing.assert_allclose(got[:, :2], ref[:, :2], rtol=0, atol=1e-9, err_msg=path.name)
        # four voices on four tracks: polyphony survives (chords share a start, step 0)
        assert (ours["step"] == 0).sum() > len(ours) // 3


@pytest.mark.parametrize("case", ["overlap", "triple", "zero_length", "restrike_off_first",
                                  "restrike_on_first", "restrike_released_once", "unclosed",
                                  "tempo_changes", "channels", "velocity_zero_off"])
def test_midi_edge_cases_match_pretty_midi(tmp_path, case):
    """Where symusic and pretty_midi pair notes differently, we follow MIDI (and pretty_midi)."""
    tracks = {
        # a second note-on of a sounding key; the first note-off releases both
        "overlap": [[(0, on(60, 10)), (240, on(60, 20)), (480, off(60)), (960, off(60))]],
        "triple": [[(0, on(60)), (100, on(60)), (200, on(60)), (300, off(60)), (400, off(60)),
                    (500, off(60)), (500, on(62)), (700, off(62))]],
        # note-off at its own note-on: silent, dropped; the other note stays
        "zero_length": [[(0, on(60)), (0, off(60)), (0, on(62)), (480, off(62))]],
        "restrike_off_first": [[(0, on(60, 10)), (480, off(60)), (480, on(60, 20)),
                                (960, off(60))]],
        "restrike_on_first": [[(0, on(60, 10)), (480, on(60, 20)), (480, off(60)),
                               (960, off(60))]],
        # struck again while held, released once (ending both), struck a third time: symusic's
        # first-in first-out pairing gives the last note-off to the second note and drops the
        # third; by MIDI's rule there are three notes (one MAESTRO performance does this)
        "restrike_released_once": [[(0, on(60, 10)), (240, on(60, 20)), (480, off(60)),
                                    (600, on(60, 30)), (700, off(60))]],
        # a note never switched off is dropped
        "unclosed": [[(0, on(60)), (480, on(62)), (960, off(62))]],
        "tempo_changes": [[(0, tempo(400_000)), (0, on(60)), (480, tempo(1_000_000)),
                           (960, off(60)), (960, on(62)), (1000, tempo(300_000)),
                           (1440, off(62))]],
        # three channels on one track, one of them drums (channel 10 = index 9): drums left out
        "channels": [[(0, on(60, channel=0)), (0, on(64, channel=1)), (0, on(36, channel=9)),
                      (480, off(60, channel=0)), (480, off(64, channel=1)),
                      (480, off(36, channel=9))]],
        "velocity_zero_off": [[(0, on(60)), (480, on(60, 0)), (480, on(67)), (960, on(67, 0))]],
    }[case]
    path = write_midi(tmp_path / f"{case}.mid", tracks)
    ours = midi_to_notes(path)
    assert_valid_table(ours)
    np.testing.assert_allclose(our_table(ours), pretty_midi_table(path), rtol=0, atol=1e-12)
    if case == "overlap":  # what symusic alone would say: the second note ends at 1.0 s
        assert ours["end"].tolist() == [0.5, 0.5]
    if case == "channels":
        assert sorted(ours["pitch"]) == [60, 64]
    if case == "restrike_released_once":
        assert ours["velocity"].tolist() == [10, 20, 30]


def test_tempo_on_a_later_track_is_honoured(tmp_path):
    """A tempo event outside track 0: players follow it; pretty_midi ignores it (and warns)."""
    path = write_midi(tmp_path / "tempo_track1.mid", [
        [(0, tempo(500_000))],
        [(0, on(60)), (480, tempo(1_000_000)), (960, off(60)), (960, on(62)), (1440, off(62))],
    ])
    ours = midi_to_notes(path)
    # 480 ticks at 0.5 s/beat, then 480 at 1.0 s/beat: the second note starts at 1.5 s
    np.testing.assert_allclose(ours["start"], [0.0, 1.5])
    np.testing.assert_allclose(ours["end"], [1.5, 2.5])
    with pytest.warns(RuntimeWarning, match="non-zero tracks"):
        reference = pretty_midi.PrettyMIDI(str(path))
    assert reference.instruments[0].notes[1].start == pytest.approx(1.0)  # the documented gap


def test_programs_select_instruments(tmp_path):
    path = write_midi(tmp_path / "two.mid", [
        [(0, tempo(500_000))],
        [(0, program(0)), (0, on(60)), (480, off(60))],
        [(0, program(40, channel=1)), (0, on(72, channel=1)), (240, on(74, channel=1)),
         (480, off(72, channel=1)), (960, off(74, channel=1))],
    ])
    assert midi_to_notes(path)["pitch"].tolist() == [60, 72, 74]
    assert midi_to_notes(path, programs=[40])["pitch"].tolist() == [72, 74]
    assert midi_to_notes(path, programs=[0])["pitch"].tolist() == [60]
    with pytest.raises(MusicRNNError, match=r"no notes for programs \[99\].*programs \[0, 40\]"):
        midi_to_notes(path, programs=[99])


def test_program_in_force_at_the_note_on(tmp_path):
    path = write_midi(tmp_path / "prog.mid", [[
        (0, program(5)), (0, on(60)), (240, program(40)), (480, off(60)), (480, on(62)),
        (960, off(62))]])
    assert midi_to_notes(path, programs=[5])["pitch"].tolist() == [60]
    assert midi_to_notes(path, programs=[40])["pitch"].tolist() == [62]


# -- the sustain pedal ----------------------------------------------------------------------------


def seconds(ticks: int) -> float:
    return ticks * 0.5 / BEAT_TICKS


def spans(table: pd.DataFrame) -> list[tuple[int, float, float]]:
    """(pitch, start, end) of every note, in table order."""
    return [(int(p), float(a), float(b))
            for p, a, b in zip(table["pitch"], table["start"], table["end"])]


# name -> (events on one track, (pitch, start tick, end tick) with the pedal applied)
PEDAL_CASES = {
    # released under the pedal: sounds to the lift; a value of 64 is down, 63 is up
    "released_under_pedal": (
        [(0, pedal(64)), (0, on(60)), (240, off(60)), (480, on(64)), (600, off(64)),
         (960, pedal(63)), (1200, on(67)), (1440, off(67))],
        [(60, 0, 960), (64, 480, 960), (67, 1200, 1440)]),
    # held through the lift: the pedal changes nothing; pressed while held, released under it:
    # sustained
    "held_through_the_lift": (
        [(0, pedal(127)), (0, on(60)), (480, pedal(0)), (720, off(60)), (800, on(62)),
         (900, pedal(100)), (960, off(62)), (1500, pedal(20))],
        [(60, 0, 720), (62, 800, 1500)]),
    # struck again under the pedal: the first note ends at the new strike (also when the
    # strike comes at the very tick of the key-up)
    "restruck_under_pedal": (
        [(0, pedal(127)), (0, on(60)), (100, off(60)), (480, on(60)), (600, off(60)),
         (600, on(60)), (700, off(60)), (1440, pedal(0))],
        [(60, 0, 480), (60, 480, 600), (60, 600, 1440)]),
    # a velocity-0 note-on is a note-off: the key goes up under the pedal
    "velocity_zero_off": (
        [(0, pedal(127)), (0, on(60, 80)), (240, on(60, 0)), (300, on(64, 90)),
         (360, on(64, 0)), (960, pedal(0))],
        [(60, 0, 960), (64, 300, 960)]),
    # struck again while still held: both notes end at the key's first key-up (MIDI), and the
    # pedal, down at that key-up, carries both to its lift
    "overlap_of_one_key": (
        [(0, on(60, 10)), (240, on(60, 20)), (300, pedal(127)), (480, off(60)), (720, off(60)),
         (1200, pedal(0))],
        [(60, 0, 1200), (60, 240, 1200)]),
    # ... and a strike of that key after the key-up ends both there
    "overlap_then_struck_again": (
        [(0, on(60, 10)), (240, on(60, 20)), (300, pedal(127)), (480, off(60)), (600, on(60)),
         (700, off(60)), (1200, pedal(0))],
        [(60, 0, 600), (60, 240, 600), (60, 600, 1200)]),
    # the pedal acts on its own channel only
    "per_channel": (
        [(0, pedal(127, channel=0)), (0, on(60, channel=0)), (0, on(72, channel=1)),
         (240, off(60, channel=0)), (240, off(72, channel=1)), (960, pedal(0, channel=0))],
        [(60, 0, 960), (72, 0, 240)]),
    # a pedal never lifted: to the file's last event
    "never_lifted": (
        [(0, pedal(127)), (0, on(60)), (240, off(60)), (480, on(62)), (720, off(62))],
        [(60, 0, 720), (62, 480, 720)]),
}


@pytest.mark.parametrize("case", list(PEDAL_CASES))
def test_sustain_pedal_on_constructed_files(tmp_path, case):
    events, expected = PEDAL_CASES[case]
    path = write_midi(tmp_path / f"{case}.mid", [events])
    key_up = midi_to_notes(path)
    sounding = midi_to_notes(path, sustain=True)
    assert_valid_table(sounding)
    want = sorted((p, seconds(a), seconds(b)) for p, a, b in expected)
    np.testing.assert_allclose(sorted(spans(sounding)), want, rtol=0, atol=1e-12)
    # the pedal changes durations only: same notes, same starts, never shorter
    for c in ("pitch", "start", "step", "velocity"):
        np.testing.assert_array_equal(sounding[c], key_up[c])
    assert (sounding["duration"] >= key_up["duration"]).all()
    # and without it the table is pretty_midi's, as always
    np.testing.assert_allclose(our_table(key_up), pretty_midi_table(path), rtol=0, atol=1e-12)
    if case == "velocity_zero_off":
        assert sounding["velocity"].tolist() == [80, 90]


def test_sustain_spans_of_a_constructed_file(tmp_path):
    path = write_midi(tmp_path / "spans.mid", [PEDAL_CASES["held_through_the_lift"][0]])
    np.testing.assert_allclose(notes.sustain_spans(path),
                               [[0.0, 0.5], [seconds(900), seconds(1500)]])
    path = write_midi(tmp_path / "none.mid", [[(0, on(60)), (480, off(60))]])
    assert notes.sustain_spans(path).shape == (0, 2)


def sustained_reference(path: Path) -> np.ndarray:
    """The documented pedal rule written out note by note on pretty_midi's reading: rows of
    (start, end, pitch, velocity), sorted."""
    import bisect

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        midi = pretty_midi.PrettyMIDI(str(path))
    instruments = [i for i in midi.instruments if not i.is_drum]
    events = {id(i): sorted(((c.time, c.value >= 64) for c in i.control_changes if c.number == 64),
                            key=lambda e: e[0]) for i in instruments}
    last = max([n.end for i in instruments for n in i.notes]
               + [t for e in events.values() for t, _ in e])
    rows = []
    for inst in instruments:
        pedal_events = events[id(inst)]
        times = [t for t, _ in pedal_events]
        next_lift, lift = [0.0] * len(pedal_events), last
        for k in range(len(pedal_events) - 1, -1, -1):  # the first lift after event k
            next_lift[k] = lift
            if not pedal_events[k][1]:
                lift = pedal_events[k][0]
        strikes: dict[int, list[float]] = {}
        for n in inst.notes:
            strikes.setdefault(n.pitch, []).append(n.start)
        for s in strikes.values():
            s.sort()
        for n in inst.notes:
            end = n.end
            k = bisect.bisect_right(times, n.end) - 1
            if k >= 0 and pedal_events[k][1]:  # the key goes up under the pedal
                later = strikes[n.pitch]
                j = bisect.bisect_left(later, n.end)
                restrike = later[j] if j < len(later) else last
                end = max(n.end, min(next_lift[k], restrike))
            rows.append((n.start, end, n.pitch, n.velocity))
    return np.array(sorted(rows), dtype=np.float64)


def test_sustain_on_real_maestro_performances(maestro_sample):
    files = maestro_files(maestro_sample)
    longer, total = 0, 0
    for path in files:
        key_up, sounding = midi_to_notes(path), midi_to_notes(path, sustain=True)
        assert_valid_table(sounding)
        for c in ("pitch", "start", "velocity"):
            np.testing.assert_array_equal(sounding[c], key_up[c], err_msg=path.name)
        assert (sounding["duration"] >= key_up["duration"]).all(), path.name
        longer += int((sounding["duration"] > key_up["duration"]).sum())
        total += len(key_up)
    assert longer > 0.4 * total  # pianists pedal: many notes sound longer than their key is held
    # the rule, note by note, on another reader's notes and pedal events, gives the same table
    small = min(files, key=lambda p: p.stat().st_size)
    assert len(notes.sustain_spans(small)) > 5
    np.testing.assert_allclose(our_table(midi_to_notes(small, sustain=True)),
                               sustained_reference(small), rtol=0, atol=1e-9)


# -- bad input: a clear MusicRNNError each -----------------------------------------------------------


def bad_files(folder: Path, maestro_bytes: bytes | None = None) -> dict[str, tuple[Path, str]]:
    """The bad-input catalogue: file -> (path, what the message must say)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str]] = {}
    (folder / "empty.mid").write_bytes(b"")
    out["zero-length"] = (folder / "empty.mid", r"is empty \(0 bytes\)")
    (folder / "readme.mid").write_text("These are not the notes you are looking for.\n" * 5)
    out["text renamed .mid"] = (folder / "readme.mid", "is not a MIDI file.*text")
    good = write_midi(folder / "_good.mid", [[(0, on(60)), (480, off(60)), (480, on(62)),
                                              (960, off(62))]]).read_bytes()
    (folder / "truncated.mid").write_bytes(good[:30])
    out["corrupt bytes (truncated)"] = (folder / "truncated.mid", "is a corrupt MIDI file")
    rng = np.random.default_rng(0)
    garbage = good[:22] + rng.integers(128, 256, 400, dtype=np.uint8).tobytes()
    (folder / "garbage.mid").write_bytes(garbage)
    out["corrupt bytes (garbage)"] = (folder / "garbage.mid", "is a corrupt MIDI file")
    (folder / "_good.mid").unlink()
    write_midi(folder / "drums.mid", [[(0, on(36, channel=9)), (240, off(36, channel=9)),
                                       (240, on(38, channel=9)), (480, off(38, channel=9))]])
    out["drum-only"] = (folder / "drums.mid", "only drum notes")
    write_midi(folder / "silent.mid", [[(0, tempo(500_000)), (0, program(3)),
                                        (480, mido.Message("control_change", control=64,
                                                           value=127))]])
    out["no notes"] = (folder / "silent.mid", "holds no notes")
    (folder / "folder.mid").mkdir()
    out["a folder"] = (folder / "folder.mid", "is a folder, not a MIDI file")
    out["missing"] = (folder / "missing.mid", "no MIDI file at")
    return out


def test_bad_files_raise_clear_errors(tmp_path):
    for what, (path, message) in bad_files(tmp_path).items():
        with pytest.raises(MusicRNNError, match=message) as info:
            midi_to_notes(path)
        assert str(path) in str(info.value), what
        assert "\n" not in str(info.value), what


def test_unknown_dataset_name_is_a_clear_error(tmp_path):
    with pytest.raises(MusicRNNError, match="no-such-dataset"):
        notes.extract_corpus("no-such-dataset", data_dir=tmp_path, progress=False)


# -- notes_to_midi: the inverse --------------------------------------------------------------------


def assert_same_notes(back: pd.DataFrame, table: pd.DataFrame, atol: float) -> None:
    """The same notes, start and end within ``atol`` (so durations within twice that): matched by
    key and start (chord order may change where two nearly simultaneous notes share a tick)."""
    assert len(back) == len(table)
    a = table.sort_values(["pitch", "start", "end"], kind="stable")
    b = back.sort_values(["pitch", "start", "end"], kind="stable")
    np.testing.assert_array_equal(b["pitch"], a["pitch"])
    np.testing.assert_array_equal(b["velocity"], a["velocity"])
    for col in ("start", "end"):
        np.testing.assert_allclose(b[col], a[col], rtol=0, atol=atol, err_msg=col)
    np.testing.assert_allclose(b["duration"], a["duration"], rtol=0, atol=2 * atol)


def test_round_trip_is_exact_to_the_tick(maestro_sample, chorales, tmp_path):
    # every note comes back within half a tick of the writer's grid (480 per beat at 120 bpm):
    # a MAESTRO performance, and chorales (10080 ticks per beat, four voices with unisons)
    for path in [maestro_files(maestro_sample)[7], *chorales]:
        table = midi_to_notes(path)
        midi = notes_to_midi(table, tmp_path / path.name)
        assert isinstance(midi, pretty_midi.PrettyMIDI)
        back = midi_to_notes(tmp_path / path.name)
        assert_valid_table(back)
        assert_same_notes(back, table, atol=TICK / 2 + 1e-9)
        # and a second trip, now on the grid, changes nothing
        notes_to_midi(back, tmp_path / "again.mid")
        pd.testing.assert_frame_equal(midi_to_notes(tmp_path / "again.mid"), back)


def test_raw_generated_notes_round_trip(tmp_path):
    """A model's raw (pitch, step, duration) output, overlaps of one key included, survives."""
    rng = np.random.default_rng(1)
    n = 400
    raw = np.stack([rng.integers(50, 60, n), rng.exponential(0.12, n) * (rng.random(n) > 0.3),
                    rng.exponential(0.4, n) + 0.01], axis=1)
    midi = notes_to_midi(raw, tmp_path / "gen.mid", velocity=90)
    assert len(midi.instruments) > 1  # ten keys, long notes: some key is struck while it sounds
    assert {i.program for i in midi.instruments} == {0}
    back = midi_to_notes(tmp_path / "gen.mid")
    assert len(back) == n and (back["velocity"] == 90).all()
    start = np.cumsum(raw[:, 1])
    want = np.stack([start, start + raw[:, 2], raw[:, 0]], axis=1)
    want = want[np.lexsort(want.T[::-1])]
    got = our_table(back)[:, :3]
    np.testing.assert_array_equal(got[:, 2], want[:, 2])
    np.testing.assert_allclose(got[:, :2], want[:, :2], rtol=0, atol=TICK / 2 + 1e-9)


def test_raw_notes_with_a_velocity_column_keep_each_velocity(tmp_path):
    """A velocity model's (pitch, step, duration, velocity) output is written at its own velocities;
    a fixed ``velocity=`` still overrides them."""
    raw = np.array([[60, 0.0, 0.5, 30], [64, 0.5, 0.5, 90], [67, 0.5, 0.5, 127]], dtype=float)
    notes_to_midi(raw, tmp_path / "v.mid")
    assert midi_to_notes(tmp_path / "v.mid")["velocity"].tolist() == [30, 90, 127]
    fixed = notes_to_midi(raw, velocity=64)
    assert [n.velocity for n in fixed.instruments[0].notes] == [64, 64, 64]
    with pytest.raises(MusicRNNError, match=r"\(n, 4\) with velocity"):
        notes_to_midi(np.zeros((2, 5)))


def test_overlapping_notes_of_one_key_go_to_another_track(tmp_path):
    table = pd.DataFrame({"pitch": [60, 60, 60, 62], "start": [0.0, 0.5, 0.625, 0.0],
                          "end": [1.0, 1.0, 1.25, 0.3], "velocity": [80, 81, 82, 83]})
    midi = notes_to_midi(table, tmp_path / "o.mid")
    assert [len(i.notes) for i in midi.instruments] == [2, 1, 1]
    back = midi_to_notes(tmp_path / "o.mid")
    assert back[["pitch", "start", "end", "velocity"]].values.tolist() == [
        [60, 0.0, 1.0, 80], [62, 0.0, 0.3, 83], [60, 0.5, 1.0, 81], [60, 0.625, 1.25, 82]]


def test_notes_to_midi_options_and_atomic_write(tmp_path):
    table = pd.DataFrame({"pitch": [60, 64], "step": [0.0, 0.5], "duration": [0.5, 0.0001]})
    out = tmp_path / "new" / "folder" / "x.mid"
    midi = notes_to_midi(table, out, program=40, resolution=220, tempo=90.0,
                         instrument_name="violin")
    assert midi.resolution == 220 and midi.instruments[0].program == 40
    assert midi.instruments[0].name == "violin"
    back = midi_to_notes(out)
    assert back["velocity"].tolist() == [100, 100]  # default without a velocity column
    tick = 60.0 / (90.0 * 220)
    assert back["duration"].iloc[1] == pytest.approx(tick)  # shorter than a tick: one tick
    assert [p.name for p in out.parent.iterdir()] == ["x.mid"]  # no temporary files left
    assert notes_to_midi(table).instruments[0].notes[0].pitch == 60  # nothing written: fine


@pytest.mark.parametrize("table, message", [
    (pd.DataFrame({"pitch": [60, 200], "step": [0, 1], "duration": [1, 1]}), "0-127"),
    (pd.DataFrame({"pitch": [60], "step": [np.nan], "duration": [1]}), "NaN"),
    (pd.DataFrame({"pitch": [60], "step": [-1.0], "duration": [1]}), "negative"),
    (pd.DataFrame({"pitch": [60], "start": [1.0], "end": [0.5]}), "ends before"),
    (pd.DataFrame({"pitch": [60], "step": [0.0]}), "needs 'start' and 'end'"),
    (np.zeros((4, 2)), "shape"),
    ("notes.mid", "expected a note table"),
])
def test_notes_to_midi_rejects_bad_tables(table, message):
    with pytest.raises(MusicRNNError, match=message):
        notes_to_midi(table)


def test_notes_to_midi_unwritable_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MusicRNNError, match="cannot write"):
        notes_to_midi(np.array([[60, 0, 1.0]]), blocker / "out.mid")


# -- corpora ----------------------------------------------------------------------------------------


def dataset_files(paths: list[Path], root: Path) -> list[DatasetFile]:
    splits = ["train", "validation", "test"]
    return [DatasetFile(p.resolve(), p.relative_to(root).as_posix(), splits[i % 3],
                        {"composer": f"composer {i % 2}", "title": p.stem})
            for i, p in enumerate(paths)]


@pytest.fixture()
def mixed_folder(tmp_path, chorales) -> tuple[Path, list[Path], dict]:
    """Good chorales beside the whole bad-input catalogue, in one folder."""
    root = tmp_path / "mixed"
    bad = bad_files(root / "bad")
    good = []
    for c in chorales[:4]:
        good.append(root / c.name)
        good[-1].write_bytes(c.read_bytes())
    return root, good, bad


def test_extract_files_skips_bad_files_and_caches(mixed_folder, tmp_path, capsys):
    root, good, bad = mixed_folder
    files = dataset_files(good + [p for p, _ in bad.values()], root)
    cache = tmp_path / "cache" / "mixed.npz"
    corpus = extract_files(files, "mixed", cache, progress=False)
    # every good file in, every bad one listed with its reason, nothing else lost
    assert sorted(corpus.names) == sorted(f.name for f in files[:len(good)])
    reasons = dict(corpus.skipped)
    assert len(reasons) == len(bad)
    for what, (path, message) in bad.items():
        name = path.relative_to(root).as_posix()
        assert re.search(message, reasons[name]), what
    for i, name in enumerate(corpus.names):
        source = next(f for f in files if f.name == name)
        pd.testing.assert_frame_equal(corpus.piece(i), midi_to_notes(source.path),
                                      check_dtype=False)
        assert corpus.splits[i] == source.split
        assert corpus.metadata["composer"][i] == source.metadata["composer"]
        assert corpus.metadata["title"][i] == source.metadata["title"]

    manifest = json.loads(cache.with_name("mixed.manifest.json").read_text())
    assert manifest["dataset"] == "mixed" and manifest["n_pieces"] == len(good)
    assert manifest["n_notes"] == corpus.n_notes
    assert {f["name"] for f in manifest["files"]} == {f.name for f in files}
    first = next(f for f in manifest["files"] if f["name"] == files[0].name)
    assert first["size"] == files[0].path.stat().st_size
    assert first["mtime_ns"] == files[0].path.stat().st_mtime_ns
    assert set(manifest["versions"]) >= {"musicrnn", "symusic", "numpy", "cache_format"}
    assert {s["name"] for s in manifest["skipped"]} == set(reasons)
    assert manifest["created"]

    # the second run reads the cache, and says so
    capsys.readouterr()
    again = extract_files(files, "mixed", cache, progress=True)
    assert "from the cache" in capsys.readouterr().out
    assert again.skipped == corpus.skipped
    for c in NOTE_COLUMNS:
        np.testing.assert_array_equal(again.columns[c], corpus.columns[c])
    np.testing.assert_array_equal(again.offsets, corpus.offsets)
    np.testing.assert_array_equal(again.metadata["title"], corpus.metadata["title"])


def test_cache_goes_stale_when_files_change(chorales, tmp_path, capsys):
    root = tmp_path / "set"
    root.mkdir()
    paths = []
    for c in chorales[:3]:
        paths.append(root / c.name)
        paths[-1].write_bytes(c.read_bytes())
    cache = tmp_path / "c.npz"
    first = extract_files(dataset_files(paths, root), "set", cache, progress=False)

    # a file rewritten (new modification time): extracted again
    os.utime(paths[0], ns=(paths[0].stat().st_atime_ns, paths[0].stat().st_mtime_ns + 10**9))
    capsys.readouterr()
    extract_files(dataset_files(paths, root), "set", cache, progress=True)
    out = capsys.readouterr().out
    assert "out of date" in out and "files changed" in out and "Extracted 3 pieces" in out

    # one file fewer
    fewer = extract_files(dataset_files(paths[:2], root), "set", cache, progress=False)
    assert len(fewer) == 2

    # force: extracted again though current
    capsys.readouterr()
    forced = extract_files(dataset_files(paths[:2], root), "set", cache, force=True, progress=True)
    assert "Extracted 2 pieces" in capsys.readouterr().out
    np.testing.assert_array_equal(forced.columns["pitch"], first.subset([0, 1]).columns["pitch"])


def test_corrupt_cache_is_extracted_again(chorales, tmp_path, capsys):
    cache = tmp_path / "c.npz"
    files = dataset_files(chorales[:2], chorales[0].parent)
    first = extract_files(files, "c", cache, progress=False)
    cache.write_bytes(cache.read_bytes()[:1000])  # a truncated cache
    capsys.readouterr()
    again = extract_files(files, "c", cache, progress=False)
    assert "unreadable" in capsys.readouterr().out  # said even without progress
    np.testing.assert_array_equal(again.columns["start"], first.columns["start"])
    assert NoteCorpus.from_npz(cache).n_notes == first.n_notes  # and the cache is whole again

    cache.with_name("c.manifest.json").write_text("{ not json")
    capsys.readouterr()
    extract_files(files, "c", cache, progress=False)
    assert "manifest" in capsys.readouterr().out


def test_sustain_is_part_of_the_cache_key(tmp_path, capsys):
    """One cache never mixes key-up and sounding durations; a pedal-only file is reported."""
    root = tmp_path / "songs"
    root.mkdir()
    path = write_midi(root / "pedalled.mid", [PEDAL_CASES["released_under_pedal"][0]])
    write_midi(root / "pedal_only.mid", [[(0, tempo(500_000)), (0, pedal(127)),
                                          (480, pedal(0))]])
    files = dataset_files([path, root / "pedal_only.mid"], root)
    cache = tmp_path / "notes" / "songs.npz"
    sounding = extract_files(files, "songs", cache, progress=False, sustain=True)
    assert sounding.sustain and NoteCorpus.from_npz(cache).sustain
    assert [name for name, _ in sounding.skipped] == ["pedal_only.mid"]
    assert re.search("holds no notes.*sustain pedal", sounding.skipped[0][1])
    capsys.readouterr()
    key_up = extract_files(files, "songs", cache, progress=False, sustain=False)
    assert "made with the sustain pedal applied" in capsys.readouterr().out
    assert not key_up.sustain
    assert json.loads(cache.with_name("songs.manifest.json").read_text())["sustain"] is False
    np.testing.assert_array_equal(key_up.columns["duration"], midi_to_notes(path)["duration"])
    np.testing.assert_array_equal(sounding.columns["duration"],
                                  midi_to_notes(path, sustain=True)["duration"])
    assert sounding.columns["duration"].sum() > key_up.columns["duration"].sum()
    # the default follows the dataset: pedal for MAESTRO, none for the chorales or any name
    assert not extract_files(files, "songs", None, progress=False).sustain
    assert notes.sustain_default("maestro-v2") and notes.sustain_default("maestro-v3")
    assert not notes.sustain_default("bach-chorales")
    assert not notes.sustain_default(f"local:{root}") and not notes.sustain_default("songs")


def test_no_usable_file_is_an_error(tmp_path):
    bad = bad_files(tmp_path / "bad")
    paths = [p for p, _ in bad.values()]
    with pytest.raises(MusicRNNError, match=f"not one of the {len(paths)} files yielded notes"):
        extract_files(paths, "bad", tmp_path / "b.npz", progress=False)
    assert not (tmp_path / "b.npz").exists()
    with pytest.raises(MusicRNNError, match="no MIDI files"):
        extract_files([], "nothing", None, progress=False)


def test_plain_paths_and_parallel_workers_agree(maestro_sample, tmp_path):
    paths = maestro_files(maestro_sample)[::10]  # six, from several year folders
    serial = extract_files(paths, "m", None, workers=1, progress=False)
    parallel = extract_files(paths, "m", None, workers=2, progress=False)
    assert list(serial.names) == [p.relative_to(maestro_sample).as_posix() for p in paths]
    assert set(serial.splits) == {"train"}
    np.testing.assert_array_equal(serial.offsets, parallel.offsets)
    for c in NOTE_COLUMNS:
        np.testing.assert_array_equal(serial.columns[c], parallel.columns[c])


def test_corpus_keeps_skipped_through_npz_and_subset(tmp_path):
    corpus = NoteCorpus.from_tables(
        "t", [{c: np.arange(3) + 1 for c in NOTE_COLUMNS}], ["a.mid"], ["test"],
        skipped=[("b.mid", "the file is empty (0 bytes)")],
    )
    back = NoteCorpus.from_npz(corpus.to_npz(tmp_path / "t.npz"))
    assert back.skipped == corpus.skipped == [("b.mid", "the file is empty (0 bytes)")]
    assert back.subset("test").skipped == corpus.skipped
    assert back.find("a.mid") == 0
    with pytest.raises(MusicRNNError, match="no piece named"):
        back.find("zzz.mid")


def test_dataset_slugs_and_cache_paths(tmp_path):
    assert notes.dataset_slug("bach-chorales") == "bach-chorales"
    assert notes.dataset_slug("bach-chorales", 24) == "bach-chorales-max24"
    a = notes.dataset_slug(f"local:{tmp_path / 'My Songs'}")
    b = notes.dataset_slug(f"local:{tmp_path / 'other' / 'My Songs'}")
    assert a.startswith("local-my-songs-") and a != b
    assert notes.cache_path("maestro-v2", tmp_path) == tmp_path / "notes" / "maestro-v2.npz"


# -- extract_corpus / load_corpus / the CLI on a real dataset ---------------------------------------


def test_extract_corpus_local_maestro(maestro_sample, tmp_path, capsys):
    name = f"local:{maestro_sample}"
    corpus = notes.extract_corpus(name, data_dir=tmp_path, max_files=9, progress=False)
    assert len(corpus) == 9 and corpus.dataset == name
    assert set(corpus.splits) <= {"train", "validation", "test"} and len(set(corpus.splits)) >= 2
    assert all(corpus.metadata["composer"])  # from the official CSV
    cache = notes.cache_path(name, tmp_path, 9)
    assert cache.is_file() and cache.with_name(cache.stem + ".manifest.json").is_file()
    loaded = notes.load_corpus(name, data_dir=tmp_path, max_files=9)
    np.testing.assert_array_equal(loaded.columns["pitch"], corpus.columns["pitch"])

    # a MAESTRO copy: sounding durations (the sustain pedal applied) unless asked otherwise
    assert loaded.sustain and notes.sustain_default(name)
    assert json.loads(cache.with_name(cache.stem + ".manifest.json").read_text())["sustain"]
    with open(maestro_sample / "maestro-v2.0.0.csv", newline="", encoding="utf-8") as handle:
        rows = {r["midi_filename"]: r for r in csv.DictReader(handle)}
    chosen = sorted(loaded.names)[4]
    i = loaded.find(rows[chosen]["midi_filename"])  # by the CSV's file name
    assert loaded.names[i] == chosen
    assert loaded.find(Path(chosen).name) == i == loaded.find(maestro_sample / chosen)
    pd.testing.assert_frame_equal(loaded.piece(i), midi_to_notes(maestro_sample / chosen,
                                                                 sustain=True), check_dtype=False)
    info = loaded.info(i)
    for column in ("canonical_composer", "canonical_title", "year", "split"):
        assert info[column] == rows[chosen][column], column
    with pytest.raises(MusicRNNError, match="no piece named"):
        loaded.find("2004/not-a-performance.midi")

    # key-up durations are cached beside it, never in its place
    key_up = notes.load_corpus(name, data_dir=tmp_path, max_files=9, sustain=False)
    assert not key_up.sustain and notes.cache_path(name, tmp_path, 9, False) != cache
    assert notes.cache_path(name, tmp_path, 9, False).is_file()
    np.testing.assert_array_equal(key_up.columns["start"], loaded.columns["start"])
    assert (key_up.columns["duration"] <= loaded.columns["duration"]).all()
    assert (key_up.columns["duration"] < loaded.columns["duration"]).mean() > 0.2
    capsys.readouterr()
    assert notes.load_corpus(name, data_dir=tmp_path, max_files=9).sustain
    assert "from the cache" in capsys.readouterr().out

    capsys.readouterr()
    assert cli_main(["extract", name, "--data-dir", str(tmp_path), "--max-files", "9"]) == 0
    out = capsys.readouterr().out
    assert "from the cache" in out and "validation" in out and "pieces" in out


def test_cli_extract_bad_name_is_one_line(tmp_path, capsys):
    assert cli_main(["extract", "no-such-dataset", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("musicrnn extract: error:") and "\n" not in err
    folder = tmp_path / "empty-folder"
    folder.mkdir()
    assert cli_main(["extract", f"local:{folder}", "--data-dir", str(tmp_path)]) == 2
    assert "\n" not in capsys.readouterr().err.strip()


# -- mixtures of datasets --------------------------------------------------------------------------

MIXTURE = "bach-chorales+essen-folksongs"


@pytest.fixture(scope="module")
def mixture_data(tmp_path_factory) -> Path:
    """One data folder for the mixtures below: music21's catalogues are made once."""
    return tmp_path_factory.mktemp("mixture-data")


def test_mixture_corpus_labels_each_piece_and_keeps_each_datasets_cache(mixture_data, capsys):
    corpus = notes.extract_corpus(" bach-chorales + essen-folksongs", data_dir=mixture_data,
                                  max_files=4)
    out = capsys.readouterr().out
    assert f"Mixed 8 pieces ({corpus.n_notes:,} notes) of {MIXTURE}: bach-chorales 4, " \
           f"essen-folksongs 4" in out
    assert corpus.dataset == MIXTURE and len(corpus) == 8 and not corpus.sustain
    assert list(corpus.metadata["dataset"]) == ["bach-chorales"] * 4 + ["essen-folksongs"] * 4
    assert set(corpus.metadata["sustain"]) == {"0"}
    # each dataset cached on its own, exactly as alone; nothing named after the mixture
    caches = notes.cache_paths(MIXTURE, mixture_data, 4)
    assert [c.name for c in caches] == ["bach-chorales-max4.npz", "essen-folksongs-max4.npz"]
    assert all(c.is_file() and c.with_name(c.stem + ".manifest.json").is_file() for c in caches)
    assert [p.name for p in (mixture_data / "notes").iterdir()
            if not p.name.startswith(("bach-chorales-max", "essen-folksongs-max", "local-"))] == []
    with pytest.raises(MusicRNNError, match="no note cache of its own.*cache_paths"):
        notes.cache_path(MIXTURE, mixture_data, 4)
    assert notes.dataset_slug(MIXTURE, 4) == "bach-chorales+essen-folksongs-max4"
    for part in ("bach-chorales", "essen-folksongs"):
        alone = notes.load_corpus(part, data_dir=mixture_data, max_files=4)
        assert "from the cache" in capsys.readouterr().out
        mine = corpus.subset(np.flatnonzero(corpus.metadata["dataset"] == part))
        assert list(mine.names) == [f"{part}/{n}" for n in alone.names]
        assert list(mine.splits) == list(alone.splits)  # each dataset keeps its own splits
        assert set(alone.splits) == {"train", "validation", "test"}
        for c in NOTE_COLUMNS:
            np.testing.assert_array_equal(mine.columns[c], alone.columns[c])
        for key in corpus.metadata:  # the parts' keys unioned, "" where a part has none
            expected = alone.metadata.get(key, [""] * len(alone))
            if key not in ("dataset", "sustain"):
                assert list(mine.metadata[key]) == list(expected), key
        assert [s for s in corpus.skipped if s[0].startswith(part + "/")] == [
            (f"{part}/{n}", r) for n, r in alone.skipped]
        # a piece is found by its plain name (one dataset has it) or by its mixture name
        i = corpus.find(alone.names[2])
        assert corpus.names[i] == f"{part}/{alone.names[2]}" == corpus.names[corpus.find(
            f"{part}/{alone.names[2]}")]
    assert "bwv" in corpus.metadata and "collection" in corpus.metadata
    files = datasets.download(MIXTURE, mixture_data, max_files=4, progress=False)
    assert sorted(corpus.names) == sorted(f.name for f in files)  # the files' names
    loaded = notes.load_corpus(MIXTURE, data_dir=mixture_data, max_files=4)
    assert list(loaded.names) == list(corpus.names) and loaded.dataset == MIXTURE
    np.testing.assert_array_equal(loaded.columns["duration"], corpus.columns["duration"])


def test_mixture_keeps_each_datasets_sustain_pedal(maestro_sample, mixture_data):
    """MAESTRO's durations sound with the pedal, the folk songs' do not, in one corpus."""
    piano = f"local:{maestro_sample}"
    name = f"essen-folksongs+{piano}"
    corpus = notes.extract_corpus(name, data_dir=mixture_data, max_files=3, progress=False)
    assert not corpus.sustain and not notes.sustain_default(name)  # not every part sustained
    assert notes.sustain_default(f"maestro-v2+{piano}")
    alone = notes.load_corpus(piano, data_dir=mixture_data, max_files=3)
    assert alone.sustain
    mine = np.flatnonzero(corpus.metadata["dataset"] == piano)
    assert list(corpus.metadata["sustain"]) == ["0"] * 3 + ["1"] * 3 and len(mine) == 3
    np.testing.assert_array_equal(corpus.subset(mine).columns["duration"],
                                  alone.columns["duration"])
    prefix = datasets.part_prefix(piano)
    assert prefix.startswith("local-maestro-v2.0.0-")
    assert list(corpus.names[mine]) == [f"{prefix}/{n}" for n in alone.names]
    assert corpus.find(alone.names[0]) == mine[0]  # by the CSV's file name
    assert all(corpus.metadata["canonical_composer"][mine])
    assert not any(corpus.metadata["canonical_composer"][:3])
    # sustain given for the mixture applies to every part (each cached beside its default)
    key_up = notes.extract_corpus(name, data_dir=mixture_data, max_files=3, progress=False,
                                  sustain=False)
    assert set(key_up.metadata["sustain"]) == {"0"}
    assert notes.cache_paths(name, mixture_data, 3, False)[1] == notes.cache_path(
        piano, mixture_data, 3, False) and notes.cache_path(piano, mixture_data, 3,
                                                            False).is_file()
    assert (key_up.columns["duration"] <= corpus.columns["duration"]).all()


def test_cli_extracts_a_mixture(mixture_data):
    def extract(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(MUSICRNN), "extract", *args, "--data-dir", str(mixture_data)],
                              capture_output=True, text=True, timeout=120)

    result = extract(MIXTURE, "--max-files", "4")
    assert result.returncode == 0, result.stderr
    assert "Mixed 8 pieces" in result.stdout and "validation" in result.stdout
    result = extract("bach-chorales+bach-choral", "--max-files", "4")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"musicrnn extract: error: unknown dataset 'bach-choral' in the mixture "
        f"'bach-chorales+bach-choral' (did you mean 'bach-chorales'?); choose one of "
        f"{', '.join(datasets.list_datasets())}, or local:/path/to/a/folder/of/midi/files"]


def test_load_corpus_falls_back_to_cache_when_files_are_gone(chorales, tmp_path, capsys):
    folder = tmp_path / "songs"
    folder.mkdir()
    for c in chorales[:2]:
        (folder / c.name).write_bytes(c.read_bytes())
    name = f"local:{folder}"
    first = notes.load_corpus(name, data_dir=tmp_path)
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    capsys.readouterr()
    again = notes.load_corpus(name, data_dir=tmp_path)
    assert "using the cache" in capsys.readouterr().out
    assert again.n_notes == first.n_notes
    with pytest.raises(MusicRNNError):
        notes.load_corpus(f"local:{tmp_path / 'never-there'}", data_dir=tmp_path)


def test_note_cache_never_unpickles(tmp_path):
    corpus = NoteCorpus.from_tables("t", [{c: np.arange(3) + 1 for c in NOTE_COLUMNS}],
                                    ["a.mid"], ["train"])
    path = corpus.to_npz(tmp_path / "t.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["names"] = np.array([{"evil": "pickle"}], dtype=object)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)  # np.savez pickles object arrays
    with pytest.raises(MusicRNNError, match="Python objects"):
        NoteCorpus.from_npz(path)
    loaded = NoteCorpus.from_npz(corpus.to_npz(tmp_path / "u.npz"))
    loaded.columns["step"][0] = 5.0  # arrays read from the cache are ordinary, writable ones
    assert loaded.columns["step"][0] == 5.0


def test_parallel_only_where_it_pays():
    from musicrnn.paths import usable_cpus

    assert notes._auto_workers(2_000_000) == 1  # the MAESTRO sample: serial is faster
    big = notes._auto_workers(10**9)
    assert big == 1 if usable_cpus() < 2 else big >= 2


def test_npz_keeps_columns_that_do_not_follow_from_start_and_end(tmp_path):
    """A corpus of extracted tables stores start/end only; any other table keeps its columns."""
    tables = [{"pitch": np.array([60, 62, 64]), "start": np.array([0.0, 0.5, 0.5]),
               "end": np.array([0.4, 1.0, 1.5]), "step": np.array([0.0, 0.5, 0.0]),
               "duration": np.array([0.4, 0.5, 1.0]), "velocity": np.array([80, 81, 82])},
              {"pitch": np.array([70]), "start": np.array([2.0]), "end": np.array([3.0]),
               "step": np.array([0.0]), "duration": np.array([1.0]), "velocity": np.array([90])}]
    derived = NoteCorpus.from_tables("d", tables, ["a", "b"], ["train", "test"])
    odd = NoteCorpus.from_tables("o", [dict(tables[0], step=np.array([0.25, 0.5, 0.0])),
                                       tables[1]], ["a", "b"], ["train", "test"])
    for corpus, n_floats in ((derived, 2), (odd, 4)):
        path = corpus.to_npz(tmp_path / f"{corpus.dataset}.npz")
        with np.load(path) as z:
            assert z["floats"].shape == (n_floats, 4)
        back = NoteCorpus.from_npz(path)
        for c in NOTE_COLUMNS:
            np.testing.assert_array_equal(back.columns[c], corpus.columns[c], err_msg=c)

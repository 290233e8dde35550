"""Live streaming: clocked onsets, note-offs, stopping, controls, outputs, the CLI.

Every performance here records into a real :class:`MidiRecorder` at a high speed factor, so a
test takes a second or two. Timing is judged by comparing errors with each other (the last
notes against the first, late notes against the grid), never against tight absolute limits:
the machine is shared and loaded. The timing figures themselves are in ``benchmarks/live.py``.
"""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import numpy as np
import pytest

from musicrnn.errors import MusicRNNError
from musicrnn.live import (
    ALL_NOTES_OFF,
    ControlState,
    LiveControls,
    LivePianoRoll,
    MidiBackendError,
    MidiControlInput,
    MidiRecorder,
    Performer,
    ReplaySource,
    apply_dynamics,
    control_panel,
    list_output_names,
    open_output,
    perform,
    source_from_run,
    validate_cc_map,
)

ROOT = Path(__file__).resolve().parents[1]


# -- real notes and a real model ---------------------------------------------------------------


@pytest.fixture(scope="session")
def chorale_notes(tmp_path_factory) -> np.ndarray:
    """A Bach chorale from music21's corpus, through the project's MIDI reader: (n, 3) raw."""
    import music21

    from musicrnn.notes import midi_to_notes

    path = tmp_path_factory.mktemp("chorale") / "bwv66.6.mid"
    music21.corpus.parse("bach/bwv66.6").write("midi", fp=str(path))
    table = midi_to_notes(path)
    return table[["pitch", "step", "duration"]].to_numpy(dtype=np.float64)


@pytest.fixture(scope="module")
def performance_notes(maestro_sample) -> np.ndarray:
    """The first 60 notes of a real MAESTRO performance, raw with each note's velocity:
    (60, 4) of (pitch, step, duration, velocity) -- a pianist's dynamics."""
    from musicrnn.notes import midi_to_notes

    table = midi_to_notes(sorted(maestro_sample.rglob("*.midi"))[3])
    notes = table[["pitch", "step", "duration", "velocity"]].to_numpy(dtype=np.float64)[:60]
    notes[0, 1] = 0.0
    return notes


@pytest.fixture(scope="session")
def baseline_run(tmp_path_factory, chorale_notes) -> Path:
    """A run directory holding a small real (untrained) baseline model, primed by the chorale."""
    from musicrnn.model import build_model, get_preset, write_run_files

    config = get_preset("baseline")
    run_dir = tmp_path_factory.mktemp("run") / "baseline"
    write_run_files(run_dir, build_model(config), config, chorale_notes[:40],
                    info={"dataset": "bach-chorales", "max_files": 1})
    return run_dir


class SlowSource(ReplaySource):
    """A replay source slowed on purpose: every call sleeps, some calls (spikes) much longer."""

    def __init__(self, notes, delay_s: float, spikes: dict[int, float] | None = None, **kw):
        super().__init__(notes, **kw)
        self.base_delay = delay_s
        self.spikes = spikes or {}
        self.started: list[float] = []

    def __call__(self, controls: ControlState):
        self.started.append(time.perf_counter())
        time.sleep(self.spikes.get(self.position, self.base_delay))
        return super().__call__(controls)


def note_ons(recorder: MidiRecorder) -> list[tuple[float, mido.Message]]:
    return [(t, m) for t, m in recorder.events if m.type == "note_on" and m.velocity > 0]


def assert_every_note_ended(recorder: MidiRecorder) -> None:
    """Per channel and key, messages alternate on/off, starting with on, ending with off."""
    sounding: dict[tuple[int, int], bool] = {}
    ons = offs = 0
    for _, m in recorder.events:
        key = (getattr(m, "channel", 0), getattr(m, "note", -1))
        if m.type == "note_on" and m.velocity > 0:
            assert not sounding.get(key), f"second note-on of a sounding key {key}"
            sounding[key] = True
            ons += 1
        elif m.type == "note_off" or (m.type == "note_on" and m.velocity == 0):
            assert sounding.get(key), f"note-off for a key that was not sounding {key}"
            sounding[key] = False
            offs += 1
    assert ons == offs and not any(sounding.values())


def grid_errors(recorder: MidiRecorder, notes: np.ndarray, speed: float) -> np.ndarray:
    """Each note-on's time minus its place on the grid (cumulative steps / speed), seconds,
    both measured from the first note; the grid comes from the notes, not the performer."""
    times = np.array([t for t, _ in note_ons(recorder)])
    grid = np.cumsum(notes[: len(times), 1]) / speed
    grid[0] = 0.0 if len(grid) else 0.0
    grid = grid - grid[0]
    return (times - times[0]) - grid


# -- timing ---------------------------------------------------------------------------------------


def test_onsets_follow_the_predicted_steps_and_the_error_does_not_accumulate(chorale_notes):
    notes = chorale_notes.copy()
    notes[0, 1] = 0.0
    speed = 8.0
    mean_interval = notes[:, 1].sum() / speed / len(notes)
    source = SlowSource(notes, delay_s=0.4 * mean_interval)  # a slow model, still keeping up
    recorder = MidiRecorder()
    report = Performer(source, recorder, LiveControls(speed=speed), lookahead=6).run()

    ons = note_ons(recorder)
    assert [m.note for _, m in ons] == [int(p) for p in notes[:, 0]]  # all, in order
    times = np.array([t for t, _ in ons])
    assert np.all(np.diff(times) >= -1e-4), "onsets out of order"
    err = grid_errors(recorder, notes, speed)
    head, tail = np.median(np.abs(err[:15])), np.median(np.abs(err[-15:]))
    # The generator spent this long in total: a loop that waits for it before each note would
    # be this late by the end. Here the last notes are as close to the grid as the first.
    generator_total = 0.4 * mean_interval * len(notes)
    assert tail <= head + 0.015, (head, tail)
    assert abs(np.median(err[-15:]) - np.median(err[:15])) < 0.05 * generator_total
    assert report.notes_played == len(notes)
    assert_every_note_ended(recorder)


def test_a_slow_step_is_absorbed_by_the_lookahead(chorale_notes):
    notes = chorale_notes[:80].copy()
    speed = 8.0
    interval = notes[:, 1].sum() / speed / len(notes)
    spike = 3.0 * interval  # every tenth note the model takes three notes' time
    source = SlowSource(notes, delay_s=0.2 * interval,
                        spikes={i: spike for i in range(10, 80, 10)})
    recorder = MidiRecorder()
    Performer(source, recorder, LiveControls(speed=speed), lookahead=8, lookahead_s=0).run()
    err = grid_errors(recorder, notes, speed)
    err -= np.median(err[:5])
    after_spikes = err[[i for i in range(10, 80, 10)]]
    # Without the buffer each of these notes would be late by about a whole spike. (The median:
    # on a loaded machine the odd note is late because the process was not scheduled at all.)
    assert np.median(after_spikes) < 0.5 * spike, (after_spikes, spike)


def test_a_generator_that_falls_behind_plays_late_but_the_clock_does_not_shift():
    notes = np.array([[60 + (i % 12), 0.1, 0.05] for i in range(36)])
    notes[0, 1] = 0.0
    speed = 2.0  # 50 ms between notes
    slow = {i: 0.2 for i in (10, 11, 12)}  # three steps at four notes' time each
    source = SlowSource(notes, delay_s=0.002, spikes=slow)
    recorder = MidiRecorder()
    performer = Performer(source, recorder, LiveControls(speed=speed), lookahead=1,
                          lookahead_s=0)
    report = performer.run()
    err = grid_errors(recorder, notes, speed)
    err -= np.median(err[:8])
    assert err[12] > 0.2, "the notes waiting for the slow steps are late"
    # ... and afterwards the performance is back on the original grid: it caught up instead
    # of shifting every later note by the ~0.45 s it fell behind.
    assert np.median(np.abs(err[-10:])) < 0.25 * err[12], err[-10:]
    assert report.underruns >= 1
    assert_every_note_ended(recorder)


# -- note-offs and stopping -----------------------------------------------------------------------


def test_every_note_on_has_its_note_off_with_chords_and_overlapping_pitches(chorale_notes):
    # The chorale has unisons (two voices on one key at once); add long overlapping notes.
    handmade = np.array([
        [60, 0.0, 1.0], [64, 0.0, 1.0], [67, 0.0, 1.0],  # a chord
        [60, 0.25, 0.5],  # the same key again while the first 60 still sounds
        [72, 0.25, 2.0], [72, 0.1, 0.1],  # a short note inside a long one of the same key
        [48, 0.3, 0.2],
    ])
    notes = np.concatenate([handmade, chorale_notes[:60]])
    recorder = MidiRecorder()
    performer = Performer(ReplaySource(notes), recorder, LiveControls(speed=6.0), lookahead=4)
    performer.run()
    assert_every_note_ended(recorder)
    events = [m for _, m in recorder.events]
    assert events[-1].type == "control_change" and events[-1].control == ALL_NOTES_OFF
    # The re-strike: the sounding 60 ends right before the new 60 starts.
    on_60 = [i for i, m in enumerate(events) if m.type == "note_on" and m.note == 60]
    assert events[on_60[1] - 1].type == "note_off" and events[on_60[1] - 1].note == 60
    played = performer.played()
    assert all(n.off is not None and n.off >= n.on for n in played)
    first_60 = played[0]
    assert first_60.cut and first_60.off == pytest.approx(played[3].on, abs=0.01)


def test_stopping_mid_note_silences_everything():
    notes = np.array([[48 + i, 0.05, 3.0] for i in range(40)])  # long notes, overlapping
    recorder = MidiRecorder()
    performer = Performer(ReplaySource(notes), recorder, LiveControls(speed=1.0))
    performer.start()
    deadline = time.monotonic() + 5
    while performer.notes_played < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    began = time.perf_counter()
    performer.stop()
    assert time.perf_counter() - began < 1.0
    assert not performer.running
    assert_every_note_ended(recorder)
    last = recorder.events[-1][1]
    assert last.type == "control_change" and last.control == ALL_NOTES_OFF
    assert all(n.cut for n in performer.played())  # every note was still sounding
    count = len(recorder.events)
    time.sleep(0.2)
    assert len(recorder.events) == count, "nothing is sent after stop"


def test_an_error_in_the_source_silences_and_is_raised():
    class Exploding(ReplaySource):
        def __call__(self, controls):
            if self.position == 6:
                raise RuntimeError("the model exploded")
            return super().__call__(controls)

    notes = np.array([[60 + i, 0.05, 2.0] for i in range(20)])
    recorder = MidiRecorder()
    performer = Performer(Exploding(notes), recorder, LiveControls(speed=2.0), lookahead_s=0)
    with pytest.raises(RuntimeError, match="exploded"):
        performer.run(duration_s=5)
    assert performer.report().stopped_by == "error"
    assert_every_note_ended(recorder)
    assert recorder.events[-1][1].control == ALL_NOTES_OFF


@pytest.fixture
def sigint_ignored():
    """SIGINT ignored, as in a process started in the background of a non-interactive shell
    (where ``_thread.interrupt_main()`` and Ctrl-C reach nothing); restored afterwards."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_with_all_notes_off_and_is_raised(sigint_ignored):
    notes = np.array([[60 + i % 12, 0.05, 1.0] for i in range(200)])
    recorder = MidiRecorder()
    performer = Performer(ReplaySource(notes), recorder, LiveControls(speed=1.0))
    # The performer installs the handler it relies on, whatever the parent did with SIGINT.
    timer = threading.Timer(0.4, _thread.interrupt_main)  # a real SIGINT-style interrupt
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            performer.run(duration_s=20)
    finally:
        timer.cancel()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # put back as it was
    assert performer.report().stopped_by == "interrupt"
    assert 0 < performer.notes_played < 200
    assert_every_note_ended(recorder)
    assert recorder.events[-1][1].control == ALL_NOTES_OFF


def test_sigint_raises_installs_the_handler_only_where_it_is_missing(sigint_ignored):
    from musicrnn.live import sigint_raises

    with sigint_raises():
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN

    def own_handler(signum, frame):  # a program's own choice is kept
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, own_handler)
    with sigint_raises():
        assert signal.getsignal(signal.SIGINT) is own_handler
    errors: list[BaseException] = []

    def off_the_main_thread():  # Python allows signal handlers in the main thread only
        try:
            with sigint_raises():
                pass
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=off_the_main_thread)
    thread.start()
    thread.join()
    assert not errors and signal.getsignal(signal.SIGINT) is own_handler


# -- controls -------------------------------------------------------------------------------------


def test_controls_change_the_music_at_the_next_note():
    notes = np.array([[60, 0.0 if i == 0 else 0.1, 0.05] for i in range(28)])
    controls = LiveControls(speed=2.0, temperature=1.0)
    changed_at: list[float] = []

    def on_note(note):
        if note.index == 7:
            controls.set(transpose=12, velocity=40, dynamics=1.5, channel=3, temperature=0.5)
            changed_at.append(time.perf_counter())
        if note.index == 15:
            controls.set(speed=4.0)

    source = SlowSource(notes, delay_s=0.003)
    recorder = MidiRecorder()
    Performer(source, recorder, controls, lookahead=3, on_note=on_note).run()
    ons = note_ons(recorder)
    assert [m.note for _, m in ons[:8]] == [60] * 8
    assert [m.note for _, m in ons[8:]] == [72] * 20  # from the very next note on
    assert {m.velocity for _, m in ons[:8]} == {90}  # the default velocity, dynamics 1
    # notes without their own velocity play at the velocity control, scaled by the dynamics
    assert {m.velocity for _, m in ons[8:]} == {60} and {m.channel for _, m in ons[8:]} == {3}
    offs = [m for _, m in recorder.events if m.type == "note_off"]
    assert {m.channel for m in offs if m.note == 72} == {3}  # note-offs follow their note
    # Temperature applies when a note is generated: every call that began after the change
    # saw it, every call before did not.
    for began, state in zip(source.started, source.calls):
        assert state.temperature == (0.5 if began > changed_at[0] else 1.0)
    # Speed: from the next onset on, the notes come twice as fast (50 ms apart, then 25 ms).
    # Had the change come a note late, every later note would be 25 ms later than this.
    expected = np.concatenate([np.arange(16) * 0.05, 15 * 0.05 + np.arange(1, 13) * 0.025])
    offset = np.array([t for t, _ in ons]) - expected
    err = offset - np.median(offset[:16])
    assert np.median(np.abs(err[16:])) < 0.008, np.round(err * 1e3, 1)
    assert_every_note_ended(recorder)


def test_pause_holds_the_music_and_resume_goes_on_where_it_stopped():
    notes = np.array([[60 + i, 0.0 if i == 0 else 0.1, 0.05] for i in range(16)])
    controls = LiveControls(speed=2.0)
    marks: dict[str, float] = {}

    def on_note(note):
        if note.index == 4:
            controls.pause()
            marks["paused"] = time.perf_counter()
            threading.Timer(0.5, lambda: (marks.__setitem__("resumed", time.perf_counter()),
                                          controls.resume())).start()

    recorder = MidiRecorder()
    Performer(ReplaySource(notes), recorder, controls, on_note=on_note).run()
    ons = note_ons(recorder)
    assert [m.note for _, m in ons] == list(range(60, 76))  # nothing lost, nothing repeated
    times = np.array([t for t, _ in ons])
    assert not np.any((times > marks["paused"] + 0.01) & (times < marks["resumed"]))
    # On resume the rest of the grid moved by the pause: the notes go on one step apart,
    # instead of rushing through the ~0.5 s they would otherwise owe.
    assert times[5] - marks["resumed"] > 0.02
    assert np.median(np.diff(times[5:])) == pytest.approx(0.05, abs=0.01)


def test_density_silences_notes_but_keeps_their_time():
    notes = np.array([[60 + i % 12, 0.0 if i == 0 else 0.1, 0.05] for i in range(100)])
    recorder = MidiRecorder()
    performer = Performer(ReplaySource(notes), recorder, LiveControls(speed=10.0, density=0.5),
                          seed=3)
    report = performer.run()
    assert 25 <= report.notes_played <= 75
    assert report.notes_played + report.notes_skipped == 100
    played = performer.played()
    grid = np.array([n.deadline for n in played])
    np.testing.assert_allclose(grid / 0.01, np.round(grid / 0.01), atol=1e-6)  # on the grid


def test_controls_are_validated_and_thread_safe():
    controls = LiveControls()
    with pytest.raises(MusicRNNError, match="temperature"):
        controls.set(temperature=0)
    with pytest.raises(MusicRNNError, match="unknown live control"):
        controls.set(tempo=2)
    assert controls.snapshot().temperature == 1.0  # a refused change changes nothing
    stop = threading.Event()
    seen_inconsistent: list[ControlState] = []

    def writer(k):
        while not stop.is_set():
            controls.set(speed=1 + k, transpose=k)

    def reader():
        while not stop.is_set():
            state = controls.snapshot()
            if state.speed != 1 + state.transpose:
                seen_inconsistent.append(state)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    assert not seen_inconsistent


def test_a_midi_knob_sets_the_temperature_and_other_ccs_pass_through():
    cc_map = validate_cc_map({1: ("temperature", 0.1, 2.0), 64: ("paused", 0, 1)})
    controls = LiveControls()
    assert controls.handle_message(mido.Message("control_change", control=1, value=127), cc_map)
    assert controls.snapshot().temperature == pytest.approx(2.0)
    controls.handle_message(mido.Message("control_change", control=1, value=0), cc_map)
    assert controls.snapshot().temperature == pytest.approx(0.1)
    controls.handle_message(mido.Message("control_change", control=64, value=100), cc_map)
    assert controls.snapshot().paused
    controls.handle_message(mido.Message("control_change", control=64, value=0), cc_map)
    assert not controls.snapshot().paused
    assert not controls.handle_message(mido.Message("note_on", note=60), cc_map)
    with pytest.raises(MusicRNNError):
        validate_cc_map({1: ("tempo", 0, 1)})
    with pytest.raises(MusicRNNError):
        validate_cc_map({1: ("temperature", 0.0, 1.0)})  # 0 is no temperature

    # An unmapped CC (a filter knob) reaches the output on the notes' channel, mid-performance.
    controls = LiveControls(speed=4.0, channel=2)
    notes = np.array([[60, 0.1, 0.05]] * 12)

    def on_note(note):
        if note.index == 3:
            controls.handle_message(mido.Message("control_change", control=74, value=99), cc_map)

    recorder = MidiRecorder()
    Performer(ReplaySource(notes), recorder, controls, on_note=on_note).run()
    ccs = [m for _, m in recorder.events if m.type == "control_change" and m.control == 74]
    assert len(ccs) == 1 and ccs[0].value == 99 and ccs[0].channel == 2


def test_sliders_drive_the_controls():
    controls = LiveControls()
    panel = control_panel(controls)
    panel.sliders["temperature"].value = 1.7
    panel.sliders["transpose"].value = -5
    panel.sliders["paused"].value = True
    panel.sliders["dynamics"].value = 0.5
    panel.sliders["velocity_temperature"].value = 0.3
    state = controls.snapshot()
    assert (state.temperature, state.transpose, state.paused) == (1.7, -5, True)
    assert (state.dynamics, state.velocity_temperature) == (0.5, 0.3)
    with pytest.raises(MusicRNNError, match="dynamics"):
        controls.set(dynamics=0)
    with pytest.raises(MusicRNNError, match="velocity_temperature"):
        controls.set(velocity_temperature=-1)


# -- outputs ---------------------------------------------------------------------------------------


def test_the_recorder_writes_the_real_times_to_a_midi_file(tmp_path, chorale_notes):
    out = tmp_path / "live" / "take.mid"
    recorder = MidiRecorder(out)
    performer = Performer(ReplaySource(chorale_notes[:50]), recorder, LiveControls(speed=8.0),
                          program=0)
    performer.run()
    assert not out.exists()  # written on close, atomically
    recorder.close()
    assert sorted(p.name for p in out.parent.iterdir()) == ["take.mid"]
    stamps = [t for t, m in recorder.events if m.type == "note_on"]
    midi = mido.MidiFile(out)
    now, file_times = 0.0, []
    for message in midi:  # iterating a MidiFile yields times in seconds
        now += message.time
        if message.type == "note_on":
            file_times.append(now)
    expected = np.array(stamps) - recorder.events[0][0]
    np.testing.assert_allclose(file_times, expected, atol=0.0006)  # one tick is 0.52 ms

    from musicrnn.notes import midi_to_notes

    # A unison (two voices on one key) is a re-strike: the first note may last no tick at all,
    # and MIDI readers drop such notes; every note that lasts at least a tick is read back.
    started: dict[int, int] = {}
    lasting = tick = 0
    for message in midi.tracks[0]:
        tick += message.time
        if message.type == "note_on":
            started[message.note] = tick
        elif message.type == "note_off":
            lasting += tick > started.pop(message.note)
    assert len(midi_to_notes(out)) == lasting > 40
    assert lasting <= performer.notes_played == 50


def test_each_note_plays_at_its_own_velocity_and_the_recording_keeps_it(performance_notes,
                                                                        tmp_path):
    notes = performance_notes
    assert len(np.unique(notes[:, 3])) > 10  # real dynamics, not one level
    out = tmp_path / "take.mid"
    recorder = MidiRecorder(out)
    # The velocity control is for notes without their own: here it must not be heard.
    performer = Performer(ReplaySource(notes), recorder, LiveControls(speed=10.0, velocity=20))
    performer.run()
    recorder.close()
    sent = [m.velocity for _, m in note_ons(recorder)]
    assert [m.note for _, m in note_ons(recorder)] == [int(p) for p in notes[:, 0]]
    assert sent == [int(v) for v in notes[:, 3]]
    assert [n.raw_velocity for n in performer.played()] == list(notes[:, 3])
    in_file = [m.velocity for m in mido.MidiFile(out) if m.type == "note_on" and m.velocity > 0]
    assert in_file == sent  # the recorder's MIDI file keeps every note's velocity
    assert_every_note_ended(recorder)


@pytest.mark.parametrize("dynamics", [0.5, 1.8])
def test_dynamics_scales_each_notes_velocity_within_midi_range(performance_notes, dynamics):
    notes = performance_notes
    recorder = MidiRecorder()
    Performer(ReplaySource(notes), recorder, LiveControls(speed=10.0, dynamics=dynamics)).run()
    sent = np.array([m.velocity for _, m in note_ons(recorder)])
    expected = np.clip(np.rint(notes[:, 3] * dynamics), 1, 127)
    np.testing.assert_array_equal(sent, expected)
    np.testing.assert_array_equal(sent, apply_dynamics(notes[:, 3], dynamics))
    if dynamics > 1:  # the loud notes hit MIDI's ceiling instead of wrapping or failing
        assert (notes[:, 3] * dynamics > 127).any() and sent.max() == 127
    else:  # softer, and the order of loudness is kept
        assert (sent < notes[:, 3]).all()
        assert (np.diff(sent) * np.diff(notes[:, 3]) >= 0).all()


def test_a_note_source_must_give_three_or_four_values():
    with pytest.raises(MusicRNNError, match=r"\(n, 4\)"):
        ReplaySource(np.zeros((4, 5)))
    recorder = MidiRecorder()
    performer = Performer(lambda controls: (60.0, 0.1), recorder, lookahead_s=0)
    with pytest.raises(MusicRNNError, match="pitch, step, duration"):
        performer.run(duration_s=2)


def test_no_midi_backend_gives_one_clear_message(capfd):
    try:
        names = list_output_names()
    except MidiBackendError as exc:  # no ALSA sequencer (as on the CI machine)
        message = str(exc)
        assert "\n" not in message and "--record" in message and "--port" in message
        with pytest.raises(MidiBackendError, match="--record") as info:
            open_output(virtual=True)
        assert "\n" not in str(info.value)
        with pytest.raises(MidiBackendError, match="--record"):
            open_output("Some Synth")
        with pytest.raises(MidiBackendError, match="MIDI input"):  # a controller's knobs
            MidiControlInput(LiveControls(), "Some Controller", {1: ("temperature", 0.1, 2.0)})
        # ALSA's own complaint is folded into the message, not left on stderr above it.
        assert capfd.readouterr().err == ""
    else:  # a machine with MIDI: an unknown port is named with the ports there are
        with pytest.raises(MidiBackendError, match="no MIDI output port named") as info:
            open_output("no such port, surely")
        for name in names:
            assert name in str(info.value)


# -- the real model --------------------------------------------------------------------------------


def test_a_real_model_streams_exactly_what_the_sampler_generates(baseline_run):
    from musicrnn.generation import Sampler
    from musicrnn.model import load_run

    controls = LiveControls(speed=20.0, temperature=1.3)
    recorder = MidiRecorder()
    performer = Performer(source_from_run(baseline_run, seed=11), recorder, controls,
                          lookahead=4, max_step=0.2)
    performer.run(max_notes=40)
    played = performer.played()
    assert len(played) == 40
    run = load_run(baseline_run)
    offline = Sampler(run.model, seed=11, config=run.config).prime(run.seed_sequence)
    expected = offline.sample(40, temperature=1.3)[0]
    np.testing.assert_array_equal([n.raw_pitch for n in played], expected[:, 0])
    np.testing.assert_allclose([n.step for n in played], np.clip(expected[:, 1], 0, 0.2),
                               atol=1e-6)
    assert_every_note_ended(recorder)


@pytest.fixture(scope="module")
def velocity_run(tmp_path_factory, chorale_notes) -> Path:
    """A run directory holding a small real (untrained) v5 model -- velocity as a 4th column
    and a head over velocity classes -- primed by the chorale with its velocities."""
    from musicrnn.model import build_model, get_preset, write_run_files

    config = get_preset("v5", lstm_units=(32,))
    primer = np.column_stack([chorale_notes[:40], np.full(40, 90.0)])
    run_dir = tmp_path_factory.mktemp("run") / "v5"
    write_run_files(run_dir, build_model(config), config, primer,
                    info={"dataset": "bach-chorales", "max_files": 1})
    return run_dir


def test_a_velocity_model_streams_its_velocities_at_the_live_velocity_temperature(velocity_run):
    from musicrnn.generation import Sampler
    from musicrnn.model import load_run

    controls = LiveControls(speed=20.0, velocity_temperature=0.4, dynamics=0.8, velocity=20)
    recorder = MidiRecorder()
    performer = Performer(source_from_run(velocity_run, seed=11), recorder, controls,
                          lookahead=4, max_step=0.2)
    performer.run(max_notes=40)
    played = performer.played()
    assert len(played) == 40
    run = load_run(velocity_run, compile=False)

    def offline(velocity_temperature: float) -> np.ndarray:
        sampler = Sampler(run.model, seed=11, config=run.config).prime(run.seed_sequence)
        return sampler.sample(40, velocity_temperature=velocity_temperature)[0]

    expected = offline(0.4)
    assert expected.shape == (40, 4)
    np.testing.assert_array_equal([n.raw_pitch for n in played], expected[:, 0])
    np.testing.assert_array_equal([n.raw_velocity for n in played], expected[:, 3])
    # the velocity temperature reached the sampler: at another one the draws differ
    assert not np.array_equal(offline(1.5)[:, 3], expected[:, 3])
    # each note's own velocity, scaled by the dynamics, is what the output received
    sent = [m.velocity for _, m in note_ons(recorder)]
    assert sent == [apply_dynamics(v, 0.8) for v in expected[:, 3]] and len(set(sent)) > 3
    assert_every_note_ended(recorder)


def test_the_live_piano_roll_draws_a_snapshot_of_the_last_seconds(chorale_notes):
    recorder = MidiRecorder()
    performer = Performer(ReplaySource(chorale_notes[:40]), recorder, LiveControls(speed=8.0))
    performer.start()
    roll = LivePianoRoll(performer, window_s=1.0)
    while performer.running:
        roll.draw()  # the notebook's display loop, on another thread than the scheduler
        time.sleep(0.05)
    performer.wait()
    svg = roll.draw()
    now = performer.now()
    in_window = [n for n in performer.played() if n.off >= now - 1.0 and n.on <= now]
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<rect") - 2 == roll.notes_drawn == len(in_window) > 0  # 2: background
    assert roll.frames > 3
    assert_every_note_ended(recorder)


# -- the command -----------------------------------------------------------------------------------


def _musicrnn(*args: str, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "musicrnn.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, **kw)


def test_perform_records_a_real_model_to_a_file(baseline_run, tmp_path):
    out = tmp_path / "take.mid"
    lines: list[str] = []
    report = perform(baseline_run, record=out, duration_s=1.5, speed=4.0, temperature=0.8,
                     seed=1, velocity=100, dynamics=0.5, log=lines.append)
    assert lines[0].startswith("Performing") and "notes in" in lines[-1]
    assert report.notes_played > 0 and report.stopped_by == "end"
    assert report.duration_s == pytest.approx(1.5, abs=0.5)
    midi = mido.MidiFile(out)
    ons = [m for m in midi if m.type == "note_on" and m.velocity > 0]
    assert {m.velocity for m in ons} == {50}  # a model without velocity: the level x dynamics
    offs = [m for m in midi if m.type == "note_off"]
    assert len(ons) == report.notes_played == len(offs)
    assert midi.length < 3.0
    with pytest.raises(MusicRNNError, match="choose one output"):
        perform(baseline_run, record=out, virtual=True)
    # Gestures need the optional extra (and a camera and the hand model): without them, a
    # clear error before anything plays, and no empty recording left behind.
    from musicrnn.gestures import start_camera_thread

    failed = tmp_path / "never.mid"
    with pytest.raises(MusicRNNError, match="gesture|camera|hand"):
        perform(baseline_run, record=failed, duration_s=1, log=None,
                inputs=[lambda controls: start_camera_thread(controls).stop])
    assert not failed.exists()
    from musicrnn.cli import main  # `musicrnn perform --gestures` starts that same camera input

    assert main(["perform", "--run-dir", str(baseline_run), "--record", str(failed),
                 "--gestures", "--duration", "1"]) == 2
    assert not failed.exists()


# Starts the command with SIGINT ignored, as a shell script's background job (`cmd &`) or a CI
# runner may: the disposition survives exec, so the command itself must install its handler.
_WITH_SIGINT_IGNORED = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


@pytest.mark.slow
def test_perform_ctrl_c_still_writes_the_recording(baseline_run, tmp_path):
    out = tmp_path / "take.mid"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, "-c", _WITH_SIGINT_IGNORED, "-m", "musicrnn.cli", "perform",
         "--run-dir", str(baseline_run), "--record", str(out), "--duration", "60",
         "--speed", "2", "--velocity", "80", "--dynamics", "0.75"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout.readline().startswith("Performing")  # the model is loaded
        time.sleep(0.7)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    midi = mido.MidiFile(out)
    ons = [m for m in midi if m.type == "note_on" and m.velocity > 0]
    offs = [m for m in midi if m.type == "note_off"]
    assert len(ons) == len(offs) > 0 and {m.velocity for m in ons} == {60}
    assert [m for m in midi if m.type == "control_change"][-1].control == ALL_NOTES_OFF


def test_perform_without_a_midi_backend_exits_2_with_one_line(tmp_path):
    try:
        list_output_names()
    except MidiBackendError:
        pass
    else:
        pytest.skip("this machine has a MIDI backend; the no-backend message cannot be shown")
    result = _musicrnn("perform", "--run-dir", str(tmp_path), "--virtual")  # before loading
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("musicrnn perform: error: no MIDI backend")
    assert "--record" in lines[0] and "Traceback" not in result.stderr


def test_perform_needs_exactly_one_output(tmp_path):
    result = _musicrnn("perform", "--run-dir", str(tmp_path))
    assert result.returncode == 2 and "one of the arguments" in result.stderr

"""Live timing: the clocked scheduler against a replica of the original sleep-chained loop.

Both play the same 1,000 real notes (Bach chorales from music21's corpus, read with the
project's MIDI reader) into an in-memory ``MidiRecorder`` that stamps each message with
``time.perf_counter``, at one speed factor chosen to keep the whole run under a minute, one
after the other. Model calls are simulated by sleeps scaled by the speed factor.

* ``original``: the loop of ``realtime_midi_generator.py``: a ~100 ms model call
  (``model.predict`` on a 50-note window), note-on, sleep for the note's *duration*, note-off,
  next -- the predicted step is ignored.
* ``scheduler`` (the RESULT line): ``musicrnn.live.Performer`` with its defaults (lookahead 4),
  onsets on the absolute grid of cumulative predicted steps, generation on a worker thread; its
  model call is 2 ms, the order of the project's NumPy sampler step (0.2-1.4 ms per note
  measured on this 2-core machine, see notebook 07's report), which is what it really calls.
* ``scheduler, 100 ms model``: the same with the original's slow model call and a 16-note
  lookahead. For chorales (a note every 139 ms on average, four at once in every chord) such a
  model is only a little faster than the music; the buffer, filled before the clock starts,
  carries it through the dense passages. Underruns are counted: a note generated after its
  deadline plays late, but the grid does not shift.

A note's offset is its note-on time minus its predicted onset (the cumulative steps / speed);
its timing error is that offset less the median offset, in milliseconds of real time at the
benchmark's speed (median, p99 and max of the magnitudes). Drift is the trend of the offsets
over the 1,000 notes: the Theil-Sen slope (median of pairwise slopes) times the number of
notes. The host's load average is printed: on a shared 2-core machine the tail (p99, max) is
set by moments when the process is not scheduled at all.
Run: ``.venv/bin/python benchmarks/live.py [--notes 1000] [--budget-s 24]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from musicrnn.live import LiveControls, MidiRecorder, Performer, ReplaySource  # noqa: E402

MODEL_CALL_S = 0.100  # the original's model call, at speed 1
SAMPLER_STEP_S = 0.002  # the project's sampler step (one NumPy LSTM step), at speed 1


def chorale_notes(n: int) -> tuple[np.ndarray, int]:
    """At least ``n`` real notes: Bach chorales in corpus order, (n, 3) raw, and how many."""
    import music21

    from musicrnn.notes import midi_to_notes

    pieces, count = [], 0
    paths = sorted(str(p) for p in music21.corpus.getComposer("bach")
                   if "bwv" in str(p) and str(p).endswith(".mxl"))
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            try:
                midi = Path(tmp) / f"{Path(path).stem}.mid"
                music21.converter.parse(path).write("midi", fp=str(midi))
                table = midi_to_notes(midi)
            except Exception:  # noqa: BLE001 - a piece music21 cannot write is skipped
                continue
            features = table[["pitch", "step", "duration"]].to_numpy(dtype=np.float64)
            if pieces:
                features[0, 1] = 0.5  # half a second between pieces
            pieces.append(features)
            count += len(features)
            if count >= n:
                break
    notes = np.concatenate(pieces)[:n]
    notes[0, 1] = 0.0
    return notes, len(pieces)


def onset_offsets_ms(recorder: MidiRecorder, notes: np.ndarray, speed: float) -> np.ndarray:
    """Each note-on's time minus its predicted onset (cumulative steps / speed), in ms."""
    times = np.array([t for t, m in recorder.events if m.type == "note_on"])
    if len(times) != len(notes):
        raise RuntimeError(f"{len(times)} note-ons recorded for {len(notes)} notes")
    return (times - np.cumsum(notes[:, 1]) / speed) * 1e3


def summary(offsets: np.ndarray) -> dict[str, float]:
    """Timing errors (offsets less their median) and the drift over the run.

    Drift is the Theil-Sen slope of offset against note number (the median of the slopes
    between every pair of notes) times the number of notes: what a steady trend adds up to,
    unmoved by the odd burst of late notes when the process was not scheduled.
    """
    errors = offsets - np.median(offsets)
    magnitude = np.abs(errors)
    n = len(offsets)
    i, j = np.triu_indices(n, k=1)
    slope = np.median((offsets[j] - offsets[i]) / (j - i))
    return {
        "median_ms": float(np.median(magnitude)),
        "p99_ms": float(np.percentile(magnitude, 99)),
        "max_ms": float(magnitude.max()),
        "drift_ms": float(slope * (n - 1)),
    }


def run_scheduler(notes: np.ndarray, speed: float, lookahead: int,
                  model_call_s: float) -> dict[str, float]:
    """Our performer, its model call simulated by ``model_call_s`` (at speed 1), into a recorder."""
    recorder = MidiRecorder()
    source = ReplaySource(notes, delay_s=model_call_s / speed)
    report = Performer(source, recorder, LiveControls(speed=speed), lookahead=lookahead,
                       max_step=10.0, max_duration=10.0, min_duration=0.0).run()
    result = summary(onset_offsets_ms(recorder, notes, speed))
    result["underruns"] = report.underruns
    return result


def run_original(notes: np.ndarray, speed: float) -> dict[str, float]:
    """The original loop, replicated: predict (~100 ms), note-on, sleep(duration), note-off."""
    import mido

    recorder = MidiRecorder()
    for pitch, _step, duration in notes:  # the predicted step is never used
        time.sleep(MODEL_CALL_S / speed)  # the model call
        recorder.send(mido.Message("note_on", note=int(pitch), velocity=90))
        time.sleep(duration / speed)
        recorder.send(mido.Message("note_off", note=int(pitch), velocity=0))
    return summary(onset_offsets_ms(recorder, notes, speed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", type=int, default=1000)
    parser.add_argument("--budget-s", type=float, default=24.0,
                        help="wall-clock seconds the performances may take together")
    args = parser.parse_args()

    started = time.perf_counter()
    notes, pieces = chorale_notes(args.notes)
    score_s = notes[:, 1].sum()
    original_s = (MODEL_CALL_S + notes[:, 2]).sum()
    speed = float(np.ceil((2 * score_s + original_s) / args.budget_s))
    print(f"{len(notes)} notes from {pieces} Bach chorales, {score_s:.0f} s of music at speed 1; "
          f"speed factor {speed:g}")
    print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    rows = [("scheduler", 4, SAMPLER_STEP_S), ("scheduler, 100 ms model", 16, MODEL_CALL_S)]
    for name, lookahead, call_s in rows:
        result = run_scheduler(notes, speed, lookahead, call_s)
        print(f"{name:<24}: |error| median {result['median_ms']:.2f} ms, p99 "
              f"{result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms; drift "
              f"{result['drift_ms']:+.2f} ms over {len(notes)} notes; {result['underruns']} "
              f"underruns (lookahead {lookahead})")
        if name == "scheduler":
            ours = result
    original = run_original(notes, speed)
    print(f"{'original loop':<24}: |error| median {original['median_ms']:.0f} ms, p99 "
          f"{original['p99_ms']:.0f} ms, max {original['max_ms']:.0f} ms; drift "
          f"{original['drift_ms']:+.0f} ms over {len(notes)} notes (x{speed:g} = "
          f"{original['drift_ms'] * speed / 1e3:+.0f} s at speed 1)")
    print(f"total {time.perf_counter() - started:.0f} s")
    print(f"RESULT p99_ms={ours['p99_ms']:.2f} max_ms={ours['max_ms']:.2f} "
          f"drift_ms={ours['drift_ms']:.2f} original_drift_ms={original['drift_ms']:.0f}")


if __name__ == "__main__":
    main()

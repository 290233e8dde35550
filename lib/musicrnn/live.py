"""Live performance: generated notes streamed to a MIDI port on an absolute clock.

The original ``realtime_midi_generator.py`` slept for each note's duration after each model call
and ignored the predicted step, so every model call and every sleep overshoot pushed the rest of
the piece later (it drifted by most of a second per hundred notes) and chords came out as
arpeggios. Here two threads share the work:

* the **generator** thread asks a *note source* (a callable: current :class:`ControlState` ->
  raw ``(pitch, step, duration)``, or ``(pitch, step, duration, velocity)`` from a model with
  velocity) for the next note and keeps a small lookahead buffer full
  (at least ``lookahead`` notes and ``lookahead_s`` seconds of music; the clock starts once it
  is full), so a slow model step is absorbed by the buffer instead of delaying a note;
* the **scheduler** thread plays each note at its onset, the running sum of the predicted steps
  divided by the speed factor, measured from one start time on ``time.perf_counter`` -- an
  absolute clock, so errors never add up -- and ends each note after its predicted duration.

Timing policy (what happens when things go wrong):

* **Late generator.** If the buffer is empty when a note is due, the note plays as soon as it
  arrives -- late -- but its onset stays on the grid: the next notes are still due at their
  original times, so the performance catches up instead of shifting. (Pausing is the one thing
  that moves the grid: on resume the remaining notes move by the length of the pause.)
* **Note-offs.** Every note that sounds gets exactly one note-off, at ``its start + duration /
  speed``. A new note on a pitch that is still sounding on the same channel first ends the old
  note (a note-off, then the new note-on: a re-strike), so a receiver never sees two note-ons of
  one key in a row, and no later note-off can cut the new note short.
* **Stopping.** Stop, Ctrl-C, the end of the duration or an error in the source all end in the
  same place: a note-off for every sounding note, then *All Notes Off* (CC 123) on every channel
  used. Errors are re-raised from :meth:`Performer.run` / :meth:`Performer.wait`.

Controls (:class:`LiveControls`) are thread-safe and take effect at the next note: temperature
(and top-k/top-p, and the velocity temperature of a model with velocity) when the next note is
generated, speed for the next onset, transposition, velocity, dynamics, channel and density when
the next note is played.

Velocity: a note that comes with its own velocity (a model with a velocity head) is played at
that velocity; a note without one at the ``velocity`` control. Either way the ``dynamics``
control scales it (``0.5`` plays everything half as loud, ``1.5`` half as loud again), clipped
to MIDI's 1-127, so the performance keeps the model's phrasing while you turn it up or down. They can be driven by ipywidgets
sliders (:func:`control_panel`), by a MIDI controller (:class:`MidiControlInput` with a
``cc_map`` such as ``{1: ("temperature", 0.1, 2.0)}``, like Magenta's ``magenta_midi``) and by
hand gestures (:mod:`musicrnn.gestures`).

Outputs (:class:`MidiSink`): a named port, a virtual port for a DAW (:func:`open_output`) or a
:class:`MidiRecorder` that stamps each message with the time it was sent and writes a ``.mid``
with those real times. Without a MIDI backend (no ALSA sequencer, as in containers)
:func:`open_output` raises one :class:`MidiBackendError` naming the alternatives.
"""

from __future__ import annotations

import heapq
import inspect
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from .errors import MusicRNNError

NoteTuple = tuple[float, ...]
"""One raw note: (pitch 0-127, step seconds, duration seconds), and optionally its MIDI
velocity 1-127 as a fourth value."""

ALL_NOTES_OFF = 123
"""The MIDI control number of *All Notes Off*."""

CONTROL_NAMES = ("temperature", "top_k", "top_p", "speed", "transpose", "velocity", "dynamics",
                 "velocity_temperature", "channel", "density", "paused", "style", "guidance")

DYNAMICS_RANGE = (0.1, 4.0)
"""The allowed ``dynamics`` scale (the sliders offer 0.25-2.0)."""


class MidiBackendError(MusicRNNError):
    """No MIDI system to talk to (no ALSA sequencer, no CoreMIDI/WinMM), or no such port."""


# -------------------------------------------------------------------------------------------------
# Controls
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlState:
    """One consistent set of live controls (an immutable snapshot)."""

    temperature: float = 1.0  # sampling temperature of the pitch head (> 0)
    top_k: int | None = None  # sample from the k most likely pitches only (None: all)
    top_p: float | None = None  # nucleus sampling: the smallest set with this probability mass
    speed: float = 1.0  # tempo factor: 2.0 plays twice as fast (steps and durations / speed)
    transpose: int = 0  # semitones added to every pitch played
    velocity: int = 90  # MIDI velocity 1-127 of notes that come without their own
    dynamics: float = 1.0  # scale applied to every note's velocity (clipped to 1-127)
    velocity_temperature: float = 1.0  # velocity randomness of a model with velocity (> 0)
    channel: int = 0  # MIDI channel 0-15 of the notes played
    density: float = 1.0  # probability that a generated note sounds (the others become rests)
    paused: bool = False  # True holds the performance; False resumes it
    style: float | None = None  # a conditioned model's style, as a label index (0: none, 1: its
    #                             first style, ...); between two whole numbers, a morph of their
    #                             two styles (1.25: a quarter of the way from 1 to 2). None: the
    #                             style the sampler was made with
    guidance: float = 1.0  # classifier-free guidance of the style (1: plain; > 1: stronger)

    def validated(self) -> "ControlState":
        """Return ``self``; raise :class:`MusicRNNError` naming the first impossible value."""
        problems = []
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            problems.append(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and not 1 <= self.top_k <= 128:
            problems.append(f"top_k must be in [1, 128] or None, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1] or None, got {self.top_p}")
        if not (math.isfinite(self.speed) and 0.01 <= self.speed <= 1000.0):
            problems.append(f"speed must be in [0.01, 1000], got {self.speed}")
        if not -48 <= self.transpose <= 48:
            problems.append(f"transpose must be in [-48, 48] semitones, got {self.transpose}")
        if not 1 <= self.velocity <= 127:
            problems.append(f"velocity must be in [1, 127], got {self.velocity}")
        lo, hi = DYNAMICS_RANGE
        if not (math.isfinite(self.dynamics) and lo <= self.dynamics <= hi):
            problems.append(f"dynamics must be in [{lo}, {hi}], got {self.dynamics}")
        if not (math.isfinite(self.velocity_temperature) and self.velocity_temperature > 0):
            problems.append(f"velocity_temperature must be > 0, got {self.velocity_temperature}")
        if not 0 <= self.channel <= 15:
            problems.append(f"channel must be in [0, 15], got {self.channel}")
        if not 0.0 <= self.density <= 1.0:
            problems.append(f"density must be in [0, 1], got {self.density}")
        if self.style is not None and not (math.isfinite(self.style) and self.style >= 0):
            problems.append(f"style must be a label index >= 0 or None, got {self.style}")
        if not (math.isfinite(self.guidance) and self.guidance >= 0):
            problems.append(f"guidance must be >= 0, got {self.guidance}")
        if problems:
            raise MusicRNNError("invalid live control: " + "; ".join(problems))
        return self


def apply_dynamics(velocity: Any, dynamics: float = 1.0) -> Any:
    """MIDI velocities scaled by ``dynamics`` and clipped to 1-127 (velocity 0 would be a
    note-off): a whole number for one velocity, an ``int16`` array for an array of them.

    Raises:
        MusicRNNError: ``dynamics`` outside :data:`DYNAMICS_RANGE`.
    """
    lo, hi = DYNAMICS_RANGE
    if not (math.isfinite(float(dynamics)) and lo <= float(dynamics) <= hi):
        raise MusicRNNError(f"dynamics must be a scale in [{lo}, {hi}] (1: as generated), "
                            f"got {dynamics}")
    scaled = np.clip(np.rint(np.asarray(velocity, dtype=np.float64) * float(dynamics)), 1, 127)
    return int(scaled) if scaled.ndim == 0 else scaled.astype(np.int16)


CCMap = dict[int, tuple[str, float, float]]
"""MIDI CC number -> (control name, value at CC 0, value at CC 127). ``paused`` reads CC >= 64."""

_INT_CONTROLS = {"top_k", "transpose", "velocity", "channel"}


class LiveControls:
    """The live controls of a performance, shared by the threads that read and change them.

    Every change goes through one lock and replaces the whole :class:`ControlState`, so a reader
    (:meth:`snapshot`) always sees a consistent set. Listeners (:meth:`add_listener`) are told
    after each change -- the scheduler uses this to wake up when the speed changes. MIDI CC
    messages queued with :meth:`send_cc` are passed through to the output by the scheduler (the
    one thread that writes to the port).

    Example::

        controls = LiveControls(temperature=0.8)
        controls.set(speed=1.5, transpose=-12)
        controls.pause(); controls.resume()
    """

    def __init__(self, **initial: Any) -> None:
        self._lock = threading.Lock()
        self._state = self._make(ControlState(), initial)
        self._cc_queue: deque[tuple[int, int, int | None]] = deque()
        self._listeners: list[Callable[[ControlState], None]] = []

    @staticmethod
    def _make(base: ControlState, changes: dict[str, Any]) -> ControlState:
        unknown = sorted(set(changes) - set(CONTROL_NAMES))
        if unknown:
            raise MusicRNNError(
                f"unknown live control(s) {unknown}; the controls are {', '.join(CONTROL_NAMES)}"
            )
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if value is None:
                clean[name] = None
            elif name == "paused":
                clean[name] = bool(value)
            elif name in _INT_CONTROLS:
                clean[name] = int(round(float(value)))
            else:
                clean[name] = float(value)
        return replace(base, **clean).validated()

    def snapshot(self) -> ControlState:
        """The current controls (immutable; safe to keep)."""
        with self._lock:
            return self._state

    def set(self, **changes: Any) -> ControlState:
        """Change some controls at once (validated; bad values raise and change nothing)."""
        with self._lock:
            self._state = self._make(self._state, changes)
            state = self._state
            listeners = list(self._listeners)
        for listener in listeners:
            listener(state)
        return state

    def pause(self) -> ControlState:
        """Hold the performance (sounding notes end at their time; no new notes start)."""
        return self.set(paused=True)

    def resume(self) -> ControlState:
        """Go on after :meth:`pause`; the remaining notes move by the length of the pause."""
        return self.set(paused=False)

    def add_listener(self, listener: Callable[[ControlState], None]) -> None:
        """Call ``listener(state)`` after every change (from the changing thread)."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[ControlState], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # -- MIDI CC: mapped to controls, or passed through to the output ---------------------------
    def send_cc(self, control: int, value: int, channel: int | None = None) -> None:
        """Queue a control change for the output (``channel`` None: the notes' channel)."""
        if not 0 <= int(control) <= 127 or not 0 <= int(value) <= 127:
            raise MusicRNNError(
                f"a MIDI CC needs control and value in 0-127, got {control}={value}")
        with self._lock:
            self._cc_queue.append((int(control), int(value), channel))
        for listener in list(self._listeners):
            listener(self._state)

    def pop_ccs(self) -> list[tuple[int, int, int | None]]:
        """Take every queued control change (the scheduler calls this)."""
        with self._lock:
            items = list(self._cc_queue)
            self._cc_queue.clear()
        return items

    def apply_cc(self, control: int, value: int, cc_map: CCMap) -> bool:
        """Set the control ``cc_map`` assigns to CC ``control``; False if it assigns none.

        The CC value 0-127 maps linearly onto ``(lo, hi)``; for ``paused``, values >= 64 pause.
        """
        if control not in cc_map:
            return False
        name, lo, hi = cc_map[control]
        if name == "paused":
            self.set(paused=value >= 64)
        else:
            self.set(**{name: lo + (hi - lo) * (min(max(int(value), 0), 127) / 127.0)})
        return True

    def handle_message(self, message: Any, cc_map: CCMap | None = None,
                       passthrough: bool = True) -> bool:
        """React to one incoming MIDI message (a ``mido.Message``).

        A control change that ``cc_map`` names sets that control; any other control change is
        passed through to the output when ``passthrough``. Returns True if the message was used.
        """
        if getattr(message, "type", None) != "control_change":
            return False
        if self.apply_cc(message.control, message.value, cc_map or {}):
            return True
        if passthrough:
            self.send_cc(message.control, message.value)
            return True
        return False


def validate_cc_map(cc_map: CCMap) -> CCMap:
    """Check a ``cc_map``: CC numbers 0-127, known control names, numeric ranges."""
    for cc, spec in cc_map.items():
        if not 0 <= int(cc) <= 127:
            raise MusicRNNError(f"cc_map: CC numbers are 0-127, got {cc}")
        if len(spec) != 3 or spec[0] not in CONTROL_NAMES:
            raise MusicRNNError(
                f"cc_map[{cc}] must be (control, lo, hi) with control one of "
                f"{', '.join(CONTROL_NAMES)}; got {spec!r}"
            )
        if spec[0] != "paused":  # both ends of the range must be valid values
            LiveControls(**{spec[0]: spec[1]})
            LiveControls(**{spec[0]: spec[2]})
    return cc_map


# -------------------------------------------------------------------------------------------------
# Outputs
# -------------------------------------------------------------------------------------------------


class MidiSink(Protocol):
    """Where the scheduler sends messages: anything with ``send(message)`` and ``close()``."""

    def send(self, message: Any) -> None: ...

    def close(self) -> None: ...


class PortSink:
    """A mido output port as a :class:`MidiSink` (what :func:`open_output` returns)."""

    def __init__(self, port: Any, description: str) -> None:
        self.port = port
        self.description = description

    def send(self, message: Any) -> None:
        self.port.send(message)

    def close(self) -> None:
        self.port.close()

    def __repr__(self) -> str:
        return f"PortSink({self.description})"


class MidiRecorder:
    """A :class:`MidiSink` that keeps every message with the time it was sent.

    ``events`` holds ``(seconds, message)`` pairs on ``clock`` (``time.perf_counter``, the
    scheduler's clock); :meth:`save` writes them as a standard MIDI file whose times are the
    real send times (relative to the first message), at a 0.5 ms resolution; ``close`` saves to
    ``path`` when one was given and something was recorded. Writing is atomic: a crash leaves
    no half-written file.
    """

    TICKS_PER_BEAT = 960  # with the default tempo (120 bpm): 1 tick = 0.52 ms
    TEMPO = 500_000  # microseconds per beat (the MIDI default, 120 bpm)

    def __init__(self, path: str | os.PathLike | None = None, *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.path = Path(path) if path is not None else None
        self.clock = clock
        self.events: list[tuple[float, Any]] = []
        self._lock = threading.Lock()
        self.closed = False

    def send(self, message: Any) -> None:
        stamp = self.clock()
        with self._lock:
            self.events.append((stamp, message.copy()))

    def snapshot(self) -> list[tuple[float, Any]]:
        with self._lock:
            return list(self.events)

    def to_midi_file(self):
        """The recording as a ``mido.MidiFile`` (one track, real times)."""
        import mido

        midi = mido.MidiFile(ticks_per_beat=self.TICKS_PER_BEAT)
        track = mido.MidiTrack()
        midi.tracks.append(track)
        track.append(mido.MetaMessage("set_tempo", tempo=self.TEMPO, time=0))
        track.append(mido.MetaMessage("track_name", name="musicrnn live", time=0))
        events = self.snapshot()
        origin = events[0][0] if events else 0.0
        seconds_per_tick = self.TEMPO / 1e6 / self.TICKS_PER_BEAT
        previous = 0
        for stamp, message in events:
            # Round absolute times, then take differences: rounding never accumulates.
            tick = int(round((stamp - origin) / seconds_per_tick))
            track.append(message.copy(time=tick - previous))
            previous = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        return midi

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the recording to ``path`` (default: the recorder's ``path``), atomically."""
        from .paths import atomic_path

        target = Path(path) if path is not None else self.path
        if target is None:
            raise MusicRNNError("MidiRecorder.save needs a path (none was given to the recorder)")
        midi = self.to_midi_file()
        with atomic_path(target) as tmp:
            midi.save(str(tmp))
        return target

    def close(self) -> None:
        """Save to ``path`` (if given) -- unless nothing was recorded: a performance that failed
        before its first message leaves no empty file behind."""
        if not self.closed and self.path is not None and self.events:
            self.save()
        self.closed = True

    def __repr__(self) -> str:
        where = str(self.path) if self.path else "in memory"
        return f"MidiRecorder({where}, {len(self.events)} messages)"


_BACKEND_HELP = (
    "Record to a file instead (`musicrnn perform --record FILE.mid`, or output=\"record\" in "
    "notebook 07), or give this machine a MIDI system and then use --port NAME or --virtual: on "
    "Linux load the ALSA sequencer (`sudo modprobe snd-seq`; in a container pass /dev/snd) and "
    "start a synth such as `fluidsynth -a pulseaudio -m alsa_seq SOUNDFONT.sf2` or a virtual "
    "MIDI driver; on macOS enable the IAC Driver; on Windows install loopMIDI"
)


def _quietly(call: Callable[[], Any]) -> tuple[Any, BaseException | None, str]:
    """Run ``call()`` with file descriptor 2 captured: ``(result, error, captured text)``.

    C libraries (ALSA's ``ALSA lib ... open /dev/snd/seq failed``) write straight to fd 2. On
    success the text is written back unchanged; on a failure the caller folds it into its one
    clear message instead of leaving a stray line above it. Only backend errors are caught.
    """
    result: Any = None
    error: BaseException | None = None
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (some embedded interpreters): nothing to capture
        saved = None
    with tempfile.TemporaryFile(mode="w+b") as sink:
        if saved is not None:
            sys.stderr.flush()
            os.dup2(sink.fileno(), 2)
        try:
            result = call()
        except (OSError, ImportError, RuntimeError, NotImplementedError) as exc:
            error = exc  # rtmidi's SystemError is an OSError
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace")
    if error is None and text:
        sys.stderr.write(text)
    return result, error, text


def _backend_error(exc: BaseException, c_text: str, what: str) -> MidiBackendError:
    detail = " ".join(f"{exc}".split())
    c_lines = [" ".join(line.split()) for line in c_text.splitlines() if line.strip()]
    if c_lines:
        detail += f" [{c_lines[0]}]"
    return MidiBackendError(f"no MIDI backend to {what} ({type(exc).__name__}: {detail}). "
                            f"{_BACKEND_HELP}.")


def list_output_names() -> list[str]:
    """The MIDI output ports of this machine; :class:`MidiBackendError` if there is no backend."""
    try:
        import mido
    except ImportError as exc:  # pragma: no cover - mido is a core dependency
        raise MidiBackendError(
            f"mido is not installed ({exc}); pip install mido python-rtmidi") from exc
    names, failure, text = _quietly(lambda: list(mido.get_output_names()))
    if failure is not None:
        raise _backend_error(failure, text, "list MIDI ports") from failure
    return names


def open_output(port: str | None = None, *, virtual: bool = False,
                virtual_name: str = "Music RNN") -> PortSink:
    """Open a MIDI output: the port named ``port``, or a new virtual port (``virtual=True``).

    A virtual port (ALSA, CoreMIDI, JACK; not Windows) appears to other programs -- a DAW or a
    soft synth -- as a MIDI input called ``virtual_name``. Without a MIDI backend this raises
    one :class:`MidiBackendError` that names the alternatives (record to a file, or set up a
    MIDI system); an unknown port name gets the list of the ports there are.
    """
    import mido

    if virtual == (port is not None):
        raise MusicRNNError("open_output needs either a port name or virtual=True (not both)")
    if virtual:
        opened, failure, text = _quietly(lambda: mido.open_output(virtual_name, virtual=True))
        if isinstance(failure, NotImplementedError):
            raise MidiBackendError(
                f"this MIDI backend cannot make virtual ports ({failure}); start a loopback "
                "driver (loopMIDI on Windows) and use --port NAME, or use --record FILE.mid"
            ) from failure
        if failure is not None:
            raise _backend_error(failure, text, "open a virtual port") from failure
        return PortSink(opened, f"virtual port {virtual_name!r}")
    names = list_output_names()
    if port not in names:
        listed = ", ".join(repr(n) for n in names) if names else "none"
        raise MidiBackendError(
            f"no MIDI output port named {port!r}; the ports here are: {listed}. "
            "Use one of them, --virtual, or --record FILE.mid"
        )
    opened, failure, text = _quietly(lambda: mido.open_output(port))
    if failure is not None:
        raise _backend_error(failure, text, f"open {port!r}") from failure
    return PortSink(opened, f"port {port!r}")


class MidiControlInput:
    """Listen to a MIDI input port (a controller's knobs) and drive :class:`LiveControls`.

    ``cc_map`` assigns controller numbers to controls, e.g. ``{1: ("temperature", 0.1, 2.0)}``
    turns the mod wheel into a temperature knob (Magenta's ``magenta_midi`` does the same with
    its control-number flags); other CCs are passed through to the output when ``passthrough``.
    Messages arrive on mido's callback thread; the controls' lock makes that safe.
    """

    def __init__(self, controls: LiveControls, port: str, cc_map: CCMap | None = None,
                 passthrough: bool = True) -> None:
        import mido

        self.controls = controls
        self.cc_map = validate_cc_map(dict(cc_map or {}))
        self.passthrough = passthrough
        names, failure, text = _quietly(lambda: list(mido.get_input_names()))
        if failure is not None:
            raise _backend_error(failure, text, "open a MIDI input") from failure
        missing = None if port in names else names
        self.port = None
        if missing is None:
            self.port, failure, text = _quietly(
                lambda: mido.open_input(port, callback=self._on_message))
            if failure is not None:
                raise _backend_error(failure, text, f"open the MIDI input {port!r}") from failure
        if missing is not None:
            listed = ", ".join(repr(n) for n in missing) if missing else "none"
            raise MidiBackendError(f"no MIDI input port named {port!r}; the inputs here are: "
                                   f"{listed}")

    def _on_message(self, message: Any) -> None:
        self.controls.handle_message(message, self.cc_map, self.passthrough)

    def close(self) -> None:
        if self.port is not None:
            self.port.close()


# -------------------------------------------------------------------------------------------------
# Note sources
# -------------------------------------------------------------------------------------------------

NoteSource = Callable[[ControlState], NoteTuple]
"""Anything that returns the next raw (pitch, step, duration) -- or (pitch, step, duration,
velocity) -- given the current controls.

Raise ``StopIteration`` to end the performance after the notes already given.
"""


class SamplerSource:
    """A :class:`musicrnn.generation.Sampler` as a note source: one LSTM step per note.

    The sampler carries its recurrent state from note to note, so each call costs one step,
    whatever the length of the piece; the controls' temperature, top-k and top-p apply to the
    note being generated, and so does their velocity temperature when the sampler takes one
    (a model with velocity). A sampler that gives 4-column notes gives each note its velocity.
    """

    def __init__(self, sampler: Any, primer: np.ndarray | None = None) -> None:
        self.sampler = sampler
        try:
            accepted = inspect.signature(sampler.next_note).parameters
        except (TypeError, ValueError):  # a callable without a signature: pass the basics only
            accepted = {}
        self.takes_velocity_temperature = "velocity_temperature" in accepted
        self.styles: tuple[str, ...] = tuple(getattr(sampler, "styles", ()) or ())
        # (style, guidance) in force: the sampler's own until a control changes them
        self._style: tuple[float | None, float] = (None, float(getattr(sampler, "guidance", 1.0)))
        if primer is not None:
            sampler.prime(np.asarray(primer, dtype=np.float32))

    def _follow_style(self, controls: ControlState) -> None:
        """Switch (or morph) the sampler's style and guidance when the controls changed them:
        the next note is the first in the new style."""
        wanted = (controls.style, controls.guidance)
        if wanted == self._style or not self.styles:
            return
        style, guidance = wanted
        if guidance != self._style[1]:
            self.sampler.set_guidance(guidance)
        if style is not None and style != self._style[0]:
            top = len(self.styles) - 1
            value = min(float(style), float(top))
            low = int(math.floor(value))
            if value == low:
                self.sampler.set_style(low)
            else:
                self.sampler.morph(low, low + 1, value - low)
        self._style = wanted

    def __call__(self, controls: ControlState) -> NoteTuple:
        self._follow_style(controls)
        options: dict[str, Any] = {}
        if self.takes_velocity_temperature:
            options["velocity_temperature"] = controls.velocity_temperature
        batch = np.asarray(self.sampler.next_note(
            temperature=controls.temperature, top_k=controls.top_k, top_p=controls.top_p,
            **options), dtype=np.float64)
        note = batch.reshape(-1, batch.shape[-1])[0]
        return tuple(float(v) for v in note[:4])


def style_mix_name(styles: Sequence[str], value: float) -> str:
    """What the ``style`` control's ``value`` plays among ``styles`` (``("none", ...)``): one
    style at a whole number, ``"70% a, 30% b"`` between two."""
    from .styles import mix_name

    value = min(max(float(value), 0.0), float(len(styles) - 1))
    low = int(math.floor(value))
    weights = np.zeros(len(styles))
    weights[low] = 1.0 - (value - low)
    if low + 1 < len(styles):
        weights[low + 1] = value - low
    return mix_name(styles, weights)


def source_from_run(run_dir: str | os.PathLike, *, seed: int | None = None,
                    primer: np.ndarray | None = None, style: Any = None,
                    guidance: float = 1.0) -> SamplerSource:
    """A :class:`SamplerSource` for the trained model in ``run_dir``, primed with its seed notes.

    ``primer`` (raw ``(n, 3)`` notes) replaces the run's ``seed_sequence.npy``. A conditioned
    model starts in ``style`` with ``guidance`` and keeps its "none" twin, so that the
    ``style`` and ``guidance`` controls can change both at any note.
    """
    from .generation import Sampler
    from .model import load_run

    run = load_run(run_dir, compile=False)  # sampled, never trained
    sampler = Sampler(run.model, batch_size=1, seed=seed, config=run.config, style=style,
                      guidance=guidance, twins=True)
    return SamplerSource(sampler, run.seed_sequence if primer is None else primer)


class ReplaySource:
    """Play back a fixed note array as a note source (to audition a file, in tests, benchmarks).

    ``notes`` are raw ``(n, 3)`` (pitch, step, duration) or ``(n, 4)`` with each note's MIDI
    velocity last. ``delay_s`` makes every call take that long (a stand-in for a model's
    compute time); ``loop`` starts over at the end, else the performance ends after the last
    note.
    """

    def __init__(self, notes: np.ndarray | Sequence[NoteTuple], *, loop: bool = False,
                 delay_s: float = 0.0) -> None:
        array = np.asarray(notes, dtype=np.float64)
        if array.ndim == 1 and array.size in (3, 4):  # one note
            array = array.reshape(1, -1)
        if array.ndim != 2 or array.shape[1] not in (3, 4):
            raise MusicRNNError("ReplaySource needs raw notes of shape (n, 3) (pitch, step, "
                                f"duration) or (n, 4) with velocity; got {array.shape}")
        self.notes = array
        if not len(self.notes):
            raise MusicRNNError("ReplaySource needs at least one note")
        self.loop = loop
        self.delay_s = float(delay_s)
        self.position = 0
        self.calls: list[ControlState] = []

    def __call__(self, controls: ControlState) -> NoteTuple:
        if self.position >= len(self.notes):
            if not self.loop:
                raise StopIteration
            self.position = 0
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        note = self.notes[self.position]
        self.position += 1
        self.calls.append(controls)
        return tuple(float(v) for v in note)


# -------------------------------------------------------------------------------------------------
# Ctrl-C
# -------------------------------------------------------------------------------------------------


@contextmanager
def sigint_raises() -> Iterator[None]:
    """Inside the block, Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` in the main thread.

    A process started in the background of a non-interactive shell (``cmd &`` in a script, a
    CI runner, cron) inherits SIGINT as *ignored*, and Python then leaves it ignored: Ctrl-C,
    ``kill -INT`` and ``_thread.interrupt_main()`` would reach nothing, and a performance could
    not be stopped cleanly. So the block installs Python's own handler
    (``signal.default_int_handler``) when SIGINT is ignored or left to the system's default, and
    puts the previous disposition back afterwards. A handler a program installed itself is kept
    (it decides what Ctrl-C means there). Off the main thread, where Python cannot install
    signal handlers, it changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if callable(previous):  # a Python handler (the default one, or the program's own)
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        # None: the disposition was set outside Python and cannot be restored by name; the
        # default handler stays, which is what an interactive Python has anyway.
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


# -------------------------------------------------------------------------------------------------
# The performer
# -------------------------------------------------------------------------------------------------


@dataclass
class PlayedNote:
    """One note as it was played. Times are seconds since the performance started (``t0``)."""

    index: int  # 0, 1, ... in the order played
    pitch: int  # the MIDI pitch sent (after transposition)
    raw_pitch: float  # the pitch the source gave
    velocity: int  # the MIDI velocity sent (the note's own or the control's, times dynamics)
    channel: int
    step: float  # the step used, seconds at speed 1 (clamped to [0, max_step])
    duration: float  # the duration used, seconds at speed 1 (clamped)
    speed: float  # the speed factor in force when the note started
    deadline: float  # when it was due
    on: float  # when its note-on was sent
    off: float | None = None  # when its note-off was sent (None while it sounds)
    cut: bool = False  # True when it was ended early: by a re-strike of its pitch or a stop
    raw_velocity: float | None = None  # the velocity the source gave (None: it gave none)

    @property
    def lateness(self) -> float:
        """Seconds the note-on came after its deadline."""
        return self.on - self.deadline


@dataclass
class PerformanceReport:
    """What a performance did, with its timing figures (from the scheduler's own log)."""

    notes_played: int
    notes_skipped: int  # generated but silent (density < 1)
    duration_s: float  # from the first note's deadline to the stop
    lateness_median_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    underruns: int  # notes that were not generated by their deadline
    generation_median_ms: float  # time the note source took per note
    stopped_by: str  # "end", "stop", "error" or "interrupt"

    def __str__(self) -> str:
        return (
            f"{self.notes_played} notes in {self.duration_s:.1f} s ({self.notes_skipped} silent); "
            f"lateness median {self.lateness_median_ms:.2f} ms, p99 "
            f"{self.lateness_p99_ms:.2f} ms, max {self.lateness_max_ms:.2f} ms; "
            f"{self.underruns} underruns; generation {self.generation_median_ms:.1f} ms/note"
        )


@dataclass
class _Pending:
    pitch: float
    step: float
    duration: float
    generated_at: float
    velocity: float | None = None  # the note's own velocity, when the source gives one


class Performer:
    """Play notes from a note source to one or more MIDI sinks, on time.

    Args:
        source: callable ``(ControlState) -> (pitch, step, duration)`` or ``(pitch, step,
            duration, velocity)``, e.g. a :class:`SamplerSource`; runs on the generator thread.
        output: a :class:`MidiSink` or a list of them (each message goes to all).
        controls: the :class:`LiveControls` to read (a new one by default).
        lookahead: notes generated ahead of the one playing, at least.
        lookahead_s: ... and enough of them to cover this many seconds of music (at the speed
            in force), up to ``max_lookahead`` notes: dense music gets more notes buffered, sparse
            music fewer. The clock starts once the buffer is full. A deeper buffer absorbs longer
            stalls of the model; a shallower one makes temperature changes audible sooner (they
            apply when a note is generated, so after the buffered notes).
        max_step, min_duration, max_duration: clamps (seconds at speed 1) for what the source
            predicts: an untrained or surprised model can predict negative or huge values.
        start_delay_s: lead time between the first note being ready and its onset.
        program: a General MIDI program to select on every channel used (None: leave as is).
        seed: seeds the density coin-flips.
        clock: the absolute clock (``time.perf_counter``); tests may pass their own.
        switch_interval_s: while playing, Python's thread switch interval is lowered to this
            (``sys.setswitchinterval``) so the scheduler gets the interpreter back within about
            a millisecond when another thread (the model, a plot) holds it. None: leave it.
        on_note: called on the scheduler thread with each :class:`PlayedNote` right after its
            note-on (keep it quick).
    """

    def __init__(
        self,
        source: NoteSource,
        output: MidiSink | Sequence[MidiSink],
        controls: LiveControls | None = None,
        *,
        lookahead: int = 4,
        lookahead_s: float = 0.5,
        max_lookahead: int = 64,
        max_step: float = 4.0,
        min_duration: float = 0.02,
        max_duration: float = 8.0,
        start_delay_s: float = 0.05,
        program: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
        switch_interval_s: float | None = 0.001,
        on_note: Callable[[PlayedNote], None] | None = None,
        log_limit: int = 100_000,
    ) -> None:
        if not 1 <= lookahead <= max_lookahead:
            raise MusicRNNError(f"need 1 <= lookahead <= max_lookahead notes, got {lookahead} "
                                f"and {max_lookahead}")
        if lookahead_s < 0:
            raise MusicRNNError(f"lookahead_s must be >= 0 seconds, got {lookahead_s}")
        if not 0 <= min_duration <= max_duration or max_step < 0:
            raise MusicRNNError("need 0 <= min_duration <= max_duration and max_step >= 0")
        if program is not None and not 0 <= program <= 127:
            raise MusicRNNError(f"program must be a General MIDI program 0-127, got {program}")
        self.source = source
        self.outputs: list[MidiSink] = (
            list(output) if isinstance(output, (list, tuple)) else [output]  # type: ignore[list-item]
        )
        if not self.outputs:
            raise MusicRNNError("Performer needs at least one output")
        self.controls = controls if controls is not None else LiveControls()
        self.lookahead = int(lookahead)
        self.lookahead_s = float(lookahead_s)
        self.max_lookahead = int(max_lookahead)
        self.max_step = float(max_step)
        self.min_duration = float(min_duration)
        self.max_duration = float(max_duration)
        self.start_delay_s = float(start_delay_s)
        self.program = program
        self.clock = clock
        self.switch_interval_s = switch_interval_s
        self.on_note = on_note
        self.log_limit = int(log_limit)
        self._rng = np.random.default_rng(seed)

        self._buffer: deque[_Pending] = deque()
        self._space = threading.Condition()  # guards _buffer; the generator waits for room
        self._wake = threading.Event()  # wakes the scheduler: new note, control change, stop
        self._stop = threading.Event()
        self._done = threading.Event()
        self._source_done = False
        self._log_lock = threading.Lock()
        self._log: deque[PlayedNote] = deque(maxlen=self.log_limit)
        self._n_played = 0
        self._n_skipped = 0
        self._underruns = 0
        self._generation_s: deque[float] = deque(maxlen=10_000)
        self._errors: list[BaseException] = []
        self._stopped_by = "end"
        self._threads: list[threading.Thread] = []
        self._old_switch: float | None = None
        self._max_notes: int | None = None
        self._n_generated = 0
        self.t0: float | None = None  # the clock time of the first note's deadline
        self._ended_at: float | None = None
        self._channels_used: set[int] = set()
        self._pause_asked: float | None = None
        self._resume_asked: float | None = None
        self._sounding: dict[tuple[int, int], PlayedNote] = {}
        self._offs: list[tuple[float, int, PlayedNote]] = []

    # -- life cycle -------------------------------------------------------------------------------
    def start(self, max_notes: int | None = None) -> "Performer":
        """Start the generator and scheduler threads; returns at once."""
        if self._threads:
            raise MusicRNNError("this Performer has already been started; make a new one")
        self._max_notes = max_notes
        self.controls.add_listener(self._on_control_change)
        if self.switch_interval_s is not None:
            self._old_switch = sys.getswitchinterval()
            sys.setswitchinterval(min(self._old_switch, self.switch_interval_s))
        self._threads = [
            threading.Thread(target=self._generate_loop, name="musicrnn-generator", daemon=True),
            threading.Thread(target=self._play_loop, name="musicrnn-scheduler", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, reason: str = "stop") -> None:
        """Stop now: every sounding note gets its note-off, then All Notes Off. Idempotent."""
        if not self._stop.is_set():
            if self._stopped_by == "end":
                self._stopped_by = reason
            self._stop.set()
        self._wake.set()
        with self._space:
            self._space.notify_all()
        self._join()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the performance to end; re-raise a source error. True if it has ended."""
        ended = self._done.wait(timeout)
        if ended:
            self._join()
            self._raise_error()
        return ended

    def run(self, duration_s: float | None = None,
            max_notes: int | None = None) -> PerformanceReport:
        """Play for ``duration_s`` seconds (or ``max_notes`` notes, or until the source ends).

        Blocks. Ctrl-C stops the performance cleanly (all notes off) and re-raises
        ``KeyboardInterrupt`` -- also in a process that was started with SIGINT ignored (see
        :func:`sigint_raises`); an error in the note source stops it the same way and is
        re-raised here.
        """
        if duration_s is not None and duration_s <= 0:
            raise MusicRNNError(f"duration must be > 0 seconds, got {duration_s}")
        with sigint_raises():
            self.start(max_notes=max_notes)
            try:
                while not self._done.is_set():
                    # The duration counts from the first note (a model's first step can be slow).
                    remaining = 0.1
                    if duration_s is not None and self.t0 is not None:
                        remaining = self.t0 + duration_s - self.clock()
                        if remaining <= 0:
                            break
                    self._done.wait(min(0.1, remaining))
            except KeyboardInterrupt:
                self.stop("interrupt")
                raise
        self.stop("end")
        self._raise_error()
        return self.report()

    @property
    def running(self) -> bool:
        return bool(self._threads) and not self._done.is_set()

    def __enter__(self) -> "Performer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._threads:
            self.stop("error" if exc_type else "stop")

    # -- what happened ----------------------------------------------------------------------------
    def played(self, since: float | None = None) -> list[PlayedNote]:
        """A snapshot (copies) of the notes played, those starting at or after ``since``.

        The lock is held only to copy the log's list of references (a C-level copy); the notes
        are copied after it is released, so a display loop never holds up the scheduler.
        """
        with self._log_lock:
            notes = list(self._log)
        if since is not None:
            first = len(notes)
            while first > 0 and notes[first - 1].on >= since:
                first -= 1
            notes = notes[first:]
        return [replace(n) for n in notes]

    @property
    def notes_played(self) -> int:
        return self._n_played

    def now(self) -> float:
        """Seconds since the performance started (negative before the first note)."""
        return self.clock() - self.t0 if self.t0 is not None else 0.0

    def report(self) -> PerformanceReport:
        notes = self.played()
        late = np.array([n.lateness for n in notes]) * 1e3 if notes else np.zeros(1)
        gen = np.array(self._generation_s) * 1e3 if self._generation_s else np.zeros(1)
        end = self._ended_at if self._ended_at is not None else self.clock()
        return PerformanceReport(
            notes_played=self._n_played,
            notes_skipped=self._n_skipped,
            duration_s=(end - self.t0) if self.t0 is not None else 0.0,
            lateness_median_ms=float(np.median(late)),
            lateness_p99_ms=float(np.percentile(late, 99)),
            lateness_max_ms=float(late.max()),
            underruns=self._underruns,
            generation_median_ms=float(np.median(gen)),
            stopped_by=self._stopped_by if not self._errors else "error",
        )

    # -- internals --------------------------------------------------------------------------------
    def _on_control_change(self, state: ControlState) -> None:
        # Note when a pause was asked for and when it ended (on the asking thread), so the grid
        # moves by exactly the pause, however late the scheduler notices it.
        if state.paused and self._pause_asked is None:
            self._pause_asked = self.clock()
        elif not state.paused and self._pause_asked is not None and self._resume_asked is None:
            self._resume_asked = self.clock()
        self._wake.set()

    def _join(self) -> None:
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5.0)

    def _raise_error(self) -> None:
        if self._errors:
            raise self._errors[0]

    def _fail(self, exc: BaseException) -> None:
        self._errors.append(exc)
        self._stopped_by = "error"
        self._stop.set()
        self._wake.set()

    def _buffer_full(self) -> bool:
        """Enough notes ahead (call with ``self._space`` held)."""
        n = len(self._buffer)
        if n >= self.max_lookahead:
            return True
        if n < self.lookahead:
            return False
        speed = self.controls.snapshot().speed
        return sum(note.step for note in self._buffer) / speed >= self.lookahead_s

    def _generate_loop(self) -> None:
        try:
            while not self._stop.is_set():
                with self._space:
                    while self._buffer_full() and not self._stop.is_set():
                        self._space.wait(0.1)
                if self._stop.is_set():
                    return
                state = self.controls.snapshot()
                if state.paused:
                    time.sleep(0.01)
                    continue
                if self._max_notes is not None and self._n_generated >= self._max_notes:
                    break
                began = self.clock()
                try:
                    values = tuple(self.source(state))
                except StopIteration:
                    break
                ended = self.clock()
                self._generation_s.append(ended - began)
                if len(values) not in (3, 4):
                    raise MusicRNNError("a note source must return (pitch, step, duration) or "
                                        f"(pitch, step, duration, velocity); got {values!r}")
                pitch, step, duration = values[:3]
                note = _Pending(
                    pitch=float(pitch),
                    step=min(max(float(step), 0.0), self.max_step),
                    duration=min(max(float(duration), self.min_duration), self.max_duration),
                    generated_at=ended,
                    velocity=float(values[3]) if len(values) == 4 else None,
                )
                checked = (note.pitch, note.step, note.duration,
                           1.0 if note.velocity is None else note.velocity)
                if not all(math.isfinite(v) for v in checked):
                    raise MusicRNNError(f"the note source returned a non-finite note {note}")
                with self._space:
                    self._buffer.append(note)
                self._n_generated += 1
                self._wake.set()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of run()/wait()
            self._fail(exc)
        finally:
            self._source_done = True
            self._wake.set()

    def _send(self, message: Any) -> None:
        for output in self.outputs:
            output.send(message)

    def _take(self) -> _Pending | None:
        with self._space:
            if not self._buffer:
                return None
            note = self._buffer.popleft()
            self._space.notify_all()
        return note

    def _end_note(self, note: PlayedNote, now: float, cut: bool) -> None:
        import mido

        self._send(mido.Message("note_off", note=note.pitch, velocity=0, channel=note.channel))
        note.off = now - (self.t0 or 0.0)
        note.cut = cut
        self._sounding.pop((note.channel, note.pitch), None)

    def _fire_offs(self, now: float) -> None:
        while self._offs and self._offs[0][0] <= now:
            _, _, note = heapq.heappop(self._offs)
            if self._sounding.get((note.channel, note.pitch)) is note:
                self._end_note(note, self.clock(), cut=False)

    def _pass_ccs(self, state: ControlState) -> None:
        import mido

        for control, value, channel in self.controls.pop_ccs():
            ch = state.channel if channel is None else channel
            self._send(mido.Message("control_change", control=control, value=value, channel=ch))

    def _play(self, pending: _Pending, deadline: float, state: ControlState, index: int) -> None:
        import mido

        pitch = int(min(max(round(pending.pitch) + state.transpose, 0), 127))
        channel = state.channel
        if channel not in self._channels_used:
            self._channels_used.add(channel)
            if self.program is not None:
                self._send(mido.Message("program_change", program=self.program, channel=channel))
        old = self._sounding.get((channel, pitch))
        if old is not None:  # a re-strike: end the sounding note of this key first
            self._end_note(old, self.clock(), cut=True)
        own = pending.velocity
        velocity = apply_dynamics(state.velocity if own is None else own, state.dynamics)
        self._send(mido.Message("note_on", note=pitch, velocity=velocity, channel=channel))
        sent = self.clock()
        note = PlayedNote(
            index=index, pitch=pitch, raw_pitch=pending.pitch, velocity=velocity,
            channel=channel, step=pending.step, duration=pending.duration, speed=state.speed,
            deadline=deadline - self.t0, on=sent - self.t0,  # type: ignore[operator]
            raw_velocity=own,
        )
        self._sounding[(channel, pitch)] = note
        heapq.heappush(self._offs, (sent + pending.duration / state.speed, index, note))
        with self._log_lock:
            self._log.append(note)
        self._n_played += 1
        if self.on_note is not None:
            self.on_note(replace(note))

    def _silence(self) -> None:
        """Note-off for every sounding note, then All Notes Off on every channel used."""
        import mido

        failures: list[BaseException] = []
        for note in list(self._sounding.values()):
            try:
                self._end_note(note, self.clock(), cut=True)
            except Exception as exc:  # noqa: BLE001 - keep silencing the others
                failures.append(exc)
                self._sounding.pop((note.channel, note.pitch), None)
        self._offs.clear()
        for channel in sorted(self._channels_used):
            try:
                self._send(mido.Message("control_change", control=ALL_NOTES_OFF, value=0,
                                        channel=channel))
            except Exception as exc:  # noqa: BLE001
                failures.append(exc)
        if failures and not self._errors:
            self._errors.append(failures[0])

    def _sleep_until(self, when: float) -> None:
        remaining = when - self.clock()
        if remaining > 0:
            self._wake.wait(remaining)

    def _play_loop(self) -> None:
        import mido

        clock = self.clock
        try:
            # Warm up what the first note-on will use, so it is not the one paying for it.
            mido.Message("note_on", note=60, velocity=1, channel=0).copy(time=0)
            # Wait until the buffer is full (the generator has a head start), then put the
            # grid's origin a little ahead.
            while not self._stop.is_set():
                self._wake.clear()
                with self._space:
                    ready = self._buffer_full()
                if ready or self._source_done:
                    break
                self._wake.wait(0.1)
            if self._stop.is_set():
                return
            self.t0 = clock() + self.start_delay_s
            last_onset = self.t0  # the deadline of the previous note: the grid
            pending: _Pending | None = None
            first = True
            starved = False
            paused_at: float | None = None
            index = 0
            while not self._stop.is_set():
                self._wake.clear()
                now = clock()
                self._fire_offs(now)
                state = self.controls.snapshot()
                self._pass_ccs(state)
                if state.paused:
                    if paused_at is None:
                        paused_at = self._pause_asked or now
                    self._sleep_until(self._offs[0][0] if self._offs else now + 0.05)
                    continue
                if paused_at is not None:  # resume: move the grid by the length of the pause
                    resumed_at = self._resume_asked or now
                    last_onset += max(resumed_at - paused_at, 0.0)
                    paused_at = self._pause_asked = self._resume_asked = None
                elif self._resume_asked is not None:  # a pause too short to be noticed
                    self._pause_asked = self._resume_asked = None
                if pending is None:
                    pending = self._take()
                    if pending is None:
                        if self._source_done:
                            if not self._offs:
                                break  # every note played and ended
                            self._sleep_until(self._offs[0][0])
                            continue
                        # The buffer is empty: wait for the generator (or the next note-off).
                        starved = True
                        self._sleep_until(self._offs[0][0] if self._offs else now + 0.05)
                        continue
                    if starved and not first and last_onset + pending.step / state.speed < now:
                        self._underruns += 1  # it came after its deadline: it will be late
                    starved = False
                # Speed is read at every wake-up, so a change moves the next onset at once.
                deadline = last_onset if first else last_onset + pending.step / state.speed
                if now >= deadline:
                    if self._rng.random() < state.density:
                        self._play(pending, deadline, state, index)
                        index += 1
                    else:
                        self._n_skipped += 1
                    last_onset = deadline  # the grid, not the actual time: no drift
                    pending = None
                    first = False
                    continue
                self._sleep_until(min(deadline, self._offs[0][0]) if self._offs else deadline)
        except BaseException as exc:  # noqa: BLE001 - re-raised by run()/wait()
            self._fail(exc)
        finally:
            try:
                self._silence()
            finally:
                self._ended_at = clock()
                self._stop.set()
                with self._space:
                    self._space.notify_all()
                self.controls.remove_listener(self._on_control_change)
                if self._old_switch is not None:
                    sys.setswitchinterval(self._old_switch)
                    self._old_switch = None
                self._done.set()


# -------------------------------------------------------------------------------------------------
# Showing it: a live piano roll and sliders
# -------------------------------------------------------------------------------------------------


def draw_played_notes(notes: Sequence[PlayedNote], ax: Any, *, start: float | None = None,
                      end: float | None = None, now: float | None = None,
                      title: str | None = None) -> Any:
    """Draw played notes as a piano roll on ``ax`` (x: seconds of the performance, y: pitch).

    Notes still sounding are drawn up to ``now``; ``start``/``end`` set the window.
    """
    from matplotlib.collections import PolyCollection

    ax.clear()
    polys, colors = [], []
    right = now if now is not None else max((n.off or n.on for n in notes), default=1.0)
    for n in notes:
        off = n.off if n.off is not None else max(right, n.on)
        polys.append([(n.on, n.pitch - 0.4), (off, n.pitch - 0.4), (off, n.pitch + 0.4),
                      (n.on, n.pitch + 0.4)])
        colors.append((0.15, 0.35 + 0.5 * (n.velocity / 127.0), 0.75, 0.9))
    ax.add_collection(PolyCollection(polys, facecolors=colors, edgecolors="none"))
    pitches = [n.pitch for n in notes] or [60]
    ax.set_ylim(min(pitches) - 3, max(pitches) + 3)
    left = start if start is not None else min((n.on for n in notes), default=0.0)
    ax.set_xlim(left, end if end is not None else max(right, left + 1.0))
    if now is not None:
        ax.axvline(now, color="crimson", lw=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("MIDI pitch")
    if title:
        ax.set_title(title)
    return ax


def piano_roll_svg(notes: Sequence[PlayedNote], *, start: float, end: float,
                   now: float | None = None, width: int = 900, height: int = 260,
                   title: str = "") -> str:
    """A piano roll of ``notes`` between ``start`` and ``end`` seconds as an SVG document.

    Plain string building: cheap, and pure Python, so the interpreter can switch to the
    scheduler's thread at any moment while it runs -- unlike a matplotlib render, whose long C
    calls hold the interpreter lock for tens of milliseconds and would make notes late.
    """
    pad_l, pad_r, pad_t, pad_b = 40, 10, 22, 18
    pitches = [n.pitch for n in notes] or [60]
    low, high = min(pitches) - 2, max(pitches) + 2
    span = max(end - start, 1e-6)
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    row = plot_h / max(high - low + 1, 1)

    def x(t: float) -> float:
        return pad_l + plot_w * (min(max(t, start), end) - start) / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
        f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" fill="#f6f6f6"/>',
        f'<text x="{pad_l}" y="14">{title}</text>',
    ]
    for pitch in range(low, high + 1):
        if pitch % 12 == 0:  # a line and a label at every C
            y = pad_t + (high - pitch) * row
            parts.append(f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{y + row:.1f}" '
                         f'y2="{y + row:.1f}" stroke="#ccc"/>')
            parts.append(f'<text x="4" y="{y + row:.1f}">C{pitch // 12 - 1}</text>')
    right = now if now is not None else end
    for n in notes:
        off = n.off if n.off is not None else right
        if off < start or n.on > end:
            continue
        x0, x1 = x(n.on), x(off)
        y = pad_t + (high - n.pitch) * row
        shade = int(60 + 140 * (1 - n.velocity / 127))
        parts.append(f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 1.0):.1f}" '
                     f'height="{max(row - 1, 1):.1f}" fill="rgb(30,{shade},200)"/>')
    if now is not None:
        parts.append(f'<line x1="{x(now):.1f}" x2="{x(now):.1f}" y1="{pad_t}" '
                     f'y2="{pad_t + plot_h}" stroke="crimson"/>')
    parts.append(f'<text x="{pad_l}" y="{height - 4}">{start:.1f} s</text>')
    parts.append(f'<text x="{width - pad_r}" y="{height - 4}" text-anchor="end">{end:.1f} s</text>')
    parts.append("</svg>")
    return "".join(parts)


class LivePianoRoll:
    """A piano roll of the last ``window_s`` seconds, redrawn from the performer's log.

    Call :meth:`update` from a display loop (the notebook's main thread). It copies a snapshot
    of the played notes (holding the log's lock only for a list copy) and draws an SVG in pure
    Python, so the scheduler's thread is never kept waiting: not by the lock, and not by a long
    C call holding the interpreter lock (a matplotlib render would, for 20-60 ms at a time).
    """

    def __init__(self, performer: Performer, window_s: float = 8.0, width: int = 900,
                 height: int = 260) -> None:
        self.performer = performer
        self.window_s = float(window_s)
        self.width, self.height = int(width), int(height)
        self.handle = None
        self.frames = 0
        self.notes_drawn = 0
        self.svg = ""

    def draw(self) -> str:
        """The SVG of the current window (also kept in ``self.svg``)."""
        now = self.performer.now()
        notes = self.performer.played(since=now - self.window_s - self.performer.max_duration)
        left = max(0.0, now - self.window_s)
        right = max(now, left + self.window_s)
        self.notes_drawn = sum(1 for n in notes
                               if (n.off if n.off is not None else now) >= left and n.on <= right)
        self.svg = piano_roll_svg(notes, start=left, end=right, now=now, width=self.width,
                                  height=self.height,
                                  title=f"live: {self.performer.notes_played} notes played")
        self.frames += 1
        return self.svg

    def update(self) -> None:
        """Redraw, and refresh the notebook output (an IPython ``display`` handle)."""
        from IPython.display import SVG, display

        image = SVG(self.draw())
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)


def control_panel(controls: LiveControls, styles: Sequence[str] = ()) -> Any:
    """ipywidgets sliders bound to ``controls`` (temperature, speed, transposition, ...).

    ``velocity`` sets the level of notes without their own velocity; ``dynamics`` scales every
    note's velocity; ``vel. temp.`` is the velocity temperature of a model with velocity. With
    a conditioned model's ``styles`` (``("none", ...)``, e.g. :attr:`SamplerSource.styles`) a
    ``style`` slider moves through them (between two, a morph; its label names the mix) and a
    ``guidance`` slider sets how strongly the style is played.
    """
    import ipywidgets as widgets

    state = controls.snapshot()
    sliders = {
        "temperature": widgets.FloatSlider(value=state.temperature, min=0.05, max=3.0, step=0.05,
                                           description="temperature"),
        "speed": widgets.FloatLogSlider(value=state.speed, base=2, min=-2, max=3, step=0.05,
                                        description="speed"),
        "transpose": widgets.IntSlider(value=state.transpose, min=-24, max=24,
                                       description="transpose"),
        "velocity": widgets.IntSlider(value=state.velocity, min=1, max=127,
                                      description="velocity"),
        "dynamics": widgets.FloatSlider(value=state.dynamics, min=0.25, max=2.0, step=0.05,
                                        description="dynamics"),
        "velocity_temperature": widgets.FloatSlider(
            value=state.velocity_temperature, min=0.05, max=3.0, step=0.05,
            description="vel. temp."),
        "density": widgets.FloatSlider(value=state.density, min=0.0, max=1.0, step=0.05,
                                       description="density"),
        "paused": widgets.ToggleButton(value=state.paused, description="pause",
                                       icon="pause"),
    }

    if len(styles) > 1:
        sliders["style"] = widgets.FloatSlider(
            value=float(state.style or 0.0), min=0.0, max=float(len(styles) - 1), step=0.05,
            description="style", readout=False)
        sliders["guidance"] = widgets.FloatSlider(value=state.guidance, min=0.0, max=5.0,
                                                  step=0.25, description="guidance")
        named = widgets.Label(value=style_mix_name(styles, sliders["style"].value))
        sliders["style"].observe(
            lambda change: setattr(named, "value", style_mix_name(styles, change["new"])),
            names="value")

    def bind(name: str, widget: Any) -> None:
        widget.observe(lambda change: controls.set(**{name: change["new"]}), names="value")

    for name, widget in sliders.items():
        bind(name, widget)
    shown = list(sliders.values())
    if "style" in sliders:
        shown.insert(shown.index(sliders["style"]) + 1, named)
    box = widgets.VBox(shown)
    box.sliders = sliders  # type: ignore[attr-defined]
    return box


# -------------------------------------------------------------------------------------------------
# One call for the CLI and the notebook
# -------------------------------------------------------------------------------------------------


def resolve_run_dir(run_dir: str | os.PathLike | None) -> Path:
    """``run_dir`` as a Path ("" or None: the newest trained run); a missing folder is refused
    here, before any MIDI port is opened."""
    from .generation import resolve_run_dir as newest_or_given

    path = newest_or_given(run_dir)
    if not path.is_dir():
        raise MusicRNNError(f"no run directory at {path}; train one first (notebook 04 or "
                            "`musicrnn train`) or pass --run-dir")
    return path


def make_output(output: str, record_path: str | os.PathLike | None = None) -> MidiSink:
    """``"record"`` -> a :class:`MidiRecorder` writing ``record_path``; ``"virtual"`` -> a
    virtual port; anything else -> the MIDI output port of that name."""
    if output == "record":
        if record_path is None:
            raise MusicRNNError('output="record" needs a file to record to')
        return MidiRecorder(record_path)
    if output == "virtual":
        return open_output(virtual=True)
    return open_output(output)


def perform(
    run_dir: str | os.PathLike | None,
    *,
    port: str | None = None,
    virtual: bool = False,
    record: str | os.PathLike | None = None,
    duration_s: float | None = None,
    temperature: float = 1.0,
    speed: float = 1.0,
    transpose: int = 0,
    velocity: int = 90,
    dynamics: float = 1.0,
    velocity_temperature: float = 1.0,
    channel: int = 0,
    seed: int | None = None,
    inputs: Sequence[Callable[[LiveControls], Callable[[], None]]] = (),
    control_port: str | None = None,
    cc_map: CCMap | None = None,
    data_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = print,
    style: Any = None,
    guidance: float = 1.0,
) -> PerformanceReport:
    """Perform the model in ``run_dir`` live: the ``musicrnn perform`` command.

    Exactly one of ``port``, ``virtual`` and ``record`` chooses the output. The output (and any
    controller input or camera) is opened before the model is loaded, so a missing MIDI backend
    is reported at once. Ctrl-C ends the performance with all notes off (the recording is still
    written) and re-raises ``KeyboardInterrupt``.

    A model with velocity plays each note at its own velocity (sampled at
    ``velocity_temperature``); one without plays at ``velocity``. ``dynamics`` scales both.

    ``inputs`` start more control inputs: each is called with the :class:`LiveControls` before
    the output opens and returns the function that stops it (``musicrnn perform --gestures``
    passes the camera loop of :mod:`musicrnn.gestures` this way).

    A conditioned model starts in ``style`` (a name, or None: no style) with ``guidance``; the
    ``style`` control (a label index, fractional between two styles: a morph; a slider or a
    MIDI CC, e.g. ``cc_map={21: ("style", 0, n)}``) and ``guidance`` switch them at the next
    note.
    """
    chosen = [x for x in (port is not None, virtual, record is not None) if x]
    if len(chosen) != 1:
        raise MusicRNNError("choose one output: a port name, virtual, or a file to record to")
    if cc_map and control_port is None:
        raise MusicRNNError("a controller mapping (--temperature-cc, --style-cc) needs "
                            "--control-port NAME")
    run_path = resolve_run_dir(run_dir)
    controls = LiveControls(temperature=temperature, speed=speed, transpose=transpose,
                            velocity=velocity, dynamics=dynamics,
                            velocity_temperature=velocity_temperature, channel=channel,
                            guidance=guidance)
    closers: list[Callable[[], None]] = []
    try:
        # Inputs first, then the output: a failure leaves no empty recording behind.
        if control_port is not None:
            closers.append(MidiControlInput(controls, control_port, cc_map).close)
        for start_input in inputs:  # e.g. the camera of musicrnn.gestures (a layer above)
            closers.append(start_input(controls))
        sink: MidiSink = MidiRecorder(record) if record is not None else (
            open_output(virtual=True) if virtual else open_output(port)
        )
        closers.append(sink.close)
        source = source_from_run(run_path, seed=seed, style=style, guidance=guidance)
        performer = Performer(source, sink, controls, program=0, seed=seed)
        if log:
            target = f"recording to {record}" if record is not None else repr(sink)
            log(f"Performing {run_path} ({target}); Ctrl-C stops")
        report = performer.run(duration_s=duration_s)
        if log:
            log(str(report))
        return report
    finally:
        for close in reversed(closers):
            close()

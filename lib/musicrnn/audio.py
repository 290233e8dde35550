"""MIDI -> audio: FluidSynth with a General MIDI soundfont, or a simple built-in synth.

:func:`synthesize` renders a MIDI file (a path, a ``pretty_midi.PrettyMIDI`` or a note table)
offline with the FluidSynth library through pyfluidsynth -- no audio driver, no sound card -- and
the ``TimGM6mb.sf2`` soundfont that ships inside ``pretty_midi`` (nothing to download; set
``MUSICRNN_SOUNDFONT`` or pass ``soundfont=`` for a better one). When the FluidSynth library is not
installed, it falls back to :func:`simple_synth`, a small additive synthesiser, and says so once.

:func:`midi_to_wav` writes 16-bit PCM WAV files atomically; :func:`player` gives an inline
``IPython.display.Audio`` for notebooks.
"""

from __future__ import annotations

import io
import os
import warnings
import wave
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MusicRNNError

DEFAULT_SAMPLE_RATE = 44100
TAIL_SECONDS = 1.0  # silence kept after the last note-off, for the release and reverb
PEAK = 0.9  # a piece whose loudest note has velocity 127 peaks at 90% of full scale


class FluidSynthMissingWarning(UserWarning):
    """FluidSynth (the C library or pyfluidsynth) is missing: audio uses the simple synth."""


_fluidsynth_module: Any = None
_fluidsynth_error: str | None = None
_warned = False


def _fluidsynth():
    """The pyfluidsynth module, or None when it (or the library it loads) is missing."""
    global _fluidsynth_module, _fluidsynth_error
    if _fluidsynth_module is None and _fluidsynth_error is None:
        try:
            import fluidsynth

            fluidsynth.Synth  # noqa: B018 - a stub module without it is as good as missing
            _fluidsynth_module = fluidsynth
        except (ImportError, OSError, AttributeError) as exc:
            _fluidsynth_error = f"{type(exc).__name__}: {exc}"
    return _fluidsynth_module


def fluidsynth_available() -> bool:
    """True when pyfluidsynth and the FluidSynth library both load."""
    return _fluidsynth() is not None


def _warn_fallback() -> None:
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        "FluidSynth is not available (" + str(_fluidsynth_error) + "), so audio is rendered "
        "with a simple built-in synthesiser that sounds like an organ, not a piano. Install the "
        "FluidSynth library for real instruments: `sudo apt-get install libfluidsynth3`, "
        "`brew install fluid-synth` or `conda install -c conda-forge fluidsynth`.",
        FluidSynthMissingWarning, stacklevel=3,
    )


def default_soundfont() -> Path:
    """The General MIDI soundfont: ``$MUSICRNN_SOUNDFONT``, else pretty_midi's ``TimGM6mb.sf2``."""
    override = os.environ.get("MUSICRNN_SOUNDFONT")
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise MusicRNNError(f"MUSICRNN_SOUNDFONT points to {path}, which is not a file")
        return path
    import pretty_midi

    name = getattr(getattr(pretty_midi, "fluidsynth", None), "DEFAULT_SF2", "TimGM6mb.sf2")
    for folder in pretty_midi.__path__:
        path = Path(folder) / name
        if path.is_file():
            return path
    raise MusicRNNError(
        "pretty_midi's soundfont TimGM6mb.sf2 is missing; reinstall pretty_midi or set "
        "MUSICRNN_SOUNDFONT to a .sf2 file"
    )


def as_midi(midi_or_path):
    """A ``pretty_midi.PrettyMIDI`` from a path, a PrettyMIDI, or a note table (DataFrame)."""
    import pretty_midi

    if isinstance(midi_or_path, pretty_midi.PrettyMIDI):
        return midi_or_path
    if isinstance(midi_or_path, (str, os.PathLike)):
        path = Path(midi_or_path)
        if not path.is_file():
            raise MusicRNNError(f"no MIDI file at {path}")
        try:
            return pretty_midi.PrettyMIDI(str(path))
        except Exception as exc:  # pretty_midi/mido raise many types for a broken file
            raise MusicRNNError(f"{path} is not a readable MIDI file ({exc})") from exc
    if hasattr(midi_or_path, "columns"):  # a note table
        from .notes import notes_to_midi

        return notes_to_midi(midi_or_path)
    raise MusicRNNError(
        f"expected a MIDI path, a pretty_midi.PrettyMIDI or a note table, got {type(midi_or_path)}"
    )


def synthesize(midi_or_path, sample_rate: int = DEFAULT_SAMPLE_RATE, *,
               soundfont: str | os.PathLike | None = None, backend: str = "auto",
               tail: float = TAIL_SECONDS) -> np.ndarray:
    """Render MIDI to a mono float32 waveform in [-1, 1] at ``sample_rate``.

    Args:
        midi_or_path: a MIDI file path, a ``pretty_midi.PrettyMIDI`` or a note table.
        sample_rate: samples per second.
        soundfont: a ``.sf2`` file (default :func:`default_soundfont`).
        backend: ``"fluidsynth"``, ``"simple"``, or ``"auto"`` (FluidSynth when available, else
            the simple synth with a one-time warning).
        tail: seconds kept after the end of the last note.

    Returns:
        ``int((end_time + tail) * sample_rate)`` samples, normalised so that the peak is
        ``PEAK * loudest velocity / 127``: every piece uses the headroom the same way, and a piece
        played softly (lower velocities, or a smaller dynamics) sounds softer (silence stays
        silence).
    """
    if not isinstance(sample_rate, (int, np.integer)) or not 4000 <= sample_rate <= 192000:
        raise MusicRNNError(f"sample_rate must be a whole number of Hz in 4000-192000, "
                            f"got {sample_rate!r}")
    if backend not in ("auto", "fluidsynth", "simple"):
        raise MusicRNNError(f"backend must be 'auto', 'fluidsynth' or 'simple', got {backend!r}")
    midi = as_midi(midi_or_path)
    if backend == "simple":
        return simple_synth(midi, sample_rate, tail=tail)
    if _fluidsynth() is None:
        if backend == "fluidsynth":
            raise MusicRNNError(
                f"FluidSynth is not available ({_fluidsynth_error}); install libfluidsynth3"
            )
        _warn_fallback()
        return simple_synth(midi, sample_rate, tail=tail)
    return fluidsynth_synth(midi, sample_rate, soundfont=soundfont, tail=tail)


def _events(midi) -> list[tuple[float, int, int, int, int, int]]:
    """(time, order, kind, instrument index, a, b) for every note, controller and bend.

    ``order`` puts note-offs before controllers before note-ons at the same instant, so a
    repeated pitch is released before it is struck again.
    """
    events = []
    for index, instrument in enumerate(midi.instruments):
        for note in instrument.notes:
            events.append((float(note.start), 2, 1, index, int(note.pitch), int(note.velocity)))
            events.append((float(note.end), 0, 0, index, int(note.pitch), 0))
        for change in instrument.control_changes:
            events.append((float(change.time), 1, 2, index, int(change.number), int(change.value)))
        for bend in instrument.pitch_bends:
            events.append((float(bend.time), 1, 3, index, int(bend.pitch), 0))
    events.sort()
    return events


def fluidsynth_synth(midi, sample_rate: int = DEFAULT_SAMPLE_RATE, *,
                     soundfont: str | os.PathLike | None = None,
                     tail: float = TAIL_SECONDS) -> np.ndarray:
    """Render with the FluidSynth library (see :func:`synthesize`); every instrument on its own
    channel with its General MIDI program, drums on a drum channel."""
    fluidsynth = _fluidsynth()
    if fluidsynth is None:
        raise MusicRNNError(f"FluidSynth is not available ({_fluidsynth_error})")
    midi = as_midi(midi)
    soundfont = Path(soundfont) if soundfont else default_soundfont()
    if not soundfont.is_file():
        raise MusicRNNError(f"no soundfont at {soundfont}")
    total = int(round((midi.get_end_time() + tail) * sample_rate))
    synth = fluidsynth.Synth(gain=0.3, samplerate=float(sample_rate))
    try:
        sfid = synth.sfload(str(soundfont))
        if sfid == -1:
            raise MusicRNNError(f"FluidSynth could not load the soundfont {soundfont}")
        melodic = iter([c for c in range(256) if c % 16 != 9])
        drums = iter([c for c in range(256) if c % 16 == 9])
        channels = []
        for instrument in midi.instruments:
            channel = next(drums if instrument.is_drum else melodic, None)
            if channel is None:
                raise MusicRNNError("the MIDI file has more instruments than FluidSynth channels")
            bank = 128 if instrument.is_drum else 0
            if synth.program_select(channel, sfid, bank, instrument.program) == -1:
                synth.program_select(channel, sfid, bank, 0)
            channels.append(channel)
        chunks = []
        position = 0
        for time, _, kind, index, a, b in _events(midi):
            target = min(int(round(time * sample_rate)), total)
            if target > position:
                chunks.append(synth.get_samples(target - position))
                position = target
            channel = channels[index]
            if kind == 0:
                synth.noteoff(channel, a)
            elif kind == 1:
                synth.noteon(channel, a, b)
            elif kind == 2:
                synth.cc(channel, a, b)
            else:
                synth.pitch_bend(channel, a)
        if total > position:
            chunks.append(synth.get_samples(total - position))
    finally:
        synth.delete()
    if not chunks:
        return np.zeros(total, dtype=np.float32)
    stereo = np.concatenate([np.asarray(c, dtype=np.float32) for c in chunks]).reshape(-1, 2)
    return _normalise(stereo.mean(axis=1) / 32768.0, _loudest(midi))


def simple_synth(midi, sample_rate: int = DEFAULT_SAMPLE_RATE, *,
                 tail: float = TAIL_SECONDS) -> np.ndarray:
    """The fallback: each note a few decaying harmonics with a short attack and release.

    Needs nothing but NumPy; drums are left out. Same length convention as :func:`synthesize`.
    """
    midi = as_midi(midi)
    total = int(round((midi.get_end_time() + tail) * sample_rate))
    out = np.zeros(total, dtype=np.float64)
    attack, release = 0.005, 0.08
    harmonics = np.array([1.0, 0.5, 0.25, 0.12])
    for instrument in midi.instruments:
        if instrument.is_drum:
            continue
        for note in instrument.notes:
            start = int(round(note.start * sample_rate))
            length = int(round((max(note.end - note.start, 0.0) + release) * sample_rate))
            length = min(length, total - start)
            if length <= 0:
                continue
            t = np.arange(length) / sample_rate
            freq = 440.0 * 2.0 ** ((note.pitch - 69) / 12.0)
            k = np.arange(1, len(harmonics) + 1)
            audible = k * freq < sample_rate / 2
            wave_ = (harmonics[audible, None]
                     * np.sin(2 * np.pi * freq * k[audible, None] * t[None, :])).sum(axis=0)
            held = max(note.end - note.start, 0.0)
            envelope = np.minimum(t / attack, 1.0) * np.exp(-2.5 * t)
            envelope *= np.clip((held + release - t) / release, 0.0, 1.0)
            out[start: start + length] += (note.velocity / 127.0) * envelope * wave_
    return _normalise(out, _loudest(midi))


def _loudest(midi) -> int:
    """The highest note velocity of a MIDI (127 when it has no notes)."""
    return max((n.velocity for i in midi.instruments for n in i.notes), default=127)


def _normalise(samples: np.ndarray, loudest: int = 127) -> np.ndarray:
    """Scale to a peak of ``PEAK * loudest / 127``, so the level follows the piece's dynamics."""
    samples = np.asarray(samples, dtype=np.float64)
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > 0:
        samples = samples * (PEAK * min(max(loudest, 1), 127) / 127 / peak)
    return samples.astype(np.float32)


# -- WAV files ------------------------------------------------------------------------------------


def wav_bytes(samples: np.ndarray, sample_rate: int = DEFAULT_SAMPLE_RATE) -> bytes:
    """A mono (``(n,)``) or multi-channel (``(n, channels)``) float waveform as 16-bit WAV bytes."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.ndim != 2 or not np.isfinite(samples).all():
        raise MusicRNNError("audio samples must be a finite (n,) or (n, channels) array")
    pcm = np.clip(np.rint(samples * 32767.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(pcm.shape[1])
        writer.setsampwidth(2)
        writer.setframerate(int(sample_rate))
        writer.writeframes(pcm.tobytes())
    return buffer.getvalue()


def write_wav(samples: np.ndarray, wav_path: str | os.PathLike,
              sample_rate: int = DEFAULT_SAMPLE_RATE) -> Path:
    """Write a waveform as a 16-bit PCM WAV file, atomically (no half-written file, ever)."""
    from .paths import atomic_write_bytes

    payload = wav_bytes(samples, sample_rate)
    path = Path(wav_path)
    try:
        return atomic_write_bytes(path, payload)
    except OSError as exc:
        raise MusicRNNError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_wav(wav_path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV file as ``(float32 samples in [-1, 1], sample_rate)``; ``(n,)`` for mono,
    ``(n, channels)`` otherwise."""
    path = Path(wav_path)
    try:
        with wave.open(str(path), "rb") as reader:
            if reader.getsampwidth() != 2:
                raise MusicRNNError(f"{path} is not 16-bit PCM")
            channels, rate = reader.getnchannels(), reader.getframerate()
            data = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    except (OSError, wave.Error, EOFError) as exc:
        raise MusicRNNError(f"cannot read the WAV file {path} ({exc})") from exc
    samples = (data.astype(np.float32) / 32768.0).reshape(-1, channels)
    return (samples[:, 0] if channels == 1 else samples), rate


def midi_to_wav(midi_or_path, wav_path: str | os.PathLike,
                sample_rate: int = DEFAULT_SAMPLE_RATE, **options: Any) -> Path:
    """Render MIDI (path, PrettyMIDI or note table) to a WAV file; returns its path.

    ``options`` go to :func:`synthesize` (``soundfont``, ``backend``, ``tail``).
    """
    samples = synthesize(midi_or_path, sample_rate, **options)
    return write_wav(samples, wav_path, sample_rate)


def player(source, sample_rate: int = DEFAULT_SAMPLE_RATE, **options: Any):
    """An inline audio player (``IPython.display.Audio``) for a WAV file, a waveform, or MIDI
    (a ``.mid`` path, a PrettyMIDI or a note table, rendered with :func:`synthesize`)."""
    from IPython.display import Audio

    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".wav":
        return Audio(filename=str(source))
    if isinstance(source, np.ndarray) and source.ndim == 1 and source.dtype.kind == "f":
        return Audio(data=source, rate=sample_rate, normalize=False)
    samples = synthesize(source, sample_rate, **options)
    return Audio(data=samples, rate=sample_rate, normalize=False)


def save_piece(notes, midi_path: str | os.PathLike, *, wav_path: str | os.PathLike | None = None,
               sample_rate: int = DEFAULT_SAMPLE_RATE, velocity: int | None = None,
               **options: Any) -> dict[str, Path]:
    """Write notes (a note table, raw ``(n, 3)`` notes or a PrettyMIDI) as a MIDI file and,
    when ``wav_path`` is given, its audio -- all or nothing.

    The audio is rendered in memory first; each file is written atomically, and when the WAV
    cannot be written the MIDI file written just before is removed again.

    Returns:
        ``{"midi": path}`` plus ``"wav"`` when asked.
    """
    import pretty_midi

    from .notes import notes_to_midi, write_midi

    midi = notes if isinstance(notes, pretty_midi.PrettyMIDI) else notes_to_midi(
        notes, velocity=velocity)
    payload = wav_bytes(synthesize(midi, sample_rate, **options), sample_rate) if wav_path else None
    midi_path = write_midi(midi, midi_path)
    written = {"midi": midi_path}
    if payload is not None:
        from .paths import atomic_write_bytes

        try:
            written["wav"] = atomic_write_bytes(Path(wav_path), payload)
        except OSError as exc:
            midi_path.unlink(missing_ok=True)
            raise MusicRNNError(f"cannot write {wav_path}: {exc.strerror or exc}") from exc
    return written

"""MIDI -> WAV with the real FluidSynth library, the fallback synthesiser, and the WAV files."""

from __future__ import annotations

import warnings

import numpy as np
import pretty_midi
import pytest

from musicrnn import audio
from musicrnn.errors import MusicRNNError

RATE = 22050
# (pitch, start, end): two notes with a long silence between them
NOTES = [(60, 0.5, 1.0), (72, 2.5, 3.0)]


def _midi(notes=NOTES, program=0, velocity=100) -> pretty_midi.PrettyMIDI:
    midi = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=program)
    for pitch, start, end in notes:
        instrument.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=start,
                                                 end=end))
    midi.instruments.append(instrument)
    return midi


def _rms(samples: np.ndarray, start: float, end: float, rate: int = RATE) -> float:
    segment = samples[int(start * rate): int(end * rate)]
    return float(np.sqrt(np.mean(segment.astype(np.float64) ** 2)))


def _check_render(samples: np.ndarray, end_time: float) -> None:
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) == int(round((end_time + audio.TAIL_SECONDS) * RATE))
    assert np.abs(samples).max() <= 1.0
    for _, start, end in NOTES:  # sound where the notes are ...
        assert _rms(samples, start + 0.05, end) > 0.05
    quiet = max(_rms(samples, 0.0, 0.45), _rms(samples, 1.8, 2.45))  # ... and not between them
    assert quiet < 0.01 * _rms(samples, 0.55, 1.0)


@pytest.fixture(scope="module")
def fluidsynth():
    if not audio.fluidsynth_available():
        pytest.skip("the FluidSynth library is not installed (`make setup` installs "
                    "libfluidsynth3 as root; see the README)")


def test_fluidsynth_renders_notes_where_they_are(fluidsynth):
    midi = _midi()
    samples = audio.synthesize(midi, RATE, backend="fluidsynth")
    _check_render(samples, midi.get_end_time())


def test_fluidsynth_plays_the_right_pitch(fluidsynth):
    samples = audio.synthesize(_midi([(69, 0.0, 1.5)]), RATE, backend="fluidsynth")
    segment = samples[int(0.2 * RATE): int(1.2 * RATE)]
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment))))
    freqs = np.fft.rfftfreq(len(segment), 1 / RATE)
    peak = freqs[np.argmax(spectrum[freqs > 100]) + np.count_nonzero(freqs <= 100)]
    assert peak == pytest.approx(440, rel=0.02) or peak == pytest.approx(880, rel=0.02)


@pytest.mark.parametrize("backend", ["fluidsynth", "simple"])
def test_a_softer_piece_renders_softer(backend):
    """Normalising keeps a piece's dynamics: the same notes at velocity 40 are quieter than at
    120 (peak-normalising every render to the same level would make them equal)."""
    if backend == "fluidsynth" and not audio.fluidsynth_available():
        pytest.skip("the FluidSynth library is not installed (`make setup` installs it)")
    loud = audio.synthesize(_midi(velocity=120), RATE, backend=backend)
    soft = audio.synthesize(_midi(velocity=40), RATE, backend=backend)
    assert np.abs(loud).max() == pytest.approx(audio.PEAK * 120 / 127, rel=1e-4)
    assert np.abs(soft).max() == pytest.approx(audio.PEAK * 40 / 127, rel=1e-4)
    assert _rms(soft, 0.55, 1.0) < 0.5 * _rms(loud, 0.55, 1.0)


def test_fallback_synth_renders_notes_where_they_are():
    midi = _midi()
    samples = audio.simple_synth(midi, RATE)
    _check_render(samples, midi.get_end_time())
    one = audio.simple_synth(_midi([(69, 0.0, 1.0)]), RATE)[: RATE]
    spectrum = np.abs(np.fft.rfft(one))
    assert np.fft.rfftfreq(len(one), 1 / RATE)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_fallback_warning_is_said_once():
    audio._warned = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        audio._warn_fallback()
        audio._warn_fallback()
    messages = [w for w in caught if issubclass(w.category, audio.FluidSynthMissingWarning)]
    assert len(messages) == 1 and "libfluidsynth3" in str(messages[0].message)


def test_real_midi_file_to_wav(fluidsynth, tmp_path, chorale_data):
    """A real Bach chorale (music21's corpus, written by the dataset step) rendered to a file."""
    files = sorted((chorale_data["data_dir"]).rglob("*.mid"))
    assert files, "the chorale data folder holds no MIDI files"
    path = audio.midi_to_wav(files[0], tmp_path / "chorale.wav", sample_rate=RATE)
    samples, rate = audio.read_wav(path)
    midi = pretty_midi.PrettyMIDI(str(files[0]))
    assert rate == RATE
    assert len(samples) / rate == pytest.approx(midi.get_end_time() + audio.TAIL_SECONDS,
                                                abs=1 / RATE)
    first = min(n.start for i in midi.instruments for n in i.notes)
    assert _rms(samples, first, first + 1.0) > 0.05


def test_note_table_renders_and_wav_round_trips(tmp_path):
    from musicrnn.generation import notes_table

    table = notes_table(np.array([[60, 0.5, 0.5], [64, 2.0, 0.5]], dtype=np.float32))
    samples = audio.synthesize(table, RATE)
    path = audio.write_wav(samples, tmp_path / "t.wav", RATE)
    back, rate = audio.read_wav(path)
    assert rate == RATE and len(back) == len(samples)
    np.testing.assert_allclose(back, samples, atol=1.5 / 32768)
    assert path.read_bytes()[:4] == b"RIFF"


def test_unwritable_wav_leaves_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(MusicRNNError, match="cannot write"):
        audio.write_wav(np.zeros(100, np.float32), blocker / "out.wav", RATE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_save_piece_is_all_or_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    midi_path = tmp_path / "piece.mid"
    notes = np.array([[60, 0.0, 0.5], [62, 0.5, 0.5]], dtype=np.float32)
    with pytest.raises(MusicRNNError, match="cannot write"):
        audio.save_piece(notes, midi_path, wav_path=blocker / "piece.wav", sample_rate=RATE)
    assert not midi_path.exists()
    written = audio.save_piece(notes, midi_path, wav_path=tmp_path / "piece.wav",
                               sample_rate=RATE)
    assert set(written) == {"midi", "wav"} and all(p.is_file() for p in written.values())
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers


def test_bad_sources_get_clear_errors(tmp_path):
    with pytest.raises(MusicRNNError, match="no MIDI file"):
        audio.synthesize(tmp_path / "missing.mid")
    junk = tmp_path / "junk.mid"
    junk.write_bytes(b"not midi at all")
    with pytest.raises(MusicRNNError, match="not a readable MIDI"):
        audio.synthesize(junk)
    with pytest.raises(MusicRNNError, match="backend"):
        audio.synthesize(_midi(), backend="casio")


def test_player_gives_inline_audio(tmp_path):
    from IPython.display import Audio

    wav = audio.midi_to_wav(_midi(), tmp_path / "x.wav", sample_rate=RATE)
    player = audio.player(wav)
    assert isinstance(player, Audio) and player.data[:4] == b"RIFF"
    assert isinstance(audio.player(_midi(), RATE), Audio)


def test_default_soundfont_ships_with_pretty_midi():
    path = audio.default_soundfont()
    assert path.name == "TimGM6mb.sf2" and path.stat().st_size > 1_000_000

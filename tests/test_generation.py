"""The stateful sampler against the Keras model it reads, the windowed reference, and the CLI.

Models are real Keras models: untrained ones of every preset for the arithmetic, and a small model
fitted on real Bach chorales (the ``chorale_run`` fixture) for distributions and the CLI. Velocity
models (``v5``) read real MAESTRO performances, and one is trained on the chorales (one velocity
throughout) by :func:`musicrnn.training.train` itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from musicrnn.errors import MusicRNNError
from musicrnn.generation import (
    MAX_NUM_NOTES, NoteRNN, Sampler, carried_vs_window, check_num_notes, default_reprime_every,
    generate, held_out_primer, keras_heads, load_generator, load_primer, notes_table,
    pitch_distribution, tutorial_generate,
)
from musicrnn.model import build_model, get_preset
from musicrnn.notes import NOTE_COLUMNS, load_corpus
from musicrnn.sequences import piece_features
from musicrnn.timing import class_velocity, velocity_classes, velocity_values

ROOT = Path(__file__).resolve().parents[1]
MUSICRNN = Path(sys.executable).parent / "musicrnn"


def _softmax(logits):
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def corpus(chorale_run):
    return load_corpus(chorale_run["dataset"], data_dir=chorale_run["data_dir"],
                       max_files=chorale_run["max_files"])


@pytest.fixture(scope="module")
def generator(chorale_run):
    return load_generator(chorale_run["run_dir"])


@pytest.fixture(scope="module")
def piece(corpus):
    """A real held-out chorale: the context the comparisons read."""
    notes, _ = held_out_primer(corpus, length=64, split="test")
    assert len(notes) == 64
    return notes


# -- the NumPy network is the Keras model ----------------------------------------------------------


@pytest.mark.parametrize("preset, overrides", [
    ("baseline", {}),
    ("v1", {}),
    ("v2", {}),
    ("v2", {"pitch_input": "embedding"}),
    ("v2", {"targets": "all", "lstm_units": (48, 32, 16)}),
], ids=["baseline", "v1", "v2", "v2-embedding", "three-layers-all"])
def test_numpy_network_matches_keras(preset, overrides, corpus):
    import keras

    keras.utils.set_random_seed(1)
    model = build_model(get_preset(preset, **overrides))
    net = NoteRNN.from_keras(model)
    windows = np.stack([corpus.features(i)[start: start + 30]
                        for i in range(3) for start in range(0, 60, 10)])  # 18 real windows
    theirs = keras_heads(model, windows)
    for rows in (1, 3, 18):  # one stream, a few (one product per row), many (the exp layout)
        ours, _ = net.run(windows[:rows])
        np.testing.assert_allclose(ours, theirs[:rows], rtol=1e-4, atol=2e-5)
    assert net.check_against(model) < 1e-4


def test_original_checkpoint_samples_like_its_keras_model(seed_artifacts):
    from musicrnn.model import load_original_checkpoint

    model = load_original_checkpoint(seed_artifacts / "ckpt_50.weights.h5", compile=False)
    seed = np.load(seed_artifacts / "seed_sequence.npy", allow_pickle=False)
    sampler = Sampler(model, seed=0)
    assert sampler.reprime_every is not None  # the original trained on windows only
    sampler.prime(seed)
    reference = keras_heads(model, seed[None])
    np.testing.assert_allclose(sampler.distribution()["pitch"], _softmax(reference[:, :128]),
                               atol=1e-6)
    notes = sampler.sample(100)[0]
    assert notes.shape == (100, 3)
    assert set(np.unique(notes[:, 0])) <= set(range(128))
    assert (notes[:, 1:] >= 0).all()


def test_wrapped_original_model_is_read_through_the_nesting():
    """An original model with a layer we do not rebuild is wrapped by load_model's converter
    (raw notes -> NoteScaling -> the original); the sampler reads through both models."""
    import keras

    from musicrnn.model import from_original_model

    keras.utils.set_random_seed(2)
    notes = keras.Input((20, 3))
    x = keras.layers.Rescaling(2.0, offset=0.1)(notes)  # not a layer the converter rebuilds
    x = keras.layers.LSTM(24, return_sequences=True)(x)
    x = keras.layers.LSTM(12)(x)
    heads = {"pitch": keras.layers.Dense(128, name="pitch")(x),
             "step": keras.layers.Dense(1, name="step")(x),
             "duration": keras.layers.Dense(1, name="duration")(x)}
    wrapped = from_original_model(keras.Model(notes, heads), compile=False)
    assert any(isinstance(layer, keras.Model) for layer in wrapped.layers)
    net = NoteRNN.from_keras(wrapped)
    assert len(net.layers) == 2
    assert net.check_against(wrapped) < 1e-4


def test_a_model_the_sampler_cannot_read_is_refused():
    import keras

    notes = keras.Input((None, 3))
    x = keras.layers.GRU(8)(notes)
    model = keras.Model(notes, {"pitch": keras.layers.Dense(128, name="pitch")(x),
                                "step": keras.layers.Dense(1, name="step")(x),
                                "duration": keras.layers.Dense(1, name="duration")(x)})
    with pytest.raises(MusicRNNError, match="GRU|gru|layer"):
        Sampler(model)


# -- carried state and the window ------------------------------------------------------------------


def test_first_note_distribution_is_the_windowed_one(generator, piece):
    """Primed with a window, the carried state gives the tutorial's next-note distribution."""
    window = piece[: generator.seq_length]
    sampler = generator.sampler(seed=0)
    sampler.prime(window)
    ours = sampler.distribution()
    reference = keras_heads(generator.model, window[None])  # the model on the window, as predict
    np.testing.assert_allclose(ours["pitch"], _softmax(reference[:, :128]), atol=1e-6)
    np.testing.assert_allclose(ours["step"], reference[:, 128], atol=1e-5)
    np.testing.assert_allclose(ours["duration"], reference[:, 129], atol=1e-5)


def test_sampled_pitches_follow_that_distribution(generator, piece):
    """Twenty thousand streams primed alike: their first pitches are draws from the window's
    distribution (total variation under 0.03)."""
    window = piece[: generator.seq_length]
    streams = 20_000
    sampler = Sampler(generator.model, batch_size=streams, seed=3, config=generator.config)
    sampler.prime(window)
    drawn = sampler.next_note(temperature=1.0)[:, 0].astype(int)
    expected = _softmax(keras_heads(generator.model, window[None])[0, :128])
    observed = np.bincount(drawn, minlength=128) / streams
    assert 0.5 * np.abs(observed - expected).sum() < 0.03


def test_carried_state_differs_from_the_window_only_by_forgotten_history(generator, piece):
    """Beyond the window the carried state equals the model run on the *whole* history, and
    differs from the model run on the truncated window."""
    w = generator.seq_length
    sampler = Sampler(generator.model, reprime_every=None, config=generator.config)
    sampler.prime(piece)  # 64 notes: four windows of history
    carried = sampler.distribution()["pitch"][0]
    full = _softmax(keras_heads(generator.model, piece[None])[0, :128])
    window = _softmax(keras_heads(generator.model, piece[None, -w:])[0, :128])
    np.testing.assert_allclose(carried, full, atol=1e-6)
    assert 0.5 * np.abs(carried - window).sum() > 1e-5

    table = carried_vs_window(generator.model, piece, window=w)
    assert table.context.iloc[0] == w and table.tv_distance.iloc[0] < 1e-5
    assert (table.tv_distance.iloc[1:] > 1e-6).all()


def test_reprime_every_note_is_the_sliding_window(generator, piece):
    """``reprime_every=1`` rebuilds the state from the last window after every note: each
    distribution is then the tutorial's, note for note."""
    w = generator.seq_length
    sampler = Sampler(generator.model, reprime_every=1, window=w, seed=4,
                      config=generator.config)
    sampler.prime(piece[:w])
    history = piece[:w].copy()
    for _ in range(6):
        note = sampler.next_note(temperature=1.3)
        history = np.concatenate([history, note])
        expected = _softmax(keras_heads(generator.model, history[None, -w:])[0, :128])
        np.testing.assert_allclose(sampler.distribution()["pitch"][0], expected, atol=1e-6)


@pytest.mark.parametrize("every", [5, 6])
def test_reprime_reads_the_last_window_every_so_many_notes(generator, piece, every):
    """Every ``every`` notes the state is rebuilt from the last window: each next-note
    distribution is the model run from a zero state on the notes since the last re-prime's
    window began."""
    w = generator.seq_length
    sampler = Sampler(generator.model, reprime_every=every, window=w, seed=2,
                      config=generator.config)
    sampler.prime(piece[:24])  # longer than the window: only its last w notes are read
    history = piece[24 - w: 24].copy()
    primed = len(history)
    for _ in range(3 * every + 2):
        history = np.concatenate([history, sampler.next_note(temperature=1.5)])
        count = len(history)
        rebuilt = primed + (count - primed) // every * every  # notes read at the last re-prime
        context = history[max(0, rebuilt - w): count]
        expected = _softmax(keras_heads(generator.model, context[None])[0, :128])
        np.testing.assert_allclose(sampler.distribution()["pitch"][0], expected, atol=1e-6)


def test_default_reprime_is_decided_by_the_training_targets():
    last = get_preset("v2", targets="last", seq_length=40)
    every = get_preset("v2", targets="all")
    assert default_reprime_every(last) == 20
    assert default_reprime_every(every) is None
    sampler = Sampler(build_model(last), config=last)
    assert sampler.reprime_every == 20 and "rebuilds" in sampler.describe()
    sampler = Sampler(build_model(every), config=every)
    assert sampler.reprime_every is None and "carried" in sampler.describe()


def test_tutorial_loop_is_a_working_reference(generator):
    notes = tutorial_generate(generator.model, generator.primer, 3, temperature=1.0, seed=1)
    assert notes.shape == (3, 3) and (notes[:, 1:] >= 0).all()


# -- controls --------------------------------------------------------------------------------------


def test_same_seed_same_notes_other_seed_other_notes(generator):
    a = generator.generate(80, temperature=1.2, seed=11)
    b = generator.generate(80, temperature=1.2, seed=11)
    c = generator.generate(80, temperature=1.2, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, 0], c[:, 0])


def test_batch_streams_are_independent_and_match_single_streams(generator, corpus):
    primers = np.stack([corpus.features(i)[: generator.seq_length] for i in range(3)])
    sampler = Sampler(generator.model, batch_size=3, seed=0, config=generator.config)
    sampler.prime(primers)
    batch = sampler.distribution()["pitch"]
    for i in range(3):
        single = Sampler(generator.model, seed=0, config=generator.config).prime(primers[i])
        np.testing.assert_allclose(batch[i], single.distribution()["pitch"][0], atol=1e-6)
    split = Sampler(generator.model, batch_size=3, seed=0, config=generator.config, workers=2)
    split.prime(primers)  # two blocks of streams stepped on two threads: the same numbers
    np.testing.assert_allclose(split.distribution()["pitch"], batch, atol=1e-6)
    out = generate(generator.model, generator.primer, 50, seed=5, batch_size=4,
                   config=generator.config)
    assert out.shape == (4, 50, 3)
    assert len({tuple(stream[:, 0]) for stream in out}) == 4


def test_step_and_duration_are_clamped_at_zero(chorale_run):
    from musicrnn.model import load_run

    run = load_run(chorale_run["run_dir"], compile=False)
    for head in ("step", "duration"):
        kernel, bias = run.model.get_layer(head).get_weights()
        run.model.get_layer(head).set_weights([kernel * 0, bias * 0 - 5.0])
    for noise in (0.0, 0.3):
        notes = generate(run.model, run.seed_sequence, 40, seed=1, config=run.config,
                         timing_noise=noise)
        assert (notes[:, 1:] == 0).all()


def test_temperature_top_k_and_top_p_shape_the_distribution():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(5, 128))
    np.testing.assert_allclose(pitch_distribution(logits, 0.5), _softmax(logits / 0.5), atol=1e-6)
    np.testing.assert_allclose(pitch_distribution(logits, 3.0), _softmax(logits / 3.0), atol=1e-6)
    top1 = pitch_distribution(logits, top_k=1)
    np.testing.assert_array_equal(top1.argmax(axis=1), logits.argmax(axis=1))
    assert ((top1 > 0).sum(axis=1) == 1).all()
    top5 = pitch_distribution(logits, top_k=5)
    assert ((top5 > 0).sum(axis=1) == 5).all()
    p = _softmax(logits)
    nucleus = pitch_distribution(logits, top_p=0.8)
    for row, kept in zip(p, nucleus):
        order = np.argsort(-row)
        need = int(np.searchsorted(np.cumsum(row[order]), 0.8) + 1)  # smallest set >= 0.8
        assert set(np.flatnonzero(kept)) == set(order[:need])
    assert ((pitch_distribution(logits, top_p=1e-6) > 0).sum(axis=1) == 1).all()


def test_sampler_draws_only_from_the_top_k(generator):
    sampler = Sampler(generator.model, batch_size=2000, seed=1, config=generator.config)
    sampler.prime(generator.primer)
    logits = keras_heads(generator.model, generator.primer[None])[0, :128]
    allowed = set(np.argsort(-logits)[:3])
    drawn = set(sampler.next_note(top_k=3)[:, 0].astype(int))
    assert drawn <= allowed and len(drawn) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": 0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": "warm"}, "temperature"),
    ({"top_k": 129}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"num_notes": 0}, "num_notes"),
    ({"num_notes": MAX_NUM_NOTES + 1}, "num_notes"),
    ({"num_notes": 2.5}, "num_notes"),
])
def test_bad_settings_get_clear_errors(generator, kwargs, message):
    settings = {"num_notes": 5, **kwargs}
    with pytest.raises(MusicRNNError, match=message):
        generator.generate(**settings)


@pytest.mark.parametrize("primer, message", [
    (np.zeros((10, 2)), "shape"),
    (np.zeros((0, 3)), "shape"),
    (np.full((4, 3), np.nan), "NaN"),
    (np.array([[200.0, 0.1, 0.1]]), "0-127"),
    (np.array([[60.0, -0.1, 0.1]]), ">= 0"),
])
def test_bad_primers_get_clear_errors(generator, primer, message):
    sampler = generator.sampler()
    with pytest.raises(MusicRNNError, match=message):
        sampler.prime(primer)


def test_sampling_before_priming_is_refused(generator):
    with pytest.raises(MusicRNNError, match="prime"):
        generator.sampler().next_note()


def test_check_num_notes():
    assert check_num_notes(10.0) == 10
    for bad in (True, -3, "many", float("inf")):
        with pytest.raises(MusicRNNError):
            check_num_notes(bad)


# -- primers and tables ------------------------------------------------------------------------------


def test_primer_from_midi_npy_and_held_out_piece(tmp_path, corpus, generator):
    from musicrnn.notes import notes_to_midi

    piece = corpus.piece(int(corpus.indices("train")[0]))
    midi_path = tmp_path / "primer.mid"
    notes_to_midi(piece, midi_path)
    primer = load_primer(midi_path, length=20)
    assert primer.shape == (20, 3)
    np.testing.assert_array_equal(primer[:, 0], piece.pitch.to_numpy()[-20:])

    npy = tmp_path / "seed.npy"
    np.save(npy, primer)
    np.testing.assert_array_equal(load_primer(npy), primer)

    notes, name = held_out_primer(corpus, length=12, split="validation", piece=0)
    assert notes.shape == (12, 3) and name.startswith("validation/")


def test_primer_midi_without_notes_is_refused(tmp_path):
    import pretty_midi

    empty = pretty_midi.PrettyMIDI()
    empty.instruments.append(pretty_midi.Instrument(program=0))
    path = tmp_path / "empty.mid"
    empty.write(str(path))
    with pytest.raises(MusicRNNError, match="no notes|no .*notes"):
        load_primer(path)
    bad = tmp_path / "shape.npy"
    np.save(bad, np.zeros((5, 5)))
    with pytest.raises(MusicRNNError, match="shape"):
        load_primer(bad)
    np.save(bad, np.zeros((5, 4)))  # a 4th column is velocity: 0 is not one
    with pytest.raises(MusicRNNError, match="velocities .* 1-127"):
        load_primer(bad)


def test_notes_table_places_notes_after_the_primer():
    raw = np.array([[60, 0.5, 0.25], [64, 0.0, 1.0], [67, 0.25, 0.5]], dtype=np.float32)
    table = notes_table(raw, start=10.0, velocity=90)
    assert list(table.columns) == list(NOTE_COLUMNS)
    np.testing.assert_allclose(table.start, [10.5, 10.5, 10.75])
    np.testing.assert_allclose(table.end, [10.75, 11.5, 11.25])
    assert (table.velocity == 90).all() and table.pitch.tolist() == [60, 64, 67]


def test_load_generator_from_a_model_file_and_errors(chorale_run, tmp_path):
    run_dir = Path(chorale_run["run_dir"])
    generator = load_generator(model_path=run_dir / "music_rnn_model.keras")
    assert generator.primer.shape == (16, 3)  # the seed_sequence.npy beside it
    with pytest.raises(MusicRNNError, match="holds no music_rnn_model.keras"):
        load_generator(tmp_path)
    with pytest.raises(MusicRNNError, match="no model file"):
        load_generator(model_path=tmp_path / "missing.keras")


# -- the command line --------------------------------------------------------------------------------

_TF_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} \d\d:\d\d:\d\d)")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([str(MUSICRNN), "generate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def _own_stderr(stderr: str) -> list[str]:
    """stderr without TensorFlow's C++ start-up log lines (written before any of our code runs)."""
    return [line for line in stderr.splitlines() if line and not _TF_LOG.match(line)]


@pytest.mark.slow
def test_cli_generates_midi_and_wav(chorale_run, tmp_path):
    import pretty_midi

    from musicrnn.audio import TAIL_SECONDS, read_wav

    out = tmp_path / "out" / "piece.mid"
    result = _cli("--run-dir", str(chorale_run["run_dir"]), "--temperature", "0.9",
                  "--num-notes", "48", "--out", str(out), "--wav", "--seed", "3",
                  "--top-p", "0.95", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    midi = pretty_midi.PrettyMIDI(str(out))
    assert sum(len(i.notes) for i in midi.instruments) <= 48  # zero-length notes may merge
    samples, rate = read_wav(out.with_suffix(".wav"))
    assert abs(len(samples) / rate - (midi.get_end_time() + TAIL_SECONDS)) < 0.01
    assert np.abs(samples).max() > 0.1
    assert "rebuilds the LSTM state" in result.stdout  # targets="last": says it re-primes

    from musicrnn.cli import main  # the same command in this process: no second start-up

    again = tmp_path / "again.mid"
    assert main(["generate", "--run-dir", str(chorale_run["run_dir"]), "--num-notes", "48",
                 "--out", str(again), "--seed", "3", "--top-p", "0.95", "--temperature",
                 "0.9"]) == 0
    assert again.read_bytes() == out.read_bytes()  # the same seed: the same file


def _bad_inputs(run_dir: Path, tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    wrong_shape = tmp_path / "wrong.npy"
    np.save(wrong_shape, np.zeros((10, 5)))
    import pretty_midi

    empty = pretty_midi.PrettyMIDI()
    empty.instruments.append(pretty_midi.Instrument(program=0))
    empty_mid = tmp_path / "empty.mid"
    empty.write(str(empty_mid))
    not_a_model = tmp_path / "model.keras"
    not_a_model.write_text("not a model")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    run = ["--run-dir", str(run_dir)]
    return {
        "temperature zero": (run + ["--temperature", "0"], "temperature"),
        "temperature nan": (run + ["--temperature", "nan"], "temperature"),
        "temperature text": (run + ["--temperature", "hot"], "temperature"),
        "velocity temperature": (run + ["--velocity-temperature", "-1"],
                                 "--velocity-temperature"),
        "num-notes zero": (run + ["--num-notes", "0"], "num_notes"),
        "num-notes absurd": (run + ["--num-notes", "1000000000"], "num_notes"),
        "missing model": (["--model", str(tmp_path / "nope.keras")], "no model file"),
        "missing run": (["--run-dir", str(tmp_path / "no-run")], "does not exist"),
        "seed sequence shape": (run + ["--seed-sequence", str(wrong_shape)], "shape"),
        "primer without notes": (run + ["--primer", str(empty_mid)], "no notes"),
        "unwritable output": (run + ["--out", str(a_file / "x.mid")], "cannot write"),
        "not a midi name": (run + ["--out", str(tmp_path / "piece.txt")], ".mid"),
        "mismatched model": (["--model", str(not_a_model), "--seed-sequence",
                              str(run_dir / "seed_sequence.npy")], "model"),
    }


BAD = ["temperature zero", "temperature nan", "temperature text", "velocity temperature",
       "num-notes zero",
       "num-notes absurd", "missing model", "missing run", "seed sequence shape",
       "primer without notes", "unwritable output", "not a midi name", "mismatched model"]


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD)
def test_cli_bad_input_one_line_exit_2_nothing_written(case, chorale_run, tmp_path, capsys):
    """Each case through the command's own entry point in this process (the installed
    ``musicrnn`` command is the same function; the first case also runs it as a real command)."""
    from musicrnn.cli import main

    args, message = _bad_inputs(Path(chorale_run["run_dir"]), tmp_path)[case]
    if "--out" not in args:
        args = args + ["--out", str(tmp_path / "out" / "piece.mid"), "--wav"]
    before = {p for p in tmp_path.rglob("*")}
    if case == "temperature zero":
        result = _cli(*args, cwd=tmp_path)
        status, stderr = result.returncode, result.stderr
    else:
        try:
            status = main(["generate", *args])
        except SystemExit as exit_:  # argparse refuses what it cannot parse
            status = exit_.code
        stderr = capsys.readouterr().err
    assert status == 2, stderr
    lines = _own_stderr(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("musicrnn generate: error:") and message in lines[0]
    assert "Traceback" not in stderr
    assert {p for p in tmp_path.rglob("*")} == before  # nothing written, not even a folder


# -- velocity (v5: dynamics) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def performances(maestro_sample, tmp_path_factory):
    """Real MAESTRO performances: 18 windows of 30 notes with their velocities, (18, 30, 4)."""
    corpus = load_corpus(f"local:{maestro_sample}", data_dir=tmp_path_factory.mktemp("maestro"))
    windows = np.stack([piece_features(corpus, i, velocity=True)[start: start + 30]
                        for i in range(3) for start in range(0, 600, 100)])
    assert len(np.unique(windows[..., 3])) > 20
    return windows


def _v5(seed: int = 1, **overrides):
    import keras

    keras.utils.set_random_seed(seed)
    config = get_preset("v5", **{"lstm_units": (32, 16), "pitch_embedding_dim": 8, **overrides})
    return build_model(config), config


@pytest.mark.parametrize("overrides", [
    {}, {"pitch_input": "scalar"}, {"timing": "regression", "lstm_units": (24,)},
    {"velocity_bins": 16, "targets": "last"},
], ids=["v5", "scalar-pitch", "regression-timing", "16-bins-last"])
def test_numpy_network_matches_keras_with_velocity(overrides, performances):
    model, config = _v5(**overrides)
    net = NoteRNN.from_keras(model)
    assert (net.features, net.velocity_bins) == (4, config.velocity_bins)
    theirs = keras_heads(model, performances)
    width = 1 if config.timing == "regression" else 128
    assert theirs.shape == (18, 128 + 2 * width + config.velocity_bins)
    for rows in (1, 3, 18):  # one stream, a few (one product per row), many (the exp layout)
        ours, _ = net.run(performances[:rows])
        np.testing.assert_allclose(ours, theirs[:rows], rtol=1e-4, atol=2e-5)
    # the velocity input counts: other velocities, other predictions
    louder = performances.copy()
    louder[..., 3] = np.minimum(louder[..., 3] + 30, 127)
    assert np.abs(net.run(louder[:3])[0] - theirs[:3]).max() > 1e-4


@pytest.mark.parametrize("streams", [1, 3, 18])  # 18: the exp layout of many streams
def test_velocity_distribution_is_the_keras_heads(performances, streams):
    model, config = _v5(2)
    primers = performances[:streams]
    velocity = keras_heads(model, primers)[:, -config.velocity_bins:]
    for temperature in (1.0, 0.6):
        sampler = Sampler(model, batch_size=streams, seed=0, config=config,
                          velocity_temperature=temperature)
        dist = sampler.prime(primers).distribution()
        np.testing.assert_allclose(dist["velocity_probs"], _softmax(velocity / temperature),
                                   atol=1e-6)
        median = (np.cumsum(dist["velocity_probs"], axis=1) < 0.5).sum(axis=1)
        np.testing.assert_array_equal(dist["velocity"], class_velocity(median))
        np.testing.assert_allclose(  # a temperature given per call overrides the sampler's
            sampler.distribution(velocity_temperature=2.0)["velocity_probs"],
            _softmax(velocity / 2.0), atol=1e-6)


def test_sampled_velocities_are_draws_from_the_velocity_head(performances):
    """The velocity head's bias set to three classes (kernel zero): 20,000 streams draw them at
    the softmax's rates for the temperature, and play each class's velocity."""
    model, config = _v5(3)
    head = model.get_layer("velocity")
    kernel, _ = head.get_weights()
    bias = np.full(32, -40.0, np.float32)
    bias[[5, 20, 28]] = np.log([0.5, 0.3, 0.2])
    head.set_weights([np.zeros_like(kernel), bias])
    for temperature in (1.0, 0.5):
        sampler = Sampler(model, batch_size=20_000, seed=4, config=config)
        sampler.prime(performances[0, :2])  # any context: the head reads none of it
        notes = sampler.next_note(velocity_temperature=temperature)
        assert notes.shape == (20_000, 4)
        assert np.isin(notes[:, 3], velocity_values()[[5, 20, 28]]).all()
        observed = np.bincount(velocity_classes(notes[:, 3]), minlength=32) / len(notes)
        expected = _softmax(bias / temperature)
        assert 0.5 * np.abs(observed - expected).sum() < 0.02


def test_a_seed_reproduces_velocities(performances):
    model, config = _v5(4)
    a = generate(model, performances[0], 60, seed=9, config=config, velocity_temperature=1.5)
    b = generate(model, performances[0], 60, seed=9, config=config, velocity_temperature=1.5)
    c = generate(model, performances[0], 60, seed=10, config=config, velocity_temperature=1.5)
    assert a.shape == (60, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, 3], c[:, 3])
    assert np.isin(a[:, 3], velocity_values()).all() and len(np.unique(a[:, 3])) > 3
    batch = generate(model, performances[:3], 20, seed=9, batch_size=3, config=config)
    assert batch.shape == (3, 20, 4)
    reference = tutorial_generate(model, performances[0], 3, seed=0)  # the slow loop too
    assert reference.shape == (3, 4) and np.isin(reference[:, 3], velocity_values()).all()


def test_primers_of_the_other_width_are_adapted(performances, piece, generator):
    """A 3-column primer plays at the default velocity (64) for a velocity model; a 4-column
    primer loses its velocities for a 3-column model."""
    model, config = _v5(5)
    three = Sampler(model, config=config).prime(performances[0, :, :3]).distribution()
    explicit = performances[0].copy()
    explicit[:, 3] = 64
    four = Sampler(model, config=config).prime(explicit).distribution()
    np.testing.assert_allclose(three["velocity_probs"], four["velocity_probs"], atol=1e-7)
    np.testing.assert_allclose(three["pitch"], four["pitch"], atol=1e-7)
    own = Sampler(model, config=config).prime(performances[0]).distribution()
    assert np.abs(own["pitch"] - four["pitch"]).max() > 1e-6  # the real velocities count
    softer = Sampler(model, config=config, default_velocity=30).prime(performances[0, :, :3])
    assert np.abs(softer.distribution()["pitch"] - three["pitch"]).max() > 1e-6
    with_velocity = np.c_[piece, np.full(len(piece), 77.0, np.float32)]
    np.testing.assert_allclose(  # the 3-column chorale model ignores a velocity column
        generator.sampler().prime(with_velocity).distribution()["pitch"],
        generator.sampler().prime(piece).distribution()["pitch"], atol=0)
    assert generator.with_primer(with_velocity, "test").primer.shape == (len(piece), 3)
    assert not generator.velocity and generator.features == 3
    with pytest.raises(MusicRNNError, match="velocity_temperature"):
        Sampler(model, config=config, velocity_temperature=0)
    with pytest.raises(MusicRNNError, match="default_velocity"):
        Sampler(model, config=config, default_velocity=0)


def test_notes_table_plays_each_notes_own_velocity(performances):
    notes = performances[0]
    table = notes_table(notes)
    np.testing.assert_array_equal(table.velocity, notes[:, 3].astype(int))
    np.testing.assert_array_equal(table.pitch, notes[:, 0].astype(int))
    assert (notes_table(notes, velocity=50).velocity == 50).all()  # one velocity given: it wins
    assert (notes_table(notes[:, :3]).velocity == 100).all()  # none: the original's 100
    with pytest.raises(MusicRNNError, match=r"\(n, 3\) or \(n, 4\)"):
        notes_table(np.zeros((4, 5)))


@pytest.fixture(scope="module")
def velocity_chorale_run(chorale_data, tmp_path_factory):
    """A tiny v5 trained by :func:`musicrnn.training.train` on the chorales, whose every note
    has velocity 90: the run directory."""
    from musicrnn.training import train

    run_dir = tmp_path_factory.mktemp("v5-chorales") / "run"
    train({"preset": "v5", "lstm_units": [32], "pitch_embedding_dim": 8, "seq_length": 16,
           "batch_size": 16, "learning_rate": 0.01, "window_shift": 4, "epochs": 1, "seed": 3},
          chorale_data["dataset"], run_dir, corpus=chorale_data["corpus"], progress=False,
          validation_windows=64)
    return run_dir


@pytest.mark.slow
def test_a_v5_model_on_chorales_trains_and_generates(velocity_chorale_run):
    """One velocity in the data: it still trains, learns that velocity, and generates it."""
    import pandas as pd

    from musicrnn.model import load_run

    run = load_run(velocity_chorale_run, compile=False)
    assert run.config.velocity == "categorical" and run.seed_sequence.shape == (16, 4)
    assert (run.seed_sequence[:, 3] == 90).all()
    history = pd.read_csv(velocity_chorale_run / "history.csv")
    assert np.isfinite(history["val_velocity_loss"]).all()
    generator = load_generator(velocity_chorale_run)
    assert generator.velocity and generator.primer.shape == (16, 4)
    sampler = generator.sampler(seed=0)
    sampler.prime(generator.primer)
    assert sampler.distribution()["velocity_probs"][0, velocity_classes(90)] > 0.9
    notes = generator.generate(40, seed=2)
    assert notes.shape == (40, 4)
    assert (notes[:, 3] == class_velocity(velocity_classes(90))).mean() > 0.9


@pytest.mark.slow
def test_cli_writes_each_notes_velocity_to_the_midi_file(velocity_chorale_run, tmp_path):
    """Through the command's own entry point in this process (the installed ``musicrnn``
    command is the same function, run as a real command by test_cli_generates_midi_and_wav)."""
    import pretty_midi

    from musicrnn.cli import main

    out = tmp_path / "piece.mid"
    assert main(["generate", "--run-dir", str(velocity_chorale_run), "--num-notes", "30",
                 "--out", str(out), "--seed", "6", "--velocity-temperature", "3.0"]) == 0
    notes = load_generator(velocity_chorale_run).generate(30, seed=6, velocity_temperature=3.0)
    midi = pretty_midi.PrettyMIDI(str(out))
    written = sorted((n.pitch, n.velocity) for i in midi.instruments for n in i.notes)
    expected = sorted((int(p), int(v)) for p, v in notes[:, [0, 3]])
    assert written == expected  # every note at its own generated velocity
    assert len({v for _, v in written}) > 1  # a hot velocity temperature: more than the one


def test_a_piece_of_so_many_seconds(generator):
    """generate(seconds=) draws until a note starts at that time: every kept note starts
    before it, the next one would not, and the same seed gives the same first notes."""
    longer = generator.generate(400, seed=9, temperature=1.0)
    piece = generator.generate(400, seed=9, temperature=1.0, seconds=6.0)
    starts = np.cumsum(longer[:, 1], dtype=np.float64)
    n = len(piece)
    assert 0 < n < 400, "6 s of chorale is fewer than 400 notes"
    np.testing.assert_array_equal(piece, longer[:n])  # the same draws, cut
    assert starts[n - 1] < 6.0 <= starts[n]
    capped = generator.generate(5, seed=9, seconds=600.0)  # num_notes caps a long wish
    np.testing.assert_array_equal(capped, longer[:5])
    for bad in (0, -1.0, float("nan"), "long", True):
        with pytest.raises(MusicRNNError, match="seconds must be a number > 0"):
            generator.generate(10, seconds=bad)
    with pytest.raises(MusicRNNError, match="batch_size=1"):
        generator.generate(10, seconds=5.0, batch_size=2)

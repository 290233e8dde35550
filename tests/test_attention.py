"""The attention preset (issue 14): a causal decoder over the notes, registered and saved like the
LSTM presets, and its sampler's key/value cache, checked against the Keras model it reads."""

from __future__ import annotations

import numpy as np
import pytest

from musicrnn import generation as gen
from musicrnn import model as mm
from musicrnn.errors import MusicRNNError
from musicrnn.notes import NoteCorpus
from musicrnn.timing import velocity_classes
from musicrnn.training import jit_setting, train


@pytest.fixture(scope="module")
def chorale_notes(chorale_data) -> np.ndarray:
    """One real chorale's (pitch, step, duration) notes."""
    corpus = chorale_data["corpus"]
    piece = corpus.piece(int(corpus.indices("train")[0]))
    return piece[["pitch", "step", "duration"]].to_numpy(np.float32)


def small(**changes) -> mm.ModelConfig:
    """A transformer small enough to build and step in milliseconds."""
    base = dict(model_dim=16, attention_layers=2, attention_heads=2, ff_dim=32, seq_length=12,
                dropout=0.0)
    return mm.get_preset("v6", **{**base, **changes})


def random_notes(rng, batch: int, length: int, velocity: bool = True) -> np.ndarray:
    columns = [rng.integers(36, 90, (batch, length)), rng.exponential(0.25, (batch, length)),
               rng.exponential(0.4, (batch, length))]
    if velocity:
        columns.append(rng.integers(1, 128, (batch, length)))
    return np.stack(columns, axis=-1).astype(np.float32)


def heads_at(model, notes: np.ndarray) -> np.ndarray:
    """Keras's outputs at every position, as the sampler lays them out: (batch, time, width)."""
    out = model(notes, training=False)
    names = ["pitch", "step", "duration"] + (["velocity"] if "velocity" in out else [])
    return np.concatenate([np.asarray(out[name]) for name in names], axis=-1)


# -- the config ------------------------------------------------------------------------------


def test_the_preset_is_a_transformer_with_the_best_lstms_notes_and_heads():
    v5, v6 = mm.get_preset("v5"), mm.get_preset("v6")
    assert v6.architecture == "transformer" and v5.architecture == "lstm"
    for field in ("timing", "velocity", "velocity_bins", "pitch_loss_weight",
                  "step_loss_weight", "duration_loss_weight", "velocity_loss_weight"):
        assert getattr(v6, field) == getattr(v5, field), field
    assert not v6.same_architecture(v5) and v6.same_architecture(mm.get_preset("v6", seed=1))
    assert not v6.same_architecture(mm.get_preset("v6", attention_layers=3))


@pytest.mark.parametrize("changes, message", [
    (dict(architecture="gru"), "architecture must be 'lstm' or 'transformer'"),
    (dict(model_dim=30, attention_heads=4), "heads of an even width"),
    (dict(model_dim=12, attention_heads=4), "heads of an even width"),  # 3 per head: odd
    (dict(attention_layers=0), "attention_layers must be >= 1"),
    (dict(targets="last"), "targets must be 'all'"),
])
def test_impossible_transformer_settings_are_refused_by_name(changes, message):
    with pytest.raises(MusicRNNError, match=message):
        mm.get_preset("v6", **changes)


def test_velocity_edges_give_the_velocity_classes_of_every_velocity():
    velocities = np.arange(1, 128, dtype=np.float32)
    for bins in (2, 16, 32, 127):
        by_edges = np.searchsorted(mm.velocity_edges(bins), velocities, side="right")
        np.testing.assert_array_equal(by_edges, velocity_classes(velocities, bins))


def test_parameter_breakdown_matches_keras_and_infer_config_reads_the_layers():
    for config in (small(), small(velocity="none", timing="regression"), mm.get_preset("v6")):
        model = mm.build_model(config)
        assert sum(row["params"] for row in mm.param_breakdown(config)) == model.count_params()
        assert mm.infer_config(model).same_architecture(config)


# -- the model -------------------------------------------------------------------------------


def test_a_prediction_never_changes_when_later_notes_change():
    """The causal mask: outputs at positions < t are the same whatever comes at t and after."""
    model = mm.build_model(small())
    rng = np.random.default_rng(0)
    notes = random_notes(rng, 2, 12)
    changed = notes.copy()
    changed[:, 7:] = random_notes(rng, 2, 5)
    before, after = heads_at(model, notes), heads_at(model, changed)
    np.testing.assert_allclose(before[:, :7], after[:, :7], atol=1e-5)
    assert np.abs(before[:, 7:] - after[:, 7:]).max() > 1e-3  # later positions do see them


def test_rotary_positions_continue_past_the_training_length_and_only_offsets_count():
    """Attention meets a key by how far back it is: the first block's output at the end of a
    window is the same whatever absolute positions the window sits at (checked through a
    one-block model fed the same notes after different numbers of other notes)."""
    config = small(attention_layers=1)
    model = mm.build_model(config)
    net = gen.note_network(model, config.replace(seq_length=6))  # a 6-note sliding window
    rng = np.random.default_rng(1)
    tail = random_notes(rng, 1, 6)
    outputs = []
    for prefix in (0, 9, 40):  # the window starts at position 0, 9 and 40
        notes = np.concatenate([random_notes(rng, 1, prefix), tail], axis=1)
        outputs.append(net.run(notes)[0])
    window = gen.keras_heads(model, tail)
    for out in outputs:
        np.testing.assert_allclose(out, window, atol=1e-4)


def test_the_last_position_view_keeps_the_weights_and_predicts_the_last_note():
    config = small()
    model = mm.build_model(config)
    last = mm.with_sequence_outputs(model, False)
    assert mm.returns_sequences(model) and not mm.returns_sequences(last)
    notes = random_notes(np.random.default_rng(2), 3, 9)
    np.testing.assert_allclose(gen.keras_heads(last, notes), heads_at(model, notes)[:, -1],
                               atol=1e-5)
    assert mm.with_sequence_outputs(last, True).count_params() == model.count_params()


def test_overfits_one_small_batch(chorale_data, tmp_path):
    """Two windows of one real chorale, seen again and again, are learned almost by heart."""
    corpus = chorale_data["corpus"]
    piece = corpus.piece(int(corpus.indices("train")[0])).iloc[:25]
    tiny_corpus = NoteCorpus.from_tables(
        "bach-chorales", [piece, piece], ["a.mid", "a-copy.mid"], ["train", "validation"])
    config = small(model_dim=32, ff_dim=64, seq_length=24, batch_size=2, learning_rate=0.01,
                   lr_schedule="plateau", epochs=60, window_shift=24,
                   early_stopping_patience=50, reduce_lr_patience=50)
    result = train(config, "bach-chorales", tmp_path / "run", corpus=tiny_corpus,
                   validate_every=10, progress=False)
    history = result.history
    assert result.steps == 60 and len(history) == 6
    assert history["val_pitch_loss"].iloc[0] > 1.0, history  # it started far from the answer
    assert history["val_pitch_loss"].min() < 0.3, history[["pitch_loss", "val_pitch_loss"]]
    run = mm.load_run(tmp_path / "run")
    assert run.config.architecture == "transformer"
    assert run.model.get_layer("attention_2").num_heads == 2


@pytest.mark.parametrize("given, expected", [
    ("on", True), ("OFF", False), ("auto", None), (True, True), (False, False)])
def test_jit_settings_read_as_notebook_04_and_the_profiles_give_them(given, expected):
    assert jit_setting(given) is expected


@pytest.mark.parametrize("given", ["yes", "", 1, None])
def test_other_jit_settings_are_refused_by_name(given):
    with pytest.raises(MusicRNNError, match="jit_compile must be on, off or auto"):
        jit_setting(given)


def test_xla_trains_and_the_model_it_returns_and_saves_runs_without_it(chorale_data, tmp_path):
    """Training steps compiled by XLA learn; the model that comes back, and the one saved, run
    as plain graphs (under XLA every new input length would compile again)."""
    corpus = chorale_data["corpus"]
    piece = corpus.piece(int(corpus.indices("train")[0])).iloc[:25]
    tiny_corpus = NoteCorpus.from_tables(
        "bach-chorales", [piece, piece], ["a.mid", "a-copy.mid"], ["train", "validation"])
    config = small(attention_layers=1, seq_length=24, batch_size=2, learning_rate=0.01,
                   lr_schedule="plateau", epochs=8, window_shift=24)
    result = train(config, "bach-chorales", tmp_path / "run", corpus=tiny_corpus,
                   validate_every=4, progress=False, jit_compile=True)
    losses = result.history["val_pitch_loss"]
    assert result.steps == 8 and losses.iloc[-1] < losses.iloc[0], losses
    assert result.model.jit_compile is False and result.model.predict_function is None
    saved = mm._keras_archive_config(tmp_path / "run" / mm.MODEL_FILE)["compile_config"]
    run = mm.load_run(tmp_path / "run")
    assert saved["jit_compile"] is False and run.model.jit_compile is False
    notes = piece[["pitch", "step", "duration", "velocity"]].to_numpy(np.float32)[None]
    for length in (7, 19):  # lengths training never saw
        np.testing.assert_allclose(result.model.predict(notes[:, :length], verbose=0)["pitch"],
                                   run.model.predict(notes[:, :length], verbose=0)["pitch"],
                                   atol=1e-5)


# -- the sampler's cache ---------------------------------------------------------------------


@pytest.mark.parametrize("velocity", [True, False])
def test_the_cached_step_gives_the_full_windows_distribution_at_every_position(velocity):
    config = small() if velocity else small(velocity="none")
    model = mm.build_model(config)
    net = gen.note_network(model, config)
    assert isinstance(net, gen.NoteTransformer) and net.capacity == config.seq_length
    assert net.velocity == velocity and net.categorical_timing
    notes = random_notes(np.random.default_rng(3), 3, config.seq_length, velocity)
    expected = heads_at(model, notes)
    state = net.new_state(3)
    for t in range(notes.shape[1]):
        np.testing.assert_allclose(net.step(state, notes[:, t]), expected[:, t], atol=1e-4)
    # the sampler's distributions from the cache are the window model's
    sampler = gen.Sampler(model, config=config, batch_size=3, seed=0)
    sampler.prime(notes)
    probabilities = sampler.distribution()
    window = gen.pitch_distribution(expected[:, -1, :128])
    np.testing.assert_allclose(probabilities["pitch"], window, atol=1e-5)


def test_one_stream_steps_as_a_row_of_a_batch_does():
    """One stream takes a path of its own (Python floats and table rows, fewer NumPy calls):
    the same classes and numbers as a row of a batch, on notes at the edges of their classes
    (a velocity halfway between two integers, times exactly on a class edge)."""
    config = small()
    model = mm.build_model(config)
    net = gen.note_network(model, config)
    notes = random_notes(np.random.default_rng(11), 3, config.seq_length)
    edges = net.time_edges
    notes[1, :, 1] = edges[np.arange(config.seq_length) % len(edges)]  # on an edge
    notes[1, :, 2] = np.nextafter(edges[-np.arange(1, config.seq_length + 1)], 0)  # just below
    halves = net.velocity_edges  # k - 0.5 where class k begins (rounded to even), and above
    notes[1, :, 3] = halves[np.arange(config.seq_length) % len(halves)] + np.resize(
        [0.0, 0.1], config.seq_length)
    notes[1, 0] = (130.0, 0.0, 0.0, 127.5)  # past the last pitch and velocity
    batch, single = net.new_state(3), net.new_state(1)
    for t in range(config.seq_length):
        np.testing.assert_array_equal(net._embed(notes[1:2, t]), net._embed(notes[:, t])[1:2])
        together = net.step(batch, notes[:, t])[1].copy()
        np.testing.assert_allclose(net.step(single, notes[1:2, t])[0], together, atol=2e-5)
    np.testing.assert_allclose(single.top, batch.top[1:2], atol=2e-6)


def test_beyond_the_cache_the_window_slides():
    """Past ``capacity`` notes the oldest key leaves the cache: every step then equals the model
    whose attention sees only the last ``capacity`` notes (``attention_window``) run over the
    whole sequence, with one block and with two, whose cached keys of the second block carry
    what their notes saw; from the plain model's window of the last notes a one-block model
    differs in nothing, a two-block one does differ."""
    rng = np.random.default_rng(4)
    notes = random_notes(rng, 2, 30)
    for layers in (1, 2):
        config = small(attention_layers=layers, seq_length=30)
        model = mm.build_model(config)
        banded = mm.transfer_weights(model, mm.build_model(config.replace(attention_window=8)))
        expected = heads_at(banded, notes)
        net = gen.note_network(model, config.replace(seq_length=8))
        assert net.capacity == 8
        state = net.new_state(2)
        for t in range(notes.shape[1]):
            np.testing.assert_allclose(net.step(state, notes[:, t]), expected[:, t], atol=1e-4)
        last_window = gen.keras_heads(model, notes[:, -8:])
        difference = np.abs(expected[:, -1] - last_window).max()
        assert (difference < 1e-4) if layers == 1 else (difference > 1e-3), (layers, difference)
    assert gen.note_network(banded).capacity == 8  # a banded model's cache is its window


def test_the_sampler_generates_reproducibly_and_refuses_re_priming_lanes(chorale_notes):
    config = small(velocity="none")
    model = mm.build_model(config)
    one = gen.generate(model, chorale_notes[:20], 50, seed=5, config=config, batch_size=4)
    two = gen.generate(model, chorale_notes[:20], 50, seed=5, config=config, batch_size=4)
    assert one.shape == (4, 50, 3)
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one[0], one[1])  # each stream draws its own notes
    sampler = gen.Sampler(model, config=config)
    assert sampler.reprime_every is None and "cache" in sampler.describe()
    with pytest.raises(MusicRNNError, match="sliding window of cached keys"):
        gen.Sampler(model, config=config, reprime_every=10)


def test_whole_pieces_are_scored_as_the_sampler_plays_them():
    """Scoring a whole piece (evaluation's carried scores, notebook 04's drift check) reads a
    transformer through the same sliding window its sampler keeps, not with full attention far
    past its training length: every position's outputs are the cached sampler's."""
    from musicrnn import evaluation as ev

    config = small(seq_length=8)
    model = mm.build_model(config)
    notes = random_notes(np.random.default_rng(6), 2, 30)
    played = heads_at(ev.sequence_model(model, config), notes)
    net = gen.note_network(model, config)
    state = net.new_state(2)
    for t in range(notes.shape[1]):
        np.testing.assert_allclose(net.step(state, notes[:, t]), played[:, t], atol=1e-4)
    full = heads_at(model, notes)  # full attention differs once the piece outgrows the window
    assert np.abs(full[:, -1] - played[:, -1]).max() > 1e-3
    assert ev.sequence_model(played_model := mm.build_model(config.replace(
        attention_window=8)), None) is played_model


def test_long_pieces_are_scored_in_chunks_with_the_same_numbers(monkeypatch):
    """A sliding-window transformer's output at a position depends on the last blocks x
    (window - 1) notes only, so a long piece is scored in chunks (memory linear in its length,
    not quadratic: a MAESTRO performance has thousands of notes) with the same numbers."""
    from musicrnn import evaluation as ev

    config = small(seq_length=8)
    model = mm.build_model(config)
    piece = random_notes(np.random.default_rng(7), 1, 90, velocity=True)[0]
    whole = ev.score_carried(model, [piece], config=config)
    monkeypatch.setattr(ev, "CARRIED_CHUNK", 16)  # 16 positions a pass, 14 notes before each
    chunked = ev.score_carried(model, [piece], config=config)
    assert ev._receptive_field(ev.sequence_model(model, config)) == 2 * 7
    assert chunked.n_notes == whole.n_notes == 89
    assert chunked.note_nll == pytest.approx(whole.note_nll, abs=1e-5)
    assert chunked.pitch_nll == pytest.approx(whole.pitch_nll, abs=1e-5)


def test_the_drift_check_reads_long_pieces_in_chunks_with_the_same_numbers():
    """Notebook 04's drift check carries a transformer through whole pieces as its sampler plays
    them. On all of MAESTRO one pass per batch of pieces needed more than 24 GB (attention over
    thousands of positions at once) and the profile's kernel was killed; chunks of positions
    give the same logits."""
    from musicrnn import training

    config = small(seq_length=8)
    model = mm.build_model(config)
    pieces = list(random_notes(np.random.default_rng(9), 3, 90, velocity=True))
    positions = [np.arange(8, 90), np.arange(40, 90, 7), np.arange(10, 12)]
    whole = training._carried_logits(model, pieces, positions)  # 90 positions: one pass each
    chunked = training._carried_logits(model, pieces, positions, chunk=16)
    for a, b in zip(whole, chunked):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)
    drift = training.state_drift(model, pieces, context=8, max_targets=None)
    assert np.isfinite(drift.carried_nll) and drift.targets == 3 * 82


def test_the_context_curve_reads_long_contexts_as_the_sampler_plays_them():
    """Past its training length a transformer is scored through its sliding window (what its
    sampler does after that many notes), not with full attention over notes it never saw."""
    from musicrnn import evaluation as ev

    config = small(seq_length=8)
    model = mm.build_model(config)
    pieces = list(random_notes(np.random.default_rng(8), 3, 40, velocity=True))
    curve = ev.context_curve(model, pieces, [4, 20], max_positions=None).set_index("context")
    played = mm.sliding_window_model(model, config)
    for context in (4, 20):  # the same notes: those after 20 of context
        expected = ev.score_windows(played, pieces, context, min_position=20)
        assert curve.loc[context, "pitch_nll"] == pytest.approx(expected.pitch_nll, abs=1e-6)
    full = ev.score_windows(model, pieces, 20, min_position=20)  # what it is not
    assert abs(curve.loc[20, "pitch_nll"] - full.pitch_nll) > 1e-4
    # within the training length the window changes nothing
    assert curve.loc[4, "pitch_nll"] == pytest.approx(
        ev.score_windows(model, pieces, 4, min_position=20).pitch_nll, abs=1e-5)


def test_a_loaded_run_knows_its_window(tmp_path):
    """A transformer's layers cannot say how long its training window was; a run loaded from
    its folder keeps ``config.json``'s, so its sliding window is that long (not a default)."""
    config = small(seq_length=20).replace(name="my-v6")
    model = mm.build_model(config)
    mm.write_run_files(tmp_path / "run", model, config,
                       random_notes(np.random.default_rng(9), 1, 30)[0])
    run = mm.load_run(tmp_path / "run")
    assert mm.infer_config(run.model).seq_length == 20
    played = mm.sliding_window_model(run.model)
    assert {block.window for block in mm._attention_blocks(played)} == {20}

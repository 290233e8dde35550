"""Categorical timing (musicrnn.timing, the ``v4`` preset): the time grid, its loss, its heads in
the sampler and in evaluation, on real Bach chorales (music21's corpus, offline). And the
velocity classes of the dynamics head (``v5``), on the real velocities of the MAESTRO sample.

The point of it: chorales strike most notes together with the note before (step 0 s, a chord
tone) or a beat later; a squared-error step head predicts the average and rolls every chord, a
categorical head keeps both and sampling draws one.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from musicrnn import model as mm
from musicrnn.errors import MusicRNNError
from musicrnn.generation import NoteRNN, Sampler, keras_heads, tutorial_generate
from musicrnn.timing import (
    DEFAULT_VELOCITY, TIME_BINS, TIME_EDGES, TIME_VALUES, VELOCITY_BINS, class_velocity,
    sample_time_classes, sample_velocity_classes, time_class_probabilities, time_classes,
    timing_point, timing_width, velocity_classes, velocity_values,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chorale_notes(chorale_data) -> np.ndarray:
    """Real chorale notes, raw (pitch, step, duration), three pieces one after another."""
    corpus = chorale_data["corpus"]
    notes = np.concatenate([corpus.features(i) for i in range(3)]).astype(np.float32)
    assert (notes[:, 1] == 0).mean() > 0.4, "chorales are mostly chords"
    return notes


# -- the grid -----------------------------------------------------------------------------------


def test_every_class_value_falls_in_its_own_class_and_the_grid_is_fine():
    assert TIME_VALUES.shape == (TIME_BINS,) and TIME_EDGES.shape == (TIME_BINS - 1,)
    np.testing.assert_array_equal(time_classes(TIME_VALUES), np.arange(TIME_BINS))
    assert TIME_VALUES[0] == 0.0 and np.all(np.diff(TIME_VALUES) > 0)
    assert time_classes([0.0, 0.0039, 0.004, 8.0, 1e6]).tolist() == [0, 0, 1, 127, 127]
    # every time from 4 ms to 8 s is represented within +-3.2%
    times = np.geomspace(0.0041, 7.99, 5000)
    error = np.abs(TIME_VALUES[time_classes(times)] / times - 1)
    assert error.max() < 0.032
    assert timing_width("regression") == 1 and timing_width("categorical") == TIME_BINS
    with pytest.raises(MusicRNNError, match="timing must be"):
        timing_width("ordinal")


def test_timing_point_is_the_median_class_and_passes_regressions_through():
    values = np.array([[0.25], [1.5]], np.float32)
    assert np.array_equal(timing_point(values), values)
    logits = np.full((2, TIME_BINS), -30.0)
    logits[0, 0] = 0.0  # certainly a chord tone
    logits[1, [10, 80, 90]] = [0.0, 0.1, 0.2]  # 30% / 33% / 37%: the median is class 80
    point = timing_point(logits)
    assert point.shape == (2, 1)
    assert point[0, 0] == 0.0 and point[1, 0] == pytest.approx(TIME_VALUES[80])
    with pytest.raises(MusicRNNError, match="1 or 128 outputs"):
        timing_point(np.zeros((2, 7)))


def test_sampled_times_follow_the_class_probabilities():
    rng = np.random.default_rng(3)
    logits = np.full(TIME_BINS, -40.0, np.float32)
    logits[[0, 60, 81]] = np.log([0.6, 0.1, 0.3])
    rows = np.tile(logits, (20_000, 1))
    drawn = sample_time_classes(rows.copy(), rng.random(20_000, dtype=np.float32))
    classes = time_classes(drawn)
    assert set(np.unique(classes)) == {0, 60, 81}
    for k, p in ((0, 0.6), (60, 0.1), (81, 0.3)):
        assert (classes == k).mean() == pytest.approx(p, abs=0.015)
    np.testing.assert_allclose(time_class_probabilities(logits)[[0, 60, 81]], [0.6, 0.1, 0.3],
                               rtol=1e-6)


# -- the loss and the model ---------------------------------------------------------------------


def test_the_loss_is_the_cross_entropy_of_the_time_class(chorale_notes):
    rng = np.random.default_rng(0)
    seconds = chorale_notes[:64, 1:3].reshape(-1).astype(np.float32)  # real steps and durations
    logits = rng.normal(size=(len(seconds), TIME_BINS)).astype(np.float32)
    got = keras.ops.convert_to_numpy(mm.time_class_crossentropy(seconds, logits))
    log_probs = np.log(time_class_probabilities(logits))
    expected = -log_probs[np.arange(len(seconds)), time_classes(seconds)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # targets with a trailing 1, and sequence shaped, give the same
    got_3d = mm.time_class_crossentropy(seconds.reshape(8, -1, 1), logits.reshape(8, -1, TIME_BINS))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got_3d).reshape(-1), expected,
                               rtol=1e-5, atol=1e-5)


def test_v4_has_categorical_heads_and_its_config_is_read_back():
    cfg = mm.get_preset("v4")
    assert (cfg.timing, cfg.pitch_input, cfg.targets) == ("categorical", "embedding", "all")
    model = mm.build_model(cfg)
    assert model.get_layer("step").units == model.get_layer("duration").units == TIME_BINS
    assert mm.infer_config(model).timing == "categorical"
    assert mm.infer_config(mm.build_model(mm.get_preset("v3"))).timing == "regression"
    assert not cfg.same_architecture(mm.get_preset("v3"))
    assert cfg.same_architecture(mm.get_preset("v3", timing="categorical"))
    assert sum(r["params"] for r in mm.param_breakdown(cfg)) == mm.count_params(cfg)
    with pytest.raises(MusicRNNError, match="timing must be 'regression' or 'categorical'"):
        mm.get_preset("v4", timing="binned")


@pytest.mark.slow
def test_a_categorical_model_learns_chords_where_regression_averages(chorale_notes):
    """The same small network and batches, regression against categorical timing: after
    training, the regression's predicted step on chord tones is the blur between 0 and a beat;
    the categorical head puts most of its mass on "0 s" for the chord tones."""
    length, n = 24, 16
    starts = np.arange(n) * 9
    x = np.stack([chorale_notes[s:s + length] for s in starts])
    y = np.stack([chorale_notes[s + 1:s + length + 1] for s in starts])
    targets = {"pitch": y[..., 0].astype("int32"), "step": y[..., 1], "duration": y[..., 2]}
    chord = y[..., 1] == 0
    assert 0.3 < chord.mean() < 0.9
    results = {}
    for timing in ("regression", "categorical"):
        keras.utils.set_random_seed(2)
        cfg = mm.get_preset("v4", timing=timing, lstm_units=[64], dropout=0.0, learning_rate=0.01,
                            seq_length=length)
        model = mm.compile_model(mm.build_model(cfg), cfg)
        model.fit(np.tile(x, (150, 1, 1)), {k: np.tile(v, (150, 1)) for k, v in targets.items()},
                  batch_size=n, epochs=1, shuffle=False, verbose=0)
        results[timing] = model.predict(x, verbose=0)["step"]
    regression = results["regression"][..., 0]
    chord_probability = time_class_probabilities(results["categorical"])[..., 0]
    # the regression cannot say "0" for a chord tone and "a beat" elsewhere at once as sharply
    assert chord_probability[chord].mean() > 0.6
    assert chord_probability[~chord].mean() < 0.3
    predicted_chords = timing_point(results["categorical"])[..., 0] == 0
    assert (predicted_chords == chord).mean() > 0.8
    assert (np.abs(regression[chord]) < 0.01).mean() < (predicted_chords[chord]).mean()


# (a v4 model saved and loaded in a fresh process: tests/test_model.py, beside v3 and v5)


# -- the sampler --------------------------------------------------------------------------------


def test_the_numpy_sampler_reads_categorical_heads_exactly(chorale_notes):
    keras.utils.set_random_seed(4)
    model = mm.build_model(mm.get_preset("v4", lstm_units=[48, 32]))
    net = NoteRNN.from_keras(model)
    assert net.categorical_timing and net.timing_width == TIME_BINS
    windows = np.stack([chorale_notes[s:s + 30] for s in range(0, 180, 10)])
    theirs = keras_heads(model, windows)
    assert theirs.shape == (18, 128 + 2 * TIME_BINS)
    for rows in (1, 3, 18):
        ours, _ = net.run(windows[:rows])
        np.testing.assert_allclose(ours, theirs[:rows], rtol=1e-4, atol=2e-5)


def test_sampled_steps_are_class_times_drawn_from_the_model(chorale_notes):
    """With the step head's bias set to favour "0 s" (60%) and one class (40%), streams draw
    chord tones at that rate; the same seed gives the same notes."""
    keras.utils.set_random_seed(5)
    model = mm.build_model(mm.get_preset("v4", lstm_units=[16]))
    head = model.get_layer("step")
    kernel, bias = (w.numpy() for w in head.weights)
    bias = np.full(TIME_BINS, -50.0, np.float32)
    bias[0], bias[81] = math.log(0.6), math.log(0.4)
    head.set_weights([np.zeros_like(kernel), bias])
    primer = chorale_notes[:30]
    sampler = Sampler(model, batch_size=64, seed=7)
    notes = sampler.prime(primer).sample(200)
    steps = notes[..., 1].reshape(-1)
    assert set(np.unique(time_classes(steps))) == {0, 81}
    assert (steps == 0).mean() == pytest.approx(0.6, abs=0.02)
    assert np.isin(notes[..., 2], TIME_VALUES).all()
    again = Sampler(model, batch_size=64, seed=7).prime(primer).sample(200)
    np.testing.assert_array_equal(notes, again)
    dist = Sampler(model, seed=1).prime(primer).distribution()
    assert dist["step"][0] == 0.0 and dist["step_probs"][0, 0] == pytest.approx(0.6, rel=1e-4)
    reference = tutorial_generate(model, primer, 40, seed=0)  # the slow loop also draws classes
    assert np.isin(reference[:, 1], TIME_VALUES[[0, 81]]).all()


# -- velocity classes ---------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [2, 16, VELOCITY_BINS, 64, 127])
def test_velocity_classes_round_trip_within_half_a_class(bins):
    velocities = np.arange(1, 128)
    classes = velocity_classes(velocities, bins)
    assert classes.min() == 0 and classes.max() == bins - 1
    assert (np.diff(classes) >= 0).all() and len(np.unique(classes)) == bins  # ordered, all used
    widths = np.bincount(classes)
    assert widths.max() - widths.min() <= 1  # equal classes (127 / bins velocities each)
    values = velocity_values(bins)
    np.testing.assert_array_equal(velocity_classes(values, bins), np.arange(bins))
    back = class_velocity(classes, bins)
    assert back.min() >= 1 and back.max() <= 127
    assert np.abs(back - velocities).max() <= widths.max() // 2  # within half a class
    if bins == 127:
        np.testing.assert_array_equal(back, velocities)  # one class per velocity: exact


def test_velocity_classes_of_32_bins_and_their_edges():
    assert VELOCITY_BINS == 32 and 1 <= DEFAULT_VELOCITY <= 127
    assert velocity_classes([1, 4, 5, 8, 124, 125, 127]).tolist() == [0, 0, 1, 1, 30, 31, 31]
    # rounded, and clipped into 1-127: 0 and 300 are not velocities but still get a class
    assert velocity_classes([0, 4.4, 4.6, 300]).tolist() == [0, 0, 1, 31]
    assert class_velocity(velocity_classes(np.array([[64, 100]]))).shape == (1, 2)
    with pytest.raises(MusicRNNError, match="velocity bins"):
        velocity_classes([64], bins=0)
    with pytest.raises(MusicRNNError, match="velocity classes must be whole numbers 0-31"):
        class_velocity([32])
    with pytest.raises(MusicRNNError, match="velocity classes"):
        class_velocity([1.5])


def test_velocity_classes_on_real_performances(maestro_sample, tmp_path_factory):
    """The binning measured on the MAESTRO sample's velocities: the round trip moves a velocity
    by about one step on average, never more than two, and the performances use every class."""
    from musicrnn.notes import load_corpus

    corpus = load_corpus(f"local:{maestro_sample}", data_dir=tmp_path_factory.mktemp("maestro"))
    velocity = corpus.columns["velocity"].astype(np.int64)
    assert len(np.unique(velocity)) > 100  # real dynamics: most of the 127 velocities occur
    classes = velocity_classes(velocity)
    error = np.abs(class_velocity(classes) - velocity)
    assert error.max() == 2 and error.mean() < 1.1
    assert len(np.unique(classes)) == VELOCITY_BINS
    coarse = np.abs(class_velocity(velocity_classes(velocity, 16), 16) - velocity)
    assert coarse.mean() > 1.5 * error.mean()  # fewer classes lose more


def test_sampled_velocity_classes_follow_the_softmax_at_a_temperature():
    rng = np.random.default_rng(5)
    logits = np.full(VELOCITY_BINS, -40.0, np.float32)
    logits[[3, 16, 25]] = np.log([0.2, 0.5, 0.3])
    rows = np.tile(logits, (20_000, 1))
    for temperature in (1.0, 0.5):
        drawn = sample_velocity_classes(rows, rng.random(20_000, dtype=np.float32),
                                        1.0 / temperature)
        expected = time_class_probabilities(logits / temperature)
        observed = np.bincount(drawn, minlength=VELOCITY_BINS) / len(drawn)
        assert set(np.unique(drawn)) == {3, 16, 25}
        assert 0.5 * np.abs(observed - expected).sum() < 0.015
    np.testing.assert_array_equal(rows[0], logits)  # the logits are left as they are

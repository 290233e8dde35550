"""The pitch drawn after the step (``ModelConfig.pitch_given_step``): step groups, packed targets,
the loss, the NumPy networks, the sampler's order of draws and the scores."""

from __future__ import annotations

import numpy as np
import pytest

from musicrnn.errors import MusicRNNError
from musicrnn.generation import Sampler, keras_heads, note_network
from musicrnn.model import (
    PitchGivenStepCrossentropy, build_model, compile_model, get_preset, infer_config, load_model,
    save_model,
)
from musicrnn.sequences import make_dataset
from musicrnn.timing import (
    TIME_BINS, TIME_VALUES, marginal_pitch_logits, pitch_given_step_logits, pitch_targets,
    step_group_edges, step_group_of, step_groups, time_classes,
)

TOY = {"v5": dict(lstm_units=[24], pitch_embedding_dim=8, seq_length=12, dropout=0.0),
       "v6": dict(model_dim=16, attention_heads=2, ff_dim=32, seq_length=12)}


def test_step_groups_cut_the_time_classes_in_order():
    groups = step_groups(8)
    assert groups.shape == (TIME_BINS,)
    assert groups[0] == 0 and (groups[1:] > 0).all()  # group 0 is "0 s" alone
    assert (np.diff(groups) >= 0).all() and set(groups.tolist()) == set(range(8))
    edges = step_group_edges(8)
    assert edges[0] == pytest.approx(0.004) and edges[-1] == pytest.approx(0.32)
    # a step's group is read through its class, as the sampler draws it
    steps = np.array([0.0, 0.003, 0.012, 0.05, 0.3, 2.0], np.float32)
    assert (step_group_of(steps, 8) == step_group_of(TIME_VALUES[time_classes(steps)], 8)).all()
    assert step_group_of(steps, 8).tolist() == [0, 0, 2, 4, 6, 7]
    assert step_groups(2).tolist() == [0] + [1] * (TIME_BINS - 1)


@pytest.mark.parametrize("bad", [1, 33, -2, 2.5, True, "8"])
def test_a_wrong_number_of_groups_is_a_clear_error(bad):
    with pytest.raises(MusicRNNError, match="pitch_given_step must be"):
        get_preset("v5", pitch_given_step=bad)  # a type error or a range error, both named


def test_groups_need_categorical_timing():
    with pytest.raises(MusicRNNError, match="needs timing='categorical'"):
        get_preset("v2", pitch_given_step=4)


def test_targets_pack_the_pitch_and_its_steps_group():
    pitch = np.array([60, 61, 62, 127])
    step = np.array([0.0, 0.02, 0.5, 0.001], np.float32)
    packed = pitch_targets(pitch, step, 8)
    assert (packed % 128 == pitch).all()
    assert (packed // 128 == step_group_of(step, 8)).all()
    assert (pitch_targets(pitch, step, 0) == pitch).all()


def test_the_marginal_sums_the_step_out():
    rng = np.random.default_rng(0)
    pitch, step = rng.normal(size=(5, 4 * 128)), rng.normal(size=(5, TIME_BINS))
    marginal = np.exp(marginal_pitch_logits(pitch, step))
    assert np.allclose(marginal.sum(axis=1), 1.0)
    # the same readout in every group: the marginal is that readout's softmax
    same = np.tile(pitch[:, :128], (1, 4))
    expected = np.exp(pitch[:, :128]) / np.exp(pitch[:, :128]).sum(axis=1, keepdims=True)
    assert np.allclose(np.exp(marginal_pitch_logits(same, step)), expected)
    # by hand, for one row
    groups = step_groups(4)
    probs = np.exp(step[0]) / np.exp(step[0]).sum()
    readouts = np.exp(pitch[0].reshape(4, 128))
    readouts /= readouts.sum(axis=1, keepdims=True)
    by_hand = sum(probs[groups == g].sum() * readouts[g] for g in range(4))
    assert np.allclose(marginal[0], by_hand)
    chosen = pitch_given_step_logits(pitch, [0, 1, 2, 3, 3])
    assert np.array_equal(chosen[2], pitch[2, 256:384])


def test_the_loss_scores_the_readout_of_the_true_steps_group():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 4 * 128)).astype("float32")
    pitch = rng.integers(0, 128, size=(2, 3))
    group = rng.integers(0, 4, size=(2, 3))
    loss = PitchGivenStepCrossentropy(4, reduction=None)(pitch + 128 * group, logits)
    rows = logits.reshape(2, 3, 4, 128)[np.arange(2)[:, None], np.arange(3), group]
    log_z = np.log(np.exp(rows).sum(axis=-1))
    expected = log_z - np.take_along_axis(rows, pitch[..., None], -1)[..., 0]
    assert np.allclose(np.asarray(loss), expected, atol=1e-5)


@pytest.fixture(scope="module", params=["v5", "v6"])
def toy(request):
    config = get_preset(request.param, pitch_given_step=4, **TOY[request.param])
    model = build_model(config)
    rng = np.random.default_rng(2)
    kernel = model.get_layer("pitch").kernel
    kernel.assign(rng.normal(0, 0.5, kernel.shape).astype("float32"))  # the groups differ
    return model, config


def test_the_numpy_network_and_saving_keep_every_readout(toy, tmp_path):
    model, config = toy
    assert model.get_layer("pitch").units == 4 * 128
    net = note_network(model, config)
    assert net.pitch_groups == 4 and net.pitch_width == 512
    net.check_against(model)
    loaded = load_model(save_model(model, tmp_path / "m.keras"))
    assert infer_config(loaded).pitch_given_step == 4
    notes = np.random.default_rng(3).random((2, 8, 4)).astype("float32") * [80, 0.3, 0.5, 100]
    assert np.allclose(keras_heads(model, notes), keras_heads(loaded, notes), atol=1e-5)


def _forced(model, config, chord_pitch: int, later_pitch: int, p_chord: float):
    """``model`` with heads that ignore the notes: the step is "0 s" with probability
    ``p_chord``, else 0.5 s; group 0's readout says ``chord_pitch``, every other ``later_pitch``."""
    for name in ("pitch", "step"):
        layer = model.get_layer(name)
        layer.kernel.assign(np.zeros(layer.kernel.shape, "float32"))
    pitch_bias = np.full((4, 128), -30.0, np.float32)
    pitch_bias[0, chord_pitch] = 30.0
    pitch_bias[1:, later_pitch] = 30.0
    model.get_layer("pitch").bias.assign(pitch_bias.ravel())
    step_bias = np.full(TIME_BINS, -30.0, np.float32)
    later = int(time_classes([0.5])[0])
    step_bias[0] = np.log(p_chord)
    step_bias[later] = np.log(1.0 - p_chord)
    model.get_layer("step").bias.assign(step_bias)
    return model


def test_the_sampler_draws_the_pitch_of_the_drawn_steps_group():
    config = get_preset("v5", pitch_given_step=4, **TOY["v5"])
    model = _forced(build_model(config), config, chord_pitch=64, later_pitch=50, p_chord=0.3)
    sampler = Sampler(model, batch_size=16, seed=0)
    sampler.prime(np.array([[60, 0.5, 0.4, 80]] * 4, np.float32))
    marginal = sampler.distribution()["pitch"][0]
    assert marginal[64] == pytest.approx(0.3, abs=1e-3)
    assert marginal[50] == pytest.approx(0.7, abs=1e-3)
    notes = sampler.sample(40).reshape(-1, 4)
    chords = notes[:, 1] < 0.004
    assert 0.2 < chords.mean() < 0.4  # both kinds were drawn
    assert (notes[chords, 0] == 64).all() and (notes[~chords, 0] == 50).all()


def test_training_and_scores_read_the_pitch_given_the_step(chorale_data):
    """A small grouped model trained on real chorales: its pitch given the true step scores
    better than its pitch with the step summed out, and both are in the report."""
    import keras

    from musicrnn.evaluation import score_windows

    corpus = chorale_data["corpus"]
    config = get_preset("v5", pitch_given_step=4, velocity="none", lstm_units=[32],
                        pitch_embedding_dim=8, seq_length=16, dropout=0.0, learning_rate=0.01,
                        batch_size=32, seed=3)
    train = make_dataset(corpus, "train", config)
    _, targets = train.gather(train.window_starts()[:4])
    assert targets["pitch"].max() >= 128  # packed: some targets are outside group 0
    keras.utils.set_random_seed(3)
    model = compile_model(build_model(config), config, jit_compile=False)
    model.fit(train.to_tf(), steps_per_epoch=150, epochs=1, verbose=0, shuffle=False)
    held_out = list(corpus.iter_features("validation"))
    scores = score_windows(model, held_out, seq_length=16, name="grouped")
    assert np.isfinite(scores.pitch_nll) and np.isfinite(scores.pitch_nll_marginal)
    assert scores.pitch_nll < scores.pitch_nll_marginal < np.log(128)
    sampled = Sampler(model, seed=1).prime(held_out[0][:16]).sample(30)[0]
    assert sampled.shape == (30, 3) and (sampled[:, 1] >= 0).all()

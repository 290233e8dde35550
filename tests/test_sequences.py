"""Training windows on real chorales: inside pieces, split by piece, aligned, augmented, reshuffled,
gathered by index (memory O(notes)). Velocity windows on real MAESTRO performances."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from musicrnn.errors import MusicRNNError
from musicrnn.model import get_preset
from musicrnn.notes import NoteCorpus
from musicrnn.sequences import (
    PREFETCH_BATCHES, WindowDataset, augment, make_dataset, match_features, piece_features,
    seed_window,
)
from musicrnn.timing import velocity_classes


@pytest.fixture(scope="module")
def chorale_corpus(chorale_data) -> NoteCorpus:
    """Eight real chorales (conftest's ``chorale_data``), every split non-empty."""
    return chorale_data["corpus"]


def _piece_bounds(ds: WindowDataset, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    piece = ds.piece_of(starts)
    return ds.piece_offsets[piece], ds.piece_offsets[piece + 1]


@pytest.mark.parametrize("targets", ["last", "all"])
@pytest.mark.parametrize("shift", [1, 7])
def test_windows_never_cross_pieces(chorale_corpus, targets, shift):
    ds = WindowDataset(chorale_corpus, "train", 32, targets=targets, shift=shift, seed=3)
    for epoch in range(4):
        starts = ds.window_starts(epoch)
        first, end = _piece_bounds(ds, starts)
        assert (starts >= first).all()
        assert (starts + ds.seq_length < end).all(), "a window or its target leaves its piece"
    # Every window of every piece is valid, and with shift 1 every valid start is used.
    if shift == 1:
        expected = sum(max(0, n - 32) for n in np.diff(ds.piece_offsets))
        assert len(ds.window_starts(0)) == expected == ds.windows_per_pass


def test_a_piece_boundary_would_be_crossed_by_the_original_pipeline(chorale_corpus):
    """The check above can fail: windows over the concatenated notes do cross pieces."""
    ds = WindowDataset(chorale_corpus, "train", 32, shift=1)
    naive = np.arange(0, len(ds.notes) - 32)  # the original: every start in the whole stream
    first, end = _piece_bounds(ds, naive)
    assert (naive + 32 >= end).sum() == 32 * (len(ds.piece_offsets) - 2)


@pytest.mark.parametrize("targets", ["last", "all"])
def test_targets_are_the_next_notes(chorale_corpus, targets):
    ds = WindowDataset(chorale_corpus, "train", 20, targets=targets, batch_size=16, seed=1)
    starts = ds.window_starts(0)[:16]
    inputs, labels = ds.gather(starts)
    assert inputs.shape == (16, 20, 3) and inputs.dtype == np.float32
    shape = (16, 20) if targets == "all" else (16,)
    assert all(labels[k].shape == shape for k in ("pitch", "step", "duration"))
    assert labels["pitch"].dtype == np.int32
    piece = ds.piece_of(starts)
    for row, (s, p) in enumerate(zip(starts, piece)):
        name = ds.piece_names[p]
        features = chorale_corpus.features(int(np.flatnonzero(chorale_corpus.names == name)[0]))
        local = s - ds.piece_offsets[p]
        np.testing.assert_array_equal(inputs[row], features[local: local + 20])
        following = features[local + 1: local + 21] if targets == "all" else features[local + 20]
        np.testing.assert_array_equal(labels["pitch"][row], following[..., 0].astype(np.int32))
        np.testing.assert_array_equal(labels["step"][row], following[..., 1])
        np.testing.assert_array_equal(labels["duration"][row], following[..., 2])
    if targets == "all":  # the target at position t is the input at t + 1
        np.testing.assert_array_equal(labels["pitch"][:, :-1], inputs[:, 1:, 0].astype(np.int32))


def test_splits_share_no_piece(chorale_corpus):
    names = {s: set(WindowDataset(chorale_corpus, s, 8).piece_names)
             for s in ("train", "validation", "test")}
    assert names["train"] and names["validation"] and names["test"]
    assert not names["train"] & names["validation"]
    assert not names["train"] & names["test"]
    assert not names["validation"] & names["test"]
    assert set().union(*names.values()) == set(chorale_corpus.names)


def test_each_pass_is_reshuffled_and_seeded(chorale_corpus):
    ds = WindowDataset(chorale_corpus, "train", 16, shift=1, seed=11)
    a, b = ds.window_starts(0), ds.window_starts(1)
    assert not np.array_equal(a, b), "the order must change every pass"
    assert np.array_equal(np.sort(a), np.sort(b)), "every pass holds every window once"
    again = WindowDataset(chorale_corpus, "train", 16, shift=1, seed=11)
    assert np.array_equal(again.window_starts(1), b)
    other = WindowDataset(chorale_corpus, "train", 16, shift=1, seed=12)
    assert not np.array_equal(other.window_starts(1), b)


def test_shifted_windows_move_their_phase_every_pass(chorale_corpus):
    ds = WindowDataset(chorale_corpus, "train", 16, shift=16, seed=2)
    seen = set()
    for epoch in range(30):
        starts = ds.window_starts(epoch)
        rel = starts - ds.piece_offsets[ds.piece_of(starts)]
        seen.update((rel % 16).tolist())
    assert seen == set(range(16)), "over many passes every offset of every piece is visited"


def test_the_stream_runs_passes_back_to_back_and_resumes_exactly(chorale_corpus):
    ds = WindowDataset(chorale_corpus, "train", 16, shift=5, batch_size=32, seed=4,
                       transpose=3, time_stretch=0.1)
    steps = ds.steps_per_pass
    stream = ds.batches()
    first = [next(stream) for _ in range(2 * steps + 3)]  # more than two passes: never ends
    served = np.concatenate([b[0][:, 0, :] for b in first[:steps]])
    assert len(served) == steps * 32
    resumed = ds.batches(start_step=steps + 2)
    for expected in first[steps + 2:]:
        got = next(resumed)
        np.testing.assert_array_equal(got[0], expected[0])
        for key in expected[1]:
            np.testing.assert_array_equal(got[1][key], expected[1][key])


def test_augmentation_keeps_pitches_in_range_and_shapes_intact(chorale_corpus):
    ds = WindowDataset(chorale_corpus, "train", 24, shift=3, seed=0)
    window = ds.notes[ds.window_starts(0)[:512, None] + np.arange(25)]
    # Push some windows against the ends of the MIDI range: real music, transposed to the edge.
    window[:128, :, 0] += 127 - window[:128, :, 0].max(axis=1, keepdims=True)
    window[128:256, :, 0] -= window[128:256, :, 0].min(axis=1, keepdims=True)
    before = window.copy()
    out = augment(window, np.random.default_rng(0), transpose=24, time_stretch=0.25)
    np.testing.assert_array_equal(window, before)  # a new array; the notes are never touched
    assert out.shape == window.shape
    assert out[..., 0].min() >= 0 and out[..., 0].max() <= 127
    shift = out[:, :, 0] - window[:, :, 0]
    assert (shift == shift[:, :1]).all(), "one transposition per window"
    assert (shift[:, 0] == np.round(shift[:, 0])).all()
    assert (shift[:128, 0] <= 0).all() and (shift[128:256, 0] >= 0).all()
    assert shift[256:, 0].min() < -12 and shift[256:, 0].max() > 12, "the whole range is used"
    factor = out[:, :, 1:] / np.where(window[:, :, 1:] > 0, window[:, :, 1:], np.nan)
    per_window = np.nanmax(factor, axis=(1, 2))
    np.testing.assert_allclose(np.nanmin(factor, axis=(1, 2)), per_window, rtol=1e-5)
    assert per_window.min() >= 0.75 - 1e-6 and per_window.max() <= 1.25 + 1e-6


def test_only_training_data_is_augmented(chorale_corpus):
    config = get_preset("v2", seq_length=16, targets="all", transpose=5, time_stretch=0.2)
    train = make_dataset(chorale_corpus, "train", config)
    val = make_dataset(chorale_corpus, "validation", config)
    assert (train.transpose, train.time_stretch, train.shuffle) == (5, 0.2, True)
    assert (val.transpose, val.time_stretch, val.shuffle) == (0, 0.0, False)
    x, _ = next(val.batches())
    np.testing.assert_array_equal(x, val.gather(val.window_starts()[: len(x)])[0])
    # Validation windows tile the pieces: every note is a target at most once.
    starts = val.window_starts()
    covered = (starts[:, None] + 1 + np.arange(16)).ravel()
    assert len(np.unique(covered)) == len(covered)


def test_to_tf_gives_fixed_training_batches_and_a_finite_validation(chorale_corpus):
    ds = WindowDataset(chorale_corpus, "train", 12, targets="all", batch_size=8, shift=12)
    taken = list(ds.to_tf().take(ds.steps_per_pass + 2))
    assert len(taken) == ds.steps_per_pass + 2
    x, y = taken[0]
    assert tuple(x.shape) == (8, 12, 3) and tuple(y["pitch"].shape) == (8, 12)
    val = WindowDataset(chorale_corpus, "validation", 12, targets="last", batch_size=8,
                        shuffle=False)
    batches = list(val.to_tf())
    assert sum(int(b[0].shape[0]) for b in batches) == val.windows_per_pass
    assert tuple(batches[0][1]["step"].shape) == (8,)


def test_to_tf_runs_no_autotuning_thread(chorale_corpus):
    """tf.data's autotuning thread sleeps up to a minute between rounds, and an iterator freed by
    the garbage collector waits for it with the interpreter locked (random stalls of tens of
    seconds after training): the pipeline runs without it, on a fixed prefetch buffer."""
    for split, shuffle in (("train", True), ("validation", False)):
        dataset = WindowDataset(chorale_corpus, split, 12, batch_size=8, shuffle=shuffle).to_tf()
        assert dataset.options().autotune.enabled is False
        assert "PrefetchDataset" in type(dataset).__name__
        assert int(dataset._buffer_size) == PREFETCH_BATCHES > 0


def test_memory_stays_order_notes_at_maestro_scale(chorale_corpus):
    """About 7M notes (MAESTRO v2's size), built by tiling the real chorales: the pipeline holds
    O(notes) arrays, and a pass plus a few batches peak far below one copy per window."""
    reps = -(-7_000_000 // chorale_corpus.n_notes)
    lengths = np.tile(chorale_corpus.lengths(), reps)
    big = NoteCorpus(
        dataset="tiled", names=[f"p{i}" for i in range(len(lengths))],
        splits=np.tile(chorale_corpus.splits, reps),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        columns={c: np.tile(a, reps) for c, a in chorale_corpus.columns.items()},
    )
    assert big.n_notes >= 7_000_000
    tracemalloc.start()
    try:
        ds = WindowDataset(big, "train", 50, targets="all", shift=1, batch_size=64)
        stream = ds.batches()
        for _ in range(5):
            next(stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    materialised = ds.windows_per_pass * 51 * 3 * 4  # one float32 copy per window
    assert ds.windows_per_pass > 4_000_000
    assert materialised > 2e9
    assert ds.memory_bytes() < 0.2e9
    assert peak < 1e9, f"peak {peak / 1e9:.2f} GB while building and serving"


def test_bad_inputs_get_clear_errors(chorale_corpus):
    longest = int(chorale_corpus.lengths()[chorale_corpus.indices("validation")].max())
    with pytest.raises(MusicRNNError, match="seq_length .* lower seq_length"):
        WindowDataset(chorale_corpus, "validation", longest)
    no_validation = chorale_corpus.subset(chorale_corpus.indices("train"))
    with pytest.raises(MusicRNNError, match="no pieces in the 'validation' split"):
        WindowDataset(no_validation, "validation", 8)
    with pytest.raises(MusicRNNError, match="targets"):
        WindowDataset(chorale_corpus, "train", 8, targets="every")
    with pytest.raises(MusicRNNError, match="unknown split"):
        WindowDataset(chorale_corpus, "dev", 8)
    with pytest.raises(MusicRNNError, match=">= 1"):
        WindowDataset(chorale_corpus, "train", 8, shift=0)


def test_seed_window_is_a_real_validation_window(chorale_corpus):
    window = seed_window(chorale_corpus, 30, seed=5)
    assert window.shape == (30, 3) and window.dtype == np.float32
    found = False
    for i in chorale_corpus.indices("validation"):
        piece = chorale_corpus.features(int(i))
        for s in range(len(piece) - 29):
            if np.array_equal(piece[s: s + 30], window):
                found = True
    assert found
    np.testing.assert_array_equal(seed_window(chorale_corpus, 30, seed=5), window)


# -- velocity (a model of dynamics) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def maestro_corpus(maestro_sample, tmp_path_factory) -> NoteCorpus:
    """The 60 real MAESTRO v2 sample performances: real dynamics, every note its own velocity."""
    from musicrnn.notes import load_corpus

    return load_corpus(f"local:{maestro_sample}", data_dir=tmp_path_factory.mktemp("maestro"))


@pytest.mark.parametrize("targets", ["last", "all"])
def test_velocity_windows_carry_each_notes_velocity_and_its_class(maestro_corpus, targets):
    ds = WindowDataset(maestro_corpus, "train", 20, targets=targets, batch_size=16, seed=2,
                       velocity_bins=32)
    assert ds.notes.shape[1] == 4
    starts = ds.window_starts(0)[:16]
    inputs, labels = ds.gather(starts)
    assert inputs.shape == (16, 20, 4)
    rows = ds.piece_offsets[ds.piece_of(starts)]  # where each window's piece starts in the split
    for b, (start, first) in enumerate(zip(starts, rows)):
        piece = int(np.flatnonzero(maestro_corpus.names == ds.piece_names[ds.piece_of(start)])[0])
        a = maestro_corpus.offsets[piece] + (start - first)
        velocity = maestro_corpus.columns["velocity"][a: a + 21]
        np.testing.assert_array_equal(inputs[b, :, 3], velocity[:20])
        following = velocity[1:] if targets == "all" else velocity[-1]
        np.testing.assert_array_equal(labels["velocity"][b], velocity_classes(following, 32))
    assert labels["velocity"].dtype == np.int32
    assert labels["velocity"].shape == labels["pitch"].shape
    assert len(np.unique(inputs[..., 3])) > 20  # real dynamics, not one velocity
    plain, plain_labels = WindowDataset(maestro_corpus, "train", 20, targets=targets,
                                        batch_size=16, seed=2).gather(starts)
    np.testing.assert_array_equal(plain, inputs[..., :3])  # the other columns as without it
    assert "velocity" not in plain_labels


def test_augmentation_leaves_velocity_alone(maestro_corpus):
    ds = WindowDataset(maestro_corpus, "train", 24, velocity_bins=32, transpose=6,
                       time_stretch=0.2, seed=1)
    starts = ds.window_starts(0)[:256]
    plain, plain_labels = ds.gather(starts)
    out, labels = ds.gather(starts, np.random.default_rng(4))
    np.testing.assert_array_equal(out[..., 3], plain[..., 3])
    np.testing.assert_array_equal(labels["velocity"], plain_labels["velocity"])
    assert (out[..., 0] != plain[..., 0]).any() and (out[..., 1:3] != plain[..., 1:3]).any()


def test_a_config_with_velocity_gets_velocity_data(maestro_corpus):
    v5 = get_preset("v5", seq_length=16, batch_size=8)
    train = make_dataset(maestro_corpus, "train", v5)
    val = make_dataset(maestro_corpus, "validation", v5, max_windows=40)
    assert train.velocity_bins == val.velocity_bins == 32
    assert make_dataset(maestro_corpus, "train", get_preset("v4")).velocity_bins is None
    x, y = next(iter(train.to_tf().take(1)))
    assert tuple(x.shape) == (8, 16, 4) and tuple(y["velocity"].shape) == (8, 16)
    spec = val.element_spec()
    assert spec[0].shape[-1] == 4 and spec[1]["velocity"].dtype.name == "int32"
    assert sum(int(b[0].shape[0]) for b in val.to_tf()) == val.windows_per_pass


def test_one_velocity_throughout_gives_one_class(chorale_corpus):
    """The chorales play every note at one velocity: the velocity target is that one class."""
    velocities = np.unique(chorale_corpus.columns["velocity"])
    assert len(velocities) == 1
    ds = make_dataset(chorale_corpus, "train", get_preset("v5", seq_length=16))
    _, labels = next(ds.batches())
    assert np.unique(labels["velocity"]).tolist() == velocity_classes(velocities).tolist()
    seed = seed_window(chorale_corpus, 16, seed=5, velocity=True)
    assert seed.shape == (16, 4) and (seed[:, 3] == velocities[0]).all()
    np.testing.assert_array_equal(seed[:, :3], seed_window(chorale_corpus, 16, seed=5))


def test_match_features_adds_or_drops_the_velocity_column(chorale_corpus):
    piece = piece_features(chorale_corpus, 0, velocity=True)
    np.testing.assert_array_equal(piece[:, :3], chorale_corpus.features(0))
    np.testing.assert_array_equal(match_features(piece, 3), chorale_corpus.features(0))
    assert match_features(piece, 4) is piece
    added = match_features(chorale_corpus.features(0), 4, default_velocity=70)
    assert added.shape == piece.shape and (added[:, 3] == 70).all()
    batch = match_features(np.zeros((2, 5, 3), np.float32), 4)
    assert batch.shape == (2, 5, 4) and (batch[..., 3] == 64).all()
    with pytest.raises(MusicRNNError, match="3 or 4 columns"):
        match_features(np.zeros((5, 2)), 4)
    with pytest.raises(MusicRNNError, match="velocity bins"):
        WindowDataset(chorale_corpus, "train", 8, velocity_bins=0)

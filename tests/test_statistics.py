"""musicrnn.statistics: musical statistics of note sequences and their comparison, on hand-made
notes with known answers, real Bach chorales (music21's corpus, offline) and real MAESTRO
performances (dynamics), and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from musicrnn import statistics as st
from musicrnn.errors import MusicRNNError
from note_support import piece as _piece


@pytest.fixture(scope="module")
def performance(maestro_sample):
    """One real MAESTRO performance as a note table (with each note's velocity)."""
    import pandas as pd

    from musicrnn.notes import midi_to_notes

    meta = pd.read_csv(maestro_sample / "maestro-v2.0.0.csv")
    return midi_to_notes(maestro_sample / meta["midi_filename"].iloc[0])


# -- overlap and KL -----------------------------------------------------------------------------


def test_overlap_of_identical_samples_is_one_and_of_disjoint_samples_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 200)
    assert st.overlap_area(a, a) == pytest.approx(1.0, abs=1e-9)
    assert st.kl_divergence(a, a) == pytest.approx(0.0, abs=1e-9)
    far = rng.normal(50, 1, 200)
    assert st.overlap_area(a, far) < 1e-6
    assert st.kl_divergence(a, far) > 10
    half = st.overlap_area(a, rng.normal(1.0, 1, 200))  # N(0,1) vs N(1,1): 2 * Phi(-0.5) = 0.62
    assert 0.5 < half < 0.75
    assert st.overlap_area([3, 3, 3], [3, 3, 3]) == pytest.approx(1.0)  # point masses
    assert st.overlap_area([3, 3, 3], [4, 4, 4]) < 1e-6
    with pytest.raises(MusicRNNError):
        st.overlap_area([], [1.0])


# -- statistics of one sequence -----------------------------------------------------------------


def test_music_statistics_of_hand_made_notes():
    c_major = _piece([60, 62, 64, 65, 67, 69, 71, 72], step=0.5, duration=0.5)
    s = st.music_statistics(c_major)
    assert s["pitch_range"] == 12
    assert s["n_pitches_used"] == 8 and s["n_pitch_classes_used"] == 7
    assert s["pitch_entropy"] == pytest.approx(3.0)  # 8 equally common pitches: log2 8 bits
    assert s["scale_consistency"] == 1.0
    assert s["mean_interval"] == pytest.approx(12 / 7)
    assert s["mean_ioi"] == 0.5 and s["mean_duration"] == 0.5
    assert s["polyphony"] == 1.0 and s["polyphony_rate"] == 0.0 and s["silence_rate"] == 0.0
    assert s["pitch_class_histogram"].sum() == pytest.approx(1.0)
    assert s["pitch_class_histogram"][0] == pytest.approx(2 / 8)
    assert not set(st.VELOCITY_STATISTICS) & set(s)  # no velocity column: no dynamics

    # three-note chords held for 1 s, then 1 s of silence before the next chord
    chords = np.array([[60, 0, 1], [64, 0, 1], [67, 0, 1], [62, 2, 1], [65, 0, 1], [69, 0, 1]],
                      dtype=float)
    s = st.music_statistics(chords)
    assert s["polyphony"] == pytest.approx(3.0) and s["polyphony_rate"] == 1.0
    assert s["silence_rate"] == pytest.approx(1 / 3)
    assert s["chord_rate"] == pytest.approx(4 / 5)
    assert s["mean_ioi"] == 2.0

    loop = _piece([60, 64, 67, 72] * 5)
    s = st.music_statistics(loop)
    assert s["repeated_4gram_rate"] == pytest.approx(1 - 4 / 17)
    assert s["repeated_pitch_rate"] == 0.0


def test_velocity_statistics_of_hand_made_notes():
    s = st.music_statistics(_piece([60, 62, 64, 65], step=0.5, velocity=[60, 80, 60, 80]))
    assert set(st.VELOCITY_STATISTICS) <= set(s)
    assert s["velocity_mean"] == 70 and s["velocity_std"] == 10 and s["velocity_change"] == 20
    # loud where the notes are dense (a run of 0.1 s steps), soft where they are sparse (2 s)
    steps = np.array([0.0] + [0.1] * 7 + [2.0] * 4)
    velocity = np.array([100] * 8 + [40] * 4, dtype=float)
    dense_loud = np.column_stack([np.full(12, 60.0), steps, np.full(12, 0.1), velocity])
    assert st.music_statistics(dense_loud)["velocity_density_correlation"] > 0.9
    dense_soft = dense_loud.copy()
    dense_soft[:, 3] = 140 - velocity
    assert st.music_statistics(dense_soft)["velocity_density_correlation"] < -0.9
    flat = st.music_statistics(_piece([60, 62, 64], velocity=90))
    assert flat["velocity_std"] == 0 and flat["velocity_change"] == 0
    assert flat["velocity_density_correlation"] == 0  # nothing varies: nothing to relate


def test_velocity_statistics_of_a_real_performance(performance):
    s = st.music_statistics(performance)  # a note table: its velocity column is used
    velocity = performance["velocity"].to_numpy(float)
    assert s["velocity_mean"] == pytest.approx(velocity.mean())
    assert 5 < s["velocity_std"] < 40  # a pianist's dynamics: neither flat nor random
    assert 0 < s["velocity_change"] < 2 * s["velocity_std"] * math.sqrt(2)
    assert -1 <= s["velocity_density_correlation"] <= 1
    without = st.music_statistics(performance.drop(columns="velocity"))
    assert not set(st.VELOCITY_STATISTICS) & set(without)
    assert without["pitch_range"] == s["pitch_range"]


# -- comparing two sets -------------------------------------------------------------------------


def test_compare_statistics_tells_a_copy_from_a_distortion():
    rng = np.random.default_rng(3)
    reference = [_piece(rng.integers(55, 75, 60), step=rng.uniform(0.2, 0.4)) for _ in range(20)]
    same = st.compare_statistics(reference, reference)
    assert (same["value_overlap"] > 0.999).all()
    assert same["overlap_area"].mean() > 0.8
    slow = [np.column_stack([p[:, 0], p[:, 1] * 4, p[:, 2]]) for p in reference]
    distorted = st.compare_statistics(slow, reference)
    assert distorted.loc["mean_ioi", "overlap_area"] < 0.2
    assert distorted.loc["pitch_range", "overlap_area"] > 0.9  # pitches untouched
    assert set(distorted.index) == set(st.STATISTICS) - set(st.VELOCITY_STATISTICS)
    with pytest.raises(MusicRNNError, match="unknown statistics"):
        st.compare_statistics(reference, reference, statistics=["loudness"])


def test_velocity_statistics_join_the_comparison_when_both_sets_have_velocity(performance):
    notes = performance[["pitch", "step", "duration", "velocity"]].to_numpy(float)
    segments = [notes[i:i + 100] for i in range(0, len(notes) - 100, 100)][:30]
    same = st.compare_statistics(segments[::2], segments[1::2])
    assert set(st.VELOCITY_STATISTICS) <= set(same.index)
    assert same.loc["velocity_mean", "overlap_area"] > 0.5
    # the same notes played much more softly: the dynamics statistics tell, the others do not
    soft = [np.column_stack([s[:, :3], np.maximum(1, s[:, 3] * 0.4)]) for s in segments[::2]]
    quiet = st.compare_statistics(soft, segments[1::2])
    assert quiet.loc["velocity_mean", "overlap_area"] < 0.2
    assert quiet.loc["pitch_range", "overlap_area"] == pytest.approx(
        same.loc["pitch_range", "overlap_area"])
    # a set without velocity (a model of 3 columns) is compared on the rest only
    plain = st.compare_statistics([s[:, :3] for s in segments[::2]], segments[1::2])
    assert not set(st.VELOCITY_STATISTICS) & set(plain.index)
    with pytest.raises(MusicRNNError, match="velocity column"):
        st.compare_statistics([s[:, :3] for s in segments[::2]], segments[1::2],
                              statistics=["velocity_mean"])


def test_chorales_have_one_velocity_and_flat_dynamics(chorale_data):
    corpus = chorale_data["corpus"]
    table = corpus.piece(0)
    assert table["velocity"].nunique() == 1  # music21 scores carry no dynamics
    s = st.music_statistics(table)
    assert s["velocity_std"] == 0 and s["velocity_density_correlation"] == 0


# -- bad input ----------------------------------------------------------------------------------


def test_notes_with_nan_are_refused_with_the_place():
    import pandas as pd

    table = pd.DataFrame({"pitch": [60, 62, 64], "step": [0.0, np.nan, 0.5],
                          "duration": [0.5, 0.5, 0.5]})
    with pytest.raises(MusicRNNError, match="row 1, column step"):
        st.as_notes(table)
    with pytest.raises(MusicRNNError, match="NaN"):
        st.music_statistics(table)
    with pytest.raises(MusicRNNError, match="0-127"):
        st.as_notes(_piece([60, 130]))
    with pytest.raises(MusicRNNError, match="shape"):
        st.as_notes(np.zeros((4, 2)))
    with pytest.raises(MusicRNNError, match="shape"):
        st.as_notes(np.zeros((4, 5)))
    with pytest.raises(MusicRNNError, match="velocities"):
        st.as_notes(_piece([60, 62], velocity=[64, 200]))
    assert st.as_notes(_piece([60, 62], velocity=64)).shape == (2, 4)
    with pytest.raises(MusicRNNError, match="empty"):
        st.music_statistics(np.zeros((0, 3)))

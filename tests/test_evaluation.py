"""musicrnn.evaluation: metrics on hand-made cases with known answers, baselines on real chorales,
the original research checkpoint against a unigram model on real MAESTRO pieces, bad input, and
`musicrnn evaluate` end to end on a real (tiny) run directory."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest

from musicrnn import evaluation as ev
from musicrnn.errors import MusicRNNError
from musicrnn.model import build_model, get_preset


# -- helpers ------------------------------------------------------------------------------------


def _piece(pitches, step=0.25, duration=0.5) -> np.ndarray:
    pitches = np.asarray(pitches, dtype=float)
    return np.column_stack([pitches, np.full(len(pitches), step), np.full(len(pitches), duration)])


def _tiny_model(seq_length: int = 8, targets: str = "last", pitch_input: str = "scalar",
                seed: int = 0) -> tuple[keras.Model, object]:
    keras.utils.set_random_seed(seed)
    config = get_preset("v1", lstm_units=(8,), seq_length=seq_length, targets=targets,
                        pitch_input=pitch_input, pitch_embedding_dim=4)
    return build_model(config), config


@pytest.fixture(scope="module")
def chorale_data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def chorales(chorale_data_dir):
    """24 real Bach chorales (music21's corpus), written out and extracted by the project's own
    pipeline (the slow part: music21 parses each score)."""
    from musicrnn.notes import load_corpus

    return load_corpus("bach-chorales", data_dir=chorale_data_dir, max_files=24)


# -- teacher-forced scores ----------------------------------------------------------------------


def test_a_uniform_model_scores_log128_nats_and_chance_accuracy():
    model, _ = _tiny_model()
    pitch = model.get_layer("pitch")
    pitch.set_weights([np.zeros_like(w) for w in pitch.get_weights()])  # every logit 0
    rng = np.random.default_rng(0)
    pieces = [_piece(rng.integers(40, 80, 30)), _piece(rng.integers(40, 80, 20))]
    scores = ev.score_windows(model, pieces, seq_length=8)
    assert scores.n_notes == (30 - 8) + (20 - 8)
    assert scores.pitch_nll == pytest.approx(math.log(128), abs=1e-6)
    assert scores.perplexity == pytest.approx(128, rel=1e-5)
    assert scores.top1_accuracy == pytest.approx(1 / 128)
    assert scores.top5_accuracy == pytest.approx(5 / 128)


def test_window_scores_are_the_models_own_prediction_after_each_full_window():
    model, _ = _tiny_model(seq_length=6)
    rng = np.random.default_rng(1)
    piece = np.column_stack([rng.integers(50, 70, 15), rng.uniform(0, 0.5, 15),
                             rng.uniform(0.1, 1, 15)])
    scores, nll = ev.score_windows(model, [piece], seq_length=6, return_per_note=True)
    expected = []
    for t in range(6, 15):
        out = model.predict_on_batch(piece[None, t - 6:t].astype(np.float32))
        logits = np.asarray(out["pitch"], dtype=np.float64)[0]
        log_p = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        expected.append(-log_p[int(piece[t, 0])])
    np.testing.assert_allclose(nll, expected, rtol=1e-4, atol=1e-5)
    assert scores.pitch_nll == pytest.approx(np.mean(expected), rel=1e-4)


@pytest.mark.parametrize("targets", ["last", "all"])
def test_carried_and_window_scores_agree_where_the_contexts_coincide(targets):
    """Note ``seq_length`` of a piece has the same context in both regimes: the whole prefix."""
    model, config = _tiny_model(seq_length=7, targets=targets, pitch_input="embedding")
    rng = np.random.default_rng(2)
    pieces = [_piece(rng.integers(55, 75, 8), step=s) for s in (0.0, 0.25, 0.5)]
    window = ev.score_windows(model, pieces, seq_length=7)
    carried = ev.score_carried(model, pieces, config=config, min_position=7)
    assert window.n_notes == carried.n_notes == 3
    assert carried.pitch_nll == pytest.approx(window.pitch_nll, rel=1e-4)
    assert carried.step_mae == pytest.approx(window.step_mae, rel=1e-4, abs=1e-6)
    everything = ev.score_carried(model, pieces, config=config)
    assert everything.n_notes == 3 * 7  # every note but the first of each piece


def test_window_scoring_subsamples_positions_evenly():
    model, _ = _tiny_model()
    pieces = [_piece(np.arange(40, 100))]
    assert ev.score_windows(model, pieces, 8, max_positions=10).n_notes == 10
    assert ev.score_windows(model, pieces, 8, min_position=50).n_notes == 10


# -- baselines ----------------------------------------------------------------------------------


def test_a_markov_model_of_a_repeating_sequence_is_nearly_certain():
    motif = [60, 62, 64, 65, 67, 65, 64, 62]
    train = [_piece(motif * 30), _piece(motif * 20)]
    test = [_piece(motif * 5)]
    markov = ev.NGramPitchModel(order=3).fit(train)
    scores = markov.score(test, min_position=3)
    assert scores.pitch_nll < 0.05
    assert scores.top1_accuracy == 1.0
    unigram = ev.NGramPitchModel(order=0).fit(train).score(test, min_position=3)
    assert unigram.pitch_nll > 1.5  # five pitches with unequal shares: about log 5


@pytest.mark.parametrize("order", [0, 1, 2, 4])
def test_ngram_distributions_sum_to_one_for_seen_and_unseen_contexts(order):
    rng = np.random.default_rng(order)
    model = ev.NGramPitchModel(order).fit([_piece(rng.integers(48, 72, 200))])
    contexts = np.array([[60] * order, [128] * order, [3] * order, list(range(order))])
    probs = np.exp(model.predict_log_proba(contexts.reshape(4, order)))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-9)
    assert (probs > 0).all()  # never zero: back-off reaches the uniform distribution


def test_ngram_log_prob_agrees_with_its_full_distribution():
    rng = np.random.default_rng(5)
    piece = _piece(rng.integers(50, 60, 120))
    model = ev.NGramPitchModel(2).fit([piece])
    held_out = _piece(rng.integers(50, 62, 30))
    direct = model.log_prob([held_out], min_position=2)
    contexts = np.stack([held_out[t - 2:t, 0] for t in range(2, 30)]).astype(int)
    full = model.predict_log_proba(contexts)
    np.testing.assert_allclose(direct, full[np.arange(28), held_out[2:, 0].astype(int)])


def test_ngram_bad_settings_are_refused():
    with pytest.raises(MusicRNNError, match="order"):
        ev.NGramPitchModel(9)
    with pytest.raises(MusicRNNError, match="discounts"):
        ev.NGramPitchModel(2, discounts=[0.5, 1.5, 0.5])
    with pytest.raises(MusicRNNError, match="fit"):
        ev.NGramPitchModel(1).score([_piece([60, 62, 64])])


def test_repeat_last_rule_is_exact_on_steady_timing():
    steady = _piece(np.arange(50, 70), step=0.25, duration=0.5)
    scores = ev.repeat_last_scores([steady])
    assert scores.step_mae == 0 and scores.duration_mae == 0
    swing = np.column_stack([np.arange(50, 60), np.tile([0.1, 0.3], 5), np.full(10, 0.2)])
    assert ev.repeat_last_scores([swing]).step_mae == pytest.approx(0.2)


@pytest.mark.slow
def test_baselines_fitted_on_real_chorales_beat_unigram(chorales):
    baselines = ev.fit_ngram_baselines(chorales.subset("train"), chorales.subset("validation"))
    assert list(baselines) == ["unigram", "markov1", "markov2", "markov3", "markov4"]
    test = list(chorales.iter_features("test"))
    scores = {s.name: s for s in ev.ngram_scores(baselines, test, min_position=8)}
    unigram = scores["unigram"].pitch_nll
    assert 2.5 < unigram < math.log(128)  # a real pitch distribution: far from uniform
    for name in ("markov1", "markov2", "markov3"):
        assert scores[name].pitch_nll < unigram - 0.2, name
        assert scores[name].top1_accuracy > scores["unigram"].top1_accuracy
    assert scores["markov2"].pitch_nll < scores["markov1"].pitch_nll
    # tuning must not be worse on the validation pieces than the textbook discount of 0.75
    validation = list(chorales.iter_features("validation"))
    fixed = ev.NGramPitchModel(2).fit(chorales.subset("train"))
    assert -baselines["markov2"].log_prob(validation).mean() <= -fixed.log_prob(validation).mean()


def test_the_original_checkpoint_scores_worse_than_a_unigram_model_on_maestro(
        maestro_sample, seed_artifacts):
    """The research model of the original project did not learn pitch: a unigram model that
    only knows how often each pitch occurs predicts held-out MAESTRO pieces better. (The shared
    sample holds train and validation pieces only; validation is the held-out set.)"""
    import pandas as pd

    from musicrnn.model import load_original_checkpoint
    from musicrnn.notes import midi_to_notes

    meta = pd.read_csv(maestro_sample / "maestro-v2.0.0.csv")
    assert set(meta["split"]) == {"train", "validation"}
    pieces = {split: [midi_to_notes(maestro_sample / f)
                      for f in meta.loc[meta["split"] == split, "midi_filename"]]
              for split in ("train", "validation")}
    original = load_original_checkpoint(seed_artifacts / "ckpt_50.weights.h5")
    seq_length = 50
    model_scores = ev.score_windows(original, pieces["validation"], seq_length,
                                    name="original", max_positions=3000)
    unigram = ev.NGramPitchModel(0).fit(pieces["train"])
    unigram_scores = unigram.score(pieces["validation"], min_position=seq_length,
                                   max_positions=3000)
    assert model_scores.n_notes == unigram_scores.n_notes == 3000
    assert model_scores.pitch_nll > unigram_scores.pitch_nll + 0.2
    assert unigram_scores.pitch_nll < math.log(128) - 0.5


# -- statistics ---------------------------------------------------------------------------------


def test_overlap_of_identical_samples_is_one_and_of_disjoint_samples_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 200)
    assert ev.overlap_area(a, a) == pytest.approx(1.0, abs=1e-9)
    assert ev.kl_divergence(a, a) == pytest.approx(0.0, abs=1e-9)
    far = rng.normal(50, 1, 200)
    assert ev.overlap_area(a, far) < 1e-6
    assert ev.kl_divergence(a, far) > 10
    half = ev.overlap_area(a, rng.normal(1.0, 1, 200))  # N(0,1) vs N(1,1): 2 * Phi(-0.5) = 0.62
    assert 0.5 < half < 0.75
    assert ev.overlap_area([3, 3, 3], [3, 3, 3]) == pytest.approx(1.0)  # point masses
    assert ev.overlap_area([3, 3, 3], [4, 4, 4]) < 1e-6
    with pytest.raises(MusicRNNError):
        ev.overlap_area([], [1.0])


def test_music_statistics_of_hand_made_notes():
    c_major = _piece([60, 62, 64, 65, 67, 69, 71, 72], step=0.5, duration=0.5)
    s = ev.music_statistics(c_major)
    assert s["pitch_range"] == 12
    assert s["n_pitches_used"] == 8 and s["n_pitch_classes_used"] == 7
    assert s["pitch_entropy"] == pytest.approx(3.0)  # 8 equally common pitches: log2 8 bits
    assert s["scale_consistency"] == 1.0
    assert s["mean_interval"] == pytest.approx(12 / 7)
    assert s["mean_ioi"] == 0.5 and s["mean_duration"] == 0.5
    assert s["polyphony"] == 1.0 and s["polyphony_rate"] == 0.0 and s["silence_rate"] == 0.0
    assert s["pitch_class_histogram"].sum() == pytest.approx(1.0)
    assert s["pitch_class_histogram"][0] == pytest.approx(2 / 8)

    # three-note chords held for 1 s, then 1 s of silence before the next chord
    chords = np.array([[60, 0, 1], [64, 0, 1], [67, 0, 1], [62, 2, 1], [65, 0, 1], [69, 0, 1]],
                      dtype=float)
    s = ev.music_statistics(chords)
    assert s["polyphony"] == pytest.approx(3.0) and s["polyphony_rate"] == 1.0
    assert s["silence_rate"] == pytest.approx(1 / 3)
    assert s["chord_rate"] == pytest.approx(4 / 5)
    assert s["mean_ioi"] == 2.0

    loop = _piece([60, 64, 67, 72] * 5)
    s = ev.music_statistics(loop)
    assert s["repeated_4gram_rate"] == pytest.approx(1 - 4 / 17)
    assert s["repeated_pitch_rate"] == 0.0


def test_compare_statistics_tells_a_copy_from_a_distortion():
    rng = np.random.default_rng(3)
    reference = [_piece(rng.integers(55, 75, 60), step=rng.uniform(0.2, 0.4)) for _ in range(20)]
    same = ev.compare_statistics(reference, reference)
    assert (same["value_overlap"] > 0.999).all()
    assert same["overlap_area"].mean() > 0.8
    slow = [np.column_stack([p[:, 0], p[:, 1] * 4, p[:, 2]]) for p in reference]
    distorted = ev.compare_statistics(slow, reference)
    assert distorted.loc["mean_ioi", "overlap_area"] < 0.2
    assert distorted.loc["pitch_range", "overlap_area"] > 0.9  # pitches untouched
    assert set(distorted.index) == set(ev.STATISTICS)
    with pytest.raises(MusicRNNError, match="unknown statistics"):
        ev.compare_statistics(reference, reference, statistics=["loudness"])


def test_continuation_segments_cut_primer_and_truth_from_one_piece():
    pieces = [_piece(np.arange(20, 80)), _piece(np.arange(80, 110))]
    primers, truth = ev.continuation_segments(pieces, primer_length=10, num_notes=15,
                                              num_samples=12, seed=0)
    assert primers.shape == (12, 10, 3) and len(truth) == 12
    for p, t in zip(primers, truth):
        whole = np.concatenate([p[:, 0], t[:, 0]])
        np.testing.assert_array_equal(np.diff(whole), 1)  # consecutive notes of one piece
    with pytest.raises(MusicRNNError, match="no held-out piece has 100 notes"):
        ev.continuation_segments(pieces, 50, 50, 4)


# -- bad input ----------------------------------------------------------------------------------


def test_notes_with_nan_are_refused_with_the_place():
    import pandas as pd

    table = pd.DataFrame({"pitch": [60, 62, 64], "step": [0.0, np.nan, 0.5],
                          "duration": [0.5, 0.5, 0.5]})
    with pytest.raises(MusicRNNError, match="row 1, column step"):
        ev.as_notes(table)
    with pytest.raises(MusicRNNError, match="NaN"):
        ev.music_statistics(table)
    with pytest.raises(MusicRNNError, match="0-127"):
        ev.as_notes(_piece([60, 130]))
    with pytest.raises(MusicRNNError, match="shape"):
        ev.as_notes(np.zeros((4, 2)))


def test_an_evaluation_set_shorter_than_seq_length_is_refused():
    model, _ = _tiny_model(seq_length=8)
    short = [_piece([60, 62, 64, 65, 67]), _piece([60] * 8)]
    with pytest.raises(MusicRNNError, match="too short.*8-note context"):
        ev.score_windows(model, short, seq_length=8)


def test_a_model_of_another_sequence_length_is_refused():
    notes = keras.Input(shape=(25, 3))
    hidden = keras.layers.LSTM(4)(notes)
    fixed = keras.Model(notes, {"pitch": keras.layers.Dense(128)(hidden),
                                "step": keras.layers.Dense(1)(hidden),
                                "duration": keras.layers.Dense(1)(hidden)})
    pieces = [_piece(np.arange(40, 100))]
    with pytest.raises(MusicRNNError, match="exactly 25 notes.*seq_length=25"):
        ev.score_windows(fixed, pieces, seq_length=50)
    assert ev.score_windows(fixed, pieces, seq_length=25).n_notes == 35


# -- a run directory, end to end ----------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_command_writes_metrics_tables_and_plots(chorale_run, tmp_path, capsys):
    import shutil

    from musicrnn.cli import main

    run_dir = tmp_path / "run"
    shutil.copytree(chorale_run["run_dir"], run_dir)  # a real trained run (tests/conftest.py)
    status = main(["evaluate", "--run-dir", str(run_dir), "--data-dir",
                   str(chorale_run["data_dir"]), "--temperatures", "0.8", "1.2",
                   "--num-samples", "8", "--num-notes", "24"])
    assert status == 0
    out = run_dir / "evaluation"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("pitch_nll", "unigram_pitch_nll", "markov2_pitch_nll", "best_ngram_pitch_nll",
                "best_temperature", "overlap_area"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["dataset"] == "bach-chorales" and metrics["max_files"] == 8
    assert metrics["best_temperature"] in (0.8, 1.2)
    assert metrics["best_ngram_pitch_nll"] <= metrics["markov2_pitch_nll"]
    assert 0 <= metrics["overlap_area"] <= 1
    for name in ("scores", "temperature_sweep", "statistics"):
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.md").read_text().count("|") > 10
    for name in ("nll_bars.png", "temperature_sweep.png", "distributions.png"):
        assert (out / name).stat().st_size > 5000
    printed = capsys.readouterr().out
    assert "pitch NLL" in printed and "best temperature" in printed

    assert main(["evaluate", "--run-dir", str(tmp_path / "nowhere")]) == 2
    assert "no run directory" in capsys.readouterr().err
    assert main(["evaluate", "--run-dir", str(run_dir), "--data-dir",
                 str(chorale_run["data_dir"]), "--num-notes", "5000"]) == 2
    assert "lower num_notes" in capsys.readouterr().err


# -- experiments --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["experiments-quick.yaml", "experiments-maestro.yaml"])
def test_the_experiment_files_load(name):
    from pathlib import Path

    cfg = ev.load_experiment_config(Path(__file__).resolve().parents[1] / "configs" / name)
    assert {"baseline", "v1", "v2"} <= set(cfg["models"])
    assert len(cfg["models"]) >= 4  # and at least one proposed variant
    assert cfg["budget_seconds"] > 0


@pytest.mark.parametrize("text, message", [
    ("models: {a: {preset: v2}}\nwhat: 1\n", "unknown keys"),
    ("models: {a: {lstm_units: [8]}}\n", "needs a 'preset'"),
    ("models: {a: {preset: v9}}\n", "unknown preset"),
    ("models: {a: {preset: v2, dropout: 2.0}}\n", "dropout"),
    ("budget_seconds: -5\nmodels: {a: {preset: v2}}\n", "budget_seconds"),
    ("models: {}\n", "'models'"),
])
def test_bad_experiment_files_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MusicRNNError, match=message):
        ev.load_experiment_config(path)
    with pytest.raises(MusicRNNError, match="no experiments file"):
        ev.load_experiment_config(tmp_path / "missing.yaml")


@pytest.mark.slow
def test_experiments_train_on_one_budget_and_write_the_log(chorale_run, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "dataset: bach-chorales\nmax_files: 8\nseed: 3\nbudget_seconds: 2\n"
        "train: {validate_every: 5, validation_windows: 64}\n"
        "evaluation: {temperatures: [1.0], num_samples: 4, num_notes: 16}\n"
        "models:\n  baseline: {preset: baseline, lstm_units: [8], seq_length: 12,"
        " early_stopping_patience: 1000}\n"
        "  v4: {preset: v4, lstm_units: [8], seq_length: 16, pitch_embedding_dim: 4,"
        " early_stopping_patience: 1000}\n"
    )
    out = tmp_path / "experiments"
    log = ev.run_experiments(config, out, data_dir=chorale_run["data_dir"], progress=False)
    assert list(log.index[:2]) == ["baseline", "v4"]
    assert {"unigram", "markov2", "markov4", "repeat last"} <= set(log.index)
    trained = log.loc[["baseline", "v4"]]
    assert trained["stopped_by_budget"].all()  # 2 s: the budget, not the epochs, ended training
    assert (trained["final_epoch"] >= 1).all()
    assert trained["heldout_pitch_nll"].notna().all() and trained["overlap_area"].notna().all()
    for name in ("experiment_log.csv", "experiment_log.md", "summary.json", "loss_curves.png",
                 "nll_bars.png", "temperature_sweep.png", "distributions.png"):
        assert (out / name).is_file(), name
    for model_name in ("baseline", "v4"):
        assert (out / model_name / "music_rnn_model.keras").is_file()
        assert (out / model_name / "evaluation" / "metrics.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["min_position"] == 16  # the longest seq_length: the same notes for both
    assert summary["best_model"] in ("baseline", "v4")
    goals = summary["goals"]
    assert set(goals) == {"baseline", "v4"}
    for name, g in goals.items():
        assert g["all_goals"] == (g["goal_markov2_15pct"] and g["goal_beats_best_ngram"]
                                  and g["goal_overlap_0_8"])
        assert g["pitch_nll"] == pytest.approx(log.loc[name, "heldout_pitch_nll"])
    meeting = [n for n, g in goals.items() if g["all_goals"]]
    expected = (min(meeting, key=lambda n: goals[n]["pitch_nll"]) if meeting
                else str(log.loc[["baseline", "v4"], "heldout_pitch_nll"].idxmin()))
    assert summary["best_model"] == expected
    assert summary["best_model_meets_every_goal"] == bool(meeting)
    # the categorical timing model was scored on its median times
    assert np.isfinite(log.loc["v4", "heldout_step_mae"])
    assert isinstance(summary["goal_beats_best_ngram"], bool)
    assert "## Goals" in (out / "experiment_log.md").read_text()


# -- the evaluation figures (appended to musicrnn.plots) ------------------------------------------


def test_evaluation_figures_draw_what_they_are_given():
    import pandas as pd

    from musicrnn import plots

    scores = pd.DataFrame({
        "name": ["v3", "unigram", "markov2", "repeat last", "v3", "unigram"],
        "context": ["window"] * 4 + ["carried"] * 2,
        "pitch_nll": [1.8, 3.4, 2.5, np.nan, 1.7, 3.3],
    })
    fig = plots.nll_bars(scores)
    ax = fig.axes[0]
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == pytest.approx([1.8, 2.5, 3.4])  # the window rows with an NLL, no more
    assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(2.5 * 0.85)  # the goal line

    sweep = pd.DataFrame({"overlap_area": [0.6, 0.8, 0.7], "overlap_pitch_range": [0.5, 0.9, 0.8]},
                         index=pd.Index([0.5, 1.0, 1.5], name="temperature"))
    fig = plots.overlap_by_temperature(sweep, reference_overlap=0.9)
    assert "best: T = 1" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    fig = plots.overlap_by_temperature({"a": sweep, "b": sweep * 0.5})
    assert len([line for line in fig.axes[0].get_lines() if line.get_marker() == "o"]) == 2

    rng = np.random.default_rng(0)
    samples = [_piece(rng.integers(50, 70, 30)) for _ in range(5)]
    fig = plots.statistics_overlays({"a": samples, "b": samples[:3]},
                                    statistics=["pitch_range", "mean_interval"])
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == [
        "pitch-class histogram", "pitch range", "mean interval"]

    history = pd.DataFrame({"epoch": [0, 1, 2], "val_loss": [3.0, 2.5, 2.4],
                            "val_pitch_loss": [4.0, 3.5, 3.4]})
    fig = plots.loss_curves_together({"x": history, "y": history.assign(val_loss=[3, 2, 1])})
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 2]
    with pytest.raises(MusicRNNError):
        plots.nll_bars(scores.assign(pitch_nll=np.nan))

"""musicrnn.evaluation: metrics on hand-made cases with known answers (every head's NLL), n-gram
baselines of every head on real chorales, the original research checkpoint against a unigram
model on real MAESTRO pieces, the temperature sweep that extends past the edge of its grid, bad
input, and `musicrnn evaluate` end to end on a real (tiny) run directory."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest

from musicrnn import evaluation as ev
from musicrnn.errors import MusicRNNError
from note_support import piece as _piece
from musicrnn.model import build_model, get_preset


# -- helpers ------------------------------------------------------------------------------------


def _tiny_model(seq_length: int = 8, targets: str = "last", pitch_input: str = "scalar",
                seed: int = 0, preset: str = "v1", **fields) -> tuple[keras.Model, object]:
    keras.utils.set_random_seed(seed)
    config = get_preset(preset, lstm_units=(8,), seq_length=seq_length, targets=targets,
                        pitch_input=pitch_input, pitch_embedding_dim=4, **fields)
    return build_model(config), config


def _uniform_heads(model) -> None:
    """Zero the weights of every output head: every logit 0, every class equally likely."""
    for head in ev.HEADS:
        try:
            layer = model.get_layer(head)
        except ValueError:
            continue
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])


def _log_softmax(logits) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max()
    return logits - top - np.log(np.exp(logits - top).sum())


@pytest.fixture(scope="module")
def chorale_data_dir(tmp_path_factory, chorale_data):
    """A data folder of its own, starting from a copy of the session's written-out chorales
    (``chorale_data``: 8 of the 24 below, and the corpus's catalogue), so that only the other 16
    are written here."""
    import shutil

    folder = tmp_path_factory.mktemp("data")
    shutil.copytree(chorale_data["data_dir"] / "raw", folder / "raw")
    return folder


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


def test_every_categorical_head_is_scored_by_its_nll_and_a_regression_head_is_not():
    """v4's step and duration heads are distributions over 128 time classes: each gets its NLL,
    and note_nll is the sum of the three. v1 regresses step and duration: no NLL for them."""
    from musicrnn.timing import time_classes

    model, _ = _tiny_model(seq_length=6, preset="v4", pitch_input="embedding")
    rng = np.random.default_rng(4)
    piece = np.column_stack([rng.integers(50, 70, 14), rng.choice([0.0, 0.25, 0.5], 14),
                             rng.uniform(0.1, 1, 14)])
    scores = ev.score_windows(model, [piece], seq_length=6)
    expected = {"pitch": [], "step": [], "duration": []}
    for t in range(6, 14):
        out = model.predict_on_batch(piece[None, t - 6:t].astype(np.float32))
        true = {"pitch": int(piece[t, 0]), "step": int(time_classes(piece[t, 1])),
                "duration": int(time_classes(piece[t, 2]))}
        for head in expected:
            expected[head].append(-_log_softmax(np.asarray(out[head])[0])[true[head]])
    for head, values in expected.items():
        assert getattr(scores, f"{head}_nll") == pytest.approx(np.mean(values), rel=1e-4), head
    assert scores.note_nll == pytest.approx(sum(np.mean(v) for v in expected.values()), rel=1e-4)
    assert math.isnan(scores.velocity_nll)  # no velocity head

    _uniform_heads(model)
    uniform = ev.score_windows(model, [piece], seq_length=6)
    assert uniform.step_nll == pytest.approx(math.log(128), abs=1e-6)
    assert uniform.note_nll == pytest.approx(3 * math.log(128), abs=1e-5)

    regression, _ = _tiny_model(seq_length=6)
    plain = ev.score_windows(regression, [piece], seq_length=6)
    assert math.isfinite(plain.pitch_nll) and math.isfinite(plain.step_mae)
    assert math.isnan(plain.step_nll) and math.isnan(plain.note_nll)


def test_a_velocity_head_is_scored_on_notes_with_velocity():
    """A model of dynamics (v5: a 4th input column and a head over 32 velocity classes) gets a
    velocity NLL, in both context regimes, and its note NLL includes it."""
    model, config = _tiny_model(seq_length=5, preset="v5", pitch_input="embedding",
                                targets="all")
    rng = np.random.default_rng(6)
    pieces = [_piece(rng.integers(55, 75, 9), step=s, velocity=rng.integers(20, 120, 9))
              for s in (0.0, 0.25, 0.5)]
    _uniform_heads(model)
    window = ev.score_windows(model, pieces, seq_length=5)
    assert window.velocity_nll == pytest.approx(math.log(config.velocity_bins), abs=1e-6)
    assert window.note_nll == pytest.approx(3 * math.log(128) + math.log(32), abs=1e-5)
    carried = ev.score_carried(model, pieces, config=config, min_position=5)
    assert carried.velocity_nll == pytest.approx(window.velocity_nll, abs=1e-6)
    with pytest.raises(MusicRNNError, match="velocity"):
        ev.score_windows(model, [p[:, :3] for p in pieces], seq_length=5)


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


def test_head_baselines_model_time_and_velocity_classes():
    """Steps and velocities that alternate: a unigram model of their classes knows two equally
    common classes (log 2 nats), a Markov-1 model knows which comes next (nearly 0)."""
    def swinging(n: int) -> np.ndarray:
        return np.column_stack([np.tile([60, 64], n), np.tile([0.25, 0.5], n), np.full(2 * n, 0.4),
                                np.tile([40, 100], n)])

    train, test = [swinging(40) for _ in range(6)], [swinging(10)]
    heads = ev.fit_head_baselines(train, heads=("step", "duration", "velocity"))
    assert set(heads) == {"step", "duration", "velocity"}
    assert list(heads["step"]) == ["unigram", "markov1"]
    step = {k: m.score(test, min_position=1).step_nll for k, m in heads["step"].items()}
    assert step["unigram"] == pytest.approx(math.log(2), abs=0.05)
    assert step["markov1"] < 0.05
    assert heads["duration"]["unigram"].score(test, 1).duration_nll < 0.05  # one class only
    velocity = {k: m.score(test, 1).velocity_nll for k, m in heads["velocity"].items()}
    assert velocity["unigram"] == pytest.approx(math.log(2), abs=0.05)
    assert velocity["markov1"] < 0.05

    pitch = ev.fit_ngram_baselines(train, orders=(0, 1, 2))
    rows = {r.name: r for r in ev.ngram_scores(pitch, test, 1, head_baselines=heads)}
    u = rows["unigram"]
    assert u.note_nll == pytest.approx(u.pitch_nll + u.step_nll + u.duration_nll
                                       + u.velocity_nll)
    assert rows["markov1"].note_nll < u.note_nll - 1.0
    assert math.isnan(rows["markov2"].note_nll)  # no Markov-2 models of the other heads
    with pytest.raises(MusicRNNError, match="velocity column"):
        ev.NGramModel(0, head="velocity").fit([p[:, :3] for p in train])
    with pytest.raises(MusicRNNError, match="head"):
        ev.NGramModel(0, head="loudness")


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
    # the time classes of real chorales: the step after a step is far from a fresh draw
    heads = ev.fit_head_baselines(chorales.subset("train"), chorales.subset("validation"))
    rows = {r.name: r for r in ev.ngram_scores(baselines, test, 8, head_baselines=heads)}
    for head in ("step", "duration"):
        assert 0.3 < getattr(rows["unigram"], f"{head}_nll") < math.log(128) - 2, head
        assert getattr(rows["markov1"], f"{head}_nll") < getattr(rows["unigram"], f"{head}_nll")
    assert rows["markov1"].note_nll < rows["unigram"].note_nll
    assert math.isnan(rows["unigram"].velocity_nll)  # not asked for


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


# -- generated against held-out music -------------------------------------------------------


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


def test_next_temperature_halves_toward_the_floor_and_stops_at_the_cap():
    assert ev.next_temperature({0.5: 3.0, 0.75: 2.0, 1.0: 1.0}) == 0.25
    assert ev.next_temperature({0.25: 3.0, 0.5: 2.0}) == 0.125  # at most halving
    assert ev.next_temperature({0.06: 3.0, 0.25: 2.0}) == 0.05  # never below the floor
    assert ev.next_temperature({0.05: 3.0, 0.1: 2.0}) is None  # at the floor: nowhere to go
    assert ev.next_temperature({1.25: 1.0, 1.5: 2.0}) == 1.75
    assert ev.next_temperature({0.5: 1.0, 1.0: 2.0, 1.5: 1.0}) is None  # inside
    assert ev.next_temperature({1.0: 1.0}) is None  # one temperature is not a sweep
    falling = ev.sweep_until_inside(lambda t: -t, [0.5, 1.0], max_extensions=10)
    assert sorted(falling) == [0.05, 0.0625, 0.125, 0.25, 0.5, 1.0]
    rising = ev.sweep_until_inside(lambda t: t, [0.5, 1.0])
    assert sorted(rising) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]  # capped at 4 more
    assert sorted(ev.sweep_until_inside(lambda t: t, [0.5, 1.0], max_extensions=0)) == [0.5, 1.0]
    with pytest.raises(MusicRNNError, match="positive"):
        ev.sweep_until_inside(lambda t: t, [0.5, -1.0])


@pytest.mark.slow
def test_the_sweep_of_a_real_model_steps_past_the_edge_of_its_grid(chorale_run, chorale_data):
    """The reference is the trained model's own music at T = 0.3, so the best temperature is
    low: a grid of 1.0 and 1.5 starts with its best at the lower edge, and the sweep must go
    down (0.5, then 0.25 ...) until the best is inside, showing every temperature it tried."""
    from musicrnn.model import load_run

    run = load_run(chorale_run["run_dir"])
    held_out = ev.corpus_pieces(chorale_data["corpus"], "validation")
    primers, _ = ev.continuation_segments(held_out, run.config.seq_length, 24, 8, seed=1)
    reference = ev.generate_continuations(run.model, primers, 24, temperature=0.3, seed=7,
                                          config=run.config)
    sweep, comparisons, samples = ev.temperature_sweep(
        run.model, primers, reference, [1.0, 1.5], config=run.config)
    temps = list(sweep.index)
    assert temps == sorted(temps) and {0.5, 1.0, 1.5} <= set(temps)
    assert set(comparisons) == set(samples) == set(temps)
    assert list(sweep["added"]) == [t not in (1.0, 1.5) for t in temps]
    best = ev.best_temperature(sweep)
    assert best < 1.0
    assert sweep.attrs["at_edge"] == (best == temps[0])
    assert not sweep.attrs["at_edge"] or len(temps) == 2 + ev.MAX_EXTENSIONS


# -- bad input ----------------------------------------------------------------------------------


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
    assert metrics["split"] == "test"  # the chorales have a test split
    assert {0.8, 1.2} <= set(metrics["temperatures"])
    assert metrics["best_temperature"] in metrics["temperatures"]
    assert set(metrics["temperatures_added"]) == set(metrics["temperatures"]) - {0.8, 1.2}
    # the baseline preset regresses step and duration: no likelihood, so no note NLL
    assert metrics["heads"] == {"pitch": "categorical", "step": "regression",
                                "duration": "regression", "velocity": "none"}
    for key in ("step_nll", "duration_nll", "velocity_nll", "note_nll"):
        assert metrics[key] is None, key
    for key in ("unigram_step_nll", "markov1_duration_nll", "unigram_note_nll",
                "markov1_note_nll", "baseline_note_nll"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["unigram_note_nll"] == pytest.approx(
        metrics["unigram_pitch_nll"] + metrics["unigram_step_nll"]
        + metrics["unigram_duration_nll"])
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


@pytest.mark.slow
def test_evaluate_model_reports_note_nll_against_the_sum_of_head_baselines(chorale_data):
    """An untrained v4 (every head categorical, near-uniform) on real chorales: its note NLL is
    the sum of its heads' NLLs, about 3 log 128, and far above the per-head baselines' sum."""
    model, config = _tiny_model(seq_length=8, preset="v4", pitch_input="embedding")
    report = ev.evaluate_model(model, chorale_data["corpus"], seq_length=8, config=config,
                               name="v4", temperatures=[1.0], num_samples=4, num_notes=16,
                               max_positions=100, carried=False, progress=False)
    m = report.metrics
    assert m["split"] == "test" and m["n_positions"] == 100
    assert m["heads"]["step"] == m["heads"]["duration"] == "categorical"
    assert m["note_nll"] == pytest.approx(m["pitch_nll"] + m["step_nll"] + m["duration_nll"])
    assert abs(m["note_nll"] - 3 * math.log(128)) < 1.0
    assert m["velocity_nll"] != m["velocity_nll"]  # NaN in memory, null in metrics.json
    assert m["baseline_note_nll"] == min(m["unigram_note_nll"], m["markov1_note_nll"])
    assert m["baseline_note_nll"] < m["note_nll"] - 3
    assert m["goal_note_nll_below_baselines"] is False
    assert m["temperatures"] == [1.0] and m["best_temperature_at_edge"] is False
    scores = report.scores.set_index("name")
    assert {"step_nll", "duration_nll", "velocity_nll", "note_nll"} <= set(scores.columns)
    assert scores.loc["unigram", "note_nll"] == pytest.approx(m["unigram_note_nll"])


def test_a_model_of_dynamics_is_evaluated_on_real_performances(maestro_sample, tmp_path):
    """An untrained v5 (v4 with a velocity head) on the real MAESTRO sample: its pieces carry
    velocity, its velocity head is scored (near log 32 untrained) against velocity baselines that
    know real dynamics, and the velocity statistics join the comparison. The sample holds no test
    pieces, so the validation split is scored and the metrics say so."""
    from musicrnn.notes import load_corpus
    from musicrnn.statistics import VELOCITY_STATISTICS

    corpus = load_corpus(f"local:{maestro_sample}", data_dir=tmp_path)
    model, config = _tiny_model(seq_length=8, preset="v5", pitch_input="embedding")
    report = ev.evaluate_model(model, corpus, seq_length=8, config=config, name="v5",
                               temperatures=[1.0], num_samples=4, num_notes=32,
                               max_positions=200, carried=False, progress=False)
    m = report.metrics
    assert m["split"] == "validation" and m["n_positions"] == 200
    assert m["heads"]["velocity"] == "categorical"
    assert abs(m["velocity_nll"] - math.log(config.velocity_bins)) < 0.5
    assert m["note_nll"] == pytest.approx(
        m["pitch_nll"] + m["step_nll"] + m["duration_nll"] + m["velocity_nll"])
    assert m["markov1_velocity_nll"] < m["unigram_velocity_nll"] < math.log(32) - 0.3
    assert m["unigram_note_nll"] == pytest.approx(
        m["unigram_pitch_nll"] + m["unigram_step_nll"] + m["unigram_duration_nll"]
        + m["unigram_velocity_nll"])
    assert set(VELOCITY_STATISTICS) <= set(m["overlap_statistics"])
    assert set(VELOCITY_STATISTICS) <= set(report.statistics.index)
    assert all(g.shape[1] == 4 for g in report.generated[1.0])  # generated with velocity


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

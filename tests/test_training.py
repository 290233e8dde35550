"""Training on real chorales with tiny models: learning, learning-rate schedules and time
budgets, epochs that are passes, the run directory, progress, resuming after a kill, held-out
NLL, bad input (distribution strategies: test_distribution.py)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from musicrnn.errors import MusicRNNError
from musicrnn.model import load_run
from musicrnn.notes import NoteCorpus
from musicrnn.sequences import make_dataset
from musicrnn.training import (
    cosine_rate, learning_curve, pitch_nll, read_history_rows, state_drift, train,
)
from training_support import TINY, job_env, script, tiny


@pytest.fixture(scope="module")
def corpus(chorale_data) -> NoteCorpus:
    return chorale_data["corpus"]


EVERY = 5  # steps between validations of the shared run: does not divide its 2 passes


@pytest.fixture(scope="module")
def steps_per_pass(corpus) -> int:
    steps = make_dataset(corpus, "train", tiny()).steps_per_pass
    assert (2 * steps) % EVERY, "pick an EVERY that does not divide two passes"
    return steps


@pytest.fixture(scope="module")
def small_training(corpus, tmp_path_factory):
    """The shared run (``tiny()``: 2 epochs, a validation every ``EVERY`` steps) with what its
    progress bar printed: ``(result, stdout, stderr)``."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        result = train(tiny(), "bach-chorales", run_dir, corpus=corpus, validate_every=EVERY,
                       progress=True)
    return result, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def small_run(small_training):
    return small_training[0]


# -- learning -----------------------------------------------------------------------------------


def test_overfits_one_small_batch(corpus, tmp_path):
    """Two windows of one real piece, seen again and again, must be learned almost by heart."""
    i = int(corpus.indices("train")[0])
    piece = corpus.piece(i).iloc[:33]
    tiny_corpus = NoteCorpus.from_tables(
        "bach-chorales", [piece, piece], ["a.mid", "a-copy.mid"], ["train", "validation"])
    config = tiny(lstm_units=[64], pitch_input="embedding", batch_size=2, learning_rate=0.02,
                  pitch_loss_weight=1.0, epochs=120, early_stopping_patience=50,
                  reduce_lr_patience=50)
    result = train(config, "bach-chorales", tmp_path / "run", corpus=tiny_corpus,
                   validate_every=40, progress=False)
    history = result.history
    assert result.steps == 120 and len(history) == 3
    assert history["val_pitch_loss"].iloc[0] > 1.0  # it started far from the answer
    assert history["val_pitch_loss"].min() < 0.3, history[["pitch_loss", "val_pitch_loss"]]


# -- learning-rate schedules -----------------------------------------------------------------


def test_the_cosine_rate_falls_from_the_peak_to_its_floor():
    assert cosine_rate(0.01, 0.0, floor=0.02) == pytest.approx(0.01)
    assert cosine_rate(0.01, 0.5, floor=0.02) == pytest.approx(0.0051)
    assert cosine_rate(0.01, 1.0, floor=0.02) == pytest.approx(0.0002)
    assert cosine_rate(0.01, 7.0, floor=0.02) == pytest.approx(0.0002)  # clipped to the end
    rates = [cosine_rate(1.0, f / 10) for f in range(11)]
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_a_cosine_schedule_decays_over_the_steps(corpus, tmp_path):
    """Under lr_schedule="cosine" the rate of every validation follows the cosine of the share
    of the steps done, and ends at the floor where the passes end."""
    config = tiny(lr_schedule="cosine", epochs=4)
    result = train(config, "bach-chorales", tmp_path / "run", corpus=corpus, validate_every=15,
                   progress=False)
    history = result.history
    rates = list(history["learning_rate"])
    assert len(rates) >= 2 and all(a > b for a, b in zip(rates, rates[1:])), rates
    assert rates[0] == pytest.approx(cosine_rate(config.learning_rate, 10 / result.total_steps))
    # set every 10 steps, before the step: the last rate is that of the last multiple of 10
    last = (result.total_steps - 1) // 10 * 10
    assert rates[-1] == pytest.approx(cosine_rate(config.learning_rate, last / result.total_steps),
                                      rel=1e-5)
    assert float(result.model.optimizer.learning_rate.numpy()) == pytest.approx(rates[-1],
                                                                                rel=1e-5)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["results"][
        "lr_schedule"] == "cosine"


def test_a_time_budget_ends_training_and_drives_the_cosine(corpus, tmp_path):
    """With budget_seconds shorter than the passes, the time ends training and the cosine
    decays over the time: the rate is near its floor when the budget runs out."""
    config = tiny(lr_schedule="cosine", epochs=1000)
    result = train(config, "bach-chorales", tmp_path / "run", corpus=corpus, validate_every=50,
                   progress=False, budget_seconds=2.0)
    assert result.stopped_by_budget and result.steps < result.total_steps
    assert result.steps / result.total_steps < 0.5  # so the time, not the steps, set the rate
    assert result.history["learning_rate"].iloc[-1] < 0.1 * config.learning_rate
    with pytest.raises(MusicRNNError, match="budget must be > 0 seconds"):
        train(config, "bach-chorales", tmp_path / "other", corpus=corpus, budget_seconds=0)


# -- epochs are passes -------------------------------------------------------------------------


def test_epochs_are_exactly_passes_with_the_validations_inside_them(small_run, steps_per_pass):
    """Two epochs train two passes of steps, exactly, though a validation every EVERY steps does
    not divide them: the last block is cut short where the passes end, and is validated."""
    total = 2 * steps_per_pass
    assert small_run.steps == small_run.total_steps == total
    assert int(small_run.model.optimizer.iterations.numpy()) == total
    assert small_run.passes == 2.0 and small_run.steps_per_pass == steps_per_pass
    ends = [min(v * EVERY, total) for v in range(1, math.ceil(total / EVERY) + 1)]
    history = small_run.history
    assert list(history["validation"]) == list(range(1, len(ends) + 1))
    assert list(history["steps"]) == ends
    np.testing.assert_allclose(history["passes"], np.array(ends) / steps_per_pass)
    assert history["passes"].iloc[-1] == 2.0
    assert small_run.validations == len(ends) and not small_run.stopped_early
    assert small_run.best_validation in set(history["validation"])
    best = history.loc[history["validation"] == small_run.best_validation, "val_loss"]
    assert float(best.iloc[0]) == pytest.approx(small_run.best_val_loss)


def test_progress_shows_the_whole_run_with_the_time_left(small_training, steps_per_pass):
    result, out, err = small_training
    total = 2 * steps_per_pass
    printed = out + err
    # the bar counts the steps of the whole run: [elapsed<left] while it trains, not per block
    assert re.search(rf"\b{EVERY}/{total} \[\d+:\d\d<\d+:\d\d", printed), printed[-2000:]
    assert f"{total}/{total} [" in printed
    for row in result.history.itertuples():
        assert (f"validation {row.validation}: step {row.steps}/{total} "
                f"({row.passes:.2f} passes)") in printed
    assert f"{total} of {total} steps = 2.00 of 2 passes" in printed  # the summary


def test_the_loss_curves_are_drawn_against_the_passes(small_run):
    import matplotlib.pyplot as plt

    from musicrnn.plots import training_curves

    figure = training_curves(small_run.history)
    try:
        total = figure.axes[0]
        np.testing.assert_allclose(total.get_lines()[0].get_xdata(), small_run.history["passes"])
        assert total.get_xlabel() == "passes over the training windows"
        legend = [t.get_text() for t in total.get_legend().get_texts()]
        assert any(t.startswith(f"best: validation {small_run.best_validation},")
                   for t in legend), legend
    finally:
        plt.close(figure)


def test_histories_of_earlier_runs_name_their_rows_too(tmp_path):
    """A history.csv written before rows were named (Keras's 0-based ``epoch``) reads with a
    1-based ``validation``; a torn last line is dropped."""
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,steps,val_loss\n0,2.5,200,2.4\n1,2.25,400,2.3\n2,2.0,6")
    rows = read_history_rows(path)
    assert [(r["validation"], r["steps"], r["loss"]) for r in rows] == [(1, 200, 2.5),
                                                                         (2, 400, 2.25)]
    assert all("epoch" not in r for r in rows)


def test_run_directory_holds_everything(small_run, corpus):
    run_dir = small_run.run_dir
    for name in ("music_rnn_model.keras", "config.json", "seed_sequence.npy", "history.csv",
                 "loss_curves.png"):
        assert (run_dir / name).is_file(), name
    assert len(list((run_dir / "checkpoints").glob("validation_*.weights.h5"))) == min(
        small_run.validations, 5)
    assert not (run_dir / "backup").exists(), "the backup goes once the run is written"
    info = json.loads((run_dir / "config.json").read_text())
    assert info["status"] == "complete" and info["dataset"] == "bach-chorales"
    assert info["model"]["seq_length"] == 16 and info["training"]["validate_every"] == EVERY
    assert info["results"]["validations"] == small_run.validations
    assert info["results"]["steps"] == small_run.steps
    header = (run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["validation", "steps", "passes"], "a row says what it is first"
    rows = read_history_rows(run_dir / "history.csv")
    assert [r["validation"] for r in rows] == list(range(1, small_run.validations + 1))
    assert {"loss", "val_loss", "val_pitch_loss", "passes", "learning_rate"} <= set(rows[0])
    run = load_run(run_dir)
    assert run.seed_sequence.shape == (16, 3)
    x = run.seed_sequence[None]
    np.testing.assert_allclose(run.model.predict_on_batch(x)["pitch"],
                               small_run.model.predict_on_batch(x)["pitch"], atol=1e-5)
    assert small_run.best_val_loss == pytest.approx(min(r["val_loss"] for r in rows))


def test_a_finished_run_is_loaded_not_retrained(small_run, corpus):
    before = (small_run.run_dir / "music_rnn_model.keras").stat().st_mtime_ns
    again = train(tiny(), "bach-chorales", small_run.run_dir, corpus=corpus,
                  validate_every=EVERY, progress=False)
    assert again.already_complete
    assert (again.steps, again.passes, again.validations, again.best_validation) == (
        small_run.steps, small_run.passes, small_run.validations, small_run.best_validation)
    assert list(again.history["validation"]) == list(small_run.history["validation"])
    assert (small_run.run_dir / "music_rnn_model.keras").stat().st_mtime_ns == before


def test_a_run_directory_of_another_config_is_refused(small_run, corpus):
    with pytest.raises(MusicRNNError, match="different config .*learning_rate"):
        train(tiny(learning_rate=0.02), "bach-chorales", small_run.run_dir, corpus=corpus,
              validate_every=EVERY, progress=False)
    with pytest.raises(MusicRNNError, match="validate_every"):
        train(tiny(), "bach-chorales", small_run.run_dir, corpus=corpus,
              validate_every=EVERY + 1, progress=False)


# -- resuming after a kill ----------------------------------------------------------------------


def test_an_interrupted_run_resumes_after_its_last_validation(small_run, corpus, tmp_path,
                                                            capsys):
    """Interrupted two steps into its second validation block, a run started again resumes after
    the first validation, still ends after exactly two passes, and ends with the weights of the
    run never interrupted (``small_run``, same config)."""
    import keras

    class Interrupt(keras.callbacks.Callback):
        seen = 0

        def on_train_batch_end(self, batch, logs=None):
            self.seen += 1
            if self.seen == EVERY + 2:
                raise KeyboardInterrupt("stopped")

    with pytest.raises(KeyboardInterrupt):
        train(tiny(), "bach-chorales", tmp_path / "run", corpus=corpus, validate_every=EVERY,
              progress=False, callbacks=[Interrupt()])
    assert (tmp_path / "run" / "backup" / "training_state.json").is_file()
    assert not (tmp_path / "run" / "music_rnn_model.keras").exists()
    assert [r["validation"] for r in read_history_rows(tmp_path / "run" / "history.csv")] == [1]
    capsys.readouterr()
    resumed = train(tiny(), "bach-chorales", tmp_path / "run", corpus=corpus,
                    validate_every=EVERY, progress=2)
    _assert_same_run(resumed, small_run, resumed_after=1)
    total = small_run.total_steps
    printed = capsys.readouterr().out
    assert f"resuming after validation 1 at step {EVERY} of {total}" in printed
    lines = [line for line in printed.splitlines() if line.startswith("validation ")]
    assert len(lines) == small_run.validations - 1, "validation 1 is not done again"
    assert lines[-1].startswith(f"validation {small_run.validations}: step {total}/{total} "
                                "(2.00 passes)") and lines[-1].endswith("done")
    assert all(" left" in line for line in lines[:-1])


def _assert_same_run(resumed, straight, resumed_after: int) -> None:
    assert resumed.resumed_after == resumed_after
    assert resumed.validations == straight.validations
    assert list(resumed.history["validation"]) == list(straight.history["validation"])
    assert list(resumed.history["steps"]) == list(straight.history["steps"])
    assert resumed.steps == straight.steps == straight.total_steps
    assert int(resumed.model.optimizer.iterations.numpy()) == straight.steps
    assert resumed.passes == resumed.history["passes"].iloc[-1] == 2.0
    np.testing.assert_allclose(resumed.history["val_loss"], straight.history["val_loss"],
                               rtol=1e-5)
    for a, b in zip(resumed.model.get_weights(), straight.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_killed_process_resumes_where_it_stopped(small_run, corpus, tmp_path):
    """A process SIGKILLed after its first validation resumes after it, and ends with the very
    weights of a run never interrupted."""
    corpus_path = corpus.to_npz(tmp_path / "corpus.npz")
    job = script(tmp_path, f"""
        import os, signal, sys
        import keras
        from musicrnn.model import ModelConfig
        from musicrnn.notes import NoteCorpus
        from musicrnn.training import train

        class Kill(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 1:
                    os.kill(os.getpid(), signal.SIGKILL)

        config = ModelConfig.from_json({tiny().to_json()!r})
        train(config, "bach-chorales", sys.argv[1], corpus=NoteCorpus.from_npz(sys.argv[2]),
              validate_every={EVERY}, progress=False, callbacks=[Kill()])
    """)
    killed = subprocess.run([sys.executable, str(job), str(tmp_path / "resumed"),
                             str(corpus_path)], env=job_env(), capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (tmp_path / "resumed" / "backup" / "training_state.json").is_file()
    assert not (tmp_path / "resumed" / "music_rnn_model.keras").exists()
    resumed = train(tiny(), "bach-chorales", tmp_path / "resumed", corpus=corpus,
                    validate_every=EVERY, progress=False)
    _assert_same_run(resumed, small_run, resumed_after=1)


@pytest.mark.slow
def test_the_command_resumes_after_being_killed(chorale_data, tmp_path, capsys):
    """`musicrnn train`, SIGKILLed once it has backed up, continues when started again (the
    second time through the command's entry point in this process: no second start-up)."""
    from musicrnn.cli import main

    run_dir = tmp_path / "cli-run"
    command = [sys.executable, "-m", "musicrnn.cli", "train", "--preset", "baseline",
               "--dataset", "bach-chorales", "--data-dir", str(chorale_data["data_dir"]),
               "--max-files", "8", "--epochs", "1", "--validate-every", "3",
               "--run-dir", str(run_dir), "--seed", "1", "--quiet"]
    process = subprocess.Popen(command, env=job_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    state = run_dir / "backup" / "training_state.json"
    deadline = time.monotonic() + 240
    while not state.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, process.stdout.read()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    status = main(command[3:])
    again = capsys.readouterr()
    assert status == 0, again.out[-2000:] + again.err[-2000:]
    assert "resuming after validation" in again.out
    assert (run_dir / "music_rnn_model.keras").is_file()
    rows = read_history_rows(run_dir / "history.csv")
    assert [r["validation"] for r in rows] == list(range(1, len(rows) + 1))
    info = json.loads((run_dir / "config.json").read_text())
    assert rows[-1]["steps"] == info["training"]["steps_per_pass"], "--epochs 1: one pass"
    assert rows[-1]["passes"] == 1.0


def test_the_command_reports_bad_input_on_one_line(tmp_path):
    from musicrnn.cli import main

    assert main(["train", "--preset", "v9", "--run-dir", str(tmp_path / "x")]) == 2


# -- held-out likelihood ------------------------------------------------------------------------


def test_carried_and_windowed_nll_agree_when_the_context_is_the_whole_prefix(small_run, corpus):
    """On pieces cut to context + 1 notes, the carried state sees exactly the window: the two
    measures must agree (this pins the alignment of both)."""
    context = 12
    pieces = [corpus.features(int(i))[: context + 1] for i in corpus.indices("train")[:4]]
    report = state_drift(small_run.model, pieces, context=context)
    assert report.targets == 4 and report.pieces == 4
    assert report.carried_nll == pytest.approx(report.windowed_nll, abs=1e-4)
    assert report.top1_disagreement == 0.0
    assert pitch_nll(small_run.model, pieces, context=context) == pytest.approx(
        report.windowed_nll, abs=1e-6)


def test_state_drift_on_whole_validation_pieces(small_run, corpus):
    report = state_drift(small_run.model, corpus, "validation", context=16)
    lengths = corpus.lengths()[corpus.indices("validation")]
    assert report.targets == int(np.maximum(lengths - 16, 0).sum())
    assert np.isfinite(report.carried_nll) and np.isfinite(report.windowed_nll)
    assert 0 < report.windowed_nll < np.log(128) + 1  # a trained model beats chance, roughly
    assert 0.0 <= report.top1_disagreement <= 1.0


def test_learning_curve_scores_as_it_trains_and_stops_at_the_target(corpus):
    curve, result = learning_curve(tiny(), corpus, max_steps=6, eval_every=3, context=16,
                                   eval_targets=200)
    assert list(curve["steps"]) == [3, 6] and result.steps >= 6
    assert curve["train_seconds"].is_monotonic_increasing and (curve["train_seconds"] > 0).all()
    assert np.isfinite(curve["pitch_nll"]).all()
    first = float(curve["pitch_nll"].iloc[0])
    reached, _ = learning_curve(tiny(), corpus, max_steps=6, eval_every=3, context=16,
                                eval_targets=200, target_nll=first + 1e-6)
    assert list(reached["steps"]) == [3] and bool(reached["reached"].iloc[0])


# -- bad input ----------------------------------------------------------------------------------


def test_bad_input_gets_clear_errors(corpus, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(MusicRNNError, match="unknown model config keys"):
        train({"preset": "v2", "lstm_unit": [8]}, "bach-chorales", run_dir, corpus=corpus)
    with pytest.raises(MusicRNNError, match="batch_size"):
        train({**TINY, "batch_size": 0}, "bach-chorales", run_dir, corpus=corpus)
    longest = int(corpus.lengths().max())
    with pytest.raises(MusicRNNError, match="lower seq_length"):
        train(tiny(seq_length=longest), "bach-chorales", run_dir, corpus=corpus)
    no_validation = corpus.subset(corpus.indices("train"))
    with pytest.raises(MusicRNNError, match="no pieces in the 'validation' split"):
        train(tiny(), "bach-chorales", run_dir, corpus=no_validation)
    with pytest.raises(MusicRNNError, match="validate_every"):
        train(tiny(), "bach-chorales", run_dir, corpus=corpus, validate_every=0)
    with pytest.raises(MusicRNNError, match="max_files"):
        train(tiny(), "bach-chorales", run_dir, corpus=corpus, max_files=0)
    with pytest.raises(MusicRNNError, match="unknown strategy"):
        train(tiny(), "bach-chorales", run_dir, corpus=corpus, strategy="ring")
    with pytest.raises(MusicRNNError, match="mixed_precision"):
        train(tiny(), "bach-chorales", run_dir, corpus=corpus, mixed_precision="half")
    assert not run_dir.exists(), "nothing is written for input refused"


def test_a_loss_that_is_nan_from_the_start_is_an_error(corpus, tmp_path):
    broken = NoteCorpus(dataset=corpus.dataset, names=corpus.names, splits=corpus.splits,
                        offsets=corpus.offsets,
                        columns={**corpus.columns, "step": np.full(corpus.n_notes, np.nan)})
    with pytest.raises(MusicRNNError, match="NaN"):
        train(tiny(epochs=1), "bach-chorales", tmp_path / "run", corpus=broken,
              validate_every=2, progress=False)

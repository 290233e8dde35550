"""musicrnn.experiments: the experiments files (real ones load, bad ones are refused with the
reason) and a real same-budget comparison of two tiny presets on real chorales, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from musicrnn import experiments as ex
from musicrnn.errors import MusicRNNError


# -- experiments files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["experiments-quick.yaml", "experiments-maestro.yaml",
                                  "experiments-maestro-cpu.yaml"])
def test_the_experiment_files_load(name):
    cfg = ex.load_experiment_config(Path(__file__).resolve().parents[1] / "configs" / name)
    assert {"baseline", "v2"} <= set(cfg["models"])  # the original designs
    assert len(cfg["models"]) >= 4  # and at least one proposed variant
    assert cfg["budget_seconds"] > 0
    for spec in cfg["models"].values():  # a row's training option is not a ModelConfig field
        assert ex._fields(spec).keys() | ex._row_training(spec).keys() == spec.keys()


@pytest.mark.parametrize("text, message", [
    ("models: {a: {preset: v2}}\nwhat: 1\n", "unknown keys"),
    ("models: {a: {lstm_units: [8]}}\n", "needs a 'preset'"),
    ("models: {a: {preset: v9}}\n", "unknown preset"),
    ("models: {a: {preset: v2, dropout: 2.0}}\n", "dropout"),
    ("budget_seconds: -5\nmodels: {a: {preset: v2}}\n", "budget_seconds"),
    ("models: {}\n", "'models'"),
    ("min_position: 0\nmodels: {a: {preset: v2}}\n", "min_position"),
    ("min_position: many\nmodels: {a: {preset: v2}}\n", "min_position"),
    ("models: {a: {preset: v6, jit_compile: sometimes}}\n", "jit_compile must be true or false"),
])
def test_bad_experiment_files_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MusicRNNError, match=message):
        ex.load_experiment_config(path)
    with pytest.raises(MusicRNNError, match="no experiments file"):
        ex.load_experiment_config(tmp_path / "missing.yaml")


@pytest.mark.slow
def test_experiments_train_on_one_budget_and_write_the_log(chorale_run, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "dataset: bach-chorales\nmax_files: 8\nseed: 3\nbudget_seconds: 2\n"
        "train: {validate_every: 5, validation_windows: 64}\n"
        "evaluation: {temperatures: [1.0], num_samples: 4, num_notes: 16}\n"
        "contexts: [4, 16]\nmin_position: 18\n"
        "models:\n  baseline: {preset: baseline, lstm_units: [8], seq_length: 12,"
        " early_stopping_patience: 1000}\n"
        "  v6: {preset: v6, model_dim: 8, attention_layers: 1, attention_heads: 2, ff_dim: 16,"
        " seq_length: 16, velocity: none, early_stopping_patience: 1000}\n"
    )
    out = tmp_path / "experiments"
    log = ex.run_experiments(config, out, data_dir=chorale_run["data_dir"], progress=False)
    assert list(log.index[:2]) == ["baseline", "v6"]
    assert {"unigram", "markov2", "markov4", "repeat last"} <= set(log.index)
    trained = log.loc[["baseline", "v6"]]
    assert log.loc["v6", "architecture"].startswith("transformer: 1 blocks x 2 heads")
    # speed and context, measured for every model: the same notes after 4 and after 16 notes
    assert (trained["train_target_notes_per_s"] > 0).all()
    assert (trained["generation_notes_per_s"] > 0).all()
    curves = pd.read_csv(out / "context_curve.csv")
    assert sorted(curves["model"].unique()) == ["baseline", "v6"]
    assert curves.groupby("model")["n_notes"].nunique().eq(1).all()  # the same notes per model
    assert np.isfinite(trained[["pitch_nll_context_4", "pitch_nll_context_16"]]).all().all()
    assert trained["stopped_by_budget"].all()  # 2 s: the budget, not the epochs, ended training
    assert (trained["validations"] >= 1).all()
    assert (trained["passes"] > 0).all()
    assert trained["heldout_pitch_nll"].notna().all() and trained["overlap_area"].notna().all()
    for name in ("experiment_log.csv", "experiment_log.md", "summary.json", "loss_curves.png",
                 "nll_bars.png", "temperature_sweep.png", "distributions.png",
                 "context_curve.png"):
        assert (out / name).is_file(), name
    for model_name in ("baseline", "v6"):
        assert (out / model_name / "music_rnn_model.keras").is_file()
        assert (out / model_name / "evaluation" / "metrics.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["min_position"] == 18  # the file's (else the longest seq_length, 16)
    assert summary["best_model"] in ("baseline", "v6")
    goals = summary["goals"]
    assert set(goals) == {"baseline", "v6"}
    for name, g in goals.items():
        assert g["all_goals"] == (g["goal_markov2_15pct"] and g["goal_beats_best_ngram"]
                                  and g["goal_overlap_0_8"])
        assert g["pitch_nll"] == pytest.approx(log.loc[name, "heldout_pitch_nll"])
    meeting = [n for n, g in goals.items() if g["all_goals"]]
    expected = (min(meeting, key=lambda n: goals[n]["pitch_nll"]) if meeting
                else str(log.loc[["baseline", "v6"], "heldout_pitch_nll"].idxmin()))
    assert summary["best_model"] == expected
    assert summary["best_model_meets_every_goal"] == bool(meeting)
    # the categorical timing model was scored on its median times
    assert np.isfinite(log.loc["v6", "heldout_step_mae"])
    # every head of v6 is categorical, so it has a note NLL; the baseline preset regresses timing
    assert np.isfinite(log.loc["v6", "heldout_note_nll"])
    assert np.isnan(log.loc["baseline", "heldout_note_nll"])
    assert log.loc["markov1", "heldout_note_nll"] < log.loc["unigram", "heldout_note_nll"]
    assert isinstance(summary["goal_beats_best_ngram"], bool)
    assert "## Goals" in (out / "experiment_log.md").read_text()


# -- scripts/short_run.py: a design for a short budget ----------------------------------------


def _short_run():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "short_run.py"
    spec = importlib.util.spec_from_file_location("short_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_short_run_trains_for_its_budget_and_scores_fixed_notes(chorale_run, tmp_path, capsys):
    status = _short_run().main([
        "--dataset", "bach-chorales", "--data-dir", str(chorale_run["data_dir"]),
        "--max-files", str(chorale_run["max_files"]), "--preset", "v4",
        "--set", "lstm_units=[8]", "--set", "seq_length=8",
        "--set", "pitch_embedding_dim=4", "--set", "lr_schedule=cosine", "--seconds", "2",
        # only the budget may end it: on a quick machine the script's 2 passes ended first
        "--set", "epochs=1000", "--set", "early_stopping_patience=1000",
        "--validate-every", "5", "--context", "8", "--min-position", "16",
        "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert status == 0, out[-2000:]
    result = dict(kv.split("=") for kv in out.strip().splitlines()[-1].split()[1:])
    assert result["split"] == "validation"  # never the test pieces: designs are chosen on these
    assert int(result["steps"]) > 0 and float(result["pitch_nll"]) > 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["lr_schedule"] == "cosine" and config["model"]["lstm_units"] == [8]
    assert config["results"]["stopped_by_budget"]


def test_a_min_position_shorter_than_a_window_is_refused_before_training(tmp_path):
    config = tmp_path / "short.yaml"
    config.write_text("min_position: 10\nmodels:\n  a: {preset: baseline, seq_length: 12}\n")
    with pytest.raises(MusicRNNError, match="min_position 10 is shorter than the longest"):
        ex.run_experiments(config, tmp_path / "out", data_dir=tmp_path / "data", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()  # nothing made


def test_short_run_refuses_bad_input_on_one_line(tmp_path, capsys):
    short_run = _short_run()
    with pytest.raises(SystemExit) as exit_info:
        short_run.main(["--dataset", "x", "--run-dir", str(tmp_path), "--set", "no-equals"])
    assert exit_info.value.code == 2
    assert short_run.main(["--dataset", "bach-chorales", "--run-dir", str(tmp_path / "r"),
                           "--set", "lr_schedule=linear"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: invalid model config: lr_schedule must be")

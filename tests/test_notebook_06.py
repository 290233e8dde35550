"""Notebook 06 (evaluate) under papermill on the smoke parameters: the artefacts it leaves."""

from __future__ import annotations

import json
import math

import nbformat
import pandas as pd
import pytest


@pytest.mark.slow
@pytest.mark.notebook
def test_evaluate_notebook_writes_metrics_tables_and_plots(smoke_run):
    out = smoke_run / "evaluation"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("pitch_nll", "unigram_pitch_nll", "markov2_pitch_nll", "best_ngram_pitch_nll",
                "best_temperature", "overlap_area", "reference_overlap_area"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    # configs/smoke.yaml's sweep is 0.8 and 1.2; it goes on past an edge while the best is there
    assert {0.8, 1.2} <= set(metrics["temperatures"])
    assert metrics["best_temperature"] in metrics["temperatures"]
    assert set(metrics["temperatures_added"]) == set(metrics["temperatures"]) - {0.8, 1.2}
    assert metrics["best_temperature_at_edge"] == (
        metrics["best_temperature"] in (min(metrics["temperatures"]), max(metrics["temperatures"])))
    # the smoke profile trains v4: every head categorical, so the whole note has an NLL
    assert metrics["split"] == "test"
    assert metrics["heads"] == {"pitch": "categorical", "step": "categorical",
                                "duration": "categorical", "velocity": "none"}
    for key in ("step_nll", "duration_nll", "note_nll", "unigram_note_nll", "markov1_note_nll"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["note_nll"] == pytest.approx(
        metrics["pitch_nll"] + metrics["step_nll"] + metrics["duration_nll"])
    assert metrics["velocity_nll"] is None
    assert 100 < metrics["n_positions"] <= 500  # at most max_positions of the smoke config
    assert metrics["best_ngram_pitch_nll"] <= metrics["markov2_pitch_nll"]
    assert metrics["markov2_pitch_nll"] < metrics["unigram_pitch_nll"]
    assert 0.0 <= metrics["overlap_area"] <= 1.0

    scores = pd.read_csv(out / "scores.csv")
    assert {"unigram", "markov2", "markov4", "repeat last"} <= set(scores["name"])
    assert scores["context"].str.startswith("carried").any()
    sweep = pd.read_csv(out / "temperature_sweep.csv")
    assert list(sweep["temperature"]) == sorted(metrics["temperatures"])
    assert list(sweep["added"]) == [t not in (0.8, 1.2) for t in sweep["temperature"]]
    assert {"step_nll", "duration_nll", "note_nll"} <= set(scores.columns)
    statistics = pd.read_csv(out / "statistics.csv").set_index("statistic")
    assert {"pitch_class_histogram", "mean_ioi", "polyphony", "scale_consistency"} <= set(
        statistics.index)
    assert statistics["overlap_area"].between(0, 1).all()
    for name in ("nll_bars.png", "temperature_sweep.png", "distributions.png"):
        assert (out / name).stat().st_size > 5000, name

    executed = nbformat.read(smoke_run / "notebooks" / "06_evaluate.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # NLL bars, temperature sweep, distribution overlays

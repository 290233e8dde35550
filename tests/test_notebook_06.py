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
    assert metrics["best_temperature"] in (0.8, 1.2)  # configs/smoke.yaml's sweep
    assert 100 < metrics["n_positions"] <= 500  # at most max_positions of the smoke config
    assert metrics["best_ngram_pitch_nll"] <= metrics["markov2_pitch_nll"]
    assert metrics["markov2_pitch_nll"] < metrics["unigram_pitch_nll"]
    assert 0.0 <= metrics["overlap_area"] <= 1.0

    scores = pd.read_csv(out / "scores.csv")
    assert {"unigram", "markov2", "markov4", "repeat last"} <= set(scores["name"])
    assert scores["context"].str.startswith("carried").any()
    sweep = pd.read_csv(out / "temperature_sweep.csv")
    assert list(sweep["temperature"]) == [0.8, 1.2]
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

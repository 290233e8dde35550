"""Notebook 03 (build the model) under papermill, on the smoke parameters."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from musicrnn import model as mm
from musicrnn.runner import load_config, parameters_for
from notebook_support import text_outputs

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_build_model.ipynb"


@pytest.mark.slow
@pytest.mark.notebook
def test_notebook_03_saves_the_chosen_config(smoke_run):
    params = parameters_for(load_config(ROOT / "configs" / "smoke.yaml"), NOTEBOOK)
    saved = mm.read_model_config(smoke_run)
    assert saved == mm.get_preset(params["preset"], seed=params["seed"])
    executed = nbformat.read(smoke_run / "notebooks" / NOTEBOOK.name, as_version=4)
    text = text_outputs(executed)
    # the parameter counts beside the original notes' figures, and the forward pass ran
    for figure in ("84354", "480130", "528258", "199000"):
        assert figure in text, f"{figure} missing from the executed notebook"
    assert "last position equals the window model's prediction: True" in text
    assert "the real next note: pitch" in text

"""Notebook 04 (train the model) under papermill, on the smoke parameters."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nbformat
import pytest

from musicrnn import model as mm
from musicrnn.runner import load_config, parameters_for
from notebook_support import text_outputs
from musicrnn.training import read_history_rows

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_train.ipynb"


@pytest.mark.slow
@pytest.mark.notebook
def test_notebook_04_trains_into_the_run_directory(smoke_run):
    params = parameters_for(load_config(ROOT / "configs" / "smoke.yaml"), NOTEBOOK)
    for name in (mm.MODEL_FILE, mm.CONFIG_FILE, mm.SEED_FILE, mm.HISTORY_FILE,
                 "loss_curves.png"):
        assert (smoke_run / name).is_file(), f"notebook 04 did not write {name}"
    assert list((smoke_run / mm.CHECKPOINTS_DIR).glob("*.weights.h5"))
    info = json.loads((smoke_run / mm.CONFIG_FILE).read_text())
    assert info["status"] == "complete" and info["dataset"] == params["dataset"]
    # the config notebook 03 saved, with the smoke overrides of notebook 04
    built = mm.read_model_config(smoke_run)
    assert info["model"]["lstm_units"] == params["lstm_units"]
    assert info["model"]["targets"] == built.targets
    assert info["model"]["seed"] == params["seed"]
    rows = read_history_rows(smoke_run / mm.HISTORY_FILE)
    assert rows and all("val_loss" in r for r in rows)
    # an epoch is a pass: one row per validation, inside the passes, ending where they end
    per_pass = info["training"]["steps_per_pass"]
    assert [r["validation"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["passes"] == pytest.approx(r["steps"] / per_pass) for r in rows)
    assert rows[-1]["steps"] <= params["epochs"] * per_pass
    if not info["results"]["stopped_early"]:
        assert rows[-1]["passes"] == params["epochs"], "epochs are passes, exactly"
    run = mm.load_run(smoke_run)
    assert run.seed_sequence.shape == (run.config.seq_length, 3)

    executed = nbformat.read(smoke_run / "notebooks" / NOTEBOOK.name, as_version=4)
    text = text_outputs(executed)
    assert "all inside their piece: True" in text
    assert "(last): " in text and "(all): " in text, "both target modes were compared"
    assert "loaded, not retrained: True" in text
    assert f"{params['epochs']} epochs = {params['epochs']} passes x {per_pass} steps" in text
    assert "carried state:" in text and "-note window:" in text


def test_the_slurm_script_runs_notebook_04_in_apptainer_on_maestro():
    script = ROOT / "scripts" / "slurm_train.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert text.startswith("#!/bin/bash") and "#SBATCH --gres=gpu" in text
    assert "apptainer exec --nv" in text and "tensorflow/tensorflow:latest-gpu" in text
    assert "configs/maestro-v2.yaml" in text and "notebooks/04_train.ipynb" in text
    assert "pm.execute_notebook" in text
    assert (ROOT / "configs" / "maestro-v2.yaml").is_file()

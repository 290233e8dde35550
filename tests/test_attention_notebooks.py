"""Notebooks 03-06 with the attention preset (issue 14), under papermill on real chorales:
``configs/smoke-attention.yaml`` builds v6, trains it toy-sized, generates and evaluates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import pytest

from musicrnn.model import load_run
from musicrnn.runner import run_notebooks
from notebook_support import text_outputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_notebooks_03_to_06_build_train_generate_and_evaluate_a_transformer(chorale_data,
                                                                         tmp_path):
    run_dir = run_notebooks(
        ROOT / "configs" / "smoke-attention.yaml", run_dir=tmp_path / "run", start="03",
        upto="06", data_dir=chorale_data["data_dir"],
    )
    executed = sorted(p.name for p in (run_dir / "notebooks").iterdir())
    assert executed == ["03_build_model.ipynb", "04_train.ipynb", "05_generate.ipynb",
                        "06_evaluate.ipynb"]
    built = text_outputs(nbformat.read(run_dir / "notebooks" / "03_build_model.ipynb", 4))
    assert "attention_2" in built and "of which attention" in built  # summary, cost table
    run = load_run(run_dir)
    assert run.config.architecture == "transformer" and run.config.model_dim == 16
    assert run.model.get_layer("attention_2").num_heads == 2
    generated = text_outputs(nbformat.read(run_dir / "notebooks" / "05_generate.ipynb", 4))
    assert "NoteTransformer" in generated and "transformer: 2 blocks x 2 heads" in generated
    assert (run_dir / "generated" / "generated.mid").is_file()
    assert (run_dir / "generated" / "generated.wav").is_file()
    metrics = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert math.isfinite(metrics["pitch_nll"]) and math.isfinite(metrics["note_nll"])
    assert 0 <= metrics["overlap_area"] <= 1

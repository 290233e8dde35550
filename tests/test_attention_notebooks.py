"""Notebooks 03-06 with the attention preset (issue 14), under papermill on real music:
``configs/smoke-attention.yaml`` builds v6, trains it toy-sized with a style label per piece
(issue 13: the dataset of a mixture of chorales and folk songs), generates in every style and
evaluates what the label does."""

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
    """Also the notebooks' style path: a conditioned transformer plays one primer in each
    style (MIDI, WAV, the rolls side by side) and notebook 06 scores its labels."""
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
    assert run.config.condition == "dataset"
    assert run.config.styles == ("bach-chorales", "essen-folksongs")
    generated = text_outputs(nbformat.read(run_dir / "notebooks" / "05_generate.ipynb", 4))
    assert "NoteTransformer" in generated and "transformer: 2 blocks x 2 heads" in generated
    assert (run_dir / "generated" / "generated.mid").is_file()
    assert (run_dir / "generated" / "generated.wav").is_file()
    assert "Style: essen-folksongs, guidance 2" in generated
    for name in ("none", "bach-chorales", "essen-folksongs"):
        assert (run_dir / "generated" / f"style-{name}.mid").is_file()
        assert (run_dir / "generated" / f"style-{name}.wav").is_file()
    assert (run_dir / "generated" / "styles.png").stat().st_size > 10_000
    metrics = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert math.isfinite(metrics["pitch_nll"]) and math.isfinite(metrics["note_nll"])
    assert 0 <= metrics["overlap_area"] <= 1
    for kind in ("true", "none", "wrong"):
        assert math.isfinite(metrics[f"nll_{kind}_label"])
    assert metrics["style_accuracy_real"] >= 0.9  # chorales and folk songs are easy to tell
    assert {"1", "2", "3"} <= set(metrics["style_accuracy_by_guidance"])
    evaluated = text_outputs(nbformat.read(run_dir / "notebooks" / "06_evaluate.ipynb", 4))
    assert "conditioned on dataset: bach-chorales, essen-folksongs" in evaluated

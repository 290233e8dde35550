"""Notebook 05 under papermill: the piece, its audio and pictures in ``<run_dir>/generated/``."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

from musicrnn.live import apply_dynamics
from musicrnn.model import read_model_config
from musicrnn.runner import load_config, parameters_for

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "05_generate.ipynb"

pytestmark = [pytest.mark.slow, pytest.mark.notebook]


def test_notebook_writes_midi_wav_and_pictures(smoke_run):
    import pretty_midi

    from musicrnn.audio import TAIL_SECONDS, read_wav

    params = parameters_for(load_config(ROOT / "configs" / "smoke.yaml"), NOTEBOOK)
    out = Path(smoke_run) / "generated"
    midi = pretty_midi.PrettyMIDI(str(out / "generated.mid"))
    n_notes = sum(len(i.notes) for i in midi.instruments)
    assert 0 < n_notes <= params["num_notes"]
    samples, rate = read_wav(out / "generated.wav")
    assert len(samples) / rate == pytest.approx(midi.get_end_time() + TAIL_SECONDS, abs=0.01)
    assert np.abs(samples).max() > 0.1
    for picture in ("piano_roll.png", "distributions.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    settings = json.loads((out / "generation.json").read_text())
    assert settings["num_notes"] == params["num_notes"] and settings["seed"] == params["seed"]
    # every note reaches the MIDI file with its velocity, scaled by the notebook's dynamics
    dynamics = params.get("dynamics", 1.0)
    assert settings["dynamics"] == dynamics
    velocities = {n.velocity for i in midi.instruments for n in i.notes}
    if read_model_config(smoke_run).velocity == "none":  # one level for every note
        assert velocities == {apply_dynamics(100, dynamics)}
        assert settings["velocity_temperature"] is None
    else:  # a model of dynamics gives its notes their own velocities
        assert len(velocities) > 1

    executed = nbformat.read(Path(smoke_run) / "notebooks" / NOTEBOOK.name, as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    widget_views = [o for o in outputs if "application/vnd.jupyter.widget-view+json"
                    in o.get("data", {})]
    assert widget_views, "the generator panel was not displayed"


def test_notebook_without_a_model_says_what_to_do(tmp_path):
    import papermill as pm

    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises(pm.PapermillExecutionError) as caught:
        pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "out.ipynb"),
                            parameters={"run_dir": str(empty), "data_dir": str(tmp_path)},
                            cwd=str(NOTEBOOK.parent), progress_bar=False)
    assert caught.value.ename == "MusicRNNError"
    assert "holds no music_rnn_model.keras" in caught.value.evalue
    assert "train" in caught.value.evalue
    assert not (empty / "generated").exists()

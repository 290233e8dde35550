"""The MAESTRO profiles (issue 12, "Full scale"): configs/maestro.yaml for a GPU host,
configs/maestro-cpu.yaml for a laptop CPU, their experiments file, and the run command's
``--dataset`` / ``--data-dir``.

The GPU profile runs end to end on the shared MAESTRO sample with only the values its file marks
"budget cap" made small, so what a GPU host will run is known to work before it gets there.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from musicrnn.errors import MusicRNNError
from musicrnn.runner import load_config, notebook_parameters, notebook_paths

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PROFILES = [CONFIGS / "maestro.yaml", CONFIGS / "maestro-cpu.yaml"]
EXPERIMENTS = sorted(CONFIGS.glob("experiments-*.yaml"))

# What the end-to-end test makes small: every key here must be marked "budget cap" in
# configs/maestro.yaml, so the test runs the profile's design and settings, only less of it.
SAMPLE_CAPS: dict[str, dict] = {
    "common": {"max_files": 2},  # 1 training performance and 1 validation one
    "04_train": {"epochs": 1, "budget_seconds": 120.0, "drift_targets": 32},
    "05_generate": {"num_notes": 40, "compare_notes": 288},  # the walk: a window and 32 notes
    "06_evaluate": {"temperatures": [1.0], "num_samples": 2, "num_notes": 24,
                    "max_positions": 64},
    "07_perform_live": {"duration_s": 2.0},
}


def budget_caps(path: Path) -> dict[str, set[str]]:
    """The keys a profile marks ``# budget cap``, per section (``common`` or a notebook)."""
    caps: dict[str, set[str]] = {}
    section = None
    for line in path.read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        if indent == 0:
            section = key if key == "common" else None
        elif indent == 2 and section != "common":
            section = key
        if indent > 0 and "# budget cap" in line:
            caps.setdefault(section, set()).add(key)
    return caps


# -- the files --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_builds_a_real_preset_on_maestro_and_marks_its_caps(path):
    from musicrnn.model import PRESETS

    cfg = load_config(path)
    assert cfg["common"]["dataset"] == "maestro-v2" and cfg["common"]["max_files"] is None
    preset = cfg["notebooks"]["03_build_model"]["preset"]
    assert preset in PRESETS, f"{path.name} builds preset {preset!r}, which model.PRESETS lacks"
    train = cfg["notebooks"]["04_train"]
    assert train["budget_seconds"] > 0 and "preset" not in train  # notebook 03's design trains
    assert cfg["notebooks"]["06_evaluate"]["split"] == "test"
    assert cfg["notebooks"]["07_perform_live"]["output"] == "record"
    caps = budget_caps(path)
    assert caps["04_train"] >= {"epochs", "budget_seconds"}
    assert caps["05_generate"] >= {"num_notes"} and caps["07_perform_live"] >= {"duration_s"}
    assert caps["06_evaluate"] >= {"num_samples", "max_positions"}
    for section, keys in caps.items():  # a mark on a line the file does not set is a typo
        values = cfg["common"] if section == "common" else cfg["notebooks"][section]
        assert keys <= set(values), f"{path.name}: {section} marks {keys - set(values)}"


def test_cpu_profile_trains_an_hour_and_plays_two_minutes():
    from musicrnn.model import get_preset

    cfg = load_config(CONFIGS / "maestro-cpu.yaml")["notebooks"]
    assert cfg["04_train"]["budget_seconds"] <= 3600
    assert cfg["03_build_model"]["preset"] == "v6" and cfg["04_train"]["transpose"] == 5
    # two minutes, however dense the model plays (it played 17.6 notes per second, MAESTRO's
    # pianists 9.8 on average): a piece of 120 s with room for 40 notes a second
    assert cfg["05_generate"]["seconds"] == 120.0
    assert cfg["05_generate"]["num_notes"] >= 120 * 40
    # the schedule that ends with the hour: the preset's own, not changed by the profile
    assert cfg["04_train"].get("lr_schedule", get_preset("v6").lr_schedule) == "cosine"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiments_files_parse_and_name_real_arguments(path):
    from musicrnn.evaluation import evaluate_model
    from musicrnn.experiments import load_experiment_config
    from musicrnn.training import train

    cfg = load_experiment_config(path)  # unknown presets or config fields fail here
    train_args = set(inspect.signature(train).parameters)
    assert set(cfg["train"]) <= train_args, f"{path.name}: train() lacks {set(cfg['train'])}"
    eval_args = set(inspect.signature(evaluate_model).parameters)
    assert set(cfg["evaluation"]) <= eval_args, f"{path.name}: {set(cfg['evaluation'])}"


def test_cpu_experiments_compare_the_cpu_profiles_design_on_its_budget():
    from musicrnn.experiments import load_experiment_config

    experiments = load_experiment_config(CONFIGS / "experiments-maestro-cpu.yaml")
    profile = load_config(CONFIGS / "maestro-cpu.yaml")["notebooks"]
    assert experiments["dataset"] == "maestro-v2"
    assert {"baseline", "v2", "v4-cpu", "v5-cpu", "v5-cpu-cosine", "v6-cpu"} <= set(
        experiments["models"])  # the profile's design beside the LSTMs it replaced
    assert experiments["budget_seconds"] == profile["04_train"]["budget_seconds"]
    chosen = experiments["models"]["v6-cpu"]  # the profile's design, as a row
    assert chosen["preset"] == profile["03_build_model"]["preset"]
    changed = {k: v for k, v in chosen.items() if k != "preset"}
    notebook_04 = {**profile["04_train"], **profile["04_train"].get("model_changes", {})}
    trained = {k: notebook_04[k] for k in changed if k in notebook_04}
    assert changed == trained, "the row changes the preset as the profile's notebook 04 does"
    assert set(profile["04_train"].get("model_changes", {})) <= set(changed)


# -- --dataset and --data-dir -------------------------------------------------------------------


def test_dataset_and_data_dir_reach_every_notebook(tmp_path, monkeypatch):
    cfg = load_config(CONFIGS / "maestro-cpu.yaml")
    (tmp_path / "copy").mkdir()
    monkeypatch.chdir(tmp_path)
    from musicrnn.runner import check_data_dir, check_dataset

    dataset = check_dataset("local:copy")  # relative to here, not to notebooks/
    data_dir = check_data_dir("data")
    assert dataset == f"local:{tmp_path / 'copy'}" and data_dir == str(tmp_path / "data")
    assert check_dataset("essen-folksongs + local:copy") == f"essen-folksongs+{dataset}"
    for nb in notebook_paths(ROOT / "notebooks"):
        params = notebook_parameters(cfg, nb, tmp_path / "run", dataset=dataset,
                                     data_dir=data_dir, overrides={"seed": 3})
        assert params["dataset"] == dataset and params["data_dir"] == data_dir
        assert params["run_dir"] == str(tmp_path / "run") and params["seed"] == 3
    plain = notebook_parameters(cfg, notebook_paths(ROOT / "notebooks")[0], tmp_path)
    assert plain["dataset"] == "maestro-v2" and plain["data_dir"].endswith("data")


@pytest.mark.parametrize("options, message", [
    (["--dataset", "maestro-v9"], "unknown dataset 'maestro-v9' (did you mean"),
    (["--dataset", "local:{tmp}/absent"], "no folder at"),
    (["--dataset", "local:"], "give a folder after 'local:'"),
    (["--data-dir", "{tmp}/a-file"], "is a file, not a folder"),
    (["--data-dir", ""], "the data folder is empty"),
])
def test_run_refuses_a_bad_dataset_or_data_dir_in_one_line(tmp_path, capsys, options, message):
    from musicrnn.cli import main

    (tmp_path / "a-file").write_text("not a folder")
    options = [o.format(tmp=tmp_path) for o in options]
    code = main(["run", "--config", str(CONFIGS / "maestro-cpu.yaml"),
                 "--run-dir", str(tmp_path / "run"), *options])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.startswith("musicrnn run: error: ") and err.count("\n") == 1
    assert not (tmp_path / "run").exists(), "nothing is written before the inputs are checked"


# -- the GPU profile, end to end on the MAESTRO sample ------------------------------------------


def test_sample_caps_touch_only_marked_budget_caps():
    caps = budget_caps(CONFIGS / "maestro.yaml")
    for section, values in SAMPLE_CAPS.items():
        assert set(values) <= caps.get(section, set()), f"{section}: {set(values)} not caps"


@pytest.mark.slow
@pytest.mark.notebook
def test_gpu_profile_runs_every_notebook_on_the_maestro_sample(maestro_sample, tmp_path):
    import mido

    from musicrnn.model import read_model_config
    from musicrnn.runner import run_notebooks

    raw = yaml.safe_load((CONFIGS / "maestro.yaml").read_text())
    for section, values in SAMPLE_CAPS.items():
        target = raw["common"] if section == "common" else raw["notebooks"][section]
        assert set(values) <= set(target), f"{section} sets no {set(values) - set(target)}"
        target.update(values)
    small = tmp_path / "maestro-small.yaml"
    small.write_text(yaml.safe_dump(raw))

    dataset = f"local:{Path(maestro_sample).resolve()}"
    run = run_notebooks(small, run_dir=tmp_path / "run", dataset=dataset,
                        data_dir=tmp_path / "data")

    profile = load_config(CONFIGS / "maestro.yaml")["notebooks"]
    config = read_model_config(run)
    assert config.name == profile["03_build_model"]["preset"]
    assert getattr(config, "velocity", None) == "categorical"
    assert (run / "music_rnn_model.keras").is_file()
    assert list((tmp_path / "data" / "notes").glob("*.npz")), "the notes went to --data-dir"
    trained = json.loads((run / "config.json").read_text())
    assert trained["dataset"] == dataset
    generated = run / "generated"
    assert (generated / "generated.mid").is_file() and (generated / "generated.wav").is_file()
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics["split"] == "validation"  # the sample holds no test pieces
    for key in ("pitch_nll", "velocity_nll", "note_nll", "overlap_area"):
        assert math.isfinite(metrics[key]), key
    take = mido.MidiFile(run / "live" / "performance.mid")
    assert [m for m in take if m.type == "note_on" and m.velocity > 0]
    for nb in notebook_paths(ROOT / "notebooks"):
        executed = nbformat.read(run / "notebooks" / nb.name, as_version=4)
        injected = next(c for c in executed.cells
                        if "injected-parameters" in c.metadata.get("tags", []))
        declared = papermill.inspect_notebook(str(nb))
        if "dataset" in declared:  # 07 plays a trained run: it reads no dataset
            assert f'dataset = "{dataset}"' in injected.source, nb.name


def test_run_notebooks_checks_its_inputs_before_running(tmp_path):
    from musicrnn.runner import run_notebooks

    with pytest.raises(MusicRNNError, match="unknown dataset"):
        run_notebooks(CONFIGS / "maestro.yaml", run_dir=tmp_path / "run", dataset="nope")
    assert not (tmp_path / "run").exists()

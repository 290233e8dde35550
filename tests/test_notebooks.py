"""The notebooks as files: numbered, committed without outputs, one literal `parameters` cell.

Executing them is the job of the stage tests (through the ``smoke_run`` fixture).
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from musicrnn.runner import NOTEBOOK_PATTERN, load_config, notebook_paths, parameters_for

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_numbered_notebooks():
    assert len(notebook_paths(ROOT / "notebooks")) >= 2
    for nb in NOTEBOOKS:
        assert NOTEBOOK_PATTERN.match(nb.name), f"{nb.name} is not named NN_verb_noun.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} is committed with outputs"
            assert cell.execution_count is None, f"{path.name} has execution counts"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_one_literal_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name} has {len(tagged)} cells tagged 'parameters'"
    cell = tagged[0]
    assert cell.cell_type == "code"
    tree = ast.parse(cell.source)
    names = []
    for node in tree.body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), "parameters cell holds assignments only"
        value = node.value
        ast.literal_eval(value)  # literals only: papermill's injected values must reach them
        target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
        names.append(target.id)
    assert "run_dir" in names and "data_dir" in names, "every notebook takes run_dir and data_dir"
    for line in cell.source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, f"{path.name}: parameter line without a comment: {line!r}"
    # papermill reads each line itself: a comment holding '=' or quotes breaks its parser
    # ("Unable to parse line"), and the parameter then loses its type in the injected cell.
    from papermill.translators import PythonTranslator

    parsed = PythonTranslator.inspect(cell)
    assert sorted(p.name for p in parsed) == sorted(names), f"{path.name}: papermill misreads it"


RUNNER_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml")
                        if not p.name.startswith("experiments-"))  # every profile we ship


@pytest.mark.parametrize("config", RUNNER_CONFIGS, ids=lambda p: p.name)
def test_parameter_files_name_only_real_parameters(config):
    """Every key a parameter file sets exists in the parameters cell of the notebooks it reaches."""
    assert {"quick.yaml", "smoke.yaml", "maestro-v2.yaml"} <= {p.name for p in RUNNER_CONFIGS}
    cfg = load_config(config)
    for nb_path in notebook_paths(ROOT / "notebooks"):
        own = set((cfg["notebooks"].get(nb_path.stem) or {}))
        missing = own - _declared(nb_path)
        assert not missing, f"{config.name} sets {sorted(missing)} which {nb_path.name} lacks"
        assert parameters_for(cfg, nb_path).keys() >= own
    unknown = set(cfg["notebooks"]) - {p.stem for p in notebook_paths(ROOT / "notebooks")}
    assert not unknown, f"{config.name} names notebooks that do not exist: {sorted(unknown)}"
    everywhere = set().union(*(_declared(nb) for nb in notebook_paths(ROOT / "notebooks")))
    stray = set(cfg["common"]) - everywhere
    assert not stray, f"{config.name}: common sets {sorted(stray)}, which no notebook declares"


def _declared(nb_path: Path) -> set[str]:
    """The names the ``parameters`` cell of a notebook assigns."""
    nb = nbformat.read(nb_path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    return {(n.target if isinstance(n, ast.AnnAssign) else n.targets[0]).id
            for n in ast.parse(cell.source).body}


def test_bad_parameter_files_get_clear_errors(tmp_path):
    from musicrnn.errors import MusicRNNError

    with pytest.raises(MusicRNNError, match="no parameter file at .*see configs/"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("common: {dataset: [unclosed\n")
    with pytest.raises(MusicRNNError, match="is not valid YAML"):
        load_config(broken)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("notebook: {}\n")
    with pytest.raises(MusicRNNError, match="'common' and 'notebooks'"):
        load_config(wrong)
    for path in (ROOT / "configs").glob("*.yaml"):  # every parameter file we ship reads
        if not path.name.startswith("experiments-"):
            assert set(load_config(path)["notebooks"]) <= {nb.stem for nb in NOTEBOOKS}, path

"""Run the numbered notebooks in order with papermill: the main job (``make run``).

A parameter file (``configs/*.yaml``) has two parts::

    common:            # injected into every notebook
      dataset: bach-chorales
      seed: 42
    notebooks:         # per notebook (by file stem), on top of `common`
      04_train:
        epochs: 3

Papermill injects the parameters after each notebook's ``parameters`` cell; every notebook also
receives ``run_dir`` (the run's folder) and ``data_dir``. The executed copies go to
``<run_dir>/notebooks/``. Notebooks run with ``notebooks/`` as their working directory, as in
Jupyter.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from . import paths
from .errors import MusicRNNError

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")


def notebook_paths(folder: Path | None = None, upto: str | None = None) -> list[Path]:
    """The numbered notebooks in order, without the untested ``99_`` scratch ones.

    ``upto`` ("04" or "04_train") stops after that notebook.
    """
    folder = Path(folder or paths.NOTEBOOKS)
    found = sorted(
        p for p in folder.glob("*.ipynb")
        if NOTEBOOK_PATTERN.match(p.name) and not p.name.startswith("99_")
    )
    if upto:
        prefix = upto.split("_")[0]
        found = [p for p in found if p.name[:2] <= prefix]
    return found


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a parameter file; clear errors for a missing file or a malformed one."""
    path = Path(path)
    raw = paths.read_yaml(path, f"parameter file at {path}; see configs/ for the ones provided")
    if not isinstance(raw, dict) or set(raw) - {"common", "notebooks", "description"}:
        raise MusicRNNError(
            f"{path} must be a mapping with the keys 'common' and 'notebooks' (and 'description')"
        )
    common = raw.get("common") or {}
    per_notebook = raw.get("notebooks") or {}
    if not isinstance(common, dict) or not isinstance(per_notebook, dict):
        raise MusicRNNError(f"{path}: 'common' and 'notebooks' must be mappings")
    return {"common": common, "notebooks": per_notebook, "description": raw.get("description", "")}


def parameters_for(config: dict[str, Any], notebook: Path | str) -> dict[str, Any]:
    """The parameters one notebook receives: ``common`` overlaid with its own section."""
    stem = Path(notebook).stem
    params = dict(config.get("common", {}))
    params.update(config.get("notebooks", {}).get(stem, {}) or {})
    return params


def new_run_dir() -> Path:
    """``outputs/runs/<timestamp>/`` (not created)."""
    return paths.RUNS / datetime.now().strftime("%Y%m%d-%H%M%S")


def run_notebooks(
    config_path: str | Path,
    run_dir: str | Path | None = None,
    upto: str | None = None,
    overrides: dict[str, Any] | None = None,
    kernel_name: str | None = None,
    log_output: bool = False,
) -> Path:
    """Execute the notebooks in order into ``run_dir``; returns the run directory.

    Stops at the first notebook that fails, naming it and where its executed copy is.
    """
    import papermill as pm

    config = load_config(config_path)
    run_dir = Path(run_dir) if run_dir else new_run_dir()
    run_dir = run_dir.expanduser().resolve()
    executed = run_dir / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    notebooks = notebook_paths(upto=upto)
    if not notebooks:
        raise MusicRNNError(f"no numbered notebooks found in {paths.NOTEBOOKS}")
    print(f"Running {len(notebooks)} notebooks with {config_path} into {run_dir}", flush=True)
    for nb in notebooks:
        params = parameters_for(config, nb)
        params.update(overrides or {})
        params["run_dir"] = str(run_dir)
        params.setdefault("data_dir", str(paths.DATA))
        out = executed / nb.name
        started = time.perf_counter()
        print(f"  {nb.name} ...", end=" ", flush=True)
        try:
            pm.execute_notebook(
                str(nb), str(out), parameters=params, cwd=str(nb.parent),
                kernel_name=kernel_name, progress_bar=False, log_output=log_output,
            )
        except pm.PapermillExecutionError as exc:
            print("failed", flush=True)
            raise MusicRNNError(
                f"{nb.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
                f"(the executed notebook is {out})"
            ) from exc
        print(f"done in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"Results are in {run_dir}", flush=True)
    return run_dir


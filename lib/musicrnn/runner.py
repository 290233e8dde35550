"""Run the numbered notebooks in order with papermill: the main job (``make run``).

A parameter file (``configs/*.yaml``) has two parts::

    common:            # injected into every notebook
      dataset: bach-chorales
      seed: 42
    notebooks:         # per notebook (by file stem), on top of `common`
      04_train:
        epochs: 3

Papermill injects the parameters after each notebook's ``parameters`` cell; every notebook also
receives ``run_dir`` (the run's folder) and ``data_dir``. ``dataset`` and ``data_dir`` given to
:func:`run_notebooks` (``musicrnn run --dataset NAME --data-dir DIR``) replace the file's for every
notebook, so that one profile runs on another copy of its data. The executed copies go to
``<run_dir>/notebooks/``. Notebooks run with ``notebooks/`` as their working directory, as in
Jupyter, so every path handed to them is made absolute first.
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


def notebook_paths(folder: Path | None = None, upto: str | None = None,
                   start: str | None = None) -> list[Path]:
    """The numbered notebooks in order, without the untested ``99_`` scratch ones.

    ``upto`` ("04" or "04_train") stops after that notebook; ``start`` ("03") begins with that
    one (the earlier ones' files must already be there).
    """
    folder = Path(folder or paths.NOTEBOOKS)
    found = sorted(
        p for p in folder.glob("*.ipynb")
        if NOTEBOOK_PATTERN.match(p.name) and not p.name.startswith("99_")
    )
    if upto:
        prefix = upto.split("_")[0]
        found = [p for p in found if p.name[:2] <= prefix]
    if start:
        prefix = start.split("_")[0]
        found = [p for p in found if p.name[:2] >= prefix]
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


def check_dataset(dataset: str) -> str:
    """A dataset name every notebook can use: registered, or ``local:`` with an absolute folder.

    Args:
        dataset: ``bach-chorales``, ``maestro-v2``, ... or ``local:DIR`` (relative to the current
            directory, not to ``notebooks/`` where the notebooks run), or a mixture of them
            joined by ``+`` (each part checked so).

    Raises:
        MusicRNNError: an unknown name, or a ``local:`` folder that does not exist.
    """
    from .datasets import get_dataset, mixture_name, mixture_parts

    names = []
    for part in mixture_parts(dataset):
        entry = get_dataset(part)
        if entry.kind == "local" and not Path(entry.source).is_dir():
            raise MusicRNNError(f"dataset {part!r}: no folder at {entry.source}; give "
                                "local:DIR with an existing folder of MIDI files")
        names.append(entry.name)
    return mixture_name(names)


def check_data_dir(data_dir: str | Path) -> str:
    """``data_dir`` as an absolute path the notebooks can write to (created when missing).

    Raises:
        MusicRNNError: an empty value, or a path that exists and is not a folder.
    """
    if not str(data_dir).strip():
        raise MusicRNNError("the data folder is empty; give a folder (it is created when missing)")
    folder = Path(data_dir).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise MusicRNNError(f"the data folder {data_dir} is a file, not a folder; give a folder")
    return str(folder)


def notebook_parameters(
    config: dict[str, Any],
    notebook: Path | str,
    run_dir: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything one notebook of a run receives: :func:`parameters_for`, then ``overrides``,
    then ``dataset`` and ``data_dir`` (when given), then ``run_dir``; ``data_dir`` defaults to
    the project's ``data/``."""
    params = parameters_for(config, notebook)
    params.update(overrides or {})
    if dataset:
        params["dataset"] = dataset
    if data_dir:
        params["data_dir"] = str(data_dir)
    params["run_dir"] = str(run_dir)
    params.setdefault("data_dir", str(paths.DATA))
    return params


def run_notebooks(
    config_path: str | Path,
    run_dir: str | Path | None = None,
    upto: str | None = None,
    overrides: dict[str, Any] | None = None,
    kernel_name: str | None = None,
    log_output: bool = False,
    *,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    start: str | None = None,
) -> Path:
    """Execute the notebooks in order into ``run_dir``; returns the run directory.

    Args:
        config_path: the parameter file (``configs/*.yaml``).
        run_dir: the run's folder (default :func:`new_run_dir`).
        upto: stop after this notebook (``"04"``).
        start: begin with this notebook (``"03"``), in a run directory (and data folder) that
            the earlier ones already filled.
        overrides: parameters given to every notebook, on top of the file's.
        kernel_name: the Jupyter kernel (default: the notebooks' own).
        log_output: echo the notebooks' output while they run.
        dataset: the dataset of every notebook instead of the file's (``local:DIR`` for another
            copy of MAESTRO, say).
        data_dir: the data folder of every notebook instead of the project's ``data/``.

    Raises:
        MusicRNNError: a bad parameter file, dataset or data folder (before anything runs), or
            the first notebook that fails, naming it and where its executed copy is.
    """
    import papermill as pm

    config = load_config(config_path)
    dataset = check_dataset(dataset) if dataset is not None else None
    data_dir = check_data_dir(data_dir) if data_dir is not None else None
    notebooks = notebook_paths(upto=upto, start=start)
    if not notebooks:
        raise MusicRNNError(f"no numbered notebooks found in {paths.NOTEBOOKS}"
                            + (f" from {start}" if start else "") + (f" to {upto}" if upto else ""))
    run_dir = Path(run_dir) if run_dir else new_run_dir()
    run_dir = run_dir.expanduser().resolve()
    executed = run_dir / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    where = "".join(f", {k} {v}" for k, v in (("dataset", dataset), ("data in", data_dir)) if v)
    print(f"Running {len(notebooks)} notebooks with {config_path}{where} into {run_dir}",
          flush=True)
    for nb in notebooks:
        params = notebook_parameters(config, nb, run_dir, dataset=dataset, data_dir=data_dir,
                                     overrides=overrides)
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

"""Shared fixtures: the real data the tests read, and one smoke run of the whole notebook chain.

Tests that need ``../shared`` (the MAESTRO sample, the seed artefacts) skip with the reason when
it is absent, as on a user's machine; everything else runs from what ``make test`` installs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")


def _pin_xdist_worker() -> None:
    """Under pytest-xdist (``make test`` runs a worker per core), keep each worker, and every
    process it starts (kernels, commands), on cores of its own.

    Timing tests (the live scheduler's) then see the machine they were written for, one core
    that nothing else uses, and TensorFlow's thread pools of two workers do not fight over the
    same cores. A plain ``pytest`` run is left as it is, and so is a run with
    ``MUSICRNN_TEST_PIN=0``.
    """
    if os.environ.get("MUSICRNN_TEST_PIN", "1") == "0":
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under xdist
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < count:  # more workers than cores: leave the scheduling to the system
        return
    index = int(worker[2:])
    os.sched_setaffinity(0, [c for i, c in enumerate(cores) if i % count == index])


_pin_xdist_worker()  # before any test module imports TensorFlow (its pools size to the cores)


NOTEBOOK_CHAIN_FILES = ("test_notebook_0", "test_notebooks.py")  # the files that read smoke_run


def work_unit(nodeid: str) -> str:
    """The unit a pytest-xdist worker takes whole: a test file, so that its module-scoped
    fixtures (trained models, corpora) are made once; and every file of the notebook chain
    together, so that ``smoke_run`` (the seven notebooks, run once) is made by one worker."""
    file = nodeid.split("::", 1)[0]
    name = file.rsplit("/", 1)[-1]
    return "notebook-chain" if name.startswith(NOTEBOOK_CHAIN_FILES) else file


# Every work unit by its length (seconds in `--durations`, measured on 2 cores), handed out
# longest first: the long ones start at once and the short ones fill the end, so that neither
# worker waits for the other. A unit not named here (a new test file) goes before them all:
# add it at its place.
LONGEST_FIRST = ("notebook-chain", "tests/test_profiles.py", "tests/test_attention_notebooks.py",
                 "tests/test_training.py", "tests/test_model.py", "tests/test_distribution.py",
                 "tests/test_browser.py", "tests/test_experiments.py", "tests/test_attention.py",
                 "tests/test_conditioning.py", "tests/test_datasets.py",
                 "tests/test_generation.py", "tests/test_live.py",
                 "tests/test_evaluation.py", "tests/test_timing.py", "tests/test_widgets.py",
                 "tests/test_notes.py", "tests/test_styles.py", "tests/test_layers.py",
                 "tests/test_sequences.py",
                 "tests/test_statistics.py", "tests/test_plots.py", "tests/test_audio.py",
                 "tests/test_gestures.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``make test`` (``pytest -n auto``) hands out whole :func:`work_unit` s, longest first."""
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

        def _assign_work_unit(self, node) -> None:
            for unit in reversed(LONGEST_FIRST):
                if unit in self.workqueue:
                    self.workqueue.move_to_end(unit, last=False)
            super()._assign_work_unit(node)

    return ByWorkUnit(config, log)


ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MUSICRNN_SHARED", ROOT.parent / "shared"))
MAESTRO_SAMPLE = SHARED / "data" / "maestro-v2-sample" / "maestro-v2.0.0"
SEED_ARTIFACTS = SHARED / "data" / "seed-artifacts"


@pytest.fixture(scope="session")
def maestro_sample() -> Path:
    """The 60 real MAESTRO v2 performances with their official CSV (skips when absent)."""
    if not (MAESTRO_SAMPLE / "maestro-v2.0.0.csv").is_file():
        pytest.skip(f"the shared MAESTRO sample is not at {MAESTRO_SAMPLE}")
    return MAESTRO_SAMPLE


@pytest.fixture(scope="session")
def seed_artifacts() -> Path:
    """The original research checkpoint and seed sequence (skips when absent)."""
    if not (SEED_ARTIFACTS / "ckpt_50.weights.h5").is_file():
        pytest.skip(f"the shared seed artefacts are not at {SEED_ARTIFACTS}")
    return SEED_ARTIFACTS


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, chorale_data) -> Path:
    """Run every numbered notebook once, in order, on configs/smoke.yaml; returns the run dir.

    Notebook tests assert on the artefacts their notebook left in this run directory (and in its
    ``notebooks/`` folder, the executed copies). Its data folder starts from a copy of the
    chorales ``chorale_data`` wrote (8 of the 16 and music21's catalogue, which takes seconds to
    make): notebook 01 writes the other 8.
    """
    import shutil

    from musicrnn.runner import run_notebooks

    base = tmp_path_factory.mktemp("smoke")
    shutil.copytree(chorale_data["data_dir"] / "raw", base / "data" / "raw")
    return run_notebooks(
        ROOT / "configs" / "smoke.yaml", run_dir=base / "run",
        overrides={"data_dir": str(base / "data")},
    )


@pytest.fixture(scope="session")
def chorale_data(tmp_path_factory) -> dict:
    """Eight real Bach chorales (music21's corpus, offline) written out and extracted into a
    temporary data folder: ``{"data_dir", "dataset", "max_files", "corpus"}``."""
    from musicrnn.notes import load_corpus

    data_dir = tmp_path_factory.mktemp("chorale-data")
    corpus = load_corpus("bach-chorales", data_dir=data_dir, max_files=8)
    return {"data_dir": data_dir, "dataset": "bach-chorales", "max_files": 8, "corpus": corpus}


@pytest.fixture(scope="session")
def chorale_run(tmp_path_factory, chorale_data) -> dict:
    """A small trained run directory for generation tests (issue 4), made in seconds.

    On the chorales of ``chorale_data``, a one-layer LSTM(32) of the baseline layout
    (``targets="last"``, 16-note windows) is fitted for a few epochs on windows taken inside the
    training pieces, and written with ``musicrnn.model.write_run_files``. Returns
    ``{"run_dir", "data_dir", "dataset", "max_files"}``.
    """
    import keras
    import numpy as np

    from musicrnn.model import build_model, compile_model, get_preset, write_run_files

    run_dir = tmp_path_factory.mktemp("chorale-run") / "run"
    corpus = chorale_data["corpus"]
    config = get_preset("baseline", lstm_units=(32,), seq_length=16, learning_rate=0.01,
                        pitch_loss_weight=1.0, seed=5)
    windows = []
    for piece in corpus.iter_features("train"):
        for start in range(0, len(piece) - config.seq_length, 2):
            windows.append(piece[start: start + config.seq_length + 1])
    windows = np.stack(windows).astype("float32")
    inputs, targets = windows[:, :-1], windows[:, -1]
    keras.utils.set_random_seed(config.seed)
    model = compile_model(build_model(config), config, jit_compile=False)
    model.fit(inputs, {"pitch": targets[:, 0], "step": targets[:, 1], "duration": targets[:, 2]},
              batch_size=64, epochs=4, verbose=0)
    seed_sequence = corpus.features(int(corpus.indices("validation")[0]))[: config.seq_length]
    write_run_files(run_dir, model, config, seed_sequence,
                    {"dataset": "bach-chorales", "max_files": 8})
    return {"run_dir": run_dir, "data_dir": chorale_data["data_dir"],
            "dataset": "bach-chorales", "max_files": 8}

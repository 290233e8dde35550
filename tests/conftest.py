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
def smoke_run(tmp_path_factory) -> Path:
    """Run every numbered notebook once, in order, on configs/smoke.yaml; returns the run dir.

    Notebook tests assert on the artefacts their notebook left in this run directory (and in its
    ``notebooks/`` folder, the executed copies).
    """
    from musicrnn.runner import run_notebooks

    base = tmp_path_factory.mktemp("smoke")
    return run_notebooks(
        ROOT / "configs" / "smoke.yaml", run_dir=base / "run",
        overrides={"data_dir": str(base / "data")},
    )

"""What the training tests share: a tiny config, scripts run in a fresh process, and their
environment (imported like note_support: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from musicrnn.model import get_preset

TINY = dict(lstm_units=[16], dropout=0.0, seq_length=16, targets="all", window_shift=16,
            batch_size=16, learning_rate=0.01, clipnorm=1.0, epochs=2, seed=3)


def tiny(**changes):
    """A model small enough to train in a second on the chorales."""
    return get_preset("v2", **{**TINY, **changes})


def script(tmp_path: Path, body: str) -> Path:
    """``body`` (dedented) written as ``tmp_path/job.py``."""
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(body))
    return path


def job_env(**extra) -> dict:
    """This process's environment for a child job: quiet TensorFlow, fixed hashing, no
    inherited TF_CONFIG, plus ``extra``."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env

"""Music RNN: generate music with a recurrent network, end to end.

One module per stage of the pipeline (see the README), listed bottom-up in ``_MODULES``: a module
imports only those before it (``tests/test_layers.py`` checks).
Modules are imported lazily so that ``import musicrnn`` stays cheap (TensorFlow loads only when a
module that needs it is used).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_MODULES = (
    "errors", "paths", "timing", "datasets", "notes", "statistics", "styles", "sequences", "model",
    "plots", "audio", "training", "generation", "evaluation", "experiments", "live", "gestures",
    "widgets", "runner", "cli",
)


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'musicrnn' has no attribute {name!r}")


__all__ = ["__version__", *_MODULES]

"""Helpers shared by the notebook tests (imported like browser_support: pytest puts tests/ on
sys.path for its rootdir-less test modules)."""

from __future__ import annotations


def text_outputs(nb) -> str:
    """Every text output of an executed notebook (streams and plain-text results), joined."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)

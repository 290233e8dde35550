"""Notebook 01 (download the data), executed by the session's smoke run on configs/smoke.yaml."""

from __future__ import annotations

import csv
from pathlib import Path

import nbformat
import pretty_midi
import pytest

from musicrnn.runner import load_config

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.notebook]


def test_notebook_01_wrote_the_file_list(smoke_run):
    config = load_config(ROOT / "configs" / "smoke.yaml")["common"]
    with open(smoke_run / "dataset_files.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == config["max_files"]
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    data = smoke_run.parent / "data" / "raw" / config["dataset"]
    for row in rows:
        path = data / row["name"]
        assert row["path"] == str(path) and path.is_file()
        assert int(row["size_bytes"]) == path.stat().st_size
        assert pretty_midi.PrettyMIDI(str(path)).instruments, row["name"]
    # No validation or test chorale is a version of a training chorale.
    works = {}
    for row in rows:
        works.setdefault(row["work"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in works.values())


def test_notebook_01_showed_what_was_downloaded(smoke_run):
    executed = nbformat.read(smoke_run / "notebooks" / "01_download_data.ipynb", as_version=4)
    text = []
    for cell in executed.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", output.get("evalue")
            text.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    shown = "\n".join(text)
    assert "bach-chorales: 16 MIDI files" in shown
    assert "validation" in shown and "test" in shown

"""Notebook 02 (extract notes) runs under papermill on configs/smoke.yaml and leaves its artefacts."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pandas as pd
import pytest

from musicrnn.notes import NOTE_COLUMNS, NoteCorpus, cache_path
from musicrnn.runner import load_config

pytestmark = [pytest.mark.slow, pytest.mark.notebook]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def smoke_parameters() -> dict:
    from pathlib import Path

    from musicrnn.runner import parameters_for

    root = Path(__file__).resolve().parents[1]
    return parameters_for(load_config(root / "configs" / "smoke.yaml"), "02_extract_notes")


def test_notebook_02_extracts_the_corpus(smoke_run):
    params = smoke_parameters()
    data_dir = smoke_run.parent / "data"
    out = smoke_run / "notes"

    # the cache, with its manifest, where the next notebooks look for it
    cache = cache_path(params["dataset"], data_dir, params["max_files"])
    corpus = NoteCorpus.from_npz(cache)
    manifest = json.loads(cache.with_name(cache.stem + ".manifest.json").read_text())
    assert manifest["dataset"] == params["dataset"]
    assert len(manifest["files"]) == params["max_files"]
    assert len(corpus) + len(corpus.skipped) == params["max_files"]
    assert set(corpus.splits) == {"train", "validation", "test"}
    assert corpus.n_notes > 100 * len(corpus) // 2

    # the table per split, written as it was shown
    summary = pd.read_csv(out / "summary.csv", index_col="split")
    assert list(summary.index) == ["train", "validation", "test"]
    assert summary["pieces"].sum() == len(corpus)
    assert summary["notes"].sum() == corpus.n_notes
    skipped = pd.read_csv(out / "skipped.csv")
    assert len(skipped) == len(corpus.skipped)

    # the pictures
    for name in ("piano_roll.png", "distributions.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name

    # the example written back as MIDI holds the notes of a corpus piece
    from musicrnn.notes import midi_to_notes

    example = midi_to_notes(out / "example.mid")
    assert list(example.columns) == list(NOTE_COLUMNS)
    lengths = set(corpus.lengths().tolist())
    assert len(example) in lengths


def test_notebook_02_said_what_it_did(smoke_run):
    nb = nbformat.read(smoke_run / "notebooks" / "02_extract_notes.ipynb", as_version=4)
    text, images, errors = [], 0, []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                text.append(output.text)
            elif output.output_type == "error":
                errors.append(output.ename)
            elif "image/png" in output.get("data", {}):
                images += 1
    text = "".join(text)
    assert not errors
    assert images >= 2  # the piano roll and the distributions
    # the second extraction was answered by the cache, and said so
    assert "from the cache" in text
    # the round trip through notes_to_midi reported sub-millisecond agreement
    line = next(t for t in text.splitlines() if "largest start difference" in t)
    assert float(line.split("difference")[1].split("ms")[0]) < 1.0
    assert np.isfinite(float(text.split("median duration")[1].split("s")[0]))

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
    # the report: what the listing left out (corpus files that are no chorale), then what failed
    left_out = [tuple(pair) for pair in manifest["left_out"]]
    assert corpus.skipped[:len(left_out)] == left_out
    assert len(corpus) + len(corpus.skipped) - len(left_out) == params["max_files"]
    assert manifest["sustain"] is False and not corpus.sustain  # the chorales have no pedal
    assert set(corpus.splits) == {"train", "validation", "test"}
    assert corpus.n_notes > 100 * len(corpus) // 2

    # the table per split, written as it was shown
    summary = pd.read_csv(out / "summary.csv", index_col="split")
    assert list(summary.index) == ["train", "validation", "test"]
    assert summary["pieces"].sum() == len(corpus)
    assert summary["notes"].sum() == corpus.n_notes
    skipped = pd.read_csv(out / "skipped.csv")
    assert len(skipped) == len(corpus.skipped)

    # the pictures (the pedal's only where a piece has pedal events; no chorale has)
    for name in ("piano_roll.png", "distributions.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    assert not (out / "pedal.png").exists()

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
    # the pedal section says why it shows nothing for the chorales
    assert "Durations:   how long each key was held" in text
    assert "No piece of bach-chorales has sustain pedal events" in text
    assert "sustain pedal applied: False" in text
    # the round trip through notes_to_midi reported sub-millisecond agreement
    line = next(t for t in text.splitlines() if "largest start difference" in t)
    assert float(line.split("difference")[1].split("ms")[0]) < 1.0
    assert np.isfinite(float(text.split("median duration")[1].split("s")[0]))


def pedal_section(path) -> str:
    """The code of notebook 02's section on the sustain pedal, in order."""
    nb = nbformat.read(path, as_version=4)
    start = next(i for i, c in enumerate(nb.cells)
                 if c.cell_type == "markdown" and c.source.startswith("## Compare key-up"))
    end = next(i for i in range(start + 1, len(nb.cells))
               if nb.cells[i].cell_type == "markdown" and nb.cells[i].source.startswith("## "))
    return "\n".join(c.source for c in nb.cells[start:end] if c.cell_type == "code")


def test_notebook_02_compares_key_up_and_sounding_durations_on_maestro(maestro_sample, tmp_path,
                                                                        capsys):
    """The pedal section's own code, run on the MAESTRO sample (the smoke run's chorales have no
    pedal): it finds a pedalled performance, says how much the pedal lengthens its notes, and
    draws both. Run in this process: the section needs no kernel, and a kernel costs seconds."""
    from pathlib import Path

    from musicrnn import datasets, notes, plots

    root = Path(__file__).resolve().parents[1]
    dataset = f"local:{maestro_sample}"
    files = datasets.download(dataset, max_files=4, progress=False)
    namespace = {"files": files, "dataset": dataset, "out_path": tmp_path, "notes": notes,
                 "plots": plots, "np": np}
    exec(compile(pedal_section(root / "notebooks" / "02_extract_notes.ipynb"), "pedal", "exec"),
         namespace)
    text = capsys.readouterr().out
    pedalled = namespace["pedalled"]
    before = files.files[:files.files.index(pedalled)]  # the first performance with a pedal
    assert len(notes.sustain_spans(pedalled.path)) and not any(
        len(notes.sustain_spans(f.path)) for f in before)
    key_up = notes.midi_to_notes(pedalled.path)
    sounding = notes.midi_to_notes(pedalled.path, sustain=True)
    share = float(np.mean(sounding["duration"] > key_up["duration"]))
    assert share > 0.5
    assert f"{share:.0%} of its {len(key_up)} notes sound longer than their key is held" in text
    assert f"{key_up['duration'].median():.3f} s key up" in text
    assert f"{sounding['duration'].median():.3f} s sounding" in text
    for name in ("pedal.png", "pedal_durations.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name

"""Notebook 07 (perform live), executed by papermill in the smoke run: with no MIDI system here,
it performs into the recorder for a few seconds at four times the tempo."""

from __future__ import annotations

import mido
import nbformat
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.notebook]


def test_notebook_07_records_a_live_performance(smoke_run):
    live_dir = smoke_run / "live"
    midi = mido.MidiFile(live_dir / "performance.mid")
    ons = [m for m in midi if m.type == "note_on" and m.velocity > 0]
    offs = [m for m in midi if m.type == "note_off"]
    assert len(ons) > 5 and len(ons) == len(offs)  # every note ended
    ccs = [m for m in midi if m.type == "control_change"]
    assert ccs and ccs[-1].control == 123  # all notes off at the end
    assert 1.0 < midi.length < 10.0  # smoke.yaml: 2 s at speed 4, plus the last note-offs
    png = (live_dir / "performance.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    executed = nbformat.read(smoke_run / "notebooks" / "07_perform_live.ipynb", as_version=4)
    text = "".join(
        o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "notes in" in text and "lateness median" in text  # the performer's report
    svgs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
            if "image/svg+xml" in o.get("data", {})]
    assert svgs, "the live piano roll was displayed"

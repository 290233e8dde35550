"""musicrnn.plots: each picture holds what it should (notes drawn, sets overlaid, curves) and saves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Polygon  # noqa: E402

from musicrnn import plots  # noqa: E402
from musicrnn.errors import MusicRNNError  # noqa: E402
from musicrnn.notes import NoteCorpus, midi_to_notes  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def performance(maestro_sample) -> pd.DataFrame:
    return midi_to_notes(sorted(maestro_sample.rglob("*.midi"))[3])


def bars(fig: Figure) -> dict[str, PolyCollection]:
    return {c.get_label(): c for ax in fig.axes for c in ax.collections
            if isinstance(c, PolyCollection)}


def saved_png(fig: Figure, path) -> bytes:
    out = plots.save_figure(fig, path)
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # nothing left behind
    return data


def test_piano_roll_draws_every_note(performance, tmp_path):
    fig = plots.piano_roll(performance, title="one performance")
    drawn = bars(fig)["notes"]
    assert len(drawn.get_paths()) == len(performance)
    ax = fig.axes[0]
    assert ax.get_title() == "one performance" and ax.get_xlabel() == "time (s)"
    # the bars sit where the notes are: first bar from the first note's start to its end
    first = drawn.get_paths()[0].vertices
    assert first[:, 0].min() == pytest.approx(performance["start"].iloc[0])
    assert first[:, 0].max() == pytest.approx(performance["end"].iloc[0])
    assert (first[:, 1].min() + first[:, 1].max()) / 2 == pytest.approx(performance["pitch"].iloc[0])
    assert ax.get_xlim()[1] == pytest.approx(performance["end"].max())
    assert any(label.get_text().startswith("C") for label in ax.get_yticklabels())
    saved_png(fig, tmp_path / "roll.png")


def test_piano_roll_of_raw_notes_with_a_primer(performance, tmp_path):
    primer = performance.iloc[:50]
    raw = performance[["pitch", "step", "duration"]].to_numpy()[50:130]
    fig = plots.piano_roll(raw, primer=primer)
    drawn = bars(fig)
    assert len(drawn["primer"].get_paths()) == 50
    assert len(drawn["generated"].get_paths()) == 80
    assert drawn["primer"].get_facecolor()[0].tolist() != drawn["generated"].get_facecolor()[0].tolist()
    # the continuation follows the primer by its steps: here it lands where the piece went on
    gen_first = drawn["generated"].get_paths()[0].vertices[:, 0].min()
    assert gen_first == pytest.approx(performance["start"].iloc[50])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["primer", "generated"]
    assert any(line.get_xdata()[0] == pytest.approx(gen_first) for line in ax.get_lines())
    saved_png(fig, tmp_path / "primed.png")


def colour_bars(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_ylabel() == "velocity"]


def test_piano_roll_colours_each_note_by_its_velocity(performance, tmp_path):
    from matplotlib import colormaps

    velocity = performance["velocity"].to_numpy()
    assert velocity.std() > 5  # a pianist's dynamics, read from the real performance
    fig = plots.piano_roll(performance)
    faces = bars(fig)["notes"].get_facecolor()
    assert len(faces) == len(performance)
    # one fixed scale (MIDI 1-127): the loudest note gets the top colour of the map, whatever
    # the piece, and louder notes sit further along the map than softer ones
    cmap = colormaps[plots.VELOCITY_CMAP]
    np.testing.assert_allclose(faces[:, :3], cmap((velocity - 1) / 126)[:, :3], atol=1e-6)
    loud, soft = int(np.argmax(velocity)), int(np.argmin(velocity))
    assert faces[loud].tolist() != faces[soft].tolist()
    assert len(colour_bars(fig)) == 1
    louder = performance.assign(velocity=np.clip(velocity + 40, 1, 127))
    assert saved_png(fig, tmp_path / "a" / "roll.png") != saved_png(
        plots.piano_roll(louder), tmp_path / "b" / "roll.png")
    again = saved_png(plots.piano_roll(performance), tmp_path / "c" / "roll.png")
    assert again == (tmp_path / "a" / "roll.png").read_bytes()  # the colours come from the notes


def test_piano_roll_of_raw_notes_with_and_without_velocity(performance):
    raw4 = performance[["pitch", "step", "duration", "velocity"]].to_numpy(dtype=np.float64)
    coloured = plots.piano_roll(raw4[:200])
    faces = bars(coloured)["notes"].get_facecolor()
    assert len({tuple(f) for f in faces}) > 5 and len(colour_bars(coloured)) == 1
    # the continuation of a primer is coloured by its velocities; the primer stays grey
    primed = bars(plots.piano_roll(raw4[50:130], primer=performance.iloc[:50]))
    assert len({tuple(f) for f in primed["generated"].get_facecolor()}) > 5
    assert len({tuple(f) for f in primed["primer"].get_facecolor()}) == 1
    # three columns, or colouring switched off: one colour, no colour bar
    for fig in (plots.piano_roll(raw4[:200, :3]), plots.piano_roll(raw4[:200], by_velocity=False),
                plots.piano_roll(performance.drop(columns="velocity").iloc[:200])):
        assert len({tuple(f) for f in bars(fig)["notes"].get_facecolor()}) == 1
        assert not colour_bars(fig) and len(fig.axes) == 1


def test_piano_roll_into_given_axes_and_window(performance):
    fig = Figure()
    ax = fig.subplots()
    assert plots.piano_roll(performance, ax=ax, max_seconds=10.0) is fig
    n_early = int((performance["start"] < 10.0).sum())
    assert len(bars(fig)["notes"].get_paths()) == n_early < len(performance)
    assert ax.get_xlim()[1] == pytest.approx(10.0)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 2)), "shape"),
    (pd.DataFrame({"pitch": [], "step": [], "duration": []}), "no notes"),
    (pd.DataFrame({"step": [0.0], "duration": [1.0]}), "pitch"),
    ("x.mid", "expected notes"),
])
def test_piano_roll_bad_input(bad, message):
    with pytest.raises(MusicRNNError, match=message):
        plots.piano_roll(bad)


def test_note_distributions_overlay_sets(maestro_sample, performance, tmp_path):
    files = sorted(maestro_sample.rglob("*.midi"))[:3]
    corpus = NoteCorpus.from_tables("maestro", [midi_to_notes(f) for f in files],
                                    [f.name for f in files], ["train"] * 3)
    generated = np.random.default_rng(0).random((2, 100, 3)) * [40, 0.3, 0.5] + [40, 0, 0.05]
    fig = plots.note_distributions({"training": corpus, "generated": generated})
    assert [ax.get_xlabel() for ax in fig.axes] == ["pitch (MIDI note)", "step (s)",
                                                    "duration (s)"]
    for ax in fig.axes:
        hists = [p for p in ax.patches if isinstance(p, Polygon)]
        assert len(hists) == 2  # one outline per set
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == [f"training ({corpus.n_notes:,})", "generated (200)"]
    # a density: the pitch histogram of the corpus integrates to one
    heights = fig.axes[0].patches[0].get_xy()[:, 1]
    assert heights.max() > 0
    saved_png(fig, tmp_path / "dist.png")

    # one set (a table), labels given; a list of sets
    one = plots.note_distributions(performance, labels=["a piece"])
    assert all(len(ax.patches) == 1 for ax in one.axes)
    three = plots.note_distributions([performance, corpus, generated[0]])
    assert all(len(ax.patches) == 3 for ax in three.axes)
    assert "set 3 (100)" in [t.get_text() for t in three.axes[0].get_legend().get_texts()]
    with pytest.raises(MusicRNNError, match="2 labels for 3 sets"):
        plots.note_distributions([performance, corpus, generated[0]], labels=["a", "b"])
    with pytest.raises(MusicRNNError):
        plots.note_distributions([{"nothing": 1}])


def test_note_distributions_hide_long_tails_and_say_so(performance):
    fig = plots.note_distributions(performance, quantile=0.9)
    step_title = fig.axes[1].get_title()
    assert "beyond" in step_title
    hidden = int(step_title.split("(")[1].split(" ")[0].replace(",", ""))
    top = np.quantile(performance["step"], 0.9)
    assert hidden == int((performance["step"] > top).sum()) > 0


def history_frame(epochs: int = 6) -> pd.DataFrame:
    e = np.arange(epochs)
    frame = pd.DataFrame({"epoch": e, "loss": 3.0 / (e + 1), "val_loss": 3.2 / (e + 1) + 0.05 * e})
    for head in ("pitch", "step", "duration"):
        frame[f"{head}_loss"] = 1.0 / (e + 1)
        frame[f"val_{head}_loss"] = 1.1 / (e + 1)
    return frame


def test_training_curves_from_csv(tmp_path):
    frame = history_frame()
    csv = tmp_path / "history.csv"
    frame.to_csv(csv, index=False)
    fig = plots.training_curves(csv, title="run 1")
    total, heads = fig.axes
    assert [line.get_label() for line in total.get_lines()] == ["loss", "val_loss"]
    assert len(heads.get_lines()) == 6
    assert {line.get_label() for line in heads.get_lines()} == {
        "pitch_loss", "val_pitch_loss", "step_loss", "val_step_loss", "duration_loss",
        "val_duration_loss"}
    np.testing.assert_array_equal(total.get_lines()[0].get_xdata(), frame["epoch"] + 1)
    best = int(frame["val_loss"].idxmin()) + 1
    assert f"best: epoch {best}" in [t.get_text() for t in total.get_legend().get_texts()]
    assert fig._suptitle.get_text() == "run 1"
    saved_png(fig, tmp_path / "out" / "loss_curves.png")


def test_training_curves_from_frame_or_dict_and_errors(tmp_path):
    fig = plots.training_curves({"loss": [2.0, 1.0, 0.5]})
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["loss"]
    assert len(fig.axes[1].get_lines()) == 0
    with pytest.raises(MusicRNNError, match="no training history"):
        plots.training_curves(tmp_path / "missing.csv")
    with pytest.raises(MusicRNNError, match="no loss columns"):
        plots.training_curves(pd.DataFrame({"epoch": [0, 1], "accuracy": [0.1, 0.2]}))


def test_new_figures_show_themselves_in_notebooks(performance):
    """Figures made here render as PNG through IPython's display protocol, pyplot or not."""
    fig = plots.piano_roll(performance.iloc[:20])
    assert isinstance(fig, Figure)
    assert fig._repr_png_().startswith(PNG_MAGIC)

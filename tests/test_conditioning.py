"""Style control (issue 13): a style label read beside every note, the sampler's styles and
guidance, the live style control, and one conditioned model trained on a real mixture of
chorales and folk songs, from the command line to its held-out scores."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from musicrnn.errors import MusicRNNError
from musicrnn.generation import NoteRNN, NoteTransformer, Sampler, note_network
from musicrnn.model import (
    build_model, get_preset, infer_config, load_model, model_inputs, save_model, style_layer,
)

STYLES = ["bach-chorales", "essen-folksongs"]
TOY = {"v4": dict(lstm_units=[24, 16], pitch_embedding_dim=8, seq_length=12, style_dim=6),
       "v6": dict(model_dim=16, attention_heads=2, ff_dim=32, seq_length=12)}


def _primer(length: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(50, 80, length), rng.exponential(0.3, length),
                     rng.exponential(0.3, length)], axis=1).astype(np.float32)


def _toy(preset: str):
    """A conditioned toy model whose style vectors are large enough to change every head."""
    config = get_preset(preset, condition="dataset", styles=STYLES, **TOY[preset])
    model = build_model(config)
    table = style_layer(model).table.embeddings
    table.assign(np.random.default_rng(1).normal(0, 2, table.shape).astype("float32"))
    return model, config


@pytest.fixture(scope="module", params=["v4", "v6"])
def toy(request):
    return _toy(request.param)


def test_the_label_changes_predictions_and_survives_saving(toy, tmp_path):
    model, config = toy
    notes = np.repeat(_primer()[None], 3, axis=0)
    if config.velocity != "none":
        notes = np.concatenate([notes, np.full((3, 10, 1), 64.0, np.float32)], axis=-1)
    out = model(model_inputs(model, notes, [0, 1, 2]))["pitch"].numpy()
    assert np.abs(out[0] - out[1]).max() > 1e-2 and np.abs(out[1] - out[2]).max() > 1e-2
    path = save_model(model, tmp_path / "m.keras")
    loaded = load_model(path)
    again = loaded(model_inputs(loaded, notes, [0, 1, 2]))["pitch"].numpy()
    assert np.allclose(out, again, atol=1e-5)
    inferred = infer_config(loaded)
    assert inferred.condition == "dataset" and len(inferred.styles) == 2


def test_the_numpy_network_reads_each_streams_label_as_keras_does(toy):
    model, config = toy
    net = note_network(model, config)
    assert isinstance(net, NoteTransformer if config.architecture == "transformer" else NoteRNN)
    assert net.num_styles == 3
    # random notes and a random label per stream; 16+ streams also take the exp layout
    assert net.check_against(model, batch=3) < 1e-3


def test_guidance_mixes_the_styled_and_the_none_logits(toy):
    model, config = toy
    primer = _primer()
    heads = {}
    for label in (0, 2):
        sampler = Sampler(model, config=config, seed=0, style=label)
        heads[label] = sampler.prime(primer)._heads.copy()
    guided = Sampler(model, config=config, seed=0, style="Essen-Folksongs", guidance=2.5)
    expected = heads[0] + 2.5 * (heads[2] - heads[0])
    assert np.allclose(guided.prime(primer)._heads, expected, atol=1e-4)
    # one guidance per stream: each stream mixes its own
    per_stream = Sampler(model, config=config, seed=0, batch_size=2, style=2,
                         guidance=[1.0, 2.5]).prime(primer)
    assert np.allclose(per_stream._heads[0], heads[2][0], atol=1e-4)
    assert np.allclose(per_stream._heads[1], expected[0], atol=1e-4)
    with pytest.raises(MusicRNNError, match="one per stream"):
        Sampler(model, config=config, batch_size=2, style=2, guidance=[1.0])
    # guidance 0 is the unconditioned model; guidance 1 with twins is plain conditioning
    none = Sampler(model, config=config, seed=0, style=2, guidance=0.0).prime(primer)
    assert np.allclose(none._heads, heads[0], atol=1e-5)
    twins = Sampler(model, config=config, seed=0, style=2, twins=True).prime(primer)
    assert np.allclose(twins._heads, heads[2], atol=1e-5)
    twins.set_guidance(2.5)
    twins.prime(primer)
    assert np.allclose(twins._heads, expected, atol=1e-4)


def test_a_batch_mixes_styles_and_a_style_changes_mid_piece(toy):
    model, config = toy
    primer = _primer()
    mixed = Sampler(model, config=config, seed=3, batch_size=3, style=["none", *STYLES])
    mixed.prime(primer)
    for row, label in enumerate((0, 1, 2)):
        alone = Sampler(model, config=config, seed=3, style=label).prime(primer)
        assert np.allclose(mixed._heads[row], alone._heads[0], atol=1e-4)
    mixed.set_style("bach-chorales", streams=[0])  # one stream switches, the others keep theirs
    assert mixed.style_names() == ["bach-chorales", *STYLES]
    # a switch takes effect at the next note: the same notes fed after it as a fresh sampler
    # that read the primer in style 1 and the rest in style 2
    first = Sampler(model, config=config, seed=4, style=1).prime(primer)
    notes = first.sample(6)[0]
    first.set_style(2)
    first.feed(notes[:3])
    manual = Sampler(model, config=config, seed=4, style=1).prime(primer)
    manual.feed(notes)
    assert not np.allclose(first._heads, manual._heads, atol=1e-3)
    reference = Sampler(model, config=config, seed=4, style=1).prime(primer)
    reference.feed(notes[:6])
    reference.set_style(2)
    reference.feed(notes[:3])
    assert np.allclose(first._heads, reference._heads, atol=1e-4)
    # a morph half-way is the mean of the two vectors
    morph = Sampler(model, config=config, seed=5, style=1)
    morph.morph("bach-chorales", "essen-folksongs", 0.5)
    assert morph.style_names() == ["50% bach-chorales, 50% essen-folksongs"]
    assert morph.prime(primer).sample(4).shape[:2] == (1, 4)


def test_bad_styles_and_guidance_are_one_line_errors(toy):
    model, config = toy
    with pytest.raises(MusicRNNError, match="unknown style 'jazz'; this model knows: none, "
                                            "bach-chorales, essen-folksongs"):
        Sampler(model, config=config, style="jazz")
    for bad in (-1.0, float("nan"), "fast", True):
        with pytest.raises(MusicRNNError, match="guidance must be"):
            Sampler(model, config=config, style=1, guidance=bad)
    with pytest.raises(MusicRNNError, match="one style per stream"):
        Sampler(model, config=config, batch_size=2, style=["none"])
    with pytest.raises(MusicRNNError, match="morph amount"):
        Sampler(model, config=config).morph(1, 2, 1.5)
    # a conditioned model sampled without a style plays "none"
    assert Sampler(model, config=config).style_names() == ["none"]


def test_a_model_without_styles_refuses_one():
    config = get_preset("v4", **{k: v for k, v in TOY["v4"].items() if k != "style_dim"})
    model = build_model(config)
    with pytest.raises(MusicRNNError, match="trained without styles"):
        Sampler(model, config=config, style="bach-chorales")
    assert Sampler(model, config=config, style="none").styles == ()


def test_config_refuses_impossible_conditioning():
    for changes, message in [
        ({"condition": "genre"}, "condition must be one of none, dataset, composer"),
        ({"styles": ["a", "b"]}, "condition is 'none'"),
        ({"condition": "dataset", "styles": ["a", "A"]}, "distinct"),
        ({"condition": "dataset", "styles": ["none", "b"]}, "distinct"),
        ({"condition": "dataset", "label_dropout": 1.0}, "label_dropout"),
        ({"condition": "dataset", "max_styles": 1}, "max_styles"),
    ]:
        with pytest.raises(MusicRNNError, match=message):
            get_preset("v4", **changes)
    with pytest.raises(MusicRNNError, match="at least two styles"):
        build_model(get_preset("v4", condition="dataset", styles=["a"]))


def test_the_live_style_control_switches_and_morphs(toy):
    from musicrnn.live import LiveControls, SamplerSource

    model, config = toy
    sampler = Sampler(model, config=config, seed=0, style=1, twins=True)
    source = SamplerSource(sampler, _primer())
    controls = LiveControls()
    source(controls.snapshot())
    assert sampler.style_names() == ["bach-chorales"]
    source(controls.set(style=2.0))
    assert sampler.style_names() == ["essen-folksongs"]
    source(controls.set(style=1.25, guidance=3.0))
    assert sampler.style_names() == ["75% bach-chorales, 25% essen-folksongs"]
    assert sampler.guidance == 3.0
    with pytest.raises(MusicRNNError, match="guidance must be >= 0"):
        controls.set(guidance=-1)


# -- one conditioned model, trained from the command line on a real mixture --------------------

MIXTURE = "bach-chorales+essen-folksongs"


@pytest.fixture(scope="module")
def conditioned_run(tmp_path_factory, chorale_data):
    """``musicrnn train --condition dataset`` on 6 chorales + 6 folk songs, one pass of a toy
    v4 (``--set`` makes it small)."""
    run_dir = tmp_path_factory.mktemp("conditioned") / "run"
    data_dir = chorale_data["data_dir"]
    done = subprocess.run(
        [sys.executable, "-m", "musicrnn.cli", "train", "--preset", "v4", "--dataset", MIXTURE,
         "--condition", "dataset", "--max-files", "6", "--epochs", "1", "--run-dir",
         str(run_dir), "--data-dir", str(data_dir), "--quiet", "--set", "lstm_units=[32]",
         "--set", "pitch_embedding_dim=8", "--set", "seq_length=24"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return {"run_dir": run_dir, "data_dir": data_dir, "stdout": done.stdout}


def _cli(capsys, *argv):
    from musicrnn.cli import main

    status = main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_a_trained_mixture_knows_its_styles(conditioned_run, capsys):
    info = json.loads((conditioned_run["run_dir"] / "config.json").read_text())
    assert info["model"]["condition"] == "dataset"
    assert info["model"]["styles"] == STYLES
    status, out, _ = _cli(capsys, "styles", "--run-dir", conditioned_run["run_dir"])
    assert status == 0 and out.split() == STYLES
    # training said how many pieces of each style hold a 25-note window (folk songs are short)
    shown = conditioned_run["stdout"]
    assert "style bach-chorales: " in shown and "style essen-folksongs: " in shown


def test_generate_in_a_style_with_guidance(conditioned_run, capsys, tmp_path):
    out = tmp_path / "folk.mid"
    status, printed, err = _cli(capsys, "generate", "--run-dir", conditioned_run["run_dir"],
                                "--style", "essen-folksongs", "--guidance", "2",
                                "--num-notes", "30", "--batch", "2", "--seed", "1", "--out", out)
    assert status == 0, err
    assert (tmp_path / "folk-1.mid").is_file() and (tmp_path / "folk-2.mid").is_file()
    assert "Style: essen-folksongs, guidance 2" in printed
    for argv, message in [
        (["--style", "jazz"], "unknown style 'jazz'; this model knows: none, bach-chorales, "
                              "essen-folksongs"),
        (["--style", "none", "--guidance", "-1"], "guidance must be"),
        (["--guidance", "strong"], "guidance must be a number"),
        (["--style", "none,jazz", "--batch", "3"], "--style gives 2 styles for --batch 3"),
    ]:
        bad = tmp_path / "bad.mid"
        status, _, err = _cli(capsys, "generate", "--run-dir", conditioned_run["run_dir"],
                              "--num-notes", "5", "--out", bad, *argv)
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not list(tmp_path.glob("bad*"))


def test_conditioning_that_cannot_be_is_refused(chorale_data, capsys, tmp_path):
    data = chorale_data["data_dir"]
    for dataset, condition, message in [
        ("bach-chorales", "composer", "no composer metadata"),
        ("bach-chorales", "dataset", "conditioning needs at least two styles"),
        ("bach-chorales+no-such-data", "dataset", "unknown dataset 'no-such-data'"),
    ]:
        status, _, err = _cli(capsys, "train", "--preset", "v4", "--dataset", dataset,
                              "--condition", condition, "--max-files", "8", "--epochs", "1",
                              "--data-dir", data, "--run-dir", tmp_path / "run", "--quiet")
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "run" / "music_rnn_model.keras").exists()


def test_scores_with_the_true_the_none_and_a_wrong_label(conditioned_run):
    from musicrnn.evaluation import style_report, wrong_labels
    from musicrnn.model import load_run
    from musicrnn.notes import load_corpus

    assert wrong_labels(np.array([0, 1, 2]), 2).tolist() == [1, 2, 1]
    run = load_run(conditioned_run["run_dir"])
    corpus = load_corpus(MIXTURE, data_dir=conditioned_run["data_dir"], max_files=6)
    assert run.config.lstm_units == (32,) and run.config.seq_length == 24  # --set reached it
    report = style_report(run.model, corpus, run.config, split="validation", seq_length=24,
                          guidances=(1.0, 2.0), num_samples=4, num_notes=24, min_position=24)
    for kind in ("true", "none", "wrong"):
        assert np.isfinite(report[f"nll_{kind}_label"])
    # the labels reach the scores: a wrong label reads the pieces differently
    assert report["nll_true_label"] != report["nll_wrong_label"]
    assert report["style_accuracy_real"] >= 0.9  # chorales and folk songs are easy to tell
    tried = [float(g) for g in report["style_accuracy_by_guidance"]]
    assert tried[:2] == [1.0, 2.0] and tried[2:] == report["guidances_added"]
    best = report["best_guidance"]
    assert report["style_accuracy_generated_best"] == max(
        report["style_accuracy_by_guidance"].values())
    # the best is never the top of the grid while steps past it were left to try
    assert best < max(tried) or len(report["guidances_added"]) == 2
    assert 0.0 <= report["style_accuracy_generated"] <= 1.0


def test_evaluate_reports_the_labels_and_the_style_accuracy(conditioned_run, capsys):
    run_dir = conditioned_run["run_dir"]
    status, out, err = _cli(capsys, "evaluate", "--run-dir", run_dir, "--data-dir",
                            conditioned_run["data_dir"], "--temperatures", "1.0",
                            "--num-samples", "4", "--num-notes", "24", "--max-positions", "300",
                            "--split", "validation")
    assert status == 0, err
    assert "styles (dataset): NLL per note with the true label" in out
    metrics = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    for key in ("style_accuracy_real", "style_accuracy_generated",
                "style_accuracy_generated_best", "nll_true_label", "nll_none_label",
                "nll_wrong_label"):
        assert key in metrics and metrics[key] is not None, key

"""Style vocabularies and labels (dataset, composer) and the style classifier (issue 13).

Vocabulary rules are checked on small corpora made by hand, where the numbers that decide them
are plain to see, and on real data: MAESTRO's shared-composer rows (the shared sample; skipped
when absent), and real chorales against real folk songs for the classifier.
"""

from __future__ import annotations

import numpy as np
import pytest

from musicrnn.errors import MusicRNNError
from musicrnn.notes import NOTE_COLUMNS, NoteCorpus, load_corpus
from musicrnn.styles import (
    CONDITIONS,
    StyleClassifier,
    piece_styles,
    style_index,
    style_labels,
    style_vocabulary,
    supported_conditions,
)

PARTS = ("bach-chorales", "essen-folksongs")


def corpus_of(pieces: list[tuple[str, str, int]], key: str = "canonical_composer",
              dataset: str = "maestro-v2") -> NoteCorpus:
    """A corpus of pieces ``(metadata value, split, notes)``: each a rising scale."""
    lengths = [n for _, _, n in pieces]
    total = sum(lengths)
    start = np.arange(total) * 0.5
    columns = {"pitch": 60 + np.arange(total) % 12, "step": np.full(total, 0.5),
               "duration": np.full(total, 0.4), "start": start, "end": start + 0.4,
               "velocity": np.full(total, 64)}
    assert set(columns) == set(NOTE_COLUMNS)
    return NoteCorpus(dataset=dataset, names=[f"piece{i}.mid" for i in range(len(pieces))],
                      splits=[s for _, s, _ in pieces],
                      offsets=np.concatenate([[0], np.cumsum(lengths)]), columns=columns,
                      metadata={key: [v for v, _, _ in pieces]})


def merged(parts: list[tuple[str, NoteCorpus]]) -> NoteCorpus:
    """Several corpora as one, each piece's dataset in ``metadata["dataset"]``: a mixture's
    corpus, merged by hand."""
    return NoteCorpus(
        dataset="+".join(name for name, _ in parts),
        names=np.concatenate([c.names for _, c in parts]),
        splits=np.concatenate([c.splits for _, c in parts]),
        offsets=np.concatenate([[0], np.cumsum(np.concatenate([c.lengths()
                                                                for _, c in parts]))]),
        columns={k: np.concatenate([c.columns[k] for _, c in parts]) for k in NOTE_COLUMNS},
        metadata={"dataset": np.concatenate([np.full(len(c), name) for name, c in parts])},
    )


@pytest.fixture(scope="module")
def chorales_and_folk(tmp_path_factory, chorale_data) -> dict[str, NoteCorpus]:
    """Real Bach chorales (the 8 of ``chorale_data``) and about 50 real Essen folk songs
    (music21's corpus, offline), each dataset with its own train/validation/test pieces."""
    data = tmp_path_factory.mktemp("folk-data")
    return {"bach-chorales": chorale_data["corpus"],
            "essen-folksongs": load_corpus("essen-folksongs", data_dir=data, max_files=60)}


@pytest.fixture(scope="module")
def mixture(chorales_and_folk) -> NoteCorpus:
    return merged([(name, chorales_and_folk[name]) for name in PARTS])


# -- vocabularies and labels ----------------------------------------------------------------------


def test_dataset_styles_come_in_the_mixtures_order_and_label_every_piece(mixture,
                                                                          chorales_and_folk):
    chorales, folk = (chorales_and_folk[name] for name in PARTS)
    assert supported_conditions(mixture) == ("none", "dataset")
    assert style_vocabulary(mixture, "dataset") == PARTS
    labels = piece_styles(mixture, "dataset", PARTS)
    assert labels.dtype == np.int32
    assert labels.tolist() == [1] * len(chorales) + [2] * len(folk)
    # the order the mixture names its parts, not the alphabet's
    backwards = merged([("essen-folksongs", folk), ("bach-chorales", chorales)])
    assert style_vocabulary(backwards, "dataset") == PARTS[::-1]
    # a corpus of one dataset (no "dataset" metadata) is labelled by its own name
    assert piece_styles(folk, "dataset", PARTS).tolist() == [2] * len(folk)
    assert piece_styles(folk, "dataset", ("x", "y")).tolist() == [0] * len(folk)
    assert piece_styles(mixture, "none", ()).tolist() == [0] * len(mixture)
    assert style_vocabulary(mixture, "none") == ()


def test_composers_rank_by_training_notes_and_the_rest_share_other():
    corpus = corpus_of([
        ("Chopin", "train", 30), ("Chopin", "train", 30),   # 60 notes in two pieces
        ("Bach", "train", 70),                              # 70 notes in one: first
        ("Liszt", "train", 20), ("Liszt", "validation", 500),  # validation notes never count
        ("Haydn", "train", 10),
        ("Mozart", "validation", 40),                       # only held out
    ])
    assert style_vocabulary(corpus, "composer") == ("Bach", "Chopin", "Liszt", "Haydn")
    assert style_vocabulary(corpus, "composer", max_styles=4) == ("Bach", "Chopin", "Liszt",
                                                                   "Haydn")
    assert style_vocabulary(corpus, "composer", max_styles=3) == ("Bach", "Chopin", "other")
    labels = piece_styles(corpus, "composer", ("Bach", "Chopin", "other"))
    assert labels.tolist() == [2, 2, 1, 3, 3, 3, 3]
    # every composer fits: no "other", and a composer held out only is "none"
    labels = piece_styles(corpus, "composer", ("Bach", "Chopin", "Liszt", "Haydn"))
    assert labels.tolist() == [2, 2, 1, 3, 3, 4, 0]
    # ties by name
    tied = corpus_of([("Schumann", "train", 5), ("Brahms", "train", 5)])
    assert style_vocabulary(tied, "composer") == ("Brahms", "Schumann")


def test_shared_composers_go_to_other_and_never_rank():
    corpus = corpus_of([
        ("Franz Schubert / Franz Liszt", "train", 1000),  # the most notes, but shared
        ("Franz Schubert", "train", 30),
        ("Franz Liszt", "train", 20),
        ("", "train", 50),                                # no composer: "none"
        ("Johann Sebastian Bach / Ferruccio Busoni", "validation", 10),
    ])
    styles = style_vocabulary(corpus, "composer")
    assert styles == ("Franz Schubert", "Franz Liszt", "other")  # all fit, "other" for the pair
    assert piece_styles(corpus, "composer", styles).tolist() == [3, 1, 2, 0, 3]
    # without "other" in the vocabulary a shared piece has no style
    assert piece_styles(corpus, "composer", ("Franz Schubert", "Franz Liszt")).tolist() == [
        0, 1, 2, 0, 0]
    # two composers of their own and a shared one: max_styles=2 keeps one composer and "other"
    assert style_vocabulary(corpus, "composer", max_styles=2) == ("Franz Schubert", "other")


def test_maestro_composers_with_shared_rows(maestro_sample, tmp_path):
    corpus = load_corpus(f"local:{maestro_sample}", data_dir=tmp_path)
    assert "composer" in supported_conditions(corpus)
    styles = style_vocabulary(corpus, "composer")
    assert len(styles) == 8 and styles[-1] == "other"
    assert styles[:3] == ("Franz Schubert", "Franz Liszt", "Frédéric Chopin")
    assert not any("/" in s for s in styles)
    composers = corpus.metadata["canonical_composer"]
    labels = piece_styles(corpus, "composer", styles)
    shared = np.char.find(composers, " / ") >= 0
    assert shared.any() and set(labels[shared]) == {8}  # e.g. "Franz Schubert / Leopold Godowsky"
    for i in np.flatnonzero(~shared):
        assert labels[i] == (styles.index(composers[i]) + 1 if composers[i] in styles else 8)


def test_style_names_and_condition_errors(chorale_data):
    chorales = chorale_data["corpus"]
    assert CONDITIONS == ("none", "dataset", "composer")
    assert "composer" in chorales.metadata and "canonical_composer" not in chorales.metadata
    assert supported_conditions(chorales) == ("none",)
    with pytest.raises(MusicRNNError) as caught:
        style_vocabulary(chorales, "composer")
    message = str(caught.value)
    assert "\n" not in message
    assert message == ("bach-chorales has no composer metadata (MAESTRO's canonical_composer); "
                       "the conditions it supports: none")
    with pytest.raises(MusicRNNError, match="no composer metadata"):
        piece_styles(chorales, "composer", ("a", "b"))
    with pytest.raises(MusicRNNError, match=r"^conditioning needs at least two styles; "
                                            r"bach-chorales has 1 .*\(bach-chorales\)"):
        style_vocabulary(chorales, "dataset")
    one = corpus_of([("Chopin", "train", 5), ("Chopin / Liszt", "validation", 5)])
    with pytest.raises(MusicRNNError, match="at least two styles"):
        style_vocabulary(one, "composer")
    with pytest.raises(MusicRNNError, match="unknown condition 'genre'; choose one of none, "
                                            "dataset, composer"):
        style_vocabulary(chorales, "genre")
    with pytest.raises(MusicRNNError, match="unknown condition"):
        piece_styles(chorales, "Dataset", ())
    with pytest.raises(MusicRNNError, match="max_styles must be a whole number of 2 or more"):
        style_vocabulary(chorales, "composer", max_styles=1)
    many = corpus_of([(f"d{i}", "train", 3) for i in range(3)], key="dataset")
    with pytest.raises(MusicRNNError, match="mixes 3 datasets, more than max_styles=2"):
        style_vocabulary(many, "dataset", max_styles=2)

    assert style_labels(PARTS) == ("none", *PARTS) == style_labels(("none", *PARTS))
    assert [style_index(PARTS, n) for n in ("none", "Bach-Chorales", " essen-folksongs ")] == [
        0, 1, 2]
    assert style_index(("none", *PARTS), "essen-folksongs") == 2
    assert style_index(PARTS, None) == 0 and style_index(PARTS, 2) == 2
    with pytest.raises(MusicRNNError) as caught:
        style_index(PARTS, "x")
    assert str(caught.value) == ("unknown style 'x'; this model knows: none, bach-chorales, "
                                 "essen-folksongs")
    with pytest.raises(MusicRNNError, match="unknown style 3"):
        style_index(PARTS, 3)


# -- the classifier -------------------------------------------------------------------------------


def held_out(corpus: NoteCorpus) -> list[int]:
    return [int(i) for split in ("validation", "test") for i in corpus.indices(split)]


def test_classifier_tells_real_chorales_from_real_folk_songs(mixture, chorales_and_folk):
    labels = piece_styles(mixture, "dataset", PARTS)
    classifier = StyleClassifier().fit(mixture, labels, PARTS)  # training pieces only
    assert classifier.styles == PARTS
    pieces = held_out(mixture)
    notes = [mixture.features(i) for i in pieces]
    truth = labels[pieces]
    assert set(truth) == {1, 2} and len(pieces) >= 10
    predicted, scores = classifier.classify(notes)
    assert scores.shape == (len(pieces), 2) and np.isfinite(scores).all()
    assert predicted.dtype == np.int32
    for style in (1, 2):  # each style on its own: calling everything a folk song fails
        assert np.mean(predicted[truth == style] == style) >= 0.95, PARTS[style - 1]
    assert classifier.accuracy(notes, truth) >= 0.95
    # 16-note excerpts of the held-out pieces too (what short generated pieces look like)
    excerpts = [(n[a:a + 16], t) for n, t in zip(notes, truth)
                for a in range(0, len(n) - 15, 16)]
    for style in (1, 2):
        mine = [e for e, t in excerpts if t == style]
        assert len(mine) >= 15
        assert classifier.accuracy(mine, [style] * len(mine)) >= 0.9, PARTS[style - 1]
    # swapped labels learn the opposite: the classifier reads the music, not the order
    swapped = StyleClassifier().fit(mixture, 3 - labels, PARTS)
    assert swapped.accuracy(notes, truth) <= 0.05
    # the two corpora classified apart give the same answers as the mixture
    for style, name in enumerate(PARTS, start=1):
        alone = chorales_and_folk[name]
        predicted, _ = classifier.classify([alone.features(i) for i in held_out(alone)])
        assert np.mean(predicted == style) >= 0.95


def test_short_pieces_velocity_and_every_input_form(mixture):
    labels = piece_styles(mixture, "dataset", PARTS)
    classifier = StyleClassifier().fit(mixture, labels, PARTS)
    chorale = mixture.features(int(held_out(mixture)[0]))
    empty = np.zeros((0, 3))
    predicted, scores = classifier.classify([empty, chorale[:1], chorale[:2], chorale[:10]])
    assert predicted[0] == 0 and (scores[0] == 0).all()  # no notes: no evidence, "none"
    assert predicted[1] in (1, 2) and np.isfinite(scores[1]).all() and (scores[1] < 0).all()
    assert predicted[3] == 1
    # only intervals read: one note gives nothing to read either
    intervals = StyleClassifier(features=("interval",)).fit(mixture, labels, PARTS)
    assert intervals.classify([chorale[:1], chorale[:10]])[0].tolist() == [0, 1]
    # "none" pieces are not scored; a batch array, a corpus and a velocity column all work
    assert classifier.accuracy([empty, chorale], [0, 1]) == 1.0
    with pytest.raises(MusicRNNError, match="no piece has a style to score"):
        classifier.accuracy([chorale], [0])
    with_velocity = np.column_stack([chorale, np.full(len(chorale), 90.0)])
    np.testing.assert_array_equal(classifier.log_likelihoods([with_velocity]),
                                  classifier.log_likelihoods([chorale]))
    batch = np.stack([chorale[:12], chorale[12:24]])
    assert classifier.classify(batch)[0].tolist() == [1, 1]
    assert classifier.classify(chorale)[0].tolist() == [1]  # one array is one piece
    assert len(classifier.classify(mixture)[0]) == len(mixture)
    assert classifier.classify([])[0].shape == (0,)


def test_classifier_saves_and_loads_without_pickles(mixture, tmp_path):
    labels = piece_styles(mixture, "dataset", PARTS)
    classifier = StyleClassifier(order=3, smoothing=0.5).fit(mixture, labels, PARTS)
    path = classifier.save(tmp_path / "styles" / "classifier.npz")
    assert [p.name for p in path.parent.iterdir()] == ["classifier.npz"]  # no temporary left
    again = StyleClassifier.load(path)
    assert (again.styles, again.features, again.order, again.smoothing) == (
        PARTS, classifier.features, 3, 0.5)
    notes = [mixture.features(i) for i in held_out(mixture)]
    np.testing.assert_array_equal(again.log_likelihoods(notes), classifier.log_likelihoods(notes))
    with np.load(path, allow_pickle=False) as z:
        assert not any(z[k].dtype.hasobject for k in z.files)
    path.write_bytes(b"not a zip")
    with pytest.raises(MusicRNNError, match="unreadable .*; fit and save it again"):
        StyleClassifier.load(path)
    with pytest.raises(MusicRNNError, match="no style classifier at"):
        StyleClassifier.load(tmp_path / "missing.npz")


def test_classifier_refuses_bad_input(mixture):
    labels = piece_styles(mixture, "dataset", PARTS)
    with pytest.raises(MusicRNNError, match="not fitted"):
        StyleClassifier().classify([mixture.features(0)])
    with pytest.raises(MusicRNNError, match="unknown classifier features \\['pitch'\\]"):
        StyleClassifier(features=("pitch",))
    with pytest.raises(MusicRNNError, match="order must be 1 to 4"):
        StyleClassifier(order=5)
    with pytest.raises(MusicRNNError, match="smoothing must be a number > 0"):
        StyleClassifier(smoothing=0)
    with pytest.raises(MusicRNNError, match="one label per piece"):
        StyleClassifier().fit(mixture, labels[:-1], PARTS)
    with pytest.raises(MusicRNNError, match="whole numbers 0-2"):
        StyleClassifier().fit(mixture, labels + 1, PARTS)
    chorales_only = np.where(labels == 1, 1, 0)
    with pytest.raises(MusicRNNError, match="no training notes of the style\\(s\\) "
                                            "essen-folksongs"):
        StyleClassifier().fit(mixture, chorales_only, PARTS)
    fitted = StyleClassifier().fit(mixture, labels, PARTS)
    with pytest.raises(MusicRNNError, match="pitches must be whole MIDI numbers"):
        fitted.classify([np.array([[60.5, 0.0, 0.5]])])
    with pytest.raises(MusicRNNError, match="one label per piece"):
        fitted.accuracy([mixture.features(0)], [1, 2])


def test_a_mix_is_named_by_its_shares_in_the_sampler_and_the_live_panel():
    from musicrnn.live import style_mix_name
    from musicrnn.styles import mix_name

    names = ("none", "bach-chorales", "essen-folksongs")
    assert mix_name(names, [0, 1, 0]) == "bach-chorales"
    assert mix_name(names, [0, 0.7, 0.3]) == "70% bach-chorales, 30% essen-folksongs"
    assert style_mix_name(names, 1.3) == "70% bach-chorales, 30% essen-folksongs"
    assert style_mix_name(names, 2.0) == "essen-folksongs"
    assert style_mix_name(names, 9.0) == "essen-folksongs"  # clamped to the last style

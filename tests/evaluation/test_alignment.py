"""The alignment probe's measures (``study.evaluation.alignment``) on hand-made embeddings."""

import numpy as np
import pytest
from helpers import FIXTURES

from study.core.errors import StudyError
from study.data.tasks import TASKS
from study.evaluation import alignment
from study.evaluation.probe import figure_languages, probe_data, probe_layers, run_probe
from study.evaluation.scoring import evaluate
from study.models.registry import load_model, load_tokenizer


def _rotation(d: int, angle: float) -> np.ndarray:
    """A rotation by ``angle`` in the planes (0, 1), (2, 3), ... of a d-dimensional space."""
    rotation = np.eye(d)
    for i in range(0, d - 1, 2):
        c, s = np.cos(angle), np.sin(angle)
        rotation[i:i + 2, i:i + 2] = [[c, -s], [s, c]]
    return rotation


@pytest.fixture
def english():
    rng = np.random.default_rng(0)
    return rng.normal(size=(12, 6)) + 4.0  # an offset every sentence shares, as in a real encoder


def test_hand_computed_pair():
    english = np.array([[1.0, 0.0], [-1.0, 0.0]])
    target = english + [0.0, 2.0]
    result = alignment.align(target, english)
    assert result.centroid_distance == pytest.approx(2.0)
    # pooled mean (0, 1); every centred row has squared length 2, so the spread is sqrt(2): 2 / sqrt(2)
    assert result.centred_distance == pytest.approx(np.sqrt(2))
    assert (result.xx_to_en, result.en_to_xx, result.sentences) == (1.0, 1.0, 2)


def test_retrieval_units_per_sentence_both_directions():
    english = np.array([[1.0, 0.0], [0.0, 1.0]])
    target = np.array([[1.0, 0.0], [1.0, 0.1]])  # the second target sentence is nearer English 0 than English 1
    result = alignment.align(target, english)
    assert result.units == {"xx_to_en": [[1.0, 1.0], [0.0, 1.0]], "en_to_xx": [[1.0, 1.0], [1.0, 1.0]]}
    assert (result.xx_to_en, result.en_to_xx) == (0.5, 1.0)


def test_rotated_copy_retrieves_perfectly_at_centred_distance_zero(english):
    centre = english.mean(axis=0)
    target = centre + (english - centre) @ _rotation(6, 0.2)  # English's cloud turned about its centre
    result = alignment.align(target, english)
    assert (result.xx_to_en, result.en_to_xx) == (1.0, 1.0)
    assert result.centred_distance == pytest.approx(0.0, abs=1e-12)
    assert result.centroid_distance == pytest.approx(0.0, abs=1e-12)
    # a larger turn still leaves the centroids together, but retrieval sees it: centroid distance cannot
    far = alignment.align(centre + (english - centre) @ _rotation(6, 2.5), english)
    assert far.centred_distance == pytest.approx(0.0, abs=1e-12) and far.xx_to_en < 1.0


def test_a_shift_of_every_language_leaves_the_centred_distance_unchanged(english):
    target = english @ _rotation(6, 0.3) + 0.5  # offset from English
    before = alignment.centred_distance(target, english)
    assert before > 0.1
    shift = np.full(6, 25.0)  # large against the spread: measured from the origin, it would shrink the distance
    assert alignment.centred_distance(target + shift, english + shift) == pytest.approx(before, rel=1e-9)


def test_scale_changes_the_centroid_distance_but_not_the_centred_one(english):
    target = english + 1.0
    assert alignment.centroid_distance(3 * target, 3 * english) == pytest.approx(
        3 * alignment.centroid_distance(target, english))
    assert alignment.centred_distance(3 * target, 3 * english) == pytest.approx(
        alignment.centred_distance(target, english))


def test_centred_distance_is_twice_the_root_of_the_language_share_of_variance(english):
    target = english @ _rotation(6, 0.7) + [1.0, -2.0, 0.0, 0.5, 0.0, 0.0]
    pooled = np.concatenate([target, english])
    centre = pooled.mean(axis=0)
    total = ((pooled - centre) ** 2).sum()
    between = len(target) * (((target.mean(0) - centre) ** 2).sum() + ((english.mean(0) - centre) ** 2).sum())
    assert (alignment.centred_distance(target, english) / 2) ** 2 == pytest.approx(between / total)


def test_two_collapsed_languages_are_at_the_maximum_distance_and_one_point_at_zero():
    english, target = np.tile([1.0, 0.0], (5, 1)), np.tile([0.0, 3.0], (5, 1))
    assert alignment.centred_distance(target, english) == pytest.approx(2.0)
    assert alignment.centred_distance(english, english) == 0.0


@pytest.mark.parametrize("shapes", [((3, 4), (2, 4)), ((3, 4), (3, 5)), ((0, 4), (0, 4)), ((4,), (4,))])
def test_embeddings_that_are_not_parallel_are_refused(shapes):
    with pytest.raises(StudyError, match="parallel embeddings of equal shape"):
        alignment.align(np.ones(shapes[0]), np.ones(shapes[1]))


def test_projection_is_centred_and_blind_to_a_shift_or_scale_of_the_space(english):
    groups = {"en": english, "de": english @ _rotation(6, 0.4) + 1.0}
    points = alignment.project_2d(groups)
    assert {k: v.shape for k, v in points.items()} == {"en": (12, 2), "de": (12, 2)}
    pooled = np.concatenate(list(points.values()))
    assert np.allclose(pooled.mean(axis=0), 0.0)
    moved = alignment.project_2d({k: 2.0 * v + 7.0 for k, v in groups.items()})
    assert all(np.allclose(moved[k], points[k]) for k in groups)


# --- the probe on a real encoder ------------------------------------------------------------------------------------

@pytest.mark.e2e
def test_probe_of_pretrained_e5_small_reproduces_study_evaluate_on_tatoeba(e5_small):
    """Same sentences, tokenizer, prefix, layer and pooling as study.cli.evaluate: the same retrieval accuracies."""
    model, tokenizer, prefix = load_model(e5_small).eval(), load_tokenizer(e5_small), e5_small.text_prefix
    data = probe_data(TASKS["xnli"], ("en", "de", "sw"), FIXTURES)  # English is the source: not probed
    assert data.task.name == "tatoeba" and list(data.bitexts) == ["de", "sw"]
    depth = model.config.num_hidden_layers
    layers = probe_layers(depth, ap_layer=5)
    assert layers == (6, depth)
    probe = run_probe(model, tokenizer, data, layers, prefix=prefix, max_length=128)
    for layer, languages in ((None, ("de", "sw")), (6, ("sw",))):
        expected = evaluate(TASKS["tatoeba"], model, tokenizer, languages, model_name="e5-small",
                            data_dir=FIXTURES, layer=layer, prefix=prefix, log=lambda line: None)
        for lang in languages:
            measured = probe.results[layer or depth][lang]
            # Tatoeba's headline is XTREME-R's en -> xx; the other direction is a detail
            assert measured.en_to_xx == expected["per_language"][lang]
            assert measured.xx_to_en == expected["details"][lang]["xx_to_en"]
            assert measured.sentences == expected["details"][lang]["examples"]
    assert probe.results[depth]["de"].xx_to_en > 0.9  # the README's reference: de 0.980
    units = probe.units()["xx_to_en/layer6"]["sw"]
    assert np.mean([u[0] for u in units]) == probe.results[6]["sw"].xx_to_en


def test_probe_data_subsamples_the_same_pairs_and_needs_a_parallel_language():
    full = probe_data(TASKS["pocket-topic"], ("de", "ja"))
    part = probe_data(TASKS["pocket-topic"], ("de", "ja"), limit=20)
    assert full.task.name == "pocket-retrieval"
    for lang in ("de", "ja"):
        pairs = set(zip(full.bitexts[lang].source, full.bitexts[lang].english, strict=True))
        chosen = list(zip(part.bitexts[lang].source, part.bitexts[lang].english, strict=True))
        assert len(chosen) == 20 and set(chosen) <= pairs
    assert probe_data(TASKS["pocket-topic"], ("de",), limit=20).bitexts["de"] == part.bitexts["de"]
    with pytest.raises(StudyError, match="has parallel sentences"):
        probe_data(TASKS["pocket-topic"], ("en",))


def test_figure_languages_take_one_language_per_family():
    chosen = figure_languages(("en", "de", "fr", "ja", "zh", "tr", "ko"))
    assert chosen == ("de", "ja", "ko")  # de and fr share a family; en is the source


def test_pretrained_probe_is_computed_once_then_read_from_the_cache(tiny, tmp_path, monkeypatch):
    import study.core.cache
    import study.models.registry
    from study.evaluation.probe import pretrained_probe

    monkeypatch.setattr(study.core.cache, "cache_dir", lambda: tmp_path)
    loads, original = [], study.models.registry.load_model
    monkeypatch.setattr(study.models.registry, "load_model", lambda *a, **k: loads.append(a) or original(*a, **k))
    data, tokenizer = probe_data(TASKS["pocket-topic"], ("de", "ja"), limit=16), load_tokenizer(tiny)
    first = pretrained_probe(tiny, tokenizer, data, (3, 6), max_length=32)
    second = pretrained_probe(tiny, tokenizer, data, (3, 6), max_length=32)
    assert len(loads) == 1 and first[0] == second[0] and set(first[0]) == {3, 6}
    assert set(first[1]) == {"de/target", "de/english", "ja/target", "ja/english"}
    assert first[1]["de/target"].shape == (16, 32)
    pretrained_probe(tiny, tokenizer, data, (6,), max_length=32)  # other layers: another entry
    assert len(loads) == 2


@pytest.mark.e2e
def test_training_run_reports_the_probe_at_every_evaluation(tmp_path, monkeypatch):
    """The worker adds align/, align_pretrained/ and align_delta/ to each report, the retrieval units beside the
    evaluation's, and the figure's embeddings to the outbox."""
    import json

    import torch

    from study.core.protocol import (
        ALIGNMENT_EMBEDDINGS_ARTIFACT,
        ALIGNMENT_UNITS,
        EXAMPLES_ARTIFACT,
        alignment_key,
        alignment_layers,
        alignment_scores,
    )
    from study.train.config import TrainConfig
    from study.train.finetune import FineTuneRun

    cfg = TrainConfig(model="tiny", task="pocket-topic", ap_layer=2, batch_size=8, max_length=32, max_train_examples=32,
                      max_eval_examples=24, languages=("en", "de", "ja"), eval_every=2, max_steps=4, lr=2e-3,
                      alignment_probe=True)
    reports = []
    FineTuneRun(cfg, 0, 1, torch.device("cpu"), outbox=str(tmp_path)).train(lambda metrics, _: reports.append(metrics))
    assert len(reports) == 2
    for report in reports:
        assert alignment_layers(report) == [3, 6] and report["align_seconds"] <= report["eval_seconds"]
        for layer in (3, 6):
            assert alignment_scores(report, "align", "sentences", layer) == {"de": 24.0, "ja": 24.0}
            for measure in ("xx_to_en", "en_to_xx", "centroid_distance", "centred_distance"):
                now, before, delta = (alignment_scores(report, namespace, measure, layer)
                                      for namespace in ("align", "align_pretrained", "align_delta"))
                assert set(delta) == {"de", "ja"}
                assert all(delta[lang] == pytest.approx(now[lang] - before[lang]) for lang in delta)
    assert reports[0][alignment_key("align_pretrained", "centred_distance", 6, "de")] == \
        reports[1][alignment_key("align_pretrained", "centred_distance", 6, "de")]
    assert reports[0][alignment_key("align", "centred_distance", 6, "de")] != \
        reports[1][alignment_key("align", "centred_distance", 6, "de")]  # training moved the encoder
    examples = json.loads((tmp_path / EXAMPLES_ARTIFACT).read_bytes())
    selected = next(r for r in reports if r["step"] == examples["step"])
    units = examples[ALIGNMENT_UNITS]
    assert set(units) == {f"{d}/layer{n}" for d in ("xx_to_en", "en_to_xx") for n in (3, 6)}
    for lang in ("de", "ja"):
        assert len(units["xx_to_en/layer6"][lang]) == 24
        assert np.mean([u[0] for u in units["xx_to_en/layer6"][lang]]) == pytest.approx(
            selected[alignment_key("align", "xx_to_en", 6, lang)])
    with np.load(tmp_path / ALIGNMENT_EMBEDDINGS_ARTIFACT) as figure:
        assert set(figure.files) == {f"{source}/{lang}/{side}" for source in ("checkpoint", "pretrained")
                                     for lang in ("de", "ja") for side in ("target", "english")}

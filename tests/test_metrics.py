"""Metrics against hand-computed cases."""

import numpy as np
import pytest

from study import metrics


def test_accuracy():
    assert metrics.accuracy([0, 1, 2, 1], [0, 1, 1, 1]) == 0.75


def test_seqeval_is_entity_level():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert metrics.tagging_f1(gold, gold) == 1.0
    # the person is split in two: 0 of 2 predicted PER entities match, LOC matches -> P = 1/3, R = 1/2, F1 = 0.4
    assert metrics.tagging_f1(gold, [["B-PER", "B-PER", "O", "B-LOC"]]) == pytest.approx(0.4)


def test_pos_tags_score_per_token():
    gold = [metrics.pos_tags_as_entities(["NOUN", "NOUN", "VERB", "ADP"])]
    pred = [metrics.pos_tags_as_entities(["NOUN", "ADJ", "VERB", "ADP"])]
    assert metrics.tagging_f1(gold, pred) == pytest.approx(0.75)  # 3 of 4 tokens


def test_squad_normalisation_and_scores():
    assert metrics.normalize_answer("The  Cat, sat!") == "cat sat"
    scores = metrics.squad_scores({"q1": "the cat", "q2": "in the big house"},
                                  {"q1": ["Cat!"], "q2": ["a house", "the big red house"]})
    assert scores["exact_match"] == pytest.approx(0.5)
    # q2: best gold "big red house" vs "in big house": overlap 2, P = 2/3, R = 2/3 -> F1 = 2/3
    assert scores["f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["f1_em"] == pytest.approx((scores["f1"] + scores["exact_match"]) / 2)


def test_average_precision_at_k():
    # hits at ranks 1 and 3 of 2 relevant: (1/1 + 2/3) / 2
    assert metrics.average_precision_at_k({7, 9}, [7, 1, 9, 4], k=20) == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.average_precision_at_k({9}, [1, 2, 9], k=2) == 0.0  # outside the top k
    scores = np.array([[0.9, -0.5, 0.1], [-0.2, -0.1, -0.3]])  # negative similarities are still ranked
    assert metrics.mean_average_precision_at_k(scores, [[0], [1]], k=20) == pytest.approx(1.0)


def test_nearest_neighbour_accuracy_both_directions():
    sim = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.9], [0.0, 0.3, 0.95]])
    both = metrics.nearest_neighbour_accuracy(sim)
    assert both["xx_to_en"] == pytest.approx(2 / 3)  # source 1 retrieves English 2
    assert both["en_to_xx"] == pytest.approx(1.0)  # every English column's best row is its own


def test_xtreme_r_average_is_mean_of_task_means():
    per_task = {"xnli": {"de": 0.8, "fr": 0.6}, "xquad": {"de": 0.5}}
    assert metrics.xtreme_r_average(per_task) == pytest.approx((0.7 + 0.5) / 2)

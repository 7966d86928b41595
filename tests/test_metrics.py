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


@pytest.mark.parametrize("gold, predicted, f1, accuracy", [
    # XTREME-R's rule (evaluate.py: seqeval f1_score on the raw UPOS tags). seqeval reads a tag's first letter as
    # its chunk prefix and the rest as its type: NOUN -> (N, OUN); a run of equal types is one chunk.
    # gold chunks OUN[0-1] ERB[2] UNCT[3]; predicted OUN[0] ERB[1-2] UNCT[3]: 1 match -> P = R = 1/3 -> F1 1/3
    (["NOUN", "NOUN", "VERB", "PUNCT"], ["NOUN", "VERB", "VERB", "PUNCT"], 1 / 3, 3 / 4),
    # gold OUN[0-1] ERB[2] DP[3]; predicted OUN[0] DJ[1] ERB[2] DP[3]: 2 matches -> P = 2/4, R = 2/3 -> F1 4/7
    (["NOUN", "NOUN", "VERB", "ADP"], ["NOUN", "ADJ", "VERB", "ADP"], 4 / 7, 3 / 4),
    # ADP and ADV share the prefix A but not the type (DP, DV): gold has 2 chunks, predicted ADP ADP has 1 -> F1 0
    (["ADP", "ADV"], ["ADP", "ADP"], 0.0, 1 / 2),
])
def test_pos_tags_score_by_xtreme_rs_rule_and_token_accuracy_beside_it(gold, predicted, f1, accuracy):
    assert metrics.tagging_f1([gold], [predicted]) == pytest.approx(f1)
    (numerator, denominator), = metrics.tagging_units([gold], [predicted])
    assert numerator / denominator == pytest.approx(f1)  # the report's bootstrap units give the same number
    assert metrics.token_accuracy([gold], [predicted]) == pytest.approx(accuracy)


def test_squad_normalisation_and_scores():
    assert metrics.normalize_answer("The  Cat, sat!") == "cat sat"
    scores = metrics.squad_scores({"q1": "the cat", "q2": "in the big house"},
                                  {"q1": ["Cat!"], "q2": ["a house", "the big red house"]})
    assert scores["exact_match"] == pytest.approx(0.5)
    # q2: best gold "big red house" vs "in big house": overlap 2, P = 2/3, R = 2/3 -> F1 = 2/3
    assert scores["f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["f1_em"] == pytest.approx((scores["f1"] + scores["exact_match"]) / 2)


def test_a_question_without_a_prediction_scores_zero():
    # official SQuAD v1.1 rule: the question counts in the mean and adds nothing; before, a missing prediction
    # became "" and matched a gold answer that normalises to "" (here ".") with EM 1
    answers = {"q1": ["."], "q2": ["Paris"]}
    assert metrics.squad_question_scores({"q2": "paris"}, answers) == {"q1": (0.0, 0.0), "q2": (1.0, 1.0)}
    assert metrics.squad_scores({"q2": "paris"}, answers)["exact_match"] == pytest.approx(0.5)


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

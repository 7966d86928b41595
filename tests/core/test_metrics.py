"""Metrics against hand-computed cases."""

import numpy as np
import pytest

from study.core import metrics


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
    scores = metrics.qa_scores({"q1": "the cat", "q2": "in the big house"},
                               {"q1": ["Cat!"], "q2": ["a house", "the big red house"]})
    assert scores["exact_match"] == pytest.approx(0.5)
    # q2: best gold "big red house" vs "in big house": overlap 2, P = 2/3, R = 2/3 -> F1 = 2/3
    assert scores["f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["f1_em"] == pytest.approx((scores["f1"] + scores["exact_match"]) / 2)


def test_a_question_without_a_gold_answer_cannot_be_scored():
    with pytest.raises(ValueError, match="question 'q1' has no gold answer"):
        metrics.qa_scores({"q1": "x"}, {"q1": []})


def test_a_question_without_a_prediction_scores_zero():
    # official SQuAD v1.1 rule: the question counts in the mean and adds nothing; before, a missing prediction
    # became "" and matched a gold answer that normalises to "" (here ".") with EM 1
    answers = {"q1": ["."], "q2": ["Paris"]}
    assert metrics.qa_question_scores({"q2": "paris"}, answers) == {"q1": (0.0, 0.0), "q2": (1.0, 1.0)}
    assert metrics.qa_scores({"q2": "paris"}, answers)["exact_match"] == pytest.approx(0.5)


# MLQA's official rules (mlqa_evaluation_v1.py): lower case, drop Unicode P* and ASCII punctuation, drop the answer
# language's articles (Arabic: every "ال"), split on whitespace, Chinese also one token per CJK character
@pytest.mark.parametrize("text, lang, normalised", [
    ("¿La casa?", "es", "casa"),  # ¿ is Unicode punctuation (Po), "la" an article
    ("der Rhein", "de", "rhein"),
    ("الكتاب", "ar", "كتاب"), ("المال", "ar", "م"),  # both "ال" of al-māl go, as the official pattern does
    ("iPhone 手机。", "zh", "iphone 手 机"),  # 。 is punctuation; CJK characters are tokens of their own
    ("दिल्ली।", "hi", "दिल्ली"),  # the danda is punctuation; vowel signs (Mc/Mn) stay; no articles
    ("The  U.S. $5 €5", "en", "us 5 €5"),  # $ is in ASCII punctuation, € (Sc) is not
    ("những con mèo", "vi", "con mèo"),
])
def test_mlqa_normalisation_per_answer_language(text, lang, normalised):
    assert metrics.mlqa_normalize_answer(text, lang) == normalised


def test_mlqa_scores_differ_from_squad_where_the_official_rules_do():
    zh, de = metrics.answer_normalizer("mlqa", "zh"), metrics.answer_normalizer("mlqa", "de")
    # 北京 vs 北京大学: tokens 北 京 / 北 京 大 学: P = 1, R = 1/2 -> F1 2/3 (SQuAD's rule: one token each, F1 0)
    assert metrics.qa_question_scores({"q": "北京"}, {"q": ["北京大学"]}, zh) == {"q": (pytest.approx(2 / 3), 0.0)}
    assert metrics.qa_question_scores({"q": "北京"}, {"q": ["北京大学"]}) == {"q": (0.0, 0.0)}
    # Rhein vs der Rhein: the German article goes -> F1 1, EM 1 (SQuAD's rule: F1 2/3, EM 0)
    assert metrics.qa_scores({"q": "Rhein"}, {"q": ["der Rhein"]}, de) == {"f1": 1.0, "exact_match": 1.0,
                                                                             "f1_em": 1.0}
    squad = metrics.qa_scores({"q": "Rhein"}, {"q": ["der Rhein"]}, metrics.answer_normalizer("xquad", "de"))
    assert (squad["f1"], squad["exact_match"]) == (pytest.approx(2 / 3), 0.0)
    with pytest.raises(ValueError, match="MLQA has no answer language 'ja'"):
        metrics.mlqa_normalize_answer("x", "ja")


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


def test_tatoebas_headline_is_en_to_xx_as_xtreme_rs_evaluate_retrieval():
    """third_party/evaluate_retrieval.py (tatoeba) + utils_retrieve.similarity_search: the xx sentences go into a
    faiss IndexFlatL2, each English sentence searches it (L2 on normalised vectors), and the prediction of English
    sentence j is right when it is xx sentence j. By hand, squared distances 2 - 2 cos:
    English (0.8, 0.6) to xx (1, 0), (0.96, 0.28), (0, 1): 0.4, 0.128, 0.8 -> xx 1, right; English (1, 0) -> xx 0
    (0, 0.08, 2); English (0.28, 0.96) -> xx 2 (1.44, 0.9248, 0.08): 3 of 3. The other way, xx (0.96, 0.28) is
    nearest to English (1, 0) (0.08 against 0.128): xx -> en is 2 of 3."""
    from study.data.tasks import TASKS
    from study.evaluation.scoring import bitext_scores

    xx = np.array([[1.0, 0.0], [0.96, 0.28], [0.0, 1.0]])
    english = np.array([[1.0, 0.0], [0.8, 0.6], [0.28, 0.96]])
    score, details = bitext_scores(TASKS["tatoeba"], xx @ english.T)
    assert score == pytest.approx(1.0) and details["direction"] == "en_to_xx"
    assert details["xx_to_en"] == pytest.approx(2 / 3) and details["gold_units"] == 3
    pocket, pocket_details = bitext_scores(TASKS["pocket-retrieval"], xx @ english.T)  # unchanged: xx -> en
    assert pocket == pytest.approx(2 / 3) and pocket_details["en_to_xx"] == pytest.approx(1.0)


def test_the_scorer_packages_versions_are_named_for_the_record():
    """seqeval 0.0.12 and 1.2.2 differ by up to 0.15 points of tagging F1 on the same predictions: every record
    (a study's parent run params, study evaluate's JSON, the report header) names the versions that scored."""
    from importlib.metadata import version
    from types import SimpleNamespace

    from study.report.tables import _scorer_versions

    assert metrics.scorer_versions() == {"seqeval": version("seqeval"), "scikit-learn": version("scikit-learn")}
    parent = SimpleNamespace(data=SimpleNamespace(params={"version.seqeval": "1.2.2", "version.scikit-learn": "1.5"}))
    old = SimpleNamespace(data=SimpleNamespace(params={}))
    assert _scorer_versions([parent, old]) == "not recorded; scikit-learn 1.5, seqeval 1.2.2"

"""Task metrics. Pure functions over predictions; no models, no I/O (the aggregates over tasks are
``study.core.aggregates``).

Libraries where a maintained one installs offline: scikit-learn (accuracy), seqeval (chunk-level F1, as XTREME-R's
tagging tasks use, on BIO tags for PAN-X and raw UPOS tags for UD-POS). The SQuAD v1.1 and MLQA answer F1/EM and
LAReQA's mAP@k are written out below from their official scripts, since none of them ships in a package that
installs without the hub (``evaluate`` fetches its metric code from the hub; torchmetrics' retrieval AP drops
candidates with a non-positive score, which cosine scores have).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import re
import statistics
import string
import sys
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

QA_METRIC = "f1_em"  # XTREME-R scores QA tasks by (F1 + EM) / 2
SCORER_PACKAGES = ("seqeval", "scikit-learn")  # the scores depend on their versions (seqeval 0.0.12 vs 1.2.2: up to
# 0.15 points of tagging F1 on the same predictions), so every record names them


def scorer_versions() -> dict[str, str]:
    """{package: installed version} of ``SCORER_PACKAGES``, for the record beside every score."""
    from importlib.metadata import version

    return {package: version(package) for package in SCORER_PACKAGES}


def accuracy(labels: Sequence, predictions: Sequence) -> float:
    """Fraction of predictions equal to their label, in [0, 1] (scikit-learn's accuracy_score)."""
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, predictions))


def tagging_f1(labels: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> float:
    """seqeval's micro F1 (its default, non-strict chunking) on the tags as given, as XTREME-R's ``evaluate.py``
    scores both tagging tasks: BIO tags for PAN-X; the raw UPOS tags for UD-POS, where seqeval reads a tag's first
    letter as its chunk prefix and the rest as its type, so a run of equal tags is one chunk (gold NOUN NOUN VERB
    PUNCT vs predicted NOUN VERB VERB PUNCT: F1 1/3, not the token accuracy 3/4)."""
    from seqeval.metrics import f1_score

    with _raw_tags_allowed():
        return float(f1_score([list(s) for s in labels], [list(s) for s in predictions]))


@contextlib.contextmanager
def _raw_tags_allowed():
    """seqeval warns once per tag that raw UPOS tags are 'not NE tags'; XTREME-R's rule uses them on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".* seems not to be NE tag", category=UserWarning)
        yield


def token_accuracy(labels: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> float:
    """Share of tokens whose predicted tag equals the gold tag, over all sentences (UD-POS's usual accuracy; not
    XTREME-R's UD-POS metric, which is ``tagging_f1`` on the raw tags)."""
    pairs = [(g, p) for gold, predicted in zip(labels, predictions, strict=True)
             for g, p in zip(gold, predicted, strict=True)]
    return sum(g == p for g, p in pairs) / len(pairs) if pairs else 0.0


# --- SQuAD v1.1 official evaluation (rajpurkar.github.io/SQuAD-explorer, evaluate-v1.1.py) --------------------


def normalize_answer(text: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(pred_tokens: Sequence[str], truth_tokens: Sequence[str]) -> float:
    """Bag-of-tokens F1 of the official QA scripts: 0 when no token is shared."""
    common = collections.Counter(pred_tokens) & collections.Counter(truth_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def qa_question_scores(predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]],
                       normalize: Callable[[str], str] = normalize_answer) -> dict[str, tuple[float, float]]:
    """Per question: (F1, exact match) under ``normalize`` (SQuAD v1.1's by default), each the max over the gold
    answers. A question without a prediction scores (0, 0), as in the official scripts (which count it and add
    nothing), also when its gold answer normalises to an empty string."""
    scores = {}
    for qid, truths in answers.items():
        if not truths:
            raise ValueError(f"question {qid!r} has no gold answer: it cannot be scored")
        if qid not in predictions:
            scores[qid] = (0.0, 0.0)
            continue
        prediction = normalize(predictions[qid])
        truths = [normalize(t) for t in truths]
        scores[qid] = (max(_token_f1(prediction.split(), t.split()) for t in truths),
                       max(float(prediction == t) for t in truths))
    return scores


def qa_scores(predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]],
              normalize: Callable[[str], str] = normalize_answer) -> dict[str, float]:
    """{'f1', 'exact_match', 'f1_em'} in [0, 1]: ``qa_question_scores`` averaged over every gold question."""
    per_question = qa_question_scores(predictions, answers, normalize).values()
    n = max(len(answers), 1)
    f1, em = sum(f for f, _ in per_question), sum(e for _, e in per_question)
    return {"f1": f1 / n, "exact_match": em / n, QA_METRIC: (f1 + em) / (2 * n)}


# --- MLQA official evaluation (facebookresearch/MLQA, mlqa_evaluation_v1.py) ---------------------------------------


@functools.cache
def mlqa_punctuation() -> frozenset[str]:
    """Every Unicode character of a P* category, plus ASCII ``string.punctuation`` (which adds symbols like $ + ^);
    built on first use (0.2 s)."""
    return frozenset(chr(i) for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P")) \
        | frozenset(string.punctuation)


# articles removed per answer language (Hindi and Chinese have none; the Arabic rule removes every "ال", also
# inside words, as the official pattern does)
MLQA_ARTICLES = {"en": r"\b(a|an|the)\b", "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
                 "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
                 "vi": r"\b(của|là|cái|chiếc|những)\b", "ar": r"\sال^|ال", "hi": None, "zh": None}
MLQA_CJK = re.compile(r"[\u4e00-\u9fa5]")  # Chinese answers: each of these characters is a token of its own


def _mlqa_tokens(text: str, lang: str) -> list[str]:
    if lang != "zh":
        return text.split()
    tokens, run = [], ""
    for char in text:
        if MLQA_CJK.match(char) or char in mlqa_punctuation():
            tokens += run.split() + [char]
            run = ""
        else:
            run += char
    return tokens + run.split()


def mlqa_normalize_answer(text: str, lang: str) -> str:
    """MLQA's answer normalisation for answer language ``lang``: lower case, drop punctuation, drop the language's
    articles, then split on whitespace (Chinese: also one token per CJK character) and join with single spaces.
    ValueError for a language MLQA does not have."""
    if lang not in MLQA_ARTICLES:
        raise ValueError(f"MLQA has no answer language {lang!r}; it has {', '.join(MLQA_ARTICLES)}")
    punctuation = mlqa_punctuation()
    text = "".join(ch for ch in text.lower() if ch not in punctuation)
    if MLQA_ARTICLES[lang]:
        text = re.sub(MLQA_ARTICLES[lang], " ", text)
    return " ".join(t for t in _mlqa_tokens(text, lang) if t.strip())


def answer_normalizer(task: str, lang: str) -> Callable[[str], str]:
    """The official answer normalisation of a QA task's language: MLQA's own per language for ``mlqa`` test
    languages, SQuAD v1.1's otherwise (XQuAD, TyDiQA-GoldP, and every English dev set, which is SQuAD's)."""
    if task == "mlqa":
        return functools.partial(mlqa_normalize_answer, lang=lang)
    return normalize_answer


# --- bootstrap units: score = sum(numerators) / sum(denominators), resampled by example ---------------------------


def tagging_units(labels: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> list[list[float]]:
    """Per sentence (2 * true positives, predicted + gold entities): their sums' ratio is seqeval's micro F1."""
    from seqeval.metrics.sequence_labeling import get_entities

    units = []
    for gold, predicted in zip(labels, predictions, strict=True):
        with _raw_tags_allowed():
            gold_entities, predicted_entities = set(get_entities(list(gold))), set(get_entities(list(predicted)))
        units.append([2.0 * len(gold_entities & predicted_entities), float(len(gold_entities) +
                                                                         len(predicted_entities))])
    return units


# --- retrieval ------------------------------------------------------------------------------------------------


def average_precision_at_k(relevant: Iterable[int], ranked: Sequence[int], k: int = 20) -> float:
    """LAReQA's AP@k: precision at each hit within the top k, divided by min(#relevant, k)."""
    relevant = set(relevant)
    hits, score = 0, 0.0
    for rank, candidate in enumerate(ranked[:k], start=1):
        if candidate in relevant:
            hits += 1
            score += hits / rank
    return score / min(len(relevant), k) if relevant else 0.0


def mean_average_precision_at_k(scores: np.ndarray, relevant: Sequence[Iterable[int]], k: int = 20) -> float:
    """mAP@k for a (queries x candidates) score matrix and the relevant candidate ids of each query."""
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return statistics.fmean(average_precision_at_k(r, row.tolist(), k) for r, row in zip(relevant, ranked, strict=True))


def nearest_neighbour_hits(similarity: np.ndarray) -> dict[str, np.ndarray]:
    """Per sentence, whether row i of a square (source x English) similarity matrix retrieves column i
    (``xx_to_en``) and column i retrieves row i (``en_to_xx``): boolean (n,) each, the units of a bootstrap; the
    first best on ties. ``en_to_xx`` is XTREME-R's Tatoeba rule: ``third_party/evaluate_retrieval.py`` adds the xx
    sentences to the index and searches it with each English sentence (``utils_retrieve.similarity_search``, L2 on
    normalised vectors: the cosine ranking)."""
    gold = np.arange(similarity.shape[0])
    return {"xx_to_en": similarity.argmax(axis=1) == gold, "en_to_xx": similarity.argmax(axis=0) == gold}


def nearest_neighbour_accuracy(similarity: np.ndarray) -> dict[str, float]:
    """Tatoeba: row i of a (source x English) similarity matrix should retrieve column i, and vice versa."""
    return {direction: float(hits.mean()) for direction, hits in nearest_neighbour_hits(similarity).items()}

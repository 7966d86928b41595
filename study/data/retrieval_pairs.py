"""The texts XTREME-R's dual encoders read, and their English training pairs.

Rules from google-research/xtreme (third_party/processors/lareqa.py, third_party/utils_mewslix.py,
third_party/evaluate_retrieval.py), written here from their behaviour:

- LAReQA: a question is its text; an answer candidate is its sentence followed directly by its whole paragraph, with
  newlines removed. Training pairs come from SQuAD v1.1 train: each question with its first answer's sentence.
- Mewsli-X: a query is the mention's sentence with the mention enclosed in ``{ }`` markers (braces already in the
  sentence become parentheses) and the mention's text prepended, so truncation cannot cut it; a candidate is its
  entity's description sentences joined by spaces. Training pairs are English Wikipedia mention-entity pairs.

One difference from XTREME, named in the protocol label: XTREME splits SQuAD paragraphs into sentences with its own
SQuAD-tuned regular expressions (sb_sed.py); this tool uses pysbd, a maintained rule-based sentence splitter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from study.core.errors import StudyError

MENTION_OPEN, MENTION_CLOSE = "{", "}"
_MARKED = re.compile(re.escape(MENTION_OPEN) + "(.*?)" + re.escape(MENTION_CLOSE))
SQUAD_WHITESPACE = " \t\r\n\u202f"  # what XTREME's SQuAD readers split words on


def _normalise_lines(text: str) -> str:
    """XTREME's light normalisation of a query or description: line breaks become spaces, then each pair of spaces
    (one pass, left to right) one space, then the ends are stripped."""
    return " ".join(text.splitlines()).replace("  ", " ").strip()


def lareqa_candidate(sentence: str, paragraph: str) -> str:
    """An answer candidate as XTREME-R's LAReQA dual encoder reads it: the sentence, then its paragraph, no
    separator, newlines removed."""
    return (sentence + paragraph).replace("\n", "")


def check_mention(text: str, span: dict, where: str) -> tuple[int, int]:
    """A Mewsli-X ``mention_span`` ({start, end[, text]}) as (start, end), checked as its schema.py checks it: a
    non-empty span inside ``text`` whose ``text``, when given, is ``text[start:end]``. StudyError naming ``where``."""
    start, end = span["start"], span["end"]
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
        raise StudyError(f"{where}: mention span [{start}, {end}) is not a non-empty span of its "
                         f"{len(text)}-character text")
    if "text" in span and span["text"] != text[start:end]:
        raise StudyError(f"{where}: mention text {span['text']!r} is not the text at [{start}, {end}): "
                         f"{text[start:end]!r}")
    return start, end


def mention_query(text: str, sentence_spans: list[tuple[int, int]], start: int, end: int) -> str:
    """A Mewsli-X query: ``"<mention>: <left> { <mention> } <right>"`` where left and right are the rest of the first
    sentence span ``[s, e)`` that holds the whole mention ``text[start:end]``; braces in left and right become
    parentheses. A mention no single sentence holds (XTREME's code stops on one) takes the whole text as its
    sentence."""
    first, last = next(((s, e) for s, e in sentence_spans if s <= start < e and s < end <= e), (0, len(text)))
    mention = text[start:end]
    left, right = (_MARKED.sub(r"(\1)", part) for part in (text[first:start], text[end:last]))
    return _normalise_lines(f"{mention}: {left} {MENTION_OPEN} {mention} {MENTION_CLOSE} {right}")


def entity_description(description: str, sentence_spans: list[tuple[int, int]]) -> str:
    """A Mewsli-X candidate: the entity description's sentences joined by single spaces, normalised."""
    return _normalise_lines(" ".join(description[s:e] for s, e in sentence_spans))


def spans_of(rows: list[dict]) -> list[tuple[int, int]]:
    """Mewsli-X's ``sentence_spans`` ({start, end} objects) as (start, end) pairs."""
    return [(span["start"], span["end"]) for span in rows]


@dataclass(frozen=True)
class TrainingPairs:
    """English (query, relevant candidate) pairs a dual encoder trains on, and what could not become one."""

    queries: list[str]
    candidates: list[str]
    skipped: int  # source examples without a pair (answer not where the file says, or in no sentence)
    source: str  # where they came from, in words


def sentence_splitter():
    """pysbd's English splitter as character spans: ``split(text) -> [(start, end)]`` (half-open, trailing spaces
    stripped)."""
    import pysbd

    segmenter = pysbd.Segmenter(language="en", clean=False, char_span=True)

    def split(text: str) -> list[tuple[int, int]]:
        return [(span.start, span.start + len(span.sent.rstrip())) for span in segmenter.segment(text)
                if span.sent.strip()]
    return split


def _answer_found(context: str, start: int, answer: str) -> bool:
    """XTREME's check that a SQuAD answer is where ``answer_start`` says: the whitespace-split words the answer's
    characters touch contain the answer (words re-joined by single spaces on both sides)."""
    if not answer or not 0 <= start < len(context):
        return False
    first, last = start, min(start + len(answer), len(context))
    while first > 0 and context[first - 1] not in SQUAD_WHITESPACE:
        first -= 1
    while last < len(context) and context[last] not in SQUAD_WHITESPACE:
        last += 1
    covered = " ".join(re.split(f"[{SQUAD_WHITESPACE}]+", context[first:last].strip(SQUAD_WHITESPACE)))
    return " ".join(answer.split()) in covered


def squad_pairs(records: list[dict], split_sentences) -> TrainingPairs:
    """LAReQA's training pairs from SQuAD records (``study.data`` QA schema): each question with
    ``lareqa_candidate(its first answer's sentence, the paragraph)``; the answer's sentence is the half-open span
    ``[s, e)`` holding ``answer_start``. ``split_sentences(paragraph) -> [(start, end)]`` (``sentence_splitter``),
    called once per distinct paragraph."""
    queries, candidates, skipped, spans = [], [], 0, {}
    for record in records:
        context = record["context"]
        starts, texts = record["answers"]["answer_start"], record["answers"]["text"]
        if not starts or not texts:
            raise StudyError(f"SQuAD example {record.get('id')!r} has no answer: LAReQA trains on SQuAD v1.1, where "
                             "every question has one (a SQuAD v2 file?)")
        start, answer = starts[0], texts[0]
        if not isinstance(start, int) or not isinstance(answer, str):
            raise StudyError(f"SQuAD example {record.get('id')!r}: answer_start {start!r} / text {answer!r} are not "
                             "a whole number and a string")
        if context not in spans:
            spans[context] = split_sentences(context)
        sentence = next((context[s:e] for s, e in spans[context] if s <= start < e), None)
        if sentence is None or not _answer_found(context, start, answer):
            skipped += 1
            continue
        queries.append(record["question"])
        candidates.append(lareqa_candidate(sentence, context))
    return TrainingPairs(queries, candidates, skipped, "SQuAD v1.1 train")


def mewslix_pairs(rows: list[dict], where: str) -> TrainingPairs:
    """Mewsli-X's training pairs from ``wikipedia_pairs-*.jsonl`` rows (its schema.py ``MentionEntityPair``):
    ``(mention_query, entity_description)``. StudyError naming ``where`` on a row in another format."""
    queries, candidates = [], []
    try:
        for number, row in enumerate(rows, 1):
            context, mention, entity = (row["contextual_mention"]["context"], row["contextual_mention"]["mention"],
                                        row["entity"])
            start, end = check_mention(context["text"], mention["mention_span"], f"{where} row {number}")
            queries.append(mention_query(context["text"], spans_of(context["sentence_spans"]), start, end))
            candidates.append(entity_description(entity["description"], spans_of(entity["sentence_spans"])))
    except (KeyError, TypeError) as err:
        raise StudyError(f"{where}: not a Mewsli-X mention-entity pair (schema.py MentionEntityPair): "
                         f"{err.__class__.__name__} {err}") from None
    return TrainingPairs(queries, candidates, 0, "Mewsli-X English Wikipedia mention-entity pairs (train)")

"""The ranking sets of XTREME-R's retrieval tasks as released: XQuAD-R / LAReQA (questions against every language's
answer sentences) and Mewsli-X (mentions against the candidate entities), from a directory, the hub archive or the
pinned release files."""

from __future__ import annotations

from pathlib import Path

from study.core.errors import StudyError
from study.data import tasks as T
from study.data.formats import (
    RankingSet,
    _archive_jsonl,
    _read_json,
    _read_jsonl,
)
from study.data.retrieval_pairs import check_mention, entity_description, lareqa_candidate, mention_query, spans_of


def _xquad_r_language(data: dict, where: str | Path) -> tuple[list[str], list[str], dict[str, tuple[str, int]]]:
    """Candidate sentences of one XQuAD-R file, the paragraph of each, and {question id: (question, index of its
    answer sentence)}."""
    candidates, paragraphs, questions = [], [], {}
    try:
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                offset, context, breaks = len(candidates), paragraph["context"], paragraph["sentence_breaks"]
                # the sentences are the context's [start, end) slices, as XTREME's utils_lareqa cuts them (the
                # files' own "sentences" list differs from them twice in tr.json)
                candidates.extend(context[s:e] for s, e in breaks)
                paragraphs.extend([context] * len(breaks))
                for qa in paragraph["qas"]:
                    start = qa["answers"][0]["answer_start"]
                    # half-open [start, end) sentences, as XTREME's LAReQA code: an answer at a break belongs to
                    # the sentence that starts there
                    index = next((i for i, (s, e) in enumerate(breaks) if s <= start < e), None)
                    if index is None:  # XTREME skips such a question; none is in the released files
                        raise StudyError(f"{where}: question {qa['id']!r} has its answer at {start}, in no sentence "
                                         "of its paragraph's sentence_breaks")
                    if qa["id"] in questions:
                        raise StudyError(f"{where}: question id {qa['id']!r} occurs twice")
                    questions[qa["id"]] = (qa["question"], offset + index)
    except (KeyError, TypeError, IndexError) as err:
        raise StudyError(f"{where} is not in XQuAD-R format (missing {err})") from None
    return candidates, paragraphs, questions


def _lareqa_ranking(files: dict[str, Path], language: str, names: dict[str, str] | None = None) -> RankingSet:
    """LAReQA as XTREME-R runs it: questions in one language rank the answer sentences of *all* languages
    (the multilingual pool); the relevant ones are the answer sentences of the same question in every language.
    ``files``: {language: its XQuAD-R file} for every language of the task; ``names``: what errors call them
    (default: the paths)."""
    candidates: list[str] = []
    paragraphs: list[str] = []
    answer_ids: dict[str, list[int]] = {}
    own_questions: dict[str, str] = {}
    for lang in T.TASKS["lareqa"].languages:
        where = (names or {}).get(lang, files[lang])
        lang_candidates, lang_paragraphs, questions = _xquad_r_language(_read_json(files[lang], where), where)
        for qid, (question, index) in questions.items():
            answer_ids.setdefault(qid, []).append(len(candidates) + index)
            if lang == language:
                own_questions[qid] = question
        candidates.extend(lang_candidates)
        paragraphs.extend(lang_paragraphs)
    qids = sorted(own_questions)
    questions = [own_questions[q] for q in qids]
    return RankingSet(questions, [answer_ids[q] for q in qids], candidates, questions,
                      [lareqa_candidate(c, p) for c, p in zip(candidates, paragraphs, strict=True)])


MEWSLIX_FILES = ("candidate_set_entities.jsonl", "wikinews_mentions-test.jsonl")  # get-mewsli-x.sh's output


# the English mention-entity pairs XTREME-R's dual encoder trains (train) and is checked (dev) on
MEWSLIX_PAIRS = {"train": "wikipedia_pairs-train.jsonl", "dev": "wikipedia_pairs-dev.jsonl"}


def _mewslix_local(root: Path, language: str, split: str) -> RankingSet | list[dict]:
    """The test split as a RankingSet; train and dev as the rows of the English mention-entity pairs."""
    if split in MEWSLIX_PAIRS:
        return _read_jsonl(root / MEWSLIX_PAIRS[split])
    entities, articles = (_read_jsonl(root / name) for name in MEWSLIX_FILES)
    return _mewslix_ranking(entities, articles, language, str(root))


def _mewslix_ranking(entities: list[dict], articles: list[dict], language: str, where: str) -> RankingSet:
    """Mewsli-X (google-research dense_representations_for_entity_retrieval/mel, schema.py): each WikiNews mention
    of one language, as the sentence that contains it, ranks the candidate entities' descriptions (any language);
    its gold entity is relevant. The dual encoder's texts: the mention marked in its sentence, the descriptions'
    sentences."""
    try:
        position = {e["entity_id"]: i for i, e in enumerate(entities)}
        candidates = [e["description"] for e in entities]
        marked_candidates = [entity_description(e["description"], spans_of(e["sentence_spans"])) for e in entities]
        questions, marked_questions, relevant = [], [], []
        for article in articles:
            context = article["context"]
            if context["language"] != language:
                continue
            if not context["text"]:
                raise StudyError(f"{where}: wikinews_mentions-test.jsonl has empty article texts: use the output of "
                                 "the dataset's get-mewsli-x.sh, which fills them from the WikiNews dumps")
            sentences = spans_of(context["sentence_spans"])
            for mention in article["mentions"]:
                start, end = check_mention(context["text"], mention["mention_span"],
                                           f"{where}: mention {mention.get('example_id')!r}")
                span = next(((s, e) for s, e in sentences if s <= start < e), (0, len(context["text"])))
                questions.append(context["text"][span[0]:span[1]])
                marked_questions.append(mention_query(context["text"], sentences, start, end))
                if mention["entity_id"] not in position:
                    raise StudyError(f"{where}: mention {mention.get('example_id')!r} links entity "
                                     f"{mention['entity_id']!r}, which candidate_set_entities.jsonl does not hold")
                relevant.append([position[mention["entity_id"]]])
    except (KeyError, TypeError) as err:
        raise StudyError(f"{where}: not in Mewsli-X's format (schema.py): {err.__class__.__name__} {err}") from None
    return RankingSet(questions, relevant, candidates, marked_questions, marked_candidates)


def _mewslix_archive(path: str, where: str, language: str, split: str) -> RankingSet | list[dict]:
    if split in MEWSLIX_PAIRS:
        return _archive_jsonl(path, where, (MEWSLIX_PAIRS[split],))[MEWSLIX_PAIRS[split]]
    rows = _archive_jsonl(path, where, MEWSLIX_FILES)
    return _mewslix_ranking(*(rows[name] for name in MEWSLIX_FILES), language, where)


# {task: reader(archive path, where, language, split)}: tasks whose hub data is a ``HubArchive`` of the original files
HUB_ARCHIVE_READERS = {"mewslix": _mewslix_archive}


def _lareqa_release(files: dict[str, Path], urls: dict[str, str], language: str) -> RankingSet:
    """The release names each XQuAD-R file by its language (``xquad-r/de.json``)."""
    return _lareqa_ranking({Path(p).stem: f for p, f in files.items()}, language,
                           {Path(p).stem: url for p, url in urls.items()})


# {task: reader({path: local copy}, {path: URL}, language)}: tasks whose data is ``ReleaseFiles`` on GitHub
RELEASE_READERS = {"lareqa": _lareqa_release}

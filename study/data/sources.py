"""Read a task's English training/dev data and its per-language test data, into one schema per task kind.

Two paths: the Hugging Face hub (the parquet splits, for Mewsli-X the archive of its original files, for LAReQA its
original files on GitHub at a pinned commit, named in ``study.tasks``; the real path for users with internet), or
``--data-dir``: a directory holding the tasks' original files, laid out as their upstream repositories ship them
(this is how ``../shared/data`` is laid out):

    tatoeba/v1/tatoeba.{xxx}-eng.{xxx,eng}          LASER, ISO 639-3 codes
    xcopa/data/{lang}/{test,val}.{lang}.jsonl        cambridgeltl/xcopa; English COPA as copa/{train,val}.jsonl
    siqa/socialIQa_v1.4_{trn,dev}.jsonl              Social IQa v1.4 (XTREME-R's XCOPA trains on it first)
    xquad/xquad.{lang}.json[.gz]                     deepmind/xquad (SQuAD format); squad/{train,dev}-v1.1.json
    mlqa/test/test-context-{lang}-question-{lang}.json, tydiqa/tydiqa-goldp-dev-{lang}.json   (SQuAD format)
    lareqa/xquad-r/{lang}.json[.gz]                  google-research-datasets/lareqa
    udpos/UD_*/{lang}_*-ud-{train,dev,test}.conllu[.gz]   UniversalDependencies (UPOS = column 4)
    xnli/XNLI-1.0/xnli.{dev,test}.tsv, xnli/multinli.train.en.tsv (XNLI-MT)
    mewslix/{candidate_set_entities,wikinews_mentions-test}.jsonl   the dataset's get-mewsli-x.sh output; its
        wikipedia_pairs-{train,dev}.jsonl are the dual encoder's English mention-entity pairs
    panx/{lang}/{train,dev,test}                     "token<TAB>tag" lines, blank line between sentences

Schemas: classification {text_a, text_b, label}; multiple-choice {premise, question, choices, label};
tagging {tokens, tags}; qa {id, context, question, answers}; retrieval: ``Bitext`` / ``RankingSet`` (Mewsli-X train
and dev: the rows of its mention-entity pairs, ``study.data.dual_encoder.mewslix_pairs`` reads them).
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

from study import tasks as T
from study.data.dual_encoder import check_mention, entity_description, lareqa_candidate, mention_query, spans_of
from study.data.pocket import pocket_retrieval, pocket_topic
from study.errors import StudyError
from study.hub import download, load_hub_split, release_file, release_url
from study.languages import get_language

TATOEBA_CODES = {"fa": "pes", "sw": "swh", "zh": "cmn"}  # LASER's codes where they differ from ISO 639-3 macro


@dataclass(frozen=True)
class Bitext:
    """Tatoeba-style retrieval: source[i] translates english[i]."""

    source: list[str]
    english: list[str]


@dataclass(frozen=True)
class RankingSet:
    """LAReQA-style retrieval: each question's relevant candidate ids among all candidates of the language.
    ``dual_encoder_questions`` / ``dual_encoder_candidates``: the same items as XTREME-R's fine-tuned dual encoder
    reads them (``study.data.dual_encoder``: LAReQA candidates with their paragraph, Mewsli-X queries with the
    mention marked)."""

    questions: list[str]
    relevant: list[list[int]]
    candidates: list[str]
    dual_encoder_questions: list[str]
    dual_encoder_candidates: list[str]


# --- file helpers ---------------------------------------------------------------------------------------------


def _on_disk(path: Path) -> Path | None:
    """``path``, or else ``path.gz``, whichever is a file; None when neither is."""
    return next((c for c in (path, path.with_name(path.name + ".gz")) if c.is_file()), None)


def _open_text(path: Path):
    """Open ``path`` or ``path.gz`` as UTF-8 text; a missing file is a clear error."""
    found = _on_disk(path)
    if found is None:
        raise StudyError(f"missing data file {path} (or {path.name}.gz); see the --data-dir layout in the README")
    return gzip.open(found, "rt", encoding="utf-8") if found.suffix == ".gz" else open(found, encoding="utf-8")


def _read_json(path: Path, where: str | None = None):
    """The JSON in ``path``; ``where`` names it in errors (default: the path)."""
    with _open_text(path) as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as err:
            raise StudyError(f"malformed JSON in {where or path}, line {err.lineno}: {err.msg}") from None


def _jsonl_rows(handle, where) -> list[dict]:
    rows = []
    for number, line in enumerate(handle, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise StudyError(f"malformed JSON line in {where}, line {number}: {err.msg}") from None
    return rows


def _read_jsonl(path: Path) -> list[dict]:
    with _open_text(path) as handle:
        return _jsonl_rows(handle, path)


def _archive_jsonl(path: str, where: str, names: tuple[str, ...]) -> dict[str, list[dict]]:
    """{name: rows} of the JSON-lines files ``names`` in a .tar.gz (in whatever folder it keeps them), read in one
    pass without unpacking the rest (Mewsli-X's raw.tar.gz also holds 300 MB of training pairs)."""
    found: dict[str, list[dict]] = {}
    try:
        with tarfile.open(path, "r|gz") as archive:
            for member in archive:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in names:  # lines as bytes, json decodes them (a stream cannot seek)
                    found[name] = _jsonl_rows(archive.extractfile(member), f"{where}:{member.name}")
                    if len(found) == len(names):
                        break
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as err:
        raise StudyError(f"{where} is not a readable .tar.gz ({err}): delete its copy {path} to download it "
                         "again") from None
    missing = [name for name in names if name not in found]
    if missing:
        raise StudyError(f"{where} has no {', '.join(missing)}")
    return found


def _squad_records(data: dict, path: Path) -> list[dict]:
    try:
        return [{"id": qa["id"], "context": paragraph["context"], "question": qa["question"],
                 "answers": {"text": [a["text"] for a in qa["answers"]],
                             "answer_start": [a["answer_start"] for a in qa["answers"]]}}
                for article in data["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    except (KeyError, TypeError) as err:
        raise StudyError(f"{path} is not in SQuAD format (missing {err})") from None


def _conllu_records(path: Path) -> list[dict]:
    """Sentences of a CoNLL-U file as {tokens, tags} with UPOS tags; multi-word and empty nodes skipped."""
    records, tokens, tags = [], [], []
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line:
                if tokens:
                    records.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
            elif not line.startswith("#"):
                columns = line.split("\t")
                if len(columns) != 10:
                    raise StudyError(f"malformed CoNLL-U line in {path}, line {number}: "
                                     f"expected 10 tab-separated columns, found {len(columns)}")
                if "-" not in columns[0] and "." not in columns[0]:
                    tokens.append(columns[1])
                    tags.append(columns[3])
    if tokens:
        records.append({"tokens": tokens, "tags": tags})
    return records


def _conll_records(path: Path, language: str) -> list[dict]:
    """"token<TAB>tag" lines (PAN-X). XTREME's files prefix every token with its language ("de:Berlin"); only that
    prefix is removed, so tokens such as "10:30", ":" or "Re:" stay as they are."""
    records, tokens, tags = [], [], []
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                if tokens:
                    records.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise StudyError(f"malformed tagging line in {path}, line {number}: expected token<TAB>tag")
            token = parts[0].removeprefix(f"{language}:")
            tokens.append(token)
            tags.append(parts[-1])
    if tokens:
        records.append({"tokens": tokens, "tags": tags})
    return records


def _udpos_file(data_dir: Path, lang: str, split: str) -> list[Path]:
    files = sorted((data_dir / "udpos").glob(f"UD_*/{lang}_*-ud-{split}.conllu*"))
    if not files:
        raise StudyError(f"missing data file {data_dir}/udpos/UD_*/{lang}_*-ud-{split}.conllu[.gz]")
    return [f.with_suffix("") if f.suffix == ".gz" else f for f in files]


XNLI_LABEL_ALIASES = {"contradictory": "contradiction"}  # the XNLI-MT English training file's spelling


def _xnli_records(path: Path, language: str | None) -> list[dict]:
    labels = {name: i for i, name in enumerate(T.TASKS["xnli"].labels)}
    with _open_text(path) as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = []
        for number, row in enumerate(reader, start=2):
            if language and row.get("language") != language:
                continue
            label = row.get("gold_label") or row.get("label")
            label = XNLI_LABEL_ALIASES.get(label, label)
            if label not in labels:
                raise StudyError(f"bad label {label!r} in {path}, line {number}: expected one of {list(labels)}")
            rows.append({"text_a": row.get("sentence1") or row.get("premise"),
                         "text_b": row.get("sentence2") or row.get("hypo"), "label": labels[label]})
    return rows


# --- local directory ------------------------------------------------------------------------------------------


def _tatoeba_local(task: T.TaskSpec, split: str, lang: str, root: Path) -> Bitext:
    code = TATOEBA_CODES.get(lang, get_language(lang).iso3)
    base = root / "tatoeba" / "v1" / f"tatoeba.{code}-eng"
    with _open_text(base.with_name(f"{base.name}.{code}")) as src, \
            _open_text(base.with_name(f"{base.name}.eng")) as eng:
        source, english = src.read().splitlines(), eng.read().splitlines()
    if len(source) != len(english):
        raise StudyError(f"{base}.{code} has {len(source)} lines but {base}.eng has {len(english)}")
    return Bitext(source, english)


def _xcopa_local(task: T.TaskSpec, split: str, lang: str, root: Path) -> list[dict]:
    """COPA / XCOPA rows; a label other than 0 or 1, or a question other than cause or effect, names its line."""
    path = root / "copa" / f"{'train' if split == 'train' else 'val'}.jsonl" if lang == "en" and split != "test" \
        else root / "xcopa" / "data" / lang / f"{'val' if split == 'dev' else 'test'}.{lang}.jsonl"
    records = []
    for number, r in enumerate(_read_jsonl(path), start=1):
        try:
            record = {"premise": r["premise"], "question": r["question"], "choices": [r["choice1"], r["choice2"]],
                      "label": r["label"]}
        except KeyError as err:
            raise StudyError(f"{path}, line {number}: not in COPA's format (missing {err})") from None
        if record["label"] not in (0, 1, "0", "1") or record["question"] not in T.COPA_QUESTIONS:
            raise StudyError(f"{path}, line {number}: label {record['label']!r}, question {record['question']!r}; "
                             f"expected a label 0 or 1 and a question {' or '.join(T.COPA_QUESTIONS)}")
        records.append({**record, "label": int(record["label"])})
    return records


SIQA_LETTERS = {"A": 0, "B": 1, "C": 2}  # the release's "correct" field


def _siqa_local(task: T.TaskSpec, split: str, lang: str, root: Path) -> list[dict]:
    """Social IQa v1.4 as XTREME's download leaves it (siqa/socialIQa_v1.4_{trn,dev}.jsonl, the answer letter in
    each row's ``correct``; without it, the release's ``-labels.lst`` beside the file, 1-based); its "test" is the
    dev set (the labelled test set is not public)."""
    path = root / "siqa" / f"socialIQa_v1.4_{'trn' if split == 'train' else 'dev'}.jsonl"
    rows = _read_jsonl(path)
    if rows and "correct" not in rows[0]:
        with _open_text(path.with_name(f"{path.stem}-labels.lst")) as handle:
            labels = [line.strip() for line in handle if line.strip()]
        if len(labels) != len(rows):
            raise StudyError(f"{path}: {len(rows)} rows but {len(labels)} labels in {path.stem}-labels.lst")
        bad = next((n for n, label in enumerate(labels, start=1) if label not in ("1", "2", "3")), None)
        if bad:
            raise StudyError(f"{path.stem}-labels.lst, line {bad}: label {labels[bad - 1]!r}; expected 1, 2 or 3")
        rows = [{**r, "correct": "ABC"[int(label) - 1]} for r, label in zip(rows, labels)]
    records = []
    for number, r in enumerate(rows, start=1):
        try:
            record = {"premise": r["context"], "question": r["question"],
                      "choices": [r["answerA"], r["answerB"], r["answerC"]], "label": SIQA_LETTERS[r["correct"]]}
        except KeyError as err:
            raise StudyError(f"{path}, line {number}: not in Social IQa's format (missing or unknown {err})") \
                from None
        if not all(isinstance(text, str) for text in (record["premise"], record["question"], *record["choices"])):
            raise StudyError(f"{path}, line {number}: context, question and answers must be text")
        records.append(record)
    return records


# under --data-dir, the first that exists; {name}: the language's English name in lower case (TyDiQA's upstream files)
QA_TEST_FILES = {"xquad": ("xquad/xquad.{lang}.json",),
                 "mlqa": ("mlqa/test/test-context-{lang}-question-{lang}.json",),
                 "tydiqa": ("tydiqa/tydiqa-goldp-dev-{lang}.json",
                            "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{name}.json",
                            "tydiqa/tydiqa-goldp-dev-{name}.json")}


# English files under --data-dir: TyDiQA-GoldP trains on its own English data (XTREME's scripts/train_qa.sh); its
# English dev is the English test set, so selection uses SQuAD v1.1 dev, as every other QA task does
QA_ENGLISH_FILES = {"tydiqa": {"train": "tydiqa/tydiqa-goldp-v1.1-train/tydiqa.en.train.json"}}


def _qa_local(task: T.TaskSpec, split: str, lang: str, root: Path) -> list[dict]:
    if split in ("train", "dev"):
        path = root / QA_ENGLISH_FILES.get(task.name, {}).get(split, f"squad/{split}-v1.1.json")
    else:
        name = get_language(lang).name.lower()
        names = [pattern.format(lang=lang, name=name) for pattern in QA_TEST_FILES[task.name]]
        found = [root / n for n in names if _on_disk(root / n)]
        if not found:
            raise StudyError(f"missing data file for {task.name} {lang} under {root}: expected one of "
                             f"{', '.join(names)} (or .gz); see the --data-dir layout in the README")
        path = found[0]
    return _squad_records(_read_json(path), path)


def _xnli_local(task: T.TaskSpec, split: str, lang: str, root: Path) -> list[dict]:
    if split == "train":
        return _xnli_records(root / "xnli" / "multinli.train.en.tsv", None)
    return _xnli_records(root / "xnli" / "XNLI-1.0" / f"xnli.{split}.tsv", lang)


# {task: reader(task, split, language, root)}: one split from the original files under --data-dir
LOCAL_READERS = {
    "tatoeba": _tatoeba_local,
    "xcopa": _xcopa_local,
    "siqa": _siqa_local,
    "xquad": _qa_local, "mlqa": _qa_local, "tydiqa": _qa_local,
    "lareqa": lambda task, split, lang, root: _lareqa_ranking(
        {code: root / "lareqa" / "xquad-r" / f"{code}.json" for code in task.languages}, lang),
    "mewslix": lambda task, split, lang, root: _mewslix_local(root / "mewslix", lang, split),
    "udpos": lambda task, split, lang, root: [r for f in _udpos_file(root, lang, split) for r in _conllu_records(f)],
    "panx": lambda task, split, lang, root: _conll_records(root / "panx" / lang / split, lang),
    "xnli": _xnli_local,
}


def _local(task: T.TaskSpec, split: str, lang: str, root: Path):
    """Records (or a Bitext / RankingSet) of one split from the original files under ``root``."""
    if task.name not in LOCAL_READERS:
        raise StudyError(f"task {task.name!r} has no local-file reader: load it from the hub (omit --data-dir)")
    return LOCAL_READERS[task.name](task, split, lang, root)


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
                      [lareqa_candidate(c, p) for c, p in zip(candidates, paragraphs)])


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


# --- hub ------------------------------------------------------------------------------------------------------


def hub_source(task: T.TaskSpec, split: str, lang: str) -> tuple[str, str | None, str]:
    """(repository, config, split) of one split of a task on the hub, for one language."""
    if split not in task.hub:
        raise StudyError(f"task {task.name!r} has no {split} split")
    repo, config, hub_split, *_ = task.hub[split]
    return repo, config.format(**_hub_names(lang)) if config else None, hub_split


def _hub_names(lang: str) -> dict[str, str]:
    """What a hub config or id prefix may name a language by: its code, English name, LASER (Tatoeba) code."""
    return {"lang": lang, "name": get_language(lang).name.lower(),
            "laser": TATOEBA_CODES.get(lang, get_language(lang).iso3)}


def _hub(task: T.TaskSpec, split: str, lang: str):
    source = task.hub.get(split)
    if isinstance(source, T.HubArchive):
        return HUB_ARCHIVE_READERS[task.name](download(source.repo, source.path), f"dataset file {source.repo}/"
                                              f"{source.path}", lang, split)
    if isinstance(source, T.ReleaseFiles):
        return RELEASE_READERS[task.name](
            {path: Path(release_file(source.repo, source.commit, path)) for path in source.paths},
            {path: release_url(source.repo, source.commit, path) for path in source.paths}, lang)
    repo, config, hub_split = hub_source(task, split, lang)
    rows = load_hub_split(repo, config, hub_split)
    id_prefix = task.hub[split][3:]  # an id prefix keeps one language of a mixed split
    if id_prefix:
        prefix = id_prefix[0].format(**_hub_names(lang))
        rows = rows.filter(lambda row: row["id"].startswith(prefix))
    return HUB_NORMALISERS[task.kind](rows, task, repo)


TAG_COLUMNS = ("ner_tags", "pos_tags", "tags", "upos")  # what tagging repositories call their tags


def _tags_hub(rows, task: T.TaskSpec, repo: str) -> list[dict]:
    """Tag names per token: class labels are decoded; string tags (some cards do not say which they are) must be
    names of the task's label set."""
    column = next((c for c in TAG_COLUMNS if c in rows.column_names), None)
    if column is None:
        raise StudyError(f"dataset {repo} has no tag column ({', '.join(TAG_COLUMNS)}): {rows.column_names}")
    feature = rows.features[column].feature
    names = getattr(feature, "names", None)
    records = [{"tokens": r["tokens"], "tags": [names[t] for t in r[column]] if names else r[column]} for r in rows]
    unknown = sorted({t for r in records for t in r["tags"]} - set(task.labels))
    if unknown:
        raise StudyError(f"dataset {repo} has tags outside the task's label set: {', '.join(unknown[:5])}")
    return records


def _choices_hub(rows) -> list[dict]:
    """COPA's columns (premise, choice1, choice2, label 0/1) or Social IQa's (context, answerA-C, label "1"-"3")."""
    if "answerA" in rows.column_names:
        return [{"premise": r["context"], "question": r["question"], "choices": [r["answerA"], r["answerB"],
                 r["answerC"]], "label": int(r["label"]) - 1} for r in rows]
    return [{"premise": r["premise"], "question": r["question"], "choices": [r["choice1"], r["choice2"]],
             "label": r["label"]} for r in rows]


# {task kind: the columns its hub normaliser reads (one of a tuple is enough)}: what `study.hub check` looks for
HUB_COLUMNS = {T.CLASSIFICATION: ("premise", "hypothesis", "label"),
               T.MULTIPLE_CHOICE: (("premise", "context"), "question", ("choice1", "answerA"), "label"),
               T.TAGGING: ("tokens", TAG_COLUMNS), T.QA: ("id", "context", "question", "answers"),
               T.BITEXT_RETRIEVAL: ("sentence1", "sentence2")}
# {task kind: normaliser(hub rows, task, repo) -> the kind's schema}
HUB_NORMALISERS = {
    T.CLASSIFICATION: lambda rows, *_: [{"text_a": r["premise"], "text_b": r["hypothesis"], "label": r["label"]}
                                        for r in rows],
    T.MULTIPLE_CHOICE: lambda rows, *_: _choices_hub(rows),
    T.TAGGING: _tags_hub,
    T.QA: lambda rows, *_: [{"id": r["id"], "context": r["context"], "question": r["question"],
                             "answers": {"text": r["answers"]["text"], "answer_start": r["answers"]["answer_start"]}}
                            for r in rows],
    T.BITEXT_RETRIEVAL: lambda rows, *_: Bitext([r["sentence1"] for r in rows], [r["sentence2"] for r in rows]),
}


# --- public API -----------------------------------------------------------------------------------------------


# XQuAD's English test questions are SQuAD v1.1 dev questions (same ids): selecting a run on them would select on
# the test set, so the English dev set of these tasks leaves them out
DEV_HOLDS_TEST_QUESTIONS = ("xquad",)


def load_split(task: T.TaskSpec, split: str, language: str = "en", data_dir: str | Path | None = None):
    """One split of a task: ``train``/``dev`` are English (dev without the questions of an English test set it
    contains: ``DEV_HOLDS_TEST_QUESTIONS``); ``test`` is per language.

    Returns a list of records in the task kind's schema, or a ``Bitext`` / ``RankingSet`` for retrieval.
    """
    if split not in ("train", "dev", "test"):
        raise StudyError(f"unknown split {split!r}: choose train, dev or test")
    if split != "test" and language != "en":
        raise StudyError(f"{split} data is English only (zero-shot transfer); got language {language!r}")
    if split == "test":
        task.check_languages([language])
    if task.suite == "pocket":
        return _pocket(task, split, language)
    if data_dir is not None:
        root = Path(data_dir)
        if not root.is_dir():
            raise StudyError(f"--data-dir {root} is not a directory")
        records = _local(task, split, language, root)
    else:
        records = _hub(task, split, language)
    if split == "dev" and task.name in DEV_HOLDS_TEST_QUESTIONS:
        test_ids = {r["id"] for r in load_split(task, "test", "en", data_dir)}
        records = [r for r in records if r["id"] not in test_ids]
    return records


def _pocket(task: T.TaskSpec, split: str, language: str):
    if task.name == "pocket-retrieval":
        if split != "test":
            raise StudyError("pocket-retrieval has no training data: it evaluates a bare encoder")
        pairs = pocket_retrieval()[language]
        return Bitext([p[0] for p in pairs], [p[1] for p in pairs])
    data = pocket_topic()
    items = data.splits[split] if language == "en" else data.targets[language]
    return [{"text_a": item.text, "text_b": None, "label": item.label} for item in items]


def subsample(records: list, limit: int | None, seed: int) -> list:
    """A seeded random subset in the original order (data files are often sorted by label)."""
    if limit is None or limit >= len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in keep]

"""Read a task's English training/dev data and its per-language test data, into one schema per task kind.

Two paths: the Hugging Face hub (the parquet splits, for Mewsli-X the archive of its original files, for LAReQA its
original files on GitHub at a pinned commit, named in ``study.data.tasks``; the real path for users with internet), or
``--data-dir``: a directory holding the tasks' original files, laid out as their upstream repositories ship them
(google-research/xtreme's ``scripts/download_data.sh`` fetches the same files):

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
and dev: the rows of its mention-entity pairs, ``study.data.retrieval_pairs.mewslix_pairs`` reads them).
"""

from __future__ import annotations

import random
from pathlib import Path

from study.core.errors import StudyError
from study.core.languages import get_language
from study.data import tasks as T
from study.data.formats import (
    Bitext,
    _conll_records,
    _conllu_records,
    _on_disk,
    _open_text,
    _read_json,
    _read_jsonl,
    _squad_records,
    _udpos_file,
    _xnli_records,
)
from study.data.hub import download, load_hub_split, release_file, release_url
from study.data.pocket import pocket_retrieval, pocket_topic
from study.data.rankings import (
    HUB_ARCHIVE_READERS,
    RELEASE_READERS,
    _lareqa_ranking,
    _mewslix_local,
)

TATOEBA_CODES = {"fa": "pes", "sw": "swh", "zh": "cmn"}  # LASER's codes where they differ from ISO 639-3 macro


# --- file helpers ---------------------------------------------------------------------------------------------


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
        rows = [{**r, "correct": "ABC"[int(label) - 1]} for r, label in zip(rows, labels, strict=True)]
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


# {task kind: the columns its hub normaliser reads (one of a tuple is enough)}: what `study.data.hub check` looks for
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
        try:
            records = _local(task, split, language, root)
        except StudyError as err:  # which of the study's files: the task, split and language
            raise StudyError(f"{task.name} {split} data ({language}): {err}") from None
        if not _count(records):
            raise StudyError(f"{task.name} {split} data ({language}) under {root} has no examples: an empty file?")
    else:
        records = _hub(task, split, language)
    if split == "dev" and task.name in DEV_HOLDS_TEST_QUESTIONS:
        test_ids = {r["id"] for r in load_split(task, "test", "en", data_dir)}
        records = [r for r in records if r["id"] not in test_ids]
    return records


def _count(records) -> int:
    """How many examples a split holds (records, a Bitext's sentences, a RankingSet's questions)."""
    return len(records.source if isinstance(records, Bitext) else getattr(records, "questions", records))


def check_local_files(task: T.TaskSpec, languages, data_dir: str | Path) -> None:
    """Read and parse every file under ``data_dir`` a run of ``task`` reads — English train and dev, each target
    language's test — so that a missing, truncated or malformed file stops before any worker starts, naming the
    file, line and language, rather than failing every retry of a training run."""
    for split in ("train", "dev"):
        load_split(task, split, "en", data_dir)
    for language in languages:
        load_split(task, "test", language, data_dir)


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

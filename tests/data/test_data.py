"""Task registry, local-format loaders on real files (tests/fixtures), pocket suite, tokenisation."""

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FIXTURES

from study.core.errors import StudyError
from study.data import tasks as T
from study.data.features import encode_records
from study.data.formats import Bitext, RankingSet
from study.data.pocket import pocket_retrieval, pocket_topic
from study.data.sources import load_split

DOC = FIXTURES / "xtreme_r_tasks.md"  # the task table of XTREME-R (google-research/xtreme evaluate.py)


def test_every_task_kind_has_its_behaviour_in_each_table():
    """Per-kind behaviour lives in tables, one per layer: a task whose kind lacks an entry would fail deep inside a
    run; here it fails at once."""
    from study.data.features import ENCODERS
    from study.data.pairs import VIRTUAL_COPIERS
    from study.data.rankings import HUB_ARCHIVE_READERS, RELEASE_READERS
    from study.data.sources import HUB_COLUMNS, HUB_NORMALISERS, LOCAL_READERS
    from study.evaluation.scoring import SCORERS

    for task in T.TASKS.values():
        if task.needs_training:
            assert task.head and task.kind in ENCODERS and task.kind in VIRTUAL_COPIERS and task.kind in SCORERS
        else:
            assert task.head is None and task.kind not in SCORERS
        if task.suite == "xtreme-r":
            assert task.name in LOCAL_READERS and task.hub, task.name  # both paths: --data-dir and internet
        for source in task.hub.values():
            readers = {T.HubArchive: HUB_ARCHIVE_READERS, T.ReleaseFiles: RELEASE_READERS}.get(type(source))
            assert task.name in readers if readers is not None else task.kind in HUB_NORMALISERS, task.name
    assert set(HUB_COLUMNS) == set(HUB_NORMALISERS)  # study.data.hub check looks for what each normaliser reads


def test_task_languages_are_exactly_the_reference_lists():
    rows = re.findall(r"^\| \d+ \| .*?\(`(\w+)`\) \|.*?\|.*?\| \d+ \| (.*?) \|$", DOC.read_text(), re.M)
    assert len(rows) == 10
    for key, languages in rows:
        languages = re.sub(r"\(.*?\)|[*]", "", languages.split(":", 1)[-1])  # lareqa: "XQuAD-R languages: ..."
        expected = set(languages.split())
        assert set(T.TASKS[key].languages) == expected, key
        assert len(T.TASKS[key].languages) == len(expected)


def test_every_task_has_kind_metric_head_and_training_source():
    for task in T.TASKS.values():
        assert task.metric in ("accuracy", "f1", "f1_em", "map@20") and task.train_source
        assert (task.head is None) == (task.kind in T.RETRIEVAL_KINDS)
    assert {t.name: t.protocol for t in T.TASKS.values() if t.protocol == "XTREME-R"}.keys() == {
        "xnli", "udpos", "panx", "xquad", "mlqa", "tydiqa"}  # the others name their proxy
    assert T.TASKS["pocket-topic"].protocol == "pocket suite, not XTREME-R"


def _lines(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def test_local_loaders_count_what_the_files_hold():
    tatoeba = load_split(T.TASKS["tatoeba"], "test", "fa", FIXTURES)  # LASER's pes code
    assert isinstance(tatoeba, Bitext) and len(tatoeba.source) == len(
        _lines(FIXTURES / "tatoeba/v1/tatoeba.pes-eng.pes"))
    xcopa = load_split(T.TASKS["xcopa"], "test", "sw", FIXTURES)
    assert len(xcopa) == len(_lines(FIXTURES / "xcopa/data/sw/test.sw.jsonl")) == 500
    assert xcopa[0]["choices"] and xcopa[0]["label"] in (0, 1)
    xquad = load_split(T.TASKS["xquad"], "test", "de", FIXTURES)
    with gzip.open(FIXTURES / "xquad/xquad.de.json.gz", "rt", encoding="utf-8") as handle:
        questions = [qa for article in json.load(handle)["data"] for p in article["paragraphs"] for qa in p["qas"]]
    assert len(xquad) == len(questions) == 74  # every question of the cut file (tests/fixtures/README.md)
    assert all(r["context"][s:].startswith(t) for r in xquad[:50]
               for s, t in zip(r["answers"]["answer_start"], r["answers"]["text"], strict=True))
    udpos = load_split(T.TASKS["udpos"], "test", "de", FIXTURES)
    sent_ids = [line for line in _lines(FIXTURES / "udpos/UD_German-PUD/de_pud-ud-test.conllu.gz")
                if line.startswith("# sent_id")]
    assert len(udpos) == len(sent_ids) == 1000 and all(len(r["tokens"]) == len(r["tags"]) for r in udpos)
    lareqa = load_split(T.TASKS["lareqa"], "test", "de", FIXTURES)
    assert isinstance(lareqa, RankingSet) and len(lareqa.questions) == 1190
    assert all(len(r) == 11 for r in lareqa.relevant)  # one answer sentence per XQuAD-R language


def test_english_train_and_dev_for_tagging():
    train = load_split(T.TASKS["udpos"], "train", "en", FIXTURES)
    assert len(train) == 3457  # UD English-LinES train
    assert set(t for r in train for t in r["tags"]) <= set(T.TASKS["udpos"].labels)


def test_malformed_files_name_file_and_line(tmp_path):
    (tmp_path / "xcopa/data/sw").mkdir(parents=True)
    (tmp_path / "xcopa/data/sw/test.sw.jsonl").write_text('{"premise": "a"}\n{broken\n')
    with pytest.raises(StudyError, match=r"test.sw.jsonl, line 2"):
        load_split(T.TASKS["xcopa"], "test", "sw", tmp_path)
    (tmp_path / "udpos/UD_X").mkdir(parents=True)
    (tmp_path / "udpos/UD_X/de_x-ud-test.conllu").write_text("# c\n1\tDer\tder\tDET\n")
    with pytest.raises(StudyError, match=r"de_x-ud-test.conllu, line 2: expected 10"):
        load_split(T.TASKS["udpos"], "test", "de", tmp_path)
    with pytest.raises(StudyError, match=r"missing data file .*xquad.de.json"):
        load_split(T.TASKS["xquad"], "test", "de", tmp_path)


SQUAD_ONE = {"data": [{"paragraphs": [{"context": "Paris is big.", "qas": [
    {"id": "q1", "question": "Which?", "answers": [{"text": "Paris", "answer_start": 0}]}]}]}]}


def test_release_files_are_read_as_released(tmp_path):
    """XNLI-MT, PAN-X and TyDiQA-GoldP files are read as the benchmarks ship them."""
    # XNLI-MT's English training file spells the label "contradictory"
    (tmp_path / "xnli").mkdir()
    (tmp_path / "xnli/multinli.train.en.tsv").write_text(
        "premise\thypo\tlabel\nA man.\tNo one.\tcontradictory\nA man.\tA person.\tentailment\n")
    rows = load_split(T.TASKS["xnli"], "train", "en", tmp_path)
    labels = T.TASKS["xnli"].labels
    assert [labels[r["label"]] for r in rows] == ["contradiction", "entailment"]
    # PAN-X: only the "<lang>:" prefix of the language being read is removed
    (tmp_path / "panx/de").mkdir(parents=True)
    (tmp_path / "panx/de/test").write_text("de:Um\tO\nde:10:30\tO\nde::\tO\nde:Re:\tO\nde:Berlin\tB-LOC\n\n"
                                           "10:30\tO\n:\tO\nRe:\tO\n")
    sentences = load_split(T.TASKS["panx"], "test", "de", tmp_path)
    assert [r["tokens"] for r in sentences] == [["Um", "10:30", ":", "Re:", "Berlin"], ["10:30", ":", "Re:"]]
    # TyDiQA-GoldP: the upstream file names (language names, v1.1 folder) as well as ISO codes
    (tmp_path / "tydiqa/tydiqa-goldp-v1.1-dev").mkdir(parents=True)
    (tmp_path / "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-arabic.json").write_text(json.dumps(SQUAD_ONE))
    assert [r["id"] for r in load_split(T.TASKS["tydiqa"], "test", "ar", tmp_path)] == ["q1"]
    (tmp_path / "tydiqa/tydiqa-goldp-dev-sw.json").write_text(json.dumps(SQUAD_ONE))
    assert len(load_split(T.TASKS["tydiqa"], "test", "sw", tmp_path)) == 1
    with pytest.raises(StudyError, match=r"expected one of tydiqa/tydiqa-goldp-dev-fi.json, .*finnish.json"):
        load_split(T.TASKS["tydiqa"], "test", "fi", tmp_path)


def test_qa_training_and_selection_sources_are_xtreme_rs(tmp_path):
    """XQuAD-en's questions are SQuAD v1.1 dev questions, so English dev selection must not see them;
    TyDiQA-GoldP trains on its own English data."""
    def squad(ids):
        return {"data": [{"paragraphs": [{"context": "Paris is big.", "qas": [
            {"id": i, "question": "Which?", "answers": [{"text": "Paris", "answer_start": 0}]} for i in ids]}]}]}

    (tmp_path / "squad").mkdir()
    (tmp_path / "xquad").mkdir()
    (tmp_path / "squad/dev-v1.1.json").write_text(json.dumps(squad(["d1", "x1", "d2", "x2"])))
    (tmp_path / "xquad/xquad.en.json").write_text(json.dumps(squad(["x1", "x2"])))
    assert [r["id"] for r in load_split(T.TASKS["xquad"], "dev", "en", tmp_path)] == ["d1", "d2"]
    assert len(load_split(T.TASKS["mlqa"], "dev", "en", tmp_path)) == 4  # MLQA's questions are not SQuAD's
    # TyDiQA-GoldP trains on its own English training file, as XTREME's train_qa.sh does
    (tmp_path / "tydiqa/tydiqa-goldp-v1.1-train").mkdir(parents=True)
    (tmp_path / "tydiqa/tydiqa-goldp-v1.1-train/tydiqa.en.train.json").write_text(json.dumps(squad(["english-1"])))
    assert [r["id"] for r in load_split(T.TASKS["tydiqa"], "train", "en", tmp_path)] == ["english-1"]
    assert len(load_split(T.TASKS["tydiqa"], "dev", "en", tmp_path)) == 4  # selection: SQuAD dev, not the test set


def test_lareqa_answer_at_a_sentence_break_belongs_to_the_sentence_starting_there():
    """Sentences are half-open [start, end), as XTREME's LAReQA code reads them."""
    from study.data.rankings import _xquad_r_language

    context = "他出生于巴黎。他的专利很多。"
    data = {"data": [{"paragraphs": [{"context": context, "sentences": ["他出生于巴黎。", "他的专利很多。"],
                                      "sentence_breaks": [[0, 7], [7, 14]],
                                      "qas": [{"id": "q", "question": "专利?",
                                               "answers": [{"text": "他的专利很多", "answer_start": 7}]}]}]}]}
    candidates, paragraphs, questions = _xquad_r_language(data, Path("zh.json"))
    assert questions["q"] == ("专利?", 1) and candidates[1].startswith("他的专利") and paragraphs == [context] * 2


def test_lareqa_candidates_are_the_contexts_slices_and_every_question_is_placed_or_the_read_stops():
    """XTREME's utils_lareqa cuts the candidates out of the context by sentence_breaks (the files' "sentences" list
    differs from those slices twice in tr.json); a question whose answer lies in no sentence (XTREME skips it; the
    released files have none) or an id given twice stops the read instead of being scored against a wrong sentence
    or merged."""
    from study.data.rankings import _xquad_r_language

    context = "One two. Three four."

    def file(breaks, ids=("q",), start=9, sentences=("stale", "list")):
        qas = [{"id": i, "question": "?", "answers": [{"text": "Three", "answer_start": start}]} for i in ids]
        return {"data": [{"paragraphs": [{"context": context, "sentences": list(sentences),
                                          "sentence_breaks": breaks, "qas": qas}]}]}

    candidates, paragraphs, questions = _xquad_r_language(file([[0, 8], [9, 20]]), Path("tr.json"))
    assert candidates == ["One two.", "Three four."] and questions["q"] == ("?", 1)
    with pytest.raises(StudyError, match=r"^tr.json: question 'q' has its answer at 8, in no sentence"):
        _xquad_r_language(file([[0, 8], [9, 20]], start=8), Path("tr.json"))  # the space between the sentences
    with pytest.raises(StudyError, match=r"^tr.json: question id 'q' occurs twice"):
        _xquad_r_language(file([[0, 8], [9, 20]], ids=("q", "q")), Path("tr.json"))


def test_lareqa_release_files_download_once_and_read_as_the_data_dir_reads_them(tmp_path, monkeypatch):
    """study.data.hub.release_file (datasets' cached_path) against the replica's release route, in-process: each
    language's ranking equals --data-dir's on the same files; a second read needs no server; a 404, a dead server and
    offline mode with nothing cached are one line naming the URL."""
    import dataclasses
    import threading
    from http.server import ThreadingHTTPServer

    import datasets.config
    import hub_server
    from hub_replica import lareqa_originals

    task = T.TASKS["lareqa"]
    source = task.hub["test"]
    assert [Path(p).stem for p in source.paths] == list(task.languages)  # the reader knows a file's language by name
    for root in (tmp_path / "releases" / source.repo / source.commit / "xquad-r", tmp_path / "data/lareqa/xquad-r"):
        root.mkdir(parents=True)
        for lang, text in lareqa_originals().items():
            (root / f"{lang}.json").write_text(text)
    monkeypatch.setattr(hub_server, "ROOT", tmp_path)
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", str(tmp_path / "cache"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), hub_server.Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/releases"
    monkeypatch.setenv("STUDY_RELEASE_BASE_URL", base)
    at = {commit: dataclasses.replace(task, hub={"test": T.ReleaseFiles(source.repo, commit, source.paths)})
          for commit in ("0" * 40, "1" * 40)}
    try:
        online = {lang: load_split(task, "test", lang) for lang in task.languages}
        with pytest.raises(StudyError, match=rf"^release file {re.escape(base)}/{source.repo}/0{{40}}/xquad-r/ar\.json "
                                             r"does not exist \(HTTP 404\): [^\n]*--data-dir[^\n]*$"):
            load_split(at["0" * 40], "test", "de")
    finally:
        server.shutdown()
        server.server_close()
    for lang in task.languages:
        assert online[lang] == load_split(task, "test", lang, tmp_path / "data"), lang
    # q002's answer starts sentence 2 of each language's first paragraph (in zh, where sentence 1's span ends)
    assert online["zh"].relevant[1] == [12 * i + 2 for i in range(11)]
    assert load_split(task, "test", "th") == online["th"]  # the cached copies: the server is gone

    def missing(why: str) -> str:
        return (rf"^release file {re.escape(base)}/{source.repo}/1{{40}}/xquad-r/ar\.json is not in the cache "
                rf"{re.escape(str(tmp_path / 'cache'))} and {why}; run `study hub prefetch` [^\n]*, or pass "
                r"--data-dir with the original files$")

    with pytest.raises(StudyError, match=missing(r"it cannot be downloaded \(ClientConnectorError: [^\n]*\)")):
        load_split(at["1" * 40], "test", "de")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(StudyError, match=missing("HF_HUB_OFFLINE is set")):
        load_split(at["1" * 40], "test", "de")
    assert load_split(task, "test", "ar") == online["ar"]


def test_unknown_task_language_and_split_errors(tmp_path):
    with pytest.raises(StudyError, match="unknown task 'xnl'"):
        T.get_task("xnl")
    with pytest.raises(StudyError, match="task 'xcopa' has no language 'de'"):
        load_split(T.TASKS["xcopa"], "test", "de", tmp_path)
    with pytest.raises(StudyError, match="unknown language code 'zz'"):
        T.TASKS["xnli"].check_languages(["zz"])
    with pytest.raises(StudyError, match="English only"):
        load_split(T.TASKS["xnli"], "train", "de", tmp_path)


def test_unreachable_hub_is_one_line_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(StudyError, match=r"xnli is not in the cache.*HF_HUB_OFFLINE is set.*prefetch.*--data-dir"):
        load_split(T.TASKS["xnli"], "test", "de")


@pytest.mark.e2e
def test_pocket_topic_is_clean_deterministic_and_zero_shot():
    data = pocket_topic()
    assert data.topics == T.POCKET_TOPICS
    assert set(data.targets) | {"en"} == set(T.TASKS["pocket-topic"].languages)
    assert "en" not in data.targets and "sv" not in data.targets  # Swedish: untranslated and too small
    english = {i.text.casefold() for split in data.splits.values() for i in split}
    for items in data.targets.values():
        assert len(items) >= 100 and len({i.label for i in items}) >= 3
        assert not english & {i.text.casefold() for i in items}
    train, dev, test = ({i.text for i in data.splits[s]} for s in ("train", "dev", "test"))
    assert not train & dev and not train & test and not dev & test
    assert all(i.language == "en" for i in data.splits["train"])
    rebuilt = subprocess.run([sys.executable, "-c", "from study.data.pocket import pocket_topic as p; d = p(); "
                              "print(sum(hash((i.text, i.label)) for s in d.splits.values() for i in s))"],
                             capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    again = subprocess.run(rebuilt.args, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert rebuilt.stdout == again.stdout and rebuilt.stdout.strip()


def test_pocket_retrieval_has_30_plus_clean_languages():
    pairs = pocket_retrieval()
    assert len(pairs) >= 30 and set(pairs) == set(T.TASKS["pocket-retrieval"].languages)
    for rows in pairs.values():
        assert len({t for t, _ in rows}) == len(rows) == len({e for _, e in rows})
        assert not any("%" in t or "{" in e for t, e in rows)


def test_tagging_labels_sit_on_first_subtoken(tiny):
    from study.models.registry import load_tokenizer

    tokenizer = load_tokenizer(tiny)
    records = [{"tokens": ["Unbelievably", "good", "."], "tags": ["ADV", "ADJ", "PUNCT"]}]
    row = encode_records(T.TASKS["udpos"], records, tokenizer, 32, "unit")[0]
    labelled = [(tokenizer.convert_ids_to_tokens(i), label)
                for i, label in zip(row["input_ids"], row["labels"], strict=True)]
    tags = [T.TASKS["udpos"].labels.index(t) for t in records[0]["tags"]]
    assert [label for _, label in labelled if label != -100] == tags
    assert labelled[1][1] != -100 and labelled[2][1] == -100  # "▁Un" "bel..." : only the first piece


def test_qa_spans_map_back_to_the_answer_and_cache_is_reused(tiny):
    from study.models.registry import load_tokenizer

    tokenizer = load_tokenizer(tiny)
    records = load_split(T.TASKS["xquad"], "test", "en", FIXTURES)[:40]
    features = encode_records(T.TASKS["xquad"], records, tokenizer, 256, "unit")
    answer = {r["id"]: r["answers"]["text"][0] for r in records}
    found = [f for f in features if f["start_positions"] > 0]
    assert len(found) >= 30
    for f in found:
        start, end = f["offset_mapping"][f["start_positions"]][0], f["offset_mapping"][f["end_positions"]][1]
        context = next(r["context"] for r in records if r["id"] == f["example_id"])
        span = context[start:end]  # sub-word pieces may carry adjacent punctuation, e.g. "(118)"
        assert answer[f["example_id"]] in span and len(span) <= len(answer[f["example_id"]]) + 3
    again = encode_records(T.TASKS["xquad"], records, tokenizer, 256, "unit")
    assert again.cache_files == features.cache_files and again.cache_files


def test_long_questions_are_cut_to_fit_and_every_question_keeps_a_window(tiny):
    """A question that leaves a window no more than a stride of context makes the fast tokenizer panic, so it is cut
    to XTREME's query budget, and every question still gets at least one window (every gold unit is scored)."""
    from study.data.features import qa_window
    from study.models.registry import load_tokenizer
    from study.train.config import TrainConfig
    from study.train.pipeline import validate

    tokenizer = load_tokenizer(tiny)
    context = "Paris is the capital of France and its largest city by far. " * 6
    records = [{"id": f"q{n}", "question": " ".join(["which"] * n) + " city?", "context": context,
                "answers": {"text": ["Paris"], "answer_start": [0]}} for n in (3, 27, 80)]
    budget, stride = qa_window(32, tokenizer.num_special_tokens_to_add(pair=True))
    assert (budget, stride) == (32 - 4 - 10 - 2, 10)
    features = encode_records(T.TASKS["xquad"], records, tokenizer, 32, "long-questions")
    assert {f["example_id"] for f in features} == {"q3", "q27", "q80"}
    for f in features:
        question_tokens = sum(o is None for o in f["offset_mapping"]) - tokenizer.num_special_tokens_to_add(pair=True)
        assert len(f["input_ids"]) <= 32 and question_tokens <= budget
    assert qa_window(384, 3) == (64, 128)  # XTREME-R's setting: max_query_length 64, doc_stride 128
    with pytest.raises(StudyError, match="max_length 12 is too short for a QA task: use at least 16"):
        validate(TrainConfig(model="tiny", task="xquad", max_length=12))


def test_mewslix_reader_ranks_entities_by_mention_sentence(tmp_path):
    """get-mewsli-x.sh's files in their schema (google-research mel/mewsli_x/schema.py: spans are {start, end})."""
    root = tmp_path / "mewslix"
    root.mkdir()
    entities = [{"entity_id": "Q1", "title": "Richter", "description": "Skala Richter ...", "sentence_spans": []},
                {"entity_id": "Q2", "title": "Paris", "description": "Paris", "sentence_spans": []}]
    text = "Primera frase. Un sismo de 6,8 en la escala de Richter. Otra."
    start = text.index("escala")
    spans = [{"start": 0, "end": 14}, {"start": 15, "end": 55}, {"start": 56, "end": 61}]
    article = {"context": {"language": "es", "text": text, "sentence_spans": spans},
               "mentions": [{"example_id": "e1", "entity_id": "Q1",
                             "mention_span": {"start": start, "end": start + 17, "text": "escala de Richter"}}]}
    other = {"context": {"language": "de", "text": "x", "sentence_spans": [{"start": 0, "end": 1}]},
             "mentions": [{"example_id": "e2", "entity_id": "Q2", "mention_span": {"start": 0, "end": 1, "text": "x"}}]}
    (root / "candidate_set_entities.jsonl").write_text("\n".join(json.dumps(e) for e in entities))
    (root / "wikinews_mentions-test.jsonl").write_text(json.dumps(article) + "\n" + json.dumps(other) + "\n")
    ranking = load_split(T.TASKS["mewslix"], "test", "es", tmp_path)
    assert ranking.questions == ["Un sismo de 6,8 en la escala de Richter."] and ranking.relevant == [[0]]
    assert ranking.candidates == ["Skala Richter ...", "Paris"]
    article["mentions"][0]["entity_id"] = "Q999"
    (root / "wikinews_mentions-test.jsonl").write_text(json.dumps(article) + "\n")
    with pytest.raises(StudyError, match=r"mention 'e1' links entity 'Q999', which candidate_set_entities.jsonl "
                                         r"does not hold$"):
        load_split(T.TASKS["mewslix"], "test", "es", tmp_path)


def test_mewslix_archive_reads_exactly_what_the_data_dir_reads(tmp_path):
    """The hub's raw.tar.gz (izhx/mewsli-x) holds get-mewsli-x.sh's files: read from the archive, in whatever folder
    it keeps them and past the members it does not need, they rank exactly as the same files under --data-dir."""
    from hub_replica import mewslix_originals, write_tar_gz

    from study.data.rankings import _mewslix_archive

    files = mewslix_originals()
    (tmp_path / "mewslix").mkdir()
    for name, text in files.items():
        (tmp_path / "mewslix" / name).write_text(text)
    archive = tmp_path / "raw.tar.gz"
    write_tar_gz(archive, {f"raw/{name}": text for name, text in reversed(files.items())})
    for lang in T.TASKS["mewslix"].languages:
        local = load_split(T.TASKS["mewslix"], "test", lang, tmp_path)
        assert _mewslix_archive(str(archive), "raw.tar.gz", lang, "test") == local and len(local.questions) == 8
    assert local.questions[0] == "uk news 0" and local.questions[1] == "uk sentence 1 names Entity 1."
    write_tar_gz(archive, {name: files[name] for name in ("candidate_set_entities.jsonl",)})
    with pytest.raises(StudyError, match=r"^raw.tar.gz has no wikinews_mentions-test.jsonl$"):
        _mewslix_archive(str(archive), "raw.tar.gz", "de", "test")
    archive.write_bytes(b"not a tarball")
    with pytest.raises(StudyError, match=r"^raw.tar.gz is not a readable .tar.gz \(.*\): delete its copy"):
        _mewslix_archive(str(archive), "raw.tar.gz", "de", "test")


# --- segment ids (mBERT): training and evaluation give the model the same inputs -------------------------------


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    """A BERT WordPiece tokenizer, as mBERT's, built offline from a small vocabulary: unlike the offline stand-ins'
    SentencePiece tokenizers it produces segment ids (token_type_ids) for sentence pairs."""
    from transformers import BertTokenizerFast

    vocab = tmp_path_factory.mktemp("wordpiece") / "vocab.txt"
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "in", "house", "big", "small"]
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab))


def test_training_pairs_carry_the_segment_ids_that_evaluation_passes(wordpiece):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from study.data.augment import Synonyms
    from study.data.pairs import build_pairs, collate_pairs
    from study.data.tasks import get_task
    from study.evaluation.scoring import score_supervised
    from study.vme.engine import split_batch

    task = get_task("xnli")
    records = [{"text_a": "the cat sat on a mat", "text_b": "a dog ran", "label": 0},
               {"text_a": "the big house", "text_b": "the small cat sat in the house", "label": 2}]
    pairs, _ = build_pairs(task, records, Synonyms({"cat": ["dog"]}, "test"), wordpiece, k=1, seed=0, max_length=32)
    batch = collate_pairs(wordpiece.pad_token_id)(pairs)
    trained, _ = split_batch(batch["x"])
    assert "token_type_ids" in trained and "token_type_ids" in split_batch(batch["xt"])[0]
    seen = []
    model = BertForSequenceClassification(BertConfig(vocab_size=len(wordpiece), hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=3))
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    score_supervised(task, records, model, wordpiece, 32, "segment-ids")
    evaluated = {k: torch.cat([s[k] for s in seen]) if k in seen[0] else None for k in trained}
    assert set(evaluated) == set(trained) and evaluated["token_type_ids"] is not None
    for row in range(len(records)):  # the same ids, mask and segments for every real token of every row
        length = int(trained["attention_mask"][row].sum())
        assert (evaluated["token_type_ids"][row][length:] == 0).all()
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert trained[key][row][:length].tolist() == evaluated[key][row][:length].tolist(), key
        assert trained["token_type_ids"][row][:length].tolist().count(1) > 0  # the second sentence's segment


def test_xcopa_and_social_iqa_inputs_are_xtremes_premise_question_then_each_choice(tiny, tmp_path):
    """third_party/run_xcopa.py: COPA's first segment is "<premise> What was the <cause|effect>?", Social IQa's
    "<context> <question>"; the second segment is the choice as written (no connective word)."""
    from study.data.features import choice_prompt
    from study.models.registry import load_tokenizer

    assert choice_prompt("The man turned on the faucet.", "effect") == \
        "The man turned on the faucet. What was the effect?"
    assert choice_prompt("Tracy stayed out late.", "What will Tracy want to do next?") == \
        "Tracy stayed out late. What will Tracy want to do next?"
    tokenizer = load_tokenizer(tiny)
    record = {"premise": "The man turned on the faucet.", "question": "effect",
              "choices": ["The toilet filled with water.", "Water flowed from the spout."], "label": 1}
    features = encode_records(T.TASKS["xcopa"], [record], tokenizer, 64, "prompt-test")
    first, second = (tokenizer.decode(ids) for ids in features[0]["input_ids"])
    assert first == "<s> The man turned on the faucet. What was the effect?</s></s> The toilet filled with water.</s>"
    assert second.endswith("</s></s> Water flowed from the spout.</s>") and features[0]["labels"] == 1


def test_social_iqa_release_files_read_with_the_answer_letter_or_the_labels_file(tmp_path):
    """XTREME's download keeps the answer letter in each row ("correct"); the AllenAI release ships it beside the
    rows as 1-based -labels.lst. Both read the same; "test" is the dev set (the labelled test set is not public)."""
    row = {"context": "Tracy stayed out late.", "question": "What will Tracy want to do next?",
           "answerA": "sleep in", "answerB": "go to work early", "answerC": "buy a car"}
    with_letter, without = tmp_path / "letter" / "siqa", tmp_path / "lst" / "siqa"
    for folder in (with_letter, without):
        folder.mkdir(parents=True)
    (with_letter / "socialIQa_v1.4_trn.jsonl").write_text(json.dumps({**row, "correct": "A"}) + "\n"
                                                          + json.dumps({**row, "correct": "C"}) + "\n")
    (without / "socialIQa_v1.4_trn.jsonl").write_text((json.dumps(row) + "\n") * 2)
    (without / "socialIQa_v1.4_trn-labels.lst").write_text("1\n3\n")
    expected = [{"premise": row["context"], "question": row["question"],
                 "choices": ["sleep in", "go to work early", "buy a car"], "label": label} for label in (0, 2)]
    for root in (with_letter.parent, without.parent):
        assert load_split(T.TASKS["siqa"], "train", "en", root) == expected
    (without / "socialIQa_v1.4_trn-labels.lst").write_text("1\n")
    with pytest.raises(StudyError, match=r"2 rows but 1 labels in socialIQa_v1.4_trn-labels.lst"):
        load_split(T.TASKS["siqa"], "train", "en", without.parent)
    (without / "socialIQa_v1.4_trn-labels.lst").write_text("1\n0\n")  # 1-based: 0 is no answer (it was C)
    with pytest.raises(StudyError, match=r"labels.lst, line 2: label '0'; expected 1, 2 or 3"):
        load_split(T.TASKS["siqa"], "train", "en", without.parent)
    unanswered = {**row, "answerC": None, "correct": "A"}
    (with_letter / "socialIQa_v1.4_trn.jsonl").write_text(json.dumps(unanswered) + "\n")
    with pytest.raises(StudyError, match=r"socialIQa_v1.4_trn.jsonl, line 1: context, question and answers must"):
        load_split(T.TASKS["siqa"], "train", "en", with_letter.parent)
    copa = tmp_path / "copa-data" / "copa"
    copa.mkdir(parents=True)
    for bad, message in (({"label": 2}, "label 2, question 'cause'"),
                         ({"question": "Cause"}, "label 1, question 'Cause'")):
        good = {"premise": "p", "question": "cause", "choice1": "a", "choice2": "b", "label": 1}
        (copa / "train.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, **bad}) + "\n")
        with pytest.raises(StudyError, match=rf"train.jsonl, line 2: {message}"):
            load_split(T.TASKS["xcopa"], "train", "en", copa.parent)
    assert T.TASKS["siqa"].protocol.startswith("English training source, not an XTREME-R task")
    xcopa = T.TASKS["xcopa"]
    assert xcopa.fine_tuned_protocol("xcopa", "siqa") == "XTREME-R (SIQa, then COPA)"
    assert xcopa.fine_tuned_protocol("xcopa", None).startswith("proxy, not XTREME-R: trains on COPA only")
    assert xcopa.fine_tuned_protocol("xcopa", "xnli") == xcopa.protocol
    # a model that never trained on COPA (Social IQa twice, or Social IQa alone) is no XCOPA result of any protocol
    assert xcopa.fine_tuned_protocol("siqa", "siqa") == \
        "proxy, not XTREME-R: a model fine-tuned on siqa, not on xcopa"
    assert T.TASKS["xnli"].fine_tuned_protocol("xnli", None) == "XTREME-R"

"""Readers of the original file formats (SQuAD JSON, CoNLL-U, CoNLL, XNLI TSV, JSON lines, in plain or gzip files and
archives) and the record types of retrieval tasks; every read error names the file and line."""

from __future__ import annotations

import csv
import gzip
import json
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from study.core.errors import StudyError
from study.data import tasks as T


@dataclass(frozen=True)
class Bitext:
    """Tatoeba-style retrieval: source[i] translates english[i]."""

    source: list[str]
    english: list[str]


@dataclass(frozen=True)
class RankingSet:
    """LAReQA-style retrieval: each question's relevant candidate ids among all candidates of the language.
    ``dual_encoder_questions`` / ``dual_encoder_candidates``: the same items as XTREME-R's fine-tuned dual encoder
    reads them (``study.data.retrieval_pairs``: LAReQA candidates with their paragraph, Mewsli-X queries with the
    mention marked)."""

    questions: list[str]
    relevant: list[list[int]]
    candidates: list[str]
    dual_encoder_questions: list[str]
    dual_encoder_candidates: list[str]


def _on_disk(path: Path) -> Path | None:
    """``path``, or else ``path.gz``, whichever is a file; None when neither is."""
    return next((c for c in (path, path.with_name(path.name + ".gz")) if c.is_file()), None)


class TextFile:
    """A data file read as UTF-8 lines (``\r\n`` read as ``\n``): a byte that is not UTF-8, a truncated or corrupt
    gzip stops with a StudyError naming the file and line, not a decoder's traceback that a retry would repeat."""

    def __init__(self, path: Path):
        self.path, self.line = path, 0
        # closed by __exit__: a TextFile is used as a context manager
        self.raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115

    def __enter__(self) -> TextFile:
        return self

    def __exit__(self, *exc) -> None:
        self.raw.close()

    def __iter__(self):
        try:
            for raw in self.raw:
                self.line += 1
                text = raw.decode("utf-8")
                yield text[:-2] + "\n" if text.endswith("\r\n") else text
        except UnicodeDecodeError as err:
            raise StudyError(f"{self.path}, line {self.line}: not UTF-8 text ({err.reason} at byte {err.start} of "
                             "the line)") from None
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise StudyError(f"{self.path}, line {self.line + 1}: not a readable gzip file ({err}); the file is "
                             "truncated or corrupt: fetch it again") from None

    def read(self) -> str:
        return "".join(self)


def _open_text(path: Path) -> TextFile:
    """Open ``path`` or ``path.gz`` as UTF-8 text; a missing file is a clear error."""
    found = _on_disk(path)
    if found is None:
        raise StudyError(f"missing data file {path} (or {path.name}.gz); see the --data-dir layout in the README")
    return TextFile(found)


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
        records = [{"id": qa["id"], "context": paragraph["context"], "question": qa["question"],
                    "answers": {"text": [a["text"] for a in qa["answers"]],
                                "answer_start": [a["answer_start"] for a in qa["answers"]]}}
                   for article in data["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    except (KeyError, TypeError) as err:
        raise StudyError(f"{path} is not in SQuAD format (missing {err})") from None
    unanswered = next((r["id"] for r in records if not r["answers"]["text"]), None)
    if unanswered is not None:  # SQuAD v1.1's format: every question has an answer to train on or score against
        raise StudyError(f"{path}: question id {unanswered!r} has no answers; every question of a SQuAD v1.1 file "
                         "needs one (unanswerable SQuAD v2 questions are not read)")
    return records


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

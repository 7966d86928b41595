"""Tokenisation into model inputs (a task's records, or the sentences a retrieval task embeds): batched
(``datasets.map(batched=True)`` with the fast tokenizer) and cached as Arrow per (task, split, language, tokenizer,
max length, data content), so a second load is a file read.

Tagging labels go on the first sub-token of each word (-100 elsewhere); QA contexts are split into XTREME's windows
(``study.data.qa_features``) and answers mapped to token start/end positions (or to the <s> token when outside the
window).
"""

from __future__ import annotations

import hashlib
import json

from study.core.cache import cache_dir
from study.core.errors import StudyError
from study.data import tasks as T
from study.data.qa_features import MAX_QUERY_TOKENS, MIN_QA_LENGTH, qa_encoder, qa_window  # noqa: F401 (re-exported)
from study.vme.objective import IGNORE_INDEX

ENCODING_VERSION = 5  # part of every cache key: bump it whenever an encoder's output changes


def _fingerprint(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, ensure_ascii=False, default=str).encode())
    return digest.hexdigest()[:16]


def tokenizer_id(tokenizer) -> str:
    """Name or path, vocabulary size and class of a tokenizer: its part of the feature cache key."""
    return f"{tokenizer.name_or_path}|{len(tokenizer)}|{type(tokenizer).__name__}"


def _classification(task, tokenizer, max_length):
    def encode(batch):
        pair = None if all(b is None for b in batch["text_b"]) else batch["text_b"]
        out = tokenizer(batch["text_a"], pair, truncation=True, max_length=max_length)
        out["labels"] = batch["label"]
        return out
    return encode


def choice_prompt(premise: str, question: str) -> str:
    """The first segment of every choice's input, as XTREME's third_party/run_xcopa.py builds it: COPA's premise
    followed by "What was the cause?" or "What was the effect?"; Social IQa's context followed by its own question.
    The second segment is the choice itself."""
    return f"{premise} What was the {question}?" if question in T.COPA_QUESTIONS else f"{premise} {question}"


def _multiple_choice(task, tokenizer, max_length):
    def encode(batch):
        firsts, seconds = [], []
        for premise, question, choices in zip(batch["premise"], batch["question"], batch["choices"], strict=True):
            firsts += [choice_prompt(premise, question)] * len(choices)
            seconds += list(choices)
        flat = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
        n = len(batch["choices"][0])
        out = {k: [v[i:i + n] for i in range(0, len(v), n)] for k, v in flat.items()}
        out["labels"] = batch["label"]
        return out
    return encode


def word_windows(sizes: list[int], budget: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) word ranges whose sub-token counts ``sizes`` fit ``budget`` tokens each, greedily
    (XTREME's preprocessing splits long tagging sentences the same way); a word longer than the budget is a window
    of its own (its first sub-token, the one scored, always fits). An empty sentence is one empty window."""
    windows, start, used = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and used + size > budget:
            windows.append((start, i))
            start, used = i, 0
        used += size
    return windows + [(start, len(sizes))]


def _tagging(task, tokenizer, max_length):
    """One feature row per window of a sentence (``word_windows``), with ``word_start``, the window's first word in
    its sentence, so that scoring can put every word of every sentence back together; a word the tokenizer turns
    into no sub-token at all is encoded as the unknown token, so that it too gets a prediction."""
    label_of = {tag: i for i, tag in enumerate(task.labels)}
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)

    def encode(batch):
        flat = [word for words in batch["tokens"] for word in words]
        sizes = [len(ids) for ids in tokenizer(flat, add_special_tokens=False)["input_ids"]] if flat else []
        windows, window_tags, starts, position = [], [], [], 0
        for words, tags in zip(batch["tokens"], batch["tags"], strict=True):
            counts, position = sizes[position:position + len(words)], position + len(words)
            words = [word if count else tokenizer.unk_token for word, count in zip(words, counts, strict=True)]
            for start, end in word_windows([max(count, 1) for count in counts], budget):
                windows.append(words[start:end])
                window_tags.append(tags[start:end])
                starts.append(start)
        out = tokenizer(windows, is_split_into_words=True, truncation=True, max_length=max_length)
        labels = []
        for row, tags in enumerate(window_tags):
            previous, row_labels = None, []
            for word in out.word_ids(row):
                if word is None or word == previous:
                    row_labels.append(IGNORE_INDEX)
                else:
                    tag = tags[word]
                    if tag not in label_of:
                        raise StudyError(f"task {task.name!r}: unknown tag {tag!r}; known tags: "
                                         f"{' '.join(task.labels)}")
                    row_labels.append(label_of[tag])
                previous = word
            labels.append(row_labels)
        out["labels"], out["word_start"] = labels, starts
        return out
    return encode


ENCODERS = {T.CLASSIFICATION: _classification, T.MULTIPLE_CHOICE: _multiple_choice, T.TAGGING: _tagging,
            T.QA: qa_encoder}


def encode_records(task: T.TaskSpec, records: list[dict], tokenizer, max_length: int, cache_key: str):
    """Tokenise records of a task into a ``datasets.Dataset`` of model inputs, cached on disk."""
    if task.kind not in ENCODERS:
        raise StudyError(f"task {task.name!r} ({task.kind}) has no supervised features: it evaluates a bare encoder")
    return _cached_map(task, records, ENCODERS[task.kind](task, tokenizer, max_length), tokenizer, max_length,
                       cache_key)


def encode_texts(task: T.TaskSpec, texts: list[str], tokenizer, max_length: int, cache_key: str):
    """Tokenise sentences to embed (retrieval tasks) into a ``datasets.Dataset`` of model inputs, cached on disk
    like ``encode_records``: every evaluation after the first reads them back."""
    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)
    return _cached_map(task, [{"text": t} for t in texts], encode, tokenizer, max_length, cache_key)


def _cached_map(task: T.TaskSpec, records: list[dict], encode, tokenizer, max_length: int, cache_key: str):
    """``encode`` mapped in batches over records, read from / written to the Arrow cache."""
    import datasets

    if not records:
        raise StudyError(f"task {task.name!r}: no examples to tokenise for {cache_key}")
    key = _fingerprint(ENCODING_VERSION, task.name, cache_key, tokenizer_id(tokenizer), max_length, records)
    path = cache_dir() / "features" / f"{task.name}-{cache_key}-{key}.arrow"
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = datasets.Dataset.from_list(records)
    datasets.disable_progress_bars()
    try:
        return raw.map(encode, batched=True, remove_columns=raw.column_names,
                       cache_file_name=str(path), load_from_cache_file=True, desc=f"tokenising {task.name}",
                       new_fingerprint=key)  # our key: spares datasets from pickling the tokenizer to hash it
    finally:
        datasets.enable_progress_bars()

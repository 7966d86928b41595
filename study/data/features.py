"""Tokenisation into model inputs (a task's records, or the sentences a retrieval task embeds): batched
(``datasets.map(batched=True)`` with the fast tokenizer) and cached as Arrow per (task, split, language, tokenizer,
max length, data content), so a second load is a file read.

Tagging labels go on the first sub-token of each word (-100 elsewhere); QA contexts are split into windows with a
doc stride and answers mapped to token start/end positions (or to the <s> token when outside the window).
"""

from __future__ import annotations

import hashlib
import json

from study import tasks as T
from study.cache import cache_dir
from study.errors import StudyError
from study.objective import IGNORE_INDEX


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


def _multiple_choice(task, tokenizer, max_length):
    def encode(batch):
        firsts, seconds = [], []
        for premise, question, choices in zip(batch["premise"], batch["question"], batch["choices"]):
            connector = "because" if question == "cause" else "so"  # COPA asks for the cause or the effect
            firsts += [premise] * len(choices)
            seconds += [f"{connector} {c}" for c in choices]
        flat = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
        n = len(batch["choices"][0])
        out = {k: [v[i:i + n] for i in range(0, len(v), n)] for k, v in flat.items()}
        out["labels"] = batch["label"]
        return out
    return encode


def _tagging(task, tokenizer, max_length):
    label_of = {tag: i for i, tag in enumerate(task.labels)}

    def encode(batch):
        out = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        labels = []
        for row, tags in enumerate(batch["tags"]):
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
        out["labels"] = labels
        return out
    return encode


def _qa(task, tokenizer, max_length):
    doc_stride = min(128, max_length // 4)  # XTREME: 128 at length 384

    def encode(batch):
        out = tokenizer([q.lstrip() for q in batch["question"]], batch["context"], truncation="only_second",
                        max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True, padding=False)
        sample_of = out.pop("overflow_to_sample_mapping")
        starts, ends, example_ids, offsets = [], [], [], []
        for i, offset in enumerate(out["offset_mapping"]):
            sequence_ids = out.sequence_ids(i)
            sample = sample_of[i]
            answers = batch["answers"][sample]
            context_tokens = [k for k, s in enumerate(sequence_ids) if s == 1]
            first, last = context_tokens[0], context_tokens[-1]
            start_char = answers["answer_start"][0] if answers["answer_start"] else -1
            end_char = start_char + len(answers["text"][0]) if answers["text"] else -1
            if start_char < 0 or offset[first][0] > start_char or offset[last][1] < end_char:
                starts.append(0)
                ends.append(0)
            else:
                start = first
                while start <= last and offset[start][0] <= start_char:
                    start += 1
                end = last
                while end >= first and offset[end][1] >= end_char:
                    end -= 1
                starts.append(start - 1)
                ends.append(end + 1)
            example_ids.append(batch["id"][sample])
            offsets.append([o if s == 1 else None for o, s in zip(offset, sequence_ids)])
        out["offset_mapping"] = offsets
        out["example_id"] = example_ids
        out["start_positions"], out["end_positions"] = starts, ends
        return out
    return encode


ENCODERS = {T.CLASSIFICATION: _classification, T.MULTIPLE_CHOICE: _multiple_choice, T.TAGGING: _tagging,
            T.QA: _qa}


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
    key = _fingerprint(task.name, cache_key, tokenizer_id(tokenizer), max_length, records)
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

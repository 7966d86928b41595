"""Training pairs (x, x̃) for the VME objective: English examples and their synonym-substituted virtual copies.

Each English example appears ``k`` times, each time with a different virtual copy (as in the reference code).
Both streams are tokenised separately (and cached); a QA context that splits into several windows is paired window
by window. The collate function pads both streams of a batch to one common length so the model can run them in a
single pass.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from study.data import tasks as T
from study.data.augment import Synonyms, virtual_copies
from study.data.features import encode_records
from study.vme.objective import IGNORE_INDEX

# token_type_ids: segment ids of BERT-style tokenizers (mBERT), which training must pass as evaluation does
PAIR_FIELDS = ("input_ids", "attention_mask", "token_type_ids", "labels", "start_positions", "end_positions")


def _qa_copy(record: dict, synonyms: Synonyms, rng: random.Random) -> dict:
    """QA: the question and the context substituted, the answer spans protected and moved with the text."""
    answers = record["answers"]
    spans = [(s, s + len(t)) for s, t in zip(answers["answer_start"], answers["text"], strict=True)]
    context, moved = synonyms.substitute_text(record["context"], rng, protected=spans)
    return {**record, "question": _text(record["question"], synonyms, rng), "context": context,
            "answers": {"text": answers["text"], "answer_start": [s for s, _ in moved]}}


def _text(text: str, synonyms: Synonyms, rng: random.Random) -> str:
    return synonyms.substitute_text(text, rng)[0] if text else text


# {task kind: copier(record, synonyms, rng) -> its virtual copy}
VIRTUAL_COPIERS = {
    T.CLASSIFICATION: lambda r, syn, rng: {**r, "text_a": _text(r["text_a"], syn, rng),
                                           "text_b": _text(r["text_b"], syn, rng)},
    T.MULTIPLE_CHOICE: lambda r, syn, rng: {**r, "premise": _text(r["premise"], syn, rng),
                                            "choices": [_text(c, syn, rng) for c in r["choices"]]},
    T.TAGGING: lambda r, syn, rng: {**r, "tokens": syn.substitute_words(r["tokens"], rng)},
    T.QA: _qa_copy,
}


def virtual_record(task: T.TaskSpec, record: dict, synonyms: Synonyms, rng: random.Random) -> dict:
    """One synonym-substituted copy of a record; labels stay valid (words 1:1, QA answers protected)."""
    return VIRTUAL_COPIERS[task.kind](record, synonyms, rng)


def build_pairs(task: T.TaskSpec, records: list[dict], synonyms: Synonyms, tokenizer, *, k: int, seed: int,
                max_length: int) -> tuple[list[dict], dict]:
    """Tokenised (x, x̃) pairs and statistics (how many copies actually changed)."""
    originals, virtuals = [], []
    for index, record in enumerate(records):
        copies = virtual_copies(lambda rng, r=record: virtual_record(task, r, synonyms, rng), k, seed, index)
        for number, copy in enumerate(copies):
            row_id = {"id": f"{index}:{number}"} if task.kind == T.QA else {}  # pairs QA windows per row
            originals.append({**record, **row_id})
            virtuals.append({**copy, **row_id})
    changed = sum(repr(o) != repr(v) for o, v in zip(originals, virtuals, strict=True))
    x = encode_records(task, originals, tokenizer, max_length, f"train-x-k{k}-s{seed}")
    xt = encode_records(task, virtuals, tokenizer, max_length,
                        f"train-xt-k{k}-s{seed}-{Path(synonyms.source).name}-{synonyms.matching}")
    columns = [c for c in PAIR_FIELDS if c in x.column_names]
    if task.kind == T.QA:
        # every record has at least one window on each side; x̃'s context may need more or fewer windows than x's:
        # the i-th windows are paired and a window without a partner is dropped (strict=False)
        pairs = [{"x": a, "xt": b}
                 for a_rows, b_rows in zip(_windows(x, columns), _windows(xt, columns), strict=True)
                 for a, b in zip(a_rows, b_rows, strict=False)]
    elif task.kind == T.TAGGING:  # long sentences come in word windows; x̃ may window differently
        pairs = [{"x": a[start], "xt": b[start]}
                 for a, b in zip(_sentences(x, columns), _sentences(xt, columns), strict=True)
                 for start in a if start in b]  # windows starting at the same word; others have no partner
    else:
        pairs = [{"x": {c: a[c] for c in columns}, "xt": {c: b[c] for c in columns}}
                 for a, b in zip(x, xt, strict=True)]
    stats = {"examples": len(records), "virtual_copies": len(virtuals), "pairs": len(pairs),
             "changed_fraction": changed / max(len(virtuals), 1), "synonyms": synonyms.source,
             "synonym_matching": synonyms.matching}
    return pairs, stats


def _windows(features, columns) -> list[list[dict]]:
    """QA windows grouped by source row, in row order (``datasets.map`` keeps the order)."""
    groups: dict[str, list[dict]] = {}
    for row in features:
        groups.setdefault(row["example_id"], []).append({c: row[c] for c in columns})
    return list(groups.values())


def _sentences(features, columns) -> list[dict[int, dict]]:
    """Tagging windows grouped by sentence, in order: {first word of the window: its row} per sentence."""
    sentences: list[dict[int, dict]] = []
    for row in features:
        if row["word_start"] == 0:
            sentences.append({})
        sentences[-1][row["word_start"]] = {c: row[c] for c in columns}
    return sentences


def _pad(values: list, length: int, fill) -> list:
    if values and isinstance(values[0], list):  # multiple choice: (choices, tokens)
        return [_pad(v, length, fill) for v in values]
    return values + [fill] * (length - len(values))


def _length(values: list) -> int:
    return max(len(v) for v in values) if values and isinstance(values[0], list) else len(values)


def collate_pairs(pad_id: int, length: int | None = None):
    """Pad x and x̃ of a batch to one common length (for the one-pass [x; x̃] forward): the longest row's, or
    ``length`` (the released code pads every input to ``max_seq_length``)."""

    fills = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "labels": IGNORE_INDEX}

    def collate(batch: list[dict]) -> dict:
        longest = max(_length(item[s]["input_ids"]) for item in batch for s in ("x", "xt"))
        padded = max(longest, length or 0)
        out = {}
        for stream in ("x", "xt"):
            rows = [item[stream] for item in batch]
            out[stream] = {field: torch.tensor([_pad(r[field], padded, fills[field]) if isinstance(r[field], list)
                                                else r[field] for r in rows]) for field in rows[0]}
        return out

    return collate

"""Extractive QA inputs: a context split into windows, each paired with the (cut) question, as XTREME predicts.

The rules are those of XTREME's ``third_party/run_squad.py`` and ``third_party/processors/squad.py`` (the SQuAD
processor of transformers 2.x):

* **Windows.** A window holds ``room = max_length - question tokens - special tokens`` context tokens; the windows
  start at context tokens 0, ``doc_stride``, 2 ``doc_stride``, ... and stop at the first that reaches the context's
  end. ``doc_stride`` is the *step* between window starts; the fast tokenizer's ``stride`` is the *overlap* of
  consecutive windows, so each call passes ``room - doc_stride`` (the processor's own ``stride`` argument), which
  depends on the question's length: questions of one length are tokenised together.
* **Max context.** A context token seen by several windows belongs, for predicting an answer's start, to the window
  where it has the most context: its score there is min(tokens left of it, tokens right of it) + 0.01 × the window's
  length, and the first window with the highest score wins (``_new_check_is_max_context``). Each feature carries
  these flags as ``max_context``; the scorer keeps a start only where its flag is set.
* **Questions** keep at most ``max_query_length`` tokens (64 at XTREME's 384 / 128 / 64).
"""

from __future__ import annotations

from study.core.errors import StudyError

MAX_QUERY_TOKENS = 64  # XTREME's max_query_length: longer questions are cut to their first 64 tokens
MIN_QA_LENGTH = 16  # below this, a QA window has no room for a question, the special tokens and the stride
XTREME_QA_MAX_LENGTH = 384  # XTREME's max_seq_length for QA (scripts/train_qa.sh, predict included)
XTREME_DOC_STRIDE = 128  # XTREME's doc_stride: the step between window starts


def qa_window(max_length: int, special_tokens: int) -> tuple[int, int]:
    """(question token budget, doc stride) of QA windows of ``max_length`` tokens: the doc stride, the step between
    window starts, is XTREME's 128 at 384 (a third of the window, at most 128), and the question keeps at most
    ``MAX_QUERY_TOKENS`` tokens and leaves more than a stride of context in every window, so that consecutive windows
    overlap and no context token is skipped (one token of margin for re-tokenising a cut question). StudyError when
    ``max_length`` is below ``MIN_QA_LENGTH``."""
    if max_length < MIN_QA_LENGTH:
        raise StudyError(f"max_length {max_length} is too short for a QA task: use at least {MIN_QA_LENGTH} "
                         f"(XTREME-R uses {XTREME_QA_MAX_LENGTH})")
    stride = min(XTREME_DOC_STRIDE, max_length // 3)
    return min(MAX_QUERY_TOKENS, max_length - special_tokens - stride - 2), stride


def doc_spans(context_tokens: int, room: int, doc_stride: int) -> list[tuple[int, int]]:
    """XTREME's windows over a context of ``context_tokens`` tokens: (first token, length) per window, starting at
    0, ``doc_stride``, 2 ``doc_stride``, ... each at most ``room`` long, up to the first that reaches the end (an
    empty context: one empty window)."""
    spans = [(0, min(context_tokens, room))]
    while spans[-1][0] + spans[-1][1] < context_tokens:
        start = spans[-1][0] + doc_stride
        spans.append((start, min(context_tokens - start, room)))
    return spans


def max_context_flags(spans: list[tuple[int, int]]) -> list[list[bool]]:
    """Per window of ``spans`` (``doc_spans``), per token of it: whether this window is the token's max-context
    window — score min(left context, right context) + 0.01 × window length, the earliest window on ties."""
    best: dict[int, tuple[float, int]] = {}  # context token -> (best score, its window)
    for index, (start, length) in enumerate(spans):
        end = start + length - 1
        for position in range(start, start + length):
            score = min(position - start, end - position) + 0.01 * length
            if position not in best or score > best[position][0]:
                best[position] = (score, index)
    return [[best[p][1] == index for p in range(start, start + length)] for index, (start, length) in enumerate(spans)]


def _truncated_questions(tokenizer, questions: list[str], budget: int) -> tuple[list[str], list[int]]:
    """Each question cut after its ``budget``-th token (at that token's last character), as XTREME truncates
    queries to ``max_query_length`` tokens, and the token count of each question as cut (what a window's pair
    encoding gives it); two batched tokenizer calls."""
    questions = [q.lstrip() for q in questions]
    offsets = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    cut = [q if len(o) <= budget else q[:o[budget - 1][1]] for q, o in zip(questions, offsets, strict=True)]
    return cut, [len(ids) for ids in tokenizer(cut, add_special_tokens=False)["input_ids"]]


MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def qa_encoder(task, tokenizer, max_length):
    """The batched ``datasets.map`` function of a QA task: one feature row per window (``doc_spans``), with
    ``offset_mapping`` (None outside the context), ``example_id``, ``max_context`` (``max_context_flags``, False
    outside the context) and the answer's token ``start_positions`` / ``end_positions`` (0 / 0, the first token,
    when the window does not hold the whole answer, as XTREME's training features)."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    budget, doc_stride = qa_window(max_length, specials)

    def encode(batch):
        questions, lengths = _truncated_questions(tokenizer, batch["question"], budget)
        by_length: dict[int, list[int]] = {}
        for row, length in enumerate(lengths):
            by_length.setdefault(length, []).append(row)
        windows: dict[int, list[dict]] = {}
        for length, rows in by_length.items():
            room = max_length - specials - length  # XTREME's max_tokens_for_doc
            out = tokenizer([questions[r] for r in rows], [batch["context"][r] for r in rows],
                            truncation="only_second", max_length=max_length, stride=max(room - doc_stride, 0),
                            return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
            for i, sample in enumerate(out["overflow_to_sample_mapping"]):
                windows.setdefault(rows[sample], []).append(
                    {"sequence_ids": out.sequence_ids(i), "offsets": out["offset_mapping"][i],
                     **{k: out[k][i] for k in MODEL_COLUMNS if k in out}})
        columns: dict[str, list] = {}
        for row in range(len(lengths)):
            for feature in _row_features(windows[row], batch["answers"][row], batch["id"][row], lengths[row],
                                         room=max_length - specials - lengths[row], doc_stride=doc_stride):
                for key, value in feature.items():
                    columns.setdefault(key, []).append(value)
        return columns
    return encode


def _row_features(windows: list[dict], answers: dict, example_id: str, question_tokens: int, *, room: int,
                  doc_stride: int) -> list[dict]:
    """One question's windows as feature rows; StudyError when the tokenizer's windows are not XTREME's."""
    context = [[k for k, s in enumerate(w["sequence_ids"]) if s == 1] for w in windows]
    spans = [(k * doc_stride, len(tokens)) for k, tokens in enumerate(context)]
    total = spans[-1][0] + spans[-1][1]
    questions = {sum(s == 0 for s in w["sequence_ids"]) for w in windows}
    if doc_spans(total, room, doc_stride) != spans or questions != {question_tokens}:
        raise StudyError(f"question {example_id!r}: the tokenizer's windows {spans} (question tokens {questions}) "
                         f"are not XTREME's {doc_spans(total, room, doc_stride)} ({question_tokens})")
    start_char = answers["answer_start"][0] if answers["answer_start"] else -1
    end_char = start_char + len(answers["text"][0]) if answers["text"] else -1
    rows = []
    for window, tokens, flags in zip(windows, context, max_context_flags(spans), strict=True):
        offsets = window["offsets"]
        start = end = 0
        if tokens and start_char >= 0 and offsets[tokens[0]][0] <= start_char and offsets[tokens[-1]][1] >= end_char:
            first, last = tokens[0], tokens[-1]
            start, end = first, last
            while start <= last and offsets[start][0] <= start_char:  # past the last token starting at or before it
                start += 1
            while end >= first and offsets[end][1] >= end_char:  # before the first token ending at or after it
                end -= 1
            start, end = start - 1, end + 1
        flag_of = dict(zip(tokens, flags, strict=True))
        in_context = zip(offsets, window["sequence_ids"], strict=True)
        rows.append({**{k: window[k] for k in MODEL_COLUMNS if k in window},
                     "offset_mapping": [o if s == 1 else None for o, s in in_context],
                     "example_id": example_id, "max_context": [flag_of.get(k, False) for k in range(len(offsets))],
                     "start_positions": start, "end_positions": end})
    return rows


def qa_prediction_settings(task, trained_on: str | None, init_task: str | None, max_length: int | None,
                           positions: int, special_tokens: int) -> tuple[int, str]:
    """(window length, protocol label) of a standalone QA evaluation of a checkpoint fine-tuned on ``trained_on``:
    XTREME's predict settings by default (``max_seq_length`` 384, ``doc_stride`` 128, ``max_query_length`` 64,
    scripts/train_qa.sh; an encoder with fewer positions gets its longest), labelled with the fine-tuning protocol
    (``TaskSpec.fine_tuned_protocol``) only at 384; any other length is a named proxy."""
    chosen = max_length or min(XTREME_QA_MAX_LENGTH, positions)
    protocol = task.fine_tuned_protocol(trained_on, init_task)
    budget, stride = qa_window(chosen, special_tokens)
    if chosen == XTREME_QA_MAX_LENGTH or not protocol.startswith("XTREME-R"):
        return chosen, protocol
    return chosen, (f"proxy, not XTREME-R: windows of {chosen} tokens, doc stride {stride}, questions of at most "
                    f"{budget} tokens (XTREME-R predicts at {XTREME_QA_MAX_LENGTH} / {XTREME_DOC_STRIDE} / "
                    f"{MAX_QUERY_TOKENS})")

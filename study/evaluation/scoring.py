"""Zero-shot evaluation of a model on a task's languages: predictions -> metrics -> per-language / per-family.

Retrieval tasks run on a bare encoder (mean-pooled hidden states of a chosen layer, cosine similarity); the other
kinds need a model with a fine-tuned head of the right type. Every kind runs the model the same way
(``run_batches``): tokens from the Arrow cache, rows sorted by length into batches cut to a token budget (little
padding: a plain loop in file order computes about twice the tokens on Tatoeba), and the outputs put back in the
original order before anything is scored.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from study.core import metrics
from study.core.errors import StudyError
from study.core.protocol import SOURCE_LANGUAGE, all_languages_mean, target_group_means, target_mean
from study.data import tasks as T
from study.data.features import encode_records, encode_texts
from study.data.formats import Bitext, RankingSet
from study.data.sources import load_split, subsample
from study.vme.objective import IGNORE_INDEX, masked_mean

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MAX_ANSWER_TOKENS = 30
# Padded tokens per forward batch. On a 2-core CPU 512-1024 ran fastest (benchmarks/eval_throughput.py); 4096 and
# more were slower: the activations of a big batch no longer fit in the cache.
TOKEN_BUDGET = 1024


@dataclass(frozen=True)
class Padded:
    """A dataset's model inputs as right-padded int64 tensors, (n, L) or for multiple choice (n, C, L), and each
    row's real length in tokens, (n,) (multiple choice: its longest choice)."""

    inputs: dict[str, torch.Tensor]
    lengths: np.ndarray

    @property
    def width(self) -> int:
        """L: the longest row's length."""
        return self.inputs["input_ids"].shape[-1]


def padded_inputs(features, tokenizer) -> Padded:
    """The model inputs of a tokenised dataset (``encode_records`` / ``encode_texts``), read column by column from
    Arrow and padded as ``tokenizer.pad`` pads them (right, with the tokenizer's pad ids)."""
    fills = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0, "token_type_ids": tokenizer.pad_token_type_id}
    columns = features.with_format("arrow")
    padded = {name: _pad_column(columns[name], fills[name]) for name in MODEL_INPUTS if name in features.column_names}
    return Padded({name: torch.from_numpy(values) for name, (values, _) in padded.items()}, padded["input_ids"][1])


def _pad_column(column, fill: int) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow list<int> column as an (n, L) int64 array padded with ``fill``, and the lengths (n,); a
    list<list<int>> column (multiple choice, C per row) as (n, C, L), and each row's longest. No per-row Python."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.combine_chunks()
    shape = [len(array)]
    if pa.types.is_list(array.type.value_type):
        shape.append(len(array[0]))  # the encoder gives every row the same number of choices
        array = array.flatten()
    lengths = pc.list_value_length(array).to_numpy()
    width = int(lengths.max())
    padded = np.full((len(lengths), width), fill, dtype=np.int64)
    padded[np.arange(width) < lengths[:, None]] = array.flatten().to_numpy()  # row-major: each row's tokens in turn
    return padded.reshape(*shape, width), lengths.reshape(shape[0], -1).max(axis=1)


def length_batches(lengths: np.ndarray, token_budget: int) -> list[np.ndarray]:
    """Row indices in batches of similar length: rows sorted by length (stable), each batch the most rows whose
    count × the longest of them stays ≤ ``token_budget`` (at least one row). Every row is in exactly one batch."""
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order]
    batches, start = [], 0
    while start < len(order):
        window = ordered[start:start + token_budget]  # a batch never has more rows than the budget has tokens
        padded_size = np.arange(1, len(window) + 1) * window  # rows × longest, for each possible end: ascending
        stop = start + max(1, int(np.searchsorted(padded_size, token_budget, side="right")))
        batches.append(order[start:stop])
        start = stop
    return batches


@torch.inference_mode()
def run_batches(step: Callable[[dict], torch.Tensor], padded: Padded, device, token_budget: int) -> torch.Tensor:
    """``step(inputs)`` -> (b, ...) on each of ``length_batches``, its inputs cut to the batch's longest row and
    moved to ``device``; every row's output, (n, ...) on the CPU, in the original row order (for scoring)."""
    choices = padded.inputs["input_ids"][0].numel() // padded.width  # multiple choice: C sequences a row
    rows, parts = [], []
    for index in length_batches(padded.lengths * choices, token_budget):
        width, index = int(padded.lengths[index].max()), torch.from_numpy(index)
        parts.append(step({k: v[index, ..., :width].to(device) for k, v in padded.inputs.items()}).cpu())
        rows.append(index)
    out = torch.cat(parts)
    return torch.empty_like(out).index_copy_(0, torch.cat(rows), out)


def _widen(per_token: torch.Tensor, width: int) -> torch.Tensor:
    """(b, ..., m) -> (b, ..., width) along the token axis, so batches of other lengths stack (the filler is past
    every row's end: never read)."""
    return torch.nn.functional.pad(per_token, (0, width - per_token.shape[-1]))


def pooled_hidden_states(model, padded: Padded, layers: Sequence[int | None],
                         token_budget: int = TOKEN_BUDGET) -> np.ndarray:
    """Mean-pooled hidden states (n, len(layers), hidden) of each of ``layers`` (an index into the hidden states,
    0 = embeddings; None = last layer) of a bare or headed encoder, not normalised, from one pass per batch, in the
    order of ``padded``'s rows."""
    encoder = model.base_model

    def pool(inputs):
        result = encoder(**inputs, output_hidden_states=any(layer is not None for layer in layers))
        return torch.stack([masked_mean(result.last_hidden_state if layer is None else result.hidden_states[layer],
                                        inputs["attention_mask"]) for layer in layers], dim=1)

    return run_batches(pool, padded, model.device, token_budget).numpy()


def sentence_embeddings(model, padded: Padded, *, layer: int | None = None,
                        token_budget: int = TOKEN_BUDGET) -> np.ndarray:
    """L2-normalised mean-pooled embeddings (n, hidden) of ``layer`` (None = last layer) of a bare or headed
    encoder, in the order of ``padded``'s rows."""
    pooled = torch.from_numpy(pooled_hidden_states(model, padded, [layer], token_budget)[:, 0])
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def pooled_cls_embeddings(model, padded: Padded, token_budget: int = TOKEN_BUDGET) -> np.ndarray:
    """A dual encoder's embeddings (n, hidden), as XTREME-R's ``BertForRetrieval`` reads them: the L2-normalised
    pooled output (the pooler's dense+tanh of the [CLS] state; the [CLS] state itself for an encoder without a
    pooler), in the order of ``padded``'s rows."""
    from study.vme.engine import pooled_cls

    return run_batches(lambda inputs: pooled_cls(model.base_model(**inputs)), padded, model.device,
                       token_budget).numpy()


def score_retrieval(task: T.TaskSpec, data, model, tokenizer, *, layer: int | None, prefix: str, max_length: int,
                    key: str, query_max_length: int | None = None,
                    token_budget: int = TOKEN_BUDGET) -> tuple[float, dict]:
    """Score an encoder on one language's ``Bitext`` (``bitext_scores``) or ``RankingSet``
    (mAP@20): (metric value, details with ``examples``). A bare encoder embeds mean-pooled ``layer`` states of
    ``prefix + text``; ``query_max_length`` set, a fine-tuned dual encoder embeds the set's dual-encoder texts with
    ``pooled_cls_embeddings``, queries cut at ``query_max_length`` tokens and candidates at ``max_length``. Each side
    is tokenised once into the Arrow cache under ``{key}-{side}``."""
    def embed(texts, side):
        features = encode_texts(task, [prefix + t for t in texts], tokenizer, max_length, f"{key}-{side}")
        return sentence_embeddings(model, padded_inputs(features, tokenizer), layer=layer, token_budget=token_budget)

    if query_max_length is not None:
        assert isinstance(data, RankingSet)
        queries, candidates = ((data.dual_encoder_questions, query_max_length, "dual-questions"),
                               (data.dual_encoder_candidates, max_length, "dual-candidates"))
        embedded = [pooled_cls_embeddings(model, padded_inputs(encode_texts(task, texts, tokenizer, length,
                                                                            f"{key}-{side}"), tokenizer),
                                          token_budget) for texts, length, side in (queries, candidates)]
        return metrics.mean_average_precision_at_k(embedded[0] @ embedded[1].T, data.relevant, k=20), {
            "examples": len(data.questions), "gold_units": len(data.questions)}
    if isinstance(data, Bitext):
        return bitext_scores(task, embed(data.source, "source") @ embed(data.english, "english").T)
    assert isinstance(data, RankingSet)
    scores = embed(data.questions, "questions") @ embed(data.candidates, "candidates").T
    return metrics.mean_average_precision_at_k(scores, data.relevant, k=20), {"examples": len(data.questions),
                                                                              "gold_units": len(data.questions)}


def bitext_scores(task: T.TaskSpec, similarity: np.ndarray) -> tuple[float, dict]:
    """Nearest-neighbour accuracy of a (source x English) similarity matrix in the task's headline direction
    (``TaskSpec.retrieval_direction``: Tatoeba's en -> xx, as XTREME-R's ``evaluate_retrieval.py`` indexes the
    target sentences and queries with the English ones), and details with the other direction under its name."""
    both = metrics.nearest_neighbour_accuracy(similarity)
    other = next(d for d in both if d != task.retrieval_direction)
    return both[task.retrieval_direction], {"direction": task.retrieval_direction, other: both[other],
                                            "examples": similarity.shape[0], "gold_units": similarity.shape[0]}


def score_supervised(task: T.TaskSpec, records: list[dict], model, tokenizer, max_length: int, key: str,
                     token_budget: int = TOKEN_BUDGET, lang: str = SOURCE_LANGUAGE) -> tuple[float, dict]:
    """Score a model with a task head on records of language ``lang``: (metric value, details with ``examples``,
    ``gold_units`` and the per-example ``units`` the report resamples). The scorer is the task kind's
    (``SCORERS``)."""
    features = encode_records(task, records, tokenizer, max_length, key)
    return SCORERS[task.kind](task, features, records, model, padded_inputs(features, tokenizer), token_budget, lang)


def _check_head(task: T.TaskSpec, model) -> None:
    n_labels = getattr(model.config, "num_labels", None)
    if task.labels and n_labels != len(task.labels):
        raise StudyError(f"the model's head has {n_labels} labels but task {task.name!r} has {len(task.labels)}: "
                         f"use a checkpoint fine-tuned on {task.name}")


def _label_scores(task: T.TaskSpec, features, records, model, padded, token_budget, lang) -> tuple[float, dict]:
    """Classification and multiple choice: accuracy; units (correct, 1); pocket tasks add macro-F1."""
    _check_head(task, model)
    predictions = run_batches(lambda inputs: model(**inputs).logits.argmax(-1), padded, model.device,
                              token_budget).tolist()
    gold = features["labels"]
    extra = {"examples": len(gold), "gold_units": len(gold),
             "units": [[float(p == g), 1.0] for p, g in zip(predictions, gold, strict=True)]}
    if task.suite == "pocket":  # the label prior is skewed: report a class-balanced view beside accuracy
        from sklearn.metrics import f1_score

        extra["macro_f1"] = float(f1_score(gold, predictions, average="macro"))
    return metrics.accuracy(gold, predictions), extra


def _tag_scores(task: T.TaskSpec, features, records, model, padded, token_budget, lang) -> tuple[float, dict]:
    """Tagging: XTREME-R's seqeval F1 on the tags as given (BIO for PAN-X, raw UPOS for UD-POS) over each word's
    first sub-token, every word of every sentence (long sentences come in windows: ``features.word_windows``);
    units from ``metrics.tagging_units``; UD-POS adds ``token_accuracy`` beside it. StudyError when a gold word
    would go unscored."""
    _check_head(task, model)
    tags = run_batches(lambda inputs: _widen(model(**inputs).logits.argmax(-1), padded.width), padded,
                       model.device, token_budget).numpy()
    labels, _ = _pad_column(features.with_format("arrow")["labels"], IGNORE_INDEX)  # (n, L), as the inputs
    names, first = np.array(task.labels), labels != IGNORE_INDEX
    predictions: list[list[str]] = []
    for row, keep, start in zip(tags, first, features["word_start"], strict=True):
        if start == 0:
            predictions.append([])  # a sentence's first window
        predictions[-1] += names[row[keep]].tolist()
    gold = [list(r["tags"]) for r in records]
    scored = [len(p) for p in predictions]
    if scored != [len(g) for g in gold]:
        raise StudyError(f"task {task.name!r}: {sum(scored)} of {sum(map(len, gold))} gold words got a prediction; "
                         "every gold word must be scored")
    extra = {"examples": len(gold), "gold_units": sum(scored), "units": metrics.tagging_units(gold, predictions)}
    if task.name == "udpos":
        extra["token_accuracy"] = metrics.token_accuracy(gold, predictions)
    return metrics.tagging_f1(gold, predictions), extra


def _qa_scores(task: T.TaskSpec, features, records, model, padded, token_budget, lang) -> tuple[float, dict]:
    """QA as XTREME's ``run_squad.py`` predicts (transformers 2.x ``squad_metrics.compute_predictions_logits``): per
    window, the 20 best starts and the 20 best ends among its context tokens; a start counts only in the window
    where it has its maximum context (``study.data.qa_features.max_context_flags``), a span ends at or after its
    start and holds at most MAX_ANSWER_TOKENS tokens; the question's answer is its best span (start + end logit)
    over all its windows. Then F1 and EM per question by the task's official rules (``metrics.answer_normalizer``:
    MLQA's per answer language, SQuAD v1.1's otherwise); the score is (F1 + EM) / 2."""
    def span_logits(inputs):  # (b, 2, m): start and end logits of each window
        out = model(**inputs)
        return _widen(torch.stack([out.start_logits, out.end_logits], dim=1), padded.width)

    best: dict[str, tuple[float, str]] = {}
    context_of = {r["id"]: r["context"] for r in records}
    logits = run_batches(span_logits, padded, model.device, token_budget).tolist()
    for (start_logits, end_logits), offsets, example_id, max_context in zip(
            logits, features["offset_mapping"], features["example_id"], features["max_context"], strict=True):
        valid = [i for i, o in enumerate(offsets) if o is not None]
        top_starts = sorted(valid, key=lambda i: -start_logits[i])[:20]
        top_ends = sorted(valid, key=lambda i: -end_logits[i])[:20]
        for s in top_starts:
            if not max_context[s]:
                continue
            for e in top_ends:
                if s <= e < s + MAX_ANSWER_TOKENS:
                    score = start_logits[s] + end_logits[e]
                    if example_id not in best or score > best[example_id][0]:
                        best[example_id] = (score, context_of[example_id][offsets[s][0]:offsets[e][1]])
    predictions = {qid: text for qid, (_, text) in best.items()}
    answers = {r["id"]: r["answers"]["text"] for r in records}
    normalize = metrics.answer_normalizer(task.name, lang)  # MLQA's own rules per answer language, else SQuAD's
    scores = metrics.qa_scores(predictions, answers, normalize)
    units = [[(f1 + em) / 2, 1.0] for f1, em in metrics.qa_question_scores(predictions, answers, normalize).values()]
    return scores[metrics.QA_METRIC], {"f1": scores["f1"], "exact_match": scores["exact_match"],
                                       "examples": len(records), "gold_units": len(units), "units": units}


# {task kind: scorer(task, features, records, model, padded inputs, token budget, lang) -> (score, details)}
SCORERS = {T.CLASSIFICATION: _label_scores, T.MULTIPLE_CHOICE: _label_scores, T.TAGGING: _tag_scores, T.QA: _qa_scores}


def evaluate_languages(task: T.TaskSpec, model, tokenizer, languages: tuple[str, ...], *, data_dir=None,
                       max_length: int = 128, limit: int | None = None, seed: int = 0, layer: int | None = None,
                       prefix: str = "", query_max_length: int | None = None,
                       log: Callable[[str], None] | None = None) -> dict[str, tuple[float, dict]]:
    """{language: (score, details)} on each language's test split — every example, or a seeded subset of ``limit``
    (``subsample``). One loop for the training worker and ``study.cli.evaluate``. Supervised tasks need a model with
    the task's head; retrieval tasks use ``layer`` (None: last) and ``prefix``, or with ``query_max_length`` a dual
    encoder's protocol (``score_retrieval``). ``log`` gets one line per language."""
    model.eval()
    results = {}
    for lang in languages:
        started = time.perf_counter()
        data = load_split(task, "test", lang, data_dir)
        if task.needs_training:
            score, extra = score_supervised(task, subsample(data, limit, seed), model, tokenizer, max_length,
                                            f"test-{lang}", lang=lang)
        else:
            score, extra = score_retrieval(task, data, model, tokenizer, layer=layer, prefix=prefix,
                                           max_length=max_length, key=f"test-{lang}",
                                           query_max_length=query_max_length)
        results[lang] = score, extra
        if log:
            log(f"[evaluate] {task.name} {lang}: {task.metric} {score:.4f} "
                f"({extra['gold_units']} gold units, all scored; {time.perf_counter() - started:.1f} s)")
    return results


def evaluate(task: T.TaskSpec, model, tokenizer, languages: tuple[str, ...], *, model_name: str,
             data_dir=None, layer: int | None = None, prefix: str = "", max_length: int = 128,
             protocol: str | None = None, query_max_length: int | None = None,
             log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> dict:
    """Evaluate every language on its whole test split; the JSON-ready result: task, suite, protocol (``protocol``,
    else the task's), model, metric, the retrieval layer and max length, the scorer packages' versions
    (``metrics.scorer_versions``), ``details`` per language and the scores of ``summarise_languages``."""
    results = evaluate_languages(task, model, tokenizer, languages, data_dir=data_dir, max_length=max_length,
                                 layer=layer, prefix=prefix, query_max_length=query_max_length, log=log)
    per_language = {lang: score for lang, (score, _) in results.items()}
    return {"task": task.name, "suite": task.suite, "protocol": protocol or task.protocol, "model": model_name,
            "metric": task.metric, "layer": layer, "max_length": max_length, "query_max_length": query_max_length,
            "scorer_versions": metrics.scorer_versions(),
            **summarise_languages(per_language), "details": {lang: extra for lang, (_, extra) in results.items()}}


def summarise_languages(per_language: dict[str, float]) -> dict:
    """``per_language``; ``per_family``, ``per_script`` and ``target_average`` over the non-English languages (the
    English rule of ``study.core.protocol``, as in training and the report); ``english``, the English score or None; and
    ``average``, the plain mean over every evaluated language, English included."""
    return {"per_language": per_language,
            "per_family": target_group_means(per_language, "family"),
            "per_script": target_group_means(per_language, "script"),
            "target_average": target_mean(per_language),
            "english": per_language.get(SOURCE_LANGUAGE),
            "average": all_languages_mean(per_language)}

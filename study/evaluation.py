"""Zero-shot evaluation of a model on a task's languages: predictions -> metrics -> per-language / per-family.

Retrieval tasks run on a bare encoder (mean-pooled hidden states of a chosen layer, cosine similarity); the other
kinds need a model with a fine-tuned head of the right type.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from study import metrics
from study import tasks as T
from study.data.features import encode_records
from study.data.sources import Bitext, RankingSet, load_split, subsample
from study.errors import StudyError
from study.objective import IGNORE_INDEX, masked_mean
from study.protocol import SOURCE_LANGUAGE, all_languages_mean, target_group_means, target_mean

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MAX_ANSWER_TOKENS = 30


def _batches(dataset, batch_size: int, tokenizer):
    """(rows, padded model inputs); multiple-choice rows are (B, C, L) and padded per choice."""
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start:start + batch_size]
        if rows["input_ids"] and isinstance(rows["input_ids"][0][0], list):
            yield rows, _pad_choices(rows, tokenizer)
        else:
            yield rows, tokenizer.pad({k: rows[k] for k in MODEL_INPUTS if k in rows}, return_tensors="pt")


@torch.no_grad()
def sentence_embeddings(model, tokenizer, texts: list[str], *, layer: int | None = None, prefix: str = "",
                        batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """L2-normalised mean-pooled embeddings of ``layer`` (None = last layer) of a bare or headed encoder."""
    encoder = model.base_model
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer([prefix + t for t in texts[start:start + batch_size]], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        result = encoder(**batch, output_hidden_states=layer is not None)
        hidden = result.last_hidden_state if layer is None else result.hidden_states[layer]
        out.append(torch.nn.functional.normalize(masked_mean(hidden, batch["attention_mask"]), dim=-1))
    return torch.cat(out).numpy()


def _retrieval(task: T.TaskSpec, data, model, tokenizer, layer, prefix, max_length) -> tuple[float, dict]:
    def embed(texts: list[str]) -> np.ndarray:
        return sentence_embeddings(model, tokenizer, texts, layer=layer, prefix=prefix, max_length=max_length)

    if isinstance(data, Bitext):
        both = metrics.nearest_neighbour_accuracy(embed(data.source) @ embed(data.english).T)
        return both["xx_to_en"], {"en_to_xx": both["en_to_xx"], "examples": len(data.source),
                                   "gold_units": len(data.source)}
    assert isinstance(data, RankingSet)
    scores = embed(data.questions) @ embed(data.candidates).T
    return metrics.mean_average_precision_at_k(scores, data.relevant, k=20), {"examples": len(data.questions),
                                                                              "gold_units": len(data.questions)}


@torch.no_grad()
def score_supervised(task: T.TaskSpec, records: list[dict], model, tokenizer, max_length: int, key: str,
                     batch_size: int = 32, lang: str = SOURCE_LANGUAGE) -> tuple[float, dict]:
    """Score a model with a task head on records of language ``lang``: (metric value, details with ``examples``,
    ``gold_units`` and the per-example ``units`` the report resamples). The scorer is the task kind's
    (``SCORERS``)."""
    features = encode_records(task, records, tokenizer, max_length, key)
    return SCORERS[task.kind](task, features, records, model, tokenizer, batch_size, lang)


def _check_head(task: T.TaskSpec, model) -> None:
    n_labels = getattr(model.config, "num_labels", None)
    if task.labels and n_labels != len(task.labels):
        raise StudyError(f"the model's head has {n_labels} labels but task {task.name!r} has {len(task.labels)}: "
                         f"use a checkpoint fine-tuned on {task.name}")


def _label_scores(task: T.TaskSpec, features, records, model, tokenizer, batch_size, lang) -> tuple[float, dict]:
    """Classification and multiple choice: accuracy; units (correct, 1); pocket tasks add macro-F1."""
    _check_head(task, model)
    predictions, gold = [], []
    for rows, inputs in _batches(features, batch_size, tokenizer):
        predictions += model(**inputs).logits.argmax(-1).tolist()
        gold += rows["labels"]
    extra = {"examples": len(gold), "gold_units": len(gold),
             "units": [[float(p == g), 1.0] for p, g in zip(predictions, gold)]}
    if task.suite == "pocket":  # the label prior is skewed: report a class-balanced view beside accuracy
        from sklearn.metrics import f1_score

        extra["macro_f1"] = float(f1_score(gold, predictions, average="macro"))
    return metrics.accuracy(gold, predictions), extra


def _tag_scores(task: T.TaskSpec, features, records, model, tokenizer, batch_size, lang) -> tuple[float, dict]:
    """Tagging: XTREME-R's seqeval F1 on the tags as given (BIO for PAN-X, raw UPOS for UD-POS) over each word's
    first sub-token, every word of every sentence (long sentences come in windows: ``features.word_windows``);
    units from ``metrics.tagging_units``; UD-POS adds ``token_accuracy`` beside it. StudyError when a gold word
    would go unscored."""
    _check_head(task, model)
    predictions: list[list[str]] = []
    for rows, inputs in _batches(features, batch_size, tokenizer):
        for row_logits, labels, start in zip(model(**inputs).logits.argmax(-1).tolist(), rows["labels"],
                                             rows["word_start"]):
            if start == 0:
                predictions.append([])  # a sentence's first window
            predictions[-1] += [task.labels[row_logits[i]] for i, label in enumerate(labels) if label != IGNORE_INDEX]
    gold = [list(r["tags"]) for r in records]
    scored = [len(p) for p in predictions]
    if scored != [len(g) for g in gold]:
        raise StudyError(f"task {task.name!r}: {sum(scored)} of {sum(map(len, gold))} gold words got a prediction; "
                         "every gold word must be scored")
    extra = {"examples": len(gold), "gold_units": sum(scored), "units": metrics.tagging_units(gold, predictions)}
    if task.name == "udpos":
        extra["token_accuracy"] = metrics.token_accuracy(gold, predictions)
    return metrics.tagging_f1(gold, predictions), extra


def _pad_choices(rows, tokenizer) -> dict[str, torch.Tensor]:
    """(B, C, L) inputs for a multiple-choice head from rows of per-choice token lists."""
    n_choices = len(rows["input_ids"][0])
    flat = {k: [seq for choices in rows[k] for seq in choices] for k in MODEL_INPUTS if k in rows}
    padded = tokenizer.pad(flat, return_tensors="pt")
    return {k: v.view(-1, n_choices, v.shape[-1]) for k, v in padded.items()}


def _qa_scores(task: T.TaskSpec, features, records, model, tokenizer, batch_size, lang) -> tuple[float, dict]:
    """QA: the best span of at most MAX_ANSWER_TOKENS over the 20 best starts and ends per window, then F1 and EM
    per question by the task's official rules (``metrics.answer_normalizer``: MLQA's per answer language, SQuAD
    v1.1's otherwise); the score is (F1 + EM) / 2."""
    best: dict[str, tuple[float, str]] = {}
    context_of = {r["id"]: r["context"] for r in records}
    for rows, inputs in _batches(features, batch_size, tokenizer):
        out = model(**inputs)
        for start_logits, end_logits, offsets, example_id in zip(out.start_logits.tolist(), out.end_logits.tolist(),
                                                                 rows["offset_mapping"], rows["example_id"]):
            valid = [i for i, o in enumerate(offsets) if o is not None]
            top_starts = sorted(valid, key=lambda i: -start_logits[i])[:20]
            top_ends = sorted(valid, key=lambda i: -end_logits[i])[:20]
            for s in top_starts:
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


# {task kind: scorer(task, features, records, model, tokenizer, batch_size, lang) -> (score, details)}
SCORERS = {T.CLASSIFICATION: _label_scores, T.MULTIPLE_CHOICE: _label_scores, T.TAGGING: _tag_scores, T.QA: _qa_scores}


def evaluate_languages(task: T.TaskSpec, model, tokenizer, languages: tuple[str, ...], *, data_dir=None,
                       max_length: int = 128, limit: int | None = None, seed: int = 0, layer: int | None = None,
                       prefix: str = "", log: Callable[[str], None] | None = None) -> dict[str, tuple[float, dict]]:
    """{language: (score, details)} on each language's test split — every example, or a seeded subset of ``limit``
    (``subsample``). One loop for the training worker and ``study.evaluate``. Supervised tasks need a model with
    the task's head; retrieval tasks use ``layer`` (None: last) and ``prefix``. ``log`` gets one line per language."""
    model.eval()
    results = {}
    for lang in languages:
        started = time.perf_counter()
        data = load_split(task, "test", lang, data_dir)
        if task.needs_training:
            score, extra = score_supervised(task, subsample(data, limit, seed), model, tokenizer, max_length,
                                            f"test-{lang}", lang=lang)
        else:
            score, extra = _retrieval(task, data, model, tokenizer, layer, prefix, max_length)
        results[lang] = score, extra
        if log:
            log(f"[evaluate] {task.name} {lang}: {task.metric} {score:.4f} "
                f"({extra['gold_units']} gold units, all scored; {time.perf_counter() - started:.1f} s)")
    return results


def evaluate(task: T.TaskSpec, model, tokenizer, languages: tuple[str, ...], *, model_name: str,
             data_dir=None, layer: int | None = None, prefix: str = "", max_length: int = 128,
             log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> dict:
    """Evaluate every language on its whole test split; the JSON-ready result: task, suite, model, metric,
    ``details`` per language and the scores of ``summarise_languages``."""
    results = evaluate_languages(task, model, tokenizer, languages, data_dir=data_dir, max_length=max_length,
                                 layer=layer, prefix=prefix, log=log)
    per_language = {lang: score for lang, (score, _) in results.items()}
    return {"task": task.name, "suite": task.suite, "protocol": task.protocol, "model": model_name,
            "metric": task.metric,
            **summarise_languages(per_language), "details": {lang: extra for lang, (_, extra) in results.items()}}


def summarise_languages(per_language: dict[str, float]) -> dict:
    """``per_language``; ``per_family``, ``per_script`` and ``target_average`` over the non-English languages (the
    English rule of ``study.protocol``, as in training and the report); ``english``, the English score or None; and
    ``average``, the plain mean over every evaluated language, English included."""
    return {"per_language": per_language,
            "per_family": target_group_means(per_language, "family"),
            "per_script": target_group_means(per_language, "script"),
            "target_average": target_mean(per_language),
            "english": per_language.get(SOURCE_LANGUAGE),
            "average": all_languages_mean(per_language)}

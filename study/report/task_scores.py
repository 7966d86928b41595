"""The report's task scores and XTREME-R's aggregates over them.

A task score is XTREME-R's (``evaluate.py``: the mean over the task's languages, English included; QA (F1 + EM) / 2)
only when it was measured as XTREME-R measures it: an XTREME-R task under its XTREME-R protocol (not a named proxy),
every language the task lists, the full test sets (no ``max_eval_examples`` subset) and, for QA, XTREME's 384-token
windows. Only such scores enter the aggregates of ``study.core.aggregates``; each aggregate, and each category mean,
is shown with its value or the tasks it still lacks.
"""

from __future__ import annotations

from study.core.aggregates import XTREME_R_CATEGORIES, Aggregate, aggregates, category_means
from study.core.protocol import all_languages_mean, target_mean
from study.report.load import ArmRuns, Study
from study.report.rows import per_language_rows


def _unset(value) -> bool:
    return value in (None, "None", "")


def not_xtreme_r(study: Study, group: ArmRuns, languages: set[str]) -> list[str]:
    """Why a model's arm's task score is not an XTREME-R task score (empty: it is one)."""
    from study.data.qa_features import XTREME_QA_MAX_LENGTH
    from study.data.tasks import QA, get_task

    task = get_task(study.task)
    if task.suite != "xtreme-r":
        return [f"{task.suite} suite, not an XTREME-R task"]
    reasons = []
    if not task.protocol.startswith("XTREME-R"):
        reasons.append(task.protocol)
    if not set(task.languages) <= languages:
        reasons.append(f"{len(set(task.languages) & languages)} of its {len(task.languages)} languages")
    subsets = sorted({str(r.params.get("max_eval_examples")) for r in group.runs
                      if not _unset(r.params.get("max_eval_examples"))})
    if subsets:
        reasons.append(f"subsampled test sets (max_eval_examples {', '.join(subsets)})")
    lengths = sorted({str(r.params.get("max_length")) for r in group.runs})
    if task.kind == QA and lengths != [str(XTREME_QA_MAX_LENGTH)]:
        reasons.append(f"QA windows of {', '.join(lengths)} tokens (XTREME-R: {XTREME_QA_MAX_LENGTH})")
    return reasons


def task_score_rows(study: Study) -> list[dict]:
    """Per model and arm, the confirm runs' seed-mean score averaged over every evaluated language of the task,
    English included, beside the zero-shot mean over the non-English targets; ``xtreme_r_task_score`` says whether
    it is XTREME-R's task score and ``not_xtreme_r`` why not (``not_xtreme_r``)."""
    from study.data.tasks import get_task

    task = get_task(study.task)
    rows, languages = [], per_language_rows(study)
    for group in study.arm_runs():
        scores = {r["language"]: r["score"] for r in languages
                  if r["model"] == group.model_name and r["arm"] == group.arm}
        reasons = not_xtreme_r(study, group, set(scores))
        rows.append({"model": group.model_name, "arm": group.arm, "task": task.name, "suite": task.suite,
                     "languages": f"{len(scores)} of {len(task.languages)}",
                     "all_languages": all_languages_mean(scores), "zero_shot_target_mean": target_mean(scores),
                     "xtreme_r_task_score": not reasons, "not_xtreme_r": "; ".join(reasons)})
    return rows


def aggregate_rows(task_rows: list[dict]) -> list[dict]:
    """Per model and arm: each XTREME-R category mean (classification, structured prediction, question answering,
    retrieval), then the three named aggregates (``study.core.aggregates.AGGREGATES``), each with its value or the
    tasks it lacks, from the rows that are XTREME-R task scores only. QA F1 alone is not recorded by a study, so
    ``flat_f1`` lists the QA tasks' F1 among what it lacks."""
    rows = []
    for model, arm in sorted({(r["model"], r["arm"]) for r in task_rows}):
        scores = {r["task"]: r["all_languages"] for r in task_rows
                  if r["model"] == model and r["arm"] == arm and r["xtreme_r_task_score"]}
        means = category_means(scores)
        for category, tasks in XTREME_R_CATEGORIES.items():
            lacking = [t for t in tasks if t not in scores]
            rows.append({"model": model, "arm": arm, "aggregate": f"category: {category}",
                         "value": means.get(category), "tasks": f"{len(tasks) - len(lacking)} of {len(tasks)}",
                         "note": f"mean of {', '.join(tasks)}" if not lacking else
                         f"not computed: needs a full XTREME-R score of {', '.join(lacking)}"})
        for found in aggregates(scores, qa_f1={}):
            rows.append(_aggregate_row(model, arm, found))
    return rows


def _aggregate_row(model: str, arm: str, found: Aggregate) -> dict:
    return {"model": model, "arm": arm, "aggregate": found.name, "value": found.value,
            "tasks": f"{10 - len(found.missing)} of 10", "note": found.note}

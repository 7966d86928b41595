"""XTREME-R's aggregate scores, each under its own name, from per-task scores (each the mean over the task's
languages, English included; a QA task's (F1 + EM) / 2). Pure functions; no I/O.

Three aggregates are in use and they differ (about 2 points on the published baselines), so none is called by
another's name:

* ``xtreme_r_avg`` — the XTREME-R paper's average (Ruder et al., 2021, "XTREME-R: Towards More Challenging and
  Nuanced Multilingual Evaluation", EMNLP): the mean of four **category** means, classification (XNLI, XCOPA),
  structured prediction (UD-POS, WikiANN-NER), question answering (XQuAD, MLQA, TyDiQA-GoldP, each (F1 + EM) / 2) and
  language-agnostic retrieval (Mewsli-X, LAReQA, Tatoeba).
* ``xtreme_r_all_task`` — google-research/xtreme ``evaluate.py``'s ``all_task``: the flat mean over the ten tasks
  (``XTREME_R_TASK2LANGS``), QA tasks again (F1 + EM) / 2.
* ``flat_f1`` — the flat mean over the same ten tasks with each QA task's F1 alone, as later re-runs of the benchmark
  average it.

Each is computed only from a full task set; otherwise it is None and says which tasks it lacks. A category mean
needs only its own tasks and is shown on its own.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass

XTREME_R_CATEGORIES: dict[str, tuple[str, ...]] = {
    "classification": ("xnli", "xcopa"),
    "structured prediction": ("udpos", "panx"),
    "question answering": ("xquad", "mlqa", "tydiqa"),
    "retrieval": ("mewslix", "lareqa", "tatoeba"),
}
XTREME_R_TASKS: tuple[str, ...] = tuple(task for tasks in XTREME_R_CATEGORIES.values() for task in tasks)
QA_TASKS = XTREME_R_CATEGORIES["question answering"]
AGGREGATES = ("xtreme_r_avg", "xtreme_r_all_task", "flat_f1")


@dataclass(frozen=True)
class Aggregate:
    """One named aggregate: its value (None when a task is missing), the tasks it lacks, and how it is computed."""

    name: str
    value: float | None
    missing: tuple[str, ...]
    rule: str

    @property
    def note(self) -> str:
        """The rule, or why there is no value."""
        if self.value is None:
            return f"not computed: needs a full XTREME-R score of {', '.join(self.missing)}"
        return self.rule


def _missing(tasks, scores: Mapping[str, float]) -> tuple[str, ...]:
    return tuple(task for task in tasks if task not in scores)


def category_means(task_scores: Mapping[str, float]) -> dict[str, float]:
    """{category: mean of its task scores} for each XTREME-R category whose tasks all have a score."""
    return {name: statistics.fmean(task_scores[t] for t in tasks) for name, tasks in XTREME_R_CATEGORIES.items()
            if not _missing(tasks, task_scores)}


def xtreme_r_avg(task_scores: Mapping[str, float]) -> Aggregate:
    """The paper's average: the mean of the four category means (``category_means``)."""
    missing = _missing(XTREME_R_TASKS, task_scores)
    value = None if missing else statistics.fmean(category_means(task_scores).values())
    return Aggregate("xtreme_r_avg", value, missing, "XTREME-R paper: mean of the 4 category means")


def xtreme_r_all_task(task_scores: Mapping[str, float]) -> Aggregate:
    """evaluate.py's ``all_task``: the flat mean of the ten task scores."""
    missing = _missing(XTREME_R_TASKS, task_scores)
    value = None if missing else statistics.fmean(task_scores[t] for t in XTREME_R_TASKS)
    return Aggregate("xtreme_r_all_task", value, missing, "evaluate.py all_task: flat mean of the 10 tasks")


def flat_f1(task_scores: Mapping[str, float], qa_f1: Mapping[str, float]) -> Aggregate:
    """The flat mean of the ten tasks with each QA task's F1 (``qa_f1``) in place of its (F1 + EM) / 2."""
    scores = {**{t: s for t, s in task_scores.items() if t not in QA_TASKS},
              **{t: qa_f1[t] for t in QA_TASKS if t in qa_f1 and t in task_scores}}
    missing = tuple(f"{t} (its F1)" if t in task_scores else t for t in _missing(XTREME_R_TASKS, scores))
    value = None if missing else statistics.fmean(scores[t] for t in XTREME_R_TASKS)
    return Aggregate("flat_f1", value, missing, "flat mean of the 10 tasks, QA by F1 alone")


def aggregates(task_scores: Mapping[str, float], qa_f1: Mapping[str, float]) -> list[Aggregate]:
    """The three aggregates, in ``AGGREGATES`` order, of full XTREME-R task scores (a task evaluated otherwise must
    be left out of ``task_scores`` by the caller)."""
    return [xtreme_r_avg(task_scores), xtreme_r_all_task(task_scores), flat_f1(task_scores, qa_f1)]

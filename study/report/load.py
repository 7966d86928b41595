"""Reading a study's runs from MLflow into plain records: ``load_studies`` -> one ``Study`` per task, of
``TrialRun``s, each with the scores (and per-example units) of the step English dev selected."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from study.analysis import units_score
from study.errors import StudyError
from study.mlflow_store import PARENT_TAG
from study.mlflow_store import client as mlflow_client
from study.protocol import (
    DEFAULT_MODALITY,
    ENGLISH_DEV,
    EXAMPLES_ARTIFACT,
    RUN_KIND_TAG,
    SEED_REPEAT_RUN,
    STUDY_RUN,
    TRIAL_RUN,
    language_key,
    language_scores,
    select,
    selection_key,
    target_mean,
)


@dataclass
class TrialRun:
    """One finished trial (or seed repeat) as the report sees it: its English dev score and test scores at the
    step English dev selected."""

    run_id: str
    kind: str  # TRIAL_RUN or SEED_REPEAT_RUN
    study_run: str
    model: str
    model_name: str
    stand_in: bool
    modality: str
    params: dict
    dev: float
    start: int
    scores: dict[str, float] = field(default_factory=dict)  # test languages at the selected step
    units: dict[str, list] | None = None  # per-example units, when the trial logged them

    @property
    def target_mean(self) -> float:
        """Mean over the non-English test languages (``protocol.target_mean``); NaN without targets."""
        return target_mean(self.scores)


@dataclass
class Study:
    """The finished trials of one task in an MLflow experiment, with the studies' parent runs."""

    experiment: str
    uri: str
    metric: str
    studies: list  # the parent runs
    trials: list[TrialRun]
    task: str  # the task's registry name (study.tasks)

    def models(self) -> list[str]:
        """The model keys of the experiment's trials, sorted."""
        return sorted({t.model for t in self.trials})

    def trials_of(self, model: str) -> list[TrialRun]:
        """The model's search trials (seed repeats left out), in start order."""
        return sorted((t for t in self.trials if t.kind == TRIAL_RUN and t.model == model), key=lambda t: t.start)

    def best(self, model: str, modality: str | None = None) -> TrialRun | None:
        """The configuration English dev selects (never a test score); the earlier trial on ties."""
        pool = [t for t in self.trials_of(model) if modality is None or t.modality == modality]
        return select(pool, score=lambda t: t.dev, order=lambda t: t.start) if pool else None

    def seeds_of(self, best: TrialRun) -> list[TrialRun]:
        """The best configuration's own run and its seed repeats (same study)."""
        return [best] + [t for t in self.trials if t.kind == SEED_REPEAT_RUN and t.study_run == best.study_run]


def load_studies(uri: str, experiment: str) -> list[Study]:
    """The finished ``study.tune`` runs of ``experiment`` at ``uri``, one ``Study`` per task (sorted by task name).
    StudyError when the experiment does not exist, has no finished trials, or no trial recorded an English dev
    score."""
    from study.tasks import get_task

    client = mlflow_client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise StudyError(f"no MLflow experiment named {experiment!r} at {uri} (experiments there: {names})")
    runs = client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'", max_results=50000)
    studies = [r for r in runs if r.data.tags.get(RUN_KIND_TAG) == STUDY_RUN]
    candidates = [r for r in runs if r.data.tags.get(RUN_KIND_TAG) in (TRIAL_RUN, SEED_REPEAT_RUN)]
    if not candidates:
        raise StudyError(f"experiment {experiment!r} at {uri} has no finished study trials ({len(runs)} finished "
                         "runs, none made by python -m study.tune): run a study first, or pass its --experiment")
    out = []
    for task in sorted({r.data.params["task"] for r in candidates}):
        metric = get_task(task).metric
        trials = [t for t in (_trial(client, r, metric) for r in candidates if r.data.params["task"] == task)
                  if t is not None]
        if trials:
            out.append(Study(experiment, uri, metric, [r for r in studies if r.data.params.get("task") == task],
                             trials, task))
    if not out:
        raise StudyError(f"experiment {experiment!r}: no finished trial recorded an English dev score")
    return out


def _trial(client, run, metric: str) -> TrialRun | None:
    history = client.get_metric_history(run.info.run_id, selection_key(metric))
    if not history:
        return None
    tags, params = run.data.tags, run.data.params
    selected = select(history, score=lambda m: m.value, order=lambda m: m.step)
    units, scores = None, {}
    if any(a.path == EXAMPLES_ARTIFACT for a in client.list_artifacts(run.info.run_id)):
        with tempfile.TemporaryDirectory() as scratch:
            data = json.loads(Path(client.download_artifacts(run.info.run_id, EXAMPLES_ARTIFACT, scratch)).read_text())
        units = {k: v for k, v in data["units"].items() if k != ENGLISH_DEV}
        scores = {lang: units_score(u) for lang, u in units.items()}
    else:  # no per-example scores: the logged test metrics at the selected step (one query per language)
        for lang in language_scores(run.data.metrics, metric):
            history = client.get_metric_history(run.info.run_id, language_key(metric, lang))
            values = [m for m in history if m.step == selected.step]
            if values:
                scores[lang] = values[-1].value
    return TrialRun(run.info.run_id, tags[RUN_KIND_TAG], tags.get(PARENT_TAG, ""), tags.get("model", "?"),
                    tags.get("model_name", tags.get("model", "?")), tags.get("offline_stand_in") == "True",
                    params.get("modality", DEFAULT_MODALITY), dict(params), selected.value, run.info.start_time or 0,
                    scores, units)


"""Reading a study's runs from MLflow into plain records: ``load_studies`` -> one ``Study`` per task, of
``TrialRun``s, each with the scores (and per-example units) of the step English dev selected, and its arm and phase.
Comparisons are drawn from confirm runs only (``Study.arm_runs``); search trials feed the search's own figures."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from study.core.arms import ARMS
from study.core.errors import StudyError
from study.core.protocol import (
    ALIGNMENT_METRICS,
    ALIGNMENT_UNITS,
    ARM_TAG,
    CONFIRM_PHASE,
    DEFAULT_MODALITY,
    ENGLISH_DEV,
    EXAMPLES_ARTIFACT,
    PHASE_TAG,
    RUN_KIND_TAG,
    SEARCH_PHASE,
    STUDY_RUN,
    TOTAL_STEPS_KEY,
    TRIAL_RUN,
    language_key,
    language_scores,
    reached_last_step,
    select,
    selection_key,
    target_mean,
)
from study.report.analysis import units_score
from study.track.mlflow_store import PARENT_TAG
from study.track.mlflow_store import client as mlflow_client


@dataclass
class TrialRun:
    """One finished run (a search trial or a confirm run) as the report sees it: its English dev score and test
    scores at the step English dev selected."""

    run_id: str
    phase: str  # study.tune.trial.SEARCH_PHASE or CONFIRM_PHASE
    arm: str  # study.core.arms
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
    alignment: dict[str, float] = field(default_factory=dict)  # the alignment probe's align*/ keys at that step
    alignment_units: dict[str, dict] = field(default_factory=dict)  # its per-sentence retrieval hits (ALIGNMENT_UNITS)

    @property
    def seed(self) -> int | None:
        """The run's training seed (its ``seed`` parameter; every arm of a study runs the same confirm seeds, which is
        what pairs two arms' runs); None where the run did not record one."""
        value = self.params.get("seed")
        try:
            return int(value) if value not in (None, "None") else None
        except (TypeError, ValueError):
            return None

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
    task: str  # the task's registry name (study.data.tasks)

    def models(self) -> list[str]:
        """The model keys of the experiment's trials, sorted."""
        return sorted({t.model for t in self.trials})

    def trials_of(self, model: str) -> list[TrialRun]:
        """The model's search trials (confirm runs left out), in start order."""
        return sorted((t for t in self.trials if t.phase == SEARCH_PHASE and t.model == model), key=lambda t: t.start)

    def artifact(self, run_id: str, path: str) -> bytes | None:
        """The bytes of a run's artifact at ``path``; None when the run has no such artifact."""
        found = mlflow_client(self.uri)
        if not any(a.path == path for a in found.list_artifacts(run_id)):
            return None
        return artifact_bytes(found, run_id, path)

    def arm_runs(self) -> list[ArmRuns]:
        """Per model and arm (models sorted, arms in ``study.core.arms.ARMS`` order), its confirm runs in start order:
        the only runs a comparison draws from."""
        out = []
        for model in self.models():
            mine = [t for t in self.trials if t.phase == CONFIRM_PHASE and t.model == model]
            order = list(ARMS)
            for arm in sorted({t.arm for t in mine}, key=lambda a: (order.index(a) if a in order else len(order), a)):
                out.append(ArmRuns(model, arm, sorted((t for t in mine if t.arm == arm), key=lambda t: t.start)))
        return out


@dataclass(frozen=True)
class ArmRuns:
    """The confirm runs of one model's arm: the same configuration on the study's confirm seeds."""

    model: str
    arm: str
    runs: list[TrialRun]

    @property
    def model_name(self) -> str:
        """The model's display name (an offline stand-in says so)."""
        return self.runs[0].model_name

    @property
    def untrained(self) -> bool:
        """Whether the model is an untrained offline stand-in (random weights): nothing to compare it on."""
        return self.runs[0].stand_in and "untrained" in self.model_name

    @property
    def label(self) -> str:
        """``<model name> / <arm>``."""
        return f"{self.model_name} / {self.arm}"


def load_studies(uri: str, experiment: str) -> list[Study]:
    """The finished ``study.tune.driver`` runs of ``experiment`` at ``uri``, one ``Study`` per task (sorted by task
    name). StudyError when the experiment does not exist, has no finished trials, or no trial recorded an English dev
    score."""
    from study.data.tasks import get_task

    client = mlflow_client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise StudyError(f"no MLflow experiment named {experiment!r} at {uri} (experiments there: {names})")
    runs = client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'", max_results=50000)
    studies = [r for r in runs if r.data.tags.get(RUN_KIND_TAG) == STUDY_RUN]
    candidates = [r for r in runs if r.data.tags.get(RUN_KIND_TAG) == TRIAL_RUN]
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
    if not any(s.arm_runs() for s in out):
        raise StudyError(f"experiment {experiment!r} has no finished confirm runs (search trials only): comparisons "
                         "are drawn from confirm runs; finish the study with `python -m study.tune ... --resume`")
    return out


def _trial(client, run, metric: str) -> TrialRun | None:
    """A finished trial as the report reads it; None without an English dev score, or for a confirm run recorded
    FINISHED short of its planned last step (a run a signal stopped, as studies recorded it before they checked the
    step: only ASHA ends runs early, and only in the search)."""
    history = client.get_metric_history(run.info.run_id, selection_key(metric))
    if not history:
        return None
    if (run.data.tags.get(PHASE_TAG) == CONFIRM_PHASE and TOTAL_STEPS_KEY in run.data.metrics
            and not reached_last_step(run.data.metrics)):
        return None
    tags, params = run.data.tags, run.data.params
    selected = select(history, score=lambda m: m.value, order=lambda m: m.step)
    units, scores, data = None, {}, {}
    if any(a.path == EXAMPLES_ARTIFACT for a in client.list_artifacts(run.info.run_id)):
        data = json.loads(artifact_bytes(client, run.info.run_id, EXAMPLES_ARTIFACT))
        units = {k: v for k, v in data["units"].items() if k != ENGLISH_DEV}
        scores = {lang: units_score(u) for lang, u in units.items()}
    else:  # no per-example scores: the logged test metrics at the selected step (one query per language)
        for lang in language_scores(run.data.metrics, metric):
            history = client.get_metric_history(run.info.run_id, language_key(metric, lang))
            values = [m for m in history if m.step == selected.step]
            if values:
                scores[lang] = values[-1].value
    return TrialRun(run.info.run_id, tags.get(PHASE_TAG, SEARCH_PHASE), tags.get(ARM_TAG, ""), tags.get(PARENT_TAG, ""),
                    tags.get("model", "?"),
                    tags.get("model_name", tags.get("model", "?")), tags.get("offline_stand_in") == "True",
                    params.get("modality", DEFAULT_MODALITY), dict(params), selected.value, run.info.start_time or 0,
                    scores, units, data.get(ALIGNMENT_METRICS, {}), data.get(ALIGNMENT_UNITS, {}))


def artifact_bytes(client, run_id: str, path: str) -> bytes:
    """The bytes of one artifact of a run (downloaded into a scratch folder that is removed)."""
    with tempfile.TemporaryDirectory() as scratch:
        return Path(client.download_artifacts(run_id, path, scratch)).read_bytes()


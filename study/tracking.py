"""MLflow tracking of a study: one parent run per study, one nested run per Tune trial; the study's only MLflow
writer (clients and shared helpers come from ``study.mlflow_store``).

The Tune callback talks to MLflow through ``MlflowClient`` from the Tune driver process (workers never need
MLflow). Each trial run is found again by its ``trial_id`` tag, so a study resumed after the driver was killed
continues the same runs instead of creating duplicates. Metrics are logged with the trial's optimizer ``step``, which
survives restarts, so a restored trial does not log the same step twice under a new index.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from ray.tune import Callback

from study.errors import StudyError
from study.mlflow_store import PARENT_TAG, client, experiment_id, safe_key
from study.outbox import delete, get, outbox_location, outbox_take, put
from study.protocol import (
    BEST_PER_LANGUAGE_ARTIFACT,
    PER_LANGUAGE_ARTIFACT,
    RUN_KIND_TAG,
    SELECTED_STEP_TAG,
    STAGE_ARTIFACT,
    STAGE_RECORD,
    STUDY_RUN,
    TRIAL_RUN,
    StageResult,
    improves,
    language_scores,
)
from study.trial import TrialConfig


def start_parent_run(uri: str, experiment: str, study_name: str, params: dict, tags: dict,
                     artifacts: list[Path]) -> str:
    """Create the study's parent run (or return the one a resumed study already has)."""
    mlflow = client(uri, fail_fast=True)
    exp_id = experiment_id(uri, experiment)
    found = mlflow.search_runs([exp_id], f"tags.study_name = '{study_name}' and tags.{RUN_KIND_TAG} = '{STUDY_RUN}'")
    if found:
        mlflow.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    run = mlflow.create_run(exp_id, run_name=study_name, tags={**tags, "study_name": study_name,
                                                                          RUN_KIND_TAG: STUDY_RUN})
    for key, value in params.items():
        mlflow.log_param(run.info.run_id, safe_key(key), str(value)[:6000])
    for path in artifacts:
        mlflow.log_artifact(run.info.run_id, str(path))
    return run.info.run_id


def end_parent_run(uri: str, run_id: str, summary: dict, table_csv: str | None) -> None:
    """Log the study's summary metrics (finite numbers only) and its best per-language table, and mark the
    parent run FINISHED."""
    mlflow = client(uri, fail_fast=True)
    for key, value in summary.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            mlflow.log_metric(run_id, safe_key(key), float(value))
    if table_csv:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / BEST_PER_LANGUAGE_ARTIFACT
            path.write_text(table_csv)
            mlflow.log_artifact(run_id, str(path))
    mlflow.set_terminated(run_id, status="FINISHED")


def per_language_csv(result: dict, metric: str) -> str:
    """The per-language table of a report: language, family, branch, script, score."""
    from study.languages import get_language

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["language", "name", "family", "branch", "script", metric])
    for code, value in sorted(language_scores(result, metric).items()):
        lang = get_language(code)
        writer.writerow([lang.code, lang.name, lang.family, lang.branch, lang.script, f"{value:.6f}"])
    return out.getvalue()


# --- buffered writes: MLflow down for a while loses nothing ----------------------------------------------------


RETRY_EVERY_S = 20.0  # while MLflow is down, try again at most this often
PENDING_FILE = "pending.pkl"  # the buffer, in the study's outbox


class MLflowWriter:
    """Applies MLflow writes in order; while the server is unreachable they wait in a buffer that is also saved to
    the study's storage (``mlflow-outbox/pending.pkl``), so a later call, the end of the study or a ``--resume``
    after a crash writes them. Runs are found by their ``trial_id`` tag, so every write is safe to repeat."""

    def __init__(self, uri: str, experiment: str, parent_run_id: str, storage: str, study: str):
        self.uri, self.experiment, self.parent_run_id = uri, experiment, parent_run_id
        self.storage, self.study = storage, study
        self._runs: dict[str, str] = {}
        self._client = None
        self._down_since: float | None = None
        self._last_try = 0.0
        self.pending: list[tuple] = self._load()
        self._saved = bool(self.pending)

    def __getstate__(self):  # the Tuner pickles its callbacks with the experiment state
        return {**self.__dict__, "_client": None}

    def __setstate__(self, state):  # a restored study: the buffer on disk is newer than the pickled one
        self.__dict__.update(state)
        self._down_since, self._last_try = None, 0.0
        self.pending = self._load()
        self._saved = bool(self.pending)

    @property
    def client(self):
        """The MLflow client, made on first use with the writer's short timeouts (not pickled)."""
        if self._client is None:
            self._client = client(self.uri, fail_fast=True)
        return self._client

    def _load(self) -> list[tuple]:
        import pickle

        data = get(outbox_location(self.storage, self.study), PENDING_FILE)
        return pickle.loads(data) if data else []

    def _save(self) -> None:
        import pickle

        if self.pending:
            put(outbox_location(self.storage, self.study), PENDING_FILE, pickle.dumps(self.pending))
        else:
            delete(outbox_location(self.storage, self.study), PENDING_FILE)

    def send(self, trial_id: str, op: str, payload) -> None:
        """Queue one write (op: create, params, metrics, artifact, tag, terminate) and try to flush the queue."""
        self.pending.append((trial_id, op, payload))
        self.flush()

    def flush(self) -> bool:
        """Write what is buffered; False (and the rest kept, also on disk) when the server does not answer."""
        from mlflow.exceptions import MlflowException

        if self._down_since is not None and time.time() - self._last_try < RETRY_EVERY_S:
            self._save()  # still down, most likely: keep the new record and return at once (callbacks stay fast)
            self._saved = True
            return False
        self._last_try = time.time()
        while self.pending:
            try:
                self._apply(*self.pending[0])
            except (MlflowException, OSError, StudyError) as err:
                if self._down_since is None:
                    self._down_since = time.time()
                    print(f"[mlflow] {self.uri} is not answering ({err.__class__.__name__}); keeping the records "
                          "to write later", file=sys.stderr, flush=True)
                self._save()
                self._saved = True
                return False
            self.pending.pop(0)
        if self._down_since is not None:
            print(f"[mlflow] {self.uri} answers again: buffered records written", file=sys.stderr, flush=True)
            self._down_since = None
        if self._saved:  # the buffer on disk is stale now
            self._save()
            self._saved = False
        return True

    def run_id(self, trial_id: str) -> str:
        """The MLflow run of a trial, found by its ``trial_id`` and parent tags (so a resumed study reuses it)."""
        if trial_id not in self._runs:
            found = self.client.search_runs([experiment_id(self.uri, self.experiment)],
                                            f"tags.trial_id = '{trial_id}' and "
                                            f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'")
            if not found:
                raise StudyError(f"no MLflow run yet for trial {trial_id}")
            self._runs[trial_id] = found[0].info.run_id
        return self._runs[trial_id]

    def _apply(self, trial_id: str, op: str, payload) -> None:
        from mlflow.entities import Metric, Param

        if op == "create":
            try:
                run_id = self.run_id(trial_id)  # a resumed study, or a retried create: continue that run
                self.client.update_run(run_id, status="RUNNING")
            except StudyError:
                exp_id = experiment_id(self.uri, self.experiment)
                run_id = self.client.create_run(exp_id, run_name=payload["name"], tags=payload["tags"]).info.run_id
                self._runs[trial_id] = run_id
                params = [Param(safe_key(k), str(v)[:6000]) for k, v in payload["params"].items()]
                for start in range(0, len(params), 100):
                    self.client.log_batch(run_id, params=params[start:start + 100])
            return
        run_id = self.run_id(trial_id)
        if op == "metrics":
            metrics = [Metric(key, value, timestamp, step) for key, value, timestamp, step in payload]
            for start in range(0, len(metrics), 500):
                self.client.log_batch(run_id, metrics=metrics[start:start + 500])
        elif op == "params":
            existing = self.client.get_run(run_id).data.params
            params = [Param(safe_key(k), str(v)[:6000]) for k, v in payload.items() if safe_key(k) not in existing]
            if params:
                self.client.log_batch(run_id, params=params)
        elif op == "artifact":
            with tempfile.TemporaryDirectory() as directory:
                path = Path(directory) / payload["name"]
                path.write_bytes(payload["data"])
                self.client.log_artifact(run_id, str(path))
        elif op == "tag":
            self.client.set_tag(run_id, *payload)
        elif op == "terminate":
            self.client.set_terminated(run_id, status=payload)


class MLflowTrialCallback(Callback):
    """Tune callback: a nested MLflow run per trial with every parameter, every metric as a step series, the
    per-language table of its selected report, what the trial left in its outbox (intermediate stage, per-example
    scores), and FAILED status for failed trials. Writes go through ``MLflowWriter``: nothing is lost while the
    server is down."""

    def __init__(self, writer: MLflowWriter, tags: dict, selection_key: str, metric: str):
        self.writer, self.tags, self.selection_key, self.metric = writer, tags, selection_key, metric
        self._started: set[str] = set()
        self._best: dict[str, dict] = {}
        self._nodes: dict[str, list[str]] = {}

    def _ensure_run(self, trial) -> None:
        if trial.trial_id in self._started:
            return
        config = TrialConfig.from_tune(trial.config)
        tags = {RUN_KIND_TAG: TRIAL_RUN, **self.tags, PARENT_TAG: self.writer.parent_run_id,
                "trial_id": trial.trial_id, "trial_name": str(trial), "modality": config.modality}
        params = config.params()  # the effective values, not base + overrides
        self.writer.send(trial.trial_id, "create", {"name": str(trial), "tags": tags, "params": params})
        self._started.add(trial.trial_id)

    def setup(self, **info):
        """Write what a crashed or interrupted study left in the buffer."""
        self.writer.flush()  # records a crashed or interrupted study left behind

    def on_trial_start(self, iteration, trials, trial, **info):
        """Create (or find) the trial's nested run."""
        self._ensure_run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """Log every finite metric at the trial's optimizer step, the nodes it trained on, and keep the report
        English dev selects so far (``protocol.improves``)."""
        self._ensure_run(trial)
        step = int(result.get("step", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        metrics = [(safe_key(k), float(v), now, step) for k, v in result.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   and ("/" in k or k in ("step", "epoch", "eval_seconds"))]
        self.writer.send(trial.trial_id, "metrics", metrics)
        nodes = self._nodes.setdefault(trial.trial_id, [])
        if result.get("node_id") and result["node_id"] not in nodes[-1:]:  # where it trained, moves included
            nodes.append(result["node_id"])
            self.writer.send(trial.trial_id, "tag", ("nodes", ",".join(nodes)))
        best = self._best.get(trial.trial_id)
        if self.selection_key in result and improves(result[self.selection_key],
                                                     best[self.selection_key] if best else None):
            self._best[trial.trial_id] = {k: v for k, v in result.items() if isinstance(v, (int, float))}

    def _finish(self, trial, status: str) -> None:
        self._ensure_run(trial)
        trial_id = trial.trial_id
        best = self._best.get(trial_id)
        if best:
            self.writer.send(trial_id, "artifact", {"name": PER_LANGUAGE_ARTIFACT,
                                                    "data": per_language_csv(best, self.metric).encode()})
            self.writer.send(trial_id, "tag", (SELECTED_STEP_TAG, str(int(best.get("step", 0)))))
        for name, data in sorted(outbox_take(self.writer.storage, self.writer.study, trial_id).items()):
            if name == STAGE_RECORD:
                for op, payload in stage_writes(StageResult.from_json(data)):
                    self.writer.send(trial_id, op, payload)
            else:
                self.writer.send(trial_id, "artifact", {"name": name, "data": data})
        self.writer.send(trial_id, "terminate", status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        """Log the selected report's table, the outbox's files, and mark the run FINISHED."""
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        """As ``on_trial_complete``, with status FAILED."""
        self._finish(trial, "FAILED")

    def on_experiment_end(self, trials, **info):
        """Write whatever is still buffered."""
        self.writer.flush()


def stage_writes(stage: StageResult) -> list[tuple[str, object]]:
    """The MLflow writes of a trial's intermediate stage: loss series, probe, parameters, counts, stage.json."""
    meta, now = stage.meta, int(time.time() * 1000)
    metrics = [("intermediate/loss", loss, now, step) for step, loss in enumerate(meta["losses"], start=1)]
    metrics += [(safe_key(f"intermediate/probe/{lang}"), score, now, 0)
                for lang, score in meta.get("probe", {}).items()]
    skipped = meta["examples"]["skipped"]
    params = {"intermediate.checkpoint": stage.directory, "intermediate.cache_hit": stage.cache_hit,
              "intermediate.vision_tower": meta["vision_tower"] or "none (text)", "intermediate.data": meta["data"],
              "intermediate.train_examples": meta["examples"]["train"],
              **{f"intermediate.skipped.{safe_key(k)}": v for k, v in skipped.items()}}
    return [("metrics", metrics), ("params", params),
            ("artifact", {"name": STAGE_ARTIFACT, "data": json.dumps(meta, indent=1).encode()})]

"""MLflow tracking of a study: one parent run per study, one nested run per Tune trial. The only module that
imports mlflow.

The Tune callback talks to MLflow through ``MlflowClient`` from the Tune driver process (workers never need
MLflow). Each trial run is found again by its ``trial_id`` tag, so a study resumed after the driver was killed
continues the same runs instead of creating duplicates. Metrics are logged with the trial's optimizer ``step``, which
survives restarts, so a restored trial does not log the same step twice under a new index.
"""

from __future__ import annotations

import csv
import io
import math
import re
import tempfile
import time
from pathlib import Path

from ray.tune import Callback

from study.errors import StudyError
from study.search_space import split_trial_config

_UNSAFE = re.compile(r"[^\w\-./ ]")
PARENT_TAG = "mlflow.parentRunId"


def safe_key(key: str) -> str:
    """MLflow accepts letters, digits and _ - . / space in metric and param names."""
    return _UNSAFE.sub("_", key)


def check_server(uri: str) -> None:
    """Fail fast (one line) when an http(s) tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
    except OSError as err:
        raise StudyError(f"MLflow tracking server {uri} is unreachable ({getattr(err, 'reason', err)}); start it "
                         f"(mlflow server --host 127.0.0.1 --port 5000) or omit --mlflow-uri for the local store")\
            from None


def experiment_id(uri: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def start_parent_run(uri: str, experiment: str, study_name: str, params: dict, tags: dict,
                     artifacts: list[Path]) -> str:
    """Create the study's parent run (or return the one a resumed study already has)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp_id = experiment_id(uri, experiment)
    found = client.search_runs([exp_id], f"tags.study_name = '{study_name}' and tags.run_kind = 'study'")
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=study_name, tags={**tags, "study_name": study_name, "run_kind": "study"})
    for key, value in params.items():
        client.log_param(run.info.run_id, safe_key(key), str(value)[:6000])
    for path in artifacts:
        client.log_artifact(run.info.run_id, str(path))
    return run.info.run_id


def end_parent_run(uri: str, run_id: str, summary: dict, table_csv: str | None) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for key, value in summary.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            client.log_metric(run_id, safe_key(key), float(value))
    if table_csv:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "best_per_language.csv"
            path.write_text(table_csv)
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status="FINISHED")


def per_language_csv(result: dict, metric: str) -> str:
    """The per-language table of a report: language, family, branch, script, score."""
    from study.languages import get_language

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["language", "name", "family", "branch", "script", metric])
    prefix = f"test/{metric}/"
    for key, value in sorted(result.items()):
        if key.startswith(prefix) and key != prefix + "avg":
            lang = get_language(key[len(prefix):])
            writer.writerow([lang.code, lang.name, lang.family, lang.branch, lang.script, f"{value:.6f}"])
    return out.getvalue()


def flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class MLflowTrialCallback(Callback):
    """Tune callback: a nested MLflow run per trial with every parameter, every metric as a step series, the
    per-language table of its selected report as a CSV artifact, and FAILED status for failed trials."""

    def __init__(self, tracking_uri: str, experiment: str, parent_run_id: str, tags: dict, selection_key: str,
                 metric: str):
        self.tracking_uri, self.experiment, self.parent_run_id = tracking_uri, experiment, parent_run_id
        self.tags, self.selection_key, self.metric = tags, selection_key, metric
        self._runs: dict[str, str] = {}
        self._best: dict[str, dict] = {}
        self._client = None

    def __getstate__(self):  # the Tuner pickles its callbacks with the experiment state
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def _run_id(self, trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        exp_id = experiment_id(self.tracking_uri, self.experiment)
        found = self.client.search_runs([exp_id], f"tags.trial_id = '{trial.trial_id}' and "
                                                  f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'")
        if found:  # a resumed study: continue the trial's existing run
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            config = trial.config
            tags = {"run_kind": "trial", **self.tags, PARENT_TAG: self.parent_run_id, "trial_id": trial.trial_id,
                    "trial_name": str(trial), "modality": str(config.get("modality", "none"))}
            run_id = self.client.create_run(exp_id, run_name=str(trial), tags=tags).info.run_id
            from mlflow.entities import Param

            train, stage = split_trial_config(config)  # the effective values, not base + overrides
            values = {**train, **stage, **flatten(config.get("scaling", {}), "scaling.")}
            params = [Param(safe_key(k), str(v)[:6000]) for k, v in values.items()]
            for start in range(0, len(params), 100):
                self.client.log_batch(run_id, params=params[start:start + 100])
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        step = int(result.get("step", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        metrics = [Metric(safe_key(k), float(v), now, step) for k, v in result.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   and ("/" in k or k in ("step", "epoch", "eval_seconds"))]
        run_id = self._run_id(trial)
        for start in range(0, len(metrics), 500):
            self.client.log_batch(run_id, metrics=metrics[start:start + 500])
        best = self._best.get(trial.trial_id)
        if self.selection_key in result and (best is None or result[self.selection_key] > best[self.selection_key]):
            self._best[trial.trial_id] = {k: v for k, v in result.items() if isinstance(v, (int, float))}

    def _finish(self, trial, status: str) -> None:
        run_id = self._run_id(trial)
        best = self._best.get(trial.trial_id)
        if best:
            with tempfile.TemporaryDirectory() as directory:
                path = Path(directory) / "per_language.csv"
                path.write_text(per_language_csv(best, self.metric))
                self.client.log_artifact(run_id, str(path))
            self.client.set_tag(run_id, "selected_step", str(int(best.get("step", 0))))
        self.client.set_terminated(run_id, status=status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "FAILED")


def trial_run_id(client, uri: str, experiment: str, trial_id: str) -> str:
    """The MLflow run of a trial, from inside the trial (the Tune callback creates it when the trial starts)."""
    exp_id = experiment_id(uri, experiment)
    for _ in range(30):
        runs = client.search_runs([exp_id], f"tags.trial_id = '{trial_id}'")
        if runs:
            return runs[0].info.run_id
        time.sleep(1)
    raise StudyError(f"no MLflow run for trial {trial_id} to record its results in")


def log_selected_examples(uri: str, experiment: str, trial_id: str, checkpoint) -> None:
    """Attach the per-example scores of a trial's selected checkpoint (English dev) to its run, for the report's
    bootstrap; the report reads them from MLflow, never from Ray's storage."""
    from mlflow.tracking import MlflowClient

    from study.train import EXAMPLES_FILE

    client = MlflowClient(uri)
    with checkpoint.as_directory() as directory:
        path = Path(directory) / EXAMPLES_FILE
        if path.is_file():
            client.log_artifact(trial_run_id(client, uri, experiment, trial_id), str(path))


def log_stage(uri: str, experiment: str, trial_id: str, directory: Path, meta: dict, cache_hit: bool) -> None:
    """Record a trial's intermediate stage in its MLflow run: loss series, probe, counts, checkpoint, metadata."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run_id = trial_run_id(client, uri, experiment, trial_id)
    now = int(time.time() * 1000)
    metrics = [Metric("intermediate/loss", loss, now, step) for step, loss in enumerate(meta["losses"], start=1)]
    metrics += [Metric(safe_key(f"intermediate/probe/{lang}"), score, now, 0)
                for lang, score in meta.get("probe", {}).items()]
    for start in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[start:start + 500])
    skipped = meta["examples"]["skipped"]
    params = {"intermediate.checkpoint": str(directory), "intermediate.cache_hit": cache_hit,
              "intermediate.vision_tower": meta["vision_tower"] or "none (text)", "intermediate.data": meta["data"],
              "intermediate.train_examples": meta["examples"]["train"],
              **{f"intermediate.skipped.{safe_key(k)}": v for k, v in skipped.items()}}
    client.log_batch(run_id, params=[Param(safe_key(k), str(v)) for k, v in params.items()])
    client.log_artifact(run_id, str(directory / "stage.json"))

"""MLflow writes that are safe to repeat (a retried write completes a half-written run and logs nothing twice), and
which failed writes a retry cannot fix: a transient fault (no connection, a timeout, a 5xx) is retried, a refusal
(a deleted run or experiment, an invalid value) never succeeds and is set aside (``MLflowWriter``)."""

from __future__ import annotations

import csv
import io

from mlflow.entities import Param
from mlflow.exceptions import MlflowException

from study.core.errors import StudyError
from study.core.protocol import language_scores
from study.track.mlflow_store import safe_key

# MLflow's error codes for a request the store refused as such (4xx): sending it again gets the same answer
REFUSED_CODES = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "RESOURCE_ALREADY_EXISTS",
                 "BAD_REQUEST", "INVALID_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED", "ENDPOINT_NOT_FOUND"}


class RecordRefused(StudyError):
    """A record of a run whose earlier record MLflow refused (its run was never made, or was deleted)."""


def refused(error: BaseException) -> bool:
    """Whether MLflow refused a write for good — a deleted run or experiment ("must be in the 'active' state"), an
    invalid or changed parameter — rather than failing to take it now (no connection, a timeout, a 5xx answer, the
    error code MLflow gives when its own retries ran out), which a later try may get through."""
    if isinstance(error, RecordRefused):
        return True
    if not isinstance(error, MlflowException):
        return False
    status = error.get_http_status_code()
    return error.error_code in REFUSED_CODES and not (isinstance(status, int) and status >= 500)


def log_params_once(mlflow, run_id: str, params: dict) -> None:
    """Log the parameters a run does not have yet (in MLflow's batches of 100), so that a retried write completes a
    half-written run; a parameter it has keeps its value (MLflow rejects a changed one)."""
    existing = mlflow.get_run(run_id).data.params
    values = {safe_key(key): str(value)[:6000] for key, value in params.items()}
    new = [Param(key, value) for key, value in values.items() if key not in existing]
    for start in range(0, len(new), 100):
        mlflow.log_batch(run_id, params=new[start:start + 100])


def logged_steps(mlflow, run_id: str) -> dict[str, set[int]]:
    """The steps a run has logged, by metric key, as the server has them."""
    return {key: {metric.step for metric in mlflow.get_metric_history(run_id, key)}
            for key in mlflow.get_run(run_id).data.metrics}


def log_metrics_once(mlflow, run_id: str, metrics: list, steps: dict[str, set[int]]) -> None:
    """Log each (key, step) the run does not have yet (``steps``, kept up to date here), in batches of 500. MLflow
    appends every value it is sent to the metric's history, so without this a write retried after its reply was lost,
    or a report a resumed trial repeats, would show twice."""
    seen, new = set(), []
    for metric in metrics:
        if metric.step not in steps.get(metric.key, ()) and (metric.key, metric.step) not in seen:
            seen.add((metric.key, metric.step))
            new.append(metric)
    for start in range(0, len(new), 500):
        batch = new[start:start + 500]
        mlflow.log_batch(run_id, metrics=batch)
        for metric in batch:
            steps.setdefault(metric.key, set()).add(metric.step)


def per_language_csv(result: dict, metric: str) -> str:
    """The per-language table of a report: language, family, branch, script, score."""
    from study.core.languages import get_language

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["language", "name", "family", "branch", "script", metric])
    for code, value in sorted(language_scores(result, metric).items()):
        lang = get_language(code)
        writer.writerow([lang.code, lang.name, lang.family, lang.branch, lang.script, f"{value:.6f}"])
    return out.getvalue()



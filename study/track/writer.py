"""MLflow tracking of a study: one parent run per study, one nested run per Tune trial; the study's only MLflow
writer (clients and shared helpers come from ``study.track.mlflow_store``).

The Tune callback talks to MLflow through ``MlflowClient`` from the Tune driver process (workers never need
MLflow). Each trial run is found again by its ``trial_id`` tag, so a study resumed after the driver was killed
continues the same runs instead of creating duplicates. Metrics are logged with the trial's optimizer ``step``, which
survives restarts, and each (metric, step) once, so neither a restored trial nor a retried write logs a step twice.
The study's parent run is a ``StudyRun`` block, which leaves it, and its trial runs, in a terminal status however the
study ends.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from study.core.errors import StudyError
from study.core.faults import NO_FAULTS, FaultHooks
from study.core.protocol import RUN_KIND_TAG, STUDY_RUN
from study.track.mlflow_store import PARENT_TAG, client, experiment_id, safe_key
from study.track.outbox import delete, get, outbox_location, put
from study.track.repeatable import RecordRefused, log_metrics_once, log_params_once, logged_steps, refused


def start_parent_run(uri: str, experiment: str, study_name: str, params: dict, tags: dict,
                     artifacts: list[Path]) -> str:
    """Create the study's parent run, or reopen the one a resumed (or retried) study already has; either way it
    ends with every parameter and file given, whichever step an earlier attempt stopped after."""
    mlflow = client(uri, fail_fast=True)
    exp_id = experiment_id(mlflow, experiment)
    found = mlflow.search_runs([exp_id], f"tags.study_name = '{study_name}' and tags.{RUN_KIND_TAG} = '{STUDY_RUN}'")
    if found:
        run_id = found[0].info.run_id
        mlflow.update_run(run_id, status="RUNNING")
    else:  # the tags come with the run in one request: a run found again has them
        run_id = mlflow.create_run(exp_id, run_name=study_name, tags={**tags, "study_name": study_name,
                                                                       RUN_KIND_TAG: STUDY_RUN}).info.run_id
    log_params_once(mlflow, run_id, params)
    logged = {item.path for item in mlflow.list_artifacts(run_id)}
    for path in artifacts:
        if path.name not in logged:
            mlflow.log_artifact(run_id, str(path))
    return run_id


class StudyRun:
    """The study's parent run as a block: opened (or reopened) on entry; on exit FINISHED, KILLED after Ctrl+C or
    FAILED after any other exception, and every trial run still RUNNING under it KILLED, so that no exit path leaves
    MLflow showing the study or a trial as running. The block's own exception always propagates; when MLflow cannot
    take the end, the study's records wait in its storage for ``--resume``."""

    def __init__(self, uri: str, experiment: str, study: str, storage: str, params: dict, tags: dict,
                 artifacts: list[Path]):
        self.uri, self.experiment, self.study, self.storage = uri, experiment, study, storage
        self._start = (params, tags, artifacts)
        self.run_id = ""
        self.ended = False

    def __enter__(self) -> StudyRun:
        self.run_id = start_parent_run(self.uri, self.experiment, self.study, *self._start)
        return self

    def writer(self, faults: FaultHooks = NO_FAULTS) -> MLflowWriter:
        """A writer for the study's trial runs, holding what an earlier one left in the study's storage."""
        return MLflowWriter(self.uri, self.experiment, self.run_id, self.storage, self.study, faults)

    def flush(self, attempts: int = 6, wait_s: float = 5.0) -> None:
        """Write what the MLflow callback had to keep while the server was down; if it stays down, stop cleanly: the
        records wait in the study's storage and ``--resume`` writes them (no trial runs again)."""
        for attempt in range(attempts):
            writer = self.writer()
            if writer.flush():
                return
            time.sleep(wait_s * (attempt < attempts - 1))
        raise StudyError(f"MLflow {self.uri} is unreachable: {len(writer.pending)} record(s) of study "
                         f"{self.study!r} are kept in its storage; start the server again and run the same "
                         "command with --resume to write them")

    def log_summary(self, summary: dict, tables: dict[str, str] | None = None) -> None:
        """Log the study's summary metrics (finite numbers only; each once, also when retried) and its tables
        ({artifact file name: CSV text}, e.g. each arm's seed-mean per-language scores)."""
        mlflow = client(self.uri, fail_fast=True)
        now = int(time.time() * 1000)
        metrics = [Metric(safe_key(key), float(value), now, 0) for key, value in summary.items()
                   if isinstance(value, (int, float)) and math.isfinite(value)]
        log_metrics_once(mlflow, self.run_id, metrics, logged_steps(mlflow, self.run_id))
        for name, text in (tables or {}).items():
            with tempfile.TemporaryDirectory() as directory:
                path = Path(directory) / name
                path.write_text(text)
                mlflow.log_artifact(self.run_id, str(path))

    def kill(self) -> None:
        """End the study run and its trial runs KILLED now, unless the block has ended them: the last step of a
        study that cannot stop in time (``study.tune.interrupts``), from another thread."""
        if not self.ended:
            self._end("KILLED")

    def __exit__(self, kind, error, traceback) -> bool:
        status = "FINISHED" if kind is None else "FAILED" if issubclass(kind, Exception) else "KILLED"
        try:
            self._end(status)
        except Exception as err:  # never hide the block's own exception behind MLflow's
            if kind is None:
                raise StudyError(f"MLflow {self.uri} did not take the end of study run {self.run_id} "
                                 f"({err.__class__.__name__}); run the same command with --resume to write it") from err
            print(f"[mlflow] study run {self.run_id} could not be marked {status} ({err.__class__.__name__}: {err}); "
                  "--resume ends it", file=sys.stderr, flush=True)
        return False

    def _end(self, status: str) -> None:
        """Write what is still buffered, mark the trial runs left RUNNING KILLED, then the study run ``status``."""
        if not self.writer().flush():
            raise StudyError(f"records of study {self.study!r} are kept in its storage")
        mlflow = client(self.uri, fail_fast=True)
        for run in mlflow.search_runs([experiment_id(mlflow, self.experiment)],
                                      f"tags.`{PARENT_TAG}` = '{self.run_id}' and attributes.status = 'RUNNING'"):
            mlflow.set_terminated(run.info.run_id, status="KILLED")
        mlflow.set_terminated(self.run_id, status=status)
        self.ended = True


# --- buffered writes: MLflow down for a while loses nothing ----------------------------------------------------


RETRY_EVERY_S = 20.0  # while MLflow is down, try again at most this often
PENDING_FILE = "pending.pkl"  # the buffer, in the study's outbox
PARKED_FILE = "parked.pkl"  # the records MLflow refused, with why, in the study's outbox


class MLflowWriter:
    """Applies MLflow writes in order; while the server is unreachable they wait in a buffer that is also saved to
    the study's storage (``mlflow-outbox/pending.pkl``), so a later call, the end of the study or a ``--resume``
    after a crash writes them. Every write is safe to repeat, whichever step a failed attempt stopped after: runs are
    found by their ``trial_id`` tag, parameters and metric steps the run has are not logged again, tags, artifacts
    and status overwrite themselves."""

    def __init__(self, uri: str, experiment: str, parent_run_id: str, storage: str, study: str,
                 faults: FaultHooks = NO_FAULTS):
        self.uri, self.experiment, self.parent_run_id = uri, experiment, parent_run_id
        self.storage, self.study, self.faults = storage, study, faults
        self._runs: dict[str, str] = {}
        self._steps: dict[str, dict[str, set[int]]] = {}  # by run: the metric steps it has (log_metrics_once)
        self._client = None
        self._down_since: float | None = None
        self._last_try = 0.0
        self.pending: list[tuple] = self._load()
        self._saved = bool(self.pending)
        self.parked: list[tuple] = self._load(PARKED_FILE)  # (record, run, reason): refused for good

    def __getstate__(self):  # the Tuner pickles its callbacks with the experiment state
        return {**self.__dict__, "_client": None}

    def __setstate__(self, state):  # a restored study: the buffer on disk is newer than the pickled one
        self.__dict__.update(state)
        self._down_since, self._last_try, self._steps = None, 0.0, {}
        self.pending = self._load()
        self._saved = bool(self.pending)
        self.parked = self._load(PARKED_FILE)

    @property
    def client(self):
        """The MLflow client, made on first use with the writer's short timeouts (not pickled)."""
        if self._client is None:
            self._client = client(self.uri, fail_fast=True)
        return self._client

    def _load(self, name: str = PENDING_FILE) -> list[tuple]:
        import pickle

        data = get(outbox_location(self.storage, self.study), name)
        return pickle.loads(data) if data else []

    def _save(self) -> None:
        import pickle

        if self.pending:
            put(outbox_location(self.storage, self.study), PENDING_FILE, pickle.dumps(self.pending))
        else:
            delete(outbox_location(self.storage, self.study), PENDING_FILE)

    def send(self, trial_id: str, op: str, payload) -> None:
        """Queue one write (op: create, params, metrics, artifact, tag, terminate), save the queue to the study's
        storage first (a driver killed mid-write loses nothing: the restarted study writes it again, and every write
        is safe to repeat), then try to flush it."""
        self.pending.append((trial_id, op, payload))
        self._save()
        self._saved = True
        self.flush()

    def flush(self) -> bool:
        """Write what is buffered; False (and the rest kept, also on disk) when the server does not answer."""
        if self._down_since is not None and time.time() - self._last_try < RETRY_EVERY_S:
            self._save()  # still down, most likely: keep the new record and return at once (callbacks stay fast)
            self._saved = True
            return False
        self._last_try = time.time()
        while self.pending:
            try:
                with self.faults.writing():
                    self._apply(*self.pending[0])
            except (MlflowException, OSError, StudyError) as err:
                if refused(err):  # a retry gets the same answer: set it aside, the other runs' records go on
                    self._park(self.pending.pop(0), err)
                    continue
                self._steps.clear()  # what the failed write left on the server is unknown: read it again
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

    def _park(self, record: tuple, error: BaseException) -> None:
        """Keep a refused record in the study's storage, with its run and why; the first of a run is said in one
        line."""
        import pickle

        trial_id = record[0]
        run = self._runs.get(trial_id) or f"of trial {trial_id}"
        reason = " ".join(str(error).split())[:300]
        if not any(parked[0][0] == trial_id for parked in self.parked):
            print(f"[mlflow] run {run} refused a record for good ({reason}); its records are set aside, the other "
                  "runs' go on", file=sys.stderr, flush=True)
        self.parked.append((record, run, reason))
        put(outbox_location(self.storage, self.study), PARKED_FILE, pickle.dumps(self.parked))
        self._save()

    def not_recorded(self) -> list[str]:
        """One line per run with records MLflow refused: the run, how many records of which kinds, and why."""
        runs: dict[str, list] = {}
        for (_, op, _), run, reason in self.parked:
            runs.setdefault(run, []).append((op, reason))
        return [f"run {run}: {len(items)} record(s) not recorded in MLflow "
                f"({', '.join(sorted({op for op, _ in items}))}): {items[0][1]}" for run, items in runs.items()]

    def run_status(self, trial_id: str) -> str | None:
        """The MLflow status of a trial's run (None: no run yet). Raises MlflowException or OSError when the server
        does not answer."""
        run_id = self._find_run(trial_id)
        return self.client.get_run(run_id).info.status if run_id else None

    def _find_run(self, trial_id: str) -> str | None:
        """The MLflow run of a trial, found by its ``trial_id`` and parent tags (so a resumed study reuses it)."""
        if trial_id not in self._runs:
            found = self.client.search_runs([experiment_id(self.client, self.experiment)],
                                            f"tags.trial_id = '{trial_id}' and "
                                            f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'")
            if not found:
                return None
            self._runs[trial_id] = found[0].info.run_id
        return self._runs[trial_id]

    def _apply(self, trial_id: str, op: str, payload) -> None:
        if op == "create":
            run_id = self._find_run(trial_id)
            if run_id is None:  # the tags come with the run in one request: a run found again has them
                run_id = self.client.create_run(experiment_id(self.client, self.experiment), run_name=payload["name"],
                                                tags=payload["tags"]).info.run_id
                self._runs[trial_id] = run_id
            else:  # a resumed trial, or a create retried after the run was made
                self.client.update_run(run_id, status="RUNNING")
            log_params_once(self.client, run_id, payload["params"])
            return
        run_id = self._find_run(trial_id)
        if run_id is None and any(parked[0][0] == trial_id for parked in self.parked):
            raise RecordRefused(f"MLflow refused an earlier record of trial {trial_id}, and it has no run")
        if run_id is None:
            raise StudyError(f"no MLflow run yet for trial {trial_id}")
        if op == "metrics":
            if run_id not in self._steps:
                self._steps[run_id] = logged_steps(self.client, run_id)
            log_metrics_once(self.client, run_id, [Metric(*metric) for metric in payload], self._steps[run_id])
        elif op == "params":
            log_params_once(self.client, run_id, payload)
        elif op == "artifact":
            with tempfile.TemporaryDirectory() as directory:
                path = Path(directory) / payload["name"]
                path.write_bytes(payload["data"])
                self.client.log_artifact(run_id, str(path))
        elif op == "tag":
            self.client.set_tag(run_id, *payload)
        elif op == "terminate":
            self.client.set_terminated(run_id, status=payload)

"""MLflow writes are retry-safe and the study run always ends terminal: a real SQLite MLflow store in tmp_path, a
failure injected before and after each MlflowClient call the writer makes, then the retry or the ``--resume`` that
follows; the recovered run must equal a run written without failure. No Ray."""

from contextlib import nullcontext
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2 as codes
from mlflow.tracking import MlflowClient

from study.core.errors import StudyError
from study.core.protocol import RUN_KIND_TAG, SELECTED_STEP_TAG, TRIAL_RUN
from study.track import writer as tracking
from study.track.mlflow_store import PARENT_TAG
from study.track.writer import MLflowWriter, StudyRun

PARAMS = {f"p{i:03d}": i for i in range(150)}  # two of MLflow's batches of 100
LOSSES = [("intermediate/loss", 1.0 / step, 2000, step) for step in range(1, 601)]  # two batches of 500


class Faulty:
    """An MlflowClient whose call number ``fail_at`` fails before it reaches the store (a request that never arrived)
    or, with ``after``, once it has run (a reply that was lost); with ``down``, every later call fails too (the server
    stays down). ``calls`` names the calls made, in order."""

    def __init__(self, real, fail_at: int = 0, after: bool = False, down: bool = False):
        self.real, self.fail_at, self.after, self.down, self.calls = real, fail_at, after, down, []

    def __getattr__(self, name):
        method = getattr(self.real, name)

        def call(*args, **kwargs):
            self.calls.append(name)
            n = len(self.calls)
            failing = n == self.fail_at or (self.down and 0 < self.fail_at < n)
            if failing and not (self.after and n == self.fail_at):
                raise MlflowException(f"injected failure before call {n} ({name})")
            result = method(*args, **kwargs)
            if failing:
                raise MlflowException(f"injected failure after call {n} ({name})")
            return result

        return call


def snapshot(mlflow, run_id: str, scratch: Path) -> dict:
    """What a run holds: status, params, tags (but its parent's id: each scenario has its own parent), every metric's
    history as (step, value) pairs, and each artifact's bytes."""
    run = mlflow.get_run(run_id)
    scratch.mkdir(parents=True, exist_ok=True)
    return {"status": run.info.status, "params": run.data.params,
            "tags": {k: v for k, v in run.data.tags.items() if k != PARENT_TAG},
            "metrics": {key: sorted((m.step, m.value) for m in mlflow.get_metric_history(run_id, key))
                        for key in run.data.metrics},
            "artifacts": {item.path: Path(mlflow.download_artifacts(run_id, item.path, str(scratch))).read_bytes()
                          for item in mlflow.list_artifacts(run_id)}}


def injection_points(calls: list[str]):
    """(fail_at, after, name) for a failure before and after each call of a clean scenario."""
    return [(n, after, f"{'after' if after else 'before'} call {n} ({name})")
            for n, name in enumerate(calls, start=1) for after in (False, True)]


# --- a trial's run --------------------------------------------------------------------------------------------------


def write_trial(writer: MLflowWriter) -> None:
    """The writes of one trial, as the Tune callback sends them: the run (tags and 150 params), two reports, a tag,
    the intermediate stage's 600-step loss series and parameters, the per-language table, the selected step, the
    final status."""
    tags = {RUN_KIND_TAG: TRIAL_RUN, PARENT_TAG: writer.parent_run_id, "trial_id": "t1", "modality": "text"}
    writer.send("t1", "create", {"name": "trial_t1", "tags": tags, "params": PARAMS})
    writer.send("t1", "metrics", [("dev_en/accuracy", 0.5, 1000, 2), ("step", 2.0, 1000, 2)])
    writer.send("t1", "tag", ("nodes", "node-a"))
    writer.send("t1", "metrics", [("dev_en/accuracy", 0.75, 1500, 4), ("step", 4.0, 1500, 4)])
    writer.send("t1", "metrics", LOSSES)
    writer.send("t1", "params", {"intermediate.cache_hit": False})
    writer.send("t1", "artifact", {"name": "per_language.csv", "data": b"language,accuracy\nde,0.5\n"})
    writer.send("t1", "tag", (SELECTED_STEP_TAG, "4"))
    writer.send("t1", "terminate", "FINISHED")


def trial_scenario(uri: str, root: Path, name: str, fault: tuple = (), down: bool = False) -> tuple[list, dict]:
    """One trial written through a writer whose client fails as ``fault`` says (fail_at, after); the records it kept
    are written by the next flush (a retry) or, when the server stayed down, by a new writer on the study's storage
    (``--resume``). Returns the calls made and the snapshot of the one trial run."""
    real = MlflowClient(uri)
    experiment = real.create_experiment(name)
    parent = real.create_run(experiment).info.run_id
    storage = str(root / name)
    writer = MLflowWriter(uri, name, parent, storage, "study")
    writer._client = faulty = Faulty(real, *fault, down=down)
    write_trial(writer)
    assert writer.flush() != down, name
    if down:
        assert MLflowWriter(uri, name, parent, storage, "study").flush(), name
    runs = real.search_runs([experiment], "tags.trial_id = 't1'")
    assert len(runs) == 1, f"{name}: {len(runs)} runs for one trial"
    return faulty.calls, snapshot(real, runs[0].info.run_id, root / name / "artifacts")


@pytest.mark.e2e
@pytest.mark.parametrize("down", [False, True], ids=["retried", "resumed"])
def test_a_failure_before_or_after_any_write_of_a_trial_leaves_its_run_as_a_clean_one(tmp_path, monkeypatch, down):
    """retried: the failing call alone fails and the writer's next flush goes on; resumed: the server stays down
    from that call on and a ``--resume`` writes the records the study kept in its storage."""
    monkeypatch.setattr(tracking, "RETRY_EVERY_S", 0.0)  # the next record tries again at once
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    calls, clean = trial_scenario(uri, tmp_path, "clean")
    assert clean["status"] == "FINISHED" and len(clean["params"]) == 151 and clean["tags"]["nodes"] == "node-a"
    assert clean["metrics"]["dev_en/accuracy"] == [(2, 0.5), (4, 0.75)]
    assert len(clean["metrics"]["intermediate/loss"]) == 600
    assert set(clean["artifacts"]) == {"per_language.csv"}
    assert calls.count("log_batch") == 7  # params and losses in two requests each, two reports, the stage params
    for fail_at, after, name in injection_points(calls):
        _, recovered = trial_scenario(uri, tmp_path, f"{fail_at}-{after}", (fail_at, after), down)
        assert recovered == clean, name


@pytest.mark.e2e
def test_a_driver_killed_in_the_middle_of_a_write_loses_nothing(tmp_path, monkeypatch):
    """The record is in the study's storage before the write starts: a driver that dies inside the write (here the
    client call never returns) leaves it there, and the restarted study's writer writes it."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    real = MlflowClient(uri)
    parent = real.create_run(real.create_experiment("e")).info.run_id
    tags = {RUN_KIND_TAG: TRIAL_RUN, PARENT_TAG: parent, "trial_id": "t1"}
    writer = MLflowWriter(uri, "e", parent, str(tmp_path), "study")
    writer.send("t1", "create", {"name": "t1", "tags": tags, "params": {"lr": 0.1}})

    class Killed(BaseException):  # what SIGKILL looks like from inside: nothing after it runs
        pass

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(writer.client, "log_batch", killed)
    with pytest.raises(Killed):
        writer.send("t1", "metrics", [("dev_en/accuracy", 0.5, 1000, 2)])
    restarted = MLflowWriter(uri, "e", parent, str(tmp_path), "study")  # --resume: a new driver process
    assert [op for _, op, _ in restarted.pending] == ["metrics"] and restarted.flush()
    history = real.get_metric_history(restarted._find_run("t1"), "dev_en/accuracy")
    assert [(m.step, m.value) for m in history] == [(2, 0.5)]
    assert MLflowWriter(uri, "e", parent, str(tmp_path), "study").pending == []  # written: nothing left on disk


@pytest.mark.e2e
def test_a_step_sent_again_is_logged_once(tmp_path):
    """A resumed trial repeats the reports made after its last checkpoint, with new timestamps and maybe other
    values; the history keeps the first value of each step (MLflow itself would append the repeat)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    real = MlflowClient(uri)
    parent = real.create_run(real.create_experiment("e")).info.run_id
    tags = {RUN_KIND_TAG: TRIAL_RUN, PARENT_TAG: parent, "trial_id": "t1"}
    writer = MLflowWriter(uri, "e", parent, str(tmp_path), "study")
    writer.send("t1", "create", {"name": "t1", "tags": tags, "params": {}})
    writer.send("t1", "metrics", [("dev_en/accuracy", 0.5, 1000, 2)])
    resumed = MLflowWriter(uri, "e", parent, str(tmp_path), "study")  # a new process: knows nothing of step 2
    resumed.send("t1", "metrics", [("dev_en/accuracy", 0.6, 5000, 2), ("dev_en/accuracy", 0.7, 5000, 4),
                                   ("dev_en/accuracy", 0.8, 5000, 4)])
    history = real.get_metric_history(writer._find_run("t1"), "dev_en/accuracy")
    assert sorted((m.step, m.value) for m in history) == [(2, 0.5), (4, 0.7)]


# --- the study's run ------------------------------------------------------------------------------------------------


def study_scenario(uri: str, root: Path, name: str, monkeypatch, fault: tuple = (), down: bool = False):
    """The study run's writes (created with tags, 150 params in two batches, two search-space files; a summary with
    a NaN left out, the best per-language table; FINISHED) through a client that fails as ``fault`` says; when they
    fail, the study stops, and the same study run again (a rerun or ``--resume``) must finish its run. Returns the
    calls made and the snapshot of the one study run."""
    files = []
    for file_name in ("space.yaml", "base.yaml"):
        (root / file_name).write_text(f"# {file_name}\n")
        files.append(root / file_name)
    real = MlflowClient(uri)
    faulty = Faulty(real, *fault, down=down)
    monkeypatch.setattr(tracking, "client", lambda uri, fail_fast=False: faulty)

    def run_study():
        with StudyRun(uri, name, "study-x", str(root / name), PARAMS, {"model": "tiny"}, files) as study_run:
            study_run.log_summary({"confirm/plain/dev_en/accuracy/mean": 0.75, "confirm/plain/runs_finished": 3,
                                   "confirm/plain/dev_en/accuracy/std": float("nan")},
                                  {"per_language_plain.csv": "language,accuracy\nde,0.5\n"})

    if fault:
        with pytest.raises((MlflowException, StudyError)):
            run_study()
        monkeypatch.setattr(tracking, "client", lambda uri, fail_fast=False: real)
    run_study()
    runs = real.search_runs([real.get_experiment_by_name(name).experiment_id])
    assert len(runs) == 1, f"{name}: {len(runs)} study runs"
    return faulty.calls, snapshot(real, runs[0].info.run_id, root / name / "artifacts")


@pytest.mark.e2e
@pytest.mark.parametrize("down", [False, True], ids=["retried", "resumed"])
def test_a_failure_before_or_after_any_write_of_the_study_run_leaves_it_as_a_clean_one(tmp_path, monkeypatch, down):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    calls, clean = study_scenario(uri, tmp_path, "clean", monkeypatch)
    assert clean["status"] == "FINISHED" and len(clean["params"]) == 150 and clean["tags"]["model"] == "tiny"
    assert clean["metrics"] == {"confirm/plain/dev_en/accuracy/mean": [(0, 0.75)],
                                "confirm/plain/runs_finished": [(0, 3.0)]}  # NaN is not logged
    assert set(clean["artifacts"]) == {"space.yaml", "base.yaml", "per_language_plain.csv"}
    for fail_at, after, name in injection_points(calls):
        _, recovered = study_scenario(uri, tmp_path, f"{fail_at}-{after}", monkeypatch, (fail_at, after), down)
        assert recovered == clean, name


def start_trials(study_run: StudyRun) -> None:
    """A trial still running (t1) and one finished (t2) under the study run."""
    writer = study_run.writer()
    for trial_id in ("t1", "t2"):
        tags = {RUN_KIND_TAG: TRIAL_RUN, PARENT_TAG: study_run.run_id, "trial_id": trial_id}
        writer.send(trial_id, "create", {"name": trial_id, "tags": tags, "params": {}})
    writer.send("t2", "terminate", "FINISHED")


def statuses(uri: str, experiment: str) -> dict[str, str]:
    """The status of each run of an experiment, by trial id ('study' for the study run)."""
    mlflow = MlflowClient(uri)
    runs = mlflow.search_runs([mlflow.get_experiment_by_name(experiment).experiment_id])
    return {run.data.tags.get("trial_id", "study"): run.info.status for run in runs}


@pytest.mark.e2e
@pytest.mark.parametrize("raised, status", [(None, "FINISHED"), (RuntimeError, "FAILED"),
                                            (KeyboardInterrupt, "KILLED")])
def test_the_study_run_and_its_trials_end_terminal_however_the_block_ends(tmp_path, raised, status):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(raised) if raised else nullcontext(), \
            StudyRun(uri, "e", "study-x", str(tmp_path), {}, {}, []) as study_run:
        start_trials(study_run)
        if raised:
            raise raised("injected")
    assert statuses(uri, "e") == {"study": status, "t1": "KILLED", "t2": "FINISHED"}


@pytest.mark.e2e
def test_mlflow_down_at_the_end_keeps_the_blocks_error_and_resume_ends_the_runs(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    real = MlflowClient(uri)
    with pytest.raises(RuntimeError, match="injected"), \
            StudyRun(uri, "e", "study-x", str(tmp_path), {}, {}, []) as study_run:
        start_trials(study_run)
        monkeypatch.setattr(tracking, "client", lambda uri, fail_fast=False: Faulty(real, 1, down=True))
        raise RuntimeError("injected")
    assert "could not be marked FAILED" in capsys.readouterr().err
    assert statuses(uri, "e") == {"study": "RUNNING", "t1": "RUNNING", "t2": "FINISHED"}
    monkeypatch.setattr(tracking, "client", lambda uri, fail_fast=False: real)
    with StudyRun(uri, "e", "study-x", str(tmp_path), {}, {}, []):  # --resume: the study run again, to its end
        pass
    assert statuses(uri, "e") == {"study": "FINISHED", "t1": "KILLED", "t2": "FINISHED"}


@pytest.mark.e2e
def test_a_trial_tune_ended_while_the_driver_died_is_ended_in_mlflow_after_the_phase(tmp_path):
    """Tune recorded the trial's end, the driver died before the callback wrote it, and the resumed Tune does not
    report that end again: ``reconcile`` after the phase writes it from the Tune result (table, step, FINISHED);
    a run already FINISHED is left alone. A run a signal stopped short of its last step (UNFINISHED, whatever Tune
    says) is never closed FINISHED; one the signal's end marked KILLED although it had finished is."""
    from types import SimpleNamespace

    from study.core.protocol import evaluation_metrics
    from study.train.config import TrainConfig
    from study.train.ray_setup import Scaling
    from study.tune.callbacks import MLflowTrialCallback
    from study.tune.phases import FINISHED, UNFINISHED, run_outcome
    from study.tune.trial import tune_constants

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    real = MlflowClient(uri)
    parent = real.create_run(real.create_experiment("e")).info.run_id
    writer = MLflowWriter(uri, "e", parent, str(tmp_path), "study")
    callback = MLflowTrialCallback(writer, {"model": "tiny"}, "dev_en/accuracy", "accuracy")
    config = {**tune_constants(TrainConfig(model="tiny"), {}, Scaling(), str(tmp_path), "study", arm="plain"),
              "stage": {"modality": "none"}}
    trial = SimpleNamespace(trial_id="t1", config=config, __str__=lambda self: "trial_t1")
    report = {"trial_id": "t1", "step": 4, "train/total_steps": 4, "dev_en/accuracy": 0.5,
              **evaluation_metrics("accuracy", {"en": 0.9, "de": 0.4}, english_dev=0.5)}
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, report)  # ... then the driver died
    resumed = MLflowTrialCallback(MLflowWriter(uri, "e", parent, str(tmp_path), "study"), {"model": "tiny"},
                                  "dev_en/accuracy", "accuracy")
    result = SimpleNamespace(metrics=report, config=config, error=None)
    assert resumed.reconcile([(result, report, UNFINISHED)]) == 0  # stopped by a signal: not ended here
    run = real.search_runs([real.get_experiment_by_name("e").experiment_id], "tags.trial_id = 't1'")[0]
    assert run.info.status == "RUNNING"
    assert resumed.reconcile([(result, report, run_outcome(result, "TERMINATED", False, False))]) == 1
    run = real.get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["selected_step"] == "4"
    assert "per_language.csv" in {a.path for a in real.list_artifacts(run.info.run_id)}
    assert resumed.reconcile([(result, report, FINISHED)]) == 0  # ended already: nothing to do
    real.set_terminated(run.info.run_id, "KILLED")  # a signal ended the study before the end was written
    assert resumed.reconcile([(result, report, FINISHED)]) == 1 and real.get_run(run.info.run_id).info.status == (
        "FINISHED")
    from helpers import free_port

    down = MLflowTrialCallback(MLflowWriter(f"http://127.0.0.1:{free_port()}", "e", parent, str(tmp_path / "down"),
                                            "study"), {"model": "tiny"}, "dev_en/accuracy", "accuracy")
    assert down.reconcile([(result, report, FINISHED)]) == 0  # MLflow not answering: nothing, no error (--resume)


@pytest.mark.e2e
def test_a_tracking_uri_mlflow_refuses_is_one_line_naming_it(tmp_path):
    """MLflow 3 refuses a file: store unless told otherwise; the study says so in one line before Ray starts."""
    import subprocess
    import sys

    from study.track.mlflow_store import client

    with pytest.raises(StudyError, match=r"^MLflow cannot use the tracking URI file:.*maintenance mode"):
        client(f"file:{tmp_path / 'mlruns'}")
    run = subprocess.run([sys.executable, "-m", "study.tune", "--model", "tiny", "--storage", str(tmp_path / "runs"),
                          "--mlflow-uri", f"file:{tmp_path / 'mlruns'}"], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "MLflow cannot use the tracking URI file:" in run.stderr and "Ray" not in run.stderr  # before Ray starts
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "runs").exists()  # nothing half-written


@pytest.mark.parametrize("error, gives_up", [
    (MlflowException("The run r1 must be in the 'active' state. Current state is deleted.",
                     error_code=codes.INVALID_PARAMETER_VALUE), True),
    (MlflowException("Changing param values is not allowed", error_code=codes.INVALID_PARAMETER_VALUE), True),
    (MlflowException("No Experiment with id=7 exists", error_code=codes.RESOURCE_DOES_NOT_EXIST), True),
    (MlflowException("API request failed: too many 500 error responses"), False),  # INTERNAL_ERROR
    (MlflowException("Service unavailable", error_code=codes.TEMPORARILY_UNAVAILABLE), False),
    (ConnectionRefusedError("connection refused"), False),
    (TimeoutError("timed out"), False),
    (StudyError("no MLflow run yet for trial t1"), False),
])
def test_a_refused_write_is_told_from_a_transient_fault(error, gives_up):
    from study.track.repeatable import refused

    assert refused(error) == gives_up


@pytest.mark.e2e
def test_a_run_deleted_mid_study_is_set_aside_and_the_other_runs_go_on(tmp_path, capsys):
    """A real MLflow store: a trial's run deleted while the study writes (``delete_run``). Its later records are
    refused for good; they are set aside with one warning naming the run, the other trial's records are all written,
    a resumed writer does not try them again, and the study's summary lists what was not recorded."""
    from study.tune.summary import print_not_recorded

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    real = MlflowClient(uri)
    parent = real.create_run(real.create_experiment("e")).info.run_id
    writer = MLflowWriter(uri, "e", parent, str(tmp_path), "study")
    for trial in ("t1", "t2"):
        tags = {RUN_KIND_TAG: TRIAL_RUN, PARENT_TAG: parent, "trial_id": trial}
        writer.send(trial, "create", {"name": trial, "tags": tags, "params": {"lr": 0.1}})
        writer.send(trial, "metrics", [("dev_en/accuracy", 0.5, 1000, 2)])
    deleted = writer._find_run("t1")
    real.delete_run(deleted)
    for trial in ("t1", "t2"):
        writer.send(trial, "metrics", [("dev_en/accuracy", 0.75, 2000, 4)])
        writer.send(trial, "tag", (SELECTED_STEP_TAG, "4"))
        writer.send(trial, "terminate", "FINISHED")
    assert writer.flush() and writer.pending == []
    kept = real.get_run(writer._find_run("t2"))
    assert kept.info.status == "FINISHED" and kept.data.tags[SELECTED_STEP_TAG] == "4"
    assert sorted(m.step for m in real.get_metric_history(kept.info.run_id, "dev_en/accuracy")) == [2, 4]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "refused" in line]
    assert len(warnings) == 1 and deleted in warnings[0] and "must be in the 'active' state" in warnings[0], warnings
    resumed = MLflowWriter(uri, "e", parent, str(tmp_path), "study")  # --resume: the refused records stay aside
    assert resumed.pending == [] and resumed.flush()
    assert resumed.not_recorded() == [f"run {deleted}: 3 record(s) not recorded in MLflow (metrics, tag, terminate): "
                                      f"The run {deleted} must be in the 'active' state. Current state is deleted."]
    print_not_recorded(resumed.not_recorded())
    assert f"not recorded in MLflow (1 run(s)):\n  run {deleted}: 3 record(s)" in capsys.readouterr().err

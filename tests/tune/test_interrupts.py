"""Signals and --resume: a study stopped by SIGINT or SIGTERM ends its unfinished runs KILLED and exits non-zero;
--resume continues it from its checkpoints on every storage (a path, file://, s3:// on a real S3 API), trains nothing
twice, and refuses a taken name or other options before Ray starts."""

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from helpers import S3_BUCKET, Console, free_port, start_s3_server, start_study, stop, study_runs

from study.core.errors import StudyError

STEP_DELAY_S = 5.0  # after each step: a run signalled at step 2 cannot reach step 6 during Tune's stop (~10 s)


@pytest.fixture
def s3_server(monkeypatch):
    """moto's S3 server on a free port, this test's process pointed at it; yields the environment a study needs."""
    server, env = start_s3_server(free_port())
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    stop(server)


def storage_of(kind: str, tmp_path) -> str:
    return {"path": str(tmp_path / "runs"), "file": f"file://{tmp_path / 'runs'}",
            "s3": f"s3://{S3_BUCKET}/runs"}[kind]


# --- which runs finished, and what a signal does in the driver (no Ray) -------------------------------------------


@pytest.mark.parametrize("error, metrics, status, interrupted, early_stops, outcome", [
    (None, {"step": 6, "train/total_steps": 6}, "TERMINATED", False, False, "FINISHED"),
    (None, {"step": 6, "train/total_steps": 6}, "TERMINATED", True, False, "FINISHED"),  # done before the signal
    (None, {"step": 2, "train/total_steps": 6}, "TERMINATED", True, False, "UNFINISHED"),  # Tune's clean-up said so
    (None, {"step": 2, "train/total_steps": 6}, "TERMINATED", False, True, "STOPPED_EARLY"),  # ASHA in the search
    (None, {"step": 2, "train/total_steps": 6}, "TERMINATED", True, True, "UNFINISHED"),
    (None, {"step": 2, "train/total_steps": 6}, "TERMINATED", False, False, "UNFINISHED"),  # confirm: no ASHA
    (None, {"step": 2, "train/total_steps": 6}, "RUNNING", False, True, "UNFINISHED"),
    (None, {}, None, False, True, "UNFINISHED"),  # never reported
    (RuntimeError("x"), {"step": 2, "train/total_steps": 6}, "ERROR", False, True, "FAILED"),
])
def test_a_run_is_finished_only_at_its_last_step_or_when_asha_stopped_it(error, metrics, status, interrupted,
                                                                          early_stops, outcome):
    from study.tune.phases import run_outcome

    assert run_outcome(SimpleNamespace(error=error, metrics=metrics), status, interrupted, early_stops) == outcome


def test_the_report_leaves_out_a_confirm_run_recorded_finished_short_of_its_last_step():
    """Studies before the step check recorded a Ctrl+C'd confirm run FINISHED at step 2 of 6: the report does not
    count it as a seed; a search trial ASHA stopped early still counts."""
    from study.report.load import _trial

    client = SimpleNamespace(get_metric_history=lambda run_id, key: [SimpleNamespace(step=2, value=0.5)],
                             list_artifacts=lambda run_id: [])

    def run(phase, step):
        return SimpleNamespace(info=SimpleNamespace(run_id="r", start_time=0),
                               data=SimpleNamespace(tags={"phase": phase}, params={},
                                                    metrics={"step": step, "train/total_steps": 6}))

    assert _trial(client, run("confirm", 2), "accuracy") is None
    assert _trial(client, run("confirm", 6), "accuracy").dev == 0.5
    assert _trial(client, run("search", 2), "accuracy") is not None


def test_a_first_signal_stops_tune_gracefully_inside_a_fit_and_raises_outside_a_second_at_once():
    """Real signals to this process: outside a fit the first raises StudyInterrupted (exit status 130 for SIGINT,
    143 for SIGTERM); inside one it reaches the handler Tune keeps on SIGUSR1 (here a stand-in) and nothing is raised
    until the fit is over; a second raises at once; a block ``held`` raises at its end."""
    from study.tune.interrupts import Interrupts, StudyInterrupted

    interrupts = Interrupts(grace_s=3600).install()
    try:
        with pytest.raises(StudyInterrupted) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert stopped.value.exit_code == 143
        interrupts.close()

        interrupts = Interrupts(grace_s=3600).install()
        tune_stops = []
        with interrupts.fitting():
            signal.signal(signal.SIGUSR1, lambda number, frame: tune_stops.append(number))  # Tune's, in its fit
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
            assert tune_stops == [signal.SIGUSR1] and interrupts.signum == signal.SIGINT
            with pytest.raises(StudyInterrupted):  # the second: at once
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
        with pytest.raises(StudyInterrupted) as stopped:
            interrupts.check()
        assert stopped.value.exit_code == 130
        interrupts.close()

        interrupts = Interrupts(grace_s=3600).install()
        finished = []
        with pytest.raises(StudyInterrupted), interrupts.held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
            finished.append(True)
        assert finished == [True]
    finally:
        interrupts.close()
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)


@pytest.mark.parametrize("kind", ["path", "file"])
def test_a_taken_name_needs_resume_and_resume_needs_a_study_with_the_same_options(tmp_path, kind):
    """The storage checks read through pyarrow's filesystem: a path and file:// alike (s3:// in the e2e test)."""
    from study.tune.resume import check_start, newest_study, record_options

    storage, options = storage_of(kind, tmp_path), {"seeds": 1, "base": {"lr": 2e-5, "languages": ["en", "de"]}}
    check_start(storage, "study-m-t-smoke-20260101-000000", False, options)  # nothing there yet: a new study
    with pytest.raises(StudyError, match="nothing to resume: no study 'study-m-t-smoke-20260101-000000'"):
        check_start(storage, "study-m-t-smoke-20260101-000000", True, options)
    record_options(storage, "study-m-t-smoke-20260101-000000", options)
    record_options(storage, "study-m-t-smoke-20260102-000000", options)
    (tmp_path / "runs" / "study-m-t-smoke-20260102-000000-trial-abc").mkdir()  # a trial's Train run: no study
    assert newest_study(storage, "study-m-t-smoke") == "study-m-t-smoke-20260102-000000"
    with pytest.raises(StudyError, match="already exists in .*: pass --resume to continue it"):
        check_start(storage, "study-m-t-smoke-20260101-000000", False, options)
    check_start(storage, "study-m-t-smoke-20260101-000000", True, options)
    with pytest.raises(StudyError, match=r"other options than it started with: base.lr 2e-05 -> 3e-05; --seeds 1 -> "
                                         r"3; resume it with the command it started with"):
        check_start(storage, "study-m-t-smoke-20260101-000000", True,
                    {"seeds": 3, "base": {"lr": 3e-5, "languages": ("en", "de")}})


def test_the_resume_line_repeats_the_command_with_the_study_name(tmp_path):
    from study.cli.tune import interrupted_line
    from study.tune.resume import record_options

    argv = ["--model", "tiny", "--name", "old", "--seeds", "1", "--resume", "--storage", str(tmp_path)]
    record_options(str(tmp_path), "s1", {})
    assert interrupted_line(signal.SIGINT, argv, "s1", str(tmp_path)) == (
        f"interrupted (SIGINT): resume with study tune --model tiny --seeds 1 --storage {tmp_path} --name s1 --resume")
    assert interrupted_line(signal.SIGTERM, argv, "s2", str(tmp_path)) == (
        "interrupted (SIGTERM) before the study started: run the same command to start it")


# --- a real study stopped by a real signal, then resumed (e2e) -----------------------------------------------------


def confirm_runs(uri):
    client, parents, trials = study_runs(uri, "signals", phase="confirm")
    return client, parents, trials


@pytest.mark.e2e
@pytest.mark.parametrize("kind, signum, group", [
    ("path", signal.SIGINT, True),  # Ctrl+C in a terminal: the whole foreground process group gets it
    ("file", signal.SIGTERM, False),  # kill <pid>
    ("s3", signal.SIGINT, True),
], ids=["path-ctrl-c", "file-sigterm", "s3-ctrl-c"])
def test_a_signal_in_a_confirm_run_kills_it_and_resume_finishes_it_once(tmp_path, request, kind, signum, group):
    """A one-run study (arm plain, one seed) gets the signal after its confirm run's first evaluation: exit status
    128 + the signal, the run and the study KILLED at step < 6 (never FINISHED), the resume line; a new start under
    the same name and a --resume with other --seeds are refused before Ray; --resume continues the run from its
    checkpoint to step 6, one FINISHED run for (plain, seed 8); a --resume of the finished study trains nothing."""
    env = request.getfixturevalue("s3_server") if kind == "s3" else {}
    storage, uri = storage_of(kind, tmp_path), f"sqlite:///{tmp_path}/mlflow.db"
    flags = ["--arms", "plain", "--seeds", "1", "--no-alignment-probe", "--max-concurrent", "1", "--storage", storage,
             "--mlflow-uri", uri, "--experiment", "signals", "--name", "s1",
             "--inject-faults", json.dumps({"step_delay_s": STEP_DELAY_S})]
    console = Console(start_study(*flags, env=env))
    console.wait_for("evaluated step 2")
    (os.killpg if group else os.kill)(console.process.pid, signum)
    code, output = console.finish()
    assert code == 128 + signum, output[-3000:]
    name = signal.Signals(signum).name
    assert f"interrupted ({name}): resume with study tune --model tiny " in output and "--name s1 --resume" in output
    assert "finished" not in output.split(f"[study] {name}:")[-1] and "Traceback" not in output, output[-3000:]
    client, parents, runs = confirm_runs(uri)
    assert [p.info.status for p in parents] == ["KILLED"] and [r.info.status for r in runs] == ["KILLED"], output
    assert runs[0].data.metrics["step"] < 6

    for extra, message in (([], "study 's1' already exists in"), (["--resume", "--seeds", "2"],
                                                                  "--seeds 1 -> 2; resume it with the command")):
        refused = subprocess.run([sys.executable, "-m", "study.tune", "--model", "tiny", *flags, *extra],
                                 capture_output=True, text=True, timeout=300, env={**os.environ, **env})
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Ray" not in refused.stderr

    code, output = Console(start_study(*flags, "--resume", env=env)).finish()
    assert code == 0, output[-3000:]
    client, parents, runs = confirm_runs(uri)
    assert [p.info.status for p in parents] == ["FINISHED"] and len(runs) == 1, output[-3000:]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.params["seed"] == "8" and run.data.metrics["step"] == 6
    assert run.data.metrics["train/resumed_from_step"] >= 2  # from its checkpoint, not from scratch
    history = [m.step for m in client.get_metric_history(run.info.run_id, "dev_en/accuracy")]
    assert history == sorted(set(history)) and history[-1] == 6
    assert parents[0].data.metrics["confirm/plain/runs_finished"] == 1

    code, output = Console(start_study(*flags, "--resume", env=env)).finish()  # a finished study, resumed
    assert code == 0 and " started " not in output, output[-3000:]
    client, parents, runs = confirm_runs(uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and [p.info.status for p in parents] == ["FINISHED"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_en/accuracy")] == history


@pytest.mark.e2e
def test_a_second_ctrl_c_stops_at_once_with_the_runs_killed(tmp_path):
    """Two SIGINTs to the process group a moment apart, during a confirm run: exit 130, well before a graceful
    stop would have ended, the study and its run KILLED."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    console = Console(start_study("--arms", "plain", "--seeds", "1", "--no-alignment-probe", "--max-concurrent", "1",
                                  "--storage", str(tmp_path / "runs"), "--mlflow-uri", uri, "--experiment", "signals",
                                  "--name", "s2", "--inject-faults", json.dumps({"step_delay_s": STEP_DELAY_S})))
    console.wait_for("evaluated step 2")
    os.killpg(console.process.pid, signal.SIGINT)
    console.wait_for("send it again to stop at once", timeout=60)
    os.killpg(console.process.pid, signal.SIGINT)
    code, output = console.finish(timeout=120)
    assert code == 130 and "SIGINT again: stopping at once" in output, output[-3000:]
    assert "interrupted (SIGINT): resume with" in output
    _, parents, runs = confirm_runs(uri)
    assert [p.info.status for p in parents] == ["KILLED"] and [r.info.status for r in runs] == ["KILLED"]

"""Helpers of the end-to-end tests: free ports, study subprocesses, MLflow queries, observable trial states, the
sockets a process tree listens on."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

# Real data cut to what the tests read, laid out as --data-dir reads it (tests/fixtures/README.md: sources, licences)
FIXTURES = Path(__file__).resolve().parent / "fixtures"
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}  # the last: an IPv6 socket bound to 127.0.0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_study(*args, model="tiny", env=None, cwd=None):
    """``python -m study.tune`` in its own process group (so a test can kill it with everything it started)."""
    return subprocess.Popen([sys.executable, "-m", "study.tune", "--model", model, *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def study_runs(uri, experiment, model=None, phase=None):
    """(client, study parent runs, trial runs) of an experiment, optionally of one model and one phase (search or
    confirm)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    runs = [r for r in runs if model is None or r.data.tags.get("model") == model]
    parents = [r for r in runs if r.data.tags.get("run_kind") == "study"]
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"
              and phase in (None, r.data.tags.get("phase"))]
    return client, parents, trials


SERVER_START_S = 300  # an MLflow server's start (its store's migrations) on a loaded 2-core machine: over 60 s seen


def start_mlflow_server(root: Path, port: int):
    """A real `mlflow server` with a SQLite backend on 127.0.0.1; returns (process, uri) once it answers."""
    import time
    import urllib.request

    from study.cli.serve_mlflow import server_command

    server = subprocess.Popen(server_command("127.0.0.1", port, f"sqlite:///{root}/mlflow.db", str(root / "artifacts")),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + SERVER_START_S
    while time.time() < deadline:
        try:
            urllib.request.urlopen(uri + "/health", timeout=1)
            return server, uri
        except OSError:
            time.sleep(0.5)
    stop(server)
    pytest.fail(f"mlflow server did not answer within {SERVER_START_S} s")


def stop(process) -> None:
    """SIGTERM to the process group; SIGKILL when it has not ended 30 s later (a loaded machine)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def registered_checkpoints(storage, trial_id: str) -> int:
    """How many checkpoints Ray Train's controller has registered for a trial: the checkpoint manager writes its
    snapshot to the run's storage when it registers one (before any callback hears of the report), so a worker lost
    after this point resumes from the newest of them, not from scratch."""
    for path in Path(storage).glob(f"*-trial-{trial_id}/checkpoint_manager_snapshot.json"):
        try:
            return len(json.loads(path.read_text())["checkpoint_results"])
        except (OSError, ValueError, KeyError):
            return 0  # being written
    return 0


def trials_past_first_report(uri, experiment, storage, metric="dev_en/accuracy", reports=None):
    """Trial runs still RUNNING that have reported ``metric`` (exactly ``reports`` times when given) and whose
    checkpoint Ray Train has registered: a trial interrupted now has mid-trial state to resume from."""
    client, _, trials = study_runs(uri, experiment)
    found = []
    for run in trials:
        if run.info.status != "RUNNING" or "trial_id" not in run.data.tags:
            continue
        count = len(client.get_metric_history(run.info.run_id, metric))
        if count and reports in (None, count) and registered_checkpoints(storage, run.data.tags["trial_id"]):
            found.append(run)
    return found


@dataclass(frozen=True)
class Listener:
    """A socket some process listens on: a TCP socket in LISTEN state or a bound, unconnected UDP socket."""

    ip: str
    port: int
    pid: int
    process: str  # the process name; a Ray worker's without the task it runs (ray::<class>[.<method>] in ps)
    self_connected: bool  # the process also holds a connection to this port, as a c10d store's host does

    def __str__(self):
        return f"{self.process} (pid {self.pid}) on {self.ip}:{self.port}"


def listeners(root: int) -> set[Listener]:
    """The sockets that process ``root`` and all its descendants listen on now."""
    try:
        pids = {root} | {p.pid for p in psutil.Process(root).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()
    connections = [c for c in psutil.net_connections(kind="inet") if c.pid in pids]
    clients = {(c.pid, c.raddr.port) for c in connections if c.raddr and c.status == psutil.CONN_ESTABLISHED}
    found = set()
    for c in connections:
        udp = c.type == socket.SOCK_DGRAM and not c.raddr and c.laddr.port
        if c.status == psutil.CONN_LISTEN or udp:
            try:
                name = psutil.Process(c.pid).name()
            except psutil.NoSuchProcess:
                continue
            if name.startswith("ray::"):
                name = name.partition(".")[0]
            found.add(Listener(c.laddr.ip, c.laddr.port, c.pid, name, (c.pid, c.laddr.port) in clients))
    return found


def communicate_watching_listeners(process, timeout: float = 900) -> tuple[str, set[Listener]]:
    """Wait for ``process`` as ``communicate`` does, listing the sockets its process tree listens on every half
    second meanwhile; returns its output and every listener seen."""
    output = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()))
    reader.start()
    seen, deadline = set(), time.time() + timeout
    while process.poll() is None:
        if time.time() > deadline:
            raise subprocess.TimeoutExpired(process.args, timeout)
        seen |= listeners(process.pid)
        time.sleep(0.5)
    reader.join()
    return output[0], seen


class Console:
    """A process's combined output, read line by line in a thread, so that a test can wait for a line and then act
    (send a signal) while the process goes on."""

    def __init__(self, process):
        self.process, self.lines = process, []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 900) -> None:
        """Until a line holds ``text``; fails when the process ends first or ``timeout`` passes."""
        deadline = time.time() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None and not self._reader.is_alive():
                pytest.fail(f"the process ended before printing {text!r}:\n{self.text()[-3000:]}")
            if time.time() > deadline:
                stop(self.process)
                pytest.fail(f"no {text!r} within {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.2)

    def finish(self, timeout: float = 900) -> tuple[int, str]:
        """(exit status, whole output) once the process has ended."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(self.process)
            pytest.fail(f"still running after {timeout} s:\n{self.text()[-3000:]}")
        self._reader.join(timeout=30)
        return code, self.text()

    def text(self) -> str:
        return "".join(self.lines)


S3_BUCKET = "studies"


def start_s3_server(port: int):
    """A real S3 API on 127.0.0.1 (moto's server, a separate process) with one bucket; returns (process, the
    environment that points pyarrow, boto3 and a study's Ray processes at it)."""
    import urllib.request

    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{env['AWS_ENDPOINT_URL']}/moto-api/", timeout=1)
            break
        except OSError:
            if time.time() > deadline:
                stop(server)
                pytest.fail("moto's S3 server did not answer within 120 s")
            time.sleep(0.3)
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket=S3_BUCKET)
    return server, env

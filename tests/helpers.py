"""Helpers of the end-to-end tests: free ports, study subprocesses, MLflow queries."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_study(*args, model="tiny", env=None, cwd=None):
    """``python -m study.tune`` in its own process group (so a test can kill it with everything it started)."""
    return subprocess.Popen([sys.executable, "-m", "study.tune", "--model", model, *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def study_runs(uri, experiment, model=None):
    """(client, study parent runs, trial runs) of an experiment, optionally of one model."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    runs = [r for r in runs if model is None or r.data.tags.get("model") == model]
    parents = [r for r in runs if r.data.tags.get("run_kind") == "study"]
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    return client, parents, trials


def start_mlflow_server(root: Path, port: int):
    """A real `mlflow server` with a SQLite backend on 127.0.0.1; returns (process, uri) once it answers."""
    import time
    import urllib.request

    from study.serve_mlflow import server_command

    server = subprocess.Popen(server_command("127.0.0.1", port, f"sqlite:///{root}/mlflow.db", str(root / "artifacts")),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(uri + "/health", timeout=1)
            return server, uri
        except OSError:
            time.sleep(0.5)
    os.killpg(server.pid, signal.SIGTERM)
    pytest.fail("mlflow server did not start")


def stop(process) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)

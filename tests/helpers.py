"""Helpers of the end-to-end tests: free ports, study subprocesses, MLflow queries."""

import os
import socket
import subprocess
import sys


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

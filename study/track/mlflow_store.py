"""MLflow helpers shared by the study's writer (``study.track.writer``) and the report's reader: clients, the server
check, metric-key sanitising, experiment lookup and the parent-run tag. Importing it changes nothing."""

from __future__ import annotations

import os
import re
from pathlib import Path

from study.core.errors import StudyError

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag for a nested run's parent
_UNSAFE = re.compile(r"[^\w\-./ ]")


def safe_key(key: str) -> str:
    """MLflow accepts letters, digits and _ - . / space in metric and param names; anything else becomes _."""
    return _UNSAFE.sub("_", key)


def client(uri: str, fail_fast: bool = False):
    """An ``MlflowClient`` for ``uri``. ``fail_fast``: the study's writer, which must notice an outage in seconds,
    not after MLflow's default ~2 minutes of retries per request (its writes are buffered meanwhile); it sets
    MLFLOW_HTTP_REQUEST_MAX_RETRIES=2 and MLFLOW_HTTP_REQUEST_TIMEOUT=20 s for this process unless the user set
    them."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if fail_fast:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        return MlflowClient(uri)
    except MlflowException as err:  # e.g. a file: store, which MLflow 3 refuses: one line, not its traceback
        message = " ".join(str(err).split())
        raise StudyError(f"MLflow cannot use the tracking URI {uri}: {message}") from None


def check_server(uri: str, attempts: int = 3, timeout_s: float = 10.0) -> None:
    """Fail fast (one line) when an http(s) tracking server does not answer. A refused connection or an unknown
    host fails at once; a server that accepted the connection but is slow to answer (a loaded machine) gets
    ``attempts`` tries of ``timeout_s`` seconds each before the study gives up. A file store (a ``file:`` URI or a
    bare path), which MLflow 3 refuses unless told otherwise, fails here too, before anything starts."""
    from urllib.parse import urlparse

    if urlparse(uri).scheme in ("", "file"):
        client(uri)  # MLflow's refusal, as one line; nothing is written
        return
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    for attempt in range(attempts):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).read()
            return
        except OSError as err:
            slow = isinstance(err, TimeoutError) or isinstance(getattr(err, "reason", None), TimeoutError)
            if slow and attempt + 1 < attempts:
                continue
            raise StudyError(f"MLflow tracking server {uri} is unreachable ({getattr(err, 'reason', err)}); start "
                             f"it (mlflow server --host 127.0.0.1 --port 5000) or omit --mlflow-uri for the local "
                             f"store") from None


def check_store_exists(uri: str) -> None:
    """For readers (the report): a local store (``sqlite:///PATH``, ``file:PATH`` or a bare path) must exist, so
    that a mistyped path is one line instead of a new, empty store."""
    if uri.startswith(("http://", "https://")):
        return check_server(uri)
    path = uri.removeprefix("sqlite:///").removeprefix("file://").removeprefix("file:")  # sqlite:////abs -> /abs
    if not Path(path).exists():
        raise StudyError(f"no MLflow store at {uri}: pass the --mlflow-uri the study wrote to (study tune's default is "
                         "sqlite:///<its working directory>/mlflow.db)")


def experiment_id(mlflow, name: str) -> str:
    """The id of the experiment ``name`` (``mlflow``: an ``MlflowClient``), created when it does not exist yet."""
    experiment = mlflow.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else mlflow.create_experiment(name)


def default_mlflow_uri() -> str:
    """A SQLite store in the working directory: no server needed, and ``study report`` finds what ``study tune``
    wrote when both run from the same folder."""
    return f"sqlite:///{Path('mlflow.db').resolve()}"

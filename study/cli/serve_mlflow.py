"""``study serve-mlflow``: an MLflow tracking server for a study, bound to 127.0.0.1 unless asked.

The MLflow UI has no authentication, so the server listens on the loopback interface; reach it from your machine
with SSH port forwarding (``ssh -L 5000:127.0.0.1:5000 head``, or ``ray attach cluster.yaml -p 5000``). Binding
another address needs ``--host ADDRESS --allow-remote``, a deliberate choice.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from study.core.errors import StudyError, run_cli


def server_command(host: str, port: int, backend: str, artifacts: str, workers: int = 1) -> list[str]:
    """The argv of ``mlflow server`` run by this Python interpreter."""
    return [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--backend-store-uri",
            backend, "--artifacts-destination", artifacts, "--workers", str(workers)]


def check_host(host: str, allow_remote: bool) -> None:
    """StudyError when ``host`` is not a loopback address (or ``localhost``) and ``allow_remote`` is not set."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not allow_remote:
        raise StudyError(f"--host {host} would expose the unauthenticated MLflow server beyond this machine: use "
                         "127.0.0.1 with SSH port forwarding, or add --allow-remote if that is what you want")


def main(argv=None) -> int:
    """Parse the options, check the host, then replace this process with the MLflow server (does not return)."""
    parser = argparse.ArgumentParser(prog="study serve-mlflow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--backend-store-uri", default="sqlite:///mlflow.db", help="runs database")
    parser.add_argument("--artifacts-destination", default="./mlartifacts", help="artifact store (dir or s3://)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    args = parser.parse_args(argv)
    check_host(args.host, args.allow_remote)
    command = server_command(args.host, args.port, args.backend_store_uri, args.artifacts_destination, args.workers)
    print(f"[mlflow] serving {args.backend_store_uri} on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    os.execv(command[0], command)  # the server replaces this process: signals and exit codes are its own


if __name__ == "__main__":
    run_cli(main)

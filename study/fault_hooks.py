"""Fault-injection hooks for the fault-tolerance tests: environment variables the training worker reads.

Unset (always, outside tests) every hook is a no-op. They are environment variables rather than config fields because
the tests set them in the process that starts Ray, and Ray's local and multi-node test clusters pass that process's
environment to every trial driver and worker (``ray_setup.worker_env`` forwards them explicitly).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FAIL_AT_STEP_ENV = "STUDY_FAIL_AT_STEP"  # the worker process dies once, right after this optimizer step
FAIL_MARKER_ENV = "STUDY_FAIL_MARKER"  # file that records that the failure already happened
STEP_DELAY_ENV = "STUDY_STEP_DELAY_S"  # seconds to sleep after each optimizer step (fault-test windows)
NAN_MARKER_ENV = "STUDY_NAN_MARKER"  # the first run to reach step 1 gets a NaN loss, on every attempt
HOOK_ENVS = (FAIL_AT_STEP_ENV, FAIL_MARKER_ENV, STEP_DELAY_ENV, NAN_MARKER_ENV)


def forced_nan(run_name: str) -> bool:
    """Whether this run's loss is to be NaN: the first run that asks claims the marker file (atomically), and it
    alone gets a non-finite loss, on every attempt."""
    marker = os.environ.get(NAN_MARKER_ENV)
    if not marker:
        return False
    try:
        with open(marker, "x") as handle:  # atomic claim: exactly one run gets the NaN
            handle.write(run_name)
    except FileExistsError:
        pass
    return Path(marker).read_text() == run_name


def after_step(step: int) -> None:
    """After optimizer step ``step``: sleep $STUDY_STEP_DELAY_S seconds; kill this worker process once (exit code 1,
    no cleanup) when ``step`` is $STUDY_FAIL_AT_STEP and the marker file does not exist yet."""
    time.sleep(float(os.environ.get(STEP_DELAY_ENV, "0")))
    target, marker = os.environ.get(FAIL_AT_STEP_ENV), os.environ.get(FAIL_MARKER_ENV)
    if target and marker and step == int(target) and not os.path.exists(marker):
        Path(marker).write_text(f"failed after step {step}\n")
        os._exit(1)

"""Fault injection for the fault-tolerance tests: a ``FaultHooks`` config that rides in the trial config to the
workers.

The default (every field unset, ``NO_FAULTS``) is a no-op, and no command a user types sets it: ``study tune`` and
``study train`` take it only from a hidden ``--inject-faults JSON`` flag the tests pass. It travels as data (the Tune
trial config, then the Train loop config), so a multi-node test cluster's workers see the same hooks as a local run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from study.core.errors import StudyError


@dataclass(frozen=True)
class FaultHooks:
    """What to break in a run; every field unset (the default) breaks nothing."""

    fail_at_step: int | None = None  # the worker process dies once, right after this optimizer step ...
    fail_marker: str | None = None  # ... and records it in this file, so the restarted worker goes on
    step_delay_s: float = 0.0  # seconds to sleep after each optimizer step (keeps fault-test windows open)
    nan_marker: str | None = None  # the first run to claim this file gets a NaN loss, on every attempt
    write_marker: str | None = None  # the study driver holds this file while it writes to MLflow ...
    write_delay_s: float = 0.0  # ... for at least this long (a chaos test kills the driver mid-write)

    def __post_init__(self) -> None:
        if (self.fail_at_step is None) != (self.fail_marker is None):
            raise StudyError("fault hooks: fail_at_step and fail_marker go together (the marker makes the failure "
                             "happen once)")
        if self.step_delay_s < 0:
            raise StudyError(f"fault hooks: step_delay_s must be >= 0, got {self.step_delay_s}")

    @classmethod
    def from_dict(cls, values: dict | None) -> FaultHooks:
        """Hooks from their ``to_dict`` form (None: no hooks); StudyError naming an unknown key."""
        unknown = set(values or {}) - {f.name for f in fields(cls)}
        if unknown:
            raise StudyError(f"fault hooks: unknown key(s) {', '.join(sorted(unknown))}; use "
                             f"{', '.join(f.name for f in fields(cls))}")
        return cls(**(values or {}))

    @classmethod
    def from_json(cls, text: str) -> FaultHooks:
        """Hooks from the ``--inject-faults`` flag's JSON object; StudyError when it is not one."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise StudyError(f"--inject-faults: not JSON ({err})") from None
        if not isinstance(values, dict):
            raise StudyError(f"--inject-faults: expected a JSON object, got {text!r}")
        return cls.from_dict(values)

    @staticmethod
    def add_flag(parser) -> None:
        """The hidden ``--inject-faults JSON`` flag (parsed into ``args.inject_faults``), for the tests only."""
        import argparse

        parser.add_argument("--inject-faults", type=FaultHooks.from_json, default=NO_FAULTS, help=argparse.SUPPRESS)

    def to_dict(self) -> dict:
        """Plain values, as they cross Ray's process boundaries."""
        return asdict(self)

    def forced_nan(self, run_name: str) -> bool:
        """Whether this run's loss is to be NaN: the first run that asks claims the marker file (atomically), and it
        alone gets a non-finite loss, on every attempt."""
        if not self.nan_marker:
            return False
        try:
            with open(self.nan_marker, "x") as handle:  # atomic claim: exactly one run gets the NaN
                handle.write(run_name)
        except FileExistsError:
            pass
        return Path(self.nan_marker).read_text() == run_name

    @contextlib.contextmanager
    def writing(self):
        """Around one MLflow write of the study driver: hold ``write_marker`` (created, then removed) and wait
        ``write_delay_s`` inside the write."""
        if not self.write_marker:
            yield
            return
        Path(self.write_marker).write_text(str(os.getpid()))
        try:
            time.sleep(self.write_delay_s)
            yield
        finally:
            Path(self.write_marker).unlink(missing_ok=True)

    def after_step(self, step: int) -> None:
        """After optimizer step ``step``: sleep ``step_delay_s``; kill this worker process once (exit code 1, no
        cleanup) when ``step`` is ``fail_at_step`` and the marker file does not exist yet."""
        time.sleep(self.step_delay_s)
        if self.fail_at_step is not None and step == self.fail_at_step and not os.path.exists(self.fail_marker):
            Path(self.fail_marker).write_text(f"failed after step {step}\n")
            os._exit(1)


NO_FAULTS = FaultHooks()  # the default everywhere: breaks nothing (frozen, so one instance serves every default)

"""Ctrl+C (SIGINT) and SIGTERM during a study: the runs stop where they are with their checkpoints kept, every run
that did not finish ends KILLED in MLflow, and the command exits non-zero saying how to resume.

Ray Tune's own SIGINT handler ends ``Tuner.fit()`` as if the phase were over: it saves the experiment state (its
trials still RUNNING there, so a restored Tuner continues them), stops the trial actors, marks every trial
TERMINATED in memory and returns the results so far. A driver that reads those results as a finished phase records
half-trained runs as finished and starts the next phase. So the study handles both signals itself (Tune's SIGINT
handler is switched off with ``TUNE_DISABLE_SIGINT_HANDLER``; Ray sets its own SIGTERM handler in ``ray.init``, so
``install`` runs again after it): the first signal is recorded and, inside a ``fit``, handed to Tune's graceful stop
(the handler Tune keeps on SIGUSR1 during a fit); the driver then raises ``StudyInterrupted`` instead of reading the
phase as done. Outside a ``fit`` there is nothing to stop gracefully, so it is raised at once (or at the end of a
``held`` block). A second signal raises at once wherever the driver is, and a third gets the default action.

A signal sent to the study's whole process group (``kill -TERM -<pgid>``, a batch system ending a job) also ends
Ray's own processes, which do not block SIGTERM as they block SIGINT: Tune's stop then waits on a cluster that is
gone, and Ray's core worker ends the driver a minute later with MLflow still showing the runs RUNNING. So a first
signal also starts a watchdog: when the local Ray instance's GCS server or raylet is seen gone, or the process has
not ended ``GRACE_S`` later, it runs the ``on_overdue`` steps the study registered (end the MLflow records KILLED,
print the resume line) and exits with the signal's status. What Ray stored until then (the experiment state, each
run's checkpoints) is what ``--resume`` continues from, as after a SIGKILL.

One study runs per process, so the state is one module-level ``INTERRUPTS``: ``callbacks.ForwardInterrupt``, a
Tune callback pickled with the Tuner, finds it again in a restored study. No Ray import here: the tune command installs
the handlers before ``init_ray``, which must come before Ray's first import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 40.0  # a graceful stop takes ~15 s on a loaded 2-core machine; Ray's driver dies 60 s after its GCS


class StudyInterrupted(KeyboardInterrupt):
    """The study stopped on a signal. A ``KeyboardInterrupt``, so that ``StudyRun`` ends the parent run, and every
    trial run still RUNNING, KILLED (it ends FAILED only on an ``Exception``); the exit status is 128 + the signal's
    number, as a shell reports a process the signal ended (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _say(line: str) -> None:
    """One console line from inside a signal handler: ``os.write``, because the handler may run while the main thread
    is inside a write to ``sys.stderr`` (a buffered stream refuses a re-entrant write)."""
    os.write(2, f"\n[study] {line}\n".encode())


class Interrupts:
    """The study's SIGINT and SIGTERM handling (see the module docstring)."""

    def __init__(self, grace_s: float = GRACE_S):
        self.signum: int | None = None
        self._fitting = self._forwarded = False
        self._held = 0
        self.grace_s = grace_s
        self.on_overdue: list[Callable[[], None]] = []  # the watchdog's last steps, in order
        self._closed = threading.Event()

    def _watchdog(self) -> None:
        """After ``grace_s``, or as soon as the local Ray instance is seen gone, when the process is still here: the
        registered last steps, then exit (see above)."""
        from study.train.ray_setup import local_ray_lost

        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and not local_ray_lost():
            if self._closed.wait(0.5):
                return
        why = "Ray's processes got it too" if local_ray_lost() else f"not stopped after {self.grace_s:.0f} s"
        _say(f"{signal.Signals(self.signum).name}: {why}; ending the study's records and exiting")
        for step in self.on_overdue:
            try:
                step()
            except Exception as err:  # the exit below must happen whatever a step does
                _say(f"{err.__class__.__name__}: {err}")
        sys.stderr.flush()
        os._exit(128 + self.signum)

    def install(self) -> Interrupts:
        """Handle SIGINT and SIGTERM from now on (again after ``ray.init``, which sets its own SIGTERM handler)."""
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # read by every Tuner.fit: the study's handler stays
        for number in SIGNALS:
            signal.signal(number, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            for number in SIGNALS:
                signal.signal(number, signal.SIG_DFL)
            _say(f"{name} again: stopping at once")
            raise StudyInterrupted(self.signum)
        self.signum = signum
        threading.Thread(target=self._watchdog, name="study-stop-watchdog", daemon=True).start()
        if self._fitting:
            _say(f"{name}: stopping the runs where they are (their checkpoints are kept); send it again to stop at "
                 "once")
            self.forward()
        elif not self._held:
            raise StudyInterrupted(signum)

    def forward(self) -> None:
        """Hand a recorded signal to Tune's graceful stop, once per ``fit``, as soon as Tune's handler is in place
        (``ForwardInterrupt`` tries again at each step of Tune's loop)."""
        if self.signum is None or self._forwarded or not self._fitting:
            return
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if callable(tune_stop):
            # Tune's "Stop signal received" and "Resume with Tuner.restore(...)" lines: the study says its own
            logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)
            tune_stop(signal.SIGUSR1, None)
            self._forwarded = True

    @contextlib.contextmanager
    def fitting(self):
        """Around ``Tuner.fit()``: a signal stops the phase gracefully; the caller reads ``signum`` afterwards."""
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # not Tune's handler of an earlier fit, which would do nothing
        self._fitting, self._forwarded = True, False
        try:
            yield
        finally:
            self._fitting = False

    @contextlib.contextmanager
    def held(self):
        """A block a first signal must not cut in two (a run being created in MLflow): it raises at its end."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
        self.check()

    def close(self) -> None:
        """Default handlers again and no watchdog (a process that goes on after its study: the tests)."""
        self._closed.set()
        for number in SIGNALS:
            signal.signal(number, signal.SIG_DFL if number == signal.SIGTERM else signal.default_int_handler)

    def check(self) -> None:
        """Raise ``StudyInterrupted`` when a signal came."""
        if self.signum is not None and not self._held:
            raise StudyInterrupted(self.signum)


INTERRUPTS = Interrupts()


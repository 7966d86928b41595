"""The study's console for people: one line per run event (started, evaluated, stopped early, finished, failed) with
its phase, arm, modality and searched values in short form and its English-dev and target-mean scores, and a
progress line (runs done of the study's total, elapsed, ETA) after each run ends. Ray's and the libraries' own
output goes to log files instead (``study tune --verbose`` brings it back)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from ray.tune import Callback

from study.core.errors import last_error_line
from study.core.protocol import TOTAL_STEPS_KEY, selection_key, target_average_key
from study.tune.trial import TrialConfig


def error_line(trial) -> str:
    """The last line of a failed trial's error, e.g. ``StudyError: 24 training pairs give no full optimizer step
    ...`` (its whole traceback stays in the trial's error.txt). Tune writes that file locally before it reaches the
    trial's storage, so the local copy is read when the stored one is not there yet."""
    text = trial.get_error()
    if not text and trial.error_file and Path(trial.error_file).is_file():
        text = Path(trial.error_file).read_text()
    return last_error_line(text) or "see the log files"


def short(value) -> str:
    """A searched value as a person reads it: 4 significant digits for floats."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def describe(config: TrialConfig) -> str:
    """``<phase> <arm> seed <seed> [modality ...] name=value ...``: what a run is, in one short field."""
    searched = " ".join(f"{k}={short(v)}" for k, v in config.searched.items() if k != "modality")
    return " ".join(part for part in (config.phase, config.arm or "-", f"seed {config.train.seed}",
                                      f"modality {config.modality}", searched) if part)


def duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


VME_STEP_COST = 1.7  # a VME training step's time over a plain one's (1.69x on the CPU benchmark, docs/results.md)


def run_cost(config: TrialConfig) -> float:
    """A run's expected cost relative to a plain run of the same preset: the ETA weighs runs by it, so that a
    study of VME and plain arms does not extrapolate from whichever arm happened to finish first."""
    return VME_STEP_COST if config.train.objective == "vme" else 1.0


def eta(progress: float, total: float, elapsed: float) -> str:
    """The time the remaining work takes at the pace so far: ``progress`` of ``total`` cost units done in
    ``elapsed`` seconds ("?" before any progress)."""
    if progress <= 0:
        return "?"
    return duration(elapsed / progress * max(0.0, total - progress))


class ConsoleCallback(Callback):
    """Tune callback printing the study's run events and progress to stderr (``stream``). ``total`` is the number
    of runs the study will make (search trials and confirm runs); ``done`` runs may already have ended (a resumed
    study, or an earlier phase)."""

    def __init__(self, metric: str, total: int, stream=None, total_cost: float | None = None):
        self.metric, self.total = metric, total
        self.total_cost = float(total if total_cost is None else total_cost)  # run_cost units (default: 1 a run)
        self.stream = stream  # None: sys.stderr when printing (Tune pickles callbacks with the study state)
        self.started: float | None = None  # the first run's start: the reference lines before it are no run time
        self.done, self.done_cost = 0, 0.0
        self.running: dict[str, float] = {}  # trial id -> its cost units done so far (step / planned steps)

    def _print(self, trial, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {trial.trial_id} {text}", file=self.stream or sys.stderr, flush=True)

    def _scores(self, result: dict) -> str:
        dev, target = result.get(selection_key(self.metric)), result.get(target_average_key(self.metric))
        parts = [f"English dev {dev:.4f}" if isinstance(dev, (int, float)) else "",
                 f"target mean {target:.4f}" if isinstance(target, (int, float)) and math.isfinite(target) else ""]
        return ", ".join(p for p in parts if p)

    def on_trial_start(self, iteration, trials, trial, **info):
        """``started``: what the run is."""
        if self.started is None:
            self.started = time.time()
        self.running.setdefault(trial.trial_id, 0.0)
        self._print(trial, f"started   {describe(TrialConfig.from_tune(trial.config))}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """``evaluated``: the step of the planned ones, its scores and the study's ETA so far."""
        step, planned = result.get("step"), result.get(TOTAL_STEPS_KEY)
        if isinstance(step, (int, float)) and isinstance(planned, (int, float)) and planned > 0:
            self.running[trial.trial_id] = run_cost(TrialConfig.from_tune(trial.config)) * min(1.0, step / planned)
        if selection_key(self.metric) in result:
            of = f"/{int(planned)}" if isinstance(planned, (int, float)) else ""
            self._print(trial, f"evaluated step {result.get('step', '?')}{of}: {self._scores(result)} "
                               f"(study ETA {self._eta()})")

    def on_trial_complete(self, iteration, trials, trial, **info):
        """``finished`` (or ``stopped early``, when ASHA ended it before its planned steps), then progress."""
        last = trial.last_result or {}
        step, planned = last.get("step"), last.get(TOTAL_STEPS_KEY)
        early = isinstance(step, (int, float)) and isinstance(planned, (int, float)) and step < planned
        what = f"stopped early at step {step} of {planned} (ASHA)" if early else "finished"
        self._end(trial, what)

    def on_trial_error(self, iteration, trials, trial, **info):
        """``failed``, with the error's last line; then progress."""
        self._end(trial, f"FAILED: {error_line(trial)[:300]}")

    def _eta(self) -> str:
        elapsed = time.time() - (self.started or time.time())
        return eta(self.done_cost + sum(self.running.values()), self.total_cost, elapsed)

    def _end(self, trial, what: str) -> None:
        self.done += 1
        self.running.pop(trial.trial_id, None)
        self.done_cost += run_cost(TrialConfig.from_tune(trial.config))
        self._print(trial, what)
        elapsed = time.time() - (self.started or time.time())
        print(f"[study] {self.done}/{self.total} runs done, elapsed {duration(elapsed)}, ETA {self._eta()}",
              file=self.stream or sys.stderr, flush=True)



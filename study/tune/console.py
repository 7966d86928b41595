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


def eta(done: int, total: int, elapsed: float) -> str:
    """The time the remaining runs take at the pace so far ("?" before the first run ends)."""
    if not done:
        return "?"
    return duration(elapsed / done * max(0, total - done))


class ConsoleCallback(Callback):
    """Tune callback printing the study's run events and progress to stderr (``stream``). ``total`` is the number
    of runs the study will make (search trials and confirm runs); ``done`` runs may already have ended (a resumed
    study, or an earlier phase)."""

    def __init__(self, metric: str, total: int, stream=None):
        self.metric, self.total = metric, total
        self.stream = stream  # None: sys.stderr when printing (Tune pickles callbacks with the study state)
        self.started = time.time()
        self.done = 0

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
        self._print(trial, f"started   {describe(TrialConfig.from_tune(trial.config))}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """``evaluated``: the step and its scores."""
        if selection_key(self.metric) in result:
            self._print(trial, f"evaluated step {result.get('step', '?')}: {self._scores(result)}")

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

    def _end(self, trial, what: str) -> None:
        self.done += 1
        self._print(trial, what)
        elapsed = time.time() - self.started
        print(f"[study] {self.done}/{self.total} runs done, elapsed {duration(elapsed)}, "
              f"ETA {eta(self.done, self.total, elapsed)}", file=self.stream or sys.stderr, flush=True)



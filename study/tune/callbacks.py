"""The study's Tune callback that writes MLflow: the only tracking code that reads a trial's config, so the writer
below it (``study.track.writer``) needs no Ray."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from ray.tune import Callback

from study.core.protocol import (
    ARM_TAG,
    CONFIRM_PHASE,
    PER_LANGUAGE_ARTIFACT,
    PHASE_TAG,
    RUN_KIND_TAG,
    SELECTED_STEP_TAG,
    STAGE_ARTIFACT,
    STAGE_RECORD,
    TRIAL_RUN,
    StageResult,
    improves,
    reached_last_step,
)
from study.track.mlflow_store import PARENT_TAG, safe_key
from study.track.outbox import outbox_take
from study.track.repeatable import per_language_csv
from study.track.writer import MLflowWriter
from study.tune.interrupts import INTERRUPTS
from study.tune.trial import TrialConfig


class MLflowTrialCallback(Callback):
    """Tune callback: a nested MLflow run per trial with every parameter, every metric as a step series, the
    per-language table of its selected report, what the trial left in its outbox (intermediate stage, per-example
    scores), and FAILED status for failed trials. Writes go through ``MLflowWriter``: nothing is lost while the
    server is down."""

    def __init__(self, writer: MLflowWriter, tags: dict, selection_key: str, metric: str):
        self.writer, self.tags, self.selection_key, self.metric = writer, tags, selection_key, metric
        self._started: set[str] = set()
        self._best: dict[str, dict] = {}
        self._nodes: dict[str, list[str]] = {}
        # for the study's time profile: when each trial started (unix s), its stage's seconds (0 when cached) and
        # the seconds this callback spent writing its records
        self.trial_started: dict[str, float] = {}
        self.stage_seconds: dict[str, float] = {}
        self.write_seconds: dict[str, float] = {}

    def _send(self, trial_id: str, op: str, payload) -> None:
        started = time.perf_counter()
        self.writer.send(trial_id, op, payload)
        self.write_seconds[trial_id] = self.write_seconds.get(trial_id, 0.0) + time.perf_counter() - started

    def _ensure_run(self, trial) -> None:
        if trial.trial_id in self._started:
            return
        config = TrialConfig.from_tune(trial.config)
        tags = {RUN_KIND_TAG: TRIAL_RUN, **self.tags, PARENT_TAG: self.writer.parent_run_id,
                "trial_id": trial.trial_id, "trial_name": str(trial), "modality": config.modality,
                ARM_TAG: config.arm, PHASE_TAG: config.phase}
        # the effective values, not base + overrides; arm and phase as params too, so the runs table can show them
        params = {**config.params(), ARM_TAG: config.arm, PHASE_TAG: config.phase}
        self._send(trial.trial_id, "create", {"name": run_name(config, trial.trial_id), "tags": tags,
                                              "params": params})
        self._started.add(trial.trial_id)

    def setup(self, **info):
        """Write what a crashed or interrupted study left in the buffer."""
        self.writer.flush()  # records a crashed or interrupted study left behind

    def on_trial_start(self, iteration, trials, trial, **info):
        """Create (or find) the trial's nested run."""
        self.trial_started.setdefault(trial.trial_id, time.time())
        self._ensure_run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """Log every finite metric at the trial's optimizer step, the nodes it trained on, and keep the report
        English dev selects so far (``protocol.improves``)."""
        self._ensure_run(trial)
        step = int(result.get("step", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        metrics = [(safe_key(k), float(v), now, step) for k, v in result.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   and ("/" in k or k in ("step", "epoch", "eval_seconds"))]
        self._send(trial.trial_id, "metrics", metrics)
        nodes = self._nodes.setdefault(trial.trial_id, [])
        if result.get("node_id") and result["node_id"] not in nodes[-1:]:  # where it trained, moves included
            nodes.append(result["node_id"])
            self._send(trial.trial_id, "tag", ("nodes", ",".join(nodes)))
        best = self._best.get(trial.trial_id)
        if self.selection_key in result and improves(result[self.selection_key],
                                                     best[self.selection_key] if best else None):
            self._best[trial.trial_id] = {k: v for k, v in result.items() if isinstance(v, (int, float))}

    def _finish(self, trial, status: str) -> None:
        self._ensure_run(trial)
        trial_id = trial.trial_id
        best = self._best.get(trial_id)
        if best:
            self._send(trial_id, "artifact", {"name": PER_LANGUAGE_ARTIFACT,
                                              "data": per_language_csv(best, self.metric).encode()})
            self._send(trial_id, "tag", (SELECTED_STEP_TAG, str(int(best.get("step", 0)))))
        for name, data in sorted(outbox_take(self.writer.storage, self.writer.study, trial_id).items()):
            if name == STAGE_RECORD:
                stage = StageResult.from_json(data)
                self.stage_seconds[trial_id] = 0.0 if stage.cache_hit else float(stage.meta.get("seconds", 0.0))
                for op, payload in stage_writes(stage):
                    self._send(trial_id, op, payload)
            else:
                self._send(trial_id, "artifact", {"name": name, "data": data})
        self._send(trial_id, "terminate", status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        """Log the selected report's table, the outbox's files, and mark the run FINISHED: at its last step, or in the
        search, where ASHA ends trials early. A confirm run Tune ended short of its last step did not finish (only
        ASHA ends trials on purpose, and the confirm phase has none): KILLED, so that no summary or report counts
        it."""
        last = getattr(trial, "last_result", None) or {}
        finished = reached_last_step(last) or TrialConfig.from_tune(trial.config).phase != CONFIRM_PHASE
        self._finish(trial, "FINISHED" if finished else "KILLED")

    def on_trial_error(self, iteration, trials, trial, **info):
        """As ``on_trial_complete``, with status FAILED."""
        self._finish(trial, "FAILED")

    def on_experiment_end(self, trials, **info):
        """Write whatever is still buffered."""
        self.writer.flush()

    def reconcile(self, ended: list[tuple]) -> int:
        """After a phase's ``fit``: ``ended`` holds (Tune result, its selected report, its outcome —
        ``phases.run_outcome``) of every trial of the phase. A trial that ended (FINISHED at its last step, stopped
        early by ASHA, or FAILED) whose run is still RUNNING in MLflow — its driver was killed after Tune recorded the
        end but before this callback wrote it, so the resumed Tune never reports that end again — or KILLED — a
        signal ended the study before its end was written — gets its end written now: the per-language table, the
        selected step, the outbox's files, FINISHED or FAILED. An UNFINISHED trial (a signal stopped it, whatever
        Tune's status says) is left as it is: never FINISHED short of its last step. Returns how many runs it ended.
        With MLflow not answering it does nothing: the buffered records wait for ``--resume``, which reconciles
        again."""
        from study.tune.phases import ENDED

        ended_now = 0
        if not self.writer.flush():
            return 0
        for result, report, outcome in ended:
            trial_id = (result.metrics or {}).get("trial_id")
            if outcome not in ENDED or not trial_id:
                continue
            try:
                if self.writer.run_status(trial_id) not in ("RUNNING", "KILLED"):
                    continue
            except (MlflowException, OSError):
                return ended_now
            if report and self.selection_key in report:
                self._best[trial_id] = report
            self._finish(_EndedTrial(trial_id, result.config), ENDED[outcome])
            ended_now += 1
        return ended_now


def run_name(config: TrialConfig, trial_id: str) -> str:
    """A run name a person reads in MLflow's runs table: ``confirm · plain · seed 8``, ``search · vme-tuned · #3``
    (the trial's number in its phase, from Tune's trial id ``<experiment>_<00002>``)."""
    if config.phase == CONFIRM_PHASE:
        return f"{config.phase} · {config.arm} · seed {config.train.seed}"
    number = trial_id.rsplit("_", 1)[-1]
    return f"{config.phase} · {config.arm} · #{int(number) + 1 if number.isdigit() else number}"


class ForwardInterrupt(Callback):
    """A signal that came while a phase's Tuner was still being built or restored, before Tune put its own handler
    in place, reaches Tune's graceful stop at the first step of Tune's loop (``study.tune.interrupts``)."""

    def on_step_begin(self, iteration, trials, **info):
        INTERRUPTS.forward()


@dataclass(frozen=True)
class _EndedTrial:
    """What ``MLflowTrialCallback._finish`` reads of a Tune trial, rebuilt from a Tune result."""

    trial_id: str
    config: dict

    def __str__(self) -> str:
        return f"trial_{self.trial_id}"


def stage_writes(stage: StageResult) -> list[tuple[str, object]]:
    """The MLflow writes of a trial's intermediate stage: loss series, probe, parameters, counts, stage.json."""
    meta, now = stage.meta, int(time.time() * 1000)
    metrics = [("intermediate/loss", loss, now, step) for step, loss in enumerate(meta["losses"], start=1)]
    metrics += [(safe_key(f"intermediate/probe/{lang}"), score, now, 0)
                for lang, score in meta.get("probe", {}).items()]
    skipped = meta["examples"]["skipped"]
    params = {"intermediate.checkpoint": stage.directory, "intermediate.cache_hit": stage.cache_hit,
              "intermediate.vision_tower": meta["vision_tower"] or "none (text)", "intermediate.data": meta["data"],
              "intermediate.train_examples": meta["examples"]["train"],
              # the stage's seed: the run's own (``seed``), by which the report pairs arms; recorded to be checked
              "intermediate.seed": meta["config"]["seed"],
              # stages cached before the option existed record neither: they are English
              "intermediate.caption_languages": ",".join(meta["config"].get("caption_languages", ["en"])),
              **{f"intermediate.captions.{lang}": n for lang, n in meta.get("captions_per_language", {}).items()},
              **{f"intermediate.skipped.{safe_key(k)}": v for k, v in skipped.items()}}
    return [("metrics", metrics), ("params", params),
            ("artifact", {"name": STAGE_ARTIFACT, "data": json.dumps(meta, indent=1).encode()})]

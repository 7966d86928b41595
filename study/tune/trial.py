"""The Tune trial's config: nested as Ray's Train-in-Tune guide nests it, built by ``tune_constants`` and the search
space, read back by one ``TrialConfig.from_tune``.

Sections: ``train_loop_config`` holds the searched ``TrainConfig`` options, ``stage`` the searched intermediate-stage
options (``modality`` among them), ``run`` what every trial of an arm and phase shares (the preset's
``TrainConfig`` with the arm's fixed options, the stage's data and vision tower, scaling, storage, study name, the
arm, the phase, fault hooks). Optuna names a searched parameter
``<section>/<name>`` and Ray's ``OptunaSearch`` unflattens on ``/``, so the searched values arrive in their section.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from study.core.faults import FaultHooks
from study.core.protocol import CONFIRM_PHASE, DEFAULT_MODALITY, SEARCH_PHASE, STAGE_RECORD, selection_key
from study.train.config import TrainConfig
from study.train.pipeline import run_pipeline
from study.train.ray_setup import Scaling

TRAIN_SECTION, STAGE_SECTION, RUN_SECTION = "train_loop_config", "stage", "run"


CONFIRM_KEY = "confirm"  # the confirm phase's Tune config: {CONFIRM_KEY: one of its grid of full trial configs}


def tune_constants(base: TrainConfig, stage_sources: dict, scaling: Scaling, storage: str, study: str,
                   faults: FaultHooks | None = None, arm: str = "", phase: str = SEARCH_PHASE,
                   stage_options: dict | None = None) -> dict:
    """The ``run`` section every trial of an arm and phase shares (plain values: Tune stores it with the study);
    ``stage_options`` are a fixed arm's pinned stage options (searched ones arrive in the ``stage`` section)."""
    return {RUN_SECTION: {"base": base.to_dict(), "stage_sources": dict(stage_sources), "scaling": scaling.__dict__,
                          "storage": storage, "study": study, "faults": (faults or FaultHooks()).to_dict(), "arm": arm,
                          "phase": phase, "stage_options": dict(stage_options or {})}}


def confirm_config(config: dict, seed: int, alignment_probe: bool = False) -> dict:
    """The confirmatory run of a configuration (a Tune config: a search trial's, or a fixed arm's) with training
    seed ``seed``: the same options, phase ``confirm``; with ``alignment_probe`` its evaluations also run the
    alignment probe (``TrainConfig.alignment_probe``), which search trials never do."""
    run = config[RUN_SECTION]
    base = {**run["base"], "seed": seed, **({"alignment_probe": True} if alignment_probe else {})}
    return {**config, RUN_SECTION: {**run, "base": base, "phase": CONFIRM_PHASE}}


@dataclass(frozen=True)
class TrialConfig:
    """One trial, typed: the effective training options (base merged with the searched ones), the stage options,
    how the run is spread and stored, and the searched values by their search-space names."""

    train: TrainConfig
    stage_options: dict  # searched stage options; "modality" always present
    stage_sources: dict  # the study's fixed stage data and vision tower
    scaling: Scaling
    storage: str
    study: str
    searched: dict = field(default_factory=dict)  # search-space name -> value, as Optuna drew it
    faults: FaultHooks = FaultHooks()
    arm: str = ""  # study.core.arms: the arm this trial belongs to
    phase: str = SEARCH_PHASE  # search or confirm

    @classmethod
    def from_tune(cls, config: dict) -> TrialConfig:
        """Parse a Tune trial's config (sections as in the module docstring); StudyError (from ``TrainConfig``)
        naming an unknown or invalid training option."""
        config = config.get(CONFIRM_KEY, config)
        run = config[RUN_SECTION]
        searched_train, searched_stage = dict(config.get(TRAIN_SECTION, {})), dict(config.get(STAGE_SECTION, {}))
        return cls(train=TrainConfig.from_dict({**run["base"], **searched_train}),
                   stage_options={"modality": DEFAULT_MODALITY, **run.get("stage_options", {}), **searched_stage},
                   stage_sources=dict(run["stage_sources"]), scaling=Scaling(**run["scaling"]),
                   storage=run["storage"], study=run["study"], searched={**searched_train, **searched_stage},
                   faults=FaultHooks.from_dict(run.get("faults")), arm=run.get("arm", ""),
                   phase=run.get("phase", SEARCH_PHASE))

    @property
    def checkpoint_metric(self) -> str:
        """The metric Ray Train keeps checkpoints by: the task's English dev score (``protocol.selection_key``)."""
        from study.data.tasks import get_task

        return selection_key(get_task(self.train.task).metric)

    @property
    def modality(self) -> str:
        """The trial's intermediate stage: ``none``, ``text`` or ``multimodal``."""
        return self.stage_options["modality"]

    def stage_config(self):
        """The trial's ``intermediate.StageConfig`` (None without a stage)."""
        if self.modality == DEFAULT_MODALITY:
            return None
        from study.train.stage import stage_config

        return stage_config(self.train.model, self.train.seed, self.stage_options, self.stage_sources)

    def params(self) -> dict:
        """The values a trial's MLflow run records: every effective training option, the stage options and the
        scaling (as ``scaling.<field>``)."""
        from study.data.augment import synonym_source_label

        return {**self.train.to_dict(), **self.stage_options,
                "synonyms_source": synonym_source_label(self.train.synonyms),
                **{f"scaling.{k}": v for k, v in self.scaling.__dict__.items()}}


def train_driver_fn(config: dict) -> None:
    """The Tune trial: the intermediate stage when the trial's modality asks for one (cached across trials,
    recorded in the outbox), then one Ray Train fine-tuning run named by the trial id (stable across restarts)
    whose reports reach Tune through ``TuneReportCallback``."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from study.track.outbox import outbox_location, put
    from study.train.worker import WorkerConfig

    trial = TrialConfig.from_tune(config)
    trial_id = ray.tune.get_context().get_trial_id()
    outbox = outbox_location(trial.storage, trial.study, trial_id)  # what the MLflow callback will log

    def record_stage(result) -> None:  # the MLflow callback logs it when the trial ends
        put(outbox, STAGE_RECORD, result.to_json())

    run_pipeline(WorkerConfig(trial.train, outbox, trial.faults), trial.stage_config(), trial.scaling, trial.storage,
                 name=f"{trial.study}-trial-{trial_id}",  # stable across restarts: no timestamps
                 checkpoint_metric=trial.checkpoint_metric, callbacks=[TuneReportCallback()], on_stage=record_stage)

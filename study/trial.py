"""The Tune trial's config: nested as Ray's Train-in-Tune guide nests it, built by ``tune_constants`` and the search
space, read back by one ``TrialConfig.from_tune``.

Sections: ``train_loop_config`` holds the searched ``TrainConfig`` options, ``stage`` the searched intermediate-stage
options (``modality`` among them), ``run`` what every trial of a study shares (the preset's ``TrainConfig``, the
stage's data and vision tower, scaling, storage, study name, fault hooks). Optuna names a searched parameter
``<section>/<name>`` and Ray's ``OptunaSearch`` unflattens on ``/``, so the searched values arrive in their section.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from study.config import TrainConfig
from study.fault_hooks import FaultHooks
from study.protocol import DEFAULT_MODALITY
from study.ray_setup import Scaling

TRAIN_SECTION, STAGE_SECTION, RUN_SECTION = "train_loop_config", "stage", "run"


def tune_constants(base: TrainConfig, stage_sources: dict, scaling: Scaling, storage: str, study: str,
                   faults: FaultHooks = FaultHooks()) -> dict:
    """The ``run`` section every trial of a study shares (plain values: Tune stores it with the study)."""
    return {RUN_SECTION: {"base": base.to_dict(), "stage_sources": dict(stage_sources), "scaling": scaling.__dict__,
                          "storage": storage, "study": study, "faults": faults.to_dict()}}


def with_seed(config: dict, seed) -> dict:
    """A Tune config like ``config`` whose training seed is ``seed`` (a value or a ``grid_search`` over seeds)."""
    run = config[RUN_SECTION]
    return {**config, RUN_SECTION: {**run, "base": {**run["base"], "seed": seed}}}


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

    @classmethod
    def from_tune(cls, config: dict) -> TrialConfig:
        """Parse a Tune trial's config (sections as in the module docstring); StudyError (from ``TrainConfig``)
        naming an unknown or invalid training option."""
        run = config[RUN_SECTION]
        searched_train, searched_stage = dict(config.get(TRAIN_SECTION, {})), dict(config.get(STAGE_SECTION, {}))
        return cls(train=TrainConfig.from_dict({**run["base"], **searched_train}),
                   stage_options={"modality": DEFAULT_MODALITY, **searched_stage},
                   stage_sources=dict(run["stage_sources"]), scaling=Scaling(**run["scaling"]),
                   storage=run["storage"], study=run["study"], searched={**searched_train, **searched_stage},
                   faults=FaultHooks.from_dict(run.get("faults")))

    @property
    def modality(self) -> str:
        """The trial's intermediate stage: ``none``, ``text`` or ``multimodal``."""
        return self.stage_options["modality"]

    def stage_config(self):
        """The trial's ``intermediate.StageConfig`` (None without a stage)."""
        if self.modality == DEFAULT_MODALITY:
            return None
        from study.intermediate import stage_config

        return stage_config(self.train.model, self.train.seed, self.stage_options, self.stage_sources)

    def params(self) -> dict:
        """The values a trial's MLflow run records: every effective training option, the stage options and the
        scaling (as ``scaling.<field>``)."""
        return {**self.train.to_dict(), **self.stage_options,
                **{f"scaling.{k}": v for k, v in self.scaling.__dict__.items()}}

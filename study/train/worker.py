"""The fine-tuning run as Ray Train runs it: ``train_fn_per_worker`` (one DDP rank) parses its ``WorkerConfig`` once,
builds a ``FineTuneRun``, restores Ray's latest checkpoint and reports every evaluation to Ray with its checkpoint."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from study.core.faults import FaultHooks
from study.train.config import TrainConfig
from study.train.finetune import FineTuneRun


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a fine-tuning worker reads, parsed once: its training options, where rank 0 leaves the
    per-example scores and probe embeddings for the study's MLflow callback (None outside a study), and the fault
    hooks the fault-tolerance tests inject (none otherwise). Crosses Ray's process boundary as ``to_dict``."""

    train: TrainConfig
    outbox: str | None = None
    faults: FaultHooks = field(default_factory=FaultHooks)

    def to_dict(self) -> dict:
        return {"train": self.train.to_dict(), "outbox": self.outbox, "faults": self.faults.to_dict()}

    @classmethod
    def from_dict(cls, values: dict) -> WorkerConfig:
        return cls(TrainConfig.from_dict(values["train"]), values.get("outbox"), FaultHooks.from_dict(values["faults"]))


def train_fn_per_worker(train_loop_config: dict) -> None:
    """Ray Train's per-worker function: one DDP rank of a fine-tuning run on ``train_loop_config`` (a
    ``WorkerConfig.to_dict``), restored from Ray's latest checkpoint when there is one; reports English dev and test
    scores with a checkpoint at every evaluation."""
    started = time.time()  # when the worker group began running user code: start-up ends here
    import ray.train
    import ray.train.torch

    job = WorkerConfig.from_dict(train_loop_config)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    run = FineTuneRun(job.train, rank, world, ray.train.torch.get_device(), run_name=context.get_experiment_name(),
                      started=started, outbox=job.outbox, faults=job.faults)
    run.restore(ray.train.get_checkpoint())
    run.train(report=_ray_report(run))


def _ray_report(run: FineTuneRun):
    import ray.train

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        # which node trained it: on a cluster, where a trial ran and where it went after a node was lost
        ray.train.report({**metrics, "node_id": ray.get_runtime_context().get_node_id()}, checkpoint=checkpoint)

    return report

"""A fine-tuning run's checkpoint: the model as a plain ``transformers`` directory (what ``study evaluate`` and the
next stage read), its training state (optimizer, schedule, position in the data) so that a restored run continues
with the same batches, and the selected evaluation's per-example units (what the report resamples)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from study.core.protocol import EXAMPLES_ARTIFACT
from study.train.throughput import new_counts

TRAIN_STATE = "train_state.pt"
TIME_PHASES = ("train", "eval", "checkpoint")  # reported as time/<phase>_s (the study's time profile)
MODEL_DIR = "model"


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches of this epoch already consumed
    window: dict = field(default_factory=lambda: {"n": 0})  # loss sums since the last report
    train_seconds: float = 0.0  # time in training steps since the last report (evaluation excluded)
    train_examples: int = 0
    counts: dict = field(default_factory=new_counts)  # real tokens since the last report (throughput, MFU)
    best_dev: float = float("-inf")  # English dev of the best evaluation so far (its examples are in the outbox)
    # cumulative seconds over the whole run (restarts included): training steps, evaluation, checkpoints written
    # and handed to Ray (the last one's hand-over is not in the last report)
    seconds: dict = field(default_factory=lambda: dict.fromkeys(TIME_PHASES, 0.0))


def save_train_state(directory: str | Path, model, tokenizer, spec, optimizer, scheduler, progress: Progress,
                     examples: bytes, *, task: str, init_checkpoint, init_task, seed: int) -> None:
    """Write ``model/`` (a full-vocabulary transformers directory, whatever was trained), ``train_state.pt`` and the
    evaluation's per-example units into ``directory``."""
    from study.models.registry import save_model_dir
    from study.vme.trim import untrimmed

    with untrimmed(model):
        save_model_dir(model, tokenizer, spec, Path(directory) / MODEL_DIR, task=task,
                       init_checkpoint=init_checkpoint, init_task=init_task)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "progress": asdict(progress),
                "rng": {"seed": seed, "derivation": "torch.manual_seed(hash of seed, rank, epoch, batch)"}},
               Path(directory) / TRAIN_STATE)
    (Path(directory) / EXAMPLES_ARTIFACT).write_bytes(examples)


def load_train_state(directory: str | Path, model, optimizer, scheduler, device) -> Progress:
    """Load what ``save_train_state`` wrote into the model, optimizer and schedule; the run's ``Progress``."""
    state = torch.load(Path(directory) / TRAIN_STATE, map_location=device, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return Progress(**state["progress"])

"""A fine-tuning run's budget in optimizer steps and evaluations: the one implementation of these rules, which the
worker trains by (``study.train.finetune``) and the study plan counts with (``study.tune.plan``). No Ray, no I/O."""

from __future__ import annotations

import math

from study.core.errors import StudyError


def micro_batches(pairs: int, batch_size: int, world: int) -> int:
    """Micro-batches per epoch on each rank: ``DistributedSampler`` gives each of ``world`` ranks ``ceil(pairs /
    world)`` pairs (``floor`` with more than one rank, where it drops the remainder so ranks stay in step), and the
    ``DataLoader`` cuts them into batches, the last one short."""
    per_rank = pairs // world if world > 1 else pairs
    return math.ceil(per_rank / batch_size)


def steps_per_epoch(pairs: int, batch_size: int, grad_accum: int, world: int) -> int:
    """Optimizer steps per epoch: whole groups of ``grad_accum`` micro-batches."""
    return micro_batches(pairs, batch_size, world) // grad_accum


def total_steps(pairs: int, batch_size: int, grad_accum: int, world: int, epochs: int,
                max_steps: int | None) -> int:
    """A run's optimizer steps: ``epochs`` epochs, capped at ``max_steps``. StudyError when the pairs give no whole
    optimizer step."""
    per_epoch = steps_per_epoch(pairs, batch_size, grad_accum, world)
    if per_epoch == 0:
        raise StudyError(f"{pairs} training pairs give no full optimizer step with batch {batch_size} x {world} "
                         f"workers x grad_accum {grad_accum}")
    total = per_epoch * epochs
    return min(total, max_steps) if max_steps else total


def evaluations(steps: int, per_epoch: int, eval_every: int) -> int:
    """Evaluations a run of ``steps`` optimizer steps makes: every ``eval_every`` steps and at the last step; with
    ``eval_every`` 0, at the end of every epoch it starts (the last one possibly cut short by ``max_steps``)."""
    if eval_every:
        return steps // eval_every + (1 if steps % eval_every else 0)
    return math.ceil(steps / per_epoch)

"""The dual encoder of ``study dual-encoder``: fine-tune the dual encoder XTREME-R scores LAReQA or Mewsli-X with, on
Ray Train, from English data only: SQuAD v1.1 train (LAReQA) or English Wikipedia mention-entity pairs (Mewsli-X).

The protocol (``study.data.tasks.DUAL_ENCODER``, ``study.data.retrieval_pairs``): one encoder embeds both sides as its
normalised pooled [CLS] output; each query should pick its own candidate among the batch's (``in_batch_softmax``,
a learnt scale starting at 100); AdamW without weight decay or warm-up, a linear decay, gradients clipped at 1. The
run writes a model directory that ``study evaluate --checkpoint DIR --task lareqa|mewslix`` scores under
XTREME-R's protocol. Each worker's batch holds its own negatives (as XTREME's script, whose negatives are each
micro-batch's); an incomplete last batch is dropped, so every step sees the same number of negatives.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from study.core.errors import StudyError

LOGIT_SCALE_INIT = 100.0  # XTREME's BertForRetrieval
MAX_GRAD_NORM = 1.0  # run_retrieval_qa.py / run_retrieval_el.py default
RECORD = "study_dual_encoder.json"  # in the run's folder: its options, its pair count, and where its model went
MODEL_DIR = "model"
TASKS = ("lareqa", "mewslix")


@dataclass(frozen=True)
class DualEncoderConfig:
    """One dual-encoder fine-tuning run (defaults: the task's ``DualEncoderPreset``)."""

    model: str
    task: str
    lr: float
    epochs: int
    batch_size: int  # per worker: the rows that are each other's negatives
    grad_accum: int
    query_max_length: int
    candidate_max_length: int
    seed: int = 0
    max_steps: int | None = None
    log_every: int = 50  # optimizer steps between progress lines


# --- data on the driver ---------------------------------------------------------------------------------------


def training_pairs(task: str, data_dir: str | None, limit: int | None, seed: int):
    """The English ``TrainingPairs`` of ``task`` (all, or a seeded subset of ``limit`` source examples), from
    ``data_dir`` (the README's --data-dir layout) or the hub. StudyError when none is left."""
    from study.data.retrieval_pairs import mewslix_pairs, sentence_splitter, squad_pairs
    from study.data.sources import load_split, subsample
    from study.data.tasks import get_task

    if task == "lareqa":  # SQuAD v1.1 train: the training split of the SQuAD-trained QA tasks
        pairs = squad_pairs(subsample(load_split(get_task("xquad"), "train", "en", data_dir), limit, seed),
                            sentence_splitter())
    else:
        rows = subsample(load_split(get_task("mewslix"), "train", "en", data_dir), limit, seed)
        pairs = mewslix_pairs(rows, f"{task} training pairs")
    if not pairs.queries:
        raise StudyError(f"{task}: no training pair could be built from {pairs.source} ({pairs.skipped} skipped)")
    return pairs


# --- [1] Ray Train worker code --------------------------------------------------------------------------------


def _dual_encoder_module(encoder):
    """The encoder and the learnt logit scale as one module (so DDP averages the scale's gradient too); calling
    it on (query inputs, candidate inputs) returns ``in_batch_softmax``."""
    import torch

    from study.vme.engine import pooled_cls
    from study.vme.objective import in_batch_softmax

    class DualEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.logit_scale = torch.nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

        def forward(self, queries: dict, candidates: dict):
            return in_batch_softmax(pooled_cls(self.encoder(**queries)), pooled_cls(self.encoder(**candidates)),
                                    self.logit_scale)

    return DualEncoder()


def _collate(pad_id: int):
    """Batches of (query features, candidate features) padded to each side's longest row."""
    import torch

    from study.data.pairs import _pad

    def pad(rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        return {key: torch.tensor([_pad(r[key], width, pad_id if key == "input_ids" else 0) for r in rows])
                for key in rows[0]}

    def collate(items):
        return pad([q for q, _ in items]), pad([c for _, c in items])
    return collate


def _rows(encoded) -> list[dict]:
    """A tokenizer's batch output (field -> one value per text) as one dict of fields per text."""
    return [dict(zip(encoded, values, strict=True)) for values in zip(*encoded.values(), strict=True)]


def train_fn_per_worker(config: dict) -> None:
    """One DDP rank: tokenise the pairs, train ``in_batch_softmax`` for the configured steps (progress reported
    every ``log_every`` steps), then rank 0 reports the model directory as the run's checkpoint."""
    import tempfile

    import ray.train
    import ray.train.torch
    import torch
    from transformers import get_linear_schedule_with_warmup

    from study.models.registry import get_spec, load_model, load_tokenizer, save_model_dir

    cfg = DualEncoderConfig(**config["cfg"])
    queries, candidates = config["pairs"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    spec = get_spec(cfg.model)
    tokenizer = load_tokenizer(spec)
    features = list(zip(_rows(tokenizer(queries, truncation=True, max_length=cfg.query_max_length)),
                        _rows(tokenizer(candidates, truncation=True, max_length=cfg.candidate_max_length)),
                        strict=True))  # (query, candidate) pairs: one of each per training pair
    torch.manual_seed(cfg.seed)
    module = _dual_encoder_module(load_model(spec, "base")).to(device)
    ddp = ray.train.torch.prepare_model(module, move_to_device=False) if world > 1 else module
    sampler = torch.utils.data.DistributedSampler(features, num_replicas=world, rank=rank, shuffle=True,
                                                  seed=cfg.seed, drop_last=world > 1)
    loader = torch.utils.data.DataLoader(features, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                                         collate_fn=_collate(tokenizer.pad_token_id))
    per_epoch = len(loader) // cfg.grad_accum
    if per_epoch == 0:
        raise StudyError(f"{len(features)} training pairs give no full step of batch {cfg.batch_size} x "
                         f"{world} workers x grad_accum {cfg.grad_accum}")
    total = min(per_epoch * cfg.epochs, cfg.max_steps or per_epoch * cfg.epochs)
    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=0.0, eps=1e-8)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, total)
    step, window, started = 0, [], time.perf_counter()
    module.train()
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        for micro, (query_batch, candidate_batch) in enumerate(loader):
            if step == total:
                break
            loss = ddp({k: v.to(device) for k, v in query_batch.items()},
                       {k: v.to(device) for k, v in candidate_batch.items()}) / cfg.grad_accum
            if not math.isfinite(loss.item()):
                raise StudyError(f"the loss became non-finite ({loss.item() * cfg.grad_accum}) at step {step + 1}: "
                                 f"lower --lr (now {cfg.lr})")
            loss.backward()
            window.append(loss.item() * cfg.grad_accum)
            if (micro + 1) % cfg.grad_accum:
                continue
            torch.nn.utils.clip_grad_norm_(module.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % cfg.log_every == 0 or step == total:
                metrics = {"step": step, "total_steps": total, "loss": sum(window) / len(window),
                           "logit_scale": module.logit_scale.item(),
                           "seconds_per_step": (time.perf_counter() - started) / step}
                window = []
                if rank == 0:
                    print(f"[dual-encoder] step {step}/{total}: loss {metrics['loss']:.4f}, scale "
                          f"{metrics['logit_scale']:.2f}, {metrics['seconds_per_step']:.2f} s/step",
                          file=sys.stderr, flush=True)
                if step < total:
                    ray.train.report(metrics)
    with tempfile.TemporaryDirectory() as directory:
        if rank == 0:
            save_model_dir(module.encoder, tokenizer, spec, Path(directory) / MODEL_DIR, task=cfg.task,
                           dual_encoder={"pooling": "pooled [CLS], L2-normalised",
                                         "logit_scale": module.logit_scale.item(), **asdict(cfg)})
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory) if rank == 0 else None)



"""``python -m study.dual_encoder``: fine-tune the dual encoder XTREME-R scores LAReQA or Mewsli-X with, on Ray
Train, from English data only: SQuAD v1.1 train (LAReQA) or English Wikipedia mention-entity pairs (Mewsli-X).

The protocol (``study.tasks.DUAL_ENCODER``, ``study.data.dual_encoder``): one encoder embeds both sides as its
normalised pooled [CLS] output; each query should pick its own candidate among the batch's (``in_batch_softmax``,
a learnt scale starting at 100); AdamW without weight decay or warm-up, a linear decay, gradients clipped at 1. The
run writes a model directory that ``python -m study.evaluate --checkpoint DIR --task lareqa|mewslix`` scores under
XTREME-R's protocol. Each worker's batch holds its own negatives (as XTREME's script, whose negatives are each
micro-batch's); an incomplete last batch is dropped, so every step sees the same number of negatives.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from study.errors import StudyError, run_cli

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
    from study.data.dual_encoder import mewslix_pairs, sentence_splitter, squad_pairs
    from study.data.sources import load_split, subsample
    from study.tasks import get_task

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

    from study.engine import pooled_cls
    from study.objective import in_batch_softmax

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

    from study.data.vme import _pad

    def pad(rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        return {key: torch.tensor([_pad(r[key], width, pad_id if key == "input_ids" else 0) for r in rows])
                for key in rows[0]}

    def collate(items):
        return pad([q for q, _ in items]), pad([c for _, c in items])
    return collate


def train_fn_per_worker(config: dict) -> None:
    """One DDP rank: tokenise the pairs, train ``in_batch_softmax`` for the configured steps (progress reported
    every ``log_every`` steps), then rank 0 reports the model directory as the run's checkpoint."""
    import tempfile

    import ray.train
    import ray.train.torch
    import torch
    from transformers import get_linear_schedule_with_warmup

    from study.models import get_spec, load_model, load_tokenizer, save_model_dir
    from study.ray_setup import set_worker_threads

    cfg = DualEncoderConfig(**config["cfg"])
    queries, candidates = config["pairs"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    set_worker_threads()
    device = ray.train.torch.get_device()
    spec = get_spec(cfg.model)
    tokenizer = load_tokenizer(spec)
    features = list(zip(*(
        [dict(zip(encoded, values)) for values in zip(*encoded.values())]
        for encoded in (tokenizer(queries, truncation=True, max_length=cfg.query_max_length),
                        tokenizer(candidates, truncation=True, max_length=cfg.candidate_max_length)))))
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


# --- [2] the driver -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from study.ray_setup import add_scaling_flags

    parser = argparse.ArgumentParser(prog="python -m study.dual_encoder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="registry key (mbert, xlmr, ...) or a local model directory")
    parser.add_argument("--task", required=True, choices=TASKS, help="the retrieval task whose dual encoder to train")
    parser.add_argument("--data-dir", default=os.environ.get("STUDY_DATA_DIR"),
                        help="directory with the original files: squad/train-v1.1.json (lareqa), "
                        "mewslix/wikipedia_pairs-train.jsonl (mewslix) (default $STUDY_DATA_DIR; else the hub)")
    preset = "default: XTREME-R's script setting for the task (study.tasks.DUAL_ENCODER)"
    parser.add_argument("--lr", type=float, help=f"learning rate ({preset})")
    parser.add_argument("--epochs", type=int, help=f"passes over the pairs ({preset})")
    parser.add_argument("--batch-size", type=int, help=f"pairs per worker per micro-batch, each other's negatives "
                        f"({preset})")
    parser.add_argument("--grad-accum", type=int, help=f"micro-batches per optimizer step ({preset})")
    parser.add_argument("--query-max-length", type=int, help=f"tokens per query ({preset})")
    parser.add_argument("--candidate-max-length", type=int, help=f"tokens per candidate ({preset})")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (default: all epochs)")
    parser.add_argument("--max-train-examples", type=int,
                        help="a seeded subset of this many source examples (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="data order and initialisation seed (default: 0)")
    parser.add_argument("--log-every", type=int, default=50, help="optimizer steps between progress lines "
                        "(default: 50)")
    parser.add_argument("--storage", default=os.environ.get("STUDY_STORAGE", str(Path("runs").resolve())),
                        help="where the run's folder goes (default $STUDY_STORAGE or ./runs)")
    parser.add_argument("--name", help="run name (default: model-task-dual-encoder-seed-time); a new one per run")
    add_scaling_flags(parser)
    return parser


def config_from_args(args) -> DualEncoderConfig:
    """The run's config: the flags over the task's preset, each checked against the model before Ray starts."""
    from transformers import AutoConfig

    from study.models import get_spec, load_tokenizer, model_path, model_positions
    from study.tasks import dual_encoder_preset

    spec = get_spec(args.model)
    model_config = AutoConfig.from_pretrained(model_path(spec))
    preset = dual_encoder_preset(args.task, model_config.num_hidden_layers)
    chosen = {name: getattr(args, name) if getattr(args, name) is not None else getattr(preset, name)
              for name in ("lr", "epochs", "batch_size", "grad_accum", "query_max_length", "candidate_max_length")}
    cfg = DualEncoderConfig(model=args.model, task=args.task, seed=args.seed, max_steps=args.max_steps,
                            log_every=args.log_every, **chosen)
    shortest, positions = load_tokenizer(spec).num_special_tokens_to_add() + 1, model_positions(model_config)
    for flag, value in (("--query-max-length", cfg.query_max_length),
                        ("--candidate-max-length", cfg.candidate_max_length)):
        if not shortest <= value <= positions:
            raise StudyError(f"{flag} {value} is out of range: {shortest}..{positions} for {spec.key}")
    if cfg.batch_size < 2:
        raise StudyError(f"--batch-size {cfg.batch_size}: in-batch softmax needs at least 2 pairs per batch (the "
                         "other pairs are each pair's negatives)")
    for flag, value in (("--epochs", cfg.epochs), ("--grad-accum", cfg.grad_accum), ("--log-every", cfg.log_every),
                        ("--max-steps", cfg.max_steps), ("--max-train-examples", args.max_train_examples)):
        if value is not None and value < 1:
            raise StudyError(f"{flag} {value} is invalid: it must be at least 1")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise StudyError(f"--lr {cfg.lr} is invalid: it must be a finite number > 0")
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise StudyError(f"--data-dir {args.data_dir} is not a directory")
    return cfg


def main(argv=None) -> int:
    """Train one dual encoder and print where its model directory is and how to score it."""
    from study.ray_setup import Scaling, fit_or_fail, init_ray, torch_trainer

    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    scaling = Scaling.from_args(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = args.name or f"{Path(cfg.model).name}-{cfg.task}-dual-encoder-seed{cfg.seed}-{stamp}"
    folder = Path(args.storage) / name
    if (folder / RECORD).exists():
        raise StudyError(f"run {name!r} already exists ({folder / RECORD}): choose a new --name")
    try:  # an unusable --storage stops here, not after training
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StudyError(f"--storage {args.storage}: cannot create the run's folder ({err.strerror})") from None
    started = time.perf_counter()
    pairs = training_pairs(cfg.task, args.data_dir, args.max_train_examples, cfg.seed)
    if len(pairs.queries) // (cfg.batch_size * scaling.workers) < cfg.grad_accum:
        raise StudyError(f"{len(pairs.queries)} training pairs give no full step of batch {cfg.batch_size} x "
                         f"{scaling.workers} workers x grad_accum {cfg.grad_accum}: lower --batch-size or --grad-accum")
    skipped = (f" ({pairs.skipped} examples without one: answer in no sentence or not where the file says)"
               if pairs.skipped else "")
    print(f"[dual-encoder] {cfg.task}: {len(pairs.queries)} training pairs from {pairs.source}{skipped}; "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    init_ray()
    trainer = torch_trainer(train_fn_per_worker, {"cfg": asdict(cfg), "pairs": (pairs.queries, pairs.candidates)},
                            scaling, args.storage, name)
    result = fit_or_fail(trainer.fit, "dual-encoder training")
    model_dir = Path(result.checkpoint.path) / MODEL_DIR
    (folder / RECORD).write_text(json.dumps({"config": asdict(cfg), "pairs": len(pairs.queries),
                                             "skipped": pairs.skipped, "source": pairs.source,
                                             "final": result.metrics, "model_dir": str(model_dir)}, indent=1))
    print(f"\ntrained {result.metrics['step']} steps, final loss {result.metrics['loss']:.4f}, "
          f"{time.perf_counter() - started:.0f} s")
    print(f"model: {model_dir}")
    print(f"score it: python -m study.evaluate --checkpoint {model_dir} --task {cfg.task}")
    return 0


if __name__ == "__main__":
    run_cli(main)

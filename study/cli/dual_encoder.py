"""``study dual-encoder``: fine-tune the dual encoder XTREME-R scores LAReQA or Mewsli-X with, on Ray Train, from
English data only: SQuAD v1.1 train (LAReQA) or English Wikipedia mention-entity pairs (Mewsli-X).

The protocol is ``study.train.dual_encoder``'s; the run writes a model directory that ``study evaluate --checkpoint
DIR --task lareqa|mewslix`` scores under XTREME-R's protocol.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

from study.cli.common import add_data_dir_flag, add_storage_flag
from study.core.errors import StudyError
from study.train.dual_encoder import MODEL_DIR, RECORD, TASKS, DualEncoderConfig, train_fn_per_worker, training_pairs


def build_parser() -> argparse.ArgumentParser:
    from study.train.ray_setup import add_scaling_flags

    parser = argparse.ArgumentParser(prog="study dual-encoder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="registry key (mbert, xlmr, ...) or a local model directory")
    parser.add_argument("--task", required=True, choices=TASKS, help="the retrieval task whose dual encoder to train")
    add_data_dir_flag(parser, "directory with the original files: squad/train-v1.1.json (lareqa), "
                      "mewslix/wikipedia_pairs-train.jsonl (mewslix)")
    preset = "default: XTREME-R's script setting for the task (study.data.tasks.DUAL_ENCODER)"
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
    add_storage_flag(parser, "where the run's folder goes")
    parser.add_argument("--name", help="run name (default: model-task-dual-encoder-seed-time); a new one per run")
    add_scaling_flags(parser)
    return parser


def config_from_args(args) -> DualEncoderConfig:
    """The run's config: the flags over the task's preset, each checked against the model before Ray starts."""
    from transformers import AutoConfig

    from study.data.tasks import dual_encoder_preset
    from study.models.registry import get_spec, load_tokenizer, model_path, model_positions

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
    from study.train.ray_setup import Scaling, fit_or_fail, init_ray, torch_trainer

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
    print(f"score it: study evaluate --checkpoint {model_dir} --task {cfg.task}")
    return 0

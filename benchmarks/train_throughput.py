"""Training-loop throughput: the same VME loop in plain PyTorch (no Ray) and under Ray Train with 1 and 2 workers.

Prints examples/s measured inside the loop (evaluation excluded) and wall time including start-up, for each
setting in one run, and the Ray overhead ratios. It asserts nothing: machines are noisy, compare within a run.

    python benchmarks/train_throughput.py                       # e5-small, pocket-topic, 8 steps per setting
    python benchmarks/train_throughput.py --model tiny --steps 4  # seconds, for CI
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from study.core.protocol import selection_key
from study.train.config import TrainConfig
from study.train.finetune import FineTuneRun
from study.train.pipeline import build_trainer
from study.train.ray_setup import Scaling, init_ray
from study.train.worker import WorkerConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="e5-small")
    parser.add_argument("--task", default="pocket-topic")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16, help="per worker")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    cfg = TrainConfig(model=args.model, task=args.task, max_steps=args.steps, batch_size=args.batch_size,
                      max_train_examples=args.batch_size * 2 * (args.steps + 1), languages=("en",),
                      max_eval_examples=16, log_every=max(args.steps, 1))
    rows = []

    torch.set_num_threads(cores)
    started = time.perf_counter()
    reports = []
    FineTuneRun(cfg, 0, 1, torch.device("cpu")).train(lambda metrics, _: reports.append(metrics))
    rows.append(("plain PyTorch, 1 process", reports[-1]["train/examples_per_s"], time.perf_counter() - started))

    init_ray(num_cpus=cores)
    storage = tempfile.mkdtemp(prefix="train-bench-")
    for workers in (1, 2):
        started = time.perf_counter()
        result = build_trainer(WorkerConfig(cfg), Scaling(workers=workers, cpus_per_worker=cores / (2 * workers)),
                               storage, f"bench-{workers}", checkpoint_metric=selection_key("accuracy")).fit()
        if result.error:
            raise SystemExit(f"Ray run with {workers} workers failed: {result.error}")
        rows.append((f"Ray Train, {workers} worker(s)", result.metrics["train/examples_per_s"],
                     time.perf_counter() - started))

    print(f"model {args.model}, task {args.task}, {args.steps} optimizer steps, batch {args.batch_size}/worker, "
          f"{cores} cores")
    print(f"{'setting':<28}{'examples/s':>12}{'wall s':>9}")
    for name, rate, wall in rows:
        print(f"{name:<28}{rate:>12.2f}{wall:>9.1f}")
    plain, one, two = (r[1] for r in rows)
    print(f"Ray overhead (plain / Ray 1 worker examples/s): {plain / one:.2f}x")
    print(f"2 workers / 1 worker examples/s:                 {two / one:.2f}x")


if __name__ == "__main__":
    main()

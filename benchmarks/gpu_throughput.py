"""Training throughput and MFU of this project's training step, on whatever device is present, written as rows of
the study plan's throughput table (``study/core/throughput.json``, ``study.core.throughput.Measurement``).

Two kinds of rows:

* shape rows: the mBERT-base and XLM-R-base *shapes* (``ModelSpec.shape``: random-init weights from their configs —
  compute is what is measured, so no hub is needed), random token ids at a fixed length (every row ``--lengths``
  real tokens), the step ``FineTuneRun`` runs — plain (cross-entropy on x) and VME (one pass over [x; x~], one
  captured attention layer, the authors' loss weights), vocabulary trimmed to the ids used (``--vocab-used``), fused
  AdamW, gradient clipping, bf16 autocast on a GPU that has it (and fp32) — for each batch size up to memory; and a
  forward-only evaluation row;
* task rows: the offline default's own run (``FineTuneRun`` on the task's English rows, the arms' options from the
  search space's preset) for a few steps, its training examples/s and its evaluation items/s.

MFU = analytic FLOPs (``study.core.flops``: 6 N per token + attention) / time / the card's dense peak
(``study.core.devices``); a CPU reports throughput only.

    python benchmarks/gpu_throughput.py --write                      # everything this device measures, into the table
    python benchmarks/gpu_throughput.py --models mbert --lengths 128 --batches 8 --steps 2   # a quick CPU row
    python benchmarks/gpu_throughput.py --smoke                      # tiny shapes, seconds (the test suite)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

from study.core.devices import CPU, match_gpu
from study.core.flops import mfu, sequences_per_example
from study.core.throughput import EVAL, FIXED, TABLE, row_key

ROOT = Path(__file__).resolve().parents[1]


def device_identity(device: torch.device) -> tuple:
    """(profile key, device name, its ``DeviceProfile`` or None, whether bf16 runs here) of the device."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        profile = match_gpu(name)
        return (profile.key if profile else name), name, profile, torch.cuda.is_bf16_supported()
    from study.tune.plan_table import cpu_name

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")  # a shared machine's figures vary
    return CPU, f"{cpu_name()}, {torch.get_num_threads()} torch threads, load average {load:.1f} at start", None, False


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def shape_model(key: str, device: torch.device, vocab_used: int, vme: bool):
    """A random-init sequence classifier of the registry shape ``key`` on ``device``, its vocabulary trimmed to the
    first ``vocab_used`` ids, fused AdamW, and the VME capture at layer 5 (or the last) when ``vme``."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from study.models.registry import get_spec
    from study.vme.capture import VMECapture
    from study.vme.engine import make_optimizer
    from study.vme.trim import trim_vocabulary

    shape = get_spec(key).shape
    config = AutoConfig.for_model(shape.model_type, **{k: v for k, v in vars(shape).items() if k != "model_type"},
                                  num_labels=3)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).to(device).train()
    trim_vocabulary(model, torch.arange(min(vocab_used, shape.vocab_size)))
    capture = VMECapture(model, min(5, shape.num_hidden_layers - 1)) if vme else None
    return shape, model, make_optimizer(model, 2e-5, head_lr=1e-3), capture


def random_batch(shape, batch: int, length: int, vocab_used: int, device: torch.device):
    """x, x~ (15 % of x's tokens replaced) and labels: every row ``length`` real tokens."""
    generator = torch.Generator().manual_seed(batch * 1000 + length)
    ids = torch.randint(5, min(vocab_used, shape.vocab_size), (batch, length), generator=generator)
    swap = torch.rand(batch, length, generator=generator) < 0.15
    ids_t = torch.where(swap, torch.randint(5, min(vocab_used, shape.vocab_size), (batch, length),
                                            generator=generator), ids)
    stream = lambda tokens: {"input_ids": tokens.to(device),  # noqa: E731
                             "attention_mask": torch.ones(batch, length, dtype=torch.long, device=device)}
    return stream(ids), stream(ids_t), torch.randint(0, 3, (batch,), generator=generator).to(device)


def time_steps(step, device, warmup: int, steps: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def training_step(model, optimizer, capture, objective: str, batch, autocast, weights):
    """The step ``FineTuneRun`` runs on a batch (x, x~, labels): loss, backward, clipping, AdamW, zeroed grads."""
    from study.vme.engine import head_logits, vme_forward
    from study.vme.objective import task_cross_entropy

    x, xt, labels = batch

    def step():
        with autocast:
            loss = (task_cross_entropy(head_logits(model(**x)), labels) if objective == "plain" else
                    vme_forward(model, capture, x, xt, labels, labels, weights).total)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def evaluation_step(model, x, autocast):
    """A forward pass with no gradient, as evaluation runs it."""

    def forward():
        with torch.inference_mode(), autocast:
            model(**x)
    return forward


def shape_rows(args, key: str, length: int, dtype: str, device: torch.device, identity) -> list[dict]:
    """Training rows (plain, VME) for each batch size up to memory, and one evaluation row, of a shape."""
    from study.vme.objective import VMEWeights

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    weights = VMEWeights(task=1.0, robust=1.0, alpha=0.1, beta=1.0)  # the authors' point (study.core.arms)
    rows = []
    # fp32 on a GPU is the reference point, not what runs (FineTuneRun trains in bf16 where it can): small batches
    batches = [b for b in args.batches if b <= 32] if dtype == "fp32" and device.type == "cuda" else args.batches
    for objective in ("plain", "vme"):
        shape, model, optimizer, capture = shape_model(key, device, args.vocab_used, objective == "vme")
        for batch in batches:
            step = training_step(model, optimizer, capture, objective,
                                 random_batch(shape, batch, length, args.vocab_used, device), autocast, weights)
            try:
                seconds = time_steps(step, device, args.warmup, args.steps)
            except torch.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                print(f"  {key} {objective} {dtype} {length}: batch {batch} does not fit; larger ones skipped")
                break
            rows.append(row(identity, key, objective, dtype, length, FIXED, batch, batch / seconds, length,
                            sequences_per_example(objective) * shape.sequence_flops(length), "shape", args.steps))
        if objective == "plain":  # evaluation: the same model, forward only
            model.eval()
            batch = max(batches)
            x = random_batch(shape, batch, length, args.vocab_used, device)[0]
            seconds = time_steps(evaluation_step(model, x, autocast), device, args.warmup, args.steps)
            rows.append(row(identity, key, EVAL, dtype, length, FIXED, batch, batch / seconds, length,
                            shape.sequence_flops(length, train=False), "shape", args.steps))
        model = optimizer = capture = None  # freed before the next model is built
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def task_rows(args, key: str, task: str, device: torch.device, identity) -> list[dict]:
    """The offline default's arms on their task, as ``FineTuneRun`` trains them (the search space's smoke preset and
    each arm's options): training examples/s over ``--task-steps`` steps after as many warm-up steps (the
    evaluation between them resets the worker's counters), and the plain run's evaluation items/s (its second
    evaluation: English dev and every language's test set, ``--eval-examples`` each, tokenised already)."""
    from study.core.arms import ARMS
    from study.data.tasks import get_task
    from study.models.registry import get_spec
    from study.train.config import TrainConfig
    from study.train.finetune import FineTuneRun
    from study.tune.plan import evaluation_items
    from study.tune.search_space import load_search_space
    from study.tune.settings import SPACES_DIR

    preset = load_search_space(SPACES_DIR / f"{key}.yaml").preset("smoke", task)
    rows = []
    for arm, objective in (("plain", "plain"), ("vme-reference", "vme")):
        # the VME run's evaluations are not measured: one language, a few items
        evaluation = {"max_eval_examples": args.eval_examples} if objective == "plain" else \
            {"max_eval_examples": 4, "languages": ("de",)}
        cfg = TrainConfig.from_dict({**preset, **ARMS[arm].fixed, "model": key, "task": task, "epochs": 1,
                                     "max_steps": 2 * args.task_steps, "eval_every": args.task_steps,
                                     "alignment_probe": False, **evaluation})
        reports: list[dict] = []
        FineTuneRun(cfg, 0, 1, device).train(lambda metrics, _, out=reports: out.append(metrics))
        first, last = reports[0], reports[-1]  # counters reset at each evaluation: the last covers the last steps
        steps, shape = last["step"] - first["step"], get_spec(key).shape
        mean_tokens = last["train/tokens_per_s"] / last["train/sequences_per_s"]
        dtype = "bf16" if identity[3] else "fp32"
        rows.append(row(identity, key, objective, dtype, cfg.max_length, task, cfg.batch_size,
                        last["train/examples_per_s"], mean_tokens,
                        sequences_per_example(objective) * shape.sequence_flops(mean_tokens), "task", steps))
        if objective == "plain":
            items = evaluation_items(cfg, get_task(task))
            rows.append(row(identity, key, EVAL, dtype, cfg.max_length, task, 0, items / last["eval_seconds"],
                            mean_tokens, shape.sequence_flops(mean_tokens, train=False), "task", 1))
            print(f"  (first evaluation, tokenising: {items / first['eval_seconds']:.2f} items/s)", flush=True)
    return rows


def row(identity, key, objective, dtype, length, lengths, batch, per_s, mean_tokens, flops_per_example, kind,
        steps) -> dict:
    """A table row (``Measurement``'s fields), printed as it is made."""
    profile_key, name, profile, _ = identity
    sequences = 1 if objective == EVAL else sequences_per_example(objective)
    peak = profile.peak(dtype) if profile else None
    utilisation = mfu(flops_per_example * per_s, 1.0, peak)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip() or "unknown"
    out = {"device": profile_key, "device_name": name, "model": key, "objective": objective, "dtype": dtype,
           "seq_len": length, "lengths": lengths, "batch_size": batch, "per_s": round(per_s, 4),
           "tokens_per_s": round(per_s * sequences * mean_tokens, 2), "mean_tokens": round(mean_tokens, 2),
           "flops_per_example": flops_per_example, "mfu": utilisation and round(utilisation, 4),
           "source": f"benchmarks/gpu_throughput.py ({kind} row, {steps} timed steps), {date.today()}, "
                     f"commit {commit}, torch {torch.__version__}"}
    print(f"  {key:<9} {objective:<6} {dtype:<5} {length:>4} {lengths:<13} batch {batch:>4}: {per_s:10.2f}/s"
          + (f"  MFU {utilisation:.1%}" if utilisation is not None else ""), flush=True)
    return out


def merge_into_table(rows: list[dict], path: Path = TABLE) -> None:
    """Replace the table's rows of the same key (``row_key``) with ``rows``; keep the rest."""
    data = json.loads(path.read_text())
    keys = {row_key(r) for r in rows}
    data["rows"] = [r for r in data["rows"] if row_key(r) not in keys] + rows
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--models", default="mbert,xlmr", help="registry keys whose shapes to measure")
    parser.add_argument("--lengths", default="128,256" if cuda else "128")
    parser.add_argument("--batches", default="8,16,32,64,128,256" if cuda else "8", help="micro-batch sizes, up to "
                        "memory (the paper preset's is 8)")
    parser.add_argument("--dtypes", default="bf16,fp32" if cuda else "fp32")
    parser.add_argument("--steps", type=int, default=10 if cuda else 2, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3 if cuda else 1)
    parser.add_argument("--vocab-used", type=int, default=30000, help="distinct token ids (the trimmed vocabulary)")
    parser.add_argument("--task-models", default="e5-small", help="models run on their task (empty: none)")
    parser.add_argument("--task", default="pocket-topic")
    parser.add_argument("--task-steps", type=int, default=12 if cuda else 4, help="timed steps of the task rows, "
                        "after as many warm-up steps")
    parser.add_argument("--eval-examples", type=int, default=100, help="items per language of the task rows' "
                        "evaluation")
    parser.add_argument("--smoke", action="store_true", help="tiny shape, length 32, batch 4, 1 step: seconds")
    parser.add_argument("--write", action="store_true", help=f"merge the rows into {TABLE.relative_to(ROOT)}")
    parser.add_argument("--out", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.lengths, args.batches, args.steps, args.warmup = "tiny", "32", "4", 1, 0
        args.task_models, args.task_steps, args.eval_examples = "tiny", 1, 8
    args.batches = [int(b) for b in args.batches.split(",")]
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    identity = device_identity(device)
    print(f"device {identity[1]}; shapes {args.models} at {args.lengths} tokens, batches {args.batches}; "
          f"{args.steps} timed steps after {args.warmup}", flush=True)
    rows = []
    for key in filter(None, args.models.split(",")):
        for length in (int(n) for n in args.lengths.split(",")):
            for dtype in args.dtypes.split(","):
                if dtype == "bf16" and not identity[3]:
                    continue
                rows += shape_rows(args, key, length, dtype, device, identity)
    for key in filter(None, args.task_models.split(",")):
        rows += task_rows(args, key, args.task, device, identity)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    if args.write:
        merge_into_table(rows)
        print(f"{len(rows)} rows written into {TABLE}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""The throughput table: training and evaluation rates measured by this project's own benchmark
(``benchmarks/gpu_throughput.py``), per device, model shape, objective, precision, sequence length and batch, kept
as data in ``throughput.json`` beside this module; and the rule that turns it into the rate a study's plan uses,
with the source of each figure. No Ray; the only I/O is reading that file.

A rate comes, in this order of preference, from

1. a row measured on the device kind for the same model, objective, precision and sequence length, on the task's
   own English rows (``lengths`` = the task) or else at a fixed length (every row ``seq_len`` real tokens, which the
   task's shorter, batch-padded rows beat: an upper bound on time); the batch closest to the run's;
2. a row measured on the device kind for another shape or length, scaled by the analytic FLOPs per example
   (``study.core.flops``): "scaled";
3. the device's peak at an assumed MFU (``devices.ASSUMED_MFU``): "analytic", where nothing was measured there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

from study.core.devices import ASSUMED_MFU, DeviceProfile

TABLE = Path(__file__).with_name("throughput.json")
FIXED = "fixed"  # a row's ``lengths``: every sequence seq_len real tokens (random ids), not a task's rows
EVAL = "eval"  # a row's ``objective`` for forward-only evaluation


@dataclass(frozen=True)
class Measurement:
    """One row of the table. ``per_s`` counts training examples (a VME example is x with its x~: two sequences) or,
    for ``objective`` eval, evaluated items; ``flops_per_example`` is the analytic count at the rows' ``mean_tokens``
    real tokens per sequence."""

    device: str  # a profile key (study.core.devices): cpu, h100, a100, ...
    device_name: str  # what the benchmark ran on (CUDA device name; CPU model and torch threads)
    model: str  # registry key of the shape
    objective: str  # plain | vme | eval
    dtype: str  # fp32 | bf16
    seq_len: int  # max_length
    lengths: str  # fixed, or the task whose English rows were used
    batch_size: int  # 0: evaluation's own token-budget batches (study.evaluation.scoring)
    per_s: float
    tokens_per_s: float
    mean_tokens: float
    flops_per_example: float
    mfu: float | None
    source: str  # script, steps, date, commit

    def describe(self) -> str:
        what = "items" if self.objective == EVAL else "examples"
        rows = "random rows" if self.lengths == FIXED else f"{self.lengths}'s rows"
        batch = f"batch {self.batch_size}" if self.batch_size else "the scorer's token-budget batches"
        return (f"{self.model} {self.objective} {self.dtype}, {rows} at {self.seq_len} tokens, {batch}: "
                f"{self.per_s:.4g} {what}/s on {self.device_name} ({self.source})")


@dataclass(frozen=True)
class Rate:
    """The rate a plan uses (examples or items per second; None: no figure) and where it comes from."""

    per_s: float | None
    kind: str  # measured | scaled | analytic | none
    source: str


@dataclass(frozen=True)
class Overhead:
    """Seconds a run spends outside training steps and evaluation on a device kind: ``run_s`` once per run (start-up,
    model and data loading, tear-down), ``checkpoint_s`` per evaluation (each writes a checkpoint)."""

    run_s: float
    checkpoint_s: float
    source: str


def load_table(path: Path | None = None) -> tuple[list[Measurement], dict[str, Overhead]]:
    """The rows and the per-device overheads of the table (``TABLE`` unless ``path``)."""
    return _load(str(path or TABLE))


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[list[Measurement], dict[str, Overhead]]:
    data = json.loads(Path(path).read_text())
    names = {f.name for f in fields(Measurement)}
    rows = [Measurement(**{k: v for k, v in row.items() if k in names}) for row in data.get("rows", [])]
    overheads = {device: Overhead(**values) for device, values in data.get("overheads", {}).items()}
    return rows, overheads


def row_key(row: Measurement | dict) -> tuple:
    """What makes a row unique: a new measurement of the same key replaces the old one."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
    return tuple(get(name) for name in ("device", "model", "objective", "dtype", "seq_len", "lengths", "batch_size"))


def rate(rows: list[Measurement], device: DeviceProfile, model: str, objective: str, seq_len: int, task: str,
         batch_size: int, flops_per_example) -> Rate:
    """The rate of ``objective`` (plain, vme, eval) for ``model`` at ``seq_len`` on ``task`` with micro-batch
    ``batch_size`` on ``device``, by the module docstring's order. ``flops_per_example(mean_tokens)`` is the target's
    analytic FLOPs per example at a mean length (scaling and the analytic fallback)."""
    dtype = device.dtype
    candidates = [r for r in rows if r.device == device.key and r.objective == objective and r.dtype == dtype]
    closest = lambda pool: min(pool, key=lambda r: (abs(r.batch_size - batch_size), -r.batch_size))  # noqa: E731
    for lengths in (task, FIXED):
        pool = [r for r in candidates if r.model == model and r.seq_len == seq_len and r.lengths == lengths]
        if pool:
            row = closest(pool)
            note = "" if lengths == task else f" (random rows of {seq_len} tokens: {task}'s shorter rows run faster)"
            return Rate(row.per_s, "measured", row.describe() + note)
    if candidates:
        # the task's own rows first (other models read the same text: their mean length holds), then fixed-length
        # rows (another task's lengths say nothing of this one's), the same model, the nearest length and batch
        row = min(candidates, key=lambda r: (r.lengths != task, r.lengths != FIXED, r.model != model,
                                             abs(r.seq_len - seq_len), abs(r.batch_size - batch_size)))
        target = flops_per_example(row.mean_tokens if row.lengths == task else seq_len)
        return Rate(row.per_s * row.flops_per_example / target, "scaled",
                    f"scaled by analytic FLOPs per example ({target:.3g} vs {row.flops_per_example:.3g}) from "
                    + row.describe())
    peak = device.peak(dtype)
    if peak:
        target = flops_per_example(seq_len)
        return Rate(peak * ASSUMED_MFU / target, "analytic",
                    f"analytic, nothing measured on {device.name}: {target:.3g} FLOPs per "
                    f"{'item' if objective == EVAL else 'example'} at {seq_len} tokens / ({peak / 1e12:g} TFLOP/s "
                    f"{dtype} peak x {ASSUMED_MFU:.0%} MFU, assumed)")
    return Rate(None, "none", f"no measurement on {device.name} and no peak to fall back on")

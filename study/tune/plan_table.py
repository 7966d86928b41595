"""The plan as text (``study tune --plan``: one table row per arm and phase, the totals, every rate with its source,
and the plan's notes; ``study.tune.plan``), the device it is made for, and the plan of a study that runs: announced at
its start and set beside its measured wall time at its end."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from study.core.devices import CPU, DeviceProfile
from study.core.errors import StudyError
from study.tune.plan import Plan, build_plan

COLUMNS = (("arm", 22, "<"), ("phase", 15, "<"), ("runs", 5, ">"), ("steps/run", 10, ">"),
           ("examples/run", 13, ">"), ("eval items/run", 15, ">"), ("train", 9, ">"), ("eval", 9, ">"),
           ("stage", 9, ">"), ("other", 9, ">"), ("total", 9, ">"))


def duration(seconds: float | None) -> str:
    """Seconds as s, min or h; "?" when unknown."""
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _count(value: float) -> str:
    return f"{value:,.0f}" if value else "-"


def format_plan(plan: Plan) -> str:
    """The plan's table, totals, rates and notes."""
    device = plan.device
    hours = "GPU-hours" if device.kind != CPU else "CPU machine-hours"
    lines = [f"study plan: {plan.title}",
             f"device: {device.name} ({device.key}, {device.dtype}); {plan.devices_per_run} device(s) per run, "
             f"{plan.concurrency} run(s) at a time",
             "".join(f"{name:{align}{width}} " for name, width, align in COLUMNS)]
    for row in plan.rows:
        budget, s = row.budget, row.seconds
        cells = (row.arm, row.phase if row.phase != "reference lines" else "driver CPU", _count(row.runs),
                 _count(budget.steps), _count(budget.examples), _count(budget.eval_items),
                 *(duration(s[part]) if s[part] else "-" for part in ("train", "eval", "stage", "other")),
                 duration(row.total_s))
        lines.append("".join(f"{cell:{align}{width}} " for cell, (_, width, align) in zip(cells, COLUMNS,
                                                                                           strict=True)))
    runs = sum(row.runs for row in plan.rows if row.phase != "reference lines")
    device_hours = plan.device_hours
    lines.append(f"total: {runs:,.0f} runs, {duration(plan.run_seconds)} of runs"
                 + (f" = {device_hours:,.2f} {hours}" if device_hours is not None else "")
                 + f"; wall time {duration(plan.wall_s)} with {plan.concurrency} run(s) at a time"
                 + (" (the reference lines included: they run first, in the study driver, and are cached after)"
                    if any(row.phase == "reference lines" for row in plan.rows) else ""))
    if any("load average" in rate.source for rate in plan.rates.values()):  # measured beside other work
        lines.append("caution: some rates below were measured while other jobs shared this machine's cores (their "
                     "source gives the load): the times above are upper bounds, possibly several times too long on a "
                     "quiet machine; measure it with benchmarks/gpu_throughput.py to replace them")
    lines.append("rates (training examples or evaluated items per second) and their sources:")
    for name, rate in plan.rates.items():
        figure = f"{rate.per_s:,.4g}/s" if rate.per_s else "none"
        lines.append(f"  {name}: {figure} [{rate.kind}] {rate.source}")
    overhead = plan.overhead
    overhead_note = (f"other: {overhead.run_s:g} s per run (start-up, model and data loading, tear-down) + "
                     f"{overhead.checkpoint_s:g} s per evaluation (its checkpoint): {overhead.source}")
    lines += ["notes:", f"  - {overhead_note}", *(f"  - {note}" for note in plan.notes)]
    return "\n".join(lines)


def plan_device(key: str | None, gpus_per_worker: int = 0) -> DeviceProfile:
    """The device a plan estimates for: ``key`` (``--device-profile``); unset, this machine's GPU when runs ask
    for GPUs (StudyError when it has none the table knows: name one), else this machine's CPU."""
    from study.core.devices import cpu_profile, device_profile, match_gpu

    if key and key != CPU:
        return device_profile(key)
    if key is None and gpus_per_worker:
        import torch

        found = match_gpu(torch.cuda.get_device_name()) if torch.cuda.is_available() else None
        if found is None:
            raise StudyError("runs ask for GPUs but this machine has none the plan knows: name the kind with "
                             "--device-profile (e.g. h100, a100, a10g)")
        return found
    return cpu_profile(cpu_name())


def cpu_name() -> str:
    """This machine's CPU model and core count (``/proc/cpuinfo`` where there is one)."""
    import platform

    name = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


@dataclass(frozen=True)
class NoPlan:
    """What a study logs when its plan could not be made."""

    reason: str

    def params(self) -> dict[str, str]:
        return {"plan.error": self.reason[:500]}

    def metrics(self) -> dict[str, float]:
        return {}


def plan_for_run(args, settings, concurrency: int) -> Plan | NoPlan:
    """The plan of a study that runs (``args``: its ``study tune`` flags) at its real concurrency, announced in one
    line; a ``NoPlan`` saying why when it cannot be made (e.g. a GPU the table does not know): the study runs
    either way."""
    try:
        plan = build_plan(settings, plan_device(args.device_profile, args.gpus_per_worker), args.workers,
                          args.gpus_per_worker, concurrency)
    except StudyError as err:
        print(f"[study] no plan estimate: {err}", file=sys.stderr, flush=True)
        return NoPlan(str(err))
    print(f"[study] plan: about {duration(plan.wall_s)} on {plan.device.name} (--plan shows how)", file=sys.stderr,
          flush=True)
    return plan


def print_versus(plan: Plan | NoPlan, measured_s: float) -> None:
    """One line at the study's end: the plan's wall time beside the measured one."""
    if isinstance(plan, Plan) and plan.wall_s:
        print(f"[study] wall time: planned {duration(plan.wall_s)}, measured {duration(measured_s)} "
              f"({measured_s / plan.wall_s:.2f}x the plan)", file=sys.stderr, flush=True)

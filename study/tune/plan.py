"""A study's plan before it runs (``study tune ... --plan``; also logged to the parent MLflow run of a study that
runs): per arm and phase the runs, optimizer steps, training examples and evaluation items, and the estimated time
on a named device from the throughput table (``study.core.throughput``), each rate with its source.

Everything is counted by the rules the study runs by — the resolved settings (``study.tune.settings``: presets, arms,
trials, seeds, modality design), the step and evaluation rules (``study.core.budget``, which the worker trains by),
the split sizes (``study.data.sizes``) — and nothing is loaded but the pocket suite's text. What it cannot know is
said in ``notes``: ASHA stops weak search trials early (the search rows are the full budget, an upper bound); a
tuned arm's searched options that change the cost are averaged over their values (uniformly: TPE draws otherwise).
"""

from __future__ import annotations

import itertools
import os
import statistics
from dataclasses import dataclass, field, replace

from study.core.budget import evaluations, steps_per_epoch, total_steps
from study.core.devices import CPU, DeviceProfile
from study.core.flops import sequences_per_example
from study.core.protocol import CONFIRM_PHASE, DEFAULT_MODALITY, SEARCH_PHASE
from study.core.throughput import EVAL, Overhead, Rate, load_table, rate
from study.data.sizes import capped, task_sizes
from study.train.config import TrainConfig
from study.train.stage import StageConfig

# searched options that change what a run costs (the others — lr, loss weights — do not)
COST_OPTIONS = ("k_copies", "epochs", "max_steps", "batch_size", "global_batch", "max_length", "eval_every",
                "max_train_examples", "max_eval_examples")
STAGE_PASSES = 2  # the stage's caption pass with gradient, and its partner caption or image counted as one more
DEFAULT_OVERHEAD = Overhead(60.0, 5.0, "assumed: no run was measured on this device kind")


@dataclass(frozen=True)
class RunBudget:
    """One run's counts: optimizer steps, training examples (an example: one English record with one virtual copy),
    evaluations, evaluated items (every evaluation's English dev, test languages and probe sentences) and
    intermediate-stage steps."""

    steps: float
    examples: float
    evaluations: float
    eval_items: float
    stage_steps: float = 0.0


@dataclass(frozen=True)
class PlanRow:
    """An arm's phase: its runs, one run's budget and the estimated seconds of all its runs by part."""

    arm: str
    phase: str
    runs: float
    budget: RunBudget
    seconds: dict  # train, eval, stage, other -> seconds over all runs (None: no rate)

    @property
    def total_s(self) -> float | None:
        values = list(self.seconds.values())
        return None if any(v is None for v in values) else sum(values)


@dataclass
class Plan:
    """The plan of a study on a device: rows, the rates used (with sources), the run's concurrency and notes."""

    title: str
    device: DeviceProfile
    devices_per_run: int
    concurrency: int
    rows: list[PlanRow]
    rates: dict[str, Rate]
    overhead: Overhead = DEFAULT_OVERHEAD
    notes: list[str] = field(default_factory=list)

    @property
    def run_seconds(self) -> float | None:
        totals = [row.total_s for row in self.rows if row.phase != "reference lines"]
        return None if any(t is None for t in totals) else sum(totals)

    @property
    def device_hours(self) -> float | None:
        seconds = self.run_seconds
        return None if seconds is None else seconds * self.devices_per_run / 3600

    @property
    def wall_s(self) -> float | None:
        """Runs side by side on ``concurrency`` devices (a CPU machine is one device: its runs share its cores, so
        only their start-up and other fixed seconds overlap), then the reference lines in the driver."""
        if self.run_seconds is None or any(row.total_s is None for row in self.rows):
            return None
        lines = sum(row.total_s for row in self.rows if row.phase == "reference lines")
        if self.device.kind == CPU:
            other = sum(row.seconds["other"] for row in self.rows if row.phase != "reference lines")
            return self.run_seconds - other + other / self.concurrency + lines
        return self.run_seconds / self.concurrency + lines

    def metrics(self) -> dict[str, float]:
        """``plan/*`` metrics for the study's parent run: the estimate to set beside the measured time."""
        out = {"plan/runs": sum(row.runs for row in self.rows if row.phase != "reference lines")}
        for name, value in (("plan/wall_s", self.wall_s), ("plan/device_hours", self.device_hours)):
            if value is not None:
                out[name] = value
        for row in self.rows:
            key = f"plan/{row.arm}/{row.phase.replace(' ', '_')}"
            out.update({f"{key}/runs": row.runs, f"{key}/steps_per_run": row.budget.steps,
                        f"{key}/examples_per_run": row.budget.examples,
                        f"{key}/eval_items_per_run": row.budget.eval_items})
            out.update({f"{key}/{part}_s": s for part, s in row.seconds.items() if s is not None})
        return out

    def params(self) -> dict[str, str]:
        """``plan.*`` params: the device and each rate's kind and source."""
        return {"plan.device": f"{self.device.key}: {self.device.name}", "plan.concurrency": str(self.concurrency),
                "plan.overhead": f"{self.overhead.run_s:g} s per run + {self.overhead.checkpoint_s:g} s per "
                                 f"evaluation: {self.overhead.source}"[:500],
                **{f"plan.rate.{name}": f"{r.kind}: {r.source}"[:500] for name, r in self.rates.items()}}


def build_plan(settings, device: DeviceProfile, workers: int = 1, gpus_per_worker: int = 0,
               max_concurrent: int | None = None, table=None) -> Plan:
    """The plan of resolved ``settings`` (``study.tune.settings.StudySettings``) on ``device``, every run on
    ``workers`` workers (each a ``device`` when it is a GPU)."""
    rows_table, overheads = table or load_table()
    overhead = overheads.get(device.key) or overheads.get(device.kind) or DEFAULT_OVERHEAD
    spec, task, space = settings.spec, settings.task, settings.space
    rates: dict[str, Rate] = {}
    notes = [f"an example is one English record with one virtual copy (x, x~): k_copies examples per record; "
             f"{task.name} sizes: {task_sizes(task).source}"]

    def run_rate(objective: str, cfg: TrainConfig, on: DeviceProfile = device, lengths: str | None = None) -> Rate:
        per = sequences_per_example("plain" if objective == EVAL else objective)
        train = objective != EVAL
        on = device if on.key == device.key else on  # the driver's CPU is the device when the plan is for a CPU
        name = (f"{objective} {cfg.max_length} tokens" + (f" ({lengths})" if lengths else "")
                + (f" on {on.name}" if on is not device else ""))
        if name not in rates:
            rates[name] = rate(rows_table, on, spec.key, objective, cfg.max_length, lengths or task.name,
                               cfg.batch_size if train else 64,
                               lambda length: per * spec.shape.sequence_flops(length, train=train))
        return rates[name]

    def seconds(budget: RunBudget, cfg: TrainConfig, runs: float) -> dict:
        train, evaluate = run_rate(cfg.objective, cfg), run_rate(EVAL, cfg)
        stage = run_rate("plain", replace(cfg, max_length=StageConfig.max_length, batch_size=StageConfig.batch_size),
                         lengths="captions") if budget.stage_steps else None
        return {"train": train.per_s and runs * budget.examples / train.per_s,
                "eval": evaluate.per_s and runs * budget.eval_items / evaluate.per_s,
                "stage": 0.0 if stage is None else stage.per_s and runs * budget.stage_steps * StageConfig.batch_size
                * STAGE_PASSES / stage.per_s,
                "other": runs * (overhead.run_s + overhead.checkpoint_s * budget.evaluations)}

    probe = _probe_items(settings) if settings.alignment_probe else 0
    rows: list[PlanRow] = []
    stages_seen: set = set()
    for arm in settings.arms:
        base = settings.bases[arm.name]
        searches = settings.space_of(arm) if arm.tuned else space
        variants = _cost_variants(searches, base) if arm.tuned else [base]
        if len(variants) > 1:
            searched = sorted({p.name for p in searches.params if p.name in COST_OPTIONS})
            notes.append(f"{arm.name}: the mean over the searched {', '.join(searched)} ({len(variants)} "
                         "combinations, uniformly)")
        phases = ((SEARCH_PHASE, settings.trials, 0), (CONFIRM_PHASE, settings.seeds, probe)) if arm.tuned else \
            ((CONFIRM_PHASE, settings.seeds, probe),)
        for phase, runs, probe_items in phases:
            budget = _mean([run_budget(cfg, task, workers, probe_items) for cfg in variants])
            stage_steps = _stage_steps(arm, searches, settings, phase, stages_seen)
            budget = replace(budget, stage_steps=stage_steps)
            rows.append(PlanRow(arm.name, phase, runs, budget, seconds(budget, variants[0], runs)))
    if any(arm.tuned for arm in settings.arms):
        notes.append("search rows: every trial at its full budget; ASHA stops weak trials early, so they are an upper"
                     " bound")
    if stages_seen:
        notes.append(f"intermediate stages: {StageConfig.batch_size} captions x {STAGE_PASSES} passes a step at "
                     f"{StageConfig.max_length} tokens (the partner caption or image counted as a second pass); a "
                     "stage shared by arms (same modality, options and seed) is counted once, at the first arm; a "
                     "tuned arm's: as many as its trials draw, at most the distinct stages its space holds (trials "
                     "share cached stages), an estimate")
    if task.kind == "qa" or task.kind == "tagging":
        notes.append("QA contexts longer than max_length and long tagged sentences give extra windows, not counted")
    rows += _reference_lines(settings, run_rate, overheads)
    concurrency = max_concurrent or (max(1, (os.cpu_count() or 1) // workers) if device.kind == CPU else 1)
    title = (f"{spec.name} on {task.name} ({task.suite}, preset {settings.preset}); arms "
             f"{', '.join(a.name for a in settings.arms)}; {settings.trials} search trial(s) per tuned arm, "
             f"{settings.seeds} confirm seed(s) per arm; {workers} worker(s) per run")
    return Plan(title, device, workers * (gpus_per_worker or 1) if device.kind != CPU else 1, concurrency, rows,
                rates, overhead, notes)


def run_budget(cfg: TrainConfig, task, world: int, probe_items: int = 0) -> RunBudget:
    """One run's counts of ``cfg`` on ``task`` over ``world`` workers (``probe_items``: sentences each evaluation's
    alignment probe adds)."""
    sizes = task_sizes(task)
    pairs = capped(sizes.train, cfg.max_train_examples) * cfg.k_copies
    accumulation = cfg.accumulation(world)
    steps = total_steps(pairs, cfg.batch_size, accumulation, world, cfg.epochs, cfg.max_steps)
    count = evaluations(steps, steps_per_epoch(pairs, cfg.batch_size, accumulation, world), cfg.eval_every)
    return RunBudget(steps, steps * cfg.batch_size * accumulation * world, count,
                     count * (evaluation_items(cfg, task) + probe_items))


def evaluation_items(cfg: TrainConfig, task) -> int:
    """Items one evaluation scores: English dev and each evaluated language's test set, as subsetted."""
    sizes = task_sizes(task)
    return capped(sizes.dev, cfg.max_eval_examples) + sum(capped(sizes.test_size(lang), cfg.max_eval_examples)
                                                          for lang in (cfg.languages or task.languages))


def _mean(budgets: list[RunBudget]) -> RunBudget:
    return RunBudget(*(statistics.fmean(getattr(b, name) for b in budgets)
                       for name in ("steps", "examples", "evaluations", "eval_items", "stage_steps")))


def _values(param) -> list:
    """The values a searched parameter takes: its choices, an int range's integers (ends and middle when long), a
    float range's ends."""
    if param.choices:
        return list(param.choices)
    if param.type == "int":
        values = list(range(int(param.low), int(param.high) + 1, param.step or 1))
        return values if len(values) <= 16 else [values[0], values[len(values) // 2], values[-1]]
    return [param.low, param.high]


def _cost_variants(space, base: TrainConfig) -> list[TrainConfig]:
    """``base`` with each combination of the searched options that change the cost."""
    params = [p for p in space.params if p.name in COST_OPTIONS]
    combos = itertools.product(*(_values(p) for p in params))
    return [TrainConfig.from_dict({**base.to_dict(), **dict(zip((p.name for p in params), combo, strict=True))})
            for combo in combos] or [base]


def _stage_steps(arm, space, settings, phase: str, seen: set) -> float:
    """Intermediate-stage steps one run of ``arm`` in ``phase`` adds on average: a fixed arm's stage once per seed
    (shared with other arms: counted at the first); a tuned arm's searched stages, at most as many distinct ones as
    the search space holds (trials share a cached stage) and as the trials that draw one."""
    if not arm.tuned:
        if arm.modality == DEFAULT_MODALITY:
            return 0.0
        key = (phase, tuple(sorted(arm.stage.items())))
        if key in seen:
            return 0.0
        seen.add(key)
        return float(arm.stage.get("intermediate_steps", StageConfig.steps))
    params = {p.name: p for p in space.params}
    modality = params.get("modality")
    staged = [m for m in (modality.choices if modality else ()) if m != DEFAULT_MODALITY]
    if not staged:
        return 0.0
    seen.add((phase, arm.name))
    runs = settings.trials if phase == SEARCH_PHASE else settings.seeds
    steps = statistics.fmean(_values(params["intermediate_steps"])) if "intermediate_steps" in params \
        else StageConfig.steps
    drawn = runs * len(staged) / len(modality.choices)
    distinct = sum(_distinct_stages(space, m) for m in staged) if phase == SEARCH_PHASE else drawn
    return min(drawn, distinct) * steps / runs


def _distinct_stages(space, modality: str) -> int:
    """At most how many distinct stages a modality has: the product of the value counts of the parameters it
    activates, directly or through a parameter it activates (an upper bound where a branch is narrower)."""
    active, count = {"modality"}, 1
    for param in space.params:
        if param.when and all(parent in active and (parent != "modality" or modality in allowed)
                              for parent, allowed in param.when):
            active.add(param.name)
            count *= len(_values(param))
    return count


def _probe_items(settings) -> int:
    """Sentences one evaluation's alignment probe embeds (both sides of each probed language's pairs)."""
    from study.evaluation.probe import probe_data, probe_limit

    base = settings.base
    data = probe_data(settings.task, base.languages or settings.task.languages, base.data_dir, probe_limit(base))
    return 2 * sum(len(bitext.source) for bitext in data.bitexts.values())


def _reference_lines(settings, run_rate, overheads) -> list[PlanRow]:
    """The frozen probe and the random-init floor: run in the study driver (its CPU), embedding the English training
    set, dev and every test language with two encoders; cached after the first study with the same settings."""
    from study.core.devices import cpu_profile
    from study.tune.reference_lines import supported

    if not supported(settings.task):
        return []
    cfg = settings.base
    items = 2 * (evaluation_items(cfg, settings.task) + capped(task_sizes(settings.task).train, cfg.max_train_examples))
    driver = cpu_profile("the study driver's CPU")
    per_s = run_rate(EVAL, cfg, on=driver).per_s
    return [PlanRow("reference lines", "reference lines", 1, RunBudget(0, 0, 1, items),
                    {"train": 0.0, "eval": per_s and items / per_s, "stage": 0.0, "other": 0.0})]

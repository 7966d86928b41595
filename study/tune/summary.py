"""What the study prints when it ends: per arm its selected configuration and its confirm runs' seed means per family,
the time profile, and the commands that compare the arms and browse MLflow (no Ray: the CLI imports it before Ray
starts)."""

from __future__ import annotations

import math
import sys

from study.core.protocol import (
    REFERENCE_LINES,
    gap_key,
    group_scores_of,
    reference_key,
    selection_key,
    target_average_key,
)
from study.tune.settings import StudySettings
from study.tune.trial import TrialConfig


def print_time_profile(totals: dict[str, float], mlflow_seconds: float, trials: int) -> None:
    """The profile as a person reads it: seconds and share of the trials' summed wall time, then MLflow writes
    (done by the study driver while trials run)."""
    whole = sum(totals.values()) or 1.0
    print(f"\ntime profile over {trials} trial run(s) ({whole:.0f} s of trial wall time):", file=sys.stderr)
    for phase, seconds in totals.items():
        print(f"  {phase:<20}{seconds:>9.1f} s  {100 * seconds / whole:5.1f} %", file=sys.stderr)
    print(f"  {'MLflow writes':<20}{mlflow_seconds:>9.1f} s  (the study driver, alongside the trials)",
          file=sys.stderr, flush=True)


def print_summary(settings: StudySettings, selected: dict, reports: dict, parent_run: str,
                  logs: str | None = None) -> None:
    """Per arm: its selected configuration (a tuned arm's searched values), its confirm runs' seed means per
    family and the target average; then how to compare the arms (the report), browse MLflow and read the logs."""
    metric = settings.task.metric
    for arm in settings.arms:
        arm_reports = reports.get(arm.name, [])
        print(f"\n=== arm {arm.name} ({arm.description}): {len(arm_reports)} of {settings.seeds} confirm run(s) "
              "finished")
        for name, value in TrialConfig.from_tune(selected[arm.name]).searched.items():
            print(f"  searched {name} = {value}")
        if arm_reports:
            mean = mean_report(arm_reports)
            print(f"seed mean of English dev {selection_key(metric)} = {mean[selection_key(metric)]:.4f}")
            print_report_families(mean, metric)
    print(next_commands(settings.experiment, settings.uri, parent_run, logs))


def print_not_recorded(lines: list[str]) -> None:
    """What MLflow refused to record for good (a run deleted while the study ran, an invalid value): the records
    wait in the study's storage (``mlflow-outbox/parked.pkl``), the runs' results are in the summary above."""
    if lines:
        print(f"\nnot recorded in MLflow ({len(lines)} run(s)):", *(f"  {line}" for line in lines), sep="\n",
              file=sys.stderr, flush=True)


MLFLOW_PORT = 5000  # ``study serve-mlflow``'s default


def next_commands(experiment: str, uri: str, parent_run: str, logs: str | None = None,
                  experiment_id: str | None = None) -> str:
    """The commands that compare the arms and browse the runs, spelled with the interpreter that ran the study (so
    they work as printed in a fresh shell, venv or not), and the MLflow link that opens on the runs table."""
    import shlex

    python = shlex.quote(sys.executable)
    if experiment_id is None:
        from study.track.mlflow_store import client

        found = client(uri).get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else None
    link = f"http://127.0.0.1:{MLFLOW_PORT}/#/experiments/{experiment_id}/runs" if experiment_id else \
        f"http://127.0.0.1:{MLFLOW_PORT}"
    lines = ["", "Compare the arms (paired intervals over shared languages and seeds):",
             f"  {python} -m study report --experiment {shlex.quote(experiment)} --mlflow-uri {shlex.quote(uri)}",
             f"Browse the runs (MLflow experiment {experiment!r}, study run {parent_run}):",
             f"  {python} -m study serve-mlflow --backend-store-uri {shlex.quote(uri)} --port {MLFLOW_PORT}",
             f"  then open {link}"]
    if logs:
        lines.append(f"Ray's and the workers' logs: {logs}")
    return "\n".join(lines)


def print_report_families(report: dict, metric: str) -> None:
    """The per-family means of a report, then the target average and the gap to English."""
    print(f"\n{'family':<34}{metric:>10}")
    for family, value in sorted(group_scores_of(report, "family", metric).items()):
        print(f"{family:<34}{value:>10.4f}")
    target = report.get(target_average_key(metric), float("nan"))
    if math.isnan(target):
        print("\nno target language was evaluated (English only): no target average, no gap to English")
        return
    print(f"\ntarget average {target:.4f}, gap to English {report.get(gap_key(metric), float('nan')):.4f}")


def mean_report(reports: list[dict]) -> dict:
    """The mean of each numeric key over the reports that have it (the seed mean of an arm's confirm runs)."""
    keys = {k for r in reports for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {k: sum(r[k] for r in reports if k in r) / sum(k in r for r in reports) for k in sorted(keys)}


SEED_KEY = "confirm_seed"  # added to each confirm run's report: the arms' runs pair by it


def headline(settings: StudySettings, reports: dict, summary: dict) -> tuple[list[str], dict]:
    """The study's answer, computed with the report's own seed-level inference (``study.core.inference``): for each
    arm contrast the report draws (``arms.arm_contrasts``; vme-reference − plain first) the estimate of the target
    average's difference with its paired-by-seed 95 % interval, the runs per side and the languages — always, also
    when the interval covers zero; then each arm's mean ± sample s.d. over seeds, and the reference lines. Returns
    (lines for the console, metrics for the parent run)."""
    import statistics

    from study.core.arms import arm_contrasts
    from study.core.inference import seed_contrast

    key = target_average_key(settings.task.metric)
    targets = [lang for lang in (settings.base.languages or settings.task.languages) if lang != "en"]
    values = {arm: [r[key] for r in runs if key in r] for arm, runs in reports.items()}
    seeds = {arm: [r.get(SEED_KEY) for r in runs if key in r] for arm, runs in reports.items()}
    lines, numbers = ["", f"=== the answer: {key}, the mean over {len(targets)} target languages"], {}
    for left, right in arm_contrasts([arm.name for arm in settings.arms]):
        if not (values.get(left) and values.get(right)):
            lines.append(f"  {left} − {right}: not estimated (no finished confirm run on one side)")
            continue
        found = seed_contrast(values[left], values[right], seeds[left], seeds[right], paired=True)
        runs = f"{len(values[left])} vs {len(values[right])} runs"
        if found.low is None:
            lines.append(f"  {left} − {right}: {found.estimate:+.4f}, {found.note} ({runs})")
        else:
            verdict = "differs" if found.low > 0 or found.high < 0 else "no detectable difference"
            lines.append(f"  {left} − {right}: {found.estimate:+.4f} [{found.low:+.4f}, {found.high:+.4f}] "
                         f"({found.method}; {runs}): {verdict}" + (f"; {found.note}" if found.note else ""))
            numbers.update({f"answer/{left}-{right}/low": found.low, f"answer/{left}-{right}/high": found.high})
        numbers[f"answer/{left}-{right}/estimate"] = found.estimate
    for arm, arm_values in values.items():
        if arm_values:
            spread = f" ± {statistics.stdev(arm_values):.4f} (sample s.d.)" if len(arm_values) > 1 else ""
            lines.append(f"  {arm}: {statistics.fmean(arm_values):.4f}{spread} over {len(arm_values)} seed(s)")
    references = {line: summary.get(reference_key(line, key)) for line in REFERENCE_LINES}
    if any(v is not None for v in references.values()):
        lines.append("  reference lines (same test items): " + ", ".join(
            f"{line.replace('_', ' ')} {value:.4f}" for line, value in references.items() if value is not None))
    return lines, numbers

"""The study driver: builds each phase's ``Tuner`` (the search of a tuned arm, the confirm grid of every arm) and
runs them in order, recording the study in MLflow.

The search phase gives each tuned arm the same number of trials (OptunaSearch, ASHA on English dev); the confirm phase
re-runs every arm's English-dev-selected configuration on the same fresh seeds at the full budget, and only confirm
runs enter the report's comparisons."""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from pathlib import Path

from study.core.arms import Arm
from study.core.errors import StudyError
from study.core.protocol import (
    ARM_PER_LANGUAGE_ARTIFACT,
    SEARCH_PHASE,
    reference_key,
    select,
    select_best,
    selection_key,
    target_average_key,
)
from study.train.ray_setup import DRIVER_RESOURCE, Scaling, ray_logs_dir
from study.tune.interrupts import INTERRUPTS
from study.tune.phases import (
    FINISHED,
    STOPPED_EARLY,
    build_tuner,
    confirm_tuner,
    phase_outcomes,
    saved_phase,
)
from study.tune.reference_lines import print_reference_lines, reference_lines
from study.tune.reference_lines import supported as reference_lines_supported
from study.tune.resume import record_options
from study.tune.settings import StudySettings, provenance, study_options
from study.tune.summary import (
    SEED_KEY,
    headline,
    mean_report,
    print_not_recorded,
    print_summary,
    print_time_profile,
)
from study.tune.trial import TrialConfig, train_driver_fn, tune_constants

DRIVER_CPU = 0.1  # the trial driver only waits on its TorchTrainer


def concurrency(workers: int, gpus_per_worker: int, requested: int | None) -> tuple[int, int]:
    """(max concurrent trials, torch threads per worker) from the cluster's resources."""
    import ray

    total = ray.cluster_resources()
    if gpus_per_worker:
        fit = int(total.get("GPU", 0) // (workers * gpus_per_worker))
        if fit < 1:
            raise StudyError(f"a trial needs {workers * gpus_per_worker} GPUs but the cluster has "
                             f"{total.get('GPU', 0):g}")
    else:
        fit = max(1, int(total.get("CPU", 1) // workers))  # about one core per CPU worker
    trials = min(fit, requested) if requested else fit
    threads = max(1, int(total.get("CPU", 1) // (trials * workers))) if not gpus_per_worker else 4
    return trials, threads


def _run(args, settings: StudySettings) -> int:
    """The study in its named steps: the reference lines, the search of each tuned arm, the confirm phase of every
    arm, the summary; the parent run ends FINISHED, FAILED or KILLED however this ends (KILLED, with every
    unfinished run, when a signal stops it: ``StudyInterrupted`` leaves here)."""
    from study.track.writer import StudyRun
    from study.tune.plan_table import plan_for_run, print_versus

    study = StudyDriver(args, settings)  # the cluster's resources first: too few GPUs stop before MLflow is touched
    params, tags = provenance(settings)
    plan = plan_for_run(args, settings, study.max_concurrent)  # the estimate (plan.*, plan/*) beside the measured
    with contextlib.ExitStack() as stack:
        with INTERRUPTS.held():  # the parent run is made whole, then a signal ends it KILLED
            study_run = stack.enter_context(StudyRun(settings.uri, settings.experiment, settings.name,
                                                     settings.storage, {**params, **plan.params()}, tags,
                                                     list(settings.space.files)))
            INTERRUPTS.on_overdue.insert(0, study_run.kill)  # a study that cannot stop in time still ends KILLED
        study.start(study_run, tags)
        study.summary.update(plan.metrics())
        study.record_reference_lines()
        selected = {arm.name: study.search_arm(arm) for arm in settings.arms}
        reports = study.confirm(selected)
        study.record_summary(reports)
    print_summary(settings, selected, reports, study_run.run_id, study.logs)
    print_not_recorded(study_run.writer().not_recorded())
    print_versus(plan, study.summary["study_seconds"])
    print("\n".join(study.answer))
    return 0


class StudyDriver:
    """One study's run in the driver: what its phases share (scaling, callbacks, the trainable, the summary metrics
    and every Tune result so far) and its steps, in the order ``_run`` calls them."""

    def __init__(self, args, settings: StudySettings):
        import ray.tune

        from study.track.outbox import storage_join

        self.args, self.settings = args, settings
        self.max_concurrent, threads = concurrency(args.workers, args.gpus_per_worker, args.max_concurrent)
        self.scaling = Scaling.from_args(args, threads)
        self.metric = settings.task.metric
        self.trainable = ray.tune.with_resources(train_driver_fn, {"CPU": DRIVER_CPU, DRIVER_RESOURCE: 1})
        self.path = storage_join(settings.storage, settings.name)
        self.runs = settings.seeds * len(settings.arms) + settings.trials * sum(arm.tuned for arm in settings.arms)
        self.summary: dict = {}
        self.results: list = []
        self.logs: str | None = None
        self.answer: list[str] = []
        self.started = time.perf_counter()

    def start(self, study_run, tags: dict) -> None:
        """Attach the study's parent run (its MLflow writer feeds the trial callback), record the study's options in
        its storage (what a ``--resume`` must bring), and say what runs, where it is recorded and where Ray's own
        output goes."""
        from study.tune.callbacks import ForwardInterrupt, MLflowTrialCallback
        from study.tune.console import ConsoleCallback

        settings, args = self.settings, self.args
        self.study_run = study_run
        self.mlflow = MLflowTrialCallback(study_run.writer(settings.faults), tags, selection_key(self.metric),
                                          self.metric)
        self.callbacks = [self.mlflow, ConsoleCallback(self.metric, self.runs, total_cost=self.planned_cost()),
                          ForwardInterrupt()]
        record_options(settings.storage, settings.name, study_options(settings))
        tuned = any(arm.tuned for arm in settings.arms)
        print(f"[study] {settings.name}: {settings.spec.name} on {settings.task.name} ({settings.task.suite}, "
              f"preset {settings.preset}, budget {settings.budget}); arms {', '.join(a.name for a in settings.arms)}: "
              + (f"{settings.trials} search trial(s) per tuned arm, " if tuned else "no search (no tuned arm), ")
              + f"{settings.seeds} confirm seed(s) per arm "
              f"({self.runs} runs); {args.workers} worker(s) per run, {self.max_concurrent} concurrent; MLflow "
              f"{settings.uri} experiment {settings.experiment}", file=sys.stderr, flush=True)
        self.logs = link_ray_logs(self.path)
        if self.logs and not args.verbose:
            print(f"[study] Ray's and the workers' output: {self.logs} (--verbose shows it here)", file=sys.stderr,
                  flush=True)
        self.started = time.perf_counter()

    def planned_cost(self) -> float:
        """The study's runs in ``console.run_cost`` units: each arm's search trials and confirm runs, weighed by its
        objective (what the ETA extrapolates over)."""
        from study.tune.console import VME_STEP_COST

        settings = self.settings
        return sum((settings.trials * arm.tuned + settings.seeds)
                   * (VME_STEP_COST if settings.bases[arm.name].objective == "vme" else 1.0) for arm in settings.arms)

    def record_reference_lines(self) -> None:
        """The frozen probe and the random-init floor on the runs' own test items, where the task has them."""
        if not reference_lines_supported(self.settings.task):
            return
        print(f"[reference] scoring the frozen-encoder probe and the random-init floor on the runs' test items "
              f"({len(self.settings.base.languages or self.settings.task.languages)} languages) before the first "
              "run", file=sys.stderr, flush=True)
        lines = reference_lines(self.settings.base, log=lambda line: print(line, file=sys.stderr, flush=True))
        print_reference_lines(lines, self.metric)
        self.summary.update({reference_key(line, k): v for line, scores in lines.items() for k, v in scores.items()})

    def fit(self, tuner, early_stops: bool) -> list[tuple]:
        """Run a phase's Tuner; (result, outcome) of each of its trials (``phases.run_outcome``), their ends written
        to MLflow. A signal stops the phase (``INTERRUPTS``): what finished is written, the rest is left for
        ``StudyRun`` to end KILLED, and ``StudyInterrupted`` is raised instead of the phase being read as done."""
        with INTERRUPTS.fitting():
            try:
                grid = tuner.fit()
            except Exception:
                INTERRUPTS.check()  # a phase a signal broke (e.g. Ray's processes got it too) was interrupted
                raise
        outcomes = phase_outcomes(grid, INTERRUPTS.signum is not None, early_stops)
        self.mlflow.reconcile([(r, selected_report(r, self.metric) if r.metrics else {}, outcome)
                               for r, outcome in outcomes])
        INTERRUPTS.check()
        self.study_run.flush()
        self.results += [result for result, _ in outcomes]
        return outcomes

    def search_arm(self, arm: Arm) -> dict:
        """The configuration the arm's confirm runs use: a fixed arm's own; a tuned arm's English-dev-best search
        trial (its search ``Tuner`` built, or restored on ``--resume``). StudyError when no search trial finished."""
        import ray.tune

        settings, metric = self.settings, self.metric
        if not arm.tuned:
            return tune_constants(settings.bases[arm.name], settings.stage, self.scaling, settings.storage,
                                  settings.name, settings.faults, arm=arm.name, phase=SEARCH_PHASE,
                                  stage_options=dict(arm.stage))
        path = f"{self.path}/search-{arm.name}"
        started = time.perf_counter()  # the phase's wall time: its Tuner built, fitted and its ends written
        if self.args.resume and saved_phase(path):
            tuner = ray.tune.Tuner.restore(path, trainable=self.trainable, resume_errored=False)
        else:
            tuner = build_tuner(settings, arm, self.scaling, self.max_concurrent, self.callbacks, self.trainable, path,
                                verbose=int(self.args.verbose))
        outcomes = self.fit(tuner, early_stops=True)
        finished = [r for r, outcome in outcomes if outcome in (FINISHED, STOPPED_EARLY)
                    and selection_key(metric) in r.metrics]
        self.summary.update({f"search/{arm.name}/trials_finished": len(finished),
                             f"search/{arm.name}/trials_failed": len(outcomes) - len(finished),
                             f"search/{arm.name}/seconds": time.perf_counter() - started})
        if not finished:
            self.study_run.log_summary(self.summary)
            raise StudyError(f"no search trial of arm {arm.name} in study {settings.name!r} finished; see the "
                             f"errors above (each failed trial's traceback: error.txt in its folder under {path})")
        best, report = best_trial(finished, metric)
        self.summary[f"search/{arm.name}/{selection_key(metric)}"] = report[selection_key(metric)]
        return best.config

    def confirm(self, selected: dict) -> dict:
        """Every arm's selected configuration on the shared confirm seeds, at the full budget with no early stopping;
        {arm: the selected report of each run that reached its last step}. The summary gets per arm the seed mean
        and s.d. of English dev and the target average and the runs finished; an arm with no finished run is
        reported (``confirm/<arm>/runs_finished`` 0) and the study goes on to its end."""
        settings, metric = self.settings, self.metric
        tuner = confirm_tuner(self.args, settings, selected, self.callbacks, self.trainable, self.max_concurrent,
                              f"{self.path}/confirm")
        reports: dict[str, list[dict]] = {arm: [] for arm in selected}
        for result, outcome in self.fit(tuner, early_stops=False):
            if outcome == FINISHED and selection_key(metric) in result.metrics:
                trial = TrialConfig.from_tune(result.config)  # the seed pairs the arms' runs in the answer
                reports[trial.arm].append({**selected_report(result, metric), SEED_KEY: trial.train.seed})
        for arm, arm_reports in reports.items():
            self.summary[f"confirm/{arm}/runs_finished"] = len(arm_reports)
            for key in (selection_key(metric), target_average_key(metric)):
                values = [r[key] for r in arm_reports if key in r]
                if values:
                    self.summary[f"confirm/{arm}/{key}/mean"] = statistics.fmean(values)
                    # the sample s.d. (n - 1) of the seeds; NaN for one seed
                    self.summary[f"confirm/{arm}/{key}/std"] = statistics.stdev(values) if len(values) > 1 \
                        else float("nan")
            if not arm_reports:
                print(f"[study] no confirm run of arm {arm} finished ({settings.seeds} tried); see the errors above "
                      "(each failed run's traceback: error.txt in its folder under the study's confirm/)",
                      file=sys.stderr)
        return {arm: r for arm, r in reports.items() if r}

    def record_summary(self, reports: dict) -> None:
        """The study's metrics on its parent run (per-arm seed means, the time profile) and each arm's
        per-language table; the time profile on the console."""
        from study.track.repeatable import per_language_csv

        self.summary["study_seconds"] = time.perf_counter() - self.started
        profile = time_profile(self.results, self.mlflow.trial_started, self.mlflow.stage_seconds)
        self.summary.update({f"profile/{phase.replace(' ', '_')}_s": seconds for phase, seconds in profile.items()})
        self.summary["profile/mlflow_writes_s"] = sum(self.mlflow.write_seconds.values())
        self.study_run.flush()
        means = {arm: mean_report(arm_reports) for arm, arm_reports in reports.items()}
        self.study_run.log_summary(self.summary, {
            ARM_PER_LANGUAGE_ARTIFACT.format(arm=arm): per_language_csv(report, self.metric)
            for arm, report in means.items()})
        print_time_profile(profile, self.summary["profile/mlflow_writes_s"], len(self.results))
        self.answer, numbers = headline(self.settings, reports, self.summary)
        self.study_run.log_summary(numbers)
        try:  # the answer as the parent run's description, the first thing MLflow shows of it
            from study.track.mlflow_store import client

            client(self.settings.uri, fail_fast=True).set_tag(self.study_run.run_id, "mlflow.note.content",
                                                              "\n".join(self.answer).strip())
        except Exception as err:  # the description is a convenience: the numbers are logged as metrics above
            print(f"[mlflow] the study run's description was not written ({err.__class__.__name__})",
                  file=sys.stderr, flush=True)


# the phases of a trial's time, in order; "other" is what the trial's wall time leaves (Ray's scheduling, data
# loading and the model build in the workers, the driver's own work)
PROFILE_PHASES = ("start-up", "intermediate stage", "training steps", "evaluation", "checkpoints", "other")


def time_profile(results: list, trial_started: dict, stage_seconds: dict) -> dict[str, float]:
    """Seconds per phase (``PROFILE_PHASES``) summed over the trials of ``results`` (Tune results: the last report
    of each, with Tune's ``trial_id`` and ``time_total_s`` and the worker's cumulative ``time/*``): start-up is from
    the trial's start (``trial_started``, unix s, as the MLflow callback saw it) to its workers' start, less the
    intermediate stage (``stage_seconds``); trials the callback did not see start (a resumed study) count their
    start-up under "other"."""
    totals = dict.fromkeys(PROFILE_PHASES, 0.0)
    for result in results:
        metrics = result.metrics or {}
        if "time_total_s" not in metrics:
            continue
        trial_id = metrics.get("trial_id")
        stage = stage_seconds.get(trial_id, 0.0)
        started, worker_start = trial_started.get(trial_id), metrics.get("time/worker_start_unix")
        startup = max(0.0, worker_start - started - stage) if started and worker_start else 0.0
        known = {"start-up": startup, "intermediate stage": stage,
                 "training steps": metrics.get("time/train_s", 0.0), "evaluation": metrics.get("time/eval_s", 0.0),
                 "checkpoints": metrics.get("time/checkpoint_s", 0.0)}
        for phase, seconds in known.items():
            totals[phase] += seconds
        totals["other"] += max(0.0, metrics["time_total_s"] - sum(known.values()))
    return totals


def best_trial(finished: list, metric: str) -> tuple:
    """(result, selected report) of the trial English dev selects among finished Tune results (in trial order):
    the best selected English dev score, the earlier trial on ties."""
    reports = [selected_report(r, metric) for r in finished]
    position = select(range(len(finished)), score=lambda i: reports[i][selection_key(metric)], order=lambda i: i)
    return finished[position], reports[position]


def selected_report(result, metric: str) -> dict:
    """The report of a trial that English dev selects (its best step, not necessarily its last)."""
    frame = result.metrics_dataframe
    if frame is None or selection_key(metric) not in frame:
        return result.metrics
    return dict(select_best(frame.to_dict("records"), metric))


def link_ray_logs(study_path: str) -> str | None:
    """Ray's log directory for this study, linked as ``<study>/ray-logs`` when the study's storage is local (the
    path people are told to read); None when Ray does not say where its logs are."""
    logs = ray_logs_dir()
    if not logs or "://" in study_path:
        return logs
    link = Path(study_path) / "ray-logs"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()  # a resumed study: Ray's new session
    link.symlink_to(logs, target_is_directory=True)
    return str(link)

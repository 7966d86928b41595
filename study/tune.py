"""``python -m study.tune --model mbert``: a Ray Tune + Optuna study over the VME objective, one Ray Train run per
trial, every trial in MLflow, resumable.

Layers (as in Ray's Train-in-Tune guide): ``train_fn_per_worker`` (study.worker) runs on every worker;
``train_driver_fn`` below is the Tune trial, building a ``TorchTrainer`` with a stable run name and
``TuneReportCallback``; the ``Tuner`` wraps the driver with OptunaSearch (TPE, define-by-run from the YAML search
space), ASHA on the English-dev metric, ``max_concurrent_trials`` from the cluster's resources, and the MLflow
callback.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from study.config import TrainConfig
from study.data.captions import FLICKR30K
from study.errors import StudyError, run_cli
from study.fault_hooks import FaultHooks
from study.intermediate import CLIP_TOWER, stage_sources
from study.protocol import (
    DEFAULT_MODALITY,
    RUN_KIND_TAG,
    SEED_REPEAT_RUN,
    STAGE_RECORD,
    select,
    select_best,
    selection_key,
    target_average_key,
)
from study.ray_setup import DRIVER_RESOURCE, Scaling, check_cluster, init_ray
from study.search_space import SPACE_PARAM_PREFIX, SearchSpace, load_search_space
from study.train import print_report_families
from study.trial import TrialConfig, tune_constants, with_seed
from study.worker import run_pipeline, validate

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
DEFAULT_TRIALS = {"smoke": 4, "paper": 20}
SUITE_TASK = {"pocket": "pocket-topic", "xtreme-r": "xnli"}
DRIVER_CPU = 0.1  # the trial driver only waits on its TorchTrainer


# --- [2] the Tune trial: one Ray Train run ----------------------------------------------------------------------


def train_driver_fn(config: dict) -> None:
    """The Tune trial: the intermediate stage when the trial's modality asks for one (cached across trials,
    recorded in the outbox), then one Ray Train fine-tuning run named by the trial id (stable across restarts)
    whose reports reach Tune through ``TuneReportCallback``."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from study.outbox import OUTBOX_ENV, outbox_location, put

    trial = TrialConfig.from_tune(config)
    trial_id = ray.tune.get_context().get_trial_id()
    outbox = outbox_location(trial.storage, trial.study, trial_id)  # what the MLflow callback will log

    def record_stage(result) -> None:  # the MLflow callback logs it when the trial ends
        put(outbox, STAGE_RECORD, result.to_json())

    run_pipeline(trial.train, trial.stage_config(), trial.scaling, trial.storage,
                 name=f"{trial.study}-trial-{trial_id}",  # stable across restarts: no timestamps
                 callbacks=[TuneReportCallback()], env={OUTBOX_ENV: outbox}, on_stage=record_stage,
                 faults=trial.faults)


# --- [3] the study -------------------------------------------------------------------------------------------


def parse_args(argv):
    """The ``study.tune`` flags."""
    parser = argparse.ArgumentParser(prog="python -m study.tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="e5-small", help="registry key; the search space is "
                        "search_spaces/<model>.yaml (default e5-small, the offline stand-in)")
    parser.add_argument("--search-space", type=Path, help="a search-space YAML (default: by model)")
    parser.add_argument("--task", help="XTREME-R or pocket task (default: the search space's)")
    parser.add_argument("--suite", choices=tuple(SUITE_TASK), help="pocket or xtreme-r (default: the task's)")
    parser.add_argument("--preset", choices=("smoke", "paper"), help="smoke = minutes on a laptop CPU, paper = the "
                        "reference scale (default: smoke for offline stand-ins, paper otherwise)")
    parser.add_argument("--trials", type=int, help="Optuna trials (default: smoke 4, paper 20)")
    parser.add_argument("--seeds", type=int, default=0, help="extra runs of the best config with new seeds")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers per trial")
    parser.add_argument("--gpus-per-worker", type=int, default=0)
    parser.add_argument("--cpus-per-worker", type=float, default=0.5, help="CPU share per worker without GPUs")
    parser.add_argument("--dashboard", action="store_true", help="start Ray's dashboard (bound to 127.0.0.1) with "
                        "a local Ray instance")
    parser.add_argument("--max-concurrent", type=int, help="concurrent trials (default: from cluster resources)")
    parser.add_argument("--data-dir", default=os.environ.get("STUDY_DATA_DIR"), help="original task files")
    parser.add_argument("--storage", default=os.environ.get("STUDY_STORAGE", str(Path("runs").resolve())),
                        help="Ray storage: dir, s3://... or file:///shared/dir (default $STUDY_STORAGE or ./runs)")
    parser.add_argument("--name", help="study name (default: study-<model>-<task>-<preset>-<time>; with --resume: "
                        "the newest such study)")
    parser.add_argument("--mlflow-uri", help="tracking URI (default: sqlite:///<cwd>/mlflow.db, no server needed)")
    parser.add_argument("--experiment", help="MLflow experiment (default: vme-<suite>; compare models in one)")
    parser.add_argument("--resume", action="store_true", help="continue the study of this name after a crash")
    parser.add_argument("--implementation", choices=("fast", "reference"), default="fast",
                        help="training step: fast (one pass, one captured layer, fused AdamW, trimmed vocabulary) or "
                        "reference (the authors' two eager passes), for comparison; same results within fp32")
    parser.add_argument("--intermediate-data", help="image-caption data of the intermediate stage: emoji (offline), "
                        "a hub dataset id or local dataset directory, or a folder with captions.jsonl/tsv (default: "
                        f"emoji for offline stand-ins, {FLICKR30K} otherwise)")
    parser.add_argument("--vision-tower", help="multimodal stage's vision tower: scratch (a small CNN trained from "
                        f"scratch) or a CLIP vision model id/directory (default: scratch for offline stand-ins, "
                        f"{CLIP_TOWER} otherwise)")
    FaultHooks.add_flag(parser)
    return parser.parse_args(argv)


@dataclass(frozen=True)
class StudySettings:
    """A study's settings, resolved and validated from the command line before Ray or MLflow are touched."""

    space: SearchSpace
    spec: object  # the model's registry entry (study.models)
    task: object  # its task (study.tasks.TaskSpec)
    preset: str  # smoke | paper
    base: TrainConfig  # the preset's fixed training options; trials override the searched ones
    trials: int
    storage: str  # Ray storage: an absolute directory or a URI
    name: str  # the study's name (its directory in storage, its MLflow parent run)
    uri: str  # MLflow tracking URI
    experiment: str  # MLflow experiment
    stage: dict  # the intermediate stage's fixed data and vision tower (intermediate.stage_sources)
    faults: FaultHooks = FaultHooks()  # the tests' fault injection (--inject-faults); none otherwise


def resolve(args) -> StudySettings:
    """Validate everything before Ray or MLflow are touched; returns the study's settings."""
    from study.models import get_spec, model_path
    from study.tasks import get_task

    spec = get_spec(args.model)
    model_path(spec)  # hub models fail here, fast and in one line, when unreachable
    space_path = args.search_space or SPACES_DIR / f"{args.model}.yaml"
    if not space_path.is_file():
        raise StudyError(f"no search space for model {args.model!r} at {space_path}: pass --search-space FILE "
                         f"(available: {', '.join(sorted(p.stem for p in SPACES_DIR.glob('*.yaml')))})")
    space = load_search_space(space_path)
    task_name = args.task or (SUITE_TASK[args.suite] if args.suite and get_task(space.task).suite != args.suite
                              else space.task)
    task = get_task(task_name)
    if args.suite and task.suite != args.suite:
        raise StudyError(f"task {task.name!r} belongs to the {task.suite} suite, not {args.suite}")
    preset = args.preset or ("smoke" if spec.offline_stand_in else "paper")
    base = TrainConfig.from_dict({**space.preset(preset, task.name), "model": args.model, "task": task.name,
                                  "data_dir": args.data_dir, "implementation": args.implementation})
    validate(base, args.workers)  # global_batch must split over --workers
    Scaling(args.workers, args.gpus_per_worker, args.cpus_per_worker)  # bad scaling flags stop before Ray starts
    trials = args.trials or DEFAULT_TRIALS[preset]
    for flag, value, least in (("--trials", trials, 1), ("--seeds", args.seeds, 0),
                               ("--max-concurrent", 1 if args.max_concurrent is None else args.max_concurrent, 1)):
        if value < least:
            raise StudyError(f"{flag} {value} is invalid: it must be >= {least}")
    storage = args.storage if "://" in args.storage else str(Path(args.storage).resolve())
    name = args.name or _default_name(args, storage, f"study-{Path(args.model).name}-{task.name}-{preset}")
    study_dir = Path(storage) / name
    if "://" not in storage and study_dir.exists() and not args.resume:
        raise StudyError(f"study {name!r} already exists in {storage}: pass --resume to continue it, or another "
                         "--name")
    if args.resume and "://" not in storage and not study_dir.exists():
        raise StudyError(f"nothing to resume: no study {name!r} in {storage}")
    uri = args.mlflow_uri or f"sqlite:///{Path('mlflow.db').resolve()}"
    from study.mlflow_store import check_server

    check_server(uri)
    stage = resolve_stage(args, spec, space)
    return StudySettings(space, spec, task, preset, base, trials, storage, name, uri,
                         args.experiment or f"vme-{task.suite}", stage, args.inject_faults)


def resolve_stage(args, spec, space: SearchSpace) -> dict:
    """The intermediate stage's fixed data and vision tower; their data is checked now when a stage can run."""
    stage = stage_sources(spec.offline_stand_in, args.intermediate_data, args.vision_tower)
    params = {p.name: p for p in space.params}
    if "modality" not in params or set(params["modality"].choices) == {DEFAULT_MODALITY}:
        return stage
    from study.intermediate import StageConfig, stage_data

    for choice in params["vision_train"].choices if "vision_train" in params else ("full",):
        try:
            StageConfig(model=spec.key, modality="multimodal", vision_train=choice, **stage)
        except StudyError as err:
            raise StudyError(f"{space.path}: params.vision_train: {err}") from None
    stage_data(StageConfig(model=spec.key, modality="text", **stage))
    return stage


def _default_name(args, storage: str, prefix: str) -> str:
    """A new study gets a timestamped name; --resume without --name takes the newest study with the prefix."""
    if not args.resume:
        return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    # a study directory holds the Tuner's state; its trials' Train runs (<study>-trial-<id>) do not
    candidates = sorted(p.parent.name for p in Path(storage).glob(f"{prefix}-*/tuner.pkl")
                        if not p.parent.name.endswith("-seeds")) if "://" not in storage else []
    if not candidates:
        raise StudyError(f"nothing to resume: no study {prefix}-* in {storage} (pass --name for a specific one)")
    return candidates[-1]


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


def provenance(settings: StudySettings) -> tuple[dict, dict]:
    """Params and tags of the study's parent run: what ran, on which code and packages."""
    spec, space = settings.spec, settings.space
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=SPACES_DIR.parent, timeout=10).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    params = {**spec.as_params(), "task": settings.task.name, "suite": settings.task.suite,
              "preset": settings.preset, "trials": settings.trials, "search_space": str(space.path),
              "search_space_sha256": space.sha256, "git_commit": commit,
              "searched": ",".join(p.name for p in space.params),
              **{f"{SPACE_PARAM_PREFIX}{p.name}": p.to_json() for p in space.params},
              **{f"base.{k}": v for k, v in settings.base.to_dict().items()},
              **{f"intermediate.{k}": v for k, v in settings.stage.items()},
              **{f"version.{p}": version(p) for p in ("ray", "torch", "transformers", "optuna", "mlflow", "datasets")}}
    tags = {"model": spec.key, "model_name": spec.name, "offline_stand_in": str(spec.offline_stand_in),
            "task": settings.task.name, "suite": settings.task.suite, "protocol": settings.task.protocol,
            "preset": settings.preset,
            "selection": "English dev only"}
    return params, tags


class DefineByRun:
    """Optuna define-by-run for OptunaSearch: the YAML's suggestions, plus constants that ride along.
    A class, not a closure, because Tune pickles the searcher with the study state (for --resume)."""

    def __init__(self, space: SearchSpace, constants: dict):
        self.space, self.constants = space, constants

    def __call__(self, trial) -> dict:
        self.space.define_by_run(trial)  # no computation here: Optuna warns above 1 s
        return self.constants


def build_tuner(settings: StudySettings, scaling: Scaling, max_concurrent: int, callback, trainable):
    """The study's ``Tuner``: Optuna TPE (seeded, define-by-run; every modality among the first trials), ASHA
    on English dev, the MLflow callback, at most ``max_concurrent`` trials at once."""
    import optuna
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    space: SearchSpace = settings.space
    metric = selection_key(settings.task.metric)
    constants = tune_constants(settings.base, settings.stage, scaling, settings.storage, settings.name,
                               settings.faults)

    modality = next((p for p in space.params if p.name == "modality"), None)
    # every modality among the first trials
    first = [{modality.tune_name: m} for m in modality.choices] if modality else None
    with warnings.catch_warnings():  # multivariate and group are marked experimental in Optuna; both are needed
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # group: one multivariate model per set of parameters sampled together, so conditional parameters (the
        # branch of `when:`) are modelled jointly with the rest instead of falling back to independent sampling
        sampler = optuna.samplers.TPESampler(seed=space.seed, multivariate=True, group=True, constant_liar=True)
    searcher = OptunaSearch(space=DefineByRun(space, constants), metric=metric, mode="max", points_to_evaluate=first,
                            sampler=sampler)
    return ray.tune.Tuner(
        trainable,
        tune_config=ray.tune.TuneConfig(
            metric=metric, mode="max", search_alg=searcher, num_samples=settings.trials,
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=100, grace_period=1, reduction_factor=2),
            max_concurrent_trials=max_concurrent),
        run_config=ray.tune.RunConfig(
            name=settings.name, storage_path=settings.storage, callbacks=[callback],
            failure_config=ray.tune.FailureConfig(max_failures=0),  # worker failures are retried by Ray Train
            verbose=1))


def main(argv=None) -> int:
    """``python -m study.tune``: run (or ``--resume``) a study, select its best trial on English dev, optionally
    repeat it with new seeds, and record everything in MLflow."""
    args = parse_args(argv)
    settings = resolve(args)
    init_ray(dashboard=args.dashboard)  # before this process imports ray (see init_ray)
    import ray

    try:
        check_cluster(settings.storage)
        return _run(args, settings)
    finally:
        ray.shutdown()


def _run(args, settings: StudySettings) -> int:
    import ray.tune

    from study.outbox import storage_join
    from study.tracking import MLflowTrialCallback, StudyRun, per_language_csv

    max_concurrent, threads = concurrency(args.workers, args.gpus_per_worker, args.max_concurrent)
    scaling = Scaling(args.workers, args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker, threads=threads)
    params, tags = provenance(settings)
    metric, key = settings.task.metric, selection_key(settings.task.metric)
    trainable = ray.tune.with_resources(train_driver_fn, {"CPU": DRIVER_CPU, DRIVER_RESOURCE: 1})
    study_path = storage_join(settings.storage, settings.name)
    with StudyRun(settings.uri, settings.experiment, settings.name, settings.storage, params, tags,
                  list(settings.space.files)) as study_run:  # FINISHED, FAILED or KILLED however this block ends
        callback = MLflowTrialCallback(study_run.writer(), tags, key, metric)
        print(f"[study] {settings.name}: {settings.trials} trials of {settings.spec.name} on "
              f"{settings.task.name} ({settings.task.suite}, preset {settings.preset}), {args.workers} worker(s) "
              f"per trial, {max_concurrent} concurrent; MLflow {settings.uri} experiment {settings.experiment}",
              file=sys.stderr, flush=True)
        started = time.perf_counter()
        if args.resume:
            tuner = ray.tune.Tuner.restore(study_path, trainable=trainable, resume_errored=False)
        else:
            tuner = build_tuner(settings, scaling, max_concurrent, callback, trainable)
        results = tuner.fit()
        study_run.flush()
        finished = [r for r in results if r.error is None and r.metrics and key in r.metrics]
        if not finished:
            study_run.log_summary({"failed_trials": len(results)})
            raise StudyError(f"no trial of study {settings.name!r} finished; see the errors above")
        best, best_report = best_trial(finished, metric)
        summary = {f"best/{k}": v for k, v in best_report.items()  # metrics only: Tune adds the config as config/...
                   if isinstance(v, (int, float)) and "/" in k and not k.startswith("config/")}
        summary.update({"trials_finished": len(finished), "trials_failed": len(results) - len(finished)})
        repeat_results = []
        if args.seeds:
            repeat_summary, repeat_results = _repeat_with_seeds(args, settings, best, callback, trainable,
                                                                max_concurrent, study_path)
            summary.update(repeat_summary)
        summary["study_seconds"] = time.perf_counter() - started
        profile = time_profile(list(results) + repeat_results, callback.trial_started, callback.stage_seconds)
        summary.update({f"profile/{phase.replace(' ', '_')}_s": seconds for phase, seconds in profile.items()})
        summary["profile/mlflow_writes_s"] = sum(callback.write_seconds.values())
        study_run.flush()
        study_run.log_summary(summary, per_language_csv(best_report, metric))
        print_time_profile(profile, summary["profile/mlflow_writes_s"], len(results) + len(repeat_results))
    print_summary(settings, best.config, best_report, study_run.run_id)
    return 0


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


def print_time_profile(totals: dict[str, float], mlflow_seconds: float, trials: int) -> None:
    """The profile as a person reads it: seconds and share of the trials' summed wall time, then MLflow writes
    (done by the study driver while trials run)."""
    whole = sum(totals.values()) or 1.0
    print(f"\ntime profile over {trials} trial run(s) ({whole:.0f} s of trial wall time):", file=sys.stderr)
    for phase, seconds in totals.items():
        print(f"  {phase:<20}{seconds:>9.1f} s  {100 * seconds / whole:5.1f} %", file=sys.stderr)
    print(f"  {'MLflow writes':<20}{mlflow_seconds:>9.1f} s  (the study driver, alongside the trials)",
          file=sys.stderr, flush=True)


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


def _repeat_with_seeds(args, settings, best, callback, trainable, max_concurrent, study_path) -> tuple[dict, list]:
    """Re-run the best configuration with --seeds new seeds (for confidence intervals); nested in MLflow too.
    Returns (summary, Tune results). When no repeat finishes, the summary says so (``seeds_finished`` 0) and the
    study goes on to its end."""
    import statistics

    callback.tags = {**callback.tags, RUN_KIND_TAG: SEED_REPEAT_RUN, "repeat_of": Path(best.path).name}
    tuner = seed_tuner(args, settings, best, callback, trainable, max_concurrent, f"{study_path}-seeds")
    results = list(tuner.fit())
    repeats = [selected_report(r, settings.task.metric) for r in results if r.error is None and r.metrics]
    target = target_average_key(settings.task.metric)
    values = [r[target] for r in repeats if target in r]
    if not values:
        print(f"[study] no seed repeat of the best configuration finished ({args.seeds} tried); see the errors above",
              file=sys.stderr)
        return {"seeds_finished": 0}, results
    mean, std = statistics.fmean(values), statistics.pstdev(values)
    print(f"[study] best configuration over {len(values)} extra seeds: {target} {mean:.4f} ± {std:.4f}",
          file=sys.stderr)
    return {"seeds_finished": len(values), f"seeds/{target}/mean": mean, f"seeds/{target}/std": std}, results


def seed_tuner(args, settings, best, callback, trainable, max_concurrent, path: str):
    """The ``Tuner`` of the seed repeats: the best configuration over --seeds new seeds (restored on --resume)."""
    import ray.tune

    if args.resume and Path(path).exists():
        return ray.tune.Tuner.restore(path, trainable=trainable)
    base_seed = TrialConfig.from_tune(best.config).train.seed
    seeds = [base_seed + i for i in range(1, args.seeds + 1)]
    config = with_seed(best.config, ray.tune.grid_search(seeds))
    return ray.tune.Tuner(trainable, param_space=config, tune_config=ray.tune.TuneConfig(
        metric=selection_key(settings.task.metric), mode="max", max_concurrent_trials=max_concurrent),
        run_config=ray.tune.RunConfig(name=Path(path).name, storage_path=settings.storage, callbacks=[callback],
                                      verbose=1))


def print_summary(settings: StudySettings, config: dict, report: dict, parent_run: str) -> None:
    """Print the selected configuration's searched values, its family means and how to browse MLflow."""
    metric = settings.task.metric
    searched = TrialConfig.from_tune(config).searched
    print(f"\nbest configuration (selected on English dev {selection_key(metric)} = "
          f"{report[selection_key(metric)]:.4f}):")
    for name, value in searched.items():
        print(f"  {name} = {value}")
    print_report_families(report, metric)
    print(f"MLflow: experiment {settings.experiment!r}, study run {parent_run}; browse with\n"
          f"  mlflow ui --backend-store-uri {settings.uri} --host 127.0.0.1")


if __name__ == "__main__":
    run_cli(main)

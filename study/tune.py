"""``python -m study.tune --model mbert``: a Ray Tune + Optuna study of the VME objective's arms (``study.arms``), one
Ray Train run per trial, every trial in MLflow, resumable.

Two phases. *Search*: each tuned arm's search space, the same number of trials per tuned arm (OptunaSearch, ASHA on
English dev). *Confirm*: every arm's English-dev-selected configuration (a tuned arm's best search trial, a fixed
arm's pinned point) re-run on the same fresh seeds at the full budget, no early stopping; only confirm runs enter the
report's comparisons.

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

from study.arms import DEFAULT_ARMS, OFFLINE_DEFAULT_ARMS, Arm, modality_arms, parse_arms
from study.augment import synonym_source_label
from study.config import TrainConfig
from study.data.captions import FLICKR30K
from study.errors import StudyError, run_cli
from study.fault_hooks import FaultHooks
from study.intermediate import CLIP_TOWER, add_caption_languages_flag, stage_sources
from study.protocol import (
    ARM_PER_LANGUAGE_ARTIFACT,
    DEFAULT_MODALITY,
    SEARCH_PHASE,
    STAGE_RECORD,
    reference_key,
    select,
    select_best,
    selection_key,
    target_average_key,
)
from study.ray_setup import DRIVER_RESOURCE, Scaling, add_scaling_flags, check_cluster, init_ray, ray_logs_dir
from study.reference_lines import print_reference_lines, reference_lines
from study.reference_lines import supported as reference_lines_supported
from study.search_space import SPACE_PARAM_PREFIX, SearchSpace, load_search_space
from study.train import print_report_families
from study.trial import CONFIRM_KEY, TrialConfig, confirm_config, tune_constants
from study.worker import run_pipeline, validate

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
DEFAULT_TRIALS = {"smoke": 4, "paper": 20}  # search trials per tuned arm
DEFAULT_SEEDS = {"smoke": 3, "paper": 5}  # confirm runs per arm
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
    parser.add_argument("--arms", help="comma-separated arms to compare (study.arms): plain, vme-reference, vme-tuned "
                        f"(default: {','.join(OFFLINE_DEFAULT_ARMS)} for offline stand-ins, {','.join(DEFAULT_ARMS)} "
                        "otherwise)")
    parser.add_argument("--experiment-design", choices=("arms", "modality"), default="arms",
                        help="arms: the --arms as they are; modality: the controlled modality experiment, each fixed "
                        "arm of --arms also after a text, multimodal and multimodal-shuffled intermediate stage")
    parser.add_argument("--trials", type=int, help="search trials per tuned arm (default: smoke 4, paper 20)")
    parser.add_argument("--seeds", type=int, help="confirm runs per arm, on fresh seeds shared by every arm (default: "
                        "smoke 3, paper 5)")
    parser.add_argument("--alignment-probe", action=argparse.BooleanOptionalAction,
                        help="probe every confirm run's encoder, and the pretrained one, on parallel sentences "
                        "(bitext retrieval, centroid distances to English; study/alignment_probe.py; alignment_pairs "
                        "pairs a language) for the report's alignment section (default: on for the pocket suite, "
                        "off for XTREME-R, whose Tatoeba sentences it would read)")
    add_scaling_flags(parser, "Ray Train workers per trial")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own output (progress tables, the workers' "
                        "logs) on the console instead of only in Ray's log files")
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
    add_caption_languages_flag(parser)
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
    trials: int  # search trials per tuned arm
    seeds: int  # confirm runs per arm
    arms: tuple[Arm, ...]
    bases: dict  # arm name -> its TrainConfig: the preset's with the arm's fixed options
    storage: str  # Ray storage: an absolute directory or a URI
    name: str  # the study's name (its directory in storage, its MLflow parent run)
    uri: str  # MLflow tracking URI
    experiment: str  # MLflow experiment
    stage: dict  # the intermediate stage's fixed data, vision tower, caption languages (intermediate.stage_sources)
    alignment_probe: bool = False  # confirm runs run the alignment probe (--alignment-probe, resolved)
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
    Scaling.from_args(args)  # bad scaling flags stop before Ray starts
    arms = parse_arms(args.arms, OFFLINE_DEFAULT_ARMS if spec.offline_stand_in else DEFAULT_ARMS)
    if args.experiment_design == "modality":
        arms = modality_arms(parse_arms(args.arms, OFFLINE_DEFAULT_ARMS), modality_stage_options(space))
    bases = {arm.name: arm_base(base, arm, args.workers) for arm in arms}
    trials = DEFAULT_TRIALS[preset] if args.trials is None else args.trials
    seeds = DEFAULT_SEEDS[preset] if args.seeds is None else args.seeds
    for flag, value, least in (("--trials", trials, 1), ("--seeds", seeds, 1),
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
    stage = resolve_stage(args, spec, space, any(arm.modality != DEFAULT_MODALITY for arm in arms))
    return StudySettings(space, spec, task, preset, base, trials, seeds, arms, bases, storage, name, uri,
                         args.experiment or f"vme-{task.suite}", stage,
                         resolve_alignment_probe(args.alignment_probe, task, base),
                         args.inject_faults)


def resolve_alignment_probe(requested: bool | None, task, base: TrainConfig) -> bool:
    """Whether confirm runs probe alignment: as requested; by default (None) on the pocket suite, whose parallel
    sentences are always at hand, when a target has them. The sentences are read now, so that a study that cannot
    probe stops before Ray starts: StudyError when requested and they cannot be read."""
    from study.alignment_probe import probe_data, probe_limit

    if requested is False or (requested is None and task.suite != "pocket"):
        return False
    try:
        probe_data(task, base.languages or task.languages, base.data_dir, probe_limit(base))
    except StudyError as err:
        if requested:
            raise
        print(f"[study] no alignment probe: {err}", file=sys.stderr)
        return False
    return True


def arm_base(base: TrainConfig, arm: Arm, workers: int) -> TrainConfig:
    """The preset's training options with the arm's fixed ones; StudyError naming the arm when they do not fit
    (e.g. a global batch the workers cannot split)."""
    try:
        config = TrainConfig.from_dict({**base.to_dict(), **arm.fixed})
        validate(config, workers)
    except StudyError as err:
        raise StudyError(f"arm {arm.name}: {err}") from None
    return config


def modality_stage_options(space: SearchSpace) -> dict:
    """The stage options every arm of the modality experiment shares: each stage parameter's first choice in the
    search space (its lowest value for a range), the stage's defaults for the rest."""
    options = {}
    for param in space.params:
        if param.name in ("intermediate_steps", "intermediate_lr", "vision_lr", "vision_train"):
            options[param.name] = param.choices[0] if param.choices else param.low
    return options


def resolve_stage(args, spec, space: SearchSpace, arms_need_stage: bool = False) -> dict:
    """The intermediate stage's fixed data, vision tower and caption languages (checked now); their data is checked
    now when a stage can run (a searched modality, or an arm with a stage)."""
    from study.intermediate import StageConfig, stage_data

    stage = stage_sources(spec.offline_stand_in, args.intermediate_data, args.vision_tower, args.caption_languages)
    StageConfig(model=spec.key, modality="text", **stage)  # a bad --caption-languages stops here, stage or not
    params = {p.name: p for p in space.params}
    searched = "modality" in params and set(params["modality"].choices) != {DEFAULT_MODALITY}
    if not searched and not arms_need_stage:
        return stage

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
    # a study directory holds its phases' Tuners (search-<arm>/, confirm/); its trials' Train runs
    # (<study>-trial-<id>) do not
    candidates = sorted({p.parent.parent.name for p in Path(storage).glob(f"{prefix}-*/*/tuner.pkl")}) \
        if "://" not in storage else []
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
              "preset": settings.preset, "trials": settings.trials, "seeds": settings.seeds,
              "arms": ",".join(arm.name for arm in settings.arms), "search_space": str(space.path),
              "alignment_probe": settings.alignment_probe,
              "search_space_sha256": space.sha256, "git_commit": commit,
              "searched": ",".join(p.name for p in space.params),
              "synonyms_source": synonym_source_label(settings.base.synonyms),
              **{f"{SPACE_PARAM_PREFIX}{p.name}": p.to_json() for p in space.params},
              **{f"base.{k}": v for k, v in settings.base.to_dict().items()},
              **{f"arm.{arm.name}.{k}": v for arm in settings.arms for k, v in arm.fixed.items()},
              **{f"intermediate.{k}": ",".join(v) if isinstance(v, tuple) else v for k, v in settings.stage.items()},
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


def build_tuner(settings: StudySettings, arm: Arm, scaling: Scaling, max_concurrent: int, callbacks: list, trainable,
                path: str, verbose: int = 0):
    """The search ``Tuner`` of a tuned arm: Optuna TPE (seeded, define-by-run; every modality among the first
    trials), ASHA on English dev, the MLflow callback, ``settings.trials`` trials, at most ``max_concurrent`` at
    once; stored at ``path`` (``<storage>/<study>/search-<arm>``)."""
    import optuna
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory" is not news
    space: SearchSpace = settings.space
    metric = selection_key(settings.task.metric)
    constants = tune_constants(settings.bases[arm.name], settings.stage, scaling, settings.storage, settings.name,
                               settings.faults, arm=arm.name, phase=SEARCH_PHASE)

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
            name=Path(path).name, storage_path=str(Path(path).parent), callbacks=callbacks,
            failure_config=ray.tune.FailureConfig(max_failures=0),  # worker failures are retried by Ray Train
            verbose=verbose))


def main(argv=None) -> int:
    """``python -m study.tune``: run (or ``--resume``) a study — search each tuned arm, confirm every arm on fresh
    seeds — and record everything in MLflow."""
    args = parse_args(argv)
    if not args.verbose:  # the console is study.console's; Tune's tables and MLflow's notices stay out of it
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose 0: Tune's legacy reporter, which is silent
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        # a failed trial's traceback goes to its error.txt only: the console shows its last line (study.console)
        os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    settings = resolve(args)
    init_ray(dashboard=args.dashboard, log_to_driver=args.verbose)  # before this process imports ray (see init_ray)
    import ray

    try:
        check_cluster(settings.storage)
        return _run(args, settings)
    finally:
        ray.shutdown()


def _run(args, settings: StudySettings) -> int:
    import ray.tune

    from study.console import ConsoleCallback
    from study.outbox import storage_join
    from study.tracking import MLflowTrialCallback, StudyRun, per_language_csv

    max_concurrent, threads = concurrency(args.workers, args.gpus_per_worker, args.max_concurrent)
    scaling = Scaling.from_args(args, threads)
    params, tags = provenance(settings)
    metric = settings.task.metric
    trainable = ray.tune.with_resources(train_driver_fn, {"CPU": DRIVER_CPU, DRIVER_RESOURCE: 1})
    study_path = storage_join(settings.storage, settings.name)
    tuned = [arm for arm in settings.arms if arm.tuned]
    with StudyRun(settings.uri, settings.experiment, settings.name, settings.storage, params, tags,
                  list(settings.space.files)) as study_run:  # FINISHED, FAILED or KILLED however this block ends
        runs = settings.seeds * len(settings.arms) + settings.trials * len(tuned)
        callbacks = [MLflowTrialCallback(study_run.writer(settings.faults), tags, selection_key(metric), metric),
                     ConsoleCallback(metric, runs)]
        callback = callbacks[0]
        print(f"[study] {settings.name}: {settings.spec.name} on {settings.task.name} ({settings.task.suite}, "
              f"preset {settings.preset}); arms {', '.join(a.name for a in settings.arms)}: "
              + (f"{settings.trials} search trial(s) per tuned arm, " if tuned else "no search (no tuned arm), ")
              + f"{settings.seeds} confirm seed(s) per arm "
              f"({runs} runs); {args.workers} worker(s) per run, {max_concurrent} concurrent; MLflow {settings.uri} "
              f"experiment {settings.experiment}", file=sys.stderr, flush=True)
        logs = link_ray_logs(study_path)
        if logs and not args.verbose:
            print(f"[study] Ray's and the workers' output: {logs} (--verbose shows it here)", file=sys.stderr,
                  flush=True)
        started = time.perf_counter()
        all_results, selected, summary = [], {}, {}
        if reference_lines_supported(settings.task):  # the frozen probe and the random-init floor, same test items
            lines = reference_lines(settings.base, log=lambda line: print(line, file=sys.stderr, flush=True))
            print_reference_lines(lines, metric)
            summary.update({reference_key(line, k): v for line, scores in lines.items() for k, v in scores.items()})
        for arm in settings.arms:  # the search phase: tuned arms only; a fixed arm's configuration is its own
            if not arm.tuned:
                selected[arm.name] = tune_constants(settings.bases[arm.name], settings.stage, scaling,
                                                    settings.storage, settings.name, settings.faults, arm=arm.name,
                                                    phase=SEARCH_PHASE, stage_options=dict(arm.stage))
                continue
            path = f"{study_path}/search-{arm.name}"
            if args.resume and "://" not in path and Path(path, "tuner.pkl").exists():
                tuner = ray.tune.Tuner.restore(path, trainable=trainable, resume_errored=False)
            else:
                tuner = build_tuner(settings, arm, scaling, max_concurrent, callbacks, trainable, path,
                                    verbose=int(args.verbose))
            results = list(tuner.fit())
            callback.reconcile([(r, selected_report(r, metric) if r.metrics else {}) for r in results])
            study_run.flush()
            all_results += results
            finished = [r for r in results if r.error is None and r.metrics and selection_key(metric) in r.metrics]
            summary.update({f"search/{arm.name}/trials_finished": len(finished),
                            f"search/{arm.name}/trials_failed": len(results) - len(finished)})
            if not finished:
                study_run.log_summary(summary)
                raise StudyError(f"no search trial of arm {arm.name} in study {settings.name!r} finished; see the "
                                 f"errors above (each failed trial's traceback: error.txt in its folder under {path})")
            best, report = best_trial(finished, metric)
            selected[arm.name] = best.config
            summary[f"search/{arm.name}/{selection_key(metric)}"] = report[selection_key(metric)]
        confirm_summary, reports, results = _confirm(args, settings, selected, callbacks, trainable, max_concurrent,
                                                     study_path)
        all_results += results
        summary.update(confirm_summary)
        summary["study_seconds"] = time.perf_counter() - started
        profile = time_profile(all_results, callback.trial_started, callback.stage_seconds)
        summary.update({f"profile/{phase.replace(' ', '_')}_s": seconds for phase, seconds in profile.items()})
        summary["profile/mlflow_writes_s"] = sum(callback.write_seconds.values())
        study_run.flush()
        means = {arm: mean_report(arm_reports) for arm, arm_reports in reports.items()}
        study_run.log_summary(summary, {ARM_PER_LANGUAGE_ARTIFACT.format(arm=arm): per_language_csv(report, metric)
                                        for arm, report in means.items()})
        print_time_profile(profile, summary["profile/mlflow_writes_s"], len(all_results))
    print_summary(settings, selected, reports, study_run.run_id, logs)
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


def confirm_seeds(base_seed: int, seeds: int) -> list[int]:
    """The confirm phase's training seeds, shared by every arm (so arms pair by seed) and fresh (the search ran on
    ``base_seed``)."""
    return [base_seed + i for i in range(1, seeds + 1)]


def _confirm(args, settings, selected: dict, callbacks: list, trainable, max_concurrent, study_path: str):
    """The confirm phase: every arm's selected configuration on ``confirm_seeds``, at the full budget with no early
    stopping. Returns (summary metrics: per arm the seed mean and s.d. of English dev and the target average and the
    runs finished; {arm: the selected report of each finished run}; Tune results). An arm with no finished run is
    reported (``confirm/<arm>/runs_finished`` 0) and the study goes on to its end."""
    import statistics

    tuner = confirm_tuner(args, settings, selected, callbacks, trainable, max_concurrent, f"{study_path}/confirm")
    results = list(tuner.fit())
    metric = settings.task.metric
    callbacks[0].reconcile([(r, selected_report(r, metric) if r.metrics else {}) for r in results])
    reports: dict[str, list[dict]] = {arm: [] for arm in selected}
    for result in results:
        if result.error is None and result.metrics and selection_key(metric) in result.metrics:
            reports[TrialConfig.from_tune(result.config).arm].append(selected_report(result, metric))
    summary = {}
    for arm, arm_reports in reports.items():
        summary[f"confirm/{arm}/runs_finished"] = len(arm_reports)
        for key in (selection_key(metric), target_average_key(metric)):
            values = [r[key] for r in arm_reports if key in r]
            if values:
                summary[f"confirm/{arm}/{key}/mean"] = statistics.fmean(values)
                summary[f"confirm/{arm}/{key}/std"] = statistics.pstdev(values)
        if not arm_reports:
            print(f"[study] no confirm run of arm {arm} finished ({settings.seeds} tried); see the errors above "
                  "(each failed run's traceback: error.txt in its folder under the study's confirm/)", file=sys.stderr)
    return summary, {arm: r for arm, r in reports.items() if r}, results


def _confirm_dirname(trial) -> str:
    """Short trial directories for the confirm phase (the default would spell out its whole config)."""
    return f"confirm_{trial.trial_id}"


def confirm_tuner(args, settings, selected: dict, callbacks: list, trainable, max_concurrent, path: str):
    """The confirm phase's ``Tuner``: a grid over (arm, seed) of full trial configs (restored on --resume)."""
    import ray.tune

    if args.resume and "://" not in path and Path(path, "tuner.pkl").exists():
        return ray.tune.Tuner.restore(path, trainable=trainable)
    seeds = confirm_seeds(settings.base.seed, settings.seeds)
    grid = [confirm_config(selected[arm.name], seed, settings.alignment_probe) for arm in settings.arms
            for seed in seeds]
    return ray.tune.Tuner(trainable, param_space={CONFIRM_KEY: ray.tune.grid_search(grid)},
                          tune_config=ray.tune.TuneConfig(metric=selection_key(settings.task.metric), mode="max",
                                                          max_concurrent_trials=max_concurrent,
                                                          trial_dirname_creator=_confirm_dirname),
                          run_config=ray.tune.RunConfig(name=Path(path).name, storage_path=str(Path(path).parent),
                                                        callbacks=callbacks, verbose=int(args.verbose)))


def mean_report(reports: list[dict]) -> dict:
    """The mean of each numeric key over the reports that have it (the seed mean of an arm's confirm runs)."""
    keys = {k for r in reports for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {k: sum(r[k] for r in reports if k in r) / sum(k in r for r in reports) for k in sorted(keys)}


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
    print(f"\nCompare the arms (paired intervals over shared languages and seeds):\n"
          f"  python -m study.report --experiment {settings.experiment} --mlflow-uri {settings.uri}\n"
          f"MLflow: experiment {settings.experiment!r}, study run {parent_run}; browse with\n"
          f"  mlflow ui --backend-store-uri {settings.uri} --host 127.0.0.1"
          + (f"\nRay's and the workers' logs: {logs}" if logs else ""))


if __name__ == "__main__":
    run_cli(main)

"""A study's settings, resolved and validated from the command line before Ray or MLflow start: the search space,
model, task, preset, arms and their fixed options, storage, name and tracking; and the parent run's provenance."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from study.core.arms import (
    DEFAULT_ARMS,
    INTENDED_DIFFERENCES,
    OFFLINE_DEFAULT_ARMS,
    PRESET_BUDGET,
    Arm,
    budget_label,
    budget_options,
    matched_difference,
    modality_arms,
    parse_arms,
)
from study.core.errors import StudyError
from study.core.faults import FaultHooks
from study.core.metrics import scorer_versions
from study.core.protocol import DEFAULT_MODALITY
from study.data.augment import synonym_source_label
from study.data.hub import pin
from study.data.revisions import hub_pins, read_lock, task_provenance
from study.track.mlflow_store import default_mlflow_uri
from study.train.config import TrainConfig
from study.train.pipeline import validate
from study.train.ray_setup import Scaling
from study.train.stage import stage_sources
from study.tune.resume import check_start, newest_study, normalised
from study.tune.search_space import SPACE_PARAM_PREFIX, TRAIN_PARAMS, SearchSpace, load_search_space

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
DEFAULT_TRIALS = {"smoke": 4, "paper": 20}  # search trials per tuned arm
DEFAULT_SEEDS = {"smoke": 3, "paper": 5}  # confirm runs per arm
SUITE_TASK = {"pocket": "pocket-topic", "xtreme-r": "xnli"}


@dataclass(frozen=True)
class StudySettings:
    """A study's settings, resolved and validated from the command line before Ray or MLflow are touched."""

    space: SearchSpace
    spec: object  # the model's registry entry (study.models.registry)
    task: object  # its task (study.data.tasks.TaskSpec)
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
    revisions: dict = field(default_factory=dict)  # "dataset:<repo>" / "model:<repo>" -> commit or stand-in package
    budget: str = PRESET_BUDGET  # every arm's training length (study.core.arms.BUDGETS)

    def space_of(self, arm: Arm) -> SearchSpace:
        """What a tuned arm searches: the search space less the arm's ``unsearched`` parameters."""
        return self.space.without(arm.unsearched)


def resolve(args) -> StudySettings:
    """Validate everything before Ray or MLflow are touched; returns the study's settings. With ``args.plan`` (the
    plan only: nothing runs) nothing is downloaded or contacted: no model weights, hub, synonyms, caption data or
    MLflow server."""
    from study.data.tasks import get_task
    from study.models.registry import get_spec, model_path

    fetch = not getattr(args, "plan", False)
    if getattr(args, "hub_lock", None):
        pin(read_lock(args.hub_lock))  # before anything is read from the hub
    spec = get_spec(args.model)
    if fetch:
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
    budget = getattr(args, "budget", PRESET_BUDGET)
    base = TrainConfig.from_dict({**space.preset(preset, task.name), "model": args.model, "task": task.name,
                                  "data_dir": args.data_dir, "implementation": args.implementation,
                                  **budget_options(budget, task.name)})
    validate(base, args.workers, fetch)  # global_batch must split over --workers
    Scaling.from_args(args)  # bad scaling flags stop before Ray starts
    arms = parse_arms(args.arms, OFFLINE_DEFAULT_ARMS if spec.offline_stand_in else DEFAULT_ARMS)
    if args.experiment_design == "modality":
        stage_options = modality_stage_options(space)
        arms = modality_arms(parse_arms(args.arms, OFFLINE_DEFAULT_ARMS), stage_options,
                             dose_steps(getattr(args, "stage_dose", None), stage_options))
    elif getattr(args, "stage_dose", None) is not None:
        raise StudyError(f"--stage-dose {args.stage_dose} needs --experiment-design modality: it runs that design's "
                         "stages at a second length")
    bases = {arm.name: arm_base(base, arm, args.workers, fetch) for arm in arms}
    check_matched(bases)
    for config in (base, *(bases[arm.name] for arm in arms if arm.tuned)):  # the file is wrong whichever arms run
        check_space_fits(space, config, args.workers, fetch)
    trials = DEFAULT_TRIALS[preset] if args.trials is None else args.trials
    seeds = DEFAULT_SEEDS[preset] if args.seeds is None else args.seeds
    for flag, value, least in (("--trials", trials, 1), ("--seeds", seeds, 1),
                               ("--max-concurrent", 1 if args.max_concurrent is None else args.max_concurrent, 1)):
        if value < least:
            raise StudyError(f"{flag} {value} is invalid: it must be >= {least}")
    storage = args.storage if "://" in args.storage else str(Path(args.storage).resolve())
    check_names(args.name, args.experiment)
    name = args.name or _default_name(args, storage, f"study-{Path(args.model).name}-{task.name}-{preset}")
    uri = args.mlflow_uri or default_mlflow_uri()
    from study.track.mlflow_store import check_server

    if fetch:
        check_server(uri)
    stage = resolve_stage(args, spec, space, any(arm.modality != DEFAULT_MODALITY for arm in arms), fetch)
    settings = StudySettings(space, spec, task, preset, base, trials, seeds, arms, bases, storage, name, uri,
                             args.experiment or f"vme-{task.suite}", stage,
                             resolve_alignment_probe(args.alignment_probe, task, base,
                                                     args.experiment_design == "modality", fetch),
                             args.inject_faults, study_revisions(spec, task, base.data_dir) if fetch else {}, budget)
    for arm in arms:
        if arm.tuned:
            settings.space_of(arm)  # a tuned arm with nothing left to search stops here
    if fetch:  # a plan (``--plan``) reads no storage: it neither claims nor resumes the study
        check_start(storage, name, args.resume, study_options(settings))
    return settings


def check_names(name: str | None, experiment: str | None) -> None:
    """--name names a folder of the storage and is quoted in MLflow's searches: letters, digits, ``.``, ``_``, ``-``;
    --experiment names an MLflow experiment: not empty, no surrounding spaces. Checked before Ray or MLflow."""
    import re

    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", name):
        raise StudyError(f"--name {name!r} is invalid: use letters, digits, '.', '_' and '-' (it names a folder of "
                         "the storage and the study's MLflow runs), starting with a letter or digit")
    if experiment is not None and (not experiment.strip() or experiment != experiment.strip()):
        raise StudyError(f"--experiment {experiment!r} is invalid: an MLflow experiment name is not empty and has no "
                         "spaces around it")


def check_space_fits(space: SearchSpace, base: TrainConfig, workers: int, fetch: bool) -> None:
    """Every value the search may sample — each range's bounds, each choice — trains this model: ``ap_layer`` within
    its depth, ``max_length`` within its positions, a batch the workers can split. StudyError naming the file, the
    key and the fix."""
    for param in space.params:
        if param.name not in TRAIN_PARAMS:
            continue
        values = param.choices or (param.low, param.high)
        cast = {"int": int, "float": float}.get(param.type, lambda value: value)
        for value in values:
            try:
                validate(TrainConfig.from_dict({**base.to_dict(), param.name: cast(value)}), workers, fetch)
            except StudyError as err:
                fix = "drop that choice" if param.choices else "narrow the range"
                raise StudyError(f"{space.path}: params.{param.name}: {value!r} does not fit {base.model} on "
                                 f"{base.task} ({err}); fix: {fix}") from None


def study_revisions(spec, task, data_dir) -> dict[str, str]:
    """Every hub dataset and model the study reads, resolved to a commit now (a lock file's pins first), and each
    offline stand-in's package; the hub commits are pinned for every process the study starts, so all its runs read
    the same commit even if the hub's main moves meanwhile."""
    from study.models.registry import model_provenance

    found = {**task_provenance(task, data_dir), **dict([model_provenance(spec)])}
    pin(hub_pins(found))
    return found


def study_options(settings: StudySettings) -> dict:
    """What decides the study's results, as its record keeps it (``study.tune.resume``): a ``--resume`` must bring
    the same. Scaling, concurrency and the MLflow address may change between starts; the experiment may not (the
    study's runs are found again in it)."""
    return normalised({
        "model": settings.spec.key, "task": settings.task.name, "preset": settings.preset, "trials": settings.trials,
        "seeds": settings.seeds, "arms": ",".join(arm.name for arm in settings.arms),
        "experiment": settings.experiment, "alignment_probe": settings.alignment_probe,
        "search_space_sha256": settings.space.sha256, "base": settings.base.to_dict(),
        "arm": {arm.name: {**arm.fixed, **{f"stage.{k}": v for k, v in arm.stage.items()}} for arm in settings.arms},
        "intermediate": settings.stage,
        **({"budget": settings.budget} if settings.budget != PRESET_BUDGET else {})})


def resolve_alignment_probe(requested: bool | None, task, base: TrainConfig, modality_design: bool = False,
                            fetch: bool = True) -> bool:
    """Whether confirm runs probe alignment: as requested; by default (None) in the modality experiment, whose
    question (does a stage align the languages?) the probe measures, and on the pocket suite, whose parallel
    sentences are always at hand, when a target has them. The sentences are read now, so that a study that cannot
    probe stops before Ray starts: StudyError when requested, or by default in the modality experiment, and they
    cannot be read. Without ``fetch`` (a plan) nothing is read."""
    from study.evaluation.probe import probe_data, probe_limit

    if requested is False or (requested is None and task.suite != "pocket" and not modality_design):
        return False
    if not fetch and modality_design:
        return True
    try:
        probe_data(task, base.languages or task.languages, base.data_dir, probe_limit(base))
    except StudyError as err:
        if requested:
            raise
        if modality_design:
            raise StudyError(f"--experiment-design modality runs the alignment probe by default, and it cannot run "
                             f"({err}): give it parallel sentences, or pass --no-alignment-probe") from None
        print(f"[study] no alignment probe: {err}", file=sys.stderr)
        return False
    return True


def arm_base(base: TrainConfig, arm: Arm, workers: int, fetch: bool = True) -> TrainConfig:
    """The preset's training options with the arm's fixed ones; StudyError naming the arm when they do not fit
    (e.g. a global batch the workers cannot split)."""
    try:
        config = TrainConfig.from_dict({**base.to_dict(), **arm.fixed})
        validate(config, workers, fetch)
    except StudyError as err:
        raise StudyError(f"arm {arm.name}: {err}") from None
    return config


def check_matched(bases: dict) -> None:
    """StudyError when two arms of a matched contrast (``arms.INTENDED_DIFFERENCES``) would differ in an option they
    are not meant to differ in: their contrast would measure that too."""
    for (left, right), intended in INTENDED_DIFFERENCES.items():
        if left in bases and right in bases:
            extra = matched_difference(bases[left].to_dict(), bases[right].to_dict()) - intended
            if extra:
                raise StudyError(f"arms {left} and {right} differ in {', '.join(sorted(extra))} beyond what their "
                                 f"contrast compares ({', '.join(sorted(intended))}); pin them alike in "
                                 "study/core/arms.py")


def modality_stage_options(space: SearchSpace) -> dict:
    """The stage options every arm of the modality experiment shares: each stage parameter's first choice in the
    search space (its lowest value for a range), the stage's defaults for the rest."""
    options = {}
    for param in space.params:
        if param.name in ("intermediate_steps", "intermediate_lr", "vision_lr", "vision_train"):
            options[param.name] = param.choices[0] if param.choices else param.low
    return options


def dose_steps(requested: int | None, stage_options: dict) -> int | None:
    """The second stage length of the modality experiment (``--stage-dose``; None without one); StudyError when it is
    not a positive whole number other than the configured steps (the search space's first ``intermediate_steps``
    choice, else the stage's default)."""
    if requested is None:
        return None
    from study.train.stage import StageConfig

    configured = int(stage_options.get("intermediate_steps", StageConfig.steps))
    if requested < 1 or requested == configured:
        raise StudyError(f"--stage-dose {requested} is invalid: give a number of stage steps >= 1 other than the "
                         f"configured {configured} (e.g. {configured // 2 or 1} or {2 * configured})")
    return requested


def resolve_stage(args, spec, space: SearchSpace, arms_need_stage: bool = False, fetch: bool = True) -> dict:
    """The intermediate stage's fixed data, vision tower and caption languages (checked now); their data is checked
    now when a stage can run (a searched modality, or an arm with a stage) and ``fetch`` allows reading it."""
    from study.train.stage import StageConfig, stage_data

    stage = stage_sources(spec.offline_stand_in, args.intermediate_data, args.vision_tower, args.caption_languages)
    StageConfig(model=spec.key, modality="text", **stage)  # a bad --caption-languages stops here, stage or not
    params = {p.name: p for p in space.params}
    searched = "modality" in params and set(params["modality"].choices) != {DEFAULT_MODALITY}
    if not fetch or (not searched and not arms_need_stage):
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
    return newest_study(storage, prefix)


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
              "budget": settings.budget, "budget_rule": budget_label(settings.budget, settings.task.name),
              "search_space_sha256": space.sha256, "git_commit": commit,
              "searched": ",".join(p.name for p in space.params),
              "synonyms_source": synonym_source_label(settings.base.synonyms),
              **{f"{SPACE_PARAM_PREFIX}{p.name}": p.to_json() for p in space.params},
              **{f"base.{k}": v for k, v in settings.base.to_dict().items()},
              **{f"arm.{arm.name}.{k}": v for arm in settings.arms for k, v in arm.fixed.items()},
              **{f"arm.{arm.name}.searched": ",".join(p.name for p in settings.space_of(arm).params)
                 for arm in settings.arms if arm.tuned},
              **{f"intermediate.{k}": ",".join(v) if isinstance(v, tuple) else v for k, v in settings.stage.items()},
              **{f"version.{p}": version(p) for p in ("ray", "torch", "transformers", "optuna", "mlflow", "datasets")},
              **{f"version.{p}": v for p, v in scorer_versions().items()},
              **revision_params(settings.revisions)}
    tags = {"model": spec.key, "model_name": spec.name, "offline_stand_in": str(spec.offline_stand_in),
            "task": settings.task.name, "suite": settings.task.suite, "protocol": settings.task.protocol,
            "preset": settings.preset,
            "selection": "English dev only", "budget": settings.budget, **revision_params(settings.revisions)}
    return params, tags


def revision_params(revisions: dict[str, str]) -> dict[str, str]:
    """``revision.<dataset|model|github>.<repo>``: the commit (or the stand-in's package) each run read, as the
    parent run's params and every run's tags."""
    return {f"revision.{key.replace(':', '.', 1)}": value for key, value in revisions.items()}

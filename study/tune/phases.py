"""The study's two kinds of phase as Tuners — the search of a tuned arm, the confirm grid of every arm — each built
new or restored from its storage, and what each of its runs came to.

A phase is stored at ``<storage>/<study>/<phase>`` (``search-<arm>``, ``confirm``): a directory or a URI, read and
written by Ray through pyarrow's filesystem, so a ``--resume`` restores it from a local path, ``file://`` or
``s3://`` alike. A restored phase runs only its unfinished trials; a phase that had finished runs nothing, and its
``fit`` returns the results it had.
"""

from __future__ import annotations

import warnings

from study.core.arms import Arm
from study.core.protocol import SEARCH_PHASE, reached_last_step, selection_key
from study.tune.search_space import SearchSpace
from study.tune.settings import StudySettings
from study.tune.trial import CONFIRM_KEY, confirm_config, tune_constants

# what a phase's run came to: FINISHED (its last step), STOPPED_EARLY (ended by ASHA: a search result, ranked as
# finished), FAILED (an error), UNFINISHED (stopped by a signal, or never started: it resumes with the phase)
FINISHED, STOPPED_EARLY, FAILED, UNFINISHED = "FINISHED", "STOPPED_EARLY", "FAILED", "UNFINISHED"
ENDED = {FINISHED: "FINISHED", STOPPED_EARLY: "FINISHED", FAILED: "FAILED"}  # outcome -> its MLflow run's status


def run_outcome(result, tune_status: str | None, interrupted: bool, early_stops: bool) -> str:
    """What a run came to, from its Tune result (its error and last report), Tune's status of the trial (None when
    not known), whether a signal stopped the phase, and whether the phase stops runs early (the search's ASHA). A run
    is FINISHED only at its planned last step: Tune calls TERMINATED both a trial ASHA stopped and one its signal
    handling stopped, so Tune's word counts only for a phase no signal stopped, and only where ASHA ran."""
    if result.error is not None:
        return FAILED
    metrics = result.metrics or {}
    if reached_last_step(metrics):
        return FINISHED
    if early_stops and not interrupted and tune_status in (None, "TERMINATED") and metrics:
        return STOPPED_EARLY
    return UNFINISHED


def phase_outcomes(grid, interrupted: bool, early_stops: bool) -> list[tuple[object, str]]:
    """(result, outcome) of every trial of a phase's ``fit`` (a ``ResultGrid``: its trials, in the order of its
    results, carry Tune's statuses; any other list of results has none)."""
    results = list(grid)
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None)  # no public API (Ray 2.60)
    statuses = [trial.status for trial in trials] if trials and len(trials) == len(results) else [None] * len(results)
    return [(result, run_outcome(result, status, interrupted, early_stops))
            for result, status in zip(results, statuses, strict=True)]


def saved_phase(path: str) -> bool:
    """Whether a phase's Tuner is stored at ``path`` (its ``tuner.pkl``, read through the storage's filesystem)."""
    import ray.tune

    return ray.tune.Tuner.can_restore(path)


def _location(path: str) -> dict:
    """``RunConfig``'s name and storage_path of a phase stored at ``path`` (a URI keeps its scheme: no ``Path``)."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return {"name": name, "storage_path": parent}


class DefineByRun:
    """Optuna define-by-run for OptunaSearch: the YAML's suggestions, plus constants that ride along.
    A class, not a closure, because Tune pickles the searcher with the study state (for --resume)."""

    def __init__(self, space: SearchSpace, constants: dict):
        self.space, self.constants = space, constants

    def __call__(self, trial) -> dict:
        self.space.define_by_run(trial)  # no computation here: Optuna warns above 1 s
        return self.constants


def build_tuner(settings: StudySettings, arm: Arm, scaling, max_concurrent: int, callbacks: list, trainable,
                path: str, verbose: int = 0):
    """The search ``Tuner`` of a tuned arm: Optuna TPE (seeded, define-by-run; every modality among the first
    trials), ASHA on English dev, the MLflow callback, ``settings.trials`` trials, at most ``max_concurrent`` at
    once; stored at ``path`` (``<storage>/<study>/search-<arm>``)."""
    import optuna
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory" is not news
    space: SearchSpace = settings.space_of(arm)
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
            **_location(path), callbacks=callbacks,
            failure_config=ray.tune.FailureConfig(max_failures=0),  # worker failures are retried by Ray Train
            verbose=verbose))


def confirm_seeds(base_seed: int, seeds: int) -> list[int]:
    """The confirm phase's training seeds, shared by every arm (so arms pair by seed) and fresh (the search ran on
    ``base_seed``)."""
    return [base_seed + i for i in range(1, seeds + 1)]


def _confirm_dirname(trial) -> str:
    """Short trial directories for the confirm phase (the default would spell out its whole config)."""
    return f"confirm_{trial.trial_id}"


def confirm_tuner(args, settings, selected: dict, callbacks: list, trainable, max_concurrent, path: str):
    """The confirm phase's ``Tuner``: a grid over (arm, seed) of full trial configs (restored on --resume)."""
    import ray.tune

    if args.resume and saved_phase(path):
        return ray.tune.Tuner.restore(path, trainable=trainable)
    seeds = confirm_seeds(settings.base.seed, settings.seeds)
    grid = [confirm_config(selected[arm.name], seed, settings.alignment_probe) for arm in settings.arms
            for seed in seeds]
    return ray.tune.Tuner(trainable, param_space={CONFIRM_KEY: ray.tune.grid_search(grid)},
                          tune_config=ray.tune.TuneConfig(metric=selection_key(settings.task.metric), mode="max",
                                                          max_concurrent_trials=max_concurrent,
                                                          trial_dirname_creator=_confirm_dirname),
                          run_config=ray.tune.RunConfig(**_location(path), callbacks=callbacks,
                                                        verbose=int(args.verbose)))

"""Side by side with HF Trainer's search: the same plain fine-tuning search run through
``transformers.Trainer.hyperparameter_search(backend="ray")`` and through ``study tune --arms plain-tuned``, in one run.

What is matched. The model (registry key), the pocket task's English train and dev sets (the same seeded subsets),
the same tokenisation and max length (the Trainer trains on the rows ``study.data.pairs`` encodes for the study's
workers), the same optimizer steps, batch, AdamW with the preset's head learning rate and a linear schedule,
clipping, the same vocabulary trimming (exact, see study/vme/trim.py), the same evaluations (English dev and every
target language's test subset, scored by ``study.evaluation.scoring``, at the same steps), one checkpoint per
evaluation, the same trials, search space, Optuna TPE sampler (seed and options), ASHA scheduler, one trial at a time
and the same torch threads. The selection is English dev's best report of any trial (``RAY_SCOPE=all``), as the
study selects.

What differs. The search space is the model's YAML less the intermediate stage (``modality`` pinned to none: the
Trainer has none) and less ``k_copies`` (pinned at the preset's: it sets a trial's training rows, which a Trainer
trial cannot change), so both sides search what plain-tuned searches besides those (for the shipped spaces, the
learning rate). The data order and dropout draws come from each side's own sampler and seeding, so equal seeds do
not give equal runs. A Trainer trial trains in its Tune actor; a study trial starts a Ray Train worker group. The
Trainer's checkpoint per evaluation is the one it hands to Tune (its own copy in ``output_dir`` is skipped). The
study also scores its reference lines, runs one confirm seed (``--seeds 1``, the least it allows, alignment probe
off), writes MLflow (a sqlite store in the temp dir) and starts its own Python and Ray. So the headline ratio is the
**search phase only**: the study's ``search/plain-tuned/seconds`` (its Tuner built, fitted and its runs' ends
written) against the Trainer's ``hyperparameter_search`` call, each on an already started Ray, the Trainer side
first, then the study (not interleaved). The whole sides' times are printed beside it, for context, not compared.
It asserts nothing.

The Trainer needs ``accelerate`` (the ``bench`` extra):

    python benchmarks/hf_trainer_search.py                     # tiny, the preset's steps, 4 trials
    python benchmarks/hf_trainer_search.py --model e5-small --trials 4
    python benchmarks/hf_trainer_search.py --smoke             # the tiniest configuration (the test's)
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARM = "plain-tuned"
STAGE_PARAMS = ("modality", "intermediate_steps", "intermediate_lr", "vision_lr", "vision_train")
# pinned at the preset's value: k_copies sets a trial's training rows, which a Trainer trial cannot change
PINNED = STAGE_PARAMS + ("k_copies",)
# a searched study option -> the TrainingArguments field a Trainer trial sets (only these can be searched alike)
TRAINER_NAMES = {"lr": "learning_rate", "weight_decay": "weight_decay"}
SMOKE = {"trials": 1, "steps": 2}


def derived_space(model: str, steps: int | None, smoke: bool, directory: Path) -> Path:
    """The model's search space less the VME options and ``PINNED`` (what plain-tuned searches, the stage pinned to
    none), its smoke preset given ``steps``; written to ``directory``. ValueError naming a searched
    option the Trainer has no equivalent of."""
    import yaml

    from study.core.arms import VME_OPTIONS
    from study.tune.search_space import _with_include
    from study.tune.settings import SPACES_DIR

    path = SPACES_DIR / f"{model}.yaml"
    raw, _, _ = _with_include(path, yaml.safe_load(path.read_text()))  # one file: its include merged in
    raw.pop("include", None)
    raw["params"] = {k: v for k, v in raw["params"].items() if k not in VME_OPTIONS and k not in PINNED}
    unknown = set(raw["params"]) - set(TRAINER_NAMES)
    if unknown:
        raise ValueError(f"{model}: searched option(s) {', '.join(sorted(unknown))} have no Trainer equivalent here")
    preset = raw["presets"]["smoke"]
    if steps is not None:
        preset["max_steps"] = steps
        preset["eval_every"] = min(preset.get("eval_every") or steps, steps)
    if smoke:  # the fewest examples that still give the steps
        preset["max_train_examples"] = preset["batch_size"] * preset["max_steps"]
        preset["max_eval_examples"] = min(preset.get("max_eval_examples") or 8, 8)
    path = directory / f"{model}-plain.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def study_argv(args, space: Path, work: Path) -> list[str]:
    """``study tune``'s flags, for the subprocess and (with ``--plan``) for resolving the same settings here."""
    return ["--model", args.model, "--arms", ARM, "--search-space", str(space), "--trials", str(args.trials),
            "--seeds", "1", "--no-alignment-probe", "--max-concurrent", "1", "--storage", str(work / "storage"),
            "--mlflow-uri", f"sqlite:///{work}/mlflow.db", "--experiment", "hf-trainer-bench", "--name", "bench"]


def trainer_space(space):
    """The search space in Ray Tune's terms, named as the Trainer's arguments."""
    from ray import tune

    out = {}
    for p in space.params:
        name = TRAINER_NAMES[p.name]
        if p.choices:
            out[name] = tune.choice(list(p.choices))
        elif p.type == "int":
            out[name] = tune.lograndint(p.low, p.high + 1) if p.log else tune.randint(p.low, p.high + 1)
        else:
            out[name] = tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)
    return out


class Evaluation:
    """The study worker's evaluation (``FineTuneRun._evaluate``'s scores): English dev and each language's test
    subset, as the metric names the study reports."""

    def __init__(self, cfg, task, tokenizer):
        from study.core.protocol import EVAL_SUBSET_SEED
        from study.data.sources import load_split, subsample

        self.cfg, self.task, self.tokenizer = cfg, task, tokenizer
        self.dev = subsample(load_split(task, "dev", "en", cfg.data_dir), cfg.max_eval_examples, EVAL_SUBSET_SEED)

    def __call__(self, model) -> dict:
        import torch

        from study.core.protocol import EVAL_SUBSET_SEED, evaluation_metrics, selection_key
        from study.evaluation.scoring import evaluate_languages, score_supervised

        cfg, metric = self.cfg, self.task.metric
        model.eval()
        with torch.no_grad():
            dev, _ = score_supervised(self.task, self.dev, model, self.tokenizer, cfg.max_length, "dev-en")
            results = evaluate_languages(self.task, model, self.tokenizer, cfg.languages or self.task.languages,
                                         data_dir=cfg.data_dir, max_length=cfg.max_length,
                                         limit=cfg.max_eval_examples, seed=EVAL_SUBSET_SEED, log=None)
        model.train()
        tests = {lang: score for lang, (score, _) in results.items()}
        return {selection_key(metric): dev, **evaluation_metrics(metric, tests, english_dev=dev)}


def make_trainer(cfg, threads: int, out: Path):
    """A ``Trainer`` set up as the study's worker trains: its model, data, optimizer, evaluations and checkpoints."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from study.core.budget import total_steps
    from study.data.augment import load_synonyms
    from study.data.pairs import build_pairs
    from study.data.sources import load_split, subsample
    from study.data.tasks import get_task
    from study.models.registry import get_spec, load_model, load_tokenizer
    from study.vme.engine import make_optimizer
    from study.vme.trim import trim_vocabulary, untrimmed, used_token_ids

    task, spec = get_task(cfg.task), get_spec(cfg.model)
    tokenizer = load_tokenizer(spec)
    records = subsample(load_split(task, "train", "en", cfg.data_dir), cfg.max_train_examples, cfg.seed)
    pairs, _ = build_pairs(task, records, load_synonyms(cfg.synonyms, cfg.synonym_matching), tokenizer,
                           k=cfg.k_copies, seed=cfg.seed, max_length=cfg.max_length)
    train = [pair["x"] for pair in pairs]  # the rows a plain run trains on
    kept = used_token_ids((row["input_ids"] for row in train), tokenizer)
    steps = total_steps(len(train), cfg.batch_size, cfg.accumulation(1), 1, cfg.epochs, cfg.max_steps)
    evaluation = Evaluation(cfg, task, tokenizer)
    evaluation(load_model(spec, task.head, num_labels=max(len(task.labels), 2)))  # every side reads cached features

    def model_init(trial=None):
        torch.set_num_threads(threads)
        torch.manual_seed(cfg.seed)  # the head's initialisation, as the worker seeds it
        model = load_model(spec, task.head, num_labels=max(len(task.labels), 2))
        if cfg.weight_decay == 0:
            trim_vocabulary(model, kept)
        return model

    class EvaluateAtLastStep(TrainerCallback):
        """The study evaluates at the last step also when ``eval_every`` does not divide it."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_evaluate = control.should_save = True

    class BenchTrainer(Trainer):
        """The study's AdamW (fused, the head at ``head_lr``), its scoring, and one checkpoint per evaluation (the
        one Ray Tune keeps; the Trainer's own copy in ``output_dir`` is skipped, as the study keeps one)."""

        def create_optimizer(self, model=None):
            if self.optimizer is None:
                self.optimizer = make_optimizer(self.model, self.args.learning_rate, self.args.weight_decay,
                                                head_lr=cfg.head_lr)
            return self.optimizer

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            return {**evaluation(self.model), "step": self.state.global_step}

        def _save_checkpoint(self, model, trial):
            pass

        def save_model(self, output_dir=None, _internal_call=False):
            with untrimmed(self.model):
                super().save_model(output_dir, _internal_call)

    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.accumulation(1), learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        warmup_steps=int(cfg.warmup_ratio * steps), max_grad_norm=cfg.max_grad_norm, lr_scheduler_type="linear",
        seed=cfg.seed, eval_strategy="steps", eval_steps=cfg.eval_every or steps, save_strategy="steps",
        save_steps=cfg.eval_every or steps, do_eval=True, logging_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0, save_only_model=False)
    trainer = BenchTrainer(model_init=model_init, args=args, train_dataset=train, eval_dataset=evaluation.dev[:1],
                           data_collator=DataCollatorWithPadding(tokenizer), callbacks=[EvaluateAtLastStep()])
    return trainer, steps


def run_trainer_search(settings, threads: int, work: Path) -> tuple[float, list[dict], float]:
    """(seconds of ``hyperparameter_search``, each trial's English-dev-selected report with its configuration and
    whether the Trainer chose it, seconds of the side's data and search; Ray is up)."""
    import optuna
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from study.core.protocol import selection_key

    whole = time.perf_counter()
    cfg, space = settings.bases[ARM], settings.space_of(next(a for a in settings.arms if a.name == ARM))
    trainer, _ = make_trainer(cfg, threads, work / "trainer")
    key = selection_key(settings.task.metric)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _experimental_ok(optuna):  # the study's sampler, options and seed
        sampler = optuna.samplers.TPESampler(seed=space.seed, multivariate=True, group=True, constant_liar=True)
    started = time.perf_counter()
    best = trainer.hyperparameter_search(
        hp_space=lambda _: trainer_space(space), compute_objective=lambda metrics: metrics[key],
        n_trials=settings.trials, direction="maximize", backend="ray",
        search_alg=OptunaSearch(metric="objective", mode="max", sampler=sampler),
        scheduler=ASHAScheduler(metric="objective", mode="max", time_attr="training_iteration", max_t=100,
                                grace_period=1, reduction_factor=2),
        resources_per_trial={"cpu": 1}, max_concurrent_trials=1, storage_path=str(work / "trainer-ray"),
        name="hf-search", verbose=0)
    seconds = time.perf_counter() - started
    import ray

    from study.core.protocol import select_best

    study_names = {trainer: name for name, trainer in TRAINER_NAMES.items()}
    analysis, tried = best.run_summary, []
    for trial in sorted(analysis.trials, key=lambda t: t.trial_id):
        rows = [r for r in analysis.trial_dataframes[trial.trial_id].to_dict("records") if key in r]
        report = dict(select_best(rows, settings.task.metric)) if rows else {key: math.nan}
        config = {study_names[k]: v for k, v in trial.config.items() if k in study_names}
        tried.append({**report, "config": config, "chosen": trial.trial_id == best.run_id})
    ray.shutdown()
    return seconds, tried, time.perf_counter() - whole


class _experimental_ok:
    """Optuna marks ``multivariate`` and ``group`` experimental; the study uses both."""

    def __init__(self, optuna):
        self.optuna = optuna

    def __enter__(self):
        import warnings

        self.catch = warnings.catch_warnings()
        self.catch.__enter__()
        warnings.simplefilter("ignore", self.optuna.exceptions.ExperimentalWarning)

    def __exit__(self, *exc):
        return self.catch.__exit__(*exc)


def run_study(argv: list[str], work: Path, metric: str, searched: list[str]) -> tuple[float, list[dict], float]:
    """(the search phase's seconds, each search trial's English-dev-selected report with its ``searched`` values
    and whether the study chose it, seconds of the whole ``study tune`` command), the command run as a subprocess
    and read back from its MLflow store."""
    from study.core.protocol import (
        ARM_TAG,
        PHASE_TAG,
        RUN_KIND_TAG,
        SEARCH_PHASE,
        SELECTED_STEP_TAG,
        STUDY_RUN,
        select,
        selection_key,
        target_average_key,
    )
    from study.track.mlflow_store import client, safe_key

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "study", "tune", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    whole = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"study tune failed ({done.returncode}):\n{done.stderr[-3000:]}")
    mlflow = client(f"sqlite:///{work}/mlflow.db")
    experiment = mlflow.get_experiment_by_name("hf-trainer-bench").experiment_id
    parent = mlflow.search_runs([experiment], f"tags.{RUN_KIND_TAG} = '{STUDY_RUN}'")[0]
    runs = mlflow.search_runs([experiment], f"tags.{PHASE_TAG} = '{SEARCH_PHASE}' and tags.{ARM_TAG} = '{ARM}'")
    reports = []
    for run in sorted(runs, key=lambda r: r.data.tags.get("trial_id", "")):  # trial order: ties go to the earlier
        step = int(run.data.tags.get(SELECTED_STEP_TAG, -1))
        report = {"config": {name: run.data.params[name] for name in searched}}
        for name in (selection_key(metric), target_average_key(metric)):
            history = {m.step: m.value for m in mlflow.get_metric_history(run.info.run_id, safe_key(name))}
            report[name] = history.get(step, math.nan)
        reports.append(report)
    chosen = select(range(len(reports)), score=lambda i: reports[i][selection_key(metric)], order=lambda i: i)
    for i, report in enumerate(reports):
        report["chosen"] = i == chosen
    return parent.data.metrics[safe_key(f"search/{ARM}/seconds")], reports, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="registry key with a search space (default tiny)")
    parser.add_argument("--trials", type=int, help="search trials on each side (default: the smoke preset's 4)")
    parser.add_argument("--steps", type=int, help="optimizer steps per trial (default: the smoke preset's)")
    parser.add_argument("--smoke", action="store_true", help=f"the tiniest configuration: {SMOKE}, few examples")
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.steps = args.trials or SMOKE["trials"], args.steps or SMOKE["steps"]
    args.trials = args.trials or 4
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    from study.train.ray_setup import init_ray

    started = time.perf_counter()
    os.environ["RAY_SCOPE"] = "all"  # the Trainer selects the best report of any step, as English dev does
    init_ray(log_to_driver=False)  # before anything imports ray, as ``study tune`` starts it
    ray_start = time.perf_counter() - started

    from study.cli.tune import parse_args
    from study.tune.settings import resolve

    work = Path(tempfile.mkdtemp(prefix="hf-trainer-bench-"))
    space = derived_space(args.model, args.steps, args.smoke, work)
    argv = study_argv(args, space, work)
    settings = resolve(parse_args([*argv, "--plan"]))  # the study's own settings; --plan touches nothing
    cfg = settings.bases[ARM]
    threads = max(1, (os.cpu_count() or 1))  # what the study gives its one concurrent trial (driver.concurrency)
    metric = settings.task.metric
    print(f"model {args.model}, task {cfg.task}, {settings.trials} trial(s) of {cfg.max_steps or 'all'} step(s), "
          f"batch {cfg.batch_size}, max length {cfg.max_length}, evaluations every {cfg.eval_every or 'epoch'}, "
          f"searched: {', '.join(p.name for p in settings.space_of(settings.arms[0]).params)}; one trial at a time, "
          f"{threads} torch thread(s)", flush=True)

    searched = [p.name for p in settings.space_of(settings.arms[0]).params]
    trainer_s, trainer_trials, trainer_whole = run_trainer_search(settings, threads, work)
    trainer_whole += ray_start
    study_s, study_trials, study_whole = run_study(argv, work, metric, searched)
    print_comparison(metric, ("HF Trainer", trainer_s, trainer_whole, trainer_trials),
                     ("study tune", study_s, study_whole, study_trials))
    shutil.rmtree(work, ignore_errors=True)


def print_comparison(metric: str, *sides) -> None:
    """Each side's trials (the chosen one marked), the search-phase ratio and whether the two selections agree."""
    from study.core.protocol import selection_key, target_average_key

    dev, target = selection_key(metric), target_average_key(metric)
    print(f"{'side':<12}{'trial':>6}{'dev':>9}{'target':>9}  configuration")
    for name, _, _, trials in sides:
        for number, trial in enumerate(trials, 1):
            config = ", ".join(f"{k}={float(v):.4g}" for k, v in trial["config"].items())
            print(f"{name:<12}{number:>6}{trial[dev]:>9.4f}{trial[target]:>9.4f}  {config}"
                  + ("  <- selected" if trial["chosen"] else ""))
    chosen = {name: next(t for t in trials if t["chosen"]) for name, _, _, trials in sides}
    for name, seconds, whole, _ in sides:
        config = ", ".join(f"{k}={float(v):.4g}" for k, v in chosen[name]["config"].items())
        print(f"{name} selected: {config}; English dev {metric} {chosen[name][dev]:.4f}, target average "
              f"{chosen[name][target]:.4f}; search phase {seconds:.1f} s, whole side {whole:.1f} s")
    (trainer_name, trainer_s, trainer_whole, _), (study_name, study_s, study_whole, _) = sides
    print(f"wall-time ratio, search phase (this tool / Trainer): {study_s / trainer_s:.2f}  (goal <= 0.8)")
    print(f"whole sides, for context (not like for like): {study_name} {study_whole:.1f} s, {trainer_name} "
          f"{trainer_whole:.1f} s")
    a, b = chosen[study_name], chosen[trainer_name]
    same = {k: math.isclose(a[k], b[k], abs_tol=1e-9) for k in (dev, target)}
    print(f"selected scores agree: English dev {'yes' if same[dev] else 'no'} ({a[dev]:.4f} vs {b[dev]:.4f}), "
          f"target average {'yes' if same[target] else 'no'} ({a[target]:.4f} vs {b[target]:.4f})")

if __name__ == "__main__":
    main()

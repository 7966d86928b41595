"""``study tune --model mbert`` (also ``python -m study.tune``): a Ray Tune + Optuna study of the VME objective's
arms (``study.core.arms``), one Ray Train run per trial, every trial in MLflow, resumable.

Two phases. *Search*: each tuned arm's search space, the same number of trials per tuned arm (OptunaSearch, ASHA on
English dev). *Confirm*: every arm's English-dev-selected configuration (a tuned arm's best search trial, a fixed
arm's pinned point) re-run on the same fresh seeds at the full budget, no early stopping; only confirm runs enter the
report's comparisons.

Layers (as in Ray's Train-in-Tune guide): ``train_fn_per_worker`` (study.train.finetune) runs on every worker;
``train_driver_fn`` below is the Tune trial, building a ``TorchTrainer`` with a stable run name and
``TuneReportCallback``; the ``Tuner`` wraps the driver with OptunaSearch (TPE, define-by-run from the YAML search
space), ASHA on the English-dev metric, ``max_concurrent_trials`` from the cluster's resources, and the MLflow
callback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path

from study.cli.common import add_data_dir_flag, add_hub_lock_flag, add_mlflow_uri_flag, add_storage_flag
from study.core.arms import BUDGETS, DEFAULT_ARMS, OFFLINE_DEFAULT_ARMS, PRESET_BUDGET
from study.core.devices import GPUS
from study.core.errors import StudyError
from study.core.faults import FaultHooks
from study.data.captions import FLICKR30K
from study.data.multi30k import MULTI30K
from study.train.ray_setup import add_scaling_flags, check_cluster, init_ray
from study.train.stage import CLIP_TOWER, add_caption_languages_flag
from study.tune.driver import _run
from study.tune.interrupts import INTERRUPTS, StudyInterrupted
from study.tune.settings import SUITE_TASK, resolve


def parse_args(argv):
    """The ``study tune`` flags."""
    parser = argparse.ArgumentParser(prog="study tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="e5-small", help="registry key; the search space is "
                        "search_spaces/<model>.yaml (default e5-small, the offline stand-in)")
    parser.add_argument("--search-space", type=Path, help="a search-space YAML (default: by model)")
    parser.add_argument("--task", help="XTREME-R or pocket task (default: the search space's)")
    parser.add_argument("--suite", choices=tuple(SUITE_TASK), help="pocket or xtreme-r (default: the task's)")
    parser.add_argument("--preset", choices=("smoke", "paper"), help="smoke = minutes on a laptop CPU, paper = the "
                        "reference scale (default: smoke for offline stand-ins, paper otherwise)")
    parser.add_argument("--arms", help="comma-separated arms to compare (study.core.arms): plain, vme-reference, "
                        "vme-tuned, plain-tuned, augmentation-only (default: "
                        f"{','.join(OFFLINE_DEFAULT_ARMS)} for offline stand-ins, "
                        f"{','.join(DEFAULT_ARMS)} otherwise)")
    parser.add_argument("--budget", choices=BUDGETS, default=PRESET_BUDGET,
                        help="training length of every arm: preset = the preset's epochs (paper: XTREME-R's); "
                        "authors = the VME authors' released scripts (XNLI: 1 epoch over 3 copies)")
    parser.add_argument("--experiment-design", choices=("arms", "modality"), default="arms",
                        help="arms: the --arms as they are; modality: the controlled modality experiment, each fixed "
                        "arm of --arms also after a text, multimodal and multimodal-shuffled intermediate stage")
    parser.add_argument("--stage-dose", type=int, metavar="STEPS",
                        help="with --experiment-design modality: also run every stage for STEPS steps instead of the "
                        "configured ones (e.g. half or double), as arms <arm>+<modality>@STEPS, contrasted in the "
                        "report with the same stage at the configured length (default: off; it adds three arms per "
                        "fixed arm)")
    parser.add_argument("--trials", type=int, help="search trials per tuned arm (default: smoke 4, paper 20)")
    parser.add_argument("--seeds", type=int, help="confirm runs per arm, on fresh seeds shared by every arm (default: "
                        "smoke 3, paper 5)")
    parser.add_argument("--alignment-probe", action=argparse.BooleanOptionalAction,
                        help="probe every confirm run's encoder, and the pretrained one, on parallel sentences "
                        "(bitext retrieval, centroid distances to English; study/evaluation/probe.py; alignment_pairs "
                        "pairs a language) for the report's alignment section (default: on for the pocket suite "
                        "and in --experiment-design modality, which stops before Ray starts when the sentences "
                        "cannot be read; off otherwise for XTREME-R, whose Tatoeba sentences it would read)")
    add_scaling_flags(parser, "Ray Train workers per trial")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own output (progress tables, the workers' "
                        "logs) on the console instead of only in Ray's log files")
    parser.add_argument("--dashboard", action="store_true", help="start Ray's dashboard (bound to 127.0.0.1) with "
                        "a local Ray instance")
    parser.add_argument("--max-concurrent", type=int, help="concurrent trials (default: from cluster resources)")
    add_data_dir_flag(parser)
    add_hub_lock_flag(parser)
    add_storage_flag(parser)
    parser.add_argument("--name", help="study name (default: study-<model>-<task>-<preset>-<time>; with --resume: "
                        "the newest such study)")
    add_mlflow_uri_flag(parser)
    parser.add_argument("--experiment", help="MLflow experiment (default: vme-<suite>; compare models in one)")
    parser.add_argument("--resume", action="store_true", help="continue the study of this name after a crash")
    parser.add_argument("--implementation", choices=("fast", "reference"), default="fast",
                        help="training step: fast (one pass, one captured layer, fused AdamW, trimmed vocabulary) or "
                        "reference (the authors' two eager passes), for comparison; same results within fp32")
    parser.add_argument("--intermediate-data", help="image-caption data of the intermediate stage: emoji (offline), "
                        "a hub dataset id or local dataset directory, or a folder with captions.jsonl/tsv (default: "
                        f"emoji for offline stand-ins, {FLICKR30K} otherwise, English only; {MULTI30K}: Multi30K, "
                        "the same images with en, de, fr, cs captions)")
    parser.add_argument("--vision-tower", help="multimodal stage's vision tower: scratch (a small CNN trained from "
                        f"scratch) or a CLIP vision model id/directory (default: scratch for offline stand-ins, "
                        f"{CLIP_TOWER} otherwise)")
    add_caption_languages_flag(parser)
    parser.add_argument("--plan", action="store_true", help="print the study's plan — runs, optimizer steps, "
                        "training examples and evaluation items per arm and phase, the estimated time on "
                        "--device-profile with the source of every rate — and exit: no Ray, nothing trained")
    parser.add_argument("--device-profile", help="the device the plan estimates for (--plan, and the estimate a "
                        "running study logs as plan/*): cpu (this machine's) or a GPU kind: "
                        f"{', '.join(GPUS)} (default: cpu, or this machine's GPU with --gpus-per-worker)")
    FaultHooks.add_flag(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """``python -m study.tune``: run (or ``--resume``) a study — search each tuned arm, confirm every arm on fresh
    seeds — and record everything in MLflow. SIGINT or SIGTERM stops it with its runs KILLED (a second one at
    once), exit status 128 + the signal's number, and the command that resumes it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if not args.verbose:  # the console is study.tune.console's; Tune's tables and MLflow's notices stay out of it
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose 0: Tune's legacy reporter, which is silent
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        # a failed trial's traceback goes to its error.txt only: the console shows its last line (study.tune.console)
        os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    INTERRUPTS.install()
    names: list[str] = []  # the study's name, once resolved: the resume line names it
    said = []

    def say_interrupted() -> None:  # once, before Ray shuts down (which may hang when Ray got the signal too)
        if not said:
            said.append(True)
            print(interrupted_line(INTERRUPTS.signum, argv, names[0] if names else None, *names[1:]),
                  file=sys.stderr, flush=True)

    INTERRUPTS.on_overdue.append(say_interrupted)
    try:
        settings = resolve(args)
        if args.plan:  # what the study would cost, from its resolved settings: no Ray, nothing trained
            from study.tune.plan import build_plan
            from study.tune.plan_table import format_plan, plan_device

            print(format_plan(build_plan(settings, plan_device(args.device_profile, args.gpus_per_worker),
                                         args.workers, args.gpus_per_worker, args.max_concurrent)))
            return 0
        names += [settings.name, settings.storage]
        init_ray(dashboard=args.dashboard, log_to_driver=args.verbose)  # before this process imports ray
        INTERRUPTS.install()  # ray.init set its own SIGTERM handler
        check_cluster(settings.storage)
        return _run(args, settings)
    except KeyboardInterrupt as stop:  # StudyInterrupted, or Ray's own when the second signal came inside its wait
        if INTERRUPTS.signum is None:
            INTERRUPTS.signum = signal.SIGINT
        say_interrupted()
        return stop.exit_code if isinstance(stop, StudyInterrupted) else 128 + INTERRUPTS.signum
    finally:
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()


def interrupted_line(signum: int, argv: list[str], name: str | None, storage: str | None = None) -> str:
    """The study's last line after a signal: the command that resumes it (the same flags, ``--name`` and
    ``--resume``), or that the study had not started (nothing in its storage: the same command starts it)."""
    from study.tune.resume import study_exists

    signame = signal.Signals(signum).name
    try:
        started = name is not None and (storage is None or study_exists(storage, name))
    except StudyError:
        started = True  # the storage does not answer: the study may be there
    if not started:
        return f"interrupted ({signame}) before the study started: run the same command to start it"
    kept, skip = [], False
    for arg in argv:
        if skip or arg == "--resume" or arg.startswith("--name="):
            skip = False
            continue
        if arg == "--name":
            skip = True
            continue
        kept.append(arg)
    return f"interrupted ({signame}): resume with {shlex.join(['study', 'tune', *kept, '--name', name, '--resume'])}"

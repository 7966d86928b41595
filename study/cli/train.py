"""``study train`` (also ``python -m study.train``): one fine-tuning run (optionally after its intermediate stage)
on Ray Train, without Tune — the pipeline of one study trial (``study.train.pipeline.run_pipeline``), for debugging
and single experiments."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from study.cli.common import add_storage_flag
from study.core.cache import write_json_atomic
from study.core.errors import StudyError, run_cli
from study.core.faults import FaultHooks
from study.core.protocol import DEFAULT_MODALITY, MODALITIES, language_scores, select_best, selection_key
from study.data.tasks import get_task
from study.train.checkpoints import MODEL_DIR
from study.train.config import TrainConfig
from study.train.pipeline import run_pipeline, validate
from study.train.ray_setup import Scaling, add_scaling_flags, fit_or_fail, init_ray
from study.train.worker import WorkerConfig
from study.tune.summary import print_report_families

# --- CLI: python -m study.train -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``study train`` flags: how the run is spread and stored, then every ``TrainConfig`` field with the
    field's own help text and default."""
    from dataclasses import fields

    from study.train.config import cli_type
    from study.train.stage import VISION_TRAIN, StageConfig, add_caption_languages_flag

    parser = argparse.ArgumentParser(prog="study train", description="One VME fine-tuning run "
                                     "(a Ray Train TorchTrainer, no Tune), for debugging and single experiments.")
    add_scaling_flags(parser)
    add_storage_flag(parser, "checkpoint storage: dir or s3://...")
    parser.add_argument("--name", help="run name (default: model-task-seed-time); reuse a name to resume it")
    stage = parser.add_argument_group("intermediate stage (as a study trial runs it; default: none)")
    stage.add_argument("--modality", choices=MODALITIES, default=DEFAULT_MODALITY,
                       help="none, or an image-caption stage before fine-tuning: text (a partner caption) or "
                       "multimodal (the image)")
    defaults = {f.name: f.default for f in fields(StageConfig)}
    stage.add_argument("--intermediate-steps", type=int, help=f"stage steps (default {defaults['steps']})")
    stage.add_argument("--intermediate-lr", type=float, help=f"stage backbone learning rate (default {defaults['lr']})")
    stage.add_argument("--vision-train", choices=VISION_TRAIN, help="multimodal: which part of a pretrained vision "
                       f"tower trains (default {defaults['vision_train']})")
    stage.add_argument("--vision-lr", type=float,
                       help=f"multimodal: vision learning rate (default {defaults['vision_lr']})")
    stage.add_argument("--intermediate-data", help="image-caption data (default: emoji for offline stand-ins, "
                       "Flickr30k otherwise)")
    stage.add_argument("--vision-tower", help="multimodal: scratch or a CLIP vision model (default: scratch for "
                       "offline stand-ins, CLIP otherwise)")
    add_caption_languages_flag(stage)
    for option in fields(TrainConfig):
        flag, help_text = f"--{option.name.replace('_', '-')}", option.metadata["help"]
        if option.name == "languages":
            parser.add_argument(flag, type=lambda text: tuple(text.split(",")), help=f"{help_text}; comma-separated")
        else:
            parser.add_argument(flag, type=cli_type(option), default=option.default,
                                help=f"{help_text} (default: {option.default})")
    FaultHooks.add_flag(parser)
    return parser


def main(argv=None) -> int:
    """``python -m study.train``: validate the options, run one ``TorchTrainer`` and print the step English dev
    selects with its per-language and per-family scores."""
    args = build_parser().parse_args(argv)
    cfg = TrainConfig.from_dict({k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__})
    validate(cfg, args.workers)
    stage = _stage_of(args, cfg)
    scaling = Scaling.from_args(args)
    name = args.name or f"{Path(cfg.model).name}-{cfg.task}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    record = claim_run(Path(args.storage) / name, cfg, stage)
    init_ray()

    def print_stage(result) -> None:
        print(f"[train] intermediate stage ({stage.modality}): {result.directory}"
              f"{' (cached)' if result.cache_hit else ''}; fine-tuning starts from it", file=sys.stderr, flush=True)

    job = WorkerConfig(cfg, faults=args.inject_faults)
    metric = selection_key(get_task(cfg.task).metric)
    result = fit_or_fail(lambda: run_pipeline(job, stage, scaling, args.storage, name, checkpoint_metric=metric,
                                              on_stage=print_stage), "training")
    write_json_atomic(record, {**json.loads(record.read_text()), "finished": True})
    print_summary(cfg, result)
    return 0


RUN_RECORD = "study_train.json"  # in the run's folder: the options it started with, and whether it finished


def claim_run(folder: Path, cfg: TrainConfig, stage) -> Path:
    """The run's record (``folder/RUN_RECORD``), written on first use. Reusing ``--name`` resumes that run, so it
    must bring the options the run started with (resumed under others, one checkpoint would mix two trainings and
    carry the new options' record, e.g. an init_checkpoint it never started from) and the run must not have
    finished (it would train past its last step). StudyError otherwise, before Ray starts."""
    from dataclasses import asdict

    options = json.loads(json.dumps({"train": asdict(cfg), "stage": asdict(stage) if stage else None}))
    path = folder / RUN_RECORD
    if not path.is_file():
        write_json_atomic(path, options)
        return path
    stored = json.loads(path.read_text())
    if stored.get("finished"):
        raise StudyError(f"run {folder.name!r} already finished ({path}): choose a new --name")
    before, now = stored["train"], options["train"]
    changed = sorted(k for k in {*before, *now} if before.get(k) != now.get(k))
    changed += ["intermediate stage"] if stored["stage"] != options["stage"] else []
    if changed:
        raise StudyError(f"--name {folder.name} resumes a run that started with other options ({', '.join(changed)}): "
                         "resume it with the same options, or choose a new --name")
    return path


def _stage_of(args, cfg: TrainConfig):
    """The ``StageConfig`` the stage flags ask for (None for ``--modality none``), checked with its data before Ray
    starts, as ``study tune`` builds a trial's stage."""
    if args.modality == DEFAULT_MODALITY:
        stage_flags = [flag for flag, value in (("--caption-languages", args.caption_languages),
                                                ("--intermediate-data", args.intermediate_data),
                                                ("--vision-tower", args.vision_tower)) if value is not None]
        if stage_flags:
            raise StudyError(f"{', '.join(stage_flags)}: only an intermediate stage reads this, and --modality "
                             f"{DEFAULT_MODALITY} runs none: add --modality text or multimodal, or drop it")
        return None
    if cfg.init_checkpoint:
        raise StudyError("--init-checkpoint and --modality both choose the encoder to start from: pass one of them")
    from study.models.registry import get_spec
    from study.train.stage import stage_config, stage_data, stage_sources
    from study.tune.search_space import STAGE_PARAMS

    searched = {name: getattr(args, name) for name in STAGE_PARAMS if getattr(args, name) is not None}
    stage = stage_config(cfg.model, cfg.seed, searched,
                         stage_sources(get_spec(cfg.model).offline_stand_in, args.intermediate_data, args.vision_tower,
                                       args.caption_languages))
    stage_data(stage)
    return stage


def print_summary(cfg: TrainConfig, result) -> None:
    """Print the step English dev selects (``protocol.select_best`` over the kept checkpoints), its
    per-language and per-family scores, and the checkpoint's model directory."""
    from study.core.languages import get_language
    from study.data.tasks import get_task
    from study.models.registry import checkpoint_task

    task = get_task(cfg.task)
    metric = task.metric
    best = select_best([m for _, m in result.best_checkpoints], metric)
    init_task = checkpoint_task(cfg.init_checkpoint) if cfg.init_checkpoint else None
    print(f"\nprotocol: {task.fine_tuned_protocol(task.name, init_task)}")
    checkpoint = next(c for c, m in result.best_checkpoints if m is best)
    print(f"selected on English dev: step {best['step']}, {selection_key(metric)} {best[selection_key(metric)]:.4f}")
    print(f"{'language':<10}{'family':<24}{metric:>10}")
    for lang, value in sorted(language_scores(best, metric).items()):
        print(f"{lang:<10}{get_language(lang).family:<24}{value:>10.4f}")
    print_report_families(best, metric)
    print(f"checkpoint: {checkpoint.path}/{MODEL_DIR}  (study evaluate --checkpoint ... --task {cfg.task})")


if __name__ == "__main__":
    run_cli(main)

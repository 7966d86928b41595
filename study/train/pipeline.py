"""The driver side of one training run: check a config before any worker starts (``validate``), build the Ray
Train ``TorchTrainer`` (``build_trainer``) and chain the intermediate stage and fine-tuning (``run_pipeline``), as a
study trial and ``study train`` both run it."""

from __future__ import annotations

import functools
from pathlib import Path

from study.core.errors import StudyError
from study.train.config import TrainConfig
from study.train.ray_setup import Scaling, torch_trainer
from study.train.worker import WorkerConfig, train_fn_per_worker


def validate(cfg: TrainConfig, workers: int = 1, fetch: bool = True) -> None:
    """Everything that can be checked without a worker: task/model fit, ap_layer depth, checkpoint origin, the
    global batch over ``workers`` ranks. ``fetch=False`` (a study's plan) downloads nothing and reads a registry
    model's shape instead of its config (no hub, no weights)."""
    from transformers import AutoConfig

    from study.data.features import qa_window
    from study.data.tasks import DUAL_ENCODER, QA, get_task
    from study.models.registry import CHECKPOINT_META, get_spec, model_path, model_positions, read_checkpoint_meta

    cfg.accumulation(workers)  # global_batch must split over the workers
    task, spec = get_task(cfg.task), get_spec(cfg.model)
    if task.name in DUAL_ENCODER:
        raise StudyError(f"task {task.name!r} is scored by a dual encoder, which study dual-encoder --task "
                         f"{task.name} fine-tunes; study train fine-tunes tasks with a head")
    if not task.needs_training:
        raise StudyError(f"task {task.name!r} is a retrieval task with no English training data: fine-tune on a "
                         f"task with a head (e.g. xnli, pocket-topic) and evaluate retrieval with study.cli.evaluate")
    task.check_languages(list(cfg.languages) if cfg.languages else None)
    if task.kind == QA:
        qa_window(cfg.max_length, 0)  # too short a window stops here, before Ray starts
    _check_data_dir(cfg, task, fetch)
    from study.data.augment import COUNTER_FITTED, counter_fitted_file

    if cfg.synonyms == COUNTER_FITTED:
        if fetch:  # downloaded (once) on the driver: offline, the one-line error comes before Ray starts
            counter_fitted_file()
    elif cfg.synonyms != "roget" and not Path(cfg.synonyms).is_file():
        raise StudyError(f"--synonyms {cfg.synonyms}: no such file; pass roget, counter-fitted or a neighbour JSON "
                         "file")
    model_config = spec.shape if spec.shape and not fetch else AutoConfig.from_pretrained(model_path(spec))
    depth, positions = model_config.num_hidden_layers, model_positions(model_config)
    if cfg.ap_layer >= depth:
        raise StudyError(f"ap_layer={cfg.ap_layer} is out of range for {spec.key}: choose 0..{depth - 1}")
    if cfg.max_length > positions:
        raise StudyError(f"--max-length {cfg.max_length} is longer than {spec.key} can read: at most {positions}")
    if fetch and task.kind != QA:  # QA's window has its own check above
        # a pair's special tokens and a token of each text: shorter, an input holds no word to learn from (a tagging
        # input with no labelled token gives a NaN loss in every worker)
        shortest = _pair_specials(spec.key) + 2
        if cfg.max_length < shortest:
            raise StudyError(f"--max-length {cfg.max_length} is too short for {spec.key} on {task.name}: an input "
                             f"needs at least {shortest} tokens (its special tokens and a word)")
    if cfg.init_checkpoint:
        meta = Path(cfg.init_checkpoint) / CHECKPOINT_META
        if not meta.is_file():
            raise StudyError(f"init_checkpoint {cfg.init_checkpoint} is not a study model directory ({meta.name} "
                             "missing)")
        record = read_checkpoint_meta(cfg.init_checkpoint)
        if record["model_key"] != spec.key:
            raise StudyError(f"init_checkpoint {cfg.init_checkpoint} was trained from model {record['model_key']!r}, "
                             f"not {spec.key!r}: use a checkpoint of the same model")
        task.check_checkpoint_head(record.get("task"), f"init_checkpoint {cfg.init_checkpoint}")


@functools.lru_cache(maxsize=8)
def _pair_specials(model: str) -> int:
    """The special tokens the model's tokenizer adds to a pair of texts (loaded once per process: a study validates
    each searched value)."""
    from study.models.registry import get_spec, load_tokenizer

    return load_tokenizer(get_spec(model)).num_special_tokens_to_add(pair=True)


def _check_data_dir(cfg: TrainConfig, task, fetch: bool) -> None:
    """--data-dir is a directory; with ``fetch`` (a run, not a plan), every file the run reads there parses."""
    if not cfg.data_dir:
        return
    if not Path(cfg.data_dir).is_dir():
        raise StudyError(f"--data-dir {cfg.data_dir} is not a directory")
    if fetch:
        root = Path(cfg.data_dir).resolve()
        files = tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*") if p.is_file()))
        _check_files(task.name, tuple(cfg.languages or task.languages), str(root), files)


@functools.lru_cache(maxsize=8)
def _check_files(task: str, languages: tuple[str, ...], data_dir: str, files: tuple) -> None:
    """Every file a run reads under --data-dir, parsed once per process while ``files`` (the directory's paths, times
    and sizes) stay the same: a study validates each arm's options."""
    from study.data.sources import check_local_files
    from study.data.tasks import get_task

    check_local_files(get_task(task), languages, data_dir)


def build_trainer(job: WorkerConfig, scaling: Scaling, storage: str, name: str, *, checkpoint_metric: str,
                  callbacks=(), max_failures: int = 2):
    """The ``TorchTrainer`` of one fine-tuning run: ``train_fn_per_worker`` on ``job``, keeping the two checkpoints
    with the best ``checkpoint_metric`` (English dev: ``protocol.selection_key``), restarted from the last one up to
    ``max_failures`` times when a worker or node is lost; an error that would come back (a StudyError such as a
    non-finite loss, undecodable data) ends it at once (``study.train.fail_fast``)."""
    import ray.train

    checkpoints = ray.train.CheckpointConfig(num_to_keep=2, checkpoint_score_order="max",
                                             checkpoint_score_attribute=checkpoint_metric)
    return torch_trainer(train_fn_per_worker, job.to_dict(), scaling, storage, name, callbacks=callbacks,
                         max_failures=max_failures, checkpoint_config=checkpoints)


def run_pipeline(job: WorkerConfig, stage, scaling: Scaling, storage: str, name: str, *, checkpoint_metric: str,
                 callbacks=(), on_stage=None):
    """One configuration end to end, as a Tune trial runs it and as ``python -m study.train`` runs it alone: the
    intermediate stage when ``stage`` (an ``intermediate.StageConfig``) is given — cached across runs, then
    ``on_stage(StageResult)`` — and fine-tuning from its encoder. Returns Ray Train's Result."""
    if stage is not None:
        from dataclasses import replace

        from study.train.stage import run_stage

        result = run_stage(stage, scaling, storage)
        if on_stage:
            on_stage(result)
        job = replace(job, train=replace(job.train, init_checkpoint=result.directory))
    return build_trainer(job, scaling, storage, name, checkpoint_metric=checkpoint_metric, callbacks=callbacks).fit()

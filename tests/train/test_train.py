"""Fine-tuning under Ray Train: DDP on CPU, dev-only selection, fault tolerance and exact resume."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from study.core.errors import StudyError
from study.core.faults import NO_FAULTS, FaultHooks
from study.core.protocol import selection_key
from study.train.config import TrainConfig
from study.train.pipeline import build_trainer, validate
from study.train.ray_setup import Scaling
from study.train.worker import WorkerConfig

pytestmark = pytest.mark.e2e

TOY = dict(model="tiny", task="pocket-topic", ap_layer=5, batch_size=8, max_length=32, max_eval_examples=24,
           languages=("en", "de", "ja", "uk"))


@pytest.fixture(scope="module")
def ray_local():
    import ray

    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"  # read by the Train controller (inherits this env)
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             configure_logging=False)
    yield
    ray.shutdown()
    del os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]


def _fit(tmp_path, name, workers=2, faults=NO_FAULTS, **options):
    cfg = TrainConfig(**{**TOY, **options})
    validate(cfg)
    result = build_trainer(WorkerConfig(cfg, faults=faults), Scaling(workers=workers, cpus_per_worker=0.5),
                           str(tmp_path), name, checkpoint_metric=selection_key("accuracy")).fit()
    assert result.error is None, result.error
    return result


@pytest.mark.e2e
def test_two_worker_ddp_run_learns_and_reports_every_language_and_family(ray_local, tmp_path):
    result = _fit(tmp_path, "learn", max_train_examples=32, epochs=20, lr=2e-3, head_lr=1e-2, eval_every=10,
                  max_steps=30)
    reports = sorted((m for _, m in result.best_checkpoints), key=lambda m: m["step"])
    first, last = reports[0], result.metrics  # the earliest kept checkpoint, and the final report
    assert last["step"] == 30 and last["train/examples_per_s"] > 0
    assert result.metrics["loss/task"] < 0.85 * 2.833  # ln(17): the untrained head's cross-entropy
    assert last["loss/task"] <= first["loss/task"], (first["loss/task"], last["loss/task"])
    for lang in TOY["languages"]:
        assert f"test/accuracy/{lang}" in last
    for family in ("Indo-European", "Japonic"):
        assert f"family/accuracy/{family}" in last
    assert {"dev_en/accuracy", "loss/ep", "loss/ap", "loss/robust", "gap_to_en/accuracy", "test/accuracy/avg",
            "script/accuracy/Cyrillic"} <= set(last)
    model_dir = result.checkpoint.path + "/model"
    assert os.path.isfile(model_dir + "/config.json") and os.path.isfile(model_dir + "/study_model.json")


@pytest.mark.e2e
def test_fault_tolerance_and_exact_resume(ray_local, tmp_path):
    options = dict(max_train_examples=48, epochs=2, eval_every=2, max_steps=6, lr=5e-4)
    clean = _fit(tmp_path, "clean", **options)
    marker = tmp_path / "failed-once"
    # Ray's controller collects reports every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (0.2 s in this Ray, see ray_local):
    # a worker that died sooner after the step-2 report would restart from scratch, not from the checkpoint
    crashed = _fit(tmp_path, "crashed", faults=FaultHooks(fail_at_step=3, fail_marker=str(marker), step_delay_s=1.0),
                   **options)
    assert marker.exists()  # a worker process really died after step 3 ...
    assert crashed.metrics["train/resumed_from_step"] == 2 and clean.metrics["train/resumed_from_step"] == 0
    assert crashed.metrics["step"] == clean.metrics["step"] == 6  # ... and the run went on from step 2
    def by_step(result):
        return {m["step"]: m for _, m in result.best_checkpoints}

    for step, metrics in by_step(clean).items():
        other = by_step(crashed)[step]
        for key in ("loss/total", "loss/ep", "loss/ap", "dev_en/accuracy", "test/accuracy/de"):
            assert other[key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-6), (step, key)


@pytest.mark.e2e
def test_a_non_finite_loss_fails_the_run_once_without_retries(ray_local, tmp_path):
    """The error comes back on every attempt: Ray Train's controller ends the run at the first (a controller error,
    not the worker-group error it raises after max_failures retries), and the CLI says it in one line."""
    import ray.train

    from study.train.ray_setup import fit_or_fail

    faults = FaultHooks(nan_marker=str(tmp_path / "nan-marker"))
    with pytest.raises(ray.train.ControllerError) as raised:
        _fit(tmp_path, "nan", faults=faults, max_train_examples=16, max_steps=4, eval_every=2)
    assert isinstance(raised.value.controller_failure, StudyError), raised.value
    with pytest.raises(StudyError, match=r"^training failed: the loss became non-finite at step 1 .*this run stops$"):
        fit_or_fail(lambda: _fit(tmp_path, "nan-cli", faults=FaultHooks(nan_marker=str(tmp_path / "marker-cli")),
                                 max_train_examples=16, max_steps=4), "training")


def test_resume_from_a_checkpoint_continues_exactly_with_dropout_on(tmp_path):
    """In-process: a new run restored from the step-2 checkpoint reports the same losses and scores as the run that
    went on; every training step runs in train mode (dropout on), before and after the first evaluation."""
    import shutil

    import ray.train
    import torch

    from study.train.finetune import FineTuneRun

    cfg = TrainConfig(**{**TOY, "max_train_examples": 48, "epochs": 2, "eval_every": 2, "max_steps": 6, "lr": 5e-4})
    saved = tmp_path / "step-2"

    def run(restore_from=None):
        instance, reports, modes = FineTuneRun(cfg, 0, 1, torch.device("cpu")), [], []
        loss = instance._loss
        instance._loss = lambda batch: (modes.append(instance.model.training), loss(batch))[1]
        if restore_from:
            instance.restore(ray.train.Checkpoint.from_directory(str(restore_from)))

        def report(metrics, directory):
            reports.append(metrics)
            if metrics["step"] == 2 and not restore_from:
                shutil.copytree(directory, saved)
        instance.train(report)
        return reports, modes

    (first, *rest), modes = run()
    resumed, resumed_modes = run(restore_from=saved)
    assert all(modes) and all(resumed_modes) and len(modes) == 6 and len(resumed_modes) == 4
    assert [m["step"] for m in resumed] == [m["step"] for m in rest] == [4, 6]
    for went_on, restored in zip(rest, resumed, strict=True):
        for key in ("loss/total", "loss/task", "loss/ep", "loss/ap", "dev_en/accuracy", "test/accuracy/de"):
            assert restored[key] == pytest.approx(went_on[key], rel=1e-6, abs=1e-7), (went_on["step"], key)
    assert first["train/resumed_from_step"] == 0 and resumed[0]["train/resumed_from_step"] == 2
    # the time profile is cumulative over the whole run, the restored part included (a checkpoint cannot hold the
    # time of its own writing, so the restored checkpoint total starts without it)
    for phase in ("train", "eval", "checkpoint"):
        series = [m[f"time/{phase}_s"] for m in (first, *rest)]
        assert all(0 < a < b for a, b in itertools.pairwise(series)), (phase, series)
    assert all(resumed[0][f"time/{phase}_s"] > first[f"time/{phase}_s"] for phase in ("train", "eval"))


def test_selection_ignores_corrupted_target_labels(monkeypatch):
    """Two in-process runs that differ only in corrupted target-language test labels select the same step."""
    import torch

    from study.core.protocol import select_best
    from study.data import sources
    from study.evaluation import scoring as evaluation
    from study.train.finetune import FineTuneRun

    def run(corrupt: bool) -> list[dict]:
        original = sources.load_split

        def load(task, split, language="en", data_dir=None):
            records = original(task, split, language, data_dir)
            if corrupt and split == "test" and language != "en":
                return [{**r, "label": (r["label"] + 1) % len(task.labels)} for r in records]
            return records

        monkeypatch.setattr(sources, "load_split", load)
        monkeypatch.setattr(evaluation, "load_split", load)  # where the worker's per-language test loop looks it up
        reports = []
        cfg = TrainConfig(**{**TOY, "max_train_examples": 32, "eval_every": 2, "max_steps": 8, "lr": 2e-3,
                             "head_lr": 1e-2, "languages": ("de", "ja")})
        FineTuneRun(cfg, 0, 1, torch.device("cpu")).train(lambda metrics, _: reports.append(metrics))
        return reports

    clean, corrupted = run(False), run(True)
    assert [r["test/accuracy/de"] for r in clean] != [r["test/accuracy/de"] for r in corrupted]
    assert [r["dev_en/accuracy"] for r in clean] == [r["dev_en/accuracy"] for r in corrupted]
    assert select_best(clean, "accuracy")["step"] == select_best(corrupted, "accuracy")["step"]


@pytest.mark.e2e
def test_selection_key_is_english_dev_only():
    cfg = TrainConfig(**TOY)
    trainer = build_trainer(WorkerConfig(cfg), Scaling(), "/tmp", "unused", checkpoint_metric=selection_key("accuracy"))
    config = trainer.run_config.checkpoint_config
    assert config.checkpoint_score_attribute == selection_key("accuracy") == "dev_en/accuracy"
    assert config.checkpoint_score_order == "max"


@pytest.mark.parametrize("options, message", [
    (dict(batch_size=0), "batch_size=0"), (dict(epochs=-1), "epochs=-1"), (dict(lr=0.0), "lr=0.0"),
    (dict(alpha=-0.1), "alpha=-0.1"), (dict(objective="ear"), "objective='ear'"),
    (dict(ap_mask="rows"), "ap_mask='rows'"),
])
def test_bad_config_values_are_rejected(options, message):
    with pytest.raises(StudyError, match=message.replace("(", r"\(")):
        TrainConfig(**{**TOY, **options})
    with pytest.raises(StudyError, match="unknown training option"):
        TrainConfig.from_dict({"learning_rate": 1e-3})


@pytest.mark.e2e
@pytest.mark.parametrize("args, message", [
    (["--ap-layer", "6"], "ap_layer=6 is out of range for tiny: choose 0..5"),
    (["--task", "tatoeba"], "retrieval task"),
    (["--batch-size", "0"], "batch_size=0"),
    (["--languages", "de,xx"], "unknown language code 'xx'"),
    (["--modality", "multimodal", "--vision-train", "frozen"], "needs a pretrained vision tower"),
    (["--caption-languages", "en,de"], "--caption-languages: only an intermediate stage reads this, and --modality "
                                       "none runs none"),
    (["--languages", "de,ja,de"], "--languages lists de more than once"),
])
def test_cli_bad_input_fails_before_any_worker(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "study", "train", "--model", "tiny", "--storage", str(tmp_path),
                             *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "TrainController" not in result.stderr and not list(tmp_path.iterdir())


@pytest.mark.e2e
def test_cli_runs_a_trials_pipeline_stage_then_fine_tuning(tmp_path):
    """``study train --modality text`` runs what a study trial runs: the (cached) stage, then fine-tuning from it."""
    import json
    import re

    def train(name):
        result = subprocess.run(
            [sys.executable, "-m", "study", "train", "--model", "tiny", "--task", "pocket-topic", "--modality", "text",
             "--intermediate-steps", "4", "--max-steps", "2", "--batch-size", "8", "--max-length", "32",
             "--max-train-examples", "32", "--max-eval-examples", "16", "--languages", "en,de", "--head-lr", "1e-2",
             "--storage", str(tmp_path / "runs"), "--name", name], capture_output=True, text=True, timeout=600,
            env={**os.environ, "STUDY_CACHE_DIR": str(tmp_path / "cache")})
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    first, second = train("staged"), train("staged-again")
    stage_dir = re.search(r"intermediate stage \(text\): (\S+);", first.stderr).group(1)
    assert "(cached)" not in first.stderr and f"intermediate stage (text): {stage_dir} (cached)" in second.stderr
    assert "selected on English dev: step" in first.stdout
    model_dir = re.search(r"checkpoint: (\S+)", first.stdout).group(1)
    assert json.loads((Path(model_dir) / "study_model.json").read_text())["init_checkpoint"] == stage_dir


def test_init_checkpoint_from_another_model_is_rejected(tmp_path, tiny):
    from study.models.registry import get_spec, load_model, load_tokenizer, save_model_dir

    e5_like = get_spec("e5-small")
    save_model_dir(load_model(tiny), load_tokenizer(tiny), e5_like, tmp_path)  # claims to come from e5-small
    with pytest.raises(StudyError, match="trained from model 'e5-small', not 'tiny'"):
        validate(TrainConfig(**{**TOY, "init_checkpoint": str(tmp_path)}))


def test_xcopa_goes_on_from_a_social_iqa_run_with_its_head_and_records_it(tmp_path, monkeypatch):
    """XTREME's scripts/train_xcopa.sh in this tool's terms: a siqa run (3 choices), then an xcopa run (2 choices)
    with --init-checkpoint at the siqa run's model: the multiple-choice head starts where SIQa left it, and the
    xcopa checkpoint records init_task siqa, which is what labels its evaluation XTREME-R's protocol."""
    import json

    import torch
    from helpers import FIXTURES

    from study.models.registry import CHECKPOINT_META, checkpoint_task
    from study.train.checkpoints import MODEL_DIR
    from study.train.finetune import FineTuneRun

    data = tmp_path / "data"
    (data / "siqa").mkdir(parents=True)
    (data / "copa").mkdir()
    (data / "xcopa").symlink_to(FIXTURES / "xcopa")
    siqa = [{"context": f"Kai lent Sam {n} books.", "question": "What will Sam want to do next?",
             "answerA": "read them", "answerB": "sell the house", "answerC": "fly away", "correct": "ABC"[n % 3]}
            for n in range(12)]
    copa = [{"premise": f"The glass fell {n} times.", "question": "effect", "choice1": "It broke.",
             "choice2": "It sang.", "label": n % 2} for n in range(12)]
    for name, rows in (("siqa/socialIQa_v1.4_trn.jsonl", siqa), ("siqa/socialIQa_v1.4_dev.jsonl", siqa),
                       ("copa/train.jsonl", copa), ("copa/val.jsonl", copa)):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = dict(model="tiny", batch_size=4, max_length=32, max_steps=2, eval_every=2, data_dir=str(data),
                   max_eval_examples=8, lr=1e-3)
    first = FineTuneRun(TrainConfig(task="siqa", **options), 0, 1, torch.device("cpu"), outbox=str(tmp_path / "outbox"))
    first.train(lambda metrics, checkpoint: None)
    first.save_checkpoint(str(tmp_path / "siqa"), b"{}")
    siqa_model = tmp_path / "siqa" / MODEL_DIR
    second = FineTuneRun(TrainConfig(task="xcopa", languages=("sw",), init_checkpoint=str(siqa_model), **options), 0, 1,
                         torch.device("cpu"), outbox=str(tmp_path / "outbox"))
    assert second.init_task == "siqa"
    assert torch.equal(second.model.classifier.weight, first.model.classifier.weight)  # the head goes on
    second.save_checkpoint(str(tmp_path / "copa"), b"{}")
    assert checkpoint_task(tmp_path / "copa" / MODEL_DIR, "init_task") == "siqa"
    assert json.loads((tmp_path / "copa" / MODEL_DIR / CHECKPOINT_META).read_text())["task"] == "xcopa"


def test_a_reused_name_resumes_only_the_same_unfinished_run(tmp_path):
    """--name resumes a run: under other options one checkpoint would mix two trainings and carry the new options'
    record (a COPA-only model labelled as continuing from Social IQa), and a finished run would train past its
    last step. Both stop with one line before Ray starts."""
    import json

    from study.cli.train import claim_run
    from study.train.stage import StageConfig

    cfg = TrainConfig(**TOY)
    record = claim_run(tmp_path / "r1", cfg, None)
    assert json.loads(record.read_text())["train"]["task"] == cfg.task
    assert claim_run(tmp_path / "r1", TrainConfig(**TOY), None) == record  # the same options resume
    with pytest.raises(StudyError, match=r"--name r1 resumes a run that started with other options \(init_checkpoint, "
                                         r"seed\)"):
        claim_run(tmp_path / "r1", TrainConfig(**{**TOY, "seed": 99, "init_checkpoint": str(tmp_path)}), None)
    with pytest.raises(StudyError, match=r"other options \(intermediate stage\)"):
        claim_run(tmp_path / "r1", cfg, StageConfig(model=cfg.model, modality="text", seed=cfg.seed))
    record.write_text(json.dumps({**json.loads(record.read_text()), "finished": True}))
    with pytest.raises(StudyError, match="run 'r1' already finished"):
        claim_run(tmp_path / "r1", cfg, None)


def test_a_checkpoint_whose_head_does_not_fit_the_task_stops_before_ray(tmp_path, tiny):
    """A Social IQa checkpoint (multiple-choice head) cannot start UD-POS (a token head): one line from validate,
    not a transformers error inside every Ray worker; a stage's encoder (no task) gets a fresh head."""
    from study.models.registry import load_model, load_tokenizer, save_model_dir

    save_model_dir(load_model(tiny, "multiple-choice"), load_tokenizer(tiny), tiny, tmp_path / "siqa", task="siqa")
    with pytest.raises(StudyError, match=r"fine-tuned on siqa \(a multiple-choice head\); task 'udpos' needs a token"):
        validate(TrainConfig(**{**TOY, "task": "udpos", "init_checkpoint": str(tmp_path / "siqa")}))
    save_model_dir(load_model(tiny), load_tokenizer(tiny), tiny, tmp_path / "stage")  # an encoder without a task
    validate(TrainConfig(**{**TOY, "task": "udpos", "init_checkpoint": str(tmp_path / "stage")}))

"""The study plan and the throughput it rests on: FLOPs against a hand count, the device peaks, the step and
evaluation rules against what a real run does, the rate's sources, and ``study tune --plan`` without Ray."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from study.core.budget import evaluations, micro_batches, steps_per_epoch
from study.core.devices import GPUS, device_profile, match_gpu
from study.core.flops import ModelShape, mfu
from study.core.throughput import EVAL, FIXED, Measurement, load_table, rate
from study.models.registry import REGISTRY
from study.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = REGISTRY["tiny"].shape


def test_flops_equal_a_hand_count_of_the_tiny_shape():
    """L 6, d 32, f 64: N = 6 x (4 x 32^2 + 2 x 32 x 64) = 6 x 8192 = 49,152 weight entries; a sequence of 10 tokens
    trains in 6 x 49,152 x 10 = 2,949,120 plus attention 12 x 6 x 32 x 10^2 = 230,400 FLOPs."""
    assert TINY.non_embedding_params == 49_152
    assert TINY.train_flops(10, 100) == 2_949_120 + 230_400 == TINY.sequence_flops(10)
    assert TINY.sequence_flops(10, train=False) == pytest.approx(3_179_520 / 3)
    # two sequences of 3 and 7 tokens: 6 N (3 + 7) + 12 L d (9 + 49)
    assert TINY.train_flops(10, 58) == 6 * 49_152 * 10 + 12 * 6 * 32 * 58
    # the public anchor: BERT-base at 128 tokens, ~6.7e10 FLOPs a sequence (Kaplan's 6 N T plus attention)
    assert REGISTRY["mbert"].shape.sequence_flops(128) == pytest.approx(6.70e10, rel=0.005)
    assert REGISTRY["xlmr"].shape.non_embedding_params == REGISTRY["mbert"].shape.non_embedding_params == 84_934_656


def test_mfu_is_flops_over_time_over_peak():
    assert mfu(1e12, 2.0, 1e12) == 0.5
    assert mfu(1e12, 1.0, 1e12, devices=4) == 0.25
    assert mfu(1e12, 1.0, None) is None  # a CPU: throughput only


@pytest.mark.parametrize("key", ["tiny", "tiny-bert"])
def test_registry_shapes_are_the_built_models_configs(key):
    from transformers import AutoConfig

    from study.models.registry import get_spec, model_path

    spec = get_spec(key)
    assert ModelShape.from_config(AutoConfig.from_pretrained(model_path(spec))) == spec.shape


def test_e5_small_shape_is_its_config(e5_small):
    from transformers import AutoConfig

    from study.models.registry import model_path

    assert ModelShape.from_config(AutoConfig.from_pretrained(model_path(e5_small))) == e5_small.shape


@pytest.mark.parametrize("name, key", [("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H100 PCIe", "h100-pcie"),
                                       ("NVIDIA H100 NVL", "h100-nvl"), ("NVIDIA H200", "h200"),
                                       ("NVIDIA A100-SXM4-80GB", "a100"), ("NVIDIA A100 80GB PCIe", "a100"),
                                       ("NVIDIA A10G", "a10g"), ("NVIDIA A10", "a10"), ("NVIDIA L4", "l4"),
                                       ("Tesla V100-SXM2-16GB", "v100")])
def test_cuda_device_names_find_their_peaks(name, key):
    assert match_gpu(name).key == key


def test_peaks_are_dense_datasheet_figures():
    assert match_gpu("NVIDIA GeForce RTX 4090") is None
    assert GPUS["h100"].peak("bf16") == 989.5e12 and GPUS["a100"].peak("bf16") == 312e12
    assert GPUS["v100"].dtype == "fp32" and GPUS["v100"].peak("bf16") is None  # no bf16 units: trains in fp32
    assert device_profile("cpu").dtype == "fp32" and device_profile("cpu").peak("fp32") is None


def test_micro_batches_are_what_the_sampler_and_loader_give():
    """The plan's rule against torch's DistributedSampler + DataLoader, the worker's data path."""
    for pairs, batch, world in ((100, 8, 1), (101, 8, 2), (7, 8, 1), (96, 16, 3), (1108 * 3, 16, 4)):
        sampler = torch.utils.data.DistributedSampler(range(pairs), num_replicas=world, rank=world - 1,
                                                      shuffle=True, seed=0, drop_last=world > 1)
        assert micro_batches(pairs, batch, world) == len(torch.utils.data.DataLoader(range(pairs), batch_size=batch,
                                                                                      sampler=sampler))


@pytest.mark.parametrize("options, world", [
    ({"batch_size": 8, "global_batch": 32, "max_train_examples": 90, "k_copies": 3, "epochs": 2}, 1),
    ({"batch_size": 8, "global_batch": 32, "max_train_examples": 90, "k_copies": 3, "epochs": 2}, 2),
    ({"batch_size": 16, "grad_accum": 3, "max_train_examples": 130, "epochs": 3, "max_steps": 5}, 1),
])
def test_plan_steps_equal_a_real_runs(monkeypatch, options, world):
    from study.data.tasks import get_task
    from study.train.finetune import FineTuneRun
    from study.tune.plan import run_budget

    monkeypatch.setattr(FineTuneRun, "_wrap", lambda self: self.model)  # no process group: only the arithmetic
    cfg = TrainConfig(model="tiny", task="pocket-topic", max_length=32, **options)
    run = FineTuneRun(cfg, 0, world, torch.device("cpu"))
    budget = run_budget(cfg, get_task("pocket-topic"), world)
    assert budget.steps == run.total_steps
    assert micro_batches(len(run.pairs), cfg.batch_size, world) == len(run.loader)
    assert budget.examples == run.total_steps * cfg.batch_size * run.grad_accum * world


def test_a_real_run_evaluates_and_reports_throughput_as_counted():
    """Evaluations as ``core.budget.evaluations`` counts them; tokens/s and sequences/s from the real tokens; no MFU
    on a CPU."""
    from study.train.finetune import FineTuneRun

    for options in ({"eval_every": 4, "max_steps": 6}, {"eval_every": 0, "epochs": 2}):
        cfg = TrainConfig(model="tiny", task="pocket-topic", max_length=32, batch_size=8, max_train_examples=40,
                          max_eval_examples=8, languages=("de",), **options)
        run, reports = FineTuneRun(cfg, 0, 1, torch.device("cpu")), []
        run.train(lambda metrics, _, out=reports: out.append(metrics))
        per_epoch = steps_per_epoch(len(run.pairs), cfg.batch_size, run.grad_accum, 1)
        assert len(reports) == evaluations(run.total_steps, per_epoch, cfg.eval_every)
        last = reports[-1]
        assert last["train/sequences_per_s"] == pytest.approx(2 * last["train/examples_per_s"])  # VME: x and x~
        assert 0 < last["train/tokens_per_s"] <= 32 * last["train/sequences_per_s"]
        assert "train/mfu" not in last


def test_counts_read_real_tokens_of_both_streams():
    from study.train.throughput import count_batch, new_counts, throughput_metrics

    mask = lambda lengths: torch.tensor([[1] * n + [0] * (5 - n) for n in lengths])  # noqa: E731
    batch = {"x": {"attention_mask": mask([3, 5])}, "xt": {"attention_mask": mask([4, 5])}}
    vme, plain = new_counts(), new_counts()
    count_batch(vme, batch, vme=True)
    count_batch(plain, batch, vme=False, world=2)
    assert vme == {"sequences": 4, "tokens": 17, "squares": 9 + 25 + 16 + 25}
    assert plain == {"sequences": 4, "tokens": 16, "squares": 2 * (9 + 25)}
    metrics = throughput_metrics(vme, 2.0, TINY, peak=1e9)
    assert metrics["train/tokens_per_s"] == 8.5 and metrics["train/sequences_per_s"] == 2
    assert metrics["train/mfu"] == pytest.approx(TINY.train_flops(17, 75) / 2.0 / 1e9)


def _row(**values) -> Measurement:
    base = {"device": "cpu", "device_name": "test CPU", "model": "e5-small", "objective": "vme", "dtype": "fp32",
            "seq_len": 64, "lengths": "pocket-topic", "batch_size": 16, "per_s": 10.0, "tokens_per_s": 300.0,
            "mean_tokens": 15.0, "flops_per_example": 2e9, "mfu": None, "source": "test"}
    return Measurement(**{**base, **values})


def test_rates_prefer_the_task_then_fixed_lengths_then_scaling_then_the_peak():
    cpu, h100 = device_profile("cpu"), device_profile("h100")
    flops = lambda length: 4e9 * length / 64  # noqa: E731
    rows = [_row(), _row(lengths=FIXED, per_s=5.0, mean_tokens=64)]
    assert rate(rows, cpu, "e5-small", "vme", 64, "pocket-topic", 16, flops).kind == "measured"
    assert rate(rows, cpu, "e5-small", "vme", 64, "pocket-topic", 16, flops).per_s == 10.0
    fixed = rate(rows[1:], cpu, "e5-small", "vme", 64, "pocket-topic", 16, flops)
    assert (fixed.kind, fixed.per_s) == ("measured", 5.0) and "shorter rows" in fixed.source
    scaled = rate(rows, cpu, "mbert", "vme", 128, "xnli", 8, flops)  # no mbert row: the closest, by FLOPs
    assert scaled.kind == "scaled" and scaled.per_s == pytest.approx(5.0 * 2e9 / flops(128))
    analytic = rate(rows, h100, "mbert", "vme", 128, "xnli", 8, flops)
    assert analytic.kind == "analytic" and analytic.per_s == pytest.approx(989.5e12 * 0.3 / flops(128))
    assert rate([], cpu, "mbert", EVAL, 128, "xnli", 8, flops).per_s is None


def test_the_packaged_table_is_valid():
    rows, overheads = load_table()
    assert {"cpu", "cuda"} <= set(overheads)
    for row in rows:
        assert row.device == "cpu" or row.device in GPUS, row
        assert row.per_s > 0 and row.flops_per_example > 0 and row.source


def _plan_args(*extra):
    from study.cli.tune import parse_args

    return parse_args(["--model", "tiny", "--plan", "--mlflow-uri", "http://127.0.0.1:9", *extra])


def test_plan_of_a_tiny_study_counts_what_its_runs_do(monkeypatch):
    """Each arm's steps per run are FineTuneRun's; examples and evaluation items follow from the data's sizes."""
    from study.data.sources import load_split
    from study.train.finetune import FineTuneRun
    from study.tune.plan import build_plan
    from study.tune.plan_table import format_plan
    from study.tune.settings import resolve

    settings = resolve(_plan_args("--preset", "paper", "--arms", "plain,vme-reference,vme-tuned", "--trials", "2",
                                  "--seeds", "2", "--no-alignment-probe"))
    plan = build_plan(settings, device_profile("cpu"))
    rows = {(row.arm, row.phase): row for row in plan.rows}
    task = settings.task
    items = len(load_split(task, "dev")) + sum(len(load_split(task, "test", lang)) for lang in task.languages)
    for arm in ("plain", "vme-reference"):
        cfg = settings.bases[arm]
        steps = FineTuneRun(cfg, 0, 1, torch.device("cpu")).total_steps
        row = rows[(arm, "confirm")]
        assert row.runs == 2 and row.budget.steps == steps
        assert row.budget.examples == steps * 32  # the arms' global batch
        assert row.budget.eval_items == cfg.epochs * items  # once per epoch: dev and every test language
    # vme-tuned: the preset's k_copies 1 for every trial (tiny's space does not search it), 2 search + 2 confirm
    assert rows[("vme-tuned", "search")].runs == 2 and rows[("vme-tuned", "confirm")].runs == 2
    assert rows[("vme-tuned", "search")].budget.stage_steps > 0  # tiny's space searches an intermediate stage
    assert ("reference lines", "reference lines") in rows
    text = format_plan(plan)
    assert "vme-reference" in text and "rates" in text and "other:" in text
    # rates measured beside other work are flagged as upper bounds, where the plan uses any
    loaded = any("load average" in rate.source for rate in plan.rates.values())
    assert ("caution: some rates below were measured while other jobs shared" in text) == loaded
    metrics = plan.metrics()
    assert metrics["plan/runs"] == 8 and metrics["plan/plain/confirm/steps_per_run"] == rows[("plain", "confirm")] \
        .budget.steps


def test_plan_of_the_modality_design_counts_each_shared_stage_once():
    from study.tune.plan import build_plan
    from study.tune.settings import resolve

    settings = resolve(_plan_args("--experiment-design", "modality", "--seeds", "2", "--no-alignment-probe"))
    plan = build_plan(settings, device_profile("h100"))
    staged = [row for row in plan.rows if row.budget.stage_steps]
    assert len(settings.arms) == 8 and len(staged) == 3  # text, multimodal, shuffled: shared by plain and vme-ref
    assert all(rate.kind == "analytic" for name, rate in plan.rates.items() if "driver" not in name)


def test_a_stage_dose_doubles_the_modality_designs_stages_at_a_second_length():
    """--stage-dose: three more arms per fixed arm, whose stages (at the second length, shared by the fixed arms)
    the plan counts once each; a dose equal to the configured steps, or one without the modality design, is a
    StudyError before anything runs."""
    from study.core.errors import StudyError
    from study.tune.plan import build_plan
    from study.tune.settings import modality_stage_options, resolve

    plain = resolve(_plan_args("--experiment-design", "modality", "--no-alignment-probe"))
    steps = int(modality_stage_options(plain.space)["intermediate_steps"])
    settings = resolve(_plan_args("--experiment-design", "modality", "--seeds", "2", "--no-alignment-probe",
                                  "--stage-dose", str(2 * steps)))
    assert len(settings.arms) == 14 and f"plain+multimodal@{2 * steps}" in [a.name for a in settings.arms]
    staged = [row for row in build_plan(settings, device_profile("h100")).rows if row.budget.stage_steps]
    assert sorted(row.budget.stage_steps for row in staged) == pytest.approx(sorted([steps] * 3 + [2 * steps] * 3))
    with pytest.raises(StudyError, match=f"--stage-dose {steps} is invalid: .* other than the configured {steps}"):
        resolve(_plan_args("--experiment-design", "modality", "--stage-dose", str(steps)))
    with pytest.raises(StudyError, match="--stage-dose 7 needs --experiment-design modality"):
        resolve(_plan_args("--stage-dose", "7"))


def test_plan_device_defaults_to_this_cpu_and_names_unknown_gpus():
    from study.core.errors import StudyError
    from study.tune.plan_table import plan_device

    assert plan_device(None).key == "cpu"
    assert plan_device("a10g").key == "a10g"
    with pytest.raises(StudyError, match="unknown device profile 'b200'"):
        plan_device("b200")
    if not torch.cuda.is_available():
        with pytest.raises(StudyError, match="--device-profile"):
            plan_device(None, gpus_per_worker=1)


@pytest.mark.e2e
@pytest.mark.parametrize("argv", [["--model", "e5-small"],
                                  ["--model", "mbert", "--task", "xnli", "--preset", "paper", "--device-profile",
                                   "h100"]])
def test_plan_command_exits_0_without_ray_or_the_hub(tmp_path, argv):
    """``study tune --plan``: no Ray imported, nothing downloaded (an empty hub cache, offline), no MLflow server."""
    code = ("import sys; from study.cli.tune import main; rc = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'Ray was imported'; sys.exit(rc)")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code, *argv, "--plan", "--mlflow-uri", "http://127.0.0.1:9",
                             "--storage", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300,
                            env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("study plan:") and "rates" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_plan_metrics_are_json_numbers():
    from study.tune.plan import build_plan
    from study.tune.settings import resolve

    plan = build_plan(resolve(_plan_args("--seeds", "1")), device_profile("l4"))
    assert all(isinstance(v, (int, float)) for v in plan.metrics().values())
    json.dumps(plan.params())


@pytest.mark.parametrize("model, preset", [("tiny", "smoke"), ("mbert", "paper")])
def test_matched_arms_resolve_to_configs_that_differ_only_in_what_their_contrast_compares(model, preset):
    """The resolved configurations (preset, arm's fixed options and, for a tuned arm, what it searches) of each
    matched pair: plain-tuned against vme-tuned only in the objective and the VME options (its search space has
    none of them), augmentation-only against vme-reference only in alpha and beta (0 and 0)."""
    from study.core.arms import VME_OPTIONS, matched_difference
    from study.tune.settings import resolve

    arms = "plain,vme-reference,vme-tuned,plain-tuned,augmentation-only"
    settings = resolve(_plan_args("--model", model, "--preset", preset, "--arms", arms, "--no-alignment-probe"))
    configs = {name: cfg.to_dict() for name, cfg in settings.bases.items()}
    # vme-tuned pins the reference's unsearched VME options (AP padding, synonym matching), which plain never reads
    tuned_vs_plain = matched_difference(configs["vme-tuned"], configs["plain-tuned"])
    assert "objective" in tuned_vs_plain and tuned_vs_plain <= VME_OPTIONS | {"objective"}
    assert matched_difference(configs["vme-reference"], configs["augmentation-only"]) == {"alpha", "beta"}
    assert (configs["augmentation-only"]["alpha"], configs["augmentation-only"]["beta"]) == (0.0, 0.0)
    assert matched_difference(configs["vme-reference"], configs["plain"]) <= VME_OPTIONS | {"objective"}
    searched = {arm.name: {p.name for p in settings.space_of(arm).params} for arm in settings.arms if arm.tuned}
    assert searched["vme-tuned"] == {p.name for p in settings.space.params}
    assert searched["plain-tuned"] == searched["vme-tuned"] - VME_OPTIONS and not searched["plain-tuned"] & VME_OPTIONS
    assert {"lr", "modality"} <= searched["plain-tuned"]
    if model == "mbert":
        assert "k_copies" in searched["plain-tuned"]  # the rows of x per example: the same training lengths


def test_a_tiny_plan_lists_the_matched_budget_and_attribution_arms(tmp_path, capsys):
    """``study tune --plan`` (in-process: nothing runs, nothing is stored) on tiny with the new arms: plain-tuned
    gets a search and a confirm row, augmentation-only (fixed) a confirm row."""
    from study.cli.tune import main
    from study.tune.plan import build_plan
    from study.tune.settings import resolve

    argv = ["--arms", "vme-tuned,plain-tuned,vme-reference,augmentation-only", "--trials", "2", "--seeds", "2",
            "--no-alignment-probe"]
    rows = {(row.arm, row.phase) for row in build_plan(resolve(_plan_args(*argv)), device_profile("cpu")).rows}
    assert {("plain-tuned", "search"), ("plain-tuned", "confirm"), ("augmentation-only", "confirm")} <= rows
    assert ("augmentation-only", "search") not in rows
    assert main(["--model", "tiny", "--plan", "--mlflow-uri", "http://127.0.0.1:9", "--storage",
                 str(tmp_path / "runs"), *argv]) == 0
    text = capsys.readouterr().out
    assert text.startswith("study plan:") and "plain-tuned" in text and "augmentation-only" in text
    assert not (tmp_path / "runs").exists()


def test_the_study_refuses_matched_arms_that_differ_beyond_their_contrast(monkeypatch):
    from study.core import arms
    from study.core.errors import StudyError
    from study.tune.settings import check_matched

    bases = {"vme-reference": TrainConfig(**arms.VME_REFERENCE_POINT),
             "augmentation-only": TrainConfig(**{**arms.VME_REFERENCE_POINT, "alpha": 0.0, "beta": 0.0})}
    check_matched(bases)
    bases["augmentation-only"] = TrainConfig(**{**arms.VME_REFERENCE_POINT, "alpha": 0.0, "beta": 0.0, "lr": 1e-4})
    with pytest.raises(StudyError, match="differ in lr beyond what their contrast compares"):
        check_matched(bases)


def test_plain_tuned_needs_a_parameter_left_to_search(tmp_path):
    from study.core.arms import ARMS
    from study.core.errors import StudyError
    from study.tune.search_space import load_search_space

    path = tmp_path / "only-vme.yaml"
    path.write_text("model: tiny\ntask: pocket-topic\nparams:\n  alpha: {type: float, low: 0.01, high: 1.0}\n"
                    "  ap_mask: {type: categorical, choices: [none, padding]}\n"
                    "  ap_layer: {type: int, low: 0, high: 2, when: {ap_mask: [padding]}}\n")
    space = load_search_space(path)
    with pytest.raises(StudyError, match="nothing is left to search"):
        space.without(ARMS["plain-tuned"].unsearched)
    kept = load_search_space(path).without({"ap_mask"})  # ap_layer is sampled only under ap_mask: gone with it
    assert [p.name for p in kept.params] == ["alpha"] and kept.sha256 == space.sha256


def test_every_evaluation_records_the_workers_torch_threads_and_determinism_flags():
    """The metrics of a real run's evaluation carry torch's thread count and determinism flags as they were in the
    worker (a run's speed and last digits depend on them); the MLflow callback logs every metric with a '/'."""
    from study.train.finetune import FineTuneRun
    from study.train.throughput import torch_settings

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        assert torch_settings() == {"torch/num_threads": 1, "torch/deterministic_algorithms": 1,
                                    "torch/cudnn_deterministic": int(torch.backends.cudnn.deterministic),
                                    "torch/cudnn_benchmark": int(torch.backends.cudnn.benchmark)}
        torch.use_deterministic_algorithms(False)
        cfg = TrainConfig(model="tiny", task="pocket-topic", max_length=32, batch_size=8, max_train_examples=16,
                          max_eval_examples=8, languages=("de",), max_steps=1)
        run, reports = FineTuneRun(cfg, 0, 1, torch.device("cpu")), []
        run.train(lambda metrics, _, out=reports: out.append(metrics))
        assert reports and {k: reports[-1][k] for k in torch_settings()} == {
            "torch/num_threads": 1, "torch/deterministic_algorithms": 0,
            "torch/cudnn_deterministic": int(torch.backends.cudnn.deterministic),
            "torch/cudnn_benchmark": int(torch.backends.cudnn.benchmark)}
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)

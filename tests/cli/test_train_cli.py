"""``python -m study.train`` takes its training flags from ``TrainConfig``: one per field, with its help and default;
the fault hooks the tests inject come from a hidden flag of ``study.cli.train`` and ``study.tune.driver``."""

import json
import re
import subprocess
import sys
from dataclasses import fields

import pytest

from study.cli.train import build_parser
from study.core.errors import StudyError
from study.core.faults import FaultHooks
from study.train.config import TrainConfig


def _config(argv: list[str]) -> TrainConfig:
    args = build_parser().parse_args(argv)
    return TrainConfig.from_dict({k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__})


def test_every_config_field_is_a_flag_with_the_fields_help_and_default():
    helps = {action.dest: action.help for action in build_parser()._actions}
    for option in fields(TrainConfig):
        assert option.metadata["help"] in helps[option.name], option.name
    assert _config([]) == TrainConfig()


def test_flags_parse_to_typed_config_values():
    cfg = _config(["--lr", "1e-4", "--max-steps", "5", "--languages", "de,ja", "--head-lr", "0.001"])
    assert (cfg.lr, cfg.max_steps, cfg.languages, cfg.head_lr) == (1e-4, 5, ("de", "ja"), 0.001)


# --- fault hooks: a config field the tests set with a hidden flag --------------------------------------------------


def test_fault_hooks_come_from_a_hidden_flag_of_both_clis():
    from study.cli.tune import parse_args

    hooks = FaultHooks(fail_at_step=3, fail_marker="/tmp/m", step_delay_s=0.5)
    flag = ["--inject-faults", json.dumps(hooks.to_dict())]
    assert build_parser().parse_args(flag).inject_faults == hooks
    assert parse_args(flag).inject_faults == hooks
    assert build_parser().parse_args([]).inject_faults == parse_args([]).inject_faults == FaultHooks()
    assert "inject" not in build_parser().format_help()  # not a user option


@pytest.mark.parametrize("text, message", [
    ("[1]", "expected a JSON object"), ("{bad", "not JSON"), ('{"delay": 1}', "unknown key(s) delay"),
    ('{"fail_at_step": 3}', "fail_at_step and fail_marker go together"), ('{"step_delay_s": -1}', ">= 0")])
def test_bad_fault_hooks_name_the_problem(text, message):
    with pytest.raises(StudyError, match=re.escape(message)):
        FaultHooks.from_json(text)


@pytest.mark.e2e
def test_the_nan_hook_picks_one_run_and_the_failure_hook_kills_once(tmp_path):
    nan = FaultHooks(nan_marker=str(tmp_path / "nan"))
    assert [nan.forced_nan(name) for name in ("a", "b", "a")] == [True, False, True]  # run a, on every attempt
    assert not FaultHooks().forced_nan("a")
    marker = tmp_path / "failed"
    script = (f"from study.core.faults import FaultHooks; h = FaultHooks(fail_at_step=2, fail_marker={str(marker)!r}); "
              "h.after_step(1); h.after_step(2); print('survived')")
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert first.returncode == 1 and "survived" not in first.stdout and marker.read_text() == "failed after step 2\n"
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert again.returncode == 0 and "survived" in again.stdout  # the marker makes it happen once


# --- bad values stop on the driver, before Ray starts -------------------------------------------------------------


@pytest.mark.parametrize("build, message", [
    (lambda: __import__("study.train.ray_setup", fromlist=["Scaling"]).Scaling(workers=0), "--workers 0 is invalid"),
    (lambda: __import__("study.train.ray_setup", fromlist=["Scaling"]).Scaling(cpus_per_worker=0),
     "--cpus-per-worker 0 is invalid"),
    (lambda: TrainConfig(epochs=True), "epochs=True is invalid: it must be an integer >= 1"),
    (lambda: TrainConfig(alpha=float("inf")), "loss weight alpha=inf is invalid"),
    (lambda: TrainConfig(warmup_ratio=1.5), "warmup_ratio=1.5 is invalid: it must be in [0, 1)"),
    (lambda: TrainConfig(eval_every=-1), "eval_every=-1 is invalid: it must be >= 0 (0: once per epoch)"),
])
def test_bad_values_name_the_option(build, message):
    with pytest.raises(StudyError, match=re.escape(message)):
        build()


@pytest.mark.parametrize("options, message", [
    ({"synonyms": "/no/such/file.json"}, "--synonyms /no/such/file.json: no such file"),
    ({"max_length": 100000}, "--max-length 100000 is longer than tiny can read: at most 512"),
    ({"data_dir": "/no/such/dir"}, "--data-dir /no/such/dir is not a directory"),
])
def test_the_driver_checks_files_and_lengths_before_ray(options, message):
    from study.train.pipeline import validate

    with pytest.raises(StudyError, match=re.escape(message)):
        validate(TrainConfig(model="tiny", **options))


def test_the_stage_checks_its_learning_rates():
    from study.train.stage import StageConfig

    for name in ("lr", "head_lr", "vision_lr"):
        with pytest.raises(StudyError, match=f"intermediate {name}=0 must be in"):
            StageConfig(model="tiny", modality="text", **{name: 0})


def test_a_failed_ray_train_run_is_one_line_with_the_workers_error():
    """Ray Train raises the workers' error (a traceback per rank) or returns it in Result.error; study.cli.train and
    study.train.dual_encoder say its last line, the StudyError a person can act on."""
    from types import SimpleNamespace

    import ray.train

    from study.train.ray_setup import fit_or_fail

    snippet = ("Training failed due to worker errors:\n[Rank 0 Error Snippet]:\nTraceback (most recent call last):\n"
               "  File \"worker.py\", line 234, in _total_steps\n"
               "study.core.errors.StudyError: 8 training pairs give no full optimizer step\n")

    def raising():
        raise ray.train.TrainingFailedError(snippet)

    for fit in (raising, lambda: SimpleNamespace(error=RuntimeError(snippet))):
        with pytest.raises(StudyError, match=r"^training failed: StudyError: 8 training pairs give no full optimizer "
                                             r"step$"):
            fit_or_fail(fit, "training")
    done = SimpleNamespace(error=None)
    assert fit_or_fail(lambda: done, "training") is done

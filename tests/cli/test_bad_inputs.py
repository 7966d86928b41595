"""Bad inputs stop before Ray starts, in one line naming the file, key or flag and the fix, and write nothing: search
spaces checked against the model and each option's type, presets, study names, ``study evaluate --json`` and
damaged checkpoints."""

import os
import shutil
import subprocess
import sys

import pytest
from helpers import FIXTURES

from study.core.errors import StudyError
from study.train.config import TrainConfig
from study.tune.search_space import load_search_space

SPACE = "model: tiny\ntask: pocket-topic\nparams:\n  {param}\npresets:\n  smoke: {preset}\n"


@pytest.mark.parametrize("param, preset, message", [
    ("ap_mask: {type: categorical, choices: [none, bogus]}", "{max_steps: 2}",
     r"params\.ap_mask\.choices: choice 'bogus' is not valid for training \(ap_mask='bogus' is invalid: choose one "
     r"of none, padding\); fix: drop or correct that choice$"),
    ("k_copies: {type: categorical, choices: [0, 1]}", "{max_steps: 2}",
     r"params\.k_copies\.choices: choice 0 is not valid for training \(k_copies=0 is invalid"),
    ("lr: {type: categorical, choices: [1e-4, 3e-4]}", "{max_steps: 2}",
     r"params\.lr\.choices: choice '1e-4' is not valid for training \(lr='1e-4' is invalid: it must be a number "
     r"\(YAML reads 1e-2 as text: write 1\.0e-2\)\)"),
    ('alpha: {type: float, low: 0.1, high: 1.0, log: "false"}', "{max_steps: 2}",
     r"params\.alpha\.log: must be true or false, got 'false'; fix: write log: true or log: false, unquoted"),
    ("alpha: {type: float, low: 0.1, high: 1.0, when: [modality]}", "{max_steps: 2}",
     r"params\.alpha\.when: must be a mapping of earlier parameters to values, got \['modality'\]; fix: e\.g\. when:"),
    ("alpha: {type: float, low: 0.1, high: 1.0}", "{max_steps: 2, weight_decay: 1e-2}",
     r"presets\.smoke: weight_decay='1e-2' is invalid: it must be a number \(YAML reads 1e-2 as text: write "
     r"1\.0e-2\)"),
])
def test_a_search_space_with_a_value_no_run_accepts_names_file_key_and_fix(tmp_path, param, preset, message):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(param=param, preset=preset))
    with pytest.raises(StudyError, match=rf"^{path}: {message}") as raised:
        load_search_space(path)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("param, message", [
    ("ap_layer: {type: int, low: 0, high: 40}",
     r"params\.ap_layer: 40 does not fit tiny on pocket-topic \(ap_layer=40 is out of range for tiny: choose 0\.\.5\); "
     r"fix: narrow the range$"),
    ("max_length: {type: categorical, choices: [128, 100000]}",
     r"params\.max_length: 100000 does not fit tiny on pocket-topic \(--max-length 100000 is longer than tiny can "
     r"read: at most 512\); fix: drop that choice$"),
])
def test_a_search_space_is_checked_against_the_model(tmp_path, param, message):
    from study.tune.settings import check_space_fits

    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(param=param, preset="{max_steps: 2}"))
    space = load_search_space(path)  # valid for training in general ...
    with pytest.raises(StudyError, match=rf"^{path}: {message}"):  # ... not on this model
        check_space_fits(space, TrainConfig(model="tiny", task="pocket-topic"), 1, fetch=False)


@pytest.mark.parametrize("values, message", [
    ({"weight_decay": "1e-2"}, r"^weight_decay='1e-2' is invalid: it must be a number \(YAML reads 1e-2 as text"),
    ({"alpha": True}, r"^alpha=True is invalid: it must be a number"),
    ({"ap_mask": 3}, r"^ap_mask=3 is invalid: it must be text"),
])
def test_training_options_of_the_wrong_type_are_one_line_not_a_traceback(values, message):
    with pytest.raises(StudyError, match=message):
        TrainConfig.from_dict(values)


@pytest.mark.parametrize("name, experiment, message", [
    ("bob's-study", None, r"^--name \"bob's-study\" is invalid: use letters, digits"),
    ("a/b", None, r"^--name 'a/b' is invalid"),
    (None, "", r"^--experiment '' is invalid: an MLflow experiment name is not empty"),
    (None, " vme", r"^--experiment ' vme' is invalid"),
])
def test_study_and_experiment_names_mlflow_or_the_storage_would_refuse_stop_first(name, experiment, message):
    from study.tune.settings import check_names

    check_names("study-tiny_1.2", "vme-pocket")  # what the defaults look like
    with pytest.raises(StudyError, match=message):
        check_names(name, experiment)


def test_evaluate_json_naming_a_directory_stops_before_anything_is_evaluated(tmp_path):
    from study.cli.evaluate import main

    with pytest.raises(StudyError, match=rf"^--json {tmp_path} is a directory: name the JSON file"):
        main(["--model", "tiny", "--task", "pocket-retrieval", "--languages", "de", "--json", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def copa_checkpoint(tmp_path_factory, tiny):
    from study.models.registry import load_model, load_tokenizer, save_model_dir

    path = tmp_path_factory.mktemp("checkpoint") / "copa"
    save_model_dir(load_model(tiny, "multiple-choice"), load_tokenizer(tiny), tiny, path, task="xcopa")
    return path


def _truncate(path):
    path.write_bytes(path.read_bytes()[:1000])


@pytest.mark.parametrize("file, damage, message", [
    ("model.safetensors", _truncate, r"checkpoint .* cannot be loaded \(SafetensorError: .*\): it is damaged"),
    ("config.json", lambda p: p.write_text("{not json"), r"checkpoint .* cannot be loaded \(OSError: .*config"),
    ("study_model.json", lambda p: p.write_text("{not json"),
     r"study_model\.json cannot be read \(JSONDecodeError\): the checkpoint is damaged"),
    ("study_model.json", lambda p: p.write_text("{}"), r"study_model\.json names no model_key"),
    ("tokenizer.json", lambda p: p.write_text("{not json"), r"checkpoint .* cannot be loaded \(\w+Error"),
])
def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, copa_checkpoint, file, damage, message):
    from study.cli.evaluate import main

    damaged = tmp_path / "copa"
    shutil.copytree(copa_checkpoint, damaged)
    damage(damaged / file)
    with pytest.raises(StudyError, match=message):
        main(["--checkpoint", str(damaged), "--task", "xcopa", "--languages", "sw", "--data-dir", str(FIXTURES)])


@pytest.mark.e2e
def test_study_tune_with_a_space_that_does_not_fit_the_model_exits_2_before_ray_writing_nothing(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(param="ap_layer: {type: int, low: 0, high: 40}", preset="{max_steps: 2}"))
    result = subprocess.run([sys.executable, "-m", "study.tune", "--model", "tiny", "--search-space", str(space),
                             "--storage", str(tmp_path / "runs"), "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": ""})
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [f"error: {space}: params.ap_layer: 40 does not fit tiny on "
                                                  "pocket-topic (ap_layer=40 is out of range for tiny: choose 0..5); "
                                                  "fix: narrow the range"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # no storage, no MLflow store


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT"])
def test_a_full_disk_is_one_line_and_exit_2(capsys, code):
    """A full disk cannot be foreseen before Ray starts; when a write hits it, the command says so in one line, with
    where to write instead, not a traceback. Other OS errors are not hidden."""
    import errno

    from study.core.errors import run_cli

    def full(argv):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), "/runs/study/checkpoint.pt")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(full, [])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1
    assert lines[0].startswith("error: the disk is full writing /runs/study/checkpoint.pt") and "--storage" in lines[0]

    def denied(argv):
        raise PermissionError(errno.EACCES, "Permission denied", "/x")

    with pytest.raises(PermissionError):
        run_cli(denied, [])

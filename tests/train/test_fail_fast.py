"""No blind retries: an error that would come back on every attempt (a malformed or truncated data file, a
non-finite loss, a too-short --max-length) stops a run once, with one line naming the file, line and language —
data files before Ray starts; a worker's StudyError at once on Ray Train's controller — while a lost worker is
still retried."""

import gzip
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from helpers import FIXTURES

from study.core.errors import StudyError, cannot_succeed_on_retry
from study.data import tasks as T
from study.data.sources import check_local_files, load_split
from study.train.config import TrainConfig

UDPOS_TEST = "udpos/UD_German-PUD/de_pud-ud-test.conllu.gz"


def _udpos_dir(tmp_path):
    """UD-POS as --data-dir lays it out: English train (also as dev) and German test, from tests/fixtures."""
    data = tmp_path / "data"
    for name in ("udpos/UD_English-LinES/en_lines-ud-train.conllu.gz", UDPOS_TEST):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / name, data / name)
    shutil.copy(data / "udpos/UD_English-LinES/en_lines-ud-train.conllu.gz",
                data / "udpos/UD_English-LinES/en_lines-ud-dev.conllu.gz")
    return data


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _not_utf8(path):
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    lines[4] = b"# caf\xe9 in Latin-1"
    path.write_bytes(gzip.compress(b"\n".join(lines)))


def _empty(path):
    path.write_bytes(gzip.compress(b""))


@pytest.mark.parametrize("damage, message", [
    (_truncate, r"udpos test data \(de\): .*de_pud-ud-test\.conllu\.gz, line \d+: not a readable gzip file .*"
                r"truncated or corrupt"),
    (_not_utf8, r"udpos test data \(de\): .*de_pud-ud-test\.conllu\.gz, line 5: not UTF-8 text"),
    (_empty, r"udpos test data \(de\) under .* has no examples"),
])
def test_a_damaged_target_file_is_named_with_its_line_and_language(tmp_path, damage, message):
    data = _udpos_dir(tmp_path)
    damage(data / UDPOS_TEST)
    with pytest.raises(StudyError, match=message):
        check_local_files(T.TASKS["udpos"], ("de",), data)


def test_a_qa_question_without_answers_names_the_file_and_question(tmp_path):
    squad = {"data": [{"paragraphs": [{"context": "Berlin is big.", "qas": [
        {"id": "q1", "question": "What is big?", "answers": [{"text": "Berlin", "answer_start": 0}]},
        {"id": "q2", "question": "Why?", "answers": []}]}]}]}
    (tmp_path / "xquad").mkdir()
    (tmp_path / "xquad" / "xquad.de.json").write_text(json.dumps(squad))
    with pytest.raises(StudyError, match=r"xquad test data \(de\): .*xquad\.de\.json: question id 'q2' has no "
                                         r"answers"):
        load_split(T.TASKS["xquad"], "test", "de", tmp_path)


def test_the_driver_parses_every_target_file_before_ray(tmp_path):
    from study.train.pipeline import validate

    data = _udpos_dir(tmp_path)
    cfg = TrainConfig(model="tiny", task="udpos", languages=("de",), data_dir=str(data), max_length=32)
    validate(cfg)  # intact files pass
    _truncate(data / UDPOS_TEST)
    with pytest.raises(StudyError, match=r"udpos test data \(de\): .*de_pud-ud-test\.conllu\.gz, line \d+"):
        validate(TrainConfig(**{**cfg.to_dict(), "languages": ("de",), "max_length": 33}))


@pytest.mark.parametrize("task, length, ok", [("udpos", 2, False), ("udpos", 5, False), ("udpos", 6, True),
                                              ("pocket-topic", 3, False)])
def test_a_max_length_that_holds_no_word_stops_before_ray(task, length, ok):
    from study.train.pipeline import validate

    cfg = TrainConfig(model="tiny", task=task, max_length=length)
    if ok:
        validate(cfg)
        return
    with pytest.raises(StudyError, match=rf"--max-length {length} is too short for tiny on {task}: an input needs "
                                         r"at least 6 tokens"):
        validate(cfg)


def test_errors_that_come_back_on_retry_are_told_from_lost_workers():
    from ray.exceptions import ActorDiedError
    from ray.train.v2._internal.exceptions import UserExceptionWithTraceback

    from study.train.fail_fast import FailFast

    for error in (StudyError("x"), UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "bad"), EOFError(),
                  json.JSONDecodeError("x", "", 0)):
        assert cannot_succeed_on_retry(error)
    for error in (ActorDiedError(), RuntimeError("NCCL timeout"), ConnectionError()):
        assert not cannot_succeed_on_retry(error)
    traceback = "Traceback (most recent call last):\n  File \"x.py\"\nstudy.core.errors.StudyError: the loss became " \
                "non-finite at step 3"
    worker = UserExceptionWithTraceback(StudyError("the loss became non-finite at step 3"), traceback)
    FailFast().after_exception(None, {0: ActorDiedError()})  # a lost worker: Ray Train retries it
    with pytest.raises(StudyError, match=r"^the loss became non-finite at step 3$"):
        FailFast().after_exception(None, {1: ActorDiedError(), 0: worker})
    undecodable = UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "invalid continuation byte")
    with pytest.raises(StudyError, match=r"^UnicodeDecodeError: 'utf-8' codec can't decode byte 0xe9"):
        FailFast().after_exception(None, {0: UserExceptionWithTraceback(undecodable, "Traceback ...")})


@pytest.mark.e2e
def test_a_truncated_target_file_stops_study_train_in_one_line_before_ray(tmp_path):
    data = _udpos_dir(tmp_path)
    _truncate(data / UDPOS_TEST)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "study.train", "--model", "tiny", "--task", "udpos",
                             "--languages", "de", "--data-dir", str(data), "--storage", str(tmp_path / "runs"),
                             "--max-steps", "2"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "RAY_ADDRESS": ""})
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: udpos test data (de): ") and "line" in lines[0], lines
    assert UDPOS_TEST.rsplit("/", 1)[-1] in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing written, Ray never started
    assert time.monotonic() - started < 120


def test_a_run_reads_every_target_test_set_before_its_first_step(tmp_path):
    """Hub data is not parsed before Ray starts (only --data-dir is): the worker reads every test set while it sets
    up, so a bad file stops the run before its first optimizer step, not after training."""
    import torch

    from study.train.finetune import FineTuneRun

    data = _udpos_dir(tmp_path)
    _truncate(data / UDPOS_TEST)
    cfg = TrainConfig(model="tiny", task="udpos", languages=("de",), data_dir=str(data), max_length=32,
                      max_train_examples=16, batch_size=8)
    with pytest.raises(StudyError, match=r"udpos test data \(de\): .*de_pud-ud-test\.conllu\.gz"):
        FineTuneRun(cfg, 0, 1, torch.device("cpu"))

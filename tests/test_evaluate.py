"""Zero-shot evaluation: a real retrieval run with e5-small, and the supervised plumbing with the tiny model."""

import json
import os
import subprocess
import sys

import pytest

from conftest import SHARED_DATA
from study import evaluate as cli
from study.data.sources import load_split
from study.models import load_model, load_tokenizer, save_model_dir
from study.tasks import TASKS

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real test data not found at {SHARED_DATA}")


@needs_data
def test_real_tatoeba_retrieval_with_e5_small_is_far_above_chance(e5_small, tmp_path, capsys):
    out = tmp_path / "tatoeba.json"
    assert cli.main(["--model", "e5-small", "--task", "tatoeba", "--languages", "sw", "--data-dir",
                     str(SHARED_DATA), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result) >= {"task", "model", "metric", "per_language", "per_family", "average"}
    assert result["model"].endswith("[offline stand-in]") and result["metric"] == "accuracy"
    assert result["per_language"]["sw"] > 0.6  # chance is 1/390; the reference measurement is 0.733
    assert result["per_family"] == {"Niger-Congo": result["per_language"]["sw"]}
    shown = capsys.readouterr().out
    assert "Niger-Congo" in shown and result["protocol"].startswith("bare-encoder proxy, not XTREME-R")
    assert "protocol: bare-encoder proxy, not XTREME-R" in shown


def test_pocket_retrieval_with_e5_small(e5_small, tmp_path):
    out = tmp_path / "pocket.json"
    cli.main(["--model", "e5-small", "--task", "pocket-retrieval", "--languages", "de,ja", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["suite"] == "pocket" and min(result["per_language"].values()) > 0.5


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory, tiny):
    """The tiny model with each head, saved as a study checkpoint directory (untrained: plumbing only)."""
    tokenizer = load_tokenizer(tiny)
    dirs = {}
    for head, labels in (("sequence", 17), ("token", 17), ("qa", 2), ("multiple-choice", 2)):
        path = tmp_path_factory.mktemp(head)
        save_model_dir(load_model(tiny, head, num_labels=labels), tokenizer, tiny, path)
        dirs[head] = path
    return dirs


@needs_data
@pytest.mark.parametrize("task, language, head", [("pocket-topic", "de", "sequence"), ("udpos", "de", "token"),
                                                  ("xquad", "de", "qa"), ("xcopa", "sw", "multiple-choice")])
def test_supervised_tasks_evaluate_a_checkpoint(task, language, head, tiny_checkpoints, tmp_path):
    out = tmp_path / "r.json"
    args = ["--checkpoint", str(tiny_checkpoints[head]), "--task", task, "--languages", language,
            "--json", str(out), "--data-dir", str(SHARED_DATA)]
    assert cli.main(args) == 0
    result = json.loads(out.read_text())
    assert 0.0 <= result["per_language"][language] <= 1.0 and "fine-tuned" in result["model"]
    assert result["metric"] == TASKS[task].metric and len(result["per_family"]) == 1
    # every gold unit of the test set is scored: each word (tagging), question (QA) or example
    records = load_split(TASKS[task], "test", language, SHARED_DATA)
    expected = sum(len(r["tokens"]) for r in records) if head == "token" else len(records)
    assert result["details"][language]["gold_units"] == expected


def _run(*args):
    return subprocess.run([sys.executable, "-m", "study.evaluate", *args], capture_output=True, text=True,
                          env=os.environ, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--model", "tiny", "--task", "xnli"], "needs a fine-tuned sequence head"),
    (["--model", "tiny", "--task", "tatoeba", "--languages", "en"], "task 'tatoeba' has no language 'en'"),
    (["--model", "tiny", "--task", "paws-x"], "unknown task 'paws-x'"),
    (["--model", "tiny", "--task", "pocket-retrieval", "--languages", "de", "--layer", "99"],
     "--layer 99 is out of range: tiny has hidden states 0..6"),
    (["--model", "tiny", "--task", "pocket-retrieval", "--languages", "de", "--max-length", "0"],
     "--max-length 0 is out of range: 1..512 for tiny"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    result = _run(*args, "--json", str(tmp_path / "never.json"))
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "never.json").exists()


def test_an_unwritable_json_path_stops_before_evaluating(tmp_path):
    result = _run("--model", "tiny", "--task", "pocket-retrieval", "--languages", "de",
                  "--json", str(tmp_path / "no" / "such" / "dir.json"))
    assert result.returncode == 2 and "its directory does not exist or is not writable" in result.stderr
    assert "[evaluate]" not in result.stderr  # nothing was evaluated


# --- every gold unit is scored ------------------------------------------------------------------------------------


def test_word_windows_fit_the_budget_and_keep_every_word():
    from study.data.features import word_windows

    assert word_windows([2, 3, 1, 4], 5) == [(0, 2), (2, 4)]
    assert word_windows([1, 7, 1], 5) == [(0, 1), (1, 2), (2, 3)]  # an over-long word is a window of its own
    assert word_windows([], 5) == [(0, 0)]


def test_every_word_of_a_long_sentence_is_scored(tiny):
    """A 40-word sentence at max_length 16 used to score the 14 words of its first window; now all 40 are scored,
    a word the tokenizer drops entirely (a zero-width space) included, and training pairs its windows."""
    from study.augment import Synonyms
    from study.data.features import encode_records
    from study.data.vme import build_pairs
    from study.evaluation import score_supervised
    from study.tasks import get_task

    task = get_task("udpos")
    tokenizer = load_tokenizer(tiny)
    words = ("the quick brown fox jumps over the lazy dog while " * 4).split()
    words[5] = "\u200b"
    records = [{"tokens": words, "tags": ["NOUN"] * len(words)}, {"tokens": ["short", "one"], "tags": ["ADJ", "NUM"]}]
    assert tokenizer("\u200b", add_special_tokens=False)["input_ids"] == []
    features = encode_records(task, records, tokenizer, 16, "long-sentence")
    assert len(features) > len(records) and features["word_start"].count(0) == len(records)
    model = load_model(tiny, "token", num_labels=len(task.labels))
    score, extra = score_supervised(task, records, model, tokenizer, 16, "long-sentence")
    assert extra["gold_units"] == 42 and extra["examples"] == 2 and 0.0 <= score <= 1.0
    pairs, _ = build_pairs(task, records, Synonyms({}, "none"), tokenizer, k=1, seed=0, max_length=16)
    assert len(pairs) == len(features)  # identical copies window identically: every window has its partner


def test_qa_answers_are_scored_by_the_test_language_rules(tiny, monkeypatch):
    """MLQA's test languages go through MLQA's own scorer (metrics.answer_normalizer), with the language."""
    from study import metrics
    from study.evaluation import score_supervised

    asked = []
    real = metrics.answer_normalizer
    monkeypatch.setattr(metrics, "answer_normalizer", lambda task, lang: asked.append((task, lang)) or real(task, lang))
    records = [{"id": "q1", "question": "哪里?", "context": "北京大学在北京。", "answers": {"text": ["北京大学"],
                                                                                   "answer_start": [0]}}]
    tokenizer = load_tokenizer(tiny)
    _, extra = score_supervised(TASKS["mlqa"], records, load_model(tiny, "qa", num_labels=2), tokenizer, 64,
                                "mlqa-zh", lang="zh")
    assert asked == [("mlqa", "zh")] and extra["gold_units"] == 1

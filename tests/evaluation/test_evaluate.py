"""Zero-shot evaluation: a real retrieval run with e5-small, the supervised plumbing with the tiny model, and the
length-bucketed batches against plain loops (the same scores to 1e-6)."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import FIXTURES
from sklearn.metrics import f1_score

from study.cli import evaluate as cli
from study.data.features import encode_records, encode_texts
from study.data.formats import Bitext
from study.data.sources import load_split
from study.data.tasks import TASKS
from study.evaluation import scoring as evaluation
from study.evaluation.scoring import length_batches, padded_inputs, run_batches, score_retrieval, sentence_embeddings
from study.models.registry import load_model, load_tokenizer, save_model_dir


@pytest.mark.e2e
def test_real_tatoeba_retrieval_with_e5_small_is_far_above_chance(e5_small, tmp_path, capsys):
    out = tmp_path / "tatoeba.json"
    assert cli.main(["--model", "e5-small", "--task", "tatoeba", "--languages", "sw", "--data-dir",
                     str(FIXTURES), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result) >= {"task", "model", "metric", "per_language", "per_family", "average"}
    assert result["model"].endswith("[offline stand-in]") and result["metric"] == "accuracy"
    assert result["per_language"]["sw"] > 0.6  # chance is 1/390; measured: 0.759 en -> xx (0.733 xx -> en)
    assert result["details"]["sw"]["direction"] == "en_to_xx" and result["details"]["sw"]["xx_to_en"] > 0.6
    assert result["per_family"] == {"Niger-Congo": result["per_language"]["sw"]}
    shown = capsys.readouterr().out
    assert "Niger-Congo" in shown and result["protocol"].startswith("bare-encoder proxy, not XTREME-R")
    assert "protocol: bare-encoder proxy, not XTREME-R" in shown


def test_tatoeba_protocol_is_xtreme_rs_only_for_a_squad_fine_tuned_encoder_at_its_layer_and_length():
    """scripts/run_tatoeba.sh + third_party/evaluate_retrieval.py: --specific_layer 7 of the layers' outputs (the
    embeddings excluded) of a 12-layer encoder is hidden state 8; LAYER=13 of 24 is hidden state 14; MAXL=512."""
    from study.data.tasks import TASKS, retrieval_settings

    tatoeba = TASKS["tatoeba"]
    mbert = retrieval_settings(tatoeba, 12, trained_on="xquad")
    assert (mbert.layer, mbert.max_length) == (8, 512) and mbert.protocol.startswith("XTREME-R (")
    large = retrieval_settings(tatoeba, 24, trained_on="mlqa")
    assert (large.layer, large.max_length) == (14, 512) and large.protocol.startswith("XTREME-R (")
    assert retrieval_settings(tatoeba, 12, trained_on="xquad", layer=8, max_length=512) == mbert  # said explicitly
    for override in ({"layer": 12}, {"max_length": 128}):  # anything else is a named proxy
        other = retrieval_settings(tatoeba, 12, trained_on="xquad", **override)
        assert other.protocol.startswith("proxy, not XTREME-R: hidden state")
        assert "XTREME-R: 8 and 512" in other.protocol
    bare = retrieval_settings(tatoeba, 12)
    assert (bare.layer, bare.max_length) == (None, 128) and bare.protocol.startswith("bare-encoder proxy")
    assert "fine-tuned on udpos, not SQuAD" in retrieval_settings(tatoeba, 12, trained_on="udpos").protocol
    assert "has 6" in retrieval_settings(tatoeba, 6, trained_on="xquad").protocol
    lareqa = retrieval_settings(TASKS["lareqa"], 12, trained_on="xquad")  # not a LAReQA dual encoder: a proxy
    assert lareqa.protocol.startswith("proxy, not XTREME-R: mean-pooled states of an encoder fine-tuned on xquad")
    assert (lareqa.layer, lareqa.max_length, lareqa.query_max_length) == (None, 128, None)


@pytest.mark.e2e
def test_tatoeba_on_a_squad_checkpoint_embeds_hidden_state_8_of_512_tokens_as_xtreme_r(e5_small, tmp_path):
    """study.cli.evaluate on an xquad checkpoint (12 layers) runs XTREME-R's Tatoeba protocol and labels it so; the
    accuracy equals a plain transformers loop written from the official rules on the LASER files themselves (en ->
    xx: evaluate_retrieval.py indexes the Swahili sentences and searches with the English ones)."""
    from transformers import AutoModel, AutoTokenizer

    checkpoint = tmp_path / "squad-checkpoint"  # a QA head on e5-small, saved as a study checkpoint of xquad
    save_model_dir(load_model(e5_small, "qa"), load_tokenizer(e5_small), e5_small, checkpoint, task="xquad")
    out = tmp_path / "tatoeba.json"
    assert cli.main(["--checkpoint", str(checkpoint), "--task", "tatoeba", "--languages", "sw", "--data-dir",
                     str(FIXTURES), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"].startswith("XTREME-R (encoder fine-tuned on SQuAD v1.1 via xquad; hidden state 8")
    assert (result["layer"], result["max_length"]) == (8, 512)

    folder = FIXTURES / "tatoeba" / "v1"
    swahili = (folder / "tatoeba.swh-eng.swh").read_text(encoding="utf-8").splitlines()
    english = (folder / "tatoeba.swh-eng.eng").read_text(encoding="utf-8").splitlines()
    model, tokenizer = AutoModel.from_pretrained(checkpoint).eval(), AutoTokenizer.from_pretrained(checkpoint)

    def embed(sentences):  # mean over the attention mask (special tokens included) of hidden state 8, cosine
        rows = []
        for start in range(0, len(sentences), 64):
            batch = tokenizer([e5_small.text_prefix + s for s in sentences[start:start + 64]], padding=True,
                              truncation=True, max_length=512, return_tensors="pt")
            with torch.inference_mode():
                hidden = model(**batch, output_hidden_states=True).hidden_states[8]
            mask = batch["attention_mask"].unsqueeze(-1).float()
            rows.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(rows)

    nearest = (embed(english) @ embed(swahili).T).argmax(dim=1)  # each English sentence retrieves a Swahili one
    expected = (nearest == torch.arange(len(swahili))).float().mean().item()
    assert result["per_language"]["sw"] == pytest.approx(expected, abs=1.5 / len(swahili))  # at most one near-tie
    assert result["details"]["sw"]["gold_units"] == len(swahili) == 390


@pytest.mark.e2e
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


@pytest.mark.parametrize("task, language, head", [("pocket-topic", "de", "sequence"), ("udpos", "de", "token"),
                                                  ("xquad", "de", "qa"), ("xcopa", "sw", "multiple-choice")])
def test_supervised_tasks_evaluate_a_checkpoint(task, language, head, tiny_checkpoints, tmp_path):
    out = tmp_path / "r.json"
    args = ["--checkpoint", str(tiny_checkpoints[head]), "--task", task, "--languages", language,
            "--json", str(out), "--data-dir", str(FIXTURES)]
    assert cli.main(args) == 0
    result = json.loads(out.read_text())
    assert 0.0 <= result["per_language"][language] <= 1.0 and "fine-tuned" in result["model"]
    assert result["metric"] == TASKS[task].metric and len(result["per_family"]) == 1
    # every gold unit of the test set is scored: each word (tagging), question (QA) or example
    records = load_split(TASKS[task], "test", language, FIXTURES)
    expected = sum(len(r["tokens"]) for r in records) if head == "token" else len(records)
    assert result["details"][language]["gold_units"] == expected


def test_xcopa_from_a_social_iqa_checkpoint_keeps_its_head_and_is_labelled_xtreme_r(tiny, tmp_path):
    """scripts/train_xcopa.sh: one multiple-choice model trained on SIQa, then COPA. A COPA run that starts from a
    siqa checkpoint keeps its head (the scorer of each choice), and its checkpoint's evaluation says XTREME-R; a COPA
    run from the pretrained encoder stays the named proxy."""
    siqa = tmp_path / "siqa"
    model = load_model(tiny, "multiple-choice")
    with torch.no_grad():
        model.classifier.weight.fill_(0.25)
    save_model_dir(model, load_tokenizer(tiny), tiny, siqa, task="siqa")
    assert torch.equal(load_model(tiny, "multiple-choice", path=str(siqa)).classifier.weight, model.classifier.weight)
    for init_task, protocol in (("siqa", "XTREME-R (SIQa, then COPA)"), (None, TASKS["xcopa"].protocol)):
        copa = tmp_path / f"copa-{init_task}"
        save_model_dir(model, load_tokenizer(tiny), tiny, copa, task="xcopa", init_task=init_task)
        out = tmp_path / f"{init_task}.json"
        assert cli.main(["--checkpoint", str(copa), "--task", "xcopa", "--languages", "sw", "--data-dir",
                         str(FIXTURES), "--json", str(out)]) == 0
        assert json.loads(out.read_text())["protocol"] == protocol


def test_a_checkpoint_is_evaluated_only_by_a_task_its_head_fits(tiny, tmp_path):
    """An XCOPA checkpoint on UD-POS, or --layer for a task its head scores: one line, nothing evaluated."""
    from study.core.errors import StudyError

    save_model_dir(load_model(tiny, "multiple-choice"), load_tokenizer(tiny), tiny, tmp_path / "copa", task="xcopa")
    with pytest.raises(StudyError, match=r"was fine-tuned on xcopa \(a multiple-choice head\); task 'udpos' needs"):
        cli.main(["--checkpoint", str(tmp_path / "copa"), "--task", "udpos", "--languages", "de"])
    with pytest.raises(StudyError, match="--layer applies to retrieval tasks; 'xcopa' is scored by its fine-tuned"):
        cli.main(["--checkpoint", str(tmp_path / "copa"), "--task", "xcopa", "--languages", "sw", "--layer", "3"])


def _run(*args):
    return subprocess.run([sys.executable, "-m", "study", "evaluate", *args], capture_output=True, text=True,
                          env=os.environ, timeout=300)


@pytest.mark.e2e
@pytest.mark.parametrize("args, message", [
    (["--model", "tiny", "--task", "xnli"], "needs a fine-tuned sequence head"),
    (["--model", "tiny", "--task", "tatoeba", "--languages", "en"], "task 'tatoeba' has no language 'en'"),
    (["--model", "tiny", "--task", "paws-x"], "unknown task 'paws-x'"),
    (["--model", "tiny", "--task", "pocket-retrieval", "--languages", "de", "--layer", "99"],
     "--layer 99 is out of range: tiny has hidden states 0..6"),
    (["--model", "tiny", "--task", "pocket-retrieval", "--languages", "de", "--max-length", "0"],
     "--max-length 0 is out of range: 3..512 for tiny"),
    # two special tokens and one of the sentence: at 1 the tokenizer cannot cut and returns the sentence whole
    (["--model", "tiny", "--task", "pocket-retrieval", "--languages", "de", "--max-length", "2"],
     "--max-length 2 is out of range: 3..512 for tiny"),
    (["--model", "tiny", "--task", "pocket-retrieval", "--languages", "de,de"], "--languages lists de more than once"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    result = _run(*args, "--json", str(tmp_path / "never.json"))
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "never.json").exists()


@pytest.mark.e2e
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
    """A 40-word sentence at max_length 16 is scored on all 40 words (not only the 14 of its first window), a word
    the tokenizer drops entirely (a zero-width space) included, and training pairs its windows."""
    from study.data.augment import Synonyms
    from study.data.features import encode_records
    from study.data.pairs import build_pairs
    from study.data.tasks import get_task
    from study.evaluation.scoring import score_supervised

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
    from study.core import metrics
    from study.evaluation.scoring import score_supervised

    asked = []
    real = metrics.answer_normalizer
    monkeypatch.setattr(metrics, "answer_normalizer", lambda task, lang: asked.append((task, lang)) or real(task, lang))
    records = [{"id": "q1", "question": "哪里?", "context": "北京大学在北京。", "answers": {"text": ["北京大学"],
                                                                                   "answer_start": [0]}}]
    tokenizer = load_tokenizer(tiny)
    _, extra = score_supervised(TASKS["mlqa"], records, load_model(tiny, "qa", num_labels=2), tokenizer, 64,
                                "mlqa-zh", lang="zh")
    assert asked == [("mlqa", "zh")] and extra["gold_units"] == 1


# --- length-bucketed batches: every row scored, in its original order, as a plain loop scores it -----------------


def test_length_batches_hold_every_row_once_in_order_of_length_within_the_budget():
    lengths = np.random.default_rng(0).integers(1, 129, size=500)
    for budget in (1, 100, 1024):
        batches = length_batches(lengths, budget)
        assert sorted(np.concatenate(batches).tolist()) == list(range(500))
        assert all(len(b) == 1 or len(b) * lengths[b].max() <= budget for b in batches)
        assert all(lengths[a].max() <= lengths[b].min() for a, b in itertools.pairwise(batches))


def test_padded_inputs_pad_as_the_tokenizer_and_outputs_come_back_in_row_order(tiny):
    tokenizer = load_tokenizer(tiny)
    texts = ["a much longer sentence than any of the others", "a", "two words", "", "x " * 100, "three short words"]
    padded = padded_inputs(encode_texts(TASKS["tatoeba"], texts, tokenizer, 32, "unit"), tokenizer)
    expected = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    assert set(padded.inputs) == set(expected) and all(torch.equal(padded.inputs[k], expected[k]) for k in expected)
    assert len(length_batches(padded.lengths, 40)) > 1 and list(np.argsort(padded.lengths)) != list(range(len(texts)))
    def echo(inputs):  # each row's tokens, padded back to the full width
        ids = inputs["input_ids"]
        return F.pad(ids, (0, padded.width - ids.shape[-1]), value=tokenizer.pad_token_id)

    assert torch.equal(run_batches(echo, padded, "cpu", token_budget=40), padded.inputs["input_ids"])


def test_multiple_choice_rows_are_padded_per_choice(tiny):
    tokenizer = load_tokenizer(tiny)
    records = [{"premise": "The man fell.", "question": "cause", "choices": ["He slipped on a wet floor.", "Rain."],
                "label": 0}, {"premise": "It rained.", "question": "effect", "choices": ["Wet.", "Dry."], "label": 0}]
    features = encode_records(TASKS["xcopa"], records, tokenizer, 32, "unit")
    padded = padded_inputs(features, tokenizer)
    flat = tokenizer.pad({"input_ids": [seq for row in features["input_ids"] for seq in row]}, return_tensors="pt")
    assert torch.equal(padded.inputs["input_ids"], flat["input_ids"].view(2, 2, -1))
    assert padded.lengths.tolist() == [max(map(len, row)) for row in features["input_ids"]]


def _plain_embeddings(model, tokenizer, texts, layer=None, batch_size=16):
    """The plain loop: file order, each batch padded by the tokenizer, the L2-normalised masked mean of a layer."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=128,
                              return_tensors="pt")
            result = model.base_model(**batch, output_hidden_states=True)
            hidden = result.hidden_states[-1 if layer is None else layer]
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out).numpy()


@pytest.mark.e2e
@pytest.mark.parametrize("task", ["pocket-retrieval", "tatoeba"])
def test_retrieval_scores_equal_a_plain_loop(task, e5_small):
    model, tokenizer, prefix = load_model(e5_small).eval(), load_tokenizer(e5_small), e5_small.text_prefix
    full = load_split(TASKS[task], "test", "de", FIXTURES)
    data = Bitext(full.source[:150], full.english[:150])
    score, extra = score_retrieval(TASKS[task], data, model, tokenizer, layer=None, prefix=prefix, max_length=128,
                                   key="unit", token_budget=300)
    source, english = (_plain_embeddings(model, tokenizer, [prefix + t for t in side])
                       for side in (data.source, data.english))
    similarity = source @ english.T
    both = {"xx_to_en": np.mean(similarity.argmax(1) == np.arange(150)),
            "en_to_xx": np.mean(similarity.argmax(0) == np.arange(150))}  # Tatoeba's headline: en -> xx
    headline = TASKS[task].retrieval_direction
    other = "en_to_xx" if headline == "xx_to_en" else "xx_to_en"
    assert abs(score - both[headline]) <= 1e-6 and abs(extra[other] - both[other]) <= 1e-6 and score > 0.5
    padded = padded_inputs(encode_texts(TASKS[task], [prefix + t for t in data.source], tokenizer, 128, "unit-src"),
                           tokenizer)
    for layer in (None, 6):  # each sentence's embedding, not only the score
        ours = sentence_embeddings(model, padded, layer=layer, token_budget=300)
        plain = source if layer is None else _plain_embeddings(model, tokenizer, [prefix + t for t in data.source], 6)
        assert np.abs(ours - plain).max() <= 1e-6


def test_classification_scores_equal_a_plain_loop(tiny):
    """Independent of the project's batching: the tokenizer pads each batch of 8 texts in file order."""
    task, tokenizer = TASKS["pocket-topic"], load_tokenizer(tiny)
    torch.manual_seed(0)
    model = load_model(tiny, "sequence", num_labels=len(task.labels)).eval()
    for language in ("de", "ja"):
        records = load_split(task, "test", language)[:120]
        score, extra = evaluation.score_supervised(task, records, model, tokenizer, 128, f"unit-{language}",
                                                   token_budget=200)
        predictions = []
        with torch.inference_mode():
            for start in range(0, len(records), 8):
                batch = tokenizer([r["text_a"] for r in records[start:start + 8]], padding=True, truncation=True,
                                  max_length=128, return_tensors="pt")
                predictions += model(**batch).logits.argmax(-1).tolist()
        gold = [r["label"] for r in records]
        assert extra["units"] == [[float(p == g), 1.0] for p, g in zip(predictions, gold, strict=True)]
        assert abs(score - np.mean(np.equal(predictions, gold))) <= 1e-6 and extra["examples"] == len(records)
        assert abs(extra["macro_f1"] - f1_score(gold, predictions, average="macro")) <= 1e-6


def _plain_batches(lengths, token_budget):
    """The plain loop's batches: 8 rows at a time in file order (``run_batches`` still pads each to its longest)."""
    return [np.arange(start, min(start + 8, len(lengths))) for start in range(0, len(lengths), 8)]


@pytest.mark.parametrize("task, language, records", [
    ("pocket-topic", "fa", 150),
    ("xcopa", "sw", 100),
    ("udpos", "de", 100),
    ("xquad", "de", 40),
])
def test_every_scorer_gives_a_plain_loops_scores(task, language, records, tiny, monkeypatch):
    """Each task kind's scorer, fed by length-sorted batches cut to a token budget, gives the per-example units and
    the scores it gives when fed batches of 8 in file order; every gold unit is scored."""
    task = TASKS[task]
    torch.manual_seed(0)
    model = load_model(tiny, task.head, num_labels=len(task.labels) or None).eval()
    tokenizer = load_tokenizer(tiny)
    rows = load_split(task, "test", language, FIXTURES)[:records]
    score, extra = evaluation.score_supervised(task, rows, model, tokenizer, 128, "unit", token_budget=256)
    monkeypatch.setattr(evaluation, "length_batches", _plain_batches)
    plain_score, plain_extra = evaluation.score_supervised(task, rows, model, tokenizer, 128, "unit")
    assert abs(score - plain_score) <= 1e-6 and len(extra["units"]) == len(rows) == extra["examples"]
    assert np.abs(np.subtract(extra["units"], plain_extra["units"])).max() <= 1e-6
    for key in set(extra) - {"units"}:
        assert abs(extra[key] - plain_extra[key]) <= 1e-6, key

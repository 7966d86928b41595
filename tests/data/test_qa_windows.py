"""QA windows and the max-context rule as XTREME predicts (third_party/run_squad.py, processors/squad.py): golden
values computed by hand from the rules, then the tokenised features and the scorer against them."""

import pytest
import torch
from helpers import FIXTURES

from study.data.features import encode_records
from study.data.qa_features import doc_spans, max_context_flags, qa_prediction_settings, qa_window
from study.data.tasks import TASKS
from study.models.registry import load_tokenizer


def test_doc_stride_is_the_step_between_window_starts():
    # 10 context tokens, room for 6 a window, doc_stride 2: windows start at 0, 2, 4; [4, 10) reaches the end.
    assert doc_spans(10, 6, 2) == [(0, 6), (2, 6), (4, 6)]
    # (a tokenizer's stride=2 is an overlap: its windows would start at 0 and 4, i.e. [(0, 6), (4, 6)])
    assert doc_spans(6, 6, 2) == [(0, 6)]  # fits one window
    assert doc_spans(7, 6, 2) == [(0, 6), (2, 5)]  # the last window ends at the context's end
    assert doc_spans(0, 6, 2) == [(0, 0)]
    # XTREME's 384 / 128 with 20 question tokens and 3 special tokens: room 361; 700 tokens -> starts 0, 128, 256, 384
    assert [s for s, _ in doc_spans(700, 361, 128)] == [0, 128, 256, 384]


def test_max_context_flags_follow_xtreme_score():
    """score = min(left, right) + 0.01 * window length; the earliest window wins a tie. By hand for the windows
    (0, 6), (2, 6), (4, 6): token 4 scores 1.06 / 2.06 / 0.06 (window 1), token 3 scores 2.06 / 1.06 (window 0),
    token 6 scores 1.06 / 2.06 (window 2)."""
    assert max_context_flags([(0, 6), (2, 6), (4, 6)]) == [
        [True, True, True, True, False, False],  # tokens 0-5
        [False, False, True, True, False, False],  # tokens 2-7
        [False, False, True, True, True, True],  # tokens 4-9
    ]
    # a tie: token 3 in (0, 5) and (2, 5) scores min(3, 1) + 0.05 = min(1, 3) + 0.05: the earlier window keeps it
    assert max_context_flags([(0, 5), (2, 5)])[0][3] and not max_context_flags([(0, 5), (2, 5)])[1][1]
    # the length term decides between equal minima: tokens 0 and 1 score 0.04 and 1.04 in (0, 4), 0.06 and 1.06 in
    # (0, 6); tokens 2 and 3 score 1.04 and 0.04 against 2.06 and 2.06
    assert max_context_flags([(0, 4), (0, 6)]) == [[False] * 4, [True] * 6]


def _record(n_words: int, answer_word: int = 30) -> dict:
    words = [f"w{i}" for i in range(n_words)]
    context = " ".join(words)
    start = context.index(f" w{answer_word} ") + 1
    return {"id": "q1", "question": "which one?", "context": context,
            "answers": {"text": [f"w{answer_word}"], "answer_start": [start]}}


def test_encoded_windows_are_xtremes_and_carry_the_max_context_flags(tiny):
    tokenizer = load_tokenizer(tiny)
    record = _record(60)
    features = encode_records(TASKS["xquad"], [record], tokenizer, 48, "xtreme-windows")
    context_ids = tokenizer(record["context"], add_special_tokens=False)["input_ids"]
    question = len(tokenizer(record["question"], add_special_tokens=False)["input_ids"])
    room, (_, stride) = 48 - question - tokenizer.num_special_tokens_to_add(pair=True), qa_window(48, 4)
    spans = doc_spans(len(context_ids), room, stride)
    assert stride == 16 and len(features) == len(spans) > 2
    for feature, (start, length), flags in zip(features, spans, max_context_flags(spans), strict=True):
        inside = [k for k, o in enumerate(feature["offset_mapping"]) if o is not None]
        assert [feature["input_ids"][k] for k in inside] == context_ids[start:start + length]
        assert [feature["max_context"][k] for k in inside] == flags
        assert not any(feature["max_context"][k] for k in range(len(feature["input_ids"])) if k not in inside)
    labelled = [f for f in features if f["start_positions"] > 0]  # every window holding the whole answer
    assert labelled and all(record["context"][f["offset_mapping"][f["start_positions"]][0]:
                                              f["offset_mapping"][f["end_positions"]][1]].strip() == "w30"
                            for f in labelled)


def test_an_answer_start_counts_only_in_its_max_context_window(tiny, monkeypatch):
    """Window 0 gives its highest logits to a token whose max-context window is window 1; XTREME drops that start
    there, so the answer comes from window 1, where the gold token has the best start and end."""
    from study.evaluation import scoring

    tokenizer = load_tokenizer(tiny)
    record = _record(60, answer_word=20)
    features = encode_records(TASKS["xquad"], [record], tokenizer, 48, "max-context")
    windows = [[k for k, o in enumerate(f["offset_mapping"]) if o is not None] for f in features]
    gold = features[1]["start_positions"]  # the answer's one token in window 1 ("w20" may be pieces: its first)
    gold_end = features[1]["end_positions"]
    decoy = next(k for k in windows[0] if not features[0]["max_context"][k] and features[0]["offset_mapping"][k][0]
                 != features[1]["offset_mapping"][gold][0])
    assert features[1]["max_context"][gold] and not features[0]["max_context"][decoy]
    width = max(len(f["input_ids"]) for f in features)
    logits = torch.zeros(len(features), 2, width)
    logits[0, :, decoy] = 10.0  # the best span of all, but not where its start has max context
    logits[1, 0, gold], logits[1, 1, gold_end] = 6.0, 6.0  # 12: above any span ending at the decoy (10)
    monkeypatch.setattr(scoring, "run_batches", lambda step, padded, device, budget: logits)
    model = type("Model", (), {"device": "cpu"})()
    score, extra = scoring.SCORERS["qa"](TASKS["xquad"], features, [record], model, None, 256, "en")
    assert (score, extra["f1"], extra["exact_match"]) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("trained_on, max_length, expected", [
    ("xquad", None, (384, "XTREME-R")),
    ("xquad", 128, (128, "proxy, not XTREME-R: windows of 128 tokens, doc stride 42, questions of at most 64 "
                         "tokens (XTREME-R predicts at 384 / 128 / 64)")),
    ("udpos", None, (384, "proxy, not XTREME-R: a model fine-tuned on udpos, not on xquad")),
])
def test_standalone_qa_evaluation_defaults_to_xtremes_predict_settings(trained_on, max_length, expected):
    assert qa_prediction_settings(TASKS["xquad"], trained_on, None, max_length, 512, 3) == expected
    assert qa_prediction_settings(TASKS["xquad"], "xquad", None, None, 256, 3)[1].startswith("proxy, not XTREME-R")


def test_a_squad_model_of_xquad_scores_mlqa_under_xtreme_rs_protocol():
    """scripts/train_qa.sh trains one SQuAD v1.1 model; XTREME predicts XQuAD and MLQA with it."""
    length, protocol = qa_prediction_settings(TASKS["mlqa"], "xquad", None, None, 512, 3)
    assert length == 384 and protocol.startswith("XTREME-R (the SQuAD v1.1 model of xquad")
    assert TASKS["xquad"].fine_tuned_protocol("mlqa", None).startswith("XTREME-R")
    assert TASKS["tydiqa"].fine_tuned_protocol("xquad", None).startswith("proxy, not XTREME-R")


@pytest.mark.e2e
def test_study_evaluate_scores_a_squad_checkpoint_at_384_under_the_xtreme_r_label(tiny, tmp_path, monkeypatch):
    import json

    from study.cli import evaluate as cli
    from study.evaluation import scoring
    from study.models.registry import load_model, save_model_dir

    real = scoring.load_split
    monkeypatch.setattr(scoring, "load_split", lambda *args: real(*args)[:40])  # the first 40 questions: quick
    checkpoint = tmp_path / "xquad-model"
    save_model_dir(load_model(tiny, "qa"), load_tokenizer(tiny), tiny, checkpoint, task="xquad")
    for extra, (length, protocol) in (([], (384, "XTREME-R")),
                                      (["--max-length", "256"], (256, "proxy, not XTREME-R: windows of 256 tokens"))):
        out = tmp_path / f"result{length}.json"
        assert cli.main(["--checkpoint", str(checkpoint), "--task", "xquad", "--languages", "de", "--data-dir",
                         str(FIXTURES), "--json", str(out), *extra]) == 0
        result = json.loads(out.read_text())
        assert result["max_length"] == length and result["protocol"].startswith(protocol)
        assert result["details"]["de"]["gold_units"] == 40

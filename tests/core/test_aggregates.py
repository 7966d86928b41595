"""XTREME-R's three aggregates, each by its own rule (the XTREME-R paper's category average, google-research/xtreme
evaluate.py's all_task, the flat F1 mean), on hand-made cells computed by hand; and the report's refusal to compute
any of them from fewer than the ten tasks or from scores not measured as XTREME-R measures them."""

from dataclasses import replace

import pytest

from study.core.aggregates import XTREME_R_TASKS, aggregates, category_means, flat_f1, xtreme_r_all_task, xtreme_r_avg

# hand-made cells (points); QA tasks as (F1 + EM) / 2 with their F1 beside
F1_EM = {"xquad": (70.0, 50.0), "mlqa": (60.0, 40.0), "tydiqa": (55.0, 35.0)}
CELLS = {"xnli": 70.0, "xcopa": 60.0, "udpos": 80.0, "panx": 60.0, "mewslix": 40.0, "lareqa": 20.0, "tatoeba": 60.0,
         **{task: (f1 + em) / 2 for task, (f1, em) in F1_EM.items()}}
QA_F1 = {task: f1 for task, (f1, _) in F1_EM.items()}


def test_the_three_aggregates_by_hand():
    # categories: (70 + 60) / 2 = 65; (80 + 60) / 2 = 70; (60 + 50 + 45) / 3 = 51.667; (40 + 20 + 60) / 3 = 40
    assert category_means(CELLS) == pytest.approx({"classification": 65.0, "structured prediction": 70.0,
                                                   "question answering": 155 / 3, "retrieval": 40.0})
    assert xtreme_r_avg(CELLS).value == pytest.approx((65 + 70 + 155 / 3 + 40) / 4)  # 56.667
    # flat over the ten tasks: (70 + 60 + 80 + 60 + 60 + 50 + 45 + 40 + 20 + 60) / 10
    assert xtreme_r_all_task(CELLS).value == pytest.approx(54.5)
    # the same with QA F1 alone: 70, 60, 55 in place of 60, 50, 45
    assert flat_f1(CELLS, QA_F1).value == pytest.approx(57.5)
    assert [a.name for a in aggregates(CELLS, QA_F1)] == ["xtreme_r_avg", "xtreme_r_all_task", "flat_f1"]
    assert len(XTREME_R_TASKS) == 10


def test_an_aggregate_without_its_full_task_set_is_not_computed_and_names_what_is_missing():
    partial = {task: score for task, score in CELLS.items() if task not in ("lareqa", "xcopa")}
    for found in aggregates(partial, QA_F1):
        assert found.value is None and found.missing == ("xcopa", "lareqa")
        assert found.note == "not computed: needs a full XTREME-R score of xcopa, lareqa"
    assert category_means(partial) == pytest.approx({"structured prediction": 70.0, "question answering": 155 / 3})
    assert flat_f1(CELLS, {}).missing == ("xquad (its F1)", "mlqa (its F1)", "tydiqa (its F1)")


def _xnli_study(**params):
    from study.core import protocol
    from study.data.tasks import TASKS
    from study.report.load import Study, TrialRun

    scores = {lang: 0.5 for lang in TASKS["xnli"].languages}
    run = TrialRun("r1", protocol.CONFIRM_PHASE, "plain", "S1", "mbert", "mBERT", False, "none",
                   {"max_eval_examples": "None", "max_length": "128", **params}, 0.6, 1, scores)
    return Study("golden", "uri", "accuracy", [], [run], "xnli")


def test_a_task_score_is_xtreme_rs_only_on_every_language_of_the_full_test_sets():
    from study.report.task_scores import task_score_rows

    assert task_score_rows(_xnli_study())[0]["xtreme_r_task_score"] is True
    subsampled = task_score_rows(_xnli_study(max_eval_examples="200"))[0]
    assert subsampled["xtreme_r_task_score"] is False
    assert subsampled["not_xtreme_r"] == "subsampled test sets (max_eval_examples 200)"
    study = _xnli_study()
    study.trials[0].scores.pop("sw")
    assert task_score_rows(study)[0]["not_xtreme_r"] == "14 of its 15 languages"
    qa = replace(_xnli_study(), task="xquad")
    qa.trials[0].scores = {lang: 0.5 for lang in ("en", "es", "de", "el", "ru", "tr", "ar", "vi", "th", "zh", "hi",
                                                 "ro")}
    assert task_score_rows(qa)[0]["not_xtreme_r"] == "QA windows of 128 tokens (XTREME-R: 384)"
    copa = replace(_xnli_study(), task="xcopa")  # the COPA-only proxy
    assert task_score_rows(copa)[0]["not_xtreme_r"].startswith("proxy, not XTREME-R: trains on COPA only")


def test_the_report_aggregates_only_xtreme_r_task_scores():
    from study.report.task_scores import aggregate_rows

    rows = [{"model": "A", "arm": "plain", "task": task, "all_languages": score, "xtreme_r_task_score": True}
            for task, score in CELLS.items()]
    found = {r["aggregate"]: (r["value"], r["note"]) for r in aggregate_rows(rows)}
    assert found["xtreme_r_avg"][0] == pytest.approx(xtreme_r_avg(CELLS).value)
    assert found["xtreme_r_all_task"][0] == pytest.approx(54.5)
    assert found["flat_f1"] == (None, "not computed: needs a full XTREME-R score of xquad (its F1), mlqa (its F1), "
                                      "tydiqa (its F1)")  # a study records (F1 + EM) / 2 only
    assert found["category: retrieval"][0] == pytest.approx(40.0)
    rows[0]["xtreme_r_task_score"] = False  # xnli measured otherwise: no paper average, no classification mean
    found = {r["aggregate"]: (r["value"], r["note"]) for r in aggregate_rows(rows)}
    assert found["xtreme_r_avg"] == (None, "not computed: needs a full XTREME-R score of xnli")
    assert found["category: classification"] == (None, "not computed: needs a full XTREME-R score of xnli")
    assert found["category: structured prediction"][0] == pytest.approx(70.0)


def _evaluate_result(task: str, score: float, protocol: str = "XTREME-R", f1: float | None = None) -> dict:
    """A ``study evaluate --json`` result whose every language scores ``score`` (a fraction)."""
    from study.data.tasks import TASKS

    languages = TASKS[task].languages
    details = {lang: {"f1": f1} if f1 is not None else {} for lang in languages}
    return {"task": task, "suite": "xtreme-r", "protocol": protocol, "per_language": dict.fromkeys(languages, score),
            "average": score, "details": details}


def test_study_aggregate_reads_evaluate_results_and_names_what_is_missing(tmp_path, capsys):
    import json

    from study.cli import aggregate

    paths = []
    for task, cell in CELLS.items():
        path = tmp_path / f"{task}.json"
        f1 = QA_F1[task] / 100 if task in QA_F1 else None
        path.write_text(json.dumps(_evaluate_result(task, cell / 100, f1=f1)))
        paths.append(str(path))
    assert aggregate.main([*paths, "--json", str(tmp_path / "summary.json")]) == 0
    found = json.loads((tmp_path / "summary.json").read_text())["aggregates"]
    assert found["xtreme_r_avg"]["value"] == pytest.approx((65 + 70 + 155 / 3 + 40) / 400)
    assert found["xtreme_r_all_task"]["value"] == pytest.approx(0.545)
    assert found["flat_f1"]["value"] == pytest.approx(0.575)
    # a bare-encoder Tatoeba proxy instead of XTREME-R's: no aggregate, and the output says which task is missing
    (tmp_path / "tatoeba.json").write_text(json.dumps(_evaluate_result("tatoeba", 0.6, "bare-encoder proxy, not "
                                                                                        "XTREME-R (...)")))
    capsys.readouterr()
    assert aggregate.main(paths) == 0
    shown = capsys.readouterr().out
    assert "not computed: needs a full XTREME-R score of tatoeba" in shown
    assert "tatoeba       0.6000  no: bare-encoder proxy" in shown and "needs mewslix" not in shown

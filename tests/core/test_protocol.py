"""The run's contract (study/protocol.py) and that every consumer follows it: on hand-made reports where English dev
and the test sets disagree, the worker, study train, the Tune driver, the MLflow callback and the report all pick the
step (and trial) English dev picks; the English rule gives the same family means in study.cli.evaluate, the worker and
the report; the report's tables on hand-made trials match values computed by hand."""

import json
import math
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest

from study.core import protocol
from study.core.protocol import (
    EXAMPLES_ARTIFACT,
    SELECTED_STEP_TAG,
    evaluation_metrics,
    group_key,
    group_scores_of,
    improves,
    language_key,
    language_scores,
    select_best,
    selection_key,
    target_average_key,
    target_group_means,
    target_mean,
)

METRIC = "accuracy"
DEV = selection_key(METRIC)


def _report(step: int, dev: float, tests: dict[str, float]) -> dict:
    return {"step": step, DEV: dev, **evaluation_metrics(METRIC, tests, english_dev=dev)}


# English dev ties at steps 2 and 3 (the earlier, step 2, is selected); every test language prefers step 4.
REPORTS = [
    _report(1, 0.50, {"en": 0.60, "de": 0.40, "ja": 0.30}),
    _report(2, 0.70, {"en": 0.70, "de": 0.50, "ja": 0.40}),
    _report(3, 0.70, {"en": 0.75, "de": 0.55, "ja": 0.45}),
    _report(4, 0.60, {"en": 0.90, "de": 0.80, "ja": 0.70}),
]
SELECTED = REPORTS[1]


# --- the rules --------------------------------------------------------------------------------------------------


def test_select_best_takes_english_dev_and_the_earliest_step_on_ties():
    assert select_best(REPORTS, METRIC) is SELECTED
    assert select_best(list(reversed(REPORTS)), METRIC) is SELECTED  # the order given does not matter
    with pytest.raises(ValueError):
        select_best([], METRIC)


@pytest.mark.parametrize("devs", [[0.5, 0.7, 0.7, 0.6], [0.1, 0.1, 0.1], [0.9, 0.2, 0.9], [0.3, 0.4, 0.5, 0.5]])
def test_improves_folded_over_a_run_equals_select_best(devs):
    reports = [{"step": step, DEV: dev} for step, dev in enumerate(devs, start=1)]
    best = None
    for report in reports:
        if improves(report[DEV], best[DEV] if best else None):
            best = report
    assert best is select_best(reports, METRIC)


def test_metric_keys_round_trip():
    tests = {"en": 0.9, "de": 0.5, "nl": 0.7, "ja": 0.3}
    report = evaluation_metrics(METRIC, tests, english_dev=0.8)
    assert language_scores(report, METRIC) == tests
    assert language_key(METRIC, "de") == "test/accuracy/de" and target_average_key(METRIC) == "test/accuracy/avg"
    assert selection_key(METRIC) == "dev_en/accuracy" and group_key("family", METRIC, "Japonic") == \
        "family/accuracy/Japonic"
    for by in protocol.GROUPINGS_REPORTED:
        assert group_scores_of(report, by, METRIC) == target_group_means(tests, by)


def test_english_is_the_source_never_a_target():
    tests = {"en": 0.9, "de": 0.5, "nl": 0.7, "ja": 0.3}
    # by hand: targets de, nl, ja; Indo-European = (0.5 + 0.7) / 2, English excluded
    assert target_mean(tests) == pytest.approx(0.5)
    assert target_group_means(tests, "family") == pytest.approx({"Indo-European": 0.6, "Japonic": 0.3})
    report = evaluation_metrics(METRIC, tests, english_dev=0.8)
    assert report["test/accuracy/avg"] == pytest.approx(0.5)
    assert report["all_languages/accuracy"] == pytest.approx(0.6)  # XTREME-R's per-task mean: English included
    assert report["gap_to_en/accuracy"] == pytest.approx(0.4)  # English test, not English dev
    assert report["family/accuracy/Indo-European"] == pytest.approx(0.6)
    # English untested: the gap is measured from English dev; English alone has no target mean and no groups
    assert evaluation_metrics(METRIC, {"de": 0.5}, english_dev=0.8)["gap_to_en/accuracy"] == pytest.approx(0.3)
    alone = evaluation_metrics(METRIC, {"en": 0.9}, english_dev=0.8)
    assert math.isnan(alone["test/accuracy/avg"]) and not group_scores_of(alone, "family", METRIC)


def test_the_english_rule_is_the_same_in_evaluate_worker_and_report():
    from study.evaluation.scoring import summarise_languages
    from study.report.load import Study, TrialRun
    from study.report.tables import group_rows

    tests = {"en": 0.9, "de": 0.5, "nl": 0.7, "ja": 0.3}
    evaluate = summarise_languages(tests)
    worker = evaluation_metrics(METRIC, tests, english_dev=0.8)
    trial = TrialRun("r", protocol.CONFIRM_PHASE, "plain", "s", "m", "M", False, "none", {}, 0.8, 0, dict(tests))
    study = Study("e", "u", METRIC, [], [trial], "pocket-topic")
    report = {row["family"]: row["score"] for row in group_rows(study, "family")}
    assert evaluate["per_family"] == group_scores_of(worker, "family", METRIC) == report
    assert evaluate["per_script"] == group_scores_of(worker, "script", METRIC)
    assert evaluate["target_average"] == worker["test/accuracy/avg"] == trial.target_mean
    assert evaluate["english"] == 0.9 and evaluate["average"] == pytest.approx(0.6)  # all four, English included


# --- every consumer picks the English-dev step ------------------------------------------------------------------


def test_the_worker_keeps_the_examples_of_the_english_dev_step(tmp_path, monkeypatch):
    """The per-example scores the report resamples are those of the step English dev selects."""
    from study.track.outbox import get
    from study.train.checkpoints import Progress
    from study.train.finetune import FineTuneRun

    run = object.__new__(FineTuneRun)  # the reporting logic alone: no model, no data
    run.outbox = str(tmp_path)
    run.rank, run.world, run.progress = 0, 1, Progress()
    run.task = SimpleNamespace(metric=METRIC)
    run.save_checkpoint = lambda directory, examples: None
    reported = []
    for metrics in REPORTS:
        run._evaluate = lambda metrics=metrics: dict(metrics)
        run._examples_json = lambda step=metrics["step"]: json.dumps({"step": step}).encode()
        run._evaluate_and_report(lambda metrics, checkpoint: reported.append(metrics["step"]))
    assert reported == [1, 2, 3, 4]
    assert json.loads(get(str(tmp_path), EXAMPLES_ARTIFACT)) == {"step": 2}


def test_study_train_prints_the_english_dev_step(capsys):
    from study.cli.train import print_summary
    from study.train.config import TrainConfig

    result = SimpleNamespace(best_checkpoints=[(SimpleNamespace(path=f"/ckpt/{r['step']}"), r) for r in REPORTS])
    print_summary(TrainConfig(task="pocket-topic"), result)
    out = capsys.readouterr().out
    assert "selected on English dev: step 2, dev_en/accuracy 0.7000" in out and "/ckpt/2/model" in out
    assert re.search(r"^de\s+Indo-European\s+0\.5000$", out, re.M)  # the step-2 test score, not step 4's 0.8
    assert "target average 0.4500, gap to English 0.2500" in out


def _tune_result(reports: list[dict]):
    return SimpleNamespace(metrics_dataframe=pd.DataFrame(reports), metrics=reports[-1])


def test_the_tune_driver_selects_the_english_dev_step_and_the_earlier_trial_on_ties():
    from study.tune.driver import best_trial, selected_report

    assert selected_report(_tune_result(REPORTS), METRIC)["step"] == 2
    later_tie = _tune_result([_report(1, 0.70, {"de": 0.99})])  # same dev as the first trial, better test
    worse = _tune_result([_report(1, 0.60, {"de": 1.0})])
    first = _tune_result(REPORTS)
    best, report = best_trial([worse, first, later_tie], METRIC)
    assert best is first and report["step"] == 2 and report["test/accuracy/de"] == 0.5


class _Writer:
    def __init__(self, storage):
        self.parent_run_id, self.storage, self.study, self.sent = "parent", str(storage), "study-x", []

    def send(self, trial_id, op, payload):
        self.sent.append((op, payload))

    def flush(self):
        return True


def test_the_mlflow_callback_logs_the_english_dev_step(tmp_path):
    from study.train.config import TrainConfig
    from study.train.ray_setup import Scaling
    from study.tune.callbacks import MLflowTrialCallback
    from study.tune.trial import tune_constants

    writer = _Writer(tmp_path)
    callback = MLflowTrialCallback(writer, {}, DEV, METRIC)
    config = tune_constants(TrainConfig(), {}, Scaling(), str(tmp_path), writer.study)
    trial = SimpleNamespace(trial_id="t1", config=config)
    for report in REPORTS:
        callback.on_trial_result(0, [], trial, dict(report))
    callback.on_trial_complete(0, [], trial)
    tags = dict(payload for op, payload in writer.sent if op == "tag")
    table = next(p["data"].decode() for op, p in writer.sent if op == "artifact")
    assert tags[SELECTED_STEP_TAG] == "2"
    assert "de,German,Indo-European,Germanic,Latin,0.500000" in table and "ja,Japanese" in table


class _Metric(SimpleNamespace):
    pass


def test_the_report_reads_the_english_dev_step_from_mlflow():
    from study.report.load import _trial

    histories = {}
    for report in REPORTS:
        for key, value in report.items():
            if "/" in key:
                histories.setdefault(key, []).append(_Metric(key=key, value=value, step=report["step"]))
    client = SimpleNamespace(get_metric_history=lambda run_id, key: histories.get(key, []),
                             list_artifacts=lambda run_id: [])
    run = SimpleNamespace(info=SimpleNamespace(run_id="r", start_time=1),
                          data=SimpleNamespace(tags={protocol.RUN_KIND_TAG: protocol.TRIAL_RUN}, params={},
                                               metrics={k: v[-1].value for k, v in histories.items()}))
    trial = _trial(client, run, METRIC)
    assert trial.dev == 0.70 and trial.scores == {"en": 0.70, "de": 0.50, "ja": 0.40}


# --- the report's tables, golden ----------------------------------------------------------------------------------


def _units(scores: dict[str, float]) -> dict[str, list]:
    return {lang: [[score, 1.0]] * 10 for lang, score in scores.items()}  # 10 equal examples: exact dyadic means


def _trial_run(run_id, phase, arm, study_run, model, name, modality, dev, start, scores):
    from study.report.load import TrialRun

    return TrialRun(run_id, phase, arm, study_run, model, name, False, modality, {}, dev, start, dict(scores),
                    _units(scores))


@pytest.fixture
def golden_study():
    """Two models; each arm's confirm runs on two seeds (plain for both models, vme-reference for mBERT), and search
    trials of vme-tuned whose test scores beat every confirm run's: comparisons must never see them."""
    from study.report.load import Study

    search, confirm = protocol.SEARCH_PHASE, protocol.CONFIRM_PHASE
    mbert, xlmr = ("mbert", "mBERT"), ("xlmr", "XLM-R")
    runs = [
        _trial_run("t1", confirm, "plain", "S1", *mbert, "none", 0.60, 1,
                   {"en": 1.0, "de": 0.75, "nl": 0.5, "ja": 0.25}),
        _trial_run("r1", confirm, "plain", "S1", *mbert, "none", 0.55, 5,
                   {"en": 0.5, "de": 0.5, "nl": 0.25, "ja": 0.25}),
        _trial_run("v1", confirm, "vme-reference", "S1", *mbert, "none", 0.6, 7,
                   {"en": 1.0, "de": 0.75, "nl": 0.75, "ja": 0.5}),
        _trial_run("v2", confirm, "vme-reference", "S1", *mbert, "none", 0.6, 8,
                   {"en": 1.0, "de": 1.0, "nl": 0.5, "ja": 0.5}),
        _trial_run("t2", search, "vme-tuned", "S1", *mbert, "text", 0.50, 2,
                   {"en": 1.0, "de": 1.0, "nl": 1.0, "ja": 1.0}),
        _trial_run("t3", confirm, "plain", "S2", *xlmr, "none", 0.70, 3, {"en": 1.0, "de": 1.0, "nl": 0.75, "ja": 0.5}),
        _trial_run("t4", search, "vme-tuned", "S2", *xlmr, "none", 0.70, 4,
                   {"en": 1.0, "de": 1.0, "nl": 1.0, "ja": 1.0}),
        _trial_run("r3", confirm, "plain", "S2", *xlmr, "none", 0.65, 6,
                   {"en": 1.0, "de": 0.75, "nl": 0.75, "ja": 0.5}),
    ]
    return Study("golden", "uri", METRIC, [], runs, "pocket-topic")


def test_golden_report_tables(golden_study):
    from study.report.rows import per_language_rows
    from study.report.tables import arm_rows, comparison_rows, group_rows

    # per language: the mean over an arm's confirm runs (search trials t2, t4 never enter); gap from the same runs
    rows = {(r["model"], r["arm"], r["language"]): (r["score"], r["gap_to_en"], r["seeds"])
            for r in per_language_rows(golden_study)}
    assert rows == {
        ("mBERT", "plain", "de"): (0.625, 0.125, 2), ("mBERT", "plain", "en"): (0.75, None, 2),
        ("mBERT", "plain", "ja"): (0.25, 0.5, 2), ("mBERT", "plain", "nl"): (0.375, 0.375, 2),
        ("mBERT", "vme-reference", "de"): (0.875, 0.125, 2), ("mBERT", "vme-reference", "en"): (1.0, None, 2),
        ("mBERT", "vme-reference", "ja"): (0.5, 0.5, 2), ("mBERT", "vme-reference", "nl"): (0.625, 0.375, 2),
        ("XLM-R", "plain", "de"): (0.875, 0.125, 2), ("XLM-R", "plain", "en"): (1.0, None, 2),
        ("XLM-R", "plain", "ja"): (0.5, 0.5, 2), ("XLM-R", "plain", "nl"): (0.75, 0.25, 2)}
    families = {(r["model"], r["arm"], r["family"]): (r["score"], r["gap_to_en"])
                for r in group_rows(golden_study, "family")}
    assert families[("mBERT", "plain", "Indo-European")] == (0.5, 0.25)
    assert families[("XLM-R", "plain", "Indo-European")] == (0.8125, 0.1875)
    assert families[("mBERT", "vme-reference", "Japonic")] == (0.5, 0.5)
    # XLM-R - mBERT on the arm both ran (plain), over all targets (the models question's primary row) and per family;
    # two seeds a side: the estimates, and no interval (the seed-level interval needs 3 runs a side).
    # All targets: XLM-R (.875 + .75 + .5) / 3, mBERT (.625 + .375 + .25) / 3 -> 7/24; Indo-European .8125 - .5
    refused = "2 vs 2 run(s): no interval (seed variance needs 3 runs per side)"
    comparison = {r["family"]: (r["contrast"], r["role"], r["languages"], r["difference"], r["low"], r["high"],
                                r["runs"], r["note"]) for r in comparison_rows(golden_study)}
    assert comparison == {
        "all targets": ("XLM-R - mBERT (plain)", "primary", 3, pytest.approx(7 / 24), None, None, "2 vs 2", refused),
        "Indo-European": ("XLM-R - mBERT (plain)", "exploratory", 2, 0.3125, None, None, "2 vs 2", refused),
        "Japonic": ("XLM-R - mBERT (plain)", "exploratory", 1, 0.25, None, None, "2 vs 2", refused)}
    # mBERT vme-reference - plain: vme's group means IE .75, Japonic .5, all 2/3; plain's IE .5, Japonic .25, all 5/12
    arms = {r["family"]: (r["contrast"], r["role"], r["languages"], r["difference"], r["low"], r["runs"], r["note"])
            for r in arm_rows(golden_study)}
    assert arms == {"all targets": ("mBERT: vme-reference - plain", "primary", 3, pytest.approx(0.25), None, "2 vs 2",
                                    refused),
                    "Indo-European": ("mBERT: vme-reference - plain", "exploratory", 2, 0.25, None, "2 vs 2", refused),
                    "Japonic": ("mBERT: vme-reference - plain", "exploratory", 1, 0.25, None, "2 vs 2", refused)}


def test_task_score_counts_english_and_says_why_it_is_not_xtreme_rs(golden_study):
    from study.report.tables import task_score_rows

    rows = {(r["model"], r["arm"]): r for r in task_score_rows(golden_study)}
    # mBERT plain's seed means: en .75, de .625, nl .375, ja .25; XLM-R plain's: en 1, de .875, nl .75, ja .5
    assert rows[("mBERT", "plain")]["all_languages"] == pytest.approx((0.75 + 0.625 + 0.375 + 0.25) / 4)
    assert rows[("mBERT", "plain")]["zero_shot_target_mean"] == pytest.approx((0.625 + 0.375 + 0.25) / 3)
    assert rows[("XLM-R", "plain")]["all_languages"] == pytest.approx(3.125 / 4)
    assert rows[("XLM-R", "plain")]["languages"] == "4 of 16"
    assert rows[("XLM-R", "plain")]["xtreme_r_task_score"] is False  # a pocket task
    assert rows[("XLM-R", "plain")]["not_xtreme_r"] == "pocket suite, not an XTREME-R task"


def test_an_experiment_with_two_tasks_gets_an_aggregates_page_and_a_report_per_task(golden_study, tmp_path):
    from dataclasses import replace

    from study.cli.report import write_report

    retrieval = replace(golden_study, task="pocket-retrieval")
    files = write_report([golden_study, retrieval], tmp_path)
    assert {"report.html", "aggregates.csv", "task_score.csv", "pocket-topic/report.html",
            "pocket-retrieval/report.html", "pocket-topic/per_language.csv"} <= set(files)
    assert all((tmp_path / f).is_file() for f in files)
    index = (tmp_path / "report.html").read_text()
    assert 'href="pocket-topic/report.html"' in index and "overall" not in index.lower()
    assert "not computed: needs a full XTREME-R score of xnli, xcopa, udpos, panx" in index


def test_a_one_task_experiment_shows_no_aggregate_and_no_overall_score(golden_study, tmp_path):
    """XTREME-R's aggregates need all ten tasks: a report of one task writes its task score only, never an
    aggregate, a category mean or an "overall" XTREME-R score."""
    from study.cli.report import write_report

    files = write_report([golden_study], tmp_path)
    assert "aggregates.csv" not in files and not (tmp_path / "aggregates.csv").exists()
    page = (tmp_path / "report.html").read_text().lower()
    assert "overall" not in page and "<h2>xtreme-r aggregates</h2>" not in page
    assert "need all ten tasks: this report has one" in page  # named only to say why they are not shown


@pytest.mark.e2e
def test_the_page_shows_every_figure_of_the_list_or_says_why_not(golden_study, tmp_path):
    """``figures.FIGURES`` is the page's figure list: each one is drawn from the tables (an image on the page and a
    PNG on disk) or, with too little data, the page says so in its place."""
    from dataclasses import replace

    from study.report.figures import FIGURES
    from study.report.page import build_report

    files = build_report(golden_study, tmp_path)
    page = (tmp_path / "report.html").read_text()
    drawn = [key for key in FIGURES if f'alt="{key}"' in page]
    assert {"family", "comparison", "arms", "history"} <= set(drawn)
    assert "weights" not in drawn  # no trial of the golden study records a loss weight
    assert page.count("too little data for this figure") == len(FIGURES) - len(drawn)
    assert all((tmp_path / f).is_file() for f in files) and sum(f.endswith(".png") for f in files) == len(drawn)
    weighted = replace(golden_study, trials=[
        replace(run, params={"alpha": "0.1", "beta": str(0.5 + i), "w_robust": "1.0"})
        for i, run in enumerate(golden_study.trials)])
    assert "loss_weights.png" in build_report(weighted, tmp_path / "weighted")


# --- layering -----------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_math_and_the_contract_load_neither_ray_nor_mlflow():
    code = ("import sys; import study.vme.objective, study.core.metrics, study.vme.capture, study.vme.engine, "
            "study.vme.trim, study.core.protocol, study.vme.exactness, study.report.analysis; "
            "print(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.e2e
def test_the_report_and_the_mlflow_helpers_load_neither_ray_nor_the_training_loop_nor_mlflow_settings():
    """The report reads MLflow only: importing it starts no Ray, loads no training code and changes no MLflow
    client setting (the study writer's short timeouts are set when the writer makes its client)."""
    code = ("import os, sys; import study.report.page, study.cli.report, study.track.mlflow_store; "
            "loaded = ('ray', 'torch', 'study.cli.train', 'study.train.finetune', 'study.track.writer'); "
            "print(sorted(m for m in loaded if m in sys.modules), "
            "sorted(k for k in os.environ if k.startswith('MLFLOW_HTTP')))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         env=env)
    assert out.stdout.strip() == "[] []"

"""Arms: the authors' point pinned, plain matched to it, the modality experiment's arms and the report's contrasts."""

import pytest

from study.core.arms import ARMS, VME_REFERENCE_POINT, arm_contrasts, modality_arms, parse_arms
from study.core.errors import StudyError
from study.train.config import TrainConfig


def test_vme_reference_is_the_authors_point_and_plain_differs_only_in_the_objective():
    reference = TrainConfig.from_dict(dict(ARMS["vme-reference"].fixed))
    assert (reference.alpha, reference.beta, reference.w_robust, reference.ap_layer, reference.k_copies) == \
        (0.1, 1.0, 1.0, 5, 3)
    assert (reference.ap_padding, reference.synonym_matching, reference.global_batch) == ("max_length", "exact", 32)
    plain = TrainConfig.from_dict(dict(ARMS["plain"].fixed))
    assert plain.objective == "plain" and (plain.k_copies, plain.global_batch) == (3, 32)  # the same rows of x
    assert not ARMS["plain"].tuned and not ARMS["vme-reference"].tuned and ARMS["vme-tuned"].tuned
    assert VME_REFERENCE_POINT["objective"] == "vme"


def test_global_batch_stays_32_with_1_2_and_4_workers():
    reference = TrainConfig.from_dict({"batch_size": 8, **ARMS["vme-reference"].fixed})
    assert {workers: reference.batch_size * reference.accumulation(workers) * workers for workers in (1, 2, 4)} \
        == {1: 32, 2: 32, 4: 32}
    with pytest.raises(StudyError, match="cannot be split over 3 worker"):
        reference.accumulation(3)


def test_arms_parse_in_order_and_bad_names_are_one_line():
    assert [a.name for a in parse_arms("vme-tuned,plain", ())] == ["vme-tuned", "plain"]
    assert [a.name for a in parse_arms(None, ("plain", "vme-reference"))] == ["plain", "vme-reference"]
    with pytest.raises(StudyError, match="unknown arm"):
        parse_arms("plain,vme", ())


def test_the_modality_experiment_crosses_fixed_arms_with_every_stage_and_contrasts_them():
    arms = modality_arms(parse_arms("plain,vme-reference", ()), {"intermediate_steps": 100})
    assert [a.name for a in arms] == ["plain", "plain+text", "plain+multimodal", "plain+multimodal-shuffled",
                                      "vme-reference", "vme-reference+text", "vme-reference+multimodal",
                                      "vme-reference+multimodal-shuffled"]
    staged = {a.name: a for a in arms}["vme-reference+multimodal-shuffled"]
    assert staged.fixed == ARMS["vme-reference"].fixed  # the fine-tuning is the arm's own
    assert dict(staged.stage) == {"intermediate_steps": 100, "modality": "multimodal-shuffled"}
    pairs = arm_contrasts([a.name for a in arms])
    assert ("vme-reference", "plain") in pairs
    assert ("plain+multimodal", "plain+multimodal-shuffled") in pairs
    assert ("vme-reference+text", "vme-reference") in pairs
    assert ("plain+multimodal", "vme-reference+text") not in pairs  # never across fine-tuning settings
    with pytest.raises(StudyError, match="fixes the fine-tuning"):
        modality_arms(parse_arms("vme-tuned", ()), {})


@pytest.mark.parametrize("model", ["mbert", "xlmr", "e5-small", "tiny", "tiny-bert"])
@pytest.mark.parametrize("preset", ["smoke", "paper"])
def test_vme_tuned_differs_from_vme_reference_only_in_what_it_searches(model, preset):
    """vme-tuned − vme-reference must measure the search alone: every option the search space does not search (AP
    padding, synonym matching, the global batch, ...) is the reference's, in the study's resolved configuration
    (the preset's options with each arm's fixed ones), and a trial's searched values replace only their own."""
    from study.cli.tune import parse_args
    from study.tune.settings import resolve
    from study.tune.trial import TrialConfig

    settings = resolve(parse_args(["--model", model, "--preset", preset, "--arms", "plain,vme-reference,vme-tuned",
                                   "--plan", "--mlflow-uri", "http://127.0.0.1:9"]))
    searched = {p.name for p in settings.space.params}
    tuned, reference = settings.bases["vme-tuned"].to_dict(), settings.bases["vme-reference"].to_dict()
    differ = {k for k in tuned if tuned[k] != reference[k]}
    assert not differ, differ  # before the search, the two are one configuration
    assert {"ap_padding", "synonym_matching"}.isdisjoint(searched)  # the two options the search leaves alone
    assert (tuned["ap_padding"], tuned["synonym_matching"]) == ("max_length", "exact")
    trial = TrialConfig.from_tune({"train_loop_config": {"alpha": 0.5, "beta": 4.0},
                                   "run": {"base": tuned, "stage_options": {}, "stage_sources": {}, "scaling": {},
                                           "storage": "s", "study": "x", "arm": "vme-tuned", "phase": "search"}})
    drawn = {k for k, v in trial.train.to_dict().items() if v != reference[k]}
    assert drawn == {"alpha", "beta"} <= searched


def test_the_authors_budget_is_their_released_scripts_and_every_arm_gets_it():
    """KB-Ding/EAR scripts/{bert,xlmr}-ept-apt-xnli.sh: EPOCH=1 over perturb_aug_ori.py's --num 3 copies; the
    repository trains no other task of this study, so asking for it elsewhere is one clear error."""
    from study.core.arms import budget_label, budget_options

    assert budget_options("preset", "xnli") == {} and budget_options("authors", "xnli") == {"epochs": 1, "k_copies": 3}
    with pytest.raises(StudyError, match="train xnli only, not udpos; use --budget preset"):
        budget_options("authors", "udpos")
    assert budget_label("authors", "xnli").startswith("the VME authors' released scripts (KB-Ding/EAR, xnli): epochs 1")


@pytest.mark.parametrize("budget, epochs", [("preset", 5), ("authors", 1)])
def test_a_study_runs_every_arm_at_one_budget_and_records_which(budget, epochs):
    from dataclasses import replace

    from study.cli.tune import parse_args
    from study.tune.settings import provenance, resolve, study_options

    settings = resolve(parse_args(["--model", "mbert", "--task", "xnli", "--preset", "paper", "--budget", budget,
                                   "--plan", "--mlflow-uri", "http://127.0.0.1:9"]))
    assert {arm: base.epochs for arm, base in settings.bases.items()} == dict.fromkeys(settings.bases, epochs)
    plain, reference = settings.bases["plain"], settings.bases["vme-reference"]
    assert (plain.k_copies, plain.global_batch) == (reference.k_copies, reference.global_batch) == (3, 32)
    params, tags = provenance(replace(settings, revisions={}))
    assert params["budget"] == tags["budget"] == budget
    assert params["budget_rule"].startswith("the VME authors'" if budget == "authors" else "the preset's epochs")
    # a study started at one budget resumes only at it (the preset's leaves older studies' records unchanged)
    assert ("budget" in study_options(settings)) == (budget == "authors")


def test_the_report_header_says_which_budget_ran():
    from types import SimpleNamespace

    from study.report.tables import _budgets

    def parent(**params):
        return SimpleNamespace(data=SimpleNamespace(params=params))

    assert _budgets([parent(budget_rule="A"), parent(budget_rule="A")]) == "A"
    assert _budgets([parent(budget_rule="A"), parent()]).startswith("A; the preset's epochs (a study from before")
    assert _budgets([]) == "not recorded"

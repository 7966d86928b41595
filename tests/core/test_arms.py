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


def test_a_stage_length_dose_adds_each_stage_at_a_second_length_contrasted_with_the_first():
    """--stage-dose N: each fixed arm also after each stage of N steps (``<arm>+<modality>@N``, the other stage
    options the same), contrasted with the same stage at the configured steps; without it no such arm."""
    from study.core.arms import dose_arm

    arms = {a.name: a for a in modality_arms(parse_arms("plain,vme-reference", ()), {"intermediate_steps": 100,
                                                                                     "vision_lr": 1e-3}, 200)}
    assert [n for n in arms if "@" in n] == ["plain+text@200", "plain+multimodal@200", "plain+multimodal-shuffled@200",
                                             "vme-reference+text@200", "vme-reference+multimodal@200",
                                             "vme-reference+multimodal-shuffled@200"]
    assert dict(arms["plain+multimodal@200"].stage) == {"intermediate_steps": 200, "vision_lr": 1e-3,
                                                        "modality": "multimodal"}
    assert dict(arms["plain+multimodal"].stage)["intermediate_steps"] == 100
    assert arms["plain+multimodal@200"].fixed == ARMS["plain"].fixed
    pairs = arm_contrasts(list(arms))
    assert [p for p in pairs if "@" in p[0] or "@" in p[1]] == [
        (f"{base}+{m}@200", f"{base}+{m}") for base in ("plain", "vme-reference")
        for m in ("text", "multimodal", "multimodal-shuffled")]
    assert (dose_arm("plain+multimodal@200"), dose_arm("plain+multimodal"), dose_arm("plain")) == (
        "plain+multimodal", None, None)
    assert not any("@" in a.name for a in modality_arms(parse_arms("plain", ()), {"intermediate_steps": 100}))


def test_plain_tuned_is_vme_tuned_less_the_vme_options_and_augmentation_only_the_reference_without_ep_and_ap():
    from study.core.arms import INTENDED_DIFFERENCES, MATCHED_CONTRASTS, VME_OPTIONS, matched_difference

    plain_tuned, vme_tuned = ARMS["plain-tuned"], ARMS["vme-tuned"]
    assert plain_tuned.tuned and plain_tuned.unsearched == VME_OPTIONS and not vme_tuned.unsearched
    assert dict(plain_tuned.fixed) == {**{k: v for k, v in vme_tuned.fixed.items() if k not in VME_OPTIONS},
                                       "objective": "plain"}
    assert {"lr", "k_copies", "modality", "intermediate_steps"}.isdisjoint(VME_OPTIONS)  # shared: searched by both
    assert {"alpha", "beta", "w_robust", "ap_layer", "ap_mask"} <= VME_OPTIONS
    augmentation = ARMS["augmentation-only"]
    assert not augmentation.tuned and augmentation.fixed["alpha"] == augmentation.fixed["beta"] == 0.0
    assert matched_difference(augmentation.fixed, ARMS["vme-reference"].fixed) == {"alpha", "beta"}
    assert INTENDED_DIFFERENCES[("vme-reference", "augmentation-only")] == {"alpha", "beta"}
    pairs = arm_contrasts(["plain", "vme-reference", "vme-tuned", "plain-tuned", "augmentation-only"])
    assert set(MATCHED_CONTRASTS) <= set(pairs)
    assert ("plain-tuned", "vme-reference") not in pairs and ("augmentation-only", "plain") not in pairs


def test_matched_difference_names_the_options_whose_values_differ():
    from study.core.arms import matched_difference

    assert matched_difference({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": None}) == {"b"}  # c: unset on one side
    assert matched_difference({"a": 1}, {"a": 1}) == set()


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

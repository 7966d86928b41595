"""`python -m study.report`: seed-level statistics on hand-made numbers, the report of two real smoke studies read
from MLflow, a headless-Chromium look at the MLflow UI, and clear errors for experiments with nothing to report."""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from study.report.analysis import (
    Side,
    holm,
    paired_difference_by_group,
    slope_permutation_test,
    subword_overlap,
    units_score,
)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("STUDY_TEST_ARTIFACTS", ROOT / "test-artifacts"))
T_975_DF2 = 4.302652729911275  # Student's t, 97.5 % quantile, 2 degrees of freedom (tables)


# --- statistics -------------------------------------------------------------------------------------------------


def test_units_give_the_metric_and_tagging_f1_exactly():
    from study.core import metrics

    assert units_score([[1, 1], [0, 1], [1, 1], [1, 1]]) == 0.75
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    predicted = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-ORG"]]
    assert units_score(metrics.tagging_units(gold, predicted)) == pytest.approx(metrics.tagging_f1(gold, predicted))


def _side(rng, accuracy_by_lang, n=200, seeds=3):
    return Side([{lang: [[float(rng.random() < p), 1.0] for _ in range(n)] for lang, p in accuracy_by_lang.items()}
                 for _ in range(seeds)])


def _scored(score: float, items: int = 20) -> list[list[float]]:
    """Units of ``items`` test items of which the first ``score * items`` are right."""
    right = round(score * items)
    return [[1.0, 1.0]] * right + [[0.0, 1.0]] * (items - right)


def test_interval_covers_the_difference_and_shrinks_with_data():
    """Runs whose only noise is their items: with 10 times the items, the seed-level interval is narrower (8 seeds a
    side, so that the widths are not at the mercy of 2 degrees of freedom)."""
    rng = np.random.default_rng(1)
    langs = {"de": 0.8, "fr": 0.7, "ja": 0.6}
    a, b = _side(rng, langs, n=400, seeds=8), _side(rng, {k: v - 0.2 for k, v in langs.items()}, n=400, seeds=8)
    wide = paired_difference_by_group(a, b, "family")
    assert set(wide) == {"Indo-European", "Japonic"}
    for contrast in wide.values():
        assert contrast.low <= contrast.estimate <= contrast.high and contrast.runs == (8, 8)
        assert contrast.low < 0.2 < contrast.high + 0.1 and contrast.low > 0  # a real 0.2 gap, clearly above 0
        assert contrast.method.startswith("Welch t, df=") and "seeds not recorded" in contrast.note
    assert wide["Indo-European"].languages == ("de", "fr")
    small = paired_difference_by_group(_side(rng, langs, n=40, seeds=8), _side(rng, langs, n=40, seeds=8), "family")
    assert (small["Japonic"].high - small["Japonic"].low) > (wide["Japonic"].high - wide["Japonic"].low)


def test_paired_by_seed_interval_as_hand_computed():
    """3 seeds, 2 languages, 20 items each. Per seed (a: de, ja | b: de, ja): seed 1 (.60, .40 | .45, .35), seed 2
    (.70, .50 | .40, .40), seed 3 (.65, .45 | .50, .30): side means .50 - .40, .60 - .40, .55 - .40, differences
    .10, .20, .15 (b's runs given in another order: pairing is by seed). Mean .15, s.d. .05, s.e. .05 / sqrt 3;
    t(2) = 4.302653: [.15 - .124207, .15 + .124207]; t = 3 sqrt 3, and with 2 df the two-sided
    p = 1 - t / sqrt(t² + 2) = 1 - sqrt(27 / 29)."""
    from scipy.stats import ttest_rel

    a_scores = {1: (0.60, 0.40), 2: (0.70, 0.50), 3: (0.65, 0.45)}
    b_scores = {3: (0.50, 0.30), 1: (0.45, 0.35), 2: (0.40, 0.40)}

    def side(scores):
        return Side([{"de": _scored(de), "ja": _scored(ja)} for de, ja in scores.values()], list(scores))

    found = paired_difference_by_group(side(a_scores), side(b_scores), by=None)["all targets"]
    half = T_975_DF2 * 0.05 / np.sqrt(3)
    assert found.estimate == pytest.approx(0.15) and found.df == 2 and found.method == "paired-by-seed t, df=2"
    assert (found.low, found.high) == pytest.approx((0.15 - half, 0.15 + half))
    assert (found.low, found.high) == pytest.approx((0.025793, 0.274207), abs=1e-6)
    assert found.p == pytest.approx(1 - np.sqrt(27 / 29)) and found.p == pytest.approx(0.035099, abs=1e-6)
    assert "3 paired seeds: no distribution-free (sign or permutation) test can reach 0.05" in found.note
    assert "smallest two-sided p is 0.25" in found.note
    means = [[np.mean(s[k]) for k in (1, 2, 3)] for s in (a_scores, b_scores)]
    reference = ttest_rel(*means)
    assert (found.low, found.high) == pytest.approx(tuple(reference.confidence_interval(0.95)))
    assert found.p == pytest.approx(reference.pvalue)
    per_family = paired_difference_by_group(side(a_scores), side(b_scores))
    assert per_family["Japonic"].estimate == pytest.approx((0.05 + 0.10 + 0.15) / 3)  # ja alone: .05, .10, .15


def test_welch_interval_as_hand_computed():
    """Run means a (.50, .60, .55), b (.40, .50, .30) on different seeds: s_a² = .0025, s_b² = .01, s.e.² =
    .0125 / 3; Welch–Satterthwaite df = (.0125 / 3)² / ((.0025 / 3)² / 2 + (.01 / 3)² / 2) = .0125² / (.0001063 /
    2) = 2.941176; checked against scipy's ttest_ind(equal_var=False)."""
    from scipy.stats import t, ttest_ind

    a = Side([{"de": _scored(v)} for v in (0.50, 0.60, 0.55)], [1, 2, 3])
    b = Side([{"de": _scored(v)} for v in (0.40, 0.50, 0.30)], [4, 5, 6])
    found = paired_difference_by_group(a, b, by=None, paired=False)["all targets"]
    df = 0.0125 ** 2 / ((0.0025 ** 2 + 0.01 ** 2) / 2)
    assert df == pytest.approx(2.941176, abs=1e-6) and found.df == pytest.approx(df)
    assert found.method == "Welch t, df=2.9" and found.note == "" and found.estimate == pytest.approx(0.15)
    half = t.ppf(0.975, df) * np.sqrt(0.0125 / 3)
    assert (found.low, found.high) == pytest.approx((0.15 - half, 0.15 + half))
    reference = ttest_ind([0.50, 0.60, 0.55], [0.40, 0.50, 0.30], equal_var=False)
    assert (found.low, found.high) == pytest.approx(tuple(reference.confidence_interval(0.95)))
    assert found.p == pytest.approx(reference.pvalue)
    # asked to pair, but the sides share no seed: no paired interval, and the row says why
    unpaired = paired_difference_by_group(a, b, by=None)["all targets"]
    assert not unpaired.has_interval and unpaired.note.startswith("0 seed(s) shared by both sides")


def test_contrasts_use_only_the_languages_both_sides_evaluated():
    rng = np.random.default_rng(3)
    shared = [{lang: [[float(rng.random() < 0.7), 1.0] for _ in range(100)] for lang in ("de", "uk")}] * 3
    extra = [{**run, **{lang: [[1.0, 1.0]] * 100 for lang in ("fr", "es", "it")}} for run in shared]
    contrast = paired_difference_by_group(Side(extra), Side(shared))["Indo-European"]
    assert contrast.languages == ("de", "uk") and contrast.estimate == 0.0  # fr/es/it are not on both sides
    assert contrast.low == contrast.high == 0.0 and contrast.p == 1.0  # identical runs: no variance, no difference


def test_no_interval_below_three_runs_different_items_or_too_few_examples():
    rng = np.random.default_rng(2)
    one = paired_difference_by_group(_side(rng, {"de": 0.7}, seeds=1), _side(rng, {"de": 0.5}))["Indo-European"]
    assert not one.has_interval and one.note.startswith("1 vs 3 run(s): no interval") and one.estimate > 0
    two = paired_difference_by_group(_side(rng, {"de": 0.7}, seeds=2), _side(rng, {"de": 0.5}, seeds=2))
    assert two["Indo-European"].note == "2 vs 2 run(s): no interval (seed variance needs 3 runs per side)"
    mismatched = paired_difference_by_group(_side(rng, {"de": 0.7}, n=100), _side(rng, {"de": 0.5}, n=90))
    assert "different test items" in mismatched["Indo-European"].note
    tiny = paired_difference_by_group(_side(rng, {"ja": 0.5}, n=4), _side(rng, {"ja": 0.5}, n=4))["Japonic"]
    assert not tiny.has_interval and tiny.note.startswith("too little data")


def test_seed_repeats_widen_the_interval():
    rng = np.random.default_rng(2)
    # three seeds whose scores really differ: the seed level adds variance
    varied = Side([{"de": [[float(rng.random() < p), 1.0] for _ in range(300)]} for p in (0.55, 0.7, 0.85)])
    steady = _side(rng, {"de": 0.7}, n=300, seeds=3)
    base = _side(rng, {"de": 0.5}, n=300)
    width = {name: c["Indo-European"].high - c["Indo-European"].low
             for name, c in (("varied", paired_difference_by_group(varied, base)),
                             ("steady", paired_difference_by_group(steady, base)))}
    assert width["varied"] > width["steady"], width


def test_paired_interval_excludes_zero_where_the_unpaired_one_does_not():
    """A +4-point difference on 3 languages x 300 items, 3 seeds whose effect both arms share (-6, 0, +6 points)
    and a seed x arm part of -1, 0, +1 points: per-seed differences .03, .04, .05 give the paired interval
    .04 ± t(2) .01 / sqrt 3 = [.0152, .0648], excluding 0; Welch on the same runs counts the shared seed effect as
    noise and straddles 0."""
    rng = np.random.default_rng(0)
    difficulty = {lang: rng.permutation((np.arange(300) + 0.5) / 300) for lang in ("de", "fr", "es")}

    def run(threshold):
        return {lang: [[float(d > threshold), 1.0] for d in ds] for lang, ds in difficulty.items()}

    shifts = {1: -0.06, 2: 0.0, 3: 0.06}
    b = Side([run(0.5 - s) for s in shifts.values()], list(shifts))
    a = Side([run(0.46 - s + 0.01 * (2 - seed)) for seed, s in shifts.items()], list(shifts))
    paired = paired_difference_by_group(a, b)["Indo-European"]
    half = T_975_DF2 * 0.01 / np.sqrt(3)
    assert paired.estimate == pytest.approx(0.04) and (paired.low, paired.high) == pytest.approx((0.04 - half,
                                                                                                0.04 + half))
    unpaired = paired_difference_by_group(a, b, paired=False)["Indo-European"]
    assert unpaired.estimate == pytest.approx(0.04) and unpaired.low < 0 < unpaired.high
    assert paired.low > 0 and unpaired.method.startswith("Welch t")


@pytest.mark.e2e
def test_a_configuration_against_itself_over_seeds_is_rarely_significant():
    """40 comparisons of one configuration with itself: per seed a score offset from N(0, 0.02) (seed noise), items
    drawn independently per run, 3 seeds a side (independent), 3 languages x 300 items. The all-targets interval
    excludes 0 in at most 3 of 40 (nominal 2 of 40), and so does 'some family row differs after Holm's correction'.
    (tests/report/test_report_calibration.py does the same with items that keep their difficulty across runs.)"""
    rng = np.random.default_rng(7)
    langs = ("de", "fr", "ja")

    def side():
        runs = []
        for _ in range(3):
            offset = rng.normal(0, 0.02)
            runs.append({lang: [[float(rng.random() < 0.6 + offset), 1.0] for _ in range(300)] for lang in langs})
        return Side(runs)

    overall = families = 0
    for _ in range(40):
        a, b = side(), side()
        primary = paired_difference_by_group(a, b, by=None, paired=False)["all targets"]
        overall += primary.low > 0 or primary.high < 0
        rows = paired_difference_by_group(a, b, by="family", paired=False)
        families += min(holm([c.p for c in rows.values()])) <= 0.05
    assert overall <= 3 and families <= 3, (overall, families)


def test_line_fit_recovers_slope_and_refuses_too_few_points():
    fit = slope_permutation_test([0.1, 0.2, 0.3, 0.4], [0.15, 0.25, 0.35, 0.45])
    assert fit.slope == pytest.approx(1.0) and fit.intercept == pytest.approx(0.05) and fit.r2 == pytest.approx(1.0)
    assert slope_permutation_test([0.1, 0.2], [1, 2]) is None
    assert slope_permutation_test([0.3, 0.3, 0.3], [1, 2, 3]) is None
    assert slope_permutation_test([0, 1, 2, 3], [0, 1, 2, 3], covariates=[[0, 1, 2, 3]]) is None  # x is the covariate


def test_permutation_p_values_match_the_exact_count():
    """x = 0..3 and 4 distinct gaps: 24 orders, sum(x * y) ranges 4..14 symmetrically around 9. y = x is the one
    order at 14: two-sided p = 2 * 1/24. y = (0, 1, 3, 2) has sum 13, reached by 4 orders (itself and the sorted
    one's adjacent swaps): p = 2 * 4/24; its slope is 4/5 (centred cross-product 4 over 5), r² = 0.64."""
    exact = slope_permutation_test([0, 1, 2, 3], [0, 1, 2, 3])
    assert exact.p == pytest.approx(1 / 12)
    swapped = slope_permutation_test([0, 1, 2, 3], [0, 1, 3, 2])
    assert swapped.p == pytest.approx(1 / 3) and swapped.slope == pytest.approx(0.8)
    assert swapped.r2 == pytest.approx(0.64) and swapped.intercept == pytest.approx(0.3) and swapped.n == 4


def test_holm_adjusts_step_down_as_hand_computed():
    """Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; the running maximum lifts the last
    to 0.06; values above 1 are capped."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == pytest.approx([0.02]) and holm([]) == []


def test_a_covariate_takes_the_effect_it_explains():
    """Gaps driven by script alone, and a distance that follows script: alone the distance looks significant; with
    script as a covariate it is not, and its slope is the full least-squares coefficient."""
    rng = np.random.default_rng(5)
    script = np.repeat([0.0, 1.0], 15)
    distance = script + rng.normal(0, 0.3, 30)
    gap = 0.3 * script + rng.normal(0, 0.05, 30)
    assert slope_permutation_test(distance, gap, permutations=999).p < 0.01
    adjusted = slope_permutation_test(distance, gap, [script], permutations=999)
    assert adjusted.p > 0.05
    design = np.column_stack([np.ones(30), distance, script])
    assert adjusted.slope == pytest.approx(np.linalg.lstsq(design, gap, rcond=None)[0][1])


@pytest.mark.e2e
def test_noise_gaps_are_not_significant_after_holm_although_the_best_r2_looks_large():
    """Six distance kinds of pure noise against noise gaps on 12 languages, 100 times: the best of the six r² is
    large (the old "best distance"), but a Holm-corrected test finds some kind significant at most about 5 % of the
    time."""
    rng = np.random.default_rng(11)
    best_r2, false_positives = [], 0
    for _ in range(100):
        gaps = rng.normal(0, 0.1, 12)
        tests = [slope_permutation_test(rng.random(12), gaps, permutations=999) for _ in range(6)]
        best_r2.append(max(t.r2 for t in tests))
        false_positives += min(holm([t.p for t in tests])) <= 0.05
    assert np.median(best_r2) > 0.15
    assert false_positives <= 8, false_positives


def test_subword_overlap_counts_tokens_seen_in_english():
    assert subword_overlap([1, 2, 2, 3], [2, 3, 9]) == pytest.approx(0.75)  # 2, 2, 3 of 4 tokens occur in English
    assert subword_overlap(["▁the", "x"], []) == 0.0 and subword_overlap([], [1]) is None


def _typology_points(rng, n, gaps=None, fixed=None, missing=()):
    """One model's points for ``typology_fits``: n languages l0..l{n-1}, random distances except the ``fixed``
    {kind: values}, noise gaps unless given, and (language, kind) pairs without a distance in ``missing``."""
    from study.core.languages import DISTANCE_KINDS

    points = []
    for i in range(n):
        lang = f"l{i}"
        point = {"model": "m", "language": lang, "gap_to_en": rng.normal() if gaps is None else gaps[i],
                 "same_script": float(i % 2), "subword_overlap": None}
        for kind in DISTANCE_KINDS:
            value = (fixed or {}).get(kind, rng.random(n))[i]
            point[f"{kind}_distance"] = None if (lang, kind) in missing else float(value)
            point[f"{kind}_features"] = 20
        point["left_out"] = "; ".join(f"{k}: too few features" for k in DISTANCE_KINDS if (lang, k) in missing)
        points.append(point)
    return points


def test_typology_fits_share_one_language_set_and_correct_across_kinds():
    from study.report.typology import typology_fits, typology_summary

    rng = np.random.default_rng(4)
    points = _typology_points(rng, 14, missing={("l3", "phonological"), ("l7", "inventory")})
    fits = typology_fits("m", points, "subword overlap not computed: offline", permutations=999)
    assert {f["n"] for f in fits} == {12} and len(fits) == 6  # l3 and l7 leave every kind, not just their own
    assert all(f["p_holm"] >= f["p"] for f in fits) and all(f["covariates"] == "same_script" for f in fits)
    assert all("subword overlap not computed" in f["note"] for f in fits)
    assert typology_summary(fits) == ["m: no distance kind is significant after Holm at 0.05 (6 kinds tested on "
                                      "n=12 languages)"]
    # a gap that really follows the syntactic distance is found, and named
    syntax = np.linspace(0, 1, 14)
    driven = _typology_points(rng, 14, gaps=0.5 * syntax, fixed={"syntactic": syntax})
    fits = typology_fits("m", driven, permutations=999)
    assert [f["distance"] for f in fits if f["significant"] == "yes"] == ["syntactic"]
    assert typology_summary(fits)[0].startswith("m: significant after Holm at 0.05: syntactic (slope +0.500")
    too_few = typology_fits("m", driven[:2], permutations=999)
    assert all(f["p"] is None and f["significant"] == "" and "too little data" in f["note"] for f in too_few)
    assert typology_summary(too_few) == ["m: no distance kind can be tested (too little data (2 languages with every "
                                         "distance kind)), so none is significant after Holm at 0.05"]


def _importance_study(n_trials: int, rng):
    """A model's search: dev rises with log10(lr) (log-sampled), alpha exists only on the vme branch and is noise."""
    from types import SimpleNamespace

    from study.core.protocol import SEARCH_PHASE
    from study.report.load import Study, TrialRun
    from study.tune.search_space import Param

    space = [Param("lr", "float", 1e-5, 1e-3, log=True), Param("objective", "categorical", choices=("vme", "plain")),
             Param("alpha", "float", 0.01, 1.0, log=True, when=(("objective", ("vme",)),))]
    parent = SimpleNamespace(data=SimpleNamespace(tags={"model": "m"}, params={
        f"space.{p.name}": p.to_json() for p in space}))
    trials = []
    for i in range(n_trials):
        lr, objective = 10 ** rng.uniform(-5, -3), ("vme", "plain")[i % 2]
        params = {"lr": str(lr), "objective": objective, **({"alpha": str(10 ** rng.uniform(-2, 0))}
                                                              if objective == "vme" else {})}
        dev = 0.5 + 0.1 * (np.log10(lr) + 5) + rng.normal(0, 0.005)
        trials.append(TrialRun(f"t{i}", SEARCH_PHASE, "vme-tuned", "S", "m", "M", False, "none", params, dev, i))
    return Study("x", "uri", "accuracy", [parent], trials, "pocket-topic")


def test_importance_needs_twenty_trials_and_ranks_the_parameter_that_matters():
    from study.report.search import importance_rows

    rng = np.random.default_rng(0)
    few = importance_rows(_importance_study(19, rng))
    assert few == [{"model": "M", "parameter": "all", "importance": None,
                    "note": "no importance: 19 finished search trials; fANOVA needs at least 20"}]
    rows = {r["parameter"]: r for r in importance_rows(_importance_study(40, rng))}
    assert set(rows) == {"lr", "objective", "alpha"}  # the conditional parameter is included ...
    assert rows["alpha"]["note"] == "conditional" and max(rows, key=lambda n: rows[n]["importance"]) == "lr"


def test_importance_inputs_use_the_searched_scale_and_mark_inactive_branches():
    import optuna.distributions as D

    from study.report.search import INACTIVE, importance_inputs
    from study.tune.search_space import Param

    space = {"lr": Param("lr", "float", 1e-5, 1e-3, log=True),
             "alpha": Param("alpha", "float", 0.0, 1.0, when=(("objective", ("vme",)),)),
             "objective": Param("objective", "categorical", choices=("vme", "plain"))}
    values, distributions = importance_inputs(space, [{"lr": "0.0001", "alpha": "0.5", "objective": "vme"},
                                                      {"lr": "1e-05", "objective": "plain"}])
    assert values == [{"lr": -4.0, "alpha": 0.5, "objective": "vme"}, {"lr": -5.0, "alpha": -0.1, "objective": "plain"}]
    assert distributions["lr"] == D.FloatDistribution(-5.0, -3.0)  # log10 scale, linear for fANOVA
    assert distributions["alpha"] == D.FloatDistribution(-0.1, 1.0)  # room for the inactive value
    assert distributions["objective"] == D.CategoricalDistribution(["vme", "plain"]) and INACTIVE == "(inactive)"
    assert Param.from_json("alpha", space["alpha"].to_json()) == space["alpha"]


SEED_EFFECT = {1: -0.03, 2: 0.0, 3: 0.03}  # each confirm seed's effect, shared by every arm


def _arm_study(effects: dict, stand_in: bool = False, search_effect: float = 0.0):
    """A hand-made study of model m on de, fr, ja: per arm, 3 confirm runs (seeds 1-3, recorded as the runs' ``seed``
    parameter) scored on the same 300 items per language, each item right when its difficulty is below 0.5 + the
    seed's effect (shared by the arms) + the arm's effect (which, where non-zero, also varies by 0.4 points per
    seed: -0.4, 0, +0.4); plus one search trial per arm whose scores are off by ``search_effect`` (comparisons must
    not see it)."""
    from study.core.protocol import CONFIRM_PHASE, SEARCH_PHASE
    from study.report.load import Study, TrialRun

    rng = np.random.default_rng(5)
    base = {lang: rng.random(300) for lang in ("en", "de", "fr", "ja")}
    name = "M [offline stand-in, untrained]" if stand_in else "M"
    trials = []
    for a, (arm, effect) in enumerate(effects.items()):
        for seed in range(4):
            phase = SEARCH_PHASE if seed == 0 else CONFIRM_PHASE
            shift = (effect + search_effect if phase == SEARCH_PHASE else
                     effect + SEED_EFFECT[seed] + (0.004 * (seed - 2) if effect else 0.0))
            units = {lang: [[float(p < 0.5 + shift), 1.0] for p in ps] for lang, ps in base.items()}
            scores = {lang: units_score(u) for lang, u in units.items()}
            trials.append(TrialRun(f"{arm}{seed}", phase, arm, "S", "m", name, stand_in, "none", {"seed": str(seed)},
                                   0.5, 10 * a + seed, scores, units))
    return Study("x", "uri", "accuracy", [], trials, "pocket-topic")


def test_arm_contrasts_come_from_confirm_runs_paired_by_seed_with_one_primary_contrast():
    from study.report.tables import arm_rows, results_summary

    study = _arm_study({"plain": 0.0, "vme-reference": 0.05, "vme-tuned": 0.0}, search_effect=0.3)
    rows = {(r["contrast"], r["family"]): r for r in arm_rows(study)}
    assert {c for c, _ in rows} == {"M: vme-reference - plain", "M: vme-tuned - plain", "M: vme-tuned - vme-reference"}
    real = rows[("M: vme-reference - plain", "Indo-European")]
    assert real["languages"] == 2 and real["runs"] == "3 vs 3" and real["low"] > 0  # de, fr; search trials unseen
    assert real["difference"] == pytest.approx(0.05, abs=0.02) and real["method"] == "paired-by-seed t, df=2"
    assert real["role"] == "exploratory" and real["p_holm"] >= real["p"]
    assert real["correction"].startswith("Holm (1979; statsmodels multipletests) over 2 family rows")
    assert "no distribution-free (sign or permutation) test can reach 0.05" in real["note"]
    null = rows[("M: vme-tuned - plain", "Japonic")]  # the same runs seed by seed: every difference is 0
    assert null["difference"] == 0.0 and null["low"] == null["high"] == 0.0 and null["p"] == 1.0
    overall = rows[("M: vme-reference - plain", "all targets")]  # the primary row: every shared target language
    assert overall["languages"] == 3 and overall["low"] > 0 and overall["role"] == "primary"
    assert overall["question"] == "M: VME objective" and overall["p_holm"] == overall["p"]  # its question's only one
    tuned = [r for (c, g), r in rows.items() if g == "all targets" and "vme-tuned" in c]
    assert {r["role"] for r in tuned} == {"secondary"} and all("over 2 secondary" in r["correction"] for r in tuned)
    lines = results_summary(arm_rows(study))
    assert lines[0].startswith("primary: M: vme-reference - plain, all 3 targets: +0.0500 [+0.02")
    assert "(95 % interval, paired-by-seed t, df=2; runs 3 vs 3; p 0.0" in lines[0] and "): differs" in lines[0]
    assert lines[1].startswith("secondary: M: vme-tuned - plain, all 3 targets: +0.0000 [+0.0000, +0.0000]")
    assert "Holm-adjusted over the question's 2 contrasts 1.000): no detectable difference" in lines[1]
    assert "M: vme-tuned - plain, per family (exploratory, Holm over 2 rows): no detectable difference in any of 2 " \
           "rows after correction" in lines
    assert any(line.startswith("M: vme-reference - plain, per family (exploratory, Holm over 2 rows): differs in "
                               "Indo-European +0.05") for line in lines)
    assert lines[-1].startswith("4 of 6 exploratory family rows differ after Holm's correction") \
        and "Gelman & Stern 2006" in lines[-1]


def test_matched_budget_contrast_is_primary_and_the_attribution_secondary():
    """vme-tuned - plain-tuned (both searched) is its question's primary contrast; vme-reference - augmentation-only
    (what the alignment terms add to the copies) a secondary one; vme-tuned - plain stays secondary."""
    from study.report.tables import arm_rows

    study = _arm_study({"plain": 0.0, "vme-reference": 0.05, "vme-tuned": 0.06, "plain-tuned": 0.02,
                        "augmentation-only": 0.03})
    rows = {r["contrast"]: r for r in arm_rows(study) if r["family"] == "all targets"}
    matched, attribution = rows["M: vme-tuned - plain-tuned"], rows["M: vme-reference - augmentation-only"]
    assert matched["role"] == "primary" and matched["question"].startswith("M: tuned VME at matched budgets")
    assert attribution["role"] == "secondary" and attribution["question"].startswith("M: alignment terms")
    assert matched["difference"] == pytest.approx(0.04, abs=0.02) and matched["low"] > 0
    assert rows["M: vme-reference - plain"]["role"] == "primary" and rows["M: vme-tuned - plain"]["role"] == "secondary"
    assert "M: plain-tuned - plain" not in rows and "M: augmentation-only - plain" not in rows


def test_the_modality_question_corrects_across_its_primary_contrasts():
    """The modality design: each stage contrast of a fixed arm over all targets is primary, Holm-corrected across
    the question's four (multimodal - none, text - none, multimodal - text, multimodal - shuffled)."""
    from study.report.tables import arm_rows

    study = _arm_study({"plain": 0.0, "plain+text": 0.0, "plain+multimodal": 0.05, "plain+multimodal-shuffled": 0.0})
    primary = {r["contrast"]: r for r in arm_rows(study) if r["family"] == "all targets"}
    assert set(primary) == {"M: plain+multimodal - plain", "M: plain+text - plain", "M: plain+multimodal - plain+text",
                            "M: plain+multimodal - plain+multimodal-shuffled"}
    assert {r["role"] for r in primary.values()} == {"primary"} and {r["question"] for r in primary.values()} == {
        "M: modality"}
    assert all("over 4 primary contrast(s)" in r["correction"] and r["p_holm"] >= r["p"] for r in primary.values())
    stepped = [min(1.0, (4 - i) * p) for i, p in enumerate(sorted(r["p"] for r in primary.values()))]  # Holm 1979
    assert sorted(r["p_holm"] for r in primary.values()) == pytest.approx(np.maximum.accumulate(stepped))


def test_the_stage_length_dose_is_contrasted_apart_from_the_modality_question():
    """Each stage at --stage-dose steps minus the same stage at the configured steps: paired by seed, a secondary
    row of its own question (Holm across its contrasts), leaving the modality question's four primary ones as they
    were."""
    from study.report.tables import arm_rows

    study = _arm_study({"plain": 0.0, "plain+text": 0.0, "plain+multimodal": 0.05, "plain+multimodal-shuffled": 0.0,
                        "plain+text@400": 0.0, "plain+multimodal@400": 0.1, "plain+multimodal-shuffled@400": 0.0})
    rows = {r["contrast"]: r for r in arm_rows(study) if r["family"] == "all targets"}
    dose = {c: r for c, r in rows.items() if "@" in c}
    assert set(dose) == {"M: plain+text@400 - plain+text", "M: plain+multimodal@400 - plain+multimodal",
                         "M: plain+multimodal-shuffled@400 - plain+multimodal-shuffled"}
    assert {r["role"] for r in dose.values()} == {"secondary"} and {r["question"] for r in dose.values()} == {
        "M: stage length (a two-point dose: each stage at a second length minus the configured one)"}
    assert all("over 3 secondary" in r["correction"] for r in dose.values())
    more = dose["M: plain+multimodal@400 - plain+multimodal"]
    assert more["difference"] == pytest.approx(0.05, abs=0.02) and more["method"] == "paired-by-seed t, df=2"
    modality = [r for c, r in rows.items() if "@" not in c]
    assert len(modality) == 4 and {r["question"] for r in modality} == {"M: modality"}
    assert {r["method"] for r in rows.values()} == {"paired-by-seed t, df=2"}  # every arm pairs by its seed


def test_a_primary_contrast_is_stated_with_its_interval_even_when_it_covers_zero():
    from study.report.questions import results_summary

    row = {"contrast": "M: vme-reference - plain", "family": "all targets", "question": "M: VME objective",
           "role": "primary", "languages": 15, "difference": 0.0109, "low": -0.0061, "high": 0.0278,
           "method": "paired-by-seed t, df=2", "p": 0.12, "p_holm": 0.12, "correction": "", "runs": "3 vs 3",
           "note": ""}
    assert results_summary([row]) == [
        "primary: M: vme-reference - plain, all 15 targets: +0.0109 [-0.0061, +0.0278] (95 % interval, "
        "paired-by-seed t, df=2; runs 3 vs 3; p 0.120): no detectable difference"]
    refused = {**row, "low": None, "high": None, "p": None, "p_holm": None, "method": "", "runs": "2 vs 2",
               "note": "2 vs 2 run(s): no interval (seed variance needs 3 runs per side)"}
    assert results_summary([refused]) == ["primary: M: vme-reference - plain, all 15 targets: +0.0109; 2 vs 2 run(s): "
                                          "no interval (seed variance needs 3 runs per side)"]
    from dataclasses import replace

    from study.report.load import Study
    from study.report.tables import arm_rows

    study = _arm_study({"plain": 0.0, "vme-reference": 0.05})  # plain logged no per-example scores: one row says so
    trials = [replace(t, units=None) if t.arm == "plain" else t for t in study.trials]
    rows = arm_rows(Study("x", "uri", "accuracy", [], trials, "pocket-topic"))
    assert [(r["family"], r["role"], r["difference"]) for r in rows] == [("all targets", "primary", None)]
    assert results_summary(rows) == ["primary: M: vme-reference - plain: no interval: a side logged no per-example "
                                     "scores"]


def test_family_tables_average_the_languages_every_arm_scored():
    """fr is missing from vme-reference's runs: every arm's Indo-European mean is then over de alone, so the rows
    side by side average the same languages."""
    from dataclasses import replace

    from study.report.load import Study
    from study.report.tables import group_rows

    study = _arm_study({"plain": 0.0, "vme-reference": 0.05})
    trials = [replace(t, scores={k: v for k, v in t.scores.items() if k != "fr"}) if t.arm == "vme-reference" else t
              for t in study.trials]
    rows = group_rows(Study("x", "uri", "accuracy", [], trials, "pocket-topic"), "family")
    european = {r["arm"]: r for r in rows if r["family"] == "Indo-European"}
    assert {r["languages"] for r in european.values()} == {1}
    plain = [t for t in trials if t.arm == "plain" and t.phase == "confirm"]
    assert european["plain"]["score"] == pytest.approx(np.mean([t.scores["de"] for t in plain]))


def test_no_model_comparison_with_an_untrained_stand_in_and_only_on_matched_arms():
    from dataclasses import replace

    from study.report.load import Study
    from study.report.tables import comparison_rows

    trained = _arm_study({"plain": 0.0, "vme-reference": 0.05})
    other = [replace(t, model="n", model_name="N", run_id="n" + t.run_id) for t in trained.trials]
    both = Study("x", "uri", "accuracy", [], trained.trials + other, "pocket-topic")
    rows = comparison_rows(both)
    assert {r["contrast"] for r in rows} == {"N - M (plain)", "N - M (vme-reference)"}  # never plain vs vme
    assert all(r["difference"] == 0.0 for r in rows)
    primary = [r for r in rows if r["family"] == "all targets"]  # one per matched arm, Holm across the two
    assert len(primary) == 2 and {r["role"] for r in primary} == {"primary"}
    assert all(r["method"].startswith("Welch t, df=") and "over 2 primary" in r["correction"] for r in primary)
    assert {r["role"] for r in rows if r["family"] != "all targets"} == {"exploratory"}
    untrained = _arm_study({"plain": 0.0}, stand_in=True)
    mixed = Study("x", "uri", "accuracy", [], untrained.trials + [t for t in other if t.arm == "plain"], "pocket-topic")
    refused = comparison_rows(mixed)
    assert len(refused) == 1 and refused[0]["difference"] is None
    assert refused[0]["note"] == "no model comparison: M [offline stand-in, untrained] is an untrained offline stand-in"


def test_the_all_targets_model_row_as_hand_computed():
    """Two models on plain, 3 seeds each on de and ja (20 items each). Run means (de, ja averaged): M .40, .50, .30;
    N .50, .60, .55 (the same seed numbers: two models still share no seed effect, so Welch, never paired). N - M
    = .15; s_M² = .01, s_N² = .0025; Welch–Satterthwaite df = .0125² / ((.01² + .0025²) / 2) = 2.941176."""
    from scipy.stats import ttest_ind

    from study.core.protocol import CONFIRM_PHASE
    from study.report.load import Study, TrialRun
    from study.report.tables import comparison_rows

    per_seed = {"m": [(0.45, 0.35), (0.55, 0.45), (0.35, 0.25)], "n": [(0.55, 0.45), (0.65, 0.55), (0.60, 0.50)]}
    trials = []
    for model, scores in per_seed.items():
        for seed, (de, ja) in enumerate(scores, start=1):
            units = {"en": _scored(0.9), "de": _scored(de), "ja": _scored(ja)}
            trials.append(TrialRun(f"{model}{seed}", CONFIRM_PHASE, "plain", "S", model, model.upper(), False, "none",
                                   {"seed": str(seed)}, 0.9, seed, {k: units_score(u) for k, u in units.items()},
                                   units))
    rows = {r["family"]: r for r in comparison_rows(Study("x", "uri", "accuracy", [], trials, "pocket-topic"))}
    assert list(rows) == ["all targets", "Indo-European", "Japonic"]
    overall = rows["all targets"]
    reference = ttest_ind([0.50, 0.60, 0.55], [0.40, 0.50, 0.30], equal_var=False)
    assert overall["contrast"] == "N - M (plain)" and overall["difference"] == pytest.approx(0.15)
    assert overall["method"] == "Welch t, df=2.9" and overall["languages"] == 2 and overall["runs"] == "3 vs 3"
    assert (overall["low"], overall["high"]) == pytest.approx(tuple(reference.confidence_interval(0.95)))
    assert overall["p"] == pytest.approx(reference.pvalue) and overall["p_holm"] == pytest.approx(reference.pvalue)
    assert overall["role"] == "primary" and overall["question"] == "models" and overall["note"] == ""
    assert rows["Japonic"]["role"] == "exploratory" and rows["Japonic"]["difference"] == pytest.approx(
        (0.45 + 0.55 + 0.50) / 3 - (0.35 + 0.45 + 0.25) / 3)


def test_the_page_and_csvs_of_a_hand_made_two_model_study_name_each_interval(tmp_path):
    """The whole page on hand-made runs with 3 seeds an arm (the smoke studies below have 2, so no interval): the
    arm contrasts paired by seed, the model rows Welch, each row's method, role and Holm correction in the CSVs, and
    the primary contrasts stated in words."""
    from dataclasses import replace

    from study.report.load import Study
    from study.report.page import build_report

    trained = _arm_study({"plain": 0.0, "vme-reference": 0.05})
    other = [replace(t, model="n", model_name="N", run_id="n" + t.run_id) for t in trained.trials]
    build_report(Study("x", "uri", "accuracy", [], trained.trials + other, "pocket-topic"), tmp_path)
    arms = _csv(tmp_path / "arm_contrasts.csv")
    assert {r["method"] for r in arms} == {"paired-by-seed t, df=2"} and all(r["p_holm"] for r in arms)
    assert {(r["family"], r["role"]) for r in arms} == {("all targets", "primary"), ("Indo-European", "exploratory"),
                                                        ("Japonic", "exploratory")}
    models = _csv(tmp_path / "model_comparison.csv")
    assert {r["family"] for r in models} == {"all targets", "Indo-European", "Japonic"}
    assert all(r["method"].startswith("Welch t, df=") and r["correction"].startswith("Holm (1979") for r in models)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    for fact in ("primary: M: vme-reference - plain, all 3 targets: +0.0500", "primary: N - M (plain), all 3 "
                 "targets: +0.0000", "paired-by-seed t, df=2", "exploratory family rows differ after Holm",
                 "Gelman &amp; Stern 2006", "Welch 1947"):
        assert fact in page, fact


# --- the report of real studies -------------------------------------------------------------------------------


def _report(uri, experiment, out, **kwargs):
    return subprocess.run([sys.executable, "-m", "study.report", "--experiment", experiment, "--mlflow-uri", uri,
                           "--out", str(out)], capture_output=True, text=True, timeout=600, **kwargs)


def _csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def report(smoke_experiment, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    result = _report(smoke_experiment["uri"], smoke_experiment["experiment"], out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.e2e
def test_report_has_a_row_per_family_and_intervals_around_estimates(report):
    languages = _csv(report / "per_language.csv")
    models = {r["model"] for r in languages}
    assert models == {"tiny random XLM-R [offline stand-in, untrained]",
                      "tiny random BERT [offline stand-in, untrained]"}
    families = {m: {r["family"] for r in languages if r["model"] == m and r["language"] != "en"} for m in models}
    by_family = _csv(report / "by_family.csv")
    for model in models:
        assert {r["family"] for r in by_family if r["model"] == model} == families[model]
    assert {(r["model"], r["arm"]) for r in languages} == {  # confirm runs only, per arm
        ("tiny random XLM-R [offline stand-in, untrained]", "plain"),
        ("tiny random XLM-R [offline stand-in, untrained]", "vme-tuned"),
        ("tiny random BERT [offline stand-in, untrained]", "plain"),
        ("tiny random BERT [offline stand-in, untrained]", "vme-reference")}
    assert {r["seeds"] for r in languages} == {"2"}
    comparison = _csv(report / "model_comparison.csv")  # the shared arm (plain); both sides are untrained: refused
    assert len(comparison) == 1 and not comparison[0]["difference"]
    assert "no model comparison" in comparison[0]["note"] and "untrained" in comparison[0]["note"]
    arms = _csv(report / "arm_contrasts.csv")
    for model, contrast in (("tiny random XLM-R [offline stand-in, untrained]", "vme-tuned - plain"),
                            ("tiny random BERT [offline stand-in, untrained]", "vme-reference - plain")):
        rows = [r for r in arms if r["contrast"] == f"{model}: {contrast}"]
        assert {r["family"] for r in rows} == families[model] | {"all targets"}, (model, contrast)  # primary row
    # 2 confirm seeds a side: an estimate in every row, but no interval (the seed-level interval needs 3 runs a side)
    assert all(r["runs"] == "2 vs 2" and r["difference"] and not r["low"] and not r["p"] for r in arms)
    assert {r["note"] for r in arms} == {"2 vs 2 run(s): no interval (seed variance needs 3 runs per side)"}
    roles = {(r["contrast"].split(": ")[1], r["family"] == "all targets"): r["role"] for r in arms}
    assert roles == {("vme-tuned - plain", True): "secondary", ("vme-reference - plain", True): "primary",
                     ("vme-tuned - plain", False): "exploratory", ("vme-reference - plain", False): "exploratory"}
    references = _csv(report / "reference_lines.csv")
    assert {(r["model"], r["line"]) for r in references if r["family"] == "all targets"} == {
        (model, line) for model in models for line in ("frozen_probe", "random_init_probe")}
    fits = _csv(report / "gap_vs_distance.csv")
    assert {r["distance"] for r in fits} >= {"syntactic", "genetic", "geographic"}
    arms_run = {(r["model"], r["arm"]) for r in languages}
    assert {r["model"] for r in fits} == {f"{model} / {arm}" for model, arm in arms_run}  # per model and arm
    for label in {r["model"] for r in fits}:  # every kind on one language set, with a Holm-corrected p where fitted
        mine = [r for r in fits if r["model"] == label]
        assert len({r["n"] for r in mine}) == 1 and all(not r["p"] or float(r["p_holm"]) >= float(r["p"]) for r in mine)


@pytest.mark.e2e
def test_report_draws_the_alignment_probe_of_the_probed_study_only(report):
    bert = "tiny random BERT [offline stand-in, untrained]"  # its study probed; tiny's ran --no-alignment-probe
    deltas = _csv(report / "alignment_delta.csv")
    assert {r["model"] for r in deltas} == {bert} and {r["arm"] for r in deltas} == {"plain", "vme-reference"}
    assert {r["family"] for r in deltas} == {"Indo-European", "Japonic"} and {r["runs"] for r in deltas} == {"2"}
    assert {r["measure"] for r in deltas} == {"xx_to_en", "centred_distance"} and {r["layer"] for r in deltas} == {"6"}
    for row in deltas:
        assert float(row["delta"]) == pytest.approx(float(row["value"]) - float(row["pretrained"]))
    contrasts = _csv(report / "alignment_contrasts.csv")
    assert {r["contrast"] for r in contrasts} == {f"{bert}: vme-reference - plain"}
    assert {(r["measure"], r["family"]) for r in contrasts} >= {("xx_to_en", "all targets"),
                                                                  ("centred_distance", "Japonic")}
    assert all(r["runs"] == "2 vs 2" and not r["low"] for r in contrasts)
    page = (report / "report.html").read_text(encoding="utf-8")
    assert "Alignment probe: did the arms pull languages towards English?" in page
    assert f"{bert}: vme-reference - plain, xx→en retrieval of the alignment probe at layer 6" in page
    assert (report / "alignment_pca_tiny_random_BERT_offline_stand_in_untrained_.png").is_file()


@pytest.mark.e2e
def test_report_html_is_honest_and_references_only_existing_files(report):
    page = (report / "report.html").read_text(encoding="utf-8")
    for fact in ("OFFLINE STAND-IN", "English dev only", "pocket", "smoke", "Model comparison (matched arms): all "
                 "targets (primary) and per family (exploratory)", "Arm contrasts: all targets (primary or "
                 "secondary) and per family (exploratory)", "Results in words", "from confirm runs only",
                 "paired-by-seed t", "Welch t", "Holm (1979)", "Gelman &amp; Stern 2006",
                 "No modality contrast is drawn", "typological distance", "after Holm at 0.05",
                 "parameter importance", "no model comparison", "roget (offline substitute for counter-fitted)"):
        assert fact in page, fact
    # each contrast in words, with its estimate although 2 seeds a side give no interval
    assert re.search(r"secondary: tiny random XLM-R [^:]*: vme-tuned - plain, all \d+ targets: [+-]\d\.\d{4}; 2 vs 2 "
                     r"run\(s\): no interval", page)
    assert re.search(r"primary: tiny random BERT [^:]*: vme-reference - plain, all \d+ targets: [+-]\d\.\d{4}; 2 vs 2 ",
                     page)
    referenced = set(re.findall(r'(?:src|href)="([^"]+)"', page))
    assert referenced and all((report / name).is_file() for name in referenced), referenced
    assert {"family_scores.png", "arm_contrasts.png", "optimisation_history.png", "loss_weights.png"} <= referenced


@pytest.mark.e2e
def test_report_files_are_artifacts_of_a_report_run(report, smoke_experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(smoke_experiment["uri"])
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id], "tags.run_kind = 'report'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    logged = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert logged == {p.name for p in report.iterdir()}


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("headless Chromium is not installed: run `bash scripts/install_browser.sh` (scripts/test.sh does)")


def _browse(url: str, screenshot: Path) -> str:
    """The page's DOM after its scripts ran (MLflow's UI is a single-page app), and a screenshot of it."""
    common = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--virtual-time-budget=20000", "--window-size=1400,1000"]
    subprocess.run([*common, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
    return dom.stdout


@pytest.mark.e2e
def test_mlflow_ui_shows_the_runs_and_the_report_in_headless_chromium(report, smoke_experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(smoke_experiment["uri"])
    experiment = client.get_experiment_by_name("e2e")
    report_run = client.search_runs([experiment.experiment_id], "tags.run_kind = 'report'")[0]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = f"{smoke_experiment['uri']}/#/experiments/{experiment.experiment_id}"
    page = _browse(f"{base}/runs", ARTIFACTS / "mlflow_experiment.png")  # the experiment's runs table
    studies = client.search_runs([experiment.experiment_id], "tags.run_kind = 'study'")
    for name in ["report", *(r.info.run_name for r in studies)]:
        assert name in page, name
    artifacts = _browse(f"{base}/runs/{report_run.info.run_id}/artifacts", ARTIFACTS / "mlflow_report_run.png")
    assert "report.html" in artifacts and "family_scores.png" in artifacts
    assert (ARTIFACTS / "mlflow_experiment.png").stat().st_size > 10_000  # a rendered page, not a blank one


@pytest.mark.e2e
def test_nothing_to_report_is_a_clear_error(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.tracking.MlflowClient(uri)
    unrelated = client.create_experiment("unrelated")
    run = client.create_run(unrelated, run_name="someone else's run")
    client.log_metric(run.info.run_id, "loss", 1.0)
    client.set_terminated(run.info.run_id)
    for experiment, message in (("unrelated", "has no finished study trials (1 finished runs, none made by "
                                              "python -m study.tune)"),
                                ("missing", "no MLflow experiment named 'missing'")):
        result = _report(uri, experiment, tmp_path / "out")
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / "out").exists()
    typo = f"sqlite:///{tmp_path}/mlfow.db"  # a mistyped store: one line, and no new empty store left behind
    result = _report(typo, "unrelated", tmp_path / "out")
    assert result.returncode == 2 and f"no MLflow store at {typo}" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "mlfow.db").exists()


def test_the_modality_note_says_what_the_stages_captions_could_link():
    """English-only stages cannot pivot between languages (the default note); stages run with --caption-languages
    say which languages their images and translation pairs linked."""
    from types import SimpleNamespace

    from study.report.page import ENGLISH_ONLY_STAGE, stage_languages_note

    def study(*languages):
        return SimpleNamespace(trials=[SimpleNamespace(params={"intermediate.caption_languages": value} if value
                                                       else {}) for value in languages])

    assert stage_languages_note(study(None, "en")) == ENGLISH_ONLY_STAGE  # runs without a stage record nothing
    note = stage_languages_note(study("en", "de,en,ja"))
    assert note.startswith("The stages drew their captions in de, en, ja") and "English-only" not in note


# --- the model x family question ------------------------------------------------------------------------------

MODEL_FAMILY_LANGUAGES = {"de": 0.00, "fr": 0.02, "es": 0.04, "fi": 0.10, "et": 0.12, "hu": 0.14, "id": 0.03,
                          "ms": 0.05, "sw": 0.20, "yo": 0.16, "tr": 0.30}  # N's lead over M per language
SYNTAX = {"de": 0.40, "fr": 0.42, "es": 0.38, "fi": 0.55, "et": 0.57, "hu": 0.59, "id": 0.50, "ms": 0.52,
          "sw": 0.60, "yo": 0.64, "tr": 0.70}


def _two_model_study(models=("m", "n")):
    """Models M and N on arm plain, seeds 1-3, on English and the languages above (every one Latin-script): M scores
    0.5 + a seed effect everywhere, N that plus its lead in the language; each language's seeds also vary by a
    noise that sums to 0 over them."""
    from study.core.protocol import CONFIRM_PHASE
    from study.report.load import Study, TrialRun

    trials = []
    for model in models:
        for seed in (1, 2, 3):
            scores = {"en": 0.9, **{lang: 0.5 + SEED_EFFECT[seed] + (lead if model == "n" else 0.0)
                                    + 0.002 * (i % 3 + 1) * (seed - 2)  # 0 over the seeds: seed means as said
                                    for i, (lang, lead) in enumerate(MODEL_FAMILY_LANGUAGES.items())}}
            trials.append(TrialRun(f"{model}{seed}", CONFIRM_PHASE, "plain", "S", model, model.upper(), False, "none",
                                   {"seed": str(seed)}, 0.9, seed, scores))
    return Study("x", "uri", "accuracy", [], trials, "pocket-topic")


def _syntax():
    from study.core.languages import Distance

    return {lang: {"syntactic": Distance(value, 50)} for lang, value in SYNTAX.items()}


def test_the_model_family_question_of_two_models_by_hand():
    """Families with 2+ languages enter the mixed model (Indo-European, Uralic, Austronesian, Niger-Congo; Turkic's one
    language is left out): df (2 - 1)(4 - 1) = 3. The distance test is on family means (all Latin: no covariate):
    its slope is least squares on the five family points, its p from all 5! orderings of the family contrasts
    against the distances (only the observed one correlates as strongly: p = 2 x 1 / 120)."""
    import itertools

    from study.report.model_family import model_family_rows, model_family_summary

    interaction, regression = model_family_rows(_two_model_study(), distances=_syntax)
    (row,), (fit,) = interaction, regression
    assert (row["arm"], row["contrast"], row["df"], row["families"], row["languages"], row["runs"]) == \
        ("plain", "N - M", 3, 4, 10, 6)
    assert row["left_out"] == "Turkic (1)" and row["test"] == "likelihood ratio of ML fits, χ², df=3"
    assert row["p"] < 0.05  # the leads differ by family far beyond the languages' own spread
    families = {"Austronesian": ("id", "ms"), "Indo-European": ("de", "fr", "es"), "Niger-Congo": ("sw", "yo"),
                "Turkic": ("tr",), "Uralic": ("fi", "et", "hu")}
    lead = [np.mean([MODEL_FAMILY_LANGUAGES[x] for x in members]) for members in families.values()]
    syntax = [np.mean([SYNTAX[x] for x in members]) for members in families.values()]
    assert fit["slope_family"] == pytest.approx(np.polyfit(syntax, lead, 1)[0])
    observed = np.corrcoef(syntax, lead)[0, 1]
    r = [np.corrcoef(syntax, order)[0, 1] for order in itertools.permutations(lead)]
    # two-sided as scipy's permutation_test has it: twice the smaller one-sided share, the observed order counted
    greater, less = (sum(v >= observed - 1e-12 for v in r) / 120, sum(v <= observed + 1e-12 for v in r) / 120)
    assert fit["p_family_permutation"] == pytest.approx(min(1.0, 2 * min(greater, less))) == pytest.approx(2 / 120)
    assert (fit["families"], fit["languages"], fit["covariates"]) == (5, 11, "none")
    languages = list(MODEL_FAMILY_LANGUAGES)
    assert fit["slope_language"] == pytest.approx(np.polyfit([SYNTAX[x] for x in languages],
                                                             [MODEL_FAMILY_LANGUAGES[x] for x in languages], 1)[0])
    lines = model_family_summary(interaction, regression)
    assert lines[0].startswith("N - M (plain): model × family likelihood ratio of ML fits, χ², df=3 = ")
    assert "(whole families permuted)" in lines[1]


def test_a_single_model_report_has_no_model_family_question(tmp_path):
    from study.report.model_family import model_family_rows
    from study.report.page import build_report

    single = _two_model_study(models=("m",))
    assert model_family_rows(single, distances=_syntax) == ([], [])
    files = build_report(single, tmp_path)
    assert "model_family.csv" not in files and not (tmp_path / "model_family.csv").exists()
    assert "Model × family" not in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_the_reference_summary_gives_the_seeds_sample_sd():
    """Target averages 0.24, 0.25, 0.27: mean 0.2533, sample s.d. (n - 1) sqrt(4.6667e-4 / 2) = 0.0153 (the
    population s.d., 0.0125, would understate the seeds' spread)."""
    from study.core.protocol import CONFIRM_PHASE
    from study.report.load import Study, TrialRun
    from study.report.tables import reference_summary

    trials = [TrialRun(f"m{seed}", CONFIRM_PHASE, "plain", "S", "m", "M", False, "none", {"seed": str(seed)}, 0.9,
                       seed, {"en": 0.9, "de": value}) for seed, value in enumerate((0.24, 0.25, 0.27), start=1)]
    references = [{"model": "M", "line": "frozen_probe", "family": "all targets", "score": 0.3}]
    (line,) = reference_summary(Study("x", "uri", "accuracy", [], trials, "pocket-topic"), references)
    assert "target average 0.2533 over 3 seed(s), sample s.d. 0.0153, below the frozen" in line

# --- where a report goes --------------------------------------------------------------------------------------


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _publish(out: Path, experiment: str, files: dict[str, str]) -> None:
    from study.report.output import publish, scratch_beside

    with scratch_beside(out) as work:
        report = Path(work) / "report"
        for name, text in files.items():
            (report / name).parent.mkdir(parents=True, exist_ok=True)
            (report / name).write_text(text)
        publish(report, out, experiment)


def test_a_new_report_replaces_the_earlier_one_of_its_experiment_whole(tmp_path):
    """Two tasks' report, then one task's: the index's overall.csv, the task pages and figures of the first never
    stay beside the second; nothing else is left beside ``--out``."""
    from study.report.output import REPORT_RECORD

    out = tmp_path / "report"
    _publish(out, "vme-xtreme-r", {"report.html": "index", "overall.csv": "task,score\n", "xnli/report.html": "x",
                                   "xnli/gap_vs_distance.png": "png", "udpos/per_language.csv": "u"})
    _publish(out, "vme-xtreme-r", {"report.html": "one task", "per_language.csv": "language\n"})
    assert _tree(out) == {"report.html", "per_language.csv", REPORT_RECORD}
    assert (out / "report.html").read_text() == "one task"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no scratch or earlier report left beside it


@pytest.mark.parametrize("contents, message", [
    ({"notes.txt": "mine"}, r"is not empty and is not a study report"),
    ({".study_report.json": '{"experiment": "vme-pocket"}', "overall.csv": "x"},
     r"is not empty and is the report of experiment 'vme-pocket': a report replaces only an earlier report of the "
     r"same experiment \('vme-xtreme-r'\)"),
    ({".study_report.json": "not json", "report.html": "x"}, r"is not empty and is not a study report"),
])
def test_report_refuses_an_out_directory_it_may_not_replace_before_reading_mlflow(tmp_path, contents, message):
    from study.cli.report import main
    from study.core.errors import StudyError

    out = tmp_path / "out"
    out.mkdir()
    for name, text in contents.items():
        (out / name).write_text(text)
    before = _tree(tmp_path)
    # an MLflow URI that would fail differently: the refusal comes first, and nothing is written
    with pytest.raises(StudyError, match=rf"^--out {re.escape(str(out))} {message}"):
        main(["--experiment", "vme-xtreme-r", "--mlflow-uri", f"sqlite:///{tmp_path}/none/mlflow.db", "--out",
              str(out)])
    assert _tree(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(StudyError, match=r"is a file, not a directory"):
        main(["--experiment", "vme-xtreme-r", "--out", str(tmp_path / "file")])


@pytest.mark.e2e
def test_study_report_into_a_foreign_directory_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "overall.csv").write_text("another experiment's\n")
    result = _report(f"sqlite:///{tmp_path}/mlflow.db", "e", tmp_path / "out")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: --out {tmp_path / 'out'} is not empty and is not a study report: a report replaces only an earlier "
        "report of the same experiment ('e'); choose a new or empty directory, or delete it"], result.stderr
    assert _tree(tmp_path) == {"out/overall.csv"}

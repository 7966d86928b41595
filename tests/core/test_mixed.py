"""The model × family interaction of the linear mixed model against hand-computed cell means and a direct
statsmodels fit, on hand-made two-model scores."""

import numpy as np
import pytest

from study.core.mixed import Score, model_family_interaction

FAMILIES = {"F1": ("a", "b", "c"), "F2": ("d", "e", "f"), "F3": ("g", "h")}
SEEDS = (1, 2, 3)


def _scores(interaction: dict) -> list[Score]:
    """Per model m1, m2, seed and language: a language effect, a model effect (m2 +0.05), a run effect, the family's
    ``interaction`` for m2, and a noise that sums to 0 over each language's seeds (-c, 0, +c), so that each cell's
    mean is exactly its fixed effects plus the run effects' mean."""
    language = {lang: 0.4 + 0.02 * i for i, lang in enumerate(sorted(sum(FAMILIES.values(), ())))}
    run = {("m1", 1): -0.01, ("m1", 2): 0.0, ("m1", 3): 0.02, ("m2", 1): 0.015, ("m2", 2): -0.005, ("m2", 3): 0.0}
    out = []
    for model in ("m1", "m2"):
        for family, members in FAMILIES.items():
            for k, lang in enumerate(members):
                for seed in SEEDS:
                    noise = 0.004 * (k + 1) * (seed - 2)
                    value = language[lang] + run[(model, seed)] + noise + (
                        0.05 + interaction.get(family, 0.0) if model == "m2" else 0.0)
                    out.append(Score(model, family, lang, f"{model}:{seed}", value))
    return out


def _family_contrast(scores: list[Score], family: str) -> float:
    """By hand: the family's mean over its languages of (m2's seed mean - m1's seed mean)."""
    def mean(model):
        return np.mean([s.score for s in scores if s.model == model and s.family == family])
    return mean("m2") - mean("m1")


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning")  # the direct fit's
def test_the_interaction_is_the_difference_of_family_contrasts_and_its_ratio_statsmodels():
    """Every cell holds every run and each family's languages in both models: the GLS estimates of a saturated
    model × family model are the cell means (Zyskind's condition), so each interaction coefficient is the family's
    contrast minus the first family's, by hand; the likelihood ratio is a direct statsmodels fit's."""
    import pandas as pd
    import statsmodels.formula.api as smf
    from scipy.stats import chi2

    scores = _scores({"F2": 0.06, "F3": -0.03})
    found = model_family_interaction(scores)
    assert (found.df, found.families, found.languages, found.runs, found.observations) == (2, 3, 8, 6, 48)
    f1, f2, f3 = (_family_contrast(scores, f) for f in FAMILIES)
    assert f2 - f1 == pytest.approx(0.06) and f3 - f1 == pytest.approx(-0.03)  # the hand-made interaction
    assert found.coefficients == pytest.approx({"C(model)[T.m2]:C(family)[T.F2]": f2 - f1,
                                                "C(model)[T.m2]:C(family)[T.F3]": f3 - f1}, abs=1e-6)
    frame = pd.DataFrame([s.__dict__ for s in scores]).assign(group=1)
    vc = {"language": "0 + C(language)", "run": "0 + C(run)", "language_model": "0 + C(language):C(model)"}
    llf = {}
    for name, formula in (("full", "score ~ C(model) * C(family)"), ("reduced", "score ~ C(model) + C(family)")):
        llf[name] = smf.mixedlm(formula, frame, groups="group", re_formula="0", vc_formula=vc).fit(
            reml=False, method=["nm"]).llf
    direct = 2 * (llf["full"] - llf["reduced"])
    assert found.statistic == pytest.approx(direct, rel=1e-3) and found.statistic > 20
    assert found.p == pytest.approx(chi2.sf(found.statistic, 2)) and found.p < 1e-4
    assert found.method == "likelihood ratio of ML fits, χ²" and "anti-conservative" in found.note


def test_no_interaction_gives_a_ratio_of_zero():
    """The same model contrast in every family (cell means' difference in differences exactly 0): the fits with and
    without the interaction coincide."""
    found = model_family_interaction(_scores({}))
    assert found.statistic == pytest.approx(0.0, abs=1e-4) and found.p > 0.99
    assert all(abs(v) < 1e-6 for v in found.coefficients.values())


def test_one_model_or_one_family_has_no_interaction():
    scores = _scores({})
    assert model_family_interaction([s for s in scores if s.model == "m1"]) is None
    assert model_family_interaction([s for s in scores if s.family == "F1"]) is None
    assert model_family_interaction([]) is None

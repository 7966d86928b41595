"""Does the difference between two models depend on the language family? A linear mixed model on per-language,
per-run scores (no Ray, no I/O):

    score ~ model × family + (1 | language) + (1 | run) + (1 | language:model)

fitted with statsmodels' ``MixedLM``. The two random intercepts are crossed (every run scores every language), which
``MixedLM`` expresses as variance components inside one group holding every observation (``groups`` constant,
``re_formula="0"``, ``vc_formula`` one component per factor: its documented way to fit crossed effects). The run is
the seed of one model: two models share seed numbers but no training, so a seed's effect is a run's. The
language × model intercept is each language's own deviation of the model contrast: without it, languages whose
contrast differs by chance (the seeds' noise is all the model would know) would count as a family effect, and the
interaction would be tested against the wrong variance (the unit a family effect is judged on is the language).

The interaction is tested by a likelihood ratio between the maximum-likelihood fits (not REML: REML likelihoods of
different fixed effects are not comparable) with and without it, against χ² with (models − 1)(families − 1) degrees
of freedom. With few languages per family and few seeds that reference distribution is anti-conservative for fixed
effects (Pinheiro & Bates 2000, §2.4.2), so a small p is read with the per-family intervals, not alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

# crossed random intercepts, one variance each: a language's difficulty, a run's, and a language's own model contrast
VARIANCE_COMPONENTS = {"language": "0 + C(language)", "run": "0 + C(run)",
                       "language_model": "0 + C(language):C(model)"}
# gradient optimisers stall where a variance is at 0 (common with few languages): derivative-free fits first, the
# converged one with the highest likelihood kept
OPTIMISERS = (("powell",), ("nm",), ("lbfgs",))
BOUNDARY = 1e-6  # a variance component below this share of the residual's is at the boundary
SCALE = 100.0  # scores are fitted in points: variances of 1e-5 on the 0-1 scale stall the optimiser
MIN_LANGUAGES_PER_FAMILY = 2  # a family of one language has no replication of its own contrast: left out
SMALL_SAMPLE_NOTE = ("likelihood-ratio χ² on few languages per family and few seeds is anti-conservative for fixed "
                     "effects (Pinheiro & Bates 2000, §2.4.2): read it with the per-family intervals")


@dataclass(frozen=True)
class Score:
    """One run's score on one language: the model, the language's family, the run (a model's seed) and the score."""

    model: str
    family: str
    language: str
    run: str
    score: float


@dataclass(frozen=True)
class InteractionTest:
    """The model × family interaction of a ``MixedLM`` fit: the likelihood-ratio statistic, its degrees of freedom and
    χ² p-value, the ML fits' log-likelihoods, the interaction coefficients (treatment coding: the later model's
    contrast in a family minus in the first family), the variance components and what a reader must know."""

    statistic: float
    df: int
    p: float
    llf_full: float
    llf_reduced: float
    coefficients: dict
    variances: dict
    observations: int
    languages: int
    families: int
    runs: int
    method: str = "likelihood ratio of ML fits, χ²"
    note: str = ""


def _fit(frame, formula: str):
    """ML fit of ``formula`` with crossed language and run intercepts as variance components; (result, what a
    reader must know of the fit: not converged, or a variance on the boundary)."""
    import numpy as np
    import statsmodels.formula.api as smf

    model = smf.mixedlm(formula, frame, groups="group", re_formula="0", vc_formula=VARIANCE_COMPONENTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and singular-covariance warnings: judged below, by the best fit
        fits = [model.fit(reml=False, method=list(method)) for method in OPTIMISERS]
    result = max(fits, key=lambda fit: (fit.converged, fit.llf))
    said = [] if result.converged else ["did not converge"]
    if np.any(np.asarray(result.vcomp) < BOUNDARY * max(1.0, result.scale)):
        said.append("a variance component at 0 (the boundary)")
    return result, ", ".join(said)


def model_family_interaction(scores: Sequence[Score]) -> InteractionTest | None:
    """The likelihood-ratio test of score ~ model × family against score ~ model + family, both with crossed
    (1 | language) and (1 | run); None with fewer than two models or two families."""
    import numpy as np
    import pandas as pd
    from scipy.stats import chi2

    frame = pd.DataFrame([s.__dict__ for s in scores])
    if frame.empty or frame["model"].nunique() < 2 or frame["family"].nunique() < 2:
        return None
    frame["group"] = 1
    frame["score"] = frame["score"] * SCALE  # conditioning only: the ratio is scale-free, estimates scaled back
    full, full_said = _fit(frame, "score ~ C(model) * C(family)")
    reduced, reduced_said = _fit(frame, "score ~ C(model) + C(family)")
    df = int(len(full.fe_params) - len(reduced.fe_params))
    statistic = float(2 * (full.llf - reduced.llf))
    if not np.isfinite(statistic):  # e.g. no residual variance at all: the likelihood is unbounded
        full_said = "the likelihood is not finite (no variance left to the residual?)"
    statistic = max(0.0, statistic) if np.isfinite(statistic) else float("nan")
    interaction = {name: float(value) / SCALE for name, value in full.fe_params.items() if ":" in name}
    variances = {name: float(value) / SCALE ** 2 for name, value in zip(full.model.exog_vc.names,
                                                                         np.atleast_1d(full.vcomp), strict=True)}
    variances["residual"] = float(full.scale) / SCALE ** 2
    fit_notes = [f"{which} fit: {said}" for which, said in (("full", full_said), ("reduced", reduced_said)) if said]
    return InteractionTest(statistic, df, float(chi2.sf(statistic, df)), float(full.llf), float(reduced.llf),
                           interaction, variances, len(frame), frame["language"].nunique(),
                           frame["family"].nunique(), frame["run"].nunique(),
                           note="; ".join([SMALL_SAMPLE_NOTE, *fit_notes]))

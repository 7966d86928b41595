"""The statistics of the report, on plain numbers (no MLflow, no plotting): seed-level intervals of contrasts per
group of languages (``study.core.inference``), and permutation tests (Holm-corrected) of transfer against
typological distance.

A language's score is sum(numerators) / sum(denominators) of its per-example units (accuracy: (correct, 1); QA:
(score, 1); tagging F1: (2 * true positives, predicted + gold entities)). Every run of a study scores the same test
items (``protocol.EVAL_SUBSET_SEED``), so a contrast a − b compares runs on one test set: each run's value for a
group is its mean over the group's languages of those scores (items nested in languages), and the interval treats
runs (seeds) as the replicates — paired by seed where the sides ran the same seeds, Welch where they did not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from study.core.inference import LEVEL, MIN_RUNS, seed_contrast
from study.core.languages import group_of
from study.core.protocol import is_target

Units = Sequence[Sequence[float]]  # per example: (numerator, denominator)
MIN_EXAMPLES = 10  # fewer test examples in a group than this: no interval, "too little data"


def units_score(units: Units) -> float:
    """sum(numerators) / sum(denominators) of one language's per-example units; 0.0 when the denominators sum to 0."""
    array = np.asarray(units, dtype=float).reshape(-1, 2)
    return float(array[:, 0].sum() / array[:, 1].sum()) if array[:, 1].sum() else 0.0


class Side:
    """One configuration's test results: per seed (run), per language, per-example units in test-set order; with
    ``seeds``, each run's training seed (what pairs it with the other side's run of the same seed)."""

    def __init__(self, runs: Sequence[Mapping[str, Units]], seeds: Sequence | None = None):
        kept = [(r, s) for r, s in zip(runs, seeds if seeds is not None else [None] * len(runs), strict=True)
                if r]
        self.runs = [{lang: np.asarray(units, dtype=float).reshape(-1, 2) for lang, units in r.items()}
                     for r, _ in kept]
        self.seeds = [s for _, s in kept]
        self.languages = sorted(set.intersection(*(set(r) for r in self.runs))) if self.runs else []

    def scores(self) -> dict[str, float]:
        """Per language: the mean over seeds of the language's score."""
        return {lang: float(np.mean([units_score(r[lang]) for r in self.runs])) for lang in self.languages}

    def run_means(self, languages: Sequence[str]) -> np.ndarray:
        """(runs,) each run's mean over ``languages`` of its language scores: the run's value in a contrast."""
        return np.array([np.mean([units_score(r[lang]) for lang in languages]) for r in self.runs])

    def items(self, lang: str) -> set[int]:
        """The numbers of test items the runs scored in ``lang`` (one number when the runs agree)."""
        return {len(r[lang]) for r in self.runs}


@dataclass(frozen=True)
class Contrast:
    """a − b over one group's target languages that both sides evaluated: the point estimate (paired: the mean
    per-seed difference of the runs' group means; else the difference of the seed-mean group means), its 95 %
    seed-level interval (``inference.seed_contrast``) with its p-value, degrees of freedom and method, or the reason
    there is none in ``note`` (which also carries what a reader must know of an interval)."""

    estimate: float
    low: float | None  # None: no interval (see note)
    high: float | None
    languages: tuple[str, ...]  # the shared target languages both means are over
    runs: tuple[int, int]  # runs (seeds) on each side
    note: str = ""
    p: float | None = None  # two-sided p-value of "no difference", by the same method as the interval
    df: float | None = None
    method: str = ""  # e.g. "paired-by-seed t, df=2", "Welch t, df=3.8"; empty without an interval

    @property
    def has_interval(self) -> bool:
        """False when the data cannot support an interval (the note says why)."""
        return self.low is not None


def contrast_of(a_values, b_values, languages, a_seeds=None, b_seeds=None, paired: bool = True,
                level: float = LEVEL, refusal: str = "") -> Contrast:
    """The ``Contrast`` of two sides' run values (``inference.seed_contrast``) over ``languages``; ``refusal``
    (non-empty) withholds the interval and says why."""
    found = seed_contrast(a_values, b_values, a_seeds, b_seeds, paired, level)
    runs = (len(a_values), len(b_values))
    if refusal or found.low is None:
        estimate = float(np.mean(a_values) - np.mean(b_values))
        too_few = found.low is None and min(runs) < MIN_RUNS  # the runs per side are said first
        return Contrast(estimate, None, None, tuple(languages), runs, found.note if too_few else refusal or found.note)
    return Contrast(found.estimate, found.low, found.high, tuple(languages), runs, found.note, found.p, found.df,
                    found.method)


def _no_interval(a: Side, b: Side, languages: list[str]) -> str:
    """Why the group's contrast gets no interval on the test items ('' when nothing on the items prevents one)."""
    if any(len(a.items(lang) | b.items(lang)) > 1 for lang in languages):
        return "no interval: the runs scored different test items, so they cannot be compared"
    examples = sum(len(a.runs[0][lang]) for lang in languages)
    if examples < MIN_EXAMPLES:
        return f"too little data ({examples} test examples)"
    return ""


ALL_TARGETS = "all targets"  # the one group of ``paired_difference_by_group(by=None)``


def paired_difference_by_group(a: Side, b: Side, by: str | None = "family", paired: bool = True,
                               level: float = LEVEL) -> dict[str, Contrast]:
    """a − b per group (``languages.group_of``; ``by`` None: one group, ``ALL_TARGETS``, every shared target
    language) over the target languages both sides evaluated, on the same test items: each run's value is its mean
    over the group's languages, and ``inference.seed_contrast`` gives the interval — paired by seed (``paired``: the
    sides ran the same seeds, as every arm of one model does) or Welch's (two models). No interval (``note`` says
    why) under ``MIN_RUNS`` runs a side, with runs that scored different numbers of items, or under
    ``MIN_EXAMPLES`` test examples in the group."""
    shared = [lang for lang in sorted(set(a.languages) & set(b.languages)) if is_target(lang)]
    groups: dict[str, list[str]] = {}
    for lang in shared:
        groups.setdefault(ALL_TARGETS if by is None else group_of(lang, by), []).append(lang)
    return {group: contrast_of(a.run_means(langs), b.run_means(langs), langs, a.seeds, b.seeds, paired, level,
                               _no_interval(a, b, langs))
            for group, langs in sorted(groups.items())}


PERMUTATIONS = 9999  # draws of the permutation test: p-values resolve to 1e-4 (exact test when n! is smaller)
ALPHA = 0.05  # the level of every test: Holm-corrected family-wise error rate of the typology tests and contrasts


@dataclass(frozen=True)
class SlopeTest:
    """y ~ 1 + x + covariates by least squares: the coefficient of x (``slope``), the line
    ``slope * x + intercept`` through the means, the partial R² of x given the covariates (the plain R² without
    any), the number of points ``n`` and the two-sided permutation p-value of x's coefficient."""

    slope: float
    intercept: float
    r2: float
    n: int
    p: float


def _residualise(values: np.ndarray, design: np.ndarray) -> np.ndarray:
    """What least squares on ``design`` leaves of ``values`` (rows: points; works on stacked vectors too)."""
    return values - (design @ np.linalg.lstsq(design, values.T, rcond=None)[0]).T


def slope_permutation_test(x: Sequence[float], y: Sequence[float], covariates: Sequence[Sequence[float]] = (),
                           permutations: int = PERMUTATIONS, seed: int = 0) -> SlopeTest | None:
    """Does y depend on x once the covariates are accounted for? Freedman & Lane (1983): the residuals of
    y ~ 1 + covariates are permuted across points and added back to its fitted values (without covariates: y itself
    is permuted), and the statistic is the partial correlation of x and y, which is pivotal (Anderson & Legendre
    1999) and monotone in x's t value. ``scipy.stats.permutation_test`` draws the permutations (all of them when
    n! <= ``permutations``) and counts the observed order as one (Phipson & Smyth 2010). None with fewer points
    than the model has coefficients plus one, or when x is constant given the covariates."""
    from scipy.stats import permutation_test

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    reduced = np.column_stack([np.ones(len(y)), *(np.asarray(c, dtype=float) for c in covariates)])
    if len(y) < reduced.shape[1] + 2:
        return None
    x_rest, y_rest = _residualise(x, reduced), _residualise(y, reduced)
    if np.linalg.norm(x_rest) < 1e-12 * max(1.0, np.linalg.norm(x)):
        return None
    slope = float(x_rest @ y_rest / (x_rest @ x_rest))  # Frisch-Waugh-Lovell: x's coefficient in the full model
    intercept = float(y.mean() - slope * x.mean())
    if np.linalg.norm(y_rest) < 1e-12:  # the covariates explain y exactly: nothing is left for x
        return SlopeTest(slope, intercept, 0.0, len(y), 1.0)

    def partial_r(residuals, axis=-1):
        rest = _residualise(np.moveaxis(residuals, axis, -1), reduced)
        return rest @ x_rest / (np.linalg.norm(rest, axis=-1) * np.linalg.norm(x_rest))

    result = permutation_test((y_rest,), partial_r, permutation_type="pairings", vectorized=True,
                              n_resamples=permutations, alternative="two-sided", rng=np.random.default_rng(seed))
    return SlopeTest(slope, intercept, float(result.statistic) ** 2, len(y), float(result.pvalue))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values (statsmodels' ``multipletests``): calling the tests whose adjusted
    value is <= α significant keeps the chance of any false positive among them at most α, whatever their
    dependence."""
    from statsmodels.stats.multitest import multipletests

    return [float(v) for v in multipletests(np.asarray(p_values, dtype=float), method="holm")[1]]


def subword_overlap(tokens: Sequence, english: Sequence) -> float | None:
    """The share of a language's subword tokens (counted with repetition) whose type also occurs among English's
    tokens: how much of its text shares vocabulary with English, a rival explanation of transfer to typology
    (Pires et al. 2019 on mBERT's overlap; K et al. 2020 argue it matters less than structure). None without
    tokens."""
    if not len(tokens):
        return None
    seen = set(english)
    return sum(token in seen for token in tokens) / len(tokens)

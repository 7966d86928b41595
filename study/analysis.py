"""The statistics of the report, on plain numbers (no MLflow, no plotting): family means, bootstrap confidence
intervals over test examples and seeds, and least-squares fits of transfer against typological distance.

A language's score is sum(numerators) / sum(denominators) of its per-example units (accuracy: (correct, 1); QA:
(score, 1); tagging F1: (2 * true positives, predicted + gold entities)), so resampling examples resamples the
metric exactly. A configuration run with several seeds is resampled in two stages: seeds, then examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from study.languages import group_of
from study.protocol import is_target, target_group_means

Units = Sequence[Sequence[float]]  # per example: (numerator, denominator)
MIN_EXAMPLES = 10  # fewer test examples in a language (or group) than this: no interval, "too little data"


def units_score(units: Units) -> float:
    """sum(numerators) / sum(denominators) of one language's per-example units; 0.0 when the denominators sum to 0."""
    array = np.asarray(units, dtype=float).reshape(-1, 2)
    return float(array[:, 0].sum() / array[:, 1].sum()) if array[:, 1].sum() else 0.0


def _bootstrap_language(units: Units, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws,) scores of one language, examples resampled with replacement."""
    array = np.asarray(units, dtype=float).reshape(-1, 2)
    picks = rng.integers(0, len(array), size=(draws, len(array)))
    numerators, denominators = array[picks, 0].sum(1), array[picks, 1].sum(1)
    return np.divide(numerators, denominators, out=np.zeros(draws), where=denominators > 0)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95 % bootstrap interval (or none, with the reason in ``note``)."""

    estimate: float
    low: float | None  # None: too little data for an interval
    high: float | None
    note: str = ""

    @property
    def has_interval(self) -> bool:
        """False when there was too little data for an interval."""
        return self.low is not None


class Side:
    """One configuration's test results: per seed (run), per language, per-example units."""

    def __init__(self, runs: Sequence[Mapping[str, Units]]):
        self.runs = [dict(r) for r in runs if r]
        self.languages = sorted(set.intersection(*(set(r) for r in self.runs))) if self.runs else []

    def scores(self) -> dict[str, float]:
        """Per language: the mean over seeds of the language's score."""
        return {lang: float(np.mean([units_score(r[lang]) for r in self.runs])) for lang in self.languages}

    def group_draws(self, by: str, groups: Sequence[str], draws: int, rng) -> dict[str, np.ndarray]:
        """(draws,) bootstrap values of each group's mean: seeds resampled, then examples within each seed."""
        per_run = [{lang: _bootstrap_language(run[lang], draws, rng) for lang in self.languages} for run in self.runs]
        seeds = rng.integers(0, len(per_run), size=(draws, len(per_run)))  # which seeds each draw averages
        out = {}
        for group in groups:
            langs = [lang for lang in self.languages if is_target(lang) and group_of(lang, by) == group]
            if not langs:
                continue
            per_lang = np.stack([np.stack([per_run[s][lang] for s in range(len(per_run))]) for lang in langs])
            # per_lang: (languages, seeds, draws) -> pick each draw's resampled seeds, average seeds and languages
            picked = np.take_along_axis(per_lang, seeds.T[None, :, :], axis=1)
            out[group] = picked.mean(axis=(0, 1))
        return out

    def examples_in(self, by: str, group: str) -> int:
        """Test examples in the group's target languages, the fewest over seeds (0 with no runs)."""
        return min((sum(len(run[lang]) for lang in self.languages if is_target(lang) and group_of(lang, by) == group)
                    for run in self.runs), default=0)


def difference_by_group(a: Side, b: Side, by: str = "family", draws: int = 2000,
                        seed: int = 0) -> dict[str, Interval]:
    """a - b per group: the point estimate from the observed scores and a 95 % percentile bootstrap interval
    (a and b resampled independently: their test subsets and seeds need not be paired)."""
    rng = np.random.default_rng(seed)
    a_groups, b_groups = target_group_means(a.scores(), by), target_group_means(b.scores(), by)
    shared = sorted(set(a_groups) & set(b_groups))
    enough = [g for g in shared if min(a.examples_in(by, g), b.examples_in(by, g)) >= MIN_EXAMPLES]
    a_draws, b_draws = a.group_draws(by, enough, draws, rng), b.group_draws(by, enough, draws, rng)
    out = {}
    for group in shared:
        estimate = a_groups[group] - b_groups[group]
        if group not in enough:
            n = min(a.examples_in(by, group), b.examples_in(by, group))
            out[group] = Interval(estimate, None, None, f"too little data ({n} test examples)")
            continue
        diff = a_draws[group] - b_draws[group]
        low, high = np.percentile(diff, [2.5, 97.5])
        seeds = f"{len(a.runs)} vs {len(b.runs)} seeds"
        out[group] = Interval(estimate, float(low), float(high), seeds)
    return out


@dataclass(frozen=True)
class LineFit:
    """A least-squares line y = slope * x + intercept, its R² and the number of points ``n``."""

    slope: float
    intercept: float
    r2: float
    n: int


def fit_line(x: Sequence[float], y: Sequence[float]) -> LineFit | None:
    """Ordinary least squares y = slope * x + intercept; None with fewer than 3 points or constant x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - (residual ** 2).sum() / total if total > 0 else 0.0
    return LineFit(float(slope), float(intercept), float(r2), len(x))

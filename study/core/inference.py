"""Seed-level intervals of a contrast a − b between two configurations. The unit of replication is the training
seed (one run); each run contributes one value, its mean over the test items of a row's languages (the same items in
every run), so the item noise is a component of each run's value, inside the seed-level variance, and is never added
on top. The inference is about the expected difference over training seeds on this test set.

* Sides that share their seeds (every arm of one model runs the study's confirm seeds) are paired by seed: Student's
  (1908) t interval on the per-seed differences d_s = a_s − b_s, mean(d) ± t(n − 1) · s_d / √n, the paired t test
  (``scipy.stats.ttest_rel``).
* Sides whose seeds are not shared (two models) get Welch's (1947) interval on the run means,
  mean(a) − mean(b) ± t(ν) · √(s_a² / n_a + s_b² / n_b), with the Welch–Satterthwaite ν (Satterthwaite 1946;
  ``scipy.stats.ttest_ind(equal_var=False)``).

Both need ``MIN_RUNS`` runs a side. A seed-resampling percentile bootstrap is not used: resampling n seeds gives
(n − 1) / n of their variance and normal quantiles where 3 vs 3 seeds have about 4 degrees of freedom, so it
states differences between a configuration and itself far more often than 5 % (``study.report.calibration``).
With n paired seeds, no distribution-free test (sign test, sign-flip permutation) has a two-sided p below
2 / 2ⁿ, which is above 0.05 for n < ``MIN_DISTRIBUTION_FREE_PAIRS``; a paired row says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

LEVEL = 0.95  # every interval of the report
MIN_RUNS = 3  # fewer runs (seeds) on a side, or paired seeds, than this: no interval
MIN_DISTRIBUTION_FREE_PAIRS = 6  # 2 / 2**5 = 0.0625: below 6 pairs no sign or permutation test reaches 0.05
_ZERO = 1e-12  # a standard error at or below this (times the scale of the values) is zero: identical differences


class Interval(NamedTuple):
    """A t interval, element-wise over the leading axes of the inputs: the estimate, its bounds at the level asked,
    the two-sided p-value of 'no difference' and the degrees of freedom."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p: np.ndarray
    df: np.ndarray


def _t_interval(estimate, se, df, level: float, scale) -> Interval:
    """estimate ± t(df) quantile · se, with the two-sided p of estimate / se. A zero standard error (every seed gave
    the same difference) gives the zero-width interval at the estimate and p 1 at 0, else 0."""
    from scipy.stats import t

    zero = se <= _ZERO * np.maximum(1.0, scale)
    safe = np.where(zero, 1.0, se)
    half = np.where(zero, 0.0, t.ppf(0.5 + level / 2, df) * safe)
    p = np.where(zero, np.where(np.abs(estimate) <= _ZERO * np.maximum(1.0, scale), 1.0, 0.0),
                 2 * t.sf(np.abs(estimate) / safe, df))
    return Interval(estimate, estimate - half, estimate + half, p, df)


def paired_t(a, b, level: float = LEVEL) -> Interval:
    """The paired-by-seed t interval of a − b: ``a`` and ``b`` (..., n) hold the two sides' values of the same n
    seeds in the same order (Student 1908; what ``scipy.stats.ttest_rel`` computes); df = n − 1."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    differences = a - b
    n = differences.shape[-1]
    estimate = differences.mean(axis=-1)
    se = differences.std(axis=-1, ddof=1) / np.sqrt(n)
    scale = np.maximum(np.abs(a).max(axis=-1), np.abs(b).max(axis=-1))
    return _t_interval(estimate, se, np.full(np.shape(estimate), n - 1.0), level, scale)


def welch_t(a, b, level: float = LEVEL) -> Interval:
    """Welch's (1947) t interval of mean(a) − mean(b) for independent runs ``a`` (..., n_a) and ``b`` (..., n_b),
    with the Welch–Satterthwaite degrees of freedom (what ``scipy.stats.ttest_ind(equal_var=False)`` computes);
    with no variance on either side, df = n_a + n_b − 2 and the interval has zero width."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = a.shape[-1], b.shape[-1]
    va, vb = a.var(axis=-1, ddof=1) / na, b.var(axis=-1, ddof=1) / nb
    total = va + vb
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(total > 0, total ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)), na + nb - 2.0)
    scale = np.maximum(np.abs(a).max(axis=-1), np.abs(b).max(axis=-1))
    return _t_interval(a.mean(axis=-1) - b.mean(axis=-1), np.sqrt(total), df, level, scale)


@dataclass(frozen=True)
class SeedContrast:
    """One contrast a − b of run values: the estimate, its interval (None with ``note`` saying why), the two-sided
    p-value, the degrees of freedom, the method by name ("paired-by-seed t, df=2", "Welch t, df=3.8"; empty
    without an interval), the seeds paired (0 for Welch) and what a reader must know (``note``)."""

    estimate: float
    low: float | None
    high: float | None
    p: float | None
    df: float | None
    method: str
    paired: int
    note: str = ""


def paired_method(n: int) -> str:
    """The name of the paired-by-seed t interval on n seeds."""
    return f"paired-by-seed t, df={n - 1}"


def welch_method(df: float) -> str:
    """The name of Welch's t interval with df degrees of freedom."""
    return f"Welch t, df={df:.1f}"


def distribution_free_note(pairs: int) -> str:
    """For a paired row under ``MIN_DISTRIBUTION_FREE_PAIRS`` seeds: no distribution-free test reaches 0.05."""
    return (f"{pairs} paired seeds: no distribution-free (sign or permutation) test can reach 0.05 below "
            f"{MIN_DISTRIBUTION_FREE_PAIRS} (its smallest two-sided p is {2 / 2 ** pairs:.3g})")


def seed_contrast(a: Sequence[float], b: Sequence[float], a_seeds: Sequence | None = None,
                  b_seeds: Sequence | None = None, paired: bool = True, level: float = LEVEL) -> SeedContrast:
    """a − b of two sides' run values. ``paired`` (the sides ran the same seeds): runs are matched by seed value
    (``a_seeds``/``b_seeds``, one per run) and get ``paired_t`` over the seeds both sides ran, the estimate being
    the mean per-seed difference; sides without recorded (or with repeated) seeds fall back to Welch, and say so.
    Not ``paired`` (seeds not shared, e.g. two models): ``welch_t``. No interval under ``MIN_RUNS`` runs a side or
    paired seeds."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    overall = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    if min(len(a), len(b)) < MIN_RUNS:
        return SeedContrast(overall, None, None, None, None, "", 0,
                            f"{len(a)} vs {len(b)} run(s): no interval (seed variance needs {MIN_RUNS} runs per side)")
    known = (a_seeds is not None and b_seeds is not None and None not in list(a_seeds) + list(b_seeds)
             and len(set(a_seeds)) == len(a_seeds) == len(a) and len(set(b_seeds)) == len(b_seeds) == len(b))
    if paired and known:
        shared = sorted(set(a_seeds) & set(b_seeds))
        if len(shared) < MIN_RUNS:
            return SeedContrast(overall, None, None, None, None, "", len(shared),
                                f"{len(shared)} seed(s) shared by both sides: no paired interval (needs {MIN_RUNS})")
        a_by, b_by = dict(zip(a_seeds, a, strict=True)), dict(zip(b_seeds, b, strict=True))
        found = paired_t([a_by[s] for s in shared], [b_by[s] for s in shared], level)
        notes = [] if len(shared) == max(len(a), len(b)) else [f"paired on the {len(shared)} seeds both sides ran"]
        if len(shared) < MIN_DISTRIBUTION_FREE_PAIRS:
            notes.append(distribution_free_note(len(shared)))
        return SeedContrast(float(found.estimate), float(found.low), float(found.high), float(found.p),
                            float(found.df), paired_method(len(shared)), len(shared), "; ".join(notes))
    found = welch_t(a, b, level)
    note = "" if not paired else "seeds not recorded: runs not paired, Welch on the run means"
    return SeedContrast(float(found.estimate), float(found.low), float(found.high), float(found.p),
                        float(found.df), welch_method(float(found.df)), 0, note)

"""Simulated studies with a known truth, to measure what the report's intervals (``study.core.inference``) do:
their false-positive rate when two configurations are the same, their coverage, and their power.

The data model follows the real runs: every run scores the same test items (``LANGUAGES`` × ``ITEMS``), each item
with its own chance of being right, drawn once per simulated study and shared by every run — so two seeds agree on
about ``AGREEMENT`` of the items, as real seeds do (0.86–0.89) — and a run is right on item i with chance
p_i + δ · p_i (1 − p_i) / mean(p (1 − p)), where δ is the run's offset: its seed effect, plus the effect of its
side. The weight p (1 − p) (a shift on the logit scale, to first order) keeps the chance in [0, 1] for |δ| up to
about 0.075 and moves the language's expected score by exactly δ, so a seed s.d. of 2 points on the run's target
average is δ's s.d. of 0.02. Shared seeds (``shared``: the arms of one model) draw one seed effect per seed for
both sides plus a small per-side part (seed × arm), so that per-seed differences have s.d. about a quarter of
the per-side seed s.d. (0.23 in the real runs: 0.69 against 3.0 points); independent seeds (two models) draw every
run's seed effect on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LANGUAGES, ITEMS = 15, 700
FAMILIES = 5  # the simulated languages form this many families of equal size (exploratory rows)
ITEM_BETA = (0.2727, 0.1818)  # p ~ Beta: mean 0.6, E[p(1 - p)] = 0.075, so two runs agree on 1 - 2 * 0.075 = 0.85
AGREEMENT = 0.85
SEED_SD = 0.02  # s.d. of a run's target average over seeds: 2 points
ARM_SD = 0.0018  # the per-side part of a shared seed's effect (with item noise: per-seed differences s.d. ~0.46 pt)
MAX_OFFSET = 0.07  # offsets are clipped here (3.5 s.d.), where the weighted chance stays in [0, 1]


@dataclass(frozen=True)
class Simulated:
    """(reps, seeds, languages) per-run language scores of the two sides, the seeds being the same seeds on both
    sides when they are shared; ``agreement``: the share of items on which two runs of one side agreed."""

    a: np.ndarray
    b: np.ndarray
    agreement: float

    def group_means(self, families: int = FAMILIES) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{row: ((reps, seeds) run means of a, of b)}: ``all targets`` and one row per family of consecutive
        languages."""
        size = self.a.shape[-1] // families
        rows = {"all targets": (self.a.mean(axis=-1), self.b.mean(axis=-1))}
        for f in range(families):
            part = slice(f * size, (f + 1) * size)
            rows[f"family {f}"] = (self.a[..., part].mean(axis=-1), self.b[..., part].mean(axis=-1))
        return rows


def simulate(rng: np.random.Generator, reps: int, seeds: int, shared: bool, effect: float = 0.0,
             languages: int = LANGUAGES, items: int = ITEMS, seed_sd: float = SEED_SD, arm_sd: float = ARM_SD
             ) -> Simulated:
    """``reps`` simulated studies of two sides with ``seeds`` runs each (module docstring); side a is better by
    ``effect`` (a fraction: 0.02 is 2 points) on every language."""
    if shared:
        common = rng.normal(0.0, np.sqrt(seed_sd ** 2 - arm_sd ** 2), (reps, 1, seeds))
        offsets = common + rng.normal(0.0, arm_sd, (reps, 2, seeds))
    else:
        offsets = rng.normal(0.0, seed_sd, (reps, 2, seeds))
    offsets = np.clip(offsets, -MAX_OFFSET, MAX_OFFSET)
    offsets[:, 0] += effect
    scores = np.empty((reps, 2, seeds, languages))
    agree = []
    for lang in range(languages):
        p = rng.beta(*ITEM_BETA, size=(reps, 1, 1, items))
        weight = p * (1 - p) / (p * (1 - p)).mean(axis=-1, keepdims=True)
        chance = np.clip(p + offsets[..., None] * weight, 0.0, 1.0)
        right = rng.random(chance.shape, dtype=np.float32) < chance
        scores[..., lang] = right.mean(axis=-1)
        agree.append(float((right[:, 1, 0] == right[:, 1, 1]).mean()) if seeds > 1 else float("nan"))
    return Simulated(scores[:, 0], scores[:, 1], float(np.mean(agree)))


def rates(low: np.ndarray, high: np.ndarray, truth: float = 0.0) -> tuple[float, float]:
    """(share of intervals excluding 0, share covering ``truth``) over the replicates."""
    return float(np.mean((low > 0) | (high < 0))), float(np.mean((low <= truth) & (truth <= high)))

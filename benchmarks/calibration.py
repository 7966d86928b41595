"""Calibration of the report's intervals on simulated studies (``study.report.calibration``: 15 target languages x
700 items whose difficulty every run shares, item agreement ~0.85 between seeds, seed s.d. 2 points of a run's
target average), at 3 and 5 seeds a side, for shared seeds (arms of one model: the report pairs by seed) and
independent seeds (two models: Welch).

Printed per scenario and interval: the false-positive rate of the all-targets row when the two sides are the same
configuration (nominal 5 %), the same pooled over the five exploratory family rows, the chance that any family row
differs after Holm's correction, the coverage of the true difference (0, then +2 points) and the power for a true
+2 points. The unpaired (Welch) interval on shared seeds is printed beside the paired one to show what pairing buys.
It asserts nothing (tests/report/test_report_calibration.py asserts the false-positive band).

    python benchmarks/calibration.py [--reps 1000] [--seed 0] [--arm-sd 0.0018]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from study.core.inference import paired_t, welch_t
from study.report.analysis import ALPHA
from study.report.calibration import ARM_SD, rates, simulate


def measure(reps: int, seeds: int, shared: bool, seed: int, arm_sd: float = ARM_SD) -> list[str]:
    """One scenario's lines: per interval the report could draw on it, its rates under the null and at +2 points."""
    null = simulate(np.random.default_rng(seed), reps, seeds, shared, arm_sd=arm_sd).group_means()
    effect = simulate(np.random.default_rng(seed + 1), reps, seeds, shared, effect=0.02, arm_sd=arm_sd).group_means()
    intervals = [("paired-by-seed t", paired_t), ("Welch t (unpaired)", welch_t)] if shared else \
        [("Welch t", welch_t)]
    a, b = null["all targets"]
    run_sd = 100 * np.sqrt(np.mean(np.concatenate([a.var(axis=1, ddof=1), b.var(axis=1, ddof=1)])))
    difference_sd = 100 * np.sqrt(np.mean((a - b).var(axis=1, ddof=1)))
    design = "shared" if shared else "independent"
    lines = [f"{seeds} seeds  {design:11s}  run target average: seed s.d. {run_sd:.2f} pt"
             + (f", per-seed difference s.d. {difference_sd:.2f} pt" if shared else "")]
    for name, interval in intervals:
        overall = interval(*null["all targets"])
        false_positive, coverage = rates(overall.low, overall.high)
        families = [interval(*v) for k, v in null.items() if k != "all targets"]
        pooled = np.mean([rates(f.low, f.high)[0] for f in families])
        p = np.stack([f.p for f in families], axis=1)
        any_family = np.mean(p.min(axis=1) * p.shape[1] <= ALPHA)  # Holm rejects anything iff min p <= alpha / m
        found = interval(*effect["all targets"])
        power, coverage_effect = rates(found.low, found.high, truth=0.02)
        lines.append(f"{seeds} seeds  {design:11s}  {name:20s}  "
                     f"FP {false_positive:6.1%}  family FP {pooled:6.1%}  any family (Holm) {any_family:6.1%}  "
                     f"coverage {coverage:6.1%} / {coverage_effect:6.1%}  power(+2 pt) {power:6.1%}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=1000, help="simulated studies per scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arm-sd", type=float, default=ARM_SD,
                        help="s.d. of the per-arm part of a shared seed's effect (a fraction; power depends on it)")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"{args.reps} simulated studies per scenario; 95 % intervals; coverage of 0 (null) / of +2 points (effect)")
    for seeds in (3, 5):
        for shared in (True, False):
            for line in measure(args.reps, seeds, shared, args.seed + 10 * seeds + shared, args.arm_sd):
                print(line, flush=True)
    print(f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

"""Where a smoke study's time goes: study wall time vs the time trials spend in their workers, and the fixed
start-up cost of each trial's Ray Train worker group.

Runs a real smoke study (the same Tuner that ``study tune`` builds) with a timing callback and prints per trial:
start-up (from Tune starting the trial to the worker function beginning) and in-worker time; then the ratio study
wall time / summed in-worker time. Targets: ratio <= 1.3, start-up <= 8 s (2 cores).
It asserts nothing.

    python benchmarks/study_overhead.py                  # tiny model, 4 trials
    python benchmarks/study_overhead.py --model e5-small
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def timing_callback():
    """A Tune callback that keeps when each trial started, reported and completed (Ray imported only once
    ``init_ray`` has set its loopback settings: Ray reads them on its first import)."""
    from ray.tune import Callback

    class Timing(Callback):
        def __init__(self):
            self.started: dict[str, float] = {}
            self.last: dict[str, dict] = {}
            self.last_result_at: dict[str, float] = {}
            self.completed: dict[str, float] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started[trial.trial_id] = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.last[trial.trial_id] = result
            self.last_result_at[trial.trial_id] = time.time()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.completed[trial.trial_id] = time.time()

    return Timing()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--max-concurrent", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()

    from study.cli.tune import parse_args
    from study.train.ray_setup import Scaling, init_ray
    from study.tune.driver import build_tuner, concurrency
    from study.tune.settings import resolve
    from study.tune.trial import train_driver_fn

    storage = tempfile.mkdtemp(prefix="study-bench-")
    study_args = parse_args(["--model", args.model, "--trials", str(args.trials), "--storage", storage,
                             "--mlflow-uri", f"sqlite:///{storage}/mlflow.db", "--max-concurrent",
                             str(args.max_concurrent)])
    settings = resolve(study_args)
    init_ray()
    import ray
    import ray.tune

    max_concurrent, threads = concurrency(1, 0, args.max_concurrent)
    timing = timing_callback()
    trainable = ray.tune.with_resources(train_driver_fn, {"CPU": 0.1})
    tuner_started = time.perf_counter()
    build_tuner(settings, Scaling(1, 0, 0.5, threads), max_concurrent, timing, trainable).fit()
    study_seconds = time.perf_counter() - tuner_started
    ray.shutdown()

    rows = []
    for trial_id, result in timing.last.items():
        startup = result["time/worker_start_unix"] - timing.started[trial_id]
        teardown = timing.completed.get(trial_id, float("nan")) - timing.last_result_at[trial_id]
        rows.append((trial_id, startup, result["time/worker_seconds"], teardown))
    print(f"model {args.model}, {len(rows)} trials, {max_concurrent} concurrent, smoke preset")
    print(f"{'trial':<12}{'start-up s':>12}{'in-worker s':>13}{'last report -> trial done s':>29}")
    for trial_id, startup, worker, teardown in rows:
        print(f"{trial_id:<12}{startup:>12.1f}{worker:>13.1f}{teardown:>29.1f}")
    in_worker = sum(r[2] for r in rows)
    print(f"study wall time (Tuner.fit):        {study_seconds:8.1f} s")
    print(f"summed in-worker time:              {in_worker:8.1f} s")
    print(f"ratio wall / in-worker:             {study_seconds / in_worker:8.2f}  (goal <= 1.3 sequential)")
    print(f"median per-trial start-up:          {statistics.median(r[1] for r in rows):8.1f} s  (goal <= 8 s)")
    print(f"process total incl. Ray start:      {time.perf_counter() - started:8.1f} s")


if __name__ == "__main__":
    main()

"""What the intermediate stage costs inside a study: stage time relative to the VME fine-tuning of the same trial,
and how often trials reuse a cached stage.

Runs a smoke study with the modality searched (a fresh stage cache, so hits come only from trials sharing a stage)
and reads the trials' MLflow runs. Prints per trial: modality, stage seconds (0 on a cache hit), fine-tuning
seconds in the worker, their ratio; then the cache hit rate. Asserts nothing.

    python benchmarks/intermediate_cost.py                    # tiny, 6 trials
    python benchmarks/intermediate_cost.py --model e5-small --trials 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from study.core.protocol import DEFAULT_MODALITY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="intermediate-bench-")
    uri = f"sqlite:///{work}/mlflow.db"
    env = {**os.environ, "STUDY_CACHE_DIR": f"{work}/cache"}  # cold stage cache (models are rebuilt: slower start)
    subprocess.run([sys.executable, "-m", "study.tune", "--model", args.model, "--trials", str(args.trials),
                    "--storage", f"{work}/runs", "--mlflow-uri", uri, "--experiment", "bench",
                    "--max-concurrent", "1"], check=True, env=env, stdout=subprocess.DEVNULL)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench").experiment_id
    rows, hits, stages = [], 0, 0
    for run in client.search_runs([experiment], "tags.run_kind = 'trial'", order_by=["start_time ASC"]):
        modality = run.data.params.get("modality", DEFAULT_MODALITY)
        finetune = run.data.metrics.get("time/worker_seconds", float("nan"))
        stage_seconds = 0.0
        if modality != DEFAULT_MODALITY:
            stages += 1
            hit = run.data.params["intermediate.cache_hit"] == "True"
            hits += hit
            meta = json.loads(Path(client.download_artifacts(run.info.run_id, "stage.json", work)).read_text())
            stage_seconds = 0.0 if hit else meta["seconds"]
        rows.append((run.data.tags["trial_id"], modality, stage_seconds, finetune))
    print(f"model {args.model}, {len(rows)} trials (smoke preset), cold stage cache")
    print(f"{'trial':<10}{'modality':<12}{'stage s':>9}{'fine-tune s':>13}{'stage/fine-tune':>17}")
    for trial, modality, stage_seconds, finetune in rows:
        print(f"{trial:<10}{modality:<12}{stage_seconds:>9.1f}{finetune:>13.1f}{stage_seconds / finetune:>17.2f}")
    if stages:
        print(f"stage cache hits: {hits}/{stages} trials with a stage ({hits / stages:.0%})")


if __name__ == "__main__":
    main()

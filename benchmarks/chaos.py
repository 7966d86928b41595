"""Chaos: SIGKILL a smoke study's driver (and every process it started) at K moments chosen at random across the
study, each followed by ``--resume``, then check MLflow: exactly the study's search trials and confirm runs, none
duplicated, none lost, each complete (FINISHED, its English-dev history, its per-language table).

    python benchmarks/chaos.py --kills 5 --seed 0          # prints: kills survived / runs lost / duplicates

The moments are of three kinds, each at least once when K >= 3 and the rest drawn at random (seeded): ``trial`` (a
run RUNNING past its first report, with a checkpoint registered), ``write`` (the driver inside an MLflow write,
held open by the fault hooks), ``confirm`` (a confirm run RUNNING). ``--json FILE`` writes the figures for tests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("trial", "write", "confirm")
TRIALS, SEEDS, ARMS = 3, 2, ("plain", "vme-tuned")  # 3 search trials (vme-tuned), 2 confirm seeds per arm
BASE_SEED = 7  # the tiny space's preset seed (TrainConfig's default): confirm seeds are 8 and 9


def study_command(workdir: Path, resume: bool) -> list[str]:
    faults = {"step_delay_s": 1.0, "write_marker": str(workdir / "writing"), "write_delay_s": 0.3}
    return [sys.executable, "-m", "study.tune", "--model", "tiny", "--arms", ",".join(ARMS), "--trials", str(TRIALS),
            "--seeds", str(SEEDS), "--max-concurrent", "1", "--storage", str(workdir / "runs"),
            "--mlflow-uri", f"sqlite:///{workdir / 'mlflow.db'}", "--experiment", "chaos", "--name", "chaos-study",
            "--inject-faults", json.dumps(faults), *(["--resume"] if resume else [])]


def runs(workdir: Path) -> list:
    """The study's trial runs (search and confirm) in MLflow; [] before its experiment exists or while the store is
    busy (SQLite locked by the study's own write)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    try:
        experiment = client.get_experiment_by_name("chaos")
        if experiment is None:
            return []
        return [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
                if r.data.tags.get("run_kind") == "trial"]
    except MlflowException:
        return []


def checkpoints(workdir: Path, trial_id: str) -> int:
    """Checkpoints Ray Train registered for a trial (its controller's snapshot in the trial's storage)."""
    for path in (workdir / "runs").glob(f"*-trial-{trial_id}/checkpoint_manager_snapshot.json"):
        try:
            return len(json.loads(path.read_text())["checkpoint_results"])
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def moment_reached(kind: str, workdir: Path) -> str | None:
    """The run id (or "write") the kill would interrupt now, when the moment of ``kind`` has come; else None."""
    if kind == "write":
        return "write" if (workdir / "writing").exists() else None
    for run in runs(workdir):
        if run.info.status != "RUNNING" or "dev_en/accuracy" not in run.data.metrics:
            continue
        if kind == "confirm" and run.data.tags.get("phase") != "confirm":
            continue
        if checkpoints(workdir, run.data.tags.get("trial_id", "")):
            return run.info.run_id
    return None


def chaos(kills: int, seed: int, workdir: Path, timeout_s: float = 900) -> dict:
    """Run the study with ``kills`` SIGKILLs and resumes; returns the figures (see the module docstring)."""
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").search_experiments()  # the store's tables, made once, here
    rng = random.Random(seed)
    plan = list(KINDS[:kills]) + [rng.choice(KINDS) for _ in range(max(0, kills - len(KINDS)))]
    rng.shuffle(plan)
    started, landed, victims, log = time.time(), [], [], workdir / "study.log"
    env = {**os.environ, "STUDY_CACHE_DIR": os.environ.get("STUDY_CACHE_DIR", str(Path.home() / ".cache" / "study"))}
    for number, kind in enumerate([*plan, None]):
        with open(log, "a") as out:
            process = subprocess.Popen(study_command(workdir, resume=number > 0), stdout=out, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)
        if kind is None:  # the last resume runs to the end
            if process.wait(timeout=timeout_s) != 0:
                raise RuntimeError(f"the final --resume failed; see {log}")
            break
        time.sleep(rng.uniform(0, 1.5))  # a random moment: not always the first instant a state holds
        deadline, victim = time.time() + timeout_s, None
        try:
            while process.poll() is None and time.time() < deadline and victim is None:
                victim = moment_reached(kind, workdir)
                time.sleep(0.05 if kind == "write" else 0.3)
        except BaseException:  # never leave a study running behind
            os.killpg(process.pid, signal.SIGKILL)
            raise
        if process.poll() is not None:  # the study ended first: no more moments to kill at
            if process.returncode != 0:
                raise RuntimeError(f"the study failed before kill {number + 1} ({kind}); see {log}")
            break
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        landed.append(kind)
        victims.append(victim)
        print(f"[chaos] kill {len(landed)}: {kind} ({victim})", file=sys.stderr, flush=True)
    return verify(workdir, landed, victims, time.time() - started)


def verify(workdir: Path, landed: list[str], victims: list, seconds: float) -> dict:
    """The figures: kills survived, runs lost (expected runs missing or incomplete), duplicates."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    found = runs(workdir)
    search = [r for r in found if r.data.tags.get("phase") == "search"]
    confirm = [r for r in found if r.data.tags.get("phase") == "confirm"]
    expected_confirm = {(arm, str(BASE_SEED + i)) for arm in ARMS for i in range(1, SEEDS + 1)}
    search_keys = [r.data.tags["trial_id"] for r in search]
    confirm_keys = [(r.data.tags["arm"], r.data.params["seed"]) for r in confirm]
    # a run twice, a search trial beyond the study's number, a confirm run the study never asked for
    duplicates = (len(search_keys) - len(set(search_keys)) + max(0, len(set(search_keys)) - TRIALS)
                  + len(confirm_keys) - len(set(confirm_keys)) + len(set(confirm_keys) - expected_confirm))

    def complete(run) -> bool:
        return bool(run.info.status == "FINISHED" and client.get_metric_history(run.info.run_id, "dev_en/accuracy")
                    and "per_language.csv" in {a.path for a in client.list_artifacts(run.info.run_id)})

    lost = (max(0, TRIALS - len({k for k, r in zip(search_keys, search, strict=True) if complete(r)}))
            + len(expected_confirm - {k for k, r in zip(confirm_keys, confirm, strict=True) if complete(r)}))
    resumed = [max((m.value for m in client.get_metric_history(v, "train/resumed_from_step")), default=0)
               for kind, v in zip(landed, victims, strict=True) if kind in ("trial", "confirm")]
    return {"kills": len(landed), "kinds": landed, "runs_expected": TRIALS + len(expected_confirm),
            "runs_found": len(found), "runs_lost": lost, "duplicates": duplicates,
            "victims_resumed_from_step": resumed, "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs of the driver (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the moments (default 0)")
    parser.add_argument("--workdir", type=Path, help="where the study runs (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        figures = chaos(args.kills, args.seed, workdir)
    print(f"kills survived: {figures['kills']} of {args.kills} ({', '.join(figures['kinds'])}); runs lost: "
          f"{figures['runs_lost']} of {figures['runs_expected']}; duplicates: {figures['duplicates']}; "
          f"{figures['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures))
    return 0 if figures["runs_lost"] == 0 and figures["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

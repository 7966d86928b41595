"""Chaos: stop a smoke study K times at moments chosen at random across it — SIGKILL of the driver and everything it
started, SIGINT to its process group (Ctrl+C in a terminal), SIGTERM to the driver or to its process group — each
followed by ``--resume``, on local or s3:// storage; then check MLflow: exactly the study's search trials and confirm
runs, none duplicated, none lost, each complete (FINISHED, its English-dev history, its per-language table), and none
FINISHED short of its last step.

    python benchmarks/chaos.py --kills 5 --seed 0                  # local storage, signals mixed
    python benchmarks/chaos.py --kills 5 --seed 0 --storage s3     # s3:// on moto's S3 server on 127.0.0.1

It prints ``kills survived / runs lost / runs duplicated / runs wrongly FINISHED``. A SIGINT or SIGTERM is survived
when the study ends by itself with exit status 128 + the signal, its parent run KILLED and no run left RUNNING or
FINISHED short of its last step; a SIGKILL when the next ``--resume`` goes on. The moments are of four kinds, each at
least once when K >= 4 and the rest drawn at random (seeded): ``trial`` (a run RUNNING past its first report, with a
checkpoint registered), ``write`` (the driver inside an MLflow write, held open by the fault hooks), ``confirm`` (a
confirm run RUNNING), ``any`` (a random time after the start: Ray starting, the reference lines, between phases).
The signals cycle through SIGKILL, SIGINT and SIGTERM from a seeded shuffle. ``--json FILE`` writes the figures.
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

KINDS = ("trial", "write", "confirm", "any")
SIGNALS = ("SIGKILL", "SIGINT", "SIGTERM")
TRIALS, SEEDS, ARMS = 3, 2, ("plain", "vme-tuned")  # 3 search trials (vme-tuned), 2 confirm seeds per arm
BASE_SEED = 7  # the tiny space's preset seed (TrainConfig's default): confirm seeds are 8 and 9
STUDY = "chaos-study"
STOP_S = 300  # a signalled study must have ended by itself within this


def study_command(workdir: Path, storage: str, resume: bool) -> list[str]:
    faults = {"step_delay_s": 1.0, "write_marker": str(workdir / "writing"), "write_delay_s": 0.3}
    return [sys.executable, "-m", "study.tune", "--model", "tiny", "--arms", ",".join(ARMS), "--trials", str(TRIALS),
            "--seeds", str(SEEDS), "--max-concurrent", "1", "--storage", storage,
            "--mlflow-uri", f"sqlite:///{workdir / 'mlflow.db'}", "--experiment", "chaos", "--name", STUDY,
            "--inject-faults", json.dumps(faults), *(["--resume"] if resume else [])]


def runs(workdir: Path, kind: str = "trial") -> list:
    """The study's trial runs (search and confirm; ``kind`` "study": its parent run) in MLflow; [] before its
    experiment exists or while the store is busy (SQLite locked by the study's own write)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    try:
        experiment = client.get_experiment_by_name("chaos")
        if experiment is None:
            return []
        return [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
                if r.data.tags.get("run_kind") == kind]
    except MlflowException:
        return []


def checkpoints(storage: str, trial_id: str) -> int:
    """Checkpoints Ray Train registered for a trial (its controller's snapshot in the trial's storage, read through
    pyarrow: local or s3://)."""
    from study.track.outbox import get, storage_join

    try:
        data = get(storage_join(storage, f"{STUDY}-trial-{trial_id}"), "checkpoint_manager_snapshot.json")
        return len(json.loads(data)["checkpoint_results"]) if data else 0
    except (OSError, ValueError, KeyError):
        return 0  # being written


def moment_reached(kind: str, workdir: Path, storage: str, due: float) -> str | None:
    """The run id (or "write", "any") the signal would interrupt now, when the moment of ``kind`` has come; else
    None (``due``: the time an ``any`` moment is due)."""
    if kind == "any":
        return "any" if time.time() >= due else None
    if kind == "write":
        return "write" if (workdir / "writing").exists() else None
    for run in runs(workdir):
        if run.info.status != "RUNNING" or "dev_en/accuracy" not in run.data.metrics:
            continue
        if kind == "confirm" and run.data.tags.get("phase") != "confirm":
            continue
        if checkpoints(storage, run.data.tags.get("trial_id", "")):
            return run.info.run_id
    return None


def short_of_last_step(run) -> bool:
    """A run FINISHED before its planned last step: wrong for a confirm run (no ASHA there) and for a run a signal
    caught RUNNING (``after_signal``)."""
    step, total = run.data.metrics.get("step"), run.data.metrics.get("train/total_steps")
    return run.info.status == "FINISHED" and step is not None and total is not None and step < total


def send(process, name: str, rng: random.Random) -> str:
    """Send the signal; SIGTERM goes to the driver or to its whole process group, drawn at random."""
    number = getattr(signal, name)
    if name == "SIGTERM" and rng.random() < 0.5:
        os.kill(process.pid, number)
        return "SIGTERM to the driver"
    os.killpg(process.pid, number)
    return f"{name} to the group"


def after_signal(process, name: str, caught: set[str], workdir: Path) -> tuple[bool, int]:
    """(survived, runs wrongly FINISHED) after a signal: a SIGKILL is survived by the next resume; a SIGINT or SIGTERM
    when the study ended by itself within ``STOP_S`` with status 128 + the signal, its parent KILLED, none of its
    runs RUNNING, and none of the runs it caught RUNNING FINISHED short of their last step."""
    try:
        code = process.wait(timeout=STOP_S if name != "SIGKILL" else 60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return False, 0
    found = runs(workdir)
    wrong = sum(short_of_last_step(r) for r in found if r.info.run_id in caught)
    if name == "SIGKILL":
        return True, wrong
    parents = runs(workdir, "study")
    clean = (code == 128 + getattr(signal, name) and all(p.info.status == "KILLED" for p in parents)
             and not any(r.info.status == "RUNNING" for r in found))
    return clean, wrong + sum(p.info.status == "FINISHED" for p in parents)


def chaos(kills: int, seed: int, workdir: Path, storage: str, env: dict, signals: tuple[str, ...] = SIGNALS,
          timeout_s: float = 1800) -> dict:
    """Run the study with ``kills`` signals and resumes; returns the figures (see the module docstring)."""
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").search_experiments()  # the store's tables, made once, here
    rng = random.Random(seed)
    plan = list(KINDS[:kills]) + [rng.choice(KINDS) for _ in range(max(0, kills - len(KINDS)))]
    rng.shuffle(plan)
    signals = [signals[i % len(signals)] for i in range(kills)]
    rng.shuffle(signals)
    started, log = time.time(), workdir / "study.log"
    landed, victims, survived, wrongly_finished = [], [], 0, 0
    for number, (kind, name) in enumerate([*zip(plan, signals, strict=True), (None, None)]):
        (workdir / "writing").unlink(missing_ok=True)  # a driver killed inside a write leaves it
        with open(log, "a") as out:
            process = subprocess.Popen(study_command(workdir, storage, resume=number > 0), stdout=out,
                                       stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)
        if kind is None:  # the last resume runs to the end
            if process.wait(timeout=timeout_s) != 0:
                raise RuntimeError(f"the final --resume failed; see {log}")
            break
        time.sleep(rng.uniform(0, 1.5))  # a random moment: not always the first instant a state holds
        due, deadline, victim = time.time() + rng.uniform(0, 90), time.time() + timeout_s, None
        try:
            while process.poll() is None and time.time() < deadline and victim is None:
                victim = moment_reached(kind, workdir, storage, due)
                time.sleep(0.05 if kind == "write" else 0.3)
        except BaseException:  # never leave a study running behind
            os.killpg(process.pid, signal.SIGKILL)
            raise
        if process.poll() is not None:  # the study ended first: no more moments to stop at
            if process.returncode != 0:
                raise RuntimeError(f"the study failed before signal {number + 1} ({kind}); see {log}")
            break
        caught = {r.info.run_id for r in runs(workdir) if r.info.status == "RUNNING"}
        how = send(process, name, rng)
        ok, wrong = after_signal(process, name, caught, workdir)
        survived, wrongly_finished = survived + ok, wrongly_finished + wrong
        landed.append(f"{kind}/{name}")
        victims.append(victim)
        print(f"[chaos] signal {len(landed)}: {how} at a {kind} moment: "
              f"{'clean' if ok else 'NOT CLEAN'} (exit {process.returncode}), {wrong} wrongly FINISHED",
              file=sys.stderr, flush=True)
    return {**verify(workdir, victims), "kills": len(landed), "kinds": landed, "survived": survived,
            "wrongly_finished": wrongly_finished + sum(map(short_of_last_step, confirm_runs(runs(workdir)))),
            "seconds": round(time.time() - started, 1)}


def confirm_runs(found: list) -> list:
    return [r for r in found if r.data.tags.get("phase") == "confirm"]


def verify(workdir: Path, victims: list) -> dict:
    """Runs lost (expected runs missing or incomplete) and duplicated, at the end; the step each run a signal caught
    at a ``trial`` or ``confirm`` moment went on from."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    found = runs(workdir)
    search, confirm = [r for r in found if r.data.tags.get("phase") == "search"], confirm_runs(found)
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
               for v in victims if v not in (None, "write", "any")]
    return {"runs_expected": TRIALS + len(expected_confirm), "runs_found": len(found), "runs_lost": lost,
            "duplicates": duplicates, "victims_resumed_from_step": resumed}


def s3_storage():
    """moto's S3 server on a free 127.0.0.1 port with a bucket: (process, storage URI, its environment)."""
    import socket
    import urllib.request

    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "chaos",
           "AWS_SECRET_ACCESS_KEY": "chaos", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{env['AWS_ENDPOINT_URL']}/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    os.environ.update(env)  # this process reads the checkpoint snapshots through pyarrow too
    boto3.client("s3").create_bucket(Bucket="chaos")
    return server, "s3://chaos/runs", env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5, help="signals sent to the study (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the moments and signals (default 0)")
    parser.add_argument("--signals", default=",".join(SIGNALS),
                        help=f"the signals to cycle through (default {','.join(SIGNALS)})")
    parser.add_argument("--storage", choices=("local", "s3"), default="local",
                        help="where the study's Ray storage is: a local directory, or s3:// on moto's server")
    parser.add_argument("--workdir", type=Path, help="where the study runs (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    server = None
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            server, storage, env = s3_storage() if args.storage == "s3" else (None, str(workdir / "runs"), {})
            figures = chaos(args.kills, args.seed, workdir, storage, env, signals=tuple(args.signals.split(",")))
        finally:
            if server:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait()
    print(f"{args.storage} storage: kills survived: {figures['survived']} of {figures['kills']} "
          f"({', '.join(figures['kinds'])}); runs lost: {figures['runs_lost']} of {figures['runs_expected']}; "
          f"runs duplicated: {figures['duplicates']}; runs wrongly FINISHED: {figures['wrongly_finished']}; "
          f"{figures['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures))
    good = figures["survived"] == figures["kills"] and not (figures["runs_lost"] or figures["duplicates"]
                                                            or figures["wrongly_finished"])
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())

"""Cluster and reliability: cluster.yaml against Ray's own validator, services bound to 127.0.0.1 with Ray's token
auth on, a smoke study on a real local multi-node Ray cluster that loses a worker node mid-trial, and an MLflow
server that goes away during a study."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml
from helpers import (
    LOOPBACK,
    SERVER_START_S,
    free_port,
    listeners,
    start_mlflow_server,
    start_study,
    stop,
    study_runs,
    trials_past_first_report,
)

from study.train.ray_setup import NODE_ON_LOOPBACK

ROOT = Path(__file__).resolve().parents[2]
ON_LOOPBACK = {"node_ip_address": "127.0.0.1"}  # test clusters' nodes, like the study's own Ray
# A driver joining a loopback cluster: without it Ray swaps RAY_ADDRESS's 127.0.0.1 for the outward address
# (Ray's GitHub bug 59110)
LOOPBACK_DRIVER = {NODE_ON_LOOPBACK: "0"}


def _cluster_config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(re.match(r"([\w\-]+)(?:\[[^\]]*\])?==([\w.]+)", d).groups() for d in project["dependencies"]
                if "==" in d)
    return {**pins, "requires-python": project["requires-python"]}


def test_cluster_yaml_passes_the_pinned_ray_autoscaler_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_cluster_config()))  # raises on any schema error


def test_cluster_installs_this_project_at_the_pinned_versions():
    config, pins = _cluster_config(), _pins()
    for image in (config["docker"]["head_image"], config["docker"]["worker_image"]):
        ray_version, python = re.match(r"rayproject/ray:([\d.]+)-py3(\d+)-", image).groups()
        assert ray_version == pins["ray"], image  # the image's Ray is the Ray the project pins
        assert int(python) >= int(pins["requires-python"].split(".")[1]), image
    mounted = {target: source for target, source in config["file_mounts"].items()}
    installs = [c for c in config["setup_commands"] if "pip install" in c]
    assert len(installs) == 1 and re.search(r'pip install .*-e "?(/home/ray/study)"?', installs[0])
    assert mounted["/home/ray/study"] == "."  # this checkout, so the pins of this pyproject.toml


def _exports(config) -> dict[str, str]:
    text = "\n".join(config["setup_commands"])
    return dict(re.findall(r"export (\w+)=(\S+?)'?(?:\s|$)", text))


def test_cluster_storage_is_shared_when_workers_exist_and_has_no_credentials():
    config = _cluster_config()
    workers = sum(t.get("max_workers", 0) for t in config["available_node_types"].values())
    assert workers > 0
    exports = _exports(config)
    assert exports["STUDY_STORAGE"].startswith("s3://")  # Ray checkpoints: every node sees them
    shared = "/mnt/shared"
    assert any(f"-v {shared}:{shared}" in option for option in config["docker"]["run_options"])
    assert any(shared in command and "mount" in command for command in config["initialization_commands"])
    for name in ("STUDY_CACHE_DIR", "HF_HOME", "RAY_AUTH_TOKEN_PATH"):
        assert exports[name].startswith(shared + "/"), name
    head = "\n".join(config["head_start_ray_commands"])
    assert "--artifacts-destination s3://" in head and f"sqlite:///{shared}/" in head
    text = (ROOT / "cluster.yaml").read_text().lower()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "ssh_private_key", "password", "token=",
                   "mlflow_tracking_token"):
        assert secret not in text, secret


def test_cluster_services_bind_loopback_and_ray_uses_token_auth():
    config = _cluster_config()
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "study serve-mlflow --host 127.0.0.1" in head
    for command in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command, command
    assert _exports(config)["RAY_AUTH_MODE"] == "token"
    assert config["available_node_types"][config["head_node_type"]]["resources"]["study_driver"] > 0


@pytest.mark.e2e
def test_mlflow_server_listens_on_loopback_only_and_refuses_a_public_address_unless_asked(tmp_path):
    """Every socket of the server's process tree (the server and any worker it starts) is on loopback."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "study", "serve-mlflow", "--port", str(port),
                               "--backend-store-uri",
                               f"sqlite:///{tmp_path}/mlflow.db", "--artifacts-destination", str(tmp_path / "a")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + SERVER_START_S  # a state, not a time: up to 5 minutes on a loaded machine
        while time.time() < deadline:
            seen = listeners(server.pid)
            if port in {s.port for s in seen}:
                break
            time.sleep(0.5)
        assert port in {s.port for s in seen}, "the server never listened on its port"
        assert all(s.ip in LOOPBACK for s in seen), "; ".join(map(str, seen))
    finally:
        stop(server)
    public = subprocess.run([sys.executable, "-m", "study", "serve-mlflow", "--host", "0.0.0.0", "--port", str(port)],
                            capture_output=True, text=True, timeout=60)
    assert public.returncode == 2 and "--allow-remote" in public.stderr


@pytest.mark.e2e
def test_local_ray_with_its_dashboard_listens_on_loopback_only_and_token_auth_is_on():
    """init_ray on its own (the variable it sets is not in the environment): every socket of the Ray instance's
    process tree, dashboard included, is on loopback, and Ray's token authentication is on."""
    probe = """
from study.train.ray_setup import init_ray
init_ray(num_cpus=1, dashboard=True)
import json, time, urllib.request
from ray._private.worker import get_dashboard_url
from ray._raylet import AuthenticationMode, get_authentication_mode
print(json.dumps({"dashboard": get_dashboard_url(), "token": get_authentication_mode() == AuthenticationMode.TOKEN}))
for _ in range(60):
    try:
        urllib.request.urlopen("http://" + get_dashboard_url(), timeout=1); break
    except OSError:
        time.sleep(0.5)
print("ready", flush=True)
input()
import ray
ray.shutdown()
"""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", NODE_ON_LOOPBACK)}
    process = subprocess.Popen([sys.executable, "-c", probe], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    try:
        facts = json.loads(process.stdout.readline())
        assert process.stdout.readline().strip() == "ready"
        host, port = facts["dashboard"].rsplit(":", 1)
        seen = listeners(process.pid)
        assert host == "127.0.0.1" and int(port) in {s.port for s in seen}
        assert {"gcs_server", "raylet"} <= {s.process for s in seen}
        assert all(s.ip in LOOPBACK for s in seen), "; ".join(map(str, seen))
        assert facts["token"] is True  # Ray's token authentication is on for the cluster the project starts
    finally:
        process.communicate("\n", timeout=60)


@pytest.mark.e2e
def test_local_ray_started_after_ray_was_imported_is_refused():
    """Ray reads the loopback setting when first imported: init_ray after ``import ray`` would bring a node up on
    the machine's outward address (or none, under token authentication), so it refuses before any node starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.connect(("192.0.2.1", 9))  # no packet is sent: only the route, as Ray finds its node address
            outward = udp.getsockname()[0]
        except OSError:
            outward = "127.0.0.1"
    if outward.startswith("127."):
        pytest.skip("this machine has no outward address for Ray to pick")
    probe = "import ray; from study.train.ray_setup import init_ray; init_ray(num_cpus=1)"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", NODE_ON_LOOPBACK)}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    assert f"not on loopback: Ray reads {NODE_ON_LOOPBACK} when it is first imported" in result.stderr


def _trial_nodes(uri: str, experiment: str) -> dict[str, list[str]]:
    """Trial run -> the Ray nodes it trained on, in order (the study tags every trial run with them)."""
    _, _, trials = study_runs(uri, experiment, phase="search")  # the two trials trained at once (not the confirm run)
    return {r.info.run_id: r.data.tags["nodes"].split(",") for r in trials if r.data.tags.get("nodes")}


@pytest.mark.e2e
def test_multi_node_study_spreads_trials_and_recovers_from_a_lost_node(mlflow_server, tmp_path):
    """Two trials train at the same time on two worker nodes; the node of one that is past its first report (RUNNING,
    one report, its checkpoint registered by Ray Train) is killed, and that trial must resume from the checkpoint on
    the spare node. The test waits on those states, not on time."""
    from ray.cluster_utils import Cluster

    space = yaml.safe_load((ROOT / "search_spaces" / "tiny.yaml").read_text())
    space["params"]["modality"]["choices"] = ["none"]  # no intermediate stage: both trials start training at once
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))  # order: conditions come first
    # node_ip_address: Cluster's nodes take it as given (ray.init would swap a loopback one for the outward address)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"study_driver": 4},
                                                             "include_dashboard": False, **ON_LOOPBACK})
    workers = [cluster.add_node(num_cpus=1, **ON_LOOPBACK) for _ in range(3)]  # each holds one 1-CPU Train worker
    cluster.wait_for_nodes()
    storage = tmp_path / "shared"
    try:
        process = start_study("--arms", "vme-tuned", "--trials", "2", "--seeds", "1", "--max-concurrent", "2",
                              "--cpus-per-worker", "1", "--storage",
                              f"file://{storage}", "--mlflow-uri", mlflow_server, "--experiment", "multinode",
                              "--search-space", str(tmp_path / "space.yaml"),
                              # a 2 s step delay keeps most of a trial ahead of it when the states above hold
                              "--inject-faults", '{"step_delay_s": 2}', env={"RAY_ADDRESS": cluster.address,
                                                                              **LOOPBACK_DRIVER})
        deadline, killed, victim = time.time() + 600, None, None
        while time.time() < deadline and killed is None and process.poll() is None:
            running = trials_past_first_report(mlflow_server, "multinode", storage)  # each holds a worker node now
            early = {r.info.run_id for r in trials_past_first_report(mlflow_server, "multinode", storage, reports=1)}
            victims = [r for r in running if r.info.run_id in early and r.data.tags.get("nodes")]
            if len(running) == 2 and victims:  # both training at once; one has a registered checkpoint, far to go
                victim = victims[0].info.run_id
                killed = next(n for n in workers if n.node_id == victims[0].data.tags["nodes"])
                cluster.remove_node(killed, allow_graceful=False)  # its raylet and every process on it die
            time.sleep(0.5)
        if killed is None:
            pytest.fail("the two trials were never found training at the same time past a first report; the study "
                        f"said: {process.communicate(timeout=900)[0][-3000:] if process.poll() is not None else '…'}")
        output, _ = process.communicate(timeout=900)
    finally:
        cluster.shutdown()
    assert process.returncode == 0, output[-3000:]
    nodes = _trial_nodes(mlflow_server, "multinode")
    first_nodes = {reports[0] for reports in nodes.values()}
    assert len(first_nodes) == 2 and killed.node_id in first_nodes  # the two trials ran on two worker nodes
    assert nodes[victim][0] == killed.node_id and nodes[victim][-1] != killed.node_id  # finished on another node
    _, parents, trials = study_runs(mlflow_server, "multinode")  # 2 search trials, 1 confirm run
    assert len(parents) == 1 and len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    for run in trials:  # resumed from its last checkpoint: steps continue, none repeats, none is missing
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "dev_en/accuracy")]
        assert steps == sorted(set(steps)) and steps[-1] == 6, steps
    resumed_from = [m.value for m in client.get_metric_history(victim, "train/resumed_from_step")]
    assert max(resumed_from) >= 2, resumed_from  # restored the registered checkpoint, not a fresh start
    assert list(storage.glob("study-*-trial-*/checkpoint_*")), "checkpoints are in the shared storage"


@pytest.mark.e2e
def test_mlflow_outage_loses_nothing_and_resume_writes_the_rest(tmp_path):
    port, root = free_port(), tmp_path / "mlflow"
    root.mkdir()
    server, uri = start_mlflow_server(root, port)
    args = ("--arms", "vme-tuned", "--trials", "2", "--seeds", "1", "--max-concurrent", "1", "--storage",
            str(tmp_path / "runs"), "--mlflow-uri", uri, "--experiment", "outage", "--name", "outage-study")
    process = start_study(*args, "--inject-faults", '{"step_delay_s": 0.5}')
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not study_runs(uri, "outage")[2]:
            time.sleep(1)  # the first trial's run exists: the server goes away mid-study
        stop(server)
        output, _ = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 2, output[-3000:]
    assert "is not answering" in output and "run the same command with --resume" in output
    assert list((tmp_path / "runs" / "outage-study" / "mlflow-outbox").glob("pending.pkl"))
    server, uri = start_mlflow_server(root, port)  # the same store, back again
    try:
        resumed = start_study(*args, "--resume")
        output, _ = resumed.communicate(timeout=900)
        assert resumed.returncode == 0, output[-3000:]
        client, parents, trials = study_runs(uri, "outage")
        assert len(parents) == 1 and len(trials) == 3 and len({r.data.tags["trial_id"] for r in trials}) == 3
        for run in trials:
            assert run.info.status == "FINISHED"
            assert client.get_metric_history(run.info.run_id, "dev_en/accuracy")  # results written, not lost
            assert "per_language.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}
        assert not list((tmp_path / "runs" / "outage-study" / "mlflow-outbox").glob("pending.pkl"))
    finally:
        stop(server)


def test_outbox_round_trip_on_a_directory_and_a_uri(tmp_path):
    from study.track.outbox import outbox_location, outbox_take, put

    for storage in (str(tmp_path / "plain"), f"file://{tmp_path}/uri"):
        put(outbox_location(storage, "study-x", "trial-1"), "per_example.json", b'{"units": {}}')
        assert outbox_take(storage, "study-x", "trial-1") == {"per_example.json": b'{"units": {}}'}
        assert outbox_take(storage, "study-x", "trial-2") == {}  # nothing left: nothing to log


@pytest.mark.e2e
def test_local_study_ray_never_joins_another_cluster_on_the_machine():
    """Without $RAY_ADDRESS the study starts a Ray instance of its own, even when another process has a cluster
    running on this machine (Ray's default would join the one in /tmp/ray/ray_current_cluster: seen when two test
    suites ran side by side, a study joined the other suite's test cluster and stopped)."""
    from ray.cluster_utils import Cluster

    other = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, **ON_LOOPBACK})
    other_address = other.address
    probe = ("from study.train.ray_setup import init_ray; init_ray(num_cpus=1); import ray; "
             "print(ray.get_runtime_context().gcs_address); ray.shutdown()")
    try:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    finally:
        other.shutdown()
    assert result.returncode == 0, result.stderr[-2000:]
    own = result.stdout.strip().splitlines()[-1]
    assert own and own != other_address, (own, other_address)

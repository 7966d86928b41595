"""Ray plumbing shared by fine-tuning, the intermediate stage and the dual encoder: how a run is spread
(``Scaling``), one ``TorchTrainer`` factory whose workers set their torch threads from the scaling, and starting or
checking the Ray cluster."""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from study.core.errors import StudyError, last_error_line

DRIVER_RESOURCE = "study_driver"  # head-only on a cluster: trial drivers never land on (spot) GPU workers
# passed on to workers when set; STUDY_HUB_REVISIONS: the hub commits a study pinned (study.data.revisions)
FORWARDED_ENV = ("STUDY_CACHE_DIR", "HF_HOME", "HF_HUB_OFFLINE", "STUDY_HUB_REVISIONS")
# On Linux Ray replaces a loopback node address (``ray.init(_node_ip_address="127.0.0.1")``, ``ray start
# --node-ip-address``) with the machine's outward address (``resolve_ip_for_localhost`` in ray/_private/services.py),
# and its gRPC servers bind the node address. With this variable at 0, Ray runs single-node as it does on macOS and
# Windows: node address 127.0.0.1, every server on loopback (``get_node_ip_address``, same file).
NODE_ON_LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# The environment of a local instance, inherited by all its processes: the node on loopback, and torch's Gloo and
# NCCL sockets of the Train workers on the loopback interface (Gloo otherwise listens on the address the host name
# resolves to, NCCL on the first outward interface). A study runs fractional-CPU trial drivers and workers, so it
# starts several worker processes per core by design: the raylet's startup concurrency (its "N PYTHON worker
# processes ... 4x the maximum expected startup concurrency" warning is pushed to the console at 4x of it) is set
# to 8 rather than the core count.
LOCAL_RAY_ENV = {NODE_ON_LOOPBACK: "0", "GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo",
                 "RAY_worker_maximum_startup_concurrency": "8"}


@dataclass(frozen=True)
class Scaling:
    """How a run is spread: worker count and, without GPUs, the CPU share each worker asks Ray for."""

    workers: int = 1
    gpus_per_worker: int = 0
    cpus_per_worker: float = 0.5
    threads: int = 0  # torch threads per worker (0: the machine's cores / workers)

    def __post_init__(self) -> None:
        """Checked on construction, before Ray starts: one line naming the flag."""
        for flag, value, least in (("--workers", self.workers, 1), ("--gpus-per-worker", self.gpus_per_worker, 0),
                                   ("threads per worker", self.threads, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise StudyError(f"{flag} {value} is invalid: it must be a whole number >= {least}")
        if not self.cpus_per_worker > 0:
            raise StudyError(f"--cpus-per-worker {self.cpus_per_worker} is invalid: it must be > 0")

    @classmethod
    def from_args(cls, args, threads: int = 0) -> Scaling:
        """The flags of ``add_scaling_flags``, checked."""
        return cls(args.workers, args.gpus_per_worker, args.cpus_per_worker, threads)

    def ray_config(self):
        """Ray Train's ``ScalingConfig``."""
        import ray.train

        resources = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            resources["GPU"] = self.gpus_per_worker
        return ray.train.ScalingConfig(num_workers=self.workers, use_gpu=self.gpus_per_worker > 0,
                                       resources_per_worker=resources)

    def worker_threads(self) -> int:
        """Torch threads per worker: ``threads``, or this machine's cores shared among the workers."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.workers)


def worker_env() -> dict:
    """Environment for workers: (when set here) the cache and hub variables, which every process of this machine
    reads."""
    # Train V2 patches print() into its logger, which shows every line twice and breaks libraries that capture
    # stdout (dill, under datasets, then dumps bytecode); plain prints go to the driver through Ray's log stream.
    env = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    env.update({k: v for k, v in os.environ.items() if k in FORWARDED_ENV})
    return env


class WorkerFn:
    """A Train worker function that first sets torch's thread count, which arrives with it (from the run's
    ``Scaling``) rather than through the environment."""

    def __init__(self, fn: Callable[[dict], None], threads: int):
        self.fn, self.threads = fn, threads
        functools.update_wrapper(self, fn)

    def __call__(self, config: dict) -> None:
        import torch

        torch.set_num_threads(max(1, self.threads))
        self.fn(config)


def fit_or_fail(fit: Callable[[], object], what: str):
    """``fit()``'s Ray Train Result; StudyError ``<what> failed: <the workers' last error line>`` when the run
    failed, whether Ray raised the workers' error or returned it in ``Result.error`` (the traceback stays in Ray's
    output)."""
    import ray.train

    try:
        result = fit()
    except ray.train.TrainingFailedError as err:
        raise StudyError(f"{what} failed: {last_error_line(str(err))}") from None
    if result.error:
        raise StudyError(f"{what} failed: {last_error_line(str(result.error))}")
    return result


def add_scaling_flags(parser, workers_help: str = "Ray Train workers (DDP ranks)") -> None:
    """--workers, --gpus-per-worker, --cpus-per-worker: the flags ``Scaling.from_args`` reads."""
    parser.add_argument("--workers", type=int, default=1, help=workers_help)
    parser.add_argument("--gpus-per-worker", type=int, default=0, help="GPUs per worker (0: CPU workers)")
    parser.add_argument("--cpus-per-worker", type=float, default=0.5, help="CPU share per worker without GPUs")


def torch_trainer(fn: Callable[[dict], None], loop_config: dict, scaling: Scaling, storage: str, name: str, *,
                  callbacks: Sequence = (), max_failures: int = 0, checkpoint_config=None, env: dict | None = None):
    """A Ray Train ``TorchTrainer`` running ``fn(loop_config)`` on every worker, its run ``name`` under ``storage``
    (a directory or a URI), restarted from its last checkpoint up to ``max_failures`` times when a worker or node is
    lost; an error that would come back on every attempt (``fail_fast``) ends it at once."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from study.train.fail_fast import FailFast

    return TorchTrainer(
        WorkerFn(fn, scaling.worker_threads()), train_loop_config=loop_config, scaling_config=scaling.ray_config(),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage, callbacks=[FailFast(), *callbacks],
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=checkpoint_config or ray.train.CheckpointConfig(),
            worker_runtime_env={"env_vars": {**worker_env(), **(env or {})}}))


def init_ray(num_cpus: int | None = None, dashboard: bool = False, log_to_driver: bool = True) -> None:
    """The cluster in $RAY_ADDRESS, or a local Ray instance whose servers all listen on loopback (its dashboard too,
    when asked for; torch's c10d store in Train workers cannot, see the README's security defaults), with Ray's
    token authentication as Ray sets it up (on by default for local clusters since Ray 2.59). ``log_to_driver``
    False keeps the workers' output in Ray's log files (``ray_logs_dir``) instead of this console. StudyError when
    the local instance came up on another address."""
    if not os.environ.get("RAY_ADDRESS"):
        _refuse_late_loopback_setting()
        os.environ.update(LOCAL_RAY_ENV)  # before the first ``import ray``: Ray reads it then
        # token authentication as Ray chooses it for a local instance, but said explicitly, so Ray does not print its
        # notice that it chose it on the study's console (RAY_AUTH_MODE=disabled, set by the user, still wins)
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=log_to_driver)
        return
    # address="local": a new instance of our own, never a cluster some other process started on this machine
    # (without it, Ray joins the one named in /tmp/ray/ray_current_cluster)
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), resources={DRIVER_RESOURCE: 1000},
             include_dashboard=dashboard, dashboard_host="127.0.0.1", log_to_driver=log_to_driver,
             configure_logging=False)
    node_ip = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(node_ip).is_loopback:
        ray.shutdown()
        raise StudyError(f"the local Ray instance came up on {node_ip}, not on loopback: Ray reads "
                         f"{NODE_ON_LOOPBACK} when it is first imported, and ray was imported before init_ray set "
                         f"it; export {NODE_ON_LOOPBACK}=0 or call init_ray before importing ray")


def _refuse_late_loopback_setting() -> None:
    """Ray reads the loopback setting (and its auth mode) when it is first imported: a local instance started after
    ``import ray`` without them would come up on the machine's outward address, or not at all. Refused before any
    process starts, unless the caller exported the setting before importing ray."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None or ray.is_initialized() or os.environ.get(NODE_ON_LOOPBACK) == LOCAL_RAY_ENV[NODE_ON_LOOPBACK]:
        return
    raise StudyError(f"a local Ray instance started now would come up on the machine's address, not on loopback: "
                     f"Ray reads {NODE_ON_LOOPBACK} when it is first imported, and ray was imported before init_ray "
                     f"set it; export {NODE_ON_LOOPBACK}=0 or call init_ray before importing ray")


def ray_logs_dir() -> str | None:
    """This node's Ray log directory (the session's ``logs``: every worker's stdout and stderr), or None when Ray
    does not say."""
    import ray

    try:
        return ray._private.worker._global_node.get_logs_dir_path()  # no public API names it (Ray 2.60)
    except AttributeError:
        return None


def local_ray_lost() -> bool:
    """Whether the local Ray instance this process started has lost its GCS server or raylet — a signal sent to the
    study's whole process group ends them (they block SIGINT, not SIGTERM) — so that nothing Ray does for the driver
    can finish any more. False for a cluster joined by address, and before Ray starts."""
    import sys

    ray = sys.modules.get("ray")
    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    processes = getattr(node, "all_processes", None) or {}  # no public API says it (Ray 2.60)
    return any(info.process.poll() is not None for kind in ("gcs_server", "raylet")
               for info in processes.get(kind, []) if getattr(info, "process", None) is not None)


def check_cluster(storage: str) -> None:
    """Fail fast on a cluster that cannot run a study: no head resource for trial drivers, or checkpoints on a
    local path that other nodes cannot see (Ray requires shared storage on multi-node clusters)."""
    import ray

    if not ray.cluster_resources().get(DRIVER_RESOURCE):
        raise StudyError(f"the Ray cluster has no {DRIVER_RESOURCE!r} resource for trial drivers: start its head "
                         f"with ray start --head --resources='{{\"{DRIVER_RESOURCE}\": 64}}' (see cluster.yaml)")
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1 and "://" not in storage:
        raise StudyError(f"--storage {storage} is a local path but the Ray cluster has {len(nodes)} nodes: use "
                         "shared storage (s3://bucket/dir, gs://..., or file:///path on a file system every node "
                         "mounts)")

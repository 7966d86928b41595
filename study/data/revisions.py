"""Which commit of each hub repository a run read: resolved once at a study's start, or pinned by a lock file.

A hub repository's ``main`` moves; a number is reproducible only with the commit it was computed from. A study
resolves every dataset and model repository it reads to a commit (``GET /api/{datasets,models}/{repo}/revision/main``
answers its ``sha``), records them with every run, and hands them to its processes in ``STUDY_HUB_REVISIONS`` so
every trial reads the same commit even when ``main`` moves during the study. ``study hub prefetch`` writes the
commits it downloaded to a lock file (``hub.lock.json``); ``--hub-lock`` makes a later run read exactly those.
Offline stand-ins have no hub commit: they record the package (and version) they come from instead.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from study.core.errors import StudyError
from study.data.hub import PREFETCH_HINT, hf_home, hub_unreachable_reason, pinned

LOCK_FILE = "hub.lock.json"
KINDS = ("dataset", "model")


def _key(kind: str, repo: str) -> str:
    return f"{kind}:{repo}"


def resolve_commit(kind: str, repo: str) -> str:
    """The commit of a repository this process reads: its pin, else the hub's answer for ``main``, else (the hub
    unreachable) the commit the cache holds as ``main``; StudyError when none of them knows it."""
    from huggingface_hub import HfApi, constants, errors

    if (commit := pinned(kind, repo)) is not None:
        return commit
    reason = hub_unreachable_reason()
    if reason is None:
        info = HfApi().dataset_info if kind == "dataset" else HfApi().model_info
        try:
            commit = info(repo, revision="main").sha
        except errors.RepositoryNotFoundError:
            raise StudyError(f"{kind} {repo} does not exist on the hub {constants.ENDPOINT}") from None
        return _cache_main(kind, repo) or commit
    ref = Path(constants.HF_HUB_CACHE) / f"{kind}s--{repo.replace('/', '--')}" / "refs" / "main"
    if ref.is_file():
        return ref.read_text().strip()
    raise StudyError(f"the commit of {kind} {repo} is unknown: the hub cannot be used ({reason}) and the cache "
                     f"HF_HOME={hf_home()} holds no main of it; {PREFETCH_HINT}")


def _cache_main(kind: str, repo: str) -> str | None:
    """Record ``main``'s commit in the cache as the hub client does (by downloading one small file at ``main``):
    files later read at that commit are then also the cache's ``main``, so a run without a pin finds them offline.
    Returns that commit (None for a repository without the file)."""
    from huggingface_hub import errors, hf_hub_download

    marker = "README.md" if kind == "dataset" else "config.json"
    try:
        return Path(hf_hub_download(repo, marker, repo_type=kind, revision="main")).parent.name
    except errors.EntryNotFoundError:
        return None


def package_label(*packages: str) -> str:
    """An offline stand-in's provenance: the packages it comes from, with their installed versions."""
    found = []
    for package in packages:
        try:
            found.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return "offline stand-in: " + ", ".join(found)


def write_lock(path: str | Path, revisions: dict[str, str]) -> Path:
    """Write the lock file: {"<kind>:<repo>": commit}, sorted, one a line."""
    path = Path(path)
    path.write_text(json.dumps(dict(sorted(revisions.items())), indent=1) + "\n", encoding="utf-8")
    return path


def read_lock(path: str | Path) -> dict[str, str]:
    """The commits of a lock file ``study hub prefetch`` wrote; StudyError for a file that is not one."""
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StudyError(f"hub lock file {path} cannot be read ({err.__class__.__name__}: {err}); write one with "
                         "`study hub prefetch --lock PATH`") from None
    if not isinstance(found, dict) or not all(
            isinstance(k, str) and k.partition(":")[0] in KINDS and isinstance(v, str) and len(v) == 40
            for k, v in found.items()):
        raise StudyError(f"hub lock file {path} is not a lock file: it must map '<dataset|model>:<repo>' to a "
                         "40-character commit")
    return found


# what each pocket task is built from (``study.data.pocket``): recorded instead of a hub commit
POCKET_PACKAGES = {"pocket-topic": ("chatterbot-corpus",), "pocket-retrieval": ("Django",)}


def task_provenance(task, data_dir: str | Path | None = None) -> dict[str, str]:
    """{"dataset:<repo>": commit} of every hub repository a task's splits read (a GitHub release:
    ``"github:<repo>"`` and its pinned commit); a pocket task: the package it is built from; ``data_dir``: the
    local folder of the original files."""
    from study.data.tasks import HubArchive, ReleaseFiles

    if data_dir:
        return {f"dataset:{task.name}": f"local files {Path(data_dir).resolve()}"}
    if task.name in POCKET_PACKAGES:
        return {f"dataset:{task.name}": package_label(*POCKET_PACKAGES[task.name])}
    found = {}
    for source in task.hub.values():
        if isinstance(source, ReleaseFiles):
            found[f"github:{source.repo}"] = source.commit
        else:
            repo = source.repo if isinstance(source, HubArchive) else source[0]
            found.setdefault(_key("dataset", repo), None)
    return {key: value or resolve_commit("dataset", key.partition(":")[2]) for key, value in found.items()}


def hub_pins(provenance: dict[str, str]) -> dict[str, str]:
    """The hub commits among a run's provenance (what ``pin`` and a lock file hold)."""
    return {k: v for k, v in provenance.items() if k.partition(":")[0] in KINDS and len(v) == 40
            and all(c in "0123456789abcdef" for c in v)}

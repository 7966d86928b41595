"""The Hugging Face hub: is it reachable, and which files of a dataset repository does one split need.

Reachability is answered in seconds, so an offline run goes straight to the cache (or fails with one clear line)
instead of ~25 s of retries and a multi-line traceback. Dataset splits are read from the repository card's
``configs`` (the parquet layout ``datasets`` itself reads) and only that split's files are downloaded: a language's
XNLI test set does not bring its 393k-row training split, and a caption set only the shards it reads (Mewsli-X,
whose configs lack the original files, downloads one archive of them: ``study.data.tasks.HubArchive``). The same files
are found in the cache (``HF_HOME``) when the hub is unreachable. LAReQA, which no hub repository holds as released,
downloads its original files from GitHub at a pinned commit (``study.data.tasks.ReleaseFiles``, ``release_file``) into
the datasets cache under the same ``HF_HOME``.

``study hub check|prefetch`` (``study.cli.hub``) resolves or downloads everything a study needs.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from study.core.errors import StudyError

PREFETCH_HINT = "run `study hub prefetch` where the hub is reachable, with the same HF_HOME"
RELEASE_BASE_URL = "https://raw.githubusercontent.com"  # serves {owner}/{name}/{commit}/{path}; tests: a replica
# JSON {"dataset:<repo>" | "model:<repo>": commit}: the commits this process reads (``study.data.revisions``)
REVISIONS_ENV = "STUDY_HUB_REVISIONS"


def pinned_revisions() -> dict[str, str]:
    """{"<kind>:<repo>": commit} this process is pinned to (``STUDY_HUB_REVISIONS``); {} when none."""
    text = os.environ.get(REVISIONS_ENV, "")
    return json.loads(text) if text else {}


def pinned(kind: str, repo: str) -> str | None:
    """The commit this process reads of one repository, or None (the hub's ``main``)."""
    return pinned_revisions().get(f"{kind}:{repo}")


def pin(revisions: dict[str, str]) -> None:
    """Pin this process and the processes it starts (``study.train.ray_setup.FORWARDED_ENV``) to ``revisions``."""
    os.environ[REVISIONS_ENV] = json.dumps(dict(sorted(revisions.items())))


def read_revision(kind: str, repo: str, local_only: bool) -> str | None:
    """The revision to read a repository at: its pin; offline, when the cache has no ``main`` of it (files read at a
    pinned commit are stored under that commit only) but exactly one commit, that one; else None (``main``)."""
    from huggingface_hub import constants

    if (commit := pinned(kind, repo)) is not None or not local_only:
        return commit
    folder = Path(constants.HF_HUB_CACHE) / f"{kind}s--{repo.replace('/', '--')}"
    snapshots = [p.name for p in (folder / "snapshots").glob("*")] if not (folder / "refs" / "main").is_file() else []
    return snapshots[0] if len(snapshots) == 1 else None


def hub_unreachable_reason() -> str | None:
    """None when the hub answers; otherwise why not, in a few words."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=5).close()
    except OSError as err:
        return f"{endpoint.hostname} is unreachable ({err.__class__.__name__})"
    return None


def hf_home() -> str:
    """The Hugging Face cache directory: $HF_HOME, else huggingface_hub's default."""
    from huggingface_hub import constants

    return os.environ.get("HF_HOME", constants.HF_HOME)


def _card(repo: str, local_only: bool):
    """The repository's card (``DatasetCard``), None when it has no README; StudyError for a missing repository or
    one neither reachable nor cached."""
    from huggingface_hub import DatasetCard, constants, errors, hf_hub_download

    try:
        return DatasetCard.load(hf_hub_download(repo, "README.md", repo_type="dataset", local_files_only=local_only,
                                                revision=read_revision("dataset", repo, local_only)))
    except errors.RepositoryNotFoundError:
        raise StudyError(f"dataset {repo} does not exist on the hub {constants.ENDPOINT}") from None
    except errors.RevisionNotFoundError:
        raise _no_such_commit(repo) from None
    except errors.LocalEntryNotFoundError:
        raise StudyError(f"dataset {repo} is not in the cache HF_HOME={hf_home()} and the hub cannot be used "
                         f"({hub_unreachable_reason()}); {PREFETCH_HINT}, or pass --data-dir with the original "
                         "files") from None
    except errors.EntryNotFoundError:
        return None


def _card_configs(repo: str, local_only: bool):
    """The card's ``configs`` (datasets' ``MetadataConfigs``); StudyError when there are none (a loading-script
    repository)."""
    from datasets.utils.metadata import MetadataConfigs

    card = _card(repo, local_only)
    configs = MetadataConfigs.from_dataset_card_data(card.data) if card else MetadataConfigs()
    if not configs:
        raise StudyError(f"dataset {repo} lists no data-file configs in its card (a loading-script repository?): "
                         "datasets 5 no longer runs loading scripts; choose a repository with parquet configs")
    return configs


def config_splits(repo: str, config: str | None = None, local_only: bool = False) -> dict[str, list[str]]:
    """{split: data-file patterns} of one config of a dataset repository (the card's default config when ``config``
    is None), read from its card; StudyError for an unknown config."""
    from datasets.data_files import sanitize_patterns

    configs = _card_configs(repo, local_only)
    name = config or configs.get_default_config_name() or next(iter(configs))
    if name not in configs:
        raise StudyError(f"dataset {repo} has no config {name!r}: it has {', '.join(sorted(configs))}")
    return {split: list(patterns) for split, patterns in sanitize_patterns(configs[name].get("data_files", {})).items()}


def split_patterns(repo: str, config: str | None, split: str, local_only: bool = False) -> list[str]:
    """The data-file patterns of one split of one config; StudyError for an unknown config or split."""
    splits = config_splits(repo, config, local_only)
    if split not in splits:
        raise StudyError(f"dataset {repo} ({config or 'default'}) has no split {split!r}: it has {', '.join(splits)}")
    return splits[split]


def split_files(repo: str, config: str | None, split: str) -> list[str]:
    """The repository paths of one split's data files, in order: listed on the hub, or in the cached snapshot when
    the hub is unreachable."""
    from huggingface_hub import HfApi, snapshot_download

    local_only = hub_unreachable_reason() is not None
    patterns = split_patterns(repo, config, split, local_only)
    if local_only:
        root = Path(snapshot_download(repo, repo_type="dataset", local_files_only=True,
                                      revision=read_revision("dataset", repo, True)))
        listed = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    else:
        listed = HfApi().list_repo_files(repo, repo_type="dataset", revision=pinned("dataset", repo))
    files = sorted(f for f in listed if any(fnmatch.fnmatch(f, p) for p in patterns))
    if not files:
        where = f"the cache HF_HOME={hf_home()} ({PREFETCH_HINT})" if local_only else "the repository"
        raise StudyError(f"dataset {repo} ({config or 'default'}, {split}): no file matching {', '.join(patterns)} "
                         f"in {where}")
    return files


def download(repo: str, path: str) -> str:
    """A local copy of one file of a dataset repository: downloaded into the cache once, or the cached copy when
    the hub is unreachable."""
    from huggingface_hub import constants, errors, hf_hub_download

    reason = hub_unreachable_reason()
    try:
        return hf_hub_download(repo, path, repo_type="dataset", local_files_only=reason is not None,
                               revision=read_revision("dataset", repo, reason is not None))
    except errors.LocalEntryNotFoundError:
        raise StudyError(f"dataset file {repo}/{path} is not in the cache HF_HOME={hf_home()} and the hub cannot be "
                         f"used ({reason}); {PREFETCH_HINT}, or pass --data-dir with the original files") from None
    except errors.RepositoryNotFoundError:
        raise StudyError(f"dataset {repo} does not exist on the hub {constants.ENDPOINT}") from None
    except errors.RemoteEntryNotFoundError:
        raise StudyError(f"dataset {repo} has no file {path} on the hub {constants.ENDPOINT}") from None
    except errors.RevisionNotFoundError:
        raise _no_such_commit(repo) from None


def _no_such_commit(repo: str) -> StudyError:
    from huggingface_hub import constants

    return StudyError(f"dataset {repo} has no commit {pinned('dataset', repo)} on the hub {constants.ENDPOINT} (the "
                      "commit this run is pinned to: a hub lock file, or the study's start)")


def release_base_url() -> str:
    """Where GitHub repositories' files are served: $STUDY_RELEASE_BASE_URL (the tests' replica), else
    raw.githubusercontent.com."""
    return os.environ.get("STUDY_RELEASE_BASE_URL", RELEASE_BASE_URL).rstrip("/")


def release_url(repo: str, commit: str, path: str) -> str:
    """The URL of one file of a GitHub repository at one commit."""
    return f"{release_base_url()}/{repo}/{commit}/{path}"


def release_file(repo: str, commit: str, path: str) -> str:
    """A local copy of one file of a GitHub repository at a pinned commit, by datasets' own ``cached_path`` into its
    download cache (HF_DATASETS_CACHE, under HF_HOME). ``use_etag=False`` returns a cached copy without any request
    (a file at a commit never changes), so offline (HF_HUB_OFFLINE=1, or no network) the cache is read as is."""
    import aiohttp
    from datasets import DownloadConfig, config
    from datasets.utils.file_utils import cached_path
    from huggingface_hub.errors import OfflineModeIsEnabled

    url = release_url(repo, commit, path)
    try:
        return cached_path(url, download_config=DownloadConfig(use_etag=False))
    except OfflineModeIsEnabled:
        problem = "HF_HUB_OFFLINE is set"
    except (OSError, aiohttp.ClientError) as err:  # fsspec answers any failed request with FileNotFoundError(url)
        cause = err.__cause__ or err
        if getattr(cause, "status", None) == 404:
            raise StudyError(f"release file {url} does not exist (HTTP 404): check STUDY_RELEASE_BASE_URL, or pass "
                             "--data-dir with the original files") from None
        problem = f"it cannot be downloaded ({_one_line(cause)})"
    raise StudyError(f"release file {url} is not in the cache {config.DOWNLOADED_DATASETS_PATH} and {problem}; "
                     f"{PREFETCH_HINT}, or pass --data-dir with the original files")


def _one_line(err: BaseException) -> str:
    return " ".join(f"{err.__class__.__name__}: {err}".split())


def load_hub_split(repo: str, config: str | None, split: str):
    """One split of a parquet dataset repository as a ``datasets.Dataset`` (features as the files embed them);
    only that split's files are downloaded."""
    import datasets

    files = [download(repo, path) for path in split_files(repo, config, split)]
    return datasets.load_dataset("parquet", data_files={split: files}, split=split)

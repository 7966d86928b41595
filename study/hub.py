"""The Hugging Face hub: is it reachable, and which files of a dataset repository does one split need.

Reachability is answered in seconds, so an offline run goes straight to the cache (or fails with one clear line)
instead of ~25 s of retries and a multi-line traceback. Dataset splits are read from the repository card's
``configs`` (the parquet layout ``datasets`` itself reads) and only that split's files are downloaded: a language's
XNLI test set does not bring its 393k-row training split, and a caption set only the shards it reads (Mewsli-X,
whose configs lack the original files, downloads one archive of them: ``study.tasks.HubArchive``). The same files
are found in the cache (``HF_HOME``) when the hub is unreachable. LAReQA, which no hub repository holds as released,
downloads its original files from GitHub at a pinned commit (``study.tasks.ReleaseFiles``, ``release_file``) into
the datasets cache under the same ``HF_HOME``.

``python -m study.hub check|prefetch`` (``main``) resolves or downloads everything a study needs.
"""

from __future__ import annotations

import fnmatch
import os
import socket
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

from study.errors import StudyError

PREFETCH_HINT = "run `python -m study.hub prefetch` where the hub is reachable, with the same HF_HOME"
RELEASE_BASE_URL = "https://raw.githubusercontent.com"  # serves {owner}/{name}/{commit}/{path}; tests: a replica


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
        return DatasetCard.load(hf_hub_download(repo, "README.md", repo_type="dataset", local_files_only=local_only))
    except errors.RepositoryNotFoundError:
        raise StudyError(f"dataset {repo} does not exist on the hub {constants.ENDPOINT}") from None
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
        root = Path(snapshot_download(repo, repo_type="dataset", local_files_only=True))
        listed = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    else:
        listed = HfApi().list_repo_files(repo, repo_type="dataset")
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
        return hf_hub_download(repo, path, repo_type="dataset", local_files_only=reason is not None)
    except errors.LocalEntryNotFoundError:
        raise StudyError(f"dataset file {repo}/{path} is not in the cache HF_HOME={hf_home()} and the hub cannot be "
                         f"used ({reason}); {PREFETCH_HINT}, or pass --data-dir with the original files") from None
    except errors.RepositoryNotFoundError:
        raise StudyError(f"dataset {repo} does not exist on the hub {constants.ENDPOINT}") from None
    except errors.RemoteEntryNotFoundError:
        raise StudyError(f"dataset {repo} has no file {path} on the hub {constants.ENDPOINT}") from None


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


# --- python -m study.hub check|prefetch ------------------------------------------------------------------------

class _Need(NamedTuple):
    """One item a study reads: a parquet split of a hub repository (config, split, the columns its normaliser
    reads), a file of it (``path``), or with ``commit`` a file of a GitHub repository at that commit."""

    what: str
    repo: str
    config: str | None = None
    split: str = ""
    columns: tuple = ()
    path: str = ""
    commit: str = ""


def _data_needs(tasks, caption_source: str | None) -> list[_Need]:
    """Every hub split and file the tasks and the intermediate stage read."""
    from study.data.captions import CAPTION_COLUMNS
    from study.data.sources import HUB_COLUMNS, hub_source
    from study.tasks import HubArchive, ReleaseFiles

    needs = []
    for task in tasks:
        for split in ("train", "dev", "test"):
            source = task.hub.get(split)
            if isinstance(source, HubArchive):  # every language's data in one file
                needs.append(_Need(f"{task.name} {split}", source.repo, path=source.path))
            elif isinstance(source, ReleaseFiles):  # one file per language; each language's test reads them all
                needs.extend(_Need(f"{task.name} {split}", source.repo, path=path, commit=source.commit)
                             for path in source.paths)
            elif source:
                for lang in task.languages if split == "test" else ("en",):
                    needs.append(_Need(f"{task.name} {split}" + (f" {lang}" if split == "test" else ""),
                                       *hub_source(task, split, lang), HUB_COLUMNS[task.kind]))
    if caption_source:
        needs.append(_Need("intermediate data", caption_source, None, "", ("image", CAPTION_COLUMNS)))
    return needs


def _check_archive(repo: str, path: str) -> tuple[str, str]:
    """(files, problem or ""): whether the repository lists the file; nothing is downloaded."""
    from huggingface_hub import HfApi, constants, errors

    try:
        listed = HfApi().list_repo_files(repo, repo_type="dataset")
    except errors.RepositoryNotFoundError:
        return "", f"dataset {repo} does not exist on the hub {constants.ENDPOINT}"
    return ("1 file(s)", "") if path in listed else ("", f"dataset {repo} has no file {path}")


def _check_release(repo: str, commit: str, path: str) -> tuple[str, str]:
    """(files, problem or ""): whether the release file's URL answers a HEAD request; nothing is downloaded."""
    import urllib.error
    import urllib.request

    url = release_url(repo, commit, path)
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30).close()
    except urllib.error.HTTPError as err:
        return "", f"release file {url} does not exist (HTTP 404)" if err.code == 404 else \
            f"release file {url} answers HTTP {err.code}"
    except OSError as err:
        return "", f"release file {url} cannot be reached ({_one_line(err)})"
    return "1 file(s)", ""


def _check_data(repo: str, config: str | None, split: str, columns: tuple) -> tuple[str, str]:
    """(files, problem or ""): the split's files and, from the card's ``dataset_info``, whether its columns are
    there; nothing but the card and the file listing is downloaded."""
    from datasets.info import DatasetInfosDict

    try:
        splits = config_splits(repo, config)
        split = split or ("train" if "train" in splits else next(iter(splits)))
        files = split_files(repo, config, split)
    except StudyError as err:
        return "", str(err)
    infos = DatasetInfosDict.from_dataset_card_data(_card(repo, False).data)
    info = infos.get(config or "default") or (next(iter(infos.values())) if len(infos) == 1 else None)
    if info is None or info.features is None:
        return f"{len(files)} file(s)", ""  # the card does not list features: the columns are checked on load
    missing = [c if isinstance(c, str) else "/".join(c) for c in columns
               if not any(name in info.features for name in ((c,) if isinstance(c, str) else c))]
    return f"{len(files)} file(s)", f"missing column(s) {', '.join(missing)}" if missing else ""


def _model_files(repo: str) -> list[str]:
    """The files ``from_pretrained`` reads of a hub model: configuration, tokenizer and one weights file
    (safetensors where the repository has it, as transformers prefers)."""
    from huggingface_hub import HfApi, errors

    try:
        siblings = [s.rfilename for s in HfApi().model_info(repo, revision="main").siblings]
    except errors.RepositoryNotFoundError:
        raise StudyError(f"model {repo} does not exist on the hub") from None
    if "config.json" not in siblings:
        raise StudyError(f"model {repo} has no config.json")
    weights = next((w for w in ("model.safetensors", "pytorch_model.bin") if w in siblings), None)
    if weights is None:
        raise StudyError(f"model {repo} has no model.safetensors or pytorch_model.bin")
    extra = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
             "sentencepiece.bpe.model", "preprocessor_config.json")
    return ["config.json", weights, *(f for f in extra if f in siblings)]


def main(argv: list[str] | None = None) -> int:
    """check: resolve every dataset split, column and model a study reads, downloading no data; prefetch: download
    them into HF_HOME once (on a cluster: on the shared file system, before the GPU nodes start)."""
    import argparse

    from study import tasks as T
    from study.data.captions import FLICKR30K
    from study.intermediate import CLIP_TOWER
    from study.models import REGISTRY, get_spec

    parser = argparse.ArgumentParser(prog="python -m study.hub", description=main.__doc__)
    parser.add_argument("action", choices=("check", "prefetch"))
    parser.add_argument("--task", action="append", help="a task (repeatable; default: the whole --suite)")
    parser.add_argument("--suite", default="xtreme-r", choices=("xtreme-r",))
    parser.add_argument("--model", action="append", help="a registry model key (repeatable; default: mbert, xlmr)")
    parser.add_argument("--intermediate-data", default=FLICKR30K, help="hub id of the caption data ('' for none)")
    parser.add_argument("--vision-tower", default=CLIP_TOWER, help="hub id of the CLIP tower ('' for none)")
    args = parser.parse_args(argv)
    tasks = [T.get_task(name) for name in args.task] if args.task else T.tasks_of_suite(args.suite)
    # XTREME-R's recipes that train on another task's data: XCOPA after Social IQa, LAReQA's dual encoder on SQuAD
    # v1.1 (the xquad task's training split)
    for name, trains_on in (("xcopa", "siqa"), ("lareqa", "xquad")):
        if any(t.name == name for t in tasks) and not any(t.name == trains_on for t in tasks):
            tasks.append(T.get_task(trains_on))
    models = [get_spec(key) for key in args.model or ("mbert", "xlmr")]
    for spec in models:
        if spec.key not in REGISTRY or spec.offline_stand_in:
            hub_models = ", ".join(k for k, s in REGISTRY.items() if not s.offline_stand_in)
            raise StudyError(f"model {spec.key!r} is not a hub model: choose {hub_models}")
    reason = hub_unreachable_reason()  # after the arguments: a wrong one is named even without a network
    if reason:
        raise StudyError(f"the hub cannot be used: {reason}; {args.action} needs it")
    rows, problems = [], 0
    for need in _data_needs(tasks, args.intermediate_data):
        if need.commit:
            files, problem = _check_release(need.repo, need.commit, need.path)
        elif need.path:
            files, problem = _check_archive(need.repo, need.path)
        else:
            files, problem = _check_data(need.repo, need.config, need.split, need.columns)
        if not problem and args.action == "prefetch":
            files = _prefetch_data(need)
        repo = f"github:{need.repo}@{need.commit[:7]}" if need.commit else need.repo
        rows.append((need.what, repo, need.config or "", need.path or need.split, files, problem or "ok"))
        problems += bool(problem)
    for what, repo in [(f"model {s.key}", s.source) for s in models] + \
            ([("vision tower", args.vision_tower)] if args.vision_tower else []):
        try:
            files = _model_files(repo)
            if args.action == "prefetch":
                from huggingface_hub import hf_hub_download

                for name in files:
                    hf_hub_download(repo, name)
            rows.append((what, repo, "", "", f"{len(files)} file(s)", "ok"))
        except StudyError as err:
            rows.append((what, repo, "", "", "", str(err)))
            problems += 1
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + row[5])
    print(f"{len(rows)} checked, {problems} problem(s); HF_HOME={hf_home()}; github: files from {release_base_url()}")
    return 1 if problems else 0


def _prefetch_data(need: _Need) -> str:
    """Download one split's files, one archive or one release file (for the caption data: the shards its first rows
    need)."""
    if need.what == "intermediate data":
        from study.data.captions import dataset_captions

        return f"{len(dataset_captions(need.repo, 8).items)} images"
    if need.commit:
        release_file(need.repo, need.commit, need.path)
        return "1 file(s) cached"
    files = [need.path] if need.path else split_files(need.repo, need.config, need.split)
    for path in files:
        download(need.repo, path)
    return f"{len(files)} file(s) cached"


if __name__ == "__main__":
    from study.errors import run_cli

    run_cli(main)

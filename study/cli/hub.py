"""``study hub check|prefetch``: resolve (check) or download (prefetch) every dataset split, column and model a
study reads, so a cluster's GPU nodes start with a warm ``HF_HOME`` and a wrong repository id fails in seconds.
``prefetch`` resolves each repository to a commit first, downloads that commit and writes the commits to a lock
file (``--lock``, default ``hub.lock.json``) that ``study tune --hub-lock`` reads (``study.data.revisions``)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from study.core.errors import StudyError
from study.data.hub import (
    _card,
    _one_line,
    config_splits,
    download,
    hf_home,
    hub_unreachable_reason,
    pin,
    pinned,
    release_base_url,
    release_file,
    release_url,
    split_files,
)
from study.data.revisions import LOCK_FILE, resolve_commit, write_lock


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
    from study.data.multi30k import IMAGE_COLUMN, MULTI30K, MULTI30K_LANGUAGES
    from study.data.sources import HUB_COLUMNS, hub_source
    from study.data.tasks import HubArchive, ReleaseFiles

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
        columns = (IMAGE_COLUMN, *MULTI30K_LANGUAGES) if caption_source == MULTI30K else ("image", CAPTION_COLUMNS)
        needs.append(_Need("intermediate data", caption_source, None, "", columns))
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
        siblings = [s.rfilename for s in HfApi().model_info(repo, revision=pinned("model", repo) or "main").siblings]
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

    from study.data import tasks as T
    from study.data.captions import FLICKR30K
    from study.models.registry import REGISTRY, get_spec
    from study.train.stage import CLIP_TOWER

    parser = argparse.ArgumentParser(prog="study hub", description=main.__doc__)
    parser.add_argument("action", choices=("check", "prefetch"))
    parser.add_argument("--task", action="append", help="a task (repeatable; default: the whole --suite)")
    parser.add_argument("--suite", default="xtreme-r", choices=("xtreme-r",))
    parser.add_argument("--model", action="append", help="a registry model key (repeatable; default: mbert, xlmr)")
    parser.add_argument("--intermediate-data", default=FLICKR30K, help="hub id of the caption data ('' for none)")
    parser.add_argument("--vision-tower", default=CLIP_TOWER, help="hub id of the CLIP tower ('' for none)")
    parser.add_argument("--lock", type=Path, default=Path(LOCK_FILE), help="prefetch: write each repository's "
                        f"commit here, for `study tune --hub-lock` (default ./{LOCK_FILE})")
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
    needs = _data_needs(tasks, args.intermediate_data)
    model_repos = [(f"model {s.key}", s.source) for s in models] + \
        ([("vision tower", args.vision_tower)] if args.vision_tower else [])
    commits = _commits(needs, [repo for _, repo in model_repos]) if args.action == "prefetch" else {}
    for need in needs:
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
    for what, repo in model_repos:
        row = _model_row(what, repo, args.action == "prefetch")
        rows.append(row)
        problems += row[-1] != "ok"
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    for row in rows:
        # the first five columns padded to their widths; the last (the status or error) as it is
        print("  ".join(str(c).ljust(w) for c, w in zip(row[:5], widths, strict=True)) + "  " + row[5])
    print(f"{len(rows)} checked, {problems} problem(s); HF_HOME={hf_home()}; github: files from {release_base_url()}")
    if args.action == "prefetch" and not problems:
        print(f"commits of {len(commits)} repositories written to {write_lock(args.lock, commits)}: "
              f"`study tune --hub-lock {args.lock}` reads them")
    return 1 if problems else 0


def _model_row(what: str, repo: str, prefetch: bool) -> tuple:
    """One model's row: its files found (and with ``prefetch`` downloaded, at its pinned commit) or the problem."""
    try:
        files = _model_files(repo)
        if prefetch:
            from huggingface_hub import hf_hub_download

            for name in files:
                hf_hub_download(repo, name, revision=pinned("model", repo))
        return what, repo, "", "", f"{len(files)} file(s)", "ok"
    except StudyError as err:
        return what, repo, "", "", "", str(err)


def _commits(needs: list[_Need], models: list[str]) -> dict[str, str]:
    """Each hub repository resolved to its commit now, and pinned (``study.data.hub.pin``) so everything this
    prefetch downloads is that commit; a repository that cannot be resolved is left out (its row says why)."""
    commits = {}
    for kind, repo in [("dataset", n.repo) for n in needs if not n.commit] + [("model", r) for r in models]:
        try:
            commits[f"{kind}:{repo}"] = resolve_commit(kind, repo)
        except StudyError:
            continue
    pin(commits)
    return commits


def _prefetch_data(need: _Need) -> str:
    """Download one split's files, one archive or one release file (for the caption data: the shards its first rows
    need)."""
    if need.what == "intermediate data":
        from study.data.caption_sources import caption_set

        return f"{len(caption_set(need.repo, 8).items)} images"
    if need.commit:
        release_file(need.repo, need.commit, need.path)
        return "1 file(s) cached"
    files = [need.path] if need.path else split_files(need.repo, need.config, need.split)
    for path in files:
        download(need.repo, path)
    return f"{len(files)} file(s) cached"


if __name__ == "__main__":
    from study.core.errors import run_cli

    run_cli(main)

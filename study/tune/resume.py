"""A study in its storage: whether a name is taken, which study ``--resume`` without ``--name`` takes, and the options
a study started with — all read and written through the storage's pyarrow filesystem, so a local path, ``file://``
and ``s3://`` behave alike (Ray stores the phases' Tuners through the same filesystem).

A study exists once it has written its record (``<storage>/<study>/study_tune.json``, at its start) or a phase's
Tuner (``<study>/<phase>/tuner.pkl``, studies from before the record). The record holds the resolved options that
decide what the study computes; a ``--resume`` under other ones is refused, because the restored Tuners would go on
with the old options while the parent run, the confirm phase and the report took the new ones for the whole study.
Where the work runs (workers, concurrency, MLflow's address) may change between starts.
"""

from __future__ import annotations

import json

from study.core.errors import StudyError
from study.track.outbox import get, put, storage_fs, storage_join

STUDY_RECORD = "study_tune.json"
FLAGS = {"model": "--model", "task": "--task", "preset": "--preset", "trials": "--trials", "seeds": "--seeds",
         "arms": "--arms", "experiment": "--experiment", "alignment_probe": "--alignment-probe",
         "search_space_sha256": "--search-space (its content)"}


def _storage_call(storage: str, what, *args):
    """``what(fs, root, *args)`` on the storage's filesystem; StudyError naming the storage when it cannot be read
    (a bucket that does not exist, no credentials, an endpoint that does not answer)."""
    try:
        fs, root = storage_fs(storage)
        return what(fs, root.rstrip("/"), *args)
    except (OSError, ValueError) as err:
        message = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        raise StudyError(f"--storage {storage} cannot be read: {message}") from None


def _exists(fs, root: str, name: str) -> bool:
    import pyarrow.fs

    study = f"{root}/{name}"
    if fs.get_file_info(f"{study}/{STUDY_RECORD}").type == pyarrow.fs.FileType.File:
        return True
    if fs.get_file_info(study).type != pyarrow.fs.FileType.Directory:
        return False
    phases = [info.path for info in fs.get_file_info(pyarrow.fs.FileSelector(study))
              if info.type == pyarrow.fs.FileType.Directory]
    return any(fs.get_file_info(f"{phase}/tuner.pkl").type == pyarrow.fs.FileType.File for phase in phases)


def study_exists(storage: str, name: str) -> bool:
    """Whether ``storage`` holds a study of this name (its record, or a phase's Tuner)."""
    return _storage_call(storage, _exists, name)


def _newest(fs, root: str, prefix: str) -> str | None:
    import pyarrow.fs

    names = sorted((info.base_name for info in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
                    if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith(f"{prefix}-")),
                   reverse=True)
    # a trial's Train run (<study>-trial-<id>) shares the prefix but is no study
    return next((name for name in names if _exists(fs, root, name)), None)


def newest_study(storage: str, prefix: str) -> str:
    """The newest study named ``<prefix>-<time>`` in ``storage`` (names sort by their time); StudyError when none."""
    name = _storage_call(storage, _newest, prefix)
    if name is None:
        raise StudyError(f"nothing to resume: no study {prefix}-* in {storage} (pass --name for a specific one)")
    return name


def record_options(storage: str, name: str, options: dict) -> None:
    """Write the study's record (its options), through the storage's filesystem; a resumed study keeps its own."""
    if get(storage_join(storage, name), STUDY_RECORD) is None:
        put(storage_join(storage, name), STUDY_RECORD, json.dumps({"options": options}, indent=1).encode())


def check_start(storage: str, name: str, resume: bool, options: dict) -> None:
    """StudyError, before Ray starts, when the name is taken without ``--resume``, when ``--resume`` finds no such
    study, or when it brings other options than the study's record (each named, old -> new)."""
    exists = study_exists(storage, name)
    if exists and not resume:
        raise StudyError(f"study {name!r} already exists in {storage}: pass --resume to continue it, or another --name")
    if not resume:
        return
    if not exists:
        raise StudyError(f"nothing to resume: no study {name!r} in {storage}")
    data = _storage_call(storage, lambda fs, root: get(storage_join(storage, name), STUDY_RECORD))
    if data is None:  # a study from before the record: nothing to compare with
        return
    before, now = _flat(json.loads(data)["options"]), _flat(normalised(options))
    changed = [f"{FLAGS.get(key, key)} {before.get(key, '(unset)')} -> {now.get(key, '(unset)')}"
               for key in sorted({*before, *now}) if before.get(key) != now.get(key)]
    if changed:
        raise StudyError(f"--resume of study {name!r} with other options than it started with: {'; '.join(changed)}; "
                         "resume it with the command it started with, or start a new study without --resume")


def normalised(options: dict) -> dict:
    """The options as the record stores them (JSON: tuples are lists)."""
    return json.loads(json.dumps(options, default=str))


def _flat(options: dict, prefix: str = "") -> dict:
    """Nested options as dotted keys (``base.lr``), so that a changed option is named by itself."""
    flat = {}
    for key, value in options.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat

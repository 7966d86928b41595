"""The outbox: files trial processes hand to the study's MLflow callback, in the study's Ray storage.

Trial drivers and training workers never talk to MLflow: they leave what their run needs here (the intermediate
stage's record, the per-example scores of the best English-dev evaluation so far), and the Tune callback on the
study driver — MLflow's only writer — logs it when the trial ends, whatever ended it (finished, stopped early by
ASHA, failed). Storage may be a directory or a URI (s3://, gs://, file://), so every node can write it.
"""

from __future__ import annotations

from pathlib import Path


def storage_fs(storage: str):
    """(pyarrow filesystem, root path) of a Ray storage location: a directory or a URI such as s3://bucket/dir."""
    import pyarrow.fs

    if "://" in storage:
        return pyarrow.fs.FileSystem.from_uri(storage)
    return pyarrow.fs.LocalFileSystem(), str(Path(storage).resolve())


def storage_join(storage: str, *parts: str) -> str:
    """A path inside Ray storage, as a URI for URI storage (s3://..., file://...) or an absolute path otherwise."""
    base = storage.rstrip("/") if "://" in storage else str(Path(storage).resolve())
    return "/".join((base, *parts))


def outbox_location(storage: str, study: str, trial_id: str = "") -> str:
    """The study's outbox, or one trial's (what ``put`` takes)."""
    return storage_join(storage, study, "mlflow-outbox", *([trial_id] if trial_id else []))


def put(location: str, name: str, data: bytes) -> None:
    """Write one file into an outbox (written to a temporary name, then moved: never half-written)."""
    fs, directory = storage_fs(location)
    fs.create_dir(directory, recursive=True)
    with fs.open_output_stream(f"{directory}/{name}.tmp") as out:
        out.write(data)
    fs.move(f"{directory}/{name}.tmp", f"{directory}/{name}")


def get(location: str, name: str) -> bytes | None:
    """One file of an outbox, or None."""
    import pyarrow.fs

    fs, directory = storage_fs(location)
    if fs.get_file_info(f"{directory}/{name}").type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(f"{directory}/{name}") as handle:
        return handle.read()


def delete(location: str, name: str) -> None:
    """Remove one file of an outbox, if it is there."""
    import pyarrow.fs

    fs, directory = storage_fs(location)
    if fs.get_file_info(f"{directory}/{name}").type == pyarrow.fs.FileType.File:
        fs.delete_file(f"{directory}/{name}")


def outbox_take(storage: str, study: str, trial_id: str) -> dict[str, bytes]:
    """Every finished file in a trial's outbox."""
    import pyarrow.fs

    fs, directory = storage_fs(outbox_location(storage, study, trial_id))
    if fs.get_file_info(directory).type != pyarrow.fs.FileType.Directory:
        return {}
    items = {}
    for info in fs.get_file_info(pyarrow.fs.FileSelector(directory)):
        if info.type == pyarrow.fs.FileType.File and not info.base_name.endswith(".tmp"):
            with fs.open_input_stream(info.path) as handle:
                items[info.base_name] = handle.read()
    return items

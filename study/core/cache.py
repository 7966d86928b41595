"""The user cache (converted models, tokenised data, typology tables) and atomic writes into it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """``$STUDY_CACHE_DIR`` or ``~/.cache/study``."""
    return Path(os.environ.get("STUDY_CACHE_DIR", Path.home() / ".cache" / "study"))


def write_json_atomic(path: Path, data) -> None:
    """Write JSON through a temporary file and rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False, indent=1)
        os.replace(scratch, path)
    except BaseException:
        os.unlink(scratch)
        raise


@contextlib.contextmanager
def atomic_directory(target: Path):
    """A scratch folder beside ``target`` that becomes ``target`` only if the block succeeds (another process
    that finished the same directory first wins); a failure leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield scratch
        try:
            scratch.rename(target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def build_lock(target: Path):
    """Serialise processes (e.g. the workers of one run) that would build the same cache entry at once."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

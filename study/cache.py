"""The user cache (converted models, tokenised data, typology tables) and atomic writes into it."""

from __future__ import annotations

import json
import os
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

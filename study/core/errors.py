"""User-facing errors and the CLI convention for them: one line on stderr, exit code 2."""

from __future__ import annotations

import csv
import errno
import gzip
import json
import re
import sys
import zlib
from collections.abc import Callable


class StudyError(Exception):
    """An error the user can fix (bad flag, unreachable model, malformed file). Its message is one line."""


# errors that come back on every attempt: malformed or undecodable data, besides the StudyError a person must act on
NOT_RETRYABLE = (StudyError, UnicodeError, EOFError, gzip.BadGzipFile, zlib.error, json.JSONDecodeError, csv.Error)


def cannot_succeed_on_retry(error: BaseException) -> bool:
    """Whether running the same work again would fail the same way: a StudyError (bad data, a non-finite loss) or
    a decode or format error of a data file; a lost worker or node (any other error) may succeed on a retry."""
    return isinstance(error, NOT_RETRYABLE)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left, disk quota exceeded: one line, not a traceback


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a CLI entry point; turn a ``StudyError``, or a full disk, into ``error: <message>`` and exit status 2."""
    try:
        code = main(argv)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        where = f" writing {err.filename}" if err.filename else ""
        print(f"error: the disk is full{where} ({err.strerror}): free space or write the runs, cache or report "
              "elsewhere (--storage, STUDY_CACHE_DIR, --out)", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def last_error_line(text: str) -> str:
    """The line a person needs from an error's text (a traceback, Ray's worker-error snippet): its last non-empty
    line, the exception class without its module (``study.core.errors.StudyError: x`` -> ``StudyError: x``); "" for an
    empty text."""
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return re.sub(r"^(?:\w+\.)+(\w+: )", r"\1", lines[-1]) if lines else ""

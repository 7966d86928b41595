"""Where a report goes: ``--out`` is empty, new, or a previous report of the same experiment, which the new one
replaces whole — files of an earlier report (another experiment's overall.csv, task pages, figures) never stay
beside the new ones."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from study.core.errors import StudyError

REPORT_RECORD = ".study_report.json"  # in every report directory: which experiment it reports


def check_out(out: Path, experiment: str) -> None:
    """StudyError, before anything is read or written, unless ``out`` is absent, an empty directory or a report of
    ``experiment`` (its ``REPORT_RECORD`` says so)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise StudyError(f"--out {out} is a file, not a directory: choose a new or empty directory")
    if not any(out.iterdir()):
        return
    record = out / REPORT_RECORD
    try:
        reported = json.loads(record.read_text())["experiment"] if record.is_file() else None
    except (ValueError, KeyError, TypeError):
        reported = None
    if reported != experiment:
        what = f"the report of experiment {reported!r}" if reported else "not a study report"
        raise StudyError(f"--out {out} is not empty and is {what}: a report replaces only an earlier report of the "
                         f"same experiment ({experiment!r}); choose a new or empty directory, or delete it")


def scratch_beside(out: Path) -> tempfile.TemporaryDirectory:
    """A temporary directory beside ``out`` (the same file system: the swap is two renames), removed on exit with
    what is left in it (an unfinished report, or the earlier one ``publish`` moved aside)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=f".{out.name}-", dir=out.parent)


def mark_report(report: Path, experiment: str) -> None:
    """Write ``REPORT_RECORD`` into a report directory: which experiment it reports (before its files are logged to
    MLflow, so that the report run's artifacts are the directory's files)."""
    (report / REPORT_RECORD).write_text(json.dumps({"experiment": experiment}))


def publish(report: Path, out: Path, experiment: str) -> None:
    """Make the complete report in ``report`` (a folder of a ``scratch_beside`` directory) the directory ``out``:
    the earlier report is moved aside into that directory, the new one renamed into its place; ``out`` never holds
    files of both."""
    mark_report(report, experiment)
    check_out(out, experiment)  # the directory may have changed while the report was computed
    if out.exists():
        os.replace(out, report.parent / "previous")
    os.replace(report, out)

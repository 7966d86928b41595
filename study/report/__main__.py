"""Alias of ``study report``."""

from study.cli import report
from study.core.errors import run_cli

run_cli(report.main)

"""Alias of ``study train``."""

from study.cli import train
from study.core.errors import run_cli

run_cli(train.main)

"""Alias of ``study tune``: ``python -m study.tune --model mbert`` works as it always has."""

from study.cli import tune
from study.core.errors import run_cli

run_cli(tune.main)

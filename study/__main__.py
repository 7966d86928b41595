"""``python -m study <command>``: the same as the ``study`` console script."""

from study.cli import entry_point

entry_point()

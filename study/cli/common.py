"""Flags several subcommands share, declared once: where runs are stored, where original task files are, and which
MLflow store records the study. Ray Train's scaling flags live with the scaling they build
(``study.train.ray_setup.add_scaling_flags``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

STORAGE_ENV, DATA_DIR_ENV = "STUDY_STORAGE", "STUDY_DATA_DIR"


def add_storage_flag(parser: argparse.ArgumentParser, help: str = "Ray storage: a directory, s3://... or "
                     "file:///mnt/cluster_storage (a path every node mounts)") -> None:
    parser.add_argument("--storage", default=os.environ.get(STORAGE_ENV, str(Path("runs").resolve())),
                        help=f"{help} (default ${STORAGE_ENV} or ./runs)")


def add_data_dir_flag(parser: argparse.ArgumentParser, help: str = "original task files") -> None:
    parser.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV), help=f"{help} (default ${DATA_DIR_ENV}; "
                        "else the hub or the offline suite)")


def add_mlflow_uri_flag(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``default`` None: the command resolves ``default_mlflow_uri()`` itself, after its other checks."""
    parser.add_argument("--mlflow-uri", default=default,
                        help="tracking URI (default: sqlite:///<cwd>/mlflow.db, no server needed)")


def add_hub_lock_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hub-lock", type=Path, help="read each hub dataset and model at the commit this lock file "
                        "names (`study hub prefetch --lock PATH` writes it); default: the hub's main, resolved to a "
                        "commit at the start and recorded")

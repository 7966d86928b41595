"""``python -m study.report --experiment NAME``: the cross-family comparison a researcher reads, from MLflow only.

It reads the finished studies of an MLflow experiment (``study.tune`` runs: the study's parent run, one nested run
per trial, seed repeats) through the client API and writes, to ``--out`` and as artifacts of a ``report`` run in the
same experiment:

* per model: the per-language zero-shot scores of the configuration selected on English dev, with family, branch,
  script and gap to English;
* model comparison per family (each pair of models, e.g. XLM-R - mBERT) and modality effect per family
  (multimodal - none, text - none, multimodal - text), with 95 % bootstrap intervals over test examples and seeds;
* transfer gap vs typological distance to English (URIEL+, integrated and imputed): per model and distance kind on
  one language set, a permutation test of the slope with script and subword overlap as covariates, Holm-corrected
  across kinds;
* the search: Optuna parameter importance and optimisation history; VME loss weights vs English dev and targets;
* a header that states the suite, models (offline stand-ins marked), preset, trials, seeds and that selection used
  English dev only. Cells with too little data say so."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from study.errors import run_cli
from study.report.load import load_study
from study.report.page import build_report, log_report
from study.report.tables import header


def main(argv=None) -> int:
    """The CLI: read the experiment from MLflow, write the report whole into ``--out`` and log it as a ``report``
    run; exit 2 with one line when there is nothing to report."""
    parser = argparse.ArgumentParser(prog="python -m study.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="the MLflow experiment of the studies (e.g. vme-pocket)")
    parser.add_argument("--mlflow-uri", default=f"sqlite:///{Path('mlflow.db').resolve()}",
                        help="tracking URI (default: sqlite:///<cwd>/mlflow.db, as study.tune)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output directory (default ./report)")
    args = parser.parse_args(argv)
    from study.mlflow_store import check_server

    check_server(args.mlflow_uri)
    study = load_study(args.mlflow_uri, args.experiment)
    print(f"[report] {len(study.trials)} finished trial runs of {', '.join(study.models())} in "
          f"{args.experiment!r}; bootstrapping and drawing...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix=".report-", dir=args.out.parent if args.out.parent.exists() else None) \
            as scratch:  # written whole, then moved: a failed report leaves no half-written directory
        files = build_report(study, Path(scratch))
        run_id = log_report(study, Path(scratch), header(study))
        args.out.mkdir(parents=True, exist_ok=True)
        for name in files:
            Path(scratch, name).replace(args.out / name)
    print(f"report: {args.out.resolve() / 'report.html'} ({len(files)} files); MLflow run {run_id} "
          f"(artifacts) in experiment {args.experiment!r}")
    return 0


if __name__ == "__main__":
    run_cli(main)

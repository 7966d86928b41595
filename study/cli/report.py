"""``study report --experiment NAME``: the cross-family comparison a researcher reads, from MLflow only.

It reads the finished studies of an MLflow experiment (``study tune`` runs: the study's parent run, one nested run per
search trial and per confirm run) through the client API and writes, to ``--out`` and as artifacts of a
``report`` run in the same experiment:

* the results in words: each question's primary contrast over all targets with its estimate and interval, and
  the exploratory family rows that differ after Holm's correction;
* arm contrasts (vme-reference - plain, vme-tuned - plain, vme-tuned - vme-reference, vme-tuned - plain-tuned,
  vme-reference - augmentation-only, the modality design's) and
  model comparisons on matched arms (e.g. XLM-R - mBERT), over all targets and per family, from confirm runs only,
  with 95 % seed-level t intervals (paired by seed between arms, Welch between models; ``study.core.inference``)
  over the languages both sides evaluated;
* per model and arm: the per-language zero-shot scores (seed mean of the confirm runs), with family, branch,
  script and gap to English;
* transfer gap vs typological distance to English (URIEL+, integrated and imputed): per model and distance kind on
  one language set, a permutation test of the slope with script and subword overlap as covariates, Holm-corrected
  across kinds;
* the search: Optuna parameter importance and optimisation history; VME loss weights vs English dev and targets;
* a header that states the suite, models (offline stand-ins marked), preset, arms, search trials, confirm seeds and
  that selection used English dev only. Cells with too little data say so."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from study.cli.common import add_mlflow_uri_flag
from study.core.errors import run_cli
from study.report.load import Study, load_studies
from study.report.output import check_out, mark_report, publish, scratch_beside
from study.report.page import build_index, build_report, log_report
from study.report.tables import ReportTables
from study.track.mlflow_store import default_mlflow_uri


def write_report(studies: list[Study], out: Path) -> list[str]:
    """One task: its report in ``out``. Several: each task's report in ``out/<task>/`` and an index page with
    XTREME-R's category means and named aggregates, each with its value or the tasks it lacks (never one overall
    score of fewer tasks). Returns the file names written, relative to ``out``."""
    if len(studies) == 1:
        return build_report(studies[0], out)
    files, tables = [], []
    for study in studies:
        tables.append(ReportTables.compute(study))
        files += [f"{study.task}/{name}" for name in build_report(study, out / study.task, tables[-1])]
    return build_index(studies, out, tables) + files


def main(argv=None) -> int:
    """The CLI: read the experiment from MLflow, write the report whole beside ``--out`` and log it as a ``report``
    run, then swap it in for ``--out``; exit 2 with one line when there is nothing to report or ``--out`` holds
    anything but an earlier report of the same experiment."""
    parser = argparse.ArgumentParser(prog="study report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="the MLflow experiment of the studies (e.g. vme-pocket)")
    add_mlflow_uri_flag(parser, default_mlflow_uri())
    parser.add_argument("--out", type=Path, default=Path("report"), help="output directory (default ./report)")
    args = parser.parse_args(argv)
    from study.track.mlflow_store import check_store_exists

    check_out(args.out, args.experiment)  # before MLflow is read: a directory the report may not replace
    check_store_exists(args.mlflow_uri)
    studies = load_studies(args.mlflow_uri, args.experiment)
    print(f"[report] {sum(len(s.trials) for s in studies)} finished trial runs of "
          f"{', '.join(sorted({m for s in studies for m in s.models()}))} on {', '.join(s.task for s in studies)} in "
          f"{args.experiment!r}; computing intervals and drawing...", file=sys.stderr, flush=True)
    with scratch_beside(args.out) as work:  # written whole, then swapped in: never half a report, never two mixed
        scratch = Path(work) / "report"
        scratch.mkdir()
        files = write_report(studies, scratch)
        mark_report(scratch, args.experiment)
        run_id = log_report(studies, scratch)
        publish(scratch, args.out, args.experiment)
    print(f"report: {args.out.resolve() / 'report.html'} ({len(files)} files); MLflow run {run_id} "
          f"(artifacts) in experiment {args.experiment!r}")
    return 0


if __name__ == "__main__":
    run_cli(main)

"""``study aggregate RESULT.json ...``: XTREME-R's category means and its three named aggregates (``xtreme_r_avg``,
``xtreme_r_all_task``, ``flat_f1``; ``study.core.aggregates``) from ``study evaluate --json`` results, one per task.

A result counts only as an XTREME-R task score: an XTREME-R task, its protocol XTREME-R's (not a named proxy), every
language the task lists (``study evaluate`` always scores full test sets). Each aggregate is printed with its value,
or with the tasks it still lacks; a category mean needs only its own tasks."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from study.core.aggregates import XTREME_R_CATEGORIES, aggregates, category_means
from study.core.cache import write_json_atomic
from study.core.errors import StudyError, run_cli
from study.data.tasks import QA, get_task


def task_entry(result: dict, source: str) -> dict:
    """One result's task score (``average``: the mean over every evaluated language, English included), its QA F1
    (the mean of the languages' F1), and why it is not an XTREME-R task score (empty: it is one)."""
    task = get_task(result.get("task", ""))
    scored = set(result.get("per_language", {}))
    why = []
    if task.suite != "xtreme-r":
        why.append(f"{task.suite} suite, not an XTREME-R task")
    if not str(result.get("protocol", "")).startswith("XTREME-R"):
        why.append(str(result.get("protocol")))
    if not set(task.languages) <= scored:
        why.append(f"{len(set(task.languages) & scored)} of its {len(task.languages)} languages")
    f1 = None
    if task.kind == QA and scored:
        f1 = statistics.fmean(result["details"][lang]["f1"] for lang in scored)
    return {"task": task.name, "score": result["average"], "f1": f1, "source": source, "not_xtreme_r": why}


def summary(entries: list[dict]) -> dict:
    """The JSON-ready summary: each task's entry, the category means and the three aggregates."""
    scores = {e["task"]: e["score"] for e in entries if not e["not_xtreme_r"]}
    qa_f1 = {e["task"]: e["f1"] for e in entries if not e["not_xtreme_r"] and e["f1"] is not None}
    means = category_means(scores)
    return {"tasks": entries,
            "categories": {name: {"value": means.get(name), "missing": [t for t in tasks if t not in scores]}
                           for name, tasks in XTREME_R_CATEGORIES.items()},
            "aggregates": {a.name: {"value": a.value, "missing": list(a.missing), "note": a.note}
                           for a in aggregates(scores, qa_f1)}}


def print_summary(found: dict) -> None:
    print(f"{'task':<10}{'score':>10}  XTREME-R task score?")
    for entry in found["tasks"]:
        verdict = "yes" if not entry["not_xtreme_r"] else "no: " + "; ".join(entry["not_xtreme_r"])
        print(f"{entry['task']:<10}{entry['score']:>10.4f}  {verdict}")
    print(f"\n{'category':<24}{'mean':>10}")
    for name, category in found["categories"].items():
        value = f"{category['value']:>10.4f}" if category["value"] is not None else \
            f"{'—':>10}  needs {', '.join(category['missing'])}"
        print(f"{name:<24}{value}")
    print(f"\n{'aggregate':<24}{'value':>10}")
    for name, aggregate in found["aggregates"].items():
        value = f"{aggregate['value']:>10.4f}" if aggregate["value"] is not None else f"{'—':>10}"
        print(f"{name:<24}{value}  {aggregate['note']}")


def main(argv=None) -> int:
    """Read the results, print the table and optionally write it as JSON; StudyError on a file that is not a
    ``study evaluate`` result or on two results of one task."""
    parser = argparse.ArgumentParser(prog="study aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="study evaluate --json files, one per task")
    parser.add_argument("--json", type=Path, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    entries = []
    for path in args.results:
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            entries.append(task_entry(result, str(path)))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise StudyError(f"{path}: not a study evaluate --json result ({error})") from error
    tasks = [e["task"] for e in entries]
    repeated = sorted({t for t in tasks if tasks.count(t) > 1})
    if repeated:
        raise StudyError(f"more than one result of {', '.join(repeated)}: pass one result per task")
    found = summary(entries)
    print_summary(found)
    if args.json:
        write_json_atomic(args.json, found)
    return 0


if __name__ == "__main__":
    run_cli(main)

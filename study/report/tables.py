"""The report's tables as lists of row dicts, computed from a ``Study``'s confirm runs: per language, per group, arm
and model contrasts with paired bootstrap intervals, gap vs typological distance (permutation tests, Holm-corrected),
parameter importance, and the header. Every gap to English subtracts scores of the same runs (seeds)."""

from __future__ import annotations

from dataclasses import dataclass

from study.core.arms import arm_contrasts
from study.core.languages import GROUPINGS, group_of
from study.core.metrics import SCORER_PACKAGES
from study.core.protocol import (
    REFERENCE_LINES,
    group_key,
    is_target,
    reference_key,
    selection_key,
    target_average_key,
    target_group_means,
)
from study.report.alignment import (
    alignment_figures,
    alignment_rows,
)
from study.report.analysis import (
    Side,
    paired_difference_by_group,
)
from study.report.load import ArmRuns, Study
from study.report.rows import _contrast_row, _refused, english_score, per_language_rows
from study.report.search import (
    importance_rows,
)
from study.report.task_scores import aggregate_rows, task_score_rows  # noqa: F401 (aggregate_rows re-exported)
from study.report.typology import distance_rows


def group_rows(study: Study, by: str) -> list[dict]:
    """Per model and arm, the mean over each group's target languages that all its confirm runs scored
    (seed-averaged), with the gap to English over the same runs."""
    rows = []
    for group in study.arm_runs():
        runs = group.runs
        languages = sorted(set.intersection(*(set(r.scores) for r in runs)))
        scores = {lang: sum(r.scores[lang] for r in runs) / len(runs) for lang in languages}
        english = english_score(runs)
        for name, value in target_group_means(scores, by).items():
            members = [lang for lang in languages if is_target(lang) and group_of(lang, by) == name]
            rows.append({"model": group.model_name, "arm": group.arm, by: name, "score": value,
                         "gap_to_en": english - value, "languages": len(members), "seeds": len(runs)})
    return rows


def _side(group: ArmRuns) -> Side:
    return Side([r.units for r in group.runs if r.units])


def comparison_rows(study: Study, by: str = "family") -> list[dict]:
    """Every pair of models on each arm both ran (matched arms), the later name minus the earlier (so
    'xlmr - mbert' for the paper's pair), from confirm runs. Refused (one row saying why) when a side is an
    untrained offline stand-in: random weights have nothing to compare."""
    rows, groups = [], study.arm_runs()
    for i, first in enumerate(groups):
        for second in groups[i + 1:]:
            if second.arm != first.arm or second.model == first.model:
                continue
            label = f"{second.model_name} - {first.model_name} ({first.arm})"
            untrained = [g.model_name for g in (second, first) if g.untrained]
            if untrained:
                rows.append(_refused(label, by, f"no model comparison: {' and '.join(untrained)} is an untrained "
                                                "offline stand-in"))
                continue
            rows += _difference_rows(second, first, by, label)
    return rows


def arm_rows(study: Study, by: str = "family") -> list[dict]:
    """Per model, each arm contrast of ``study.core.arms.arm_contrasts`` (VME - plain, tuned - reference, the modality
    experiment's) over all shared target languages (the group ``all targets``, first) and per group, from the arms'
    confirm runs: paired over shared items, seeds resampled, shared languages only."""
    rows = []
    for model in study.models():
        groups = {g.arm: g for g in study.arm_runs() if g.model == model}
        for left, right in arm_contrasts(list(groups)):
            a, b = groups[left], groups[right]
            label = f"{a.model_name}: {left} - {right}"
            rows += [{by if key is None else key: value for key, value in row.items()}
                     for row in _difference_rows(a, b, None, label)]
            rows += _difference_rows(a, b, by, label)
    return rows


def _difference_rows(a: ArmRuns, b: ArmRuns, by: str, label: str) -> list[dict]:
    """The contrast rows a - b per group over the target languages both evaluated (``paired_difference_by_group``);
    every row names the seeds per side and the languages in the intersection."""
    side_a, side_b = _side(a), _side(b)
    if not side_a.runs or not side_b.runs:
        return [_refused(label, by, "no interval: a side logged no per-example scores")]
    return [_contrast_row(label, by, g, c) for g, c in paired_difference_by_group(side_a, side_b, by).items()]


def results_summary(rows: list[dict], by: str = "family") -> list[str]:
    """The contrasts in words: a contrast whose paired interval excludes zero is stated with its interval; any
    other says "no detectable difference" with its languages and runs per side (or why there is no interval). The
    last line counts them against chance: each interval is at 95 %, with no correction across groups."""
    lines, tested, excluding = [], 0, 0
    for row in rows:
        where = f"{row['contrast']} on {row[by]}"
        if row["difference"] is None:
            lines.append(f"{where}: {row['note']}")
        elif row["low"] is not None and (row["low"] > 0 or row["high"] < 0):
            tested, excluding = tested + 1, excluding + 1
            lines.append(f"{where}: {row['difference']:+.4f} (95 % interval [{row['low']:+.4f}, {row['high']:+.4f}]; "
                         f"{row['languages']} languages, runs {row['runs']})")
        else:
            tested += row["low"] is not None
            why = f"; {row['note']}" if row["note"] else ""
            lines.append(f"{where}: no detectable difference (n={row['languages']} languages, runs {row['runs']}{why})")
    if tested:
        lines.append(f"{excluding} of {tested} intervals exclude zero; at 95 % each, with no correction across groups, "
                     f"about {0.05 * tested:.1f} would by chance alone: read a lone family-level difference with that "
                     "in mind (the 'all targets' rows are the primary comparisons)")
    return lines


def reference_rows(study: Study) -> list[dict]:
    """Per model, each reference line its study measured on the same test items (``study.tune.reference_lines``: the
    frozen pretrained encoder with a logistic-regression probe, and the random-init floor): English dev, the target
    average and each family's mean."""
    rows, metric = [], study.metric
    for parent in study.studies:
        metrics, model = parent.data.metrics, parent.data.tags.get("model_name", parent.data.tags.get("model", "?"))
        for line in REFERENCE_LINES:
            prefix = reference_key(line, group_key("family", metric, ""))
            if reference_key(line, target_average_key(metric)) not in metrics:
                continue
            rows.append({"model": model, "line": line, "family": "all targets",
                         "score": metrics[reference_key(line, target_average_key(metric))],
                         "english_dev": metrics.get(reference_key(line, selection_key(metric)))})
            rows += [{"model": model, "line": line, "family": key[len(prefix):], "score": value, "english_dev": None}
                     for key, value in sorted(metrics.items()) if key.startswith(prefix)]
    return rows


def reference_summary(study: Study, references: list[dict]) -> list[str]:
    """Each arm's seed-mean target average against its model's frozen probe on the same items (a point comparison:
    the probe is one deterministic fit)."""
    lines = []
    for group in study.arm_runs():
        probe = next((r["score"] for r in references if r["model"] == group.model_name and r["line"] == "frozen_probe"
                      and r["family"] == "all targets"), None)
        if probe is None:
            continue
        mean = sum(r.target_mean for r in group.runs) / len(group.runs)
        side = "below" if mean < probe else "at or above"
        lines.append(f"{group.label}: target average {mean:.4f} over {len(group.runs)} seed(s), {side} the frozen "
                     f"pretrained encoder with a logistic-regression probe ({probe:.4f})")
    return lines


def header(study: Study) -> dict:
    """What the reader must know before reading any number."""
    parents = study.studies
    suites = sorted({p.data.params.get("suite", "?") for p in parents}) or ["?"]
    presets = sorted({p.data.params.get("preset", "?") for p in parents}) or ["?"]
    models, groups = [], study.arm_runs()
    for model in study.models():
        run = next(t for t in study.trials if t.model == model)
        models.append(f"{run.model_name}" + (" — OFFLINE STAND-IN, not the paper's model" if run.stand_in else ""))
    counts = {model: len(study.trials_of(model)) for model in study.models()}
    seeds = {g.label: len(g.runs) for g in groups}
    from study.data.tasks import get_task

    return {"experiment": study.experiment, "task": study.task, "protocol": get_task(study.task).protocol,
            "suite": ", ".join(suites),
            "preset": ", ".join(presets),
            "models": "; ".join(models), "arms": ", ".join(dict.fromkeys(g.arm for g in groups)) or "none",
            "search trials (tuned arms)": _per_model(counts), "confirm runs (seeds) per arm": _per_model(seeds),
            "metric": study.metric,
            "scorer versions": _scorer_versions(parents),
            "synonyms (virtual copies)": "; ".join(sorted({p.data.params.get("synonyms_source", "?")
                                                           for p in parents})) or "?",
            "selection": "English dev only: every configuration, checkpoint and early stop was chosen on the English "
                         "dev set; target-language test scores were never used to choose anything",
            "comparisons": "from confirm runs only (each arm's selected configuration re-run on the same fresh seeds, "
                           "full budget, no early stopping); search trials only choose configurations"}


def _scorer_versions(parents) -> str:
    """The scorer packages' versions each study recorded (``version.<package>`` parent-run params), e.g.
    "scikit-learn 1.9.1, seqeval 1.2.2"; "not recorded" for a study from before they were."""
    found = set()
    for parent in parents:
        params = parent.data.params
        found.add(", ".join(f"{p} {params[f'version.{p}']}" for p in sorted(SCORER_PACKAGES)
                            if f"version.{p}" in params) or "not recorded")
    return "; ".join(sorted(found)) or "not recorded"


def _per_model(values: dict) -> str:
    return ", ".join(f"{model}: {value}" for model, value in values.items())


@dataclass(frozen=True)
class ReportTables:
    """Every table of the report, computed once from a ``Study``: the page shows them, the CSVs hold them and the
    figures (``figures.FIGURES``) draw from them."""

    study: Study
    languages: list[dict]  # per_language_rows
    groups: dict[str, list[dict]]  # group_rows for each of languages.GROUPINGS
    task_scores: list[dict]  # task_score_rows
    comparison: list[dict]  # comparison_rows
    arms: list[dict]  # arm_rows
    summary: list[str]  # results_summary of the arm and model contrasts, then reference_summary
    references: list[dict]  # reference_rows
    distance_points: list[dict]  # distance_rows: per (model, target language), its distances and covariates
    distance_fits: list[dict]  # distance_rows: per (model, distance kind), the Holm-corrected permutation test
    importance: list[dict]  # importance_rows
    alignment_deltas: list[dict]  # alignment_rows: Δ alignment per model, arm, family, measure and layer
    alignment_contrasts: list[dict]  # alignment_rows: arm contrasts of the alignment probe
    alignment_figures: dict[str, dict[str, bytes]]  # alignment_figures

    @classmethod
    def compute(cls, study: Study) -> ReportTables:
        """All tables of ``study``."""
        points, fits = distance_rows(study)
        comparison, arms, references = comparison_rows(study), arm_rows(study), reference_rows(study)
        deltas, contrasts, alignment_summary = alignment_rows(study)
        return cls(study, per_language_rows(study), {by: group_rows(study, by) for by in GROUPINGS},
                   task_score_rows(study), comparison, arms,
                   results_summary(arms + comparison) + reference_summary(study, references) + alignment_summary,
                   references, points, fits, importance_rows(study), deltas, contrasts, alignment_figures(study))

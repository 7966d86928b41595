"""The report's tables as lists of row dicts, computed from a ``Study``'s confirm runs: per language, per group, arm
and model contrasts with seed-level intervals (paired by seed between arms, Welch between models; primary contrasts
over all targets, family rows exploratory and Holm-corrected: ``questions``), gap vs typological distance
(permutation tests, Holm-corrected), parameter importance, and the header. Every gap to English subtracts scores of
the same runs (seeds)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

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
    ALL_TARGETS,
    Side,
    paired_difference_by_group,
)
from study.report.load import ArmRuns, Study
from study.report.model_family import model_family_rows, model_family_summary
from study.report.questions import (
    MODEL_QUESTION,
    PRIMARY,
    arm_question,
    assign_corrections,
    label_rows,
    results_summary,
)
from study.report.rows import _contrast_row, _refused, english_score, per_language_rows
from study.report.search import (
    importance_rows,
)
from study.report.task_scores import aggregate_rows, task_score_rows  # noqa: F401 (aggregate_rows re-exported)
from study.report.typology import distance_rows


def group_rows(study: Study, by: str) -> list[dict]:
    """Per model and arm, the mean over each group's target languages that every confirm run of every model and arm
    scored (seed-averaged), so that the rows side by side average the same languages, with the gap to English over
    the same runs."""
    rows, groups = [], study.arm_runs()
    shared = set.intersection(*(set(r.scores) for g in groups for r in g.runs)) if groups else set()
    for group in groups:
        runs = group.runs
        languages = sorted(shared)
        scores = {lang: sum(r.scores[lang] for r in runs) / len(runs) for lang in languages}
        english = english_score(runs)
        for name, value in target_group_means(scores, by).items():
            members = [lang for lang in languages if is_target(lang) and group_of(lang, by) == name]
            rows.append({"model": group.model_name, "arm": group.arm, by: name, "score": value,
                         "gap_to_en": english - value, "languages": len(members), "seeds": len(runs)})
    return rows


def _side(group: ArmRuns) -> Side:
    """The runs' per-example units with their training seeds (what pairs two arms' runs)."""
    runs = [r for r in group.runs if r.units]
    return Side([r.units for r in runs], [r.seed for r in runs])


def _all_targets_first(rows: list[dict], by: str) -> list[dict]:
    """Rows of ``_difference_rows(..., by=None)`` with their group under the ``by`` column."""
    return [{by if key is None else key: value for key, value in row.items()} for row in rows]


def comparison_rows(study: Study, by: str = "family") -> list[dict]:
    """Every pair of models on each arm both ran (matched arms), the later name minus the earlier (so
    'xlmr - mbert' for the paper's pair), from confirm runs: over all shared target languages (the primary row of
    the models question, Holm-corrected across the question's pairs and arms) and per group (exploratory, Holm
    across the contrast's rows). Two models share no seeds, so each interval is Welch's on the run means. Refused
    (one row saying why) when a side is an untrained offline stand-in: random weights have nothing to compare."""
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
            found = _all_targets_first(_difference_rows(second, first, None, label, paired=False), by)
            found += _difference_rows(second, first, by, label, paired=False)
            rows += label_rows(found, by, MODEL_QUESTION, PRIMARY)
    return assign_corrections(rows)


def arm_rows(study: Study, by: str = "family") -> list[dict]:
    """Per model, each arm contrast of ``study.core.arms.arm_contrasts`` (VME - plain, tuned - reference, the modality
    experiment's) over all shared target languages (the group ``all targets``, first: the question's primary or
    secondary row, ``questions.arm_question``) and per group (exploratory), from the arms' confirm runs on the same
    test items, paired by seed (the arms of one model run the same confirm seeds), shared languages only; Holm's
    correction across each contrast's group rows and across each question's all-targets rows."""
    rows = []
    for model in study.models():
        groups = {g.arm: g for g in study.arm_runs() if g.model == model}
        for left, right in arm_contrasts(list(groups)):
            a, b = groups[left], groups[right]
            label = f"{a.model_name}: {left} - {right}"
            found = _all_targets_first(_difference_rows(a, b, None, label), by) + _difference_rows(a, b, by, label)
            rows += label_rows(found, by, *arm_question(a.model_name, left, right))
    return assign_corrections(rows)


def _difference_rows(a: ArmRuns, b: ArmRuns, by: str | None, label: str, paired: bool = True) -> list[dict]:
    """The contrast rows a - b per group over the target languages both evaluated (``paired_difference_by_group``,
    paired by seed or, not ``paired``, Welch's); every row names the seeds per side, the languages in the
    intersection and the interval's method."""
    side_a, side_b = _side(a), _side(b)
    if not side_a.runs or not side_b.runs:  # one row, the all-targets one, says why
        return [_refused(label, by, "no interval: a side logged no per-example scores", ALL_TARGETS)] if by is None \
            else []
    return [_contrast_row(label, by, g, c)
            for g, c in paired_difference_by_group(side_a, side_b, by, paired=paired).items()]


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
    """Each arm's seed-mean target average (with the seeds' sample s.d., n − 1) against its model's frozen probe on
    the same items (a point comparison: the probe is one deterministic fit)."""
    lines = []
    for group in study.arm_runs():
        probe = next((r["score"] for r in references if r["model"] == group.model_name and r["line"] == "frozen_probe"
                      and r["family"] == "all targets"), None)
        if probe is None:
            continue
        values = [r.target_mean for r in group.runs]
        mean = statistics.fmean(values)
        spread = f", sample s.d. {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        side = "below" if mean < probe else "at or above"
        lines.append(f"{group.label}: target average {mean:.4f} over {len(group.runs)} seed(s){spread}, {side} the "
                     f"frozen pretrained encoder with a logistic-regression probe ({probe:.4f})")
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
            "training budget": _budgets(parents),
            "scorer versions": _scorer_versions(parents),
            "data and model revisions": _revisions(parents),
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


def _budgets(parents) -> str:
    """Which training length the studies ran (``budget_rule`` parent-run params, ``study tune --budget``)."""
    return "; ".join(sorted({p.data.params.get("budget_rule", "the preset's epochs (a study from before budgets "
                                                              "were recorded)") for p in parents})) or "not recorded"


def _revisions(parents) -> str:
    """The commit of each hub dataset and model the studies read, or the offline stand-in's package
    (``revision.*`` parent-run params, ``study.tune.settings.revision_params``); "not recorded" for a study from
    before they were."""
    found = {}
    for parent in parents:
        for key, value in parent.data.params.items():
            if key.startswith("revision."):
                found.setdefault(key.removeprefix("revision."), set()).add(value)
    return "; ".join(f"{key} @ {' / '.join(sorted(values))}" for key, values in sorted(found.items())) or \
        "not recorded"


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
    model_family: list[dict] = field(default_factory=list)  # model_family_rows: the interaction test (two models)
    model_distance: list[dict] = field(default_factory=list)  # model_family_rows: the contrast vs distance

    @classmethod
    def compute(cls, study: Study) -> ReportTables:
        """All tables of ``study``."""
        points, fits = distance_rows(study)
        comparison, arms, references = comparison_rows(study), arm_rows(study), reference_rows(study)
        deltas, contrasts, alignment_summary = alignment_rows(study)
        interaction, regression = model_family_rows(study)
        return cls(study, per_language_rows(study), {by: group_rows(study, by) for by in GROUPINGS},
                   task_score_rows(study), comparison, arms,
                   results_summary(arms + comparison) + reference_summary(study, references) + alignment_summary
                   + model_family_summary(interaction, regression),
                   references, points, fits, importance_rows(study), deltas, contrasts, alignment_figures(study),
                   interaction, regression)

"""Rows every report table builds on: an arm's English score, the per-language rows, and how a contrast becomes a
row (or a refusal where the data cannot carry an interval)."""

from __future__ import annotations

from study.core.languages import get_language
from study.core.protocol import (
    english_reference,
    is_target,
)
from study.report.load import Study, TrialRun


def english_score(runs: list[TrialRun]) -> float:
    """The English reference of a configuration's gaps: over its seeds, the mean of each run's English test score
    (English dev where English was not tested; ``protocol.english_reference``)."""
    return sum(english_reference(r.scores, r.dev) for r in runs) / len(runs)


def per_language_rows(study: Study) -> list[dict]:
    """Per model and arm, the confirm runs' score per language, averaged over the runs (seeds) that scored the
    language, and the gap to English over those same runs (``english_score``)."""
    rows = []
    for group in study.arm_runs():
        for lang in sorted(set().union(*(r.scores for r in group.runs))):
            info = get_language(lang)
            scored = [r for r in group.runs if lang in r.scores]
            score = sum(r.scores[lang] for r in scored) / len(scored)
            rows.append({"model": group.model_name, "arm": group.arm, "language": lang, "name": info.name,
                         "family": info.family, "branch": info.branch, "script": info.script, "score": score,
                         "seeds": len(scored), "gap_to_en": english_score(scored) - score if is_target(lang) else None})
    return rows


def _refused(label: str, by: str | None, note: str, group: str = "all") -> dict:
    """A contrast row without an estimate: the contrast, its group and why (``note``)."""
    return {"contrast": label, by: group, "question": "", "role": "", "languages": 0, "difference": None,
            "low": None, "high": None, "method": "", "p": None, "p_holm": None, "correction": "", "runs": "",
            "note": note}


def _contrast_row(label: str, by: str, group: str, c) -> dict:
    """One contrast row (``analysis.Contrast``): the contrast, its group, the languages in the intersection, the
    estimate, interval, method and p-value, the runs per side and what a reader must know (``note``: why there is no
    interval, or what limits it). The question, role, Holm-adjusted p-value and its correction are filled in by
    ``questions.assign_corrections``."""
    return {"contrast": label, by: group, "question": "", "role": "", "languages": len(c.languages),
            "difference": c.estimate, "low": c.low, "high": c.high, "method": c.method, "p": c.p, "p_holm": None,
            "correction": "", "runs": f"{c.runs[0]} vs {c.runs[1]}", "note": c.note}

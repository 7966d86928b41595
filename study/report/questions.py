"""The questions the report answers, fixed before any result is seen, and how its contrast rows are corrected and put
into words.

Each question has its primary contrasts over all target languages: VME (vme-reference − plain), tuned VME at
matched budgets (vme-tuned − plain-tuned: both searched with the same trials), the models (each pair of models on
each matched arm, later − earlier: XLM-R − mBERT), and the modality design (each stage contrast of each fixed arm).
Where a question has several, Holm's (1979) step-down correction runs across them. The tuned arm's contrasts with
an unsearched arm are secondary (its search gave it a tuning budget the other arm did not have), and so is the
attribution vme-reference − augmentation-only (what the alignment terms add to the virtual copies, read after the
VME contrast), and so is the stage-length dose (each stage at ``--stage-dose`` steps − the same stage at the
configured steps, a follow-up to the modality question), each corrected the same way within its own question. A
contrast's rows per family are exploratory: Holm across the contrast's family rows, and a family that differs where
another does not is not a tested difference between the families (Gelman & Stern 2006: the difference between
"significant" and "not significant" is not itself significant).
"""

from __future__ import annotations

from study.core.arms import dose_arm
from study.report.analysis import ALL_TARGETS, ALPHA, holm

PRIMARY, SECONDARY, EXPLORATORY = "primary", "secondary", "exploratory"
VME_QUESTION, TUNED_QUESTION, MODALITY_QUESTION, MODEL_QUESTION = (
    "VME objective", "tuned VME (budgets differ: only vme-tuned had a search)", "modality", "models")
DOSE_QUESTION = "stage length (a two-point dose: each stage at a second length minus the configured one)"
MATCHED_QUESTION, ATTRIBUTION_QUESTION = ("tuned VME at matched budgets (both arms searched, the same trials)",
                                          "alignment terms (Embedding-Push and Attention-Pull beyond the copies)")


def arm_question(model_name: str, left: str, right: str) -> tuple[str, str]:
    """(question, role of its all-targets row) of the arm contrast left − right of one model."""
    if dose_arm(left) == right:  # the same stage at two lengths: a follow-up to the modality question
        return f"{model_name}: {DOSE_QUESTION}", SECONDARY
    if "+" in left or "+" in right:
        return f"{model_name}: {MODALITY_QUESTION}", PRIMARY
    if (left, right) == ("vme-reference", "plain"):
        return f"{model_name}: {VME_QUESTION}", PRIMARY
    if (left, right) == ("vme-tuned", "plain-tuned"):
        return f"{model_name}: {MATCHED_QUESTION}", PRIMARY
    if (left, right) == ("vme-reference", "augmentation-only"):  # explains the VME contrast: read after it
        return f"{model_name}: {ATTRIBUTION_QUESTION}", SECONDARY
    return f"{model_name}: {TUNED_QUESTION}", SECONDARY


def label_rows(rows: list[dict], by: str, question: str, role: str) -> list[dict]:
    """The rows of one contrast with their question and role: the ``ALL_TARGETS`` row gets ``role``, every
    per-group row is exploratory."""
    return [{**r, "question": question, "role": role if r[by] == ALL_TARGETS else EXPLORATORY} for r in rows]


def _holm_into(rows: list[dict], what: str) -> None:
    tested = [r for r in rows if r["p"] is not None]
    for row, adjusted in zip(tested, holm([r["p"] for r in tested]), strict=True):
        row["p_holm"] = adjusted
        row["correction"] = f"Holm (1979; statsmodels multipletests) over {len(tested)} {what}"


def assign_corrections(rows: list[dict], scope=lambda r: r["contrast"]) -> list[dict]:
    """The rows with ``p_holm`` and ``correction`` filled in: the exploratory rows Holm-corrected across the rows of
    one ``scope`` (a contrast; for the alignment probe a contrast, measure and layer), the primary and secondary rows
    across their question's rows of the same role."""
    out = [dict(r) for r in rows]
    for key in dict.fromkeys(scope(r) for r in out if r["role"] == EXPLORATORY):
        _holm_into([r for r in out if r["role"] == EXPLORATORY and scope(r) == key], "family rows of this contrast")
    for role in (PRIMARY, SECONDARY):
        for question in dict.fromkeys(r["question"] for r in out if r["role"] == role):
            _holm_into([r for r in out if r["role"] == role and r["question"] == question],
                       f"{role} contrast(s) of the question '{question}'")
    return out


def _interval(row: dict) -> str:
    return f"{row['difference']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]"


def differs(row: dict, alpha: float = ALPHA) -> bool:
    """Whether the row's Holm-adjusted p-value is at most ``alpha``."""
    return row["p_holm"] is not None and row["p_holm"] <= alpha


def _all_targets_sentence(row: dict, count: int) -> str:
    where = f"{row['role']}: {row['contrast']}, all {row['languages']} targets"
    if row["difference"] is None:
        return f"{row['role']}: {row['contrast']}: {row['note']}"
    if row["low"] is None:
        return f"{where}: {row['difference']:+.4f}; {row['note']}"
    holm_part = f", Holm-adjusted over the question's {count} contrasts {row['p_holm']:.3f}" if count > 1 else ""
    verdict = "differs" if differs(row) else "no detectable difference"
    note = f"; {row['note']}" if row["note"] else ""
    return (f"{where}: {_interval(row)} (95 % interval, {row['method']}; runs {row['runs']}; p {row['p']:.3f}"
            f"{holm_part}): {verdict}{note}")


def _family_sentence(label: str, rows: list[dict], by: str) -> str:
    tested = [r for r in rows if r["low"] is not None]
    untested = len(rows) - len(tested)
    found = [f"{r[by]} {_interval(r)} (Holm p {r['p_holm']:.3f})" for r in tested if differs(r)]
    head = f"{label}, per {by} (exploratory" + (f", Holm over {len(tested)} rows)" if tested else ")")
    said = (f"differs in {'; '.join(found)}" if found else
            f"no detectable difference in any of {len(tested)} rows after correction" if tested else
            f"no interval in any row ({rows[0]['note']})")
    return f"{head}: {said}" + (f"; {untested} row(s) without an interval" if tested and untested else "")


def results_summary(rows: list[dict], by: str = "family") -> list[str]:
    """The contrasts in words (rows corrected by ``assign_corrections``): every primary and secondary contrast over
    all targets with its estimate and interval, whether or not the interval covers zero; per contrast the
    exploratory family rows that differ after Holm's correction; refusals with their reason; and the corrected
    count of exploratory rows that differ."""
    lines = []
    for role in (PRIMARY, SECONDARY):
        mine = [r for r in rows if r["role"] == role]
        for row in mine:
            count = sum(r["question"] == row["question"] and r["p"] is not None for r in mine)
            lines.append(_all_targets_sentence(row, count))
    exploratory = [r for r in rows if r["role"] == EXPLORATORY]
    for label in dict.fromkeys(r["contrast"] for r in exploratory):
        lines.append(_family_sentence(label, [r for r in exploratory if r["contrast"] == label], by))
    lines += [f"{r['contrast']}: {r['note']}" for r in rows if not r["role"]]
    tested = [r for r in exploratory if r["p_holm"] is not None]
    if tested:
        lines.append(f"{sum(differs(r) for r in tested)} of {len(tested)} exploratory {by} rows differ after Holm's "
                     f"correction across each contrast's {by} rows (family-wise error at most {ALPHA:.0%} per "
                     f"contrast); one {by} differing where another does not is not a tested difference between them "
                     "(Gelman & Stern 2006): the primary contrasts above answer the questions")
    return lines

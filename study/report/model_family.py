"""The model × family question of a two-model study, tested: per arm both models ran, the interaction of a linear
mixed model on per-language, per-run scores (``study.core.mixed``), and the per-language model contrast against the
language's URIEL+ distance to English with script as a covariate, its p-value from permutations of whole families.

Languages of one family share ancestry, so their contrasts are not independent (Galton's problem): a permutation
of single languages would count a family several times. The distance test therefore exchanges whole families
(each family one point: its languages' mean contrast, mean distance and share written in English's script), by
``analysis.slope_permutation_test`` (Freedman–Lane; every permutation when the families' count allows). The
language-level slope is shown beside it, as a description.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from study.core.languages import distances_to_english, get_language, group_of
from study.core.mixed import MIN_LANGUAGES_PER_FAMILY, Score, model_family_interaction
from study.core.protocol import is_target
from study.report.analysis import slope_permutation_test
from study.report.load import ArmRuns, Study

# the distance the contrast is regressed on, fixed in advance: syntax is what Lauscher et al. (2020, "From Zero to
# Hero") found to track zero-shot transfer in low-level tasks (POS, NER), the tasks with enough families to test
CONTRAST_DISTANCE = "syntactic"
MIN_FAMILIES = 4  # family points: the intercept, the script share, the slope and one to spare
INTERACTION_COLUMNS = ["arm", "contrast", "test", "statistic", "df", "p", "families", "languages", "runs",
                       "left_out", "note"]
DISTANCE_COLUMNS = ["arm", "contrast", "distance", "slope_language", "slope_family", "p_family_permutation",
                    "families", "languages", "covariates", "note"]


def two_model_pairs(study: Study) -> list[tuple[ArmRuns, ArmRuns]]:
    """(first model's runs, second's) of each arm both models ran; none unless the study has exactly two models, both
    trained (an untrained stand-in has nothing to compare)."""
    groups = study.arm_runs()
    if len(study.models()) != 2 or any(g.untrained for g in groups):
        return []
    first, second = study.models()
    by = {(g.model, g.arm): g for g in groups}
    return [(by[(first, arm)], by[(second, arm)]) for arm in dict.fromkeys(g.arm for g in groups)
            if (first, arm) in by and (second, arm) in by]


def _shared_targets(a: ArmRuns, b: ArmRuns) -> list[str]:
    """The target languages every run of both sides scored."""
    shared = set.intersection(*(set(r.scores) for r in a.runs + b.runs))
    return sorted(lang for lang in shared if is_target(lang))


def model_family_rows(study: Study, distances: Callable[[], dict] = distances_to_english) -> tuple[list, list]:
    """(interaction rows, distance rows), one of each per arm both models ran; empty unless the study has two
    models. ``distances``: the URIEL+ table (``languages.distances_to_english``; tests pass their own)."""
    interaction, regression = [], []
    for a, b in two_model_pairs(study):
        label = f"{b.model_name} - {a.model_name}"
        languages = _shared_targets(a, b)
        interaction.append({"arm": a.arm, "contrast": label, **_interaction(a, b, languages)})
        regression.append({"arm": a.arm, "contrast": label, **_distance_test(a, b, languages, distances)})
    return interaction, regression


def _interaction(a: ArmRuns, b: ArmRuns, languages: list[str]) -> dict:
    """The mixed model's interaction test over the families with at least ``MIN_LANGUAGES_PER_FAMILY`` languages."""
    families = {lang: group_of(lang, "family") for lang in languages}
    counts = {f: sum(v == f for v in families.values()) for f in set(families.values())}
    kept = [lang for lang in languages if counts[families[lang]] >= MIN_LANGUAGES_PER_FAMILY]
    left_out = ", ".join(f"{f} ({n})" for f, n in sorted(counts.items()) if n < MIN_LANGUAGES_PER_FAMILY)
    scores = [Score(side.model, families[lang], lang, f"{side.model}:{run.seed if run.seed is not None else i}",
                    run.scores[lang]) for side in (a, b) for i, run in enumerate(side.runs) for lang in kept]
    found = model_family_interaction(scores)
    if found is None:
        return {"test": "", "statistic": None, "df": None, "p": None, "families": len({families[x] for x in kept}),
                "languages": len(kept), "runs": len(a.runs) + len(b.runs), "left_out": left_out,
                "note": f"too little data: fewer than two families with {MIN_LANGUAGES_PER_FAMILY}+ languages"}
    return {"test": f"{found.method}, df={found.df}", "statistic": found.statistic, "df": found.df, "p": found.p,
            "families": found.families, "languages": found.languages, "runs": found.runs, "left_out": left_out,
            "note": found.note}


def _seed_mean(side: ArmRuns, lang: str) -> float:
    return float(np.mean([r.scores[lang] for r in side.runs]))


def _distance_test(a: ArmRuns, b: ArmRuns, languages: list[str], distances: Callable[[], dict]) -> dict:
    """The per-language contrast (seed means: the models share no seeds) ~ distance + same script, tested on whole
    families."""
    table, english = distances(), get_language("en").script
    points = [(lang, _seed_mean(b, lang) - _seed_mean(a, lang), table[lang][CONTRAST_DISTANCE].value,
               float(get_language(lang).script == english)) for lang in languages
              if lang in table and table[lang][CONTRAST_DISTANCE].value is not None]
    by_family: dict[str, list] = {}
    for point in points:
        by_family.setdefault(group_of(point[0], "family"), []).append(point)
    family_points = [np.mean([p[1:] for p in members], axis=0) for _, members in sorted(by_family.items())]
    contrast, distance, script = (np.array([p[i] for p in family_points]) for i in range(3)) if family_points \
        else ([], [], [])
    covariates = [script] if len(set(np.round(script, 12))) > 1 else []
    row = {"distance": CONTRAST_DISTANCE, "slope_language": _language_slope(points), "slope_family": None,
           "p_family_permutation": None, "families": len(family_points), "languages": len(points),
           "covariates": "same script (family share)" if covariates else "none", "note": ""}
    test = slope_permutation_test(distance, contrast, covariates) if len(family_points) >= MIN_FAMILIES else None
    if test is None:
        row["note"] = (f"too little data: {len(family_points)} families with a {CONTRAST_DISTANCE} distance "
                       f"(needs {MIN_FAMILIES}, and a distance that varies between them)")
        return row
    return {**row, "slope_family": test.slope, "p_family_permutation": test.p,
            "note": "p: whole families permuted (Freedman-Lane on family means); the language-level slope describes"}


def _language_slope(points: list[tuple]) -> float | None:
    """The distance's least-squares coefficient in contrast ~ 1 + distance (+ same script, where it varies)."""
    if len(points) < 3:
        return None
    contrast, distance, script = (np.array([p[i] for p in points]) for i in (1, 2, 3))
    design = np.column_stack([np.ones(len(points)), distance] + ([script] if len(set(script)) > 1 else []))
    if np.linalg.matrix_rank(design) < design.shape[1]:
        return None
    return float(np.linalg.lstsq(design, contrast, rcond=None)[0][1])


def model_family_summary(interaction: list[dict], regression: list[dict]) -> list[str]:
    """Per arm, in words: the interaction's test and the distance slope's family-permutation p."""
    lines = []
    for row, fit in zip(interaction, regression, strict=True):
        head = f"{row['contrast']} ({row['arm']}): model × family"
        lines.append(f"{head}: {row['note']}" if row["p"] is None else
                     f"{head} {row['test']} = {row['statistic']:.2f}, p {row['p']:.3f} over {row['families']} "
                     f"families, {row['languages']} languages ({row['note']})")
        lines.append(f"{row['contrast']} ({row['arm']}) vs {fit['distance']} distance: " + (
            fit["note"] if fit["p_family_permutation"] is None else
            f"slope {fit['slope_family']:+.3f} over {fit['families']} families, p {fit['p_family_permutation']:.3f} "
            "(whole families permuted)"))
    return lines

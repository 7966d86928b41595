"""The report's typology analysis: each model's transfer gap against URIEL+ distance to English, a permutation test
of the slope with script and subword overlap as covariates, Holm-corrected across distance kinds."""

from __future__ import annotations

from study.core.errors import StudyError
from study.core.languages import DISTANCE_KINDS, distances_to_english, get_language
from study.core.protocol import (
    EVAL_SUBSET_SEED,
)
from study.report.analysis import (
    ALPHA,
    PERMUTATIONS,
    holm,
    slope_permutation_test,
    subword_overlap,
)
from study.report.load import Study
from study.report.rows import per_language_rows
from study.report.search import (
    _parent_params,
)

COVARIATES = ("same_script", "subword_overlap")  # what a typology fit holds fixed, where known and not constant


def distance_rows(study: Study) -> tuple[list[dict], list[dict]]:
    """(points: per model / arm and target language, the gap to English (confirm runs' seed mean), each URIEL+
    distance with the number of features it rests on, the covariates, and why the language is left out of the
    analysis, if it is; fits: per model / arm and distance kind, ``typology_fits`` of those points)."""
    table = distances_to_english()
    english_script = get_language("en").script
    points, fits, languages = [], [], per_language_rows(study)
    for group in study.arm_runs():
        name, model = group.label, group.model
        rows = [r for r in languages if r["model"] == group.model_name and r["arm"] == group.arm
                and r["gap_to_en"] is not None]
        overlaps, why = subword_overlaps(study, model, [r["language"] for r in rows])
        mine = []
        for row in rows:
            distances = table[row["language"]]
            point = {"model": name, "language": row["language"], "gap_to_en": row["gap_to_en"],
                     "same_script": float(row["script"] == english_script),
                     "subword_overlap": overlaps.get(row["language"])}
            for kind in DISTANCE_KINDS:
                point[f"{kind}_distance"] = distances[kind].value
                point[f"{kind}_features"] = distances[kind].features
            point["left_out"] = "; ".join(f"{kind}: {distances[kind].note}" for kind in DISTANCE_KINDS
                                          if distances[kind].value is None)
            mine.append(point)
        points += mine
        fits += typology_fits(name, mine, why)
    return points, fits


def typology_fits(model: str, points: list[dict], overlap_note: str = "",
                  permutations: int = PERMUTATIONS) -> list[dict]:
    """The model's test of each distance kind, all on one language set (the points with every kind, so no kind is
    judged on easier languages): gap ~ distance + the ``COVARIATES`` known for every language of the set and not
    constant on it, by ``analysis.slope_permutation_test``; p-values Holm-corrected across the kinds (``holm``),
    significant where the corrected value is <= ``ALPHA``. Replaces picking the kind with the highest r², which
    on pure-noise gaps still reached a median r² of 0.18-0.29."""
    common = [p for p in points if not p["left_out"]]
    covariates = [c for c in COVARIATES if common and all(p[c] is not None for p in common)
                  and len({p[c] for p in common}) > 1]
    gaps = [p["gap_to_en"] for p in common]
    tests = {kind: slope_permutation_test([p[f"{kind}_distance"] for p in common], gaps,
                                          [[p[c] for p in common] for c in covariates], permutations)
             for kind in DISTANCE_KINDS}
    tested = [kind for kind in DISTANCE_KINDS if tests[kind]]
    adjusted = dict(zip(tested, holm([tests[kind].p for kind in tested]), strict=True))
    rows = []
    for kind in DISTANCE_KINDS:
        test = tests[kind]
        rows.append({"model": model, "distance": kind, "n": len(common),
                     "slope": test.slope if test else None, "intercept": test.intercept if test else None,
                     "r2": test.r2 if test else None, "p": test.p if test else None, "p_holm": adjusted.get(kind),
                     "significant": ("yes" if adjusted[kind] <= ALPHA else "no") if test else "",
                     "covariates": ", ".join(covariates) or "none",
                     "note": "; ".join(filter(None, [
                         "" if test else f"too little data ({len(common)} languages with every distance kind)",
                         overlap_note]))})
    return rows


def typology_summary(fits: list[dict]) -> list[str]:
    """Per model, in words: the distance kinds whose Holm-corrected p-value is <= ``ALPHA``, or that none is."""
    lines = []
    for model in sorted({f["model"] for f in fits}):
        mine = [f for f in fits if f["model"] == model]
        found = [f"{f['distance']} (slope {f['slope']:+.3f}, Holm p {f['p_holm']:.4f})"
                 for f in mine if f["significant"] == "yes"]
        tested = sum(f["p"] is not None for f in mine)
        lines.append(f"{model}: " + (f"significant after Holm at {ALPHA}: {', '.join(found)}" if found else
                                     f"no distance kind is significant after Holm at {ALPHA} ({tested} kinds "
                                     f"tested on n={mine[0]['n']} languages)" if tested else
                                     f"no distance kind can be tested ({mine[0]['note']}), so none is significant "
                                     f"after Holm at {ALPHA}"))
    return lines


def subword_overlaps(study: Study, model: str, languages: list[str]) -> tuple[dict[str, float], str]:
    """Per language, ``analysis.subword_overlap`` of its evaluated test items with English's (test, or dev where
    the task has no English test split) in the model's tokenizer; ({}, why) when the tokenizer or the data cannot be
    loaded here (e.g. a hub model or hub data offline)."""
    from study.data.sources import load_split, subsample
    from study.data.tasks import get_task
    from study.models.registry import get_spec, load_tokenizer

    params = _parent_params(study, model)
    data_dir = params.get("base.data_dir") if params.get("base.data_dir") not in (None, "None") else None
    limit = params.get("base.max_eval_examples")
    limit = int(limit) if limit not in (None, "None") else None
    try:
        task = get_task(params.get("task", ""))
        tokenizer = load_tokenizer(get_spec(model))

        def tokens(split: str, language: str) -> list[int]:
            texts = _texts(subsample(load_split(task, split, language, data_dir), limit, EVAL_SUBSET_SEED))
            return [t for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] for t in ids]

        try:
            english = tokens("test", "en")
        except StudyError:
            english = tokens("dev", "en")
        return {lang: subword_overlap(tokens("test", lang), english) for lang in languages}, ""
    except StudyError as err:
        return {}, f"subword overlap not computed: {err}"


def _texts(records: list[dict]) -> list[str]:
    """The text a model reads in the records of a task with a head (``study.data.sources`` schemas; a study never
    fine-tunes on a retrieval task)."""
    texts = []
    for record in records:
        texts += [record[k] for k in ("text_a", "text_b", "premise", "question", "context") if record.get(k)]
        texts += list(record.get("choices") or [])
        texts += [" ".join(record["tokens"])] if record.get("tokens") else []
    return texts

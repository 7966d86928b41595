"""The report's tables as lists of row dicts, computed from a ``Study``: per language, per group, model and
modality contrasts with paired bootstrap intervals, gap vs typological distance (permutation tests, Holm-corrected),
parameter importance, and the header. Every gap to English subtracts scores of the same runs (seeds)."""

from __future__ import annotations

from dataclasses import dataclass

from study.analysis import (
    ALPHA,
    PERMUTATIONS,
    Side,
    holm,
    paired_difference_by_group,
    slope_permutation_test,
    subword_overlap,
)
from study.errors import StudyError
from study.languages import DISTANCE_KINDS, GROUPINGS, distances_to_english, get_language, group_of
from study.metrics import xtreme_r_average
from study.protocol import (
    EVAL_SUBSET_SEED,
    MODALITY_CONTRASTS,
    all_languages_mean,
    english_reference,
    is_target,
    target_group_means,
    target_mean,
)
from study.report.load import Study, TrialRun


def english_score(runs: list[TrialRun]) -> float:
    """The English reference of a configuration's gaps: over its seeds, the mean of each run's English test score
    (English dev where English was not tested; ``protocol.english_reference``)."""
    return sum(english_reference(r.scores, r.dev) for r in runs) / len(runs)


def per_language_rows(study: Study) -> list[dict]:
    """Per model, the selected configuration's score per language, averaged over its seeds that scored the
    language, and the gap to English over those same seeds (``english_score``)."""
    rows = []
    for model in study.models():
        best = study.best(model)
        runs = study.seeds_of(best)
        for lang in sorted(best.scores):
            info = get_language(lang)
            scored = [r for r in runs if lang in r.scores]
            score = sum(r.scores[lang] for r in scored) / len(scored)
            rows.append({"model": best.model_name, "language": lang, "name": info.name, "family": info.family,
                         "branch": info.branch, "script": info.script, "score": score, "seeds": len(scored),
                         "gap_to_en": english_score(scored) - score if is_target(lang) else None})
    return rows


def group_rows(study: Study, by: str) -> list[dict]:
    """Per model, the selected configuration's mean over each group's target languages that all its seeds scored
    (seed-averaged), with the gap to English over the same seeds."""
    rows = []
    for model in study.models():
        best = study.best(model)
        runs = study.seeds_of(best)
        languages = sorted(set.intersection(*(set(r.scores) for r in runs)))
        scores = {lang: sum(r.scores[lang] for r in runs) / len(runs) for lang in languages}
        english = english_score(runs)
        for group, value in target_group_means(scores, by).items():
            members = [lang for lang in languages if is_target(lang) and group_of(lang, by) == group]
            rows.append({"model": best.model_name, by: group, "score": value, "gap_to_en": english - value,
                         "languages": len(members), "seeds": len(runs)})
    return rows


def task_score_rows(study: Study) -> list[dict]:
    """Per model, the selected configuration's seed-mean score averaged over every evaluated language of the task,
    English included — XTREME-R's task score (QA already (F1 + EM) / 2) when the task is an XTREME-R task and every
    language it lists was evaluated — beside the zero-shot mean over the non-English targets."""
    from study.tasks import get_task

    task = get_task(study.task)
    rows, languages = [], per_language_rows(study)
    for model in study.models():
        name = model_name(study, model)
        scores = {r["language"]: r["score"] for r in languages if r["model"] == name}
        rows.append({"model": name, "task": task.name, "suite": task.suite,
                     "languages": f"{len(scores)} of {len(task.languages)}",
                     "all_languages": all_languages_mean(scores), "zero_shot_target_mean": target_mean(scores),
                     "xtreme_r_task_score": task.suite == "xtreme-r" and set(task.languages) <= set(scores)})
    return rows


def overall_rows(task_rows: list[dict], tasks: list[str]) -> list[dict]:
    """Per model, the mean over ``tasks`` of its all-language task scores (``metrics.xtreme_r_average``): XTREME-R's
    overall score when every row is an XTREME-R task score and the model has every task; otherwise the note says
    what the mean is."""
    rows = []
    for model in sorted({r["model"] for r in task_rows}):
        mine = {r["task"]: r for r in task_rows if r["model"] == model}
        missing = [t for t in tasks if t not in mine]
        why = (f"missing {', '.join(missing)}" if missing else
               "" if all(r["xtreme_r_task_score"] for r in mine.values()) else
               "not every task is an XTREME-R task with all its languages")
        rows.append({"model": model, "tasks": len(mine), "overall": xtreme_r_average(
            {t: {"all": r["all_languages"]} for t, r in mine.items()}),
            "note": "XTREME-R overall score" if not why else f"mean over {len(mine)} task(s), not XTREME-R's: {why}"})
    return rows


def model_name(study: Study, model: str) -> str:
    """The display name of a model key (its selected configuration's)."""
    return study.best(model).model_name


def _side(study: Study, best: TrialRun | None, seeds: bool) -> Side | None:
    if best is None:
        return None
    runs = study.seeds_of(best) if seeds else [best]
    return Side([r.units for r in runs if r.units])


def comparison_rows(study: Study, by: str = "family") -> list[dict]:
    """Every pair of models, the later name minus the earlier (so 'xlmr - mbert' for the paper's pair)."""
    rows, models = [], study.models()
    for i, first in enumerate(models):
        for second in models[i + 1:]:
            a, b = study.best(second), study.best(first)
            rows += _difference_rows(_side(study, a, True), _side(study, b, True), by,
                                     f"{a.model_name} - {b.model_name}", a, b)
    return rows


def modality_rows(study: Study, by: str = "family") -> list[dict]:
    """Per model, each modality contrast (multimodal - none, text - none, multimodal - text) per group: the
    selected trial of each modality, one seed each; a missing modality gives one 'too little data' row."""
    rows = []
    for model in study.models():
        for left, right in MODALITY_CONTRASTS:
            a, b = study.best(model, left), study.best(model, right)
            label = f"{study.best(model).model_name}: {left} - {right}"
            if a is None or b is None:
                rows.append({"contrast": label, by: "all", "languages": 0, "difference": None, "low": None,
                             "high": None, "runs": "",
                             "note": f"too little data (no finished {left if a is None else right} trial)"})
                continue
            rows += _difference_rows(_side(study, a, False), _side(study, b, False), by, label, a, b)
    return rows


def _difference_rows(a: Side, b: Side, by: str, label: str, a_trial: TrialRun, b_trial: TrialRun) -> list[dict]:
    """The contrast rows of two configurations per group, over the target languages both evaluated."""
    if not a.runs or not b.runs:  # no per-example data: point estimates over the shared languages only
        shared = set(a_trial.scores) & set(b_trial.scores)
        a_groups = target_group_means({k: v for k, v in a_trial.scores.items() if k in shared}, by)
        b_groups = target_group_means({k: v for k, v in b_trial.scores.items() if k in shared}, by)
        return [{"contrast": label, by: g, "languages": sum(is_target(k) and group_of(k, by) == g for k in shared),
                 "difference": a_groups[g] - b_groups[g], "low": None, "high": None, "runs": "1 vs 1",
                 "note": "no interval: a trial has no per-example scores (e.g. ASHA stopped it early)"}
                for g in sorted(a_groups)]
    return [{"contrast": label, by: g, "languages": len(c.languages), "difference": c.estimate, "low": c.low,
             "high": c.high, "runs": f"{c.runs[0]} vs {c.runs[1]}", "note": c.note}
            for g, c in paired_difference_by_group(a, b, by).items()]


COVARIATES = ("same_script", "subword_overlap")  # what a typology fit holds fixed, where known and not constant


def distance_rows(study: Study) -> tuple[list[dict], list[dict]]:
    """(points: per model and target language, the gap to English, each URIEL+ distance with the number of features
    it rests on, the covariates, and why the language is left out of the analysis, if it is; fits: per model and
    distance kind, ``typology_fits`` of those points)."""
    table = distances_to_english()
    english_script = get_language("en").script
    points, fits, languages = [], [], per_language_rows(study)
    for model in study.models():
        name = study.best(model).model_name
        rows = [r for r in languages if r["model"] == name and r["gap_to_en"] is not None]
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
    adjusted = dict(zip(tested, holm([tests[kind].p for kind in tested])))
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
    from study.models import get_spec, load_tokenizer
    from study.tasks import get_task

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


MIN_IMPORTANCE_TRIALS = 20  # fANOVA's forest on fewer trials ranks parameters confidently even on pure noise
INACTIVE = "(inactive)"  # the value of a conditional parameter in a trial that did not take its branch


def importance_rows(study: Study) -> list[dict]:
    """Optuna's fANOVA importance of each searched parameter for English dev, per model, from at least
    ``MIN_IMPORTANCE_TRIALS`` finished search trials; parameters on their searched scale (``importance_inputs``),
    conditional ones included. Otherwise one row that says why there is no importance."""
    import optuna

    rows = []
    for model in study.models():
        trials = study.trials_of(model)
        name = trials[0].model_name
        space = _space(study, model)
        why = (f"{len(trials)} finished trials; fANOVA needs at least {MIN_IMPORTANCE_TRIALS}"
               if len(trials) < MIN_IMPORTANCE_TRIALS else
               "every trial has the same English dev score" if len({t.dev for t in trials}) < 2 else
               "the study did not record its search space (space.* parameters)" if not space else "")
        if why:
            rows.append({"model": name, "parameter": "all", "importance": None, "note": f"no importance: {why}"})
            continue
        values, distributions = importance_inputs(space, [t.params for t in trials])
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        search = optuna.create_study(direction="maximize")
        search.add_trials([optuna.trial.create_trial(params=v, distributions=distributions, value=t.dev)
                           for v, t in zip(values, trials)])
        importances = optuna.importance.get_param_importances(
            search, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        rows += [{"model": name, "parameter": n, "importance": v, "note": "conditional" if space[n].when else ""}
                 for n, v in importances.items()]
    return rows


def _parent_params(study: Study, model: str) -> dict:
    """The MLflow parameters of the model's study (parent) run; {} when there is none."""
    return next((p.data.params for p in study.studies if p.data.tags.get("model") == model), {})


def _space(study: Study, model: str) -> dict:
    """The searched parameters (``search_space.Param``) the model's study recorded, by name ({} when none)."""
    from study.search_space import SPACE_PARAM_PREFIX, Param

    return {k[len(SPACE_PARAM_PREFIX):]: Param.from_json(k[len(SPACE_PARAM_PREFIX):], v)
            for k, v in sorted(_parent_params(study, model).items()) if k.startswith(SPACE_PARAM_PREFIX)}


def importance_inputs(space: dict, trial_params: list[dict]) -> tuple[list[dict], dict]:
    """fANOVA inputs from trials' MLflow parameters (strings): (values per trial, distributions). Numbers go on the
    scale they were searched on (log10 of log-sampled ones: Optuna's fANOVA itself works on the raw values). A
    trial without a conditional parameter gets ``INACTIVE`` (categorical) or a value a tenth of the searched range
    below it (numeric), so the branch taken counts as part of the parameter's effect."""
    import math

    import optuna.distributions as D

    values: list[dict] = [{} for _ in trial_params]
    distributions = {}
    for name, param in space.items():
        missing = any(name not in p for p in trial_params)
        if param.type == "categorical":
            choices = [str(c) for c in param.choices] + ([INACTIVE] if missing else [])
            distributions[name] = D.CategoricalDistribution(choices)
            for out, params in zip(values, trial_params):
                out[name] = params.get(name, INACTIVE)
            continue
        scale = math.log10 if param.log else float
        low, high = scale(param.low), scale(param.high)
        inactive = low - (high - low) / 10
        distributions[name] = D.FloatDistribution(inactive if missing else low, high)
        for out, params in zip(values, trial_params):
            out[name] = scale(float(params[name])) if name in params else inactive
    return values, distributions


def header(study: Study) -> dict:
    """What the reader must know before reading any number."""
    parents = study.studies
    suites = sorted({p.data.params.get("suite", "?") for p in parents}) or ["?"]
    presets = sorted({p.data.params.get("preset", "?") for p in parents}) or ["?"]
    models = []
    for model in study.models():
        trial = study.best(model)
        models.append(f"{trial.model_name}" + (" — OFFLINE STAND-IN, not the paper's model" if trial.stand_in else ""))
    counts = {model: len(study.trials_of(model)) for model in study.models()}
    seeds = {model: len(study.seeds_of(study.best(model))) for model in study.models()}
    from study.tasks import get_task

    return {"experiment": study.experiment, "task": study.task, "protocol": get_task(study.task).protocol,
            "suite": ", ".join(suites),
            "preset": ", ".join(presets),
            "models": "; ".join(models), "trials": _per_model(counts), "seeds": _per_model(seeds),
            "metric": study.metric,
            "selection": "English dev only: every configuration, checkpoint and early stop was chosen on the English "
                         "dev set; target-language test scores were never used to choose anything"}


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
    modality: list[dict]  # modality_rows
    distance_points: list[dict]  # distance_rows: per (model, target language), its distances and covariates
    distance_fits: list[dict]  # distance_rows: per (model, distance kind), the Holm-corrected permutation test
    importance: list[dict]  # importance_rows

    @classmethod
    def compute(cls, study: Study) -> ReportTables:
        """All tables of ``study``."""
        points, fits = distance_rows(study)
        return cls(study, per_language_rows(study), {by: group_rows(study, by) for by in GROUPINGS},
                   task_score_rows(study), comparison_rows(study), modality_rows(study), points, fits,
                   importance_rows(study))

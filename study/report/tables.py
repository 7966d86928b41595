"""The report's tables as lists of row dicts, computed from a ``Study``'s confirm runs: per language, per group, arm
and model contrasts with paired bootstrap intervals, gap vs typological distance (permutation tests, Holm-corrected),
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
from study.arms import arm_contrasts
from study.errors import StudyError
from study.languages import DISTANCE_KINDS, GROUPINGS, distances_to_english, get_language, group_of
from study.metrics import xtreme_r_average
from study.protocol import (
    ALIGNMENT_EMBEDDINGS_ARTIFACT,
    ALIGNMENT_UNITS,
    EVAL_SUBSET_SEED,
    REFERENCE_LINES,
    alignment_layers,
    all_languages_mean,
    english_reference,
    group_key,
    is_target,
    language_key,
    reference_key,
    selection_key,
    target_average_key,
    target_group_means,
    target_mean,
)
from study.report.alignment import (
    contrast_sentence,
    delta_rows,
    retrieval_contrast,
    seed_contrast_by_group,
    transfer_alignment_fit,
    transfer_alignment_points,
)
from study.report.load import ArmRuns, Study, TrialRun

ALIGNMENT_TABLE_MEASURES = ("xx_to_en", "centred_distance")  # sentence-level match; the language-identity offset


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


def task_score_rows(study: Study) -> list[dict]:
    """Per model and arm, the confirm runs' seed-mean score averaged over every evaluated language of the task,
    English included — XTREME-R's task score (QA already (F1 + EM) / 2) when the task is an XTREME-R task and every
    language it lists was evaluated — beside the zero-shot mean over the non-English targets."""
    from study.tasks import get_task

    task = get_task(study.task)
    rows, languages = [], per_language_rows(study)
    for group in study.arm_runs():
        scores = {r["language"]: r["score"] for r in languages
                  if r["model"] == group.model_name and r["arm"] == group.arm}
        rows.append({"model": group.model_name, "arm": group.arm, "task": task.name, "suite": task.suite,
                     "languages": f"{len(scores)} of {len(task.languages)}",
                     "all_languages": all_languages_mean(scores), "zero_shot_target_mean": target_mean(scores),
                     "xtreme_r_task_score": task.suite == "xtreme-r" and set(task.languages) <= set(scores)})
    return rows


def overall_rows(task_rows: list[dict], tasks: list[str]) -> list[dict]:
    """Per model and arm, the mean over ``tasks`` of its all-language task scores (``metrics.xtreme_r_average``):
    XTREME-R's overall score when every row is an XTREME-R task score and the model has every task; otherwise the
    note says what the mean is."""
    rows = []
    for model, arm in sorted({(r["model"], r["arm"]) for r in task_rows}):
        mine = {r["task"]: r for r in task_rows if r["model"] == model and r["arm"] == arm}
        missing = [t for t in tasks if t not in mine]
        why = (f"missing {', '.join(missing)}" if missing else
               "" if all(r["xtreme_r_task_score"] for r in mine.values()) else
               "not every task is an XTREME-R task with all its languages")
        rows.append({"model": model, "arm": arm, "tasks": len(mine), "overall": xtreme_r_average(
            {t: {"all": r["all_languages"]} for t, r in mine.items()}),
            "note": "XTREME-R overall score" if not why else f"mean over {len(mine)} task(s), not XTREME-R's: {why}"})
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
    """Per model, each arm contrast of ``study.arms.arm_contrasts`` (VME - plain, tuned - reference, the modality
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


def _probed(study: Study, model: str) -> dict[str, list[TrialRun]]:
    """{arm: its confirm runs that logged the alignment probe} of one model, arms in ``arm_runs`` order."""
    groups = {g.arm: [r for r in g.runs if r.alignment] for g in study.arm_runs() if g.model == model}
    return {arm: runs for arm, runs in groups.items() if runs}


def alignment_rows(study: Study) -> tuple[list[dict], list[dict], list[str]]:
    """The alignment probe (``study/report/alignment.py``) per model, from the confirm runs that logged it (``study.tune
    --alignment-probe``): (Δ alignment rows per arm, family, measure and probed layer; contrast rows of each arm
    contrast — xx_to_en retrieval with the paired bootstrap over sentences and seeds, over all shared targets and per
    family; the centred distance with seeds resampled, per family; one sentence per contrast for the results summary:
    where retrieval at the last layer moved, and whether the transfer contrast tracks it across languages)."""
    deltas, contrasts, summary = [], [], []
    for model in study.models():
        probed = _probed(study, model)
        if not probed:
            continue
        first = next(iter(probed.values()))[0]
        name, layers = first.model_name, alignment_layers(first.alignment)
        reports = {arm: [r.alignment for r in runs] for arm, runs in probed.items()}
        deltas += [{"model": name, "measure": measure, "layer": layer, **row} for measure in ALIGNMENT_TABLE_MEASURES
                   for layer in layers for row in delta_rows(reports, measure, layer)]
        for left, right in arm_contrasts(list(probed)):
            label = f"{name}: {left} - {right}"
            examples = [[{ALIGNMENT_UNITS: r.alignment_units} for r in probed[arm]] for arm in (left, right)]
            for layer in layers:
                retrieval = retrieval_contrast(*examples, "xx_to_en", layer)  # per family; the summary's at the last
                found = [("xx_to_en", retrieval_contrast(*examples, "xx_to_en", layer, by=None)),
                         ("xx_to_en", retrieval),
                         ("centred_distance", seed_contrast_by_group(reports[left], reports[right],
                                                                     "centred_distance", layer))]
                contrasts += [{"measure": measure, "layer": layer, **_contrast_row(label, "family", group, c)}
                              for measure, per_group in found for group, c in per_group.items()]
            last = layers[-1]
            with_scores = [[{**r.alignment, **{language_key(study.metric, k): v for k, v in r.scores.items()}}
                            for r in probed[arm]] for arm in (left, right)]
            fit = transfer_alignment_fit(transfer_alignment_points(*with_scores, study.metric, "xx_to_en", last))
            summary.append(contrast_sentence(f"{label}, xx→en retrieval of the alignment probe at layer {last}",
                                             retrieval, fit))
    return deltas, contrasts, summary


def alignment_figures(study: Study) -> dict[str, dict[str, bytes]]:
    """{model name: {arm: the probe's embedding artifact of the arm's first probed confirm run}}, for the PCA
    figure (``report.alignment.alignment_figure``); models without a probed run are left out."""
    out = {}
    for model in study.models():
        probed = _probed(study, model)
        figures = {arm: study.artifact(runs[0].run_id, ALIGNMENT_EMBEDDINGS_ARTIFACT) for arm, runs in probed.items()}
        if any(data is not None for data in figures.values()):
            out[next(iter(probed.values()))[0].model_name] = {arm: d for arm, d in figures.items() if d is not None}
    return out


def _refused(label: str, by: str, note: str) -> dict:
    return {"contrast": label, by: "all", "languages": 0, "difference": None, "low": None, "high": None, "runs": "",
            "note": note}


def _difference_rows(a: ArmRuns, b: ArmRuns, by: str, label: str) -> list[dict]:
    """The contrast rows a - b per group over the target languages both evaluated (``paired_difference_by_group``);
    every row names the seeds per side and the languages in the intersection."""
    side_a, side_b = _side(a), _side(b)
    if not side_a.runs or not side_b.runs:
        return [_refused(label, by, "no interval: a side logged no per-example scores")]
    return [_contrast_row(label, by, g, c) for g, c in paired_difference_by_group(side_a, side_b, by).items()]


def _contrast_row(label: str, by: str, group: str, c) -> dict:
    """One contrast row: the contrast, its group, the languages in the intersection, the estimate and interval, the
    runs per side and why there is no interval (``analysis.Contrast``)."""
    return {"contrast": label, by: group, "languages": len(c.languages), "difference": c.estimate, "low": c.low,
            "high": c.high, "runs": f"{c.runs[0]} vs {c.runs[1]}", "note": c.note}


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
    """Per model, each reference line its study measured on the same test items (``study.reference_lines``: the
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
        name = next(t for t in study.trials if t.model == model).model_name
        space = _space(study, model)
        why = ("no search phase: the study has no tuned arm" if not trials else
               f"{len(trials)} finished search trials; fANOVA needs at least {MIN_IMPORTANCE_TRIALS}"
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
    models, groups = [], study.arm_runs()
    for model in study.models():
        run = next(t for t in study.trials if t.model == model)
        models.append(f"{run.model_name}" + (" — OFFLINE STAND-IN, not the paper's model" if run.stand_in else ""))
    counts = {model: len(study.trials_of(model)) for model in study.models()}
    seeds = {g.label: len(g.runs) for g in groups}
    from study.tasks import get_task

    return {"experiment": study.experiment, "task": study.task, "protocol": get_task(study.task).protocol,
            "suite": ", ".join(suites),
            "preset": ", ".join(presets),
            "models": "; ".join(models), "arms": ", ".join(dict.fromkeys(g.arm for g in groups)) or "none",
            "search trials (tuned arms)": _per_model(counts), "confirm runs (seeds) per arm": _per_model(seeds),
            "metric": study.metric,
            "synonyms (virtual copies)": "; ".join(sorted({p.data.params.get("synonyms_source", "?")
                                                           for p in parents})) or "?",
            "selection": "English dev only: every configuration, checkpoint and early stop was chosen on the English "
                         "dev set; target-language test scores were never used to choose anything",
            "comparisons": "from confirm runs only (each arm's selected configuration re-run on the same fresh seeds, "
                           "full budget, no early stopping); search trials only choose configurations"}


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

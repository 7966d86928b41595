"""``python -m study.report --experiment NAME``: the cross-family comparison a researcher reads, from MLflow only.

It reads the finished studies of an MLflow experiment (``study.tune`` runs: the study's parent run, one nested run
per trial, seed repeats) through the client API and writes, to ``--out`` and as artifacts of a ``report`` run in the
same experiment:

* per model: the per-language zero-shot scores of the configuration selected on English dev, with family, branch,
  script and gap to English;
* model comparison per family (each pair of models, e.g. XLM-R - mBERT) and modality effect per family
  (multimodal - none, text - none, multimodal - text), with 95 % bootstrap intervals over test examples and seeds;
* transfer gap vs typological distance to English (URIEL+): scatter plots with fitted lines and a regression table;
* the search: Optuna parameter importance and optimisation history; VME loss weights vs English dev and targets;
* a header that states the suite, models (offline stand-ins marked), preset, trials, seeds and that selection used
  English dev only. Cells with too little data say so.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from study.analysis import Interval, Side, difference_by_group, fit_line, units_score
from study.errors import StudyError, run_cli
from study.languages import DISTANCE_KINDS, GROUPINGS, distances_to_english, get_language
from study.protocol import (
    DEFAULT_MODALITY,
    ENGLISH_DEV,
    EXAMPLES_ARTIFACT,
    MODALITY_CONTRASTS,
    REPORT_RUN,
    RUN_KIND_TAG,
    SEED_REPEAT_RUN,
    STUDY_RUN,
    TRIAL_RUN,
    english_reference,
    is_target,
    language_key,
    language_scores,
    select,
    selection_key,
    target_group_means,
    target_mean,
)

LOSS_WEIGHTS = ("alpha", "beta", "w_robust")


@dataclass
class TrialRun:
    run_id: str
    kind: str  # TRIAL_RUN or SEED_REPEAT_RUN
    study_run: str
    model: str
    model_name: str
    stand_in: bool
    modality: str
    params: dict
    dev: float
    start: int
    scores: dict[str, float] = field(default_factory=dict)  # test languages at the selected step
    units: dict[str, list] | None = None  # per-example units, when the trial logged them

    @property
    def target_mean(self) -> float:
        return target_mean(self.scores)


@dataclass
class Study:
    experiment: str
    uri: str
    metric: str
    studies: list  # the parent runs
    trials: list[TrialRun]

    def models(self) -> list[str]:
        return sorted({t.model for t in self.trials})

    def best(self, model: str, modality: str | None = None) -> TrialRun | None:
        """The configuration English dev selects (never a test score); the earlier trial on ties."""
        pool = [t for t in self.trials if t.kind == TRIAL_RUN and t.model == model
                and (modality is None or t.modality == modality)]
        return select(pool, score=lambda t: t.dev, order=lambda t: t.start) if pool else None

    def seeds_of(self, best: TrialRun) -> list[TrialRun]:
        """The best configuration's own run and its seed repeats (same study)."""
        return [best] + [t for t in self.trials if t.kind == SEED_REPEAT_RUN and t.study_run == best.study_run]


# --- reading MLflow -----------------------------------------------------------------------------------------------


def load_study(uri: str, experiment: str) -> Study:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise StudyError(f"no MLflow experiment named {experiment!r} at {uri} (experiments there: {names})")
    runs = client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'", max_results=50000)
    studies = [r for r in runs if r.data.tags.get(RUN_KIND_TAG) == STUDY_RUN]
    candidates = [r for r in runs if r.data.tags.get(RUN_KIND_TAG) in (TRIAL_RUN, SEED_REPEAT_RUN)]
    if not candidates:
        raise StudyError(f"experiment {experiment!r} at {uri} has no finished study trials ({len(runs)} finished "
                         "runs, none made by python -m study.tune): run a study first, or pass its --experiment")
    tasks = {r.data.params.get("task") for r in studies} - {None}
    if len(tasks) > 1:
        raise StudyError(f"experiment {experiment!r} mixes tasks {sorted(tasks)}: report one task per experiment")
    from study.tasks import get_task

    metric = get_task(tasks.pop() if tasks else candidates[0].data.params["task"]).metric
    trials = [t for t in (_trial(client, r, metric) for r in candidates) if t is not None]
    if not trials:
        raise StudyError(f"experiment {experiment!r}: no finished trial recorded an English dev score")
    return Study(experiment, uri, metric, studies, trials)


def _trial(client, run, metric: str) -> TrialRun | None:
    history = client.get_metric_history(run.info.run_id, selection_key(metric))
    if not history:
        return None
    tags, params = run.data.tags, run.data.params
    selected = select(history, score=lambda m: m.value, order=lambda m: m.step)
    units, scores = None, {}
    if any(a.path == EXAMPLES_ARTIFACT for a in client.list_artifacts(run.info.run_id)):
        with tempfile.TemporaryDirectory() as scratch:
            data = json.loads(Path(client.download_artifacts(run.info.run_id, EXAMPLES_ARTIFACT, scratch)).read_text())
        units = {k: v for k, v in data["units"].items() if k != ENGLISH_DEV}
        scores = {lang: units_score(u) for lang, u in units.items()}
    else:  # no per-example scores: the logged test metrics at the selected step (one query per language)
        for lang in language_scores(run.data.metrics, metric):
            history = client.get_metric_history(run.info.run_id, language_key(metric, lang))
            values = [m for m in history if m.step == selected.step]
            if values:
                scores[lang] = values[-1].value
    return TrialRun(run.info.run_id, tags[RUN_KIND_TAG], tags.get("mlflow.parentRunId", ""), tags.get("model", "?"),
                    tags.get("model_name", tags.get("model", "?")), tags.get("offline_stand_in") == "True",
                    params.get("modality", DEFAULT_MODALITY), dict(params), selected.value, run.info.start_time or 0,
                    scores, units)


# --- tables -------------------------------------------------------------------------------------------------------


def english_score(runs: list[TrialRun]) -> float:
    """The English reference of a configuration's gaps: over its seeds, the mean of each run's English test score
    (English dev where English was not tested; ``protocol.english_reference``)."""
    return sum(english_reference(r.scores, r.dev) for r in runs) / len(runs)


def per_language_rows(study: Study) -> list[dict]:
    """Per model, the selected configuration's score per language, averaged over its seeds, with the gap to
    English (``english_score``) for every target language."""
    rows = []
    for model in study.models():
        best = study.best(model)
        runs = study.seeds_of(best)
        english = english_score(runs)
        for lang in sorted(best.scores):
            info = get_language(lang)
            values = [r.scores[lang] for r in runs if lang in r.scores]
            score = sum(values) / len(values)
            rows.append({"model": best.model_name, "language": lang, "name": info.name, "family": info.family,
                         "branch": info.branch, "script": info.script, "score": score, "seeds": len(values),
                         "gap_to_en": english - score if is_target(lang) else None})
    return rows


def group_rows(study: Study, by: str) -> list[dict]:
    """Per model, the selected configuration's mean over each group's target languages (seed-averaged), with the
    gap to English."""
    rows = []
    for model in study.models():
        best = study.best(model)
        runs = study.seeds_of(best)
        scores = Side([r.units for r in runs if r.units]).scores() or best.scores
        english = english_score(runs)
        for group, value in target_group_means(scores, by).items():
            rows.append({"model": best.model_name, by: group, "score": value, "gap_to_en": english - value})
    return rows


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
    rows = []
    for model in study.models():
        for left, right in MODALITY_CONTRASTS:
            a, b = study.best(model, left), study.best(model, right)
            label = f"{study.best(model).model_name}: {left} - {right}"
            if a is None or b is None:
                rows.append({"contrast": label, by: "all", "difference": None, "low": None, "high": None,
                             "note": f"too little data (no finished {left if a is None else right} trial)"})
                continue
            rows += _difference_rows(_side(study, a, False), _side(study, b, False), by, label, a, b)
    return rows


def _difference_rows(a: Side, b: Side, by: str, label: str, a_trial: TrialRun, b_trial: TrialRun) -> list[dict]:
    if not a.runs or not b.runs:  # no per-example data: point estimates only
        a_groups, b_groups = target_group_means(a_trial.scores, by), target_group_means(b_trial.scores, by)
        return [{"contrast": label, by: g, "difference": a_groups[g] - b_groups[g], "low": None, "high": None,
                 "note": "no interval: a trial has no per-example scores (e.g. ASHA stopped it early)"}
                for g in sorted(set(a_groups) & set(b_groups))]
    intervals: dict[str, Interval] = difference_by_group(a, b, by)
    return [{"contrast": label, by: g, "difference": i.estimate, "low": i.low, "high": i.high, "note": i.note}
            for g, i in intervals.items()]


def distance_rows(study: Study) -> tuple[list[dict], list[dict]]:
    """(points: model, language, gap, distances), (fits: model, distance kind, slope, intercept, r2, n)."""
    table = distances_to_english()
    points, fits = [], []
    for row in per_language_rows(study):
        if row["gap_to_en"] is None:
            continue
        points.append({**row, **{f"{k}_distance": table.get(row["language"], {}).get(k) for k in DISTANCE_KINDS}})
    for model in sorted({p["model"] for p in points}):
        mine = [p for p in points if p["model"] == model]
        for kind in DISTANCE_KINDS:
            pairs = [(p[f"{kind}_distance"], p["gap_to_en"]) for p in mine if p[f"{kind}_distance"] is not None]
            fit = fit_line([x for x, _ in pairs], [y for _, y in pairs])
            fits.append({"model": model, "distance": kind, "slope": fit.slope if fit else None,
                         "intercept": fit.intercept if fit else None, "r2": fit.r2 if fit else None,
                         "n": len(pairs), "note": "" if fit else f"too little data ({len(pairs)} languages)"})
    return points, fits


def best_distance_rows(fits: list[dict]) -> list[dict]:
    """Per model, the distance whose line explains the gap best (highest r²)."""
    rows = []
    for model in sorted({f["model"] for f in fits}):
        fitted = [f for f in fits if f["model"] == model and f["r2"] is not None]
        if fitted:
            rows.append(max(fitted, key=lambda f: f["r2"]))
    return rows


def importance_rows(study: Study) -> list[dict]:
    """Optuna's fANOVA importance of each searched parameter for English dev, per model."""
    import optuna

    rows = []
    for model in study.models():
        trials = [t for t in study.trials if t.kind == "trial" and t.model == model]
        names = _searched(study, model)
        if len(trials) < 3 or len({t.dev for t in trials}) < 2:
            why = f"{len(trials)} trials" if len(trials) < 3 else "every trial has the same English dev score"
            rows.append({"model": trials[0].model_name, "parameter": "all", "importance": None,
                         "note": f"too little data ({why})"})
            continue
        names = [n for n in names if all(n in t.params for t in trials)]  # conditional ones: not comparable
        frozen = []
        for number, trial in enumerate(sorted(trials, key=lambda t: t.start)):
            values = {n: _parse(trial.params[n]) for n in names if n in trial.params}
            distributions = {n: _distribution(n, [_parse(t.params[n]) for t in trials if n in t.params])
                             for n in values}
            frozen.append(optuna.trial.create_trial(params=values, distributions=distributions, value=trial.dev))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study_ = optuna.create_study(direction="maximize")
        study_.add_trials(frozen)
        try:
            importances = optuna.importance.get_param_importances(study_)
        except (RuntimeError, ValueError) as err:
            rows.append({"model": trials[0].model_name, "parameter": "all", "importance": None,
                         "note": f"not computable: {err}"})
            continue
        rows += [{"model": trials[0].model_name, "parameter": n, "importance": v, "note": ""}
                 for n, v in importances.items()]
    return rows


def _searched(study: Study, model: str) -> list[str]:
    for parent in study.studies:
        if parent.data.tags.get("model") == model and parent.data.params.get("searched"):
            return parent.data.params["searched"].split(",")
    varying = set()
    trials = [t for t in study.trials if t.kind == "trial" and t.model == model]
    for name in set().union(*(t.params for t in trials)):
        if len({t.params.get(name) for t in trials}) > 1 and not name.startswith(("scaling.", "intermediate.")):
            varying.add(name)
    return sorted(varying)


def _parse(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _distribution(name: str, values: list):
    import optuna.distributions as D

    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and len(set(values)) > 1:
        low, high = min(values), max(values)
        if all(isinstance(v, int) for v in values):
            return D.IntDistribution(int(low), int(high))
        return D.FloatDistribution(float(low), float(high))
    return D.CategoricalDistribution(sorted(set(values), key=str))


# --- figures ------------------------------------------------------------------------------------------------------


def _figure(path: Path, draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = draw(plt)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path.name


def family_figure(rows: list[dict], metric: str, out: Path) -> str:
    def draw(plt):
        models = sorted({r["model"] for r in rows})
        families = sorted({r["family"] for r in rows})
        figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(families) + 2), 4))
        width = 0.8 / len(models)
        for i, model in enumerate(models):
            values = {r["family"]: r["score"] for r in rows if r["model"] == model}
            axis.bar([f + i * width for f in range(len(families))], [values.get(f, 0) for f in families], width,
                     label=model)
        axis.set_xticks([f + 0.4 - width / 2 for f in range(len(families))], families, rotation=30, ha="right")
        axis.set_ylabel(f"zero-shot {metric}")
        axis.legend(fontsize=7)
        return figure

    return _figure(out / "family_scores.png", draw)


def difference_figure(rows: list[dict], by: str, name: str, title: str, out: Path) -> str | None:
    usable = [r for r in rows if r["difference"] is not None]
    if not usable:
        return None

    def draw(plt):
        figure, axis = plt.subplots(figsize=(11, 0.35 * len(usable) + 1.5))
        for y, row in enumerate(usable):
            axis.plot(row["difference"], y, "o", color="C0")
            if row["low"] is not None:
                axis.plot([row["low"], row["high"]], [y, y], "-", color="C0")
        axis.axvline(0, color="grey", lw=0.8)
        short = [re.sub(r" \[[^\]]*\]", "", f"{r['contrast']} | {r[by]}") for r in usable]  # tables: full names
        axis.set_yticks(range(len(usable)), short, fontsize=7)
        axis.set_title(title, fontsize=9)
        return figure

    return _figure(out / name, draw)


def distance_figure(points: list[dict], fits: list[dict], out: Path) -> str | None:
    if not points:
        return None

    def draw(plt):
        figure, axes = plt.subplots(2, 3, figsize=(12, 7))
        for axis, kind in zip(axes.flat, DISTANCE_KINDS):
            for i, model in enumerate(sorted({p["model"] for p in points})):
                mine = [p for p in points if p["model"] == model and p[f"{kind}_distance"] is not None]
                axis.scatter([p[f"{kind}_distance"] for p in mine], [p["gap_to_en"] for p in mine], s=14,
                             color=f"C{i}", label=model)
                fit = next(f for f in fits if f["model"] == model and f["distance"] == kind)
                if fit["slope"] is not None:
                    xs = [min(p[f"{kind}_distance"] for p in mine), max(p[f"{kind}_distance"] for p in mine)]
                    axis.plot(xs, [fit["slope"] * x + fit["intercept"] for x in xs], color=f"C{i}",
                              label=f"fit r²={fit['r2']:.2f}")
            axis.set_xlabel(f"{kind} distance to English")
            axis.set_ylabel("gap to English")
            axis.legend(fontsize=6)
        return figure

    return _figure(out / "gap_vs_distance.png", draw)


def history_figure(study: Study, out: Path) -> str:
    def draw(plt):
        figure, axis = plt.subplots(figsize=(7, 4))
        for i, model in enumerate(study.models()):
            trials = sorted((t for t in study.trials if t.kind == "trial" and t.model == model), key=lambda t: t.start)
            values = [t.dev for t in trials]
            axis.plot(range(1, len(values) + 1), values, "o", color=f"C{i}", label=f"{trials[0].model_name}")
            axis.plot(range(1, len(values) + 1), [max(values[:k + 1]) for k in range(len(values))], "-",
                      color=f"C{i}", alpha=0.6)
        axis.set_xlabel("trial (start order)")
        axis.set_ylabel(f"English dev {study.metric}")
        axis.set_title("optimisation history (line: best so far)", fontsize=9)
        axis.legend(fontsize=7)
        return figure

    return _figure(out / "optimisation_history.png", draw)


def importance_figure(rows: list[dict], out: Path) -> str | None:
    usable = [r for r in rows if r["importance"] is not None]
    if not usable:
        return None

    def draw(plt):
        figure, axis = plt.subplots(figsize=(7, 0.3 * len(usable) + 1.5))
        axis.barh(range(len(usable)), [r["importance"] for r in usable])
        axis.set_yticks(range(len(usable)), [f"{r['model']}: {r['parameter']}" for r in usable], fontsize=7)
        axis.set_xlabel("fANOVA importance for English dev")
        return figure

    return _figure(out / "parameter_importance.png", draw)


def loss_weight_figure(study: Study, out: Path) -> str:
    def draw(plt):
        figure, axes = plt.subplots(2, len(LOSS_WEIGHTS), figsize=(12, 6))
        for column, weight in enumerate(LOSS_WEIGHTS):
            for i, model in enumerate(study.models()):
                trials = [t for t in study.trials if t.kind == "trial" and t.model == model and weight in t.params]
                xs = [float(t.params[weight]) for t in trials]
                axes[0, column].scatter(xs, [t.dev for t in trials], color=f"C{i}", s=14, label=model)
                axes[1, column].scatter(xs, [t.target_mean for t in trials], color=f"C{i}", s=14, label=model)
            axes[0, column].set_ylabel(f"English dev {study.metric}")
            axes[1, column].set_ylabel(f"target mean {study.metric}")
            for row in (0, 1):
                axes[row, column].set_xlabel(weight)
                if weight in ("alpha", "beta"):
                    axes[row, column].set_xscale("log")
            axes[0, column].legend(fontsize=6)
        return figure

    return _figure(out / "loss_weights.png", draw)


# --- HTML and CSV -------------------------------------------------------------------------------------------------


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "<p><em>too little data: no rows</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _interval_rows(rows: list[dict]) -> list[dict]:
    return [{**r, "95% interval": f"[{r['low']:.4f}, {r['high']:.4f}]" if r["low"] is not None else r["note"]}
            for r in rows]


def _write_csv(path: Path, rows: list[dict]) -> str:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)
    return path.name


def header(study: Study) -> dict:
    """What the reader must know before reading any number."""
    parents = study.studies
    suites = sorted({p.data.params.get("suite", "?") for p in parents}) or ["?"]
    presets = sorted({p.data.params.get("preset", "?") for p in parents}) or ["?"]
    models = []
    for model in study.models():
        trial = study.best(model)
        models.append(f"{trial.model_name}" + (" — OFFLINE STAND-IN, not the paper's model" if trial.stand_in else ""))
    counts = {model: sum(t.kind == "trial" and t.model == model for t in study.trials) for model in study.models()}
    seeds = {model: len(study.seeds_of(study.best(model))) for model in study.models()}
    task = parents[0].data.params.get("task", "?") if parents else "?"
    return {"experiment": study.experiment, "task": task, "suite": ", ".join(suites), "preset": ", ".join(presets),
            "models": "; ".join(models), "trials": _per_model(counts), "seeds": _per_model(seeds),
            "metric": study.metric,
            "selection": "English dev only: every configuration, checkpoint and early stop was chosen on the English "
                         "dev set; target-language test scores were never used to choose anything"}


def _per_model(values: dict) -> str:
    return ", ".join(f"{model}: {value}" for model, value in values.items())


def build_report(study: Study, out: Path) -> list[str]:
    """Write tables, CSVs, figures and report.html into out; returns the file names written."""
    out.mkdir(parents=True, exist_ok=True)
    info = header(study)
    languages = per_language_rows(study)
    groups = {by: group_rows(study, by) for by in GROUPINGS}
    comparison, modality = comparison_rows(study), modality_rows(study)
    points, fits = distance_rows(study)
    importance = importance_rows(study)
    files = [_write_csv(out / "per_language.csv", languages), _write_csv(out / "model_comparison.csv", comparison),
             _write_csv(out / "modality_effect.csv", modality), _write_csv(out / "gap_vs_distance.csv", fits),
             _write_csv(out / "parameter_importance.csv", importance),
             *[_write_csv(out / f"by_{by}.csv", rows) for by, rows in groups.items()]]
    figures = {"family": family_figure(groups["family"], study.metric, out),
               "comparison": difference_figure(comparison, "family", "model_comparison.png",
                                               "model difference per family (95 % bootstrap interval)", out),
               "modality": difference_figure(modality, "family", "modality_effect.png",
                                             "modality effect per family (95 % bootstrap interval)", out),
               "distance": distance_figure(points, fits, out), "history": history_figure(study, out),
               "importance": importance_figure(importance, out), "weights": loss_weight_figure(study, out)}
    files += [f for f in figures.values() if f]

    def image(key: str) -> str:
        return f'<img src="{figures[key]}" alt="{key}">' if figures[key] else \
            "<p><em>too little data for this figure</em></p>"

    sections = [
        ("Per language (configuration selected on English dev)",
         _table(languages, ["model", "language", "name", "family", "branch", "script", "score", "seeds",
                            "gap_to_en"])),
        ("Per family", image("family") + _table(groups["family"], ["model", "family", "score", "gap_to_en"])),
        ("Per branch", _table(groups["branch"], ["model", "branch", "score", "gap_to_en"])),
        ("Per script", _table(groups["script"], ["model", "script", "score", "gap_to_en"])),
        ("Model comparison per family", image("comparison") + _table(
            _interval_rows(comparison), ["contrast", "family", "difference", "95% interval"])),
        ("Modality effect per family", image("modality") + _table(
            _interval_rows(modality), ["contrast", "family", "difference", "95% interval"])),
        ("Transfer gap vs typological distance to English (URIEL+)",
         image("distance") + "<p>Best-fitting distance per model (highest r²):</p>"
         + _table(best_distance_rows(fits), ["model", "distance", "r2", "slope", "n"])
         + _table(fits, ["model", "distance", "slope", "intercept", "r2", "n", "note"])),
        ("The search: parameter importance and optimisation history", image("importance") + image("history")
         + _table(importance, ["model", "parameter", "importance", "note"])),
        ("VME loss weights vs English dev and target scores", image("weights")),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    facts = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in info.items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>VME study report: {html.escape(study.experiment)}"
            "</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:"
            "collapse;font-size:13px;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:"
            f"100%}}</style></head><body><h1>Zero-shot cross-lingual transfer: {html.escape(study.experiment)}</h1>"
            f"<ul>{facts}</ul>{body}</body></html>")
    (out / "report.html").write_text(page, encoding="utf-8")
    return ["report.html", *files]


def log_report(study: Study, out: Path, info: dict) -> str:
    """A ``report`` run in the experiment holding every file, so people browsing MLflow find it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(study.uri)
    experiment_id = client.get_experiment_by_name(study.experiment).experiment_id
    run = client.create_run(experiment_id, run_name="report", tags={RUN_KIND_TAG: REPORT_RUN,
                                                                                   "metric": study.metric})
    for key in ("task", "suite", "preset"):
        client.log_param(run.info.run_id, key, str(info[key]))
    client.log_param(run.info.run_id, "models", info["models"][:6000])
    client.log_param(run.info.run_id, "trials", info["trials"])
    client.log_param(run.info.run_id, "seeds", info["seeds"])
    client.log_artifacts(run.info.run_id, str(out))
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="the MLflow experiment of the studies (e.g. vme-pocket)")
    parser.add_argument("--mlflow-uri", default=f"sqlite:///{Path('mlflow.db').resolve()}",
                        help="tracking URI (default: sqlite:///<cwd>/mlflow.db, as study.tune)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output directory (default ./report)")
    args = parser.parse_args(argv)
    from study.tracking import check_server

    check_server(args.mlflow_uri)
    study = load_study(args.mlflow_uri, args.experiment)
    print(f"[report] {len(study.trials)} finished trial runs of {', '.join(study.models())} in "
          f"{args.experiment!r}; bootstrapping and drawing...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix=".report-", dir=args.out.parent if args.out.parent.exists() else None) \
            as scratch:  # written whole, then moved: a failed report leaves no half-written directory
        files = build_report(study, Path(scratch))
        run_id = log_report(study, Path(scratch), header(study))
        args.out.mkdir(parents=True, exist_ok=True)
        for name in files:
            Path(scratch, name).replace(args.out / name)
    print(f"report: {args.out.resolve() / 'report.html'} ({len(files)} files); MLflow run {run_id} "
          f"(artifacts) in experiment {args.experiment!r}")
    return 0


if __name__ == "__main__":
    run_cli(main)

"""The report's page: CSV files, ``report.html`` with its tables and figures, and the ``report`` run in MLflow."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

from study.core.inference import MIN_DISTRIBUTION_FREE_PAIRS, MIN_RUNS
from study.core.languages import DISTANCE_KINDS, MIN_SHARED_FEATURES
from study.core.mixed import MIN_LANGUAGES_PER_FAMILY
from study.core.protocol import REPORT_RUN, RUN_KIND_TAG
from study.report.alignment import figure_panels
from study.report.analysis import ALPHA, PERMUTATIONS
from study.report.figures import FIGURES, alignment_figure
from study.report.load import Study
from study.report.model_family import DISTANCE_COLUMNS, INTERACTION_COLUMNS
from study.report.tables import ReportTables, aggregate_rows, header
from study.report.typology import typology_summary
from study.track.mlflow_store import client

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;font-size:13px;"
         "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}")
GROUP_COLUMNS = ["languages", "seeds", "score", "gap_to_en"]  # after the model and the group of a group_rows row
CONTRAST_COLUMNS = ["contrast", "family", "role", "languages", "difference", "95% interval", "method", "p", "p_holm",
                    "runs", "note"]
ENGLISH_ONLY_STAGE = (
    "An English-only intermediate stage cannot act as a pivot between languages: images can link languages only "
    "through captions in several languages, so any effect here works through the English representation.")
MULTILINGUAL_STAGE = (
    "The stages drew their captions in {languages} (<code>--caption-languages</code>): an image, and in the text "
    "arm a translation pair, links those languages, so a stage effect can work through them as well as through "
    "English.")


def stage_languages_note(study) -> str:
    """What the study's intermediate stages could link: English only, or the caption languages its stage runs
    recorded (``intermediate.caption_languages``)."""
    languages = sorted({lang for t in study.trials for lang in
                        t.params.get("intermediate.caption_languages", "en").split(",")} - {""})
    return ENGLISH_ONLY_STAGE if languages == ["en"] else MULTILINGUAL_STAGE.format(languages=", ".join(languages))


MODALITY_NOTE = (
    "<p>No modality contrast is drawn. Comparing the best search trial of each modality would subtract trials that "
    "differ in every hyperparameter, ASHA stop and number of trials; a modality effect needs the controlled "
    "experiment (<code>study.tune.driver --experiment-design modality</code>: fixed fine-tuning, matched backbone "
    "passes, a shuffled-image control, a stage per seed), which this study did not run. The searched modality of a "
    "tuned arm is a hyperparameter like any other. {stage}</p>")
MODALITY_EXPERIMENT_NOTE = (
    "<p>The modality experiment: each fixed arm as it is and after a text, multimodal and multimodal-shuffled "
    "intermediate stage (<code>&lt;arm&gt;+&lt;modality&gt;</code>), the fine-tuning fixed, every stage with the "
    "same steps and one gradient-bearing backbone pass per caption, each confirm seed with its own stage seed; its "
    "contrasts (each stage − none, multimodal − text, multimodal − multimodal-shuffled) are in the arm contrasts "
    "above. multimodal − multimodal-shuffled isolates what the caption-image link adds beyond the image tower and "
    "the extra training. {stage}</p>")
TASK_SCORE_COLUMNS = ["model", "arm", "task", "languages", "all_languages", "zero_shot_target_mean",
                      "xtreme_r_task_score", "not_xtreme_r"]
AGGREGATE_COLUMNS = ["model", "arm", "aggregate", "value", "tasks", "note"]
AGGREGATES_NOTE = (
    "<p>Only XTREME-R task scores (<b>xtreme_r_task_score</b> true: an XTREME-R task under its XTREME-R protocol, "
    "every language, full test sets, QA at 384-token windows) enter these. <b>xtreme_r_avg</b>: the XTREME-R "
    "paper's average, the mean of the four category means; <b>xtreme_r_all_task</b>: google-research/xtreme "
    "evaluate.py's all_task, the flat mean of the ten tasks; <b>flat_f1</b>: the flat mean with QA by F1 alone. "
    "QA tasks count (F1 + EM) / 2 elsewhere. Each needs all ten tasks; a category mean needs only its own.</p>")
TYPOLOGY_METHOD = (
    "<p>Distances come from URIEL+ with its databases integrated and missing features imputed (KNN); a distance "
    f"resting on fewer than {MIN_SHARED_FEATURES} features shared with English before imputation is left out, and "
    "so is its language, for every kind: all kinds of a model are tested on one language set of size n. Per model "
    "and kind, gap = slope &middot; distance + covariates + intercept by least squares, the covariates being same "
    "script as English and subword overlap with English (share of the language's test tokens, in the model's "
    "tokenizer, that occur in English's test data) where known and not constant; r² is the distance's partial r²; "
    f"p is a two-sided permutation test of the slope ({PERMUTATIONS:,} permutations of the gaps across languages, "
    f"Freedman-Lane with covariates, seeded); p_holm is Holm-corrected across the kinds, significant at {ALPHA}.</p>")


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
    return [{**r, "95% interval": f"[{r['low']:.4f}, {r['high']:.4f}]" if r["low"] is not None else "none"}
            for r in rows]


INFERENCE_METHOD = (
    "<p>Every interval is a 95 % t interval with the training seed (run) as the replicate: each run's value is its "
    "mean over the row's languages of its score on the same test items, so the items' noise is inside each run's "
    "value and is not added again. Arms of one model ran the same confirm seeds and are paired by seed "
    "(<b>paired-by-seed t</b> on the per-seed differences, df = seeds − 1); two models share no seeds "
    "(<b>Welch t</b> on the run means, Welch–Satterthwaite df; Welch 1947). No interval below "
    f"{MIN_RUNS} runs a side; with fewer than {MIN_DISTRIBUTION_FREE_PAIRS} paired seeds no distribution-free test "
    "can reach 0.05, and the row says so. Each question's contrasts over all targets are fixed in advance: "
    "VME (vme-reference − plain), the models (each pair on each matched arm), each modality contrast; "
    "<b>primary</b> rows are corrected by Holm (1979) across the question's primary rows, <b>secondary</b> rows "
    "(the tuned arm, whose search the other arm did not get) across theirs; <b>exploratory</b> rows per family by "
    "Holm across the contrast's family rows (statsmodels <code>multipletests</code>); <b>p_holm</b> is the adjusted "
    "p-value. A family differing where another does not is not a tested difference between them (Gelman &amp; Stern "
    "2006).</p>")


MODEL_FAMILY_METHOD = (
    "<p>Does the model contrast depend on the family? Per arm both models ran: a linear mixed model on per-language, "
    "per-run scores, score ~ model × family with crossed random intercepts for the language, the run (a model's "
    "seed) and the language × model (statsmodels <code>MixedLM</code>, variance components in one group), over the "
    f"families with at least {MIN_LANGUAGES_PER_FAMILY} target languages; the interaction is tested by the "
    "likelihood ratio of the ML fits with and without it (χ²). With few languages per family and few seeds that "
    "test is anti-conservative (Pinheiro &amp; Bates 2000): read it with the per-family intervals above. Then each "
    "language's contrast (seed means) against its URIEL+ syntactic distance to English with script as a covariate, "
    "tested by permuting whole families (each family one point), since the languages of a family are not "
    "independent.</p>")


ALIGNMENT_METHOD = (
    "<p>The alignment probe (<code>study.tune.driver --alignment-probe</code>) embeds each target language's parallel "
    "sentences and their English translations with every confirm run's selected checkpoint and with the pretrained "
    "encoder (the same sentences, tokenizer and pooling). <b>xx_to_en</b>: share of target sentences whose nearest "
    "English sentence (cosine) is their translation; <b>centred_distance</b>: distance between the language's and "
    "English's centroids divided by the pair's spread (0: the clouds share a centre; unchanged by a shift common to "
    "all languages). <b>delta</b> = checkpoint − pretrained; a contrast of two arms' deltas is the contrast of their "
    "values (the pretrained term cancels). Intervals: as for transfer, a t interval paired by seed on each run's "
    "mean over the row's languages (retrieval: of its accuracy on the same sentences; distance: of its one value per "
    "language); family rows Holm-corrected per contrast, measure and layer. A smaller distance is necessary for a "
    "shared space, not sufficient; the relation to transfer across languages is a correlation, not a mechanism.</p>")


def _alignment_section(tables: ReportTables, out: Path) -> tuple[str, list[str]]:
    """The alignment probe's section of the page and the figure files it drew (one PCA figure per model)."""
    if not tables.alignment_deltas:
        return ("<p>This study ran no alignment probe (<code>python -m study.tune ... --alignment-probe</code> "
                "probes every confirm run).</p>", [])
    files = []
    for model, figures in tables.alignment_figures.items():
        safe = re.sub(r"[^A-Za-z0-9]+", "_", model)
        name = alignment_figure(figure_panels(figures), out, name=f"alignment_pca_{safe}.png",
                                title=f"{model}: last layer, PCA of the centred embeddings")
        files += [name] if name else []
    images = "".join(f'<img src="{name}" alt="alignment probe PCA">' for name in files)
    content = (ALIGNMENT_METHOD + images + "<p>Δ alignment per arm and family:</p>"
               + _table(tables.alignment_deltas, ["model", "measure", "layer", "arm", "family", "languages", "runs",
                                                  "pretrained", "value", "delta"])
               + "<p>Arm contrasts of the alignment probe:</p>"
               + _table(_interval_rows(tables.alignment_contrasts), ["contrast", "measure", "layer", "family", "role",
                                                                    "languages", "difference", "95% interval",
                                                                    "method", "p", "p_holm", "runs", "note"]))
    return content, files


def _write_csv(path: Path, rows: list[dict]) -> str:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)
    return path.name


def build_report(study: Study, out: Path, tables: ReportTables | None = None) -> list[str]:
    """Write tables (``tables``, computed here when not given), CSVs, figures and report.html into out; returns the
    file names written."""
    out.mkdir(parents=True, exist_ok=True)
    info = header(study)
    tables = tables or ReportTables.compute(study)
    languages, groups, comparison, arms = tables.languages, tables.groups, tables.comparison, tables.arms
    points, fits, importance = tables.distance_points, tables.distance_fits, tables.importance
    files = [_write_csv(out / "per_language.csv", languages), _write_csv(out / "task_score.csv", tables.task_scores),
             _write_csv(out / "model_comparison.csv", comparison),
             _write_csv(out / "arm_contrasts.csv", arms), _write_csv(out / "reference_lines.csv", tables.references),
             _write_csv(out / "gap_vs_distance.csv", fits),
             _write_csv(out / "typology_languages.csv", points),
             _write_csv(out / "parameter_importance.csv", importance),
             _write_csv(out / "alignment_delta.csv", tables.alignment_deltas),
             _write_csv(out / "alignment_contrasts.csv", tables.alignment_contrasts),
             *[_write_csv(out / f"by_{by}.csv", rows) for by, rows in groups.items()],
             *([_write_csv(out / "model_family.csv", tables.model_family),
                _write_csv(out / "model_contrast_vs_distance.csv", tables.model_distance)]
               if tables.model_family else [])]
    figures = {key: draw(tables, out) for key, draw in FIGURES.items()}
    files += [f for f in figures.values() if f]
    alignment, alignment_files = _alignment_section(tables, out)
    files += alignment_files

    def image(key: str) -> str:
        return f'<img src="{figures[key]}" alt="{key}">' if figures[key] else \
            "<p><em>too little data for this figure</em></p>"

    sections = [
        ("Task score", _table(tables.task_scores, TASK_SCORE_COLUMNS)
         + "<p><b>all_languages</b>: mean over every evaluated language, English included (XTREME-R's task score "
           "when <b>xtreme_r_task_score</b> is true: an XTREME-R task under its XTREME-R protocol, with all its "
           "languages and full test sets; <b>not_xtreme_r</b> says why not); "
           "<b>zero_shot_target_mean</b>: mean over the non-English languages only. XTREME-R's aggregates "
           "(xtreme_r_avg, xtreme_r_all_task, flat_f1) need all ten tasks: this report has one.</p>"),
        ("Results in words", "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in tables.summary)
         + "</ul>" + INFERENCE_METHOD),
        ("Reference lines (the same test items)", _table(tables.references, ["model", "line", "family", "score",
                                                                           "english_dev"])
         + "<p><b>frozen_probe</b>: the pretrained encoder, frozen, mean-pooled, with a logistic-regression probe "
           "trained on the English training set; <b>random_init_probe</b>: the same with random weights (the floor). "
           "Compare fine-tuned runs with these lines only where their English dev scores are comparable: a run "
           "below the probe on English itself is under-trained, not evidence that fine-tuning eroded transfer.</p>"),
        ("Arm contrasts: all targets (primary or secondary) and per family (exploratory), confirm runs",
         image("arms") + _table(_interval_rows(arms), CONTRAST_COLUMNS)),
        ("Alignment probe: did the arms pull languages towards English? (confirm runs)", alignment),
        ("Per language (confirm runs, seed mean)",
         _table(languages, ["model", "arm", "language", "name", "family", "branch", "script", "score", "seeds",
                            "gap_to_en"])),
        ("Per family", image("family") + _table(groups["family"], ["model", "arm", "family", *GROUP_COLUMNS])),
        ("Per branch", _table(groups["branch"], ["model", "arm", "branch", *GROUP_COLUMNS])),
        ("Per script", _table(groups["script"], ["model", "arm", "script", *GROUP_COLUMNS])),
        ("Model comparison (matched arms): all targets (primary) and per family (exploratory)",
         image("comparison") + _table(_interval_rows(comparison), CONTRAST_COLUMNS)),
        *([("Model × family, tested (two models)", MODEL_FAMILY_METHOD
            + _table(tables.model_family, INTERACTION_COLUMNS) + _table(tables.model_distance, DISTANCE_COLUMNS))]
          if tables.model_family else []),
        ("Modality", (MODALITY_EXPERIMENT_NOTE if any("+" in g.arm for g in study.arm_runs()) else MODALITY_NOTE)
         .format(stage=stage_languages_note(study))),
        ("Transfer gap vs typological distance to English (URIEL+)",
         image("distance") + TYPOLOGY_METHOD
         + "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in typology_summary(fits)) + "</ul>"
         + _table(fits, ["model", "distance", "n", "slope", "r2", "p", "p_holm", "significant", "covariates",
                         "note"])
         + "<p>Per language: the distances, the features each rests on (shared with English before imputation) "
           "and why a language is left out:</p>"
         + _table(points, ["model", "language", "gap_to_en", "same_script", "subword_overlap",
                           *[f"{kind}_{what}" for kind in DISTANCE_KINDS for what in ("distance", "features")],
                           "left_out"])),
        ("The search: parameter importance and optimisation history", image("importance") + image("history")
         + _table(importance, ["model", "parameter", "importance", "note"])),
        ("VME loss weights vs English dev and target scores", image("weights")),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    facts = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in info.items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>VME study report: {html.escape(study.experiment)}"
            f"</title><style>{STYLE}</style></head><body><h1>Zero-shot cross-lingual transfer: "
            f"{html.escape(study.experiment)}</h1><ul>{facts}</ul>{body}</body></html>")
    (out / "report.html").write_text(page, encoding="utf-8")
    return ["report.html", *files]


def build_index(studies: list[Study], out: Path, tasks: list[ReportTables]) -> list[str]:
    """With several tasks in the experiment: ``report.html`` linking each task's report (in ``<task>/``) under the
    table of XTREME-R's category means and named aggregates (``aggregates.csv``, ``tables.aggregate_rows``: each
    with its value or the tasks it lacks); returns the file names written."""
    rows = [row for t in tasks for row in t.task_scores]
    overall = aggregate_rows(rows)
    links = "".join(f'<li><a href="{html.escape(s.task)}/report.html">{html.escape(s.task)}</a></li>' for s in studies)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>VME study report: "
            f"{html.escape(studies[0].experiment)}</title><style>{STYLE}</style></head><body>"
            f"<h1>Zero-shot cross-lingual transfer: {html.escape(studies[0].experiment)}</h1>"
            f"<h2>XTREME-R aggregates</h2>{_table(overall, AGGREGATE_COLUMNS)}{AGGREGATES_NOTE}"
            f"<h2>Task scores</h2>{_table(rows, TASK_SCORE_COLUMNS)}<h2>Each task's report</h2><ul>{links}</ul>"
            "</body></html>")
    (out / "report.html").write_text(page, encoding="utf-8")
    return ["report.html", _write_csv(out / "aggregates.csv", overall), _write_csv(out / "task_score.csv", rows)]


def log_report(studies: list[Study], out: Path) -> str:
    """A ``report`` run in the experiment holding every file, so people browsing MLflow find it."""
    infos = [header(study) for study in studies]

    def joined(key: str) -> str:  # one task: its value; several: "<task>: <value>; ..."
        return infos[0][key] if len(infos) == 1 else "; ".join(f"{i['task']}: {i[key]}" for i in infos)

    mlflow = client(studies[0].uri)
    experiment_id = mlflow.get_experiment_by_name(studies[0].experiment).experiment_id
    run = mlflow.create_run(experiment_id, run_name="report", tags={RUN_KIND_TAG: REPORT_RUN,
                                                                     "metric": ", ".join(s.metric for s in studies)})
    for key, name in (("task", "task"), ("suite", "suite"), ("preset", "preset"), ("models", "models"),
                      ("arms", "arms"), ("search trials (tuned arms)", "trials"),
                      ("confirm runs (seeds) per arm", "seeds")):
        mlflow.log_param(run.info.run_id, name, joined(key)[:6000])
    mlflow.log_artifacts(run.info.run_id, str(out))
    mlflow.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id

"""The report's figures: one function per PNG, each drawing from the ``ReportTables`` and returning the file name it
wrote (None: too little data); ``FIGURES`` lists them in the page's order."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from study.core.languages import DISTANCE_KINDS
from study.report.tables import ReportTables

LOSS_WEIGHTS = ("alpha", "beta", "w_robust")


def _figure(path: Path, draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = draw(plt)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path.name


def family_figure(tables: ReportTables, out: Path) -> str:
    """Bar chart of each model's and arm's seed-mean zero-shot score per family (the ``group_rows`` by family)."""
    rows, metric = tables.groups["family"], tables.study.metric

    def draw(plt):
        models = list(dict.fromkeys(f"{r['model']} / {r['arm']}" for r in rows))
        families = sorted({r["family"] for r in rows})
        figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(families) + 2), 4))
        width = 0.8 / max(1, len(models))
        for i, model in enumerate(models):
            values = {r["family"]: r["score"] for r in rows if f"{r['model']} / {r['arm']}" == model}
            axis.bar([f + i * width for f in range(len(families))], [values.get(f, 0) for f in families], width,
                     label=model)
        axis.set_xticks([f + 0.4 - width / 2 for f in range(len(families))], families, rotation=30, ha="right")
        axis.set_ylabel(f"zero-shot {metric}")
        axis.legend(fontsize=7)
        return figure

    return _figure(out / "family_scores.png", draw)


def comparison_figure(tables: ReportTables, out: Path) -> str | None:
    """The model contrasts per family with their intervals (``_difference_figure``)."""
    return _difference_figure(tables.comparison, "family", "model_comparison.png",
                              "model difference, all targets and per family (95 % Welch t interval on the run "
                              "means)", out)


def arm_figure(tables: ReportTables, out: Path) -> str | None:
    """The arm contrasts per family with their intervals (``_difference_figure``)."""
    return _difference_figure(tables.arms, "family", "arm_contrasts.png",
                              "arm contrast, all targets and per family (95 % paired-by-seed t interval)", out)


def _difference_figure(rows: list[dict], by: str, name: str, title: str, out: Path) -> str | None:
    """Point estimates with their 95 % intervals of contrast rows (arm or model differences), one line
    per contrast and group; None when no row has a difference."""
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


def distance_figure(tables: ReportTables, out: Path) -> str | None:
    """Gap to English against each URIEL+ distance (one panel per kind) over each model's common language set,
    with the fitted slope (covariates held at their means) and its Holm-corrected p-value; None without points."""
    points = [p for p in tables.distance_points if not p["left_out"]]
    fits = tables.distance_fits
    if not points:
        return None

    def draw(plt):
        figure, axes = plt.subplots(2, 3, figsize=(12, 7))
        for axis, kind in zip(axes.flat, DISTANCE_KINDS, strict=False):
            for i, model in enumerate(sorted({p["model"] for p in points})):
                mine = [p for p in points if p["model"] == model]
                xs = [p[f"{kind}_distance"] for p in mine]
                axis.scatter(xs, [p["gap_to_en"] for p in mine], s=14, color=f"C{i}", label=model)
                fit = next(f for f in fits if f["model"] == model and f["distance"] == kind)
                if fit["slope"] is not None:
                    ends = [min(xs), max(xs)]
                    axis.plot(ends, [fit["slope"] * x + fit["intercept"] for x in ends], color=f"C{i}",
                              label=f"slope {fit['slope']:+.2f}, Holm p {fit['p_holm']:.3f}")
            axis.set_xlabel(f"{kind} distance to English")
            axis.set_ylabel("gap to English")
            axis.legend(fontsize=6)
        return figure

    return _figure(out / "gap_vs_distance.png", draw)


def history_figure(tables: ReportTables, out: Path) -> str | None:
    """Each search trial's English dev score in start order, with the best so far as a line, per model; None
    without search trials (no tuned arm)."""
    study = tables.study
    if not any(study.trials_of(model) for model in study.models()):
        return None

    def draw(plt):
        figure, axis = plt.subplots(figsize=(7, 4))
        for i, model in enumerate(m for m in study.models() if study.trials_of(m)):
            trials = study.trials_of(model)
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


def importance_figure(tables: ReportTables, out: Path) -> str | None:
    """Horizontal bars of the fANOVA importance rows; None when no importance was computable."""
    usable = [r for r in tables.importance if r["importance"] is not None]
    if not usable:
        return None

    def draw(plt):
        figure, axis = plt.subplots(figsize=(7, 0.3 * len(usable) + 1.5))
        axis.barh(range(len(usable)), [r["importance"] for r in usable])
        axis.set_yticks(range(len(usable)), [f"{r['model']}: {r['parameter']}" for r in usable], fontsize=7)
        axis.set_xlabel("fANOVA importance for English dev")
        return figure

    return _figure(out / "parameter_importance.png", draw)


def loss_weight_figure(tables: ReportTables, out: Path) -> str | None:
    """Each VME loss weight against English dev (top row) and the target mean (bottom row), per trial; None when
    no trial records a loss weight (e.g. only plain fine-tuning)."""
    study = tables.study
    if not any(weight in t.params for model in study.models() for t in study.trials_of(model)
               for weight in LOSS_WEIGHTS):
        return None

    def draw(plt):
        figure, axes = plt.subplots(2, len(LOSS_WEIGHTS), figsize=(12, 6))
        for column, weight in enumerate(LOSS_WEIGHTS):
            drawn = []
            for i, model in enumerate(study.models()):
                trials = [t for t in study.trials_of(model) if weight in t.params]
                xs = [float(t.params[weight]) for t in trials]
                drawn += xs
                axes[0, column].scatter(xs, [t.dev for t in trials], color=f"C{i}", s=14, label=model)
                axes[1, column].scatter(xs, [t.target_mean for t in trials], color=f"C{i}", s=14, label=model)
            axes[0, column].set_ylabel(f"English dev {study.metric}")
            axes[1, column].set_ylabel(f"target mean {study.metric}")
            for row in (0, 1):
                axes[row, column].set_xlabel(weight)
                if weight in ("alpha", "beta") and drawn and min(drawn) > 0:  # searched on a log scale
                    axes[row, column].set_xscale("log")
            axes[0, column].legend(fontsize=6)
        return figure

    return _figure(out / "loss_weights.png", draw)


# the page's figures by key, in its order: each takes (tables, out directory) and returns a file name or None
FIGURES = {"family": family_figure, "arms": arm_figure, "comparison": comparison_figure,
           "distance": distance_figure, "history": history_figure, "importance": importance_figure,
           "weights": loss_weight_figure}


def alignment_figure(panels: Mapping[str, Mapping[str, np.ndarray]], out: Path,
                     name: str = "alignment_pca.png", title: str = "") -> str | None:
    """One panel per encoder (e.g. pretrained, plain, VME): English and the target languages' parallel sentences
    projected onto the first two principal components of that encoder's pooled, centred embeddings
    (``alignment.project_2d``, same scale in every panel), each language's centroid marked with a large X (English:
    its sides of every target's pairs). Returns the file name, None without panels."""
    from study.evaluation.alignment import project_2d

    if not panels:
        return None
    languages = sorted({key.split("/")[0] for panel in panels.values() for key in panel})

    def draw(plt):
        figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False,
                                    sharex=True, sharey=True)
        for axis, (label, arrays) in zip(axes[0], panels.items(), strict=True):
            groups = {"en": np.concatenate([arrays[f"{k}/english"] for k in languages if f"{k}/english" in arrays]),
                      **{k: arrays[f"{k}/target"] for k in languages if f"{k}/target" in arrays}}
            for i, (lang, points) in enumerate(project_2d(groups).items()):
                color = "grey" if lang == "en" else f"C{i}"
                axis.scatter(points[:, 0], points[:, 1], s=8, alpha=0.45, label=lang, color=color)
                centre = points.mean(axis=0)  # where the language sits as a whole: what the centroid distance sees
                axis.scatter([centre[0]], [centre[1]], s=140, marker="X", color=color, edgecolors="black",
                             linewidths=1.0, zorder=3)
            axis.set_title(label, fontsize=9)
            axis.set_xlabel("PC 1 (in units of the pooled spread)", fontsize=7)
        axes[0][0].legend(fontsize=7, title="X: centroid", title_fontsize=7)
        if title:
            figure.suptitle(title, fontsize=9)
        return figure

    return _figure(out / name, draw)

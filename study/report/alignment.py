"""The alignment probe in the report: Δ alignment per family for each arm, the VME − plain contrast of Δ alignment
(paired by seed), its relation to the transfer contrast across languages, and the 2-D figure.

Inputs are plain records, so the report wires them in however it groups its runs:

* a run's **report** is the metric dict of the evaluation English dev selected (the ``align*/`` keys of
  ``study.core.protocol``, and ``test/<metric>/<language>``); an **arm** is a list of such reports, one per seed;
* a run's **examples** is its ``per_example.json`` (``protocol.EXAMPLES_ARTIFACT``) as a dict, whose
  ``protocol.ALIGNMENT_UNITS`` entry holds the retrieval units;
* a run's **figure** is the ``protocol.ALIGNMENT_EMBEDDINGS_ARTIFACT`` bytes.

Every arm starts from the same pretrained encoder probed on the same sentences, so the contrast of Δ alignment
between two arms is the contrast of their alignment: (a − pretrained) − (b − pretrained) = a − b. For retrieval it
is therefore the seed-level interval of transfer (``analysis.paired_difference_by_group``) on the per-sentence units:
each run's value is its mean over the group's languages of its retrieval accuracy on the same sentences, and the
runs are paired by seed (the arms of one model run the same confirm seeds; Welch's interval where the seeds are not
recorded). The centroid distances have one number per language and run, and get the same seed-level interval on
the runs' group means (``seed_contrast_by_group``). Family rows are exploratory and Holm-corrected
(``questions.assign_corrections``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

from study.core.arms import arm_contrasts
from study.core.languages import group_of
from study.core.protocol import (
    ALIGNMENT,
    ALIGNMENT_DELTA,
    ALIGNMENT_EMBEDDINGS_ARTIFACT,
    ALIGNMENT_PRETRAINED,
    ALIGNMENT_UNITS,
    alignment_layers,
    alignment_scores,
    alignment_units_key,
    is_target,
    language_key,
    language_scores,
    target_group_means,
)
from study.report.analysis import (
    ALPHA,
    Contrast,
    Side,
    SlopeTest,
    contrast_of,
    holm,
    paired_difference_by_group,
    slope_permutation_test,
)
from study.report.load import Study, TrialRun
from study.report.questions import SECONDARY, assign_corrections, label_rows
from study.report.rows import _contrast_row

Report = Mapping[str, float]


def language_means(runs: Sequence[Report], namespace: str, measure: str, layer: int) -> dict[str, float]:
    """{target language: mean over the runs that have it} of ``<namespace>/<measure>/layer<layer>/<language>``."""
    per_run = [alignment_scores(r, namespace, measure, layer) for r in runs]
    languages = sorted({lang for values in per_run for lang in values if is_target(lang)})
    return {lang: float(np.mean([v[lang] for v in per_run if lang in v])) for lang in languages}


def delta_rows(arms: Mapping[str, Sequence[Report]], measure: str, layer: int, by: str = "family") -> list[dict]:
    """Per arm and group (``by``: family, branch or script), the seed-mean group mean of the pretrained value, the
    arm's value and Δ (arm − pretrained), over the target languages every one of the arm's runs probed. Rows:
    {arm, <by>, languages, runs, pretrained, value, delta}."""
    rows = []
    for arm, runs in arms.items():
        if not runs:
            continue
        shared = set.intersection(*(set(alignment_scores(r, ALIGNMENT_DELTA, measure, layer)) for r in runs))
        means = {ns: {k: v for k, v in language_means(runs, ns, measure, layer).items() if k in shared}
                 for ns in (ALIGNMENT_PRETRAINED, ALIGNMENT, ALIGNMENT_DELTA)}
        groups = {ns: target_group_means(values, by) for ns, values in means.items()}
        for group in sorted(groups[ALIGNMENT_DELTA]):
            rows.append({"arm": arm, by: group, "languages": sum(group_of(k, by) == group for k in means[ALIGNMENT]),
                         "runs": len(runs), "pretrained": groups[ALIGNMENT_PRETRAINED][group],
                         "value": groups[ALIGNMENT][group], "delta": groups[ALIGNMENT_DELTA][group]})
    return rows


def retrieval_side(examples: Sequence[Mapping], direction: str, layer: int, seeds: Sequence | None = None) -> Side:
    """An ``analysis.Side`` of one retrieval direction (``xx_to_en`` / ``en_to_xx``) and layer: per run, the
    per-sentence units of its examples' ``ALIGNMENT_UNITS`` (runs without them are left out), with the runs'
    training ``seeds`` where known (one per example)."""
    key = alignment_units_key(direction, layer)
    seeds = list(seeds) if seeds is not None else [None] * len(examples)
    kept = [(e[ALIGNMENT_UNITS][key], s) for e, s in zip(examples, seeds, strict=True)
            if key in e.get(ALIGNMENT_UNITS, {})]
    return Side([units for units, _ in kept], [s for _, s in kept])


def retrieval_contrast(a_examples: Sequence[Mapping], b_examples: Sequence[Mapping], direction: str, layer: int,
                       by: str | None = "family", a_seeds: Sequence | None = None,
                       b_seeds: Sequence | None = None) -> dict[str, Contrast]:
    """a − b of Δ retrieval accuracy per group, which equals a − b of retrieval accuracy (module docstring), with
    the transfer contrasts' seed-level interval (``analysis.paired_difference_by_group``) over the target languages
    both arms probed: paired by seed when both arms' seeds are given, Welch's on the run means otherwise."""
    return paired_difference_by_group(retrieval_side(a_examples, direction, layer, a_seeds),
                                      retrieval_side(b_examples, direction, layer, b_seeds), by)


def seed_contrast_by_group(a: Sequence[Report], b: Sequence[Report], measure: str, layer: int, by: str = "family",
                           a_seeds: Sequence | None = None, b_seeds: Sequence | None = None,
                           paired: bool = True) -> dict[str, Contrast]:
    """a − b of Δ ``measure`` (any, e.g. ``centred_distance``) per group over the target languages every run of
    both arms probed. Each run's value is its mean over the group's languages (one number per language and run: no
    sentence units exist for distances), and ``analysis.contrast_of`` gives the seed-level interval: paired by seed
    where both arms' ``seeds`` are given (and ``paired``), Welch's otherwise. No interval under
    ``inference.MIN_RUNS`` runs a side."""
    def per_run(runs):
        return [alignment_scores(r, ALIGNMENT_DELTA, measure, layer) for r in runs]

    a_runs, b_runs = per_run(a), per_run(b)
    shared = sorted(lang for lang in set.intersection(*(set(v) for v in a_runs + b_runs)) if is_target(lang)) \
        if a_runs and b_runs else []
    groups: dict[str, list[str]] = {}
    for lang in shared:
        groups.setdefault(group_of(lang, by), []).append(lang)
    out = {}
    for group, langs in sorted(groups.items()):
        a_means = np.array([np.mean([v[k] for k in langs]) for v in a_runs])  # (runs,) group mean per run
        b_means = np.array([np.mean([v[k] for k in langs]) for v in b_runs])
        out[group] = contrast_of(a_means, b_means, langs, a_seeds, b_seeds, paired)
    return out


def transfer_alignment_points(a: Sequence[Report], b: Sequence[Report], metric: str, measure: str,
                              layer: int) -> list[dict]:
    """Per target language both arms tested and probed in every run: the transfer contrast a − b of seed-mean test
    scores (``test/<metric>/<language>``) and the contrast a − b of seed-mean Δ ``measure``. Rows: {language,
    family, delta_alignment, delta_transfer}."""
    def means(runs, scores):
        per_run = [scores(r) for r in runs]
        shared = set.intersection(*(set(v) for v in per_run)) if per_run else set()
        return {k: float(np.mean([v[k] for v in per_run])) for k in shared if is_target(k)}

    align_a, align_b = (means(r, lambda x: alignment_scores(x, ALIGNMENT_DELTA, measure, layer)) for r in (a, b))
    test_a, test_b = (means(r, lambda x: language_scores(x, metric)) for r in (a, b))
    languages = sorted(set(align_a) & set(align_b) & set(test_a) & set(test_b))
    return [{"language": k, "family": group_of(k, "family"), "delta_alignment": align_a[k] - align_b[k],
             "delta_transfer": test_a[k] - test_b[k]} for k in languages]


def transfer_alignment_fit(points: Sequence[Mapping]) -> SlopeTest | None:
    """Does the transfer contrast track the alignment contrast across languages? The least-squares slope of
    ``delta_transfer`` on ``delta_alignment`` with its permutation p-value (``analysis.slope_permutation_test``);
    None with too few languages or a constant alignment contrast."""
    return slope_permutation_test([p["delta_alignment"] for p in points], [p["delta_transfer"] for p in points])


def contrast_sentence(label: str, contrasts: Mapping[str, Contrast], fit: SlopeTest | None, alpha: float = ALPHA
                      ) -> str:
    """One sentence for the results summary: in which groups a − b of Δ alignment differs from 0 after Holm's
    (1979) correction across the groups with an interval (and which way), or that no difference was detectable,
    and whether the transfer contrast tracks it."""
    tested = [g for g, c in contrasts.items() if c.has_interval]
    adjusted = dict(zip(tested, holm([contrasts[g].p for g in tested]), strict=True))
    up = [g for g in tested if adjusted[g] <= alpha and contrasts[g].estimate > 0]
    down = [g for g in tested if adjusted[g] <= alpha and contrasts[g].estimate < 0]
    if not tested:
        change = f"{label}: too little data for an interval in any group"
    elif not up and not down:
        change = f"{label}: no detectable difference in any of {len(tested)} group(s) after Holm's correction"
    else:
        change = f"{label}: higher in {', '.join(up) or 'none'}, lower in {', '.join(down) or 'none'} " \
                 f"(Holm-adjusted p <= {alpha} across the {len(tested)} group(s) tested)"
    if fit is None:
        return f"{change}; too few languages to relate it to transfer."
    tracks = "tracks" if fit.p <= alpha else "does not detectably track"
    return f"{change}; across {fit.n} languages the transfer contrast {tracks} it (slope {fit.slope:+.3f}, " \
           f"permutation p {fit.p:.3f})."


def figure_panels(figures: Mapping[str, bytes]) -> dict[str, dict[str, np.ndarray]]:
    """{panel: {``<language>/<side>``: (m, hidden)}} from one figure artifact per arm ({arm: bytes}): a
    ``pretrained`` panel (from the first arm's artifact: every arm probes the same pretrained encoder) and one
    panel per arm."""
    panels: dict[str, dict[str, np.ndarray]] = {}
    for arm, data in figures.items():
        with np.load(io.BytesIO(data)) as stored:
            for name in stored.files:
                source, key = name.split("/", 1)
                panel = arm if source == "checkpoint" else "pretrained"
                panels.setdefault(panel, {}).setdefault(key, stored[name].astype(np.float64))
    return {"pretrained": panels.pop("pretrained"), **panels} if "pretrained" in panels else panels


ALIGNMENT_TABLE_MEASURES = ("xx_to_en", "centred_distance")  # sentence-level match; the language-identity offset


def _probed(study: Study, model: str) -> dict[str, list[TrialRun]]:
    """{arm: its confirm runs that logged the alignment probe} of one model, arms in ``arm_runs`` order."""
    groups = {g.arm: [r for r in g.runs if r.alignment] for g in study.arm_runs() if g.model == model}
    return {arm: runs for arm, runs in groups.items() if runs}


def alignment_rows(study: Study) -> tuple[list[dict], list[dict], list[str]]:
    """The alignment probe per model, from the confirm runs that logged it (``study.tune.driver --alignment-probe``):
    (Δ alignment rows per arm, family, measure and probed layer; contrast rows of each arm contrast, paired by seed —
    xx_to_en retrieval over all shared targets (secondary) and per family (exploratory), the centred distance per
    family (exploratory), family rows Holm-corrected per contrast, measure and layer; one sentence per contrast for
    the results summary: where retrieval at the last layer moved, and whether the transfer contrast tracks it across
    languages)."""
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
            seeds = [[r.seed for r in probed[arm]] for arm in (left, right)]
            for layer in layers:
                retrieval = retrieval_contrast(*examples, "xx_to_en", layer, "family", *seeds)  # the summary's: last
                found = [("xx_to_en", retrieval_contrast(*examples, "xx_to_en", layer, None, *seeds)),
                         ("xx_to_en", retrieval),
                         ("centred_distance", seed_contrast_by_group(reports[left], reports[right],
                                                                     "centred_distance", layer, "family", *seeds))]
                for measure, per_group in found:
                    rows = [_contrast_row(label, "family", group, c) for group, c in per_group.items()]
                    contrasts += [{"measure": measure, "layer": layer, **row} for row in label_rows(
                        rows, "family", f"{label}: alignment probe, {measure} at layer {layer}", SECONDARY)]
            last = layers[-1]
            with_scores = [[{**r.alignment, **{language_key(study.metric, k): v for k, v in r.scores.items()}}
                            for r in probed[arm]] for arm in (left, right)]
            fit = transfer_alignment_fit(transfer_alignment_points(*with_scores, study.metric, "xx_to_en", last))
            summary.append(contrast_sentence(f"{label}, xx→en retrieval of the alignment probe at layer {last}",
                                             retrieval, fit))
    return deltas, assign_corrections(contrasts, lambda r: (r["contrast"], r["measure"], r["layer"])), summary


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

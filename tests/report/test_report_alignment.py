"""The report's alignment tables, contrasts and figure (``study.report.alignment``) on hand-made runs."""

import numpy as np
import pytest

from study.core.protocol import ALIGNMENT_UNITS, alignment_metrics, language_key
from study.evaluation.probe import figure_artifact
from study.report import alignment as R
from study.report.figures import alignment_figure

LAYER = 12


def _report(values: dict[str, tuple[float, float]], tests: dict[str, float] | None = None) -> dict:
    """A run's selected report: per language (pretrained, checkpoint) centred distance and xx_to_en accuracy."""
    def measures(i):
        return {lang: {"xx_to_en": v[i], "en_to_xx": v[i], "centroid_distance": 10 * v[i], "centred_distance": v[i],
                       "sentences": 50.0} for lang, v in values.items()}

    report = alignment_metrics({LAYER: measures(1)}, {LAYER: measures(0)})
    report.update({language_key("accuracy", lang): score for lang, score in (tests or {}).items()})
    return report


def test_delta_rows_average_languages_within_a_family_then_seeds():
    # de and nl are Indo-European, ja is Japonic; the second seed moves every language by 0.2 more
    arms = {"plain": [_report({"de": (0.5, 0.4), "nl": (0.7, 0.7), "ja": (0.9, 1.0)}),
                      _report({"de": (0.5, 0.2), "nl": (0.7, 0.5), "ja": (0.9, 0.8)})]}
    rows = {r["family"]: r for r in R.delta_rows(arms, "centred_distance", LAYER)}
    assert set(rows) == {"Indo-European", "Japonic"}
    assert rows["Indo-European"]["pretrained"] == pytest.approx(0.6)
    assert rows["Indo-European"]["value"] == pytest.approx((0.4 + 0.7 + 0.2 + 0.5) / 4)
    assert rows["Indo-European"]["delta"] == pytest.approx((-0.1 + 0 - 0.3 - 0.2) / 4)
    assert rows["Japonic"]["delta"] == pytest.approx(0.0) and rows["Japonic"]["languages"] == 1
    assert rows["Indo-European"]["runs"] == 2 and rows["Indo-European"]["languages"] == 2


def test_seed_contrast_of_a_distance_is_paired_by_seed_and_needs_three_runs_a_side():
    """Δ centred distance, de: a -0.2, -0.4, -0.3 and b 0.0, -0.1, +0.05 on seeds 1, 2, 3 (b given in another
    order): per-seed differences -0.2, -0.3, -0.35, mean -0.28333, s.d. 0.076376, so the interval is
    -0.28333 ± 4.302653 · 0.076376 / sqrt 3 = [-0.47306, -0.09360] (df 2). Without seeds: Welch on the run means."""
    from scipy.stats import ttest_ind

    a = [_report({"de": (0.5, 0.3)}), _report({"de": (0.5, 0.1)}), _report({"de": (0.5, 0.2)})]
    b = [_report({"de": (0.5, 0.55)}), _report({"de": (0.5, 0.5)}), _report({"de": (0.5, 0.4)})]
    contrast = R.seed_contrast_by_group(a, b, "centred_distance", LAYER, a_seeds=[1, 2, 3],
                                        b_seeds=[3, 1, 2])["Indo-European"]
    assert contrast.estimate == pytest.approx(-0.85 / 3) and contrast.method == "paired-by-seed t, df=2"
    assert (contrast.low, contrast.high) == pytest.approx((-0.47306, -0.09360), abs=1e-5)
    welch = R.seed_contrast_by_group(a, b, "centred_distance", LAYER)["Indo-European"]
    reference = ttest_ind([-0.2, -0.4, -0.3], [0.05, 0.0, -0.1], equal_var=False)
    assert welch.method.startswith("Welch t") and (welch.low, welch.high) == pytest.approx(
        tuple(reference.confidence_interval(0.95)))
    alone = R.seed_contrast_by_group(a[:2], b, "centred_distance", LAYER)["Indo-European"]
    assert not alone.has_interval and alone.note == "2 vs 3 run(s): no interval (seed variance needs 3 runs per side)"


def test_retrieval_contrast_uses_the_per_sentence_units_of_each_run():
    def examples(correct_de: int):
        units = [[1.0, 1.0]] * correct_de + [[0.0, 1.0]] * (20 - correct_de)
        return {ALIGNMENT_UNITS: {f"xx_to_en/layer{LAYER}": {"de": units, "ja": [[1.0, 1.0]] * 20}}}

    # de per seed: .90 - .50, .80 - .60, .85 - .55 = .40, .20, .30: paired interval .30 ± t(2) .10 / sqrt 3
    contrasts = R.retrieval_contrast([examples(18), examples(16), examples(17)],
                                     [examples(10), examples(12), examples(11)], "xx_to_en", LAYER,
                                     a_seeds=[1, 2, 3], b_seeds=[1, 2, 3])
    assert contrasts["Indo-European"].estimate == pytest.approx(0.85 - 0.55)
    assert contrasts["Indo-European"].method == "paired-by-seed t, df=2" and contrasts["Indo-European"].low > 0
    assert contrasts["Indo-European"].low == pytest.approx(0.30 - 4.302652729911275 * 0.10 / np.sqrt(3))
    assert contrasts["Japonic"].estimate == 0.0
    assert R.retrieval_side([{"units": {}}], "xx_to_en", LAYER).runs == []  # a run without the probe


def test_transfer_tracks_alignment_across_languages():
    languages = ["de", "fr", "es", "ja", "zh", "ko", "tr", "fi", "ar", "hi"]
    rng = np.random.default_rng(0)
    shift = dict(zip(languages, np.linspace(-0.2, 0.2, len(languages)), strict=True))  # VME's Δ alignment over plain's
    vme = [_report({k: (0.5, 0.5 + shift[k]) for k in languages},
                   {k: 0.5 + 2 * shift[k] + rng.normal(0, 0.01) for k in languages}) for _ in range(2)]
    plain = [_report({k: (0.5, 0.5) for k in languages}, {k: 0.5 for k in languages}) for _ in range(2)]
    points = R.transfer_alignment_points(vme, plain, "accuracy", "centred_distance", LAYER)
    assert [p["language"] for p in points] == sorted(languages)
    fit = R.transfer_alignment_fit(points)
    assert fit.slope == pytest.approx(2.0, abs=0.1) and fit.p < 0.01 and fit.n == 10
    sentence = R.contrast_sentence("VME - plain, Δ centred distance", {}, fit)
    assert "too little data" in sentence and "tracks it (slope +2.0" in sentence


def test_no_detectable_difference_is_said_in_words():
    a = [_report({"de": (0.5, 0.3)}), _report({"de": (0.5, 0.6)}), _report({"de": (0.5, 0.5)})]
    b = [_report({"de": (0.5, 0.5)}), _report({"de": (0.5, 0.4)}), _report({"de": (0.5, 0.6)})]
    contrasts = R.seed_contrast_by_group(a, b, "centred_distance", LAYER)
    assert R.contrast_sentence("VME - plain", contrasts, None) == \
        "VME - plain: no detectable difference in any of 1 group(s) after Holm's correction; too few languages to " \
        "relate it to transfer."


def test_a_group_is_named_only_where_it_differs_after_holm():
    """Two families, paired seeds: de's per-seed differences -.20, -.21, -.19 (p .0009), ja's -.10, -.30, -.20
    (p .07): Holm over the 2 keeps de (.0017) only."""
    from study.report.analysis import Contrast

    contrasts = {"Indo-European": Contrast(-0.2, -0.225, -0.175, ("de",), (3, 3), "", 0.000865, 2.0, "paired"),
                 "Japonic": Contrast(-0.2, -0.448, 0.048, ("ja",), (3, 3), "", 0.0742, 2.0, "paired")}
    assert R.contrast_sentence("VME - plain", contrasts, None).startswith(
        "VME - plain: higher in none, lower in Indo-European (Holm-adjusted p <= 0.05 across the 2 group(s) tested)")


def test_the_figure_has_one_panel_per_encoder(tmp_path):
    rng = np.random.default_rng(1)

    def arrays(offset):
        return {f"{lang}/{side}": rng.normal(size=(30, 8)).astype(np.float16) + (offset if side == "target" else 0)
                for lang in ("de", "ja") for side in ("target", "english")}

    pretrained = arrays(3.0)
    figures = {"plain": figure_artifact(arrays(2.0), pretrained), "vme": figure_artifact(arrays(0.5), pretrained)}
    panels = R.figure_panels(figures)
    assert list(panels) == ["pretrained", "plain", "vme"]
    assert np.allclose(panels["pretrained"]["de/target"], pretrained["de/target"].astype(np.float64))
    assert alignment_figure(panels, tmp_path) == "alignment_pca.png"
    assert (tmp_path / "alignment_pca.png").stat().st_size > 10_000
    assert alignment_figure({}, tmp_path) is None


def _probed_run(run_id, arm, seed, values, hits, params=None):
    """A confirm run of model m whose selected evaluation logged the probe: ``values`` as in ``_report``, ``hits``
    per language the xx_to_en hits (1 or 0) of its sentences at ``LAYER``."""
    from study.report.load import TrialRun

    units = {f"xx_to_en/layer{LAYER}": {lang: [[h, 1] for h in row] for lang, row in hits.items()}}
    return TrialRun(run_id, "confirm", arm, "S", "m", "model m", False, "none", params or {}, 0.5, seed,
                    {"en": 1.0, "de": 0.5, "ja": 0.5}, None, _report(values), units)


def test_the_report_tables_draw_alignment_from_probed_confirm_runs_as_hand_computed():
    """Two seeds an arm; by hand: centred Δ plain de (-0.1, +0.1) ja (0, 0), vme de (-0.3, -0.3) ja (-0.2, 0);
    xx_to_en hits plain de 1/2, ja 0/2, vme de 2/2, ja 1/2 in both seeds."""
    from study.report.alignment import alignment_rows
    from study.report.load import Study

    plain_hits, vme_hits = {"de": [1, 0], "ja": [0, 0]}, {"de": [1, 1], "ja": [1, 0]}
    runs = [_probed_run("p1", "plain", 1, {"de": (0.5, 0.4), "ja": (0.9, 0.9)}, plain_hits),
            _probed_run("p2", "plain", 2, {"de": (0.5, 0.6), "ja": (0.9, 0.9)}, plain_hits),
            _probed_run("v1", "vme-reference", 3, {"de": (0.5, 0.2), "ja": (0.9, 0.7)}, vme_hits),
            _probed_run("v2", "vme-reference", 4, {"de": (0.5, 0.2), "ja": (0.9, 0.9)}, vme_hits)]
    deltas, contrasts, summary = alignment_rows(Study("golden", "uri", "accuracy", [], runs, "pocket-topic"))
    centred = {(r["arm"], r["family"]): r["delta"] for r in deltas if r["measure"] == "centred_distance"}
    assert centred == pytest.approx({("plain", "Indo-European"): 0.0, ("plain", "Japonic"): 0.0,
                                     ("vme-reference", "Indo-European"): -0.3, ("vme-reference", "Japonic"): -0.1})
    assert {r["layer"] for r in deltas} == {LAYER} and {r["model"] for r in deltas} == {"model m"}
    found = {(r["measure"], r["family"]): r for r in contrasts}
    assert {r["contrast"] for r in contrasts} == {"model m: vme-reference - plain"}
    assert found["xx_to_en", "all targets"]["difference"] == pytest.approx((1.0 + 0.5) / 2 - (0.5 + 0.0) / 2)
    assert found["xx_to_en", "Japonic"]["difference"] == pytest.approx(0.5)
    assert found["centred_distance", "Indo-European"]["difference"] == pytest.approx(-0.3)
    assert found["centred_distance", "Japonic"]["runs"] == "2 vs 2"
    assert found["xx_to_en", "all targets"]["low"] is None  # 2 sentences a language: too little data to resample
    assert len(summary) == 1 and summary[0].startswith("model m: vme-reference - plain, xx→en retrieval")
    assert "too little data for an interval" in summary[0] and "too few languages" in summary[0]


def test_the_alignment_contrasts_pair_the_arms_runs_by_seed_and_correct_the_family_rows():
    """Three seeds an arm, recorded as each run's ``seed``: centred Δ plain de (0, -.1, +.1), ja 0; vme de (-.2,
    -.3, -.1), ja (-.1, -.1, -.1): per-seed differences de -.2 each (a zero-width interval), ja -.1 each."""
    from study.report.alignment import alignment_rows
    from study.report.load import Study

    hits = {"de": [1, 0] * 10, "ja": [0, 1] * 10}
    runs = []
    for seed, (plain_de, vme_de) in enumerate(((0.5, 0.3), (0.4, 0.2), (0.6, 0.4)), start=1):
        runs += [_probed_run(f"p{seed}", "plain", seed, {"de": (0.5, plain_de), "ja": (0.9, 0.9)}, hits,
                             {"seed": str(seed)}),
                 _probed_run(f"v{seed}", "vme-reference", 10 + seed, {"de": (0.5, vme_de), "ja": (0.9, 0.8)}, hits,
                             {"seed": str(seed)})]
    _, contrasts, _ = alignment_rows(Study("golden", "uri", "accuracy", [], runs, "pocket-topic"))
    found = {(r["measure"], r["family"]): r for r in contrasts}
    centred = found["centred_distance", "Indo-European"]
    assert centred["method"] == "paired-by-seed t, df=2" and centred["runs"] == "3 vs 3"
    assert centred["difference"] == pytest.approx(-0.2) and centred["low"] == pytest.approx(-0.2)
    assert centred["role"] == "exploratory" and "over 2 family rows" in centred["correction"]
    assert found["centred_distance", "Japonic"]["difference"] == pytest.approx(-0.1)
    overall = found["xx_to_en", "all targets"]  # the same hits in every run: no difference, zero width
    assert overall["role"] == "secondary" and overall["difference"] == 0.0 and overall["p"] == 1.0


def test_runs_without_the_probe_give_no_alignment_tables():
    from study.report.alignment import alignment_rows
    from study.report.load import Study, TrialRun

    runs = [TrialRun(f"r{i}", "confirm", arm, "S", "m", "model m", False, "none", {}, 0.5, i, {"de": 0.5})
            for i, arm in enumerate(("plain", "plain", "vme-reference", "vme-reference"))]
    assert alignment_rows(Study("golden", "uri", "accuracy", [], runs, "pocket-topic")) == ([], [], [])

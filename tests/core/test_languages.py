"""Typology table: every task language resolves, with family, script and URIEL+ distances in [0, 1] from the
integrated and imputed database, each with the number of features it rests on."""

import json

import numpy as np
import pytest

from study.core.errors import StudyError
from study.core.languages import (
    LANGUAGES,
    MIN_SHARED_FEATURES,
    XTREME_R_LANGUAGES,
    checked_distance,
    distances_to_english,
    get_language,
    group_means,
    shared_features,
)
from study.data.tasks import TASKS


def test_the_50_xtreme_r_languages():
    assert len(XTREME_R_LANGUAGES) == 50
    assert {"az", "gu", "ht", "lt", "pa", "pl", "qu", "ro", "uk", "wo"} <= set(XTREME_R_LANGUAGES)


def test_every_task_language_resolves_with_family_and_script():
    for task in TASKS.values():
        for code in task.languages:
            lang = get_language(code)
            assert lang.family and lang.branch and lang.script, code
    assert set().union(*(t.languages for t in TASKS.values() if t.suite == "xtreme-r")) == set(XTREME_R_LANGUAGES)


def test_families_and_scripts_follow_the_reference_table():
    assert sum(LANGUAGES[c].family == "Indo-European" for c in XTREME_R_LANGUAGES) == 22
    assert sum(LANGUAGES[c].script != "Latin" for c in XTREME_R_LANGUAGES) == 23
    assert get_language("deu").code == "de" and get_language("sw").branch == "Bantu"


def test_shared_features_count_what_both_languages_have_in_some_source():
    """URIEL+ arrays are languages x features x sources with -1 for no data; a feature counts when both languages
    have a value in some source, among the features of the kind (featural, genetic, geographic: all of them)."""
    feats = ["S_A", "S_B", "S_C", "P_A", "INV_A"]
    data = np.full((3, 5, 2), -1.0)
    data[0, :, 0] = 1  # English-like: everything, from source 0
    data[1, 0, 1] = 0  # S_A from source 1 only (a 0 is data)
    data[1, 2, 0] = 1
    data[1, 3, 1] = 1
    assert shared_features(data, feats, 0, 1, "syntactic") == 2
    assert shared_features(data, feats, 0, 1, "phonological") == 1
    assert shared_features(data, feats, 0, 1, "inventory") == 0
    assert shared_features(data, feats, 0, 1, "featural") == 3
    assert shared_features(data, feats, 1, 2, "featural") == 0


def test_a_distance_needs_the_minimum_of_shared_features():
    assert checked_distance(0.42, MIN_SHARED_FEATURES).value == 0.42
    few = checked_distance(0.0, MIN_SHARED_FEATURES - 1)
    assert few.value is None and few.features == MIN_SHARED_FEATURES - 1
    assert few.note == f"{MIN_SHARED_FEATURES - 1} features shared with English before imputation (minimum " \
                       f"{MIN_SHARED_FEATURES})"
    assert checked_distance(None, 0).note == "not in URIEL+"


def _shipped_table() -> dict:
    from importlib.resources import files

    from study.core.languages import SHIPPED_DISTANCES

    return json.loads(files("study.core").joinpath(SHIPPED_DISTANCES).read_text(encoding="utf-8"))


def test_the_shipped_distance_table_is_the_one_read_for_the_pinned_urielplus(monkeypatch):
    """The package's table has the settings the study asks for (the pinned urielplus, every language of the table),
    so no report computes it; were they to differ, the table would be computed, not read."""
    import study.core.languages as languages

    def never(codes):
        raise AssertionError("computed although the shipped table fits")

    monkeypatch.setattr(languages, "_compute_distances", never)
    languages.distances_to_english.cache_clear()
    try:
        table = languages.distances_to_english()
    finally:
        languages.distances_to_english.cache_clear()
    shipped = _shipped_table()
    assert set(table) == {lang.code for lang in languages._TABLE}
    assert table["de"]["genetic"].value == shipped["distances"]["deu"]["genetic"][0]


@pytest.mark.e2e
def test_the_shipped_distance_table_equals_a_fresh_computation():
    """What the package ships is what ``_compute_distances`` computes from URIEL+ today (3 minutes)."""
    from study.core.languages import _compute_distances

    shipped = _shipped_table()
    fresh = json.loads(json.dumps(_compute_distances(shipped["settings"]["languages"])))  # tuples as lists
    assert fresh == shipped["distances"]


def test_uriel_distances_come_from_integrated_imputed_features_with_their_evidence():
    """The real table (shipped; a test recomputes it): distances in [0, 1], none exactly 0 but English's own.
    Without integration and imputation hr-en syntax was 0.000 on 12 features, kk-en phonology 0.000 on 2 and sk had
    no typological distance. Now each distance records its evidence and exists exactly when that reaches the
    minimum: hr keeps inventory and featural distances (158 and 167 features) but not syntax (9 features), kk only
    the featural one (12), and sk, with no typological data in URIEL+, only its genetic and geographic ones."""
    table = distances_to_english()
    for code, kinds in table.items():
        for kind, distance in kinds.items():
            assert distance.value is None or 0.0 <= distance.value <= 1.0, (code, kind, distance)
            assert distance.value != 0.0 or code == "en", (code, kind, distance)
            assert (distance.value is None) == bool(distance.note), (code, kind, distance)
            assert (distance.value is not None) == (distance.features >= MIN_SHARED_FEATURES), (code, kind, distance)
    for code in XTREME_R_LANGUAGES:
        for kind in ("genetic", "geographic"):
            assert table[code][kind].value is not None, (code, kind)
    assert table["en"]["genetic"].value == 0.0
    assert table["de"]["genetic"].value < table["ja"]["genetic"].value  # German is related to English, Japanese not
    assert table["hr"]["syntactic"].features == 9 and table["hr"]["inventory"].value > 0
    assert table["kk"]["phonological"].value is None and table["kk"]["phonological"].note.startswith("3 features")
    assert table["kk"]["featural"].value > 0
    assert all(table["sk"][kind].features == 0 for kind in ("syntactic", "phonological", "inventory", "featural"))
    assert table["sk"]["genetic"].value > 0 and table["sk"]["geographic"].value > 0


def test_grouping_a_known_result():
    scores = {"de": 0.8, "nl": 0.6, "ja": 0.3, "hi": 0.5, "ur": 0.1}
    assert group_means(scores, "family") == pytest.approx({"Indo-European": 0.5, "Japonic": 0.3})
    assert group_means(scores, "branch") == pytest.approx({"Germanic": 0.7, "Indo-Aryan": 0.3, "Japonic": 0.3})
    assert group_means(scores, "script")["Arabic"] == pytest.approx(0.1)


def test_unknown_code_and_grouping_are_clear_errors():
    with pytest.raises(StudyError, match="unknown language code 'xx'"):
        get_language("xx")
    with pytest.raises(StudyError, match="cannot group by 'genus'"):
        group_means({"de": 1.0}, "genus")

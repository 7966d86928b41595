"""Typology table: every task language resolves, with family, script and URIEL+ distances in [0, 1]."""

import pytest

from study.errors import StudyError
from study.languages import (DISTANCE_KINDS, LANGUAGES, XTREME_R_LANGUAGES, distances_to_english, get_language,
                             group_means, with_distances)
from study.tasks import TASKS


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


def test_distances_are_in_unit_interval_and_core_kinds_complete():
    table = distances_to_english()
    for code in XTREME_R_LANGUAGES:
        for kind in DISTANCE_KINDS:
            value = table[code][kind]
            assert value is None or 0.0 <= value <= 1.0, (code, kind, value)
        for kind in ("syntactic", "genetic", "geographic", "featural"):
            assert table[code][kind] is not None, (code, kind)
    assert table["en"]["genetic"] == 0.0
    assert table["de"]["genetic"] < table["ja"]["genetic"]  # German is related to English, Japanese is not


def test_grouping_a_known_result():
    scores = {"de": 0.8, "nl": 0.6, "ja": 0.3, "hi": 0.5, "ur": 0.1}
    assert group_means(scores, "family") == pytest.approx({"Indo-European": 0.5, "Japonic": 0.3})
    assert group_means(scores, "branch") == pytest.approx({"Germanic": 0.7, "Indo-Aryan": 0.3, "Japonic": 0.3})
    assert group_means(scores, "script")["Arabic"] == pytest.approx(0.1)
    rows = with_distances({"de": 0.8})
    assert rows[0]["family"] == "Indo-European" and 0 < rows[0]["syntactic_distance"] < 1


def test_unknown_code_and_grouping_are_clear_errors():
    with pytest.raises(StudyError, match="unknown language code 'xx'"):
        get_language("xx")
    with pytest.raises(StudyError, match="cannot group by 'genus'"):
        group_means({"de": 1.0}, "genus")

"""The languages of the study: the 50 XTREME-R languages (plus the few extra ones of the offline pocket suite),
their family, branch/genus and script, and typological distances to English from URIEL+.

This is the only place languages are written down; data, metrics and reports import it. Families follow
``../shared/docs/xtreme_r.md`` §3 (Glottolog/WALS conventions), scripts §4.

Distances come from the ``urielplus`` package (URIEL+ database, shipped in the wheel, no network): syntactic,
phonological, inventory, genetic, geographic and featural distance to English, each in [0, 1]. URIEL+ lacks
phonological or inventory data for some languages (e.g. Haitian Creole, Estonian); those distances are ``None``
("not in URIEL+") rather than imputed, and every aggregate skips them.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from study.cache import cache_dir, write_json_atomic
from study.errors import StudyError

DISTANCE_KINDS = ("syntactic", "phonological", "inventory", "genetic", "geographic", "featural")
GROUPINGS = ("family", "branch", "script")


@dataclass(frozen=True)
class Language:
    """One language of the study with its family, branch and script."""

    code: str  # ISO 639-1 (the code the tasks use)
    iso3: str  # ISO 639-3 (macrolanguage where one exists), the URIEL+ key
    name: str
    family: str
    branch: str  # genus / branch; the family again where there is none below it
    script: str
    xtreme_r: bool = True


_IE, _AA, _AN, _DR, _NC, _ST, _TU, _UR = ("Indo-European", "Afro-Asiatic", "Austronesian", "Dravidian",
                                          "Niger-Congo", "Sino-Tibetan", "Turkic", "Uralic")
_TABLE = [
    Language("af", "afr", "Afrikaans", _IE, "Germanic", "Latin"),
    Language("ar", "ara", "Arabic", _AA, "Semitic", "Arabic"),
    Language("az", "aze", "Azerbaijani", _TU, "Oghuz", "Latin"),
    Language("bg", "bul", "Bulgarian", _IE, "Slavic", "Cyrillic"),
    Language("bn", "ben", "Bengali", _IE, "Indo-Aryan", "Bengali"),
    Language("de", "deu", "German", _IE, "Germanic", "Latin"),
    Language("el", "ell", "Greek", _IE, "Hellenic", "Greek"),
    Language("en", "eng", "English", _IE, "Germanic", "Latin"),
    Language("es", "spa", "Spanish", _IE, "Romance", "Latin"),
    Language("et", "est", "Estonian", _UR, "Finnic", "Latin"),
    Language("eu", "eus", "Basque", "Basque", "Basque (isolate)", "Latin"),
    Language("fa", "fas", "Persian", _IE, "Iranian", "Arabic"),
    Language("fi", "fin", "Finnish", _UR, "Finnic", "Latin"),
    Language("fr", "fra", "French", _IE, "Romance", "Latin"),
    Language("gu", "guj", "Gujarati", _IE, "Indo-Aryan", "Gujarati"),
    Language("he", "heb", "Hebrew", _AA, "Semitic", "Hebrew"),
    Language("hi", "hin", "Hindi", _IE, "Indo-Aryan", "Devanagari"),
    Language("ht", "hat", "Haitian Creole", "French-based creole", "French-based creole", "Latin"),
    Language("hu", "hun", "Hungarian", _UR, "Ugric", "Latin"),
    Language("id", "ind", "Indonesian", _AN, "Malayo-Polynesian", "Latin"),
    Language("it", "ita", "Italian", _IE, "Romance", "Latin"),
    Language("ja", "jpn", "Japanese", "Japonic", "Japonic", "Japanese"),  # kanji + kana
    Language("jv", "jav", "Javanese", _AN, "Malayo-Polynesian", "Latin"),
    Language("ka", "kat", "Georgian", "Kartvelian", "Kartvelian", "Georgian"),
    Language("kk", "kaz", "Kazakh", _TU, "Kipchak", "Cyrillic"),
    Language("ko", "kor", "Korean", "Koreanic", "Koreanic", "Hangul"),
    Language("lt", "lit", "Lithuanian", _IE, "Baltic", "Latin"),
    Language("ml", "mal", "Malayalam", _DR, "South Dravidian", "Malayalam"),
    Language("mr", "mar", "Marathi", _IE, "Indo-Aryan", "Devanagari"),
    Language("ms", "msa", "Malay", _AN, "Malayo-Polynesian", "Latin"),
    Language("my", "mya", "Burmese", _ST, "Lolo-Burmese", "Myanmar"),
    Language("nl", "nld", "Dutch", _IE, "Germanic", "Latin"),
    Language("pa", "pan", "Punjabi", _IE, "Indo-Aryan", "Gurmukhi"),
    Language("pl", "pol", "Polish", _IE, "Slavic", "Latin"),
    Language("pt", "por", "Portuguese", _IE, "Romance", "Latin"),
    Language("qu", "que", "Quechua", "Quechuan", "Quechuan", "Latin"),
    Language("ro", "ron", "Romanian", _IE, "Romance", "Latin"),
    Language("ru", "rus", "Russian", _IE, "Slavic", "Cyrillic"),
    Language("sw", "swa", "Swahili", _NC, "Bantu", "Latin"),
    Language("ta", "tam", "Tamil", _DR, "South Dravidian", "Tamil"),
    Language("te", "tel", "Telugu", _DR, "South-Central Dravidian", "Telugu"),
    Language("th", "tha", "Thai", "Kra-Dai", "Tai", "Thai"),
    Language("tl", "tgl", "Tagalog", _AN, "Malayo-Polynesian", "Latin"),
    Language("tr", "tur", "Turkish", _TU, "Oghuz", "Latin"),
    Language("uk", "ukr", "Ukrainian", _IE, "Slavic", "Cyrillic"),
    Language("ur", "urd", "Urdu", _IE, "Indo-Aryan", "Arabic"),
    Language("vi", "vie", "Vietnamese", "Austroasiatic", "Vietic", "Latin"),
    Language("wo", "wol", "Wolof", _NC, "Atlantic", "Latin"),
    Language("yo", "yor", "Yoruba", _NC, "Volta-Niger", "Latin"),
    Language("zh", "zho", "Chinese", _ST, "Sinitic", "Han"),
    # Not XTREME-R languages; they occur in the offline pocket suite only.
    Language("sv", "swe", "Swedish", _IE, "Germanic", "Latin", xtreme_r=False),
    Language("ca", "cat", "Catalan", _IE, "Romance", "Latin", xtreme_r=False),
    Language("cs", "ces", "Czech", _IE, "Slavic", "Latin", xtreme_r=False),
    Language("da", "dan", "Danish", _IE, "Germanic", "Latin", xtreme_r=False),
    Language("nb", "nob", "Norwegian Bokmål", _IE, "Germanic", "Latin", xtreme_r=False),
    Language("sk", "slk", "Slovak", _IE, "Slavic", "Latin", xtreme_r=False),
    Language("sl", "slv", "Slovenian", _IE, "Slavic", "Latin", xtreme_r=False),
    Language("hr", "hrv", "Croatian", _IE, "Slavic", "Latin", xtreme_r=False),
    Language("lv", "lav", "Latvian", _IE, "Baltic", "Latin", xtreme_r=False),
    Language("sq", "sqi", "Albanian", _IE, "Albanian", "Latin", xtreme_r=False),
    Language("hy", "hye", "Armenian", _IE, "Armenian", "Armenian", xtreme_r=False),
    Language("mk", "mkd", "Macedonian", _IE, "Slavic", "Cyrillic", xtreme_r=False),
    Language("be", "bel", "Belarusian", _IE, "Slavic", "Cyrillic", xtreme_r=False),
    Language("gl", "glg", "Galician", _IE, "Romance", "Latin", xtreme_r=False),
    Language("cy", "cym", "Welsh", _IE, "Celtic", "Latin", xtreme_r=False),
    Language("ga", "gle", "Irish", _IE, "Celtic", "Latin", xtreme_r=False),
    Language("is", "isl", "Icelandic", _IE, "Germanic", "Latin", xtreme_r=False),
    Language("km", "khm", "Khmer", "Austroasiatic", "Khmeric", "Khmer", xtreme_r=False),
    Language("mn", "mon", "Mongolian", "Mongolic", "Mongolic", "Cyrillic", xtreme_r=False),
    Language("ne", "nep", "Nepali", _IE, "Indo-Aryan", "Devanagari", xtreme_r=False),
]
LANGUAGES: dict[str, Language] = {lang.code: lang for lang in _TABLE}
XTREME_R_LANGUAGES: tuple[str, ...] = tuple(lang.code for lang in _TABLE if lang.xtreme_r)


def get_language(code: str) -> Language:
    """Look a language up by ISO 639-1 or 639-3 code."""
    if code in LANGUAGES:
        return LANGUAGES[code]
    for lang in _TABLE:
        if lang.iso3 == code:
            return lang
    raise StudyError(f"unknown language code {code!r}: use an ISO 639-1 code of the study's languages "
                     f"({', '.join(sorted(LANGUAGES))})")


def group_of(code: str, by: str) -> str:
    """The language's family, branch or script (``by``); StudyError for another grouping or an unknown code."""
    if by not in GROUPINGS:
        raise StudyError(f"cannot group by {by!r}: choose one of {', '.join(GROUPINGS)}")
    return getattr(get_language(code), by)


def group_means(scores: Mapping[str, float], by: str = "family") -> dict[str, float]:
    """Mean score per family / branch / script of a {language: score} result (languages weigh equally)."""
    groups: dict[str, list[float]] = {}
    for code, score in scores.items():
        groups.setdefault(group_of(code, by), []).append(score)
    return {group: statistics.fmean(values) for group, values in sorted(groups.items())}


@lru_cache(maxsize=1)
def distances_to_english() -> dict[str, dict[str, float | None]]:
    """{language: {kind: distance to English or None}}, computed once from URIEL+ and cached as JSON."""
    from importlib.metadata import version

    path = cache_dir() / f"uriel-distances-{version('urielplus')}-{len(_TABLE)}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    table = _compute_distances([lang.iso3 for lang in _TABLE])
    result = {lang.code: table[lang.iso3] for lang in _TABLE}
    write_json_atomic(path, result)
    return result


def _compute_distances(iso3_codes: Iterable[str]) -> dict[str, dict[str, float | None]]:
    try:
        from urielplus import urielplus
    except ImportError:
        raise StudyError("typological distances need the package 'urielplus': pip install -e .") from None
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))  # it logs each file copy
    uriel = urielplus.URIELPlus()

    def distance(kind: str, code: str) -> float | None:
        try:
            return round(float(uriel.new_distance(kind, ["eng", code])), 4)
        except (ValueError, KeyError):  # URIEL+ has no data of this kind for the language
            return None

    return {code: {kind: distance(kind, code) for kind in DISTANCE_KINDS} for code in iso3_codes}


def with_distances(scores: Mapping[str, float]) -> list[dict]:
    """Rows {language, score, family, branch, script, <kind>_distance ...} for analyses of transfer vs typology."""
    table = distances_to_english()
    rows = []
    for code, score in scores.items():
        lang = get_language(code)
        row: dict = {"language": lang.code, "score": score, "family": lang.family, "branch": lang.branch,
                     "script": lang.script}
        row.update({f"{kind}_distance": table[lang.code][kind] for kind in DISTANCE_KINDS})
        rows.append(row)
    return rows


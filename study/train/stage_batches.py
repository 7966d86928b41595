"""What each step of the intermediate stage reads: the items with captions in the listed languages, a seeded batch
order, the caption each item shows at each step (and the text arm's partner caption), and the shuffled-image control."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass

from study.core.errors import StudyError
from study.data.captions import CaptionedImage, CaptionSet

ENGLISH = ("en",)  # the default caption languages: the stage as it was before the option existed


def batch_order(n_items: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """The item indices of every step: one seeded sequence of permutations, shared by both modalities."""
    rng = random.Random(f"intermediate:{seed}")
    order: list[int] = []
    while len(order) < steps * batch_size:
        permutation = list(range(n_items))
        rng.shuffle(permutation)
        order += permutation
    return [order[s * batch_size:(s + 1) * batch_size] for s in range(steps)]


def _languages_of(data: CaptionSet, item: CaptionedImage, languages: tuple[str, ...]) -> list[str]:
    """The listed languages the item has a caption in, in the listed order."""
    return [lang for lang in languages if data.caption(item, lang)]


def stage_items(data: CaptionSet, languages: tuple[str, ...]) -> tuple[list[CaptionedImage], dict[str, int]]:
    """The stage's training items and what its caption languages skip: every item for English alone; with several
    languages the items with captions in two of them or more (the text arm's partner is in another language than
    its caption: one rule for every modality, so all see the same items), the others counted. StudyError when fewer
    than two are left."""
    if languages == ENGLISH:
        return data.train, {}
    items = [item for item in data.train if len(_languages_of(data, item, languages)) >= 2]
    if len(items) < 2:
        raise StudyError(f"--caption-languages {','.join(languages)}: only {len(items)} training image(s) of "
                         f"{data.description} have captions in two of these languages; the stage needs two or more: "
                         "list languages most images have")
    return items, {"fewer than two caption languages": len(data.train) - len(items)}


@dataclass(frozen=True)
class DrawnCaption:
    """One item's captions at one step: the caption (through the backbone with gradient) and the text arm's
    partner, each with its language."""

    caption: str
    language: str
    partner: str
    partner_language: str


def draw_captions(data: CaptionSet, items: list[CaptionedImage], order: list[list[int]],
                  languages: tuple[str, ...], seed: int) -> list[list[DrawnCaption]]:
    """The captions of every step (``order``: item indices per step), the same in every modality and on every rank.
    English alone: each item's first caption with its second as partner. Several languages: per item and step, a
    seeded draw of two different languages among the listed ones the item has, the caption's and the partner's."""
    if languages == ENGLISH:
        return [[DrawnCaption(items[i].caption, "en", items[i].second_caption, "en") for i in step] for step in order]
    rng = random.Random(f"caption-languages:{seed}")
    available = [_languages_of(data, item, languages) for item in items]
    drawn = []
    for step in order:
        pairs = [(i, *rng.sample(available[i], 2)) for i in step]
        drawn.append([DrawnCaption(data.caption(items[i], first), first, data.caption(items[i], second), second)
                      for i, first, second in pairs])
    return drawn


def partner_pairs(data: CaptionSet, items: list[CaptionedImage], languages: tuple[str, ...]) -> list[tuple[str, str]]:
    """The (caption, partner) pairs the text arm can draw: each item's two English captions for English alone, else
    its captions in every two of its listed languages (translation pairs)."""
    if languages == ENGLISH:
        return [(item.caption, item.second_caption) for item in items]
    return [(data.caption(item, a), data.caption(item, b)) for item in items
            for a, b in itertools.combinations(_languages_of(data, item, languages), 2)]


def shuffled_images(n_items: int, seed: int) -> list[int]:
    """A seeded permutation of ``range(n_items)`` with no fixed point (a derangement: no caption keeps its own
    image), fixed for the whole stage: the multimodal-shuffled control's image of each item."""
    if n_items < 2:
        raise StudyError("the shuffled-image control needs at least 2 images")
    order = list(range(n_items))
    random.Random(f"shuffled-images:{seed}").shuffle(order)
    image_of = [0] * n_items
    for position, item in enumerate(order):  # each item takes the image of the next one in the shuffled cycle
        image_of[item] = order[(position + 1) % n_items]
    return image_of


def _per_language(languages: tuple[str, ...], drawn: list[str]) -> dict[str, int]:
    """How many of the drawn captions are in each listed language (0 included)."""
    counts = Counter(drawn)
    return {lang: counts[lang] for lang in languages}


def caption_pair_word_overlap(pairs: list[tuple[str, str]]) -> float:
    """The share of caption pairs that share a word (lower-cased whitespace tokens, so scripts written without
    spaces share one only when a whole caption is the same): how close to a copy the text arm's partner is (74 %
    for the emoji set's two English CLDR names)."""
    shared = sum(bool(set(a.lower().split()) & set(b.lower().split())) for a, b in pairs)
    return shared / len(pairs) if pairs else 0.0

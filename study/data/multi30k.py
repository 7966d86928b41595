"""Multi30K, the multilingual caption source of the intermediate stage: Flickr30k's images, each with one English
caption and its professional translations into German, French and Czech (Elliott et al. 2016, 2017; Barrault et
al. 2018: the WMT multimodal translation task 1 data). Captions in several languages of one image let the
multimodal stage link the languages through the image, which Flickr30k's English-only captions cannot.

Hub repository ``romrawinjp/multi30k`` (its card's licence: MIT; the images are Flickr30k's, under Flickr's terms
of use): parquet in ``data/{train,validation,test}-0000k-of-0000n.parquet`` (29,000 / 1,014 / 1,000 rows), one row
per image with string columns ``en``, ``cs``, ``de``, ``fr`` and the image itself in an ``image`` column, so no
pairing with Flickr30k by image id is needed. Like Flickr30k only the shards holding the first ``max_images`` rows
of ``train`` are downloaded (its 20 shards are ~10 GB).

A row has a single English caption, so the English-only stage (its text arm pairs two English captions) cannot run
on it: a stage on Multi30K draws captions in two or more of en, de, fr, cs (all four unless
``--caption-languages`` says otherwise), the text arm's partner being a translation.
"""

from __future__ import annotations

import io
from collections import Counter
from functools import lru_cache

from study.core.errors import StudyError
from study.data import captions as C  # the readers Multi30K shares with the other sources

MULTI30K = "romrawinjp/multi30k"
MULTI30K_LANGUAGES = ("en", "de", "fr", "cs")  # its caption columns, English first
IMAGE_COLUMN = "image"


@lru_cache(maxsize=4)
def multi30k_captions(min_side: int, max_images: int):
    """Multi30K's first ``max_images`` training rows as a ``CaptionSet``: rows with a blank English caption or an
    unusable image are skipped and counted; ``english_pairs`` is False (one English caption per image)."""
    import datasets


    split, rows = C._first_rows(MULTI30K, max_images)
    missing = [c for c in (IMAGE_COLUMN, *MULTI30K_LANGUAGES) if c not in rows.column_names]
    if missing:
        raise StudyError(f"dataset {MULTI30K!r} ({split}) has no column(s) {', '.join(missing)}: it has "
                         f"{rows.column_names}; Multi30K's rows need an image and captions in "
                         f"{', '.join(MULTI30K_LANGUAGES)}")
    raw = rows.cast_column(IMAGE_COLUMN, datasets.Image(decode=False))
    items, skipped, captions = [], Counter(), {}
    for index, row in enumerate(raw):
        texts = {lang: row[lang].strip() for lang in MULTI30K_LANGUAGES
                 if isinstance(row[lang], str) and row[lang].strip()}
        if "en" not in texts:
            skipped["no English caption"] += 1
            continue
        stored = row[IMAGE_COLUMN] or {}
        why = C._unusable(io.BytesIO(stored["bytes"]) if stored.get("bytes") else stored.get("path") or "", min_side)
        if why:
            skipped[why] += 1
            continue
        items.append(C.CaptionedImage(str(index), texts["en"], "", C._split_of(f"{MULTI30K}:{index}")))
        captions[str(index)] = texts
    C._usable_or_fail(f"dataset {MULTI30K!r}", items, skipped)
    extra = "".join(f"\n{key}\t{lang}\t{text}" for key, texts in captions.items() for lang, text in texts.items())
    return C.CaptionSet(f"dataset {MULTI30K} ({split}, first {len(rows)} rows)", tuple(items), dict(skipped),
                        C._fingerprint(items, f"{MULTI30K}:{split}{extra}"),
                        lambda key, size: C._square(rows[int(key)][IMAGE_COLUMN], size), MULTI30K_LANGUAGES,
                        lambda item, language: captions[item.image].get(language), english_pairs=False)

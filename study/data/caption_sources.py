"""The reader of a caption source: Multi30K's own (``study.data.multi30k``, by its hub id), else
``study.data.captions.caption_set`` (emoji, a folder, a dataset). Apart from both so that neither imports the other."""

from __future__ import annotations

from study.data.captions import MAX_IMAGES, CaptionSet
from study.data.captions import caption_set as _caption_set
from study.data.multi30k import MULTI30K, multi30k_captions


def caption_set(source: str, min_side: int = 8, max_images: int = MAX_IMAGES) -> CaptionSet:
    """The caption set of any source the stage takes, images at least ``min_side`` pixels on each side."""
    if source == MULTI30K:
        return multi30k_captions(min_side, max_images)
    return _caption_set(source, min_side, max_images)

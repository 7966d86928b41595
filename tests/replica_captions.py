"""The hub replica's image-caption repositories (``hub_replica.build_mirrors`` writes them): Flickr30k, English
only, and Multi30K, the same kind of images with captions in en, de, fr, cs. Tiny synthetic rows in each real
repository's layout, schema and parquet format."""

from __future__ import annotations

from pathlib import Path

from study.data.captions import FLICKR30K
from study.data.multi30k import MULTI30K

MULTI30K_TRAIN_ROWS = 16  # two shards of 8, so that a first-rows read downloads one
MULTI30K_NO_ENGLISH = 5  # a train row with a blank English caption: the loader skips and counts it


def _picture(i: int):
    from PIL import Image

    return Image.new("RGB", (40, 40), (i * 29 % 256, i * 53 % 256, i * 97 % 256))


def flickr(mirrors: Path, rows: int) -> None:
    """lmms-lab/flickr30k's layout: one ``test`` split in ``data/test-0000k-of-0000n.parquet`` shards, an Image
    column and the five captions as a list."""
    import datasets
    from hub_replica import _dataset_repo, _rows

    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string")),
                                  "sentids": datasets.Sequence(datasets.Value("string")),
                                  "img_id": datasets.Value("string"), "filename": datasets.Value("string")})
    ids = range(rows)
    table = _rows({"image": [_picture(i) for i in ids],
                   "caption": [[f"picture {i} of a dog", f"a dog in picture {i}", "a dog"] for i in ids],
                   "sentids": [[str(i)] for i in ids], "img_id": [str(i) for i in ids],
                   "filename": [f"{i}.jpg" for i in ids]}, features)
    _dataset_repo(mirrors, FLICKR30K, {"default": {"test": table}}, layout="data/{split}", shards=2)


def multi30k_row(i: int) -> dict[str, str]:
    """Row ``i``'s captions: an English one and its translations (Multi30K's task 1 pairs one of each per image)."""
    return {"en": "" if i == MULTI30K_NO_ENGLISH else f"a dog runs in picture {i}",
            "cs": f"pes běží na obrázku {i}", "de": f"ein Hund läuft auf Bild {i}",
            "fr": f"un chien court sur l'image {i}"}


def multi30k(mirrors: Path, rows: int) -> None:
    """romrawinjp/multi30k's layout: splits train, validation and test in ``data/{split}-0000k-of-0000n.parquet``
    (every split in two shards here; on the hub train has twenty, validation and test one), string columns en, cs,
    de, fr and an Image column ``image``."""
    import datasets
    from hub_replica import _dataset_repo, _rows

    text = datasets.Value("string")
    features = datasets.Features({"en": text, "cs": text, "de": text, "fr": text, "image": datasets.Image()})

    def split(first: int, n: int):
        captions = [multi30k_row(i) for i in range(first, first + n)]
        return _rows({**{lang: [c[lang] for c in captions] for lang in ("en", "cs", "de", "fr")},
                      "image": [_picture(i) for i in range(first, first + n)]}, features)

    _dataset_repo(mirrors, MULTI30K, {"default": {"train": split(0, MULTI30K_TRAIN_ROWS),
                                                  "validation": split(100, rows), "test": split(200, rows)}},
                  layout="data/{split}", shards=2)

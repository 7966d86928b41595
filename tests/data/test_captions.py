"""Your own image-caption data and a pretrained-style CLIP vision tower for the intermediate stage: bad images are
skipped and counted, nothing usable is a clear error, and the tower is frozen / partly / fully trained as asked."""

import json

import pytest
import torch

from study.core.errors import StudyError
from study.data import captions
from study.train import stage

EMOJI = ["😀", "🐶", "🍎", "🚗", "🌳", "⚽", "🎸", "🏠", "🌙", "🔥", "📚", "🐟"]


def _folder(tmp_path, extra_rows=()):
    """A folder of real PNGs (emoji rendered at 64 px) with two captions each, plus the rows in extra_rows."""
    rows = []
    for number, char in enumerate(EMOJI):
        captions.render_emoji(char, 64).save(tmp_path / f"{number}.png")
        rows.append({"image": f"{number}.png", "captions": [f"picture number {number}", f"image {number} here"]})
    with open(tmp_path / "captions.jsonl", "w") as out:
        for row in [*rows, *extra_rows]:
            out.write(json.dumps(row) + "\n")
    return tmp_path


def test_folder_skips_and_counts_bad_images(tmp_path):
    from PIL import Image

    (tmp_path / "corrupt.png").write_bytes(b"this is not a png")
    Image.new("RGB", (4, 4), "red").save(tmp_path / "small.png")
    captions.render_emoji("🎈", 64).save(tmp_path / "single.png")
    folder = _folder(tmp_path, [{"image": "missing.png", "captions": ["a", "b"]},
                                {"image": "corrupt.png", "captions": ["a", "b"]},
                                {"image": "small.png", "captions": ["a", "b"]},
                                {"image": "single.png", "captions": ["only one caption", " only one caption "]}])
    data = captions.caption_set(str(folder), min_side=16)
    assert len(data.items) == len(EMOJI)
    assert data.skipped == {"missing image": 1, "corrupt image": 1, "image smaller than 16 px": 1,
                            "fewer than two captions": 1}  # the same caption twice is one caption
    assert data.image_tensor(data.items[0], 24).shape == (3, 24, 24) and data.probe_languages == ("en",)


def test_stage_trains_on_a_folder_and_reports_what_it_skipped(tmp_path):
    (tmp_path / "images").mkdir()
    folder = _folder(tmp_path / "images", [{"image": "missing.png", "captions": ["a", "b"]}])
    cfg = stage.StageConfig(model="tiny", modality="multimodal", steps=3, batch_size=4, data=str(folder))
    meta = stage.run_stage_worker(cfg, tmp_path / "out", 0, 1, torch.device("cpu"), report=lambda m: None)
    assert meta["examples"]["skipped"] == {"missing image": 1} and meta["steps"] == 3
    assert meta["data"] == f"image folder {folder.resolve()}" and set(meta["probe"]) == {"en"}


def test_no_captions_or_nothing_usable_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "captions.tsv").write_text("\n\n")
    with pytest.raises(StudyError, match="captions.tsv has no captions"):
        captions.caption_set(str(tmp_path / "empty"))
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "captions.tsv").write_text("a.png\ta cat\na.png\ta small cat\nb.png\ta dog\nb.png\tdogs\n")
    with pytest.raises(StudyError, match=r"no usable captioned images .*\(2 missing image\)"):
        captions.caption_set(str(tmp_path / "gone"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "captions.jsonl").write_text('{"image": "a.png"}\n')
    with pytest.raises(StudyError, match=r"captions.jsonl:1: expected"):
        captions.caption_set(str(tmp_path / "bad"))


def test_a_local_dataset_loads_through_datasets(tmp_path):
    import io

    import datasets

    images, texts = [], []
    for number, char in enumerate(EMOJI):
        buffer = io.BytesIO()
        captions.render_emoji(char, 48).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
        texts.append([f"emoji {number}", f"symbol {number}", f"icon {number}"])
    images[1] = {"bytes": b"broken", "path": None}
    rows = datasets.Dataset.from_dict({"image": images, "caption": texts},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "caption": [datasets.Value("string")]}))
    (tmp_path / "flickr-like").mkdir()
    rows.to_parquet(str(tmp_path / "flickr-like" / "train.parquet"))
    data = captions.caption_set(str(tmp_path / "flickr-like"), min_side=8)
    assert len(data.items) == len(EMOJI) - 1 and data.skipped == {"corrupt image": 1}
    assert data.items[0].caption == "emoji 0" and data.items[0].second_caption == "symbol 0"
    assert data.image_tensor(data.items[0], 32).std() > 0.05


def test_a_datasets_caption_columns_per_language_train_a_multilingual_stage(tmp_path):
    """caption_de holds German captions (a string or a list, blank for some images: they are left out of an en,de
    stage and counted); caption_id holds numbers, not Indonesian captions; a language without a column is one line
    naming the data and the languages it has."""
    import io

    import datasets

    images, english, german = [], [], []
    for number, char in enumerate(EMOJI):
        buffer = io.BytesIO()
        captions.render_emoji(char, 48).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
        english.append([f"emoji {number}", f"symbol {number}"])
        german.append([] if number % 4 == 0 else [f"Bild {number}", f"Symbol {number}"])
    rows = datasets.Dataset.from_dict({"image": images, "caption": english, "caption_de": german,
                                       "caption_id": list(range(len(EMOJI)))},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "caption": [datasets.Value("string")],
                                                                  "caption_de": [datasets.Value("string")],
                                                                  "caption_id": datasets.Value("int64")}))
    (tmp_path / "multi").mkdir()
    rows.to_parquet(str(tmp_path / "multi" / "train.parquet"))
    data = captions.caption_set(str(tmp_path / "multi"))
    assert data.probe_languages == ("en", "de") and data.caption(data.items[1], "de") == "Bild 1"
    assert data.caption(data.items[0], "de") is None and data.caption(data.items[1], "id") is None
    cfg = stage.StageConfig(model="tiny", modality="text", steps=2, batch_size=4, data=str(tmp_path / "multi"),
                            caption_languages=("en", "de"))
    meta = stage.run_stage_worker(cfg, tmp_path / "out", 0, 1, torch.device("cpu"), report=lambda m: None)
    without = sum(int(i.image) % 4 == 0 for i in data.train)
    assert meta["examples"]["skipped"]["fewer than two caption languages"] == without > 0
    assert meta["examples"]["train"] == len(data.train) - without
    assert sum(meta["captions_per_language"].values()) == 8 and set(meta["captions_per_language"]) == {"en", "de"}
    with pytest.raises(StudyError, match=r"^--caption-languages en,fr: dataset .* has no captions in fr; it has "
                                         r"en, de: list only those"):
        stage.stage_data(stage.StageConfig(model="tiny", modality="text", data=str(tmp_path / "multi"),
                                           caption_languages=("en", "fr")))
    flickr_like = tmp_path / "multi" / "train.parquet"
    rows.remove_columns(["caption_de"]).to_parquet(str(flickr_like))  # English only, as Flickr30k
    captions.dataset_captions.cache_clear()
    with pytest.raises(StudyError, match="has no captions in de; it has en: list only those"):
        stage.stage_data(cfg)


def _clip_tower(tmp_path):
    """A random-initialised, CLIP-architecture vision model saved like a hub one (the hub is offline here)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)
    CLIPVisionModel(config).save_pretrained(tmp_path / "clip")
    return str(tmp_path / "clip")


@pytest.mark.e2e
@pytest.mark.parametrize("vision_train", ["frozen", "last", "full"])
def test_clip_tower_is_frozen_or_partly_trained(tmp_path, monkeypatch, vision_train):
    tower = _clip_tower(tmp_path)
    cfg = stage.StageConfig(model="tiny", modality="multimodal", steps=2, batch_size=8, vision_tower=tower,
                            vision_train=vision_train, vision_lr=1e-2)
    seen = {}
    original = stage.VisionTower.__init__

    def keep(self, *args):
        original(self, *args)
        seen["tower"] = self

    monkeypatch.setattr(stage.VisionTower, "__init__", keep)
    meta = stage.run_stage_worker(cfg, tmp_path / "out", 0, 1, torch.device("cpu"), report=lambda m: None)
    from transformers import CLIPVisionModel

    before, after = CLIPVisionModel.from_pretrained(tower), seen["tower"].encoder
    first_changed = not torch.equal(before.embeddings.patch_embedding.weight, after.embeddings.patch_embedding.weight)
    last_changed = not torch.equal(before.encoder.layers[-1].mlp.fc1.weight, after.encoder.layers[-1].mlp.fc1.weight)
    assert (first_changed, last_changed) == {"frozen": (False, False), "last": (False, True),
                                             "full": (True, True)}[vision_train]
    assert meta["vision_tower"] == f"{tower} (pretrained CLIP vision model, {vision_train})"


def test_unreachable_hub_tower_or_data_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(StudyError, match="vision tower 'openai/clip-vit-base-patch32' cannot be loaded"):
        stage.VisionTower(stage.CLIP_TOWER, "frozen")
    with pytest.raises(StudyError, match="dataset lmms-lab/flickr30k is not in the cache .*HF_HUB_OFFLINE is set"):
        captions.caption_set(captions.FLICKR30K)


def test_scratch_tower_cannot_be_frozen():
    with pytest.raises(StudyError, match="vision_train=frozen needs a pretrained vision tower"):
        stage.StageConfig(model="tiny", modality="multimodal", vision_train="frozen")


def test_multi30k_stages_default_to_its_four_languages_and_refuse_an_english_only_stage(monkeypatch):
    """Multi30K has one English caption per image: without --caption-languages a stage on it draws in en, de, fr,
    cs; asked for English alone it stops with one line naming the languages to list (the hub path: test_hub.py)."""
    from study.data.multi30k import MULTI30K, MULTI30K_LANGUAGES

    assert stage.stage_sources(False, MULTI30K)["caption_languages"] == MULTI30K_LANGUAGES == ("en", "de", "fr", "cs")
    assert stage.stage_sources(False, MULTI30K, caption_languages=("en", "de"))["caption_languages"] == ("en", "de")
    assert stage.stage_sources(False)["caption_languages"] == ("en",)  # Flickr30k keeps its English stage
    items = tuple(captions.CaptionedImage(str(i), f"a dog {i}", "", "train") for i in range(4))
    one_english = captions.CaptionSet("dataset romrawinjp/multi30k (train, first 4 rows)", items, {}, "f",
                                      lambda key, size: None, MULTI30K_LANGUAGES,
                                      lambda item, lang: f"{lang} {item.image}", english_pairs=False)
    monkeypatch.setattr(stage, "caption_set", lambda source, min_side: one_english)
    with pytest.raises(StudyError, match=r"^--caption-languages en: dataset romrawinjp/multi30k .* has one English "
                                         r"caption per image .* e\.g\. --caption-languages en,de,fr,cs$"):
        stage.stage_data(stage.StageConfig(model="tiny", modality="text", data=MULTI30K))
    assert stage.stage_data(stage.StageConfig(model="tiny", modality="text", data=MULTI30K,
                                              caption_languages=("de", "cs"))) is one_english

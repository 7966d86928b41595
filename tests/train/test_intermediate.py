"""The intermediate stage: matched text vs multimodal contrastive training, caching, hand-off to fine-tuning."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from study.core.errors import StudyError
from study.data import captions
from study.train import stage
from study.train.config import TrainConfig
from study.train.pipeline import validate
from study.train.ray_setup import Scaling


def _run(tmp_path, modality, steps=8, **options):
    cfg = stage.StageConfig(model="tiny", modality=modality, steps=steps, batch_size=8, **options)
    out = tmp_path / modality
    meta = stage.run_stage_worker(cfg, out, 0, 1, torch.device("cpu"), report=lambda metrics: None)
    return out, meta


def test_offline_data_is_real_emoji_with_two_captions():
    data = captions.emoji_captions()
    assert len(data.items) > 500 and {i.split for i in data.items} == {"train", "test"}
    assert all(i.caption and i.second_caption and i.caption.lower() != i.second_caption.lower() for i in data.items)
    image = data.image_tensor(data.items[0], 32)
    assert image.shape == (3, 32, 32) and image.std() > 0.05
    assert data.skipped["no second caption"] > 0  # counted, not silently dropped
    assert data.caption(data.test[0], "de") and data.probe_languages[0] == "en"


@pytest.mark.e2e
def test_modalities_see_the_same_captions_in_the_same_order(tmp_path):
    _, text = _run(tmp_path, "text")
    _, multimodal = _run(tmp_path, "multimodal")
    _, shuffled = _run(tmp_path, "multimodal-shuffled")
    assert text["caption_order"] == multimodal["caption_order"] == shuffled["caption_order"]
    assert text["steps"] == multimodal["steps"] == shuffled["steps"] == 8
    assert multimodal["vision_tower"].endswith("trained from scratch)") and text["vision_tower"] is None
    assert set(multimodal["probe"]) >= {"en", "de", "ja", "ar"} and text["probe"] == {}
    assert set(shuffled["probe"]) == set(multimodal["probe"])  # the control is probed too (chance level)
    assert 0.5 < text["caption_pair_word_overlap"] < 0.95  # how near to a copy the text partner is (emoji: ~74 %)


def test_the_shuffled_control_pairs_every_caption_with_another_items_image():
    image_of = stage.shuffled_images(50, seed=3)
    assert sorted(image_of) == list(range(50)) and all(image_of[i] != i for i in range(50))
    assert image_of == stage.shuffled_images(50, seed=3) != stage.shuffled_images(50, seed=4)
    with pytest.raises(StudyError, match="at least 2 images"):
        stage.shuffled_images(1, seed=0)


def test_the_text_arm_sends_one_caption_per_item_through_the_backbone_with_gradient():
    """The second caption is embedded without gradient, so the backbone gets as many gradient-bearing caption
    passes as in the image arms (one per item)."""
    from study.models.registry import get_spec, load_model, load_tokenizer

    model = stage.ContrastiveModel(load_model(get_spec("tiny"), "base"), None)
    passes = []
    model.backbone.register_forward_hook(lambda module, args, output: passes.append(torch.is_grad_enabled()))
    tokenizer = load_tokenizer(get_spec("tiny"))
    batch = tokenizer(["a red apple", "a blue car"], padding=True, return_tensors="pt")
    partner = tokenizer(["an apple", "a car"], padding=True, return_tensors="pt")
    model(dict(batch), dict(partner)).backward()
    assert sorted(passes) == [False, True]  # the caption with gradient, its partner without


@pytest.mark.e2e
def test_stage_trains_with_dropout_on(tmp_path, monkeypatch):
    """from_pretrained hands the backbone over in eval mode; every stage step must run in train mode."""
    modes, forward = [], stage.ContrastiveModel.forward

    def recording(self, captions, partner):
        modes.append({m.training for m in self.modules()})
        return forward(self, captions, partner)

    monkeypatch.setattr(stage.ContrastiveModel, "forward", recording)
    _run(tmp_path, "multimodal", steps=3)
    assert modes == [{True}] * 3


@pytest.mark.e2e
@pytest.mark.parametrize("modality", ["text", "multimodal"])
def test_contrastive_loss_decreases(tmp_path, modality):
    _, meta = _run(tmp_path, modality, steps=40, lr=1e-3, head_lr=1e-3, vision_lr=3e-3)
    losses = meta["losses"]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10, losses


@pytest.mark.e2e
def test_stage_checkpoint_starts_the_fine_tuning(tmp_path):
    out, _ = _run(tmp_path, "multimodal")
    assert json.loads((out / "study_model.json").read_text())["intermediate"] == "multimodal"
    cfg = TrainConfig(model="tiny", task="pocket-topic", init_checkpoint=str(out), max_train_examples=16,
                      batch_size=8, max_length=32)
    validate(cfg)
    from study.models.registry import get_spec, load_model
    from study.train.finetune import FineTuneRun

    run = FineTuneRun(cfg, 0, 1, torch.device("cpu"))
    saved = load_model(get_spec("tiny"), "base", path=str(out))
    from study.vme.trim import untrimmed

    with untrimmed(run.model):  # the fine-tuning trains a trimmed vocabulary; its full matrix is the stage's
        assert torch.equal(run.model.base_model.embeddings.word_embeddings.weight,
                           saved.embeddings.word_embeddings.weight)


def test_nothing_usable_is_a_clear_error(monkeypatch):
    from PIL import Image

    captions.emoji_captions.cache_clear()
    # every glyph missing: blank images
    monkeypatch.setattr(captions, "render_emoji", lambda char, size=32: Image.new("RGB", (size, size), "white"))
    try:
        with pytest.raises(StudyError, match="no usable captioned images.*blank rendering"):
            captions.emoji_captions()
    finally:
        captions.emoji_captions.cache_clear()


def test_bad_stage_config():
    with pytest.raises(StudyError, match="modality 'audio'"):
        stage.StageConfig(model="tiny", modality="audio")
    with pytest.raises(StudyError, match="needs negatives"):
        stage.StageConfig(model="tiny", modality="text", batch_size=1)


@pytest.mark.e2e
def test_stage_under_ray_is_cached_across_trials(tmp_path, monkeypatch):
    import ray

    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             configure_logging=False)
    try:
        cfg = stage.StageConfig(model="tiny", modality="text", steps=6, batch_size=8)
        first = stage.run_stage(cfg, Scaling(workers=2), str(tmp_path / "runs"))
        modified = (Path(first.directory) / "stage.json").stat().st_mtime
        second = stage.run_stage(cfg, Scaling(workers=2), str(tmp_path / "runs"))
    finally:
        ray.shutdown()
    assert first.cache_hit is False and second.cache_hit is True and first.directory == second.directory
    assert (Path(second.directory) / "stage.json").stat().st_mtime == modified and second.meta["steps"] == 6


def _contrastive_worker(rank, world, port, a, b, out):
    """One DDP rank: its interleaved share of the batch (as run_stage_worker slices it), the gathered InfoNCE loss,
    backward through DDP; rank 0 saves the loss and the averaged gradient."""
    import torch.distributed as dist

    from study.train.stage_model import gathered, info_nce

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    layer = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(a.shape[1], 4))
    loss = info_nce(gathered(layer(a[rank::world])), gathered(layer(b[rank::world])))
    loss.backward()
    if rank == 0:
        torch.save({"loss": loss.detach(), "grad": layer.module.weight.grad}, out)
    dist.barrier()  # neither rank tears the group down while the other still uses it (gloo aborts the process)
    dist.destroy_process_group()


@pytest.mark.e2e
def test_the_contrastive_loss_and_gradients_do_not_depend_on_the_worker_count(tmp_path):
    """Negatives are gathered from every worker, not taken from a worker's own slice: two workers compute the
    single worker's loss over the whole batch and, after DDP's averaging, its gradient."""
    import torch.multiprocessing as mp
    from helpers import free_port

    from study.train.stage_model import info_nce

    a, b = torch.randn(8, 6, generator=torch.Generator().manual_seed(1)), torch.randn(8, 6)
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 4)
    loss = info_nce(layer(a), layer(b))
    loss.backward()
    mp.spawn(_contrastive_worker, args=(2, free_port(), a, b, str(tmp_path / "ddp.pt")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt")
    assert ddp["loss"].item() == pytest.approx(loss.item(), rel=1e-6)
    assert torch.allclose(ddp["grad"], layer.weight.grad, rtol=1e-5, atol=1e-7)


# --- multilingual captions (--caption-languages) -------------------------------------------------------------------

LANGUAGES = ("en", "de", "ja")


def _recording_caption_batches(monkeypatch) -> list[list[str]]:
    """Every text list the stage tokenizes, in order (per step: the captions, then the text arm's partners)."""
    texts, tokenize = [], stage._caption_batch
    monkeypatch.setattr(stage, "_caption_batch", lambda tokenizer, batch, *rest: texts.append(list(batch))
                        or tokenize(tokenizer, batch, *rest))
    return texts


@pytest.mark.e2e
def test_multilingual_captions_cover_the_listed_languages_with_the_recorded_counts(tmp_path, monkeypatch):
    from study.core.protocol import StageResult
    from study.tune.callbacks import stage_writes

    texts = _recording_caption_batches(monkeypatch)
    out, text = _run(tmp_path, "text", steps=4, caption_languages=LANGUAGES)
    trained, partners = texts[0::2], texts[1::2]
    data = stage.stage_data(stage.StageConfig(model="tiny", modality="text", caption_languages=LANGUAGES))
    train, _ = stage.stage_items(data, LANGUAGES)
    drawn = stage.draw_captions(data, train, stage.batch_order(len(train), 4, 8, 0), LANGUAGES, 0)
    assert trained == [[d.caption for d in s] for s in drawn] and partners == [[d.partner for d in s] for s in drawn]
    languages = [d.language for s in drawn for d in s]
    assert text["captions_per_language"] == {lang: languages.count(lang) for lang in LANGUAGES}
    assert all(text["captions_per_language"].values()) and sum(text["captions_per_language"].values()) == 4 * 8
    assert sum(text["partner_captions_per_language"].values()) == 4 * 8
    assert text["examples"]["skipped"]["fewer than two caption languages"] == 0  # every emoji is named in all 14
    assert 0 < text["caption_pair_word_overlap"] < 0.5  # translations share fewer words than two English names
    assert json.loads((out / "stage.json").read_text())["config"]["caption_languages"] == list(LANGUAGES)
    params = dict(stage_writes(StageResult(str(out), text, False)))["params"]
    assert params["intermediate.caption_languages"] == "en,de,ja"
    assert params["intermediate.captions.ja"] == text["captions_per_language"]["ja"]
    _, multimodal = _run(tmp_path, "multimodal", steps=4, caption_languages=LANGUAGES)
    assert multimodal["caption_order"] == text["caption_order"]  # the image arm trains on the same captions
    assert multimodal["captions_per_language"] == text["captions_per_language"]
    assert set(multimodal["probe"]) == set(data.probe_languages)  # the probe as with English captions


def test_caption_draws_are_seeded_and_pair_each_caption_with_the_same_images_caption_in_another_language():
    data = stage.stage_data(stage.StageConfig(model="tiny", modality="text", caption_languages=LANGUAGES))
    train, _ = stage.stage_items(data, LANGUAGES)
    order = stage.batch_order(len(train), 100, 32, 0)  # each image about four times
    drawn = stage.draw_captions(data, train, order, LANGUAGES, 0)
    assert drawn == stage.draw_captions(data, train, order, LANGUAGES, 0)
    assert drawn != stage.draw_captions(data, train, order, LANGUAGES, 1)
    seen: dict[int, set] = {}
    for step, step_captions in zip(order, drawn, strict=True):
        for i, d in zip(step, step_captions, strict=True):
            assert d.language != d.partner_language and {d.language, d.partner_language} <= set(LANGUAGES)
            assert (d.caption, d.partner) == (data.caption(train[i], d.language),
                                              data.caption(train[i], d.partner_language))
            seen.setdefault(i, set()).add(d.language)
    # drawn per step, not fixed per item: an image meets its captions in several languages
    assert sum(len(languages) > 1 for languages in seen.values()) > 0.8 * len(seen)


@pytest.mark.e2e
def test_english_captions_keep_the_stage_key_and_captions_of_existing_caches(tmp_path, monkeypatch):
    """The default (English captions only) is the stage that a cache written without --caption-languages holds: the
    same cache key (hard-coded, STAGE_FORMAT 4), the same captions and partners, the same data fingerprint, so such
    caches stay valid."""
    default = stage.StageConfig(model="tiny", modality="text")
    assert default.caption_languages == ("en",)
    assert default.key("0123456789abcdef") == "c984c443fff968ed"
    assert stage.StageConfig(model="tiny", modality="multimodal", steps=8, batch_size=8).key(
        "0123456789abcdef") == "41823076748687a9"
    keys = {stage.StageConfig(model="tiny", modality="text", caption_languages=languages).key("0123456789abcdef")
            for languages in (("en",), ("en", "de"), ("de", "en"), LANGUAGES)}
    assert len(keys) == 4  # the languages (and their order, which the draw uses) are in the key
    data = stage.stage_data(default)
    assert data.fingerprint_in(("en",)) == data.fingerprint != data.fingerprint_in(LANGUAGES)
    texts = _recording_caption_batches(monkeypatch)
    _, meta = _run(tmp_path, "text", steps=3)
    order = stage.batch_order(len(data.train), 3, 8, 0)
    assert texts[0::2] == [[data.train[i].caption for i in step] for step in order]
    assert texts[1::2] == [[data.train[i].second_caption for i in step] for step in order]
    before = hashlib.sha256()
    for step in order:
        before.update("\n".join(data.train[i].caption for i in step).encode())
    assert meta["caption_order"] == before.hexdigest() and meta["examples"]["skipped"] == data.skipped
    shared = sum(bool(set(i.caption.lower().split()) & set(i.second_caption.lower().split())) for i in data.train)
    assert meta["caption_pair_word_overlap"] == shared / len(data.train)
    assert meta["captions_per_language"] == {"en": 24}
    from study.core.protocol import StageResult
    from study.tune.callbacks import stage_writes

    cached = {k: v for k, v in meta.items() if k != "captions_per_language"}  # a stage.json without the option
    cached["config"] = {k: v for k, v in meta["config"].items() if k != "caption_languages"}
    assert dict(stage_writes(StageResult("dir", cached, True)))["params"]["intermediate.caption_languages"] == "en"


def test_caption_languages_read_back_from_json_are_the_same_stage():
    """A resumed study reads its stage sources from stored JSON, where the languages are a list: the same stage
    (same key), not an error (otherwise every confirm run of a resumed study would fail)."""
    for languages in (("en",), ("en", "de")):
        stored = stage.StageConfig(model="tiny", modality="text", caption_languages=list(languages))
        fresh = stage.StageConfig(model="tiny", modality="text", caption_languages=languages)
        assert stored == fresh and stored.key("data") == fresh.key("data")


@pytest.mark.parametrize("languages, message", [
    (("en", "xx"), "--caption-languages en,xx: unknown language code(s) 'xx': use ISO 639-1 codes"),
    (("en", "de", "en"), "--caption-languages en,de,en lists en more than once: list each language once"),
    (("de",), "--caption-languages de: list en alone (the default) or two or more languages"),
    (("en", "hi"), "--caption-languages en,hi: OpenMoji"),
])
def test_bad_caption_languages_are_one_line_naming_the_flag(languages, message):
    with pytest.raises(StudyError) as error:
        stage.stage_data(stage.StageConfig(model="tiny", modality="text", caption_languages=languages))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    if "hi" in languages:  # the data it lacks: named, with the languages the data has
        assert "has no captions in hi; it has en, es, ja, ko" in str(error.value)


def test_the_caption_languages_flags_reach_the_stage(tmp_path):
    from study.cli.train import _stage_of, build_parser
    from study.tune.trial import TrialConfig, tune_constants

    args = build_parser().parse_args(["--model", "tiny", "--modality", "text", "--caption-languages", "en, de,ja"])
    cfg = TrainConfig(model="tiny")
    assert _stage_of(args, cfg).caption_languages == LANGUAGES
    with pytest.raises(StudyError, match="--caption-languages en,de,xx: unknown"):
        _stage_of(build_parser().parse_args(["--modality", "text", "--caption-languages", "en,de,xx"]), cfg)
    constants = tune_constants(cfg, stage.stage_sources(True, caption_languages=LANGUAGES), Scaling(), str(tmp_path),
                               "study-x")
    assert TrialConfig.from_tune({**constants, "stage": {"modality": "multimodal"}}).stage_config().caption_languages \
        == LANGUAGES
    assert stage.stage_sources(True)["caption_languages"] == ("en",)

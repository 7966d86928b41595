"""The intermediate stage: matched text vs multimodal contrastive training, caching, hand-off to fine-tuning."""

import json
from pathlib import Path

import pytest
import torch

from study import intermediate as stage
from study.config import TrainConfig
from study.data import captions
from study.errors import StudyError
from study.ray_setup import Scaling
from study.worker import validate


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
    from study.models import get_spec, load_model, load_tokenizer

    model = stage.ContrastiveModel(load_model(get_spec("tiny"), "base"), None)
    passes = []
    model.backbone.register_forward_hook(lambda module, args, output: passes.append(torch.is_grad_enabled()))
    tokenizer = load_tokenizer(get_spec("tiny"))
    batch = tokenizer(["a red apple", "a blue car"], padding=True, return_tensors="pt")
    partner = tokenizer(["an apple", "a car"], padding=True, return_tensors="pt")
    model(dict(batch), dict(partner)).backward()
    assert sorted(passes) == [False, True]  # the caption with gradient, its partner without


def test_stage_trains_with_dropout_on(tmp_path, monkeypatch):
    """from_pretrained hands the backbone over in eval mode; every stage step must run in train mode."""
    modes, forward = [], stage.ContrastiveModel.forward

    def recording(self, captions, partner):
        modes.append({m.training for m in self.modules()})
        return forward(self, captions, partner)

    monkeypatch.setattr(stage.ContrastiveModel, "forward", recording)
    _run(tmp_path, "multimodal", steps=3)
    assert modes == [{True}] * 3


@pytest.mark.parametrize("modality", ["text", "multimodal"])
def test_contrastive_loss_decreases(tmp_path, modality):
    _, meta = _run(tmp_path, modality, steps=40, lr=1e-3, head_lr=1e-3, vision_lr=3e-3)
    losses = meta["losses"]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10, losses


def test_stage_checkpoint_starts_the_fine_tuning(tmp_path):
    out, _ = _run(tmp_path, "multimodal")
    assert json.loads((out / "study_model.json").read_text())["intermediate"] == "multimodal"
    cfg = TrainConfig(model="tiny", task="pocket-topic", init_checkpoint=str(out), max_train_examples=16,
                      batch_size=8, max_length=32)
    validate(cfg)
    from study.models import get_spec, load_model
    from study.worker import FineTuneRun

    run = FineTuneRun(cfg, 0, 1, torch.device("cpu"))
    saved = load_model(get_spec("tiny"), "base", path=str(out))
    from study.trim import untrimmed

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


@pytest.mark.slow
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

    from study.intermediate import gathered, info_nce

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    layer = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(a.shape[1], 4))
    loss = info_nce(gathered(layer(a[rank::world])), gathered(layer(b[rank::world])))
    loss.backward()
    if rank == 0:
        torch.save({"loss": loss.detach(), "grad": layer.module.weight.grad}, out)
    dist.destroy_process_group()


def test_the_contrastive_loss_and_gradients_do_not_depend_on_the_worker_count(tmp_path):
    """Each worker used to take only its own slice as negatives. Gathered, two workers compute the
    single worker's loss over the whole batch and, after DDP's averaging, its gradient."""
    import torch.multiprocessing as mp
    from helpers import free_port

    from study.intermediate import info_nce

    a, b = torch.randn(8, 6, generator=torch.Generator().manual_seed(1)), torch.randn(8, 6)
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 4)
    loss = info_nce(layer(a), layer(b))
    loss.backward()
    mp.spawn(_contrastive_worker, args=(2, free_port(), a, b, str(tmp_path / "ddp.pt")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt")
    assert ddp["loss"].item() == pytest.approx(loss.item(), rel=1e-6)
    assert torch.allclose(ddp["grad"], layer.weight.grad, rtol=1e-5, atol=1e-7)

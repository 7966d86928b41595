"""The intermediate training stage: text-only vs multimodal contrastive training on matched captions.

Controlled design: every modality sees the same images' captions in the same order, for the same steps, batch
size, learning rate and loss (symmetric InfoNCE over mean-pooled backbone embeddings through a projection head),
and sends the same captions through the backbone with gradient — one per item and step:

* ``multimodal``:          caption  <->  image (a vision tower + its projection head);
* ``multimodal-shuffled``: caption  <->  the image of another item (a fixed seeded permutation): the control that
  keeps everything of ``multimodal`` but the link between a caption and its image;
* ``text``:                caption  <->  partner caption of the same image, through the same backbone and head with
  no gradient (a stop-gradient partner, so the backbone gets the same gradient-bearing passes as the image arms);
* ``none``:                no stage.

By default (``caption_languages`` ``en``) the captions are English in every modality, the partner the image's second
English caption: the stage cannot act as a pivot between languages, so any effect on transfer is through the English
representation. With several caption languages (``--caption-languages en,de,ja``: offline the emoji names' 13
languages + English, on the real path a dataset's ``caption_<code>`` columns) each item's caption is drawn in one of
the listed languages the item has and the text arm's partner in another (a translation pair through the shared
image): the image then links the languages, the setting of the published positive evidence, and the text arm stays
the matched control (the same captions, the same gradient-bearing passes). The draw is seeded and the same in every
modality, and made per item *and step*, not once per item, so that over the stage each image is seen with captions
in several languages (its link between them); items with captions in fewer than two listed languages are left out
and counted. ``stage.json`` records the captions used per language and how many caption pairs the text arm can draw
share a word (``caption_pair_word_overlap``: how easy the text task is).

Data (``study.data.captions``): offline, OpenMoji emoji captioned with CLDR names; online, a hub dataset such as
Flickr30k; or a folder of your own images. Vision tower: offline there are no pretrained vision weights, so a small
CNN is **trained from scratch** (``scratch``, recorded as such); online, a pretrained CLIP vision model through
``transformers`` (``openai/clip-vit-base-patch32``), ``frozen``, with only its ``last`` block trained, or ``full``y
trained (``vision_train``, a searched option). The multimodal probe retrieves each held-out image's caption among all
held-out captions (accuracy@1) in every language the data names its images in (13 + English for emoji).

The stage writes the backbone as a study model directory (``init_checkpoint`` of the fine-tuning), cached by
(model, modality, data, tower, steps, seed, learning rates, batch, caption languages other than the default) so
trials that share a stage do not redo it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from study.core.cache import atomic_directory, cache_dir
from study.core.errors import StudyError
from study.core.languages import LANGUAGES
from study.core.protocol import SHUFFLED_IMAGES, STAGE_ARTIFACT, STAGE_MODALITIES, StageResult
from study.data.caption_sources import caption_set
from study.data.captions import EMOJI, FLICKR30K, CaptionSet
from study.data.multi30k import MULTI30K, MULTI30K_LANGUAGES
from study.train.stage_batches import (
    ENGLISH,
    _per_language,
    batch_order,
    caption_pair_word_overlap,
    draw_captions,
    partner_pairs,
    shuffled_images,
    stage_items,
)
from study.train.stage_model import (
    CLIP_TOWER,
    SCRATCH,
    SCRATCH_IMAGE_SIZE,
    VISION_TRAIN,
    ContrastiveModel,
    VisionTower,
    _resolve_tower,
    min_image_side,
)

STAGE_META = STAGE_ARTIFACT  # in the stage's directory, and logged under the same name
STAGE_FORMAT = 4  # bump when the stage's training changes, so cached stages of older code are not reused


@dataclass(frozen=True)
class StageConfig:
    """The options of one intermediate stage; invalid combinations raise StudyError on construction."""

    model: str
    modality: str
    steps: int = 200
    batch_size: int = 32
    lr: float = 5e-5  # the backbone
    head_lr: float = 1e-3  # the projection heads (both modalities)
    vision_lr: float = 1e-3  # multimodal only: the trained part of the vision tower
    seed: int = 0
    max_length: int = 32
    data: str = EMOJI  # see study.data.captions
    vision_tower: str = SCRATCH  # or a CLIP vision model (hub id or directory)
    vision_train: str = "full"  # frozen | last | full (a scratch tower is always trained in full)
    caption_languages: tuple[str, ...] = ENGLISH  # the languages captions are drawn in (--caption-languages)

    def __post_init__(self) -> None:
        # a study's stored settings come back from JSON with a list: the same languages, one type (``key``, ENGLISH)
        object.__setattr__(self, "caption_languages", tuple(self.caption_languages))
        if self.modality not in STAGE_MODALITIES:
            raise StudyError(f"intermediate modality {self.modality!r} is invalid: choose one of "
                             f"{', '.join(STAGE_MODALITIES)}")
        for name in ("steps", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise StudyError(f"intermediate {name}={getattr(self, name)} must be >= 1")
        for name in ("lr", "head_lr", "vision_lr"):
            if not 0 < getattr(self, name) < 1:
                raise StudyError(f"intermediate {name}={getattr(self, name)} must be in (0, 1)")
        if self.batch_size < 2:
            raise StudyError("intermediate batch_size must be >= 2: the contrastive loss needs negatives")
        if self.vision_train not in VISION_TRAIN:
            raise StudyError(f"vision_train {self.vision_train!r} is invalid: choose one of {', '.join(VISION_TRAIN)}")
        if self.vision_tower == SCRATCH and self.vision_train != "full":
            raise StudyError(f"vision_train={self.vision_train} needs a pretrained vision tower: a scratch tower is "
                             f"trained in full (pass --vision-tower {CLIP_TOWER}, or do not search vision_train)")
        languages, flag = self.caption_languages, f"--caption-languages {','.join(self.caption_languages)}"
        unknown = [code for code in languages if code not in LANGUAGES]
        if unknown:
            raise StudyError(f"{flag}: unknown language code(s) {', '.join(map(repr, unknown))}: use ISO 639-1 codes "
                             f"of the study's languages ({', '.join(sorted(LANGUAGES))})")
        repeated = sorted({code for code in languages if languages.count(code) > 1})
        if repeated:
            raise StudyError(f"{flag} lists {', '.join(repeated)} more than once: list each language once")
        if len(languages) < 2 and languages != ENGLISH:
            raise StudyError(f"{flag}: list en alone (the default) or two or more languages, e.g. en,de,ja: the text "
                             "arm pairs each caption with one in another listed language")

    def key(self, data_fingerprint: str) -> str:
        """16 hex digits of SHA-256 over the config, the data fingerprint and STAGE_FORMAT: the stage's cache key.
        English captions (the default) leave ``caption_languages`` out, so their stages keep the keys they had
        before the option existed."""
        config = asdict(self)
        if self.caption_languages == ENGLISH:
            del config["caption_languages"]
        content = [config, data_fingerprint, STAGE_FORMAT]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


# --- model and loss -------------------------------------------------------------------------------------------


# --- the stage under Ray Train ----------------------------------------------------------------------------------


def stage_fn_per_worker(config: dict) -> None:
    """Ray Train entry point: ``config`` is {"stage": StageConfig fields, "out": directory}; runs run_stage_worker."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    run_stage_worker(StageConfig(**config["stage"]), Path(config["out"]), context.get_world_rank(),
                     context.get_world_size(), ray.train.torch.get_device(),
                     report=lambda metrics: ray.train.report(metrics))


def _caption_batch(tokenizer, texts: list[str], max_length: int, device) -> dict:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


def stage_data(cfg: StageConfig, vision: VisionTower | None = None) -> CaptionSet:
    """The stage's caption set, with images checked against the size the vision tower takes and its captions
    against the caption languages (StudyError naming the languages the data has, before Ray starts)."""
    size = vision.image_size if vision is not None else _tower_image_size(cfg)
    data = caption_set(cfg.data, min_image_side(size))
    missing = [lang for lang in cfg.caption_languages if lang not in data.probe_languages]
    if missing:
        raise StudyError(f"--caption-languages {','.join(cfg.caption_languages)}: {data.description} has no captions "
                         f"in {', '.join(missing)}; it has {', '.join(data.probe_languages)}: list only those, or "
                         f"give --intermediate-data {MULTI30K} (en, de, fr, cs) or data with a caption_<code> column "
                         "per language")
    if cfg.caption_languages == ENGLISH and not data.english_pairs:
        listed = ",".join(data.probe_languages)
        raise StudyError(f"--caption-languages en: {data.description} has one English caption per image (the others "
                         f"are its translations), and an English-only stage needs two: list two or more of {listed}, "
                         f"e.g. --caption-languages {listed}")
    stage_items(data, cfg.caption_languages)
    return data


def _tower_image_size(cfg: StageConfig) -> int:
    if cfg.vision_tower == SCRATCH:
        return SCRATCH_IMAGE_SIZE
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig.from_pretrained(_resolve_tower(cfg.vision_tower)).image_size


def run_stage_worker(cfg: StageConfig, out: Path, rank: int, world: int, device, report) -> dict:
    """Train the stage on one worker (DDP when world > 1); rank 0 writes the encoder and ``stage.json`` to out."""
    from study.models.registry import get_spec, load_model, load_tokenizer
    from study.vme.engine import make_optimizer

    if cfg.batch_size % world:
        raise StudyError(f"intermediate batch_size {cfg.batch_size} does not split evenly over {world} workers")
    spec = get_spec(cfg.model)
    tokenizer = load_tokenizer(spec)
    torch.manual_seed(cfg.seed)
    vision = VisionTower(cfg.vision_tower, cfg.vision_train) if cfg.modality != "text" else None
    data = stage_data(cfg, vision)
    train, dropped = stage_items(data, cfg.caption_languages)
    model = ContrastiveModel(load_model(spec, "base"), vision).to(device)
    ddp = model
    if world > 1:
        import ray.train.torch

        # the backbone's pooler is not used by the mean-pooled embeddings (but kept for the fine-tuning heads)
        ddp = ray.train.torch.prepare_model(model, move_to_device=False,
                                            parallel_strategy_kwargs={"find_unused_parameters": True})
    optimizer = make_optimizer(model.backbone, cfg.lr)  # the backbone; heads and vision below
    optimizer.add_param_group({"params": list(model.text_head.parameters()), "lr": cfg.head_lr})
    if vision is not None:
        optimizer.add_param_group({"params": list(model.image_head.parameters()), "lr": cfg.head_lr})
        if vision.trainable_parameters():
            optimizer.add_param_group({"params": vision.trainable_parameters(), "lr": cfg.vision_lr})
    order = batch_order(len(train), cfg.steps, cfg.batch_size, cfg.seed)
    drawn = draw_captions(data, train, order, cfg.caption_languages, cfg.seed)
    image_of = shuffled_images(len(train), cfg.seed) if cfg.modality == SHUFFLED_IMAGES else list(range(len(train)))
    captions_seen = hashlib.sha256()
    losses, reported = [], 0
    started = time.perf_counter()
    model.train()  # from_pretrained returns the backbone in eval mode: dropout must be on while training
    for step, (indices, step_captions) in enumerate(zip(order, drawn, strict=True), start=1):
        batch = step_captions[rank::world]
        captions_seen.update("\n".join(b.caption for b in batch).encode())
        captions = _caption_batch(tokenizer, [b.caption for b in batch], cfg.max_length, device)
        partner = (torch.stack([data.image_tensor(train[image_of[i]], vision.image_size)
                                for i in indices[rank::world]]).to(device) if vision
                   else _caption_batch(tokenizer, [b.partner for b in batch], cfg.max_length, device))
        loss = ddp(captions, partner)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 20 == 0 or step == cfg.steps:  # mean loss since the previous report
            report({"intermediate/loss": sum(losses[reported:]) / (step - reported), "intermediate/step": step})
            reported = step
    every = [b for step_captions in drawn for b in step_captions]  # all ranks' captions
    meta = {"config": asdict(cfg), "losses": losses, "steps": len(losses), "caption_order": captions_seen.hexdigest(),
            "examples": {"train": len(train), "test": len(data.test), "skipped": {**data.skipped, **dropped}},
            "caption_pair_word_overlap": caption_pair_word_overlap(partner_pairs(data, train, cfg.caption_languages)),
            "captions_per_language": _per_language(cfg.caption_languages, [b.language for b in every]),
            "partner_captions_per_language": (_per_language(cfg.caption_languages, [b.partner_language for b in every])
                                              if cfg.modality == "text" else None),
            "vision_tower": vision.description if vision else None, "data": data.description,
            "seconds": time.perf_counter() - started}
    if rank == 0:
        model.eval()
        meta["probe"] = probe(model, tokenizer, data, cfg.max_length, device) if vision is not None else {}
        _write_stage(model.backbone, tokenizer, spec, out, meta)
    return meta


def _write_stage(backbone, tokenizer, spec, out: Path, meta: dict) -> None:
    """Write the encoder directory atomically (temporary folder, then rename)."""
    from study.models.registry import save_model_dir

    with atomic_directory(out) as scratch:
        save_model_dir(backbone, tokenizer, spec, scratch, intermediate=meta["config"]["modality"])
        (scratch / STAGE_META).write_text(json.dumps(meta, indent=1))


@torch.no_grad()
def probe(model: ContrastiveModel, tokenizer, data: CaptionSet, max_length: int, device) -> dict[str, float]:
    """Cross-lingual image -> caption retrieval on held-out images: accuracy@1 per language (English included)."""
    scores = {}
    for lang in data.probe_languages:
        pairs = [(item, data.caption(item, lang)) for item in data.test]
        pairs = [(item, caption) for item, caption in pairs if caption]
        if len(pairs) < 2:
            continue
        images = torch.cat([model.embed_image(torch.stack([data.image_tensor(item, model.vision.image_size)
                                                           for item, _ in pairs[s:s + 64]]).to(device))
                            for s in range(0, len(pairs), 64)])
        texts = torch.cat([model.embed_text(_caption_batch(tokenizer, [c for _, c in pairs[s:s + 64]], max_length,
                                                           device)) for s in range(0, len(pairs), 64)])
        similarity = F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
        scores[lang] = float((similarity.argmax(dim=1) == torch.arange(len(pairs), device=device)).float().mean())
    return scores


def stage_config(model: str, seed: int, stage: dict, fixed: dict | None = None) -> StageConfig:
    """The stage of a trial from its sampled parameters (search-space names -> StageConfig fields) and the study's
    fixed choices (``data``, ``vision_tower``, ``caption_languages``)."""
    defaults = StageConfig(model=model, modality="text")
    return StageConfig(model=model, modality=stage["modality"], seed=seed,
                       steps=int(stage.get("intermediate_steps", defaults.steps)),
                       lr=float(stage.get("intermediate_lr", defaults.lr)),
                       vision_lr=float(stage.get("vision_lr", defaults.vision_lr)),
                       vision_train=str(stage.get("vision_train", defaults.vision_train)), **(fixed or {}))


def add_caption_languages_flag(parser) -> None:
    """``--caption-languages``, the same on ``study train`` and ``study tune``."""
    parser.add_argument("--caption-languages", type=lambda text: tuple(code.strip() for code in text.split(",")),
                        help="intermediate stage: the languages its captions are drawn in, comma-separated ISO 639-1 "
                        "codes (default en; e.g. en,de,ja: each image is seen with captions in several languages and "
                        "the text arm pairs a caption with its translation; the data must have them)")


def stage_sources(offline_stand_in: bool, data: str | None = None, vision_tower: str | None = None,
                  caption_languages: tuple[str, ...] | None = None) -> dict:
    """The stage's fixed image-caption data, vision tower and caption languages: the given ones, else the offline
    emoji set and a scratch vision tower for offline stand-in models, Flickr30k and CLIP otherwise, and English
    (Multi30K's four languages on Multi30K, whose single English caption per image cannot make an English pair)."""
    data = data or (EMOJI if offline_stand_in else FLICKR30K)
    return {"data": data, "vision_tower": vision_tower or (SCRATCH if offline_stand_in else CLIP_TOWER),
            "caption_languages": caption_languages or (MULTI30K_LANGUAGES if data == MULTI30K else ENGLISH)}


def run_stage(cfg: StageConfig, scaling, storage: str) -> StageResult:
    """Run the stage as a Ray Train run, or take it from the cache (trials share stages): its encoder directory,
    metadata and whether it was cached. StudyError when the run fails."""
    from study.models.registry import get_spec, model_path
    from study.train.ray_setup import torch_trainer

    model_path(get_spec(cfg.model))  # build an offline model here, once, before the workers load it
    key = cfg.key(stage_data(cfg).fingerprint_in(cfg.caption_languages))
    out = cache_dir() / "intermediate" / f"{cfg.model}-{cfg.modality}-{key}"
    if (out / STAGE_META).is_file():
        return StageResult(str(out), json.loads((out / STAGE_META).read_text()), True)
    result = torch_trainer(stage_fn_per_worker, {"stage": asdict(cfg), "out": str(out)}, scaling, storage,
                           f"intermediate-{out.name}").fit()
    if result.error or not (out / STAGE_META).is_file():
        raise StudyError(f"the intermediate stage {out.name} failed: {result.error}")
    return StageResult(str(out), json.loads((out / STAGE_META).read_text()), False)

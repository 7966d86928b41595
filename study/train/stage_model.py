"""The intermediate stage's model and loss: a small vision encoder trained from scratch or a CLIP vision tower, the
contrastive model that pairs it (or a second text view) with the text encoder, and InfoNCE over gathered batches."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from study.core.errors import StudyError

SCRATCH = "scratch"
CLIP_TOWER = "openai/clip-vit-base-patch32"  # the real path's default vision tower
VISION_TRAIN = ("frozen", "last", "full")
SCRATCH_IMAGE_SIZE = 32
EMBED_DIM = 128


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
        """(B, dim) embeddings of (B, 3, H, W) images: three stride-2 convolutions, then global average pooling."""
        return self.net(images)


class VisionTower(nn.Module):
    """The image side: a scratch CNN, or a pretrained CLIP vision model (frozen, last block trained, or full)."""

    def __init__(self, name: str, train: str):
        super().__init__()
        self.name, self.train_mode = name, train
        if name == SCRATCH:
            self.encoder, self.image_size, self.dim = SmallVisionEncoder(), SCRATCH_IMAGE_SIZE, EMBED_DIM
            self.register_buffer("mean", torch.zeros(3, 1, 1), persistent=False)
            self.register_buffer("std", torch.ones(3, 1, 1), persistent=False)
            return
        from transformers import CLIPVisionModel
        from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

        self.encoder = CLIPVisionModel.from_pretrained(_resolve_tower(name))
        self.image_size, self.dim = self.encoder.config.image_size, self.encoder.config.hidden_size
        self.register_buffer("mean", torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1), persistent=False)
        layers = getattr(self.encoder, "vision_model", self.encoder)  # transformers < 5 nests it one level deeper
        trained = {"frozen": [], "full": [self.encoder], "last": [layers.encoder.layers[-1], layers.post_layernorm]}
        self.encoder.requires_grad_(False)
        for module in trained[train]:
            module.requires_grad_(True)

    @property
    def description(self) -> str:
        """What the tower is and how it is trained, for MLflow and stage.json."""
        if self.name == SCRATCH:
            return "SmallVisionEncoder (3-layer CNN, trained from scratch)"
        return f"{self.name} (pretrained CLIP vision model, {self.train_mode})"

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The encoder's parameters that require gradients (none when frozen)."""
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) in [0, 1] -> (B, dim)
        """(B, dim) embeddings of (B, 3, S, S) images in [0, 1], normalised by the tower's mean and std."""
        pixels = (images - self.mean) / self.std
        if self.name == SCRATCH:
            return self.encoder(pixels)
        return self.encoder(pixel_values=pixels).pooler_output


def _resolve_tower(name: str) -> str:
    """A local directory, a cached hub id, or the hub when it answers; otherwise one clear line."""
    from huggingface_hub import try_to_load_from_cache

    from study.data.hub import hf_home, hub_unreachable_reason

    if Path(name).is_dir() or isinstance(try_to_load_from_cache(name, "config.json"), str):
        return name
    reason = hub_unreachable_reason()
    if reason:
        raise StudyError(f"vision tower {name!r} cannot be loaded from the Hugging Face hub: {reason} (cache "
                         f"HF_HOME={hf_home()}); pass a local CLIP vision model directory, or --vision-tower scratch")
    return name


def gathered(x: torch.Tensor) -> torch.Tensor:
    """(B_local, D) -> (B_global, D): every DDP rank's rows, in rank order, with gradients flowing back to each rank
    (``torch.distributed.nn.functional.all_gather``), so that the contrastive negatives are the whole global batch
    and the stage computes the same loss and, after DDP's averaging, the same gradients whatever the number of
    workers. Unchanged outside a distributed run."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x))


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE: row i of a matches row i of b; both directions averaged."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    targets = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


class ContrastiveModel(nn.Module):
    """Backbone + text head (+ vision tower and image head for the multimodal stage)."""

    def __init__(self, backbone: nn.Module, vision: VisionTower | None):
        super().__init__()
        self.backbone = backbone
        self.text_head = nn.Linear(backbone.config.hidden_size, EMBED_DIM)
        self.vision = vision
        self.image_head = nn.Linear(vision.dim, EMBED_DIM) if vision is not None else None

    def embed_text(self, inputs: dict) -> torch.Tensor:
        """(B, EMBED_DIM): the backbone's last hidden states mean-pooled over the attention mask, then the text head."""
        from study.vme.objective import masked_mean

        hidden = self.backbone(**inputs).last_hidden_state
        return self.text_head(masked_mean(hidden, inputs["attention_mask"]))

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, EMBED_DIM): the vision tower's (B, dim) output through the image head (multimodal only)."""
        return self.image_head(self.vision(images))

    def forward(self, captions: dict, partner) -> torch.Tensor:
        """InfoNCE between captions and their partner: images (multimodal) or partner captions (text, embedded
        without gradient: one gradient-bearing backbone pass per item, as in the image arms)."""
        if self.vision is not None:
            other = self.embed_image(partner)
        else:
            with torch.no_grad():
                other = self.embed_text(partner)
        return info_nce(gathered(self.embed_text(captions)), gathered(other))  # negatives: the global batch


def min_image_side(image_size: int) -> int:
    """Smaller images carry too little for the tower (upscaled 4x or more): they are skipped, and counted."""
    return max(8, image_size // 4)

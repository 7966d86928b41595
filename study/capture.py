"""Collect what the VME objective needs from a Hugging Face encoder without slowing the rest of it down.

The reference code runs every layer in eager attention with ``output_attentions=True`` and
``output_hidden_states=True``; only the embedding-layer output and one layer's attention probabilities are used.
``VMECapture`` keeps the fast attention kernel (SDPA) on every layer but ``ap_layer``, which gets an eager kernel
that also stores its (post-dropout, exactly like eager's returned weights) probabilities, and a forward hook saves
the embedding-layer output. The model's outputs are unchanged.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from transformers import AttentionInterface

from study.errors import StudyError
from study.models import encoder_layers

CAPTURE_ATTENTION = "vme_capture"


def _capturing_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                         scaling: float | None = None, dropout: float = 0.0, **_kwargs) -> tuple[Tensor, Tensor]:
    """Eager attention that accepts the boolean masks built for SDPA and keeps its probabilities on the module."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, L, L)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # SDPA convention: True = may attend
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:  # eager convention: additive
            scores = scores + attention_mask
    probs = nn.functional.dropout(torch.softmax(scores, dim=-1), p=dropout, training=module.training)
    module.captured_attention = probs
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


AttentionInterface.register(CAPTURE_ATTENTION, _capturing_attention)


def check_ap_layer(model: nn.Module, ap_layer: int) -> None:
    """Raise StudyError unless ``ap_layer`` indexes one of the model's encoder layers (0..depth - 1)."""
    depth = len(encoder_layers(model))
    if not 0 <= ap_layer < depth:
        raise StudyError(f"ap_layer={ap_layer} is out of range for this model: choose 0..{depth - 1} "
                         f"(the model has {depth} layers)")


class VMECapture:
    """Hooks a model so that each forward pass leaves ``embeddings`` (B, L, d) and ``attention`` (B, H, L, L)."""

    def __init__(self, model: nn.Module, ap_layer: int):
        check_ap_layer(model, ap_layer)
        self._attention_module = encoder_layers(model)[ap_layer].attention.self
        self._shared_config = self._attention_module.config
        private = copy.copy(self._shared_config)  # only this layer switches kernel; the model's config is untouched
        private._attn_implementation = CAPTURE_ATTENTION
        self._attention_module.config = private
        self._hook = model.base_model.embeddings.register_forward_hook(self._save_embeddings)
        self.embeddings: Tensor | None = None

    def _save_embeddings(self, _module: nn.Module, _inputs, output: Tensor) -> None:
        self.embeddings = output

    @property
    def attention(self) -> Tensor:
        """(B, H, L, L) attention probabilities of ``ap_layer`` from the last forward pass."""
        return self._attention_module.captured_attention

    def remove(self) -> None:
        """Restore the model exactly (kernel and hooks), e.g. before saving or evaluation."""
        self._hook.remove()
        self._attention_module.config = self._shared_config
        self._attention_module.__dict__.pop("captured_attention", None)

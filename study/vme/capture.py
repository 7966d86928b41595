"""Collect what the VME objective needs from a Hugging Face encoder without slowing the rest of it down.

The reference code runs every layer in eager attention with ``output_attentions=True`` and
``output_hidden_states=True``; only the embedding-layer output and one layer's attention probabilities are used.
``VMECapture`` keeps the fast attention kernel (SDPA) on every layer but ``ap_layer``, which gets an eager kernel
that also stores its (post-dropout, exactly like eager's returned weights) probabilities, and a forward hook saves
the embedding-layer output. The model's outputs are unchanged.

Maps padded to ``max_length`` (the released code's padding) without running padding through the model: real tokens
never attend to padding (the key mask gives padded columns a probability of exactly 0), so the batch can stay padded
to its longest row, and the rows of the padded positions past it (which do attend to the real tokens) are computed
on their own, as queries only, through the layers up to ``ap_layer`` (``VMECapture.padded_rows``).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from study.core.errors import StudyError

CAPTURE_ATTENTION = "vme_capture"
KEEP_KEYS_ATTENTION = "vme_keep_keys"


def encoder_layers(model):
    """The transformer layers of a BERT / XLM-R model with or without a task head."""
    return model.base_model.encoder.layer


def _probabilities(module: nn.Module, query: Tensor, key: Tensor, attention_mask: Tensor | None,
                   scaling: float | None, dropout: float) -> Tensor:
    """Eager attention's probabilities (after dropout, as eager returns them) under either kind of mask."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Lq, Lk)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # SDPA convention: True = may attend
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:  # eager convention: additive
            scores = scores + attention_mask
    return nn.functional.dropout(torch.softmax(scores, dim=-1), p=dropout, training=module.training)


def _capturing_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                         scaling: float | None = None, dropout: float = 0.0, **_kwargs) -> tuple[Tensor, Tensor]:
    """Eager attention that accepts the boolean masks built for SDPA and keeps its probabilities (and the layer's keys
    and values, for ``padded_rows``) on the module."""
    probs = _probabilities(module, query, key, attention_mask, scaling, dropout)
    module.captured_attention = probs
    if getattr(module, "vme_keep_keys", False):
        module.captured_keys = key, value
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


def _keys_keeping_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                            attention_mask: Tensor | None, **kwargs) -> tuple[Tensor, None]:
    """SDPA that also keeps the layer's keys and values (autograd saves them anyway): the padded rows attend to them."""
    module.captured_keys = key, value
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(CAPTURE_ATTENTION, _capturing_attention)
AttentionInterface.register(KEEP_KEYS_ATTENTION, _keys_keeping_attention)


def check_ap_layer(model: nn.Module, ap_layer: int) -> None:
    """Raise StudyError unless ``ap_layer`` indexes one of the model's encoder layers (0..depth - 1)."""
    depth = len(encoder_layers(model))
    if not 0 <= ap_layer < depth:
        raise StudyError(f"ap_layer={ap_layer} is out of range for this model: choose 0..{depth - 1} "
                         f"(the model has {depth} layers)")


class VMECapture:
    """Hooks a model so that each forward pass leaves ``embeddings`` (B, L, d) and ``attention`` (B, H, L, L).

    ``padded_rows=True`` also keeps the keys and values of the layers up to ``ap_layer``, for ``padded_rows``."""

    def __init__(self, model: nn.Module, ap_layer: int, padded_rows: bool = False):
        check_ap_layer(model, ap_layer)
        self._model, self.ap_layer = model, ap_layer
        self._layers = list(encoder_layers(model)[:ap_layer + 1])
        self._attention_module = self._layers[ap_layer].attention.self
        self._shared_config = self._attention_module.config
        self._switched = [(self._attention_module, CAPTURE_ATTENTION)]
        if padded_rows:
            self._switched += [(layer.attention.self, KEEP_KEYS_ATTENTION) for layer in self._layers[:ap_layer]]
        for module, kernel in self._switched:  # only these layers switch kernel; the model's config is untouched
            private = copy.copy(self._shared_config)
            private._attn_implementation = kernel
            module.config = private
        self._attention_module.vme_keep_keys = padded_rows
        self._hook = model.base_model.embeddings.register_forward_hook(self._save_embeddings)
        self._in_padded_rows = False
        self.embeddings: Tensor | None = None

    def _save_embeddings(self, _module: nn.Module, _inputs, output: Tensor) -> None:
        if not self._in_padded_rows:
            self.embeddings = output

    def padded_rows(self, attention_mask: Tensor, length: int, pad_id: int) -> Tensor | None:
        """(B, H, length - L, L) attention probabilities at ``ap_layer`` of the padding positions L..length-1 that
        padding the last batch (B, L) to ``length`` would add (None when L >= length). Exact: those positions are
        queries only (every real and padded position masks them out as keys), so each layer's keys and values are
        the ones the last forward pass computed; their own hidden states go through the model's own modules, from
        the embedding of the pad token at their positions up to ``ap_layer``'s attention probabilities."""
        rows, real = attention_mask.shape
        kept = [layer.attention.self.__dict__.pop("captured_keys") for layer in self._layers]  # freed after use
        if real >= length:
            return None
        embeddings = self._model.base_model.embeddings
        ids = attention_mask.new_full((rows, length - real), pad_id)
        self._in_padded_rows = True
        try:  # cache_length: BERT numbers these positions real..length-1; XLM-R gives pads its padding position
            hidden = embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids), cache_length=real)
        finally:
            self._in_padded_rows = False
        keys_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L): padding is never a key
        for layer, (key, value) in zip(self._layers, kept, strict=True):
            attention = layer.attention.self
            query = attention.query(hidden).view(rows, length - real, -1, attention.attention_head_size)
            query = query.transpose(1, 2)  # (B, H, T, dh)
            dropout = attention.dropout.p if attention.training else 0.0
            if layer is self._layers[-1]:
                return _probabilities(attention, query, key, keys_mask, attention.scaling, dropout)
            context = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=keys_mask,
                                                                 dropout_p=dropout, scale=attention.scaling)
            context = context.transpose(1, 2).reshape(rows, length - real, -1)
            hidden = layer.feed_forward_chunk(layer.attention.output(context, hidden))
        raise AssertionError("unreachable: the last layer returns")

    @property
    def attention(self) -> Tensor:
        """(B, H, L, L) attention probabilities of ``ap_layer`` from the last forward pass."""
        return self._attention_module.captured_attention

    def remove(self) -> None:
        """Restore the model exactly (kernel and hooks), e.g. before saving or evaluation."""
        self._hook.remove()
        for module, _ in self._switched:
            module.config = self._shared_config
            module.__dict__.pop("captured_attention", None)
            module.__dict__.pop("captured_keys", None)
        self._attention_module.__dict__.pop("vme_keep_keys", None)

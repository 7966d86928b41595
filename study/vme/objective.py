"""The VME (EAR) objective of Ding et al. 2022 as pure tensor functions.

No Ray, no I/O, no model code: every function takes tensors the model already produced, so each term can be
unit-tested on hand-made tensors and swapped in ablations. Conventions follow the authors' released code (KB-Ding/EAR,
the ``Bert_ept_apt`` / ``Xlmr_ept_apt`` models): x is the original English input, x̃ ("xt") its synonym-substituted
virtual copy.

    total = w_task * CE(x̃) + w_robust * CE(x) + alpha * EP + beta * AP
    EP    = -MSE(mean_emb(x), mean_emb(x̃))          (pushes the two embedding means apart)
    AP    =  MSE(attn_l(x̃), attn_l(x))              (pulls layer-l attention maps together)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

AP_MASK_MODES = ("none", "padding")
IGNORE_INDEX = -100  # label value that cross-entropy skips (sub-word continuations, padding)


@dataclass(frozen=True)
class VMEWeights:
    """Weights of the four loss terms. Defaults are the released scripts' (CE weights 1, alpha 0.1, beta 1)."""

    task: float = 1.0  # CE on the virtual copy x̃
    robust: float = 1.0  # CE on the original x
    alpha: float = 0.1  # Embedding-Push
    beta: float = 1.0  # Attention-Pull

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"loss weight {f.name}={value!r} is invalid: weights must be finite numbers >= 0 "
                    f"(EP is already a negative MSE; use alpha=0 to switch it off)"
                )


@dataclass
class StreamOutputs:
    """What the VME objective needs from one forward pass of one stream (x or x̃)."""

    task_loss: Tensor  # scalar cross-entropy of this stream
    embeddings: Tensor  # (B, L, d) embedding-layer output, i.e. hidden_states[0]
    attention: Tensor  # (B, H, L, L) post-softmax attention probabilities of layer ap_layer
    mask: Tensor  # (B, L) attention mask, 1 for real tokens


@dataclass
class VMELoss:
    """The combined loss and each weighted-free term, kept separately for logging."""

    total: Tensor
    task: Tensor
    robust: Tensor
    ep: Tensor
    ap: Tensor

    def detached(self) -> dict[str, float]:
        """The five values as Python floats, for logging."""
        return {name: float(getattr(self, name).detach()) for name in ("total", "task", "robust", "ep", "ap")}


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens, sentence-transformers style: (B, L, d), (B, L) -> (B, d)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)


def embedding_push(emb_x: Tensor, mask_x: Tensor, emb_xt: Tensor, mask_xt: Tensor) -> Tensor:
    """Embedding-Push: minus the MSE between the masked mean embeddings of x and x̃.

    Each stream is pooled with its own mask (the two streams may differ in length). The value is <= 0;
    minimising it moves the virtual copy's embedding away from the original's.
    """
    return -F.mse_loss(masked_mean(emb_x, mask_x), masked_mean(emb_xt, mask_xt))


def attention_pull(
    att_x: Tensor,
    att_xt: Tensor,
    mask_x: Tensor | None = None,
    mask_xt: Tensor | None = None,
    mode: str = "none",
) -> Tensor:
    """Attention-Pull: MSE between the attention maps (B, H, L, L) of x̃ and x at one layer.

    ``mode="none"`` is the reference code: the full padded maps, averaged over B*H*L*L.
    ``mode="padding"`` averages only over query/key positions that are real tokens in *both* streams, so
    padding neither enters the loss nor dilutes it.
    """
    if att_x.shape != att_xt.shape:
        raise ValueError(f"attention maps differ in shape: x {tuple(att_x.shape)} vs x̃ {tuple(att_xt.shape)}")
    if mode == "none":
        return F.mse_loss(att_xt, att_x)
    if mode != "padding":
        raise ValueError(f"ap_mask={mode!r} is not one of {AP_MASK_MODES}")
    if mask_x is None or mask_xt is None:
        raise ValueError("ap_mask='padding' needs the attention masks of both streams")
    valid = (mask_x.bool() & mask_xt.bool()).to(att_x.dtype)  # (B, L)
    pair = valid[:, None, :, None] * valid[:, None, None, :]  # (B, 1, L, L)
    squared = (att_xt - att_x).pow(2) * pair
    count = pair.sum() * att_x.shape[1]
    return squared.sum() / count.clamp_min(1.0)


def padded_attention_pull(att_x: Tensor, att_xt: Tensor, rows_x: Tensor | None, rows_xt: Tensor | None,
                          length: int) -> Tensor:
    """Attention-Pull (``mode="none"``) over maps padded to ``length``, from the maps of the batch (B, H, L, L) and
    the rows of the positions L..length-1 (B, H, length - L, L) or None when L == length.

    Equal to ``attention_pull`` on the maps of inputs padded to ``length``: their key columns past L are padding,
    which softmax gives exactly 0 in both streams, so they add nothing but the 1/length² of the mean.
    """
    rows, heads, real, _ = att_x.shape
    if real > length:
        raise ValueError(f"the batch ({real} positions) is longer than the padded length {length}")
    squared = (att_xt - att_x).pow(2).sum()
    if rows_x is not None:
        squared = squared + (rows_xt - rows_x).pow(2).sum()
    return squared / (rows * heads * length * length)


def task_cross_entropy(logits: Tensor | tuple[Tensor, Tensor], labels: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """Cross-entropy for any of the three head types.

    * sentence (pair) classification / multiple choice: logits (B, C), labels (B,)
    * token tagging: logits (B, L, C), labels (B, L) with IGNORE_INDEX on positions without a label
    * extractive QA: logits (start (B, L), end (B, L)), labels (start (B,), end (B,)); the mean of the two
      CEs, as in ``transformers``' QA heads
    """
    if isinstance(logits, tuple):
        start_logits, end_logits = logits
        start, end = labels
        return 0.5 * (F.cross_entropy(start_logits, start) + F.cross_entropy(end_logits, end))
    if logits.dim() == 3:  # tagging: flatten tokens
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    return F.cross_entropy(logits, labels)


def vme_loss(x: StreamOutputs, xt: StreamOutputs, weights: VMEWeights, ap_mask: str = "none",
             ap: Tensor | None = None) -> VMELoss:
    """Combine the four terms: w_task*CE(x̃) + w_robust*CE(x) + alpha*EP + beta*AP; ``ap`` given when it was computed
    otherwise (``padded_attention_pull``)."""
    ep = embedding_push(x.embeddings, x.mask, xt.embeddings, xt.mask)
    if ap is None:
        ap = attention_pull(x.attention, xt.attention, x.mask, xt.mask, mode=ap_mask)
    total = weights.task * xt.task_loss + weights.robust * x.task_loss + weights.alpha * ep + weights.beta * ap
    return VMELoss(total=total, task=xt.task_loss, robust=x.task_loss, ep=ep, ap=ap)


def in_batch_softmax(queries: Tensor, candidates: Tensor, logit_scale: Tensor) -> Tensor:
    """The dual-encoder retrieval loss XTREME-R fine-tunes LAReQA's and Mewsli-X's encoders with
    (google-research/xtreme third_party/bert.py ``BertForRetrieval``): row i of ``queries`` (B, D) should pick row i
    of ``candidates`` (B, D) among the batch's candidates; both L2-normalised here, so the logits are cosine
    similarities times ``logit_scale`` (a learnt scalar, initialised to 100 there). Mean cross-entropy over the
    batch; the other rows are the negatives."""
    logits = F.normalize(queries, dim=-1) @ F.normalize(candidates, dim=-1).T * logit_scale
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))

"""Framework-free pieces of a VME training step: one model pass over both streams, then the objective.

No Ray and no tracking here, so the step is the same in a Ray Train worker, a plain script and a benchmark.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from study.vme.capture import VMECapture
from study.vme.objective import StreamOutputs, VMELoss, VMEWeights, padded_attention_pull, task_cross_entropy, vme_loss

Labels = Tensor | tuple[Tensor, Tensor]  # QA labels are (start positions, end positions)


def head_logits(outputs) -> Tensor | tuple[Tensor, Tensor]:
    """Logits of any ``transformers`` head output; QA heads give (start, end)."""
    if getattr(outputs, "start_logits", None) is not None:
        return outputs.start_logits, outputs.end_logits
    return outputs.logits


def pooled_cls(outputs) -> Tensor:
    """A dual encoder's embedding (B, hidden) from a bare encoder's output: the L2-normalised pooled output (the
    pooler's dense+tanh of the [CLS] state, as XTREME-R's ``BertForRetrieval``), or the [CLS] state of an encoder
    without a pooler."""
    pooled = getattr(outputs, "pooler_output", None)
    return nn.functional.normalize(outputs.last_hidden_state[:, 0] if pooled is None else pooled, dim=-1)


def _split(value, size: int):
    if isinstance(value, tuple):
        return tuple(v[:size] for v in value), tuple(v[size:] for v in value)
    return value[:size], value[size:]


def vme_forward(model: nn.Module, capture: VMECapture, x: Mapping[str, Tensor], xt: Mapping[str, Tensor],
                labels_x: Labels, labels_xt: Labels, weights: VMEWeights, ap_mask: str = "none",
                ap_length: int | None = None, pad_id: int | None = None) -> VMELoss:
    """The VME loss of a batch from **one** forward pass over the concatenated [x; x̃] batch (2B rows).

    Both streams must be padded to the same length (the data collator does this). Each row is computed
    independently, so in eval mode this equals two separate passes; in training only the dropout draws differ.
    ``ap_length``: Attention-Pull as if every input were padded to this length with ``pad_id`` (the released code's
    ``max_seq_length``), while the model runs only the batch's own length; the rows that padding adds come from
    ``capture.padded_rows`` (the capture needs ``padded_rows=True``). Only the full maps (``ap_mask="none"``) see
    them: the masked mode drops padded rows.
    """
    if x.keys() != xt.keys() or any(x[k].shape != xt[k].shape for k in x):
        raise ValueError("x and x̃ must have the same input keys and padded shapes: "
                         + ", ".join(f"{k}: {tuple(x[k].shape)} vs {tuple(xt[k].shape)}" for k in x))
    size = x["input_ids"].shape[0]
    outputs = model(**{k: torch.cat([x[k], xt[k]]) for k in x})
    logits_x, logits_xt = _split(head_logits(outputs), size)
    # the encoder sees (rows, L): a multiple-choice batch (B, C, L) runs as B*C rows
    length = x["input_ids"].shape[-1]
    mask_x, mask_xt = x["attention_mask"].reshape(-1, length), xt["attention_mask"].reshape(-1, length)
    emb_x, emb_xt = _split(capture.embeddings, mask_x.shape[0])
    att_x, att_xt = _split(capture.attention, mask_x.shape[0])
    stream_x = StreamOutputs(task_cross_entropy(logits_x, labels_x), emb_x, att_x, mask_x)
    stream_xt = StreamOutputs(task_cross_entropy(logits_xt, labels_xt), emb_xt, att_xt, mask_xt)
    ap = None
    if ap_length is not None and ap_mask == "none":
        if pad_id is None:
            raise ValueError("ap_length needs pad_id: the token the padded positions would hold")
        rows = capture.padded_rows(torch.cat([mask_x, mask_xt]), ap_length, pad_id)
        rows_x, rows_xt = _split(rows, mask_x.shape[0]) if rows is not None else (None, None)
        ap = padded_attention_pull(att_x, att_xt, rows_x, rows_xt, ap_length)
    return vme_loss(stream_x, stream_xt, weights, ap_mask=ap_mask, ap=ap)


def reference_vme_forward(model: nn.Module, x: Mapping[str, Tensor], xt: Mapping[str, Tensor], labels_x: Labels,
                          labels_xt: Labels, weights: VMEWeights, ap_layer: int, ap_mask: str = "none") -> VMELoss:
    """The authors' formulation (``--implementation reference``): two separate passes of a model in eager attention,
    each returning every layer's attention map and hidden state; the objective takes layer 0's hidden states (the
    embedding output) and ``ap_layer``'s attention. Slower, same loss as ``vme_forward``."""
    streams = []
    for inputs, labels in ((x, labels_x), (xt, labels_xt)):
        out = model(**inputs, output_attentions=True, output_hidden_states=True)
        mask = inputs["attention_mask"].reshape(-1, inputs["input_ids"].shape[-1])
        streams.append(StreamOutputs(task_cross_entropy(head_logits(out), labels), out.hidden_states[0],
                                     out.attentions[ap_layer], mask))
    return vme_loss(*streams, weights, ap_mask=ap_mask)


def split_batch(stream: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], Labels]:
    """Model inputs and labels of one collated stream (QA labels are start/end positions)."""
    inputs = {k: v for k, v in stream.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if "start_positions" in stream:
        return inputs, (stream["start_positions"], stream["end_positions"])
    return inputs, stream["labels"]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0,
                   head_lr: float | None = None, fused: bool = True) -> torch.optim.AdamW:
    """AdamW with the fused kernel: same update rule, but on CPU the 250k-row embedding update drops from
    ~1-3 s to ~0.1 s per step (measured by benchmarks/vme_overhead.py).

    The task head (everything outside the encoder) may get its own learning rate: a fresh head needs a larger
    one than the pretrained encoder. ``fused=False`` is torch's default (foreach) kernel, the reference path's."""
    encoder = {id(p) for p in model.base_model.parameters()}
    head = [p for p in model.parameters() if id(p) not in encoder]
    groups = [{"params": [p for p in model.parameters() if id(p) in encoder], "lr": lr}]
    if head:
        groups.append({"params": head, "lr": head_lr or lr})
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)

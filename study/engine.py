"""Framework-free pieces of a VME training step: one model pass over both streams, then the objective.

No Ray and no tracking here, so the step is the same in a Ray Train worker, a plain script and a benchmark.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from study.capture import VMECapture
from study.objective import StreamOutputs, VMELoss, VMEWeights, task_cross_entropy, vme_loss

Labels = Tensor | tuple[Tensor, Tensor]  # QA labels are (start positions, end positions)


def head_logits(outputs) -> Tensor | tuple[Tensor, Tensor]:
    """Logits of any ``transformers`` head output; QA heads give (start, end)."""
    if getattr(outputs, "start_logits", None) is not None:
        return outputs.start_logits, outputs.end_logits
    return outputs.logits


def _split(value, size: int):
    if isinstance(value, tuple):
        return tuple(v[:size] for v in value), tuple(v[size:] for v in value)
    return value[:size], value[size:]


def vme_forward(model: nn.Module, capture: VMECapture, x: Mapping[str, Tensor], xt: Mapping[str, Tensor],
                labels_x: Labels, labels_xt: Labels, weights: VMEWeights, ap_mask: str = "none") -> VMELoss:
    """The VME loss of a batch from **one** forward pass over the concatenated [x; x̃] batch (2B rows).

    Both streams must be padded to the same length (the data collator does this). Each row is computed
    independently, so in eval mode this equals two separate passes; in training only the dropout draws differ.
    """
    if x.keys() != xt.keys() or any(x[k].shape != xt[k].shape for k in x):
        raise ValueError("x and x̃ must have the same input keys and padded shapes: "
                         + ", ".join(f"{k}: {tuple(x[k].shape)} vs {tuple(xt[k].shape)}" for k in x))
    size = x["input_ids"].shape[0]
    outputs = model(**{k: torch.cat([x[k], xt[k]]) for k in x})
    logits_x, logits_xt = _split(head_logits(outputs), size)
    emb_x, emb_xt = _split(capture.embeddings, size)
    att_x, att_xt = _split(capture.attention, size)
    stream_x = StreamOutputs(task_cross_entropy(logits_x, labels_x), emb_x, att_x, x["attention_mask"])
    stream_xt = StreamOutputs(task_cross_entropy(logits_xt, labels_xt), emb_xt, att_xt, xt["attention_mask"])
    return vme_loss(stream_x, stream_xt, weights, ap_mask=ap_mask)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW with the fused kernel: same update rule, but on CPU the 250k-row embedding update drops from
    ~1-3 s to ~0.1 s per step (measured in ../shared/docs/pocket_suite.md and benchmarks/vme_overhead.py)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)

"""Vocabulary trimming: train only the embedding rows of tokens the training data contains.

XLM-R's and mBERT's embedding matrices hold 250k / 120k rows (~80 % of e5-small's parameters), but a fine-tuning
run's data uses a few thousand token ids. A row that never receives a gradient never changes under AdamW with zero
weight decay (its moments stay zero, so its update is exactly zero; clipping's global norm is unchanged too), so
training only the used rows gives **the same** model while the backward pass, the optimizer step and its state
shrink with the vocabulary. ``TrimmedEmbedding`` keeps the trained rows as its parameter and the original matrix,
untouched, for ids outside them (evaluation text may contain tokens training never saw: they get exactly the rows
the full model would have). ``untrimmed`` swaps the full matrix back in, with the trained rows written into it, so
saved checkpoints are ordinary full-vocabulary ``transformers`` models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import Tensor, nn


class TrimmedEmbedding(nn.Module):
    """An ``nn.Embedding`` stand-in whose trainable weight holds only the rows of ``kept_ids``."""

    def __init__(self, full: nn.Embedding, kept_ids: Tensor):
        super().__init__()
        kept_ids = torch.unique(kept_ids.to(torch.long).cpu())  # sorted, distinct
        self.weight = nn.Parameter(full.weight.detach()[kept_ids.to(full.weight.device)].clone())
        # plain attributes, not parameters or buffers: optimizers must not see the full matrix, and DDP would
        # broadcast buffers (the 250k-row matrix, the 250k-entry lookup) at every forward
        self.full_weight = full.weight.detach()
        self.num_embeddings, self.embedding_dim, self.padding_idx = full.num_embeddings, full.embedding_dim, \
            full.padding_idx
        self.kept_ids = kept_ids
        self._lookup = torch.full((full.num_embeddings,), -1, dtype=torch.long)  # full id -> row, or -1
        self._lookup[kept_ids] = torch.arange(len(kept_ids))
        # nn.Embedding gives the padding row no gradient; so must the trimmed copy of it
        self._padding_row = int(self._lookup[full.padding_idx]) if full.padding_idx is not None else -1

    def forward(self, input_ids: Tensor) -> Tensor:
        """(..., embedding_dim) rows of ``input_ids``: trained rows for kept ids, the original rows for the others."""
        if self._lookup.device != input_ids.device:  # a plain attribute: moved here, once, not by .to()
            self._lookup = self._lookup.to(input_ids.device)
        local = self._lookup[input_ids]
        kept = local >= 0
        if bool(kept.all()):
            return self._rows(local)
        # unseen ids (evaluation only): their rows never trained, so the original rows are the exact values
        out = self.full_weight.to(self.weight.device)[input_ids].to(self.weight.dtype)
        return out.masked_scatter(kept.unsqueeze(-1), self._rows(local[kept]))

    def _rows(self, local: Tensor) -> Tensor:
        return nn.functional.embedding(local, self.weight, padding_idx=self._padding_row if self._padding_row >= 0
                                       else None)

    def full_matrix(self) -> Tensor:
        """The full-vocabulary matrix with the trained rows written in."""
        full = self.full_weight.clone()
        full[self.kept_ids] = self.weight.detach().to(full)
        return full

    def extra_repr(self) -> str:
        """Rows trained out of the vocabulary and the dimension, for ``print(model)``."""
        return f"{len(self.kept_ids)} of {self.num_embeddings} rows trained, dim {self.embedding_dim}"


def used_token_ids(sequences: Iterable, tokenizer) -> Tensor:
    """Every id in the given input ids (tensors, lists, or for multiple choice one list per choice, of different
    lengths), plus the special tokens."""
    ids = {int(i) for i in tokenizer.all_special_ids}
    for sequence in sequences:
        if isinstance(sequence, list) and sequence and isinstance(sequence[0], list):
            ids.update(i for choice in sequence for i in choice)
        else:
            ids.update(torch.as_tensor(sequence).flatten().tolist())
    return torch.tensor(sorted(ids), dtype=torch.long)


def trim_vocabulary(model: nn.Module, kept_ids: Tensor) -> TrimmedEmbedding:
    """Replace the model's input embedding by a trimmed one (call before building the optimizer)."""
    trimmed = TrimmedEmbedding(model.get_input_embeddings(), kept_ids)
    model.set_input_embeddings(trimmed)
    return trimmed


@contextlib.contextmanager
def untrimmed(model: nn.Module):
    """Temporarily give the model a full ``nn.Embedding`` holding the trained rows (to save it); no-op if untrimmed."""
    trimmed = model.get_input_embeddings()
    if not isinstance(trimmed, TrimmedEmbedding):
        yield model
        return
    full = nn.Embedding(trimmed.num_embeddings, trimmed.embedding_dim, padding_idx=trimmed.padding_idx,
                        _weight=trimmed.full_matrix(), _freeze=True)
    model.set_input_embeddings(full)
    try:
        yield model
    finally:
        model.set_input_embeddings(trimmed)


def full_gradients(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter's gradient by its full-model name (zeros where there is none); a trimmed embedding's rows are
    written into a full-vocabulary zero matrix, so the gradients of a trimmed and an untrimmed model compare
    elementwise (rows outside the kept ids get no gradient in the full model either)."""
    grads = {n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
             for n, p in model.named_parameters()}
    embedding = model.get_input_embeddings()
    if isinstance(embedding, TrimmedEmbedding):
        name = next(n for n, p in model.named_parameters() if p is embedding.weight)
        full = torch.zeros_like(embedding.full_weight, dtype=grads[name].dtype, device=grads[name].device)
        full[embedding.kept_ids.to(full.device)] = grads[name]
        grads[name] = full
    return grads

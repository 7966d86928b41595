"""Analytic FLOPs of an encoder's training step, and the model FLOPs utilisation (MFU) they imply. No Ray, no I/O.

Why analytic: MFU compares what the model *needs* with what the device *can* do, whatever the kernels, padding or
framework do, so it is comparable across implementations and devices (Chowdhery et al. 2022, PaLM, arXiv
2204.02311, Appendix B: MFU = observed tokens/s x model FLOPs per token / peak FLOP/s).

The count, for an encoder of ``L`` layers, hidden size ``d`` and feed-forward size ``f``, on a sequence of ``T``
real (unpadded) tokens::

    N = L (4 d^2 + 2 d f)           the encoder's weight matrices: query, key, value, output; the two feed-forward
                                    matrices. Embedding lookups, biases, layer norms and the task head are left out
                                    (Kaplan et al. 2020, arXiv 2001.08361, Sec. 2.1: "non-embedding parameters").
    training = 6 N T                forward 2 N per token (one multiply-add per weight), backward twice that
                                    (Kaplan et al. 2020, Table 1: C ~ 6 N per token)
             + 12 L d T^2           attention's scores and weighted sum (Q K^T and A V: 2 x 2 L d T^2 forward,
                                    three times that with backward) — PaLM's 6 N + 12 L H Q T per token, H Q = d
    forward only (evaluation) = 2 N T + 4 L d T^2

The attention term is included. A batch of sequences of different lengths sums per sequence: ``6 N sum(T) +
12 L d sum(T^2)``. A VME example is two sequences, x and its virtual copy x~, in one pass; Embedding-Push and
Attention-Pull are elementwise on tensors the pass already has and are left out (as the head is).

For BERT-base (L 12, d 768, f 3072) at T = 128: N = 84.9 M, 6.52e10 + 0.18e10 = 6.70e10 FLOPs per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ModelShape:
    """An encoder's shape: the transformers config attributes the FLOPs count and the length check read, under the
    config's own names, so a shape can stand in for a ``transformers`` config without loading one (planning a study of
    a hub model with no hub)."""

    model_type: str
    num_hidden_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    max_position_embeddings: int
    pad_token_id: int = 0

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """The shape of a ``transformers`` config (or anything with its attributes)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    @property
    def non_embedding_params(self) -> int:
        """N: the encoder's weight-matrix entries (Kaplan et al. 2020's non-embedding parameters, biases aside)."""
        d, f = self.hidden_size, self.intermediate_size
        return self.num_hidden_layers * (4 * d * d + 2 * d * f)

    def train_flops(self, tokens: float, squared_tokens: float) -> float:
        """Forward + backward FLOPs of sequences holding ``tokens`` real tokens in all, ``squared_tokens`` the sum of
        each sequence's length squared (for one sequence of T tokens: T and T^2)."""
        return 6 * self.non_embedding_params * tokens + 12 * self.num_hidden_layers * self.hidden_size * squared_tokens

    def forward_flops(self, tokens: float, squared_tokens: float) -> float:
        """Forward-only FLOPs (evaluation): a third of ``train_flops``."""
        return self.train_flops(tokens, squared_tokens) / 3

    def sequence_flops(self, length: float, train: bool = True) -> float:
        """FLOPs of one sequence of ``length`` real tokens: training (forward + backward) or forward only."""
        flops = self.train_flops(length, length * length)
        return flops if train else flops / 3


def sequences_per_example(objective: str) -> int:
    """Sequences through the encoder per training example: 2 for VME (x and x~ in one pass), 1 for plain."""
    return 2 if objective == "vme" else 1


def mfu(flops: float, seconds: float, peak_flops_per_s: float | None, devices: int = 1) -> float | None:
    """Model FLOPs utilisation: ``flops`` done in ``seconds`` over ``devices`` devices' peak FLOP/s (PaLM,
    Appendix B); None without a peak (a CPU) or time."""
    if not peak_flops_per_s or seconds <= 0:
        return None
    return flops / seconds / (peak_flops_per_s * devices)

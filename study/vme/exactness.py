"""How to tell that two training paths which are equal in exact arithmetic compute the same step, on any CPU.

Two formulations of one step (one pass over [x; x̃] vs two passes, a trimmed vocabulary vs the full one, fused vs
foreach AdamW) sum the same terms in different orders, so their gradients differ by float reordering noise. Two
things follow, and the checks here are built on them (used by ``benchmarks/vme_vs_reference.py`` and the tests):

* **Gradients** are compared with a tolerance scaled to the gradient's own magnitude: ``rtol`` of the element plus
  ``atol_of_scale`` of the largest gradient element of the step. A gradient whose true value is zero (the key bias of
  every attention layer: softmax ignores a constant added to every score) holds only noise, of either sign.
* **Adam is not continuous at a zero gradient.** Its first update is ``lr * g / (|g| + eps)``, about ``lr * sign(g)``:
  noise on a zero gradient becomes ``±lr``, with a sign that depends on the CPU's kernels. Updated weights are
  therefore compared tightly only where every step's gradient is *determined*: at least ``determined_of_scale`` of
  the step's gradient scale, far above the reordering noise, so its sign and update are fixed. Elsewhere the only
  guarantee is Adam's bound, ``2 * lr`` per step.

No Ray, no I/O: pure tensor arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

RTOL = 1e-4  # of the element's own gradient
ATOL_OF_SCALE = 1e-5  # of the step's largest gradient element; reordering noise measured here is <= 3e-7 of it
DETERMINED_OF_SCALE = 1e-4  # 10x the absolute tolerance: a gradient that passed the check has the same sign


def gradient_scale(grads: Mapping[str, Tensor]) -> float:
    """The largest absolute gradient element of a step (the unit of the absolute tolerances)."""
    return max((g.abs().max().item() for g in grads.values() if g.numel()), default=0.0)


def gradient_excess(test: Mapping[str, Tensor], reference: Mapping[str, Tensor], rtol: float = RTOL,
                    atol_of_scale: float = ATOL_OF_SCALE) -> tuple[float, str]:
    """``max |test - reference| / (atol_of_scale * scale + rtol * |reference|)`` over every element, and the
    parameter where it is largest. At most 1 means equal up to float reordering. Both mappings must have the same
    names and shapes (a ``KeyError``/``RuntimeError`` otherwise)."""
    atol = atol_of_scale * gradient_scale(reference)
    worst, where = 0.0, ""
    for name, ref in reference.items():
        excess = ((test[name] - ref).abs() / (atol + rtol * ref.abs())).max().item() if ref.numel() else 0.0
        if excess > worst:
            worst, where = excess, name
    return worst, where


def undetermined(grads: Mapping[str, Tensor], determined_of_scale: float = DETERMINED_OF_SCALE) -> dict[str, Tensor]:
    """Per parameter, a boolean mask of the elements whose gradient is nonzero but below ``determined_of_scale`` of
    the step's scale: float reordering may flip their Adam update. An exactly zero gradient is structural (an
    embedding row no token used, the padding row) and leaves the weight unchanged on both paths, so it is compared
    tightly. Combine the masks of several steps with ``|``."""
    floor = determined_of_scale * gradient_scale(grads)
    return {name: (g != 0) & (g.abs() < floor) for name, g in grads.items()}


def determined_share(grads: Mapping[str, Tensor], determined_of_scale: float = DETERMINED_OF_SCALE) -> float:
    """The share of nonzero gradient elements that are determined (how much of the update a tight check covers)."""
    floor = determined_of_scale * gradient_scale(grads)
    nonzero = sum(int((g != 0).sum()) for g in grads.values())
    return sum(int((g.abs() >= floor).sum()) for g in grads.values()) / max(nonzero, 1)


@dataclass(frozen=True)
class WeightComparison:
    """Two updated states compared elementwise: where the update was determined and where it was not."""

    determined_max_diff: float  # max |test - reference| over elements with determined updates
    undetermined_max_diff: float  # the same over the others (bounded by 2 * lr per step, not by float tolerance)


def compare_weights(test: Mapping[str, Tensor], reference: Mapping[str, Tensor],
                    noisy: Mapping[str, Tensor]) -> WeightComparison:
    """Compare two state dicts after Adam steps; ``noisy`` holds the ``undetermined`` masks of the parameters that
    were trained (entries of ``reference`` without a mask, such as buffers, count as determined)."""
    determined = undetermined_ = 0.0
    for name, ref in reference.items():
        diff = (test[name].float() - ref.float()).abs()
        mask = noisy.get(name, torch.zeros_like(diff, dtype=torch.bool))
        if (~mask).any():
            determined = max(determined, diff[~mask].max().item())
        if mask.any():
            undetermined_ = max(undetermined_, diff[mask].max().item())
    return WeightComparison(determined, undetermined_)

"""The exactness checks of two training paths (study/exactness.py), on hand-made gradients and one real Adam step."""

import pytest
import torch

from study.vme.exactness import compare_weights, determined_share, gradient_excess, gradient_scale, undetermined


def test_gradient_tolerance_is_scaled_to_the_step_and_the_element():
    reference = {"a": torch.tensor([2.0, 0.0]), "b": torch.tensor([0.5])}
    assert gradient_scale(reference) == 2.0
    # tolerance of an element: 1e-5 * 2.0 (scale) + 1e-4 * |reference| -> 2e-5 for a zero gradient
    excess, where = gradient_excess({"a": torch.tensor([2.0, 1e-5]), "b": torch.tensor([0.5])}, reference)
    assert excess == pytest.approx(0.5, rel=1e-3) and where == "a"
    excess, where = gradient_excess({"a": torch.tensor([2.0, 0.0]), "b": torch.tensor([0.5 + 1.5e-4])}, reference)
    assert excess == pytest.approx(1.5e-4 / (2e-5 + 0.5e-4), rel=1e-3) and where == "b"  # > 1: not equal


def test_noise_level_gradients_are_undetermined_and_structural_zeros_are_not():
    grads = {"w": torch.tensor([1.0, 5e-5, 1e-12, 0.0])}  # floor: 1e-4 of the scale 1.0
    assert undetermined(grads)["w"].tolist() == [False, True, True, False]
    assert determined_share(grads) == pytest.approx(1 / 3)  # of the three nonzero gradients, one is determined


def test_adam_turns_sign_noise_into_lr_and_the_comparison_bounds_it_there_only():
    """Why updated weights are compared only where the gradient is determined: the same true gradient with float
    noise of opposite sign on a zero component moves that weight by +lr on one path and -lr on the other."""
    def adam_step(gradient):
        weight = torch.nn.Parameter(torch.zeros(3))
        optimizer = torch.optim.AdamW([weight], lr=0.1, weight_decay=0.0)
        weight.grad = gradient
        optimizer.step()
        return {"w": weight.detach()}, {"w": gradient}

    test, grads_test = adam_step(torch.tensor([0.5, 1e-13, 0.0]))
    reference, grads_reference = adam_step(torch.tensor([0.5, -1e-13, 0.0]))
    assert gradient_excess(grads_test, grads_reference)[0] <= 1  # the gradients are equal up to noise ...
    comparison = compare_weights(test, reference, undetermined(grads_reference))
    assert comparison.determined_max_diff == 0.0  # ... the determined and the structural-zero weights agree ...
    assert comparison.undetermined_max_diff == pytest.approx(2 * 0.1 * 1e-13 / (1e-13 + 1e-8), rel=1e-3)
    big_noise = compare_weights(*[adam_step(torch.tensor([0.5, s * 1e-6, 0.0]))[0] for s in (1, -1)],
                                undetermined({"w": torch.tensor([0.5, 1e-6, 0.0])}))
    assert big_noise.undetermined_max_diff == pytest.approx(2 * 0.1, rel=1e-2)  # ... and noise alone costs 2 x lr

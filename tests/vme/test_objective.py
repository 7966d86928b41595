"""The VME loss terms against values computed by hand on tiny tensors."""

import math

import pytest
import torch

from study.vme.objective import (
    StreamOutputs,
    VMEWeights,
    attention_pull,
    embedding_push,
    masked_mean,
    task_cross_entropy,
    vme_loss,
)


def test_masked_mean_ignores_padding():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    assert torch.allclose(masked_mean(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 0.0]]))


def test_embedding_push_is_minus_mse_of_own_mask_means():
    emb_x = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [9.0, 9.0]]])  # mean over 2 real tokens: (2, 0)
    emb_xt = torch.tensor([[[0.0, 2.0], [2.0, 2.0], [1.0, 5.0]]])  # mean over 3 real tokens: (1, 3)
    ep = embedding_push(emb_x, torch.tensor([[1, 1, 0]]), emb_xt, torch.tensor([[1, 1, 1]]))
    assert ep.item() == pytest.approx(-((2 - 1) ** 2 + (0 - 3) ** 2) / 2)  # -5


def test_attention_pull_reference_mode_averages_full_padded_maps():
    att_x = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])  # (B=1, H=1, L=2, L=2)
    att_xt = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    assert attention_pull(att_x, att_xt).item() == pytest.approx((0.25 + 0.25) / 4)


def test_attention_pull_padding_mode_uses_positions_real_in_both_streams():
    att_x = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]]).repeat(1, 2, 1, 1)  # two identical heads
    att_xt = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]]).repeat(1, 2, 1, 1)
    mask_x, mask_xt = torch.tensor([[1, 0]]), torch.tensor([[1, 1]])  # only position 0 is real in both
    value = attention_pull(att_x, att_xt, mask_x, mask_xt, mode="padding")
    assert value.item() == pytest.approx(0.25)  # (1 - 0.5)^2 averaged over 1 query x 1 key x 2 heads
    noisy_x = att_x.clone()
    noisy_x[..., 1, :] = 7.0  # padded query row
    noisy_x[..., :, 1] = -3.0  # padded key column
    assert attention_pull(noisy_x, att_xt, mask_x, mask_xt, mode="padding").item() == pytest.approx(0.25)
    assert attention_pull(noisy_x, att_xt).item() != pytest.approx(attention_pull(att_x, att_xt).item())


def test_attention_pull_rejects_unknown_mode_and_missing_masks():
    att = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="ap_mask='rows'"):
        attention_pull(att, att, mode="rows")
    with pytest.raises(ValueError, match="needs the attention masks"):
        attention_pull(att, att, mode="padding")


def test_task_cross_entropy_for_every_head_type():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = (1/4, 3/4)
    assert task_cross_entropy(logits, torch.tensor([1])).item() == pytest.approx(math.log(4 / 3))
    tagging = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0]]])  # second token carries no label
    assert task_cross_entropy(tagging, torch.tensor([[1, -100]])).item() == pytest.approx(math.log(4 / 3))
    start, end = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[0.0, 0.0]])
    qa = task_cross_entropy((start, end), (torch.tensor([1]), torch.tensor([0])))
    assert qa.item() == pytest.approx(0.5 * (math.log(4 / 3) + math.log(2)))


def _stream(task, emb, att, mask):
    return StreamOutputs(torch.tensor(task), torch.tensor(emb), torch.tensor(att), torch.tensor(mask))


def test_combined_loss_is_weighted_sum_of_returned_terms():
    x = _stream(0.7, [[[1.0, 0.0], [3.0, 0.0]]], [[[[0.5, 0.5], [1.0, 0.0]]]], [[1, 1]])
    xt = _stream(1.3, [[[0.0, 2.0], [2.0, 2.0]]], [[[[1.0, 0.0], [1.0, 0.0]]]], [[1, 1]])
    weights = VMEWeights(task=0.5, robust=2.0, alpha=0.3, beta=4.0)
    loss = vme_loss(x, xt, weights)
    assert loss.task.item() == pytest.approx(1.3) and loss.robust.item() == pytest.approx(0.7)
    assert loss.ep.item() == pytest.approx(-((2 - 1) ** 2 + (0 - 2) ** 2) / 2)
    assert loss.ap.item() == pytest.approx(0.125)
    expected = 0.5 * 1.3 + 2.0 * 0.7 + 0.3 * loss.ep.item() + 4.0 * 0.125
    assert loss.total.item() == pytest.approx(expected)
    assert loss.detached()["total"] == pytest.approx(expected)


@pytest.mark.parametrize("name", ["task", "robust", "alpha", "beta"])
def test_negative_or_nan_weights_are_rejected_with_the_name(name):
    with pytest.raises(ValueError, match=f"{name}=-1"):
        VMEWeights(**{name: -1.0})
    with pytest.raises(ValueError, match=name):
        VMEWeights(**{name: float("nan")})


def test_padded_attention_pull_equals_the_mean_over_maps_padded_with_zero_columns():
    """Maps of a batch (L = 3) plus the rows padding to 5 adds: the same as the plain MSE over the 5 x 5 maps, whose
    key columns past 3 are padding (probability 0) in both streams."""
    from study.vme.objective import padded_attention_pull

    torch.manual_seed(0)
    att_x, att_xt = torch.rand(2, 4, 3, 3), torch.rand(2, 4, 3, 3)
    rows_x, rows_xt = torch.rand(2, 4, 2, 3), torch.rand(2, 4, 2, 3)
    full_x = torch.nn.functional.pad(torch.cat([att_x, rows_x], dim=2), (0, 2))  # (2, 4, 5, 5)
    full_xt = torch.nn.functional.pad(torch.cat([att_xt, rows_xt], dim=2), (0, 2))
    expected = attention_pull(full_x, full_xt)
    assert padded_attention_pull(att_x, att_xt, rows_x, rows_xt, 5).item() == pytest.approx(expected.item(), rel=1e-6)
    assert padded_attention_pull(att_x, att_xt, None, None, 3).item() == pytest.approx(
        attention_pull(att_x, att_xt).item(), rel=1e-6)
    with pytest.raises(ValueError, match="longer than the padded length 2"):
        padded_attention_pull(att_x, att_xt, None, None, 2)

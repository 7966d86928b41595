"""One-layer attention capture and the one-pass VME forward equal the reference (eager, two passes)."""

import pytest
import torch
import torch.nn.functional as F

from study.core.errors import StudyError
from study.models.registry import load_model, load_tokenizer
from study.vme.capture import VMECapture
from study.vme.engine import head_logits, vme_forward
from study.vme.objective import VMEWeights, masked_mean, task_cross_entropy

X = ["The movie was great and the actors were brilliant.", "Where is the station?"]
XT = ["The film was grand and the actors were brilliant.", "Where is the terminal?"]


def _seeded_model(spec, head, eager=False, **kwargs):
    torch.manual_seed(0)  # identical random head in both copies
    model = load_model(spec, head, **kwargs).eval()
    if eager:
        model.set_attn_implementation("eager")
    return model


def _batches(spec, length=24):
    tokenizer = load_tokenizer(spec)
    def encode(texts):
        return dict(tokenizer(texts, padding="max_length", max_length=length, return_tensors="pt"))

    return encode(X), encode(XT)


@pytest.mark.parametrize("key", ["tiny", "e5-small"])
def test_capture_matches_output_attentions_of_eager_model(key, e5_small, tiny):
    spec = e5_small if key == "e5-small" else tiny
    x, _ = _batches(spec)
    model = _seeded_model(spec, "sequence")
    capture = VMECapture(model, ap_layer=5)
    assert model.config._attn_implementation == "sdpa"  # the other layers keep the fast kernel
    with torch.no_grad():
        logits = model(**x).logits
    reference = _seeded_model(spec, "sequence", eager=True)
    with torch.no_grad():
        ref = reference(**x, output_attentions=True, output_hidden_states=True)
    torch.testing.assert_close(capture.attention, ref.attentions[5], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(capture.embeddings, ref.hidden_states[0])
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=1e-4)
    capture.remove()
    assert not hasattr(model.base_model.encoder.layer[5].attention.self, "captured_attention")
    assert model.base_model.encoder.layer[5].attention.self.config is model.config


def test_ap_layer_out_of_range_names_valid_range(tiny):
    model = load_model(tiny, "sequence")
    with pytest.raises(StudyError, match=r"ap_layer=6 is out of range.*0\.\.5"):
        VMECapture(model, ap_layer=6)


def _reference_terms(model, x, xt, labels_x, labels_xt, layer=5):
    """The authors' formulation: two separate eager passes with every attention map and hidden state."""
    out_xt = model(**xt, output_attentions=True, output_hidden_states=True)
    out_x = model(**x, output_attentions=True, output_hidden_states=True)
    return {
        "task": task_cross_entropy(head_logits(out_xt), labels_xt),
        "robust": task_cross_entropy(head_logits(out_x), labels_x),
        "ep": -F.mse_loss(masked_mean(out_x.hidden_states[0], x["attention_mask"]),
                          masked_mean(out_xt.hidden_states[0], xt["attention_mask"])),
        "ap": F.mse_loss(out_xt.attentions[layer], out_x.attentions[layer]),
    }


@pytest.mark.parametrize("head", ["sequence", "token", "qa"])
@pytest.mark.parametrize("key", ["tiny", "e5-small"])
def test_one_pass_vme_forward_equals_two_pass_reference(head, key, e5_small, tiny):
    spec = e5_small if key == "e5-small" else tiny
    x, xt = _batches(spec)
    if head == "sequence":
        labels = torch.tensor([1, 0])
        labels_x = labels_xt = labels
    elif head == "token":
        labels_x = torch.randint(0, 3, x["input_ids"].shape).masked_fill(x["attention_mask"] == 0, -100)
        labels_xt = torch.randint(0, 3, xt["input_ids"].shape).masked_fill(xt["attention_mask"] == 0, -100)
    else:
        labels_x = labels_xt = (torch.tensor([2, 3]), torch.tensor([4, 5]))
    kwargs = {"num_labels": 3} if head != "qa" else {}
    model = _seeded_model(spec, head, **kwargs)
    weights = VMEWeights(task=1.0, robust=0.5, alpha=0.1, beta=2.0)
    loss = vme_forward(model, VMECapture(model, 5), x, xt, labels_x, labels_xt, weights)
    reference = _reference_terms(_seeded_model(spec, head, eager=True, **kwargs), x, xt, labels_x, labels_xt)
    for name, value in reference.items():
        torch.testing.assert_close(getattr(loss, name), value, atol=1e-5, rtol=1e-4, msg=name)
    expected_total = reference["task"] + 0.5 * reference["robust"] + 0.1 * reference["ep"] + 2.0 * reference["ap"]
    torch.testing.assert_close(loss.total, expected_total, atol=1e-5, rtol=1e-4)


def test_ep_gradient_reaches_word_embeddings_of_both_streams(tiny):
    x, xt = _batches(tiny)
    model = _seeded_model(tiny, "sequence")
    labels = torch.tensor([1, 0])
    loss = vme_forward(model, VMECapture(model, 5), x, xt, labels, labels, VMEWeights())
    loss.ep.backward()
    grad = model.base_model.embeddings.word_embeddings.weight.grad
    only_x = set(x["input_ids"].flatten().tolist()) - set(xt["input_ids"].flatten().tolist())
    only_xt = set(xt["input_ids"].flatten().tolist()) - set(x["input_ids"].flatten().tolist())
    assert only_x and only_xt
    assert all(grad[i].abs().sum() > 0 for i in only_x)
    assert all(grad[i].abs().sum() > 0 for i in only_xt)


def test_attention_pull_is_zero_for_identical_streams_and_positive_otherwise(tiny):
    x, xt = _batches(tiny)
    model = _seeded_model(tiny, "sequence")
    capture, labels = VMECapture(model, 5), torch.tensor([1, 0])
    with torch.no_grad():
        same = vme_forward(model, capture, x, x, labels, labels, VMEWeights())
        different = vme_forward(model, capture, x, xt, labels, labels, VMEWeights())
    assert same.ap.item() == 0.0 and same.ep.item() == 0.0
    assert different.ap.item() > 0.0 and different.ep.item() < 0.0


def test_streams_of_different_length_are_rejected(tiny):
    x, _ = _batches(tiny, length=24)
    _, xt = _batches(tiny, length=20)
    model = _seeded_model(tiny, "sequence")
    labels = torch.tensor([1, 0])
    with pytest.raises(ValueError, match="same input keys and padded shapes"):
        vme_forward(model, VMECapture(model, 5), x, xt, labels, labels, VMEWeights())

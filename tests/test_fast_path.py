"""The fast training path equals the reference path: one pass vs two, trimmed vocabulary vs full, fused AdamW vs
foreach; and a trimmed model saves as the same full-vocabulary checkpoint.

The paths are equal in exact arithmetic and differ in float summation order, so the comparisons hold on any CPU only
if they compare what is exact (study/exactness.py says why): loss terms, gradients within a tolerance scaled to the
gradient's own magnitude, and updated weights tightly only where every step's gradient determined the Adam update;
elsewhere (e.g. the attention key biases, whose true gradient is zero) only Adam's bound of 2 * lr per step holds.
"""

import pytest
import torch

from study.config import TrainConfig
from study.engine import make_optimizer
from study.exactness import (
    compare_weights,
    determined_share,
    gradient_excess,
    undetermined,
)
from study.models import (
    checkpoint_spec,
    get_spec,
    load_model,
    load_tokenizer,
    save_model_dir,
)
from study.trim import (
    TrimmedEmbedding,
    full_gradients,
    trim_vocabulary,
    untrimmed,
    used_token_ids,
)
from study.worker import FineTuneRun

TEXTS = ["The cat sat on the mat.", "Where is the station, please?"]
UNSEEN = ["Völlig unbekannte Wörter erscheinen hier.", "Где находится вокзал?"]


def _model(seed=0):
    torch.manual_seed(seed)
    return load_model(get_spec("tiny"), "sequence", num_labels=3).eval()


def _encode(texts):
    return dict(load_tokenizer(get_spec("tiny"))(texts, padding=True, return_tensors="pt"))


def test_trimmed_model_gives_the_same_logits_for_seen_and_unseen_tokens():
    full, trimmed = _model(), _model()
    seen = _encode(TEXTS)
    embedding = trim_vocabulary(trimmed, used_token_ids([seen["input_ids"]], load_tokenizer(get_spec("tiny"))))
    assert isinstance(trimmed.get_input_embeddings(), TrimmedEmbedding)
    assert embedding.weight.shape[0] < full.get_input_embeddings().weight.shape[0] / 100
    with torch.no_grad():
        for batch in (seen, _encode(UNSEEN), _encode(TEXTS + UNSEEN)):
            torch.testing.assert_close(trimmed(**batch).logits, full(**batch).logits, rtol=0, atol=0)


def test_training_a_trimmed_model_updates_weights_exactly_like_the_full_one(tmp_path):
    tokenizer = load_tokenizer(get_spec("tiny"))
    batch, labels = _encode(TEXTS), torch.tensor([0, 2])
    full, trimmed = _model(), _model()
    trim_vocabulary(trimmed, used_token_ids([batch["input_ids"]], tokenizer))
    models = {"full": full, "trimmed": trimmed}
    optimizers = {name: make_optimizer(model, lr=1e-2, head_lr=1e-2) for name, model in models.items()}
    noisy, shares, steps, lr = {}, [], 3, 1e-2
    for _ in range(steps):  # in lockstep, so that every step's gradients are compared
        grads = {}
        for name, model in models.items():
            loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)  # the global norm sees the same gradients
            grads[name] = full_gradients(model)
            optimizers[name].step()
            optimizers[name].zero_grad()
        excess, where = gradient_excess(grads["trimmed"], grads["full"])
        assert excess <= 1, f"gradient of {where} differs beyond float reordering ({excess:.1f}x the tolerance)"
        noisy = {n: m | noisy.get(n, False) for n, m in undetermined(grads["full"]).items()}
        shares.append(determined_share(grads["full"]))
    with untrimmed(trimmed):
        trimmed_state = {k: v.clone() for k, v in trimmed.state_dict().items()}
        save_model_dir(trimmed, tokenizer, get_spec("tiny"), tmp_path / "trimmed", task="pocket-topic")
    full_state = full.state_dict()
    assert trimmed_state.keys() == full_state.keys()
    weights = compare_weights(trimmed_state, full_state, noisy)
    # the tight check covers a real part of the update (measured: a third to a half of the nonzero gradients)
    assert weights.determined_max_diff <= 1e-6 and min(shares) > 0.25, (weights, shares)
    assert weights.undetermined_max_diff <= 2 * lr * steps + 1e-6, weights  # Adam's bound where noise decides
    changed = sum(not torch.equal(value, _model().state_dict()[name]) for name, value in full_state.items())
    assert changed > 10  # the steps did move the weights (so the equality above means something)
    assert isinstance(trimmed.get_input_embeddings(), TrimmedEmbedding)  # restored after saving
    saved = load_model(checkpoint_spec(tmp_path / "trimmed"), "sequence", num_labels=3, path=str(tmp_path / "trimmed"))
    assert saved.get_input_embeddings().weight.shape == full.get_input_embeddings().weight.shape
    torch.testing.assert_close(saved.get_input_embeddings().weight, full.get_input_embeddings().weight,
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("ap_mask", ["none", "padding"])
def test_fast_training_step_equals_the_reference_step(ap_mask):
    """The training loop's two paths on the same batch: loss terms and updated weights (dropout off, since the
    two paths draw different dropout masks by design)."""
    options = dict(model="tiny", task="pocket-topic", batch_size=8, max_length=32, max_train_examples=16, lr=1e-3,
                   head_lr=1e-2, ap_mask=ap_mask, alpha=0.5, beta=5.0, w_robust=0.7)
    runs = {impl: FineTuneRun(TrainConfig(**options, implementation=impl), 0, 1, torch.device("cpu"))
            for impl in ("fast", "reference")}
    assert isinstance(runs["fast"].model.get_input_embeddings(), TrimmedEmbedding)
    assert runs["reference"].model.config._attn_implementation == "eager" and runs["reference"].capture is None
    batch = next(iter(runs["fast"].loader))
    terms, grads = {}, {}
    for impl, run in runs.items():
        run.model.eval()
        loss, terms[impl] = run._loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
        grads[impl] = full_gradients(run.model)
        run.optimizer.step()
    for name, value in terms["reference"].items():
        assert terms["fast"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert terms["reference"]["ap"] > 0 and terms["reference"]["ep"] < 0
    excess, where = gradient_excess(grads["fast"], grads["reference"])
    assert excess <= 1, f"gradient of {where} differs beyond float reordering ({excess:.1f}x the tolerance)"
    with untrimmed(runs["fast"].model):
        fast = runs["fast"].model.state_dict()
    weights = compare_weights(fast, runs["reference"].model.state_dict(), undetermined(grads["reference"]))
    lr = max(group["lr"] for group in runs["reference"].optimizer.param_groups)
    share = determined_share(grads["reference"])  # measured: a third of the nonzero gradients
    assert weights.determined_max_diff <= 1e-6 and share > 0.25, (weights, share)
    assert weights.undetermined_max_diff <= 2 * lr + 1e-6, weights  # Adam's bound where noise decides the sign


def test_unknown_implementation_is_a_clear_error():
    from study.errors import StudyError

    with pytest.raises(StudyError, match="implementation='eager' is invalid: choose one of fast, reference"):
        TrainConfig(implementation="eager")

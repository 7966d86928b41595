"""The fast training path equals the reference path: one pass vs two, trimmed vocabulary vs full, fused AdamW vs
foreach; and a trimmed model saves as the same full-vocabulary checkpoint.

The paths are equal in exact arithmetic and differ in float summation order, so the comparisons hold on any CPU only
if they compare what is exact (study/exactness.py says why): loss terms, gradients within a tolerance scaled to the
gradient's own magnitude, and updated weights tightly only where every step's gradient determined the Adam update;
elsewhere (e.g. the attention key biases, whose true gradient is zero) only Adam's bound of 2 * lr per step holds.
"""

import pytest
import torch

from study.models.registry import (
    checkpoint_spec,
    get_spec,
    load_model,
    load_tokenizer,
    save_model_dir,
)
from study.train.config import TrainConfig
from study.train.finetune import FineTuneRun
from study.vme.engine import make_optimizer
from study.vme.exactness import (
    compare_weights,
    determined_share,
    gradient_excess,
    undetermined,
)
from study.vme.trim import (
    TrimmedEmbedding,
    full_gradients,
    trim_vocabulary,
    untrimmed,
    used_token_ids,
)

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


def _unpadded(batch) -> list[list[int]]:
    return [row[mask.bool()].tolist() for stream in ("x", "xt")
            for row, mask in zip(batch[stream]["input_ids"], batch[stream]["attention_mask"], strict=True)]


@pytest.mark.parametrize("model, ap_mask, ap_padding", [("tiny", "none", "batch"), ("tiny", "padding", "batch"),
                                                       ("tiny", "none", "max_length"),
                                                       ("tiny-bert", "none", "max_length"),
                                                       ("tiny", "padding", "max_length")])
def test_fast_training_step_equals_the_reference_step(model, ap_mask, ap_padding):
    """The training loop's two paths on the same batch: loss terms and updated weights (dropout off, since the
    two paths draw different dropout masks by design). With ap_padding=max_length the reference runs every input
    padded to max_length and the fast path only the batch's own length (XLM-R and BERT number padded positions
    differently, hence both)."""
    options = dict(model=model, task="pocket-topic", batch_size=8, max_length=64, max_train_examples=16, lr=1e-3,
                   head_lr=1e-2, ap_mask=ap_mask, ap_padding=ap_padding, alpha=0.5, beta=5.0, w_robust=0.7)
    runs = {impl: FineTuneRun(TrainConfig(**options, implementation=impl), 0, 1, torch.device("cpu"))
            for impl in ("fast", "reference")}
    assert isinstance(runs["fast"].model.get_input_embeddings(), TrimmedEmbedding)
    assert runs["reference"].model.config._attn_implementation == "eager" and runs["reference"].capture is None
    batches = {impl: next(iter(run.loader)) for impl, run in runs.items()}
    assert _unpadded(batches["fast"]) == _unpadded(batches["reference"])  # the same examples, however padded
    lengths = {impl: batch["x"]["input_ids"].shape[1] for impl, batch in batches.items()}
    if ap_padding == "max_length":  # the fast path does not pay for padding (and its AP still counts it)
        assert lengths["reference"] == 64 and lengths["fast"] < 64, lengths
    terms, grads = {}, {}
    for impl, run in runs.items():
        run.model.eval()
        loss, terms[impl] = run._loss(batches[impl])
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


def test_vme_reference_ap_equals_a_two_pass_reference_padded_to_max_seq_length():
    """The faithful objective (ap_padding=max_length), on both implementations, against the released code's way
    written out here: each stream padded to max_seq_length, two eager passes, MSE over the full maps of ap_layer."""
    options = dict(model="tiny", task="pocket-topic", batch_size=8, max_length=96, max_train_examples=16, ap_layer=1)
    runs = {impl: FineTuneRun(TrainConfig(**options, ap_padding="max_length", implementation=impl), 0, 1,
                              torch.device("cpu")) for impl in ("fast", "reference")}
    reference_model, pad_id = runs["reference"].model.eval(), runs["reference"].tokenizer.pad_token_id
    batch = next(iter(runs["fast"].loader))
    rows = {stream: [row[mask.bool()] for row, mask in zip(batch[stream]["input_ids"],
                                                           batch[stream]["attention_mask"], strict=True)]
            for stream in ("x", "xt")}
    maps = {}
    with torch.no_grad():
        for stream, ids in rows.items():
            input_ids = torch.stack([torch.nn.functional.pad(r, (0, 96 - len(r)), value=pad_id) for r in ids])
            out = reference_model(input_ids=input_ids, attention_mask=(input_ids != pad_id).long(),
                                  output_attentions=True)
            maps[stream] = out.attentions[1]
    assert maps["x"].shape[-1] == 96 and max(len(r) for r in rows["x"]) < 64  # mostly padding: a strong test
    expected = torch.nn.functional.mse_loss(maps["xt"], maps["x"]).item()
    for impl, run in runs.items():
        run.model.eval()
        with torch.no_grad():
            ap = run._loss(next(iter(run.loader)))[1]["ap"]
        assert ap == pytest.approx(expected, rel=1e-5), impl
    batch_padded = FineTuneRun(TrainConfig(**options), 0, 1, torch.device("cpu"))  # the default: ap_padding=batch
    batch_padded.model.eval()
    with torch.no_grad():
        ap_batch = batch_padded._loss(batch)[1]["ap"]
    assert ap_batch > 1.5 * expected  # padding to the batch's longest row changes the term's scale


def test_global_batch_stays_32_with_1_2_and_4_workers(monkeypatch):
    """batch_size x grad_accum x workers == global_batch: each optimizer step sees 32 English examples."""
    monkeypatch.setattr(FineTuneRun, "_wrap", lambda self: self.model)  # no process group: only the arithmetic
    seen, steps = {}, {}
    for workers in (1, 2, 4):
        cfg = TrainConfig(model="tiny", task="pocket-topic", batch_size=8, grad_accum=3, global_batch=32,
                          max_train_examples=64)
        run = FineTuneRun(cfg, 0, workers, torch.device("cpu"))
        seen[workers] = run.loader.batch_size * run.grad_accum * workers
        steps[workers] = run.total_steps
    assert seen == {1: 32, 2: 32, 4: 32}
    assert steps == {1: 4, 2: 4, 4: 4}  # 64 pairs / 32 per step x 2 epochs, whatever the world size
    assert TrainConfig(batch_size=8, grad_accum=3).accumulation(4) == 3  # unset: grad_accum as given


def test_global_batch_that_does_not_split_is_one_clear_error():
    from study.core.errors import StudyError
    from study.train.pipeline import validate

    with pytest.raises(StudyError, match="global_batch=32 cannot be split over 3 worker.s. x batch_size 8: choose "
                                         "batch_size and --workers whose product divides 32"):
        validate(TrainConfig(model="tiny", batch_size=8, global_batch=32), workers=3)
    with pytest.raises(StudyError, match="global_batch=30 is not a multiple of batch_size=8"):
        TrainConfig(batch_size=8, global_batch=30)


@pytest.mark.parametrize("options, message", [
    ({"ap_padding": "longest"}, "ap_padding='longest' is invalid: choose one of batch, max_length"),
    ({"synonym_matching": "lower"}, "synonym_matching='lower' is invalid: choose one of words, exact"),
    ({"global_batch": 0}, "global_batch=0 is invalid: it must be an integer >= 1 or unset"),
])
def test_faithful_options_are_validated(options, message):
    from study.core.errors import StudyError

    with pytest.raises(StudyError, match=message):
        TrainConfig(**options)


def test_unknown_implementation_is_a_clear_error():
    from study.core.errors import StudyError

    with pytest.raises(StudyError, match="implementation='eager' is invalid: choose one of fast, reference"):
        TrainConfig(implementation="eager")

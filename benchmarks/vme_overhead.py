"""What does a VME training step cost compared with plain fine-tuning, and what does one-layer capture save?

Four training steps (forward, backward, AdamW) on the same batch and model, timed interleaved in one run:

* plain      - fine-tuning on x only (the floor: one stream), the project's fused AdamW
* vme        - this project: one pass over [x; x̃], SDPA everywhere except ``ap_layer``, which alone records
               its probabilities; fused AdamW
* vme-naive  - the same single pass and optimizer, but eager attention on every layer with
               output_attentions/output_hidden_states (the naive way to get the maps)
* reference  - the authors' formulation: two separate eager passes with output_attentions/hidden_states and
               torch's default (foreach) AdamW

For each it prints the median step time and the bytes autograd saves for backward in one step (activation
memory, measured exactly with saved-tensor hooks), then the ratios vme/plain (goal <= 2.1) and
vme-naive/vme (what one-layer capture saves). It asserts nothing: machines are noisy, compare ratios of one run.

    python benchmarks/vme_overhead.py                      # e5-small, batch 16 x 128, 2 threads
    python benchmarks/vme_overhead.py --model tiny --steps 1 --batch 4 --length 32   # seconds, for CI
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from study.data.augment import load_synonyms, virtual_copies
from study.models.registry import get_spec, load_model, load_tokenizer
from study.vme.capture import VMECapture
from study.vme.engine import make_optimizer, vme_forward
from study.vme.objective import VMEWeights, masked_mean, task_cross_entropy

SENTENCES = [
    "The committee approved the new budget after a long debate.",
    "She quickly finished her homework and went outside to play.",
    "A strong wind damaged several old houses near the coast.",
    "The doctor said the patient would recover within a week.",
    "Our team lost the final match because of a late mistake.",
    "He bought a small car that uses very little fuel.",
    "The museum opens early on weekends during the summer.",
    "Many students find the exam surprisingly difficult this year.",
    "The river was calm and the water looked clear and cold.",
    "They decided to delay the launch until the software was ready.",
    "The old library holds thousands of rare and valuable books.",
    "A friendly dog followed us all the way to the station.",
    "The company reported strong growth in the last quarter.",
    "Please close the window before you leave the room.",
    "The film tells the story of a brave young pilot.",
    "Prices rose sharply after the storm destroyed the harvest.",
]


class SavedBytes(torch.autograd.graph.saved_tensors_hooks):
    """Sum the bytes of the activations autograd keeps for backward (parameters excluded, storages once)."""

    def __init__(self):
        self.bytes, self._seen = 0, set()

        def pack(tensor):
            key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
            if not (tensor.is_leaf and tensor.requires_grad) and key not in self._seen:
                self._seen.add(key)
                self.bytes += key[1]
            return tensor

        super().__init__(pack, lambda tensor: tensor)


def make_batches(spec, batch: int, length: int):
    """Pairs of real English passages (4 sentences each, so 128 tokens are real text), x̃ by Roget substitution."""
    tokenizer = load_tokenizer(spec)
    synonyms = load_synonyms("roget")

    def passage(start: int) -> str:
        return " ".join(SENTENCES[(start + j) % len(SENTENCES)] for j in range(4))

    first = [passage(i) for i in range(batch)]
    second = [passage(i + 7) for i in range(batch)]
    virtual = [virtual_copies(lambda rng, t=t: synonyms.substitute_text(t, rng)[0], 1, 0, i)[0]
               for i, t in enumerate(first)]

    def encode(texts: list[str]) -> dict:
        return dict(tokenizer(texts, second, padding="max_length", truncation=True, max_length=length,
                              return_tensors="pt"))

    labels = torch.arange(batch) % 3
    return encode(first), encode(virtual), labels


def build_variants(spec, ap_layer: int, weights: VMEWeights, x, xt, labels, attention_dropout: bool):
    """One fresh, identically initialised model + AdamW per variant; each returns a step closure."""

    def fresh(eager: bool, reference_optimizer: bool = False):
        torch.manual_seed(0)
        model = load_model(spec, "sequence", num_labels=3).train()
        if not attention_dropout:
            for module in model.modules():
                if module.__class__.__name__.endswith("SelfAttention"):
                    module.dropout.p = 0.0
        if eager:
            model.set_attn_implementation("eager")
        if reference_optimizer:
            return model, torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0)
        return model, make_optimizer(model, lr=2e-5)

    def plain():
        model, opt = fresh(False)

        def step():
            task_cross_entropy(model(**x).logits, labels).backward()
            return model, opt
        return step, opt

    def vme():
        model, opt = fresh(False)
        capture = VMECapture(model, ap_layer)

        def step():
            vme_forward(model, capture, x, xt, labels, labels, weights).total.backward()
            return model, opt
        return step, opt

    def naive_single_pass():
        model, opt = fresh(True)

        def step():
            both = {k: torch.cat([x[k], xt[k]]) for k in x}
            out = model(**both, output_attentions=True, output_hidden_states=True)
            size = labels.shape[0]
            emb, att, logits = out.hidden_states[0], out.attentions[ap_layer], out.logits
            mask = both["attention_mask"]
            loss = (weights.task * task_cross_entropy(logits[size:], labels)
                    + weights.robust * task_cross_entropy(logits[:size], labels)
                    - weights.alpha * torch.nn.functional.mse_loss(masked_mean(emb[:size], mask[:size]),
                                                                   masked_mean(emb[size:], mask[size:]))
                    + weights.beta * torch.nn.functional.mse_loss(att[size:], att[:size]))
            loss.backward()
            return model, opt
        return step, opt

    def reference():
        model, opt = fresh(True, reference_optimizer=True)

        def step():
            out_xt = model(**xt, output_attentions=True, output_hidden_states=True)
            out_x = model(**x, output_attentions=True, output_hidden_states=True)
            loss = (weights.task * task_cross_entropy(out_xt.logits, labels)
                    + weights.robust * task_cross_entropy(out_x.logits, labels)
                    - weights.alpha * torch.nn.functional.mse_loss(
                        masked_mean(out_x.hidden_states[0], x["attention_mask"]),
                        masked_mean(out_xt.hidden_states[0], xt["attention_mask"]))
                    + weights.beta * torch.nn.functional.mse_loss(out_xt.attentions[ap_layer],
                                                                  out_x.attentions[ap_layer]))
            loss.backward()
            return model, opt
        return step, opt

    return {"plain": plain(), "vme": vme(), "vme-naive": naive_single_pass(), "reference": reference()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="e5-small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ap-layer", type=int, default=5)
    parser.add_argument("--no-attention-dropout", action="store_true",
                        help="set attention-probability dropout to 0 in every variant: on CPU, SDPA with dropout "
                             "falls back to the math kernel, so this shows what the fused kernel gains")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = get_spec(args.model)
    x, xt, labels = make_batches(spec, args.batch, args.length)
    variants = build_variants(spec, args.ap_layer, VMEWeights(), x, xt, labels, not args.no_attention_dropout)
    dropout = "off" if args.no_attention_dropout else "on"
    print(f"model {spec.name}, batch {args.batch} x {args.length}, {args.threads} threads, attention dropout "
          f"{dropout}, {args.steps} timed steps per variant (+1 warm-up), interleaved")
    times: dict[str, list[float]] = {name: [] for name in variants}
    saved: dict[str, int] = {}
    for round_ in range(args.steps + 1):
        for name, (step, optimizer) in variants.items():
            if round_ == 0:  # the warm-up step also counts activation memory (hooks cost time, so not timed)
                counter = SavedBytes()
                with counter:
                    step()
                saved[name] = counter.bytes
            else:
                start = time.perf_counter()
                step()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if round_ > 0:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{'variant':<11} {'s/step':>8} {'examples/s':>11} {'x plain':>8} {'saved for backward':>19}")
    for name, seconds in median.items():
        print(f"{name:<11} {seconds:8.3f} {args.batch / seconds:11.2f} {seconds / median['plain']:8.2f} "
              f"{saved[name] / 2**20:15.0f} MiB")
    print(f"(a) VME step / plain step:                     {median['vme'] / median['plain']:.2f}x  (goal <= 2.1x)")
    print(f"(b) naive capture / one-layer capture (VME):   {median['vme-naive'] / median['vme']:.2f}x time, "
          f"{saved['vme-naive'] / saved['vme']:.2f}x activation memory")
    print(f"    reference two-pass VME / this project:     {median['reference'] / median['vme']:.2f}x")


if __name__ == "__main__":
    main()

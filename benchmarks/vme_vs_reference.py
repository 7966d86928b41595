"""This project's VME training step against a faithful reference step: speed, peak memory, and exactness.

The reference is written here from the authors' loss (Ding et al. 2022; KB-Ding/EAR), not imported from the project: two
separate forward/backward passes for x̃ and x, eager attention with ``output_attentions=True`` and
``output_hidden_states=True`` on every layer, CE(x̃) + CE(x) + alpha * EP + beta * AP, clipping at 1.0, and torch's
default dense AdamW (eps 1e-8, no weight decay) over every parameter, fp32.

The project's step (``study.vme.engine`` / ``study.vme.trim``, the training loop's default ``--implementation fast``):
one forward pass over the concatenated [x; x̃] batch, SDPA on every layer but ``ap_layer`` (which alone keeps its
probabilities), the fused AdamW kernel, and the embedding matrix trimmed to the token ids of the run's training data
(here: the benchmark batch plus the English training set of ``--task``). "fast-full" is the same without trimming.

Both implement the authors' objective as released: Attention-Pull over maps padded to ``--length`` (their
``max_seq_length``). The reference runs every input padded to ``--length``; the project's step runs the batch padded
to its own longest row and adds the rows padding would add to the maps, computed as queries only up to ``ap_layer``
(``VMECapture.padded_rows``; exact, since real tokens never attend to padding). ``--lengths full`` gives every row
``--length`` real tokens (nothing to pad); ``--lengths pocket`` draws each timed step's batch from the English
training pairs of ``--task`` (their real lengths, x̃ by synonym substitution), a different batch per round.

Printed, from one run: examples/s (median of interleaved timed steps, dropout on as in training), the speed-up over
the reference, where each variant's step time goes (forward, backward, optimizer, and the capture inside the forward:
the eager kernel of ``ap_layer`` plus the padded rows), peak memory per variant (CPU: the peak resident memory two
training steps add in a child process that runs only that variant; CUDA: ``max_memory_allocated``), and exactness
after ``--check-steps`` steps from the same initialisation (dropout off there: the two formulations draw different
dropout masks by design): the max absolute difference of the loss terms, the largest gradient difference in units of
the float-reordering tolerance (at most 1 means equal; ``study/vme/exactness.py``), and the max weight difference where
every step's gradient determined the Adam update and, separately, where noise did (bounded by 2 x lr per step,
whatever the CPU).
It asserts nothing: compare the ratios of one run.

    python benchmarks/vme_vs_reference.py                       # e5-small, batch 16 x 128, 2 threads, CPU
    python benchmarks/vme_vs_reference.py --lengths pocket      # the same on pocket-topic's real lengths
    python benchmarks/vme_vs_reference.py --model xlmr --device cuda --batch 32 --bf16   # on a GPU machine
    python benchmarks/vme_vs_reference.py --model tiny --steps 1 --batch 4 --length 32 --check-steps 1  # CI
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from vme_overhead import make_batches

import study.vme.capture
from study.models.registry import get_spec, load_model, load_tokenizer
from study.vme.capture import CAPTURE_ATTENTION, VMECapture
from study.vme.engine import make_optimizer, vme_forward
from study.vme.exactness import compare_weights, gradient_excess, undetermined
from study.vme.objective import VMEWeights
from study.vme.trim import full_gradients, trim_vocabulary, untrimmed, used_token_ids

VARIANTS = ("reference", "fast-full", "fast")
LR = 2e-5
PEAK_TFLOPS = {"bf16": 989.0, "fp32": 67.0}  # H100 SXM dense; pass --peak-tflops for another card


# --- the reference, from method.md ---------------------------------------------------------------------------


def _masked_mean(hidden, mask):
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def reference_loss(model, x, xt, y, alpha: float, beta: float, layer: int) -> dict:
    out_xt = model(**xt, output_hidden_states=True, output_attentions=True)  # x̃ (stream 0)
    out_x = model(**x, output_hidden_states=True, output_attentions=True)  # x  (stream 1)
    terms = {"task": F.cross_entropy(out_xt.logits, y), "robust": F.cross_entropy(out_x.logits, y),
             "ep": -F.mse_loss(_masked_mean(out_xt.hidden_states[0], xt["attention_mask"]),
                               _masked_mean(out_x.hidden_states[0], x["attention_mask"])),
             "ap": F.mse_loss(out_xt.attentions[layer], out_x.attentions[layer])}
    terms["total"] = terms["task"] + terms["robust"] + alpha * terms["ep"] + beta * terms["ap"]
    return terms


# --- the variants -------------------------------------------------------------------------------------------------

PHASES = ("forward", "backward", "optimizer", "capture")
_capture_seconds = [0.0]  # time inside the capture (ap_layer's eager kernel, the padded rows) of the running step


def _timed(function):
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _capture_seconds[0] += time.perf_counter() - started
    return timed


# the capturing kernel is looked up by name at every call: time it under its registered name
from transformers import AttentionInterface  # noqa: E402

AttentionInterface.register(CAPTURE_ATTENTION, _timed(study.vme.capture._capturing_attention))


def build(variant: str, spec, args, kept_ids, num_labels: int, dropout: bool):
    """A fresh, identically initialised model and optimizer; returns a closure running one training step on a batch
    ``{"padded": (x, xt, y), "batch": (x, xt, y)}`` (inputs padded to --length, or to the batch's longest row)."""
    torch.manual_seed(0)
    model = load_model(spec, "sequence", num_labels=num_labels).to(args.device).train(dropout)
    weights = VMEWeights(alpha=0.1, beta=1.0)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if args.bf16 and args.device == "cuda" \
        else contextlib.nullcontext
    if variant == "reference" or variant == "reference-bf16":
        model.set_attn_implementation("eager")
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, eps=1e-8, weight_decay=0.0)
        ref_autocast = autocast if variant == "reference-bf16" else contextlib.nullcontext

        def loss_fn(batch):
            x, xt, y = batch["padded"]  # the released code pads every input to max_seq_length
            with ref_autocast():
                return reference_loss(model, x, xt, y, weights.alpha, weights.beta, args.ap_layer)
    else:
        if variant == "fast":
            trim_vocabulary(model, kept_ids)
        capture = VMECapture(model, args.ap_layer, padded_rows=True)
        capture.padded_rows = _timed(capture.padded_rows)
        optimizer = make_optimizer(model, LR)
        pad_id = load_tokenizer(spec).pad_token_id

        def loss_fn(batch):
            x, xt, y = batch["batch"]
            with autocast():
                loss = vme_forward(model, capture, x, xt, y, y, weights, ap_length=args.length, pad_id=pad_id)
            return {"task": loss.task, "robust": loss.robust, "ep": loss.ep, "ap": loss.ap, "total": loss.total}

    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def step(batch, gradients: list | None = None, phases: dict | None = None) -> dict:
        _capture_seconds[0] = 0.0
        sync()
        started = time.perf_counter()
        terms = loss_fn(batch)
        sync()
        forward = time.perf_counter()
        terms["total"].backward()
        sync()
        backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if gradients is not None:  # the exactness check: this step's gradients, full-vocabulary, on the CPU
            gradients.append({k: g.float().cpu() for k, g in full_gradients(model).items()})
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if phases is not None:
            for name, seconds in zip(PHASES, (forward - started, backward - forward, time.perf_counter() - backward,
                                              _capture_seconds[0]), strict=True):
                phases.setdefault(name, []).append(seconds)
        return {k: v.item() for k, v in terms.items()}

    return model, step


def full_state(model) -> dict:
    with untrimmed(model):
        return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}


def _pocket_batches(spec, args, count: int) -> tuple[list[dict], int]:
    """``count`` batches of the task's English training pairs, as the training loop builds them (x̃ by substitution),
    collated both ways; and the number of labels."""
    import random

    from study.data.augment import load_synonyms
    from study.data.pairs import build_pairs, collate_pairs
    from study.data.sources import load_split
    from study.data.tasks import get_task

    task, tokenizer = get_task(args.task), load_tokenizer(spec)
    records = load_split(task, "train", "en", None)
    pairs, _ = build_pairs(task, records, load_synonyms(args.synonyms, args.matching), tokenizer, k=1, seed=0,
                           max_length=args.length)
    order = random.Random(0).sample(range(len(pairs)), count * args.batch)
    collate = {"batch": collate_pairs(tokenizer.pad_token_id), "padded": collate_pairs(tokenizer.pad_token_id,
                                                                                          args.length)}
    batches = []
    for i in range(count):
        chosen = [pairs[j] for j in order[i * args.batch:(i + 1) * args.batch]]
        batch = {}
        for kind, function in collate.items():
            collated = function(chosen)
            x, xt = ({k: v.to(args.device) for k, v in collated[s].items() if k != "labels"} for s in ("x", "xt"))
            batch[kind] = x, xt, collated["x"]["labels"].to(args.device)
        batches.append(batch)
    return batches, max(len(task.labels), 2)


def setup(args):
    from study.data.sources import load_split
    from study.data.tasks import get_task

    torch.set_num_threads(args.threads)
    spec = get_spec(args.model)
    if args.lengths == "pocket":
        batches, num_labels = _pocket_batches(spec, args, args.steps + 1)
    else:
        x, xt, y = make_batches(spec, args.batch, args.length)
        x, xt, y = ({k: v.to(args.device) for k, v in x.items()}, {k: v.to(args.device) for k, v in xt.items()},
                    y.to(args.device))
        batches, num_labels = [{"padded": (x, xt, y), "batch": (x, xt, y)}], 3
    tokenizer = load_tokenizer(spec)
    task = get_task(args.task)
    texts = [" ".join(str(r.get(f, "")) for f in ("text_a", "text_b")) for r in load_split(task, "train", "en", None)]
    encoded = tokenizer(texts, truncation=True, max_length=args.length)["input_ids"] if texts else []
    ids = [b["padded"][i]["input_ids"].cpu() for b in batches for i in (0, 1)]
    kept = used_token_ids([*ids, *encoded], tokenizer)
    return spec, batches, num_labels, kept


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def peak_memory_of(variant: str, args) -> int:
    """Bytes a training step adds at its peak: CUDA's peak allocation, or on CPU the peak resident memory of this
    (child) process while it runs two steps, above what it held before them (the model, data and libraries),
    sampled every millisecond. The first step also allocates gradients and optimizer state, so they count. The
    child reads the parent's batches (``--setup-from``) instead of building them again."""
    if args.setup_from:
        spec = get_spec(args.model)
        batches, num_labels, kept = torch.load(args.setup_from)
    else:
        spec, batches, num_labels, kept = setup(args)
    _, step = build(variant, spec, args, kept, num_labels, dropout=True)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        for i in range(2):
            step(batches[i % len(batches)])
        return torch.cuda.max_memory_allocated()
    import threading

    before, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for i in range(2):
        step(batches[i % len(batches)])
    done.set()
    sampler.join()
    return max(peak[0], _rss()) - before


def measure_peak_memory(variant: str, argv: list[str], setup_file: str) -> int:
    if "--device" in argv and argv[argv.index("--device") + 1] == "cuda":
        return peak_memory_of(variant, parse_args(argv))  # CUDA counts per variant in one process
    out = subprocess.run([sys.executable, __file__, *argv, "--peak-memory-of", variant, "--setup-from", setup_file],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def model_flops_per_example(model, length: int) -> float:
    """Training FLOPs of one (x, x̃) pair, by the 6 * parameters * tokens rule (+ attention), both streams."""
    layers = model.config.num_hidden_layers
    hidden = model.config.hidden_size
    dense = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    return 2 * (6 * dense * length + 12 * layers * hidden * length * length)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="e5-small")
    parser.add_argument("--task", default="pocket-topic", help="whose English training data sets the trimmed vocab")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128, help="max_seq_length: what the maps are padded to")
    parser.add_argument("--lengths", choices=("full", "pocket"), default="full",
                        help="full: every row --length real tokens; pocket: the real lengths of --task's pairs")
    parser.add_argument("--synonyms", default="roget", help="--lengths pocket: x̃'s synonym source")
    parser.add_argument("--matching", default="words", help="--lengths pocket: synonym matching (words, exact)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--check-steps", type=int, default=3, help="steps compared for exactness (dropout off)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ap-layer", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--bf16", action="store_true", help="CUDA: ours in bf16 autocast; adds reference-bf16")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense peak for MFU (default: H100 SXM)")
    parser.add_argument("--peak-memory-of", choices=(*VARIANTS, "reference-bf16"), help=argparse.SUPPRESS)
    parser.add_argument("--setup-from", help=argparse.SUPPRESS)  # the parent's batches, for --peak-memory-of
    return parser.parse_args(argv)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.peak_memory_of:
        print(peak_memory_of(args.peak_memory_of, args))
        return
    variants = (*VARIANTS, "reference-bf16") if args.bf16 and args.device == "cuda" else VARIANTS
    spec, batches, num_labels, kept = setup(args)
    real = [b["batch"][0]["attention_mask"].sum(1).float() for b in batches]
    longest = [b["batch"][0]["input_ids"].shape[1] for b in batches]
    print(f"model {spec.name}, batch {args.batch} x {args.length} ({args.lengths}: real tokens per row "
          f"{statistics.mean(float(r.mean()) for r in real):.1f} on average, the batch's longest row "
          f"{min(longest)}-{max(longest)} over {len(batches)} batch(es)), {args.threads} threads, device {args.device}"
          f"{', ours in bf16' if args.bf16 else ', fp32'}; trimmed vocabulary {len(kept)} of "
          f"{load_tokenizer(spec).vocab_size} rows ({args.task} English train + the batches)")

    # exactness: same init, same batch, dropout off, N steps
    initial = build("fast-full", spec, args, kept, num_labels, dropout=False)[0]
    states, losses = {"initial": full_state(initial)}, {}
    gradients: dict[str, list[dict]] = {}
    for variant in VARIANTS:
        model, step = build(variant, spec, args, kept, num_labels, dropout=False)
        gradients[variant] = []
        losses[variant] = [step(batches[0], gradients[variant]) for _ in range(args.check_steps)]
        states[variant] = full_state(model)
        del model, step
    noisy: dict = {}  # elements whose gradient at some step was nonzero but within float noise
    for step_gradients in gradients["reference"]:
        noisy = {k: m | noisy.get(k, False) for k, m in undetermined(step_gradients).items()}

    # speed: interleaved timed steps, dropout on (as in training); round r uses batch r
    steps = {v: build(v, spec, args, kept, num_labels, dropout=True) for v in variants}
    phases: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for round_ in range(args.steps + 1):
        for variant, (_, step) in steps.items():
            started = time.perf_counter()
            step(batches[round_ % len(batches)], phases=phases[variant] if round_ else None)
            if round_:  # round 0 warms up
                times[variant].append(time.perf_counter() - started)
    flops = model_flops_per_example(steps["reference"][0], args.length)
    del steps
    with tempfile.TemporaryDirectory() as scratch:
        setup_file = str(Path(scratch) / "setup.pt")
        torch.save((batches, num_labels, kept), setup_file)
        peak = {v: measure_peak_memory(v, argv, setup_file) for v in variants}

    median = {v: statistics.median(t) for v, t in times.items()}
    peak_tflops = args.peak_tflops or PEAK_TFLOPS["bf16" if args.bf16 else "fp32"]
    memory = "peak memory" if args.device == "cuda" else "step memory"
    print(f"{'variant':<15}{'s/step':>9}{'examples/s':>12}{'speed-up':>10}{memory:>14}"
          + (f"{'MFU':>8}" if args.device == "cuda" else ""))
    for variant in variants:
        rate = args.batch / median[variant]
        mfu = f"{rate * flops / (peak_tflops * 1e12):8.1%}" if args.device == "cuda" else ""
        print(f"{variant:<15}{median[variant]:9.3f}{rate:12.2f}{median['reference'] / median[variant]:9.2f}x"
              f"{peak[variant] / 2**20:10.0f} MiB{mfu}")
    print("where the step's time goes (seconds, mean of the timed steps; capture is part of forward, its backward "
          "part of backward; the reference's capture is output_attentions on every layer, not separable):")
    print(f"{'variant':<15}" + "".join(f"{name:>11}" for name in PHASES) + f"{'sum':>11}")
    for variant in variants:
        mean = {name: statistics.mean(phases[variant][name]) for name in PHASES}
        cells = [f"{mean[name]:11.3f}" if name != "capture" or variant.startswith("fast") else f"{'-':>11}"
                 for name in PHASES]
        print(f"{variant:<15}" + "".join(cells) + f"{sum(mean[n] for n in PHASES[:3]):11.3f}")
    ref = {name: statistics.mean(phases["reference"][name]) for name in PHASES[:3]}
    fast = {name: statistics.mean(phases["fast"][name]) for name in PHASES[:3]}
    print("reference / fast per phase: " + ", ".join(f"{n} {ref[n] / fast[n]:.2f}x" for n in PHASES[:3]))
    for variant in VARIANTS[1:]:
        term_diff = max(abs(a[k] - b[k]) for a, b in zip(losses[variant], losses["reference"], strict=True) for k in a)
        # step 1 starts from the same weights; later steps from weights that noise-level Adam flips already moved
        first_diff = max(abs(losses[variant][0][k] - losses["reference"][0][k]) for k in losses["reference"][0])
        excess = max(gradient_excess(a, b)[0] for a, b in zip(gradients[variant], gradients["reference"], strict=True))
        weights = compare_weights(states[variant], states["reference"], noisy)
        print(f"{variant} vs reference after {args.check_steps} steps: max |loss-term diff| {term_diff:.2e} "
              f"(step 1: {first_diff:.2e}), "
              f"gradient diff / tolerance {excess:.2e}, max |weight diff| determined {weights.determined_max_diff:.2e}"
              f" noise-level {weights.undetermined_max_diff:.2e}")
    change = max((states["reference"][k] - states["initial"][k]).abs().max().item() for k in states["initial"])
    print(f"(scale: the reference's largest weight change in those steps is {change:.2e}; Adam normalises each "
          f"gradient element, so float reordering can flip a noise-level element's update by up to 2 x lr = "
          f"{2 * LR:.0e} per step)")
    goal = "1.3x at 16 x 128 real tokens" if args.lengths == "full" else "2x on the pocket suite's lengths"
    print(f"speed-up of this project's step (fast) over the reference: {median['reference'] / median['fast']:.2f}x "
          f"(goal >= {goal}, CPU)")


if __name__ == "__main__":
    main()

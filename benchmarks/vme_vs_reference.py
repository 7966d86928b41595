"""This project's VME training step against a faithful reference step: speed, peak memory, and exactness.

The reference is written here from ../shared/docs/method.md (section 4), not imported from the project: two
separate forward/backward passes for x̃ and x, eager attention with ``output_attentions=True`` and
``output_hidden_states=True`` on every layer, CE(x̃) + CE(x) + alpha * EP + beta * AP, clipping at 1.0, and torch's
default dense AdamW (eps 1e-8, no weight decay) over every parameter, fp32.

The project's step (``study.engine`` / ``study.trim``, the training loop's default ``--implementation fast``): one
forward pass over the concatenated [x; x̃] batch, SDPA on every layer but ``ap_layer`` (which alone keeps its
probabilities), the fused AdamW kernel, and the embedding matrix trimmed to the token ids of the run's training data
(here: the benchmark batch plus the English training set of ``--task``). "fast-full" is the same without trimming.

Printed, from one run: examples/s (median of interleaved timed steps, dropout on as in training), the speed-up over
the reference, peak memory per variant (CPU: the peak resident memory two training steps add in a child process
that runs only that variant; CUDA: ``max_memory_allocated``), and exactness after ``--check-steps`` steps from the
same initialisation (dropout off there: the two formulations draw different dropout masks by design): the max
absolute difference of the loss terms, the largest gradient difference in units of the float-reordering tolerance
(at most 1 means equal; ``study/exactness.py``), and the max weight difference where every step's gradient determined
the Adam update and, separately, where noise did (bounded by 2 x lr per step, whatever the CPU).
It asserts nothing: compare the ratios of one run.

    python benchmarks/vme_vs_reference.py                       # e5-small, batch 16 x 128, 2 threads, CPU
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
import time

import torch
import torch.nn.functional as F

from study.capture import VMECapture
from study.engine import make_optimizer, vme_forward
from study.exactness import compare_weights, gradient_excess, undetermined
from study.models import get_spec, load_model, load_tokenizer
from study.objective import VMEWeights
from study.trim import full_gradients, trim_vocabulary, untrimmed, used_token_ids
from vme_overhead import make_batches

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


def build(variant: str, spec, x, xt, y, args, kept_ids, dropout: bool):
    """A fresh, identically initialised model and optimizer; returns a closure running one training step."""
    torch.manual_seed(0)
    model = load_model(spec, "sequence", num_labels=3).to(args.device).train(dropout)
    weights = VMEWeights(alpha=0.1, beta=1.0)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if args.bf16 and args.device == "cuda" \
        else contextlib.nullcontext
    if variant == "reference" or variant == "reference-bf16":
        model.set_attn_implementation("eager")
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, eps=1e-8, weight_decay=0.0)
        ref_autocast = autocast if variant == "reference-bf16" else contextlib.nullcontext

        def loss_fn():
            with ref_autocast():
                return reference_loss(model, x, xt, y, weights.alpha, weights.beta, args.ap_layer)
    else:
        if variant == "fast":
            trim_vocabulary(model, kept_ids)
        capture = VMECapture(model, args.ap_layer)
        optimizer = make_optimizer(model, LR)

        def loss_fn():
            with autocast():
                loss = vme_forward(model, capture, x, xt, y, y, weights)
            return {"task": loss.task, "robust": loss.robust, "ep": loss.ep, "ap": loss.ap, "total": loss.total}

    def step(gradients: list | None = None) -> dict:
        terms = loss_fn()
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if gradients is not None:  # the exactness check: this step's gradients, full-vocabulary, on the CPU
            gradients.append({k: g.float().cpu() for k, g in full_gradients(model).items()})
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {k: v.item() for k, v in terms.items()}

    return model, step


def full_state(model) -> dict:
    with untrimmed(model):
        return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}


def setup(args):
    from study.data.sources import load_split
    from study.tasks import get_task

    torch.set_num_threads(args.threads)
    spec = get_spec(args.model)
    x, xt, y = make_batches(spec, args.batch, args.length)
    x, xt, y = ({k: v.to(args.device) for k, v in x.items()}, {k: v.to(args.device) for k, v in xt.items()},
                y.to(args.device))
    tokenizer = load_tokenizer(spec)
    task = get_task(args.task)
    texts = [" ".join(str(r.get(f, "")) for f in ("text_a", "text_b")) for r in load_split(task, "train", "en", None)]
    encoded = tokenizer(texts, truncation=True, max_length=args.length)["input_ids"] if texts else []
    kept = used_token_ids([x["input_ids"].cpu(), xt["input_ids"].cpu(), *encoded], tokenizer)
    return spec, x, xt, y, kept


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def peak_memory_of(variant: str, args) -> int:
    """Bytes a training step adds at its peak: CUDA's peak allocation, or on CPU the peak resident memory of this
    (child) process while it runs two steps, above what it held before them (the model, data and libraries),
    sampled every millisecond. The first step also allocates gradients and optimizer state, so they count."""
    spec, x, xt, y, kept = setup(args)
    _, step = build(variant, spec, x, xt, y, args, kept, dropout=True)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            step()
        return torch.cuda.max_memory_allocated()
    import threading

    before, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for _ in range(2):
        step()
    done.set()
    sampler.join()
    return max(peak[0], _rss()) - before


def measure_peak_memory(variant: str, argv: list[str]) -> int:
    if "--device" in argv and argv[argv.index("--device") + 1] == "cuda":
        return peak_memory_of(variant, parse_args(argv))  # CUDA counts per variant in one process
    out = subprocess.run([sys.executable, __file__, *argv, "--peak-memory-of", variant], capture_output=True,
                         text=True, check=True)
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
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--check-steps", type=int, default=3, help="steps compared for exactness (dropout off)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ap-layer", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--bf16", action="store_true", help="CUDA: ours in bf16 autocast; adds reference-bf16")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense peak for MFU (default: H100 SXM)")
    parser.add_argument("--peak-memory-of", choices=(*VARIANTS, "reference-bf16"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.peak_memory_of:
        print(peak_memory_of(args.peak_memory_of, args))
        return
    variants = (*VARIANTS, "reference-bf16") if args.bf16 and args.device == "cuda" else VARIANTS
    spec, x, xt, y, kept = setup(args)
    print(f"model {spec.name}, batch {args.batch} x {args.length}, {args.threads} threads, device {args.device}"
          f"{', ours in bf16' if args.bf16 else ', fp32'}; trimmed vocabulary {len(kept)} of "
          f"{load_tokenizer(spec).vocab_size} rows ({args.task} English train + the batch)")

    # exactness: same init, same batch, dropout off, N steps
    states, losses = {"initial": full_state(build("fast-full", spec, x, xt, y, args, kept, dropout=False)[0])}, {}
    gradients: dict[str, list[dict]] = {}
    for variant in VARIANTS:
        model, step = build(variant, spec, x, xt, y, args, kept, dropout=False)
        gradients[variant] = []
        losses[variant] = [step(gradients[variant]) for _ in range(args.check_steps)]
        states[variant] = full_state(model)
        del model, step
    noisy: dict = {}  # elements whose gradient at some step was nonzero but within float noise
    for step_gradients in gradients["reference"]:
        noisy = {k: m | noisy.get(k, False) for k, m in undetermined(step_gradients).items()}

    # speed: interleaved timed steps, dropout on (as in training)
    steps = {v: build(v, spec, x, xt, y, args, kept, dropout=True) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for round_ in range(args.steps + 1):
        for variant, (_, step) in steps.items():
            sync()
            started = time.perf_counter()
            step()
            sync()
            if round_:  # round 0 warms up
                times[variant].append(time.perf_counter() - started)
    flops = model_flops_per_example(steps["reference"][0], args.length)
    del steps
    peak = {v: measure_peak_memory(v, argv) for v in variants}

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
    for variant in VARIANTS[1:]:
        term_diff = max(abs(a[k] - b[k]) for a, b in zip(losses[variant], losses["reference"]) for k in a)
        excess = max(gradient_excess(a, b)[0] for a, b in zip(gradients[variant], gradients["reference"]))
        weights = compare_weights(states[variant], states["reference"], noisy)
        print(f"{variant} vs reference after {args.check_steps} steps: max |loss-term diff| {term_diff:.2e}, "
              f"gradient diff / tolerance {excess:.2e}, max |weight diff| determined {weights.determined_max_diff:.2e}"
              f" noise-level {weights.undetermined_max_diff:.2e}")
    change = max((states["reference"][k] - states["initial"][k]).abs().max().item() for k in states["initial"])
    print(f"(scale: the reference's largest weight change in those steps is {change:.2e}; Adam normalises each "
          f"gradient element, so float reordering can flip a noise-level element's update by up to 2 x lr = "
          f"{2 * LR:.0e} per step)")
    print(f"speed-up of this project's step (fast) over the reference: {median['reference'] / median['fast']:.2f}x "
          "(goal >= 1.3x on CPU)")


if __name__ == "__main__":
    main()

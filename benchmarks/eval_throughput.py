"""Evaluation throughput: this project's scoring against a plain reference loop, on Tatoeba and on a classification
task's target sets, side by side in one run.

The reference is written here as a plain evaluation loop: texts in file order, batches of ``--batch-size`` padded per
batch by the tokenizer, ``inference_mode``, the mean-pooled last layer (retrieval) or the head's argmax
(classification). The project's path is what ``study.cli.evaluate`` and the training worker call per language
(``score_retrieval`` / ``score_supervised``): tokens from the Arrow cache, rows in batches of similar length cut to a
token budget, outputs put back in the original order before scoring. Both paths start from the same texts and
include their tokenisation: ours into a fresh cache in the first run, as at a trial's first evaluation, and from it
in later runs of ``--repeat``, as at later ones. The classification head is untrained (seeded): its accuracy is
near chance, what counts here is time and agreement.

Printed: seconds of each path, the speed-up, and how far the scores are apart (max |score difference| over the
languages; classification: predictions that differ). It asserts nothing: compare the ratios of one run.

    python benchmarks/eval_throughput.py                  # e5-small: Tatoeba de 1,000 pairs; pocket-topic targets
    python benchmarks/eval_throughput.py --model tiny --pairs 20 --examples 20 --topic-languages de   # seconds, CI
    python benchmarks/eval_throughput.py --device cuda                     # on a GPU machine
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

DATA_DIR = os.environ.get("STUDY_DATA_DIR")  # None: the hub, as study evaluate reads without --data-dir


def reference_embeddings(model, tokenizer, texts, prefix, max_length, batch_size, device) -> np.ndarray:
    """The plain loop: file order, each batch padded by the tokenizer, L2-normalised mean of the last layer."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer([prefix + t for t in texts[start:start + batch_size]], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            hidden = model.base_model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).cpu())
    return torch.cat(out).numpy()


def reference_predictions(model, tokenizer, records, max_length, batch_size, device) -> list[int]:
    """The plain loop for a classification head: file order, each batch padded by the tokenizer, argmax."""
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(records), batch_size):
            rows = records[start:start + batch_size]
            pair = None if all(r["text_b"] is None for r in rows) else [r["text_b"] for r in rows]
            batch = tokenizer([r["text_a"] for r in rows], pair, padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            predictions += model(**batch).logits.argmax(-1).tolist()
    return predictions


def tatoeba(args, spec, tokenizer, device):
    """(reference seconds, our seconds, our mean accuracy, max |accuracy difference|, sentences, None) over the
    Tatoeba languages."""
    from study.data.formats import Bitext
    from study.data.sources import load_split
    from study.data.tasks import TASKS
    from study.evaluation.scoring import score_retrieval
    from study.models.registry import load_model

    task, model = TASKS["tatoeba"], load_model(spec, "base").to(device).eval()
    data = {lang: load_split(task, "test", lang, args.data_dir) for lang in args.languages.split(",")}
    data = {lang: Bitext(d.source[:args.pairs], d.english[:args.pairs]) for lang, d in data.items()}

    def embed(texts):
        return reference_embeddings(model, tokenizer, texts, spec.text_prefix, args.max_length, args.batch_size,
                                    device)

    def reference(lang):  # accuracy in the task's headline direction (Tatoeba: en -> xx, as XTREME-R scores it)
        d = data[lang]
        queries, index = (d.english, d.source) if task.retrieval_direction == "en_to_xx" else (d.source, d.english)
        return float(np.mean((embed(queries) @ embed(index).T).argmax(1) == np.arange(len(d.source))))

    def ours(lang):
        return score_retrieval(task, data[lang], model, tokenizer, layer=None, prefix=spec.text_prefix,
                               max_length=args.max_length, key=f"bench-{lang}", token_budget=args.token_budget)[0]

    reference_s, ours_s, expected, got = compare(reference, ours, data, args.repeat, model, tokenizer, device)
    difference = max(abs(got[lang] - expected[lang]) for lang in data)
    sentences = 2 * sum(len(d.source) for d in data.values())
    return reference_s, ours_s, np.mean(list(got.values())), difference, sentences, None


def classification(args, spec, tokenizer, device):
    """(reference seconds, our seconds, our mean accuracy, max |accuracy difference|, examples, examples whose
    prediction differs) over the classification task's target languages."""
    from study.data.sources import load_split
    from study.data.tasks import TASKS
    from study.evaluation.scoring import score_supervised
    from study.models.registry import load_model

    task = TASKS[args.task]
    torch.manual_seed(0)  # the untrained head
    model = load_model(spec, task.head, num_labels=len(task.labels)).to(device).eval()
    languages = args.topic_languages.split(",") if args.topic_languages else [x for x in task.languages if x != "en"]
    records = {lang: load_split(task, "test", lang, args.data_dir)[:args.examples] for lang in languages}

    def reference(lang):  # 1.0 / 0.0 per example, in file order
        predictions = reference_predictions(model, tokenizer, records[lang], args.max_length, args.batch_size, device)
        return [float(p == r["label"]) for p, r in zip(predictions, records[lang], strict=True)]

    def ours(lang):  # the same, from the units the project reports
        _, extra = score_supervised(task, records[lang], model, tokenizer, args.max_length, f"bench-{lang}",
                                    args.token_budget)
        return [correct for correct, _ in extra["units"]]

    reference_s, ours_s, expected, got = compare(reference, ours, records, args.repeat, model, tokenizer, device)
    difference = max(abs(np.mean(got[lang]) - np.mean(expected[lang])) for lang in records)
    differing = sum(a != b for lang in records for a, b in zip(got[lang], expected[lang], strict=True))
    score = np.mean([np.mean(got[lang]) for lang in records])
    return reference_s, ours_s, score, difference, sum(map(len, records.values())), differing


def compare(reference, ours, languages, repeat: int, model, tokenizer, device):
    """Seconds of each path over all languages (median of ``repeat`` runs) and {language: result} of each path's
    last run. The paths alternate language by language, so that a burst of load from elsewhere hits both alike;
    an untimed forward pass first spares either the first call's set-up."""
    with torch.inference_mode():
        model(**tokenizer(["warm-up"], return_tensors="pt").to(device))
    totals, results = {reference: [], ours: []}, {reference: {}, ours: {}}
    for _ in range(repeat):
        seconds = dict.fromkeys(totals, 0.0)
        for lang in languages:
            for fn in (reference, ours):
                started = time.perf_counter()
                results[fn][lang] = fn(lang)
                seconds[fn] += time.perf_counter() - started
        for fn in totals:
            totals[fn].append(seconds[fn])
    return (statistics.median(totals[reference]), statistics.median(totals[ours]), results[reference],
            results[ours])


def main() -> None:
    from study.evaluation.scoring import TOKEN_BUDGET

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="e5-small")
    parser.add_argument("--languages", default="de", help="Tatoeba languages, comma-separated")
    parser.add_argument("--pairs", type=int, default=1000, help="first pairs of each Tatoeba language (de has 1,000)")
    parser.add_argument("--task", default="pocket-topic", help="the classification task (offline: pocket-topic)")
    parser.add_argument("--topic-languages", help="its target languages, comma-separated (default: all but en)")
    parser.add_argument("--examples", type=int, help="first examples of each target language (default: all)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="the reference's batch size")
    parser.add_argument("--token-budget", type=int, default=TOKEN_BUDGET, help="ours: padded tokens per batch")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved runs of each path; medians are printed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--data-dir", default=DATA_DIR, help="the tasks' original files (default $STUDY_DATA_DIR; "
                        "else the hub or the offline suite)")
    args = parser.parse_args()
    os.environ["STUDY_CACHE_DIR"] = tempfile.mkdtemp(prefix="eval-bench-")  # ours tokenises into a fresh cache
    torch.set_num_threads(args.threads)

    from study.models.registry import get_spec, load_tokenizer

    spec = get_spec(args.model)
    tokenizer, device = load_tokenizer(spec), torch.device(args.device)
    topic_languages = len(args.topic_languages.split(",")) if args.topic_languages else "all"
    rows = [(f"tatoeba {args.languages} (≤ {args.pairs} pairs)", *tatoeba(args, spec, tokenizer, device)),
            (f"{args.task} targets ({topic_languages})", *classification(args, spec, tokenizer, device))]
    print(f"model {spec.name}, max length {args.max_length}, {args.threads} threads, device {args.device}; "
          f"reference batch {args.batch_size}, ours token budget {args.token_budget}; median of {args.repeat}")
    print(f"{'evaluation':<36}{'texts':>7}{'reference s':>13}{'ours s':>9}{'speed-up':>10}{'accuracy':>10}"
          f"{'max |score diff|':>18}{'predictions differing':>23}")
    for name, reference_s, ours_s, score, difference, texts, differing in rows:
        print(f"{name:<36}{texts:>7}{reference_s:>13.2f}{ours_s:>9.2f}{reference_s / ours_s:>9.2f}x{score:>10.4f}"
              f"{difference:>18.2e}{'-' if differing is None else differing:>23}")
    print("speed-up over the plain reference: " +
          ", ".join(f"{name.split()[0]} {reference_s / ours_s:.2f}x" for name, reference_s, ours_s, *_ in rows))


if __name__ == "__main__":
    main()

"""Tokenisation throughput: this project's batched, cached path vs a plain per-example tokenizer loop.

Sentence pairs (real: every Django catalogue message and its English original, ~10k pairs) at max length 128,
XLM-R tokenizer, 2 threads. Prints pairs/s of a cold (uncached) run of each path and the time of a second,
cached load of ours. Asserts nothing; compare ratios from one run.

    python benchmarks/tokenize_throughput.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("RAYON_NUM_THREADS", "2")  # the fast tokenizer's thread pool: the machine has 2 cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="copies of the pair list (more pairs, steadier rates)")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    os.environ["STUDY_CACHE_DIR"] = tempfile.mkdtemp(prefix="tokenize-bench-")  # a cold cache for this run

    from study.data.features import encode_records
    from study.data.pocket import pocket_retrieval
    from study.data.tasks import TASKS
    from study.models.offline import xlmr_tokenizer

    tokenizer = xlmr_tokenizer()  # XLM-R / e5-small vocabulary
    records = [{"text_a": source, "text_b": english, "label": 0}
               for pairs in pocket_retrieval().values() for source, english in pairs] * args.repeat
    task = TASKS["pocket-topic"]  # a sentence(-pair) classification task: same encoder as XNLI
    n = len(records)

    start = time.perf_counter()
    loop = [tokenizer(r["text_a"], r["text_b"], truncation=True, max_length=args.max_length) for r in records]
    loop_seconds = time.perf_counter() - start

    start = time.perf_counter()
    ours = encode_records(task, records, tokenizer, args.max_length, "bench")
    cold_seconds = time.perf_counter() - start
    start = time.perf_counter()
    encode_records(task, records, tokenizer, args.max_length, "bench")
    warm_seconds = time.perf_counter() - start
    assert ours[0]["input_ids"] == loop[0]["input_ids"]  # same tokens either way

    print(f"{n} sentence pairs, max length {args.max_length}, tokenizer {type(tokenizer).__name__}")
    print(f"per-example loop:          {n / loop_seconds:10.0f} pairs/s  ({loop_seconds:.2f} s)")
    print(f"batched datasets.map:      {n / cold_seconds:10.0f} pairs/s  ({cold_seconds:.2f} s, cold, writes cache)")
    print(f"second load (cached):      {warm_seconds:10.2f} s")
    print(f"speed-up batched / loop:   {loop_seconds / cold_seconds:10.2f}x")
    print(f"cached load / cold batched:{warm_seconds / cold_seconds:10.2f}x")


if __name__ == "__main__":
    main()

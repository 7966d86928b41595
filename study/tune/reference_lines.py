"""Reference lines for a study's transfer scores, measured on the same test items as its runs: the encoder frozen,
with a logistic-regression probe trained on the English training set, once with the pretrained weights
(``frozen_probe``: what the encoder transfers without any fine-tuning) and once with the same architecture at random
initialisation (``random_init_probe``: the floor that input statistics alone reach). Fine-tuning below the frozen
probe on the targets says something about transfer only when the run also matches the probe on English dev;
otherwise the run is under-trained.

Classification tasks only (a sentence or a sentence pair read as one input); other task kinds get no reference line.
"""

from __future__ import annotations

import json
import sys
import time

from study.core.protocol import EVAL_SUBSET_SEED, REFERENCE_LINES, evaluation_metrics, selection_key
from study.train.config import TrainConfig

PROBE_C = 30.0  # inverse L2 strength: the best of a small grid on the pocket suite's English dev (pocket_suite.md)


def supported(task) -> bool:
    """Whether the task gets reference lines (a classification task)."""
    from study.data.tasks import CLASSIFICATION

    return task.kind == CLASSIFICATION


def reference_lines(cfg: TrainConfig, log=None) -> dict[str, dict[str, float]]:
    """{line: score keys as a run reports them (``protocol.evaluation_metrics`` plus English dev)} for the two
    ``REFERENCE_LINES`` on ``cfg``'s task, languages and evaluation subsets (``max_eval_examples`` drawn with
    ``EVAL_SUBSET_SEED``, as every run draws them). Cached under ``$STUDY_CACHE_DIR/reference_lines`` by everything
    that determines them."""
    import hashlib

    from study.core.cache import cache_dir, write_json_atomic
    from study.data.tasks import get_task

    task = get_task(cfg.task)
    languages = list(cfg.languages or task.languages)
    identity = {"model": cfg.model, "task": cfg.task, "languages": languages, "max_length": cfg.max_length,
                "max_train_examples": cfg.max_train_examples, "max_eval_examples": cfg.max_eval_examples,
                "data_dir": cfg.data_dir, "seed": cfg.seed, "c": PROBE_C, "version": 1}
    path = cache_dir() / "reference_lines" / (hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
                                             .hexdigest()[:20] + ".json")
    if path.is_file():
        return json.loads(path.read_text())
    started = time.perf_counter()
    out = {line: _probe(cfg, task, languages, random_init=line == "random_init_probe") for line in REFERENCE_LINES}
    write_json_atomic(path, out)
    if log:
        log(f"[reference] frozen probe and random-init floor on {len(languages)} languages in "
            f"{time.perf_counter() - started:.0f} s")
    return out


def _probe(cfg: TrainConfig, task, languages: list[str], random_init: bool) -> dict[str, float]:
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from study.core.metrics import accuracy
    from study.data.features import encode_records
    from study.data.sources import load_split, subsample
    from study.evaluation.scoring import padded_inputs, sentence_embeddings
    from study.models.registry import get_spec, load_model, load_tokenizer

    spec = get_spec(cfg.model)
    tokenizer = load_tokenizer(spec)
    model = load_model(spec, "base")
    if random_init:
        torch.manual_seed(0)
        model = type(model)(model.config)  # the same architecture, random weights
    model.eval()

    def embed(records: list[dict], key: str) -> np.ndarray:
        features = encode_records(task, records, tokenizer, cfg.max_length, f"reference-{key}")
        return sentence_embeddings(model, padded_inputs(features, tokenizer))

    train = subsample(load_split(task, "train", "en", cfg.data_dir), cfg.max_train_examples, cfg.seed)
    probe = LogisticRegression(C=PROBE_C, max_iter=3000)
    probe.fit(embed(train, "train-en"), [r["label"] for r in train])

    def score(records: list[dict], key: str) -> float:
        return accuracy([r["label"] for r in records], probe.predict(embed(records, key)).tolist())

    dev = subsample(load_split(task, "dev", "en", cfg.data_dir), cfg.max_eval_examples, EVAL_SUBSET_SEED)
    english_dev = score(dev, "dev-en")
    tests = {lang: score(subsample(load_split(task, "test", lang, cfg.data_dir), cfg.max_eval_examples,
                                   EVAL_SUBSET_SEED), f"test-{lang}") for lang in languages}
    return {selection_key(task.metric): english_dev, **evaluation_metrics(task.metric, tests, english_dev)}


def print_reference_lines(lines: dict[str, dict[str, float]], metric: str) -> None:
    """One line per reference line: English dev and the target average."""
    from study.core.protocol import target_average_key

    for line, scores in lines.items():
        print(f"[reference] {line}: English dev {scores[selection_key(metric)]:.4f}, target average "
              f"{scores[target_average_key(metric)]:.4f}", file=sys.stderr, flush=True)

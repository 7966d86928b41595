"""The alignment probe of an encoder: each target language's parallel sentences and their English translations,
embedded through the evaluation's batched path (``study.evaluation.scoring``: the Arrow token cache, length-sorted
batches, masked mean pooling, the model's text prefix), then measured by ``study.evaluation.alignment`` at each probed
layer.

Parallel data: the pocket suite's Django catalogues (``pocket-retrieval``) for pocket tasks, Tatoeba for XTREME-R
tasks, each language subsampled to ``limit`` pairs with ``protocol.EVAL_SUBSET_SEED`` so that every run probes the
same sentences. The pretrained encoder's probe on the same sentences is computed once and cached on disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study.core.errors import StudyError
from study.core.protocol import EVAL_SUBSET_SEED, alignment_units_key, is_target
from study.data.formats import Bitext
from study.data.tasks import TaskSpec, get_task
from study.evaluation import alignment

PARALLEL_TASKS = {"pocket": "pocket-retrieval", "xtreme-r": "tatoeba"}  # suite -> its parallel sentences
PROBE_VERSION = 1  # part of the pretrained cache's key: bump when what a probe computes changes
FIGURE_LANGUAGES = 3  # target languages whose embeddings the figure artifact keeps, each of another family
FIGURE_SENTENCES = 64  # parallel pairs per figure language (float16, last layer only: the artifact stays small)


@dataclass(frozen=True)
class ProbeData:
    """What a probe embeds: the parallel task and its (subsampled) bitext per target language."""

    task: TaskSpec  # the parallel sentences' task (pocket-retrieval, tatoeba)
    bitexts: dict[str, Bitext]

    def fingerprint(self) -> str:
        """SHA-256 of the task name and every sentence: what the pretrained cache is keyed by, beside the model."""
        text = json.dumps([self.task.name, {k: [b.source, b.english] for k, b in sorted(self.bitexts.items())}])
        return hashlib.sha256(text.encode()).hexdigest()


def probed_languages(task: TaskSpec, languages) -> tuple[TaskSpec, list[str]]:
    """(the parallel task of ``task``'s suite, those of ``languages`` that are targets and have parallel sentences
    in it), from the task registry alone (no data read). StudyError when none has: a study checks this before it
    starts."""
    parallel = get_task(PARALLEL_TASKS[task.suite])
    targets = [lang for lang in languages if is_target(lang) and lang in parallel.languages]
    if not targets:
        raise StudyError(f"alignment probe: none of the languages {', '.join(languages)} has parallel sentences "
                         f"in {parallel.name} (evaluate a target that has, or drop --alignment-probe)")
    return parallel, targets


def probe_data(task: TaskSpec, languages, data_dir=None, limit: int | None = None) -> ProbeData:
    """The parallel sentences of the evaluated ``task``'s suite for those of ``languages`` that are targets and
    have parallel data (``probed_languages``); at most ``limit`` pairs each (seeded, ``EVAL_SUBSET_SEED``)."""
    from study.data.sources import load_split

    parallel, targets = probed_languages(task, languages)
    return ProbeData(parallel, {lang: _subsample(load_split(parallel, "test", lang, data_dir), limit)
                                for lang in targets})


def _subsample(bitext: Bitext, limit: int | None) -> Bitext:
    """The same seeded pairs on both sides, in file order (``sources.subsample``'s rule for a bitext)."""
    if limit is None or limit >= len(bitext.source):
        return bitext
    keep = sorted(random.Random(EVAL_SUBSET_SEED).sample(range(len(bitext.source)), limit))
    return Bitext([bitext.source[i] for i in keep], [bitext.english[i] for i in keep])


def probe_layers(depth: int, ap_layer: int) -> tuple[int, ...]:
    """The hidden states probed: the output of the layer whose attention Attention-Pull compares (hidden state
    ``ap_layer + 1``) and the last one (``depth``), ascending, once each."""
    return tuple(sorted({min(ap_layer + 1, depth), depth}))


@dataclass
class Probe:
    """One encoder's probe: ``results[layer][language]`` and the pooled embeddings it came from,
    ``embeddings[language] = (target, english)``, each (n, layers, hidden) in ``layers`` order."""

    layers: tuple[int, ...]
    results: dict[int, dict[str, alignment.Alignment]]
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]]

    def measures(self) -> dict[int, dict[str, dict[str, float]]]:
        """{layer: {language: {measure: value}}} (what ``protocol.alignment_metrics`` and the cache take)."""
        return {layer: {lang: a.measures() for lang, a in per.items()} for layer, per in self.results.items()}

    def units(self) -> dict[str, dict[str, list]]:
        """{``alignment_units_key``: {language: per-sentence units}} of the retrieval measures."""
        return {alignment_units_key(direction, layer): {lang: a.units[direction] for lang, a in per.items()}
                for layer, per in self.results.items() for direction in alignment.DIRECTIONS}

    def figure_embeddings(self, languages) -> dict[str, np.ndarray]:
        """{``<language>/target``, ``<language>/english``: (m, hidden) float16} of the last layer's first
        ``FIGURE_SENTENCES`` pairs of ``languages``."""
        out = {}
        for lang in languages:
            for side, values in zip(("target", "english"), self.embeddings[lang], strict=True):
                out[f"{lang}/{side}"] = values[:FIGURE_SENTENCES, -1].astype(np.float16)
        return out


def run_probe(model, tokenizer, data: ProbeData, layers: tuple[int, ...], *, prefix: str, max_length: int) -> Probe:
    """Embed both sides of every language once (all ``layers`` from one pass) and measure each layer."""
    from study.data.features import encode_texts
    from study.evaluation.scoring import padded_inputs, pooled_hidden_states

    model.eval()
    embeddings = {}
    for lang, bitext in data.bitexts.items():
        sides = []
        for side, texts in (("source", bitext.source), ("english", bitext.english)):
            features = encode_texts(data.task, [prefix + t for t in texts], tokenizer, max_length,
                                    f"align-{lang}-{side}")
            sides.append(pooled_hidden_states(model, padded_inputs(features, tokenizer), list(layers)))
        embeddings[lang] = tuple(sides)
    results = {layer: {lang: alignment.align(target[:, i], english[:, i])
                       for lang, (target, english) in embeddings.items()} for i, layer in enumerate(layers)}
    return Probe(tuple(layers), results, embeddings)


def figure_languages(languages) -> tuple[str, ...]:
    """Up to ``FIGURE_LANGUAGES`` targets for the figure, each of a family not yet chosen, in code order: the same
    choice in every run of a study, so panels compare."""
    from study.core.languages import group_of

    chosen, families = [], set()
    for lang in sorted(languages):
        family = group_of(lang, "family")
        if is_target(lang) and family not in families and len(chosen) < FIGURE_LANGUAGES:
            chosen.append(lang)
            families.add(family)
    return tuple(chosen)


def pretrained_probe(spec, tokenizer, data: ProbeData, layers: tuple[int, ...], *, max_length: int,
                     device="cpu") -> tuple[dict, dict[str, np.ndarray]]:
    """The pretrained encoder's probe on ``data`` — (``Probe.measures()``, ``Probe.figure_embeddings`` of
    ``figure_languages``) — computed once per model, sentences, tokenizer length, layers and prefix, and cached
    under ``$STUDY_CACHE_DIR/alignment/`` (a lock keeps two workers from computing it twice)."""
    from study.core.cache import build_lock, cache_dir, write_json_atomic
    from study.models.registry import load_model

    key = hashlib.sha256(json.dumps([PROBE_VERSION, spec.key, spec.source, data.fingerprint(), max_length,
                                     list(layers), spec.text_prefix]).encode()).hexdigest()[:20]
    path = cache_dir() / "alignment" / f"{Path(spec.key).name}-{key}.json"
    arrays = path.with_suffix(".npz")
    with build_lock(path):
        if not (path.is_file() and arrays.is_file()):
            model = load_model(spec, "base").to(device)
            probe = run_probe(model, tokenizer, data, layers, prefix=spec.text_prefix, max_length=max_length)
            arrays.parent.mkdir(parents=True, exist_ok=True)
            with open(arrays.with_suffix(".tmp.npz"), "wb") as handle:
                np.savez(handle, **probe.figure_embeddings(figure_languages(data.bitexts)))
            arrays.with_suffix(".tmp.npz").replace(arrays)
            write_json_atomic(path, {str(layer): per for layer, per in probe.measures().items()})
        measures = {int(layer): per for layer, per in json.loads(path.read_text()).items()}
        with np.load(arrays) as stored:
            return measures, {name: stored[name] for name in stored.files}


def figure_artifact(checkpoint: dict[str, np.ndarray], pretrained: dict[str, np.ndarray]) -> bytes:
    """The ``protocol.ALIGNMENT_EMBEDDINGS_ARTIFACT`` bytes: an .npz of ``checkpoint/<lang>/<side>`` and
    ``pretrained/<lang>/<side>`` arrays (``Probe.figure_embeddings``)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{f"checkpoint/{k}": v for k, v in checkpoint.items()},
             **{f"pretrained/{k}": v for k, v in pretrained.items()})
    return buffer.getvalue()


def probe_limit(cfg) -> int | None:
    """Pairs per language a run's probe embeds: the smaller of ``alignment_pairs`` and ``max_eval_examples`` that
    are set (None: all). The probe costs about as much as evaluating that many test items twice."""
    limits = [n for n in (cfg.alignment_pairs, cfg.max_eval_examples) if n is not None]
    return min(limits) if limits else None


@dataclass(frozen=True)
class ProbeReport:
    """What one evaluation of a training run adds: the ``align*/`` metrics, the retrieval units (``Probe.units``)
    and the figure artifact's bytes (``figure_artifact``)."""

    metrics: dict[str, float]
    units: dict[str, dict[str, list]]
    figure: bytes


class RunProbe:
    """The probe of a training run (``TrainConfig.alignment_probe``): built once on the evaluating rank, then
    ``measure(model)`` at every evaluation, against the pretrained encoder's probe (cached, computed on first use)
    on the same sentences (the evaluated languages', at most ``probe_limit(cfg)`` pairs each)."""

    def __init__(self, cfg, task, spec, tokenizer, depth: int, device):
        self.data = probe_data(task, cfg.languages or task.languages, cfg.data_dir, probe_limit(cfg))
        self.layers = probe_layers(depth, cfg.ap_layer)
        self.spec, self.tokenizer, self.max_length, self.device = spec, tokenizer, cfg.max_length, device
        self.figure_languages = figure_languages(self.data.bitexts)
        self._pretrained = None

    def measure(self, model) -> ProbeReport:
        """Probe ``model`` (bare or headed) and compare it with the pretrained encoder."""
        from study.core.protocol import alignment_metrics

        if self._pretrained is None:
            self._pretrained = pretrained_probe(self.spec, self.tokenizer, self.data, self.layers,
                                                max_length=self.max_length, device=self.device)
        pretrained, pretrained_figure = self._pretrained
        probe = run_probe(model, self.tokenizer, self.data, self.layers, prefix=self.spec.text_prefix,
                          max_length=self.max_length)
        return ProbeReport(alignment_metrics(probe.measures(), pretrained), probe.units(),
                           figure_artifact(probe.figure_embeddings(self.figure_languages), pretrained_figure))

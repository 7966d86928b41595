"""The run's contract: metric keys, the selection rule, the English rule, artifact names, run tags and modalities.

Every module that writes or reads a study's numbers — the training worker, ``study.cli.train``, the Tune driver, the
MLflow callback, ``study.cli.evaluate`` and the report — takes these from here, so that one rule cannot drift into
two. No Ray, no MLflow, no I/O.

The rules, in one place:

* **Selection** (zero-shot protocol): a run's step is chosen on the English dev score alone, the earliest step on
  ties; across trials, the best selected dev score, the earlier trial on ties. Test scores never choose anything.
* **English** is the source language. The target average and every group (family, branch, script) mean are taken
  over the non-English languages only, languages weighing equally; English is reported on its own row and as the
  reference of the gap to English (its test score, or its dev score when English is not among the tested languages).
* **Evaluation items**: a run evaluated on a subset (``max_eval_examples``) draws its English dev and test subsets
  with ``EVAL_SUBSET_SEED``, not its training seed, so every run of a study scores the same items and contrasts
  between runs are paired.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

SOURCE_LANGUAGE = "en"  # the only training and selection language
TOTAL_STEPS_KEY = "train/total_steps"  # a run's planned optimizer steps, in every report (an early stop shows)
EVAL_SUBSET_SEED = 0  # the seed of every run's evaluation subsets (the same items in every run)

# --- metric keys: "<namespace>/<metric>/<name>" ---------------------------------------------------------------------

ENGLISH_DEV = "dev_en"  # the namespace of English dev scores, and the English dev entry of the per-example units
TARGET_AVERAGE = "avg"  # the name of the target average inside the test namespace: test/<metric>/avg
GROUPINGS_REPORTED = ("family", "script")  # the group means every evaluation report carries


def reached_last_step(report: Mapping[str, object]) -> bool:
    """Whether a run's report is from its planned last step (``step`` >= ``TOTAL_STEPS_KEY``): the only proof that a
    run finished. A run stopped by a signal, or ended early by a scheduler, has reported scores too, and Ray Tune calls
    a trial it stopped for any reason TERMINATED, so neither having scores nor Tune's status says it trained to the
    end."""
    step, total = report.get("step"), report.get(TOTAL_STEPS_KEY)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (step, total))
    return numbers and step >= total


def selection_key(metric: str) -> str:
    """``dev_en/<metric>``: the English dev score, the only number that selects checkpoints, trials and stops."""
    return f"{ENGLISH_DEV}/{metric}"


def language_key(metric: str, language: str) -> str:
    """``test/<metric>/<language>``: one target (or English) test score."""
    return f"test/{metric}/{language}"


def target_average_key(metric: str) -> str:
    """``test/<metric>/avg``: the mean over the non-English test languages."""
    return language_key(metric, TARGET_AVERAGE)


def all_languages_key(metric: str) -> str:
    """``all_languages/<metric>``: the mean over every tested language, English included — XTREME-R's per-task
    averaging, hence its task score when every language of an XTREME-R task is tested under its protocol."""
    return f"all_languages/{metric}"


def gap_key(metric: str) -> str:
    """``gap_to_en/<metric>``: the English reference score minus the target average."""
    return f"gap_to_en/{metric}"


REFERENCE_LINES = ("frozen_probe", "random_init_probe")  # study.tune.reference_lines: on the study's parent run


def reference_key(line: str, key: str) -> str:
    """``reference/<line>/<score key>``, e.g. ``reference/frozen_probe/test/accuracy/avg``: a reference line's
    score on the study's parent run."""
    return f"reference/{line}/{key}"


def group_key(by: str, metric: str, group: str) -> str:
    """``<by>/<metric>/<group>``, e.g. ``family/accuracy/Indo-European``: a mean over a group's target languages."""
    return f"{by}/{metric}/{group}"


def language_scores(report: Mapping[str, object], metric: str) -> dict[str, float]:
    """{language: score} of the ``test/<metric>/<language>`` keys of a report (the target average left out)."""
    prefix = language_key(metric, "")
    return {key[len(prefix):]: float(value) for key, value in report.items()
            if key.startswith(prefix) and key != target_average_key(metric)}


def group_scores_of(report: Mapping[str, object], by: str, metric: str) -> dict[str, float]:
    """{group: score} of the ``<by>/<metric>/<group>`` keys of a report."""
    prefix = group_key(by, metric, "")
    return {key[len(prefix):]: float(value) for key, value in report.items() if key.startswith(prefix)}


# --- the alignment probe: "<namespace>/<measure>/layer<hidden state>/<language>" -----------------------------------

ALIGNMENT = "align"  # the evaluated checkpoint's probe
ALIGNMENT_PRETRAINED = "align_pretrained"  # the pretrained encoder's probe, same sentences, tokenizer and layer
ALIGNMENT_DELTA = "align_delta"  # checkpoint minus pretrained: what fine-tuning changed
# the fields of study.evaluation.alignment.Alignment
ALIGNMENT_MEASURES = ("xx_to_en", "en_to_xx", "centroid_distance", "centred_distance")
ALIGNMENT_SENTENCES = "sentences"  # parallel sentences probed (align/ and align_pretrained/ only: no delta)
ALIGNMENT_RETRIEVAL = ("xx_to_en", "en_to_xx")  # the measures with per-sentence units


def alignment_key(namespace: str, measure: str, layer: int, language: str) -> str:
    """``<namespace>/<measure>/layer<n>/<language>``, e.g. ``align_delta/xx_to_en/layer12/de``; ``layer`` is the
    index into the encoder's hidden states (0: embeddings), as ``study evaluate --layer`` counts."""
    return f"{namespace}/{measure}/layer{layer}/{language}"


def alignment_scores(report: Mapping[str, object], namespace: str, measure: str, layer: int) -> dict[str, float]:
    """{language: value} of one namespace, measure and layer of a report."""
    prefix = alignment_key(namespace, measure, layer, "")
    return {key[len(prefix):]: float(value) for key, value in report.items() if key.startswith(prefix)}


def alignment_layers(report: Mapping[str, object], namespace: str = ALIGNMENT) -> list[int]:
    """The hidden-state layers a report carries probe values of, ascending."""
    prefix = f"{namespace}/"
    return sorted({int(key.split("/")[2][len("layer"):]) for key in report if key.startswith(prefix)})


def alignment_units_key(measure: str, layer: int) -> str:
    """``<measure>/layer<n>``: the entry of ``ALIGNMENT_UNITS`` holding that measure's {language: units}."""
    return f"{measure}/layer{layer}"


def alignment_metrics(probe: Mapping[int, Mapping[str, Mapping[str, float]]],
                      pretrained: Mapping[int, Mapping[str, Mapping[str, float]]]) -> dict[str, float]:
    """The probe's metric keys: ``align/``, ``align_pretrained/`` and ``align_delta/`` (checkpoint minus pretrained,
    for ``ALIGNMENT_MEASURES``) of {layer: {language: {measure: value}}} results, the checkpoint's and the
    pretrained encoder's on the same sentences."""
    out = {}
    for layer, languages in probe.items():
        for lang, values in languages.items():
            before = pretrained[layer][lang]
            for measure in (*ALIGNMENT_MEASURES, ALIGNMENT_SENTENCES):
                out[alignment_key(ALIGNMENT, measure, layer, lang)] = values[measure]
                out[alignment_key(ALIGNMENT_PRETRAINED, measure, layer, lang)] = before[measure]
            for measure in ALIGNMENT_MEASURES:
                out[alignment_key(ALIGNMENT_DELTA, measure, layer, lang)] = values[measure] - before[measure]
    return out


# --- the English rule -----------------------------------------------------------------------------------------------


def is_target(language: str) -> bool:
    """Whether a language counts as a zero-shot target (every language but English)."""
    return language != SOURCE_LANGUAGE


def target_scores(scores: Mapping[str, float]) -> dict[str, float]:
    """The zero-shot targets of a {language: score} result: English removed."""
    return {lang: score for lang, score in scores.items() if is_target(lang)}


def target_mean(scores: Mapping[str, float]) -> float:
    """Mean over the non-English languages (each weighs equally); NaN when there are none."""
    targets = target_scores(scores)
    return statistics.fmean(targets.values()) if targets else math.nan


def all_languages_mean(scores: Mapping[str, float]) -> float:
    """Mean over every language, English included (XTREME-R's per-task averaging); NaN when there are none."""
    return statistics.fmean(scores.values()) if scores else math.nan


def target_group_means(scores: Mapping[str, float], by: str) -> dict[str, float]:
    """{group: mean over the group's non-English languages} for by = family, branch or script; a group with English
    alone has no entry. Raises StudyError for an unknown grouping or language."""
    from study.core.languages import group_means

    return group_means(target_scores(scores), by)


def english_reference(tests: Mapping[str, float], english_dev: float) -> float:
    """The English score the gap is measured from: English test when tested, else English dev."""
    return tests.get(SOURCE_LANGUAGE, english_dev)


def evaluation_metrics(metric: str, tests: Mapping[str, float], english_dev: float) -> dict[str, float]:
    """The score keys of one evaluation: per-language tests, the target average, the mean over all tested languages
    (English included), the gap to English and the family and script means (``<by>/<metric>/<group>``). The gap is
    NaN-free: 0.0 when no target was tested."""
    average = target_mean(tests)
    out = {target_average_key(metric): average,
           all_languages_key(metric): all_languages_mean(tests),
           gap_key(metric): english_reference(tests, english_dev) - average if not math.isnan(average) else 0.0}
    out.update({language_key(metric, lang): score for lang, score in tests.items()})
    for by in GROUPINGS_REPORTED:
        out.update({group_key(by, metric, group): score for group, score in target_group_means(tests, by).items()})
    return out


# --- the selection rule ---------------------------------------------------------------------------------------------

Item = TypeVar("Item")


def select(items: Iterable[Item], score: Callable[[Item], float], order: Callable[[Item], float]) -> Item:
    """The item with the highest ``score``; on ties, the lowest ``order`` (the earliest step or trial).
    Raises ValueError when there is nothing to select from."""
    return max(items, key=lambda item: (score(item), -order(item)))


def select_best(reports: Sequence[Mapping], metric: str) -> Mapping:
    """The report English dev selects from one run's reports (each with the selection key and ``step``)."""
    key = selection_key(metric)
    return select(reports, score=lambda report: report[key], order=lambda report: report["step"])


def improves(candidate_dev: float, best_dev: float | None) -> bool:
    """Whether a new report replaces the run's best so far. Reports arrive in step order, so a strict improvement
    keeps the earliest step on ties: folding ``improves`` over a run equals ``select_best``."""
    return best_dev is None or candidate_dev > best_dev


# --- artifacts, tags, modalities ------------------------------------------------------------------------------------

EXAMPLES_ARTIFACT = "per_example.json"  # per-example units of the selected evaluation (what the report resamples)
ALIGNMENT_UNITS = "alignment_units"  # in EXAMPLES_ARTIFACT: {alignment_units_key: {language: [[correct, 1], ...]}}
ALIGNMENT_METRICS = "alignment_metrics"  # in EXAMPLES_ARTIFACT: the selected evaluation's align*/ metric keys
ALIGNMENT_EMBEDDINGS_ARTIFACT = "alignment_embeddings.npz"  # the selected evaluation's probe embeddings (figure)
PER_LANGUAGE_ARTIFACT = "per_language.csv"  # a trial's selected per-language scores
ARM_PER_LANGUAGE_ARTIFACT = "per_language_{arm}.csv"  # an arm's confirm-run seed means, on the study's parent run
STAGE_ARTIFACT = "stage.json"  # a trial's intermediate stage: its metadata (losses, probe, data, vision tower)
STAGE_RECORD = "intermediate_stage.json"  # what a trial driver leaves in its outbox about its stage (StageResult)


@dataclass(frozen=True)
class StageResult:
    """What an intermediate stage gave a trial: its encoder directory, its metadata (``stage.json``: losses, probe
    scores, data, vision tower, example counts) and whether it came from the cache. Crosses from the trial driver
    to the MLflow callback as JSON (``to_json`` / ``from_json``)."""

    directory: str
    meta: dict
    cache_hit: bool

    def to_json(self) -> bytes:
        """UTF-8 JSON of the three fields."""
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> StageResult:
        """The inverse of ``to_json``."""
        return cls(**json.loads(data))


RUN_KIND_TAG = "run_kind"
STUDY_RUN, TRIAL_RUN, REPORT_RUN = "study", "trial", "report"
ARM_TAG, PHASE_TAG = "arm", "phase"  # a trial run's arm (study.core.arms) and phase (search or confirm)
SEARCH_PHASE, CONFIRM_PHASE = "search", "confirm"  # Optuna/ASHA per tuned arm; then every arm on fresh seeds
SELECTED_STEP_TAG = "selected_step"

DEFAULT_MODALITY = "none"  # no intermediate stage: fine-tuning starts from the pretrained encoder
SHUFFLED_IMAGES = "multimodal-shuffled"  # the control: images permuted across captions (no caption-image link)
STAGE_MODALITIES = ("text", "multimodal", SHUFFLED_IMAGES)  # an intermediate stage on text only, or on image+text
MODALITIES = (DEFAULT_MODALITY, *STAGE_MODALITIES)
# the modality experiment's contrasts: each stage against none, images against text, and real against shuffled images
MODALITY_CONTRASTS = (("multimodal", DEFAULT_MODALITY), ("text", DEFAULT_MODALITY), ("multimodal", "text"),
                      ("multimodal", SHUFFLED_IMAGES))

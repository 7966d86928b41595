"""How many items a task's splits hold, without loading a model or downloading data: what the study plan counts
training pairs and evaluation items from (``study.tune.plan``).

The pocket suite is counted from its data (``study.data.pocket``, built from installed packages in seconds). The
XTREME-R tasks' sizes are the published ones (``PUBLISHED``, each with its source); where a task's test sets differ
by language and the figure per language is not listed here, one typical figure stands for each language and is
labelled approximate. A training *pair* is one English example with one virtual copy: a classification record gives
``k_copies`` pairs; a QA context longer than ``max_length`` or a long tagged sentence gives more (windows), which
the count leaves out (the plan says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from study.core.errors import StudyError


@dataclass(frozen=True)
class Sizes:
    """A task's English train and dev sizes and its test size per language (``test_default`` for a language not in
    ``test``); ``source`` says where the figures come from, ``approximate`` whether any is a stand-in."""

    train: int
    dev: int
    test_default: int
    source: str
    test: dict = field(default_factory=dict)
    approximate: bool = False

    def test_size(self, language: str) -> int:
        return self.test.get(language, self.test_default)


SQUAD_TRAIN, SQUAD_DEV, XQUAD_TEST = 87_599, 10_570, 1_190
PUBLISHED = {
    "xnli": Sizes(392_702, 2_490, 5_010, "XNLI (Conneau et al. 2018): MultiNLI's 392,702 English training pairs; "
                  "2,490 dev and 5,010 test pairs per language"),
    "xcopa": Sizes(400, 100, 500, "COPA (SuperGLUE) 400 train / 100 dev; XCOPA (Ponti et al. 2020) 500 test items "
                   "per language"),
    "siqa": Sizes(33_410, 1_954, 1_954, "Social IQa (Sap et al. 2019): 33,410 train, 1,954 dev (its 'test' here)"),
    "udpos": Sizes(21_253, 3_974, 1_000, "XTREME (Hu et al. 2020): 21,253 train / 3,974 dev English UD sentences; "
                   "test sets vary by language (tens to thousands of sentences): 1,000 (a PUD treebank) assumed each",
                   approximate=True),
    "panx": Sizes(20_000, 10_000, 10_000, "WikiANN, Rahimi et al. 2019's split: 20,000 train / 10,000 dev English; "
                  "10,000 test sentences for most languages, fewer for those listed", approximate=True,
                  test={**dict.fromkeys(("jv", "yo", "my", "qu", "pa", "gu"), 100),
                        **dict.fromkeys(("ms", "tl", "ml", "ta", "te", "af", "bn", "hi", "mr", "ur", "sw", "kk",
                                         "az"), 1_000)}),
    "xquad": Sizes(SQUAD_TRAIN, SQUAD_DEV - XQUAD_TEST, XQUAD_TEST, "SQuAD v1.1 87,599 train / 10,570 dev questions "
                   "(less XQuAD's 1,190, its English test); XQuAD 1,190 per language"),
    "mlqa": Sizes(SQUAD_TRAIN, SQUAD_DEV, 5_000, "SQuAD v1.1 train/dev; MLQA (Lewis et al. 2020) test questions per "
                  "language", test={"en": 11_590, "es": 5_253, "de": 4_517, "ar": 5_335, "hi": 4_918, "vi": 5_495,
                                    "zh": 5_137}),
    "tydiqa": Sizes(3_696, SQUAD_DEV, 500, "TyDiQA-GoldP (Clark et al. 2020): 3,696 English training questions; "
                    "selection on SQuAD v1.1 dev; GoldP dev questions per language",
                    test={"en": 440, "ar": 921, "bn": 113, "fi": 782, "id": 565, "ko": 276, "ru": 812, "sw": 499,
                          "te": 669}),
}


def task_sizes(task) -> Sizes:
    """The sizes of a task that trains (``TaskSpec``); StudyError for one with no training data."""
    if task.suite == "pocket":
        return _pocket_sizes(task)
    if task.name not in PUBLISHED:
        raise StudyError(f"task {task.name!r} has no English training data to plan (a retrieval task)")
    return PUBLISHED[task.name]


def _pocket_sizes(task) -> Sizes:
    from study.data.pocket import pocket_topic

    if task.name != "pocket-topic":
        raise StudyError(f"task {task.name!r} has no English training data to plan (a retrieval task)")
    data = pocket_topic()
    return Sizes(len(data.splits["train"]), len(data.splits["dev"]), 0,
                 "counted from the pocket suite's data (study.data.pocket)",
                 test={"en": len(data.splits["test"]), **{lang: len(items) for lang, items in data.targets.items()}})


def capped(size: int, limit: int | None) -> int:
    """Items a run reads of a split of ``size`` items with a subset limit (``max_train_examples``,
    ``max_eval_examples``): the ``sources.subsample`` rule."""
    return size if limit is None else min(size, limit)


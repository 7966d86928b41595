"""The task registry: the ten XTREME-R tasks and the offline pocket tasks, as data.

Languages are exactly ``XTREME_R_TASK2LANGS`` of google-research/xtreme ``evaluate.py`` (commit 838c13b); LAReQA uses
the XQuAD-R languages. Loading lives in ``study.data``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from study.core.errors import StudyError
from study.core.languages import get_language

# Task kinds decide the head, the batch format and the metric.
CLASSIFICATION = "classification"  # sentence or sentence-pair classification
MULTIPLE_CHOICE = "multiple-choice"
TAGGING = "tagging"
QA = "qa"
BITEXT_RETRIEVAL = "bitext-retrieval"  # Tatoeba-style: find the translation
QA_RETRIEVAL = "qa-retrieval"  # LAReQA / Mewsli-X: rank candidates, mAP@20

# XTREME-R tasks whose protocol here is not XTREME-R's yet (README: "Per task: metric, averaging and protocol")
PROXIES = {
    "xcopa": "proxy, not XTREME-R: trains on COPA only (XTREME-R trains on SIQa, then COPA: study train --task "
             "siqa, then study train --task xcopa --init-checkpoint <its model dir>)",
    "tatoeba": "bare-encoder proxy, not XTREME-R (XTREME-R: hidden state 8 of a SQuAD-fine-tuned encoder; "
               "study evaluate --checkpoint <an xquad or mlqa checkpoint> --task tatoeba runs it)",
    "lareqa": "bare-encoder proxy, not XTREME-R (XTREME-R: a dual encoder fine-tuned on SQuAD; study dual-encoder "
              "--task lareqa trains one, study evaluate --checkpoint <its model dir> scores it)",
    "mewslix": "bare-encoder proxy, not XTREME-R (XTREME-R: a dual encoder fine-tuned on mention-entity pairs; "
               "study dual-encoder --task mewslix trains one, study evaluate --checkpoint scores it)",
}

# XTREME-R's Tatoeba protocol (google-research/xtreme scripts/run_tatoeba.sh, third_party/evaluate_retrieval.py):
# the encoder of a model fine-tuned on SQuAD v1.1; the output of its 8th transformer layer (hidden state 8 of 12:
# the script's --specific_layer 7 indexes the layers' outputs without the embeddings; 24 layers: 13, hidden state
# 14); mean over every token of the attention mask, the special tokens included; inputs cut at 512 tokens; each
# English sentence retrieves its nearest target sentence by cosine similarity (en -> xx, accuracy).
SQUAD_TRAINED_TASKS = ("xquad", "mlqa")  # a checkpoint of these was fine-tuned on SQuAD v1.1
TATOEBA_HIDDEN_STATE = {12: 8, 24: 14}  # encoder depth -> hidden-state index (0 = embeddings)
TATOEBA_MAX_LENGTH = 512
DEFAULT_MAX_LENGTH = 128  # this tool's input length where no protocol fixes one (bare-encoder proxies)


# XTREME-R's dual-encoder protocol for LAReQA and Mewsli-X (google-research/xtreme scripts/train_lareqa.sh,
# run_eval_lareqa.sh, train_mewslix.sh, run_eval_mewslix.sh; third_party/run_retrieval_qa.py, run_retrieval_el.py):
# one encoder for both sides, the L2-normalised pooled [CLS] output, in-batch softmax over cosine similarities
# times a learnt scale (study.vme.objective.in_batch_softmax), AdamW without weight decay or warm-up, gradients clipped
# at 1; the texts of study.data.retrieval_pairs.
@dataclass(frozen=True)
class DualEncoderPreset:
    """One task's dual-encoder settings as XTREME-R's scripts run mBERT: tokens per query and per candidate,
    epochs, learning rate, the per-worker batch (its rows are each other's negatives) and gradient accumulation."""

    query_max_length: int
    candidate_max_length: int
    epochs: int
    lr: float
    batch_size: int
    grad_accum: int


DUAL_ENCODER = {"lareqa": DualEncoderPreset(96, 256, 3, 2e-5, 4, 4),
                "mewslix": DualEncoderPreset(64, 64, 2, 2e-5, 64, 4)}
DUAL_ENCODER_LARGE = {"mewslix": DualEncoderPreset(64, 64, 2, 1e-5, 8, 4)}  # the scripts' XLM-R large settings


def dual_encoder_preset(task: str, depth: int) -> DualEncoderPreset:
    """The preset of ``task`` for an encoder of ``depth`` layers (24: the scripts' XLM-R large settings)."""
    return (DUAL_ENCODER_LARGE if depth == 24 else {}).get(task, DUAL_ENCODER[task])


@dataclass(frozen=True)
class RetrievalSettings:
    """How a retrieval task embeds its sentences: ``layer`` (hidden-state index; None = last layer),
    ``max_length`` in tokens (a dual encoder's candidates), and the protocol label every output shows beside the
    score. ``query_max_length`` set: XTREME-R's dual encoder (its pooled output and its texts), queries cut there."""

    layer: int | None
    max_length: int
    protocol: str
    query_max_length: int | None = None


def retrieval_settings(task: TaskSpec, depth: int, *, trained_on: str | None = None, layer: int | None = None,
                       max_length: int | None = None,
                       trained_lengths: tuple[int, int] | None = None) -> RetrievalSettings:
    """The settings of a retrieval evaluation of an encoder with ``depth`` transformer layers, fine-tuned on
    ``trained_on`` (a task name; None = the bare pretrained encoder), with the user's ``layer`` / ``max_length``
    (None = the protocol's). Tatoeba on an encoder fine-tuned on SQuAD v1.1 (xquad, mlqa) with 12 or 24 layers gets
    XTREME-R's protocol (hidden state 8 / 14, 512 tokens) and is labelled XTREME-R only when nothing overrides it;
    every other case is a named proxy (bare encoder: the last layer, 128 tokens). LAReQA and Mewsli-X on a dual
    encoder fine-tuned for that task (``study dual-encoder``) get XTREME-R's dual-encoder protocol
    (``DUAL_ENCODER``), read at the (query, candidate) ``trained_lengths`` the run trained with (None: the protocol's)
    and labelled XTREME-R only at the protocol's; StudyError when ``layer`` is asked of one (it is scored on its
    pooled output)."""
    if task.name in DUAL_ENCODER and trained_on == task.name:
        return _dual_encoder_settings(task.name, depth, layer, max_length, trained_lengths)
    official = task.name == "tatoeba" and trained_on in SQUAD_TRAINED_TASKS and depth in TATOEBA_HIDDEN_STATE
    if not official:
        protocol = task.protocol
        if task.name == "tatoeba" and trained_on in SQUAD_TRAINED_TASKS:
            protocol = (f"proxy, not XTREME-R: XTREME-R fixes Tatoeba's layer for 12- and 24-layer encoders, this "
                        f"one has {depth}")
        elif task.name == "tatoeba" and trained_on:
            protocol = f"proxy, not XTREME-R: an encoder fine-tuned on {trained_on}, not SQuAD v1.1 (xquad, mlqa)"
        elif trained_on:
            protocol = (f"proxy, not XTREME-R: mean-pooled states of an encoder fine-tuned on {trained_on} (XTREME-R: "
                        f"a dual encoder fine-tuned for {task.name}, study dual-encoder)")
        return RetrievalSettings(layer, max_length or DEFAULT_MAX_LENGTH, protocol)
    rule = RetrievalSettings(TATOEBA_HIDDEN_STATE[depth], TATOEBA_MAX_LENGTH,
                             f"XTREME-R (encoder fine-tuned on SQuAD v1.1 via {trained_on}; hidden state "
                             f"{TATOEBA_HIDDEN_STATE[depth]} of {depth}, mean pooling, {TATOEBA_MAX_LENGTH} tokens)")
    chosen = (rule.layer if layer is None else layer, rule.max_length if max_length is None else max_length)
    if chosen == (rule.layer, rule.max_length):
        return rule
    return RetrievalSettings(*chosen, f"proxy, not XTREME-R: hidden state {chosen[0]} and {chosen[1]} tokens of a "
                                      f"SQuAD-fine-tuned encoder (XTREME-R: {rule.layer} and {rule.max_length})")


def _dual_encoder_settings(task: str, depth: int, layer: int | None, max_length: int | None,
                           trained: tuple[int, int] | None) -> RetrievalSettings:
    if layer is not None:
        raise StudyError(f"--layer: a {task} dual encoder is scored on its pooled [CLS] output, not a hidden state")
    preset = dual_encoder_preset(task, depth)
    rule = (preset.query_max_length, preset.candidate_max_length)
    query, candidate = trained or rule
    chosen = max_length or candidate
    sources = {"lareqa": "SQuAD v1.1 (answer sentences split by pysbd, not XTREME's sb_sed)",
               "mewslix": "English Wikipedia mention-entity pairs"}
    if (query, candidate, chosen) == (*rule, rule[1]):
        protocol = (f"XTREME-R (dual encoder fine-tuned on {sources[task]}; normalised pooled [CLS], queries "
                    f"{query} tokens, candidates {chosen})")
    else:
        protocol = (f"proxy, not XTREME-R: a {task} dual encoder trained with queries of {query} and candidates of "
                    f"{candidate} tokens, scored with candidates of {chosen} (XTREME-R: {rule[0]}, {rule[1]})")
    return RetrievalSettings(None, chosen, protocol, query_max_length=query)


COPA_QUESTIONS = ("cause", "effect")  # what every COPA / XCOPA item asks for

HEAD_FOR_KIND = {CLASSIFICATION: "sequence", MULTIPLE_CHOICE: "multiple-choice", TAGGING: "token", QA: "qa",
                 BITEXT_RETRIEVAL: None, QA_RETRIEVAL: None}
RETRIEVAL_KINDS = (BITEXT_RETRIEVAL, QA_RETRIEVAL)


@dataclass(frozen=True)
class HubArchive:
    """A task's hub data as one archive of its original files, read as ``--data-dir`` reads them: for a repository
    whose configs do not hold the task's data in the form its reader needs."""

    repo: str
    path: str


@dataclass(frozen=True)
class ReleaseFiles:
    """A task's data as the original files of a GitHub repository at a pinned commit, downloaded once and read as
    ``--data-dir`` reads them: for a task no hub repository holds as released (the pinned commit makes the files
    immutable, so a cached copy never needs checking)."""

    repo: str
    commit: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class TaskSpec:
    """One task of the registry: its kind, metric, target languages and where its data comes from."""

    name: str
    kind: str
    metric: str  # accuracy | f1 | f1_em | map@20
    languages: tuple[str, ...]  # target languages (English included where XTREME-R lists it)
    train_source: str  # the English training data, in words
    suite: str = "xtreme-r"  # or "pocket" (never presented as XTREME-R), or "source" (English training data only)
    retrieval_direction: str = "xx_to_en"  # bitext retrieval: the headline direction (the other is a detail)
    labels: tuple[str, ...] = ()  # class names for classification / tagging
    hub: dict = field(default_factory=dict, compare=False)  # how study.data loads it from the hub

    @property
    def head(self) -> str | None:
        """The ``load_model`` head of the task's kind; None for retrieval (a bare encoder)."""
        return HEAD_FOR_KIND[self.kind]

    @property
    def protocol(self) -> str:
        """How this tool's numbers for the task relate to XTREME-R's: its protocol, or the named proxy in use
        (every output that shows a score shows this beside it)."""
        if self.suite == "source":
            return "English training source, not an XTREME-R task (its 'test' is its English dev set)"
        if self.suite != "xtreme-r":
            return "pocket suite, not XTREME-R"
        return PROXIES.get(self.name, "XTREME-R")

    @property
    def needs_training(self) -> bool:
        """False for retrieval tasks, which evaluate a bare encoder; True otherwise (fine-tuned head)."""
        return self.kind not in RETRIEVAL_KINDS

    def fine_tuned_protocol(self, trained_on: str | None, init_task: str | None) -> str:
        """The protocol of this task's scores for a model fine-tuned on ``trained_on`` (None: unknown, e.g. a
        directory without a study record) from a checkpoint fine-tuned on ``init_task`` (None: the pretrained
        encoder or an intermediate stage). A model fine-tuned on another task is a proxy whatever this task's
        protocol, except between XQuAD and MLQA, which XTREME scores with one SQuAD v1.1 model; XCOPA is
        XTREME-R's only when the COPA run continued from a Social IQa checkpoint (scripts/train_xcopa.sh: SIQa first,
        then COPA, one multiple-choice model throughout)."""
        both_squad = trained_on in SQUAD_TRAINED_TASKS and self.name in SQUAD_TRAINED_TASKS
        if trained_on and trained_on != self.name and not both_squad:
            return f"proxy, not XTREME-R: a model fine-tuned on {trained_on}, not on {self.name}"
        if trained_on and trained_on != self.name:  # scripts/train_qa.sh: one SQuAD v1.1 model predicts both
            return f"{self.protocol} (the SQuAD v1.1 model of {trained_on}: XTREME scores XQuAD and MLQA with one)"
        if self.name == "xcopa" and trained_on == "xcopa" and init_task == "siqa":
            return "XTREME-R (SIQa, then COPA)"
        return self.protocol

    def check_checkpoint_head(self, trained_on: str | None, where: str) -> None:
        """StudyError when a checkpoint fine-tuned on ``trained_on`` carries a head this task cannot use (a
        multiple-choice head for tagging, ...): it would fail deep inside transformers. A checkpoint without a task
        (an intermediate stage's encoder, a plain transformers model) gets a fresh head, and retrieval reads the
        encoder only, so both pass."""
        if not trained_on or trained_on not in TASKS or self.head is None:
            return
        head = TASKS[trained_on].head
        if head is not None and head != self.head:
            raise StudyError(f"{where} was fine-tuned on {trained_on} (a {head} head); task {self.name!r} needs a "
                             f"{self.head} head: use a checkpoint of a task with that head, or the pretrained model")

    def check_languages(self, languages: list[str] | None) -> tuple[str, ...]:
        """Validate a --languages selection (None = all of the task's languages)."""
        if not languages:
            return self.languages
        repeated = sorted({code for code in languages if languages.count(code) > 1})
        if repeated:
            raise StudyError(f"--languages lists {', '.join(repeated)} more than once: list each language once")
        for code in languages:
            get_language(code)  # unknown code -> clear error
            if code not in self.languages:
                raise StudyError(f"task {self.name!r} has no language {code!r}: it covers {' '.join(self.languages)}")
        return tuple(languages)


def _codes(codes: str) -> tuple[str, ...]:
    """Language codes written as one space-separated string, as XTREME's scripts list them."""
    return tuple(codes.split())


_UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
         "SCONJ", "SYM", "VERB", "X")
POCKET_TOPICS = ("ai", "botprofile", "conversations", "emotion", "food", "greetings", "health", "history", "humor",
                 "literature", "money", "movies", "politics", "psychology", "science", "sports", "trivia")
XQUAD_R_LANGUAGES = _codes("ar de el en es hi ru th tr vi zh")  # LAReQA's: the files of the release
_NER = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("xnli", CLASSIFICATION, "accuracy",
             _codes("ar bg de el en es fr hi ru sw th tr ur vi zh"), "MultiNLI (English train)",
             labels=("entailment", "neutral", "contradiction"),
             hub={"train": ("facebook/xnli", "en", "train"), "dev": ("facebook/xnli", "en", "validation"),
                  "test": ("facebook/xnli", "{lang}", "test")}),
    TaskSpec("xcopa", MULTIPLE_CHOICE, "accuracy", _codes("et ht id it qu sw ta th tr vi zh"),
             "COPA (English train; XTREME trains SIQa first)",
             hub={"train": ("aps/super_glue", "copa", "train"), "dev": ("aps/super_glue", "copa", "validation"),
                  "test": ("cambridgeltl/xcopa", "{lang}", "test")}),
    # XTREME-R's XCOPA recipe trains on Social IQa first: an English training source, not a zero-shot task (its
    # labelled test set is not public; its "test" is its English dev set, so a siqa run's numbers are no benchmark)
    TaskSpec("siqa", MULTIPLE_CHOICE, "accuracy", ("en",), "Social IQa (English train)", suite="source",
             hub={"train": ("allenai/social_i_qa", None, "train"), "dev": ("allenai/social_i_qa", None, "validation"),
                  "test": ("allenai/social_i_qa", None, "validation")}),
    TaskSpec("udpos", TAGGING, "f1",
             _codes("af ar bg de el en es et eu fa fi fr he hi hu id it ja kk ko mr nl pt ru ta te th tl tr ur vi "
                    "yo zh lt pl uk wo ro"), "English UD treebanks (train)", labels=_UPOS,
             hub={"train": ("google/xtreme", "udpos.English", "train"),
                  "dev": ("google/xtreme", "udpos.English", "validation"),
                  "test": ("izhx/xtreme-r-udpos", "{lang}", "test")}),
    TaskSpec("panx", TAGGING, "f1",
             _codes("ar he vi id jv ms tl eu ml ta te af nl en de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw "
                    "yo my zh kk tr et fi hu qu pl uk az lt pa gu ro"), "English WikiANN (train)",
             labels=_NER,
             hub={"train": ("unimelb-nlp/wikiann", "en", "train"), "dev": ("unimelb-nlp/wikiann", "en", "validation"),
                  "test": ("unimelb-nlp/wikiann", "{lang}", "test")}),
    TaskSpec("xquad", QA, "f1_em", _codes("en es de el ru tr ar vi th zh hi ro"), "SQuAD v1.1 (train)",
             hub={"train": ("rajpurkar/squad", None, "train"), "dev": ("rajpurkar/squad", None, "validation"),
                  "test": ("google/xquad", "xquad.{lang}", "validation")}),
    TaskSpec("mlqa", QA, "f1_em", _codes("en es de ar hi vi zh"), "SQuAD v1.1 (train)",
             hub={"train": ("rajpurkar/squad", None, "train"), "dev": ("rajpurkar/squad", None, "validation"),
                  "test": ("google/xtreme", "MLQA.{lang}.{lang}", "test")}),
    TaskSpec("tydiqa", QA, "f1_em", _codes("en ar bn fi id ko ru sw te"), "TyDiQA-GoldP (English train)",
             # GoldP mixes languages; a row's id starts with its language's English name ("arabic-..."). XTREME
             # trains on the English rows and tests on each language's dev rows (the English dev is the English
             # test set: selection uses SQuAD v1.1 dev)
             hub={"train": ("google-research-datasets/tydiqa", "secondary_task", "train", "{name}-"),
                  "dev": ("rajpurkar/squad", None, "validation"),
                  "test": ("google-research-datasets/tydiqa", "secondary_task", "validation", "{name}-")}),
    # izhx/mewsli-x's per-language configs are its process.py's conversion; its raw.tar.gz holds get-mewsli-x.sh's
    # output itself (the card lists the files), exactly the files --data-dir reads
    TaskSpec("mewslix", QA_RETRIEVAL, "map@20", _codes("ar de en es fa ja pl ro ta tr uk"),
             "English Wikipedia mention-entity pairs",
             hub=dict.fromkeys(("train", "dev", "test"), HubArchive("izhx/mewsli-x", "raw.tar.gz"))),
    # the hub's XQuAD-R (google-research-datasets/xquad_r) has only id, context, question and answers: its former
    # loading script dropped the sentences and sentence_breaks that LAReQA's candidates are; XTREME's download
    # script takes the original files from GitHub, here at the commit that added them
    TaskSpec("lareqa", QA_RETRIEVAL, "map@20", XQUAD_R_LANGUAGES, "SQuAD v1.1 (train)",
             hub={"test": ReleaseFiles("google-research-datasets/lareqa", "5405d2a77e83d5ccb47623a3f9e5604c3f103193",
                                       tuple(f"xquad-r/{lang}.json" for lang in XQUAD_R_LANGUAGES))}),
    # XTREME-R's Tatoeba accuracy is en -> xx: third_party/evaluate_retrieval.py indexes the xx sentences and
    # searches with each English one (utils_retrieve.similarity_search)
    TaskSpec("tatoeba", BITEXT_RETRIEVAL, "accuracy",
             _codes("ar he vi id jv tl eu ml ta te af nl de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw zh kk "
                    "tr et fi hu az lt pl uk ro"), "none: XTREME-R embeds with a SQuAD-fine-tuned encoder "
             "(study evaluate --checkpoint of an xquad or mlqa run); a bare encoder is the proxy",
             retrieval_direction="en_to_xx",
             hub={"test": ("mteb/tatoeba-bitext-mining", "{laser}-eng", "test")}),  # LASER's pair names
    # Offline pocket tasks, built from registry packages (study.data.pocket); languages are those the sources have.
    # (languages: those the sources have after cleaning; a test checks them against the built data)
    TaskSpec("pocket-topic", CLASSIFICATION, "accuracy",
             _codes("en bn de es fa fr he id it ja ko nl pt tr uk zh"),
             "chatterbot-corpus English conversations (train split)", suite="pocket", labels=POCKET_TOPICS),
    TaskSpec("pocket-retrieval", BITEXT_RETRIEVAL, "accuracy",
             _codes("af ar az be bg bn ca cs cy da de el es et eu fa fi fr ga gl he hi hr hu hy id is it ja ka kk ko "
                    "lt lv mk ml mn mr ms nb ne nl pa pl pt ro ru sk sl sq sv sw te th tr uk ur vi zh"),
             "none (bare encoder)", suite="pocket"),
)}


def get_task(name: str) -> TaskSpec:
    """The registry's task of that name; StudyError for an unknown name."""
    if name not in TASKS:
        raise StudyError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name]


def tasks_of_suite(suite: str) -> list[TaskSpec]:
    """The tasks of ``xtreme-r`` or ``pocket``, in registry order; StudyError for another suite."""
    if suite not in ("xtreme-r", "pocket"):
        raise StudyError(f"unknown suite {suite!r}: choose xtreme-r or pocket")
    return [t for t in TASKS.values() if t.suite == suite]

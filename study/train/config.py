"""Typed configuration of one fine-tuning run, validated before any worker starts.

Ray passes plain dicts across process boundaries; the first line of the worker turns its dict back into a
``TrainConfig`` (``from_dict``), so a misspelled or out-of-range key fails on the driver with one clear line instead
of deep inside a remote worker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from study.core.errors import StudyError
from study.vme.objective import AP_MASK_MODES, VMEWeights

OBJECTIVES = ("vme", "plain")  # plain = cross-entropy on x only: the matched-budget baseline
# fast: one pass over [x; x̃], one captured attention layer, fused AdamW, trimmed vocabulary (study.vme.engine,
# study.vme.trim)
# reference: the authors' way (two eager passes with every attention map, foreach AdamW, full vocabulary)
IMPLEMENTATIONS = ("fast", "reference")
# batch: Attention-Pull over maps padded to the batch's longest row; max_length: every map padded to max_length, as
# the released code pads every input to max_seq_length (the term's scale then no longer varies from batch to batch)
AP_PADDINGS = ("batch", "max_length")
SYNONYM_MATCHINGS = ("words", "exact")  # study.data.augment: words (case- and punctuation-aware) or exact (as released)


def _option(default, help: str):
    """A config field whose ``help`` is also its command-line help (``study.cli.train``)."""
    return field(default=default, metadata={"help": help})


def yes_no(text: str) -> bool:
    """A boolean command-line value: true/false (also yes/no, 1/0); ValueError otherwise (argparse's usage error)."""
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise ValueError(text)
    return value


def cli_type(config_field) -> type:
    """The argparse type of a field: its annotation without ``| None`` (``tuple`` fields excepted)."""
    annotation = str(config_field.type).split(" | ")[0]
    return {"int": int, "float": float, "str": str, "bool": yes_no}[annotation]


@dataclass(frozen=True)
class TrainConfig:
    """The options of one fine-tuning run; invalid values raise StudyError on construction."""

    # what to train
    model: str = _option("e5-small", "registry key or local transformers directory")
    task: str = _option("pocket-topic", "task to fine-tune and evaluate (see study.data.tasks)")
    data_dir: str | None = _option(None, "original task files (unset: the hub, or the packages for pocket tasks)")
    languages: tuple[str, ...] | None = _option(None, "target languages to evaluate (unset: all of the task's)")
    init_checkpoint: str | None = _option(None, "encoder directory to start from (the intermediate stage's output)")
    # optimisation
    epochs: int = _option(2, "passes over the English training pairs")
    max_steps: int | None = _option(None, "stop after this many optimizer steps (smoke runs)")
    batch_size: int = _option(16, "examples per worker per micro-batch (each example is an x / x̃ pair)")
    grad_accum: int = _option(1, "micro-batches per optimizer step (derived from the world size when global_batch "
                                 "is set)")
    global_batch: int | None = _option(None, "English examples per optimizer step over all workers: batch_size x "
                                             "grad_accum x workers (unset: grad_accum as given)")
    lr: float = _option(3e-5, "AdamW learning rate of the encoder")
    head_lr: float | None = _option(None, "learning rate of the task head (unset: lr)")
    weight_decay: float = _option(0.0, "AdamW weight decay (0 keeps vocabulary trimming exact)")
    warmup_ratio: float = _option(0.0, "share of the steps with linear warm-up")
    max_grad_norm: float = _option(1.0, "gradient clipping norm")
    max_length: int = _option(128, "max tokens per input")
    seed: int = _option(7, "seed of the data order, dropout, head initialisation and subsets")
    # the VME objective
    objective: str = _option("vme", f"one of {', '.join(OBJECTIVES)} (plain: cross-entropy on x only)")
    w_task: float = _option(1.0, "weight of the task loss")
    w_robust: float = _option(1.0, "weight of the robust target (task loss on x̃)")
    alpha: float = _option(0.1, "weight of Embedding-Push")
    beta: float = _option(1.0, "weight of Attention-Pull")
    ap_layer: int = _option(5, "layer whose attention maps Attention-Pull compares")
    ap_mask: str = _option("none", f"one of {', '.join(AP_MASK_MODES)} (none: the reference's full padded maps)")
    ap_padding: str = _option("batch", f"one of {', '.join(AP_PADDINGS)}: Attention-Pull's maps padded to the "
                                       "batch's longest row, or to max_length as the released code pads")
    k_copies: int = _option(1, "virtual copies x̃ per English example")
    synonyms: str = _option("roget", "synonym source: roget, counter-fitted (downloaded once) or a neighbour JSON "
                                     "file")
    synonym_matching: str = _option("words", f"one of {', '.join(SYNONYM_MATCHINGS)}: words (lower-cased, "
                                             "punctuation stripped) or exact (the released code's lookup)")
    implementation: str = _option("fast", f"one of {', '.join(IMPLEMENTATIONS)}; same updates within fp32 tolerance")
    # evaluation and debugging
    eval_every: int = _option(0, "optimizer steps between evaluations (0: once per epoch)")
    max_train_examples: int | None = _option(None, "seeded subset of the English training set")
    max_eval_examples: int | None = _option(None, "subset of each dev / test language (the same items in every "
                                               "run: protocol.EVAL_SUBSET_SEED)")
    log_every: int = _option(10, "optimizer steps per progress line")
    alignment_probe: bool = _option(False, "add the alignment probe (retrieval and centroid distances on parallel "
                                    "sentences, checkpoint and pretrained encoder) to every evaluation")
    alignment_pairs: int | None = _option(100, "parallel sentence pairs per language the alignment probe embeds (a "
                                               "seeded subset, also capped by max_eval_examples; unset: all)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """StudyError naming the first invalid option: counts, then numeric ranges, then named choices, then
        ``global_batch`` against ``batch_size``, then the VME loss weights (run on construction)."""
        self._check_types()
        self._check_counts()
        self._check_ranges()
        self._check_choices()
        if self.global_batch is not None and self.global_batch % self.batch_size:
            raise StudyError(f"global_batch={self.global_batch} is not a multiple of batch_size={self.batch_size}: "
                             "choose a batch_size that divides it")
        self._vme_weights()

    def _check_types(self) -> None:
        """Numbers, flags and names of the right kind (a YAML preset or search space may hold ``1e-2``, which YAML
        reads as text), before any value is compared."""
        for option in fields(self):
            value, kind = getattr(self, option.name), str(option.type)
            if value is None and "None" in kind:
                continue
            if kind.startswith("float") and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise StudyError(f"{option.name}={value!r} is invalid: it must be a number (YAML reads 1e-2 as text: "
                                 "write 1.0e-2)")
            if kind.startswith("str") and not isinstance(value, str):
                raise StudyError(f"{option.name}={value!r} is invalid: it must be text")

    def _check_counts(self) -> None:
        positive = ("epochs", "batch_size", "grad_accum", "max_length", "k_copies", "log_every")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise StudyError(f"{name}={value!r} is invalid: it must be an integer >= 1")
        for name in ("max_steps", "max_train_examples", "max_eval_examples", "global_batch", "alignment_pairs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise StudyError(f"{name}={value!r} is invalid: it must be an integer >= 1 or unset")

    def _check_ranges(self) -> None:
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < 1):
                raise StudyError(f"{name}={value!r} is invalid: a learning rate must be in (0, 1), e.g. 3e-5")
        for name, ok, rule in (("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
                               ("weight_decay", self.weight_decay >= 0, ">= 0"),
                               ("max_grad_norm", self.max_grad_norm > 0, "> 0"),
                               ("eval_every", self.eval_every >= 0, ">= 0 (0: once per epoch)"),
                               ("ap_layer", self.ap_layer >= 0, ">= 0")):
            if not ok:
                raise StudyError(f"{name}={getattr(self, name)!r} is invalid: it must be {rule}")
        if not isinstance(self.alignment_probe, bool):
            raise StudyError(f"alignment_probe={self.alignment_probe!r} is invalid: it must be true or false")

    def _check_choices(self) -> None:
        if self.objective not in OBJECTIVES:
            raise StudyError(f"objective={self.objective!r} is invalid: choose one of {', '.join(OBJECTIVES)}")
        if self.implementation not in IMPLEMENTATIONS:
            raise StudyError(f"implementation={self.implementation!r} is invalid: choose one of "
                             f"{', '.join(IMPLEMENTATIONS)}")
        if self.ap_mask not in AP_MASK_MODES:
            raise StudyError(f"ap_mask={self.ap_mask!r} is invalid: choose one of {', '.join(AP_MASK_MODES)}")
        for name, value, choices in (("ap_padding", self.ap_padding, AP_PADDINGS),
                                     ("synonym_matching", self.synonym_matching, SYNONYM_MATCHINGS)):
            if value not in choices:
                raise StudyError(f"{name}={value!r} is invalid: choose one of {', '.join(choices)}")

    def accumulation(self, workers: int) -> int:
        """Micro-batches per optimizer step with ``workers`` ranks: ``grad_accum``, or the one that makes
        ``batch_size x grad_accum x workers == global_batch``; StudyError when no whole number does."""
        if self.global_batch is None:
            return self.grad_accum
        if workers < 1:
            raise StudyError(f"workers={workers} is invalid: it must be >= 1")
        per_step = self.batch_size * workers
        if self.global_batch % per_step:
            raise StudyError(f"global_batch={self.global_batch} cannot be split over {workers} worker(s) x "
                             f"batch_size {self.batch_size}: choose batch_size and --workers whose product divides "
                             f"{self.global_batch}")
        return self.global_batch // per_step

    @property
    def weights(self) -> VMEWeights:
        """The VME loss weights (w_task, w_robust, alpha, beta); StudyError when VMEWeights rejects them."""
        return self._vme_weights()

    def _vme_weights(self) -> VMEWeights:
        try:
            return VMEWeights(task=self.w_task, robust=self.w_robust, alpha=self.alpha, beta=self.beta)
        except ValueError as err:
            raise StudyError(str(err)) from None

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """The config of a plain dict (e.g. from Ray); StudyError naming any unknown key; ``languages`` -> tuple."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise StudyError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(values)
        if values.get("languages") is not None:
            values["languages"] = tuple(values["languages"])
        return cls(**values)

    def to_dict(self) -> dict:
        """All fields as a plain dict, the inverse of ``from_dict``."""
        return asdict(self)

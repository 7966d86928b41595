"""Typed configuration of one fine-tuning run, validated before any worker starts.

Ray passes plain dicts across process boundaries; the first line of the worker turns its dict back into a
``TrainConfig`` (``from_dict``), so a misspelled or out-of-range key fails on the driver with one clear line instead
of deep inside a remote worker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from study.errors import StudyError
from study.objective import AP_MASK_MODES, VMEWeights

OBJECTIVES = ("vme", "plain")  # plain = cross-entropy on x only: the matched-budget baseline
# fast: one pass over [x; x̃], one captured attention layer, fused AdamW, trimmed vocabulary (study.engine, study.trim)
# reference: the authors' way (two eager passes with every attention map, foreach AdamW, full vocabulary)
IMPLEMENTATIONS = ("fast", "reference")


@dataclass(frozen=True)
class TrainConfig:
    # what to train
    model: str = "e5-small"  # registry key or local transformers directory
    task: str = "pocket-topic"
    data_dir: str | None = None  # original task files (None: hub, or packages for pocket tasks)
    languages: tuple[str, ...] | None = None  # target languages to evaluate (None: all of the task's)
    init_checkpoint: str | None = None  # encoder to start from (the intermediate stage's output)
    # optimisation
    epochs: int = 2
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs)
    batch_size: int = 16  # examples per worker per micro-batch (each example is an x / x̃ pair)
    grad_accum: int = 1
    lr: float = 3e-5
    head_lr: float | None = None  # learning rate of the task head (None: lr)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 128
    seed: int = 7
    # the VME objective
    objective: str = "vme"
    w_task: float = 1.0
    w_robust: float = 1.0
    alpha: float = 0.1
    beta: float = 1.0
    ap_layer: int = 5
    ap_mask: str = "none"
    k_copies: int = 1  # virtual copies x̃ per English example
    synonyms: str = "roget"  # "roget" or a neighbour JSON file
    implementation: str = "fast"  # see IMPLEMENTATIONS; both give the same updates within fp32 tolerance
    # evaluation and debugging
    eval_every: int = 0  # optimizer steps between evaluations (0: once per epoch)
    max_train_examples: int | None = None
    max_eval_examples: int | None = None  # per language
    log_every: int = 10  # optimizer steps per progress line

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "grad_accum", "max_length", "k_copies", "log_every")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise StudyError(f"{name}={getattr(self, name)!r} is invalid: it must be an integer >= 1")
        for name in ("max_steps", "max_train_examples", "max_eval_examples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise StudyError(f"{name}={value!r} is invalid: it must be an integer >= 1 or unset")
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < 1):
                raise StudyError(f"{name}={value!r} is invalid: a learning rate must be in (0, 1), e.g. 3e-5")
        if not 0 <= self.warmup_ratio < 1 or self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise StudyError("warmup_ratio must be in [0, 1), weight_decay >= 0 and max_grad_norm > 0")
        if self.eval_every < 0 or self.ap_layer < 0:
            raise StudyError(f"eval_every={self.eval_every} and ap_layer={self.ap_layer} must be >= 0")
        if self.objective not in OBJECTIVES:
            raise StudyError(f"objective={self.objective!r} is invalid: choose one of {', '.join(OBJECTIVES)}")
        if self.implementation not in IMPLEMENTATIONS:
            raise StudyError(f"implementation={self.implementation!r} is invalid: choose one of "
                             f"{', '.join(IMPLEMENTATIONS)}")
        if self.ap_mask not in AP_MASK_MODES:
            raise StudyError(f"ap_mask={self.ap_mask!r} is invalid: choose one of {', '.join(AP_MASK_MODES)}")
        self.weights  # validates the loss weights

    @property
    def weights(self) -> VMEWeights:
        try:
            return VMEWeights(task=self.w_task, robust=self.w_robust, alpha=self.alpha, beta=self.beta)
        except ValueError as err:
            raise StudyError(str(err)) from None

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise StudyError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(values)
        if values.get("languages") is not None:
            values["languages"] = tuple(values["languages"])
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

"""The arms a study compares: each a fixed part of the training configuration, and for a tuned arm the search
space's parameters on top. Every model of a study gets the same arms, every tuned arm the same number of search
trials, and every arm is selected on English dev and re-run on the same confirmatory seeds (``study tune``), so a
contrast between two arms differs only in what their fixed parts (or searches) differ in. No Ray, no I/O.

The arms:

* ``plain`` — cross-entropy on x only: the matched baseline. It sees the same English examples in the same order,
  at the same global batch and number of optimizer steps as ``vme-reference`` (the same ``k_copies`` rows of x per
  example), and the same optimisation settings (the preset's); only the objective differs.
* ``vme-reference`` — the authors' point (Ding et al. 2022, arXiv 2210.09934; the released code's defaults,
  KB-Ding/EAR ``scripts/{bert,xlmr}-ept-apt-xnli.sh``): alpha 0.1, beta 1, robust weight 1, Attention-Pull at layer 5
  over maps padded to ``max_length``, 3 virtual copies, exact case-sensitive synonym matching, a global batch of 32.
  The learning rate (2e-5 in the paper preset) and the synonym source (counter-fitted neighbours on the real path,
  Roget offline) come from the preset, shared with ``plain``.
* ``vme-tuned`` — the VME objective with every parameter of the search space searched (Optuna TPE + ASHA), and
  every option it does not search at the reference's value (Attention-Pull's padding, synonym matching, ...), so
  that vme-tuned − vme-reference measures the search and nothing else.
* ``plain-tuned`` — ``vme-tuned``'s matched baseline: plain fine-tuning searched with the same number of trials over
  every parameter of the search space but the VME ones (``VME_OPTIONS``; on the shipped spaces that leaves the lr,
  ``k_copies`` and the intermediate stage's), its fixed options ``vme-tuned``'s less the VME ones.
  ``vme-tuned − plain-tuned`` compares the objectives at equal tuning budgets, which ``vme-tuned − plain`` does not.
* ``augmentation-only`` — ``vme-reference`` with the Embedding-Push and Attention-Pull weights at 0 (alpha = beta
  = 0): cross-entropy on x and on x̃ alone. ``vme-reference − augmentation-only`` is what the two alignment terms add
  to training on the virtual copies (the attribution Ding et al. 2022 make by ablation).
* the modality experiment (``--experiment-design modality``, ``modality_arms``): each fixed arm (``plain``,
  ``vme-reference``) after an intermediate stage of each modality — ``<arm>+text``, ``<arm>+multimodal``,
  ``<arm>+multimodal-shuffled`` — beside the arm itself (no stage), every stage with the same options; with
  ``--stage-dose N`` also each stage at N steps instead (``<arm>+<modality>@N``), a two-point stage-length dose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from study.core.errors import StudyError
from study.core.protocol import DEFAULT_MODALITY, MODALITY_CONTRASTS, STAGE_MODALITIES

# the authors' objective: the released code's defaults (Ding et al. 2022; KB-Ding/EAR scripts/*-ept-apt-*.sh)
GLOBAL_BATCH = 32
VME_REFERENCE_POINT = {"objective": "vme", "w_task": 1.0, "w_robust": 1.0, "alpha": 0.1, "beta": 1.0, "ap_layer": 5,
                       "ap_mask": "none", "ap_padding": "max_length", "k_copies": 3, "synonym_matching": "exact",
                       "global_batch": GLOBAL_BATCH}
# plain sees the same rows of x (k_copies), in the same order and global batches, as vme-reference
PLAIN_POINT = {"objective": "plain", "k_copies": VME_REFERENCE_POINT["k_copies"], "global_batch": GLOBAL_BATCH}
# the options only the VME objective reads (plain fine-tuning trains on x alone): a plain arm neither pins nor searches
# them. k_copies is not among them: it sets how many rows of x an example gives, and so the steps, for both objectives
VME_OPTIONS = frozenset({"w_task", "w_robust", "alpha", "beta", "ap_layer", "ap_mask", "ap_padding", "synonyms",
                         "synonym_matching"})
# the alignment terms, switched off: training on x and x̃ with the reference's every other option
ALIGNMENT_OFF = {"alpha": 0.0, "beta": 0.0}


@dataclass(frozen=True)
class Arm:
    """One arm: its name, the ``TrainConfig`` options it pins, the intermediate stage's options it pins (``modality``
    among them) and whether the search space's parameters are searched on top (a tuned arm)."""

    name: str
    fixed: Mapping[str, object] = field(default_factory=dict)
    stage: Mapping[str, object] = field(default_factory=lambda: {"modality": DEFAULT_MODALITY})
    tuned: bool = False
    description: str = ""
    unsearched: frozenset[str] = frozenset()  # a tuned arm's search space parameters it leaves out

    @property
    def modality(self) -> str:
        """The arm's intermediate stage (``none`` without one)."""
        return str(self.stage.get("modality", DEFAULT_MODALITY))


ARMS = {arm.name: arm for arm in (
    Arm("plain", PLAIN_POINT, description="cross-entropy on x only, the matched baseline"),
    Arm("vme-reference", VME_REFERENCE_POINT, description="the authors' point, pinned"),
    # the reference point as its fixed part: the searched values replace those the search space names
    # (study.tune.trial.TrialConfig.from_tune), the rest stay the reference's
    Arm("vme-tuned", VME_REFERENCE_POINT, tuned=True,
        description="VME with the search space searched, the reference's value for every other option"),
)}
DEFAULT_ARMS = ("plain", "vme-reference", "vme-tuned", "plain-tuned", "augmentation-only")
OFFLINE_DEFAULT_ARMS = ("plain", "vme-reference")  # what the offline default's time budget holds (README)
REFERENCE_CONTRASTS = (("vme-reference", "plain"), ("vme-tuned", "plain"), ("vme-tuned", "vme-reference"))


def _plain_tuned(vme_tuned: Arm) -> Arm:
    """``vme-tuned``'s matched plain arm: its fixed options less ``VME_OPTIONS``, the plain objective, the same
    search less the VME parameters (derived, so the two stay matched whatever ``vme-tuned`` pins)."""
    fixed = {k: v for k, v in vme_tuned.fixed.items() if k not in VME_OPTIONS}
    return Arm("plain-tuned", {**fixed, "objective": "plain"}, tuned=True, unsearched=VME_OPTIONS,
               description="plain fine-tuning with the search space's non-VME parameters searched")


ARMS["plain-tuned"] = _plain_tuned(ARMS["vme-tuned"])
ARMS["augmentation-only"] = Arm("augmentation-only", {**ARMS["vme-reference"].fixed, **ALIGNMENT_OFF},
                                description="the authors' point without Embedding-Push and Attention-Pull")
# matched budgets (both searched, the same trials) and the attribution of VME's effect to its alignment terms
MATCHED_CONTRASTS = (("vme-tuned", "plain-tuned"), ("vme-reference", "augmentation-only"))
# what each contrast's two arms are meant to differ in (``matched_difference``); nothing else may differ
INTENDED_DIFFERENCES = {("vme-reference", "plain"): VME_OPTIONS | {"objective"},
                        ("vme-tuned", "plain-tuned"): VME_OPTIONS | {"objective"},
                        ("vme-reference", "augmentation-only"): frozenset(ALIGNMENT_OFF)}


def matched_difference(left: Mapping[str, object], right: Mapping[str, object]) -> set[str]:
    """The options two resolved configurations (plain dicts of every option) hold different values of."""
    return {k for k in set(left) | set(right) if left.get(k) != right.get(k)}


def parse_arms(text: str | None, default: tuple[str, ...]) -> tuple[Arm, ...]:
    """The arms of ``--arms`` (comma-separated names of ``ARMS``; ``default`` when unset), in the order given.
    StudyError for an unknown or repeated name."""
    names = tuple(n.strip() for n in text.split(",") if n.strip()) if text else default
    unknown = [n for n in names if n not in ARMS]
    if unknown or not names:
        raise StudyError(f"--arms {text!r}: unknown arm(s) {', '.join(unknown) or '(none given)'}; choose from "
                         f"{', '.join(ARMS)}")
    if len(set(names)) != len(names):
        raise StudyError(f"--arms {text!r} names an arm twice")
    return tuple(ARMS[n] for n in names)


def modality_arms(fixed: tuple[Arm, ...], stage: Mapping[str, object], dose_steps: int | None = None
                  ) -> tuple[Arm, ...]:
    """The controlled modality experiment: each fixed arm as it is (no stage) and after an intermediate stage of
    each of ``STAGE_MODALITIES`` with the shared ``stage`` options (e.g. its steps), named ``<arm>+<modality>``;
    with ``dose_steps`` (``--stage-dose``) also after each stage run for that many steps instead, named
    ``<arm>+<modality>@<steps>``: the second point of a two-point stage-length dose. StudyError for a tuned arm:
    its searched configuration would differ between modalities."""
    tuned = [arm.name for arm in fixed if arm.tuned]
    if tuned:
        raise StudyError(f"--experiment-design modality fixes the fine-tuning: arm(s) {', '.join(tuned)} are tuned; "
                         "use --arms plain,vme-reference")
    lengths = [("", stage, "")]  # (name suffix, stage options, description suffix)
    if dose_steps is not None:
        lengths.append((f"@{dose_steps}", {**stage, "intermediate_steps": dose_steps}, f" of {dose_steps} steps"))
    return tuple(arm for base in fixed for arm in (base, *(
        Arm(modality_arm(base.name, m) + suffix, base.fixed, {**options, "modality": m},
            description=f"{base.name} after a {m} intermediate stage{steps}")
        for suffix, options, steps in lengths for m in STAGE_MODALITIES)))


def dose_arm(arm: str) -> str | None:
    """The arm a stage-length dose arm (``<arm>+<modality>@<steps>``) is the same as but for its steps (``<arm>+
    <modality>``); None for any other arm."""
    name, at, steps = arm.rpartition("@")
    return name if at and "+" in name and steps.isdigit() else None


def modality_arm(arm: str, modality: str) -> str:
    """The name of ``arm`` after a ``modality`` stage (the arm itself for no stage)."""
    return arm if modality == DEFAULT_MODALITY else f"{arm}+{modality}"


def arm_contrasts(arms: list[str]) -> list[tuple[str, str]]:
    """The arm contrasts a report draws among the arms present: VME against plain and tuned against the reference
    (``REFERENCE_CONTRASTS``), the matched-budget and attribution contrasts (``MATCHED_CONTRASTS``), then for each
    fixed arm the modality contrasts (``protocol.MODALITY_CONTRASTS``: each stage against none, images against text,
    images against shuffled images), then each stage-length dose arm against the same stage at the configured
    length (``<arm>+<modality>@<steps> − <arm>+<modality>``)."""
    present = set(arms)
    pairs = [(a, b) for a, b in REFERENCE_CONTRASTS + MATCHED_CONTRASTS if a in present and b in present]
    for base in ARMS:
        pairs += [(modality_arm(base, a), modality_arm(base, b)) for a, b in MODALITY_CONTRASTS
                  if modality_arm(base, a) in present and modality_arm(base, b) in present]
    return pairs + [(arm, dose_arm(arm)) for arm in arms if dose_arm(arm) in present]


# The training length every arm of a study gets (``study tune --budget``): the preset's (XTREME-R's scripts/train_*.sh
# epochs in the ``paper`` preset), or the VME authors' released scripts, per task. KB-Ding/EAR
# scripts/{bert,xlmr}-ept-apt-xnli.sh train EPOCH=1 over the training set that utils/perturb_aug_ori.py writes with
# --num 3 (each English example and its 3 perturbed copies), batch 8 x grad_acc 4, lr 2e-5, 128 tokens; the
# repository has scripts for XNLI and PAWS-X only (PAWS-X, 30 epochs, is not a task of this study).
PRESET_BUDGET, AUTHORS_BUDGET = "preset", "authors"
BUDGETS = (PRESET_BUDGET, AUTHORS_BUDGET)
AUTHORS_TRAINING = {"xnli": {"epochs": 1, "k_copies": 3}}


def budget_options(budget: str, task: str) -> dict[str, object]:
    """The ``TrainConfig`` options a budget sets for every arm of a study of ``task`` (none for the preset's);
    StudyError for the authors' budget of a task their released scripts do not train."""
    if budget == PRESET_BUDGET:
        return {}
    if budget != AUTHORS_BUDGET:
        raise StudyError(f"--budget {budget!r}: choose one of {', '.join(BUDGETS)}")
    if task not in AUTHORS_TRAINING:
        raise StudyError(f"--budget {AUTHORS_BUDGET}: the VME authors' released scripts (KB-Ding/EAR) train "
                         f"{', '.join(AUTHORS_TRAINING)} only, not {task}; use --budget {PRESET_BUDGET}")
    return dict(AUTHORS_TRAINING[task])


def budget_label(budget: str, task: str) -> str:
    """What a study's budget was, in words, for its record and the report."""
    if budget == AUTHORS_BUDGET:
        options = ", ".join(f"{k} {v}" for k, v in budget_options(budget, task).items())
        return f"the VME authors' released scripts (KB-Ding/EAR, {task}): {options}, every arm"
    return "the preset's epochs (paper: XTREME-R's scripts/train_*.sh), every arm"

"""Search spaces as YAML (``search_spaces/<model>.yaml``), validated on load, turned into an Optuna
define-by-run function for Ray Tune's ``OptunaSearch``.

Format::

    model: mbert                   # registry key the space is for
    task: xnli                     # default task (``--task`` overrides)
    seed: 0                        # TPE sampler seed
    params:                        # searched, in this order
      alpha: {type: float, low: 1.0e-2, high: 1.0, log: true}
      ap_mask: {type: categorical, choices: [none, padding]}
      modality: {type: categorical, choices: [none]}
      intermediate_steps: {type: int, low: 100, high: 1000, when: {modality: [text, multimodal]}}
    presets:                       # training settings per --preset (a tuned arm's searched values replace them)
      smoke: {epochs: 1, max_steps: 30}
      paper: {epochs: 1, batch_size: 8, global_batch: 32, lr: 2.0e-5}
      paper.xquad: {epochs: 3, max_length: 384}   # one task's own settings, over the preset's

The presets are what the fixed arms (``study.core.arms``: plain, vme-reference, augmentation-only) train with,
beside their own pinned options; a tuned arm searches ``params`` on top of them (vme-tuned all of them, plain-tuned
all but the VME ones: ``SearchSpace.without``). ``when`` makes a parameter conditional: it is
sampled only when an earlier parameter has one of the listed values (define-by-run), so a trial never carries
parameters of a branch it did not take. Write floats as ``1.0e-5``:
YAML reads ``1e-5`` as a string.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

from study.core.errors import StudyError
from study.core.protocol import MODALITIES
from study.data.tasks import TASKS
from study.train.config import TrainConfig
from study.tune.trial import STAGE_SECTION, TRAIN_SECTION

# see study.train.stage
STAGE_PARAMS = {"modality", "intermediate_steps", "intermediate_lr", "vision_lr", "vision_train"}
TRAIN_PARAMS = {f.name for f in fields(TrainConfig)} - {"model", "task", "data_dir", "languages", "init_checkpoint"}
PRESETS = ("smoke", "paper")
SPACE_PARAM_PREFIX = "space."  # the study's parent run records each searched parameter as space.<name> (Param JSON)
_SPEC_KEYS = {"float": {"type", "low", "high", "log", "when"}, "int": {"type", "low", "high", "log", "step", "when"},
              "categorical": {"type", "choices", "when"}}
_TOP_KEYS = {"include", "model", "task", "seed", "params", "presets"}


@dataclass(frozen=True)
class Param:
    """One searched parameter of a search-space file: its distribution and the condition (``when``) it is sampled on."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = None
    choices: tuple = ()
    when: tuple[tuple[str, tuple], ...] = ()  # ((parent, allowed values), ...)

    def to_json(self) -> str:
        """The distribution and condition as JSON (the study's MLflow parent run records it as ``space.<name>``)."""
        return json.dumps({"type": self.type, "low": self.low, "high": self.high, "log": self.log, "step": self.step,
                           "choices": list(self.choices), "when": {k: list(v) for k, v in self.when}})

    @classmethod
    def from_json(cls, name: str, text: str) -> Param:
        """The inverse of ``to_json``."""
        values = json.loads(text)
        return cls(name, values["type"], values["low"], values["high"], values["log"], values["step"],
                   tuple(values["choices"]), tuple((k, tuple(v)) for k, v in values["when"].items()))

    def active(self, sampled: dict) -> bool:
        """True when every ``when`` parent has been sampled with one of its allowed values."""
        return all(sampled.get(parent) in allowed for parent, allowed in self.when)

    @property
    def tune_name(self) -> str:
        """The name Optuna gives it: ``<section>/<name>``, which puts the value in its section of the trial config
        (``study.tune.trial``)."""
        return f"{STAGE_SECTION if self.name in STAGE_PARAMS else TRAIN_SECTION}/{self.name}"

    def suggest(self, trial):
        """Sample the parameter from an Optuna trial (suggest_float, suggest_int or suggest_categorical)."""
        if self.type == "float":
            return trial.suggest_float(self.tune_name, self.low, self.high, log=self.log)
        if self.type == "int":
            return trial.suggest_int(self.tune_name, int(self.low), int(self.high), step=self.step or 1, log=self.log)
        return trial.suggest_categorical(self.tune_name, list(self.choices))


@dataclass(frozen=True)
class SearchSpace:
    """A validated search-space file; ``files`` are it and the file it includes, ``sha256`` is of their bytes."""

    path: Path
    model: str
    task: str
    seed: int
    params: tuple[Param, ...]
    presets: dict
    sha256: str
    files: tuple[Path, ...] = ()

    def define_by_run(self, trial) -> dict:
        """Optuna define-by-run: suggest each active parameter in file order (Optuna names them ``tune_name``);
        returns the sampled values by their search-space names."""
        sampled: dict = {}
        for param in self.params:
            if param.active(sampled):
                sampled[param.name] = param.suggest(trial)
        return sampled

    def without(self, names) -> SearchSpace:
        """The space less the parameters ``names`` and those sampled only under one of them (a tuned arm's
        ``unsearched``: ``study.core.arms``); StudyError when nothing is left to search."""
        dropped, kept = set(names), []
        for param in self.params:
            if param.name in dropped or any(parent in dropped for parent, _ in param.when):
                dropped.add(param.name)
            else:
                kept.append(param)
        if not kept:
            raise StudyError(f"{self.path}: every parameter is one of {', '.join(sorted(names))}: nothing is left to "
                             "search; add a shared parameter (e.g. lr) to params")
        return replace(self, params=tuple(kept))

    def preset(self, name: str, task: str | None = None) -> dict:
        """A copy of the preset's fixed training settings, with the task's own (``<preset>.<task>``) over them;
        StudyError when the file does not define the preset."""
        if name not in self.presets:
            raise StudyError(f"{self.path}: no preset {name!r}; it defines {', '.join(self.presets) or 'none'}")
        return {**self.presets[name], **self.presets.get(f"{name}.{task}", {})}


def _fail(path: Path | str, key: str, problem: str, fix: str):
    raise StudyError(f"{path}: {key}: {problem}; fix: {fix}")


def _number(path, key, value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(path, key, f"{what} must be a number, got {value!r}",
              "write numbers like 1.0e-5 (YAML reads 1e-5 as a string)")
    return value


def _parse_param(path: Path | str, name: str, spec, earlier: dict[str, Param]) -> Param:
    key = f"params.{name}"
    if name not in TRAIN_PARAMS | STAGE_PARAMS:
        _fail(path, key, "unknown parameter", f"use one of {', '.join(sorted(TRAIN_PARAMS | STAGE_PARAMS))}")
    if not isinstance(spec, dict) or spec.get("type") not in _SPEC_KEYS:
        _fail(path, key, f"needs a mapping with type float, int or categorical, got {spec!r}",
              "e.g. {type: float, low: 1.0e-5, high: 1.0e-4, log: true}")
    kind = spec["type"]
    extra = set(spec) - _SPEC_KEYS[kind]
    if extra:
        _fail(path, key, f"unknown field(s) {', '.join(sorted(extra))} for type {kind}",
              f"allowed: {', '.join(sorted(_SPEC_KEYS[kind]))}")
    when = _parse_when(path, key, spec, earlier)
    if kind == "categorical":
        return _parse_choices(path, key, name, spec, when)
    return _parse_range(path, key, name, kind, spec, when)


def _parse_when(path: Path | str, key: str, spec: dict, earlier: dict[str, Param]) -> tuple:
    """A parameter's ``when:`` conditions: (earlier categorical parameter, the values it is sampled under)."""
    when = []
    if not isinstance(spec.get("when") or {}, dict):
        _fail(path, f"{key}.when", f"must be a mapping of earlier parameters to values, got {spec['when']!r}",
              "e.g. when: {modality: [text, multimodal]}")
    for parent, allowed in (spec.get("when") or {}).items():
        if parent not in earlier or earlier[parent].type != "categorical":
            _fail(path, f"{key}.when", f"{parent!r} is not an earlier categorical parameter",
                  "condition on a categorical parameter listed above this one")
        allowed = tuple(allowed if isinstance(allowed, list) else [allowed])
        if not set(allowed) <= set(MODALITIES if parent == "modality" else earlier[parent].choices):
            _fail(path, f"{key}.when.{parent}", f"values {list(allowed)} are not choices of {parent}",
                  f"use values from {list(earlier[parent].choices)}")
        when.append((parent, allowed))
    return tuple(when)


def _parse_choices(path: Path | str, key: str, name: str, spec: dict, when: tuple) -> Param:
    """A categorical parameter: a non-empty list of choices (modalities checked by name)."""
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        _fail(path, f"{key}.choices", f"must be a non-empty list, got {choices!r}", "e.g. choices: [none, padding]")
    if name == "modality":
        unknown = set(choices) - set(MODALITIES)
        if unknown:
            _fail(path, f"{key}.choices", f"unknown modality {sorted(unknown)}", f"use {list(MODALITIES)}")
    if name in TRAIN_PARAMS:  # every choice must be a value a training run accepts
        for choice in choices:
            _training_value(path, f"{key}.choices", name, choice, f"choice {choice!r}", "drop or correct that choice")
    return Param(name, "categorical", choices=tuple(choices), when=when)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _training_value(path: Path | str, key: str, name: str, value, what: str, fix: str) -> None:
    """StudyError naming the file and key when ``value`` is not a valid training option ``name``."""
    try:
        TrainConfig.from_dict({name: value})
    except StudyError as err:
        if isinstance(value, str) and _numeric(value) and "YAML" not in str(err):
            fix += " (YAML reads 1e-4 as text: write 1.0e-4)"
        _fail(path, key, f"{what} is not valid for training ({err})", fix)


def _parse_range(path: Path | str, key: str, name: str, kind: str, spec: dict, when: tuple) -> Param:
    """A float or int range: ordered bounds, a positive low on a log scale, whole bounds and step for int, and both
    bounds valid training values."""
    low, high = (_number(path, f"{key}.{b}", spec.get(b), b) for b in ("low", "high"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        _fail(path, f"{key}.log", f"must be true or false, got {log!r}", "write log: true or log: false, unquoted")
    if not low < high:
        _fail(path, key, f"low ({low}) must be below high ({high})", "swap or widen the range")
    if log and low <= 0:
        _fail(path, f"{key}.low", f"a log-scaled range needs low > 0, got {low}", "use a positive low or log: false")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        _fail(path, key, f"an int range needs whole numbers, got {low}..{high}", "use whole bounds or type: float")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 1
                             or (high - low) % step or log):
        _fail(path, f"{key}.step", f"must be a whole number >= 1 that divides high - low ({high - low:g}), "
              f"without log, got {step!r}", "e.g. step: 1, or drop it")
    if name in TRAIN_PARAMS:  # both bounds must be values a training run accepts
        cast = float if kind == "float" else int
        for bound in (low, high):
            _training_value(path, key, name, cast(bound), "the range", "narrow the range")
    return Param(name, kind, low=low, high=high, log=log, step=step, when=when)


def _read_yaml(path: Path) -> tuple[bytes, object]:
    """(bytes, parsed YAML) of a file; StudyError naming the file (and the line of a syntax error)."""
    import yaml

    try:
        raw = path.read_bytes()
        return raw, yaml.safe_load(raw)
    except FileNotFoundError:
        raise StudyError(f"search space {path} does not exist") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise StudyError(f"{path}: {where}: not valid YAML ({getattr(err, 'problem', err)}); fix the syntax") from None


def _merged(base, override):
    """Two mappings merged (``override`` wins); anything else: ``override``."""
    return {**base, **override} if isinstance(base, dict) and isinstance(override, dict) else override


def _with_include(path: Path, data: dict) -> tuple[dict, Path | None, bytes]:
    """``data`` merged over the file its ``include:`` names (relative to ``path``): top-level keys of ``data`` win,
    ``params`` and ``presets`` are merged entry by entry (a parameter keeps the included file's position). Returns
    (merged, included path, included bytes); one level only."""
    if "include" not in data:
        return data, None, b""
    base_path = path.parent / str(data["include"])
    raw, base = _read_yaml(base_path)
    if not isinstance(base, dict) or "include" in base:
        _fail(base_path, "(top level)", "an included file must be a mapping without include of its own",
              "include a complete base file (see search_spaces/xtreme-r-base.yaml)")
    merged = {**base, **{k: v for k, v in data.items() if k != "include"}}
    if "params" in data and "params" in base:
        merged["params"] = _merged(base["params"], data["params"])
    if isinstance(base.get("presets"), dict) and isinstance(data.get("presets"), dict):
        ours, theirs = data["presets"], base["presets"]
        merged["presets"] = {name: _merged(theirs.get(name), ours[name]) if name in ours else theirs[name]
                             for name in {**theirs, **ours}}
    return merged, base_path, raw


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML (and the file its ``include:`` names); any problem names the file,
    the key and the fix."""
    path = Path(path)
    raw, data = _read_yaml(path)
    if isinstance(data, dict):
        data, base_path, base_raw = _with_include(path, data)
        if base_path is not None:
            raw += base_raw
    else:
        base_path = None
    shown = f"{path} (including {base_path})" if base_path else path  # where an error's key may come from
    if not isinstance(data, dict):
        _fail(shown, "(top level)", "must be a mapping", "see search_spaces/tiny.yaml for the format")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        _fail(shown, ", ".join(sorted(unknown)), "unknown top-level key(s)", f"allowed: {', '.join(sorted(_TOP_KEYS))}")
    for key in ("model", "task", "params"):
        if key not in data:
            _fail(shown, key, "missing", "every search space names its model, default task and params")
    if not isinstance(data["params"], dict) or not data["params"]:
        _fail(shown, "params", "must be a non-empty mapping", "declare at least one searched parameter")
    params: dict[str, Param] = {}
    for name, spec in data["params"].items():
        params[name] = _parse_param(shown, name, spec, params)
    presets = data.get("presets") or {}
    for preset, values in presets.items():
        name, _, task = str(preset).partition(".")
        if name not in PRESETS or (task and task not in TASKS):
            _fail(shown, f"presets.{preset}", "unknown preset",
                  f"use {', '.join(PRESETS)}, or <preset>.<task> for one task's own settings (e.g. paper.xquad)")
        try:
            TrainConfig.from_dict({**(presets.get(name) or {}), **(values or {})})
        except StudyError as err:
            _fail(shown, f"presets.{preset}", str(err), "use TrainConfig options with valid values")
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        _fail(shown, "seed", f"must be an integer, got {seed!r}", "e.g. seed: 0")
    return SearchSpace(path, str(data["model"]), str(data["task"]), seed, tuple(params.values()),
                       {k: dict(v or {}) for k, v in presets.items()}, hashlib.sha256(raw).hexdigest(),
                       (path, base_path) if base_path else (path,))

